//! ACME (RFC 8555) certificates by DNS-01, built in.
//!
//! Place in the data flow: this crate is one more config source. The daemon hands it the
//! issuers and certificate requests of the current [`Desired`](gatehouse_model::Desired); it
//! obtains and renews certificates (instant-acme underneath), keeps them in the state directory,
//! and the daemon publishes them into the model before compile, so a new certificate goes live
//! in the same atomic swap as its routes. Nothing here touches a data plane.
//!
//! - [`Issuer`]: account (created once, kept 0600 in `<state_dir>/acme/`), orders retried whole
//!   on badNonce, challenge records removed on every path.
//! - [`dns`]: the [`DnsProvider`](dns::DnsProvider) trait (RFC 2136 + TSIG, `exec`, Cloudflare)
//!   and the propagation check against authoritative servers.
//! - [`renew`]: when to renew and how long to back off, as pure functions.

mod cert;
pub mod dns;
mod error;
mod http;
mod issuer;
mod manager;
pub mod renew;
mod store;

pub use cert::{LeafInfo, leaf_info};
pub use error::AcmeError;
pub use issuer::{Issued, Issuer, Phases};
pub use manager::{BASE_BACKOFF, CertKey, Certs, Entry, Failure, MAX_BACKOFF, Manager, Wanted};
pub use store::{CertMeta, Store, StoreError, StoredCert, write_atomic};
