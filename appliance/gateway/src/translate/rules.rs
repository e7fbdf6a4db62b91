//! HTTPRoute rules (and GRPCRoute rules, converted to their HTTP form by `grpc`): matches,
//! filters and backends into model rules.
//!
//! An invalid rule is dropped (the spec's "Drop Rule(s)" approach); its problem is reported.

use std::path::Path;

use gatehouse_model::{
    Backend, HeaderMatch, HeaderModifier, HttpFilter, HttpMatch, HttpRule as ModelRule, PathMatch,
    PathModifier, QueryMatch, Redirect, Rewrite, StringMatch, UnresolvedBackend, WasmPlugin,
    WeightedBackend,
};

use super::{BackendAddressing, Problem, RouteKind, Settings, backends, policy, wasm};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{
    HeaderFilter, HttpRule, MatchType, PathMatchType, PathModifier as SpecPathModifier,
    PathModifierType, RedirectFilter, RewriteFilter, RouteFilter, RouteMatch,
};

/// The rules kept, the problems of the rules dropped, and backend problems for ResolvedRefs.
#[derive(Debug, Default)]
pub(super) struct Rules {
    pub rules: Vec<ModelRule>,
    pub dropped: Vec<Problem>,
    pub unresolved: Vec<Problem>,
    /// The WasmPlugins the kept rules' ExtensionRef filters run, each once.
    pub plugins: Vec<WasmPlugin>,
}

/// What one rule's translation reads.
struct Cx<'a> {
    index: &'a Index,
    addressing: BackendAddressing,
    module_dir: Option<&'a Path>,
    kind: RouteKind,
    route_ns: &'a str,
}

/// Translates a route's rules, each with its name; a rule that is already known to be
/// invalid (`Err`) is dropped with its problem.
pub(super) fn translate<'r>(
    index: &Index,
    settings: &Settings,
    kind: RouteKind,
    route_ns: &str,
    rules: impl IntoIterator<Item = (Option<&'r str>, Result<&'r HttpRule, Problem>)>,
) -> Rules {
    let mut out = Rules::default();
    let cx = Cx {
        index,
        addressing: settings.backend_addressing,
        module_dir: settings.wasm_module_dir.as_deref(),
        kind,
        route_ns,
    };
    for (i, (name, rule)) in rules.into_iter().enumerate() {
        let label = match name {
            Some(name) => format!("rule {i} ({name})"),
            None => format!("rule {i}"),
        };
        let mut plugins = Vec::new();
        let translated =
            rule.and_then(|rule| translate_rule(&cx, rule, &mut out.unresolved, &mut plugins));
        match translated {
            Ok(r) => {
                out.rules.push(r);
                for plugin in plugins {
                    if out.plugins.iter().all(|p| p.name != plugin.name) {
                        out.plugins.push(plugin);
                    }
                }
            }
            Err(p) => out.dropped.push(Problem::new(p.reason, format!("{label}: {}", p.message))),
        }
    }
    out
}

fn unsupported(message: impl Into<String>) -> Problem {
    Problem::new(reason::UNSUPPORTED_VALUE, message)
}

