//! Errors with their place in the config file.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use gatehouse_ipam::BlockError;
use gatehouse_model::HostnameError;

/// A 1-based line and column (in characters) inside a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text` (clamped to the text's end).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where an error is: a file, and a position in it when the error is about its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub position: Option<Position>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(position) => write!(f, "{}:{position}", self.file.display()),
            None => write!(f, "{}", self.file.display()),
        }
    }
}

/// One error in a config file, displayed as `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct ConfigError {
    pub place: Place,
    pub problem: Problem,
}

/// Every error found in one config file, in file order; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        debug_assert!(!errors.is_empty());
        Self(errors)
    }

    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Allowed `lease_duration_seconds`: renewing every third of it must stay above a second's
/// fraction, and a takeover slower than an hour is no failover.
pub const LEASE_DURATION_RANGE: std::ops::RangeInclusive<u64> = 2..=3600;

/// What is wrong, without its place.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the config file: {0}")]
    Read(String),
    /// TOML syntax or schema (unknown key, wrong type, missing field) error.
    #[error("{0}")]
    Syntax(String),
    #[error("{value:?} is not a socket address (IP:PORT): {reason}")]
    InvalidSocketAddr { value: String, reason: String },
    #[error("{value:?} is not an IP address: {reason}")]
    InvalidIp { value: String, reason: String },
    #[error("{value:?} is not HOST:PORT: {reason}")]
    InvalidHostPort { value: String, reason: String },
    #[error(transparent)]
    InvalidHostname(#[from] HostnameError),
    #[error("{0:?} is a wildcard; a precise hostname is required here")]
    WildcardNotAllowed(String),
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error(
        "invalid {what} name {name:?}: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
    )]
    InvalidName { what: &'static str, name: String },
    #[error("duplicate {what} name {name:?} (first defined at {first})")]
    DuplicateName { what: &'static str, name: String, first: Position },
    #[error(
        "controller name {0:?} must be a domain-prefixed path, like \"gatehouse.dev/gateway-controller\""
    )]
    InvalidControllerName(String),
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error(
        "invalid namespace {0:?}: use lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    )]
    InvalidNamespace(String),
    #[error("duplicate namespace {0:?}")]
    DuplicateNamespace(String),
    #[error(
        "[kubernetes] and [gateway_api] manifests cannot be used together yet: Gateway API objects come either from a cluster or from files"
    )]
    ClusterWithManifests,
    #[error("lease_duration_seconds must be between {min} and {max}", min = LEASE_DURATION_RANGE.start(), max = LEASE_DURATION_RANGE.end())]
    LeaseDuration,
    #[error("parent {parent:?}: {reason}")]
    UnknownParent { parent: String, reason: String },
    #[error("parent {parent:?}: no listener hostname intersects the route's hostnames")]
    NoMatchingListenerHostname { parent: String },
    #[error("an HTTPS listener needs tls.certificates")]
    MissingCertificates,
    #[error("tls is only allowed on HTTPS listeners")]
    UnexpectedTls,
    #[error("port must be between 1 and 65535")]
    ZeroPort,
    #[error("weight {0} is out of range 0..=1000000")]
    WeightOutOfRange(u32),
    #[error("cannot read {path}: {reason}")]
    UnreadableFile { path: String, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} is not valid PEM: {reason}")]
    InvalidPem { path: String, reason: String },
    #[error("{path} holds no PEM private key (PKCS#1, PKCS#8 or SEC1)")]
    NoPrivateKey { path: String },
    #[error(
        "path {0:?} must start with '/' and contain no '//', '/./', '/../', '%2f', '%2F' or '#', nor end in '/.' or '/..'"
    )]
    InvalidPath(String),
    #[error(
        "method {0:?} is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"
    )]
    InvalidMethod(String),
    #[error("{0:?} is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error("header value {0:?} contains control characters")]
    InvalidHeaderValue(String),
    #[error("a match needs exactly one of `exact` or `regex`")]
    StringMatchForm,
    #[error("redirect status {0} is not one of 301, 302, 303, 307, 308")]
    InvalidRedirectStatus(u16),
    #[error("scheme {0:?} is not \"http\" or \"https\"")]
    InvalidScheme(String),
    #[error("filter {0} appears more than once in one filter list")]
    DuplicateFilter(&'static str),
    #[error("request_redirect and url_rewrite cannot be used together")]
    RedirectWithRewrite,
    #[error("replace_prefix needs every match of the rule to be a path prefix match")]
    ReplacePrefixWithoutPrefixMatch,
    #[error("request_redirect cannot be used together with backends")]
    RedirectWithBackends,
    #[error("a backend needs exactly one of `address` or `dns`")]
    BackendForm,
    #[error("backend_request_ms must not be 0 or longer than request_ms")]
    BackendTimeoutOverRequest,
    #[error("retry code {0} is not within 400..=599")]
    InvalidRetryCode(u16),
    #[error("mirror percent {0} is over 100")]
    MirrorPercent(u32),
    #[error(
        "CORS origin {0:?} is not \"*\" or scheme://host[:port] (the host may start with \"*.\")"
    )]
    InvalidCorsOrigin(String),
    #[error("request_redirect is only allowed in a rule's filters, not a backend's")]
    RedirectOnBackend,
    #[error(transparent)]
    InvalidBlock(#[from] BlockError),
    #[error("a pool needs at least one entry in `cidrs` or `ranges`")]
    PoolWithoutAddresses,
    #[error("addresses {block} overlap {other} of pool {pool:?} (at {first})")]
    PoolOverlap { block: String, other: String, pool: String, first: Position },
    #[error("operator {0:?} is not one of In, NotIn, Exists, DoesNotExist")]
    InvalidOperator(String),
    #[error("operator {operator} needs `values` exactly when it is In or NotIn")]
    SelectorValues { operator: String },
    /// An `[acme]` setting or a listener's `tls.acme` is unusable.
    #[error("{0}")]
    Acme(String),
    #[error("no [[plugins]] entry is named {0:?}")]
    UnknownPlugin(String),
    #[error("sha256 {0:?} is not 64 hexadecimal digits")]
    InvalidSha256(String),
    #[error("a module fetched from a URL needs sha256")]
    PluginUrlNeedsSha256,
    #[error("plugin {plugin:?} upstream {upstream:?}: {reason}")]
    PluginUpstreamTls { plugin: String, upstream: String, reason: String },
    #[error("timeout_ms must be between 1 and 60000")]
    PluginTimeout,
    #[error(
        "memory_limit {0:?} must be between 1MiB and 1GiB (bytes, or a number with KiB, MiB or GiB)"
    )]
    PluginMemoryLimit(String),
    /// An `[xdp]` setting or an `[[l4_services]]` entry is unusable.
    #[error("{0}")]
    Xdp(String),
    /// An `[l4]` setting is out of range.
    #[error("{0}")]
    L4(String),
}

