//! Which listeners of a Gateway a route's parentRef attaches to.

use gatehouse_model::Hostname;

use super::{GatewayReport, Problem, RouteKind};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{FromNamespaces, Gateway, ParentReference};

/// Indexes of the listeners the parentRef attaches to, or why it attaches to none.
///
/// Order of checks: parentRef selection (sectionName, port), then allowedRoutes (kinds and
/// namespaces), then hostname intersection, each narrowing the previous set.
pub(super) fn attach(
    index: &Index,
    gateway: &Gateway,
    report: &GatewayReport,
    kind: RouteKind,
    route_ns: &str,
    parent_ref: &ParentReference,
    route_hostnames: &[Hostname],
) -> Result<Vec<usize>, Problem> {
    let selected: Vec<usize> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent_ref.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|(_, l)| parent_ref.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        let mut what = Vec::new();
        if let Some(s) = &parent_ref.section_name {
            what.push(format!("named {s}"));
        }
        if let Some(p) = parent_ref.port {
            what.push(format!("on port {p}"));
        }
        return Err(Problem::new(
            reason::NO_MATCHING_PARENT,
            format!("Gateway {} has no listener {}", gateway.name(), what.join(" ")),
        ));
    }

    let route_labels = index.namespace_labels(route_ns);
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|&i| {
            let listener = &gateway.spec.listeners[i];
            let kind_ok =
                report.listeners[i].supported_kinds.iter().any(|k| k.kind == kind.as_str());
            let namespaces = &listener.allowed_routes.namespaces;
            let ns_ok = match namespaces.from {
                FromNamespaces::All => true,
                FromNamespaces::Same => route_ns == gateway.namespace(),
                FromNamespaces::Selector => {
                    namespaces.selector.as_ref().is_some_and(|s| s.matches(&route_labels))
                }
            };
            kind_ok && ns_ok
        })
        .collect();
    if allowed.is_empty() {
        return Err(Problem::new(
            reason::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {} allows {}s from namespace {route_ns}",
                gateway.name(),
                kind.as_str()
            ),
        ));
    }

    let matching: Vec<usize> = allowed
        .into_iter()
        .filter(|&i| {
            let listener = &gateway.spec.listeners[i];
            match (&report.listeners[i].hostname, listener.hostname.as_deref()) {
                // A listener hostname that did not parse matches nothing.
                (None, Some(raw)) if !raw.is_empty() => false,
                (None, _) => true,
                (Some(lh), _) => {
                    route_hostnames.is_empty()
                        || route_hostnames.iter().any(|rh| lh.intersect(rh).is_some())
                }
            }
        })
        .collect();
    if matching.is_empty() {
        return Err(Problem::new(
            reason::NO_MATCHING_LISTENER_HOSTNAME,
            "no hostname of the route intersects the hostname of an allowed listener",
        ));
    }
    Ok(matching)
}
