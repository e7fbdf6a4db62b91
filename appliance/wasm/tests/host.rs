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

    /// The value of the sample whose name and labels end with `series` (0 when there is none).
    fn count(&self, series: &str) -> u64 {
        let metrics = self.metrics();
        let sample = metrics.lines().filter_map(|l| l.rsplit_once(' '));
        let value = sample.into_iter().find(|(name, _)| name.ends_with(series));
        value.and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
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

// The root context's HTTP calls (from `proxy_on_tick` and `proxy_on_configure`), against a
// real server on loopback.

/// An HTTP/1.1 server on loopback answering every request with the current status and body
/// (and `x-list: served`), one request per connection; keeps every request head it read.
struct ListServer {
    addr: SocketAddr,
    answer: Arc<parking_lot::Mutex<(u16, String)>>,
    heads: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl ListServer {
    async fn start(status: u16, body: &str) -> Self {
        Self::start_with(status, body, None).await
    }

    /// A server that speaks TLS with `acceptor`'s certificate.
    async fn start_with(
        status: u16,
        body: &str,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(parking_lot::Mutex::new((status, body.to_owned())));
        let heads: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        let (a, h) = (answer.clone(), heads.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, heads, acceptor) = (a.clone(), h.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => Self::answer(stream, answer, heads).await,
                        Some(acceptor) => {
                            // A client that does not trust the certificate ends the handshake.
                            if let Ok(tls) = acceptor.accept(stream).await {
                                Self::answer(tls, answer, heads).await;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, answer, heads }
    }

    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut stream: S,
        answer: Arc<parking_lot::Mutex<(u16, String)>>,
        heads: Arc<parking_lot::Mutex<Vec<String>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        heads.lock().push(String::from_utf8_lossy(&head).into_owned());
        let (status, body) = answer.lock().clone();
        let reply = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nx-list: served\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn serve(&self, status: u16, body: &str) {
        *self.answer.lock() = (status, body.to_owned());
    }

    fn requests(&self) -> usize {
        self.heads.lock().len()
    }
}

/// A loopback address nothing listens on.
fn closed_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn upstream(name: &str, addr: SocketAddr) -> gatehouse_model::WasmUpstream {
    gatehouse_model::WasmUpstream {
        name: name.into(),
        backend: gatehouse_model::Backend::Endpoints(gatehouse_model::BackendEndpoints {
            name: format!("{name}-backend"),
            addrs: vec![addr],
            tls: None,
            protocol: Default::default(),
        }),
        tls: None,
    }
}

/// `misbehave` whose root context calls `srv` as `root_call` says.
fn root_caller(root_call: &str, addr: SocketAddr) -> WasmPlugin {
    let mut s = misbehave(FailurePolicy::Closed);
    s.config = format!(r#"{{"root_call": {root_call}}}"#);
    s.upstreams = vec![upstream("srv", addr)];
    s
}

/// What the root context of the instance that served one request had seen
/// (`x-root-id`, `x-root-answers`, `x-root-answer`, `x-root-dispatch`).
fn root_seen(plugins: &Plugins) -> [String; 4] {
    let (verdict, resp) = run(plugins, "none");
    assert_eq!(verdict, Verdict::Continue);
    ["x-root-id", "x-root-answers", "x-root-answer", "x-root-dispatch"]
        .map(|h| resp.headers[h].to_str().unwrap().to_owned())
}

/// Polls `done` every 10 ms for up to 10 s (the runtime keeps running the calls meanwhile).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test]
async fn a_call_from_proxy_on_tick_is_answered_to_the_root_context_of_each_instance() {
    let server = ListServer::start(200, "list v1").await;
    let f = fixture(None);
    let plugins =
        f.prepare(&[root_caller(r#"{"upstream": "srv", "from": "tick"}"#, server.addr)]).await;
    // Both instances (requests alternate between them) get their own answers, read with the
    // call-answer header maps and buffer.
    let mut answered = std::collections::HashMap::new();
    eventually("both instances answered", || {
        let [id, answers, last, dispatch] = root_seen(&plugins);
        // Nothing dispatched before the instance's first tick.
        assert!(["", "ok"].contains(&dispatch.as_str()), "{dispatch}");
        if answers != "0" {
            assert_eq!(last, "200 served list v1");
            answered.insert(id, answers);
        }
        answered.len() == 2
    })
    .await;
    let head = server.heads.lock()[0].to_lowercase();
    assert!(head.starts_with("get /root-call http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: srv\r\n"), "{head}");
    // Ticks go on calling: a new answer reaches the root contexts.
    server.serve(200, "list v2");
    eventually("the new answer", || root_seen(&plugins)[2] == "200 served list v2").await;
    let metrics = f.metrics();
    assert!(metrics.contains(r#"wasm_http_calls_total{plugin="bad",outcome="ok"}"#), "{metrics}");
    assert!(!metrics.contains(r#"wasm_failures_total{plugin="bad""#), "{metrics}");
}

#[tokio::test]
async fn a_failed_call_from_proxy_on_configure_is_an_empty_answer_not_a_trap() {
    let f = fixture(None);
    let refused = root_caller(r#"{"upstream": "srv", "from": "configure"}"#, closed_addr());
    let mut unnamed = root_caller(r#"{"upstream": "nope", "from": "configure"}"#, closed_addr());
    unnamed.name = "unnamed".into();
    let plugins = f.prepare(&[refused, unnamed]).await;
    // Made once the plugin was prepared, answered to the instance that made it.
    eventually("the failed call answered", || {
        let [_, answers, last, dispatch] = root_seen(&plugins);
        assert_eq!(dispatch, "ok");
        answers == "1" && last == "failed"
    })
    .await;
    // An upstream the plugin was not given is refused at dispatch, as from an HTTP context.
    let plugin = plugins.get("unnamed").unwrap();
    let mut ctx = plugin.start_request(info("127.0.0.1:1"));
    assert_eq!(ctx.on_request_headers(&mut request_head("/", &[]), true), Verdict::Continue);
    let mut resp = response_head();
    assert_eq!(ctx.on_response_headers(&mut resp, true), Verdict::Continue);
    assert_eq!(resp.headers["x-root-dispatch"], "BadArgument");
    let metrics = f.metrics();
    assert!(
        metrics.contains(r#"wasm_http_calls_total{plugin="bad",outcome="failed"}"#),
        "{metrics}"
    );
    assert!(!metrics.contains("wasm_failures_total"), "{metrics}");
}

#[tokio::test]
async fn a_trap_in_the_roots_call_response_recycles_the_instance_and_the_plugin_serves_on() {
    let server = ListServer::start(200, "list").await;
    let f = fixture(None);
    let plugins = f
        .prepare(&[root_caller(
            r#"{"upstream": "srv", "from": "tick", "trap": true}"#,
            server.addr,
        )])
        .await;
    let recycled = || f.count(r#"wasm_instances_recycled_total{plugin="bad"}"#);
    eventually("the first recycle", || recycled() >= 1).await;
    assert!(f.count(r#"wasm_failures_total{plugin="bad",kind="trap"}"#) >= 1);
    // Requests are served (each on a fresh instance when needed), and the ticker goes on:
    // the new instances call, trap and are recycled again.
    let plugin = plugins.get("bad").unwrap();
    eventually("more recycles while serving", || {
        let mut ctx = plugin.start_request(info("127.0.0.1:1"));
        let mut head = request_head("/", &[("x-misbehave", "none")]);
        assert_eq!(ctx.on_request_headers(&mut head, true), Verdict::Continue);
        recycled() >= 3
    })
    .await;
}

#[tokio::test]
async fn a_tick_that_never_returns_is_stopped_at_its_deadline_and_ticks_go_on() {
    let f = fixture(None);
    let mut s = misbehave(FailurePolicy::Closed);
    s.config = r#"{"tick": "loop"}"#.into();
    let plugins = f.prepare(&[s]).await;
    let timeouts = || f.count(r#"wasm_failures_total{plugin="bad",kind="timeout"}"#);
    eventually("the looping tick stopped", || timeouts() >= 1).await;
    // A request starts a new instance, whose tick loops and is stopped too.
    eventually("the next looping tick stopped", || {
        assert_eq!(run(&plugins, "none").0, Verdict::Continue);
        timeouts() >= 2
    })
    .await;
}

#[tokio::test]
async fn ip_allow_follows_its_remote_list_and_keeps_it_when_a_fetch_is_bad() {
    let server = ListServer::start(200, "# the office\n10.0.0.0/8  # all of it\n\n").await;
    let f = fixture(None);
    let mut s = spec(
        "allow",
        "ip-allow",
        r#"{"remote": {"upstream": "lists", "path": "/allow.txt", "refresh_seconds": 1}}"#,
    );
    s.upstreams = vec![upstream("lists", server.addr)];
    // Its first fetch is dispatched from proxy_on_configure: an upstream the plugin was not
    // given fails the configuration.
    let mut unnamed = s.clone();
    unnamed.upstreams.clear();
    let errors = f.host.prepare(&[unnamed]).await.unwrap_err();
    assert!(errors[0].1.to_string().contains("rejected its configuration"), "{}", errors[0].1);
    let plugins = f.prepare(std::slice::from_ref(&s)).await;
    let plugin = plugins.get("allow").unwrap();
    let allowed = |source: &str| {
        let mut ctx = plugin.start_request(info(source));
        ctx.on_request_headers(&mut request_head("/", &[]), true) == Verdict::Continue
    };
    // Four requests in a row cover both instances.
    let settled = |ten: bool, lan: bool| {
        (0..4).all(|_| allowed("10.1.1.1:1") == ten && allowed("192.168.1.1:1") == lan)
    };
    eventually("the first list", || settled(true, false)).await;
    let head = server.heads.lock()[0].to_lowercase();
    assert!(head.starts_with("get /allow.txt http/1.1\r\n"), "{head}");

    // A bad line, or an error status, keeps the list in use. An instance fetches again only
    // once its last fetch was answered: four fetches mean some were answered.
    for (status, body) in [(200, "192.168.0.0/16\nnot-a-network\n"), (404, "192.168.0.0/16\n")] {
        server.serve(status, body);
        let seen = server.requests();
        eventually("four more fetches", || {
            assert!(settled(true, false), "{status} {body:?} was taken");
            server.requests() >= seen + 4
        })
        .await;
    }

    server.serve(200, "192.168.0.0/16\n");
    eventually("the new list", || settled(false, true)).await;
    let metrics = f.metrics();
    assert!(metrics.contains(r#"wasm_http_calls_total{plugin="allow",outcome="ok"}"#), "{metrics}");
    assert!(!metrics.contains("wasm_failures_total"), "{metrics}");

    // The last good list is in the plugin's shared data: the plugin rebuilt by a reload (a
    // changed status) uses it from its first request, though its own fetches now fail.
    server.serve(404, "");
    let mut changed = s.clone();
    changed.config = changed.config.replacen('{', r#"{"status": 451, "#, 1);
    let reloaded = f.prepare(&[changed]).await;
    let plugin = reloaded.get("allow").unwrap();
    for _ in 0..4 {
        let mut ctx = plugin.start_request(info("192.168.1.1:1"));
        assert_eq!(ctx.on_request_headers(&mut request_head("/", &[]), true), Verdict::Continue);
        let mut ctx = plugin.start_request(info("10.1.1.1:1"));
        match ctx.on_request_headers(&mut request_head("/", &[]), true) {
            Verdict::Respond(r) => assert_eq!(r.status, 451),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_call_from_proxy_on_log_is_refused_even_after_a_request_that_ended_in_its_headers() {
    let server = ListServer::start(200, "never").await;
    let f = fixture(None);
    let mut s = misbehave(FailurePolicy::Closed);
    s.upstreams = vec![upstream("srv", server.addr)];
    let plugins = f.prepare(&[s]).await;
    let plugin = plugins.get("bad").unwrap();
    // Requests that end in their request-headers phase (where calls are allowed), on every
    // instance: `proxy_on_log` then calls.
    for _ in 0..4 {
        let mut ctx = plugin.start_request(info("127.0.0.1:1"));
        let mut head = request_head("/", &[("x-misbehave", "call-on-log")]);
        assert_eq!(ctx.on_request_headers(&mut head, true), Verdict::Continue);
    }
    for _ in 0..2 {
        let (verdict, resp) = run(&plugins, "none");
        assert_eq!(verdict, Verdict::Continue);
        assert_eq!(resp.headers["x-root-dispatch"], "on_log: InternalFailure");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.requests(), 0);
    assert!(!f.metrics().contains("wasm_failures_total"));
}

/// A test CA, its certificate in a PEM file.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, cert.pem()).unwrap();
    TestCa { issuer: Issuer::new(params, key), file, _dir: dir }
}

/// A TLS acceptor whose certificate, for `name`, `ca` signed.
fn acceptor(ca: &TestCa, name: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let leaf = params.signed_by(&key, &ca.issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// `misbehave` whose root context calls `srv`, an ip:port upstream over TLS, as `root_call` says.
fn tls_caller(root_call: &str, addr: SocketAddr, server_name: &str, ca: &TestCa) -> WasmPlugin {
    let mut s = root_caller(root_call, addr);
    s.upstreams[0].tls = Some(gatehouse_model::UpstreamTls {
        server_name: server_name.into(),
        ca_file: Some(ca.file.clone()),
    });
    s
}

#[tokio::test]
async fn a_call_to_a_tls_upstream_verifies_its_certificate_and_gets_the_answer() {
    let ca = test_ca();
    let server =
        ListServer::start_with(200, "secret list", Some(acceptor(&ca, "authz.test"))).await;
    let f = fixture(None);
    let call = r#"{"upstream": "srv", "from": "tick"}"#;
    let plugins = f.prepare(&[tls_caller(call, server.addr, "authz.test", &ca)]).await;
    eventually("the answer over TLS", || root_seen(&plugins)[2] == "200 served secret list").await;
    let head = server.heads.lock()[0].to_lowercase();
    assert!(head.starts_with("get /root-call http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nhost: srv\r\n"), "{head}");
    assert!(f.count(r#"wasm_http_calls_total{plugin="bad",outcome="ok"}"#) >= 1);
}

#[tokio::test]
async fn a_tls_upstream_whose_certificate_does_not_verify_is_a_failed_call_not_a_trap() {
    let ca = test_ca();
    let other_ca = test_ca();
    let call = r#"{"upstream": "srv", "from": "configure"}"#;
    // A certificate for another name; one from a CA the upstream does not trust.
    let wrong_name = ListServer::start_with(200, "x", Some(acceptor(&ca, "other.test"))).await;
    let untrusted = ListServer::start_with(200, "x", Some(acceptor(&other_ca, "authz.test"))).await;
    for server in [&wrong_name, &untrusted] {
        let f = fixture(None);
        let plugins = f.prepare(&[tls_caller(call, server.addr, "authz.test", &ca)]).await;
        eventually("the failed call answered", || {
            let [_, answers, last, dispatch] = root_seen(&plugins);
            assert_eq!(dispatch, "ok");
            answers == "1" && last == "failed"
        })
        .await;
        assert_eq!(server.requests(), 0);
        assert!(f.count(r#"wasm_http_calls_total{plugin="bad",outcome="failed"}"#) >= 1);
        assert!(!f.metrics().contains("wasm_failures_total"));
    }
}

#[tokio::test]
async fn unusable_tls_settings_fail_prepare_naming_the_upstream() {
    let ca = test_ca();
    let f = fixture(None);
    let call = r#"{"upstream": "srv", "from": "configure"}"#;
    let mut missing = tls_caller(call, closed_addr(), "authz.test", &ca);
    missing.upstreams[0].tls.as_mut().unwrap().ca_file = Some(ca.file.with_file_name("nope.pem"));
    let bad_name = tls_caller(call, closed_addr(), "not a name!", &ca);
    let not_pem = ca.file.with_file_name("empty.pem");
    std::fs::write(&not_pem, "no certificates here\n").unwrap();
    let mut empty = tls_caller(call, closed_addr(), "authz.test", &ca);
    empty.upstreams[0].tls.as_mut().unwrap().ca_file = Some(not_pem);
    for (spec, why) in [
        (missing, "cannot read CA file"),
        (bad_name, "is not a valid TLS server name"),
        (empty, "holds no usable CA certificate"),
    ] {
        let errors = f.host.prepare(&[spec]).await.unwrap_err();
        assert_eq!(errors[0].0, "bad");
        let message = errors[0].1.to_string();
        assert!(message.starts_with(r#"upstream "srv": "#), "{message}");
        assert!(message.contains(why), "{message}");
    }
}
