//! ACME issuers and what they certify, as every source describes them.
//!
//! Plain data: the TOML file (`[[acme.issuers]]`, a listener's `tls.acme`) and Gateway API
//! (cert-manager annotations) both end here; the `gatehouse-acme` crate acts on it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::Hostname;

/// A secret string (TSIG secret, API token, EAB HMAC key): never printed, never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// An ACME certificate authority account plus the way its DNS-01 challenges are published.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcmeIssuer {
    /// Unique name; listeners and cert-manager annotations refer to it.
    pub name: String,
    /// The CA's RFC 8555 directory URL.
    pub directory_url: String,
    /// Contact URLs (`mailto:…`) registered with the account.
    pub contact: Vec<String>,
    /// External account binding (ZeroSSL and other CAs that require one).
    pub eab: Option<ExternalAccountBinding>,
    /// How `_acme-challenge` TXT records are published.
    pub dns: DnsProvider,
    /// How the published records are checked before the CA is asked to validate.
    pub propagation: Propagation,
    /// PEM file of extra roots trusted for the CA's HTTPS endpoint (a private CA such as pebble).
    pub ca_roots: Option<PathBuf>,
}

/// RFC 8555 §7.3.4 external account binding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExternalAccountBinding {
    pub key_id: String,
    /// Base64url HMAC key as the CA hands it out.
    pub hmac_key: Secret,
}

/// The DNS provider that publishes challenge records.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum DnsProvider {
    /// RFC 2136 dynamic update signed with TSIG (BIND, Knot, PowerDNS).
    Rfc2136(Rfc2136),
    /// An operator's program called as `<command> present|cleanup` with the record in env vars.
    Exec(ExecHook),
    /// The Cloudflare v4 API with an API token.
    Cloudflare(Cloudflare),
    /// Amazon Route53, signed with SigV4 (gatehouse-acme feature `route53`).
    Route53(Route53),
}

impl DnsProvider {
    /// The provider's name as written in config.
    pub fn kind(&self) -> &'static str {
        match self {
            DnsProvider::Rfc2136(_) => "rfc2136",
            DnsProvider::Exec(_) => "exec",
            DnsProvider::Cloudflare(_) => "cloudflare",
            DnsProvider::Route53(_) => "route53",
        }
    }
}

/// RFC 2136 settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rfc2136 {
    /// The primary server that accepts updates.
    pub server: SocketAddr,
    /// The zone to update; found from the SOA when absent.
    pub zone: Option<String>,
    /// TSIG key name as the server knows it.
    pub key_name: String,
    pub algorithm: TsigAlgorithm,
    /// Base64 TSIG secret.
    pub secret: Secret,
}

/// TSIG MAC algorithms supported for updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

/// `exec` hook settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecHook {
    pub command: PathBuf,
    /// Arguments placed before `present` / `cleanup`.
    pub args: Vec<String>,
    /// How long one call may run.
    pub timeout: Duration,
}

/// Cloudflare settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cloudflare {
    pub api_token: Secret,
    /// The zone id; looked up by name when absent.
    pub zone_id: Option<String>,
    /// API base URL (tests point it elsewhere).
    pub api_url: String,
}

/// Route53 settings. Credentials are read at each call: with `profile`, from that profile of
/// the shared credentials file; otherwise from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
/// (+ `AWS_SESSION_TOKEN`), else the `AWS_PROFILE` (or `default`) profile of the file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route53 {
    /// The hosted zone id (`Z…`); found with ListHostedZonesByName when absent.
    pub hosted_zone_id: Option<String>,
    /// A profile of the shared credentials file.
    pub profile: Option<String>,
    /// The shared credentials file; `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub credentials_file: Option<PathBuf>,
    /// The SigV4 signing region (Route53 is global: `us-east-1` in the commercial partition).
    pub region: String,
    /// API base URL (tests point it elsewhere).
    pub api_url: String,
}

/// Propagation check settings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Propagation {
    /// Give up (and clean up) after this long.
    pub timeout: Duration,
    /// Time between two checks.
    pub interval: Duration,
    /// Servers to check instead of the zone's authoritative servers found from NS records.
    pub resolvers: Vec<SocketAddr>,
}

impl Default for Propagation {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            interval: Duration::from_millis(250),
            resolvers: Vec::new(),
        }
    }
}

/// One certificate to obtain and keep renewed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct CertificateRequest {
    /// Name of the [`AcmeIssuer`].
    pub issuer: String,
    /// DNS names (wildcards allowed), the first is the common name.
    pub names: Vec<Hostname>,
    /// Renew this long before expiry instead of at 2/3 of the lifetime (cert-manager's
    /// `renew-before`).
    pub renew_before: Option<Duration>,
}

/// A listener whose certificate comes from ACME.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ListenerCertificateRequest {
    pub listener: crate::ListenerId,
    pub request: CertificateRequest,
}
