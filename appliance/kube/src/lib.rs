//! Cluster mode's source: Kubernetes watches feeding the Gateway API index.
//!
//! ```text
//! API server ── watcher per kind and scope (list, watch, relist on 410, backoff)
//!                    │ Event::Apply / Delete / Init… InitDone
//!                    ▼
//!   WatchReducer::apply ── Index::apply / delete / reset_kind (the gateway crate's reducer)
//!                    │
//!                    ▼
//!   tokio::sync::watch<ClusterState { index, rejected }>  (coalesced "index changed")
//!                    │
//!                    ▼
//!   the daemon's reload loop: translate → compile → one swap → status (as in file mode)
//!                    │ our Gateway API status objects, after the data planes acknowledged
//!                    ▼
//!   StatusWriter: one task, server-side apply of `…/status` when it changed (see `status`),
//!                 only while this appliance holds the Lease (see `lease`)
//! ```
//!
//! Each kind is read as a dynamic object and converted by `gatehouse_gateway::from_json`, the
//! conversion YAML documents go through, so a cluster object and a file object are one thing.
//! Losing the API server stops nothing: the last state stays published while the watchers back
//! off and retry; the metrics tell how stale it is.

mod crds;
mod lease;
mod manifests;
mod metrics;
mod resources;
mod secrets;
mod status;
mod sync;
mod tls_secrets;

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crds::{CRDS, GROUP as OUR_GROUP, crd_manifests, crd_rules, crds};
pub use lease::{Leadership, LeaseOptions, default_identity};
pub use manifests::{
    LEASE_VERBS, Manifests, SECRET_WRITE_VERBS, STATUS_VERBS, WATCH_VERBS, cluster_rules, manifests,
};
pub use metrics::KubeMetrics;
pub use resources::{Scope, api_resource, field_selector, scopes, watched_kinds};
pub use secrets::wanted as secret_namespaces;
pub use status::{
    FIELD_MANAGER, MIN_INTERVAL, STATUS_KINDS, StatusSet, StatusWriter, status_to_apply,
    target as status_target,
};
pub use sync::{ClusterState, WatchReducer};
pub use tls_secrets::{
    Decision as SecretDecision, ISSUER_ANNOTATION, SecretWriter, TlsSecret, secret_to_apply,
};

/// Where the API server is and what to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// A kubeconfig file (its current context); `None` means the in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// Namespaces whose namespaced kinds are watched; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Leader election for status writes; `None`: this appliance never writes status.
    pub lease: Option<LeaseOptions>,
    /// Nodes are watched only for [`gatehouse_gateway::BackendAddressing::NodePort`].
    pub backend_addressing: gatehouse_gateway::BackendAddressing,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig { path: PathBuf, source: kube::config::KubeconfigError },
    #[error("in-cluster config: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Reads a kubeconfig file as [`Cluster::connect`] would, without contacting the server
/// (for `gatehouse check`).
pub fn check_kubeconfig(path: &std::path::Path) -> Result<(), Error> {
    Kubeconfig::read_from(path)
        .map(drop)
        .map_err(|source| Error::Kubeconfig { path: path.to_owned(), source })
}

/// The running watches; dropping it stops them.
pub struct Cluster {
    client: kube::Client,
    metrics: KubeMetrics,
    state: watch::Receiver<ClusterState>,
    tasks: Vec<JoinHandle<()>>,
    election: Option<lease::Election>,
}

