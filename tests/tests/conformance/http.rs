//! GATEWAY-HTTP: Gateway, HTTPRoute and ReferenceGrant core behaviour plus the extended
//! features the rest of the e2e suite does not already cover from the spec's side.

use gatehouse_tests::{Appliance, Client, EchoBackend, Reply, free_port};
use http::Method;
use serde_json::Value;

use crate::{
    Case, GATEWAY_API_CONFIG, GATEWAY_CLASS, Outcome, case, condition, ensure, ensure_eq,
    expect_route_condition, namespace, object, run_profile, service,
};

/// One appliance serving every case's manifests, and the echo backends behind them.
struct World {
    gh: Appliance,
    /// Listener `http`: routes from all namespaces.
    all: u16,
    /// Listener `same`: routes from the Gateway's namespace only.
    same: u16,
    /// Listener `selected`: routes from namespaces labelled `expose: "yes"`.
    selected: u16,
    /// Listeners `wild` (`*.iso.example`) and `exact` (`foo.iso.example`) sharing one port.
    isolated: u16,
    _backends: Vec<EchoBackend>,
}

impl World {
    async fn get(&self, port: u16, host: &str, path: &str) -> Result<Reply, String> {
        Client::http1().get_host(&format!("http://127.0.0.1:{port}{path}"), host).await
    }

    /// The backend that answers `GET path` for `host` on the `http` listener, or the status.
    async fn answered_by(&self, host: &str, path: &str) -> Result<String, String> {
        let reply = self.get(self.all, host, path).await?;
        Ok(match reply.backend() {
            Some(backend) if reply.status == 200 => backend.to_owned(),
            _ => reply.status.to_string(),
        })
    }

    async fn status(&self) -> Value {
        self.gh.status().await
    }
}

fn gateway(all: u16, same: u16, selected: u16, isolated: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: infra
spec:
  gatewayClassName: gatehouse
  addresses:
  - type: IPAddress
    value: 127.0.0.1
  listeners:
  - name: http
    port: {all}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
  - name: same
    port: {same}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Same
  - name: selected
    port: {selected}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels:
            expose: "yes"
  - name: wild
    port: {isolated}
    protocol: HTTP
    hostname: "*.iso.example"
    allowedRoutes:
      namespaces:
        from: All
  - name: exact
    port: {isolated}
    protocol: HTTP
    hostname: foo.iso.example
    allowedRoutes:
      namespaces:
        from: All
"#
    )
}

/// An HTTPRoute `namespace/name` with `spec` (YAML at two spaces of indent, below `spec:`).
fn route(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}"
    )
}

const ROUTES: &[(&str, &str, &str)] = &[
    (
        "infra",
        "basic",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /basic } }]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "paths",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [paths.example]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /exact } }]
    backendRefs: [{ name: v2, port: 80 }]
  - matches: [{ path: { type: Exact, value: /exact } }]
    backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /prefix } }]
    backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /prefix/longer } }]
    backendRefs: [{ name: v2, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /seg/ } }]
    backendRefs: [{ name: v3, port: 80 }]
"#,
    ),
    (
        "infra",
        "hosts-wildcard",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: ["*.wild.example"]
  rules:
  - backendRefs: [{ name: v2, port: 80 }]
"#,
    ),
    (
        "infra",
        "hosts-exact",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [a.wild.example]
  rules:
  - backendRefs: [{ name: v3, port: 80 }]
"#,
    ),
    (
        "infra",
        "headers",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [headers.example]
  rules:
  - backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ headers: [{ name: Version, value: two }] }]
    backendRefs: [{ name: v2, port: 80 }]
  - matches: [{ headers: [{ name: version, value: two }, { name: env, value: canary }] }]
    backendRefs: [{ name: v3, port: 80 }]
"#,
    ),
    (
        "infra",
        "query",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [query.example]
  rules:
  - backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ queryParams: [{ name: animal, value: whale }] }]
    backendRefs: [{ name: v2, port: 80 }]
"#,
    ),
    (
        "infra",
        "method",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [method.example]
  rules:
  - backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ method: POST }]
    backendRefs: [{ name: v2, port: 80 }]
