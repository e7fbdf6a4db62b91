//! GATEWAY-GRPC: GRPCRoute core behaviour and its extended features, with a real gRPC client
//! (h2c, prior knowledge) and h2c gRPC echo servers behind the appliance.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use gatehouse_tests::{Appliance, GrpcClient, GrpcEcho, GrpcReply, free_port, service_manifest};
use serde_json::Value;

use crate::{
    Case, GATEWAY_API_CONFIG, GATEWAY_CLASS, Outcome, case, condition, ensure, ensure_eq,
    expect_route_condition, object, run_profile, service,
};

/// One appliance serving every case's manifests, and the gRPC echo servers behind them.
struct World {
    gh: Appliance,
    /// Listener `grpc`: every route kind, from all namespaces.
    grpc: u16,
    /// Listener `http-only`: `allowedRoutes.kinds` is HTTPRoute only.
    http_only: u16,
    /// Listeners `wild` (`*.grpc.example`) and `exact` (`bar.grpc.example`) on one port.
    isolated: u16,
    _backends: Vec<GrpcEcho>,
}

impl World {
    async fn call(&self, port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> GrpcReply {
        // A fresh connection per call: every case exercises accept and the h2 handshake.
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut client = GrpcClient::connect(addr).await;
        client.unary(host, path, headers, b"conformance").await
    }

    /// The backend that answers a unary `Say` call, or `grpc-status N`.
    async fn answered_by(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let reply = self.call(self.grpc, host, path, headers).await;
        match (reply.grpc_status(), reply.header("x-echo-backend")) {
            (Some(0), Some(backend)) => backend.to_owned(),
            (status, _) => format!("grpc-status {status:?}"),
        }
    }

    async fn status(&self) -> Value {
        self.gh.status().await
    }
}

fn gateway(grpc: u16, http_only: u16, isolated: u16) -> String {
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: grpc
  namespace: infra
spec:
  gatewayClassName: gatehouse
  addresses:
  - type: IPAddress
    value: 127.0.0.1
  listeners:
  - name: grpc
    port: {grpc}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
  - name: http-only
    port: {http_only}
    protocol: HTTP
    allowedRoutes:
      kinds: [{{kind: HTTPRoute}}]
  - name: wild
    port: {isolated}
    protocol: HTTP
    hostname: "*.grpc.example"
  - name: exact
    port: {isolated}
    protocol: HTTP
    hostname: bar.grpc.example
"#
    )
}

/// A route of `kind` `infra/name` with `spec` (YAML below `spec:`), created at `created`.
fn route(kind: &str, name: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: infra\n  creationTimestamp: \"{created}\"\nspec:\n{spec}"
    )
}

const OLD: &str = "2026-01-01T00:00:00Z";
const NEW: &str = "2026-02-01T00:00:00Z";

const ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "GRPCRoute",
        "exact-method",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [exact.example]
  rules:
  - matches: [{ method: { service: echo.v1.Echo, method: Say } }]
    backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ method: { service: echo.v1.Echo, method: Collect } }]
    backendRefs: [{ name: v2, port: 80 }]
  - matches: [{ method: { service: other.v1.Other } }]
    backendRefs: [{ name: v3, port: 80 }]
"#,
    ),
    (
        "GRPCRoute",
        "headers",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [headers.example]
  rules:
  - matches: [{ headers: [{ name: version, value: one }] }]
    backendRefs: [{ name: v1, port: 80 }]
  - matches: [{ headers: [{ name: version, value: two }] }]
    backendRefs: [{ name: v2, port: 80 }]
  - matches: [{ headers: [{ type: RegularExpression, name: version, value: "thr.+" }] }]
    backendRefs: [{ name: v3, port: 80 }]
"#,
    ),
    (
        "GRPCRoute",
        "wild",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: wild }]
  rules: [{ backendRefs: [{ name: v1, port: 80 }] }]
"#,
    ),
    (
        "GRPCRoute",
        "exact-host",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: exact }]
  rules: [{ backendRefs: [{ name: v2, port: 80 }] }]
