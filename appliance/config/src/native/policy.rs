//! A native rule's `timeouts` and `retry` into the model's [`RulePolicy`], and the
//! `request_mirror` and `cors` filters.

use std::time::Duration;

use std::ops::Range;

use gatehouse_model::{
    Backend, BackendEndpoints, BackendProtocol, Cors, HttpFilter, Mirror, Retry, RulePolicy,
    is_cors_origin,
};
use toml::Spanned;

use super::Cx;
use crate::error::Problem;
use crate::schema;

/// Retries when `retry.attempts` is left out.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Pause before a retry when `retry.backoff_ms` is left out.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);
/// Seconds a CORS preflight answer may be cached when `max_age_seconds` is left out (the
/// Gateway API default).
pub const DEFAULT_CORS_MAX_AGE: u32 = 5;

impl Cx<'_, '_> {
    pub(super) fn rule_policy(
        &mut self,
        timeouts: Option<Spanned<schema::Timeouts>>,
        retry: Option<schema::Retry>,
    ) -> RulePolicy {
        let mut policy = RulePolicy::default();
        if let Some(t) = timeouts {
            let span = t.span();
            let t = t.into_inner();
            policy.request_timeout = t.request_ms.map(Duration::from_millis);
            policy.backend_timeout = t.backend_request_ms.map(Duration::from_millis);
            if let (Some(request), Some(backend)) = (t.request_ms, t.backend_request_ms)
                && request > 0
                && (backend == 0 || backend > request)
            {
                self.errors.push(&span, Problem::BackendTimeoutOverRequest);
            }
        }
        if let Some(r) = retry {
            let mut codes = Vec::new();
            for code in r.codes {
                if !(400..=599).contains(code.get_ref()) {
                    self.errors.push(&code.span(), Problem::InvalidRetryCode(*code.get_ref()));
                }
                codes.push(code.into_inner());
            }
            codes.sort_unstable();
            codes.dedup();
            policy.retry = Some(Retry {
                codes,
                attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
                backoff: r.backoff_ms.map_or(DEFAULT_RETRY_BACKOFF, Duration::from_millis),
            });
        }
        policy
    }

    /// A `request_mirror` filter; `None` (with its error recorded) when its backend is bad.
    pub(super) fn mirror(&mut self, m: schema::Mirror, span: &Range<usize>) -> Option<HttpFilter> {
        let percent = m.percent.map_or(100, |p| {
            if *p.get_ref() > 100 {
                self.errors.push(&p.span(), Problem::MirrorPercent(*p.get_ref()));
            }
            *p.get_ref()
        });
        let backend = match (m.address, m.dns) {
            (Some(address), None) => {
                let addr = self.socket_addr(&address)?;
                let name = addr.to_string();
                let protocol = BackendProtocol::Http1;
                Backend::Endpoints(BackendEndpoints {
                    name,
                    addrs: vec![addr],
                    tls: None,
                    protocol,
                })
            }
            (None, Some(dns)) => {
                let (host, port) = self.host_port(&dns)?;
                let protocol = BackendProtocol::Http1;
                Backend::Dns { name: format!("{host}:{port}"), host, port, protocol }
            }
            _ => {
                self.errors.push(span, Problem::BackendForm);
                return None;
            }
        };
        Some(HttpFilter::RequestMirror(Mirror { backend, numerator: percent, denominator: 100 }))
    }

