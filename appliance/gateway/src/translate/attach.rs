//! Which listeners of a Gateway or ListenerSet a route's parentRef attaches to.

use gatehouse_model::{Hostname, ObjectId};

use super::{ListenerReport, Problem, Report, RouteKind};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{FromNamespaces, Listener, ParentReference};

/// A route's parent: a Gateway or a ListenerSet of ours, with its listeners and their reports.
pub(super) struct Parent<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub listeners: &'a [Listener],
    pub reports: &'a [ListenerReport],
    /// A ListenerSet that is not attached takes no route.
    pub accepted: Result<(), Problem>,
}

impl<'a> Parent<'a> {
    /// The parent `id` names, from the index and the report of Gateways and ListenerSets.
    pub fn find(index: &'a Index, report: &'a Report, id: &'a ObjectId) -> Option<Self> {
        let key = (id.namespace.clone(), id.name.clone());
        let (listeners, reports, accepted) = match id.kind.as_str() {
            "ListenerSet" => {
                let set = index.listener_sets.get(&key)?;
                let r = report.listener_sets.get(id)?;
                let accepted = r.accepted.clone().map_err(|p| {
                    Problem::new(
                        reason::NOT_ALLOWED_BY_LISTENERS,
                        format!("ListenerSet {} is not attached: {}", id.name, p.message),
                    )
                });
                (set.spec.listeners.as_slice(), r.listeners.as_slice(), accepted)
            }
            _ => {
                let gateway = index.gateways.get(&key)?;
                let r = report.gateways.get(id)?;
                (gateway.spec.listeners.as_slice(), r.listeners.as_slice(), Ok(()))
            }
        };
        // An unattached ListenerSet reports no listener.
        let listeners = if reports.len() == listeners.len() { listeners } else { &[] };
        Some(Self {
            kind: &id.kind,
            namespace: &id.namespace,
            name: &id.name,
            listeners,
            reports,
            accepted,
        })
    }
}

/// Indexes of the listeners the parentRef attaches to, or why it attaches to none.
///
/// Order of checks: parentRef selection (sectionName, port), then allowedRoutes (kinds and
/// namespaces), then hostname intersection, each narrowing the previous set.
pub(super) fn attach(
    index: &Index,
    parent: &Parent<'_>,
    kind: RouteKind,
    route_ns: &str,
    parent_ref: &ParentReference,
    route_hostnames: &[Hostname],
) -> Result<Vec<usize>, Problem> {
    attach_kind(index, parent, kind.as_str(), route_ns, parent_ref, route_hostnames)
}

/// [`attach`] for a route of `route_kind` (a listener must support that kind).
pub(super) fn attach_kind(
    index: &Index,
    parent: &Parent<'_>,
    route_kind: &str,
    route_ns: &str,
    parent_ref: &ParentReference,
    route_hostnames: &[Hostname],
) -> Result<Vec<usize>, Problem> {
    let selected: Vec<usize> = parent
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
            format!("{} {} has no listener {}", parent.kind, parent.name, what.join(" ")),
        ));
    }

    let route_labels = index.namespace_labels(route_ns);
    let allowed: Vec<usize> = selected
        .into_iter()
        .filter(|&i| {
            let listener = &parent.listeners[i];
            let kind_ok = parent.reports[i].supported_kinds.iter().any(|k| k.kind == route_kind);
            let namespaces = &listener.allowed_routes.namespaces;
            let ns_ok = match namespaces.from {
                FromNamespaces::All => true,
                FromNamespaces::Same => route_ns == parent.namespace,
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
                "no listener of {} {} allows {route_kind}s from namespace {route_ns}",
                parent.kind, parent.name
            ),
        ));
    }

    let matching: Vec<usize> = allowed
        .into_iter()
        .filter(|&i| {
            let listener = &parent.listeners[i];
            match (&parent.reports[i].hostname, listener.hostname.as_deref()) {
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
