//! TLS towards backends: one rustls client config per backend with a BackendTLSPolicy, its
//! own trust anchors, SNI and name check, and the Gateway's client certificate.
//!
//! The name check follows the policy: the certificate must be valid for `hostname`, or, when
//! `subjectAltNames` are given, carry one of them (DNS names as TLS matches server names,
//! URIs exactly) instead. Chain validation is rustls' webpki path validation either way.

use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use gatehouse_model::{BackendTls, SubjectAltName, TrustRoots};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::provider;

/// Why a backend's TLS settings cannot be used (the backend then answers 500).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendTlsError {
    #[error("{source_name}: CA certificates are not valid PEM: {reason}")]
    CaPem { source_name: String, reason: String },
    #[error("{0}: holds no usable CA certificate")]
    NoRoots(String),
    #[error("the system trust store holds no usable CA certificate")]
    NoSystemRoots,
    #[error("hostname {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("client certificate {source_name}: {reason}")]
    ClientCertificate { source_name: String, reason: String },
    #[error("cannot build the TLS client config: {0}")]
    Config(#[from] rustls::Error),
}

/// Opens TLS to the endpoints of one backend.
#[derive(Debug)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    /// The policy's name, for logs.
    pub source: String,
}

impl Connector {
    /// Builds the client config of a backend's TLS settings (at compile time, off the
    /// request path).
    pub(crate) fn new(tls: &BackendTls) -> Result<Self, BackendTlsError> {
        let roots = match &tls.roots {
            TrustRoots::Pem(bundles) => {
                let mut store = RootCertStore::empty();
                for bundle in bundles {
                    let certs = CertificateDer::pem_slice_iter(bundle.pem.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| BackendTlsError::CaPem {
                            source_name: bundle.source.clone(),
                            reason: e.to_string(),
                        })?;
                    let (added, _) = store.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(BackendTlsError::NoRoots(bundle.source.clone()));
                    }
                }
                Arc::new(store)
            }
            TrustRoots::System => system_roots().ok_or(BackendTlsError::NoSystemRoots)?,
        };
        let server_name = ServerName::try_from(tls.hostname.clone())
            .map_err(|_| BackendTlsError::ServerName(tls.hostname.clone()))?;
        let mut names = Vec::new();
        for san in &tls.subject_alt_names {
            names.push(match san {
                SubjectAltName::Hostname(h) => Name::Dns(
                    ServerName::try_from(h.clone())
                        .map_err(|_| BackendTlsError::ServerName(h.clone()))?,
                ),
                SubjectAltName::Uri(u) => Name::Uri(u.clone()),
            });
        }
        let provider = provider();
        let verifier = Arc::new(Verifier { roots, names, provider: provider.clone() });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &tls.client_certificate {
            None => builder.with_no_client_auth(),
            Some(cert) => {
                let bad = |reason: String| BackendTlsError::ClientCertificate {
                    source_name: cert.source.clone(),
                    reason,
                };
                let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
                    .map_err(|e| bad(e.to_string()))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| bad(e.to_string()))?
            }
        };
        // The pool speaks HTTP/1.1 to backends.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config), server_name, source: tls.source.clone() })
    }

    /// The TLS handshake over a connected socket.
    pub(crate) async fn connect(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), tcp).await
    }

    /// The SNI sent.
    pub(crate) fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }
}

/// The system's CA certificates, read once (the host's trust store; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override where). `None` when none is usable.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "cannot read some system CA certificates");
            }
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(loaded.certs);
            (!store.is_empty()).then(|| Arc::new(store))
        })
        .clone()
}

