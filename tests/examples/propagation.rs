//! Propagation benchmark driver (run by `bench/propagation`, not a test): the real `gatehouse`
//! binary (`GATEHOUSE_BIN`, a release build) against the fake API server with
//! `PROPAGATION_ROUTES` HTTPRoutes (default 5,000), then `PROPAGATION_CHANGES` (default 200)
//! watch events that each move one route to the other backend. For each change: the time from
//! the event to the first request on that route answered by the new backend. Load runs on
//! other routes throughout; every answer that is not a 200 counts as failed. The changes
//! start once the appliance's first status write-back is over (see [`settle`]).
//!
//! With `GATEHOUSE_TEST_LOG=info,propagation=trace` the appliance logs a timestamp per hop
//! (watch event read, state published, run loop woken, reload started, table swapped) and
//! the driver prints where the time went: fake server write → watch event → published →
//! woken → reload → swap → the first request answered by the new backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gatehouse_tests::{Appliance, Client, EchoBackend, FakeKube, SentEvent, free_port};
use serde_json::{Value, json};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Route `i` to `service`. The fake API server bumps `metadata.generation` on each spec change
/// as a real one does: the appliance writes it back as `observedGeneration`, so each change
/// costs a status write (and its watch echo), as it does against a real cluster.
fn route(i: usize, service: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
        "metadata": {"name": format!("r{i}"), "namespace": "default",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "parentRefs": [{"name": "web"}],
            "hostnames": [format!("r{i}.example.test")],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/r{i}")}}],
                "backendRefs": [{"name": service, "port": 80}]
            }]
        }
    })
}

