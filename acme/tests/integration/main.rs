//! gatehouse-acme against real peers: Debian's pebble (ACME CA) and bind9 (RFC 2136 + TSIG)
//! on loopback, started per test and killed at its end (`make setup` installs both); and a
//! faulty CA on a loopback socket for the answers pebble never gives (500, rateLimited); and
//! Route53 against an in-test server that checks SigV4 signatures itself.

mod faulty_ca;
#[cfg(feature = "route53")]
mod route53;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_acme::dns::DnsError;
use gatehouse_acme::{AcmeError, Issuer, Store};
use gatehouse_model::acme::{
    AcmeIssuer, DnsProvider, ExecHook, Propagation, Rfc2136, Secret, TsigAlgorithm,
};
use gatehouse_tests::{Bind9, Pebble, PebbleOptions, acme_peers_installed};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Upper bound for one test's ACME work, so a hung peer fails the test instead of CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn rfc2136(bind: &Bind9, secret: &str) -> DnsProvider {
    DnsProvider::Rfc2136(Rfc2136 {
        server: bind.addr().parse().expect("addr"),
        zone: None,
        key_name: bind.key_name.clone(),
        algorithm: TsigAlgorithm::HmacSha256,
        secret: Secret::new(secret),
    })
}

fn issuer_spec(pebble: &Pebble, bind: &Bind9, dns: DnsProvider) -> AcmeIssuer {
    AcmeIssuer {
        name: "pebble".into(),
        directory_url: pebble.directory_url(),
        contact: vec!["mailto:ops@example.test".into()],
        eab: None,
        dns,
        propagation: Propagation {
            timeout: Duration::from_secs(10),
            interval: Duration::from_millis(50),
            resolvers: vec![bind.addr().parse().expect("addr")],
        },
        ca_roots: Some(pebble.https_ca_path.clone()),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Verifies `chain_pem` for `host` against `root_pem` as a TLS client would.
fn verify_chain(chain_pem: &str, root_pem: &str, host: &str) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.expect("root PEM")).expect("add root");
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder(Arc::new(roots)).build().expect("verifier");
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("chain PEM");
    let name = ServerName::try_from(host.to_owned()).expect("name");
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .unwrap_or_else(|e| panic!("chain does not verify for {host}: {e}"));
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, fut).await.expect("ACME work finished in time")
}

macro_rules! require_peers {
    () => {
        assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    };
}

#[tokio::test]
async fn issues_a_name_and_its_wildcard_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["example.test", "www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(
        &issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret)),
        Store::new(state.path()),
    )
    .expect("issuer");

    let wanted = names(&["www.example.test", "*.example.test"]);
    let issued = bounded(issuer.issue(&wanted)).await.expect("issued");
    let root = pebble.issuing_root_pem().await;
    verify_chain(&issued.cert.chain_pem, &root, "www.example.test");
    verify_chain(&issued.cert.chain_pem, &root, "anything.example.test");
    assert!(issued.cert.meta.not_after > SystemTime::now());
    let p = issued.phases;
    assert!(p.order > Duration::ZERO && p.validation > Duration::ZERO, "{p:?}");

    // The challenge records are gone again, from both names.
    assert_eq!(bind.txt_values("_acme-challenge.example.test."), Vec::<String>::new());
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), Vec::<String>::new());

    // The account key and the certificate key are private; the certificate is stored.
    let account = state.path().join("acme/accounts/pebble.json");
    let mode = std::fs::metadata(&account).expect("account file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = Store::new(state.path()).cert(&wanted).expect("read").expect("stored");
    assert_eq!(stored.chain_pem, issued.cert.chain_pem);

    // A second order reuses the account (the file does not change).
    let before = std::fs::read_to_string(&account).expect("account");
    bounded(issuer.issue(&names(&["www.example.test"]))).await.expect("second order");
    assert_eq!(std::fs::read_to_string(&account).expect("account"), before);
}

#[tokio::test]
async fn survives_random_nonce_rejection_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["example.test", "www.example.test"], "");
    // Pebble's default behaviour: 5 % of good nonces rejected at random.
    let pebble = Pebble::start(
        &bind.addr(),
        &PebbleOptions { nonce_reject_percent: 5, ..Default::default() },
    );
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(
        &issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret)),
        Store::new(state.path()),
    )
    .expect("issuer");
    for _ in 0..4 {
        let issued = bounded(issuer.issue(&names(&["www.example.test", "*.example.test"])))
            .await
            .expect("issued despite badNonce");
        verify_chain(&issued.cert.chain_pem, &pebble.issuing_root_pem().await, "www.example.test");
    }
    assert_eq!(bind.txt_values("_acme-challenge.example.test."), Vec::<String>::new());
}

#[tokio::test]
async fn a_wrong_tsig_secret_is_a_clear_error_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let wrong = "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE=";
    let issuer =
        Issuer::new(&issuer_spec(&pebble, &bind, rfc2136(&bind, wrong)), Store::new(state.path()))
            .expect("issuer");
    let err = bounded(issuer.issue(&names(&["www.example.test"]))).await.expect_err("refused");
    assert!(
        matches!(err, AcmeError::Dns(DnsError::TsigRejected { .. })),
        "not a TSIG error: {err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("TSIG") && !text.contains("truncated"), "{text}");
    assert_eq!(err.reason(), "DNSError");
}

