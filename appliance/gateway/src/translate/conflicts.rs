//! Hostname conflicts between HTTPRoutes and GRPCRoutes.
//!
//! The spec (GRPCRoute `hostnames`): when a route of one kind and a route of the other kind
//! attach to the same listener with intersecting hostnames, exactly one of them is accepted
//! there: the oldest by creation time, then the first by `namespace/name`. The other is
//! rejected on that listener (`Accepted=False`, reason `HostnameConflict`, when it is left
//! with no listener for that parentRef).

use std::collections::BTreeMap;

use gatehouse_model::{Hostname, ListenerId, ObjectId};

use super::{GatewayReport, Problem, RouteKind, RouteOutcome};
use crate::conditions::reason;

/// The hostnames a route serves on a listener; `None` stands for every hostname.
fn effective(route: &[Hostname], listener: Option<&Hostname>) -> Option<Vec<Hostname>> {
    match (route.is_empty(), listener) {
        (true, None) => None,
        (true, Some(l)) => Some(vec![l.clone()]),
        (false, None) => Some(route.to_vec()),
        (false, Some(l)) => Some(route.iter().filter_map(|h| h.intersect(l)).collect()),
    }
}

fn overlap(a: &Option<Vec<Hostname>>, b: &Option<Vec<Hostname>>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a.iter().any(|x| b.iter().any(|y| x.intersect(y).is_some())),
    }
}

/// Rejects, on each listener, the routes that lose a hostname conflict with a route of the
/// other kind; their outcomes stop serving and counting there.
pub(super) fn resolve(outcomes: &mut [RouteOutcome], gateways: &BTreeMap<ObjectId, GatewayReport>) {
    if !outcomes.iter().any(|o| o.kind == RouteKind::Grpc)
        || !outcomes.iter().any(|o| o.kind == RouteKind::Http)
    {
        return;
    }
    let listener_hostname = |id: &ListenerId| {
        gateways
            .get(&id.gateway)
            .and_then(|g| g.listeners.iter().find(|l| &l.id == id))
            .and_then(|l| l.hostname.clone())
    };
    // Every accepted (route, listener) pair, per listener.
    let mut on_listener: BTreeMap<ListenerId, Vec<usize>> = BTreeMap::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        for parent in outcome.report.parents.iter().filter(|p| p.accepted.is_ok()) {
            for id in &parent.listeners {
                let routes = on_listener.entry(id.clone()).or_default();
                if !routes.contains(&i) {
                    routes.push(i);
                }
            }
        }
    }
    let mut lost: Vec<(usize, ListenerId, ObjectId)> = Vec::new();
    for (id, mut routes) in on_listener {
        let has = |kind| routes.iter().any(|&i| outcomes[i].kind == kind);
        if !has(RouteKind::Http) || !has(RouteKind::Grpc) {
            continue;
        }
        // Precedence: oldest first (no time sorts last), then namespace/name.
        routes.sort_by(|&a, &b| {
            let key = |o: &RouteOutcome| {
                (o.created.unwrap_or(i64::MAX), o.id.namespace.clone(), o.id.name.clone())
            };
            key(&outcomes[a]).cmp(&key(&outcomes[b]))
        });
        let l = listener_hostname(&id);
        let mut kept: Vec<(usize, Option<Vec<Hostname>>)> = Vec::new();
        for i in routes {
            let mine = effective(&outcomes[i].hostnames, l.as_ref());
            let winner = kept.iter().find(|(k, theirs)| {
                outcomes[*k].kind != outcomes[i].kind && overlap(&mine, theirs)
            });
            match winner {
                Some((k, _)) => lost.push((i, id.clone(), outcomes[*k].id.clone())),
                None => kept.push((i, mine)),
            }
        }
    }
    for (i, listener, winner) in lost {
        let slot = gateways
            .get(&listener.gateway)
            .and_then(|g| g.listeners.iter().position(|l| l.id == listener));
        reject(&mut outcomes[i], &listener, slot, &winner);
    }
}

/// Takes `listener` from the outcome; a parentRef left with no listener is not accepted.
fn reject(
    outcome: &mut RouteOutcome,
    listener: &ListenerId,
    slot: Option<usize>,
    winner: &ObjectId,
) {
    let message = format!(
        "a hostname of this route on listener {listener} is already served by {} {}/{}, which \
         takes precedence (older, or first by namespace/name); HTTPRoutes and GRPCRoutes \
         cannot share a hostname on a listener",
        winner.kind, winner.namespace, winner.name
    );
    for parent in &mut outcome.report.parents {
        if parent.accepted.is_err() || !parent.listeners.contains(listener) {
            continue;
        }
        parent.listeners.retain(|l| l != listener);
        if parent.listeners.is_empty() {
            parent.accepted = Err(Problem::new(reason::HOSTNAME_CONFLICT, message.clone()));
            parent.partially_invalid = None;
        }
    }
    outcome.counted.retain(|(gateway, i)| *gateway != listener.gateway || Some(*i) != slot);
    if let Some(model) = &mut outcome.model {
        std::sync::Arc::make_mut(model).listeners.retain(|l| l != listener);
        if model.listeners.is_empty() {
            outcome.model = None;
            outcome.plugins.clear();
        }
    }
}
