//! The host against the plugins in plugins/ (built by `make plugins`) and small WAT modules.
#![allow(clippy::unwrap_used, reason = "test helpers")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_model::{FailurePolicy, ModuleSource, WasmPlugin};
use gatehouse_wasm::{Head, Host, HostMetrics, HostOptions, Plugins, RequestInfo, Verdict};
use prometheus_client::registry::Registry;

/// Where `make plugins` puts the modules.
fn plugin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_PLUGINS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
        target.join("plugins/wasm32-wasip1/release")
    });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: build the plugins first (make plugins)", path.display());
    path
}

fn spec(name: &str, module: &str, config: &str) -> WasmPlugin {
    WasmPlugin {
        name: name.into(),
        module: ModuleSource::Path { path: plugin_path(module), sha256: None },
        config: config.into(),
        failure_policy: FailurePolicy::Closed,
        timeout: Duration::from_millis(200),
        memory_limit: 16 << 20,
        upstreams: Vec::new(),
    }
}

fn info(source: &str) -> RequestInfo {
    RequestInfo {
        source: source.parse::<SocketAddr>().unwrap(),
        destination: "127.0.0.1:8080".parse().unwrap(),
        server_name: None,
        route_name: "toml/web".into(),
        listener_name: "toml/gw/http".into(),
        protocol: "HTTP/1.1",
        tls: false,
    }
}

