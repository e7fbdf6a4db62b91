//! GRPCRoute rules in their HTTP form: a gRPC call is an HTTP/2 POST to `/<service>/<method>`,
//! so a service/method match becomes a path match and everything else (headers, filters,
//! backends) is shared with HTTPRoute.
//!
//! | method match | path match |
//! |---|---|
//! | none | prefix `/` |
//! | Exact service and method | exact `/<service>/<method>` |
//! | Exact service | prefix `/<service>` (whole segment) |
//! | Exact method | regex `/[^/]+/<method>` |
//! | RegularExpression `S`, `M` | regex `/(?:S)/(?:M)` (a missing one is `[^/]+`) |

use std::sync::LazyLock;

use regex::Regex;

use super::Problem;
use crate::conditions::reason;
use crate::types::{
    GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRule, HttpRule, MatchType, PathMatch,
    PathMatchType, RouteMatch,
};

/// The filter types the GRPCRoute CRD allows.
const FILTERS: [&str; 4] =
    ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"];

/// The CRD's validation of an Exact service (case-insensitive, optional leading dot).
static SERVICE: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$").ok());
/// The CRD's validation of an Exact method.
static METHOD: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z_0-9]*$").ok());

fn unsupported(message: impl Into<String>) -> Problem {
    Problem::new(reason::UNSUPPORTED_VALUE, message)
}

/// Each rule of the route as an HTTPRoute rule, or why it is invalid.
pub(super) fn http_rules(route: &GrpcRoute) -> Vec<Result<HttpRule, Problem>> {
    route.spec.rules.iter().map(http_rule).collect()
}

fn http_rule(rule: &GrpcRule) -> Result<HttpRule, Problem> {
    if let Some(f) = rule.filters.iter().find(|f| !FILTERS.contains(&f.kind.as_str())) {
        return Err(unsupported(format!("filter type {:?} is not allowed in a GRPCRoute", f.kind)));
    }
    let matches = if rule.matches.is_empty() {
        vec![RouteMatch::default()]
    } else {
        rule.matches.iter().map(route_match).collect::<Result<_, _>>()?
    };
    Ok(HttpRule {
        name: rule.name.clone(),
        matches,
        filters: rule.filters.clone(),
        backend_refs: rule.backend_refs.clone(),
        timeouts: None,
        retry: None,
    })
}

fn route_match(m: &GrpcRouteMatch) -> Result<RouteMatch, Problem> {
    let path = match &m.method {
        None => PathMatch::default(),
        Some(method) => method_path(method)?,
    };
    Ok(RouteMatch { path, headers: m.headers.clone(), query_params: Vec::new(), method: None })
}

fn valid(pattern: &LazyLock<Option<Regex>>, value: &str) -> bool {
    pattern.as_ref().is_some_and(|re| re.is_match(value))
}

/// The path match of a service/method match.
fn method_path(m: &GrpcMethodMatch) -> Result<PathMatch, Problem> {
    let path = |kind, value: String| PathMatch { kind, value };
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    match m.kind {
        _ if service.is_none() && method.is_none() => {
            Err(unsupported("a method match needs a service, a method or both"))
        }
        MatchType::Exact => {
            if let Some(s) = service
                && !valid(&SERVICE, s)
            {
                return Err(unsupported(format!("{s:?} is not a valid gRPC service name")));
            }
            if let Some(m) = method
                && !valid(&METHOD, m)
            {
                return Err(unsupported(format!("{m:?} is not a valid gRPC method name")));
            }
            Ok(match (service, method) {
                (Some(s), Some(m)) => path(PathMatchType::Exact, format!("/{s}/{m}")),
                (Some(s), None) => path(PathMatchType::PathPrefix, format!("/{s}")),
                (None, m) => path(
                    PathMatchType::RegularExpression,
                    format!("/[^/]+/{}", regex::escape(m.unwrap_or_default())),
                ),
            })
        }
        MatchType::RegularExpression => Ok(path(
            PathMatchType::RegularExpression,
            format!("/(?:{})/(?:{})", service.unwrap_or("[^/]+"), method.unwrap_or("[^/]+")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(service: Option<&str>, method: Option<&str>) -> GrpcMethodMatch {
        GrpcMethodMatch {
            kind: MatchType::Exact,
            service: service.map(str::to_owned),
            method: method.map(str::to_owned),
        }
    }

    #[test]
    fn service_and_method_become_paths() {
        let p = |m: GrpcMethodMatch| {
            let p = method_path(&m).unwrap();
            (p.kind, p.value)
        };
        assert_eq!(
            p(exact(Some("echo.v1.Echo"), Some("Say"))),
            (PathMatchType::Exact, "/echo.v1.Echo/Say".into())
        );
        assert_eq!(
            p(exact(Some("echo.v1.Echo"), None)),
            (PathMatchType::PathPrefix, "/echo.v1.Echo".into())
        );
        assert_eq!(
            p(exact(None, Some("Say"))),
            (PathMatchType::RegularExpression, "/[^/]+/Say".into())
        );
        let regex = GrpcMethodMatch {
            kind: MatchType::RegularExpression,
            ..exact(Some("echo\\..*"), None)
        };
        assert_eq!(p(regex), (PathMatchType::RegularExpression, "/(?:echo\\..*)/(?:[^/]+)".into()));
    }

    #[test]
    fn invalid_matches_and_filters_are_problems() {
        assert!(method_path(&exact(None, None)).is_err());
        assert!(method_path(&exact(Some("bad/service"), None)).is_err());
        assert!(method_path(&exact(Some("ok.Service"), Some("bad.method"))).is_err());
        let mut rule = GrpcRule::default();
        rule.filters.push(crate::types::RouteFilter {
            kind: "URLRewrite".into(),
            request_header_modifier: None,
            response_header_modifier: None,
            request_redirect: None,
            url_rewrite: Some(Default::default()),
            request_mirror: None,
            cors: None,
            extension_ref: None,
        });
        let problem = http_rule(&rule).unwrap_err();
        assert!(problem.message.contains("URLRewrite"), "{}", problem.message);
        let all = http_rule(&GrpcRule::default()).unwrap();
        assert_eq!(all.matches, vec![RouteMatch::default()]);
    }
}
