//! ACME faults end to end: the real binary, Debian's pebble behind a fault-injecting proxy,
//! bind9. Each fault shows as a clear status, is retried with backoff (honouring the CA's
//! Retry-After), keeps an existing certificate serving, and leaves no TXT record behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::{
    Appliance, Bind9, CaFault, CaRequest, Client, EchoBackend, FaultyCa, Pebble, PebbleOptions,
    acme_peers_installed, free_port, pebble_issuer_toml,
};
use serde_json::Value;

use crate::acme::{all_issued, condition, listener, wait_https};

/// One HTTPS listener for `www.example.test` certified by the issuer `pebble`, whose CA is
/// reached at `directory` (trusting `ca_roots`).
fn config(
    pebble: &Pebble,
    bind: &Bind9,
    directory: &str,
    ca_roots: &str,
    port: u16,
    echo: u16,
) -> String {
    let issuer = pebble_issuer_toml(pebble, bind, &bind.secret, 50)
        .replace(&pebble.directory_url(), directory)
        .replace(&pebble.https_ca_path.display().to_string(), ca_roots);
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"

{issuer}
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "www"
  port = {port}
  protocol = "HTTPS"
  hostname = "www.example.test"
  tls = {{ acme = {{ issuer = "pebble" }} }}

[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{echo}" }}]
"#
    )
}

fn through(proxy: &FaultyCa, pebble: &Pebble, bind: &Bind9, port: u16, echo: u16) -> String {
    config(pebble, bind, &proxy.directory_url(), &proxy.ca_path.display().to_string(), port, echo)
}

