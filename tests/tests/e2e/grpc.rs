//! GRPCRoute end to end: a real gRPC client (h2c) through the appliance to real h2c gRPC
//! echo servers; streaming both ways, trailers, errors as gRPC status, route status.

use gatehouse_tests::{Appliance, Client, EchoBackend, GrpcClient, GrpcEcho, free_port};
use serde_json::Value;

use crate::{gateway_api_config, manifests};

fn grpc_route(name: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
  - name: web
{body}"#
    )
}

fn parent_condition(status: &Value, kind: &str, name: &str, condition: &str) -> (String, String) {
    let object = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {status:#}"));
    let c = object["status"]["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == condition))
        .unwrap_or_else(|| panic!("no {condition} in {object:#}"));
    let text = |k: &str| c[k].as_str().expect("condition field").to_owned();
    (text("status"), text("reason"))
}

const HOST: &str = "grpc.example.com";

#[tokio::test]
async fn grpc_routes_reach_h2c_backends_with_streaming_and_trailers() {
    let a = GrpcEcho::start("a").await;
    let b = GrpcEcho::start("b").await;
    let port = free_port();
    let mut yaml = manifests(port, &[("grpc-a", a.port()), ("grpc-b", b.port())]);
    yaml.push_str(&grpc_route(
        "echo",
        r#"  hostnames: ["grpc.example.com"]
  rules:
  - matches:
    - method: {service: echo.v1.Echo, method: Say}
      headers: [{name: x-tenant, value: b}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: gatehouse}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-resp, value: "yes"}]}
    backendRefs: [{name: grpc-b, port: 80}]
  - matches: [{method: {service: echo.v1.Echo}}]
    backendRefs: [{name: grpc-a, port: 80}]
  - matches: [{method: {type: RegularExpression, service: "other\\..*"}}]
    backendRefs: [{name: grpc-b, port: 80}]
"#,
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = GrpcClient::connect(addr).await;

    // Unary, by service/method, with trailers from the backend.
    let reply = client.unary(HOST, "/echo.v1.Echo/Say", &[], b"hello").await;
    assert_eq!(reply.http_status, 200);
    assert_eq!(reply.grpc_status(), Some(0), "{reply:?}");
    let doc = reply.json();
    assert_eq!(doc["backend"], "a");
    assert_eq!(doc["message"], "hello");
    assert_eq!(doc["path"], "/echo.v1.Echo/Say");
    assert_eq!(reply.trailers["x-echo-trailer"], "a");

    // Header match and header filters, both directions.
    let reply = client.unary(HOST, "/echo.v1.Echo/Say", &[("x-tenant", "b")], b"hi").await;
    let doc = reply.json();
    assert_eq!(doc["backend"], "b");
    assert_eq!(doc["headers"]["x-via"], "gatehouse");
    assert_eq!(doc["headers"]["content-type"], "application/grpc");
    assert_eq!(reply.header("x-resp"), Some("yes"));
    assert_eq!(reply.trailers["x-echo-trailer"], "b");

    // RegularExpression service match.
    let reply = client.unary(HOST, "/other.v2.Thing/Say", &[], b"x").await;
    assert_eq!(reply.json()["backend"], "b");

    // The backend's own error status passes through untouched.
    let reply = client.unary(HOST, "/echo.v1.Echo/Fail", &[], b"x").await;
    assert_eq!(reply.grpc_status(), Some(5));
    assert_eq!(reply.grpc_message(), Some("not found here"));

    // Client streaming.
    let mut call = client.start(HOST, "/echo.v1.Echo/Collect", &[]).await;
    for m in ["1", "2", "3"] {
        assert!(call.send(m.as_bytes()).await);
    }
    let reply = call.finish().await;
    assert_eq!(reply.messages, ["1,2,3"]);
    assert_eq!(reply.grpc_status(), Some(0));

    // Server streaming.
    let reply = client.unary(HOST, "/echo.v1.Echo/Count", &[], b"5").await;
    assert_eq!(reply.messages, ["1", "2", "3", "4", "5"]);
    assert_eq!(reply.grpc_status(), Some(0));

    // Bidirectional: each reply arrives before the next message is sent, which only works
    // when neither direction is buffered by the proxy.
    let mut call = client.start(HOST, "/echo.v1.Echo/Chat", &[]).await;
    for m in ["ping-1", "ping-2", "ping-3"] {
        assert!(call.send(m.as_bytes()).await);
        assert_eq!(call.recv().await.as_deref(), Some(m.as_bytes()));
    }
    let reply = call.finish().await;
    assert!(reply.messages.is_empty());
    assert_eq!(reply.grpc_status(), Some(0));
    assert_eq!(reply.trailers["x-echo-trailer"], "a");

    // No route: UNIMPLEMENTED as a gRPC status, never an HTML or text page.
    let reply = client.unary(HOST, "/unknown.Service/Say", &[], b"x").await;
    assert_eq!(reply.http_status, 200);
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.grpc_status(), Some(12), "{reply:?}");
    assert!(reply.messages.is_empty());
    let reply = client.unary("other.example.com", "/echo.v1.Echo/Say", &[], b"x").await;
    assert_eq!(reply.grpc_status(), Some(12));

    let status = gh.status().await;
    assert_eq!(
        parent_condition(&status, "GRPCRoute", "echo", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        parent_condition(&status, "GRPCRoute", "echo", "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
}

#[tokio::test]
async fn grpc_errors_are_grpc_status_and_conflicts_are_reported() {
    let http = EchoBackend::start("http").await;
    // A port with nothing listening: connections are refused.
    let closed = free_port();
    let port = free_port();
    let mut yaml = manifests(port, &[("down", closed), ("web", http.port())]);
    yaml.push_str(
        r#"---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  ports: [{port: 80}]
"#,
    );
    yaml.push_str(&grpc_route(
        "errors",
        r#"  hostnames: ["grpc.example.com"]
  rules:
  - matches: [{method: {service: down.Svc}}]
    backendRefs: [{name: down, port: 80}]
  - matches: [{method: {service: empty.Svc}}]
    backendRefs: [{name: empty, port: 80}]
  - matches: [{method: {service: missing.Svc}}]
    backendRefs: [{name: missing, port: 80}]
"#,
    ));
    // An HTTPRoute takes api.example.com first; the later GRPCRoute for it loses.
    yaml.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api-http
  namespace: default
  creationTimestamp: "2026-01-01T00:00:00Z"
spec:
  parentRefs: [{name: web}]
  hostnames: ["api.example.com"]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#,
    );
    yaml.push_str(
        &grpc_route(
            "api-grpc",
            r#"  hostnames: ["api.example.com"]
  rules: [{backendRefs: [{name: web, port: 80}]}]
"#,
        )
        .replace(
            "namespace: default\n",
            "namespace: default\n  creationTimestamp: \"2026-02-01T00:00:00Z\"\n",
        ),
    );
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = GrpcClient::connect(addr).await;

    for (path, code) in [
        ("/down.Svc/Say", 14),    // connection refused: UNAVAILABLE
        ("/empty.Svc/Say", 14),   // no ready endpoint: UNAVAILABLE
        ("/missing.Svc/Say", 14), // unresolved backend: UNAVAILABLE
        ("/nothing.Svc/Say", 12), // no route: UNIMPLEMENTED
    ] {
        let reply = client.unary(HOST, path, &[], b"x").await;
        assert_eq!(reply.http_status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/grpc"), "{path}");
        assert_eq!(reply.grpc_status(), Some(code), "{path}: {reply:?}");
        assert!(reply.grpc_message().is_some_and(|m| m.starts_with("gatehouse: ")), "{path}");
    }
    // The HTTPRoute keeps api.example.com: gRPC calls there reach the HTTP backend, not a
    // GRPCRoute.
    let reply = client.unary("api.example.com", "/any.Svc/Say", &[], b"x").await;
    assert_eq!(reply.header("x-echo-backend"), Some("http"));

    let status = gh.status().await;
    assert_eq!(
        parent_condition(&status, "GRPCRoute", "api-grpc", "Accepted"),
        ("False".into(), "HostnameConflict".into())
    );
    assert_eq!(
        parent_condition(&status, "HTTPRoute", "api-http", "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        parent_condition(&status, "GRPCRoute", "errors", "ResolvedRefs"),
        ("False".into(), "BackendNotFound".into())
    );
}

#[tokio::test]
async fn native_h2c_backend_times_out_as_deadline_exceeded() {
    let a = GrpcEcho::start("a").await;
    let port = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"

[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "http"
  port = {port}
  protocol = "HTTP"

[[routes]]
name = "grpc"
parents = ["web"]
  [[routes.rules]]
  timeouts = {{ backend_request_ms = 300 }}
  backends = [{{ address = "127.0.0.1:{a}", protocol = "h2c" }}]
"#,
        a = a.port()
    );
    let _gh = Appliance::start_ready(&config, &[]).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = GrpcClient::connect(addr).await;
    let reply = client.unary("any.example.com", "/echo.v1.Echo/Say", &[], b"native").await;
    assert_eq!(reply.grpc_status(), Some(0), "{reply:?}");
    assert_eq!(reply.json()["message"], "native");
    let reply = client.unary("any.example.com", "/echo.v1.Echo/Slow", &[], b"x").await;
    assert_eq!(reply.http_status, 200);
    assert_eq!(reply.grpc_status(), Some(4), "DEADLINE_EXCEEDED: {reply:?}");
}

#[tokio::test]
async fn http_route_reaches_an_h2c_only_backend_by_app_protocol() {
    // The gRPC echo server speaks HTTP/2 only: HTTP/1.1 from the proxy would fail.
    let h2 = GrpcEcho::start("h2-only").await;
    let port = free_port();
    let mut yaml = manifests(port, &[]);
    yaml.push_str(&gatehouse_tests::service_manifest(
        "default",
        "h2",
        h2.port(),
        Some("kubernetes.io/h2c"),
    ));
    yaml.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: h2, namespace: default}
spec:
  parentRefs: [{name: web}]
  rules: [{backendRefs: [{name: h2, port: 80}]}]
"#,
    );
    let _gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let reply = Client::http1()
        .get_host(&format!("http://127.0.0.1:{port}/echo.v1.Echo/Say"), "app.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), Some("h2-only"));
    // The answer is one gRPC-framed message: a 5-byte prefix, then the JSON description.
    let doc: Value = serde_json::from_slice(&reply.body[5..]).unwrap();
    assert_eq!(doc["path"], "/echo.v1.Echo/Say");
    assert_eq!(doc["headers"]["x-forwarded-proto"], "http");
}
