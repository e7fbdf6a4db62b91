//! The reload loop's one step: load → translate → compile → apply (one swap) → status.
//!
//! A failed load changes nothing that serves: the previous table stays in the proxy and the
//! previous objects stay in `/status`; only `last_reload` reports the errors.

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_admin::AdminState;
use gatehouse_kube::ClusterState;
use gatehouse_model::{DataPlaneReport, Desired};
use gatehouse_proxy::Proxy;
use gatehouse_wasm::Plugins;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::pipeline::{self, ConfigSource, LoadFailure, Loaded};
use crate::wasm_plugins::WasmPlugins;

/// Reload counters and the current generation, on `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    generation: Gauge,
    last_success: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

impl ReloadMetrics {
    /// Registers the reload metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("config_reloads", "Config reloads by result", metrics.reloads.clone());
        registry.register(
            "config_generation",
            "Generation of the config being served",
            metrics.generation.clone(),
        );
        registry.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last successful reload",
            metrics.last_success.clone(),
        );
        metrics
    }
}

/// What the last reload attempt did.
#[derive(Clone, Debug)]
struct LastReload {
    ok: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
    at: jiff::Timestamp,
}

/// The last good state that is being served.
#[derive(Debug)]
struct Serving {
    loaded: Loaded,
    desired: Desired,
    report: DataPlaneReport,
}

/// Owns the reload sequence; one task drives it, so reloads never overlap.
#[derive(Debug)]
pub struct Reloader {
    source: ConfigSource,
    proxy: Arc<Proxy>,
    admin: Arc<AdminState>,
    metrics: ReloadMetrics,
    generation: u64,
    serving: Option<Serving>,
    last_reload: Option<LastReload>,
    watch_paths: Vec<PathBuf>,
    /// The objects last published, so unchanged conditions keep their transition time.
    published: Vec<Value>,
    /// What the cluster watches hold, and where they were started, in cluster mode.
    cluster: Option<(watch::Receiver<ClusterState>, gatehouse_kube::Options)>,
    /// Writes our Gateway API status back to the cluster, in cluster mode.
    status_writer: Option<gatehouse_kube::StatusWriter>,
    /// The Lease election, in cluster mode: shown in `/status` under `kubernetes`.
    leadership: Option<watch::Receiver<gatehouse_kube::Leadership>>,
    /// Prepares WASM plugins before each swap.
    wasm: Option<WasmPlugins>,
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        proxy: Arc<Proxy>,
        admin: Arc<AdminState>,
        metrics: ReloadMetrics,
        cluster: Option<(watch::Receiver<ClusterState>, gatehouse_kube::Options)>,
        status_writer: Option<gatehouse_kube::StatusWriter>,
    ) -> Self {
        Self {
            source,
            proxy,
            admin,
            metrics,
            generation: 0,
            serving: None,
            last_reload: None,
            watch_paths: Vec::new(),
            published: Vec::new(),
            cluster,
            status_writer,
            leadership: None,
            wasm: None,
        }
    }

    /// Enables `[[plugins]]`: each reload prepares them before the swap.
    pub fn set_wasm(&mut self, wasm: WasmPlugins) {
        self.wasm = Some(wasm);
    }

    /// Shows the election in `/status` (cluster mode).
    pub fn set_leadership(&mut self, leadership: watch::Receiver<gatehouse_kube::Leadership>) {
        self.leadership = Some(leadership);
    }

    /// The election changed: `/status` shows it at once, without waiting for a reload.
    pub fn leadership_changed(&mut self) {
        self.publish_status();
    }

    /// Paths whose changes should trigger the next reload.
    pub fn watch_paths(&self) -> &[PathBuf] {
        &self.watch_paths
    }

    /// Loads every source anew and applies it; on failure keeps serving the last good state.
    pub async fn reload(&mut self) -> bool {
        // A copy: the watches keep updating while this reload translates.
        let cluster = self.cluster.as_mut().map(|(rx, _)| rx.borrow_and_update().clone());
        match pipeline::load(&self.source, cluster) {
            Ok(mut loaded) => {
                if let Some(warning) = self.boot_only_change(&loaded) {
                    loaded.warnings.push(warning);
                }
                self.watch_paths = pipeline::watch_paths(&self.source, Some(&loaded.config));
                // Modules compile before the swap: a bad one fails this reload, not traffic.
                let plugins = match self.wasm.as_mut() {
                    Some(wasm) => wasm.prepare(&loaded.desired.wasm_plugins).await,
                    None if loaded.desired.wasm_plugins.is_empty() => Ok(Plugins::default()),
                    None => Err(vec!["wasm plugins are not available in this mode".to_owned()]),
                };
                match plugins {
                    Ok(plugins) => {
                        self.apply(loaded, &plugins).await;
                        true
                    }
                    Err(errors) => {
                        let config = Some(Box::new(loaded.config));
                        self.reload_failed(LoadFailure { errors, config });
                        false
                    }
                }
            }
            Err(failure) => {
                let fallback = self.serving.as_ref().map(|s| &s.loaded.config);
                self.watch_paths =
                    pipeline::watch_paths(&self.source, failure.config.as_deref().or(fallback));
                self.reload_failed(failure);
                false
            }
        }
    }

    /// Records a failed reload; what serves does not change.
    fn reload_failed(&mut self, failure: LoadFailure) {
        for error in &failure.errors {
            tracing::error!(source = %self.source.describe(), "{error}");
        }
        tracing::error!(
            errors = failure.errors.len(),
            generation = self.generation,
            "reload failed; the last good config keeps serving"
        );
        self.metrics.reloads.get_or_create(&ReloadLabels { result: "failure" }).inc();
        self.last_reload = Some(LastReload {
            ok: false,
            errors: failure.errors,
            warnings: Vec::new(),
            at: jiff::Timestamp::now(),
        });
        self.publish_status();
    }

    /// The watches were started with the boot config: a changed `kubeconfig` or `namespaces`
    /// (or `[kubernetes]` added or removed) takes a restart.
    fn boot_only_change(&self, loaded: &Loaded) -> Option<String> {
        let now = loaded.config.kubernetes.as_ref().map(cluster_options);
        let boot = self.cluster.as_ref().map(|(_, options)| options);
        (now.as_ref() != boot).then(|| {
            "[kubernetes] kubeconfig, namespaces, write_status, the lease settings (or the section \
             itself) changed: the watches and the election keep their boot settings until a restart"
                .to_owned()
        })
    }

    async fn apply(&mut self, mut loaded: Loaded, plugins: &Plugins) {
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        self.generation += 1;
        let mut desired = loaded.desired.clone();
        desired.generation = self.generation;
        if let Some(api) = loaded.gateway_api.as_mut() {
            api.translation.desired.generation = self.generation;
        }

        let (table, compile_problems) = gatehouse_proxy::compile_with_plugins(&desired, plugins);
        self.admin.publish_config(json!({
            "generation": self.generation,
            "routes": table.describe(),
        }));
        let mut report = self.proxy.apply(Arc::new(table), self.generation).await;
        report.listener_problems.extend(compile_problems);
        for problem in &report.listener_problems {
            tracing::warn!(listener = %problem.listener, kind = ?problem.kind, "{}", problem.message);
        }
        tracing::info!(
            generation = self.generation,
            listeners = desired.listeners.len(),
            routes = desired.http_routes.len(),
            problems = report.listener_problems.len(),
            "config applied"
        );

        self.metrics.reloads.get_or_create(&ReloadLabels { result: "success" }).inc();
        self.metrics.generation.set(i64::try_from(self.generation).unwrap_or(i64::MAX));
        self.metrics.last_success.set(jiff::Timestamp::now().as_second());
        self.last_reload = Some(LastReload {
            ok: true,
            errors: Vec::new(),
            warnings: loaded.warnings.clone(),
            at: jiff::Timestamp::now(),
        });
        let synced = loaded.sources_synced;
        self.serving = Some(Serving { loaded, desired, report });
        self.publish_status();
        self.admin.set_ready(self.proxy.ready() && synced);
    }

    fn publish_status(&mut self) {
        let mut objects = match &self.serving {
            None => Vec::new(),
            Some(serving) => status_objects(serving),
        };
        gatehouse_gateway::transitions::preserve(&self.published, &mut objects);
        self.published = objects.clone();
        self.write_back(&objects);
        let last_reload = self.last_reload.as_ref().map_or(Value::Null, |last| {
            json!({
                "ok": last.ok,
                "errors": last.errors,
                "warnings": last.warnings,
                "at": last.at.to_string(),
            })
        });
        let mut status = json!({
            "generation": self.generation,
            "last_reload": last_reload,
            "objects": objects,
        });
        if let Some(leadership) = &self.leadership {
            let leadership = leadership.borrow();
            status["kubernetes"] =
                json!({"leader": leadership.leader, "holder": leadership.holder});
        }
        self.admin.publish_status(status);
    }
}

