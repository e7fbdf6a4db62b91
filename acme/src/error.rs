//! Why an issuance failed, as a typed reason the status and the retry policy can act on.

use std::time::{Duration, SystemTime};

use crate::dns::DnsError;
use crate::store::StoreError;

/// ACME problem type for a rejected nonce (RFC 8555 §6.7).
pub(crate) const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
/// ACME problem type for a rate limit (RFC 8555 §6.7).
pub(crate) const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA refused because of a rate limit; retry no earlier than `retry_after`.
    #[error("ACME CA rate limit: {detail}")]
    RateLimited { detail: String, retry_after: Option<SystemTime> },
    /// The CA kept rejecting nonces even after whole orders were retried.
    #[error("ACME CA rejected the request nonce {attempts} orders in a row: {detail}")]
    BadNonce { attempts: u32, detail: String },
    /// The CA answered with a problem document.
    #[error("ACME CA error: {detail}")]
    Ca { detail: String, retry_after: Option<SystemTime> },
    /// The CA could not be reached or answered something that is not ACME.
    #[error("ACME CA unreachable: {0}")]
    Transport(String),
    /// The order (or one of its authorizations) went invalid: validation failed.
    #[error("ACME order invalid: {0}")]
    OrderInvalid(String),
    /// The CA did not finish validating or issuing in time.
    #[error("ACME CA did not finish in {0:?}")]
    Timeout(Duration),
    /// Publishing or removing a challenge record failed.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// A published record did not become visible on every server in time.
    #[error("TXT record {name} not visible on {server} after {waited:?}")]
    Propagation { name: String, server: String, waited: Duration },
    /// The state directory could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The issuer's settings are unusable (bad EAB key, unreadable CA roots).
    #[error("ACME issuer settings: {0}")]
    Settings(String),
    /// The CA handed out something that is not a usable certificate.
    #[error("certificate from the CA is unusable: {0}")]
    Certificate(String),
}

impl AcmeError {
    /// A short CamelCase reason for status conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            AcmeError::RateLimited { .. } => "RateLimited",
            AcmeError::BadNonce { .. } => "BadNonce",
            AcmeError::Ca { .. } => "CAError",
            AcmeError::Transport(_) => "CAUnreachable",
            AcmeError::OrderInvalid(_) => "OrderInvalid",
            AcmeError::Timeout(_) => "Timeout",
            AcmeError::Dns(_) => "DNSError",
            AcmeError::Propagation { .. } => "PropagationTimeout",
            AcmeError::Store(_) => "StateError",
            AcmeError::Settings(_) => "InvalidIssuer",
            AcmeError::Certificate(_) => "InvalidCertificate",
        }
    }

    /// When the CA asked us to come back, if it did.
    pub fn retry_after(&self) -> Option<SystemTime> {
        match self {
            AcmeError::RateLimited { retry_after, .. } | AcmeError::Ca { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// Classifies an instant-acme error; `retry_after` is the CA's last Retry-After header.
    pub(crate) fn from_acme(err: instant_acme::Error, retry_after: Option<SystemTime>) -> Self {
        match err {
            instant_acme::Error::Api(problem) => {
                let detail = problem.to_string();
                match problem.r#type.as_deref() {
                    Some(RATE_LIMITED) => AcmeError::RateLimited { detail, retry_after },
                    Some(BAD_NONCE) => AcmeError::BadNonce { attempts: 1, detail },
                    _ => AcmeError::Ca { detail, retry_after },
                }
            }
            instant_acme::Error::Timeout(_) => AcmeError::Timeout(Duration::ZERO),
            instant_acme::Error::Json(e) => {
                AcmeError::Transport(format!("answer is not an ACME document: {e}"))
            }
            other => AcmeError::Transport(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str) -> instant_acme::Error {
        let json = format!(r#"{{"type":"{kind}","detail":"slow down","status":429}}"#);
        match serde_json::from_str::<instant_acme::Problem>(&json) {
            Ok(p) => instant_acme::Error::Api(p),
            Err(e) => panic!("problem json: {e}"),
        }
    }

    #[test]
    fn rate_limits_are_typed_and_keep_retry_after() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let err = AcmeError::from_acme(problem(RATE_LIMITED), Some(at));
        assert_eq!(err.reason(), "RateLimited");
        assert_eq!(err.retry_after(), Some(at));
        assert!(err.to_string().contains("slow down"), "{err}");
    }

    #[test]
    fn bad_nonce_and_other_problems_are_told_apart() {
        assert_eq!(AcmeError::from_acme(problem(BAD_NONCE), None).reason(), "BadNonce");
        assert_eq!(
            AcmeError::from_acme(problem("urn:ietf:params:acme:error:serverInternal"), None)
                .reason(),
            "CAError"
        );
    }
}
