//! Tests of the whole file: defaults, every field, errors with places, the model mapping.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::net::Ipv6Addr;
use std::path::PathBuf;

use gatehouse_model::{
    Backend, BackendEndpoints, BackendProtocol, HeaderMatch, HeaderModifier, Hostname, HttpFilter,
    HttpMatch, HttpRoute, HttpRule, Listener, ListenerId, ObjectId, PathMatch, PathModifier,
    Protocol, QueryMatch, Redirect, Rewrite, StringMatch, WeightedBackend,
};

use super::*;

const CERT: &str = include_str!("../../../examples/certs/site.pem");
const KEY: &str = include_str!("../../../examples/certs/site.key");

/// A fresh directory under the system temp dir holding `files`.
fn dir_with(test: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-config-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ok(text: &str) -> Config {
    parse(text, Path::new("test.toml"), Path::new("/base")).unwrap_or_else(|e| panic!("{e}"))
}

/// The errors as `line:column: message`, without the file name.
fn errors(text: &str) -> Vec<String> {
    errors_in(text, Path::new("/base"))
}

fn errors_in(text: &str, base: &Path) -> Vec<String> {
    let errors = parse(text, Path::new("test.toml"), base).expect_err("should fail");
    let text = errors.to_string();
    text.lines().map(|l| l.strip_prefix("test.toml:").unwrap_or(l).to_owned()).collect()
}

fn h(s: &str) -> Hostname {
    Hostname::parse(s).unwrap()
}

fn gateway(name: &str) -> ObjectId {
    ObjectId::new("Gateway", "toml", name)
}

fn listener_id(gateway_name: &str, name: &str) -> ListenerId {
    ListenerId { gateway: gateway(gateway_name), name: name.into() }
}

fn http_listener(gateway_name: &str, name: &str, port: u16, hostname: Option<&str>) -> Listener {
    Listener {
        id: listener_id(gateway_name, name),
        addresses: vec![DEFAULT_ADDRESS],
        port,
        protocol: Protocol::Http,
        hostname: hostname.map(h),
        tls: None,
    }
}

fn endpoint(addr: &str) -> Backend {
    Backend::Endpoints(BackendEndpoints {
        name: addr.into(),
        addrs: vec![addr.parse().unwrap()],
        tls: None,
        protocol: BackendProtocol::Http1,
    })
}

const MINIMAL_NATIVE: &str = r#"
[[gateways]]
name = "web"
  [[gateways.listeners]]
  name = "http"
  port = 8080
  protocol = "HTTP"
[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{ address = "127.0.0.1:3000" }]
"#;

#[test]
fn empty_file_has_defaults() {
    let config = ok("");
    assert_eq!(config.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    assert_eq!(config.gateway_api, None);
    assert_eq!(config.native_desired(), Desired::default());
}

#[test]
fn empty_sections_have_defaults() {
    let config = ok("[admin]\n[runtime]\n[gateway_api]\n");
    assert_eq!(config.admin_listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(config.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
    let api = config.gateway_api.unwrap();
    assert_eq!(api.controller_name, "gatehouse.dev/gateway-controller");
    assert_eq!(api.manifests, Vec::<PathBuf>::new());
    assert_eq!(api.default_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}

#[test]
fn boot_settings_are_read() {
    let config = ok(r#"
[admin]
listen = "[::1]:9999"
[runtime]
shutdown_grace_ms = 2500
state_dir = "state"
[gateway_api]
controller_name = "example.com/gw"
manifests = ["manifests/", "extra.yaml", "/abs/other.yml"]
default_address = "::"
wasm_module_dir = "wasm"
"#);
    assert_eq!(config.admin_listen, SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 9999));
    assert_eq!(config.shutdown_grace, Duration::from_millis(2500));
    assert_eq!(config.state_dir, Path::new("/base/state"));
    assert_eq!(
        config.gateway_api,
        Some(GatewayApiSettings {
            controller_name: "example.com/gw".into(),
            manifests: vec![
                PathBuf::from("/base/manifests/"),
                PathBuf::from("/base/extra.yaml"),
                PathBuf::from("/abs/other.yml"),
            ],
            default_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            wasm_module_dir: Some(PathBuf::from("/base/wasm")),
        })
    );
}

#[test]
fn native_defaults() {
    let desired = ok(MINIMAL_NATIVE).native;
    assert_eq!(desired.generation, 0);
    assert_eq!(desired.listeners, vec![http_listener("web", "http", 8080, None)]);
    assert_eq!(
        desired.http_routes,
        vec![std::sync::Arc::new(HttpRoute {
            id: ObjectId::new("HTTPRoute", "toml", "app"),
            created: None,
            hostnames: vec![],
            listeners: vec![listener_id("web", "http")],
            rules: vec![HttpRule {
                name: None,
                matches: vec![],
                filters: vec![],
                backends: vec![WeightedBackend {
                    weight: 1,
                    backend: endpoint("127.0.0.1:3000"),
                    filters: vec![],
                }],
                policy: Default::default(),
            }],
        })]
    );
}

#[test]
fn every_native_field_maps_onto_the_model() {
    let dir = dir_with("every-field", &[("certs/site.pem", CERT), ("certs/site.key", KEY)]);
    let text = r#"
[[gateways]]
name = "web"
addresses = ["127.0.0.1", "::1"]
  [[gateways.listeners]]
  name = "http"
  port = 8080
  protocol = "HTTP"
  hostname = "*.Example.com"
  [[gateways.listeners]]
  name = "https"
  port = 8443
  protocol = "HTTPS"
  tls.certificates = [{ cert = "certs/site.pem", key = "certs/site.key" }]

[[routes]]
name = "app"
parents = ["web/https"]
hostnames = ["app.example.com"]
  [[routes.rules]]
  name = "api"
  matches = [
    { path = { prefix = "/api" }, method = "GET", headers = [{ name = "X-Env", exact = "prod" }], query = [{ name = "v", regex = "[0-9]+" }] },
    { path = { exact = "/x" } },
    { path = { regex = "/r/.*" }, headers = [{ name = "a", regex = "b+" }], query = [{ name = "Q", exact = "1" }] },
  ]
  filters = [
    { request_header_modifier = { set = { "x-a" = "1" }, add = { "x-b" = "2" }, remove = ["x-c"] } },
    { response_header_modifier = { add = { "x-d" = "3" } } },
    { url_rewrite = { hostname = "Internal.example", path = { replace_full = "/full" } } },
  ]
  backends = [
    { address = "127.0.0.1:3000", weight = 90 },
    { dns = "backend.internal:80", weight = 10, filters = [{ request_header_modifier = { remove = ["x-e"] } }] },
    { address = "[::1]:3001", weight = 0 },
  ]
  [[routes.rules]]
  matches = [{ path = { prefix = "/old" } }]
  filters = [{ request_redirect = { scheme = "https", hostname = "new.example.com", port = 443, path = { replace_prefix = "/new" }, status = 301 } }]
  [[routes.rules]]
  filters = [
    { request_redirect = { path = { replace_full = "/" } } },
  ]
  [[routes.rules]]
  matches = [{ method = "POST" }]
  filters = [{ url_rewrite = { path = { replace_prefix = "/p" } } }]
  backends = [{ dns = "localhost:1" }]
"#;
    let config = parse(text, Path::new("test.toml"), &dir).unwrap_or_else(|e| panic!("{e}"));
    let desired = config.native_desired();

    let addresses: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let cert = gatehouse_model::Certificate {
        source: dir.join("certs/site.pem").display().to_string(),
        chain_pem: CERT.into(),
        key_pem: KEY.into(),
    };
    assert_eq!(
        desired.listeners,
        vec![
            Listener {
                addresses: addresses.clone(),
                ..http_listener("web", "http", 8080, Some("*.example.com"))
            },
            Listener {
                id: listener_id("web", "https"),
                addresses,
                port: 8443,
                protocol: Protocol::Https,
                hostname: None,
                tls: Some(gatehouse_model::ListenerTls { certificates: vec![cert] }),
            },
        ]
    );
    // The key is not part of Debug or PartialEq-visible output elsewhere; check it explicitly.
    assert_eq!(desired.listeners[1].tls.as_ref().unwrap().certificates[0].key_pem, KEY);

    let route = &desired.http_routes[0];
    assert_eq!(route.id, ObjectId::new("HTTPRoute", "toml", "app"));
    assert_eq!(route.created, None);
    assert_eq!(route.hostnames, vec![h("app.example.com")]);
    assert_eq!(route.listeners, vec![listener_id("web", "https")]);

    let exact = |s: &str| StringMatch::Exact(s.into());
    let regex = |s: &str| StringMatch::Regex(s.into());
    let header = |name: &str, value| HeaderMatch { name: name.into(), value };
    let query = |name: &str, value| QueryMatch { name: name.into(), value };
    let pairs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    assert_eq!(
        route.rules[0],
        HttpRule {
            name: Some("api".into()),
            matches: vec![
                HttpMatch {
                    path: PathMatch::Prefix("/api".into()),
                    headers: vec![header("x-env", exact("prod"))],
                    query: vec![query("v", regex("[0-9]+"))],
                    method: Some("GET".into()),
                },
                HttpMatch { path: PathMatch::Exact("/x".into()), ..HttpMatch::default() },
                HttpMatch {
                    path: PathMatch::Regex("/r/.*".into()),
                    headers: vec![header("a", regex("b+"))],
                    query: vec![query("Q", exact("1"))],
                    method: None,
                },
            ],
            filters: vec![
                HttpFilter::RequestHeaderModifier(HeaderModifier {
                    set: pairs("x-a", "1"),
                    add: pairs("x-b", "2"),
                    remove: vec!["x-c".into()],
                }),
                HttpFilter::ResponseHeaderModifier(HeaderModifier {
                    add: pairs("x-d", "3"),
                    ..HeaderModifier::default()
                }),
                HttpFilter::UrlRewrite(Rewrite {
                    hostname: Some("internal.example".into()),
                    path: Some(PathModifier::ReplaceFullPath("/full".into())),
                }),
            ],
            backends: vec![
                WeightedBackend {
                    weight: 90,
                    backend: endpoint("127.0.0.1:3000"),
                    filters: vec![]
                },
                WeightedBackend {
                    weight: 10,
                    backend: Backend::Dns {
                        name: "backend.internal:80".into(),
                        host: "backend.internal".into(),
                        port: 80,
                        protocol: BackendProtocol::Http1,
                    },
                    filters: vec![HttpFilter::RequestHeaderModifier(HeaderModifier {
                        remove: vec!["x-e".into()],
                        ..HeaderModifier::default()
                    })],
                },
                WeightedBackend { weight: 0, backend: endpoint("[::1]:3001"), filters: vec![] },
            ],
            policy: Default::default(),
        }
    );
    assert_eq!(
        route.rules[1].filters,
        vec![HttpFilter::RequestRedirect(Redirect {
            scheme: Some("https".into()),
            hostname: Some("new.example.com".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
            port: Some(443),
            status: 301,
        })]
    );
    assert_eq!(
        route.rules[2].filters,
        vec![HttpFilter::RequestRedirect(Redirect {
            scheme: None,
            hostname: None,
            path: Some(PathModifier::ReplaceFullPath("/".into())),
            port: None,
            status: 302,
        })]
    );
    assert_eq!(
        route.rules[3].matches,
        vec![HttpMatch { method: Some("POST".into()), ..HttpMatch::default() }]
    );
}

#[test]
fn gateway_parent_attaches_to_listeners_whose_hostname_intersects() {
    let text = r#"
[[gateways]]
name = "gw"
  [[gateways.listeners]]
  name = "any"
  port = 80
  protocol = "HTTP"
  [[gateways.listeners]]
  name = "foo"
  port = 80
  protocol = "HTTP"
  hostname = "*.foo.com"
  [[gateways.listeners]]
  name = "bar"
  port = 80
  protocol = "HTTP"
  hostname = "bar.com"
[[routes]]
name = "all"
parents = ["gw"]
  [[routes.rules]]
[[routes]]
name = "foo"
parents = ["gw", "gw/foo"]
hostnames = ["a.foo.com"]
  [[routes.rules]]
[[routes]]
name = "wild"
parents = ["gw"]
hostnames = ["*.com"]
  [[routes.rules]]
"#;
    let routes = ok(text).native.http_routes;
    let ids = |names: &[&str]| names.iter().map(|n| listener_id("gw", n)).collect::<Vec<_>>();
    assert_eq!(routes[0].listeners, ids(&["any", "foo", "bar"]));
    // Duplicates from two parents collapse.
    assert_eq!(routes[1].listeners, ids(&["any", "foo"]));
    assert_eq!(routes[2].listeners, ids(&["any", "foo", "bar"]));
}

#[test]
fn parent_errors() {
    let text = r#"
[[gateways]]
name = "gw"
  [[gateways.listeners]]
  name = "foo"
  port = 80
  protocol = "HTTP"
  hostname = "foo.com"
[[routes]]
name = "r"
parents = ["nope", "gw/nope", "gw", "gw/foo"]
hostnames = ["bar.com"]
  [[routes.rules]]
[[routes]]
name = "s"
  [[routes.rules]]
"#;
    assert_eq!(
        errors(text),
        [
            r#"11:12: parent "nope": no gateway is named "nope""#,
            r#"11:20: parent "gw/nope": gateway "gw" has no listener named "nope""#,
            r#"11:31: parent "gw": no listener hostname intersects the route's hostnames"#,
            r#"11:37: parent "gw/foo": no listener hostname intersects the route's hostnames"#,
            "15:8: parents must not be empty",
        ]
    );
}

#[test]
fn unknown_keys_are_errors_with_their_place() {
    assert_eq!(
        errors("[admin]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n"),
        ["3:1: unknown field `lisen`, expected `listen`"]
    );
    assert_eq!(errors("[admn]\n")[0].split(',').next().unwrap(), "1:2: unknown field `admn`");
    let nested = format!("{MINIMAL_NATIVE}  weight = 3\n");
    assert_eq!(errors(&nested)[0].split(',').next().unwrap(), "13:3: unknown field `weight`");
    let in_filter = MINIMAL_NATIVE
        .replace("backends = [", "filters = [{ url_rewrite = { host = \"a\" } }]\n  backends = [");
    assert_eq!(errors(&in_filter)[0].split(',').next().unwrap(), "12:32: unknown field `host`");
    let bad_variant = MINIMAL_NATIVE.replace("\"HTTP\"", "\"TCP\"");
    assert!(errors(&bad_variant)[0].starts_with("7:14: unknown variant `TCP`"));
}

#[test]
fn syntax_errors_have_their_place() {
    let errors = errors("[admin]\nlisten = \n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("2:10: "), "{errors:?}");
    let wrong_type = self::errors("[runtime]\nshutdown_grace_ms = \"10s\"\n");
    assert!(wrong_type[0].starts_with("2:21: invalid type: string"), "{wrong_type:?}");
}

#[test]
fn many_semantic_errors_are_reported_at_once() {
    let dir = dir_with("many-errors", &[("empty.pem", "not pem\n"), ("cert.pem", CERT)]);
    let text = r#"[admin]
listen = "localhost:9901"
[gateway_api]
controller_name = "no-slash"
default_address = "0.0.0.0:80"
[[gateways]]
name = "Web"
addresses = ["1.2.3"]
  [[gateways.listeners]]
  name = "a"
  port = 0
  protocol = "HTTPS"
  hostname = "bad..host"
  [[gateways.listeners]]
  name = "a"
  port = 80
  protocol = "HTTP"
  tls.certificates = []
  [[gateways.listeners]]
  name = "s"
  port = 443
  protocol = "HTTPS"
  tls.certificates = [{ cert = "missing.pem", key = "cert.pem" }, { cert = "empty.pem", key = "empty.pem" }]
[[gateways]]
name = "Web"
[[routes]]
name = "r"
parents = ["Web"]
hostnames = ["10.0.0.1"]
  [[routes.rules]]
  name = "x"
  matches = [{ path = { prefix = "api" }, method = "get", headers = [{ name = "bad name", exact = "1" }, { name = "a" }], query = [{ name = "q", exact = "1", regex = "2" }] }, { path = { regex = "(" } }]
  filters = [{ request_redirect = { scheme = "ftp", status = 200, port = 0, hostname = "*.x.com", path = { replace_prefix = "/p" } } }, { url_rewrite = {} }, { url_rewrite = {} }]
  backends = [{ address = "nope" }, { dns = "host" }, { address = "1.2.3.4:0", weight = 1000001 }, { address = "1.2.3.4:1", dns = "a:1" }, { dns = "a.b:1", filters = [{ request_redirect = {} }, { request_header_modifier = { set = { "x" = "a\nb" } } }] }]
  [[routes.rules]]
  name = "x"
[[routes]]
name = "r"
parents = ["Web"]
"#;
    let found = errors_in(text, &dir);
    let d = dir.display();
    let bad_name = "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters";
    let expected = [
        r#"2:10: "localhost:9901" is not a socket address (IP:PORT): invalid socket address syntax"#.to_owned(),
        r#"4:19: controller name "no-slash" must be a domain-prefixed path, like "gatehouse.dev/gateway-controller""#.into(),
        r#"5:19: "0.0.0.0:80" is not an IP address: invalid IP address syntax"#.into(),
        format!(r#"7:8: invalid gateway name "Web": {bad_name}"#),
        r#"8:14: "1.2.3" is not an IP address: invalid IP address syntax"#.into(),
        "11:10: port must be between 1 and 65535".into(),
        "12:14: an HTTPS listener needs tls.certificates".into(),
        r#"13:14: hostname "bad..host" has an invalid label (RFC 1123: a-z, 0-9, '-', 1-63 characters, no leading or trailing '-'; '*' only as the whole first label)"#.into(),
        r#"15:10: duplicate listener name "a" (first defined at 10:10)"#.into(),
        "18:3: tls is only allowed on HTTPS listeners".into(),
        format!("23:32: cannot read {d}/missing.pem: No such file or directory (os error 2)"),
        format!("23:53: {d}/cert.pem holds no PEM private key (PKCS#1, PKCS#8 or SEC1)"),
        format!("23:76: {d}/empty.pem holds no PEM certificate"),
        format!("23:95: {d}/empty.pem holds no PEM private key (PKCS#1, PKCS#8 or SEC1)"),
        format!(r#"25:8: invalid gateway name "Web": {bad_name}"#),
        r#"25:8: duplicate gateway name "Web" (first defined at 7:8)"#.into(),
        "25:8: listeners must not be empty".into(),
        r#"29:14: hostname "10.0.0.1" is an IP address; only DNS names are allowed"#.into(),
        r#"32:34: path "api" must start with '/' and contain no '//', '/./', '/../', '%2f', '%2F' or '#', nor end in '/.' or '/..'"#.into(),
        r#"32:52: method "get" is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"#.into(),
        r#"32:79: "bad name" is not a valid HTTP header name"#.into(),
        "32:106: a match needs exactly one of `exact` or `regex`".into(),
        "32:132: a match needs exactly one of `exact` or `regex`".into(),
        r#"32:196: invalid regular expression "(": unclosed group"#.into(),
        "33:14: request_redirect cannot be used together with backends".into(),
        r#"33:46: scheme "ftp" is not "http" or "https""#.into(),
        "33:62: redirect status 200 is not one of 301, 302, 303, 307, 308".into(),
        "33:74: port must be between 1 and 65535".into(),
        r#"33:88: "*.x.com" is a wildcard; a precise hostname is required here"#.into(),
        "33:125: replace_prefix needs every match of the rule to be a path prefix match".into(),
        "33:137: request_redirect and url_rewrite cannot be used together".into(),
        "33:159: filter url_rewrite appears more than once in one filter list".into(),
        r#"34:27: "nope" is not a socket address (IP:PORT): invalid socket address syntax"#.into(),
        r#"34:45: "host" is not HOST:PORT: the port is missing"#.into(),
        "34:67: port must be between 1 and 65535".into(),
        "34:89: weight 1000001 is out of range 0..=1000000".into(),
        "34:100: a backend needs exactly one of `address` or `dns`".into(),
        "34:168: request_redirect is only allowed in a rule's filters, not a backend's".into(),
        r#"34:239: header value "a\nb" contains control characters"#.into(),
        r#"36:10: duplicate rule name "x" (first defined at 31:10)"#.into(),
        r#"38:8: duplicate route name "r" (first defined at 27:8)"#.into(),
        "38:8: rules must not be empty".into(),
    ];
    assert_eq!(found, expected);
}

#[test]
fn messages_name_the_file() {
    let err = parse("x = 1", Path::new("dir/gatehouse.toml"), Path::new("dir")).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("dir/gatehouse.toml:1:1: unknown field `x`"), "{text}");
    let error = &err.errors()[0];
    assert_eq!(error.place.position, Some(Position { line: 1, column: 1 }));
    assert!(matches!(error.problem, Problem::Syntax(_)));
}

#[test]
fn load_resolves_paths_against_the_file_directory() {
    let dir = dir_with(
        "load",
        &[
            ("conf/tls/site.pem", CERT),
            ("conf/tls/site.key", KEY),
            (
                "conf/gatehouse.toml",
                r#"
[gateway_api]
manifests = ["manifests", "../shared/one.yaml"]
[[gateways]]
name = "web"
  [[gateways.listeners]]
  name = "https"
  port = 8443
  protocol = "HTTPS"
  tls.certificates = [{ cert = "tls/site.pem", key = "tls/site.key" }]
"#,
            ),
        ],
    );
    let config = load(&dir.join("conf/gatehouse.toml")).unwrap_or_else(|e| panic!("{e}"));
    let conf = dir.join("conf");
    assert_eq!(
        config.gateway_api.unwrap().manifests,
        vec![conf.join("manifests"), conf.join("../shared/one.yaml")]
    );
    let tls = config.native.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].source, conf.join("tls/site.pem").display().to_string());
    assert_eq!(tls.certificates[0].chain_pem, CERT);
}

#[test]
fn load_reports_an_unreadable_file() {
    let path = Path::new("/nonexistent/gatehouse.toml");
    let err = load(path).unwrap_err();
    assert_eq!(err.errors().len(), 1);
    assert_eq!(err.errors()[0].place, Place { file: path.into(), position: None });
    assert!(
        err.to_string().starts_with("/nonexistent/gatehouse.toml: cannot read the config file")
    );
}

#[test]
fn default_config_parses() {
    let config = parse_default().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(config.gateway_api, None);
    let desired = config.native_desired();
    assert_eq!(
        desired.listeners,
        vec![Listener {
            addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ..http_listener("demo", "http", 8080, None)
        }]
    );
    let route = &desired.http_routes[0];
    assert_eq!(route.listeners, vec![listener_id("demo", "http")]);
    assert!(route.hostnames.is_empty());
    let forward = route.rules.last().unwrap();
    assert!(forward.matches.is_empty(), "the catch-all rule matches every path");
    assert_eq!(forward.backends[0].backend, endpoint("127.0.0.1:9901"));
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn native_example_parses() {
    let config = load(&examples().join("gatehouse.toml")).unwrap_or_else(|e| panic!("{e}"));
    let desired = config.native_desired();
    assert_eq!(desired.listeners.len(), 2);
    assert_eq!(desired.http_routes.len(), 2);
    assert!(desired.listeners[1].tls.as_ref().is_some_and(|t| t.certificates.len() == 1));
}

#[test]
fn gateway_api_example_parses() {
    let config = load(&examples().join("gateway-api.toml")).unwrap_or_else(|e| panic!("{e}"));
    let api = config.gateway_api.unwrap();
    assert_eq!(api.controller_name, DEFAULT_CONTROLLER_NAME);
    assert_eq!(api.manifests.len(), 1);
    assert!(api.manifests[0].join("gateway.yaml").is_file());
    assert_eq!(config.native, Desired::default());
}

#[test]
fn kubernetes_defaults() {
    let config = ok("[kubernetes]\n");
    assert_eq!(
        config.kubernetes,
        Some(KubernetesSettings {
            kubeconfig: None,
            controller_name: DEFAULT_CONTROLLER_NAME.into(),
            namespaces: Vec::new(),
            default_address: DEFAULT_ADDRESS,
            write_status: true,
            backend_addressing: BackendAddressing::Endpoints,
            wasm_module_dir: None,
            lease: LeaseSettings {
                namespace: "gatehouse-system".into(),
                name: "gatehouse".into(),
                identity: None,
                duration: Duration::from_secs(15),
            },
        })
    );
    assert_eq!(ok("").kubernetes, None);
}

#[test]
fn kubernetes_settings_are_read() {
    let config = ok(r#"
[gateway_api]
controller_name = "example.com/files"
[kubernetes]
kubeconfig = "kube/config"
controller_name = "example.com/cluster"
namespaces = ["team-a", "b"]
default_address = "192.0.2.1"
write_status = false
lease_namespace = "infra"
lease_name = "edge.gatehouse"
identity = "edge-1"
lease_duration_seconds = 3
backend_addressing = "nodeport"
wasm_module_dir = "/srv/wasm"
"#);
    assert_eq!(
        config.kubernetes,
        Some(KubernetesSettings {
            kubeconfig: Some(PathBuf::from("/base/kube/config")),
            controller_name: "example.com/cluster".into(),
            namespaces: vec!["team-a".into(), "b".into()],
            default_address: "192.0.2.1".parse().unwrap(),
            write_status: false,
            backend_addressing: BackendAddressing::NodePort,
            wasm_module_dir: Some(PathBuf::from("/srv/wasm")),
            lease: LeaseSettings {
                namespace: "infra".into(),
                name: "edge.gatehouse".into(),
                identity: Some("edge-1".into()),
                duration: Duration::from_secs(3),
            },
        })
    );
}

#[test]
fn kubernetes_errors_have_their_place() {
    assert_eq!(
        errors(
            r#"[kubernetes]
kubeconfig = ""
controller_name = "nope"
namespaces = ["ok", "Bad", "ok", "a.b"]
default_address = "x"
"#
        ),
        [
            "2:14: kubeconfig path must not be empty",
            "3:19: controller name \"nope\" must be a domain-prefixed path, like \"gatehouse.dev/gateway-controller\"",
            "4:21: invalid namespace \"Bad\": use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            "4:28: duplicate namespace \"ok\"",
            "4:34: invalid namespace \"a.b\": use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            "5:19: \"x\" is not an IP address: invalid IP address syntax",
        ]
    );
    assert_eq!(errors("[kubernetes]\nnamespaces = []\n"), ["2:14: namespaces must not be empty"]);
    assert_eq!(
        errors(
            "[kubernetes]\nlease_namespace = \"A\"\nlease_name = \"x_y\"\nidentity = \" \"\nlease_duration_seconds = 1\n"
        ),
        [
            "2:19: invalid namespace \"A\": use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            "3:14: invalid lease name \"x_y\": use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters",
            "4:12: identity must not be empty",
            "5:26: lease_duration_seconds must be between 2 and 3600",
        ]
    );
    let addressing = errors("[kubernetes]\nbackend_addressing = \"pods\"\n");
    assert_eq!(addressing.len(), 1, "{addressing:?}");
    assert!(addressing[0].starts_with("2:22: "), "{addressing:?}");
    assert!(addressing[0].contains("expected `endpoints` or `nodeport`"), "{addressing:?}");
    let wrong_type = errors("[kubernetes]\nwrite_status = \"no\"\n");
    assert_eq!(wrong_type.len(), 1, "{wrong_type:?}");
    assert!(wrong_type[0].starts_with("2:16: "), "{wrong_type:?}");
    assert_eq!(
        errors("[kubernetes]\nleases = true\n")[0].split(':').take(2).collect::<Vec<_>>(),
        ["2", "1"]
    );
}

#[test]
fn kubernetes_and_manifests_are_exclusive() {
    let errors = errors("[gateway_api]\nmanifests = [\"m\"]\n[kubernetes]\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("3:1: [kubernetes] and [gateway_api] manifests"), "{errors:?}");
}

#[test]
fn kubernetes_example_parses() {
    let config = load(&examples().join("kubernetes.toml")).unwrap_or_else(|e| panic!("{e}"));
    let kube = config.kubernetes.unwrap();
    assert!(kube.kubeconfig.unwrap().is_file());
    assert_eq!(kube.namespaces, ["default"]);
    assert_eq!(config.gateway_api, None);
}

#[test]
fn l4_limits_default_and_out_of_range_values_are_errors_at_their_place() {
    assert_eq!(ok("").l4, gatehouse_model::L4Limits::default());
    let config = ok("[l4]\nudp_max_sessions = 16\nclient_hello_timeout_ms = 250\n");
    assert_eq!(config.l4.udp_max_sessions, 16);
    assert_eq!(config.l4.client_hello_timeout, std::time::Duration::from_millis(250));
    let errs = errors("[l4]\nudp_max_sessions = 0\ntcp_idle_timeout_ms = 0\n");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("2:20: udp_max_sessions"), "{errs:?}");
    assert!(errs[1].starts_with("3:23: tcp_idle_timeout_ms"), "{errs:?}");
    assert_eq!(errors("[l4]\nudp_sessions = 3\n").len(), 1, "unknown keys are refused");
}