impl Reloader {
    /// Hands the status to the cluster's status writer: the same objects `/status` shows
    /// (the writer keeps only the Gateway API ones), computed after the data planes answered
    /// for this generation. Never from a partial index (before every watch listed once), and
    /// not when `write_status = false`.
    fn write_back(&self, objects: &[Value]) {
        let (Some(writer), Some(serving)) = (&self.status_writer, &self.serving) else { return };
        let enabled = serving.loaded.config.kubernetes.as_ref().is_some_and(|k| k.write_status);
        if !enabled || !serving.loaded.sources_synced {
            return;
        }
        if let Some(api) = &serving.loaded.gateway_api {
            writer.publish(&api.settings.controller_name, objects);
        }
    }
}

/// The watches' and the election's settings: fixed at boot. The election runs only where
/// status is written (`write_status`), so a read-only appliance never holds the Lease.
pub fn cluster_options(k: &gatehouse_config::KubernetesSettings) -> gatehouse_kube::Options {
    let lease = k.write_status.then(|| gatehouse_kube::LeaseOptions {
        namespace: k.lease.namespace.clone(),
        name: k.lease.name.clone(),
        identity: k.lease.identity.clone().unwrap_or_else(gatehouse_kube::default_identity),
        duration: k.lease.duration,
    });
    gatehouse_kube::Options {
        kubeconfig: k.kubeconfig.clone(),
        namespaces: k.namespaces.clone(),
        lease,
    }
}

fn status_objects(serving: &Serving) -> Vec<Value> {
    let now = jiff::Timestamp::now();
    let mut objects = Vec::new();
    if let Some(api) = &serving.loaded.gateway_api {
        objects.extend(
            gatehouse_gateway::status(
                &api.index,
                &api.settings,
                &api.translation,
                &serving.report,
                now,
            )
            .into_iter()
            .filter_map(|object| serde_json::to_value(object).ok()),
        );
    }
    objects.extend(crate::native_status::objects(
        &serving.loaded.config.native,
        &serving.report,
        serving.desired.generation,
        now,
    ));
    objects
}
