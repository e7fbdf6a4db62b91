//! A fake Kubernetes API server on 127.0.0.1 that speaks the real wire protocol for what
//! cluster mode reads: LIST (a `List` with `metadata.resourceVersion`) and WATCH (a chunked
//! stream of newline-delimited `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object"}`),
//! with resource versions, field selectors (`type=`, `metadata.name=`), namespaced paths,
//! bookmarks, and 410 Gone for compacted history. GET of one object (and of its `/status`),
//! and PATCH of `/status` with server-side apply (`application/apply-patch+yaml`): each patch is
//! recorded for assertions and applied as an API server would (top-level status fields replaced,
//! so `status.parents` behaves as the atomic list it is; `metadata.resourceVersion` as a
//! precondition, 409 when stale; resourceVersion bumped, generation not, MODIFIED on watches).
//! Updates of the main resource ([`FakeKube::apply`]) keep the stored status and bump
//! `metadata.generation` of custom resources when their spec changed, as a real API server.
//! PATCH of a whole object with server-side apply (Secrets): created when absent, else merged
//! (see `apply_object`), recorded like status patches.
//! Lease objects (coordination.k8s.io/v1): GET, POST (create; 409 AlreadyExists) and PUT
//! (replace; 409 Conflict when `metadata.resourceVersion` is stale), each recorded.
//! Faults: the server can go down and come back with its state ([`FakeKube::set_down`]: open
//! connections cut, new ones closed at once), and cut a watch mid-event
//! ([`FakeKube::cut_next_event`]: half a JSON line, then the connection aborted).
//! No discovery: clients use known resources.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How often an idle watch gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

/// The fake API server; dropping it (or [`FakeKube::stop`]) closes the listener and every
/// connection, as an API server that went away.
#[derive(Debug)]
pub struct FakeKube {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Each watch event as its line is handed to the connection (see [`FakeKube::sent_events`]).
    sent: mpsc::UnboundedSender<SentEvent>,
    sent_log: Mutex<mpsc::UnboundedReceiver<SentEvent>>,
    /// While true every connection is refused (accepted and dropped) and open ones are cut.
    down: watch::Sender<bool>,
    /// Bumped on every change, so open watches look again.
    changed: watch::Sender<u64>,
}

/// (resource "group/plural", namespace, name).
type Key = (String, String, String);

/// One PATCH request as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedPatch {
    /// The request path (`/apis/gateway.networking.k8s.io/v1/namespaces/a/gateways/web/status`).
    pub path: String,
    pub content_type: String,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `force=true`.
    pub force: bool,
    pub body: Value,
    /// The status code answered.
    pub answered: u16,
    /// The bearer token of the request: which client (kubeconfig user) sent it.
    pub token: Option<String>,
}

/// One watch event as the server handed its line to the connection: when the bytes left for
/// the client (the propagation benchmark's first hop).
#[derive(Clone, Debug)]
pub struct SentEvent {
    /// `group/plural` of the watch.
    pub resource: String,
    /// The event's resourceVersion.
    pub rv: u64,
    pub at: std::time::SystemTime,
}

/// One Lease write (POST or PUT) as it arrived.
#[derive(Clone, Debug)]
pub struct RecordedLeaseWrite {
    pub method: String,
    pub path: String,
    /// `spec.holderIdentity` of the body.
    pub holder: Option<String>,
    /// 201 created, 200 replaced, 409 conflict.
    pub answered: u16,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    patches: Vec<RecordedPatch>,
    lease_writes: Vec<RecordedLeaseWrite>,
    /// The next this many PATCH requests fail with 500.
    failing_patches: usize,
    /// Before the next PATCH of this path, another writer sets this status (a race).
    interfere: Option<(String, Value)>,
    objects: BTreeMap<Key, Value>,
    log: Vec<Logged>,
    /// Watches from a resourceVersion below this get 410 Gone (history compacted).
    floor: u64,
    /// Bumped to end every open watch with 410 Gone.
    epoch: u64,
    /// The next event a watch of this resource (`group/plural`) sends is cut in half, then
    /// the connection is aborted.
    cut_next_event: Option<String>,
    requests: Vec<String>,
    /// Resources (`group/plural`) whose lists and watches answer 404, as for a CRD that is
    /// not installed.
    unserved: std::collections::BTreeSet<String>,
}