fn service(backend: &EchoBackend) -> [Value; 2] {
    let name = &backend.name;
    [
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"ports": [{"port": 80, "targetPort": backend.port()}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{name}-1"), "namespace": "default",
                            "labels": {"kubernetes.io/service-name": name}},
               "addressType": "IPv4",
               "ports": [{"name": "", "port": backend.port()}],
               "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Waits until the appliance's first status write-back (one PATCH per route after a start)
/// is over: "5,000 routes loaded" is the steady state, not a start-up whose thousands of
/// status writes (and their watch echoes) share the CPU and the watch streams with the
/// changes measured. `PROPAGATION_SETTLE=0` measures during it instead.
async fn settle(kube: &FakeKube) {
    let started = Instant::now();
    let mut last = (kube.patch_count().await, Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) && started.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count = kube.patch_count().await;
        if count != last.0 {
            last = (count, Instant::now());
        }
    }
    println!(
        "status write-back settled after {:.2} s ({} writes)",
        started.elapsed().as_secs_f64(),
        last.0
    );
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::main]
async fn main() {
    let routes = env_usize("PROPAGATION_ROUTES", 5000);
    let changes = env_usize("PROPAGATION_CHANGES", 200);
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();

    let kube = FakeKube::start().await;
    kube.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .await;
    kube.apply(json!({"apiVersion": GATEWAY_API, "kind": "GatewayClass",
                      "metadata": {"name": "gatehouse"},
                      "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}))
        .await;
    kube.apply(json!({"apiVersion": GATEWAY_API, "kind": "Gateway",
                      "metadata": {"name": "web", "namespace": "default", "generation": 1},
                      "spec": {"gatewayClassName": "gatehouse",
                               "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                               "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}))
        .await;
    for object in service(&one).into_iter().chain(service(&two)) {
        kube.apply(object).await;
    }
    for i in 0..routes {
        kube.apply(route(i, "one")).await;
    }

    let config =
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n";
    let started = Instant::now();
    let appliance = Appliance::start_ready(config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let base = format!("http://127.0.0.1:{port}");
    let last = format!("r{}.example.test", routes - 1);
    loop {
        let reply = Client::http1().get_host(&format!("{base}/r{}", routes - 1), &last).await;
        if reply.is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never served:\n{}",
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let initial = started.elapsed();
    println!("routes {routes}: first serving after {:.2} s", initial.as_secs_f64());
    let pid = appliance.pid();
    println!("rss after load: {:.1} MiB", rss_mib(pid));
    if env_usize("PROPAGATION_SETTLE", 1) == 1 {
        settle(&kube).await;
    }

    // Background load on routes that do not change.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, sent, failed, base) = (stop.clone(), sent.clone(), failed.clone(), base.clone());
        tokio::spawn(async move {
            let client = Client::http1();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let n = changes + (i % (routes - changes).max(1));
                let host = format!("r{n}.example.test");
                let reply = client.get_host(&format!("{base}/r{n}"), &host).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if !reply.is_ok_and(|r| r.status == 200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };

    let client = Client::http1();
    let mut latencies = Vec::with_capacity(changes);
    let mut traced = Vec::with_capacity(changes);
    let _ = kube.sent_events().await;
    for i in 0..changes {
        let host = format!("r{i}.example.test");
        let url = format!("{base}/r{i}");
        let changed_at = Instant::now();
        let applied = SystemTime::now();
        let rv = kube.apply_versioned(route(i, "two")).await;
        let mut polls = 0;
        let (asked, answered) = loop {
            let asked = SystemTime::now();
            let reply = client.get_host(&url, &host).await;
            sent.fetch_add(1, Ordering::Relaxed);
            polls += 1;
            match reply {
                Ok(r) if r.status == 200 && r.backend() == Some("two") => {
                    break (asked, SystemTime::now());
                }
                Ok(r) if r.status == 200 => {}
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            assert!(changed_at.elapsed() < Duration::from_secs(30), "change {i} never followed");
        };
        latencies.push(changed_at.elapsed().as_secs_f64() * 1000.0);
        traced.push(Change { name: format!("r{i}"), rv, applied, asked, answered, polls });
    }
    let sent_events = kube.sent_events().await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    latencies.sort_by(f64::total_cmp);
    let rss = rss_mib(pid);
    // Where the time went, from the appliance's own reload histograms.
    if let Ok(metrics) = client.get(&appliance.admin_url("/metrics")).await {
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        for phase in ["load", "compile", "apply", "status"] {
            let sum = value(&format!(
                "gatehouse_config_reload_phase_duration_seconds_sum{{phase=\"{phase}\"}}"
            ));
            let count = value(&format!(
                "gatehouse_config_reload_phase_duration_seconds_count{{phase=\"{phase}\"}}"
            ));
            if count > 0.0 {
                println!(
                    "reload phase {phase}: {:.2} ms mean over {count} reloads",
                    sum / count * 1000.0
                );
            }
        }
    }
    hops(&traced, &sent_events, &appliance.logs());
    println!(
        "{changes} changes over {routes} routes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} requests, {} failed; rss {rss:.1} MiB",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0),
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!("RESULT p50_ms {:.3}", percentile(&latencies, 50.0));
    println!("RESULT p99_ms {:.3}", percentile(&latencies, 99.0));
    println!("RESULT failed_requests {}", failed.load(Ordering::Relaxed));
    println!("RESULT rss_mib {rss:.1}");
    println!("RESULT initial_sync_seconds {:.2}", initial.as_secs_f64());
}

/// One change as the driver saw it.
struct Change {
    name: String,
    /// The resourceVersion the fake API server gave it.
    rv: u64,
    /// Just before the object was written.
    applied: SystemTime,
    /// The request answered by the new backend: sent, answered.
    asked: SystemTime,
    answered: SystemTime,
    /// Requests it took (the last one answered by the new backend).
    polls: usize,
}

/// One hop of the appliance's propagation trace (`target: propagation`).
struct Hop {
    at: SystemTime,
    hop: String,
    name: Option<String>,
    rv: Option<u64>,
}

fn appliance_hops(logs: &str) -> Vec<Hop> {
    logs.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "propagation")
        .filter_map(|line| {
            let at: jiff::Timestamp = line["timestamp"].as_str()?.parse().ok()?;
            let fields = &line["fields"];
            Some(Hop {
                at: SystemTime::from(at),
                hop: fields["hop"].as_str()?.to_owned(),
                name: fields["name"].as_str().map(str::to_owned),
                rv: fields["rv"].as_str().and_then(|rv| rv.parse().ok()),
            })
        })
        .collect()
}

/// Prints where each change's time went, hop by hop (p50 / p99 / max over the changes), from
/// the fake server's send times, the appliance's trace and the driver's own requests. Prints
/// nothing without the appliance's trace.
fn hops(changes: &[Change], sent: &[SentEvent], logs: &str) {
    let trace = appliance_hops(logs);
    if trace.is_empty() {
        println!("(no propagation trace: GATEHOUSE_TEST_LOG=info,propagation=trace adds one)");
        return;
    }
    let ours: HashMap<u64, &Change> = changes.iter().map(|c| (c.rv, c)).collect();
    let routes = "gateway.networking.k8s.io/httproutes";
    let mut sent_at: HashMap<u64, SystemTime> = HashMap::new();
    let mut echoes = 0;
    for event in sent.iter().filter(|e| e.resource == routes) {
        if ours.contains_key(&event.rv) {
            sent_at.entry(event.rv).or_insert(event.at);
        } else {
            echoes += 1;
        }
    }
    let first = |hop: &str, after: SystemTime| {
        trace.iter().find(|h| h.hop == hop && h.at >= after).map(|h| h.at)
    };
    let of = |hop: &str, c: &Change| {
        trace
            .iter()
            .find(|h| h.hop == hop && h.rv == Some(c.rv) && h.name.as_deref() == Some(&c.name))
            .map(|h| h.at)
    };
    const NAMES: [&str; 8] = [
        "event written → sent by the fake server",
        "sent → watch event decoded (appliance)",
        "watch event → state published",
        "published → run loop woken",
        "woken → reload started",
        "reload started → table swapped",
        "swapped → answering request sent",
        "request sent → answered by the new backend",
    ];
    let mut deltas: Vec<Vec<f64>> = vec![Vec::new(); NAMES.len()];
    let mut complete = 0;
    let ms = |a: SystemTime, b: SystemTime| match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    };
    for c in changes {
        let Some(sent) = sent_at.get(&c.rv).copied() else { continue };
        let Some(event) = of("watch_event", c) else { continue };
        let Some(published) = of("published", c) else { continue };
        let Some(woke) = first("woke", published) else { continue };
        let Some(started) = first("reload_start", woke) else { continue };
        let Some(swapped) = first("swapped", started) else { continue };
        let points =
            [c.applied, sent, event, published, woke, started, swapped, c.asked, c.answered];
        for (i, pair) in points.windows(2).enumerate() {
            deltas[i].push(ms(pair[0], pair[1]));
        }
        complete += 1;
    }
    println!("hops of {complete} of {} changes (ms: p50 / p99 / max):", changes.len());
    for (name, mut values) in NAMES.iter().zip(deltas) {
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        println!(
            "  {name:<44} {:>8.3} {:>8.3} {:>8.3}",
            percentile(&values, 50.0),
            percentile(&values, 99.0),
            values.last().copied().unwrap_or(0.0)
        );
    }
    let mut polls: Vec<f64> = changes.iter().map(|c| c.polls as f64).collect();
    polls.sort_by(f64::total_cmp);
    let written = trace.iter().filter(|h| h.hop == "status_written").count();
    let reloads = trace.iter().filter(|h| h.hop == "reload_start").count();
    println!(
        "  requests per change p50 {:.0}, max {:.0}; reloads {reloads}; status writes {written}; \
         other HTTPRoute watch events sent meanwhile (status echoes) {echoes}",
        percentile(&polls, 50.0),
        polls.last().copied().unwrap_or(0.0),
    );
}