"#,
    ),
    (
        "GRPCRoute",
        "named",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [named.example]
  rules:
  - name: first-rule
    matches: [{ method: { service: echo.v1.Echo, method: Say } }]
    backendRefs: [{ name: v1, port: 80 }]
  - name: second-rule
    backendRefs: [{ name: v2, port: 80 }]
"#,
    ),
    (
        "GRPCRoute",
        "header-modifier",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [modify.example]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{ name: x-set, value: set-value }]
        add: [{ name: x-add, value: added }]
        remove: [x-remove]
    backendRefs: [{ name: v1, port: 80 }]
"#,
    ),
    (
        "GRPCRoute",
        "weights",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [weights.example]
  rules:
  - backendRefs:
    - { name: v1, port: 80, weight: 1 }
    - { name: v2, port: 80, weight: 1 }
    - { name: v3, port: 80, weight: 0 }
"#,
    ),
    (
        "GRPCRoute",
        "not-allowed",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: http-only }]
  rules: [{ backendRefs: [{ name: v1, port: 80 }] }]
"#,
    ),
    (
        "GRPCRoute",
        "missing-backend",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [missing.example]
  rules: [{ backendRefs: [{ name: nowhere, port: 80 }] }]
"#,
    ),
    (
        "HTTPRoute",
        "shared-http",
        OLD,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [shared.example]
  rules: [{ backendRefs: [{ name: v3-h2c, port: 80 }] }]
"#,
    ),
    (
        "GRPCRoute",
        "shared-grpc",
        NEW,
        r#"  parentRefs: [{ name: grpc, sectionName: grpc }]
  hostnames: [shared.example]
  rules: [{ backendRefs: [{ name: v1, port: 80 }] }]
"#,
    ),
];

async fn world() -> World {
    let mut backends = Vec::new();
    for name in ["v1", "v2", "v3"] {
        backends.push(GrpcEcho::start(name).await);
    }
    let (grpc, http_only, isolated) = (free_port(), free_port(), free_port());
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway(grpc, http_only, isolated));
    for b in &backends {
        yaml.push_str(&service("infra", &b.name, b.port()));
    }
    // v3 again, for HTTPRoutes: the gRPC echo speaks HTTP/2 only, which an HTTPRoute backend
    // gets from `appProtocol: kubernetes.io/h2c`.
    let h2c = "kubernetes.io/h2c";
    yaml.push_str(&service_manifest("infra", "v3-h2c", backends[2].port(), Some(h2c)));
    for (kind, name, created, spec) in ROUTES {
        yaml.push_str(&route(kind, name, created, spec));
    }
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/grpc.yaml", &yaml)]).await;
    World { gh, grpc, http_only, isolated, _backends: backends }
}

