//! Per-rule traffic policy beyond routing: timeouts, retries, request mirrors and CORS.

use std::time::Duration;

use serde::Serialize;

use crate::Backend;

/// Timeouts and retries of one rule (Gateway API `rules[].timeouts` and `rules[].retry`).
///
/// A zero duration disables that bound (the spec's `0s`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RulePolicy {
    /// Bound from the request's arrival to the response head, every retry included;
    /// `None` = no bound beyond the backend timeout. Expiry answers 504.
    pub request_timeout: Option<Duration>,
    /// Bound for one attempt at a backend (connect to response head); `None` = the proxy's
    /// default upstream timeout. Expiry answers 504 (or retries, if the rule retries).
    pub backend_timeout: Option<Duration>,
    pub retry: Option<Retry>,
}

/// When and how often a failed backend request is sent again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Response status codes (400..=599) that are retried; connection errors and backend
    /// timeouts are always retried.
    pub codes: Vec<u16>,
    /// Retries after the first attempt; 0 disables retrying.
    pub attempts: u32,
    /// Pause before each retry.
    pub backoff: Duration,
}

/// A copy of each request sent to another backend, its response discarded
/// (Gateway API HTTPRequestMirrorFilter).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    pub backend: Backend,
    /// Share of requests mirrored: `numerator / denominator` (1/1 = every request).
    pub numerator: u32,
    pub denominator: u32,
}

/// Whether `origin` is a valid [`Cors::allow_origins`] entry: `*`, or `scheme://host[:port]`
/// whose host may start with a `*.` label.
pub fn is_cors_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
        return false;
    }
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => rest,
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Cross-origin resource sharing answered by the proxy (Gateway API HTTPCORSFilter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// `scheme://host[:port]` origins; `*` alone allows any, a `*` as the leftmost host label
    /// (`https://*.example.com`) allows any subdomain.
    pub allow_origins: Vec<String>,
    /// Upper-case methods, or `*`.
    pub allow_methods: Vec<String>,
    /// Header names, or `*`.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds a preflight answer may be cached.
    pub max_age: u32,
    pub allow_credentials: bool,
}
