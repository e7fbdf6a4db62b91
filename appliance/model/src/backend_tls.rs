//! TLS from the proxy to a backend (Gateway API BackendTLSPolicy and the Gateway's backend
//! client certificate), as the proxy must speak it.

use serde::Serialize;

use crate::Certificate;

/// How the proxy opens TLS to a backend's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendTls {
    /// Where the settings came from (`BackendTLSPolicy default/backend-ca`), for logs.
    pub source: String,
    /// Sent as SNI; also the name the certificate must carry when `subject_alt_names` is empty.
    pub hostname: String,
    /// The trust anchors the backend's chain must end in.
    pub roots: TrustRoots,
    /// When non-empty, the certificate must carry one of these instead of `hostname`.
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Presented when the backend asks for a client certificate.
    pub client_certificate: Option<Certificate>,
}

/// Trust anchors for a backend's certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TrustRoots {
    /// PEM CA certificates, with where each bundle came from (`ConfigMap default/ca`).
    Pem(Vec<CaBundle>),
    /// The system's CA certificates (the host's trust store).
    System,
}

/// One PEM bundle of CA certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaBundle {
    pub source: String,
    pub pem: String,
}

/// A subject alternative name the backend's certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SubjectAltName {
    /// A DNS name (matched as TLS matches server names, wildcards included).
    Hostname(String),
    /// A URI, compared exactly (e.g. a SPIFFE ID).
    Uri(String),
}