"#,
    ),
    (
        "infra",
        "request-headers",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [reqhdr.example]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{ name: X-Set, value: set-value }]
        add: [{ name: X-Add, value: added }]
        remove: [X-Remove]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "response-headers",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [resphdr.example]
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{ name: X-Resp, value: from-gateway }]
        add: [{ name: X-Resp-Add, value: added }]
        remove: [Content-Type]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "redirects",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [redirect.example]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /scheme } }]
    filters: [{ type: RequestRedirect, requestRedirect: { scheme: https } }]
  - matches: [{ path: { type: PathPrefix, value: /host } }]
    filters: [{ type: RequestRedirect, requestRedirect: { hostname: moved.example, statusCode: 301 } }]
  - matches: [{ path: { type: PathPrefix, value: /port } }]
    filters: [{ type: RequestRedirect, requestRedirect: { port: 8443 } }]
  - matches: [{ path: { type: PathPrefix, value: /full } }]
    filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplaceFullPath, replaceFullPath: /new } } }]
  - matches: [{ path: { type: PathPrefix, value: /old } }]
    filters: [{ type: RequestRedirect, requestRedirect: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /replaced } } }]
"#,
    ),
    (
        "infra",
        "rewrites",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [rewrite.example]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /prefix } }]
    filters: [{ type: URLRewrite, urlRewrite: { path: { type: ReplacePrefixMatch, replacePrefixMatch: /one } } }]
    backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /full } }]
    filters: [{ type: URLRewrite, urlRewrite: { hostname: rewritten.example, path: { type: ReplaceFullPath, replaceFullPath: /full-new } } }]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "weights",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [weights.example]
  rules:
  - backendRefs:
    - { name: v1, port: 80, weight: 1 }
    - { name: v2, port: 80, weight: 1 }
    - { name: v3, port: 80, weight: 0 }
"#,
    ),
    (
        "infra",
        "missing-backend",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [missing.example]
  rules:
  - backendRefs: [{ name: nowhere, port: 80 }]
"#,
    ),
    (
        "infra",
        "invalid-kind",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [invalid-kind.example]
  rules:
  - backendRefs: [{ group: example.com, kind: Widget, name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "cross-granted",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [granted.example]
  rules:
  - backendRefs: [{ name: shared, namespace: granted, port: 80 }]
"#,
    ),
    (
        "infra",
        "cross-denied",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [denied.example]
  rules:
  - backendRefs: [{ name: private, namespace: other, port: 80 }]
"#,
    ),
    (
        "other",
        "on-same-listener",
        r#"  parentRefs: [{ name: web, namespace: infra, sectionName: same }]
  rules:
  - backendRefs: [{ name: private, port: 80 }]
"#,
    ),
    (
        "app",
        "on-selected-listener",
        r#"  parentRefs: [{ name: web, namespace: infra, sectionName: selected }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /app } }]
    backendRefs: [{ name: app, port: 80 }]
"#,
    ),
    (
        "other",
        "on-selected-listener",
        r#"  parentRefs: [{ name: web, namespace: infra, sectionName: selected }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /other } }]
    backendRefs: [{ name: private, port: 80 }]
"#,
    ),
    (
        "infra",
        "hostname-mismatch",
        r#"  parentRefs: [{ name: web, sectionName: exact }]
  hostnames: [bar.elsewhere.example]
  rules:
  - backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "no-such-section",
        r#"  parentRefs: [{ name: web, sectionName: nonexistent }]
  rules:
  - backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "isolation-wild",
        r#"  parentRefs: [{ name: web, sectionName: wild }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /wild-only } }]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "isolation-exact",
        r#"  parentRefs: [{ name: web, sectionName: exact }]
  rules:
  - matches: [{ path: { type: PathPrefix, value: /exact-only } }]
    backendRefs: [{ name: v2, port: 80 }]
"#,
    ),
    (
        "infra",
        "timeouts",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [timeout.example]
  rules:
  - timeouts: { request: 300ms }
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "infra",
        "cors",
        r#"  parentRefs: [{ name: web, sectionName: http }]
  hostnames: [cors.example]
  rules:
  - filters:
    - type: CORS
      cors:
        allowOrigins: ["https://ok.example"]
        allowMethods: [GET, PUT]
        allowHeaders: [x-custom]
        maxAge: 600
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
];

const GRANT: &str = r#"---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: infra-routes
  namespace: granted
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: infra
  to:
  - group: ""
    kind: Service
"#;

async fn world() -> World {
    let names = ["v1", "v2", "v3", "app", "shared", "private"];
    let mut backends = Vec::new();
    for name in names {
        backends.push(EchoBackend::start(name).await);
    }
    let port = |name: &str| backends.iter().find(|b| b.name == name).map(EchoBackend::port);
    let (all, same, selected, isolated) = (free_port(), free_port(), free_port(), free_port());
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway(all, same, selected, isolated));
    yaml.push_str(&namespace("infra", &[]));
    yaml.push_str(&namespace("app", &[("expose", "\"yes\"")]));
    yaml.push_str(&namespace("other", &[("expose", "\"no\"")]));
    yaml.push_str(&namespace("granted", &[]));
    for name in ["v1", "v2", "v3"] {
        yaml.push_str(&service("infra", name, port(name).unwrap_or(1)));
    }
    yaml.push_str(&service("app", "app", port("app").unwrap_or(1)));
    yaml.push_str(&service("granted", "shared", port("shared").unwrap_or(1)));
    yaml.push_str(&service("other", "private", port("private").unwrap_or(1)));
    yaml.push_str(GRANT);
    for (ns, name, spec) in ROUTES {
        yaml.push_str(&route(ns, name, spec));
    }
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/http.yaml", &yaml)]).await;
    World { gh, all, same, selected, isolated, _backends: backends }
}

async fn gateway_class_accepted_with_sorted_features(w: &World) -> Outcome {
    let status = w.status().await;
    let class = object(&status, "GatewayClass", "", "gatehouse")?;
    ensure_eq!(condition(&class["status"]["conditions"], "Accepted")?.0, "True", "Accepted");
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["name"].as_str().or(f.as_str())).collect())
        .unwrap_or_default();
    ensure!(features.contains(&"HTTPRoute"), "supportedFeatures lacks HTTPRoute: {features:?}");
    ensure!(features.contains(&"Gateway"), "supportedFeatures lacks Gateway: {features:?}");
    let mut sorted = features.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure_eq!(features, sorted, "supportedFeatures sorted and unique");
    Ok(())
}

