use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;

/// One answered request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (the echo backend's description of the request).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "body is not JSON: {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The echo backend that answered (`x-echo-backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-echo-backend")
    }
}

#[derive(Clone, Debug)]
enum Wire {
    Http1,
    H2c,
    Tls { roots: Arc<rustls::RootCertStore>, alpn: Vec<Vec<u8>>, sni: Option<String> },
}

/// A test client making one fresh connection per request, so every request exercises accept,
/// TLS and protocol negotiation.
#[derive(Clone, Debug)]
pub struct Client {
    wire: Wire,
    headers: Vec<(String, String)>,
    timeout: Duration,
    /// A client certificate chain and key (PEM) presented over TLS.
    client_cert: Option<(String, String)>,
}

impl Client {
    /// HTTP/1.1 in cleartext.
    pub fn http1() -> Self {
        Self {
            wire: Wire::Http1,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            client_cert: None,
        }
    }

    /// HTTP/2 with prior knowledge in cleartext (h2c).
    pub fn h2c() -> Self {
        Self { wire: Wire::H2c, ..Self::http1() }
    }

    /// TLS trusting `ca_pem`, offering ALPN `alpn` (e.g. `["h2"]`), with SNI `sni`.
    pub fn tls(ca_pem: &str, alpn: &[&str], sni: Option<&str>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            <rustls_pki_types::CertificateDer<'_> as PemObject>::pem_slice_iter(ca_pem.as_bytes())
        {
            roots.add(cert.expect("CA PEM")).expect("add root");
        }
        let wire = Wire::Tls {
            roots: Arc::new(roots),
            alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
            sni: sni.map(str::to_owned),
        };
        Self { wire, ..Self::http1() }
    }

    /// Presents a client certificate (`chain_pem`, `key_pem`) when the server asks for one.
    pub fn client_cert(mut self, chain_pem: &str, key_pem: &str) -> Self {
        self.client_cert = Some((chain_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// Adds a request header to every request.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// GET `url`.
    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        self.request(Method::GET, url, None).await
    }

    /// GET `url` with the `Host` header (`:authority` on h2) set to `host`.
    pub async fn get_host(&self, url: &str, host: &str) -> Result<Reply, String> {
        self.request(Method::GET, url, Some(host)).await
    }

    /// Sends one request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        host: Option<&str>,
    ) -> Result<Reply, String> {
        tokio::time::timeout(self.timeout, self.request_inner(method, url, host))
            .await
            .map_err(|_| format!("request to {url} timed out"))?
    }

    async fn request_inner(
        &self,
        method: Method,
        url: &str,
        host: Option<&str>,
    ) -> Result<Reply, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
        let authority = uri.authority().ok_or("url without authority")?.clone();
        let host = host.map(str::to_owned).unwrap_or_else(|| authority.to_string());
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
        let stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let h2 = match &self.wire {
            Wire::Http1 => false,
            Wire::H2c => true,
            Wire::Tls { .. } => false,
        };
        let mut builder = Request::builder().method(method);
        match &self.wire {
            Wire::Tls { roots, alpn, sni } => {
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone());
                let mut config = match &self.client_cert {
                    None => config.with_no_client_auth(),
                    Some((chain, key)) => {
                        let chain =
                            rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|e| e.to_string())?;
                        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                            .map_err(|e| e.to_string())?;
                        config.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
                    }
                };
                config.alpn_protocols = alpn.clone();
                let server_name = match sni {
                    Some(sni) => ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?,
                    None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
                };
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(server_name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                if negotiated_h2 {
                    let uri = format!("https://{host}{path}");
                    builder = builder.uri(uri).version(Version::HTTP_2);
                    let (mut sender, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                            .await
                            .map_err(|e| e.to_string())?;
                    tokio::spawn(conn);
                    let req = self.finish(builder, None)?;
                    return collect(sender.send_request(req).await).await;
                }
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = self.finish(builder.uri(path), Some(&host))?;
                collect(sender.send_request(req).await).await
            }
            _ if h2 => {
                let uri = format!("http://{host}{path}");
                builder = builder.uri(uri).version(Version::HTTP_2);
                let (mut sender, conn) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(stream),
                )
                .await
                .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = self.finish(builder, None)?;
                collect(sender.send_request(req).await).await
            }
            _ => {
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = self.finish(builder.uri(path), Some(&host))?;
                collect(sender.send_request(req).await).await
            }
        }
    }

    fn finish(
        &self,
        mut builder: http::request::Builder,
        host: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, String> {
        if let Some(host) = host {
            builder = builder.header(http::header::HOST, host);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder.body(Full::new(Bytes::new())).map_err(|e| e.to_string())
    }
}

async fn collect(
    response: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Reply, String> {
    let response = response.map_err(|e| format!("request failed: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = http_body_util::Limited::new(body, 64 << 20);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body,
    })
}