#[derive(Debug)]
struct Logged {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

impl FakeKube {
    /// Answers 404 to lists and watches of `resource` (`group/plural`, e.g.
    /// `gateway.networking.k8s.io/tcproutes`), as an API server without that CRD does.
    pub async fn unserve(&self, resource: &str) {
        self.shared.state.lock().await.unserved.insert(resource.to_owned());
    }

    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake API server");
        let addr = listener.local_addr().expect("local addr");
        let (changed, _) = watch::channel(0);
        let (down, _) = watch::channel(false);
        let (sent, sent_log) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            sent,
            sent_log: Mutex::new(sent_log),
            changed,
            down,
        });
        let server = shared.clone();
        let task = tokio::spawn(async move {
            // Connections and watch streams live in this set: aborting the task ends them all.
            let mut connections = JoinSet::new();
            let mut down = server.down.subscribe();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    Ok(()) = down.changed() => {
                        if *down.borrow_and_update() {
                            connections.abort_all();
                        }
                        continue;
                    }
                };
                let Ok((stream, _)) = accepted else { continue };
                if *down.borrow() {
                    drop(stream);
                    continue;
                }
                // As the real API server's: Go turns Nagle off on every TCP connection. With
                // it on, a watch event written while the previous one is unacknowledged waits
                // for the client's delayed ACK (up to 40 ms on Linux).
                let _ = stream.set_nodelay(true);
                let shared = server.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { addr, shared, task }
    }

    /// A kubeconfig whose current context is this server (plain HTTP, a bearer token).
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with_token("fake-token")
    }

    /// As [`FakeKube::kubeconfig`], with this bearer token (recorded with each patch, to tell
    /// clients apart).
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://{}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
current-context: fake
users:
- name: fake
  user:
    token: {token}
