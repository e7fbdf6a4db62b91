//! The certificate manager: one task that keeps every wanted certificate issued and renewed,
//! and publishes what it holds as a source (`watch`) the daemon merges before compile.
//!
//! It never blocks a reload: the daemon says what it wants ([`Manager::want`]) and reads the
//! current certificates ([`Manager::certs`]); a certificate that changes wakes the daemon,
//! which applies it in the next atomic swap. The old certificate serves until then.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gatehouse_model::acme::{AcmeIssuer, CertificateRequest};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use crate::issuer::Issuer;
use crate::renew::{backoff, renewal_time};
use crate::store::{Store, StoredCert};

/// First retry delay after a failure; doubled per failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(2);
/// Longest delay between two attempts (unless the CA's Retry-After asks for more).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Wake-up when nothing is due (a reload wakes the task anyway).
const IDLE: Duration = Duration::from_secs(3600);

/// What the config asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wanted {
    pub issuers: Vec<AcmeIssuer>,
    pub requests: Vec<CertificateRequest>,
}

/// Identity of a managed certificate: its issuer and names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CertKey {
    pub issuer: String,
    pub names: Vec<String>,
}

impl CertKey {
    /// The key of a request.
    pub fn of(request: &CertificateRequest) -> Self {
        Self {
            issuer: request.issuer.clone(),
            names: request.names.iter().map(|n| n.as_str().to_owned()).collect(),
        }
    }
}

/// Why the last attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    /// CamelCase reason ([`AcmeError::reason`](crate::AcmeError::reason)).
    pub reason: &'static str,
    pub message: String,
    #[serde(with = "unix")]
    pub at: SystemTime,
}

/// One managed certificate: what serves now and what happens next.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    /// The certificate (possibly expired-soon; the old one serves until a new one is issued).
    #[serde(skip)]
    pub cert: Option<StoredCert>,
    #[serde(with = "unix_opt")]
    pub not_after: Option<SystemTime>,
    /// When the next issuance is planned (renewal or retry).
    #[serde(with = "unix_opt")]
    pub next_attempt: Option<SystemTime>,
    pub last_error: Option<Failure>,
    /// Failures since the last success.
    pub failures: u32,
}

/// Every managed certificate, as published.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Certs {
    pub entries: BTreeMap<CertKey, Entry>,
}

impl Certs {
    /// For `/status`: every certificate with expiry, next attempt and last error.
    pub fn describe(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|(key, entry)| {
                let mut v = serde_json::to_value(entry).unwrap_or_default();
                v["issuer"] = key.issuer.clone().into();
                v["names"] = serde_json::to_value(&key.names).unwrap_or_default();
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    issuer: String,
    names: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerLabels {
    issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    issuer: String,
    reason: String,
}

/// ACME metrics on `/metrics`.
#[derive(Clone, Debug)]
struct Metrics {
    expiry: Family<CertLabels, Gauge>,
    duration: Family<IssuerLabels, Histogram, fn() -> Histogram>,
    failures: Family<FailureLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.25, 2.0, 12))
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            expiry: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            failures: Family::default(),
        };
        registry.register(
            "acme_certificate_expiry_timestamp_seconds",
            "Unix time a managed certificate expires",
            metrics.expiry.clone(),
        );
        registry.register(
            "acme_issuance_duration_seconds",
            "Time from new order to stored certificate",
            metrics.duration.clone(),
        );
        registry.register(
            "acme_failures",
            "Failed issuance attempts by reason",
            metrics.failures.clone(),
        );
        metrics
    }
}

/// Handle of the manager task (which ends when the handle is dropped).
#[derive(Debug)]
pub struct Manager {
    wanted: watch::Sender<Arc<Wanted>>,
    certs: watch::Receiver<Arc<Certs>>,
}

impl Manager {
    /// Starts the task; state lives under `<state_dir>/acme`, metrics go to `registry`.
    pub fn start(state_dir: &Path, registry: &mut Registry) -> Self {
        let (wanted, wanted_rx) = watch::channel(Arc::new(Wanted::default()));
        let (certs_tx, certs) = watch::channel(Arc::new(Certs::default()));
        let task = Task {
            store: Store::new(state_dir),
            metrics: Metrics::register(registry),
            issuers: HashMap::new(),
            jobs: BTreeMap::new(),
            certs: Certs::default(),
            publish: certs_tx,
        };
        tokio::spawn(task.run(wanted_rx));
        Self { wanted, certs }
    }

