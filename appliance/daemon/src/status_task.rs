//! Status, off the reload path: the reload loop hands each served state to one task, which
//! computes `/status` (and the cluster's status) from it while the next reload already runs.
//!
//! Traffic follows a change as soon as the data planes swapped; computing and serialising the
//! status of thousands of objects must not delay the next swap. The task keeps the previous
//! publication's objects ([`StatusMemo`]): only the routes that changed are computed again,
//! the cluster status writer is handed a set that shares every unchanged object, and
//! `/status` is assembled from the shared objects when it is asked for. A burst of reloads coalesces:
//! the task always works on the latest state, and within a burst rests between computations as
//! long as the last one took, so that it never takes more than half a core from the reloads.

use std::sync::Arc;

use gatehouse_admin::AdminState;
use serde_json::{Value, json};

use crate::status_memo::{StatusMemo, StatusObjects};
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
    /// The status objects of this state, computed again only where it differs from the state
    /// `memo` last saw.
    fn objects(&self, memo: &mut StatusMemo) -> StatusObjects;
    /// Hands the objects to the cluster's status writer, where that applies.
    fn write_back(&self, writer: &gatehouse_kube::StatusWriter, objects: &StatusObjects);
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
    // The previous publication's objects, so unchanged objects are neither computed again
    // nor copied, and unchanged conditions keep their transition time.
    let mut memo = StatusMemo::default();
    while input.changed().await.is_ok() {
        let Some(next) = input.borrow_and_update().clone() else { continue };
        let started = std::time::Instant::now();
        let mut taken = std::mem::take(&mut memo);
        let (writer, admin) = (writer.clone(), admin.clone());
        // Pure CPU work on a blocking thread: the runtime keeps serving meanwhile.
        let computed = tokio::task::spawn_blocking(move || {
            let objects = match &next.serving {
                Some(serving) => serving.objects(&mut taken),
                None => taken.compute(None, Vec::new(), jiff::Timestamp::now()),
            };
            if let (Some(writer), Some(serving)) = (&writer, &next.serving) {
                serving.write_back(writer, &objects);
            }
            let document = Document {
                generation: next.generation,
                last_reload: next.last_reload.clone(),
                kubernetes: next.kubernetes.clone(),
                acme: next.acme.clone(),
                xdp: next.xdp.clone(),
                objects,
            };
            admin.publish_status_with(move || document.render());
            taken
        })
        .await;
        match computed {
            Ok(kept) => memo = kept,
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

/// One publication of `/status`, rendered when it is asked for.
struct Document {
    generation: u64,
    last_reload: Value,
    kubernetes: Option<Value>,
    acme: Option<Value>,
    xdp: Option<Value>,
    objects: StatusObjects,
}

impl Document {
    fn render(&self) -> Value {
        let objects: Vec<Value> = self.objects.iter().map(|o| o.as_ref().clone()).collect();
        let mut status = json!({
            "generation": self.generation,
            "last_reload": self.last_reload,
            "objects": objects,
        });
        if let Some(kubernetes) = &self.kubernetes {
            status["kubernetes"] = kubernetes.clone();
        }
        if let Some(acme) = &self.acme {
            status["acme"] = acme.clone();
        }
        if let Some(xdp) = &self.xdp {
            status["xdp"] = xdp.clone();
        }
        status
    }
}

/// The longest rest between two status computations.
const MAX_REST: std::time::Duration = std::time::Duration::from_secs(1);