#[tokio::test]
async fn a_refused_second_record_removes_the_first_with_pebble_and_bind9() {
    require_peers!();
    // The key may update www only: the record for www is published, the one for `denied`
    // is refused, and the order must not leave www's record behind.
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(
        &issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret)),
        Store::new(state.path()),
    )
    .expect("issuer");
    let err = bounded(issuer.issue(&names(&["www.example.test", "denied.example.test"])))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, AcmeError::Dns(DnsError::UpdateRefused { .. })),
        "not a refused update: {err:?}"
    );
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), Vec::<String>::new());
    assert!(Store::new(state.path()).pending("pebble").expect("pending").is_empty());
}

#[tokio::test]
async fn dns_server_down_is_a_clear_error_with_pebble_and_bind9() {
    require_peers!();
    let mut bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(
        &issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret)),
        Store::new(state.path()),
    )
    .expect("issuer");
    bind.stop();
    let err = bounded(issuer.issue(&names(&["www.example.test"]))).await.expect_err("down");
    assert!(matches!(err, AcmeError::Dns(DnsError::Unreachable { .. })), "{err:?}");
    // Back up: the same issuer succeeds and leaves nothing behind.
    bind.restart();
    bounded(issuer.issue(&names(&["www.example.test"]))).await.expect("issued after restart");
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), Vec::<String>::new());
}

#[tokio::test]
async fn follows_a_cname_delegated_challenge_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(
        &["delegated.example.test"],
        "_acme-challenge.alias IN CNAME _acme-challenge.delegated.example.test.",
    );
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(
        &issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret)),
        Store::new(state.path()),
    )
    .expect("issuer");
    let issued =
        bounded(issuer.issue(&names(&["alias.example.test"]))).await.expect("issued via CNAME");
    verify_chain(&issued.cert.chain_pem, &pebble.issuing_root_pem().await, "alias.example.test");
    assert_eq!(bind.txt_values("_acme-challenge.delegated.example.test."), Vec::<String>::new());
}

#[tokio::test]
async fn an_exec_hook_publishes_with_nsupdate_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let script = format!(
        r#"set -e
case "$1" in present) op=add ;; cleanup) op=delete ;; esac
printf 'server 127.0.0.1 {port}\nzone example.test\nupdate %s %s 60 TXT "%s"\nsend\n' "$op" "$GATEHOUSE_ACME_FQDN" "$GATEHOUSE_ACME_VALUE" \
  | nsupdate -y "hmac-sha256:{key}:{secret}"
"#,
        port = bind.port,
        key = bind.key_name,
        secret = bind.secret
    );
    let hook = state.path().join("hook.sh");
    std::fs::write(&hook, script).expect("hook");
    let dns = DnsProvider::Exec(ExecHook {
        command: "/bin/sh".into(),
        args: vec![hook.display().to_string()],
        timeout: Duration::from_secs(10),
    });
    let issuer =
        Issuer::new(&issuer_spec(&pebble, &bind, dns), Store::new(state.path())).expect("issuer");
    let issued = bounded(issuer.issue(&names(&["www.example.test"]))).await.expect("issued");
    verify_chain(&issued.cert.chain_pem, &pebble.issuing_root_pem().await, "www.example.test");
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), Vec::<String>::new());
}

#[tokio::test]
async fn a_record_that_never_appears_times_out_and_is_cleaned_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let calls = state.path().join("calls");
    // A hook that claims success but publishes nothing.
    let dns = DnsProvider::Exec(ExecHook {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), format!("echo $1 >> {}", calls.display()), "hook".into()],
        timeout: Duration::from_secs(10),
    });
    let mut spec = issuer_spec(&pebble, &bind, dns);
    spec.propagation.timeout = Duration::from_millis(600);
    let issuer = Issuer::new(&spec, Store::new(state.path())).expect("issuer");
    let err = bounded(issuer.issue(&names(&["www.example.test"]))).await.expect_err("times out");
    assert!(matches!(err, AcmeError::Propagation { .. }), "{err:?}");
    assert_eq!(err.reason(), "PropagationTimeout");
    assert_eq!(std::fs::read_to_string(calls).expect("calls"), "present\ncleanup\n");
}

#[tokio::test]
async fn records_left_by_an_interrupted_run_are_removed_with_pebble_and_bind9() {
    require_peers!();
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let state = tempfile::tempdir().expect("state");
    let spec = issuer_spec(&pebble, &bind, rfc2136(&bind, &bind.secret));
    // A run that published a record and died before removing it.
    let record = gatehouse_acme::dns::TxtRecord {
        fqdn: "_acme-challenge.www.example.test.".into(),
        value: "left-over".into(),
    };
    let provider = gatehouse_acme::dns::provider(&spec.dns).expect("provider");
    bounded(provider.present(&record)).await.expect("present");
    let store = Store::new(state.path());
    store.save_pending("pebble", std::slice::from_ref(&record)).expect("pending");
    assert_eq!(bind.txt_values("_acme-challenge.www.example.test."), vec!["left-over"]);

    // The next run's issuer removes it before anything else.
    let issuer = Issuer::new(&spec, store.clone()).expect("issuer");
    bounded(issuer.clean_pending()).await.expect("cleaned");
    assert!(bind.txt_values("_acme-challenge.www.example.test.").is_empty());
    assert!(store.pending("pebble").expect("pending").is_empty());
}
