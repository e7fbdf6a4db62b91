//! The per-request cost of the WASM host: one warm instance of the shipped `header-modifier`
//! plugin, the whole lifecycle of one request through the API the proxy uses (context create,
//! request headers, response headers, one response body chunk, end), no proxy around it.
//!
//! `cargo bench -p gatehouse-wasm --bench request` runs it under Criterion. With
//! `GATEHOUSE_BENCH_REQUESTS=N` it instead runs N requests and exits, for
//! `valgrind --tool=callgrind`: each phase is its own non-inlined function, so
//! `callgrind_annotate --inclusive=yes` gives instructions per phase (divide by N). The module
//! comes from `make plugins` (`GATEHOUSE_PLUGINS_DIR`, else `$CARGO_TARGET_DIR/plugins/...`);
//! without it the benchmark says so and does nothing. `GATEHOUSE_BENCH_CONFIG` sets the
//! plugin's configuration (JSON).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark set-up")]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use gatehouse_model::{FailurePolicy, ModuleSource, WasmPlugin};
use gatehouse_wasm::{Head, Host, HostOptions, HttpContext, Plugin, RequestInfo, Verdict};

/// The edit bench/wasm measures through the proxy; `GATEHOUSE_BENCH_CONFIG` replaces it (e.g.
/// `{"request": {"set": {"x-client-ip": "{source.address}"}}}` to read a property too).
const CONFIG: &str = r#"{"request": {"set": {"x-bench": "1"}}}"#;

fn module_path() -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_PLUGINS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
        target.join("plugins/wasm32-wasip1/release")
    });
    dir.join("header_modifier.wasm")
}

/// One warm instance (instances_per_plugin = 1), as a busy proxy core sees it.
fn plugin(path: PathBuf) -> Arc<Plugin> {
    let host =
        Host::unregistered(HostOptions { cache_dir: None, instances_per_plugin: 1, pool_size: 4 })
            .unwrap();
    let spec = WasmPlugin {
        name: "bench".into(),
        module: ModuleSource::Path { path, sha256: None },
        config: std::env::var("GATEHOUSE_BENCH_CONFIG").unwrap_or_else(|_| CONFIG.into()),
        failure_policy: FailurePolicy::Closed,
        timeout: Duration::from_millis(200),
        memory_limit: 16 << 20,
        upstreams: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let plugins = rt.block_on(host.prepare(&[spec])).map_err(|e| format!("{e:?}")).unwrap();
    plugins.get("bench").unwrap().clone()
}

fn info() -> RequestInfo {
    RequestInfo {
        source: "10.1.2.3:4567".parse::<SocketAddr>().unwrap(),
        destination: "127.0.0.1:8080".parse().unwrap(),
        server_name: None,
        route_name: "toml/web".into(),
        listener_name: "toml/gw/http".into(),
        protocol: "HTTP/1.1",
        tls: false,
    }
}

/// A request head as the proxy builds it from a small client request.
fn request_head() -> Head {
    let mut head = Head::request("GET", "/index.html", "example.com", "http", Default::default());
    head.headers.insert("host", "example.com".parse().unwrap());
    head.headers.insert("user-agent", "bench/1".parse().unwrap());
    head.headers.insert("accept", "*/*".parse().unwrap());
    head
}

fn response_head() -> Head {
    let mut head = Head::response("200", Default::default());
    head.headers.insert("content-type", "text/html".parse().unwrap());
    head.headers.insert("content-length", "612".parse().unwrap());
    head
}

#[inline(never)]
fn create(plugin: &Arc<Plugin>, info: &RequestInfo) -> HttpContext {
    plugin.start_request(info.clone())
}

#[inline(never)]
fn request_headers(ctx: &mut HttpContext, head: &mut Head) -> Verdict {
    ctx.on_request_headers(head, true)
}

#[inline(never)]
fn response_headers(ctx: &mut HttpContext, head: &mut Head) -> Verdict {
    ctx.on_response_headers(head, false)
}

#[inline(never)]
fn response_body(ctx: &mut HttpContext, body: &mut Bytes) -> Verdict {
    ctx.on_response_body(body, true)
}

#[inline(never)]
fn end(ctx: HttpContext) {
    drop(ctx);
}

/// One request's lifecycle; the heads are built outside (the proxy has them anyway).
fn one_request(plugin: &Arc<Plugin>, info: &RequestInfo, req: &mut Head, resp: &mut Head) {
    let mut ctx = create(plugin, info);
    let v = request_headers(&mut ctx, req);
    debug_assert_eq!(v, Verdict::Continue);
    let v = response_headers(&mut ctx, resp);
    debug_assert_eq!(v, Verdict::Continue);
    let mut body = Bytes::from_static(b"<html></html>");
    let v = response_body(&mut ctx, &mut body);
    debug_assert_eq!(v, Verdict::Continue);
    end(ctx);
    black_box((req, resp, body));
}

fn main() {
    let path = module_path();
    if !path.exists() {
        println!("skipped: {} is missing (build the plugins: make plugins)", path.display());
        return;
    }
    let plugin = plugin(path);
    let info = info();
    // The edit is checked once, so the benchmark measures a filter that works.
    let mut req = request_head();
    let mut resp = response_head();
    one_request(&plugin, &info, &mut req, &mut resp);
    assert!(req.headers.len() > 3, "the plugin did not edit the request");

    if let Some(n) = std::env::var("GATEHOUSE_BENCH_REQUESTS").ok().and_then(|n| n.parse().ok()) {
        for _ in 0..n {
            let (mut req, mut resp) = (request_head(), response_head());
            one_request(&plugin, &info, &mut req, &mut resp);
        }
        println!("ran {n} requests");
        return;
    }

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("wasm/header-modifier/request", |b| {
        b.iter_batched_ref(
            || (request_head(), response_head()),
            |(req, resp)| one_request(&plugin, &info, req, resp),
            criterion::BatchSize::SmallInput,
        )
    });
    c.final_summary();
}
