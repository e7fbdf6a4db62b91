//! Status write-back: the one task that writes our status objects to the cluster.
//!
//! ```text
//! daemon, after each applied generation ── StatusWriter::publish(controller, objects)
//!                    │ tokio::sync::watch: one slot, a slow writer sees only the latest set
//!                    ▼
//!   diff against what was last written ── pending, one entry per object (latest wins)
//!                    │ at most one write per object per MIN_INTERVAL, backoff on errors
//!                    ▼
//!   GET …/status ── status_to_apply (pure) ── PATCH …/status, server-side apply, FIELD_MANAGER
//! ```
//!
//! The status itself is computed purely by `gatehouse_gateway::status`; this module only
//! decides what reaches the API server, and when. A follower (not holding the Lease) keeps
//! the latest set but writes nothing; on becoming leader it checks and writes every object
//! once, as the previous leader may have left any of them behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_gateway::{Kind, ObjectRef};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::lease::Leadership;
use crate::metrics::{KubeMetrics, WriteLabels};
use crate::resources::api_resource;

/// The field manager of every status write, whatever `controller_name` says: a fixed name, so
/// that a renamed controller still owns (and replaces) what it wrote before.
pub const FIELD_MANAGER: &str = "gatehouse.dev/gateway-controller";

/// At most one write per object in this interval: a burst of reloads becomes one write.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Retries after errors back off from [`MIN_INTERVAL`], doubling, up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One read-and-write of one object; a hung API server must not stall the others for the
/// client's long (watch-sized) read timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The kinds whose status is written (`get` and `patch` on their `/status`): ours of the
/// Gateway API, and LoadBalancer Services that LB-IPAM gave addresses.
pub const STATUS_KINDS: [Kind; 10] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::GrpcRoute,
    Kind::Service,
    Kind::TcpRoute,
    Kind::UdpRoute,
    Kind::TlsRoute,
    Kind::ListenerSet,
    Kind::BackendTlsPolicy,
];

/// The status list a kind shares with other controllers, one entry per controller (and
/// parent or ancestor): routes' `parents`, BackendTLSPolicy `ancestors`.
fn shared_list(desired: &Value) -> Option<&'static str> {
    match desired["kind"].as_str()? {
        "HTTPRoute" | "GRPCRoute" | "TCPRoute" | "UDPRoute" | "TLSRoute" => Some("parents"),
        "BackendTLSPolicy" => Some("ancestors"),
        _ => None,
    }
}

/// Our status objects by identity, as the daemon hands them over: a persistent map, so that
/// a set sharing its history with the previous one is compared in proportion to the change.
pub type StatusSet = imbl::OrdMap<ObjectRef, Arc<Value>>;

/// What the daemon hands over after an applied generation.
#[derive(Clone, Debug)]
struct Update {
    controller_name: String,
    /// Our Gateway API status objects only, by identity.
    objects: StatusSet,
}

/// The status writer task; dropping it stops the task.
#[derive(Debug)]
pub struct StatusWriter {
    updates: watch::Sender<Option<Arc<Update>>>,
    task: JoinHandle<()>,
}

impl StatusWriter {
    pub(crate) fn spawn(
        client: kube::Client,
        metrics: KubeMetrics,
        leadership: watch::Receiver<Leadership>,
    ) -> Self {
        let (updates, rx) = watch::channel(None);
        let task = tokio::spawn(Writer::new(client, metrics).run(rx, leadership));
        Self { updates, task }
    }

    /// Hands over the status objects of one applied generation (as `/status` shows them).
    /// Only GatewayClass, Gateway, the routes, ListenerSet and BackendTLSPolicy of the Gateway
    /// API and (LB-IPAM) Services are taken; the native TOML objects (and anything else) are
    /// skipped. Never blocks: the writer sees the latest set.
    pub fn publish(&self, controller_name: &str, objects: &[Value]) {
        let objects =
            objects.iter().filter_map(|o| Some((target(o)?, Arc::new(o.clone())))).collect();
        self.publish_set(controller_name, objects);
    }