impl Cluster {
    /// Builds the client and starts one watch per kind and scope. Does not wait for the API
    /// server: an unreachable server is retried with backoff, and is no error here.
    pub async fn connect(options: &Options, metrics: KubeMetrics) -> Result<Self, Error> {
        // kube's rustls config takes the process default provider; ours is aws-lc-rs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let config = match &options.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?
            }
            None => kube::Config::incluster()?,
        };
        let client = kube::Client::try_from(config)?;
        let scopes = scopes(&options.namespaces, options.backend_addressing);
        let (tx, rx) = watch::channel(ClusterState::awaiting_secrets(scopes.iter().cloned()));
        let mut tasks: Vec<JoinHandle<()>> = scopes
            .into_iter()
            .map(|scope| tokio::spawn(run(client.clone(), scope, tx.clone(), metrics.clone())))
            .collect();
        tasks.push(tokio::spawn(track_staleness(metrics.clone())));
        tasks.push(tokio::spawn(secrets::supervise(
            client.clone(),
            options.namespaces.clone(),
            tx.clone(),
            metrics.clone(),
        )));
        let election = options
            .lease
            .clone()
            .map(|lease| lease::Election::spawn(client.clone(), lease, metrics.clone()));
        Ok(Self { client, metrics, state: rx, tasks, election })
    }

    /// The published state; `changed()` coalesces: a slow reader sees only the latest.
    pub fn subscribe(&self) -> watch::Receiver<ClusterState> {
        self.state.clone()
    }

    /// The election's state; without a lease, never leader.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        match &self.election {
            Some(election) => election.subscribe(),
            None => watch::channel(Leadership::default()).1,
        }
    }

    /// Steps down and releases the Lease if this appliance holds it, so a follower takes over
    /// at once instead of after the Lease duration (for a graceful shutdown).
    pub async fn release_lease(&mut self) {
        if let Some(election) = self.election.as_mut() {
            election.release(Duration::from_secs(2)).await;
        }
    }

    /// Starts the status writer on this cluster's client. One per process: every status
    /// write goes through it, and it writes only while this appliance leads.
    pub fn status_writer(&self) -> StatusWriter {
        StatusWriter::spawn(self.client.clone(), self.metrics.clone(), self.leadership())
    }

    /// Starts the writer of ACME certificates into the Secrets listeners name; like status,
    /// it writes only while this appliance leads.
    pub fn secret_writer(&self) -> SecretWriter {
        SecretWriter::spawn(self.client.clone(), self.metrics.clone(), self.leadership())
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kube::Client is not Debug.
        f.debug_struct("Cluster").field("watches", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The tracing target of the per-hop timestamps a change leaves on its way from the API
/// server to the data planes (at trace level: `RUST_LOG=info,propagation=trace`); the
/// propagation benchmark reads them to say where the time goes.
pub const PROPAGATION: &str = "propagation";

/// Logs a watch event's arrival (an object applied or deleted) when propagation tracing is
/// on; returns its name and resourceVersion for the `published` hop.
fn trace_event(scope: &Scope, event: &watcher::Event<DynamicObject>) -> Option<(String, String)> {
    if !tracing::enabled!(target: PROPAGATION, tracing::Level::TRACE) {
        return None;
    }
    let (watcher::Event::Apply(object) | watcher::Event::Delete(object)) = event else {
        return None;
    };
    let name = object.metadata.name.clone().unwrap_or_default();
    let rv = object.metadata.resource_version.clone().unwrap_or_default();
    tracing::trace!(target: PROPAGATION, hop = "watch_event", kind = %scope.kind, name, rv);
    Some((name, rv))
}

/// Longest wait between two attempts of a failing watch.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// One watch, forever: list, then watch. Any error (API server gone, a stream cut mid-event,
/// 410 Gone) ends the stream; after a backoff (0.5 s doubling to [`MAX_BACKOFF`]) the watch
/// starts over with a fresh list, which both resyncs whatever changed meanwhile and proves the
/// API server answers again (a resumed watch says nothing until an object changes).
pub(crate) async fn run(
    client: kube::Client,
    scope: Scope,
    state: watch::Sender<ClusterState>,
    metrics: KubeMetrics,
) {
    let resource = api_resource(scope.kind);
    let api: Api<DynamicObject> = match &scope.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut config = watcher::Config::default();
    if let Some(selector) = field_selector(scope.kind) {
        config = config.fields(&selector);
    }
    let labels = metrics::KindLabels { kind: scope.kind.as_str() };
    let mut stream = WatchReducer::new(scope.clone());
    let mut failing = Failing { metrics: metrics.clone(), since: None };
    let mut backoff = Duration::from_millis(500);
    let mut crd_missing_logged = false;
    loop {
        let mut events = watcher(api.clone(), config.clone())
            .modify(|object| object.metadata.managed_fields = None)
            .boxed();
        while let Some(event) = events.next().await {
            let now = jiff::Timestamp::now().as_second();
            match event {
                Ok(event) => {
                    // `Init` comes before the list request: only what follows proves contact.
                    let contact = !matches!(event, watcher::Event::Init);
                    if let Some(since) = contact.then(|| failing.recovered(now)).flatten() {
                        tracing::info!(
                            watch = %scope,
                            stale_seconds = now - since,
                            "watch recovered; resynced from the API server"
                        );
                        backoff = Duration::from_millis(500);
                    }
                    metrics.events.get_or_create(&labels).inc();
                    metrics.last_event.set(now);
                    let traced = trace_event(&scope, &event);
                    let published = state.send_if_modified(|state| {
                        let changed = stream.apply(state, event);
                        let rejected = i64::try_from(state.rejected.len()).unwrap_or(i64::MAX);
                        metrics.rejected.set(rejected);
                        changed
                    });
                    if let Some((name, rv)) = traced {
                        tracing::trace!(
                            target: PROPAGATION,
                            hop = "published",
                            kind = %scope.kind,
                            name,
                            rv,
                            changed = published,
                        );
                    }
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if status.is_not_found() && resources::is_optional(scope.kind) =>
                {
                    // The kind's CRD is not installed (TCPRoute and UDPRoute are in the
                    // experimental channel only): nothing of it exists. It counts as listed,
                    // empty, so the appliance gets ready; looked for again now and then.
                    state.send_if_modified(|state| {
                        stream.apply(state, watcher::Event::Init);
                        stream.apply(state, watcher::Event::InitDone)
                    });
                    if !crd_missing_logged {
                        tracing::info!(
                            watch = %scope,
                            "{} is not served by the API server (CRD not installed): none are read",
                            scope.kind
                        );
                        crd_missing_logged = true;
                    }
                    backoff = MAX_BACKOFF;
                    break;
                }
                Err(error) => {
                    metrics.errors.get_or_create(&labels).inc();
                    metrics.last_error.set(now);
                    let last_event = metrics.last_event.get();
                    // The first error of a run is a warning; the retries that follow are noise.
                    if failing.since.is_some() {
                        tracing::debug!(watch = %scope, %error, "watch still failing");
                    } else {
                        tracing::warn!(
                            watch = %scope,
                            %error,
                            stale_seconds = if last_event > 0 { now - last_event } else { 0 },
                            "watch failed; retrying with backoff, the last good state keeps serving"
                        );
                    }
                    failing.failing(now);
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch's part in the staleness metrics; dropped (the watch stopped) it counts as
/// recovered, so a stopped watch leaves no outage behind.
struct Failing {
    metrics: KubeMetrics,
    /// When this watch started failing.
    since: Option<i64>,
}

impl Failing {
    fn failing(&mut self, now: i64) {
        if self.since.is_none() {
            self.since = Some(now);
            self.metrics.watch_failing(now);
        }
    }

    /// Returns since when it had been failing, if it was.
    fn recovered(&mut self, now: i64) -> Option<i64> {
        let since = self.since.take()?;
        self.metrics.watch_recovered(now);
        Some(since)
    }
}

impl Drop for Failing {
    fn drop(&mut self) {
        self.recovered(jiff::Timestamp::now().as_second());
    }
}

/// Keeps `stale_seconds` current during an outage (errors alone come only once per backoff,
/// up to 30 s apart) and says in the log, as soon as it goes stale and then every 30 s, how
/// stale the served state is.
async fn track_staleness(metrics: KubeMetrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut logged: Option<i64> = None;
    loop {
        tick.tick().await;
        let stale = metrics.update_staleness(jiff::Timestamp::now().as_second());
        if stale == 0 {
            logged = None;
        } else if logged.is_none_or(|at| stale >= at + 30) {
            logged = Some(stale);
            tracing::warn!(
                stale_seconds = stale,
                failing_watches = metrics.failing.get(),
                "API server unreachable: serving the last good state"
            );
        }
    }
}
