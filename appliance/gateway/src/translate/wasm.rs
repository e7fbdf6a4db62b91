//! `ExtensionRef` filters pointing at our `WasmPlugin` kind: resolved in the route's namespace
//! and converted into the model's plugin (named `namespace/name`).
//!
//! Module sources stay safe in cluster mode, where anyone who may write a WasmPlugin names the
//! module: a URL must carry a sha256, and a local path is only read under the configured
//! `wasm_module_dir` (relative, no `..`); without that setting local paths are refused.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_model::{
    FailurePolicy, HttpFilter, HttpRoute, ModuleSource, UpstreamTls, WasmPlugin as ModelPlugin,
    WasmUpstream,
};

use super::{BackendAddressing, Problem, Report, backends};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{
    BackendRef, LocalObjectReference, OUR_GROUP, WasmFailurePolicy, WasmPlugin, WasmUpstreamTls,
};

/// The plugin an ExtensionRef names, converted; or why the filter cannot run.
pub(super) fn resolve(
    index: &Index,
    module_dir: Option<&Path>,
    addressing: BackendAddressing,
    route_ns: &str,
    r: &LocalObjectReference,
) -> Result<ModelPlugin, Problem> {
    if r.group != OUR_GROUP || r.kind != WasmPlugin::KIND {
        return Err(Problem::new(
            reason::INVALID_KIND,
            format!(
                "ExtensionRef {}/{} {:?} is not supported (only {OUR_GROUP}/{})",
                r.group,
                r.kind,
                r.name,
                WasmPlugin::KIND
            ),
        ));
    }
    let Some(plugin) = index.wasm_plugins.get(&(route_ns.to_owned(), r.name.clone())) else {
        return Err(Problem::new(
            reason::BACKEND_NOT_FOUND,
            format!("ExtensionRef: WasmPlugin {route_ns}/{} does not exist", r.name),
        ));
    };
    let invalid = |message: String| {
        Problem::new(
            reason::BACKEND_NOT_FOUND,
            format!("ExtensionRef: WasmPlugin {route_ns}/{} is invalid: {message}", r.name),
        )
    };
    let mut model = convert(plugin, module_dir).map_err(invalid)?;
    model.upstreams = upstreams(index, addressing, module_dir, plugin).map_err(invalid)?;
    Ok(model)
}

/// The plugin's upstreams, resolved like backendRefs from its namespace. One that does not
/// resolve stays in the list as unresolved: the plugin's calls to it fail (the plugin decides
/// what that means), its routes keep their status. TLS settings that cannot be right make
/// the plugin invalid.
fn upstreams(
    index: &Index,
    addressing: BackendAddressing,
    module_dir: Option<&Path>,
    plugin: &WasmPlugin,
) -> Result<Vec<WasmUpstream>, String> {
    let ns = plugin.namespace();
    plugin
        .spec
        .upstreams
        .iter()
        .map(|u| {
            let tls = u
                .tls
                .as_ref()
                .map(|t| upstream_tls(t, module_dir))
                .transpose()
                .map_err(|e| format!("upstream {:?}: {e}", u.name))?;
            let r = BackendRef {
                group: String::new(),
                kind: "Service".to_owned(),
                name: u.service.name.clone(),
                namespace: None,
                port: Some(u.service.port),
                weight: 1,
                filters: Vec::new(),
            };
            let (backend, _) = backends::resolve_from(index, addressing, WasmPlugin::KIND, ns, &r);
            Ok(WasmUpstream { name: u.name.clone(), backend, tls })
        })
        .collect()
}

/// An upstream's TLS: a valid server name, and a CA file under `wasm_module_dir` (read when
/// the plugin is prepared).
fn upstream_tls(tls: &WasmUpstreamTls, module_dir: Option<&Path>) -> Result<UpstreamTls, String> {
    if rustls_pki_types::ServerName::try_from(tls.server_name.as_str()).is_err() {
        return Err(format!("serverName {:?} is not a valid TLS server name", tls.server_name));
    }
    let ca_file = match &tls.ca_file {
        None => None,
        Some(file) => Some(under_module_dir(file, module_dir, "caFile")?),
    };
    Ok(UpstreamTls { server_name: tls.server_name.clone(), ca_file })
}

