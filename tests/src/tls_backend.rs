use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// An HTTPS echo backend on 127.0.0.1 (hyper over rustls): answers like [`crate::EchoBackend`]
/// and adds `x-client-cert: present|absent`. With a client CA it requires client certificates
/// that chain to it.
#[derive(Debug)]
pub struct TlsEchoBackend {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsEchoBackend {
    /// Serves `chain_pem`/`key_pem`; `client_ca_pem` makes client certificates mandatory.
    pub async fn start(
        name: &str,
        chain_pem: &str,
        key_pem: &str,
        client_ca_pem: Option<&str>,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("backend chain");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("backend key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.expect("client CA")).expect("add client CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).expect("backend cert");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind TLS backend");
        let addr = listener.local_addr().expect("local addr");
        let backend = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let client_cert =
                        tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = service_fn(move |req| {
                        let backend = backend.clone();
                        async move {
                            let mut resp = crate::echo::echo(&backend, req).await;
                            let value = if client_cert { "present" } else { "absent" };
                            resp.headers_mut()
                                .insert("x-client-cert", http::HeaderValue::from_static(value));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, task }
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TlsEchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
