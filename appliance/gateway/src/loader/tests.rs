use std::path::{Path, PathBuf};

use super::*;
use crate::object::Kind;

const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: infra
spec:
  gatewayClassName: gatehouse
  listeners:
  - name: http
    port: 80
    protocol: HTTP
";

fn errors(loaded: &Loaded) -> Vec<String> {
    loaded.errors.iter().map(ToString::to_string).collect()
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-gateway-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn multi_document_with_defaults() {
    let text = format!(
        "# leading comment\n---\n{GATEWAY}---\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: web}}]\n"
    );
    let loaded = load_str(Path::new("m.yaml"), &text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    assert_eq!(loaded.objects.len(), 2);
    let Object::Gateway(gw) = &loaded.objects[0] else { panic!("not a gateway") };
    assert_eq!(
        gw.spec.listeners[0].allowed_routes.namespaces.from,
        crate::types::FromNamespaces::Same
    );
    let Object::HttpRoute(route) = &loaded.objects[1] else { panic!("not a route") };
    assert_eq!(route.namespace(), "default");
    assert_eq!(route.spec.parent_refs[0].kind, "Gateway");
    assert_eq!(route.spec.parent_refs[0].group, "gateway.networking.k8s.io");
    let rule = &route.spec.rules[0];
    assert_eq!(rule.matches[0].path.value, "/");
    assert_eq!(rule.matches[0].path.kind, crate::types::PathMatchType::PathPrefix);
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let loaded = load_str(Path::new("bad.yaml"), "a: 1\n---\nb: [\n");
    assert_eq!(errors(&loaded), ["bad.yaml:3:4: unclosed bracket '['"]);
}

#[test]
fn unknown_field_names_path_and_line() {
    let text = GATEWAY.replace("    protocol: HTTP\n", "    protocol: HTTP\n    prot: 1\n");
    let loaded = load_str(Path::new("gw.yaml"), &text);
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "gw.yaml:12: Gateway infra/web: spec.listeners[0].prot: unknown field `prot`"
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn wrong_type_names_path_and_line() {
    let text = GATEWAY.replace("port: 80", "port: eighty");
    let loaded = load_str(Path::new("gw.yaml"), &text);
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("gw.yaml:10: Gateway infra/web: spec.listeners[0].port: "),
        "{}",
        errs[0]
    );
}

#[test]
fn missing_required_field_names_parent() {
    let text = GATEWAY.replace("  gatewayClassName: gatehouse\n", "");
    let loaded = load_str(Path::new("gw.yaml"), &text);
    let errs = errors(&loaded);
    assert!(
        errs[0].starts_with("gw.yaml:6: Gateway infra/web: spec: missing field `gatewayClassName`"),
        "{}",
        errs[0]
    );
}

#[test]
fn errors_are_collected_not_first_only() {
    let text = format!(
        "{}---\n{}",
        GATEWAY.replace("port: 80", "port: 0"),
        GATEWAY.replace("name: web", "name: other").replace("HTTP\n", "HTTP\n    bogus: true\n")
    );
    let loaded = load_str(Path::new("gw.yaml"), &text);
    assert_eq!(loaded.errors.len(), 2, "{:?}", errors(&loaded));
}

#[test]
fn duplicates_name_both_places() {
    let text = format!("{GATEWAY}---\n{GATEWAY}");
    let loaded = load_str(Path::new("gw.yaml"), &text);
    assert_eq!(
        errors(&loaded),
        ["gw.yaml:13: Gateway infra/web: duplicate object, first defined at gw.yaml:1"]
    );
    assert_eq!(loaded.objects.len(), 1);
}

#[test]
fn unknown_and_later_kinds_are_warnings() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
                apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: BackendLBPolicy\nmetadata: {name: g}\nspec: {}\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\n";
    let loaded = load_str(Path::new("x.yaml"), text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    assert!(loaded.objects.is_empty());
    let warnings: Vec<_> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].starts_with("x.yaml:1: Deployment d: skipped"));
    assert!(warnings[1].starts_with("x.yaml:5: BackendLBPolicy g: skipped"));
    assert!(warnings[2].starts_with("x.yaml:10: Secret s: skipped"));
}

#[test]
fn unsupported_version_of_known_kind_is_an_error() {
    let text = GATEWAY.replace("/v1\n", "/v1alpha2\n");
    let loaded = load_str(Path::new("gw.yaml"), &text);
    assert!(
        errors(&loaded)[0]
            .contains("apiVersion: gateway.networking.k8s.io/v1alpha2 is not a supported version")
    );
}

