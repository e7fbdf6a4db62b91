//! Client certificate validation on HTTPS listeners (Gateway API frontend validation).
//!
//! `RequireValid` is rustls' WebPKI client verifier as is: no certificate, or one that does
//! not chain to the listener's CAs, fails the handshake. `AllowInsecureFallback` asks for a
//! certificate but serves the client whatever it presents: a missing or invalid one is
//! logged (debug) and ignored. Nothing downstream trusts a client identity, so ignoring is
//! all the fallback needs.

use std::sync::Arc;

use gatehouse_model::{ClientValidation, ClientValidationMode};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::tls::provider;

/// The verifier of a listener's client validation.
pub(crate) fn verifier(v: &ClientValidation) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    for bundle in &v.roots {
        let certs = CertificateDer::pem_slice_iter(bundle.pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| rustls::Error::General(format!("{}: {e}", bundle.source)))?;
        roots.add_parsable_certificates(certs);
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| rustls::Error::General(format!("client CA certificates: {e}")))?;
    Ok(match v.mode {
        ClientValidationMode::RequireValid => inner,
        ClientValidationMode::AllowInsecureFallback => Arc::new(InsecureFallback { inner }),
    })
}

/// Asks for a client certificate and accepts the client whatever it presents.
#[derive(Debug)]
struct InsecureFallback {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InsecureFallback {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now).or_else(|e| {
            tracing::debug!(error = %e, "invalid client certificate accepted (AllowInsecureFallback)");
            Ok(ClientCertVerified::assertion())
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
