//! proxy-wasm filters through the real binary: each shipped plugin and the SDK's own example on
//! real routes, failure policies, module swaps on reload, `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port, wasm_plugin};

fn module(name: &str) -> String {
    wasm_plugin(name).display().to_string()
}

/// A config with one gateway on `port` and `routes` (TOML) after the plugins (TOML).
pub(crate) fn config(port: u16, plugins: &str, routes: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"

[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "http"
  port = {port}
  protocol = "HTTP"
{plugins}
{routes}
"#
    )
}

/// A native TOML route on listener `web` whose one rule runs `plugin` before `backend`.
pub(crate) fn route(name: &str, host: &str, plugin: &str, backend: u16) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
parents = ["web"]
hostnames = ["{host}"]
  [[routes.rules]]
  filters = [{{ wasm = {{ plugin = "{plugin}" }} }}]
  backends = [{{ address = "127.0.0.1:{backend}" }}]
"#
    )
}

#[tokio::test]
async fn shipped_plugins_and_the_sdk_example_filter_real_routes() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let plugins = format!(
        r#"
[[plugins]]
name = "hm"
module = "{hm}"
  [plugins.config.request.set]
  x-client = "{{source.address}}"
  x-route = "{{route_name}}"
  [plugins.config.response]
  remove = ["x-echo-backend"]
  set = {{ x-filtered = "yes" }}

[[plugins]]
name = "loopback-only"
module = "{allow}"
config = {{ allow = ["127.0.0.0/8"] }}

[[plugins]]
name = "nobody"
module = "{allow}"
config = {{ allow = ["192.0.2.0/24"], status = 451 }}

[[plugins]]
name = "sdk"
module = "{sdk}"
"#,
        hm = module("header-modifier"),
        allow = module("ip-allow"),
        sdk = module("sdk-http-headers"),
    );
    let routes = [
        route("hm", "hm.example", "hm", echo.port()),
        route("allowed", "allowed.example", "loopback-only", echo.port()),
        route("refused", "refused.example", "nobody", echo.port()),
        route("sdk", "sdk.example", "sdk", echo.port()),
    ]
    .concat();
    let gh = Appliance::start_ready(&config(port, &plugins, &routes), &[]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply = Client::http1().get_host(&url("/a"), "hm.example").await.unwrap();
    assert_eq!(reply.status, 200, "{}", gh.logs());
    let echo_seen = reply.json();
    let client = echo_seen["headers"]["x-client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(echo_seen["headers"]["x-route"], "toml/hm");
    assert_eq!(reply.header("x-filtered"), Some("yes"));
    assert_eq!(reply.backend(), None, "the plugin removed x-echo-backend");

    let reply = Client::http1().get_host(&url("/"), "allowed.example").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("echo"));
    let reply = Client::h2c().get_host(&url("/"), "refused.example").await.unwrap();
    assert_eq!(reply.status, 451);
    assert_eq!(&reply.body[..], b"forbidden\n");

    // The SDK's http_headers example, unmodified: /hello is answered by the filter.
    let reply = Client::http1().get_host(&url("/hello"), "sdk.example").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(&reply.body[..], b"Hello, World!\n");
    assert_eq!(reply.header("powered-by"), Some("proxy-wasm"));
    let reply = Client::http1().get_host(&url("/other"), "sdk.example").await.unwrap();
    assert_eq!(reply.backend(), Some("echo"));

    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            r#"gatehouse_wasm_guest_counter_total{plugin="nobody",name="ip_allow_denied"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"gatehouse_wasm_local_responses_total{plugin="sdk"} 1"#), "{text}");
    // Compiled modules were cached in the state directory.
    let cached = std::fs::read_dir(gh.path("state/wasm")).unwrap().flatten().count();
    assert_eq!(cached, 3, "one compiled file per distinct module");
}

