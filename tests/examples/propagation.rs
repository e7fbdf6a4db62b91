//! Propagation benchmark driver (run by `bench/propagation`, not a test): the real `gatehouse`
//! binary (`GATEHOUSE_BIN`, a release build) against the fake API server with
//! `PROPAGATION_ROUTES` HTTPRoutes (default 5,000), then `PROPAGATION_CHANGES` (default 200)
//! watch events that each move one route to the other backend. For each change: the time from
//! the event to the first request on that route answered by the new backend. Load runs on
//! other routes throughout; every answer that is not a 200 counts as failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::{Appliance, Client, EchoBackend, FakeKube, free_port};
use serde_json::{Value, json};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

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
    for i in 0..changes {
        let host = format!("r{i}.example.test");
        let url = format!("{base}/r{i}");
        let changed_at = Instant::now();
        kube.apply(route(i, "two")).await;
        loop {
            let reply = client.get_host(&url, &host).await;
            sent.fetch_add(1, Ordering::Relaxed);
            match reply {
                Ok(r) if r.status == 200 && r.backend() == Some("two") => break,
                Ok(r) if r.status == 200 => {}
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            assert!(changed_at.elapsed() < Duration::from_secs(30), "change {i} never followed");
        }
        latencies.push(changed_at.elapsed().as_secs_f64() * 1000.0);
    }
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
