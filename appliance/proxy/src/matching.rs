//! Compiled request matches (path, headers, query, method) and their precedence order.

use std::cmp::Reverse;

use gatehouse_model::{HttpMatch, PathMatch, StringMatch};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// Upper bound for one compiled regex, so a hostile pattern cannot take the memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// The parts of a request that matching reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestView<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Why a match could not be compiled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MatchError {
    #[error("invalid regular expression {pattern:?}: {source}")]
    Regex {
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("invalid header name {0:?}")]
    HeaderName(String),
}

/// A path matcher; prefixes are stored without their trailing slash (`/` becomes empty).
#[derive(Debug)]
pub(crate) enum PathMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathMatcher {
    fn compile(path: &PathMatch) -> Result<Self, MatchError> {
        Ok(match path {
            PathMatch::Exact(p) => Self::Exact(p.clone()),
            PathMatch::Prefix(p) => Self::Prefix(normalize_prefix(p).to_owned()),
            PathMatch::Regex(r) => Self::Regex(full_match_regex(r)?),
        })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => prefix_matches(p, path),
            Self::Regex(r) => r.is_match(path),
        }
    }

    /// Precedence rank: Exact, then RegularExpression, then PathPrefix.
    ///
    /// The spec leaves regex precedence to the implementation; we rank it between Exact and
    /// PathPrefix because a regex is written to pick specific paths, as Envoy-based
    /// implementations do.
    fn rank(&self) -> u8 {
        match self {
            Self::Exact(_) => 0,
            Self::Regex(_) => 1,
            Self::Prefix(_) => 2,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Exact(p) | Self::Prefix(p) => p.len(),
            Self::Regex(r) => r.as_str().len(),
        }
    }
}

/// Strips the trailing slash of a prefix: the spec ignores it (`/foo/` matches `/foo`).
pub(crate) fn normalize_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// Segment-wise prefix match with a normalised prefix (see [`normalize_prefix`]).
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn full_match_regex(pattern: &str) -> Result<Regex, MatchError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|source| MatchError::Regex {
            pattern: pattern.to_owned(),
            source: Box::new(source),
        })
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn compile(value: &StringMatch) -> Result<Self, MatchError> {
        Ok(match value {
            StringMatch::Exact(v) => Self::Exact(v.clone()),
            StringMatch::Regex(r) => Self::Regex(full_match_regex(r)?),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(v) => v == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// One compiled `HttpMatch`: every condition must hold.
#[derive(Debug)]
pub(crate) struct CompiledMatch {
    pub path: PathMatcher,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
    method: Option<Method>,
}

impl CompiledMatch {
    pub(crate) fn compile(m: &HttpMatch) -> Result<Self, MatchError> {
        // Spec: of several entries with an equivalent name only the first counts.
        let mut headers: Vec<(HeaderName, ValueMatcher)> = Vec::new();
        for h in &m.headers {
            let name = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                .map_err(|_| MatchError::HeaderName(h.name.clone()))?;
            if !headers.iter().any(|(n, _)| *n == name) {
                headers.push((name, ValueMatcher::compile(&h.value)?));
            }
        }
        let mut query: Vec<(String, ValueMatcher)> = Vec::new();
        for q in &m.query {
            if !query.iter().any(|(n, _)| *n == q.name) {
                query.push((q.name.clone(), ValueMatcher::compile(&q.value)?));
            }
        }
        let method = match &m.method {
            Some(raw) => Some(
                Method::from_bytes(raw.as_bytes())
                    .map_err(|_| MatchError::HeaderName(raw.clone()))?,
            ),
            None => None,
        };
        Ok(Self { path: PathMatcher::compile(&m.path)?, headers, query, method })
    }

    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        if !self.path.matches(req.path) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return false;
        }
        let headers_ok = self.headers.iter().all(|(name, value)| {
            req.headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|v| value.matches(v)))
        });
        headers_ok
            && self.query.iter().all(|(name, value)| {
                query_value(req.query, name).is_some_and(|v| value.matches(&v))
            })
    }

    /// The spec's precedence within one hostname, most specific first (smaller sorts first).
    pub(crate) fn specificity(&self) -> impl Ord + use<> {
        (
            self.path.rank(),
            Reverse(self.path.len()),
            Reverse(self.method.is_some()),
            Reverse(self.headers.len()),
            Reverse(self.query.len()),
        )
    }
}

