//! HTTPRoute rule policy: `timeouts`, `retry`, RequestMirror and CORS filters into the model.

use std::time::Duration;

use gatehouse_model::{Cors, Mirror, Retry, RulePolicy, is_cors_origin};

use super::{BackendAddressing, Problem, RouteKind, backends};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{BackendRef, CorsFilter, HttpRule, MirrorFilter, RouteFilter};

/// Retries when `retry.attempts` is left out.
pub(super) const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Pause before a retry when `retry.backoff` is left out.
pub(super) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

fn unsupported(message: impl Into<String>) -> Problem {
    Problem::new(reason::UNSUPPORTED_VALUE, message)
}

/// A Gateway API Duration: 1–4 groups of up to 5 digits and a unit `h`, `m`, `s` or `ms`
/// (`1h30m`, `500ms`, `0s`).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a Gateway API duration (such as 10s, 1m30s or 500ms)");
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut groups = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return Err(bad());
        };
        rest = &rest[len..];
        total += unit * u32::try_from(value).map_err(|_| bad())?;
        groups += 1;
        if groups > 4 {
            return Err(bad());
        }
    }
    if groups == 0 { Err(bad()) } else { Ok(total) }
}

/// `timeouts` and `retry` of a rule; a bad value drops the rule.
pub(super) fn rule_policy(rule: &HttpRule) -> Result<RulePolicy, Problem> {
    let mut policy = RulePolicy::default();
    if let Some(t) = &rule.timeouts {
        let parse = |field: &str, v: &Option<String>| {
            v.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| unsupported(format!("timeouts.{field}: {e}")))
        };
        policy.request_timeout = parse("request", &t.request)?;
        policy.backend_timeout = parse("backendRequest", &t.backend_request)?;
        if let (Some(request), Some(backend)) = (policy.request_timeout, policy.backend_timeout)
            && !request.is_zero()
            && (backend.is_zero() || backend > request)
        {
            return Err(unsupported(
                "timeouts.backendRequest must not be longer than timeouts.request",
            ));
        }
    }
    if let Some(r) = &rule.retry {
        if let Some(code) = r.codes.iter().find(|c| !(400..=599).contains(*c)) {
            return Err(unsupported(format!("retry code {code} is not within 400-599")));
        }
        let backoff = r
            .backoff
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| unsupported(format!("retry.backoff: {e}")))?
            .unwrap_or(DEFAULT_RETRY_BACKOFF);
        let mut codes = r.codes.clone();
        codes.sort_unstable();
        codes.dedup();
        policy.retry =
            Some(Retry { codes, attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS), backoff });
    }
    Ok(policy)
}

/// Every RequestMirror filter of `filters`, in order; an unresolved mirror backend is kept
/// (the proxy skips it) and reported for ResolvedRefs.
pub(super) fn mirrors(
    index: &Index,
    addressing: BackendAddressing,
    kind: RouteKind,
    route_ns: &str,
    filters: &[RouteFilter],
    unresolved: &mut Vec<Problem>,
) -> Result<Vec<Mirror>, Problem> {
    let mut out = Vec::new();
    for f in filters.iter().filter(|f| f.kind == "RequestMirror") {
        let m = f
            .request_mirror
            .as_ref()
            .ok_or_else(|| unsupported("RequestMirror filter without requestMirror"))?;
        let (numerator, denominator) = share(m)?;
        let r = &m.backend_ref;
        let as_ref = BackendRef {
            group: r.group.clone(),
            kind: r.kind.clone(),
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            port: r.port,
            weight: 1,
            filters: Vec::new(),
        };
        let (backend, problem) = backends::resolve(index, addressing, kind, route_ns, &as_ref);
        unresolved.extend(problem);
        out.push(Mirror { backend, numerator, denominator });
    }
    Ok(out)
}

