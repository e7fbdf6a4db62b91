//! Keeps the kernel's `local` routes in step with the addresses the user-space listeners bind
//! (`[runtime] local_routes`; the routes themselves: gatehouse-localroutes).

use std::collections::BTreeSet;
use std::net::IpAddr;

use gatehouse_localroutes::{LocalRoutes, Reconciled};

/// The daemon's side: what was last made local, so that a reload that binds the same addresses
/// costs nothing.
#[derive(Debug)]
pub struct HostRoutes {
    routes: Option<LocalRoutes>,
    /// The set of the last reconciliation, when it left nothing to re-check (no failure, no
    /// address that was already local and may stop being so).
    settled: Option<BTreeSet<IpAddr>>,
}

impl HostRoutes {
    /// Opens the netlink connection; without one, addresses are bound but not made local.
    pub fn open() -> Self {
        let routes = LocalRoutes::open()
            .inspect_err(|error| tracing::warn!(%error, "local routes are not managed"))
            .ok();
        HostRoutes { routes, settled: None }
    }

    /// Makes the addresses among `bound` local (or, when `enabled` is off, removes every route
    /// of ours). Returns warnings for what could not be done.
    pub async fn apply(
        &mut self,
        enabled: bool,
        bound: impl IntoIterator<Item = IpAddr>,
    ) -> Vec<String> {
        let Some(routes) = &self.routes else {
            return Vec::new();
        };
        let wanted = if enabled { gatehouse_localroutes::wanted(bound) } else { BTreeSet::new() };
        if self.settled.as_ref() == Some(&wanted) {
            return Vec::new();
        }
        let done = routes.reconcile(&wanted).await;
        log(&done);
        let clean = done.failed.is_empty() && done.already_local.is_empty();
        self.settled = clean.then_some(wanted);
        done.failed
            .iter()
            .map(|error| {
                format!(
                    "{error}: packets for it are not delivered to its listeners (needs \
                     CAP_NET_ADMIN; or add the route yourself: `ip route add local ADDRESS dev lo \
                     table local`)"
                )
            })
            .collect()
    }

    /// Makes the next [`HostRoutes::apply`] ask the kernel even if the set is unchanged (a
    /// route may have been deleted by hand).
    pub fn recheck(&mut self) {
        self.settled = None;
    }

    /// Removes every route of ours (at exit, after the listeners drained).
    pub async fn clear(&mut self) {
        if let Some(routes) = &self.routes {
            log(&routes.clear().await);
        }
    }
}

fn log(done: &Reconciled) {
    for address in &done.added {
        tracing::info!(%address, "local route added: the kernel delivers this address to the listeners");
    }
    for address in &done.removed {
        tracing::info!(%address, "local route removed: no listener binds this address");
    }
    for error in &done.failed {
        tracing::warn!(%error, "local route");
    }
}
