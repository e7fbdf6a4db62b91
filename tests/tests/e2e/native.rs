//! The native TOML form: gateways, listeners and routes without Gateway API objects.

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port};

fn config(port: u16, a: u16, b: u16) -> String {
    format!(
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
name = "app"
parents = ["web"]
hostnames = ["app.example.com"]
  [[routes.rules]]
  matches = [{{ path = {{ prefix = "/api" }} }}]
  filters = [{{ request_header_modifier = {{ set = {{ "x-route" = "api" }}, remove = ["x-secret"] }} }},
             {{ response_header_modifier = {{ add = {{ "x-served-by" = "gatehouse" }} }} }}]
  backends = [{{ address = "127.0.0.1:{a}" }}]
  [[routes.rules]]
  matches = [{{ path = {{ exact = "/old" }} }}]
  filters = [{{ request_redirect = {{ path = {{ replace_full = "/new" }}, status = 301 }} }}]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{b}" }}]
"#
    )
}

#[tokio::test]
async fn routes_by_host_and_path_over_http1_and_h2c() {
    let api = EchoBackend::start("api").await;
    let web = EchoBackend::start("web").await;
    let port = free_port();
    let gh = Appliance::start_ready(&config(port, api.port(), web.port()), &[]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply = Client::http1()
        .header("x-secret", "hunter2")
        .get_host(&url("/api/users?id=1"), "app.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("api"));
    assert_eq!(reply.header("x-served-by"), Some("gatehouse"));
    let echo = reply.json();
    assert_eq!(echo["path"], "/api/users?id=1");
    assert_eq!(echo["headers"]["x-route"], "api");
    assert!(echo["headers"].get("x-secret").is_none());
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");

    // Segment semantics: /apiary is not under /api.
    let reply = Client::http1().get_host(&url("/apiary"), "app.example.com").await.unwrap();
    assert_eq!(reply.backend(), Some("web"));

    // Host with a port and upper case still matches; h2c prior knowledge works.
    let reply = Client::h2c().get_host(&url("/api"), "APP.example.com:1234").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("api"));

    // Unknown host: no route.
    let reply = Client::http1().get_host(&url("/api"), "other.example.com").await.unwrap();
    assert_eq!(reply.status, 404);

    // Redirect keeps the listener's port (not well-known) in Location.
    let reply = Client::http1().get_host(&url("/old"), "app.example.com").await.unwrap();
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some(format!("http://app.example.com:{port}/new").as_str())
    );

    let status = gh.status().await;
    let objects = status["objects"].as_array().unwrap();
    assert!(objects.iter().any(|o| o["kind"] == "Gateway" && o["metadata"]["name"] == "web"));
}

#[tokio::test]
async fn backend_failures_become_status_codes() {
    let closed = free_port();
    let port = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
listeners = [{{ name = "http", port = {port}, protocol = "HTTP" }}]
[[routes]]
name = "down"
parents = ["web"]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{closed}" }}]
"#
    );
    let _gh = Appliance::start_ready(&config, &[]).await;
    let reply = Client::http1().get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(reply.status, 502);
}
