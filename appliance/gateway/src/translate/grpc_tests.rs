//! GRPCRoute through the whole translation: YAML → index → model and status.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use gatehouse_model::{Backend, BackendProtocol, DataPlaneReport, HttpRoute, ObjectId, PathMatch};
use serde_json::Value;

use super::{Settings, Translation, Translator, translate};
use crate::fixtures::{CONTROLLER, index};
use crate::loader::load_str;

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: http-only
    port: 81
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: HTTPRoute}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: infra}
spec:
  ports:
  - {port: 50051}
  - {name: h2, port: 8080, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: infra
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{port: 50051}, {name: h2, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"#;

fn settings() -> Settings {
    Settings {
        controller_name: CONTROLLER.into(),
        default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        backend_addressing: Default::default(),
        wasm_module_dir: None,
    }
}

fn run(extra: &str) -> (Translation, Vec<Value>) {
    let loaded = load_str(Path::new("t.yaml"), &format!("{BASE}---\n{extra}"));
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let index = index(loaded.objects);
    let t = translate(&index, &settings());
    let mut cached = Translator::new();
    assert_eq!(cached.translate(&index, &settings(), None), t, "memoised = plain");
    let status = crate::status(
        &index,
        &settings(),
        &t,
        &DataPlaneReport::default(),
        jiff::Timestamp::UNIX_EPOCH,
    );
    let status = status.iter().map(|s| serde_json::to_value(s).unwrap()).collect();
    (t, status)
}

fn route<'a>(t: &'a Translation, kind: &str, name: &str) -> Option<&'a HttpRoute> {
    t.desired.http_routes.iter().find(|r| r.id == ObjectId::new(kind, "infra", name)).map(|r| &**r)
}

fn conditions(status: &[Value], kind: &str, name: &str) -> Vec<(String, String, String)> {
    let object = status
        .iter()
        .find(|s| s["kind"] == kind && s["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no status for {kind} {name}"));
    object["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("type"), s("status"), s("reason"))
        })
        .collect()
}

fn accepted(status: &[Value], kind: &str, name: &str) -> (String, String) {
    let c = conditions(status, kind, name);
    (c[0].1.clone(), c[0].2.clone())
}

const GRPC: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: infra}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [grpc.example.com]
  rules:
  - name: say
    matches:
    - method: {service: echo.v1.Echo, method: Say}
      headers: [{name: X-Tenant, value: a}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: gatehouse}]}
    backendRefs:
    - {name: echo, port: 50051, weight: 3}
    - {name: missing, port: 50051, weight: 1}
  - matches: [{method: {service: echo.v1.Echo}}]
    backendRefs: [{name: echo, port: 50051}]
  - matches: [{method: {type: RegularExpression, method: "S.*"}}]
    backendRefs: [{name: echo, port: 50051}]
"#;

#[test]
fn grpc_route_translates_to_h2c_path_rules() {
    let (t, status) = run(GRPC);
    let r = route(&t, "GRPCRoute", "g").expect("served");
    assert_eq!(r.rules.len(), 3);
    assert_eq!(r.rules[0].name.as_deref(), Some("say"));
    assert_eq!(r.rules[0].matches[0].path, PathMatch::Exact("/echo.v1.Echo/Say".into()));
    assert_eq!(r.rules[0].matches[0].headers[0].name, "x-tenant");
    assert_eq!(r.rules[1].matches[0].path, PathMatch::Prefix("/echo.v1.Echo".into()));
    assert_eq!(r.rules[2].matches[0].path, PathMatch::Regex("/(?:[^/]+)/(?:S.*)".into()));
    assert_eq!(r.rules[0].backends[0].weight, 3);
    match &r.rules[0].backends[0].backend {
        Backend::Endpoints(e) => {
            assert_eq!(e.protocol, BackendProtocol::H2c);
            assert_eq!(e.addrs, ["10.0.0.1:50051".parse().unwrap()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(r.rules[0].backends[1].backend, Backend::Unresolved(_)));
    assert_eq!(
        conditions(&status, "GRPCRoute", "g"),
        [
            ("Accepted".into(), "True".into(), "Accepted".into()),
            ("ResolvedRefs".into(), "False".into(), "BackendNotFound".into()),
        ]
    );
    let gw = status.iter().find(|s| s["kind"] == "Gateway").unwrap();
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 1);
    assert_eq!(
        gw["status"]["listeners"][0]["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
        ])
    );
}

#[test]
fn listener_that_allows_only_httproutes_rejects_grpc_routes() {
    let yaml = GRPC.replace("sectionName: http}", "sectionName: http-only}");
    let (t, status) = run(&yaml);
    assert!(route(&t, "GRPCRoute", "g").is_none());
    assert_eq!(
        accepted(&status, "GRPCRoute", "g"),
        ("False".into(), "NotAllowedByListeners".into())
    );
}

#[test]
fn invalid_grpc_rules_are_dropped_with_a_reason() {
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: infra}
spec:
  parentRefs: [{name: web, sectionName: http}]
  rules:
  - matches: [{method: {service: "bad/name"}}]
    backendRefs: [{name: echo, port: 50051}]
  - filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]
    backendRefs: [{name: echo, port: 50051}]