    /// Replaces what is wanted (after each reload); unchanged wants do not wake the task.
    pub fn want(&self, wanted: Wanted) {
        self.wanted.send_if_modified(|current| {
            if **current == wanted {
                false
            } else {
                *current = Arc::new(wanted);
                true
            }
        });
    }

    /// The certificates held now.
    pub fn certs(&self) -> Arc<Certs> {
        self.certs.borrow().clone()
    }

    /// Changes of the held certificates (a new certificate, a failure).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Certs>> {
        self.certs.clone()
    }
}

struct Job {
    renew_before: Option<Duration>,
    due: SystemTime,
}

struct Task {
    store: Store,
    metrics: Metrics,
    issuers: HashMap<String, (AcmeIssuer, Result<Arc<Issuer>, String>)>,
    jobs: BTreeMap<CertKey, Job>,
    certs: Certs,
    publish: watch::Sender<Arc<Certs>>,
}

impl Task {
    async fn run(mut self, mut wanted: watch::Receiver<Arc<Wanted>>) {
        loop {
            let current = wanted.borrow_and_update().clone();
            self.sync(&current).await;
            let now = SystemTime::now();
            let next = self.jobs.values().map(|j| j.due).min();
            let wait = next.map_or(IDLE, |due| due.duration_since(now).unwrap_or_default());
            if !wait.is_zero() {
                tokio::select! {
                    changed = wanted.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let now = SystemTime::now();
            let due: Vec<CertKey> =
                self.jobs.iter().filter(|(_, j)| j.due <= now).map(|(k, _)| k.clone()).collect();
            for key in due {
                self.attempt(&key).await;
                if wanted.has_changed().unwrap_or(true) {
                    break;
                }
            }
            if self.publish.is_closed() && wanted.has_changed().is_err() {
                return;
            }
        }
    }

    /// Follows the wanted issuers and certificates: new issuers are built (and clean up what a
    /// previous run left), new certificates are read from the store or become due now.
    async fn sync(&mut self, wanted: &Wanted) {
        self.issuers.retain(|name, _| wanted.issuers.iter().any(|i| &i.name == name));
        let mut changed = Vec::new();
        for spec in &wanted.issuers {
            if self.issuers.get(&spec.name).is_some_and(|(s, _)| s == spec) {
                continue;
            }
            changed.push(spec.name.clone());
            let issuer = Issuer::new(spec, self.store.clone()).map(Arc::new);
            if let Ok(issuer) = &issuer
                && let Err(e) = issuer.clean_pending().await
            {
                tracing::warn!(issuer = %spec.name, error = %e, "left-over challenge records");
            }
            self.issuers
                .insert(spec.name.clone(), (spec.clone(), issuer.map_err(|e| e.to_string())));
        }

        let keys: BTreeMap<CertKey, &CertificateRequest> =
            wanted.requests.iter().map(|r| (CertKey::of(r), r)).collect();
        self.jobs.retain(|k, _| keys.contains_key(k));
        self.certs.entries.retain(|k, _| keys.contains_key(k));
        for (key, request) in keys {
            if let Some(job) = self.jobs.get_mut(&key) {
                job.renew_before = request.renew_before;
                // New issuer settings (a fixed secret): a failing certificate is retried now.
                let entry = self.certs.entries.get_mut(&key);
                if changed.contains(&key.issuer)
                    && let Some(entry) = entry
                    && entry.last_error.is_some()
                {
                    job.due = SystemTime::now();
                    entry.next_attempt = Some(job.due);
                    entry.failures = 0;
                }
                continue;
            }
            let stored =
                self.store.cert(&key.names).ok().flatten().filter(|c| c.meta.issuer == key.issuer);
            let now = SystemTime::now();
            let due = match &stored {
                Some(cert) if cert.meta.not_after > now => {
                    self.planned_renewal(&key.issuer, cert, request.renew_before).await
                }
                _ => now,
            };
            if let Some(cert) = &stored {
                self.record_expiry(&key, cert);
            }
            self.jobs.insert(key.clone(), Job { renew_before: request.renew_before, due });
            self.certs.entries.insert(
                key,
                Entry {
                    not_after: stored.as_ref().map(|c| c.meta.not_after),
                    cert: stored,
                    next_attempt: Some(due),
                    last_error: None,
                    failures: 0,
                },
            );
        }
        // Issuers that could not be built fail their certificates at once, with the reason.
        for (key, entry) in self.certs.entries.iter_mut() {
            let problem = match self.issuers.get(&key.issuer) {
                None => Some(format!("no ACME issuer named {:?}", key.issuer)),
                Some((_, Err(e))) => Some(e.clone()),
                Some((_, Ok(_))) => None,
            };
            if let Some(message) = problem {
                entry.last_error =
                    Some(Failure { reason: "InvalidIssuer", message, at: SystemTime::now() });
                entry.next_attempt = None;
                self.jobs.remove(key);
            }
        }
        self.publish();
    }

    async fn planned_renewal(
        &self,
        issuer: &str,
        cert: &StoredCert,
        renew_before: Option<Duration>,
    ) -> SystemTime {
        let ari = match self.issuers.get(issuer) {
            Some((_, Ok(issuer))) => issuer.renewal_window(cert).await,
            _ => None,
        };
        renewal_time(
            cert.meta.not_before,
            cert.meta.not_after,
            renew_before,
            ari,
            rand::random::<f64>(),
        )
    }

    async fn attempt(&mut self, key: &CertKey) {
        let Some((_, Ok(issuer))) = self.issuers.get(&key.issuer) else {
            return;
        };
        let issuer = issuer.clone();
        let started = Instant::now();
        let result = issuer.issue(&key.names).await;
        let now = SystemTime::now();
        let labels = IssuerLabels { issuer: key.issuer.clone() };
        match result {
            Ok(issued) => {
                self.metrics
                    .duration
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                tracing::info!(
                    issuer = %key.issuer,
                    names = ?key.names,
                    attempts = issued.attempts,
                    account_ms = issued.phases.account.as_secs_f64() * 1e3,
                    order_ms = issued.phases.order.as_secs_f64() * 1e3,
                    dns_publish_ms = issued.phases.dns_publish.as_secs_f64() * 1e3,
                    propagation_ms = issued.phases.propagation.as_secs_f64() * 1e3,
                    validation_ms = issued.phases.validation.as_secs_f64() * 1e3,
                    finalize_ms = issued.phases.finalize.as_secs_f64() * 1e3,
                    "ACME certificate issued"
                );
                self.record_expiry(key, &issued.cert);
                let renew_before = self.jobs.get(key).and_then(|j| j.renew_before);
                let due = self.planned_renewal(&key.issuer, &issued.cert, renew_before).await;
                if let Some(job) = self.jobs.get_mut(key) {
                    job.due = due;
                }
                if let Some(entry) = self.certs.entries.get_mut(key) {
                    entry.not_after = Some(issued.cert.meta.not_after);
                    entry.cert = Some(issued.cert);
                    entry.next_attempt = Some(due);
                    entry.last_error = None;
                    entry.failures = 0;
                }
            }
            Err(e) => {
                let reason = e.reason();
                self.metrics
                    .failures
                    .get_or_create(&FailureLabels {
                        issuer: key.issuer.clone(),
                        reason: reason.into(),
                    })
                    .inc();
                let failures = self.certs.entries.get(key).map_or(0, |e| e.failures);
                let delay = backoff(
                    failures,
                    BASE_BACKOFF,
                    MAX_BACKOFF,
                    e.retry_after(),
                    now,
                    rand::random(),
                );
                let due = now + delay;
                tracing::warn!(
                    issuer = %key.issuer,
                    names = ?key.names,
                    reason,
                    error = %e,
                    retry_in = ?delay,
                    "ACME certificate not obtained; the current certificate (if any) keeps serving"
                );
                if let Some(job) = self.jobs.get_mut(key) {
                    job.due = due;
                }
                if let Some(entry) = self.certs.entries.get_mut(key) {
                    entry.last_error = Some(Failure { reason, message: e.to_string(), at: now });
                    entry.failures = failures.saturating_add(1);
                    entry.next_attempt = Some(due);
                }
            }
        }
        self.publish();
    }

    fn record_expiry(&self, key: &CertKey, cert: &StoredCert) {
        let secs = cert
            .meta
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.metrics
            .expiry
            .get_or_create(&CertLabels { issuer: key.issuer.clone(), names: key.names.join(",") })
            .set(secs);
    }

    /// Publishes the certificates when they changed: every publication reloads the
    /// appliance, and being told what is wanted alone changes nothing that serves.
    fn publish(&self) {
        self.publish.send_if_modified(|published| {
            let changed = **published != self.certs;
            if changed {
                *published = Arc::new(self.certs.clone());
            }
            changed
        });
    }
}

mod unix {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }
}

mod unix_opt {
    use std::time::SystemTime;

    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::unix::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}