fn translate_rule(
    cx: &Cx<'_>,
    rule: &HttpRule,
    unresolved: &mut Vec<Problem>,
    plugins: &mut Vec<WasmPlugin>,
) -> Result<ModelRule, Problem> {
    let matches = rule.matches.iter().map(translate_match).collect::<Result<Vec<_>, _>>()?;
    let all_prefix = matches.iter().all(|m| matches!(m.path, PathMatch::Prefix(_)));
    check_combination(rule)?;

    let mut extension = Vec::new();
    let rule_policy = policy::rule_policy(rule)?;
    let mut filters = translate_filters(cx, &rule.filters, all_prefix, &mut extension, plugins)?;
    let mut problems = Vec::new();
    filters.extend(
        policy::mirrors(
            cx.index,
            cx.addressing,
            cx.kind,
            cx.route_ns,
            &rule.filters,
            &mut problems,
        )?
        .into_iter()
        .map(HttpFilter::RequestMirror),
    );
    let mut backends = Vec::new();
    for r in &rule.backend_refs {
        let mut backend_filters =
            translate_filters(cx, &r.filters, all_prefix, &mut extension, plugins)?;
        backend_filters.extend(
            policy::mirrors(
                cx.index,
                cx.addressing,
                cx.kind,
                cx.route_ns,
                &r.filters,
                &mut problems,
            )?
            .into_iter()
            .map(HttpFilter::RequestMirror),
        );
        let (backend, problem) =
            backends::resolve(cx.index, cx.addressing, cx.kind, cx.route_ns, r);
        problems.extend(problem);
        backends.push(WeightedBackend { weight: r.weight, backend, filters: backend_filters });
    }
    if !extension.is_empty() {
        // An ExtensionRef filter that does not resolve must not be skipped (spec), so every
        // request of the rule gets an error (500) instead.
        for mut problem in extension {
            problem.message = format!("{}; requests matching the rule get 500", problem.message);
            problems.push(problem);
        }
        plugins.clear();
        filters.clear();
        backends = vec![WeightedBackend {
            weight: 1,
            backend: Backend::Unresolved(UnresolvedBackend {
                name: "extensionRef".into(),
                reason: "unsupported ExtensionRef filter".into(),
            }),
            filters: Vec::new(),
        }];
    }
    unresolved.extend(problems);
    Ok(ModelRule { name: rule.name.clone(), matches, filters, backends, policy: rule_policy })
}

/// Combinations the CRD's validation forbids; re-checked as the index may come from files.
fn check_combination(rule: &HttpRule) -> Result<(), Problem> {
    let count = |kind: &str| rule.filters.iter().filter(|f| f.kind == kind).count();
    let incompatible = |m: &str| Err(Problem::new(reason::INCOMPATIBLE_FILTERS, m));
    if count("RequestRedirect") > 0 && count("URLRewrite") > 0 {
        return incompatible("RequestRedirect and URLRewrite cannot be combined");
    }
    if count("RequestRedirect") > 0 && !rule.backend_refs.is_empty() {
        return incompatible("RequestRedirect cannot be used together with backendRefs");
    }
    for kind in
        ["RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS"]
    {
        if count(kind) > 1 {
            return incompatible(&format!("{kind} filter cannot be repeated"));
        }
    }
    Ok(())
}

fn check_regex(pattern: &str) -> Result<(), Problem> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map(drop)
        .map_err(|e| unsupported(format!("invalid regular expression {pattern:?}: {e}")))
}

fn string_match(kind: MatchType, value: &str) -> Result<StringMatch, Problem> {
    match kind {
        MatchType::Exact => Ok(StringMatch::Exact(value.to_owned())),
        MatchType::RegularExpression => {
            check_regex(value)?;
            Ok(StringMatch::Regex(value.to_owned()))
        }
    }
}

fn translate_match(m: &RouteMatch) -> Result<HttpMatch, Problem> {
    let value = m.path.value.clone();
    let path = match m.path.kind {
        PathMatchType::Exact | PathMatchType::PathPrefix if !value.starts_with('/') => {
            return Err(unsupported(format!("path {value:?} must start with '/'")));
        }
        PathMatchType::Exact => PathMatch::Exact(value),
        PathMatchType::PathPrefix => PathMatch::Prefix(value),
        PathMatchType::RegularExpression => {
            check_regex(&value)?;
            PathMatch::Regex(value)
        }
    };
    // Only the first entry for an equivalent name counts (spec).
    let mut headers: Vec<HeaderMatch> = Vec::new();
    for h in &m.headers {
        let name = h.name.to_ascii_lowercase();
        if headers.iter().all(|x| x.name != name) {
            headers.push(HeaderMatch { name, value: string_match(h.kind, &h.value)? });
        }
    }
    let mut query: Vec<QueryMatch> = Vec::new();
    for q in &m.query_params {
        if query.iter().all(|x| x.name != q.name) {
            query.push(QueryMatch { name: q.name.clone(), value: string_match(q.kind, &q.value)? });
        }
    }
    Ok(HttpMatch {
        path,
        headers,
        query,
        method: m.method.as_ref().map(|s| s.to_ascii_uppercase()),
    })
}

