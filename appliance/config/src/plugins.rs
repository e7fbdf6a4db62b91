//! `[[plugins]]`: proxy-wasm plugins, and the references to them from rules, backends and
//! listeners (`{ wasm = { plugin = "…" } }`, listener `plugins = ["…"]`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gatehouse_model::{
    Backend, BackendEndpoints, BackendProtocol, FailurePolicy, ModuleSource, UpstreamTls,
    WasmPlugin, WasmUpstream,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use toml::Spanned;

use crate::error::{Errors, Position, Problem};
use crate::schema;

const MIN_MEMORY: u64 = 1 << 20;
const MAX_MEMORY: u64 = 1 << 30;
const MAX_TIMEOUT_MS: u64 = 60_000;

/// Converts the plugins; references to them are checked by the native converter.
pub(crate) fn convert(
    plugins: Vec<schema::Plugin>,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> Vec<WasmPlugin> {
    let mut seen: HashMap<String, Position> = HashMap::new();
    let mut out = Vec::new();
    for p in plugins {
        let name = p.name.get_ref().clone();
        if !crate::native::is_dns_subdomain(&name) {
            errors
                .push(&p.name.span(), Problem::InvalidName { what: "plugin", name: name.clone() });
        }
        if let Some(first) = seen.get(&name) {
            let problem =
                Problem::DuplicateName { what: "plugin", name: name.clone(), first: *first };
            errors.push(&p.name.span(), problem);
        } else {
            seen.insert(name.clone(), errors.position(&p.name.span()));
        }
        let sha256 = p.sha256.map(|s| {
            let hex = s.get_ref().to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(&s.span(), Problem::InvalidSha256(s.get_ref().clone()));
            }
            hex
        });
        let raw = p.module.get_ref();
        let module = if raw.starts_with("http://") || raw.starts_with("https://") {
            if sha256.is_none() {
                errors.push(&p.module.span(), Problem::PluginUrlNeedsSha256);
            }
            ModuleSource::Url { url: raw.clone(), sha256: sha256.unwrap_or_default() }
        } else {
            ModuleSource::Path { path: base_dir.join(raw), sha256 }
        };
        let timeout = p.timeout_ms.map_or(WasmPlugin::DEFAULT_TIMEOUT, |t| {
            if !(1..=MAX_TIMEOUT_MS).contains(t.get_ref()) {
                errors.push(&t.span(), Problem::PluginTimeout);
            }
            Duration::from_millis(*t.get_ref())
        });
        let memory_limit = p.memory_limit.map_or(WasmPlugin::DEFAULT_MEMORY_LIMIT, |m| {
            let bytes = match m.get_ref() {
                schema::MemoryLimit::Bytes(b) => Some(*b),
                schema::MemoryLimit::Text(t) => parse_size(t),
            };
            match bytes.filter(|b| (MIN_MEMORY..=MAX_MEMORY).contains(b)) {
                Some(b) => b,
                None => {
                    let shown = match m.get_ref() {
                        schema::MemoryLimit::Bytes(b) => b.to_string(),
                        schema::MemoryLimit::Text(t) => t.clone(),
                    };
                    errors.push(&m.span(), Problem::PluginMemoryLimit(shown));
                    WasmPlugin::DEFAULT_MEMORY_LIMIT
                }
            }
        });
        let failure_policy = match p.failure_policy.map(Spanned::into_inner) {
            None | Some(schema::FailurePolicy::Closed) => FailurePolicy::Closed,
            Some(schema::FailurePolicy::Open) => FailurePolicy::Open,
        };
        let config = p.config.map_or_else(|| "{}".to_owned(), |c| to_json(&c).to_string());
        let upstreams = upstreams(&name, p.upstreams, base_dir, errors);
        out.push(WasmPlugin {
            name,
            module,
            config,
            failure_policy,
            timeout,
            memory_limit,
            upstreams,
        });
    }
    out
}