/// A path relative to `wasm_module_dir`, without `..`.
fn under_module_dir(file: &str, module_dir: Option<&Path>, what: &str) -> Result<PathBuf, String> {
    let Some(dir) = module_dir else {
        return Err(format!(
            "{what} {file:?} is a local path, but no wasm_module_dir is configured"
        ));
    };
    let path = Path::new(file);
    let plain = !file.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(format!("{what} {file:?} must be relative to wasm_module_dir, without \"..\""));
    }
    Ok(dir.join(path))
}

/// Marks the routes that run a WasmPlugin whose module could not be prepared (read, fetched,
/// verified, compiled or configured; found after translation, when the data plane prepares
/// the modules): `ResolvedRefs=False` with reason `BackendNotFound` on each parent where the
/// route resolved so far, and the error as the message. `failed` holds `(namespace/name,
/// error)`.
/// `routes` are the routes served (the translation's own were moved into the merged model).
pub fn mark_failed_plugins(
    report: &mut Report,
    routes: &[Arc<HttpRoute>],
    failed: &[(String, String)],
) {
    if failed.is_empty() {
        return;
    }
    let failure = |filters: &[HttpFilter]| {
        filters.iter().find_map(|f| match f {
            HttpFilter::Wasm { plugin } => failed.iter().find(|(name, _)| name == plugin),
            _ => None,
        })
    };
    for route in routes {
        let found = route.rules.iter().find_map(|rule| {
            failure(&rule.filters)
                .or_else(|| rule.backends.iter().find_map(|b| failure(&b.filters)))
        });
        let Some((name, error)) = found else { continue };
        let Some(route_report) = report.routes.get_mut(&route.id) else { continue };
        for parent in &mut route_report.parents {
            if parent.accepted.is_ok() && parent.resolved_refs.is_ok() {
                parent.resolved_refs = Err(Problem::new(
                    reason::BACKEND_NOT_FOUND,
                    format!(
                        "ExtensionRef: the module of WasmPlugin {name} could not be loaded: \
                         {error}; the rules that use it answer 500"
                    ),
                ));
            }
        }
    }
}

/// A WasmPlugin object as the model's plugin, or what is wrong with it.
fn convert(plugin: &WasmPlugin, module_dir: Option<&Path>) -> Result<ModelPlugin, String> {
    let spec = &plugin.spec;
    let sha256 = spec
        .sha256
        .as_ref()
        .map(|s| {
            let hex = s.to_ascii_lowercase();
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(hex)
            } else {
                Err(format!("sha256 {s:?} is not 64 hex digits"))
            }
        })
        .transpose()?;
    let module = if spec.module.starts_with("https://") || spec.module.starts_with("http://") {
        let sha256 = sha256.ok_or("a module fetched from a URL needs sha256")?;
        ModuleSource::Url { url: spec.module.clone(), sha256 }
    } else {
        let Some(dir) = module_dir else {
            return Err(format!(
                "module {:?} is a local path, but no wasm_module_dir is configured \
                 (only https:// URLs with sha256 are allowed)",
                spec.module
            ));
        };
        let path = Path::new(&spec.module);
        let plain = !spec.module.is_empty()
            && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain {
            return Err(format!(
                "module path {:?} must be relative to wasm_module_dir, without \"..\"",
                spec.module
            ));
        }
        ModuleSource::Path { path: dir.join(path), sha256 }
    };
    let timeout = match spec.timeout_ms {
        None => ModelPlugin::DEFAULT_TIMEOUT,
        Some(ms) if ms >= 1 && Duration::from_millis(ms) <= ModelPlugin::MAX_TIMEOUT => {
            Duration::from_millis(ms)
        }
        Some(ms) => {
            return Err(format!(
                "timeoutMs {ms} is not between 1 and {}",
                ModelPlugin::MAX_TIMEOUT.as_millis()
            ));
        }
    };
    let memory_limit = match &spec.memory_limit {
        None => ModelPlugin::DEFAULT_MEMORY_LIMIT,
        Some(text) => parse_size(text)
            .filter(|b| (ModelPlugin::MIN_MEMORY_LIMIT..=ModelPlugin::MAX_MEMORY_LIMIT).contains(b))
            .ok_or_else(|| format!("memoryLimit {text:?} is not a size between 1Mi and 1Gi"))?,
    };
    let config = match &spec.config {
        None => "{}".to_owned(),
        Some(value @ serde_json::Value::Object(_)) => value.to_string(),
        Some(_) => return Err("config must be an object".to_owned()),
    };
    let failure_policy = match spec.failure_policy {
        WasmFailurePolicy::Closed => FailurePolicy::Closed,
        WasmFailurePolicy::Open => FailurePolicy::Open,
    };
    Ok(ModelPlugin {
        name: format!("{}/{}", plugin.namespace(), plugin.name()),
        module,
        config,
        failure_policy,
        timeout,
        memory_limit,
        upstreams: Vec::new(),
    })
}

