//! Secret watches narrowed to what listeners reference: one watch (field selector
//! `type=kubernetes.io/tls`) per namespace that some Gateway listener's `certificateRefs` point
//! into, started and stopped as Gateways change. ConfigMaps (CA certificates) are narrowed
//! the same way: one watch per namespace a BackendTLSPolicy or a Gateway's frontend
//! validation points into.
//!
//! Not narrowed per name: field selectors have no set-based operator, so per-name narrowing
//! takes one watch (one long-lived API server stream) per Secret, which grows with the
//! certificates rather than with the namespaces; and RBAC `resourceNames` would then have to
//! list every Secret name up front. One watch per referenced namespace keeps other namespaces'
//! Secrets off the wire and out of the grant.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_gateway::Kind;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::KubeMetrics;
use crate::resources::Scope;
use crate::sync::ClusterState;

/// Namespaces whose Secrets are needed, within the namespace filter (empty: any).
pub fn wanted(state: &ClusterState, filter: &[String]) -> BTreeSet<String> {
    state
        .index
        .certificate_namespaces()
        .into_iter()
        .filter(|ns| filter.is_empty() || filter.contains(ns))
        .collect()
}

/// The per-namespace watches needed: Secrets where listeners point, ConfigMaps where CA
/// certificate refs point (both within the namespace filter).
fn wanted_scopes(state: &ClusterState, filter: &[String]) -> BTreeSet<Scope> {
    let secrets = wanted(state, filter)
        .into_iter()
        .map(|ns| Scope { kind: Kind::Secret, namespace: Some(ns) });
    let config_maps = state
        .index
        .ca_config_map_namespaces()
        .into_iter()
        .filter(|ns| filter.is_empty() || filter.contains(ns))
        .map(|ns| Scope { kind: Kind::ConfigMap, namespace: Some(ns) });
    secrets.chain(config_maps).collect()
}

/// Follows the published state: once the Gateways are listed, and whenever the set of
/// referenced namespaces changes, starts and stops per-namespace Secret and ConfigMap
/// watches.
pub(crate) async fn supervise(
    client: kube::Client,
    filter: Vec<String>,
    state: watch::Sender<ClusterState>,
    metrics: KubeMetrics,
) {
    let mut changes = state.subscribe();
    let mut watches = Watches::default();
    let mut chosen = false;
    loop {
        let want = {
            let current = changes.borrow_and_update();
            current.gateways_synced().then(|| wanted_scopes(&current, &filter))
        };
        if let Some(want) = want {
            let have: BTreeSet<Scope> = watches.0.keys().cloned().collect();
            if !chosen || want != have {
                chosen = true;
                let added: BTreeSet<Scope> = want.difference(&have).cloned().collect();
                let removed: BTreeSet<Scope> = have.difference(&want).cloned().collect();
                for scope in &removed {
                    if let Some(task) = watches.0.remove(scope) {
                        task.abort();
                        // Wait until it is gone, so no late event refills the namespace.
                        let _ = task.await;
                    }
                }
                state.send_if_modified(|s| s.choose_scopes(&added, &removed));
                for scope in added {
                    let task = tokio::spawn(crate::run(
                        client.clone(),
                        scope.clone(),
                        state.clone(),
                        metrics.clone(),
                    ));
                    watches.0.insert(scope, task);
                }
                let scopes: Vec<String> = watches.0.keys().map(ToString::to_string).collect();
                tracing::info!(?scopes, "watching TLS Secrets and CA ConfigMaps");
            }
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// The running per-namespace watches; dropped (the supervisor aborted with the cluster)
/// they stop.
#[derive(Default)]
struct Watches(BTreeMap<Scope, JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}