async fn gateway_programmed_with_listener_status(w: &World) -> Outcome {
    let status = w.status().await;
    let gateway = object(&status, "Gateway", "infra", "web")?;
    let conditions = &gateway["status"]["conditions"];
    ensure_eq!(condition(conditions, "Accepted")?.0, "True", "Gateway Accepted");
    ensure_eq!(condition(conditions, "Programmed")?.0, "True", "Gateway Programmed");
    ensure!(
        gateway["status"]["addresses"].to_string().contains("127.0.0.1"),
        "status.addresses lacks 127.0.0.1: {}",
        gateway["status"]["addresses"]
    );
    let listeners = gateway["status"]["listeners"].as_array().cloned().unwrap_or_default();
    ensure_eq!(listeners.len(), 5, "listener entries");
    let listener = |name: &str| {
        listeners.iter().find(|l| l["name"] == name).ok_or(format!("no listener {name} in status"))
    };
    for name in ["http", "same", "selected", "wild", "exact"] {
        let l = listener(name)?;
        for kind in ["Accepted", "Programmed", "ResolvedRefs"] {
            ensure_eq!(condition(&l["conditions"], kind)?.0, "True", "listener {name} {kind}");
        }
        ensure!(
            l["supportedKinds"].to_string().contains("HTTPRoute"),
            "listener {name} supportedKinds: {}",
            l["supportedKinds"]
        );
    }
    // The route from a namespace the listener does not allow is not counted.
    ensure_eq!(listener("same")?["attachedRoutes"].as_u64(), Some(0), "same.attachedRoutes");
    ensure_eq!(
        listener("selected")?["attachedRoutes"].as_u64(),
        Some(1),
        "selected.attachedRoutes"
    );
    ensure_eq!(listener("wild")?["attachedRoutes"].as_u64(), Some(1), "wild.attachedRoutes");
    Ok(())
}

async fn simple_same_namespace_route(w: &World) -> Outcome {
    let reply = w.get(w.all, "anything.example", "/basic/x").await?;
    ensure_eq!((reply.status, reply.backend()), (200, Some("v1")), "GET /basic/x");
    let seen = reply.json();
    ensure_eq!(seen["path"].as_str(), Some("/basic/x"), "path at the backend");
    let h2 = Client::h2c()
        .get_host(&format!("http://127.0.0.1:{}/basic/h2", w.all), "anything.example")
        .await?;
    ensure_eq!((h2.status, h2.backend()), (200, Some("v1")), "GET /basic/h2 over h2c");
    let status = w.status().await;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "basic"),
        ("web", Some("http")),
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "basic"),
        ("web", Some("http")),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    let reply = w.get(w.all, "anything.example", "/unrouted").await?;
    ensure_eq!(reply.status, 404, "GET /unrouted");
    Ok(())
}

