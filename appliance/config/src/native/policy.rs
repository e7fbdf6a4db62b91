//! A native rule's `timeouts` and `retry` into the model's [`RulePolicy`].

use std::time::Duration;

use gatehouse_model::{Retry, RulePolicy};
use toml::Spanned;

use super::Cx;
use crate::error::Problem;
use crate::schema;

/// Retries when `retry.attempts` is left out.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Pause before a retry when `retry.backoff_ms` is left out.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

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
    fn bad_timeouts_and_codes_are_errors_with_their_place() {
        let text = format!(
            "{ROUTE}  timeouts = {{ request_ms = 1000, backend_request_ms = 2000 }}\n  retry = {{ codes = [200] }}\n"
        );
        let errors = parse(&text, Path::new("t.toml"), Path::new("/")).unwrap_err().to_string();
        assert!(errors.contains("t.toml:13:14: backend_request_ms must not be"), "{errors}");
        assert!(errors.contains("t.toml:14:22: retry code 200"), "{errors}");
    }
}
