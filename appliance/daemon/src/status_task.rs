//! Status, off the reload path: the reload loop hands each served state to one task, which
//! computes `/status` (and the cluster's status) from it while the next reload already runs.
//!
//! Traffic follows a change as soon as the data planes swapped; computing and serialising the
//! status of thousands of objects must not delay the next swap. A burst of reloads coalesces:
//! the task always works on the latest state, and within a burst rests between computations as
//! long as the last one took, so that it never takes more than half a core from the reloads.

use std::sync::Arc;

use gatehouse_admin::AdminState;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One publication's input: everything `/status` shows, as of one reload.
#[derive(Debug)]
pub struct StatusInput<S> {
    pub generation: u64,
    /// The state being served; `None` before the first successful load.
    pub serving: Option<Arc<S>>,
    /// `last_reload` as `/status` shows it.
    pub last_reload: Value,
    /// `kubernetes` as `/status` shows it, in cluster mode.
    pub kubernetes: Option<Value>,
    /// `acme` (certificates, expiry, next renewal) as `/status` shows it, with ACME issuers.
    pub acme: Option<Value>,
    /// `xdp` (attached, interface, applied generation, last error), when XDP is on.
    pub xdp: Option<Value>,
}

/// How a served state becomes status objects, and where they go besides `/status`.
pub trait StatusSource: Send + Sync + 'static {
    /// The status objects of this state (pure).
    fn objects(&self) -> Vec<Value>;
    /// Hands the objects to the cluster's status writer, where that applies.
    fn write_back(&self, writer: &gatehouse_kube::StatusWriter, objects: &[Value]);
}

/// The running status task; dropping it stops the task.
#[derive(Debug)]
pub struct StatusPublisher<S> {
    input: watch::Sender<Option<Arc<StatusInput<S>>>>,
    task: JoinHandle<()>,
}

impl<S: StatusSource + std::fmt::Debug> StatusPublisher<S> {
    pub fn spawn(admin: Arc<AdminState>, writer: Option<gatehouse_kube::StatusWriter>) -> Self {
        let (input, rx) = watch::channel(None);
        let task = tokio::spawn(run(rx, admin, writer));
        Self { input, task }
    }

    /// Publishes `input` (replacing one not yet worked on).
    pub fn publish(&self, input: StatusInput<S>) {
        let replaced = self.input.send_replace(Some(Arc::new(input)));
        // It may hold the last reference to a whole generation.
        crate::reload::drop_off_path(replaced);
    }
}

impl<S> Drop for StatusPublisher<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run<S: StatusSource>(
    mut input: watch::Receiver<Option<Arc<StatusInput<S>>>>,
    admin: Arc<AdminState>,
    writer: Option<gatehouse_kube::StatusWriter>,
) {
    let writer = writer.map(Arc::new);
    // The document last published, so unchanged conditions keep their transition time. Shared
    // with `/status` rather than copied: it holds every object.
    let mut published: Arc<Value> = Arc::new(Value::Null);
    while input.changed().await.is_ok() {
        let Some(next) = input.borrow_and_update().clone() else { continue };
        let started = std::time::Instant::now();
        let previous = published.clone();
        let (writer, admin) = (writer.clone(), admin.clone());
        // Pure CPU work on a blocking thread: the runtime keeps serving meanwhile.
        let computed = tokio::task::spawn_blocking(move || {
            let mut objects = next.serving.as_ref().map(|s| s.objects()).unwrap_or_default();
            let before = previous["objects"].as_array().map_or(&[][..], Vec::as_slice);
            gatehouse_gateway::transitions::preserve(before, &mut objects);
            if let (Some(writer), Some(serving)) = (&writer, &next.serving) {
                serving.write_back(writer, &objects);
            }
            let mut status = json!({
                "generation": next.generation,
                "last_reload": next.last_reload,
                "objects": objects,
            });
            if let Some(kubernetes) = &next.kubernetes {
                status["kubernetes"] = kubernetes.clone();
            }
            if let Some(acme) = &next.acme {
                status["acme"] = acme.clone();
            }
            if let Some(xdp) = &next.xdp {
                status["xdp"] = xdp.clone();
            }
            let status = Arc::new(status);
            admin.publish_status(status.clone());
            status
        })
        .await;
        match computed {
            Ok(status) => published = status,
            Err(error) => tracing::error!(%error, "status computation failed"),
        }
        // During a burst of reloads (a newer state arrived while this one was computed), rest
        // as long as the computation took: status then takes at most half a core from the
        // reloads and the traffic, and the burst coalesces into fewer computations. A lone
        // reload's status is computed at once.
        if input.has_changed().unwrap_or(false) {
            tokio::time::sleep(started.elapsed().min(MAX_REST)).await;
        }
    }
}

/// The longest rest between two status computations.
const MAX_REST: std::time::Duration = std::time::Duration::from_secs(1);