async fn path_matching_and_precedence(w: &World) -> Outcome {
    for (path, expected) in [
        ("/exact", "v1"),
        ("/exact/", "v2"),
        ("/exact/more", "v2"),
        ("/prefix", "v1"),
        ("/prefix/", "v1"),
        ("/prefix/longer", "v2"),
        ("/prefix/longer/x", "v2"),
        ("/prefix/longerx", "v1"),
        ("/prefixx", "404"),
        ("/seg/x", "v3"),
        ("/seg", "v3"),
        ("/segment", "404"),
    ] {
        ensure_eq!(w.answered_by("paths.example", path).await?, expected, "GET {path}");
    }
    Ok(())
}

async fn hostname_exact_and_wildcard(w: &World) -> Outcome {
    for (host, expected) in [
        ("a.wild.example", "v3"),
        ("A.Wild.Example", "v3"),
        ("b.wild.example", "v2"),
        ("deep.b.wild.example", "v2"),
        ("wild.example", "404"),
        ("a.wild.example:8080", "v3"),
    ] {
        ensure_eq!(w.answered_by(host, "/").await?, expected, "host {host}");
    }
    Ok(())
}

async fn header_matching(w: &World) -> Outcome {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "v1"),
        (&[("version", "two")], "v2"),
        (&[("VERSION", "two"), ("env", "canary")], "v3"),
        (&[("version", "Two")], "v1"),
    ];
    for (headers, expected) in cases {
        let mut client = Client::http1();
        for (name, value) in headers {
            client = client.header(name, value);
        }
        let reply =
            client.get_host(&format!("http://127.0.0.1:{}/", w.all), "headers.example").await?;
        ensure_eq!(reply.backend(), Some(expected), "headers {headers:?}");
    }
    Ok(())
}

async fn query_param_matching(w: &World) -> Outcome {
    ensure_eq!(w.answered_by("query.example", "/?animal=whale").await?, "v2", "animal=whale");
    ensure_eq!(w.answered_by("query.example", "/?animal=dolphin").await?, "v1", "animal=dolphin");
    ensure_eq!(w.answered_by("query.example", "/?ANIMAL=whale").await?, "v1", "names are exact");
    ensure_eq!(w.answered_by("query.example", "/?x=1&animal=whale").await?, "v2", "among others");
    Ok(())
}

async fn method_matching(w: &World) -> Outcome {
    let url = format!("http://127.0.0.1:{}/", w.all);
    let post = Client::http1().request(Method::POST, &url, Some("method.example")).await?;
    ensure_eq!(post.backend(), Some("v2"), "POST");
    let get = Client::http1().request(Method::GET, &url, Some("method.example")).await?;
    ensure_eq!(get.backend(), Some("v1"), "GET");
    Ok(())
}

async fn request_header_modifier(w: &World) -> Outcome {
    let reply = Client::http1()
        .header("x-set", "original")
        .header("x-add", "original")
        .header("x-remove", "gone")
        .get_host(&format!("http://127.0.0.1:{}/", w.all), "reqhdr.example")
        .await?;
    ensure_eq!(reply.status, 200, "status");
    let headers = &reply.json()["headers"];
    ensure_eq!(headers["x-set"].as_str(), Some("set-value"), "x-set");
    ensure_eq!(headers["x-add"].as_str(), Some("original, added"), "x-add");
    ensure!(headers.get("x-remove").is_none(), "x-remove reached the backend: {headers}");
    Ok(())
}

async fn response_header_modifier(w: &World) -> Outcome {
    let reply = w.get(w.all, "resphdr.example", "/").await?;
    ensure_eq!(reply.header("x-resp"), Some("from-gateway"), "x-resp");
    ensure_eq!(reply.header("x-resp-add"), Some("added"), "x-resp-add");
    ensure_eq!(reply.header("content-type"), None, "content-type removed");
    Ok(())
}

