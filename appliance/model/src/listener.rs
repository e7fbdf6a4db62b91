use std::fmt;
use std::net::IpAddr;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use crate::ListenerId;

/// Application protocol a listener speaks to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    /// HTTP/1.1 and h2c (prior knowledge) in cleartext.
    Http,
    /// TLS terminated here; HTTP/1.1 or HTTP/2 chosen by ALPN.
    Https,
}

impl Protocol {
    /// The scheme a client uses for this protocol (`http` / `https`).
    pub fn scheme(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }
}

/// A listener: where to accept connections and which hostnames it serves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listener {
    pub id: ListenerId,
    /// Addresses to bind; the gateway's addresses, or the configured default.
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub protocol: Protocol,
    /// `None` matches every hostname (the catch-all listener).
    pub hostname: Option<Hostname>,
    /// Present exactly when `protocol` is [`Protocol::Https`].
    pub tls: Option<ListenerTls>,
}

/// Certificates a TLS listener presents, selected by SNI.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
}

/// A PEM certificate chain and its private key.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    /// Where it came from, for errors (`Secret default/example-tls`, a file path).
    pub source: String,
    pub chain_pem: String,
    #[serde(skip)]
    pub key_pem: String,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("source", &self.source)
            .field("chain_pem_len", &self.chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// Why a PEM certificate chain and key cannot serve TLS.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate chain PEM is invalid: {0}")]
    Chain(String),
    #[error("certificate chain PEM holds no certificate")]
    EmptyChain,
    #[error("private key PEM is invalid: {0}")]
    Key(String),
    #[error("private key is not usable (RSA, ECDSA or Ed25519 expected): {0}")]
    KeyType(String),
    #[error("private key does not belong to the certificate")]
    Mismatch,
}

/// Parses a PEM chain and key (PKCS#1, PKCS#8 or SEC1; RSA, ECDSA or Ed25519) as rustls loads
/// them, and checks that the key belongs to the leaf. The one place certificates are judged:
/// sources use it for status, the proxy to serve.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertificateError::EmptyChain);
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertificateError::Key(e.to_string()))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| CertificateError::KeyType(e.to_string()))?;
    let key = CertifiedKey::new(chain, signer);
    match key.keys_match() {
        // Unknown: the key type cannot tell (no public key to compare); rustls accepts it too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(key),
        Err(_) => Err(CertificateError::Mismatch),
    }
}

/// A DNS hostname or a wildcard (`*.example.com`), lower-cased, without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Hostname(String);

/// Why a string is not a valid [`Hostname`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    #[error("hostname is empty")]
    Empty,
    #[error("hostname {0:?} is an IP address; only DNS names are allowed")]
    IpAddress(String),
    #[error("hostname {0:?} is longer than 253 characters")]
    TooLong(String),
    #[error(
        "hostname {0:?} has an invalid label (RFC 1123: a-z, 0-9, '-', 1-63 characters, no leading or trailing '-'; '*' only as the whole first label)"
    )]
    InvalidLabel(String),
}

impl Hostname {
    /// Parses and normalises a hostname or a wildcard hostname.
    pub fn parse(raw: &str) -> Result<Self, HostnameError> {
        if raw.is_empty() {
            return Err(HostnameError::Empty);
        }
        if raw.parse::<IpAddr>().is_ok() {
            return Err(HostnameError::IpAddress(raw.to_owned()));
        }
        if raw.len() > 253 {
            return Err(HostnameError::TooLong(raw.to_owned()));
        }
        let lower = raw.to_ascii_lowercase();
        for (i, label) in lower.split('.').enumerate() {
            let ok = if i == 0 && label == "*" {
                lower.len() > 2
            } else {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if !ok {
                return Err(HostnameError::InvalidLabel(raw.to_owned()));
            }
        }
        Ok(Self(lower))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a wildcard (`*.example.com`).
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// Whether a concrete request hostname (lower-case) is matched by this pattern.
    ///
    /// A wildcard matches one or more labels in place of `*` (Gateway API semantics:
    /// `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`).
    pub fn matches(&self, host: &str) -> bool {
        match self.0.strip_prefix('*') {
            Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            None => self.0 == host,
        }
    }

    /// The intersection of two patterns (listener hostname and route hostname), if any.
    ///
    /// Returns the more specific of the two when one matches the other.
    pub fn intersect(&self, other: &Hostname) -> Option<Hostname> {
        match (self.is_wildcard(), other.is_wildcard()) {
            (false, false) => (self == other).then(|| self.clone()),
            (true, false) => self.matches(&other.0).then(|| other.clone()),
            (false, true) => other.matches(&self.0).then(|| self.clone()),
            (true, true) => {
                if self.0.len() >= other.0.len() {
                    other
                        .matches(&self.0[2..])
                        .then(|| self.clone())
                        .or_else(|| (self == other).then(|| self.clone()))
                } else {
                    self.matches(&other.0[2..]).then(|| other.clone())
                }
            }
        }
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the data planes applied, for status: listeners that could not be served.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DataPlaneReport {
    /// Generation of the [`crate::Desired`] this report is about.
    pub generation: u64,
    pub listener_problems: Vec<ListenerProblem>,
}

/// A listener the data plane could not serve as asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerProblem {
    pub listener: ListenerId,
    pub kind: ListenerProblemKind,
    pub message: String,
}

/// Category of a [`ListenerProblem`]; maps onto Gateway API listener reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ListenerProblemKind {
    /// The socket could not be bound (in use, address not on this host, permission).
    PortUnavailable,
    /// Another listener on the same address and port speaks another protocol.
    ProtocolConflict,
    /// Another listener on the same address, port and protocol has the same hostname.
    HostnameConflict,
    /// A certificate or key could not be loaded.
    InvalidCertificate,
    /// The data plane that serves the listener refused this generation (the one before keeps
    /// serving); `Programmed` stays false.
    NotApplied,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s).unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(h("Foo.Example.COM").as_str(), "foo.example.com");
        assert!(h("*.example.com").is_wildcard());
        assert!(Hostname::parse("").is_err());
        assert!(Hostname::parse("10.0.0.1").is_err());
        assert!(Hostname::parse("a.*.com").is_err());
        assert!(Hostname::parse("-a.com").is_err());
        assert!(Hostname::parse("*").is_err());
        assert!(Hostname::parse("a..com").is_err());
    }

    #[test]
    fn wildcard_matches_one_or_more_labels() {
        let w = h("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
    }

    #[test]
    fn intersection() {
        assert_eq!(h("a.example.com").intersect(&h("*.example.com")), Some(h("a.example.com")));
        assert_eq!(h("*.example.com").intersect(&h("a.example.com")), Some(h("a.example.com")));
        assert_eq!(h("*.example.com").intersect(&h("*.a.example.com")), Some(h("*.a.example.com")));
        assert_eq!(h("*.a.example.com").intersect(&h("*.example.com")), Some(h("*.a.example.com")));
        assert_eq!(h("*.example.com").intersect(&h("*.example.com")), Some(h("*.example.com")));
        assert_eq!(h("*.example.com").intersect(&h("*.example.org")), None);
        assert_eq!(h("example.com").intersect(&h("*.example.com")), None);
    }
}