    /// As [`StatusWriter::publish`], with the objects already keyed by [`target`] (and only
    /// those it keeps). The writer compares the set with the previous one it was handed, so
    /// a set derived from that one costs time in proportion to what changed.
    pub fn publish_set(&self, controller_name: &str, objects: StatusSet) {
        let update = Update { controller_name: controller_name.to_owned(), objects };
        // The replaced set may be the last reference to thousands of objects.
        drop_off_path(self.updates.send_replace(Some(Arc::new(update))));
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The identity of a status object we write, or `None` when it is not one of ours.
pub fn target(object: &Value) -> Option<ObjectRef> {
    let gateway_api = object["apiVersion"] == gatehouse_gateway::status::API_VERSION
        || object["apiVersion"] == gatehouse_gateway::status::API_VERSION_ALPHA2;
    let service = object["apiVersion"] == "v1" && object["kind"] == "Service";
    if !gateway_api && !service {
        return None;
    }
    let kind = object["kind"].as_str()?;
    let kind = STATUS_KINDS.into_iter().find(|k| k.as_str() == kind)?;
    let meta = &object["metadata"];
    Some(ObjectRef::new(kind, meta["namespace"].as_str().unwrap_or(""), meta["name"].as_str()?))
}

/// The `status` to apply for `desired` (one of our status objects, as `/status` shows it),
/// given the object as the cluster holds it now; `None` when the cluster already shows it.
///
/// - Conditions whose status the cluster already shows keep the cluster's
///   `lastTransitionTime`, so a restart (or another appliance) does not move them.
/// - `HTTPRoute.status.parents` is shared with other controllers, one entry per parentRef
///   and controller. The Gateway API CRDs declare no list-map keys for it, so server-side
///   apply treats it as an atomic list: whoever applies it owns all of it, and entries left
///   out of an apply are removed. So, as other implementations do (read, keep the others,
///   replace ours), the list applied is the cluster's with our controller's entries replaced
///   in place (appended when there were none). Keeping positions stable means two
///   controllers that both do this never reorder each other's writes back and forth. The
///   write carries the resourceVersion it was computed from, so an entry another controller
///   adds in between makes the API server answer 409, and the writer reads again.
///   `BackendTLSPolicy.status.ancestors` is shared the same way, per ancestor and controller.
pub fn status_to_apply(desired: &Value, current: &Value, controller_name: &str) -> Option<Value> {
    let mut seen = current.clone();
    // Single GETs carry apiVersion and kind; set them anyway, `preserve` matches on them.
    seen["apiVersion"] = desired["apiVersion"].clone();
    seen["kind"] = desired["kind"].clone();
    let mut ours = desired.clone();
    gatehouse_gateway::transitions::preserve(
        std::slice::from_ref(&seen),
        std::slice::from_mut(&mut ours),
    );
    let mut status = ours["status"].take();
    if let Some(list) = shared_list(desired) {
        let mine = status[list].as_array().cloned().unwrap_or_default();
        let is_mine = |p: &Value| p["controllerName"].as_str() == Some(controller_name);
        let mut parents = Vec::new();
        let mut mine = Some(mine);
        for parent in current["status"][list].as_array().into_iter().flatten() {
            if is_mine(parent) {
                parents.extend(mine.take().into_iter().flatten());
            } else {
                parents.push(parent.clone());
            }
        }
        parents.extend(mine.into_iter().flatten());
        status[list] = Value::Array(parents);
    }
    (current.get("status") != Some(&status)).then_some(status)
}

/// The server-side apply body: identity and `status` only. For an HTTPRoute it carries the
/// resourceVersion the merged parents were computed from (a precondition: 409 when stale).
fn apply_body(desired: &Value, status: Value, current: &Value) -> Value {
    let mut metadata = json!({"name": desired["metadata"]["name"]});
    if let Some(namespace) = desired["metadata"]["namespace"].as_str() {
        metadata["namespace"] = namespace.into();
    }
    if shared_list(desired).is_some()
        && let Some(rv) = current["metadata"]["resourceVersion"].as_str()
    {
        metadata["resourceVersion"] = rv.into();
    }
    json!({
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": metadata,
        "status": status,
    })
}

/// One object waiting to be written.
#[derive(Debug)]
struct Pending {
    object: Arc<Value>,
    due: Instant,
    /// Failed attempts so far (for the backoff).
    failures: u32,
}

/// How one write attempt ended.
enum Outcome {
    /// Written, or the cluster already showed it.
    Done,
    /// Nothing to write: the object is gone, or the cluster has a newer generation (a reload
    /// with it follows, and brings the status to write).
    Dropped,
    /// Try again at this time.
    Retry(Instant),
}

struct Writer {
    client: kube::Client,
    metrics: KubeMetrics,
    controller_name: String,
    /// What was last written (or found in place) per object, as the daemon computed it.
    written: HashMap<ObjectRef, Arc<Value>>,
    pending: BTreeMap<ObjectRef, Pending>,
    last_attempt: HashMap<ObjectRef, Instant>,
    /// Whether this appliance holds the Lease: only then is anything written.
    leader: bool,
    /// The latest set, requeued whole on becoming leader.
    latest: Option<Arc<Update>>,
}

impl Writer {
    fn new(client: kube::Client, metrics: KubeMetrics) -> Self {
        Self {
            client,
            metrics,
            controller_name: String::new(),
            written: HashMap::new(),
            pending: BTreeMap::new(),
            last_attempt: HashMap::new(),
            leader: false,
            latest: None,
        }
    }

    async fn run(
        mut self,
        mut updates: watch::Receiver<Option<Arc<Update>>>,
        leadership: watch::Receiver<Leadership>,
    ) {
        let mut leadership = Some(leadership);
        self.lead(leadership.as_mut().is_some_and(|rx| rx.borrow_and_update().leader));
        loop {
            let next = self.pending.values().map(|p| p.due).min().filter(|_| self.leader);
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let update = updates.borrow_and_update().clone();
                    if let Some(update) = update {
                        let previous = self.latest.take();
                        self.update(&update, previous.as_deref());
                        self.latest = Some(update);
                        // It may hold the last reference to a whole earlier set.
                        drop_off_path(previous);
                    }
                }
                leader = leader_changed(&mut leadership) => self.lead(leader),
                () = tokio::time::sleep_until(next.unwrap_or(far)), if next.is_some() => {
                    self.write_due().await;
                }
            }
        }
    }

