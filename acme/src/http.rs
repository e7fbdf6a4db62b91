//! The HTTPS client for the CA and for DNS provider APIs: rustls with the system roots plus an
//! issuer's extra roots, every request bounded in time, the CA's last Retry-After remembered.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;

/// How long one HTTP exchange with a CA or API may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Roots: the system's, plus every certificate in `extra` (a PEM file).
pub(crate) fn roots(extra: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // The system store may be missing on a minimal machine; a private CA still works then.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate in the file", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(roots)
}

/// A hyper client over rustls with `roots`; plain `http://` only when `allow_http`.
pub(crate) fn hyper_client(
    roots: RootCertStore,
    allow_http: bool,
) -> HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>> {
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let connector = if allow_http {
        builder.https_or_http().enable_http1().enable_http2().build()
    } else {
        builder.https_only().enable_http1().enable_http2().build()
    };
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

/// The hyper client every HTTP user of this crate holds.
pub(crate) type Client = HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// A DNS provider's REST API: its base URL (no trailing `/`) and a client for it. Plain
/// `http://` is refused except on loopback (test servers).
pub(crate) fn api_client(api_url: &str) -> Result<(String, Client), String> {
    let uri: http::Uri = api_url.parse().map_err(|e| format!("api_url {api_url:?}: {e}"))?;
    let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if uri.scheme_str() != Some("https") && !loopback {
        return Err("api_url must be https".into());
    }
    Ok((api_url.trim_end_matches('/').to_owned(), hyper_client(roots(None)?, loopback)))
}

/// instant-acme's HTTP client: bounded requests, and the last Retry-After of an error answer
/// kept so rate limits and server errors can be retried when the CA asked.
pub(crate) struct CaClient {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: Arc<watch::Sender<Option<SystemTime>>>,
}

impl CaClient {
    pub(crate) fn new(
        roots: RootCertStore,
        retry_after: Arc<watch::Sender<Option<SystemTime>>>,
    ) -> Self {
        Self { inner: hyper_client(roots, false), retry_after }
    }
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let slot = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Ok(Ok(rsp)) => rsp,
                Ok(Err(e)) => return Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => {
                    return Err(instant_acme::Error::Other(
                        format!("no answer in {REQUEST_TIMEOUT:?}").into(),
                    ));
                }
            };
            if rsp.status().is_client_error() || rsp.status().is_server_error() {
                let at = rsp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                slot.send_replace(at);
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// Parses a Retry-After value: delay seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(SystemTime::now() + Duration::from_secs(secs));
    }
    httpdate::parse_http_date(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let soon = parse_retry_after("120").expect("seconds");
        let delta = soon.duration_since(SystemTime::now()).expect("future").as_secs();
        assert!((118..=120).contains(&delta), "{delta}");
        let date = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            date.duration_since(SystemTime::UNIX_EPOCH).expect("epoch").as_secs(),
            784_111_777
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