/// A name the backend's certificate must carry (one of several).
#[derive(Debug)]
enum Name {
    Dns(ServerName<'static>),
    Uri(String),
}

/// Chain validation against the policy's roots, then the policy's name check.
#[derive(Debug)]
struct Verifier {
    roots: Arc<RootCertStore>,
    /// Empty: the SNI hostname is checked.
    names: Vec<Name>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.names.is_empty() {
            verify_server_name(&cert, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        let mut uris = None;
        for name in &self.names {
            let found = match name {
                Name::Dns(dns) => verify_server_name(&cert, dns).is_ok(),
                Name::Uri(uri) => uris.get_or_insert_with(|| uri_names(end_entity)).contains(uri),
            };
            if found {
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(NoSubjectAltName),
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate carries none of the policy's subjectAltNames.
#[derive(Debug, thiserror::Error)]
#[error("the certificate carries none of the policy's subjectAltNames")]
struct NoSubjectAltName;

/// The URI subject alternative names of a certificate (none if it does not parse).
fn uri_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// A pool key: an endpoint address and the connector of its backend. Two keys are equal
/// when they share the connector itself (one compiled backend), so connections made with
/// other TLS settings are never reused for it.
#[derive(Clone, Debug)]
pub(crate) struct TlsEndpoint {
    pub addr: SocketAddr,
    pub connector: Arc<Connector>,
}

impl PartialEq for TlsEndpoint {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && Arc::ptr_eq(&self.connector, &other.connector)
    }
}

impl Eq for TlsEndpoint {}

impl Hash for TlsEndpoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
        Arc::as_ptr(&self.connector).hash(state);
    }
}

impl TlsEndpoint {
    /// The TLS handshake over a connected socket; a failure is logged once here, with the
    /// policy and server name, because it usually means a misconfigured CA or name.
    pub(crate) async fn handshake(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let result = self.connector.connect(tcp).await;
        if let Err(e) = &result {
            tracing::warn!(
                endpoint = %self.addr,
                policy = %self.connector.source,
                sni = %self.connector.server_name(),
                error = %e,
                "backend TLS handshake failed"
            );
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_model::CaBundle;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    use super::*;

    fn ca() -> (Issuer<'static, KeyPair>, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (Issuer::new(params, key), cert.pem())
    }

    fn roots(pem: &str) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
        Arc::new(store)
    }

    /// Whether a leaf for `dns` (and `uri`) signed by `issuer` passes a verifier trusting
    /// `trusted` with `names`, connecting to `sni`.
    fn passes(
        issuer: &Issuer<'static, KeyPair>,
        trusted: &str,
        names: Vec<Name>,
        sni: &str,
        uri: Option<&str>,
    ) -> bool {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["svc.example.com".to_owned()]).unwrap();
        if let Some(uri) = uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        let leaf = params.signed_by(&key, issuer).unwrap();
        let verifier = Verifier { roots: roots(trusted), names, provider: provider() };
        let sni = ServerName::try_from(sni.to_owned()).unwrap();
        verifier.verify_server_cert(leaf.der(), &[], &sni, &[], UnixTime::now()).is_ok()
    }

    fn dns(name: &str) -> Name {
        Name::Dns(ServerName::try_from(name.to_owned()).unwrap())
    }

    #[test]
    fn the_chain_must_end_in_the_policy_roots() {
        let (issuer, pem) = ca();
        let (_, other) = ca();
        assert!(passes(&issuer, &pem, Vec::new(), "svc.example.com", None));
        assert!(!passes(&issuer, &other, Vec::new(), "svc.example.com", None));
        assert!(!passes(&issuer, &other, vec![dns("svc.example.com")], "x.example.com", None));
    }

    #[test]
    fn without_sans_the_hostname_is_checked_with_sans_only_they_are() {
        let (issuer, pem) = ca();
        assert!(!passes(&issuer, &pem, Vec::new(), "other.example.com", None));
        let uri = "spiffe://td/ns/app/sa/svc";
        assert!(passes(&issuer, &pem, vec![dns("svc.example.com")], "other.example.com", None));
        assert!(passes(&issuer, &pem, vec![Name::Uri(uri.into())], "other.example.com", Some(uri)));
        assert!(
            !passes(&issuer, &pem, vec![dns("nope.example.com")], "svc.example.com", None),
            "with SANs the hostname no longer authenticates"
        );
        assert!(!passes(
            &issuer,
            &pem,
            vec![Name::Uri("spiffe://td/x".into())],
            "svc.example.com",
            Some(uri)
        ));
    }

    #[test]
    fn unusable_settings_are_errors_not_cleartext() {
        let settings = |pem: &str, hostname: &str| BackendTls {
            source: "BackendTLSPolicy app/p".into(),
            hostname: hostname.into(),
            roots: TrustRoots::Pem(vec![CaBundle {
                source: "ConfigMap app/ca".into(),
                pem: pem.into(),
            }]),
            subject_alt_names: Vec::new(),
            client_certificate: None,
        };
        assert!(Connector::new(&settings("not PEM", "svc.example.com")).is_err());
        let (_, pem) = ca();
        assert!(matches!(
            Connector::new(&settings(&pem, "not a name!")),
            Err(BackendTlsError::ServerName(_))
        ));
        assert!(Connector::new(&settings(&pem, "svc.example.com")).is_ok());
    }
}
