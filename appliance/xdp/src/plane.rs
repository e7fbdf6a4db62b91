//! The XDP data plane as the daemon runs it: one thread owns the [`Datapath`], applies plans
//! it is sent (and acknowledges their generation; after a failed plan whose undo failed too it
//! writes the last plan again in full), announces newly owned addresses, refreshes
//! the counters for `/metrics`, and watches the interfaces (one, or several for a two-armed
//! appliance, all sharing the maps): when one disappears the loss is logged, counted and
//! shown in the status; when it returns the program is attached to it again.
//!
//! A second thread waits for the kernel's neighbour, route, rule and link changes and has the
//! first mark the program's cached next hops stale (see [`crate::NextHopWatch`]).
//!
//! A thread rather than a task: map writes and netlink calls are blocking syscalls, and the
//! program stays attached exactly as long as this thread holds the `Datapath` (its links are
//! file descriptors: they close with the process even when it is killed).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::datapath::{AttachMode, Datapath, Stats};
use crate::error::XdpError;
use crate::nexthop::NextHopWatch;
use crate::plan::{Limits, Plan};

/// How often the thread looks at the interface and refreshes the counters.
const TICK: Duration = Duration::from_secs(1);

/// The longest wait between two full writes of the last plan after a failed undo (the wait
/// doubles from [`TICK`] after each failure).
const REPAIR_MAX_WAIT: Duration = Duration::from_secs(64);

/// How to start the data plane (the `[xdp]` boot settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaneConfig {
    /// Every interface the program attaches to (at least one).
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// With [`AttachMode::Driver`]: fail instead of falling back to generic mode.
    pub require_driver: bool,
    pub limits: Limits,
}

/// What `/status` shows of the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlaneStatus {
    /// The first interface.
    pub interface: String,
    /// Every interface.
    pub interfaces: Vec<String>,
    /// `driver` or `generic`, as attached (`generic` when any interface fell back).
    pub mode: String,
    /// Whether the program is attached to every interface now (false while one is gone).
    pub attached: bool,
    /// The interfaces that are gone now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Times the interface disappeared since boot.
    pub interface_losses: u64,
    /// The generation whose plan the maps hold.
    pub applied_generation: Option<u64>,
    /// Why the last plan was not applied (the maps keep the one before).
    pub last_error: Option<String>,
    /// A failed plan could not be undone: the maps may mix two generations until a plan is
    /// written in full (the plane retries with the last applied plan, see `Worker::repair`).
    pub needs_full_apply: bool,
}

/// Counters and status, shared with the metrics collector.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stats: ArcSwap<Stats>,
    pub status: ArcSwap<PlaneStatus>,
}

enum Command {
    Apply(Box<Plan>, oneshot::Sender<Result<u64, String>>),
    /// The kernel's neighbours, routes, rules or links changed.
    NextHops,
    /// Their changes can no longer be watched: no more next-hop caching.
    NextHopsUnwatched,
    Stop,
}

/// The running XDP data plane; dropping it detaches the program.
#[derive(Debug)]
pub struct Plane {
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    changes: watch::Receiver<PlaneStatus>,
}

impl Plane {
    /// Loads the program and attaches it; fails when either fails (nothing stays attached).
    pub fn start(config: PlaneConfig) -> Result<Plane, XdpError> {
        let (commands, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let (changes_tx, changes) = watch::channel(PlaneStatus::default());
        let thread_shared = shared.clone();
        let watch_commands = commands.clone();
        let thread = std::thread::Builder::new()
            .name("gatehouse-xdp".into())
            .spawn(move || {
                let mut worker = match Worker::start(config, thread_shared, changes_tx) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Opened here: the subscription is to this thread's network namespace.
                let stop = Arc::new(AtomicBool::new(false));
                watch_next_hops(watch_commands, stop.clone());
                worker.run(&rx);
                stop.store(true, Ordering::Relaxed);
            })
            .map_err(|source| XdpError::Interface { interface: "thread".into(), source })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Plane { commands, thread: Some(thread), shared, changes }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(XdpError::Interface {
                    interface: "thread".into(),
                    source: std::io::Error::other("the XDP thread stopped while starting"),
                })
            }
        }
    }

    /// Writes a plan into the maps; returns the generation applied (the acknowledgement) or
    /// why it was not (the previous plan keeps serving).
    pub async fn apply(&self, plan: Plan) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Apply(Box::new(plan), tx))
            .map_err(|_| "the XDP data plane has stopped".to_owned())?;
        rx.await.map_err(|_| "the XDP data plane has stopped".to_owned())?
    }

    /// The data plane's state now.
    pub fn status(&self) -> PlaneStatus {
        PlaneStatus::clone(&self.shared.status.load())
    }

    /// Changes of [`Plane::status`] (interface lost or back, a plan applied or refused).
    pub fn subscribe(&self) -> watch::Receiver<PlaneStatus> {
        self.changes.clone()
    }

    /// A `/metrics` collector of the data plane's counters.
    pub fn collector(&self) -> crate::metrics::XdpCollector {
        crate::metrics::XdpCollector::new(self.shared.clone())
    }

    /// Detaches the program and stops the thread.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the thread that turns the kernel's neighbour, route, rule and link notifications into