async fn listeners_support_grpc_routes(w: &World) -> Outcome {
    let status = w.status().await;
    let gateway = object(&status, "Gateway", "infra", "grpc")?;
    let listeners = gateway["status"]["listeners"].as_array().cloned().unwrap_or_default();
    let kinds = |name: &str| -> Vec<String> {
        listeners
            .iter()
            .find(|l| l["name"] == name)
            .and_then(|l| l["supportedKinds"].as_array())
            .map(|k| k.iter().filter_map(|k| k["kind"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    ensure_eq!(kinds("grpc"), ["HTTPRoute", "GRPCRoute"], "supportedKinds of grpc");
    ensure_eq!(kinds("http-only"), ["HTTPRoute"], "supportedKinds of http-only");
    let attached = listeners.iter().find(|l| l["name"] == "grpc").map(|l| &l["attachedRoutes"]);
    // exact-method, headers, named, header-modifier, weights, missing-backend, shared-http.
    ensure_eq!(attached, Some(&Value::from(7)), "attachedRoutes of grpc");
    Ok(())
}

async fn accepted_and_resolved(w: &World) -> Outcome {
    let status = w.status().await;
    for name in ["exact-method", "headers", "named", "header-modifier", "weights"] {
        let parent = ("grpc", Some("grpc"));
        expect_route_condition(
            &status,
            "GRPCRoute",
            ("infra", name),
            parent,
            ("Accepted", "True", "Accepted"),
        )?;
        expect_route_condition(
            &status,
            "GRPCRoute",
            ("infra", name),
            parent,
            ("ResolvedRefs", "True", "ResolvedRefs"),
        )?;
    }
    Ok(())
}

async fn exact_method_matching(w: &World) -> Outcome {
    let cases = [
        ("/echo.v1.Echo/Say", "v1"),
        ("/echo.v1.Echo/Collect", "v2"),
        ("/other.v1.Other/Say", "v3"),
        ("/other.v1.Other/Collect", "v3"),
        ("/echo.v1.Echo/Count", "grpc-status Some(12)"),
        ("/echo.v1.EchoPlus/Say", "grpc-status Some(12)"),
    ];
    for (path, expected) in cases {
        ensure_eq!(w.answered_by("exact.example", path, &[]).await, expected, "{path}");
    }
    Ok(())
}

async fn header_matching(w: &World) -> Outcome {
    let cases = [("one", "v1"), ("two", "v2"), ("three", "v3"), ("four", "grpc-status Some(12)")];
    for (version, expected) in cases {
        let got =
            w.answered_by("headers.example", "/echo.v1.Echo/Say", &[("version", version)]).await;
        ensure_eq!(got, expected, "version: {version}");
    }
    Ok(())
}

async fn listener_hostname_matching(w: &World) -> Outcome {
    for (host, expected) in
        [("bar.grpc.example", "v2"), ("foo.grpc.example", "v1"), ("x.bar.grpc.example", "v1")]
    {
        let reply = w.call(w.isolated, host, "/echo.v1.Echo/Say", &[]).await;
        ensure_eq!(reply.header("x-echo-backend"), Some(expected), "{host}");
    }
    let reply = w.call(w.isolated, "grpc.example", "/echo.v1.Echo/Say", &[]).await;
    ensure_eq!(reply.grpc_status(), Some(12), "no listener for grpc.example");
    Ok(())
}

async fn named_rules(w: &World) -> Outcome {
    ensure_eq!(w.answered_by("named.example", "/echo.v1.Echo/Say", &[]).await, "v1", "first-rule");
    ensure_eq!(
        w.answered_by("named.example", "/echo.v1.Echo/Chat", &[]).await,
        "v2",
        "second-rule"
    );
    Ok(())
}

async fn request_header_modifier(w: &World) -> Outcome {
    let headers = [("x-add", "original"), ("x-remove", "gone"), ("x-set", "client")];
    let reply = w.call(w.grpc, "modify.example", "/echo.v1.Echo/Say", &headers).await;
    ensure_eq!(reply.grpc_status(), Some(0), "status");
    let seen = &reply.json()["headers"];
    ensure_eq!(seen["x-set"], "set-value", "set");
    ensure_eq!(seen["x-add"], "original, added", "add");
    ensure!(seen.get("x-remove").is_none(), "x-remove reached the backend: {seen}");
    Ok(())
}

async fn weighted_backends(w: &World) -> Outcome {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        *seen
            .entry(w.answered_by("weights.example", "/echo.v1.Echo/Say", &[]).await)
            .or_default() += 1;
    }
    ensure!(seen.contains_key("v1") && seen.contains_key("v2"), "1:1 weights: {seen:?}");
    ensure!(!seen.contains_key("v3"), "weight 0 took calls: {seen:?}");
    Ok(())
}

async fn streaming_and_trailers(w: &World) -> Outcome {
    let addr: SocketAddr = ([127, 0, 0, 1], w.grpc).into();
    let mut client = GrpcClient::connect(addr).await;
    let mut call = client.start("weights.example", "/echo.v1.Echo/Chat", &[]).await;
    for m in ["a", "b"] {
        ensure!(call.send(m.as_bytes()).await, "request stream closed");
        let got = call.recv().await;
        ensure_eq!(got.as_deref(), Some(m.as_bytes()), "bidi echo");
    }
    let reply = call.finish().await;
    ensure_eq!(reply.grpc_status(), Some(0), "trailer grpc-status");
    ensure!(reply.trailers.contains_key("x-echo-trailer"), "backend trailer lost: {reply:?}");
    Ok(())
}

async fn errors_are_grpc_status(w: &World) -> Outcome {
    for (host, path, code) in
        [("nothing.example", "/echo.v1.Echo/Say", 12), ("missing.example", "/echo.v1.Echo/Say", 14)]
    {
        let reply = w.call(w.grpc, host, path, &[]).await;
        ensure_eq!(reply.http_status, 200, "{host}: HTTP status");
        ensure_eq!(reply.header("content-type"), Some("application/grpc"), "{host}");
        ensure_eq!(reply.grpc_status(), Some(code), "{host}: grpc-status");
    }
    Ok(())
}

async fn not_allowed_by_listener_kinds(w: &World) -> Outcome {
    let status = w.status().await;
    expect_route_condition(
        &status,
        "GRPCRoute",
        ("infra", "not-allowed"),
        ("grpc", Some("http-only")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )?;
    let reply = w.call(w.http_only, "any.example", "/echo.v1.Echo/Say", &[]).await;
    ensure_eq!(reply.grpc_status(), Some(12), "nothing served on http-only");
    Ok(())
}

async fn unresolved_backend_reason(w: &World) -> Outcome {
    let status = w.status().await;
    expect_route_condition(
        &status,
        "GRPCRoute",
        ("infra", "missing-backend"),
        ("grpc", Some("grpc")),
        ("ResolvedRefs", "False", "BackendNotFound"),
    )
}

async fn http_and_grpc_route_hostname_conflict(w: &World) -> Outcome {
    let status = w.status().await;
    let parent = ("grpc", Some("grpc"));
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "shared-http"),
        parent,
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "GRPCRoute",
        ("infra", "shared-grpc"),
        parent,
        ("Accepted", "False", "HostnameConflict"),
    )?;
    ensure_eq!(
        w.answered_by("shared.example", "/echo.v1.Echo/Say", &[]).await,
        "v3",
        "the older HTTPRoute serves shared.example (over h2c, by appProtocol)"
    );
    let class = object(&status, "GatewayClass", "", "gatehouse")?;
    ensure_eq!(condition(&class["status"]["conditions"], "Accepted")?.0, "True", "class");
    Ok(())
}

#[tokio::test]
async fn gateway_grpc_profile() {
    let world = world().await;
    let cases: &[Case<World>] = &[
        case!("listeners_support_grpc_routes", ["GRPCRoute"], listeners_support_grpc_routes),
        case!("accepted_and_resolved", ["GRPCRoute"], accepted_and_resolved),
        case!("exact_method_matching", ["GRPCRoute"], exact_method_matching),
        case!("header_matching", ["GRPCRoute"], header_matching),
        case!("listener_hostname_matching", ["GRPCRoute"], listener_hostname_matching),
        case!("named_rules", ["GRPCRouteNamedRouteRule"], named_rules),
        case!(
            "request_header_modifier",
            ["GRPCRouteRequestHeaderModifier"],
            request_header_modifier
        ),
        case!("weighted_backends", ["GRPCRoute"], weighted_backends),
        case!("streaming_and_trailers", ["GRPCRoute"], streaming_and_trailers),
        case!("errors_are_grpc_status", ["GRPCRoute"], errors_are_grpc_status),
        case!("not_allowed_by_listener_kinds", ["GRPCRoute"], not_allowed_by_listener_kinds),
        case!("unresolved_backend_reason", ["GRPCRoute"], unresolved_backend_reason),
        case!(
            "http_and_grpc_route_hostname_conflict",
            ["GRPCRoute", "HTTPRouteBackendProtocolH2C"],
            http_and_grpc_route_hostname_conflict
        ),
    ];
    run_profile("GATEWAY-GRPC", &world, cases).await;
}
