//! Kubernetes manifests the end-to-end and conformance tests share.

/// A Service `namespace/name` (port 80, unnamed, with `appProtocol` when given) and one ready
/// EndpointSlice pointing at 127.0.0.1:`port`.
pub fn service_manifest(
    namespace: &str,
    name: &str,
    port: u16,
    app_protocol: Option<&str>,
) -> String {
    let app_protocol = app_protocol.map(|p| format!("    appProtocol: {p}\n")).unwrap_or_default();
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  ports:
  - port: 80
    targetPort: {port}
{app_protocol}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: ""
  port: {port}
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
"#
    )
}