/// The first value of query parameter `name` (names compared exactly), percent-decoded.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes; invalid escapes and non-UTF-8 results are kept literally.
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

#[cfg(test)]
mod tests {
    use gatehouse_model::{HeaderMatch, QueryMatch};

    use super::*;

    fn view<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView { path, query, method: &Method::GET, headers }
    }

    fn path_match(p: PathMatch) -> CompiledMatch {
        CompiledMatch::compile(&HttpMatch { path: p, ..HttpMatch::default() }).unwrap()
    }

    #[test]
    fn prefix_is_segment_wise() {
        let h = HeaderMap::new();
        let m = path_match(PathMatch::Prefix("/foo".into()));
        for p in ["/foo", "/foo/", "/foo/bar"] {
            assert!(m.matches(&view(p, None, &h)), "{p}");
        }
        assert!(!m.matches(&view("/foobar", None, &h)));
        assert!(!m.matches(&view("/", None, &h)));
        let slash = path_match(PathMatch::Prefix("/foo/".into()));
        for p in ["/foo", "/foo/", "/foo/bar"] {
            assert!(slash.matches(&view(p, None, &h)), "{p}");
        }
        assert!(!slash.matches(&view("/foobar", None, &h)));
        let root = path_match(PathMatch::Prefix("/".into()));
        assert!(root.matches(&view("/", None, &h)));
        assert!(root.matches(&view("/anything/at/all", None, &h)));
    }

    #[test]
    fn exact_and_regex_are_full_matches() {
        let h = HeaderMap::new();
        let exact = path_match(PathMatch::Exact("/foo".into()));
        assert!(exact.matches(&view("/foo", None, &h)));
        assert!(!exact.matches(&view("/foo/", None, &h)));
        let re = path_match(PathMatch::Regex("/v[0-9]+".into()));
        assert!(re.matches(&view("/v12", None, &h)));
        assert!(!re.matches(&view("/v12/x", None, &h)));
        assert!(!re.matches(&view("/x/v12", None, &h)));
        let alt = path_match(PathMatch::Regex("/a|/b".into()));
        assert!(!alt.matches(&view("/a/c", None, &h)), "alternation must stay anchored");
        assert!(
            CompiledMatch::compile(&HttpMatch {
                path: PathMatch::Regex("(".into()),
                ..HttpMatch::default()
            })
            .is_err()
        );
    }

    #[test]
    fn headers_case_insensitive_names_query_exact_names() {
        let m = CompiledMatch::compile(&HttpMatch {
            headers: vec![HeaderMatch {
                name: "X-Env".into(),
                value: StringMatch::Exact("canary".into()),
            }],
            query: vec![QueryMatch {
                name: "Tier".into(),
                value: StringMatch::Regex("g.*".into()),
            }],
            ..HttpMatch::default()
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-env", "canary".parse().unwrap());
        assert!(m.matches(&view("/", Some("a=1&Tier=gold"), &h)));
        assert!(!m.matches(&view("/", Some("tier=gold"), &h)), "query names are case-sensitive");
        assert!(m.matches(&view("/", Some("Tier=g%6Fld"), &h)), "values are percent-decoded");
        h.insert("x-env", "Canary".parse().unwrap());
        assert!(!m.matches(&view("/", Some("Tier=gold"), &h)), "values are case-sensitive");
    }

    #[test]
    fn method_must_match() {
        let m = CompiledMatch::compile(&HttpMatch {
            method: Some("POST".into()),
            ..HttpMatch::default()
        })
        .unwrap();
        let h = HeaderMap::new();
        assert!(!m.matches(&view("/", None, &h)));
        let post = RequestView { path: "/", query: None, method: &Method::POST, headers: &h };
        assert!(m.matches(&post));
    }

    #[test]
    fn specificity_orders_exact_regex_prefix_then_length() {
        let exact = path_match(PathMatch::Exact("/a".into()));
        let regex = path_match(PathMatch::Regex("/a.*".into()));
        let long = path_match(PathMatch::Prefix("/a/b".into()));
        let short = path_match(PathMatch::Prefix("/a".into()));
        assert!(exact.specificity() < regex.specificity());
        assert!(regex.specificity() < long.specificity());
        assert!(long.specificity() < short.specificity());
        let with_method = CompiledMatch::compile(&HttpMatch {
            path: PathMatch::Prefix("/a".into()),
            method: Some("GET".into()),
            ..HttpMatch::default()
        })
        .unwrap();
        assert!(with_method.specificity() < short.specificity());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
