//! Benchmark body for `bench/acme`: time from config applied to certificate served.
//!
//! Per round: fresh bind9 + pebble (`PEBBLE_VA_NOSLEEP=1`, no nonce rejection) and a fresh
//! appliance serving plain HTTP; then the config gains two ACME listeners (`www.example.test`,
//! `*.example.test`) and the clock runs until both answer HTTPS with pebble-issued
//! certificates. The phases come from the appliance's "ACME certificate issued" log lines.

use std::time::{Duration, Instant};

use gatehouse_tests::{
    Appliance, Bind9, Client, EchoBackend, Pebble, PebbleOptions, free_port, pebble_issuer_toml,
};

const PHASES: [&str; 6] =
    ["account_ms", "order_ms", "dns_publish_ms", "propagation_ms", "validation_ms", "finalize_ms"];

fn config(pebble: &Pebble, bind: &Bind9, port: u16, echo: u16, acme: bool) -> String {
    let listeners = if acme {
        format!(
            r#"
  [[gateways.listeners]]
  name = "www"
  port = {port}
  protocol = "HTTPS"
  hostname = "www.example.test"
  tls = {{ acme = {{ issuer = "pebble" }} }}
  [[gateways.listeners]]
  name = "wildcard"
  port = {port}
  protocol = "HTTPS"
  hostname = "*.example.test"
  tls = {{ acme = {{ issuer = "pebble" }} }}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
{issuer}[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "plain"
  port = {plain}
  protocol = "HTTP"{listeners}
[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{echo}" }}]
"#,
        issuer = pebble_issuer_toml(pebble, bind, &bind.secret, 20),
        plain = free_port(),
    )
}

async fn served(root: &str, port: u16, host: &str) -> bool {
    let client = Client::tls(root, &[], Some(host));
    client
        .get_host(&format!("https://127.0.0.1:{port}/"), host)
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Sums each phase over the "ACME certificate issued" lines of the log (two certificates).
fn phases(logs: &str) -> Vec<f64> {
    let mut sums = vec![0.0; PHASES.len()];
    for line in logs.lines().filter(|l| l.contains("ACME certificate issued")) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        for (i, phase) in PHASES.iter().enumerate() {
            sums[i] += v["fields"][phase].as_f64().unwrap_or(0.0);
        }
    }
    sums
}

#[tokio::main]
async fn main() {
    let rounds: usize =
        std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut totals = Vec::new();
    let mut phase_sums = vec![0.0; PHASES.len()];
    for round in 0..rounds {
        let bind = Bind9::start(&["www.example.test", "example.test"], "");
        let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
        let echo = EchoBackend::start("echo").await;
        let port = free_port();
        let appliance =
            Appliance::start_ready(&config(&pebble, &bind, port, echo.port(), false), &[]).await;
        let root = pebble.issuing_root_pem().await;
        let generation = appliance.status().await["generation"].as_u64().unwrap_or(0);
        let text = config(&pebble, &bind, port, echo.port(), true)
            .replace("{admin}", &appliance.admin.to_string());
        let started = Instant::now();
        appliance.write("gatehouse.toml", &text);
        appliance.wait_generation(generation).await;
        let deadline = started + Duration::from_secs(30);
        while !(served(&root, port, "www.example.test").await
            && served(&root, port, "other.example.test").await)
        {
            assert!(Instant::now() < deadline, "not served in 30 s:\n{}", appliance.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let total = started.elapsed().as_secs_f64();
        let p = phases(&appliance.logs());
        println!(
            "round {round}: config applied -> both certificates served in {total:.3} s \
             (phases summed over the two orders, ms: {})",
            PHASES
                .iter()
                .zip(&p)
                .map(|(n, v)| format!("{}={v:.0}", n.trim_end_matches("_ms")))
                .collect::<Vec<_>>()
                .join(" ")
        );
        totals.push(total);
        for (s, v) in phase_sums.iter_mut().zip(p) {
            *s += v;
        }
    }
    totals.sort_by(f64::total_cmp);
    let median = totals[totals.len() / 2];
    println!("anchor: cert-manager waits a fixed ~60 s for DNS propagation before validation");
    println!("RESULT issuance_seconds {median:.3}");
    for (name, sum) in PHASES.iter().zip(phase_sums) {
        println!(
            "RESULT {}_seconds {:.3}",
            name.trim_end_matches("_ms"),
            sum / 1e3 / rounds as f64
        );
    }
}