/// Collects errors while validating one file.
#[derive(Debug)]
pub(crate) struct Errors<'a> {
    file: PathBuf,
    text: &'a str,
    errors: Vec<(usize, ConfigError)>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(file: PathBuf, text: &'a str) -> Self {
        Self { file, text, errors: Vec::new() }
    }

    /// The position of a span's start.
    pub(crate) fn position(&self, span: &Range<usize>) -> Position {
        Position::of_offset(self.text, span.start)
    }

    /// Records a problem at a span of the text.
    pub(crate) fn push(&mut self, span: &Range<usize>, problem: impl Into<Problem>) {
        let place = Place { file: self.file.clone(), position: Some(self.position(span)) };
        self.errors.push((span.start, ConfigError { place, problem: problem.into() }));
    }

    /// `Ok(value)` when nothing was recorded, else every error sorted by place.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() { Ok(value) } else { Err(self.into_errors()) }
    }

    /// The recorded errors sorted by place; call only after recording one.
    pub(crate) fn into_errors(mut self) -> ConfigErrors {
        // Stable: problems at one place keep the order they were found in.
        self.errors.sort_by_key(|(offset, _)| *offset);
        ConfigErrors::new(self.errors.into_iter().map(|(_, e)| e).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_column() {
        let text = "ab\ncdé\nf";
        assert_eq!(Position::of_offset(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of_offset(text, 3), Position { line: 2, column: 1 });
        assert_eq!(Position::of_offset(text, 7), Position { line: 2, column: 4 });
        // Inside a multi-byte character: clamps back to its start.
        assert_eq!(Position::of_offset(text, 6), Position { line: 2, column: 3 });
        assert_eq!(Position::of_offset(text, 100), Position { line: 3, column: 2 });
    }
}
