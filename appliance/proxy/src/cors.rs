//! CORS (Gateway API HTTPCORSFilter): preflights answered by the proxy, CORS headers added to
//! the responses of allowed origins. A request from an origin that is not allowed is still
//! forwarded (the browser enforces CORS), but its response carries no CORS header.

use gatehouse_model::Cors;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::error::{ProxyBody, full};

/// A CORS filter with its header values formatted once.
#[derive(Debug)]
pub(crate) struct CorsPolicy {
    origins: Vec<OriginPattern>,
    any_origin: bool,
    credentials: bool,
    methods: Option<HeaderValue>,
    any_method: bool,
    headers: Option<HeaderValue>,
    any_header: bool,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// `scheme://host[:port]`, the host possibly `*.`-prefixed.
#[derive(Debug)]
struct OriginPattern {
    scheme: String,
    /// Lower-case; for a wildcard, the suffix after `*` (starting with `.`).
    host: String,
    wildcard: bool,
    port: Option<String>,
}

impl OriginPattern {
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let (host, port) = split_port(rest);
        let (host, wildcard) = match host.strip_prefix('*') {
            Some(suffix) => (suffix, true),
            None => (host, false),
        };
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            wildcard,
            port: port.map(str::to_owned),
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: Option<&str>) -> bool {
        let host_ok = if self.wildcard {
            host.len() > self.host.len() && host.ends_with(&self.host)
        } else {
            host == self.host
        };
        scheme == self.scheme && host_ok && port == self.port.as_deref()
    }
}

fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

fn join(values: &[String]) -> Option<HeaderValue> {
    if values.is_empty() {
        return None;
    }
    HeaderValue::from_str(&values.join(", ")).ok()
}

impl CorsPolicy {
    pub(crate) fn compile(c: &Cors) -> Self {
        let wild = |v: &[String]| v.iter().any(|x| x == "*");
        let named = |v: &[String]| v.iter().filter(|x| *x != "*").cloned().collect::<Vec<_>>();
        Self {
            origins: c.allow_origins.iter().filter_map(|o| OriginPattern::parse(o)).collect(),
            any_origin: wild(&c.allow_origins),
            credentials: c.allow_credentials,
            methods: join(&named(&c.allow_methods)),
            any_method: wild(&c.allow_methods),
            headers: join(&named(&c.allow_headers)),
            any_header: wild(&c.allow_headers),
            expose: join(&c.expose_headers),
            max_age: HeaderValue::from(c.max_age),
        }
    }

    /// Whether `origin` (the request's `Origin` value) is allowed.
    fn allows(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        let (host, port) = split_port(rest);
        let (scheme, host) = (scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
        self.origins.iter().any(|p| p.matches(&scheme, &host, port))
    }

    /// `Access-Control-Allow-Origin`: `*` only when any origin is allowed without credentials.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`),
    /// or `None` when the request is not one. A disallowed origin gets 204 without CORS headers.
    pub(crate) fn preflight(
        &self,
        method: &Method,
        req: &HeaderMap,
    ) -> Option<Response<ProxyBody>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = req.get(header::ORIGIN)?;
        let requested = req.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut resp = Response::new(full(""));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let Some(origin_text) = origin.to_str().ok().filter(|o| self.allows(o)) else {
            return Some(resp);
        };
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if self.credentials {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        // With credentials a `*` is taken literally by browsers: echo what was asked instead.
        let methods = if self.any_method {
            Some(if self.credentials { requested.clone() } else { HeaderValue::from_static("*") })
        } else {
            self.methods.clone()
        };
        if let Some(m) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        let asked_headers = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let headers = if self.any_header {
            if self.credentials {
                asked_headers.cloned()
            } else {
                Some(HeaderValue::from_static("*"))
            }
        } else {
            self.headers.clone()
        };
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if let Some(v) = &self.expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.append(header::VARY, HeaderValue::from_static("origin"));
        tracing::trace!(origin = origin_text, "CORS preflight answered");
        Some(resp)
    }

    /// Adds CORS headers to the response of an actual request from an allowed origin.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.allows(o))) else {
            return;
        };
        resp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if self.credentials {
            resp.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(v) = &self.expose {
            resp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        resp.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        CorsPolicy::compile(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-exposed".into()],
            max_age: 60,
            allow_credentials: credentials,
        })
    }

    fn preflight(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT".parse().unwrap());
        h
    }

    #[test]
    fn origins_exact_wildcard_and_port() {
        let p = policy(&["https://app.example.com", "http://*.example.org:8080"], false);
        assert!(p.allows("https://app.example.com"));
        assert!(p.allows("HTTPS://APP.example.com"));
        assert!(!p.allows("http://app.example.com"));
        assert!(!p.allows("https://app.example.com:8443"));
        assert!(p.allows("http://a.b.example.org:8080"));
        assert!(!p.allows("http://example.org:8080"));
        assert!(!p.allows("http://a.example.org"));
        assert!(!p.allows("null"));
        assert!(policy(&["*"], false).allows("https://anything.test"));
    }

    #[test]
    fn preflight_answers_allowed_origins_only() {
        let p = policy(&["https://app.example.com"], true);
        let resp = p.preflight(&Method::OPTIONS, &preflight("https://app.example.com")).unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-a");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "60");

        let denied = p.preflight(&Method::OPTIONS, &preflight("https://evil.test")).unwrap();
        assert!(denied.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        // Not a preflight: a plain OPTIONS or another method goes to the backend.
        assert!(p.preflight(&Method::GET, &preflight("https://app.example.com")).is_none());
        assert!(p.preflight(&Method::OPTIONS, &HeaderMap::new()).is_none());
    }

    #[test]
    fn wildcards_with_and_without_credentials() {
        let mut c = Cors { allow_origins: vec!["*".into()], ..Cors::default() };
        c.allow_methods = vec!["*".into()];
        let open = CorsPolicy::compile(&c);
        let resp = open.preflight(&Method::OPTIONS, &preflight("https://x.test")).unwrap();
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "*");
        c.allow_credentials = true;
        let creds = CorsPolicy::compile(&c);
        let resp = creds.preflight(&Method::OPTIONS, &preflight("https://x.test")).unwrap();
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://x.test");
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_METHODS], "PUT");
    }

    #[test]
    fn actual_responses_get_origin_and_exposed_headers() {
        let p = policy(&["https://app.example.com"], false);
        let mut resp = HeaderMap::new();
        p.decorate(Some(&HeaderValue::from_static("https://app.example.com")), &mut resp);
        assert_eq!(resp[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(resp[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-exposed");
        let mut other = HeaderMap::new();
        p.decorate(Some(&HeaderValue::from_static("https://evil.test")), &mut other);
        p.decorate(None, &mut other);
        assert!(other.is_empty());
    }
}
