//! The XDP data plane in the daemon: started at boot from `[xdp]` (boot-only: interface,
//! mode, table sizes), fed a plan per generation after the proxy swapped and before the
//! user-space L4 proxy (which serves the L4 listeners XDP leaves to it), counters on
//! `/metrics`, its state in `/status` under `xdp`, detached on exit.

use gatehouse_config::{XdpForwarding, XdpMode, XdpSettings};
use gatehouse_model::{Desired, L4Listener, ListenerProblem, ListenerProblemKind};
use gatehouse_xdp::{AttachMode, Forwarding, Limits, PlanSettings, Plane, PlaneConfig};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::sync::watch;

/// The running XDP data plane and the boot settings it was started with.
#[derive(Debug)]
pub struct Xdp {
    plane: Plane,
    boot: (Vec<String>, XdpMode, u32, u32),
}

impl Xdp {
    /// Loads and attaches the program (a failure stops the boot: the operator asked for XDP).
    pub fn start(settings: &XdpSettings, registry: &mut Registry) -> anyhow::Result<Xdp> {
        let (mode, require_driver) = match settings.mode {
            XdpMode::Driver => (AttachMode::Driver, true),
            XdpMode::Generic => (AttachMode::Generic, false),
            XdpMode::Auto | XdpMode::Off => (AttachMode::Driver, false),
        };
        let limits = Limits {
            ring_size: settings.maglev_table_size,
            max_flows: settings.max_flows,
            ..Limits::default()
        };
        let config =
            PlaneConfig { interfaces: settings.interfaces.clone(), mode, require_driver, limits };
        let plane = Plane::start(config).map_err(|e| anyhow::anyhow!("[xdp]: {e}"))?;
        registry.register_collector(Box::new(plane.collector()));
        Ok(Xdp { plane, boot: settings.boot_only() })
    }

    /// Applies the plan of `desired` and says which L4 listeners it left to user space.
    /// A refused plan (the previous one keeps serving) is a warning, and every listener
    /// XDP was to balance gets a `NotApplied` problem: not programmed at this generation.
    pub async fn apply(&self, desired: &Desired, settings: Option<&XdpSettings>) -> Applied {
        let Some(settings) = settings else {
            return Applied {
                warnings: vec![
                    "[xdp] was removed or turned off: the XDP program stays attached with its \
                     boot settings until a restart; the user-space L4 proxy serves every L4 \
                     listener"
                        .to_owned(),
                ],
                ..Applied::default()
            };
        };
        let mut warnings = Vec::new();
        if settings.boot_only() != self.boot {
            warnings.push(
                "[xdp] interface(s), mode, maglev_table_size or max_flows changed: they take effect \
                 after a restart"
                    .to_owned(),
            );
        }
        let split = gatehouse_xdp::split_l4(desired);
        let mut listener_problems = split.problems;
        let plan = gatehouse_xdp::plan(desired, &plan_settings(settings));
        let not_served = match self.plane.apply(plan).await {
            Err(e) => {
                warnings.push(e.clone());
                Some(e)
            }
            // The maps hold the plan, but no frame reaches them until the interface is back
            // (the daemon reloads when it is).
            Ok(_) if !self.plane.status().attached => Some(format!(
                "the XDP interface {} is gone: not served until it is back",
                self.plane.status().missing.join(", ")
            )),
            Ok(_) => None,
        };
        if let Some(message) = not_served {
            listener_problems.extend(split.xdp.into_iter().map(|listener| ListenerProblem {
                listener,
                kind: ListenerProblemKind::NotApplied,
                message: message.clone(),
            }));
        }
        Applied { warnings, listener_problems, user_space: Some(split.user_space) }
    }

    /// `/status` → `xdp`.
    pub fn describe(&self) -> Value {
        serde_json::to_value(self.plane.status()).unwrap_or(Value::Null)
    }

    /// Whether the program is attached now (false while its interface is gone).
    pub fn attached(&self) -> bool {
        self.plane.status().attached
    }

    /// Changes of the data plane's state (interface lost or back).
    pub fn subscribe(&self) -> watch::Receiver<gatehouse_xdp::PlaneStatus> {
        self.plane.subscribe()
    }

    /// Detaches the program.
    pub fn stop(&mut self) {
        self.plane.stop();
    }
}

/// What applying a generation to XDP gave.
#[derive(Debug, Default)]
pub struct Applied {
    /// For `last_reload.warnings`.
    pub warnings: Vec<String>,
    /// L4 listeners XDP does not serve as asked (VIP taken, plan refused).
    pub listener_problems: Vec<ListenerProblem>,
    /// The L4 listeners the user-space proxy serves; `None`: all of them.
    pub user_space: Option<Vec<L4Listener>>,
}

/// The hot-reloaded part of `[xdp]` as the plan builder reads it.
pub fn plan_settings(settings: &XdpSettings) -> PlanSettings {
    PlanSettings {
        forwarding: match settings.forwarding {
            XdpForwarding::Nat => Forwarding::Nat,
            XdpForwarding::Ipip => Forwarding::Ipip,
        },
        source_v4: settings.source_v4,
        source_v6: settings.source_v6,
        syn_limit: settings.syn_guard_per_cpu,
        drop_sources: settings.drop_sources.clone(),
    }
}