#[test]
fn core_kinds_and_yaml12_booleans() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels: {env: on}\n---\n\
                apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: team}\nspec:\n  ports: [{port: 80, name: http}]\n---\n\
                apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: echo-1, namespace: team, labels: {kubernetes.io/service-name: echo}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{name: http, port: 8080}]\n";
    let loaded = load_str(Path::new("c.yaml"), text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    let kinds: Vec<_> = loaded.objects.iter().map(Object::kind).collect();
    assert_eq!(kinds, [Kind::Namespace, Kind::Service, Kind::EndpointSlice]);
    let Object::Namespace(ns) = &loaded.objects[0] else { panic!() };
    assert_eq!(ns.metadata.labels.as_ref().unwrap()["env"], "on");
}

#[test]
fn list_items_are_documents() {
    let text = format!("apiVersion: v1\nkind: List\nitems:\n- {}", GATEWAY.replace('\n', "\n  "));
    let loaded = load_str(Path::new("l.yaml"), &text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    assert_eq!(loaded.objects.len(), 1);
}

#[test]
fn directories_are_read_recursively_in_sorted_order() {
    let dir = tempdir("dir");
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    std::fs::write(dir.join("c.yml"), ns("c")).unwrap();
    std::fs::write(dir.join("b/z.yaml"), ns("bz")).unwrap();
    std::fs::write(dir.join("a.yaml"), ns("a")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not yaml: [").unwrap();
    let loaded = load(std::slice::from_ref(&dir));
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    let names: Vec<_> = loaded.objects.iter().map(|o| o.object_ref().name).collect();
    assert_eq!(names, ["a", "bz", "c"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicates_across_files_name_both_files() {
    let dir = tempdir("dup");
    std::fs::write(dir.join("1.yaml"), GATEWAY).unwrap();
    std::fs::write(dir.join("2.yaml"), format!("\n{GATEWAY}")).unwrap();
    let loaded = load(std::slice::from_ref(&dir));
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("2.yaml:2: Gateway infra/web: duplicate object, first defined at "));
    assert!(errs[0].ends_with("1.yaml:1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_path_is_an_error_with_the_path() {
    let loaded = load(&[PathBuf::from("/nonexistent/gatehouse/manifests")]);
    let errs = errors(&loaded);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("/nonexistent/gatehouse/manifests: "), "{}", errs[0]);
}

#[test]
fn json_objects_convert_like_yaml_documents() {
    let yaml = load_str(Path::new("m.yaml"), GATEWAY);
    let json = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "infra"},
        "spec": {
            "gatewayClassName": "gatehouse",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]
        }
    });
    assert_eq!(from_json(json).unwrap(), yaml.objects[0]);

    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}
    });
    assert_eq!(from_json(service).unwrap().object_ref().namespace, "default");
}

#[test]
fn json_errors_name_the_object_and_field() {
    let bad = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "a"},
        "spec": {"parentRefs": [{"name": "web", "bogus": 1}]}
    });
    assert_eq!(
        from_json(bad).unwrap_err().to_string(),
        "HTTPRoute a/r: spec.parentRefs[0].bogus: unknown field `bogus`, expected one of `group`, `kind`, `namespace`, `name`, `sectionName`, `port`"
    );
    let opaque = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "s", "namespace": "a"}
    });
    assert!(matches!(from_json(opaque), Err(JsonError::Unsupported { .. })));
    let old = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "Gateway",
        "metadata": {"name": "g"}, "spec": {}
    });
    assert_eq!(
        from_json(old).unwrap_err().to_string(),
        "Gateway g: apiVersion: gateway.networking.k8s.io/v1alpha2 is not a supported version of Gateway"
    );
}

#[test]
fn wasm_plugins_are_read_and_their_typos_are_errors_with_places() {
    let text = "\
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: hm}
spec:
  module: https://example.com/hm.wasm
  sha256: ab00000000000000000000000000000000000000000000000000000000000000
  failurePolicy: Open
  timeoutMs: 20
  memoryLimit: 8Mi
  config:
    request: {set: {x-a: '1'}}
status: {}
---
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: typo, namespace: team}
spec:
  module: a.wasm
  timeout: 5
