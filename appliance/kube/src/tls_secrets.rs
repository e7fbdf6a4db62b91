//! ACME certificates written back to the cluster: the Secret a listener's `certificateRef`
//! names gets the certificate the appliance obtained for it, as cert-manager would write it.
//!
//! ```text
//! daemon, after each load ── SecretWriter::publish(secrets)   (every certificate we hold)
//!                    │ tokio::sync::watch: one slot, the writer sees only the latest set
//!                    ▼
//!   GET Secret ── secret_to_apply (pure) ── PATCH, server-side apply, FIELD_MANAGER
//! ```
//!
//! Ownership: a Secret is ours when it carries the [`ISSUER_ANNOTATION`]. A missing Secret is
//! created (with it); one of ours is updated when its certificate differs; any other Secret of
//! that name (made by hand, by cert-manager) is never overwritten — the writer logs it and
//! counts `foreign`, and the appliance serves its own certificate from the state directory.
//! An operator hands such a Secret over by adding the annotation. One of ours deleted in the
//! cluster is written again (the daemon tells, per Secret, whether the watches still see
//! it). Only the Lease holder writes, like status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::lease::Leadership;
use crate::metrics::{KubeMetrics, WriteLabels};
use crate::status::FIELD_MANAGER;

/// Marks a Secret as written by this appliance's ACME manager; its value is the issuer.
pub const ISSUER_ANNOTATION: &str = "gatehouse.dev/acme-issuer";

/// The Secret type every listener certificate has.
const TLS_TYPE: &str = "kubernetes.io/tls";

/// Retries after errors back off from this, doubling, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One read-and-write; a hung API server must not stall the writer for long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One certificate to keep in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TlsSecret {
    pub namespace: String,
    pub name: String,
    /// The `[[acme.issuers]]` name (the annotation's value).
    pub issuer: String,
    /// `tls.crt`: leaf first, then the intermediates.
    pub chain_pem: String,
    /// `tls.key`.
    pub key_pem: String,
    /// Labels and annotations for the Secret: the Gateway's `spec.infrastructure` ones and
    /// `gateway.networking.k8s.io/gateway-name` (GatewayInfrastructurePropagation). Ours
    /// ([`ISSUER_ANNOTATION`]) wins over an annotation of the same key.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Whether the watched cluster state holds a Secret of that name: one of ours deleted
    /// there is written again.
    pub present: bool,
}

/// What to do with one Secret, given what the cluster holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Server-side apply this body (creating the Secret, or updating ours).
    Apply(Box<Secret>),
    /// The cluster already holds this certificate.
    Unchanged,
    /// A Secret of that name exists and is not ours: left alone.
    Foreign,
}

/// The pure part of a write: `current` is the Secret as the cluster holds it (`None`: absent).
pub fn secret_to_apply(desired: &TlsSecret, current: Option<&Secret>) -> Decision {
    if let Some(current) = current {
        let ours = current
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ISSUER_ANNOTATION));
        if !ours {
            return Decision::Foreign;
        }
        let data = current.data.clone().unwrap_or_default();
        let same = |key: &str, pem: &str| data.get(key).is_some_and(|b| b.0 == pem.as_bytes());
        let annotated = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ISSUER_ANNOTATION))
            .is_some_and(|i| *i == desired.issuer);
        let has = |held: &Option<BTreeMap<String, String>>, wanted: &BTreeMap<String, String>| {
            wanted
                .iter()
                .filter(|(k, _)| *k != ISSUER_ANNOTATION)
                .all(|(k, v)| held.as_ref().and_then(|h| h.get(k)) == Some(v))
        };
        let labelled = has(&current.metadata.labels, &desired.labels)
            && has(&current.metadata.annotations, &desired.annotations);
        if same("tls.crt", &desired.chain_pem)
            && same("tls.key", &desired.key_pem)
            && annotated
            && labelled
        {
            return Decision::Unchanged;
        }
    }
    let mut secret = Secret::default();
    secret.metadata.namespace = Some(desired.namespace.clone());
    secret.metadata.name = Some(desired.name.clone());
    let mut annotations = desired.annotations.clone();
    annotations.insert(ISSUER_ANNOTATION.to_owned(), desired.issuer.clone());
    secret.metadata.annotations = Some(annotations);
    if !desired.labels.is_empty() {
        secret.metadata.labels = Some(desired.labels.clone());
    }
    secret.type_ = Some(TLS_TYPE.to_owned());
    secret.data = Some(BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(desired.chain_pem.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(desired.key_pem.clone().into_bytes())),
    ]));
    Decision::Apply(Box::new(secret))
}

