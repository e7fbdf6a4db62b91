//! Facts read from an issued PEM chain: validity and the ARI certificate identifier.

use std::time::{Duration, SystemTime};

use instant_acme::CertificateIdentifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Validity and identity of a chain's leaf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// RFC 9773 identifier (AKI + serial), when the leaf has an AKI.
    pub ari_id: Option<String>,
}

/// Reads the leaf of a PEM chain.
pub fn leaf_info(chain_pem: &str) -> Result<LeafInfo, String> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("no certificate in the chain")?
        .map_err(|e| format!("chain PEM: {e}"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("leaf certificate: {e}"))?;
    let validity = parsed.validity();
    let at = |secs: i64| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or_default())
    };
    let ari_id = CertificateIdentifier::try_from(&leaf).ok().map(|id| id.to_string());
    Ok(LeafInfo {
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
        ari_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_is_read_from_the_leaf() {
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example.test".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 4, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let info = leaf_info(&cert.pem()).expect("info");
        let days = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH).expect("epoch").as_secs() / 86_400
        };
        assert_eq!(days(info.not_after) - days(info.not_before), 90);
        assert!(leaf_info("garbage").is_err());
    }
}