/// The filters of a rule or a backendRef; ExtensionRef filters that do not resolve go to
/// `extension`, the plugins of those that do to `plugins`.
fn translate_filters(
    cx: &Cx<'_>,
    filters: &[RouteFilter],
    all_prefix: bool,
    extension: &mut Vec<Problem>,
    plugins: &mut Vec<WasmPlugin>,
) -> Result<Vec<HttpFilter>, Problem> {
    let mut out = Vec::new();
    for f in filters {
        let missing = || unsupported(format!("{} filter without its configuration", f.kind));
        let filter = match f.kind.as_str() {
            "RequestHeaderModifier" => HttpFilter::RequestHeaderModifier(header_modifier(
                f.request_header_modifier.as_ref().ok_or_else(missing)?,
            )),
            "ResponseHeaderModifier" => HttpFilter::ResponseHeaderModifier(header_modifier(
                f.response_header_modifier.as_ref().ok_or_else(missing)?,
            )),
            "RequestRedirect" => HttpFilter::RequestRedirect(redirect(
                f.request_redirect.as_ref().ok_or_else(missing)?,
                all_prefix,
            )?),
            "URLRewrite" => HttpFilter::UrlRewrite(rewrite(
                f.url_rewrite.as_ref().ok_or_else(missing)?,
                all_prefix,
            )?),
            "ExtensionRef" => {
                let Some(r) = &f.extension_ref else {
                    let problem = "ExtensionRef filter without extensionRef";
                    extension.push(Problem::new(reason::INVALID_KIND, problem));
                    continue;
                };
                match wasm::resolve(cx.index, cx.module_dir, cx.addressing, cx.route_ns, r) {
                    Ok(plugin) => {
                        let name = plugin.name.clone();
                        plugins.push(plugin);
                        HttpFilter::Wasm { plugin: name }
                    }
                    Err(problem) => {
                        extension.push(problem);
                        continue;
                    }
                }
            }
            // Needs the index to resolve its backend: see `policy::mirrors`.
            "RequestMirror" => continue,
            "CORS" => HttpFilter::Cors(policy::cors(f.cors.as_ref().ok_or_else(missing)?)?),
            other => return Err(unsupported(format!("unknown filter type {other:?}"))),
        };
        out.push(filter);
    }
    Ok(out)
}

fn header_modifier(f: &HeaderFilter) -> HeaderModifier {
    let pairs = |v: &[crate::types::HeaderValue]| {
        v.iter().map(|h| (h.name.clone(), h.value.clone())).collect::<Vec<_>>()
    };
    HeaderModifier { set: pairs(&f.set), add: pairs(&f.add), remove: f.remove.clone() }
}

fn path_modifier(p: &SpecPathModifier, all_prefix: bool) -> Result<PathModifier, Problem> {
    match p.kind {
        PathModifierType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(PathModifier::ReplaceFullPath)
            .ok_or_else(|| unsupported("ReplaceFullPath without replaceFullPath")),
        PathModifierType::ReplacePrefixMatch => {
            if !all_prefix {
                return Err(unsupported(
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix",
                ));
            }
            p.replace_prefix_match
                .clone()
                .map(PathModifier::ReplacePrefixMatch)
                .ok_or_else(|| unsupported("ReplacePrefixMatch without replacePrefixMatch"))
        }
    }
}

fn redirect(f: &RedirectFilter, all_prefix: bool) -> Result<Redirect, Problem> {
    if let Some(scheme) = &f.scheme
        && scheme != "http"
        && scheme != "https"
    {
        return Err(unsupported(format!("redirect scheme {scheme:?} is not http or https")));
    }
    if ![301, 302, 303, 307, 308].contains(&f.status_code) {
        return Err(unsupported(format!("redirect statusCode {} is not supported", f.status_code)));
    }
    Ok(Redirect {
        scheme: f.scheme.clone(),
        hostname: f.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        path: f.path.as_ref().map(|p| path_modifier(p, all_prefix)).transpose()?,
        port: f.port,
        status: f.status_code,
    })
}

fn rewrite(f: &RewriteFilter, all_prefix: bool) -> Result<Rewrite, Problem> {
    Ok(Rewrite {
        hostname: f.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        path: f.path.as_ref().map(|p| path_modifier(p, all_prefix)).transpose()?,
    })
}