/// `32Mi`, `32MiB`, `512Ki`, `1Gi` or plain bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = t.find(|c: char| !c.is_ascii_digit()).map_or((t, ""), |i| t.split_at(i));
    let factor = match unit.trim() {
        "" => 1,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::wasm_plugin;
    use crate::types::WasmPluginSpec;

    fn spec(module: &str) -> WasmPluginSpec {
        WasmPluginSpec {
            module: module.into(),
            sha256: None,
            config: None,
            failure_policy: WasmFailurePolicy::Closed,
            timeout_ms: None,
            memory_limit: None,
            upstreams: Vec::new(),
        }
    }

    const SHA: &str = "AB00000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn urls_need_a_sha256_and_paths_stay_under_the_module_dir() {
        let dir = Some(Path::new("/srv/wasm"));
        let convert_spec = |s: WasmPluginSpec, dir: Option<&Path>| {
            let plugin = wasm_plugin("team", "p", s);
            match plugin {
                crate::Object::WasmPlugin(p) => convert(&p, dir),
                _ => unreachable!(),
            }
        };
        let url = WasmPluginSpec { sha256: Some(SHA.into()), ..spec("https://example.com/f.wasm") };
        let ok = convert_spec(url, None).unwrap();
        assert_eq!(ok.name, "team/p");
        assert!(
            matches!(&ok.module, ModuleSource::Url { sha256, .. } if sha256.starts_with("ab00"))
        );
        let err = convert_spec(spec("https://example.com/f.wasm"), dir).unwrap_err();
        assert!(err.contains("needs sha256"), "{err}");

        let local = convert_spec(spec("filters/hm.wasm"), dir).unwrap();
        assert_eq!(
            local.module,
            ModuleSource::Path { path: "/srv/wasm/filters/hm.wasm".into(), sha256: None }
        );
        for bad in ["/etc/passwd", "../x.wasm", "a/../../x.wasm", ""] {
            let err = convert_spec(spec(bad), dir).unwrap_err();
            assert!(err.contains("must be relative"), "{bad}: {err}");
        }
        let err = convert_spec(spec("hm.wasm"), None).unwrap_err();
        assert!(err.contains("no wasm_module_dir"), "{err}");
    }

    #[test]
    fn upstreams_are_service_ports_of_the_plugins_namespace() {
        use gatehouse_model::Backend;

        use crate::fixtures::{endpoint_slice, index, service};
        use crate::types::{WasmServicePort, WasmUpstreamRef};
        let upstream = |name: &str, service: &str, port| WasmUpstreamRef {
            name: name.into(),
            service: WasmServicePort { name: service.into(), port },
            tls: None,
        };
        let spec = WasmPluginSpec {
            upstreams: vec![upstream("auth", "auth", 80), upstream("gone", "nope", 80)],
            sha256: Some(SHA.into()),
            ..spec("https://example.com/f.wasm")
        };
        let plugin = wasm_plugin("team", "p", spec);
        let crate::Object::WasmPlugin(p) = plugin.clone() else { unreachable!() };
        let index = index([
            plugin,
            service("team", "auth", &[(Some("http"), 80)]),
            endpoint_slice("team", "auth-a", "auth", &[("http", 8080)], &[("10.0.0.1", None)]),
        ]);
        let ups = upstreams(&index, BackendAddressing::Endpoints, None, &p).unwrap();
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].name, "auth");
        assert!(
            matches!(&ups[0].backend, Backend::Endpoints(e) if e.addrs == ["10.0.0.1:8080".parse().unwrap()]),
            "{:?}",
            ups[0].backend
        );
        // One that does not resolve stays, unresolved: calls to it fail, the route is fine.
        assert!(
            matches!(&ups[1].backend, Backend::Unresolved(u) if u.reason.contains("does not exist"))
        );
    }

    #[test]
    fn upstream_tls_needs_a_valid_server_name_and_a_ca_file_under_the_module_dir() {
        let tls = |server_name: &str, ca_file: Option<&str>| WasmUpstreamTls {
            server_name: server_name.into(),
            ca_file: ca_file.map(Into::into),
        };
        let dir = Some(Path::new("/w"));
        assert_eq!(
            upstream_tls(&tls("authz.team.svc", Some("cas/authz.pem")), dir).unwrap(),
            UpstreamTls {
                server_name: "authz.team.svc".into(),
                ca_file: Some(PathBuf::from("/w/cas/authz.pem")),
            }
        );
        assert_eq!(upstream_tls(&tls("authz.team.svc", None), None).unwrap().ca_file, None);
        for (bad, dir, why) in [
            (tls("not a name!", None), dir, "is not a valid TLS server name"),
            (tls("a.b", Some("/etc/ssl/ca.pem")), dir, "must be relative"),
            (tls("a.b", Some("../ca.pem")), dir, "must be relative"),
            (tls("a.b", Some("ca.pem")), None, "no wasm_module_dir"),
        ] {
            let err = upstream_tls(&bad, dir).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn limits_policy_and_config() {
        let dir = Some(Path::new("/w"));
        let full = WasmPluginSpec {
            config: Some(serde_json::json!({"request": {"set": {"x-a": "1"}}})),
            failure_policy: WasmFailurePolicy::Open,
            timeout_ms: Some(20),
            memory_limit: Some("8Mi".into()),
            ..spec("hm.wasm")
        };
        let crate::Object::WasmPlugin(p) = wasm_plugin("a", "b", full) else { unreachable!() };
        let m = convert(&p, dir).unwrap();
        assert_eq!(m.failure_policy, FailurePolicy::Open);
        assert_eq!(m.timeout, Duration::from_millis(20));
        assert_eq!(m.memory_limit, 8 << 20);
        assert_eq!(m.config, r#"{"request":{"set":{"x-a":"1"}}}"#);

        for (bad, expect) in [
            (WasmPluginSpec { timeout_ms: Some(0), ..spec("a.wasm") }, "timeoutMs 0"),
            (WasmPluginSpec { memory_limit: Some("3MB".into()), ..spec("a.wasm") }, "memoryLimit"),
            (WasmPluginSpec { memory_limit: Some("2Gi".into()), ..spec("a.wasm") }, "memoryLimit"),
            (WasmPluginSpec { sha256: Some("xyz".into()), ..spec("a.wasm") }, "sha256"),
            (WasmPluginSpec { config: Some(serde_json::json!([1])), ..spec("a.wasm") }, "object"),
        ] {
            let crate::Object::WasmPlugin(p) = wasm_plugin("a", "b", bad) else { unreachable!() };
            let err = convert(&p, dir).unwrap_err();
            assert!(err.contains(expect), "{expect}: {err}");
        }
        assert_eq!(parse_size("32MiB"), Some(32 << 20));
        assert_eq!(parse_size("1Gi"), Some(1 << 30));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("Mi"), None);
    }
}