async fn request_redirects(w: &World) -> Outcome {
    let port = w.all;
    for (path, code, location) in [
        ("/scheme/x?q=1", 302, "https://redirect.example/scheme/x?q=1".to_owned()),
        ("/host/x", 301, format!("http://moved.example:{port}/host/x")),
        ("/port/x", 302, "http://redirect.example:8443/port/x".to_owned()),
        ("/full/x", 302, format!("http://redirect.example:{port}/new")),
        ("/old/x/y", 302, format!("http://redirect.example:{port}/replaced/x/y")),
        ("/old", 302, format!("http://redirect.example:{port}/replaced")),
    ] {
        let reply = w.get(port, "redirect.example", path).await?;
        ensure_eq!(
            (reply.status, reply.header("location")),
            (code, Some(location.as_str())),
            "redirect of {path}"
        );
    }
    Ok(())
}

async fn url_rewrites(w: &World) -> Outcome {
    let reply = w.get(w.all, "rewrite.example", "/prefix/x?q=1").await?;
    ensure_eq!(reply.json()["path"].as_str(), Some("/one/x?q=1"), "prefix rewrite");
    let reply = w.get(w.all, "rewrite.example", "/prefix").await?;
    ensure_eq!(reply.json()["path"].as_str(), Some("/one"), "prefix rewrite of the whole path");
    let reply = w.get(w.all, "rewrite.example", "/full/x").await?;
    let seen = reply.json();
    ensure_eq!(seen["path"].as_str(), Some("/full-new"), "full path rewrite");
    ensure_eq!(seen["host"].as_str(), Some("rewritten.example"), "hostname rewrite");
    Ok(())
}

async fn weighted_backends(w: &World) -> Outcome {
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..40 {
        *seen.entry(w.answered_by("weights.example", "/").await?).or_default() += 1;
    }
    ensure!(seen.contains_key("v1") && seen.contains_key("v2"), "1:1 weights: {seen:?}");
    ensure!(!seen.contains_key("v3"), "weight 0 took requests: {seen:?}");
    ensure_eq!(seen.len(), 2, "only v1 and v2 answer");
    Ok(())
}

async fn unresolved_backends(w: &World) -> Outcome {
    ensure_eq!(w.answered_by("missing.example", "/").await?, "500", "missing backend");
    ensure_eq!(w.answered_by("invalid-kind.example", "/").await?, "500", "invalid kind");
    let status = w.status().await;
    let parent = ("web", Some("http"));
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "missing-backend"),
        parent,
        ("ResolvedRefs", "False", "BackendNotFound"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "missing-backend"),
        parent,
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "invalid-kind"),
        parent,
        ("ResolvedRefs", "False", "InvalidKind"),
    )
}

async fn cross_namespace_backends_need_a_grant(w: &World) -> Outcome {
    ensure_eq!(w.answered_by("granted.example", "/").await?, "shared", "granted backend");
    ensure_eq!(w.answered_by("denied.example", "/").await?, "500", "backend without grant");
    let status = w.status().await;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "cross-granted"),
        ("web", Some("http")),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "cross-denied"),
        ("web", Some("http")),
        ("ResolvedRefs", "False", "RefNotPermitted"),
    )
}

async fn allowed_routes_namespaces(w: &World) -> Outcome {
    let status = w.status().await;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("other", "on-same-listener"),
        ("web", Some("same")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("app", "on-selected-listener"),
        ("web", Some("selected")),
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("other", "on-selected-listener"),
        ("web", Some("selected")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )?;
    let app = w.get(w.selected, "x.example", "/app").await?;
    ensure_eq!(app.backend(), Some("app"), "route from a selected namespace");
    let other = w.get(w.selected, "x.example", "/other").await?;
    ensure_eq!(other.status, 404, "route from a namespace the selector excludes");
    let same = w.get(w.same, "x.example", "/").await?;
    ensure_eq!(same.status, 404, "route from another namespace on a Same listener");
    Ok(())
}

async fn parent_ref_mismatches(w: &World) -> Outcome {
    let status = w.status().await;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "hostname-mismatch"),
        ("web", Some("exact")),
        ("Accepted", "False", "NoMatchingListenerHostname"),
    )?;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "no-such-section"),
        ("web", Some("nonexistent")),
        ("Accepted", "False", "NoMatchingParent"),
    )
}