/// The Secret writer task; dropping it stops the task.
#[derive(Debug)]
pub struct SecretWriter {
    updates: watch::Sender<Arc<Vec<TlsSecret>>>,
    task: JoinHandle<()>,
}

impl SecretWriter {
    pub(crate) fn spawn(
        client: kube::Client,
        metrics: KubeMetrics,
        leadership: watch::Receiver<Leadership>,
    ) -> Self {
        let (updates, rx) = watch::channel(Arc::new(Vec::new()));
        let task = tokio::spawn(run(client, metrics, rx, leadership));
        Self { updates, task }
    }

    /// Hands over every certificate the cluster should hold now. Never blocks.
    pub fn publish(&self, mut secrets: Vec<TlsSecret>) {
        secrets.sort();
        secrets.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);
        self.updates.send_if_modified(|current| {
            let changed = **current != secrets;
            if changed {
                *current = Arc::new(secrets);
            }
            changed
        });
    }
}

impl Drop for SecretWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Key = (String, String);

/// How far one Secret got.
#[derive(Debug)]
enum Done {
    /// The cluster holds this certificate (written or found), or holds a foreign Secret.
    Settled(String),
    /// Failing: try again at this time.
    RetryAt { at: Instant, failures: u32 },
}

async fn run(
    client: kube::Client,
    metrics: KubeMetrics,
    mut updates: watch::Receiver<Arc<Vec<TlsSecret>>>,
    mut leadership: watch::Receiver<Leadership>,
) {
    // Per Secret: the certificate last settled, or the retry schedule.
    let mut state: HashMap<Key, Done> = HashMap::new();
    let mut leader = leadership.borrow_and_update().leader;
    loop {
        let wanted = updates.borrow_and_update().clone();
        if leader {
            let now = Instant::now();
            for secret in wanted.iter() {
                let key = (secret.namespace.clone(), secret.name.clone());
                let failures = match state.get(&key) {
                    Some(Done::Settled(chain)) if *chain == secret.chain_pem && secret.present => {
                        continue;
                    }
                    Some(Done::RetryAt { at, .. }) if *at > now => continue,
                    Some(Done::RetryAt { failures, .. }) => *failures,
                    _ => 0,
                };
                let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, write(&client, secret));
                let result = match attempt.await {
                    Ok(result) => result,
                    Err(_) => Err("timed out".to_owned()),
                };
                let label = match result {
                    Ok(label) => {
                        state.insert(key, Done::Settled(secret.chain_pem.clone()));
                        label
                    }
                    Err(error) => {
                        let backoff = FIRST_BACKOFF
                            .saturating_mul(2u32.saturating_pow(failures.min(16)))
                            .min(MAX_BACKOFF);
                        tracing::warn!(
                            secret = %format!("{}/{}", secret.namespace, secret.name),
                            %error,
                            retry_in = ?backoff,
                            "writing the ACME certificate to its Secret failed; retrying"
                        );
                        let failures = failures.saturating_add(1);
                        state.insert(key, Done::RetryAt { at: Instant::now() + backoff, failures });
                        "error"
                    }
                };
                metrics.secret_writes.get_or_create(&WriteLabels { result: label }).inc();
            }
            state.retain(|(ns, name), _| {
                wanted.iter().any(|s| s.namespace == *ns && s.name == *name)
            });
        }
        let next = state
            .values()
            .filter_map(|d| match d {
                Done::RetryAt { at, .. } => Some(*at),
                Done::Settled(_) => None,
            })
            .min()
            .filter(|_| leader);
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            changed = leadership.changed() => {
                if changed.is_err() {
                    // No election any more: nothing will ever be written.
                    return;
                }
                let now_leader = leadership.borrow_and_update().leader;
                if now_leader && !leader {
                    // Another appliance may have written since: check everything again.
                    state.clear();
                }
                leader = now_leader;
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
        }
    }
}

