//! End-to-end tests: the real `gatehouse` binary, real backends and clients on 127.0.0.1.

mod acme;
mod acme_cluster;
mod acme_faults;
mod addresses;
mod backend_tls;
mod cli;
mod gateway_api;
mod gateway_extended;
mod grpc;
mod http_policy;
mod image;

mod kube;
mod l4;
mod lifecycle;
mod listener_sets;
mod native;
mod systemd;
mod tls;
mod units;
mod wasm;
mod wasm_bodies;
mod wasm_gateway_api;
mod wasm_http_call;
mod websocket;
mod xdp;
mod xdp_l4;

/// Our GatewayClass, `gatehouse`, ending with a document separator.
pub const GATEWAY_CLASS: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gatehouse
spec:
  controllerName: gatehouse.dev/gateway-controller
---
"#;

/// A Gateway API manifest set: our GatewayClass, a Gateway on 127.0.0.1:`port` (HTTP), and
/// Services + EndpointSlices for each `(service name, backend port)`.
pub fn manifests(port: u16, services: &[(&str, u16)]) -> String {
    let mut out = GATEWAY_CLASS.to_owned();
    out.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: default
spec:
  gatewayClassName: gatehouse
  addresses:
  - type: IPAddress
    value: 127.0.0.1
  listeners:
  - name: http
    port: {port}
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: All
"#
    ));
    for (name, backend_port) in services {
        out.push_str(&service(name, "default", *backend_port));
    }
    out
}

/// A Service on port 80 (unnamed) with one EndpointSlice pointing at 127.0.0.1:`port`.
pub fn service(name: &str, namespace: &str, port: u16) -> String {
    gatehouse_tests::service_manifest(namespace, name, port, None)
}

/// The config file for Gateway API mode with manifests in `manifests/`.
pub fn gateway_api_config() -> &'static str {
    r#"
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
shutdown_grace_ms = 5000
[gateway_api]
manifests = ["manifests"]
"#
}
