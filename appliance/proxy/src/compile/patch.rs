//! The next table from the previous one: when only routes changed, the hostname buckets of
//! the changed routes are rebuilt and everything else is shared with the previous table.
//!
//! Routes are told apart by pointer (`Arc`): the model hands the same `Arc` for a route that
//! did not change. Work per call is a pass over the routes' pointers plus the buckets the
//! changed routes were or are in; listeners, their TLS configs and every other bucket are
//! the previous table's. Anything else that changed (listeners, client validation, listener
//! filters, a route with WASM filters, which depends on the plugins prepared for this
//! generation) takes the full build.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_model::{
    ClientValidation, Desired, Hostname, HttpRoute, Listener, ListenerId, ListenerProblem,
};
use gatehouse_wasm::Plugins;

use super::{Compiler, entry_order, hostname_order, route_hostnames, uses_wasm};
use crate::table::{Bucket, HostRoutes, ListenerRoutes, MatchEntry, RouteTable, SocketRoutes};

/// What the last table was built from, and the parts of it the next one may share.
#[derive(Debug)]
pub(super) struct Last {
    routes: Vec<Arc<HttpRoute>>,
    listeners: Vec<Listener>,
    client_validation: Vec<ClientValidation>,
    sockets: BTreeMap<SocketAddr, SocketRoutes>,
    problems: Vec<ListenerProblem>,
}

impl Last {
    /// The state after a full build; `None` when the next table cannot be patched from it.
    pub(super) fn of(
        desired: &Desired,
        built: &(RouteTable, Vec<ListenerProblem>),
    ) -> Option<Self> {
        if !patchable(desired) || desired.http_routes.iter().any(|r| uses_wasm(r)) {
            return None;
        }
        Some(Self {
            routes: desired.http_routes.clone(),
            listeners: desired.listeners.clone(),
            client_validation: desired.client_validation.clone(),
            sockets: built.0.sockets.clone(),
            problems: built.1.clone(),
        })
    }
}

/// Above this many routes between the common head and tail of two lists, they are compared
/// as sets (hashing every pointer) instead of against each other.
const SMALL_CHANGE: usize = 64;

/// The routes of `old` not in `new` (removed) and of `new` not in `old` (added), by pointer.
///
/// The model lists its routes in a stable order, so one event leaves both lists equal but for
/// a short run in the middle: the common head and tail are skipped by comparing pointers in
/// place, without hashing or touching the routes, and only the run between them is looked
/// up. A long run (a relist, a changed setting) falls back to hashing both lists.
fn changed<'a>(
    old: &'a [Arc<HttpRoute>],
    new: &'a [Arc<HttpRoute>],
) -> (Vec<&'a Arc<HttpRoute>>, Vec<&'a Arc<HttpRoute>>) {
    let head = old.iter().zip(new).take_while(|(a, b)| Arc::ptr_eq(a, b)).count();
    let (old_rest, new_rest) = (&old[head..], &new[head..]);
    let tail = old_rest
        .iter()
        .rev()
        .zip(new_rest.iter().rev())
        .take_while(|(a, b)| Arc::ptr_eq(a, b))
        .count();
    let old_run = &old_rest[..old_rest.len() - tail];
    let new_run = &new_rest[..new_rest.len() - tail];
    if old_run.len() + new_run.len() <= SMALL_CHANGE {
        // A route of one run may sit anywhere in the other list (it moved): look for it in
        // the whole list, by pointer.
        let in_list = |list: &[Arc<HttpRoute>], route: &Arc<HttpRoute>| {
            list.iter().any(|r| Arc::ptr_eq(r, route))
        };
        let removed = old_run.iter().filter(|r| !in_list(new, r)).collect();
        let added = new_run.iter().filter(|r| !in_list(old, r)).collect();
        return (removed, added);
    }
    let old_set: HashSet<*const HttpRoute> = old.iter().map(Arc::as_ptr).collect();
    let new_set: HashSet<*const HttpRoute> = new.iter().map(Arc::as_ptr).collect();
    let removed = old.iter().filter(|r| !new_set.contains(&Arc::as_ptr(r))).collect();
    let added = new.iter().filter(|r| !old_set.contains(&Arc::as_ptr(r))).collect();
    (removed, added)
}