/// [`Command::NextHops`]; it ends within a [`TICK`] of `stop`. Without the subscription the
/// cache would go stale: the program then stops caching (logged as an error).
fn watch_next_hops(commands: mpsc::Sender<Command>, stop: Arc<AtomicBool>) {
    let watch = match NextHopWatch::open(TICK) {
        Ok(watch) => watch,
        Err(e) => {
            error!(%e, "cannot watch the kernel's neighbours and routes; the XDP program asks the FIB for every packet");
            disable_next_hop_cache(&commands);
            return;
        }
    };
    let on_failure = commands.clone();
    let spawned = std::thread::Builder::new().name("gatehouse-xdp-nh".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match watch.wait() {
                Ok(false) => {}
                Ok(true) => {
                    if commands.send(Command::NextHops).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    error!(%e, "lost the kernel's neighbour and route notifications; the XDP program asks the FIB for every packet");
                    disable_next_hop_cache(&commands);
                    break;
                }
            }
        }
    });
    if let Err(e) = spawned {
        error!(%e, "cannot start the next-hop watch; the XDP program asks the FIB for every packet");
        disable_next_hop_cache(&on_failure);
    }
}

fn disable_next_hop_cache(commands: &mpsc::Sender<Command>) {
    let _ = commands.send(Command::NextHopsUnwatched);
}

struct Worker {
    datapath: Datapath,
    config: PlaneConfig,
    shared: Arc<Shared>,
    changes: watch::Sender<PlaneStatus>,
    status: PlaneStatus,
    /// Per interface (in `config.interfaces` order): its index while the program is attached.
    ifindex: Vec<Option<u32>>,
    /// Per interface: attached in generic mode.
    generic: Vec<bool>,
    plan: Plan,
    /// After a failed undo: when to write the last plan in full again, and the wait after.
    repair_at: Instant,
    repair_wait: Duration,
}

impl Worker {
    fn start(
        config: PlaneConfig,
        shared: Arc<Shared>,
        changes: watch::Sender<PlaneStatus>,
    ) -> Result<Worker, XdpError> {
        let datapath = Datapath::load(config.limits)?;
        let n = config.interfaces.len();
        let mut worker = Worker {
            datapath,
            status: PlaneStatus {
                interface: config.interfaces.first().cloned().unwrap_or_default(),
                interfaces: config.interfaces.clone(),
                ..PlaneStatus::default()
            },
            config,
            shared,
            changes,
            ifindex: vec![None; n],
            generic: vec![false; n],
            plan: Plan::default(),
            repair_at: Instant::now(),
            repair_wait: TICK,
        };
        // Dropping the datapath on an error detaches what was attached.
        for i in 0..n {
            worker.attach(i)?;
        }
        worker.update_status();
        worker.publish();
        Ok(worker)
    }

    fn attach(&mut self, i: usize) -> Result<(), XdpError> {
        let interface = self.config.interfaces[i].clone();
        let attachment = self.datapath.attach(&interface, self.config.mode)?;
        if attachment.fell_back && self.config.require_driver {
            self.datapath.detach(&interface);
            return Err(XdpError::DriverModeUnavailable(interface));
        }
        info!(
            interface = %attachment.interface,
            mode = ?attachment.mode,
            "XDP program attached"
        );
        self.ifindex[i] = Some(attachment.ifindex);
        self.generic[i] = attachment.mode == AttachMode::Generic;
        Ok(())
    }

