//! WebSocket through an HTTPRoute: the `Upgrade` request reaches the backend, its `101` comes
//! back, and the two connections become one byte tunnel (HTTPRouteBackendProtocolWebSocket).

use gatehouse_tests::{Appliance, WebSocketClient, WebSocketEcho, free_port};

use crate::{gateway_api_config, manifests};

#[tokio::test]
async fn websocket_upgrade_becomes_a_tunnel_to_the_backend() {
    let ws = WebSocketEcho::start().await;
    let port = free_port();
    let mut yaml = manifests(port, &[]);
    yaml.push_str(&gatehouse_tests::service_manifest(
        "default",
        "ws",
        ws.port(),
        Some("kubernetes.io/ws"),
    ));
    yaml.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ws, namespace: default}
spec:
  parentRefs: [{name: web}]
  hostnames: [ws.example.com]
  rules: [{backendRefs: [{name: ws, port: 80}]}]
"#,
    );
    let _gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = WebSocketClient::connect(addr, "ws.example.com", "/chat")
        .await
        .unwrap_or_else(|head| panic!("no upgrade: {head}"));
    assert!(
        client.head.to_ascii_lowercase().contains("x-echo-backend: websocket"),
        "{}",
        client.head
    );
    for text in ["hello", "through the tunnel", &"x".repeat(2000)] {
        assert_eq!(client.echo(text).await.as_deref(), Ok(text));
    }
    // No route for the host: the upgrade is refused with the proxy's 404, not tunnelled.
    let refused = WebSocketClient::connect(addr, "other.example.com", "/chat").await;
    assert!(refused.is_err_and(|head| head.starts_with("HTTP/1.1 404")));
}