/// Whether a table for `desired` can be patched at all: listener filters run plugins.
fn patchable(desired: &Desired) -> bool {
    desired.listener_filters.is_empty()
}

impl Compiler {
    /// The table for `desired` patched from the last one, when only routes changed (and none
    /// of them uses WASM filters); `None` otherwise.
    pub(super) fn patch(
        &mut self,
        desired: &Desired,
        plugins: &Plugins,
    ) -> Option<(RouteTable, Vec<ListenerProblem>)> {
        let last = self.last.take()?;
        if !patchable(desired)
            || desired.listeners != last.listeners
            || desired.client_validation != last.client_validation
        {
            return None;
        }
        let (removed, added) = changed(&last.routes, &desired.http_routes);
        if added.iter().any(|r| uses_wasm(r)) {
            return None;
        }

        let by_id: HashMap<&ListenerId, &Arc<ListenerRoutes>> =
            last.sockets.values().flat_map(|s| &s.listeners).map(|l| (&l.id, l)).collect();
        // Entries of removed routes leave their buckets (found by their compiled route).
        let mut gone = HashSet::new();
        let mut changes: HashMap<(ListenerId, Option<Hostname>), Vec<MatchEntry>> = HashMap::new();
        for route in &removed {
            let cached = self.routes.get(&route.id).filter(|c| Arc::ptr_eq(&c.source, route));
            // Two routes with one id share a cache entry: the full build sorts them out.
            let compiled = cached?.compiled.clone();
            gone.insert(Arc::as_ptr(&compiled));
            for id in &route.listeners {
                let Some(listener) = by_id.get(id) else { continue };
                for host in route_hostnames(route, listener.hostname.as_ref()) {
                    changes.entry((id.clone(), host)).or_default();
                }
            }
        }
        let live: HashSet<&gatehouse_model::ObjectId> = added.iter().map(|r| &r.id).collect();
        for route in &removed {
            if !live.contains(&route.id) {
                self.routes.remove(&route.id);
            }
        }
        for route in &added {
            let compiled = self.route(route, plugins);
            for id in &route.listeners {
                let Some(listener) = by_id.get(id) else { continue };
                let metrics = self.metrics(&route.id, id)?;
                for host in route_hostnames(route, listener.hostname.as_ref()) {
                    let change = changes.entry((id.clone(), host)).or_default();
                    for (rule, r) in compiled.rules.iter().enumerate() {
                        for index in 0..r.matches.len() {
                            change.push(MatchEntry {
                                route: compiled.clone(),
                                metrics: metrics.clone(),
                                rule,
                                index,
                            });
                        }
                    }
                }
            }
        }

        let mut hosts: HashMap<ListenerId, HostRoutes> = HashMap::new();
        for ((id, host), change) in changes {
            let Some(listener) = by_id.get(&id) else { continue };
            let table = hosts.entry(id).or_insert_with(|| listener.hosts.clone());
            let mut entries: Vec<MatchEntry> = bucket(table, host.as_ref())
                .iter()
                .filter(|e| !gone.contains(&Arc::as_ptr(&e.route)))
                .cloned()
                .chain(change)
                .collect();
            entries.sort_by(entry_order);
            set_bucket(table, host, entries);
        }

        let mut sockets = last.sockets.clone();
        for socket in sockets.values_mut() {
            for listener in &mut socket.listeners {
                if let Some(table) = hosts.get(&listener.id) {
                    *listener = Arc::new(ListenerRoutes {
                        id: listener.id.clone(),
                        metrics: listener.metrics.clone(),
                        hostname: listener.hostname.clone(),
                        port: listener.port,
                        protocol: listener.protocol,
                        tls: listener.tls.clone(),
                        cert_names: listener.cert_names.clone(),
                        hosts: table.clone(),
                        wasm: listener.wasm.clone(),
                        wasm_error: listener.wasm_error.clone(),
                    });
                }
            }
        }
        let table = RouteTable {
            generation: desired.generation,
            sockets: sockets.clone(),
            problems: last.problems.clone(),
        };
        let problems = last.problems.clone();
        self.last = Some(Last {
            routes: desired.http_routes.clone(),
            listeners: last.listeners,
            client_validation: last.client_validation,
            sockets,
            problems: last.problems,
        });
        Some((table, problems))
    }
}