    /// Follows the election. Becoming leader forgets what was written (another appliance
    /// may have written since) and queues the latest set whole, due now.
    fn lead(&mut self, leader: bool) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        if leader {
            self.written.clear();
            self.last_attempt.clear();
            self.pending.clear();
            if let Some(latest) = self.latest.clone() {
                self.update(&latest, None);
            }
            tracing::info!(objects = self.pending.len(), "leading: writing status");
        } else {
            tracing::info!("following: another appliance writes status");
        }
    }

    /// Queues every object whose status differs from what was last written. With the
    /// `previous` update (same controller name), only the objects that differ between the two
    /// are looked at: the others were queued (or found written) then.
    fn update(&mut self, update: &Update, previous: Option<&Update>) {
        let now = Instant::now();
        let previous = previous.filter(|p| p.controller_name == update.controller_name);
        self.controller_name.clone_from(&update.controller_name);
        let Some(previous) = previous else {
            for (r, object) in &update.objects {
                self.queue(r, object, now);
            }
            // Deleted, or no longer ours: nothing more to write.
            let live: HashSet<&ObjectRef> = update.objects.keys().collect();
            self.pending.retain(|r, _| live.contains(r));
            self.written.retain(|r, _| live.contains(r));
            self.last_attempt.retain(|r, _| live.contains(r));
            return;
        };
        for item in previous.objects.diff(&update.objects) {
            match item {
                imbl::ordmap::DiffItem::Add(r, object)
                | imbl::ordmap::DiffItem::Update { new: (r, object), .. } => {
                    self.queue(r, object, now);
                }
                imbl::ordmap::DiffItem::Remove(r, _) => {
                    self.pending.remove(r);
                    self.written.remove(r);
                    self.last_attempt.remove(r);
                }
            }
        }
    }

    /// Queues `object` unless it is what was last written.
    fn queue(&mut self, r: &ObjectRef, object: &Arc<Value>, now: Instant) {
        if self.written.get(r).is_some_and(|w| Arc::ptr_eq(w, object) || w == object) {
            self.pending.remove(r);
            return;
        }
        let due = self.last_attempt.get(r).map_or(now, |t| (*t + MIN_INTERVAL).max(now));
        self.pending
            .entry(r.clone())
            .and_modify(|p| p.object = object.clone())
            .or_insert_with(|| Pending { object: object.clone(), due, failures: 0 });
    }

    async fn write_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ObjectRef> =
            self.pending.iter().filter(|(_, p)| p.due <= now).map(|(r, _)| r.clone()).collect();
        for r in due {
            let Some(pending) = self.pending.get(&r) else { continue };
            let object = pending.object.clone();
            let failures = pending.failures;
            self.last_attempt.insert(r.clone(), Instant::now());
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, self.write(&r, &object, failures));
            let outcome = match attempt.await {
                Ok(outcome) => outcome,
                Err(elapsed) => self.failed(&r, "attempt", &elapsed, failures),
            };
            match outcome {
                Outcome::Done => {
                    self.pending.remove(&r);
                    self.written.insert(r, object);
                }
                Outcome::Dropped => {
                    self.pending.remove(&r);
                }
                Outcome::Retry(at) => {
                    if let Some(p) = self.pending.get_mut(&r) {
                        p.due = at;
                        p.failures = failures.saturating_add(1);
                    }
                }
            }
        }
    }

    async fn write(&self, r: &ObjectRef, desired: &Value, failures: u32) -> Outcome {
        let resource = api_resource(r.kind);
        let api: Api<DynamicObject> = if r.kind.is_namespaced() {
            Api::namespaced_with(self.client.clone(), &r.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        };
        let current = match api.get_status(&r.name).await {
            Ok(current) => serde_json::to_value(current).unwrap_or(Value::Null),
            Err(kube::Error::Api(status)) if status.is_not_found() => return Outcome::Dropped,
            Err(error) => return self.failed(r, "read", &error, failures),
        };
        let theirs = current["metadata"]["generation"].as_i64();
        let ours = desired["metadata"]["generation"].as_i64();
        if let (Some(theirs), Some(ours)) = (theirs, ours)
            && theirs > ours
        {
            return Outcome::Dropped;
        }
        let Some(status) = status_to_apply(desired, &current, &self.controller_name) else {
            self.count("unchanged");
            return Outcome::Done;
        };
        let body = apply_body(desired, status, &current);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(&r.name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                self.count("written");
                tracing::debug!(object = %r, "status written");
                tracing::trace!(target: crate::PROPAGATION, hop = "status_written", object = %r);
                Outcome::Done
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                // Changed since it was read: read again and re-merge, soon.
                self.count("conflict");
                tracing::debug!(object = %r, "status write conflicted; reading again");
                Outcome::Retry(Instant::now() + MIN_INTERVAL)
            }
            Err(error) => self.failed(r, "write", &error, failures),
        }
    }

    fn failed(
        &self,
        r: &ObjectRef,
        what: &str,
        error: &dyn std::fmt::Display,
        failures: u32,
    ) -> Outcome {
        self.count("error");
        let backoff = backoff(failures);
        // The first failure of a run is a warning; the retries that follow are noise.
        if failures == 0 {
            tracing::warn!(object = %r, %error, retry_in = ?backoff, "status {what} failed; retrying");
        } else {
            tracing::debug!(object = %r, %error, retry_in = ?backoff, "status {what} still failing");
        }
        Outcome::Retry(Instant::now() + backoff)
    }

    fn count(&self, result: &'static str) {
        self.metrics.status_writes.get_or_create(&WriteLabels { result }).inc();
    }
}

