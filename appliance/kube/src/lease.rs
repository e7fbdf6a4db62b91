//! Leader election with a coordination.k8s.io/v1 Lease: every appliance serves traffic, the
//! holder of the Lease alone writes status.
//!
//! ```text
//! every renew period (a third of the duration):
//!   GET lease ── absent ─────────────────────────── POST (create, holder = us)
//!             ── held by us ────────────────────── PUT  (renewTime = now)
//!             ── held by another, unchanged for a
//!                whole duration (or released) ──── PUT  (holder = us, transitions + 1)
//!             ── held by another, renewed ──────── follow; look again
//! ```
//!
//! Every PUT carries the resourceVersion it was computed from: when two appliances race, the
//! API server answers one of them 409 and that one reads again. Expiry is judged by this
//! process's clock from when it last saw the Lease change (as client-go does), never by
//! comparing another host's `renewTime` with ours. A leader that could not renew for two thirds
//! of the duration steps down before anyone may take over, so two writers never overlap.
//! Takeover after a leader dies is bounded by the duration plus one renew period.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::KubeMetrics;

/// Where the Lease is and who we are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    pub namespace: String,
    pub name: String,
    /// Our `holderIdentity`; see [`default_identity`].
    pub identity: String,
    /// How long a Lease not renewed stays held; renewed every third of it.
    pub duration: Duration,
}

/// What this appliance knows of the election.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// Whether we hold the Lease (and so write status).
    pub leader: bool,
    /// The holder last seen, us included; `None` before the first read.
    pub holder: Option<String>,
}

/// `hostname-pid`: unique among appliances on distinct hosts and among processes on one.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gatehouse".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The running election; dropping it stops campaigning (the Lease then expires), while
/// [`Election::release`] hands the Lease back so a follower takes over at once.
#[derive(Debug)]
pub(crate) struct Election {
    state: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Election {
    pub(crate) fn spawn(client: kube::Client, options: LeaseOptions, metrics: KubeMetrics) -> Self {
        let (tx, state) = watch::channel(Leadership::default());
        let (stop, stopped) = oneshot::channel();
        let api = Api::namespaced(client, &options.namespace);
        let task = tokio::spawn(Campaign::new(api, options, metrics, tx).run(stopped));
        Self { state, stop: Some(stop), task }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// Stops campaigning; when we hold the Lease, steps down first (no status write after
    /// this returns) and then releases it, within `bound`.
    pub(crate) async fn release(&mut self, bound: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            if tokio::time::timeout(bound, &mut self.task).await.is_err() {
                tracing::warn!("could not release the lease within {bound:?}; it will expire");
            }
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What to do with the Lease as read.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Create,
    Renew,
    TakeOver,
    /// Another holds it: look again at this time.
    Follow(Instant),
}

/// The Lease as last seen held by another: its resourceVersion and when we saw it change.
#[derive(Debug)]
struct Observed {
    version: String,
    at: Instant,
}

/// Decides the next step from the Lease as read (pure, for the tests).
fn decide(
    lease: Option<&Lease>,
    identity: &str,
    renew: Duration,
    default_duration: Duration,
    observed: &mut Option<Observed>,
    now: Instant,
) -> Step {
    let Some(lease) = lease else { return Step::Create };
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.as_deref()).unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        // Released by its holder: free now.
        return Step::TakeOver;
    }
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    if observed.as_ref().is_none_or(|o| o.version != version) {
        *observed = Some(Observed { version, at: now });
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(default_duration, Duration::from_secs);
    let since = observed.as_ref().map_or(now, |o| o.at);
    let expires = since + duration;
    if now >= expires { Step::TakeOver } else { Step::Follow(expires.min(now + renew)) }
}

struct Campaign {
    api: Api<Lease>,
    options: LeaseOptions,
    renew: Duration,
    metrics: KubeMetrics,
    state: watch::Sender<Leadership>,
    observed: Option<Observed>,
    /// When we last wrote the Lease as its holder.
    renewed: Option<Instant>,
    /// Errors in a row (the first is a warning, the rest debug).
    failing: bool,
}

impl Campaign {
    fn new(
        api: Api<Lease>,
        options: LeaseOptions,
        metrics: KubeMetrics,
        state: watch::Sender<Leadership>,
    ) -> Self {
        let renew = options.duration / 3;
        Self { api, options, renew, metrics, state, observed: None, renewed: None, failing: false }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            let next = tokio::select! {
                next = self.round() => next,
                _ = &mut stop => break,
            };
            // Holding on past the renew deadline would overlap with a successor.
            if let Some(renewed) = self.renewed
                && Instant::now() >= renewed + (self.options.duration - self.renew)
            {
                tracing::warn!(lease = %self.options.name, "could not renew the lease: stepping down");
                self.renewed = None;
                self.publish(false, None);
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                _ = &mut stop => break,
            }
        }
        self.step_down().await;
    }

    /// Stops writing status, then gives the Lease back if we hold it: an empty holder, which
    /// every candidate (client-go's included) may take at once.
    async fn step_down(&mut self) {
        let held = self.state.borrow().leader;
        self.publish(false, None);
        if !held {
            return;
        }
        let lease = match self.api.get_opt(&self.options.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => return tracing::warn!(%error, "could not read the lease to release it"),
        };
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.options.identity.as_str()) {
            return;
        }
        let mut released = lease;
        let spec = released.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self.api.replace(&self.options.name, &PostParams::default(), &released).await {
            Ok(_) => tracing::info!(lease = %self.options.name, "released the lease"),
            Err(error) => tracing::warn!(%error, "could not release the lease; it will expire"),
        }
    }