/// A plugin's `upstreams`: unique names, each with one `address` or one `dns` name, and
/// optionally TLS.
fn upstreams(
    plugin: &str,
    list: Vec<Spanned<schema::PluginUpstream>>,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> Vec<WasmUpstream> {
    let mut seen: HashMap<String, Position> = HashMap::new();
    let mut out = Vec::new();
    for entry in list {
        let span = entry.span();
        let u = entry.into_inner();
        let name = u.name.get_ref().clone();
        if let Some(first) = seen.get(&name) {
            let problem =
                Problem::DuplicateName { what: "upstream", name: name.clone(), first: *first };
            errors.push(&u.name.span(), problem);
        } else {
            seen.insert(name.clone(), errors.position(&u.name.span()));
        }
        let protocol = BackendProtocol::Http1;
        let backend = match (u.address, u.dns) {
            (Some(address), None) => match crate::native::parse_socket_addr(address.get_ref()) {
                Ok(addr) if addr.port() != 0 => Backend::Endpoints(BackendEndpoints {
                    name: addr.to_string(),
                    addrs: vec![addr],
                    tls: None,
                    protocol,
                }),
                Ok(_) => {
                    errors.push(&address.span(), Problem::ZeroPort);
                    continue;
                }
                Err(problem) => {
                    errors.push(&address.span(), problem);
                    continue;
                }
            },
            (None, Some(dns)) => {
                let port = dns.get_ref().rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
                match port {
                    Some((host, Ok(port))) if !host.is_empty() && port != 0 => Backend::Dns {
                        name: dns.get_ref().clone(),
                        host: host.to_owned(),
                        port,
                        protocol,
                    },
                    _ => {
                        let problem = Problem::InvalidHostPort {
                            value: dns.get_ref().clone(),
                            reason: "expected host:port".into(),
                        };
                        errors.push(&dns.span(), problem);
                        continue;
                    }
                }
            }
            _ => {
                errors.push(&span, Problem::BackendForm);
                continue;
            }
        };
        let tls = match u.tls {
            None => None,
            Some(tls) => {
                let dns_host = match &backend {
                    Backend::Dns { host, .. } => Some(host.as_str()),
                    _ => None,
                };
                let span = tls.span();
                match upstream_tls(tls.into_inner(), dns_host, base_dir) {
                    Ok(tls) => tls,
                    Err(reason) => {
                        let problem = Problem::PluginUpstreamTls {
                            plugin: plugin.to_owned(),
                            upstream: name,
                            reason,
                        };
                        errors.push(&span, problem);
                        continue;
                    }
                }
            }
        };
        out.push(WasmUpstream { name, backend, tls });
    }
    out
}

/// An upstream's `tls`: the server name (by default the `dns` host) and the CA file, read
/// and checked here.
fn upstream_tls(
    tls: schema::UpstreamTls,
    dns_host: Option<&str>,
    base_dir: &Path,
) -> Result<Option<UpstreamTls>, String> {
    let (server_name, ca_file) = match tls {
        schema::UpstreamTls::On(false) => return Ok(None),
        schema::UpstreamTls::On(true) => (None, None),
        schema::UpstreamTls::Settings(s) => (s.server_name, s.ca_file),
    };
    let server_name = match (server_name, dns_host) {
        (Some(name), _) => {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(format!("server_name {name:?} is not a valid TLS server name"));
            }
            name
        }
        (None, Some(host)) => host.to_owned(),
        (None, None) => return Err("tls to an address upstream needs server_name".into()),
    };
    let ca_file = match ca_file {
        None => None,
        Some(file) => {
            let path = base_dir.join(file);
            check_ca_file(&path)?;
            Some(path)
        }
    };
    Ok(Some(UpstreamTls { server_name, ca_file }))
}

/// A CA file must be readable PEM holding at least one certificate.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {shown}: {e}"))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("CA file {shown} is not valid PEM: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!("CA file {shown} holds no PEM certificate"));
    }
    Ok(())
}

/// `32MiB`, `512KiB`, `1GiB` or plain bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = t.find(|c: char| !c.is_ascii_digit()).map_or((t, ""), |i| t.split_at(i));
    let factor = match unit.trim() {
        "" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(factor)
}

/// TOML → JSON; datetimes become their RFC 3339 text.
fn to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use gatehouse_model::HttpFilter;

    use super::*;

    const GATEWAY: &str = r#"