/// The bucket of `host` (`None`: routes without hostname) in a listener's table.
fn bucket<'a>(table: &'a HostRoutes, host: Option<&Hostname>) -> &'a [MatchEntry] {
    match host {
        Some(h) if h.is_wildcard() => {
            table.wildcards.iter().find(|(w, _)| w == h).map_or(&[], |(_, e)| &e[..])
        }
        Some(h) => table.exact.get(h.as_str()).map_or(&[], |e| &e[..]),
        None => &table.any,
    }
}

/// Replaces the bucket of `host`; an empty one is removed.
fn set_bucket(table: &mut HostRoutes, host: Option<Hostname>, entries: Vec<MatchEntry>) {
    let empty = entries.is_empty();
    let entries: Bucket = entries.into();
    match host {
        Some(h) if h.is_wildcard() => {
            table.wildcards.retain(|(w, _)| *w != h);
            if !empty {
                table.wildcards.push((h, entries));
                table.wildcards.sort_by(|a, b| hostname_order(Some(&a.0), Some(&b.0)));
            }
        }
        Some(h) if empty => {
            table.exact.remove(h.as_str());
        }
        Some(h) => {
            table.exact.insert(h.as_str().to_owned(), entries);
        }
        None => table.any = entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{http_listener, prefix, route, rule};

    /// What `changed` must give: the set differences of the two lists, by pointer.
    fn by_sets(old: &[Arc<HttpRoute>], new: &[Arc<HttpRoute>]) -> (Vec<String>, Vec<String>) {
        let not_in = |a: &[Arc<HttpRoute>], b: &[Arc<HttpRoute>]| {
            a.iter()
                .filter(|r| !b.iter().any(|x| Arc::ptr_eq(x, r)))
                .map(|r| r.id.name.clone())
                .collect()
        };
        (not_in(old, new), not_in(new, old))
    }

    #[test]
    fn changed_routes_equal_the_set_differences_for_short_and_long_runs() {
        let l = http_listener("gw", "a", 80, None);
        let make = |i: usize| {
            Arc::new(route(&format!("r{i}"), &[&l], &[], vec![rule(vec![prefix("/")], "one")]))
        };
        let old: Vec<Arc<HttpRoute>> = (0..300).map(make).collect();
        let names = |v: Vec<&Arc<HttpRoute>>| v.into_iter().map(|r| r.id.name.clone()).collect();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for case in 0..200 {
            let mut new = old.clone();
            // 1 to 3 edits in short cases, up to 150 in long ones (past SMALL_CHANGE).
            let edits = if case % 4 == 0 { 40 + below(110) } else { 1 + below(3) };
            for e in 0..edits {
                let at = below(new.len());
                match below(4) {
                    0 => new[at] = make(1000 + case * 1000 + e),
                    1 => drop(new.remove(at)),
                    2 => new.insert(at, make(2000 + case * 1000 + e)),
                    _ => {
                        // A move: the same route elsewhere.
                        let moved = new.remove(at);
                        let to = below(new.len() + 1);
                        new.insert(to, moved);
                    }
                }
            }
            let (removed, added) = changed(&old, &new);
            assert_eq!((names(removed), names(added)), by_sets(&old, &new), "case {case}");
        }
    }
}