/// The mirrored share as a fraction; `percent` and `fraction` exclude each other.
fn share(m: &MirrorFilter) -> Result<(u32, u32), Problem> {
    match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => Err(unsupported("requestMirror sets both percent and fraction")),
        (Some(p), None) if p <= 100 => Ok((p, 100)),
        (Some(p), None) => Err(unsupported(format!("requestMirror percent {p} is over 100"))),
        (None, Some(f)) if f.denominator > 0 && f.numerator <= f.denominator => {
            Ok((f.numerator, f.denominator))
        }
        (None, Some(f)) => Err(unsupported(format!(
            "requestMirror fraction {}/{} is not within 0..=1",
            f.numerator, f.denominator
        ))),
        (None, None) => Ok((1, 1)),
    }
}

/// The CORS filter; origins must be `*` or `scheme://host[:port]` with an optional leading
/// `*.` label, and credentials exclude wildcard origins (browsers reject that pairing).
pub(super) fn cors(f: &CorsFilter) -> Result<Cors, Problem> {
    for origin in &f.allow_origins {
        check_origin(origin)?;
    }
    Ok(Cors {
        allow_origins: f.allow_origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
        allow_methods: f.allow_methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        allow_headers: f.allow_headers.clone(),
        expose_headers: f.expose_headers.clone(),
        max_age: f.max_age,
        allow_credentials: f.allow_credentials,
    })
}