async fn listener_isolation(w: &World) -> Outcome {
    let port = w.isolated;
    for (host, path, expected) in [
        ("bar.iso.example", "/wild-only", "v1"),
        ("foo.iso.example", "/exact-only", "v2"),
        ("foo.iso.example", "/wild-only", "404"),
        ("bar.iso.example", "/exact-only", "404"),
        ("iso.example", "/wild-only", "404"),
    ] {
        let reply = w.get(port, host, path).await?;
        let got = match reply.backend() {
            Some(b) if reply.status == 200 => b.to_owned(),
            _ => reply.status.to_string(),
        };
        ensure_eq!(got, expected, "{host}{path}");
    }
    Ok(())
}

async fn request_timeout(w: &World) -> Outcome {
    ensure_eq!(w.answered_by("timeout.example", "/").await?, "v1", "within the timeout");
    let slow = w.get(w.all, "timeout.example", "/?sleep_ms=5000").await?;
    ensure_eq!(slow.status, 504, "request over the 300 ms timeout");
    Ok(())
}

async fn cors_preflight(w: &World) -> Outcome {
    let url = format!("http://127.0.0.1:{}/", w.all);
    let preflight = Client::http1()
        .header("origin", "https://ok.example")
        .header("access-control-request-method", "PUT")
        .request(Method::OPTIONS, &url, Some("cors.example"))
        .await?;
    ensure_eq!(preflight.status, 204, "preflight status");
    ensure_eq!(preflight.backend(), None, "preflight reached a backend");
    ensure_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://ok.example"),
        "allow-origin"
    );
    ensure!(
        preflight.header("access-control-allow-methods").is_some_and(|m| m.contains("PUT")),
        "allow-methods: {:?}",
        preflight.header("access-control-allow-methods")
    );
    let denied = Client::http1()
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PUT")
        .request(Method::OPTIONS, &url, Some("cors.example"))
        .await?;
    ensure_eq!(denied.header("access-control-allow-origin"), None, "foreign origin");
    let simple = Client::http1()
        .header("origin", "https://ok.example")
        .get_host(&url, "cors.example")
        .await?;
    ensure_eq!(
        (simple.backend(), simple.header("access-control-allow-origin")),
        (Some("v1"), Some("https://ok.example")),
        "simple request"
    );
    Ok(())
}

#[tokio::test]
async fn gateway_http_profile() {
    let world = world().await;
    let cases: &[Case<World>] = &[
        case!(
            "gateway_class_accepted_with_sorted_features",
            ["Gateway"],
            gateway_class_accepted_with_sorted_features
        ),
        case!(
            "gateway_programmed_with_listener_status",
            ["Gateway"],
            gateway_programmed_with_listener_status
        ),
        case!("simple_same_namespace_route", ["HTTPRoute"], simple_same_namespace_route),
        case!("path_matching_and_precedence", ["HTTPRoute"], path_matching_and_precedence),
        case!("hostname_exact_and_wildcard", ["HTTPRoute"], hostname_exact_and_wildcard),
        case!("header_matching", ["HTTPRoute"], header_matching),
        case!("query_param_matching", ["HTTPRouteQueryParamMatching"], query_param_matching),
        case!("method_matching", ["HTTPRouteMethodMatching"], method_matching),
        case!("request_header_modifier", ["HTTPRoute"], request_header_modifier),
        case!(
            "response_header_modifier",
            ["HTTPRouteResponseHeaderModification"],
            response_header_modifier
        ),
        case!(
            "request_redirects",
            [
                "HTTPRoute",
                "HTTPRouteSchemeRedirect",
                "HTTPRoutePortRedirect",
                "HTTPRoutePathRedirect"
            ],
            request_redirects
        ),
        case!("url_rewrites", ["HTTPRouteHostRewrite", "HTTPRoutePathRewrite"], url_rewrites),
        case!("weighted_backends", ["HTTPRoute"], weighted_backends),
        case!("unresolved_backends", ["HTTPRoute"], unresolved_backends),
        case!(
            "cross_namespace_backends_need_a_grant",
            ["ReferenceGrant"],
            cross_namespace_backends_need_a_grant
        ),
        case!("allowed_routes_namespaces", ["Gateway", "HTTPRoute"], allowed_routes_namespaces),
        case!("parent_ref_mismatches", ["Gateway", "HTTPRoute"], parent_ref_mismatches),
        case!("listener_isolation", ["GatewayHTTPListenerIsolation"], listener_isolation),
        case!("request_timeout", ["HTTPRouteRequestTimeout"], request_timeout),
        case!("cors_preflight", ["HTTPRouteCORS"], cors_preflight),
    ];
    run_profile("GATEWAY-HTTP", &world, cases).await;
}