    /// A `cors` filter.
    pub(super) fn cors(&mut self, c: schema::Cors) -> HttpFilter {
        let mut origins = Vec::new();
        for origin in c.allow_origins {
            if !is_cors_origin(origin.get_ref()) {
                self.errors
                    .push(&origin.span(), Problem::InvalidCorsOrigin(origin.get_ref().clone()));
            }
            origins.push(origin.into_inner().to_ascii_lowercase());
        }
        HttpFilter::Cors(Cors {
            allow_origins: origins,
            allow_methods: c.allow_methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            allow_headers: c.allow_headers,
            expose_headers: c.expose_headers,
            max_age: c.max_age_seconds.unwrap_or(DEFAULT_CORS_MAX_AGE),
            allow_credentials: c.allow_credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::parse;

    const ROUTE: &str = r#"
[[gateways]]
name = "web"
  [[gateways.listeners]]
  name = "http"
  port = 8080
  protocol = "HTTP"
[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{ address = "127.0.0.1:3000" }]
"#;

    #[test]
    fn timeouts_and_retry_map_onto_the_policy() {
        let text = format!(
            "{ROUTE}  timeouts = {{ request_ms = 10000, backend_request_ms = 2000 }}\n  retry = {{ codes = [503, 500], attempts = 3, backoff_ms = 100 }}\n  [[routes.rules]]\n  backends = [{{ address = \"127.0.0.1:3001\" }}]\n  retry = {{}}\n"
        );
        let config = parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
        let rules = &config.native.http_routes[0].rules;
        let p = &rules[0].policy;
        assert_eq!(p.request_timeout, Some(Duration::from_secs(10)));
        assert_eq!(p.backend_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            p.retry,
            Some(Retry { codes: vec![500, 503], attempts: 3, backoff: Duration::from_millis(100) })
        );
        let d = rules[1].policy.retry.as_ref().unwrap();
        assert_eq!((d.attempts, d.backoff), (DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BACKOFF));
        assert_eq!(config.native.http_routes[0].rules[1].policy.request_timeout, None);
    }

    #[test]
    fn mirror_and_cors_filters() {
        let text = format!(
            "{ROUTE}  filters = [\n    {{ request_mirror = {{ address = \"127.0.0.1:4000\" }} }},\n    {{ request_mirror = {{ dns = \"shadow.internal:80\", percent = 10 }} }},\n    {{ cors = {{ allow_origins = [\"https://*.Example.com\"], allow_methods = [\"get\"], allow_credentials = true }} }},\n  ]\n"
        );
        let config = parse(&text, Path::new("t.toml"), Path::new("/")).unwrap();
        let filters = &config.native.http_routes[0].rules[0].filters;
        assert_eq!(filters.len(), 3);
        assert!(matches!(&filters[0], HttpFilter::RequestMirror(m) if m.numerator == 100));
        assert!(matches!(&filters[1], HttpFilter::RequestMirror(m)
            if (m.numerator, m.denominator) == (10, 100) && matches!(m.backend, Backend::Dns { .. })));
        match &filters[2] {
            HttpFilter::Cors(c) => {
                assert_eq!(c.allow_origins, ["https://*.example.com"]);
                assert_eq!(c.allow_methods, ["GET"]);
                assert_eq!(c.max_age, DEFAULT_CORS_MAX_AGE);
                assert!(c.allow_credentials);
            }
            other => panic!("{other:?}"),
        }

        let bad = format!(
            "{ROUTE}  filters = [{{ request_mirror = {{ address = \"127.0.0.1:4000\", percent = 101 }} }}, {{ cors = {{ allow_origins = [\"example.com\"] }} }}]\n"
        );
        let errors = parse(&bad, Path::new("t.toml"), Path::new("/")).unwrap_err().to_string();
        assert!(errors.contains("mirror percent 101 is over 100"), "{errors}");
        assert!(errors.contains("CORS origin \"example.com\""), "{errors}");
    }

    #[test]
    fn bad_timeouts_and_codes_are_errors_with_their_place() {
        let text = format!(
            "{ROUTE}  timeouts = {{ request_ms = 1000, backend_request_ms = 2000 }}\n  retry = {{ codes = [200] }}\n"
        );
        let errors = parse(&text, Path::new("t.toml"), Path::new("/")).unwrap_err().to_string();
        assert!(errors.contains("t.toml:13:14: backend_request_ms must not be"), "{errors}");
        assert!(errors.contains("t.toml:14:22: retry code 200"), "{errors}");
    }
}