fn check_origin(origin: &str) -> Result<(), Problem> {
    if is_cors_origin(origin) {
        Ok(())
    } else {
        Err(unsupported(format!("CORS origin {origin:?} is not * or scheme://host[:port]")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_api_durations() {
        let ok = [
            ("10s", 10_000),
            ("500ms", 500),
            ("1h30m", 5_400_000),
            ("1m1s1ms", 61_001),
            ("0s", 0),
            ("1h1m1s1ms", 3_661_001),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "10", "s", "1.5s", "123456s", "1d", "-1s", "1h1m1s1ms1s", "10 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_checked() {
        for ok in ["*", "https://a.example.com", "http://*.example.com:8080", "http://x:1"] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in ["example.com", "https://", "https://a b", "://x", "https://a/b"] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod translate_tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gatehouse_model::{Backend, HttpFilter};

    use crate::fixtures::*;
    use crate::object::Object;
    use crate::translate::{Settings, Translation, translate};
    use crate::types::{
        BackendObjectReference, CorsFilter, Fraction, HttpRule, MirrorFilter, RouteRetry,
        RouteTimeouts,
    };

    use super::*;

    fn run(rules: Vec<HttpRule>) -> Translation {
        let mut r = route("infra", "r").parent(parent(None, "web"));
        for rule in rules {
            r = r.rule(rule);
        }
        let objects = vec![
            gateway_class("gatehouse", CONTROLLER),
            Object::Gateway(gateway(
                "infra",
                "web",
                "gatehouse",
                vec![listener("http", 80, "HTTP")],
            )),
            service("infra", "echo", &[(None, 80)]),
            r.build(),
        ];
        let settings = Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        };
        translate(&index(objects), &settings)
    }

    fn timeouts(request: Option<&str>, backend: Option<&str>) -> HttpRule {
        HttpRule {
            timeouts: Some(RouteTimeouts {
                request: request.map(str::to_owned),
                backend_request: backend.map(str::to_owned),
            }),
            ..rule(vec![backend_ref()])
        }
    }

    fn backend_ref() -> crate::types::BackendRef {
        backend(None, "echo", Some(80), 1)
    }

    fn mirror(name: &str, percent: Option<u32>, fraction: Option<(u32, u32)>) -> RouteFilter {
        let mut f = filter("RequestMirror");
        f.request_mirror = Some(MirrorFilter {
            backend_ref: BackendObjectReference {
                group: String::new(),
                kind: "Service".into(),
                name: name.into(),
                namespace: None,
                port: Some(80),
            },
            percent,
            fraction: fraction.map(|(numerator, denominator)| Fraction { numerator, denominator }),
        });
        f
    }

    #[test]
    fn timeouts_and_retry_become_rule_policy() {
        let retry = HttpRule {
            retry: Some(RouteRetry {
                codes: vec![503, 500, 503],
                attempts: Some(3),
                backoff: Some("100ms".into()),
            }),
            ..timeouts(Some("10s"), Some("2s"))
        };
        let defaults = HttpRule { retry: Some(RouteRetry::default()), ..rule(vec![backend_ref()]) };
        let t = run(vec![
            retry,
            defaults,
            timeouts(Some("1s"), Some("2s")),
            timeouts(Some("soon"), None),
            timeouts(Some("0s"), Some("5s")),
        ]);
        let rules = &t.desired.http_routes[0].rules;
        assert_eq!(rules.len(), 3, "backend > request and a bad duration drop their rules");
        let p = &rules[0].policy;
        assert_eq!(p.request_timeout, Some(Duration::from_secs(10)));
        assert_eq!(p.backend_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            p.retry,
            Some(Retry { codes: vec![500, 503], attempts: 3, backoff: Duration::from_millis(100) })
        );
        let d = rules[1].policy.retry.as_ref().unwrap();
        assert_eq!((d.attempts, d.backoff), (DEFAULT_RETRY_ATTEMPTS, DEFAULT_RETRY_BACKOFF));
        // 0s disables the request timeout, so any backend timeout fits under it.
        assert_eq!(rules[2].policy.request_timeout, Some(Duration::ZERO));
        let parent =
            &t.report.routes[&gatehouse_model::ObjectId::new("HTTPRoute", "infra", "r")].parents[0];
        let message = &parent.partially_invalid.as_ref().unwrap().message;
        assert!(message.contains("backendRequest must not be longer"), "{message}");
        assert!(message.contains("\"soon\""), "{message}");
    }

    #[test]
    fn bad_retry_codes_drop_the_rule() {
        let bad = HttpRule {
            retry: Some(RouteRetry { codes: vec![200], ..RouteRetry::default() }),
            ..rule(vec![backend_ref()])
        };
        let t = run(vec![bad]);
        assert!(t.desired.http_routes.is_empty());
    }

    #[test]
    fn mirrors_resolve_their_backends_and_shares() {
        let rule_with = |filters| HttpRule { filters, ..rule(vec![backend_ref()]) };
        let t = run(vec![
            rule_with(vec![
                mirror("echo", None, None),
                mirror("echo", Some(25), None),
                mirror("nowhere", None, Some((1, 3))),
            ]),
            rule_with(vec![mirror("echo", Some(10), Some((1, 10)))]),
            rule_with(vec![mirror("echo", Some(101), None)]),
        ]);
        let rules = &t.desired.http_routes[0].rules;
        assert_eq!(rules.len(), 1, "percent with fraction, and percent > 100, drop the rule");
        let mirrors: Vec<_> = rules[0]
            .filters
            .iter()
            .map(|f| match f {
                HttpFilter::RequestMirror(m) => m,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(mirrors.len(), 3);
        assert!(matches!(mirrors[0].backend, Backend::Endpoints(_)));
        assert_eq!((mirrors[0].numerator, mirrors[0].denominator), (1, 1));
        assert_eq!((mirrors[1].numerator, mirrors[1].denominator), (25, 100));
        assert_eq!((mirrors[2].numerator, mirrors[2].denominator), (1, 3));
        assert!(matches!(mirrors[2].backend, Backend::Unresolved(_)));
        let parent =
            &t.report.routes[&gatehouse_model::ObjectId::new("HTTPRoute", "infra", "r")].parents[0];
        assert_eq!(parent.resolved_refs.as_ref().unwrap_err().reason, "BackendNotFound");
    }

    #[test]
    fn cors_translates_and_checks_origins() {
        let cors = |origins: &[&str]| {
            let mut f = filter("CORS");
            f.cors = Some(CorsFilter {
                allow_origins: origins.iter().map(|s| s.to_string()).collect(),
                allow_methods: vec!["get".into()],
                max_age: 5,
                ..CorsFilter::default()
            });
            HttpRule { filters: vec![f], ..rule(vec![backend_ref()]) }
        };
        let t = run(vec![cors(&["https://*.Example.com"]), cors(&["example.com"])]);
        let rules = &t.desired.http_routes[0].rules;
        assert_eq!(rules.len(), 1);
        match &rules[0].filters[0] {
            HttpFilter::Cors(c) => {
                assert_eq!(c.allow_origins, ["https://*.example.com"]);
                assert_eq!(c.allow_methods, ["GET"]);
                assert_eq!(c.max_age, 5);
            }
            other => panic!("{other:?}"),
        }
    }
}