#[tokio::test]
async fn a_misbehaving_plugin_fails_closed_or_open_and_the_proxy_keeps_serving() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let plugins = format!(
        r#"
[[plugins]]
name = "closed"
module = "{m}"
timeout_ms = 50
memory_limit = "8MiB"

[[plugins]]
name = "open"
module = "{m}"
failure_policy = "open"
timeout_ms = 50
memory_limit = "8MiB"
"#,
        m = module("misbehave"),
    );
    let routes = [
        route("closed", "closed.example", "closed", echo.port()),
        route("open", "open.example", "open", echo.port()),
    ]
    .concat();
    let gh = Appliance::start_ready(&config(port, &plugins, &routes), &[]).await;
    let url = format!("http://127.0.0.1:{port}/");
    for mode in ["trap", "loop", "oom"] {
        let client = Client::http1().header("x-misbehave", mode);
        let closed = client.get_host(&url, "closed.example").await.unwrap();
        assert_eq!(closed.status, 500, "{mode}: {}", gh.logs());
        let reply = client.get_host(&url, "open.example").await.unwrap();
        assert_eq!(reply.status, 200, "{mode}");
        assert_eq!(reply.backend(), Some("echo"));
        // And the next well-behaved request is served by a fresh instance.
        let reply = Client::http1().get_host(&url, "closed.example").await.unwrap();
        assert_eq!(reply.status, 200, "after {mode}");
    }
    let reply = Client::http1()
        .header("x-misbehave", "unimplemented")
        .get_host(&url, "closed.example")
        .await
        .unwrap();
    assert_eq!(reply.header("x-unimplemented-status"), Some("12"));
    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for kind in ["trap", "timeout", "memory"] {
        for plugin in ["closed", "open"] {
            let line =
                format!(r#"gatehouse_wasm_failures_total{{plugin="{plugin}",kind="{kind}"}} 1"#);
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
    }
}

#[tokio::test]
async fn a_reload_swaps_a_module_without_dropping_requests_and_a_bad_module_never_serves() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    // One config for two modules: header-modifier rejects unknown keys, so each gets its own.
    let hm = |m: &str| {
        format!(
            "\n[[plugins]]\nname = \"filter\"\nmodule = \"{m}\"\nconfig = {{ request = {{ set = {{ x-module = \"hm\" }} }} }}\n"
        )
    };
    let routes = route("app", "app.example", "filter", echo.port());
    let first = config(port, &hm(&module("header-modifier")), &routes);
    let gh = Appliance::start_ready(&first, &[]).await;
    let url = format!("http://127.0.0.1:{port}/");
    let reply = Client::http1().get_host(&url, "app.example").await.unwrap();
    assert_eq!(reply.json()["headers"]["x-module"], "hm");

    // Requests keep flowing while the module is swapped.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, failures, served, url) =
            (stop.clone(), failures.clone(), served.clone(), url.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match Client::http1().get_host(&url, "app.example").await {
                    Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                    _ => failures.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let ip_allow = format!(
        "\n[[plugins]]\nname = \"filter\"\nmodule = \"{}\"\nconfig = {{ allow = [\"127.0.0.0/8\"] }}\n",
        module("ip-allow")
    );
    gh.write(
        "gatehouse.toml",
        &config(port, &ip_allow, &routes).replace("{admin}", &gh.admin.to_string()),
    );
    let status = gh.wait_generation(1).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    // One write may be seen as more than one change (and reload): take the number served.
    let swapped = status["generation"].clone();
    let reply = Client::http1().get_host(&url, "app.example").await.unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.json()["headers"].get("x-module").is_none(), "the new module serves");

    // A module that is not WASM fails the reload; the last good one keeps serving.
    std::fs::write(gh.path("broken.wasm"), b"not wasm").unwrap();
    let broken = "\n[[plugins]]\nname = \"filter\"\nmodule = \"broken.wasm\"\n";
    gh.write(
        "gatehouse.toml",
        &config(port, broken, &routes).replace("{admin}", &gh.admin.to_string()),
    );
    let status = gh.wait_status(|s| s["last_reload"]["ok"] == false).await;
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("plugin \\\"filter\\\""), "{errors}");
    assert_eq!(status["generation"], swapped, "the failed reload serves nothing new");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during the swap");
    assert!(served.load(Ordering::Relaxed) > 0);
    let reply = Client::http1().get_host(&url, "app.example").await.unwrap();
    assert_eq!(reply.status, 200);
}