/// The next leadership state; when the election is gone, `false` once, then never again.
async fn leader_changed(leadership: &mut Option<watch::Receiver<Leadership>>) -> bool {
    let Some(rx) = leadership else { return std::future::pending().await };
    if rx.changed().await.is_ok() {
        rx.borrow_and_update().leader
    } else {
        *leadership = None;
        false
    }
}

/// Frees `value` on a blocking thread when inside a runtime (inline otherwise).
fn drop_off_path<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// [`MIN_INTERVAL`] doubled per earlier failure, at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    MIN_INTERVAL.saturating_mul(2u32.saturating_pow(failures.min(16))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "gatehouse.dev/gateway-controller";

    fn condition(kind: &str, status: &str, time: &str) -> Value {
        json!({"type": kind, "status": status, "reason": kind, "message": "",
               "observedGeneration": 2, "lastTransitionTime": time})
    }

    fn parent(controller: &str, gateway: &str, time: &str) -> Value {
        json!({"parentRef": {"name": gateway}, "controllerName": controller,
               "conditions": [condition("Accepted", "True", time)]})
    }

    fn route(parents: Vec<Value>) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "default", "name": "r", "generation": 2,
                         "resourceVersion": "7"},
            "status": {"parents": parents},
        })
    }

    #[test]
    fn only_our_gateway_api_objects_are_targets() {
        let gateway = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                             "metadata": {"namespace": "a", "name": "web"}});
        assert_eq!(target(&gateway), Some(ObjectRef::new(Kind::Gateway, "a", "web")));
        let class = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                           "metadata": {"name": "gatehouse"}});
        assert_eq!(target(&class), Some(ObjectRef::new(Kind::GatewayClass, "", "gatehouse")));
        let native = json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "Gateway",
                            "metadata": {"namespace": "toml", "name": "web"}});
        assert_eq!(target(&native), None);
        let grant = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "ReferenceGrant",
                           "metadata": {"namespace": "a", "name": "g"}});
        assert_eq!(target(&grant), None);
        // LB-IPAM's Services are written; no other core object is.
        let service = json!({"apiVersion": "v1", "kind": "Service",
                             "metadata": {"namespace": "a", "name": "dns"}});
        assert_eq!(target(&service), Some(ObjectRef::new(Kind::Service, "a", "dns")));
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
        assert_eq!(target(&namespace), None);
    }

    #[test]
    fn other_controllers_parents_are_kept_in_place_and_ours_replaced() {
        let current =
            route(vec![parent(OURS, "old", "t0"), parent("example.com/other", "theirs", "t0")]);
        let desired = route(vec![parent(OURS, "web", "t1")]);
        let status = status_to_apply(&desired, &current, OURS).expect("a write");
        assert_eq!(
            status["parents"],
            json!([parent(OURS, "web", "t1"), parent("example.com/other", "theirs", "t0")])
        );
        let body = apply_body(&desired, status, &current);
        assert_eq!(
            body["metadata"],
            json!({"name": "r", "namespace": "default",
                                            "resourceVersion": "7"})
        );
        assert!(body.get("spec").is_none());

        // None of ours yet: appended after theirs.
        let current = route(vec![parent("example.com/other", "theirs", "t0")]);
        let status = status_to_apply(&desired, &current, OURS).expect("a write");
        assert_eq!(status["parents"][1]["controllerName"], OURS);
    }

    #[test]
    fn an_unchanged_status_keeps_the_clusters_times_and_is_not_written() {
        let current =
            route(vec![parent("example.com/other", "x", "t0"), parent(OURS, "web", "t0")]);
        // Computed after a restart: same conditions, a newer time.
        let desired = route(vec![parent(OURS, "web", "t9")]);
        assert_eq!(status_to_apply(&desired, &current, OURS), None);

        // A condition that changed takes the new time; an unchanged one keeps the old.
        let mut desired = route(vec![parent(OURS, "web", "t9")]);
        desired["status"]["parents"][0]["conditions"].as_array_mut().unwrap().push(condition(
            "ResolvedRefs",
            "False",
            "t9",
        ));
        let status = status_to_apply(&desired, &current, OURS).expect("a write");
        let conditions = &status["parents"][1]["conditions"];
        assert_eq!(conditions[0]["lastTransitionTime"], "t0");
        assert_eq!(conditions[1]["lastTransitionTime"], "t9");
    }

    #[test]
    fn gateways_are_written_whole_without_a_precondition() {
        let desired = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "a", "name": "web", "generation": 1},
            "status": {"addresses": [], "conditions": [condition("Accepted", "True", "t1")],
                       "listeners": []},
        });
        let current = json!({"metadata": {"namespace": "a", "name": "web", "resourceVersion": "3"},
                             "status": {"conditions": []}});
        let status = status_to_apply(&desired, &current, OURS).expect("a write");
        assert_eq!(status, desired["status"]);
        let body = apply_body(&desired, status, &current);
        assert_eq!(body["metadata"], json!({"name": "web", "namespace": "a"}));
    }

    /// A set of route statuses `r<i>` with the given message each.
    fn set(routes: &[(usize, &str)]) -> Update {
        let objects = routes
            .iter()
            .map(|(i, message)| {
                let object = json!({"apiVersion": gatehouse_gateway::status::API_VERSION,
                    "kind": "HTTPRoute", "metadata": {"namespace": "a", "name": format!("r{i}")},
                    "status": {"parents": [], "message": message}});
                (target(&object).unwrap(), Arc::new(object))
            })
            .collect();
        Update { controller_name: OURS.into(), objects }
    }

    /// Objects by identity.
    type Objects = Vec<(ObjectRef, Value)>;

    /// What a writer has queued and considers written.
    fn queued(writer: &Writer) -> (Objects, Objects) {
        let pending = writer.pending.iter().map(|(r, p)| (r.clone(), (*p.object).clone()));
        let mut written: Vec<_> =
            writer.written.iter().map(|(r, v)| (r.clone(), (**v).clone())).collect();
        written.sort_by(|a, b| a.0.cmp(&b.0));
        (pending.collect(), written)
    }

    #[tokio::test]
    async fn a_diffed_update_queues_exactly_what_a_full_comparison_does() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mut diffed = Writer::new(client.clone(), KubeMetrics::default());
        let mut full = Writer::new(client, KubeMetrics::default());
        let steps = [
            set(&[(1, "a"), (2, "a"), (3, "a")]),
            // One changed, one gone, one new.
            set(&[(1, "b"), (2, "a"), (4, "a")]),
            // Back to what was written: nothing left to write for it.
            set(&[(1, "a"), (2, "a"), (4, "a")]),
            set(&[(2, "c")]),
            set(&[]),
            set(&[(5, "a"), (2, "c")]),
        ];
        let mut previous: Option<Update> = None;
        for (i, step) in steps.iter().enumerate() {
            diffed.update(step, previous.as_ref());
            full.update(step, None);
            assert_eq!(queued(&diffed), queued(&full), "step {i}");
            // The first queued object gets written (as `write_due` records a success).
            for writer in [&mut diffed, &mut full] {
                if let Some((r, p)) = writer.pending.pop_first() {
                    writer.written.insert(r, p.object);
                }
            }
            previous = Some(step.clone());
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_bound() {
        assert_eq!(backoff(0), MIN_INTERVAL);
        assert_eq!(backoff(2), MIN_INTERVAL * 4);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
