//! Secret watches narrowed to what listeners reference: one watch (field selector
//! `type=kubernetes.io/tls`) per namespace that some Gateway listener's `certificateRefs` point
//! into, started and stopped as Gateways change.
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

/// Follows the published state: once the Gateways are listed, and whenever the set of
/// referenced namespaces changes, starts and stops per-namespace Secret watches.
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
            current.gateways_synced().then(|| wanted(&current, &filter))
        };
        if let Some(want) = want {
            let have: BTreeSet<String> = watches.0.keys().cloned().collect();
            if !chosen || want != have {
                chosen = true;
                let added: BTreeSet<String> = want.difference(&have).cloned().collect();
                let removed: BTreeSet<String> = have.difference(&want).cloned().collect();
                for ns in &removed {
                    if let Some(task) = watches.0.remove(ns) {
                        task.abort();
                        // Wait until it is gone, so no late event refills the namespace.
                        let _ = task.await;
                    }
                }
                state.send_if_modified(|s| s.choose_secret_namespaces(&added, &removed));
                for ns in added {
                    let scope = Scope { kind: Kind::Secret, namespace: Some(ns.clone()) };
                    let task = tokio::spawn(crate::run(
                        client.clone(),
                        scope,
                        state.clone(),
                        metrics.clone(),
                    ));
                    watches.0.insert(ns, task);
                }
                tracing::info!(namespaces = ?watches.0.keys().collect::<Vec<_>>(), "watching TLS Secrets");
            }
        }
        if changes.changed().await.is_err() {
            break;
        }
    }
}

/// The running Secret watches; dropped (the supervisor aborted with the cluster) they stop.
#[derive(Default)]
struct Watches(BTreeMap<String, JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}