/// Polls `/status` until `pred` holds, for at most `within`.
async fn wait_for(appliance: &Appliance, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = match Client::http1().get(&appliance.admin_url("/status")).await {
            Ok(reply) => serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if pred(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status never matched in {within:?}; last: {status:#}\nlogs:\n{}",
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reason(status: &Value) -> &str {
    status["acme"][0]["last_error"]["reason"].as_str().unwrap_or_default()
}

fn no_challenge_left(bind: &Bind9) {
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), Vec::<String>::new());
}

#[tokio::test]
async fn ca_rate_limit_and_500_show_in_status_and_are_retried_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let proxy = FaultyCa::start(&pebble).await;
    // The first order is refused for 5 s; the next one fails at finalisation, after its
    // challenge record was published and validated.
    proxy.fail(CaRequest::NewOrder, CaFault::RateLimited { retry_after_secs: 5 }, 1).await;
    proxy.fail(CaRequest::Finalize, CaFault::ServerError, 1).await;
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let appliance = Appliance::start(&through(&proxy, &pebble, &bind, port, echo.port()), &[]);

    // The CA's own words reach the listener's condition.
    let limited = wait_for(&appliance, Duration::from_secs(20), |s| {
        let c = condition(listener(s, "www"), "ResolvedRefs");
        c["status"] == "False"
            && c["message"].as_str().is_some_and(|m| m.contains("too many new orders recently"))
    })
    .await;
    let entry = &limited["acme"][0];
    assert_eq!(reason(&limited), "RateLimited", "{entry}");
    assert!(
        condition(listener(&limited, "www"), "ResolvedRefs")["message"]
            .as_str()
            .is_some_and(|m| m.contains("(RateLimited)")),
        "{limited:#}"
    );
    // Retry-After (5 s) wins over the first backoff step (2 s).
    let (at, next) = (entry["last_error"]["at"].as_u64(), entry["next_attempt"].as_u64());
    let (Some(at), Some(next)) = (at, next) else { panic!("no retry planned: {entry}") };
    assert!(next >= at + 4, "Retry-After not honoured: failed at {at}, next attempt {next}");

    // The retry gets a CA 500 at finalisation: a new reason, a longer backoff.
    let failed = wait_for(&appliance, Duration::from_secs(30), |s| reason(s) == "CAError").await;
    let entry = &failed["acme"][0];
    assert!(
        entry["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("injected internal error")),
        "{entry}"
    );
    assert!(entry["failures"].as_u64() >= Some(2), "{entry}");
    no_challenge_left(&bind);

    // The faults are spent: the next attempt issues.
    let issued = wait_for(&appliance, Duration::from_secs(30), |s| {
        all_issued(s, 1) && s["acme"][0]["last_error"].is_null()
    })
    .await;
    assert_eq!(issued["acme"][0]["failures"], 0);
    assert_eq!(proxy.injected().await, 2);
    wait_https(&pebble.issuing_root_pem().await, port, "www.example.test", &appliance).await;
    no_challenge_left(&bind);
}

#[tokio::test]
async fn ca_errors_at_renewal_keep_the_old_certificate_serving_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test"], "");
    // Renewal due at about 2/3 of 30 s.
    let options = PebbleOptions { validity_seconds: Some(30), ..Default::default() };
    let pebble = Pebble::start(&bind.addr(), &options);
    let proxy = FaultyCa::start(&pebble).await;
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let appliance = Appliance::start(&through(&proxy, &pebble, &bind, port, echo.port()), &[]);
    let first = wait_for(&appliance, Duration::from_secs(20), |s| all_issued(s, 1)).await;
    let first_expiry = first["acme"][0]["not_after"].as_u64().unwrap_or(0);
    let root = pebble.issuing_root_pem().await;
    wait_https(&root, port, "www.example.test", &appliance).await;

    // The renewal's first order meets a CA 500.
    proxy.fail(CaRequest::NewOrder, CaFault::ServerError, 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, root) = (stop.clone(), ok.clone(), failed.clone(), root.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let client = Client::tls(&root, &[], Some("www.example.test"));
                let url = format!("https://127.0.0.1:{port}/");
                match client.get_host(&url, "www.example.test").await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            errors
        })
    };
    let during = wait_for(&appliance, Duration::from_secs(30), |s| reason(s) == "CAError").await;
    // The listener keeps its certificate: still resolved, the error only under `acme`.
    assert_eq!(condition(listener(&during, "www"), "ResolvedRefs")["status"], "True");
    assert!(during["acme"][0]["next_attempt"].is_u64(), "{}", during["acme"][0]);
    no_challenge_left(&bind);

    let renewed = wait_for(&appliance, Duration::from_secs(20), |s| {
        s["acme"][0]["not_after"].as_u64().is_some_and(|t| t > first_expiry)
            && s["acme"][0]["last_error"].is_null()
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let errors = load.await.expect("load task");
    assert!(ok.load(Ordering::Relaxed) > 10, "too little load: {}", ok.load(Ordering::Relaxed));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests: {errors:?}");
    assert_eq!(renewed["acme"][0]["failures"], 0);
    assert_eq!(proxy.injected().await, 1);
    wait_https(&root, port, "www.example.test", &appliance).await;
    no_challenge_left(&bind);
}

#[tokio::test]
async fn an_invalid_order_is_retried_and_leaves_no_record_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test"], "");
    // Pebble validates against another server of the same zone, which never gets the
    // record: the challenge, and so the order, goes invalid.
    let elsewhere = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&elsewhere.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let ca_roots = pebble.https_ca_path.display().to_string();
    let appliance = Appliance::start(
        &config(&pebble, &bind, &pebble.directory_url(), &ca_roots, port, echo.port()),
        &[],
    );
    let invalid =
        wait_for(&appliance, Duration::from_secs(20), |s| reason(s) == "OrderInvalid").await;
    let entry = &invalid["acme"][0];
    assert!(entry["next_attempt"].is_u64(), "a retry is planned: {entry}");
    let message = condition(listener(&invalid, "www"), "ResolvedRefs")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("(OrderInvalid)"), "{message}");
    no_challenge_left(&bind);
    // Retried with backoff: a second failure follows, and still nothing is left behind.
    let again = wait_for(&appliance, Duration::from_secs(20), |s| {
        s["acme"][0]["failures"].as_u64().is_some_and(|f| f >= 2)
    })
    .await;
    assert_eq!(reason(&again), "OrderInvalid");
    no_challenge_left(&bind);
}

#[tokio::test]
async fn killed_mid_order_the_next_start_completes_and_cleans_up_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let proxy = FaultyCa::start(&pebble).await;
    // The order stops when the client asks the CA to validate: the record is published.
    proxy.hold(CaRequest::Challenge).await;
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let mut appliance = Appliance::start(&through(&proxy, &pebble, &bind, port, echo.port()), &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bind.txt_values("_acme-challenge.www.example.test.").is_empty() {
        assert!(Instant::now() < deadline, "no challenge published\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait until the challenge request is with the CA (held), then pull the plug.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.held().await == 0 {
        assert!(Instant::now() < deadline, "challenge never sent\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    appliance.kill();
    assert!(!bind.txt_values("_acme-challenge.www.example.test.").is_empty());

    proxy.release().await;
    appliance.restart();
    wait_for(&appliance, Duration::from_secs(20), |s| {
        all_issued(s, 1) && s["acme"][0]["last_error"].is_null()
    })
    .await;
    wait_https(&pebble.issuing_root_pem().await, port, "www.example.test", &appliance).await;
    // The record the killed run left is gone, and so is the new run's.
    no_challenge_left(&bind);
}