---
apiVersion: gatehouse.dev/v1
kind: WasmPlugin
metadata: {name: old}
spec: {module: a.wasm}
";
    let loaded = load_str(Path::new("p.yaml"), text);
    assert_eq!(
        errors(&loaded),
        [
            "p.yaml:19: WasmPlugin team/typo: spec.timeout: unknown field `timeout`, expected one of \
             `module`, `sha256`, `config`, `failurePolicy`, `timeoutMs`, `memoryLimit`, \
             `upstreams`",
            "p.yaml:21: WasmPlugin old: apiVersion: gatehouse.dev/v1 is not a supported version of \
             WasmPlugin",
        ]
    );
    let [Object::WasmPlugin(plugin)] = &loaded.objects[..] else { panic!("{:?}", loaded.objects) };
    assert_eq!(plugin.namespace(), "default");
    assert_eq!(plugin.spec.failure_policy, crate::types::WasmFailurePolicy::Open);
    assert_eq!(plugin.spec.config.as_ref().unwrap()["request"]["set"]["x-a"], "1");
    assert_eq!(loaded.objects[0].kind(), Kind::WasmPlugin);

    // The same conversion for a cluster object.
    let json = serde_json::json!({
        "apiVersion": "gatehouse.dev/v1alpha1", "kind": "WasmPlugin",
        "metadata": {"name": "p", "namespace": "team", "resourceVersion": "7"},
        "spec": {"module": "p.wasm"},
    });
    let object = from_json(json).unwrap();
    assert_eq!(object.object_ref().to_string(), "WasmPlugin team/p");
}

#[test]
fn listener_sets_load_as_v1_with_typed_allowed_listeners() {
    let text = format!(
        "{GATEWAY}  allowedListeners:\n    namespaces:\n      from: Selector\n      selector: {{matchLabels: {{team: a}}}}\n---\napiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata: {{name: extra, namespace: team}}
spec:
  parentRef: {{name: web, namespace: infra}}
  listeners:
  - name: app
    port: 8080
    protocol: HTTP
    hostname: app.example
"
    );
    let loaded = load_str(Path::new("ls.yaml"), &text);
    assert!(loaded.errors.is_empty(), "{:?}", errors(&loaded));
    let Object::Gateway(gw) = &loaded.objects[0] else { panic!("not a gateway") };
    let allowed = gw.spec.allowed_listeners.as_ref().unwrap();
    assert_eq!(allowed.namespaces.from, crate::types::ListenersFrom::Selector);
    let Object::ListenerSet(set) = &loaded.objects[1] else { panic!("not a ListenerSet") };
    assert_eq!(set.spec.parent_ref.kind, "Gateway");
    assert_eq!(set.spec.parent_ref.group, "gateway.networking.k8s.io");
    assert_eq!(set.spec.listeners[0].port, 8080);

    let typo = "apiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {name: x}\nspec:\n  parentRef: {name: web}\n  listener: []\n";
    let loaded = load_str(Path::new("typo.yaml"), typo);
    assert_eq!(loaded.errors.len(), 1, "{:?}", errors(&loaded));
    assert!(errors(&loaded)[0].contains("typo.yaml:"), "{:?}", errors(&loaded));
    let old = "apiVersion: gateway.networking.k8s.io/v1alpha1\nkind: ListenerSet\nmetadata: {name: x}\nspec: {}\n";
    let loaded = load_str(Path::new("old.yaml"), old);
    assert!(errors(&loaded)[0].contains("not a supported version"), "{:?}", errors(&loaded));
    assert_eq!(Kind::ListenerSet.as_str(), "ListenerSet");
}

#[test]
fn backend_tls_policies_and_config_maps_are_read_with_their_spec_field_names() {
    let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: { name: p, namespace: app }
spec:
  targetRefs: [{ group: "", kind: Service, name: svc, sectionName: https }]
  validation:
    wellKnownCACertificates: System
    hostname: svc.example.com
    subjectAltNames: [{ type: URI, uri: "spiffe://td/x" }]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: ca }
data: { ca.crt: "" }
"#;
    let loaded = load_str(Path::new("p.yaml"), text);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let [Object::BackendTlsPolicy(p), Object::ConfigMap(c)] = &loaded.objects[..] else {
        panic!("{:?}", loaded.objects)
    };
    assert_eq!(p.spec.validation.well_known_ca_certificates.as_deref(), Some("System"));
    assert_eq!(p.spec.target_refs[0].section_name.as_deref(), Some("https"));
    assert_eq!(p.spec.validation.subject_alt_names[0].uri.as_deref(), Some("spiffe://td/x"));
    assert_eq!(c.metadata.namespace.as_deref(), Some("default"));
    let typo = text.replace("hostname: svc", "hostnam: svc");
    assert!(!load_str(Path::new("p.yaml"), &typo).errors.is_empty(), "unknown fields are errors");
}