fn request_head(path: &str, headers: &[(&'static str, &str)]) -> Head {
    let mut head = Head::request("GET", path, "example.com", "http", Default::default());
    for (n, v) in headers {
        head.headers.append(*n, v.parse().unwrap());
    }
    head
}

fn response_head() -> Head {
    Head::response("200", Default::default())
}

struct Fixture {
    host: Host,
    registry: Registry,
}

fn fixture(cache_dir: Option<PathBuf>) -> Fixture {
    let mut registry = Registry::default();
    let metrics = HostMetrics::register(&mut registry);
    let options = HostOptions { cache_dir, instances_per_plugin: 2, pool_size: 16 };
    Fixture { host: Host::with_metrics(options, metrics).unwrap(), registry }
}

impl Fixture {
    async fn prepare(&self, specs: &[WasmPlugin]) -> Plugins {
        match self.host.prepare(specs).await {
            Ok(p) => p,
            Err(errors) => panic!("prepare failed: {errors:?}"),
        }
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

#[tokio::test]
async fn header_modifier_edits_request_and_response_with_templates() {
    let f = fixture(None);
    let config = r#"{"request": {"set": {"x-client": "{source.address}", "x-route": "{route_name} {request.method}"},
                     "add": {"x-multi": "b"}, "remove": ["x-secret"]},
                     "response": {"set": {"x-served-by": "wasm", "x-port": "{source.port}"}, "remove": ["server"]}}"#;
    let plugins = f.prepare(&[spec("hm", "header-modifier", config)]).await;
    let plugin = plugins.get("hm").unwrap();
    for _ in 0..3 {
        let mut ctx = plugin.start_request(info("10.1.2.3:4567"));
        let mut head = request_head("/a?b=1", &[("x-secret", "s"), ("x-multi", "a")]);
        assert_eq!(ctx.on_request_headers(&mut head, true), Verdict::Continue);
        assert_eq!(head.headers["x-client"], "10.1.2.3:4567");
        assert_eq!(head.headers["x-route"], "toml/web GET");
        assert!(!head.headers.contains_key("x-secret"));
        let multi: Vec<_> = head.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        let mut resp = response_head();
        resp.headers.insert("server", "upstream".parse().unwrap());
        assert_eq!(ctx.on_response_headers(&mut resp, true), Verdict::Continue);
        assert_eq!(resp.headers["x-served-by"], "wasm");
        assert_eq!(resp.headers["x-port"], "4567");
        assert!(!resp.headers.contains_key("server"));
    }
}

#[tokio::test]
async fn a_new_request_never_sees_the_last_ones_state() {
    // Ended contexts' states are reused: request properties read in the response phase must
    // be this request's.
    let f = fixture(None);
    let config =
        r#"{"response": {"set": {"x-path": "{request.path}", "x-client": "{source.address}"}}}"#;
    let plugins = f.prepare(&[spec("hm", "header-modifier", config)]).await;
    let plugin = plugins.get("hm").unwrap();
    for i in 0..8 {
        let source = format!("10.0.0.{i}:{}", 1000 + i);
        let path = format!("/r{i}?q={i}");
        let mut ctx = plugin.start_request(info(&source));
        assert_eq!(ctx.on_request_headers(&mut request_head(&path, &[]), true), Verdict::Continue);
        let mut resp = response_head();
        assert_eq!(ctx.on_response_headers(&mut resp, true), Verdict::Continue);
        assert_eq!(resp.headers["x-path"], path.as_str());
        assert_eq!(resp.headers["x-client"], source.as_str());
    }
}

#[tokio::test]
async fn ip_allow_answers_403_outside_the_allowed_networks_and_counts() {
    let f = fixture(None);
    let config = r#"{"allow": ["10.0.0.0/8", "::1/128"], "deny": ["10.9.0.0/16"]}"#;
    let plugins = f.prepare(&[spec("allow", "ip-allow", config)]).await;
    let plugin = plugins.get("allow").unwrap();
    let verdict = |source: &str| {
        plugin.start_request(info(source)).on_request_headers(&mut request_head("/", &[]), true)
    };
    assert_eq!(verdict("10.1.1.1:1"), Verdict::Continue);
    assert_eq!(verdict("[::1]:1"), Verdict::Continue);
    for refused in ["10.9.1.1:1", "192.168.1.1:1"] {
        match verdict(refused) {
            Verdict::Respond(r) => {
                assert_eq!(r.status, 403);
                assert_eq!(r.body, b"forbidden\n");
            }
            other => panic!("{refused}: {other:?}"),
        }
    }
    let metrics = f.metrics();
    assert!(
        metrics.contains(r#"wasm_guest_counter_total{plugin="allow",name="ip_allow_denied"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"wasm_local_responses_total{plugin="allow"} 2"#), "{metrics}");
}

#[tokio::test]
async fn a_rejected_configuration_fails_prepare_with_the_plugin_name() {
    let f = fixture(None);
    let errors = f
        .host
        .prepare(&[spec("allow", "ip-allow", r#"{"allow": ["10.0.0.0/99"]}"#)])
        .await
        .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, "allow");
    assert!(
        errors[0].1.to_string().contains("proxy_on_configure returned false"),
        "{}",
        errors[0].1
    );
}

#[tokio::test]
async fn a_wrong_sha256_or_a_non_proxy_wasm_module_is_refused() {
    let f = fixture(None);
    let mut s = spec("hm", "header-modifier", "{}");
    s.module =
        ModuleSource::Path { path: plugin_path("header-modifier"), sha256: Some("00".repeat(32)) };
    let errors = f.host.prepare(&[s]).await.unwrap_err();
    assert!(errors[0].1.to_string().contains("expected 0000"), "{}", errors[0].1);

    let dir = tempfile::tempdir().unwrap();
    let wat = dir.path().join("plain.wat");
    std::fs::write(&wat, "(module (memory (export \"memory\") 1))").unwrap();
    let mut s = spec("plain", "header-modifier", "{}");
    s.module = ModuleSource::Path { path: wat, sha256: None };
    let errors = f.host.prepare(&[s]).await.unwrap_err();
    assert!(errors[0].1.to_string().contains("not a proxy-wasm module"), "{}", errors[0].1);
}

fn misbehave(policy: FailurePolicy) -> WasmPlugin {
    let mut s = spec("bad", "misbehave", "{}");
    s.failure_policy = policy;
    s.timeout = Duration::from_millis(50);
    s.memory_limit = 8 << 20;
    s
}

/// Runs one request through a plugin with `x-misbehave: mode`.
fn run(plugins: &Plugins, mode: &str) -> (Verdict, Head) {
    let plugin = plugins.get("bad").unwrap();
    let mut ctx = plugin.start_request(info("127.0.0.1:1"));
    let mut head = request_head("/", &[("x-misbehave", mode)]);
    let verdict = ctx.on_request_headers(&mut head, true);
    if verdict != Verdict::Continue {
        return (verdict, head);
    }
    let mut resp = response_head();
    (ctx.on_response_headers(&mut resp, true), resp)
}

#[tokio::test]
async fn failures_under_fail_closed_answer_500_count_and_recycle() {
    let f = fixture(None);
    let plugins = f.prepare(&[misbehave(FailurePolicy::Closed)]).await;
    for mode in ["trap", "loop", "oom"] {
        match run(&plugins, mode).0 {
            Verdict::Respond(r) => assert_eq!(r.status, 500, "{mode}"),
            other => panic!("{mode}: {other:?}"),
        }
        // The next request gets a fresh instance and is served.
        assert_eq!(run(&plugins, "none").0, Verdict::Continue, "after {mode}");
    }
    let metrics = f.metrics();
    for kind in ["trap", "timeout", "memory"] {
        let line = format!(r#"wasm_failures_total{{plugin="bad",kind="{kind}"}} 1"#);
        assert!(metrics.contains(&line), "{line} missing in\n{metrics}");
    }
    assert!(metrics.contains(r#"wasm_instances_recycled_total{plugin="bad"} 3"#), "{metrics}");
}

#[tokio::test]
async fn failures_under_fail_open_skip_the_filter() {
    let f = fixture(None);
    let plugins = f.prepare(&[misbehave(FailurePolicy::Open)]).await;
    for mode in ["trap", "loop", "oom"] {
        assert_eq!(run(&plugins, mode).0, Verdict::Continue, "{mode}");
    }
    assert_eq!(run(&plugins, "none").0, Verdict::Continue);
}

#[tokio::test]
async fn unimplemented_host_functions_answer_unimplemented_without_trapping() {
    let f = fixture(None);
    let plugins = f.prepare(&[misbehave(FailurePolicy::Closed)]).await;
    let (verdict, resp) = run(&plugins, "unimplemented");
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(resp.headers["x-unimplemented-status"], "12");
    let metrics = f.metrics();
    assert!(
        metrics.contains(r#"wasm_unimplemented_calls_total{plugin="bad",function="env.proxy_register_shared_queue"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn compiled_modules_are_cached_on_disk_and_unchanged_plugins_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("wasm");
    let specs = [spec("hm", "header-modifier", "{}")];
    let first = fixture(Some(cache.clone()));
    let a = first.prepare(&specs).await;
    let again = first.prepare(&specs).await;
    assert!(
        Arc::ptr_eq(a.get("hm").unwrap(), again.get("hm").unwrap()),
        "unchanged plugin rebuilt"
    );
    assert!(first.metrics().contains(r#"wasm_modules_loaded_total{source="compiled"} 1"#));
    let files: Vec<_> =
        std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let second = fixture(Some(cache.clone()));
    second.prepare(&specs).await;
    assert!(
        second.metrics().contains(r#"wasm_modules_loaded_total{source="disk"} 1"#),
        "{}",
        second.metrics()
    );

    // A corrupt cache file is recompiled, never loaded.
    let file = std::fs::read_dir(&cache).unwrap().flatten().next().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let third = fixture(Some(cache));
    third.prepare(&specs).await;
    assert!(
        third.metrics().contains(r#"wasm_modules_loaded_total{source="compiled"} 1"#),
        "{}",
        third.metrics()
    );
}