    /// One read and at most one write; returns when to look again.
    async fn round(&mut self) -> Instant {
        let now = Instant::now();
        let again = now + self.renew;
        let lease =
            match tokio::time::timeout(self.renew, self.api.get_opt(&self.options.name)).await {
                Ok(Ok(lease)) => lease,
                Ok(Err(error)) => return self.failed("read", &error, again),
                Err(elapsed) => return self.failed("read", &elapsed, again),
            };
        let step = decide(
            lease.as_ref(),
            &self.options.identity,
            self.renew,
            self.options.duration,
            &mut self.observed,
            now,
        );
        let (lease, taking_over) = match step {
            Step::Follow(at) => {
                let holder = lease.and_then(|l| l.spec?.holder_identity);
                self.renewed = None;
                self.publish(false, holder);
                self.failing = false;
                return at;
            }
            Step::Create => (Some(self.fresh(None)), true),
            Step::Renew => (lease.map(|l| self.renewed_lease(l, false)), false),
            Step::TakeOver => (lease.map(|l| self.renewed_lease(l, true)), true),
        };
        let Some(lease) = lease else { return again };
        let params = PostParams::default();
        let write = async {
            if lease.metadata.resource_version.is_none() {
                self.api.create(&params, &lease).await
            } else {
                self.api.replace(&self.options.name, &params, &lease).await
            }
        };
        match tokio::time::timeout(self.renew, write).await {
            Ok(Ok(_)) => {
                if taking_over {
                    tracing::info!(lease = %self.options.name, identity = %self.options.identity, "acquired the lease: writing status");
                }
                self.renewed = Some(now);
                self.observed = None;
                self.failing = false;
                self.publish(true, Some(self.options.identity.clone()));
                again
            }
            // 409 Conflict (a stale resourceVersion) or AlreadyExists (a create raced):
            // someone else wrote it in between. Read again, soon.
            Ok(Err(kube::Error::Api(status))) if status.is_conflict() || status.code == 409 => {
                tracing::debug!(lease = %self.options.name, "lease write conflicted; reading again");
                Instant::now() + self.renew.min(Duration::from_millis(100))
            }
            Ok(Err(error)) => self.failed("write", &error, again),
            Err(elapsed) => self.failed("write", &elapsed, again),
        }
    }

    /// A new Lease held by us (`previous`: the one read, to keep its version and transitions).
    fn fresh(&self, previous: Option<&Lease>) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        let transitions = previous
            .and_then(|l| l.spec.as_ref()?.lease_transitions)
            .map_or(0, |t| t.saturating_add(1));
        Lease {
            metadata: ObjectMeta {
                name: Some(self.options.name.clone()),
                namespace: Some(self.options.namespace.clone()),
                resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.options.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.options.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    /// The Lease as read, renewed by us (taken over: a new acquire time and transition).
    fn renewed_lease(&self, mut lease: Lease, take_over: bool) -> Lease {
        if take_over {
            return self.fresh(Some(&lease));
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        spec.lease_duration_seconds =
            Some(i32::try_from(self.options.duration.as_secs()).unwrap_or(i32::MAX));
        lease
    }

    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display, again: Instant) -> Instant {
        if self.failing {
            tracing::debug!(lease = %self.options.name, %error, "lease {what} still failing");
        } else {
            tracing::warn!(lease = %self.options.name, %error, "lease {what} failed; retrying");
        }
        self.failing = true;
        again
    }

    fn publish(&self, leader: bool, holder: Option<String>) {
        self.metrics.leader.set(i64::from(leader));
        self.state.send_if_modified(|state| {
            let next = Leadership { leader, holder };
            let changed = *state != next;
            *state = next;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEW: Duration = Duration::from_secs(1);
    const DURATION: Duration = Duration::from_secs(3);

    fn lease(holder: Option<&str>, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(3),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn absent_is_created_ours_renewed_released_taken() {
        let now = Instant::now();
        let mut seen = None;
        assert_eq!(decide(None, "me", RENEW, DURATION, &mut seen, now), Step::Create);
        let mine = lease(Some("me"), "1");
        assert_eq!(decide(Some(&mine), "me", RENEW, DURATION, &mut seen, now), Step::Renew);
        let released = lease(None, "2");
        assert_eq!(decide(Some(&released), "me", RENEW, DURATION, &mut seen, now), Step::TakeOver);
    }

    #[test]
    fn another_holder_is_followed_until_unchanged_for_a_whole_duration() {
        let start = Instant::now();
        let mut seen = None;
        let theirs = lease(Some("them"), "5");
        assert_eq!(
            decide(Some(&theirs), "me", RENEW, DURATION, &mut seen, start),
            Step::Follow(start + RENEW)
        );
        // Renewed (a new version) at +2 s: the clock starts again.
        let renewed = lease(Some("them"), "6");
        let t = start + Duration::from_secs(2);
        assert_eq!(
            decide(Some(&renewed), "me", RENEW, DURATION, &mut seen, t),
            Step::Follow(t + RENEW)
        );
        // Unchanged since +2 s: the last look lands exactly on the expiry, then it is ours.
        let t2 = start + Duration::from_millis(4500);
        assert_eq!(
            decide(Some(&renewed), "me", RENEW, DURATION, &mut seen, t2),
            Step::Follow(start + Duration::from_secs(5))
        );
        let t3 = start + Duration::from_secs(5);
        assert_eq!(decide(Some(&renewed), "me", RENEW, DURATION, &mut seen, t3), Step::TakeOver);
    }

    #[test]
    fn identity_names_host_and_process() {
        assert!(default_identity().ends_with(&format!("-{}", std::process::id())));
    }
}
