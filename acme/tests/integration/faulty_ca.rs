//! A CA that answers the directory and nonces like an ACME server, then fails account creation
//! with a chosen status and problem: what rate limits and outages look like on the wire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gatehouse_acme::{AcmeError, Issuer, Store};
use gatehouse_model::acme::{AcmeIssuer, DnsProvider, ExecHook, Propagation};
use gatehouse_tests::TestCa;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// Starts the CA on 127.0.0.1; returns its directory URL and the PEM file its HTTPS chains to.
async fn start(
    status: u16,
    problem: &'static str,
    retry_after: Option<&'static str>,
) -> (String, tempfile::TempDir) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    let (chain, key) = ca.leaf(&["localhost"]);
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("ca");
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("tls");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("https://localhost:{}", listener.local_addr().expect("addr").port());
    let base_for_server = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let base = base_for_server.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let base = base.clone();
                    async move {
                        let rsp = match req.uri().path() {
                            "/dir" => Response::builder().status(200).header("content-type", "application/json").body(Full::new(Bytes::from(format!(
                                r#"{{"newNonce":"{base}/nonce","newAccount":"{base}/account","newOrder":"{base}/order","revokeCert":"{base}/revoke","keyChange":"{base}/key"}}"#
                            )))),
                            "/nonce" => Response::builder().status(200).header("replay-nonce", "bm9uY2U").body(Full::new(Bytes::new())),
                            _ => {
                                let mut b = Response::builder()
                                    .status(status)
                                    .header("content-type", "application/problem+json")
                                    .header("replay-nonce", "bm9uY2U");
                                if let Some(after) = retry_after {
                                    b = b.header("retry-after", after);
                                }
                                b.body(Full::new(Bytes::from(problem)))
                            }
                        };
                        Ok::<_, http::Error>(rsp.expect("response"))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("{base}/dir"), dir)
}

fn spec(directory_url: String, dir: &tempfile::TempDir) -> AcmeIssuer {
    AcmeIssuer {
        name: "faulty".into(),
        directory_url,
        contact: vec![],
        eab: None,
        dns: DnsProvider::Exec(ExecHook {
            command: "/bin/false".into(),
            args: vec![],
            timeout: Duration::from_secs(5),
        }),
        propagation: Propagation::default(),
        ca_roots: Some(dir.path().join("ca.pem")),
    }
}

#[tokio::test]
async fn a_rate_limit_is_typed_and_keeps_the_cas_retry_after() {
    let problem = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders","status":429}"#;
    let (url, dir) = start(429, problem, Some("120")).await;
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(&spec(url, &dir), Store::new(state.path())).expect("issuer");
    let err = issuer.issue(&["www.example.test".into()]).await.expect_err("rate limited");
    assert!(matches!(err, AcmeError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.reason(), "RateLimited");
    assert!(err.to_string().contains("too many new orders"), "{err}");
    let wait = err
        .retry_after()
        .expect("Retry-After kept")
        .duration_since(SystemTime::now())
        .expect("future");
    assert!(wait > Duration::from_secs(100), "{wait:?}");
    // The backoff honours it over its own 2 s start.
    let delay = gatehouse_acme::renew::backoff(
        0,
        gatehouse_acme::BASE_BACKOFF,
        gatehouse_acme::MAX_BACKOFF,
        err.retry_after(),
        SystemTime::now(),
        0.0,
    );
    assert!(delay > Duration::from_secs(100), "{delay:?}");
}

#[tokio::test]
async fn a_ca_outage_is_a_ca_error_with_its_detail() {
    let problem = r#"{"type":"urn:ietf:params:acme:error:serverInternal","detail":"database on fire","status":500}"#;
    let (url, dir) = start(500, problem, None).await;
    let state = tempfile::tempdir().expect("state");
    let issuer = Issuer::new(&spec(url, &dir), Store::new(state.path())).expect("issuer");
    let err = issuer.issue(&["www.example.test".into()]).await.expect_err("outage");
    assert_eq!(err.reason(), "CAError", "{err:?}");
    assert!(err.to_string().contains("database on fire"), "{err}");
    assert_eq!(err.retry_after(), None);
}

#[tokio::test]
async fn an_unreachable_ca_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = TestCa::new();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("ca");
    let port = gatehouse_tests::free_port();
    let state = tempfile::tempdir().expect("state");
    let issuer =
        Issuer::new(&spec(format!("https://127.0.0.1:{port}/dir"), &dir), Store::new(state.path()))
            .expect("issuer");
    let err = issuer.issue(&["www.example.test".into()]).await.expect_err("unreachable");
    assert_eq!(err.reason(), "CAUnreachable", "{err:?}");
}
