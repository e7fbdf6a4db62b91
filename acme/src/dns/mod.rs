//! DNS-01: publishing `_acme-challenge` TXT records through one provider trait, and checking
//! that they are visible before the CA looks.
//!
//! Adding a provider is one file: implement [`DnsProvider`] and add an arm to [`provider`].

#[cfg(feature = "route53")]
mod aws_credentials;
mod cloudflare;
mod exec;
pub(crate) mod lookup;
mod propagation;
mod rfc2136;
#[cfg(feature = "route53")]
mod route53;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use gatehouse_model::acme::DnsProvider as Spec;
use serde::{Deserialize, Serialize};

pub use cloudflare::CloudflareProvider;
pub use exec::ExecProvider;
pub use propagation::PropagationCheck;
pub use rfc2136::Rfc2136Provider;
#[cfg(feature = "route53")]
pub use route53::Route53Provider;

/// One challenge record: `fqdn` (absolute, trailing dot) holds TXT `value`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxtRecord {
    pub fqdn: String,
    pub value: String,
}

/// Publishes and removes challenge records.
///
/// `present` must ADD the record beside any others at the same name (a name and its wildcard
/// share one TXT name and are validated together); `cleanup` removes exactly that value and
/// succeeds when it is already gone.
#[async_trait]
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// The provider's config name, for errors.
    fn name(&self) -> &'static str;
    /// Adds the record.
    async fn present(&self, record: &TxtRecord) -> Result<(), DnsError>;
    /// Removes the record.
    async fn cleanup(&self, record: &TxtRecord) -> Result<(), DnsError>;
}

/// Why a record could not be published, removed or looked up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The server refused the TSIG signature: wrong secret, key name or algorithm.
    #[error(
        "DNS server {server} rejected the TSIG signature of key {key}: wrong secret, key name or algorithm"
    )]
    TsigRejected { server: String, key: String },
    /// The server answered the update with an error code.
    #[error("DNS server {server} refused the update of {name}: {rcode}")]
    UpdateRefused { server: String, name: String, rcode: String },
    /// The server could not be reached.
    #[error("DNS server {server} unreachable: {message}")]
    Unreachable { server: String, message: String },
    /// No zone could be found for a name.
    #[error("no DNS zone found for {0}")]
    NoZone(String),
    /// A provider's API or hook failed.
    #[error("DNS provider {provider}: {message}")]
    Provider { provider: &'static str, message: String },
    /// The provider settings are unusable.
    #[error("DNS provider {provider} settings: {message}")]
    Settings { provider: &'static str, message: String },
}

impl DnsError {
    /// Whether the failed call certainly changed nothing on the server.
    pub fn nothing_written(&self) -> bool {
        matches!(
            self,
            DnsError::TsigRejected { .. }
                | DnsError::UpdateRefused { .. }
                | DnsError::NoZone(_)
                | DnsError::Settings { .. }
        )
    }
}

/// Builds the provider an issuer's settings describe.
pub fn provider(spec: &Spec) -> Result<Arc<dyn DnsProvider>, DnsError> {
    Ok(match spec {
        Spec::Rfc2136(s) => Arc::new(Rfc2136Provider::new(s)?),
        Spec::Exec(s) => Arc::new(ExecProvider::new(s)),
        Spec::Cloudflare(s) => Arc::new(CloudflareProvider::new(s)?),
        #[cfg(feature = "route53")]
        Spec::Route53(s) => Arc::new(Route53Provider::new(s)?),
        #[cfg(not(feature = "route53"))]
        Spec::Route53(_) => {
            return Err(DnsError::Settings {
                provider: "route53",
                message: "this gatehouse was built without the route53 feature".into(),
            });
        }
    })
}

/// `_acme-challenge.<name>.` for an identifier; a wildcard shares its base name's record.
pub fn challenge_name(identifier: &str) -> String {
    let base = identifier.strip_prefix("*.").unwrap_or(identifier);
    let base = base.trim_end_matches('.');
    format!("_acme-challenge.{base}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_and_its_base_share_one_challenge_name() {
        assert_eq!(challenge_name("*.example.test"), "_acme-challenge.example.test.");
        assert_eq!(challenge_name("example.test"), "_acme-challenge.example.test.");
        assert_eq!(challenge_name("www.example.test."), "_acme-challenge.www.example.test.");
    }
}