"#;
    let (t, status) = run(yaml);
    assert!(route(&t, "GRPCRoute", "g").is_none());
    assert_eq!(accepted(&status, "GRPCRoute", "g"), ("False".into(), "UnsupportedValue".into()));
}

fn http_route(name: &str, created: &str, hostname: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: infra, creationTimestamp: "{created}"}}
spec:
  parentRefs: [{{name: web, sectionName: http}}]
  hostnames: ["{hostname}"]
  rules: [{{backendRefs: [{{name: echo, port: 8080}}]}}]
"#
    )
}

fn grpc_route(name: &str, created: &str, hostname: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: {name}, namespace: infra, creationTimestamp: "{created}"}}
spec:
  parentRefs: [{{name: web, sectionName: http}}]
  hostnames: ["{hostname}"]
  rules: [{{backendRefs: [{{name: echo, port: 50051}}]}}]
"#
    )
}

#[test]
fn http_and_grpc_routes_sharing_a_hostname_keep_the_older() {
    let old = "2026-01-01T00:00:00Z";
    let new = "2026-02-01T00:00:00Z";
    let yaml = format!(
        "{}---{}---{}",
        http_route("web-api", old, "api.example.com"),
        grpc_route("grpc-api", new, "*.example.com"),
        grpc_route("other", new, "grpc.example.org"),
    );
    let (t, status) = run(&yaml);
    assert!(route(&t, "HTTPRoute", "web-api").is_some());
    assert!(route(&t, "GRPCRoute", "grpc-api").is_none(), "the younger loses");
    assert!(route(&t, "GRPCRoute", "other").is_some(), "no shared hostname, no conflict");
    assert_eq!(accepted(&status, "HTTPRoute", "web-api"), ("True".into(), "Accepted".into()));
    assert_eq!(
        accepted(&status, "GRPCRoute", "grpc-api"),
        ("False".into(), "HostnameConflict".into())
    );
    let gw = status.iter().find(|s| s["kind"] == "Gateway").unwrap();
    assert_eq!(gw["status"]["listeners"][0]["attachedRoutes"], 2);

    // The other way round: the GRPCRoute is older and the HTTPRoute loses.
    let yaml = format!(
        "{}---{}",
        http_route("web-api", new, "api.example.com"),
        grpc_route("grpc-api", old, "api.example.com"),
    );
    let (t, status) = run(&yaml);
    assert!(route(&t, "HTTPRoute", "web-api").is_none());
    assert!(route(&t, "GRPCRoute", "grpc-api").is_some());
    assert_eq!(
        accepted(&status, "HTTPRoute", "web-api"),
        ("False".into(), "HostnameConflict".into())
    );
}

#[test]
fn http_route_backend_protocol_follows_app_protocol() {
    let yaml = format!(
        "{}---{}",
        http_route("h2", "2026-01-01T00:00:00Z", "h2.example.com"),
        http_route("h1", "2026-01-01T00:00:00Z", "h1.example.com").replace("8080", "50051"),
    );
    let (t, _) = run(&yaml);
    let protocol = |name| match &route(&t, "HTTPRoute", name).unwrap().rules[0].backends[0].backend
    {
        Backend::Endpoints(e) => e.protocol,
        other => panic!("{other:?}"),
    };
    assert_eq!(protocol("h2"), BackendProtocol::H2c);
    assert_eq!(protocol("h1"), BackendProtocol::Http1);
}