/// Reads the Secret and applies ours if needed; the result label for the metrics.
async fn write(client: &kube::Client, secret: &TlsSecret) -> Result<&'static str, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    let current = api.get_opt(&secret.name).await.map_err(|e| e.to_string())?;
    let path = format!("{}/{}", secret.namespace, secret.name);
    match secret_to_apply(secret, current.as_ref()) {
        Decision::Unchanged => Ok("unchanged"),
        Decision::Foreign => {
            tracing::warn!(
                secret = %path,
                annotation = ISSUER_ANNOTATION,
                "a Secret of this name exists and was not written by gatehouse: left alone \
                 (the listener serves the ACME certificate from the state directory); add the \
                 annotation to let gatehouse manage it"
            );
            Ok("foreign")
        }
        Decision::Apply(body) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&secret.name, &params, &Patch::Apply(&*body))
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(secret = %path, "ACME certificate written to its Secret");
            Ok("written")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired() -> TlsSecret {
        TlsSecret {
            namespace: "default".into(),
            name: "web-tls".into(),
            issuer: "pebble".into(),
            chain_pem: "CHAIN".into(),
            key_pem: "KEY".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            present: false,
        }
    }

    fn applied(decision: Decision) -> Secret {
        match decision {
            Decision::Apply(secret) => *secret,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_secret_is_created_with_our_annotation() {
        let secret = applied(secret_to_apply(&desired(), None));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.metadata.name.as_deref(), Some("web-tls"));
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(ISSUER_ANNOTATION).map(String::as_str), Some("pebble"));
        let data = secret.data.clone().unwrap_or_default();
        assert_eq!(data["tls.crt"].0, b"CHAIN");
        assert_eq!(data["tls.key"].0, b"KEY");
        // The apply body names its type, as server-side apply needs.
        let body = serde_json::to_value(&secret).unwrap();
        assert_eq!(
            (body["apiVersion"].as_str(), body["kind"].as_str()),
            (Some("v1"), Some("Secret"))
        );
    }

    #[test]
    fn ours_is_updated_only_when_it_differs() {
        let ours = applied(secret_to_apply(&desired(), None));
        assert_eq!(secret_to_apply(&desired(), Some(&ours)), Decision::Unchanged);
        let renewed = TlsSecret { chain_pem: "NEW".into(), ..desired() };
        let update = applied(secret_to_apply(&renewed, Some(&ours)));
        assert_eq!(update.data.unwrap_or_default()["tls.crt"].0, b"NEW");
    }

    #[test]
    fn infrastructure_labels_and_annotations_are_carried_and_kept() {
        let labelled = TlsSecret {
            labels: BTreeMap::from([("team".to_owned(), "edge".to_owned())]),
            annotations: BTreeMap::from([
                ("note".to_owned(), "hi".to_owned()),
                (ISSUER_ANNOTATION.to_owned(), "not-this".to_owned()),
            ]),
            ..desired()
        };
        let secret = applied(secret_to_apply(&labelled, None));
        assert_eq!(secret.metadata.labels.clone().unwrap_or_default()["team"], "edge");
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations["note"], "hi");
        assert_eq!(annotations[ISSUER_ANNOTATION], "pebble", "ours wins");
        assert_eq!(secret_to_apply(&labelled, Some(&secret)), Decision::Unchanged);
        // A Secret of ours written before the Gateway had the label gets it.
        let unlabelled = applied(secret_to_apply(&desired(), None));
        let update = applied(secret_to_apply(&labelled, Some(&unlabelled)));
        assert_eq!(update.metadata.labels.unwrap_or_default()["team"], "edge");
    }

    #[test]
    fn a_secret_not_ours_is_never_overwritten() {
        let mut theirs = applied(secret_to_apply(&desired(), None));
        theirs.metadata.annotations =
            Some(BTreeMap::from([("cert-manager.io/issuer-name".to_owned(), "pebble".to_owned())]));
        let renewed = TlsSecret { chain_pem: "NEW".into(), ..desired() };
        assert_eq!(secret_to_apply(&renewed, Some(&theirs)), Decision::Foreign);
        theirs.metadata.annotations = None;
        assert_eq!(secret_to_apply(&renewed, Some(&theirs)), Decision::Foreign);
    }
}