    /// `attached`, `missing` and `mode` from the per-interface state.
    fn update_status(&mut self) {
        self.status.missing = self
            .config
            .interfaces
            .iter()
            .zip(&self.ifindex)
            .filter(|(_, index)| index.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        self.status.attached = self.status.missing.is_empty();
        let generic = self.generic.iter().zip(&self.ifindex).any(|(g, i)| *g && i.is_some());
        self.status.mode = if generic { "generic".into() } else { "driver".into() };
    }

    fn run(&mut self, commands: &mpsc::Receiver<Command>) {
        // Ticks keep their pace however many commands arrive (neighbour changes can be
        // frequent on a busy host).
        let mut next_tick = Instant::now() + TICK;
        loop {
            match commands.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(Command::Apply(plan, reply)) => {
                    let result = self.apply(*plan);
                    let _ = reply.send(result);
                }
                Ok(Command::NextHops) => {
                    if let Err(e) = self.datapath.invalidate_next_hops() {
                        warn!(%e, "cannot mark the XDP next-hop cache stale");
                    }
                }
                Ok(Command::NextHopsUnwatched) => {
                    if let Err(e) = self.datapath.set_next_hop_cache(false) {
                        warn!(%e, "cannot turn the XDP next-hop cache off");
                    }
                }
                Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
        for interface in &self.config.interfaces {
            if self.datapath.detach(interface) {
                info!(%interface, "XDP program detached");
            }
        }
    }

    fn apply(&mut self, plan: Plan) -> Result<u64, String> {
        let before: BTreeSet<IpAddr> = self.plan.owned.iter().copied().collect();
        match self.datapath.apply(&plan) {
            Ok(generation) => {
                let new: Vec<IpAddr> =
                    plan.owned.iter().filter(|a| !before.contains(a)).copied().collect();
                self.plan = plan;
                self.status.applied_generation = Some(generation);
                self.status.last_error = None;
                self.status.needs_full_apply = false;
                self.announce(&new);
                self.refresh_stats();
                self.publish();
                Ok(generation)
            }
            Err(e) => {
                let message =
                    format!("XDP plan of generation {} not applied: {e}", plan.generation);
                self.status.last_error = Some(message.clone());
                self.status.needs_full_apply = self.datapath.needs_full_apply();
                self.publish();
                Err(message)
            }
        }
    }

    /// After a failed plan that could not be undone: writes the last applied plan again, in
    /// full, so the maps stop mixing generations before the next plan comes. Retried after
    /// 1, 2, 4 … 64 seconds.
    fn repair(&mut self) {
        if !self.datapath.needs_full_apply() || self.status.applied_generation.is_none() {
            self.repair_wait = TICK;
            return;
        }
        if Instant::now() < self.repair_at {
            return;
        }
        match self.datapath.apply(&self.plan) {
            Ok(generation) => {
                info!(generation, "XDP maps written in full again after a failed undo");
                self.repair_wait = TICK;
                self.status.needs_full_apply = false;
                self.publish();
            }
            Err(e) => {
                warn!(%e, retry_in = ?self.repair_wait, "writing the XDP maps in full failed");
                self.repair_at = Instant::now() + self.repair_wait;
                self.repair_wait = (self.repair_wait * 2).min(REPAIR_MAX_WAIT);
            }
        }
    }

    /// Announces `addrs` on every attached interface (a two-armed appliance owns its
    /// addresses on both sides: clients ask for the VIPs, backends for the NAT source).
    fn announce(&self, addrs: &[IpAddr]) {
        let attached = self.config.interfaces.iter().zip(&self.ifindex);
        for (interface, _) in attached.filter(|(_, index)| index.is_some()) {
            self.announce_on(interface, addrs);
        }
    }

    fn announce_on(&self, interface: &str, addrs: &[IpAddr]) {
        match crate::announce::announce(interface, addrs) {
            Ok(0) => {}
            Ok(sent) => info!(
                %interface,
                addresses = ?addrs,
                sent,
                "announced newly owned addresses (gratuitous ARP / unsolicited NA)"
            ),
            Err(e) => warn!(%e, "cannot announce newly owned addresses"),
        }
    }

    /// Looks at the interfaces: one gone → detached from it (logged, counted); back →
    /// attached again and every owned address announced on it.
    fn tick(&mut self) {
        let mut changed = false;
        for i in 0..self.config.interfaces.len() {
            let interface = self.config.interfaces[i].clone();
            let now = nix::net::if_::if_nametoindex(interface.as_str()).ok();
            if now == self.ifindex[i] {
                continue;
            }
            changed = true;
            if self.ifindex[i].is_some() {
                error!(%interface, "XDP interface disappeared: VIPs are not served on it until it returns");
                self.datapath.detach(&interface);
                self.status.interface_losses += 1;
                self.ifindex[i] = None;
            }
            if now.is_some() {
                match self.attach(i) {
                    Ok(()) => {
                        info!(%interface, "XDP interface is back: re-attached");
                        let owned = self.plan.owned.clone();
                        self.announce_on(&interface, &owned);
                    }
                    Err(e) => warn!(%e, "XDP interface is back but attaching failed; retrying"),
                }
            }
        }
        if changed {
            self.update_status();
            self.publish();
        }
        self.repair();
        if let Err(e) = self.datapath.tick_flow_clock() {
            warn!(%e, "cannot move the XDP connection table's clock");
        }
        self.refresh_stats();
    }

    fn refresh_stats(&self) {
        match self.datapath.stats(&self.plan) {
            Ok(stats) => self.shared.stats.store(Arc::new(stats)),
            Err(e) => warn!(%e, "cannot read the XDP counters"),
        }
    }

    fn publish(&self) {
        self.shared.status.store(Arc::new(self.status.clone()));
        self.changes.send_replace(self.status.clone());
    }
}

#[cfg(test)]
mod tests;
