//! TLS termination: PEM parsing, per-listener certificate choice by SNI, server configs.
//!
//! The server configs live in the route table, so certificates and routes change in one swap.

use std::sync::Arc;

use gatehouse_model::{Certificate, CertificateError, ClientValidation, certified_key};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    #[error("{source_name}: certificate chain PEM is invalid: {reason}")]
    Chain { source_name: String, reason: String },
    #[error("{source_name}: certificate chain PEM holds no certificate")]
    EmptyChain { source_name: String },
    #[error("{source_name}: private key PEM is invalid: {reason}")]
    Key { source_name: String, reason: String },
    #[error("{source_name}: private key is not usable (RSA, ECDSA or Ed25519 expected): {reason}")]
    KeyType { source_name: String, reason: String },
    #[error("{source_name}: private key does not match the certificate")]
    Mismatch { source_name: String },
    #[error("{source_name}: leaf certificate cannot be parsed: {reason}")]
    Leaf { source_name: String, reason: String },
}

/// A loaded certificate with the DNS names of its leaf (lower-case, wildcards as `*.x`).
#[derive(Debug)]
pub(crate) struct LoadedCert {
    pub source: String,
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// The crypto provider every TLS config of the proxy uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Loads a certificate with `gatehouse_model::certified_key` (the sources judged it the same way)
/// and reads the DNS names of its leaf.
pub(crate) fn load(cert: &Certificate) -> Result<LoadedCert, CertError> {
    let source_name = cert.source.clone();
    let key =
        certified_key(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes()).map_err(|e| match e {
            CertificateError::Chain(reason) => CertError::Chain { source_name, reason },
            CertificateError::EmptyChain => CertError::EmptyChain { source_name },
            CertificateError::Key(reason) => CertError::Key { source_name, reason },
            CertificateError::KeyType(reason) => CertError::KeyType { source_name, reason },
            CertificateError::Mismatch => CertError::Mismatch { source_name },
        })?;
    let leaf = key
        .end_entity_cert()
        .map_err(|e| CertError::Leaf { source_name: cert.source.clone(), reason: e.to_string() })?;
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| CertError::Leaf { source_name: cert.source.clone(), reason: e.to_string() })?
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    Ok(LoadedCert { source: cert.source.clone(), names, key: Arc::new(key) })
}

/// Picks among one listener's certificates by SNI: exact SAN, then wildcard SAN, else the first.
#[derive(Debug)]
pub(crate) struct ListenerCerts {
    certs: Vec<LoadedCert>,
}

impl ListenerCerts {
    fn choose(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        if let Some(sni) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) {
            let exact = self.certs.iter().find(|c| c.names.contains(&sni));
            let wildcard = || {
                let parent = sni.split_once('.').map(|(_, p)| p)?;
                self.certs.iter().find(|c| {
                    c.names.iter().any(|n| n.strip_prefix("*.").is_some_and(|s| s == parent))
                })
            };
            if let Some(c) = exact.or_else(wildcard) {
                return Some(c);
            }
        }
        self.certs.first()
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name()).map(|c| c.key.clone())
    }
}

/// Builds the server config of one HTTPS listener (ALPN h2, then http/1.1), validating
/// client certificates when the listener asks for it.
pub(crate) fn server_config(
    certs: Vec<LoadedCert>,
    validation: Option<&ClientValidation>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match validation {
        None => builder.with_no_client_auth(),
        Some(v) => builder.with_client_cert_verifier(crate::client_auth::verifier(v)?),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ListenerCerts { certs }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `names` as a model certificate.
    pub(crate) fn self_signed(names: &[&str]) -> Certificate {
        let names = names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ck = rcgen::generate_simple_self_signed(names).unwrap();
        Certificate {
            source: "test".into(),
            chain_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        }
    }

    #[test]
    fn loads_and_lists_names() {
        let c = load(&self_signed(&["a.example.com", "*.b.example.com"])).unwrap();
        assert_eq!(c.names, ["a.example.com", "*.b.example.com"]);
    }

    /// PKCS#1 and SEC1 fixtures (throw-away test keys made with openssl), and Ed25519.
    #[test]
    fn loads_every_key_format() {
        let fixture = |chain: &str, key: &str| Certificate {
            source: "fixture".into(),
            chain_pem: chain.into(),
            key_pem: key.into(),
        };
        let rsa = fixture(include_str!("testdata/rsa.crt"), include_str!("testdata/rsa-pkcs1.key"));
        assert_eq!(load(&rsa).unwrap().names, ["rsa.example.com"]);
        let ec = fixture(include_str!("testdata/ec.crt"), include_str!("testdata/ec-sec1.key"));
        assert_eq!(load(&ec).unwrap().names, ["ec.example.com"]);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let params = rcgen::CertificateParams::new(vec!["ed.example.com".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ed = fixture(&cert.pem(), &key.serialize_pem());
        assert_eq!(load(&ed).unwrap().names, ["ed.example.com"]);
    }

    #[test]
    fn rejects_bad_pem_and_mismatched_key() {
        let good = self_signed(&["a.example.com"]);
        let other = self_signed(&["b.example.com"]);
        let bad_key = Certificate { key_pem: "garbage".into(), ..good.clone() };
        assert!(matches!(load(&bad_key), Err(CertError::Key { .. })));
        let no_chain = Certificate { chain_pem: String::new(), ..good.clone() };
        assert!(matches!(load(&no_chain), Err(CertError::EmptyChain { .. })));
        let mismatch = Certificate { key_pem: other.key_pem, ..good };
        assert!(matches!(load(&mismatch), Err(CertError::Mismatch { .. })));
    }

    #[test]
    fn chooses_exact_then_wildcard_then_first() {
        let certs = ListenerCerts {
            certs: vec![
                load(&self_signed(&["default.example.com"])).unwrap(),
                load(&self_signed(&["*.example.com"])).unwrap(),
                load(&self_signed(&["a.example.com"])).unwrap(),
            ],
        };
        let pick = |sni| certs.choose(sni).unwrap().names[0].clone();
        assert_eq!(pick(Some("a.example.com")), "a.example.com");
        assert_eq!(pick(Some("B.example.com")), "*.example.com");
        assert_eq!(pick(Some("x.y.example.com")), "default.example.com");
        assert_eq!(pick(None), "default.example.com");
    }
}
