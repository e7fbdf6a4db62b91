//! Compiled rule and backend filters: header modifiers, URL rewrite and the redirect marker.

use std::sync::Arc;

use std::sync::atomic::AtomicUsize;

use gatehouse_model::{HeaderModifier, HttpFilter, PathModifier, Redirect, Rewrite};
use gatehouse_wasm::{Plugin, Plugins};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::cors::CorsPolicy;
use crate::matching::{PathMatcher, normalize_prefix, prefix_matches};
use crate::table::CompiledBackend;

/// A header modifier with names and values parsed once.
#[derive(Debug, Default)]
pub(crate) struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(m: &HeaderModifier) -> Result<Self, FilterError> {
        let pair = |(n, v): &(String, String)| -> Result<(HeaderName, HeaderValue), FilterError> {
            Ok((
                header_name(n)?,
                HeaderValue::from_str(v).map_err(|_| FilterError::HeaderValue(n.clone()))?,
            ))
        };
        Ok(Self {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: m.remove.iter().map(|n| header_name(n)).collect::<Result<_, _>>()?,
        })
    }

    /// Applies remove, then set (replacing every value), then add (appending a value).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn header_name(raw: &str) -> Result<HeaderName, FilterError> {
    HeaderName::from_bytes(raw.to_ascii_lowercase().as_bytes())
        .map_err(|_| FilterError::HeaderName(raw.to_owned()))
}

/// Why a filter could not be compiled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("invalid value for header {0:?}")]
    HeaderValue(String),
    #[error("wasm plugin {0:?} is not loaded")]
    UnknownPlugin(String),
}

/// The filters of one rule or one backend, grouped by kind.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub request_headers: Vec<HeaderOps>,
    pub response_headers: Vec<HeaderOps>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    /// proxy-wasm plugins, in order.
    pub wasm: Vec<Arc<Plugin>>,
    /// Backends that get a copy of (a share of) the requests.
    pub mirrors: Vec<CompiledMirror>,
    pub cors: Option<CorsPolicy>,
}

/// A mirror backend and the share of requests it gets.
#[derive(Debug)]
pub(crate) struct CompiledMirror {
    pub backend: CompiledBackend,
    pub numerator: u32,
    pub denominator: u32,
}

impl CompiledMirror {
    /// Whether this request is mirrored (a fresh random draw per request).
    pub(crate) fn draw(&self) -> bool {
        self.numerator >= self.denominator
            || (self.numerator > 0 && rand::random_range(0..self.denominator) < self.numerator)
    }
}

impl Filters {
    pub(crate) fn compile(filters: &[HttpFilter], plugins: &Plugins) -> Result<Self, FilterError> {
        let mut out = Self::default();
        for f in filters {
            match f {
                HttpFilter::RequestHeaderModifier(m) => {
                    out.request_headers.push(HeaderOps::compile(m)?)
                }
                HttpFilter::ResponseHeaderModifier(m) => {
                    out.response_headers.push(HeaderOps::compile(m)?)
                }
                HttpFilter::RequestRedirect(r) => out.redirect = Some(r.clone()),
                HttpFilter::UrlRewrite(r) => out.rewrite = Some(r.clone()),
                HttpFilter::RequestMirror(m) => out.mirrors.push(CompiledMirror {
                    backend: CompiledBackend {
                        weight: 1,
                        target: crate::compile::target(&m.backend),
                        filters: Filters::default(),
                        cursor: AtomicUsize::new(0),
                    },
                    numerator: m.numerator,
                    denominator: m.denominator,
                }),
                HttpFilter::Cors(c) => out.cors = Some(CorsPolicy::compile(c)),
                HttpFilter::Wasm { plugin } => out.wasm.push(
                    plugins
                        .get(plugin)
                        .cloned()
                        .ok_or_else(|| FilterError::UnknownPlugin(plugin.clone()))?,
                ),
            }
        }
        Ok(out)
    }
}

/// Applies a path modifier of a redirect or rewrite to `path`, given the rule's path match.
///
/// `ReplacePrefixMatch` needs a prefix match (an exact match counts as a prefix equal to the
/// whole path); with a regex match the path is left unchanged.
pub(crate) fn modify_path(modifier: &PathModifier, matched: &PathMatcher, path: &str) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(full) => full.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = match matched {
                PathMatcher::Prefix(p) if prefix_matches(p, path) => p.as_str(),
                PathMatcher::Exact(p) if p == path => normalize_prefix(p),
                _ => return path.to_owned(),
            };
            replace_prefix(prefix, replacement, path)
        }
    }
}

/// The spec's slash handling: `/foo` → `/xyz` turns `/foo/bar` into `/xyz/bar`; a replacement
/// of `/` turns `/foo/bar` into `/bar` and `/foo` into `/`.
fn replace_prefix(prefix: &str, replacement: &str, path: &str) -> String {
    let rest = &path[prefix.len().min(path.len())..];
    let head = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(head.len() + rest.len() + 1);
    if !(head.starts_with('/') || head.is_empty() && rest.starts_with('/')) {
        out.push('/');
    }
    out.push_str(head);
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str) -> PathMatcher {
        PathMatcher::Prefix(normalize_prefix(p).to_owned())
    }

    fn rp(r: &str) -> PathModifier {
        PathModifier::ReplacePrefixMatch(r.into())
    }

    #[test]
    fn replace_prefix_match_follows_spec_table() {
        let cases = [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo/", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo/", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/bar", "", "/bar"),
            ("/foo", "/foo", "", "/"),
            ("/", "/bar", "/foo", "/foo/bar"),
            ("/prefix/one", "/prefix/one/two", "/one", "/one/two"),
        ];
        for (pfx, path, repl, want) in cases {
            assert_eq!(modify_path(&rp(repl), &prefix(pfx), path), want, "{pfx} {path} {repl}");
        }
    }

    #[test]
    fn full_path_and_non_prefix_matches() {
        let m = prefix("/foo");
        assert_eq!(modify_path(&PathModifier::ReplaceFullPath("/x".into()), &m, "/foo/a"), "/x");
        let exact = PathMatcher::Exact("/foo".into());
        assert_eq!(modify_path(&rp("/bar"), &exact, "/foo"), "/bar");
        let re = PathMatcher::Regex(regex::Regex::new("^(?:/foo.*)$").unwrap());
        assert_eq!(modify_path(&rp("/bar"), &re, "/foo/x"), "/foo/x");
    }

    #[test]
    fn header_ops_remove_set_add() {
        let ops = HeaderOps::compile(&HeaderModifier {
            set: vec![("X-Set".into(), "s".into())],
            add: vec![("x-add".into(), "a".into())],
            remove: vec!["X-Remove".into()],
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.append("x-set", "old1".parse().unwrap());
        h.append("x-set", "old2".parse().unwrap());
        h.insert("x-add", "orig".parse().unwrap());
        h.insert("x-remove", "gone".parse().unwrap());
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["s"]);
        assert_eq!(h.get_all("x-add").iter().collect::<Vec<_>>(), ["orig", "a"]);
        assert!(!h.contains_key("x-remove"));
        assert!(
            HeaderOps::compile(&HeaderModifier {
                remove: vec!["bad name".into()],
                ..Default::default()
            })
            .is_err()
        );
    }
}