"#,
            self.addr
        )
    }

    /// Creates or replaces an object (ADDED or MODIFIED on open watches) as a client's create
    /// or update of the main resource would: the stored status is kept (none on create), and
    /// `metadata.generation` is the server's (see [`update_semantics`]). A status is written
    /// with [`FakeKube::write_status`].
    pub async fn apply(&self, object: Value) {
        self.write(object, true).await;
    }

    /// As [`FakeKube::apply`], returning the object's new resourceVersion.
    pub async fn apply_versioned(&self, object: Value) -> u64 {
        self.write(object, true).await
    }

    /// Replaces an object without telling open watches and compacts the history, then ends every
    /// open watch with 410 Gone: only a relist can see the change.
    pub async fn replace_behind_watches(&self, object: Value) {
        self.write(object, false).await;
        let mut state = self.shared.state.lock().await;
        state.floor = state.rv;
        state.epoch += 1;
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Takes the server down (`true`: open connections cut, new ones closed at once) or brings
    /// it back with its state, as an API server that restarts or a network that heals.
    pub fn set_down(&self, down: bool) {
        self.shared.down.send_replace(down);
    }

    /// The next event a watch of `api_version`/`kind` sends is cut in half (half a JSON line),
    /// then the connection is aborted; the event stays in the history for the re-watch.
    pub async fn cut_next_event(&self, api_version: &str, kind: &str) {
        self.shared.state.lock().await.cut_next_event = Some(resource(api_version, kind));
    }

    /// Writes `object`'s `status` through the `/status` subresource, as its controller would
    /// (another controller, a kubelet): the rest of the stored object, its generation included,
    /// stays; resourceVersion bumped, MODIFIED on open watches. Panics when it is not stored.
    pub async fn write_status(&self, object: Value) {
        let api_version = object["apiVersion"].as_str().expect("apiVersion");
        let resource = resource(api_version, object["kind"].as_str().expect("kind"));
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().expect("metadata.name").to_owned();
        let key = (resource, namespace, name);
        let mut state = self.shared.state.lock().await;
        let mut stored = state.objects.get(&key).cloned().expect("write_status of a stored object");
        stored["status"] = object["status"].clone();
        store(&mut state, &key, stored, "MODIFIED");
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Deletes an object (DELETED on open watches).
    pub async fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        let resource = resource(api_version, kind);
        let mut state = self.shared.state.lock().await;
        let key = (resource.clone(), namespace.to_owned(), name.to_owned());
        if let Some(mut object) = state.objects.remove(&key) {
            state.rv += 1;
            let rv = state.rv;
            object["metadata"]["resourceVersion"] = rv.to_string().into();
            state.log.push(Logged {
                rv,
                resource,
                namespace: namespace.to_owned(),
                kind: "DELETED",
                object,
            });
        }
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Every request so far, as `LIST /path?query` or `WATCH /path?query`.
    pub async fn requests(&self) -> Vec<String> {
        self.shared.state.lock().await.requests.clone()
    }

    /// The watch events sent since the last call, in the order their lines were handed to
    /// the connections (a watch per resource and scope: one event may be sent on several).
    pub async fn sent_events(&self) -> Vec<SentEvent> {
        let mut log = self.shared.sent_log.lock().await;
        std::iter::from_fn(|| log.try_recv().ok()).collect()
    }

    /// How many PATCH requests arrived so far.
    pub async fn patch_count(&self) -> usize {
        self.shared.state.lock().await.patches.len()
    }

    /// Every PATCH so far, in order.
    pub async fn patches(&self) -> Vec<RecordedPatch> {
        self.shared.state.lock().await.patches.clone()
    }

    /// Every Lease write so far, in order.
    pub async fn lease_writes(&self) -> Vec<RecordedLeaseWrite> {
        self.shared.state.lock().await.lease_writes.clone()
    }

    /// The next `n` PATCH requests are answered 500 Internal Server Error (and recorded).
    pub async fn fail_patches(&self, n: usize) {
        self.shared.state.lock().await.failing_patches = n;
    }

    /// Another writer races the next PATCH of `path`: just before it is applied, the stored
    /// object's status becomes `status` (resourceVersion bumped, MODIFIED on watches), so a
    /// patch computed from the earlier version meets a 409 if it carries its resourceVersion.
    pub async fn interfere_before_patch(&self, path: &str, status: Value) {
        self.shared.state.lock().await.interfere = Some((path.to_owned(), status));
    }

    /// One stored object, as a GET would return it.
    pub async fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let key = (resource(api_version, kind), namespace.to_owned(), name.to_owned());
        self.shared.state.lock().await.objects.get(&key).cloned()
    }

    /// Stops serving: the listener and every connection close.
    pub fn stop(&self) {
        self.task.abort();
    }

    async fn write(&self, mut object: Value, announce: bool) -> u64 {
        let api_version = object["apiVersion"].as_str().expect("apiVersion").to_owned();
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let resource = resource(&api_version, &kind);
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = object["metadata"]["name"].as_str().expect("metadata.name").to_owned();
        let mut state = self.shared.state.lock().await;
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        object["metadata"]["uid"] = format!("uid-{resource}-{namespace}-{name}").into();
        let key = (resource.clone(), namespace.clone(), name);
        let stored = state.objects.get(&key);
        let kind = if stored.is_some() { "MODIFIED" } else { "ADDED" };
        update_semantics(&resource, stored, &mut object);
        state.objects.insert(key, object.clone());
        if announce {
            state.log.push(Logged { rv, resource, namespace, kind, object });
        }
        drop(state);
        self.shared.changed.send_modify(|n| *n += 1);
        rv
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the API server does to a create or update of the main resource (not `/status`):
/// the status is the stored one (a create has none: status is written only through the
/// subresource), and for custom resources (every group but the built-in ones the tests use)
/// `metadata.generation` is the server's: 1 on create, bumped when anything but `metadata`
/// and `status` changed, whatever the client sent.
fn update_semantics(resource: &str, stored: Option<&Value>, object: &mut Value) {
    let Some(fields) = object.as_object_mut() else { return };
    match stored.map(|s| &s["status"]) {
        Some(status) if !status.is_null() => {
            fields.insert("status".into(), status.clone());
        }
        _ => {
            fields.remove("status");
        }
    }
    let group = resource.split_once('/').map_or("", |(group, _)| group);
    if matches!(group, "" | "discovery.k8s.io" | "coordination.k8s.io") {
        return;
    }
    let generation = match stored {
        None => 1,
        Some(stored) => {
            let old = stored["metadata"]["generation"].as_i64().unwrap_or(1);
            let spec = |o: &Value| -> serde_json::Map<String, Value> {
                o.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if spec(stored) == spec(object) { old } else { old + 1 }
        }
    };
    object["metadata"]["generation"] = generation.into();
}

/// `group/plural` for an apiVersion and kind (`discovery.k8s.io/endpointslices`, `/services`).
fn resource(api_version: &str, kind: &str) -> String {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let lower = kind.to_ascii_lowercase();
    let plural = if lower.ends_with('s') {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        // backendtlspolicy → backendtlspolicies (but gateway → gateways)
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    format!("{group}/{plural}")
}

/// What a request path names: a collection (`name` is `None`) or one object, perhaps a
/// subresource of it.
#[derive(Debug, PartialEq)]
struct Target {
    /// `group/plural`.
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Parses `/api/v1/…` and `/apis/group/version/…` paths.
fn parse_path(path: &str) -> Option<Target> {
    let (group, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
        ("", rest)
    } else {
        let rest = path.strip_prefix("/apis/")?;
        let (group, rest) = rest.split_once('/')?;
        let (_version, rest) = rest.split_once('/')?;
        (group, rest)
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let target = |namespace: Option<&str>, plural: &str, name: Option<&str>, sub: Option<&str>| {
        Some(Target {
            resource: format!("{group}/{plural}"),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: sub.map(str::to_owned),
        })
    };
    // No resource is called "status": three segments ending so are a cluster-scoped object's
    // status, not the collection of a namespace.
    match segments.as_slice() {
        [plural, name, sub] if *sub == "status" => target(None, plural, Some(name), Some(sub)),
        [plural] => target(None, plural, None, None),
        [plural, name] => target(None, plural, Some(name), None),
        ["namespaces", namespace, plural] => target(Some(namespace), plural, None, None),
        ["namespaces", namespace, plural, name] => {
            target(Some(namespace), plural, Some(name), None)
        }
        ["namespaces", namespace, plural, name, sub] => {
            target(Some(namespace), plural, Some(name), Some(sub))
        }
        _ => None,
    }
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What one LIST or WATCH request asks for.
struct Filter {
    resource: String,
    namespace: Option<String>,
    selector: Option<String>,
}

impl Filter {
    fn matches(&self, resource: &str, namespace: &str, object: &Value) -> bool {
        resource == self.resource
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
            && selected(object, self.selector.as_ref())
    }
}

/// Whether an object passes a field selector (`a.b=v,c=w`; only equality).
fn selected(object: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|selector| {
        selector.split(',').filter(|s| !s.is_empty()).all(|term| {
            let Some((field, value)) = term.split_once('=') else { return false };
            let pointer = format!("/{}", field.replace('.', "/"));
            object.pointer(&pointer).and_then(Value::as_str) == Some(value)
        })
    })
}

type ResponseBody = BoxBody<Bytes, std::io::Error>;

fn json_response(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}).boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<ResponseBody> {
    let uri = req.uri().clone();
    let params = query(&uri);
    let Some(target) = parse_path(uri.path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", &format!("no route for {}", uri.path())),
        );
    };
    if let Some(name) = target.name.clone() {
        return one_object(shared, req, &target, &name, &params).await;
    }
    if req.method() == http::Method::POST {
        return create(shared, req, &target).await;
    }
    let Target { resource, namespace, .. } = target;
    let watching = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut state = shared.state.lock().await;
    let verb = if watching { "WATCH" } else { "LIST" };
    state.requests.push(format!("{verb} {uri}"));
    if state.unserved.contains(&resource) {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "the server could not find the requested resource"),
        );
    }
    let filter = Filter {
        resource: resource.clone(),
        namespace,
        selector: params.get("fieldSelector").cloned(),
    };

    if !watching {
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((res, ns, _), object)| filter.matches(res, ns, object))
            .map(|(_, object)| object.clone())
            .collect();
        let list = json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": state.rv.to_string()},
            "items": items,
        });
        return json_response(StatusCode::OK, &list);
    }

    let from: u64 = params.get("resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
    let (tx, rx) = mpsc::channel::<(Bytes, Option<u64>)>(64);
    let body = WatchBody { lines: rx, resource: resource.clone(), sent: shared.sent.clone() };
    let response = Response::new(body.boxed());
    let gone = |tx: mpsc::Sender<(Bytes, Option<u64>)>| async move {
        let event =
            json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version")});
        let _ = tx.send((Bytes::from(format!("{event}\n")), None)).await;
    };
    if from < state.floor {
        drop(state);
        tokio::spawn(gone(tx));
        return response;
    }
    let epoch = state.epoch;
    let (api_version, kind) = bookmark_type(&resource);
    drop(state);
    let shared = shared.clone();
    let mut changed = shared.changed.subscribe();
    tokio::spawn(async move {
        let mut cursor = from;
        loop {
            let mut state = shared.state.lock().await;
            // The log is in resourceVersion order: skip what this watch has seen at once.
            let seen = state.log.partition_point(|e| e.rv <= cursor);
            let lines: Vec<(Bytes, Option<u64>)> = state.log[seen..]
                .iter()
                .filter(|e| filter.matches(&e.resource, &e.namespace, &e.object))
                .map(|e| {
                    let line = format!("{}\n", json!({"type": e.kind, "object": e.object}));
                    (Bytes::from(line), Some(e.rv))
                })
                .collect();
            let expired = state.epoch != epoch;
            let latest = state.rv;
            let cut = !lines.is_empty() && state.cut_next_event.as_ref() == Some(&filter.resource);
            if cut {
                state.cut_next_event = None;
            }
            drop(state);
            cursor = latest;
            if let (true, Some((line, _))) = (cut, lines.first()) {
                let _ = tx.send((line.slice(..line.len() / 2), None)).await;
                let _ = tx.send((Bytes::new(), None)).await;
                return;
            }
            for line in lines {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if expired {
                gone(tx).await;
                return;
            }
            tokio::select! {
                result = changed.changed() => if result.is_err() { return },
                () = tokio::time::sleep(BOOKMARK_EVERY) => {
                    let bookmark = json!({"type": "BOOKMARK", "object": {
                        "apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": cursor.to_string()}
                    }});
                    if tx.send((Bytes::from(format!("{bookmark}\n")), None)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    response
}

/// GET of one object (or its status), PATCH of its status with server-side apply.
async fn one_object(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    target: &Target,
    name: &str,
    params: &BTreeMap<String, String>,
) -> Response<ResponseBody> {
    let key = (target.resource.clone(), target.namespace.clone().unwrap_or_default(), name.into());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let not_found = || {
        json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", &format!("{path} not found")))
    };
    if method == http::Method::GET {
        let mut state = shared.state.lock().await;
        state.requests.push(format!("GET {path}"));
        return match state.objects.get(&key) {
            Some(object) => json_response(StatusCode::OK, object),
            None => not_found(),
        };
    }
    if method == http::Method::PUT && target.subresource.is_none() {
        return replace(shared, req, key).await;
    }
    let whole = target.subresource.is_none();
    if method != http::Method::PATCH || !(whole || target.subresource.as_deref() == Some("status"))
    {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(405, "MethodNotAllowed", &format!("{method} {path} is not served")),
        );
    }
    let token = bearer(&req);
    let body = read_json(req).await;
    let mut state = shared.state.lock().await;
    state.requests.push(format!("PATCH {path}"));
    if state.interfere.as_ref().is_some_and(|(p, _)| *p == path)
        && let Some((_, status)) = state.interfere.take()
        && let Some(mut object) = state.objects.get(&key).cloned()
    {
        object["status"] = status;
        state.rv += 1;
        let rv = state.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        state.objects.insert(key.clone(), object.clone());
        let (resource, namespace) = (key.0.clone(), key.1.clone());
        state.log.push(Logged { rv, resource, namespace, kind: "MODIFIED", object });
    }
    let (code, response) = if whole {
        apply_object(&mut state, &key, &content_type, &body)
    } else {
        apply_status(&mut state, &key, &content_type, &body)
    };
    state.patches.push(RecordedPatch {
        path,
        content_type,
        field_manager: params.get("fieldManager").cloned(),
        force: params.get("force").is_some_and(|f| f == "true"),
        body,
        answered: code.as_u16(),
        token,
    });
    drop(state);
    if code.is_success() {
        shared.changed.send_modify(|n| *n += 1);
    }
    json_response(code, &response)
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::to_owned)
}

async fn read_json(req: Request<Incoming>) -> Value {
    let body = http_body_util::Limited::new(req.into_body(), 1 << 20);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    match body.collect().await {
        Ok(body) => serde_json::from_slice::<Value>(&body.to_bytes()).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Stores a written object at a new resourceVersion and tells open watches.
fn store(state: &mut State, key: &Key, mut object: Value, kind: &'static str) -> Value {
    state.rv += 1;
    let rv = state.rv;
    object["metadata"]["resourceVersion"] = rv.to_string().into();
    state.objects.insert(key.clone(), object.clone());
    state.log.push(Logged {
        rv,
        resource: key.0.clone(),
        namespace: key.1.clone(),
        kind,
        object: object.clone(),
    });
    object
}

/// POST to a collection: create, 409 AlreadyExists when the name is taken.
async fn create(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    target: &Target,
) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    let mut object = read_json(req).await;
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", "no name"));
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    let key = (target.resource.clone(), namespace.clone(), name);
    let mut state = shared.state.lock().await;
    state.requests.push(format!("POST {path}"));
    let holder = object["spec"]["holderIdentity"].as_str().map(str::to_owned);
    let (code, response) = if state.objects.contains_key(&key) {
        (StatusCode::CONFLICT, status(409, "AlreadyExists", "already exists"))
    } else {
        if !namespace.is_empty() {
            object["metadata"]["namespace"] = namespace.into();
        }
        (StatusCode::CREATED, store(&mut state, &key, object, "ADDED"))
    };
    state.lease_writes.push(RecordedLeaseWrite {
        method: "POST".into(),
        path,
        holder,
        answered: code.as_u16(),
    });
    drop(state);
    shared.changed.send_modify(|n| *n += 1);
    json_response(code, &response)
}

/// PUT of one object: replace, 409 Conflict when its resourceVersion is not the stored one.
async fn replace(shared: &Arc<Shared>, req: Request<Incoming>, key: Key) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    let object = read_json(req).await;
    let mut state = shared.state.lock().await;
    state.requests.push(format!("PUT {path}"));
    let holder = object["spec"]["holderIdentity"].as_str().map(str::to_owned);
    let stored_rv = state
        .objects
        .get(&key)
        .map(|o| o["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned());
    let (code, response) = match stored_rv {
        None => (StatusCode::NOT_FOUND, status(404, "NotFound", "object not found")),
        Some(rv) if object["metadata"]["resourceVersion"].as_str() != Some(rv.as_str()) => {
            let message = "the object has been modified; please apply your changes to the latest version and try again";
            (StatusCode::CONFLICT, status(409, "Conflict", message))
        }
        Some(_) => (StatusCode::OK, store(&mut state, &key, object, "MODIFIED")),
    };
    state.lease_writes.push(RecordedLeaseWrite {
        method: "PUT".into(),
        path,
        holder,
        answered: code.as_u16(),
    });
    drop(state);
    shared.changed.send_modify(|n| *n += 1);
    json_response(code, &response)
}

/// Applies a server-side apply patch to an object's status, as the API server would for the
/// parts cluster mode writes.
fn apply_status(
    state: &mut State,
    key: &Key,
    content_type: &str,
    body: &Value,
) -> (StatusCode, Value) {
    if state.failing_patches > 0 {
        state.failing_patches -= 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "injected failure"),
        );
    }
    if content_type != "application/apply-patch+yaml" {
        let message = format!("unsupported patch content type {content_type:?}");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, status(415, "UnsupportedMediaType", &message));
    }
    let Some(stored) = state.objects.get(key) else {
        return (StatusCode::NOT_FOUND, status(404, "NotFound", "object not found"));
    };
    let stored_rv = stored["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && rv != stored_rv
    {
        let message = "the object has been modified; please apply your changes to the latest version and try again";
        return (StatusCode::CONFLICT, status(409, "Conflict", message));
    }
    let mut object = stored.clone();
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    for (field, value) in body["status"].as_object().into_iter().flatten() {
        object["status"][field] = value.clone();
    }
    state.rv += 1;
    let rv = state.rv;
    object["metadata"]["resourceVersion"] = rv.to_string().into();
    state.objects.insert(key.clone(), object.clone());
    state.log.push(Logged {
        rv,
        resource: key.0.clone(),
        namespace: key.1.clone(),
        kind: "MODIFIED",
        object: object.clone(),
    });
    (StatusCode::OK, object)
}

/// Applies a server-side apply patch to a whole object (not its status), as the API server
/// would for the parts cluster mode writes (Secrets): created when absent (ADDED), else
/// annotations and labels merged key by key and every other top-level field replaced
/// (MODIFIED); `metadata.resourceVersion`, when given, is a precondition.
fn apply_object(
    state: &mut State,
    key: &Key,
    content_type: &str,
    body: &Value,
) -> (StatusCode, Value) {
    if state.failing_patches > 0 {
        state.failing_patches -= 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", "injected failure"),
        );
    }
    if content_type != "application/apply-patch+yaml" {
        let message = format!("unsupported patch content type {content_type:?}");
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, status(415, "UnsupportedMediaType", &message));
    }
    let Some(stored) = state.objects.get(key).cloned() else {
        let mut object = body.clone();
        if !key.1.is_empty() {
            object["metadata"]["namespace"] = key.1.clone().into();
        }
        object["metadata"]["uid"] = format!("uid-{}-{}-{}", key.0, key.1, key.2).into();
        return (StatusCode::CREATED, store(state, key, object, "ADDED"));
    };
    if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
        && Some(rv) != stored["metadata"]["resourceVersion"].as_str()
    {
        let message = "the object has been modified; please apply your changes to the latest version and try again";
        return (StatusCode::CONFLICT, status(409, "Conflict", message));
    }
    let mut object = stored;
    for (field, value) in body.as_object().into_iter().flatten() {
        if matches!(field.as_str(), "metadata" | "status" | "apiVersion" | "kind") {
            continue;
        }
        object[field] = value.clone();
    }
    for map in ["annotations", "labels"] {
        for (k, v) in body["metadata"][map].as_object().into_iter().flatten() {
            object["metadata"][map][k] = v.clone();
        }
    }
    (StatusCode::OK, store(state, key, object, "MODIFIED"))
}

/// apiVersion and kind for a bookmark of a resource (clients only read its resourceVersion).
fn bookmark_type(resource: &str) -> (String, String) {
    let (group, plural) = resource.split_once('/').unwrap_or(("", resource));
    let api_version = if group.is_empty() { "v1".to_owned() } else { format!("{group}/v1") };
    (api_version, plural.to_owned())
}

/// A chunked body fed line by line (with the resourceVersion of an event's line); an empty
/// chunk aborts the connection mid-body.
struct WatchBody {
    lines: mpsc::Receiver<(Bytes, Option<u64>)>,
    resource: String,
    sent: mpsc::UnboundedSender<SentEvent>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        // An empty chunk is never sent as data: it stands for "cut the connection here".
        let this = &mut *self;
        this.lines.poll_recv(cx).map(|line| {
            line.map(|(line, rv)| {
                if line.is_empty() {
                    return Err(std::io::Error::other("watch cut"));
                }
                if let Some(rv) = rv {
                    let at = std::time::SystemTime::now();
                    let _ = this.sent.send(SentEvent { resource: this.resource.clone(), rv, at });
                }
                Ok(Frame::data(line))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_resources() {
        assert_eq!(resource("v1", "Service"), "/services");
        assert_eq!(
            resource("gateway.networking.k8s.io/v1", "GatewayClass"),
            "gateway.networking.k8s.io/gatewayclasses"
        );
        let t = |resource: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
            Some(Target {
                resource: resource.into(),
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
                subresource: sub.map(Into::into),
            })
        };
        assert_eq!(parse_path("/api/v1/namespaces"), t("/namespaces", None, None, None));
        assert_eq!(
            parse_path("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"),
            t("discovery.k8s.io/endpointslices", Some("a"), None, None)
        );
        let g = "gateway.networking.k8s.io";
        assert_eq!(
            parse_path(&format!("/apis/{g}/v1/gatewayclasses/gatehouse/status")),
            t(&format!("{g}/gatewayclasses"), None, Some("gatehouse"), Some("status"))
        );
        assert_eq!(
            parse_path(&format!("/apis/{g}/v1/namespaces/a/httproutes/r/status")),
            t(&format!("{g}/httproutes"), Some("a"), Some("r"), Some("status"))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/a/services/s"),
            t("/services", Some("a"), Some("s"), None)
        );
        assert_eq!(percent_decode("type%3Dkubernetes.io%2Ftls"), "type=kubernetes.io/tls");
        let secret = json!({"type": "kubernetes.io/tls", "metadata": {"name": "s"}});
        assert!(selected(&secret, Some(&"type=kubernetes.io/tls".to_owned())));
        assert!(!selected(&secret, Some(&"metadata.name=t".to_owned())));
    }
}