[[gateways]]
name = "web"
  [[gateways.listeners]]
  name = "http"
  port = 8080
  protocol = "HTTP"
  plugins = ["hm"]
"#;

    fn parse(extra: &str) -> Result<crate::Config, Vec<String>> {
        let text = format!("{GATEWAY}{extra}");
        crate::parse(&text, Path::new("gh.toml"), Path::new("/etc/gh"))
            .map_err(|e| e.errors().iter().map(ToString::to_string).collect())
    }

    #[test]
    fn plugins_convert_and_filters_refer_to_them() {
        let config = parse(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
failure_policy = "open"
timeout_ms = 20
memory_limit = "8MiB"
config = { request = { set = { x-a = "1" } }, n = 3, list = [true, 1.5] }

[[plugins]]
name = "remote"
module = "https://example.com/f.wasm"
sha256 = "AB00000000000000000000000000000000000000000000000000000000000000"

[[routes]]
name = "r"
parents = ["web"]
  [[routes.rules]]
  filters = [{ wasm = { plugin = "hm" } }, { wasm = { plugin = "remote" } }]
  backends = [{ address = "127.0.0.1:1" }]
"#,
        )
        .unwrap();
        let plugins = &config.native.wasm_plugins;
        assert_eq!(plugins.len(), 2);
        let hm = &plugins[0];
        assert_eq!(
            hm.module,
            ModuleSource::Path { path: Path::new("/etc/gh/hm.wasm").into(), sha256: None }
        );
        assert_eq!(hm.failure_policy, FailurePolicy::Open);
        assert_eq!(hm.timeout, Duration::from_millis(20));
        assert_eq!(hm.memory_limit, 8 << 20);
        let json: serde_json::Value = serde_json::from_str(&hm.config).unwrap();
        assert_eq!(json["request"]["set"]["x-a"], "1");
        assert_eq!(json["list"][1], 1.5);
        assert_eq!(plugins[1].failure_policy, FailurePolicy::Closed);
        assert!(
            matches!(&plugins[1].module, ModuleSource::Url { sha256, .. } if sha256.starts_with("ab00"))
        );
        let rule = &config.native.http_routes[0].rules[0];
        assert_eq!(
            rule.filters,
            [
                HttpFilter::Wasm { plugin: "hm".into() },
                HttpFilter::Wasm { plugin: "remote".into() }
            ]
        );
        assert_eq!(config.native.listener_filters.len(), 1);
        assert_eq!(
            config.native.listener_filters[0].filters,
            [HttpFilter::Wasm { plugin: "hm".into() }]
        );
    }

    #[test]
    fn bad_plugins_and_unknown_references_are_errors_with_places() {
        let errors = parse(
            r#"
[[plugins]]
name = "hm"
module = "https://example.com/f.wasm"
timeout_ms = 0
memory_limit = "3MB"

[[plugins]]
name = "hm"
module = "x.wasm"
sha256 = "xyz"

[[routes]]
name = "r"
parents = ["web"]
  [[routes.rules]]
  filters = [{ wasm = { plugin = "nope" } }]
  backends = [{ address = "127.0.0.1:1" }]
"#,
        )
        .unwrap_err();
        let expect = [
            "gh.toml:12:10: a module fetched from a URL needs sha256",
            "gh.toml:13:14: timeout_ms must be between 1 and 60000",
            "gh.toml:14:16: memory_limit \"3MB\"",
            "gh.toml:17:8: duplicate plugin name \"hm\"",
            "gh.toml:19:10: sha256 \"xyz\"",
            "gh.toml:25:34: no [[plugins]] entry is named \"nope\"",
        ];
        for e in expect {
            assert!(errors.iter().any(|got| got.starts_with(e)), "{e} not in {errors:#?}");
        }
    }

    #[test]
    fn upstreams_are_named_addresses_or_dns_names() {
        let config = parse(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
upstreams = [{ name = "httpbin", address = "127.0.0.1:8081" }, { name = "authz", dns = "authz.internal:80" }]
"#,
        )
        .unwrap();
        let u = &config.native.wasm_plugins[0].upstreams;
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].name, "httpbin");
        assert!(
            matches!(&u[0].backend, Backend::Endpoints(e) if e.addrs == ["127.0.0.1:8081".parse().unwrap()])
        );
        assert!(
            matches!(&u[1].backend, Backend::Dns { host, port: 80, .. } if host == "authz.internal")
        );
        let errors = parse(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
upstreams = [
  { name = "a", address = "nowhere" },
  { name = "a", dns = "no-port" },
  { name = "b" },
]
"#,
        )
        .unwrap_err();
        for e in [
            "gh.toml:14:27: \"nowhere\" is not a socket address",
            "gh.toml:15:12: duplicate upstream name \"a\"",
            "gh.toml:15:23: \"no-port\" is not HOST:PORT",
            "gh.toml:16:3: a backend needs exactly one of `address` or `dns`",
        ] {
            assert!(errors.iter().any(|got| got.starts_with(e)), "{e} not in {errors:#?}");
        }
    }

    #[test]
    fn upstreams_may_speak_tls_with_a_server_name_and_a_ca_file() {
        let dir = std::env::temp_dir().join(format!("gatehouse-plugin-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = include_str!("../../../examples/certs/site.pem");
        std::fs::write(dir.join("ca.pem"), pem).unwrap();
        std::fs::write(dir.join("junk.pem"), "not PEM at all\n").unwrap();
        let parse_in = |extra: &str| {
            crate::parse(&format!("{GATEWAY}{extra}"), Path::new("gh.toml"), &dir)
                .map_err(|e| e.errors().iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let config = parse_in(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
upstreams = [
  { name = "a", dns = "authz.example:443", tls = true },
  { name = "b", address = "10.0.0.1:443", tls = { server_name = "authz.internal", ca_file = "ca.pem" } },
  { name = "c", dns = "authz.example:443", tls = { server_name = "other.example" } },
  { name = "d", dns = "authz.example:80", tls = false },
]
"#,
        )
        .unwrap();
        let got: Vec<_> =
            config.native.wasm_plugins[0].upstreams.iter().map(|u| u.tls.clone()).collect();
        let tls = |server_name: &str, ca_file: Option<PathBuf>| {
            Some(UpstreamTls { server_name: server_name.into(), ca_file })
        };
        assert_eq!(
            got,
            [
                tls("authz.example", None),
                tls("authz.internal", Some(dir.join("ca.pem"))),
                tls("other.example", None),
                None,
            ]
        );
        let errors = parse_in(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
upstreams = [
  { name = "a", address = "10.0.0.1:443", tls = true },
  { name = "b", dns = "authz.example:443", tls = { ca_file = "missing.pem" } },
  { name = "c", dns = "authz.example:443", tls = { ca_file = "junk.pem" } },
  { name = "d", dns = "authz.example:443", tls = { server_name = "not a name!" } },
]
"#,
        )
        .unwrap_err();
        let missing = dir.join("missing.pem").display().to_string();
        let junk = dir.join("junk.pem").display().to_string();
        for e in [
            r#"gh.toml:14:49: plugin "hm" upstream "a": tls to an address upstream needs server_name"#
                .to_owned(),
            format!(
                r#"gh.toml:15:50: plugin "hm" upstream "b": cannot read CA file {missing}: No such file"#
            ),
            format!(
                r#"gh.toml:16:50: plugin "hm" upstream "c": CA file {junk} holds no PEM certificate"#
            ),
            r#"gh.toml:17:50: plugin "hm" upstream "d": server_name "not a name!" is not a valid TLS server name"#
                .to_owned(),
        ] {
            assert!(errors.iter().any(|got| got.starts_with(&e)), "{e} not in {errors:#?}");
        }
        let errors = parse_in(
            r#"
[[plugins]]
name = "hm"
module = "hm.wasm"
upstreams = [{ name = "a", dns = "authz.example:443", tls = { sni = "x" } }]
"#,
        )
        .unwrap_err();
        let e = r#"gh.toml:13:61: tls = true, false or { server_name = "…", ca_file = "…" }"#;
        assert!(errors.iter().any(|got| got.starts_with(e)), "{e} not in {errors:#?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Some(32 << 20));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("3MB"), None);
        assert_eq!(parse_size("MiB"), None);
    }
}
