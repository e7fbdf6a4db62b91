use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A throwaway certificate authority for TLS tests.
#[derive(Debug)]
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA with an ECDSA P-256 key.
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, "gatehouse test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf certificate for `names` (DNS SANs): `(chain_pem, key_pem)` with a PKCS#8 key.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// Signs `params` for `key`; the certificate's PEM.
    pub fn sign(&self, params: CertificateParams, key: &KeyPair) -> String {
        params.signed_by(key, &self.issuer).expect("sign").pem()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
