//! The reload loop's one step: load → translate → compile → apply (one swap) → status.
//!
//! A failed load changes nothing that serves: the previous table stays in the proxy and the
//! previous objects stay in `/status`; only `last_reload` reports the errors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_admin::AdminState;
use gatehouse_kube::ClusterState;
use gatehouse_model::{DataPlaneReport, Desired};
use gatehouse_proxy::Proxy;
use gatehouse_wasm::Plugins;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::addresses::IpamState;
use crate::pipeline::{self, ConfigSource, LoadFailure, Loaded};
use crate::status_memo::{ApiState, StatusMemo, StatusObjects};
use crate::status_task::{StatusInput, StatusPublisher, StatusSource};
use crate::wasm_plugins::WasmPlugins;
use crate::watch::Fingerprint;

/// Reload counters and the current generation, on `/metrics`.
#[derive(Clone, Debug)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    generation: Gauge,
    last_success: Gauge,
    phases: Family<PhaseLabels, Histogram, fn() -> Histogram>,
}

impl Default for ReloadMetrics {
    fn default() -> Self {
        Self {
            reloads: Family::default(),
            generation: Gauge::default(),
            last_success: Gauge::default(),
            phases: Family::new_with_constructor(|| {
                // 100 µs to ~3 s.
                Histogram::new(exponential_buckets(0.0001, 2.0, 16))
            }),
        }
    }
}

/// A reload's phases: `load` (read sources, translate), `compile` (route table), `apply` (the
/// data planes' swap), `status` (compute and publish).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
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
        registry.register(
            "config_reload_phase_duration_seconds",
            "Time spent per reload phase (load, compile, apply, status)",
            metrics.phases.clone(),
        );
        metrics
    }

    fn observe(&self, phase: &'static str, since: Instant) -> Instant {
        let now = Instant::now();
        self.phases.get_or_create(&PhaseLabels { phase }).observe((now - since).as_secs_f64());
        now
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
    serving: Option<Arc<Serving>>,
    last_reload: Option<LastReload>,
    watch_paths: Vec<PathBuf>,
    /// What the cluster watches hold, and where they were started, in cluster mode.
    cluster: Option<(watch::Receiver<ClusterState>, gatehouse_kube::Options)>,
    /// Computes `/status` and the cluster's status (through its status writer) off the
    /// reload path.
    status: StatusPublisher<Serving>,
    /// The Lease election, in cluster mode: shown in `/status` under `kubernetes`.
    leadership: Option<watch::Receiver<gatehouse_kube::Leadership>>,
    /// LB-IPAM allocations kept across reloads and restarts (`<state_dir>/ipam.json`).
    ipam_state: Option<IpamState>,
    /// The ACME certificate manager: told what to certify, its certificates merged in.
    acme: Option<gatehouse_acme::Manager>,
    /// Listeners certified through cert-manager annotations on Gateways, at the last load.
    acme_requests: Vec<gatehouse_model::acme::ListenerCertificateRequest>,
    /// Prepares WASM plugins before each swap.
    wasm: Option<WasmPlugins>,
    /// Cluster mode: writes those listeners' certificates to their Secrets (leader only).
    secret_writer: Option<gatehouse_kube::SecretWriter>,
    /// The XDP data plane, when `[xdp]` was on at boot.
    xdp: Option<crate::xdp::Xdp>,
    /// Whether the XDP program was attached when the last generation was applied.
    xdp_attached: Option<bool>,
    /// The user-space L4 data plane (TCP, UDP and TLS listeners).
    l4: Option<Arc<gatehouse_l4proxy::L4Proxy>>,
    /// The kernel's local routes for the addresses user-space listeners bind.
    host_routes: Option<crate::local_routes::HostRoutes>,
    /// Memoises the Gateway API translation per route across reloads.
    translator: gatehouse_gateway::Translator,
    /// Reuses compiled routes that did not change across reloads.
    compiler: gatehouse_proxy::Compiler,
    /// The TOML config as last read, and what its file looked like then.
    parsed: Option<(Fingerprint, gatehouse_config::Config)>,
    /// The table being served, held so that the previous one is freed off the reload path.
    table: Option<Arc<gatehouse_proxy::RouteTable>>,
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
            admin: admin.clone(),
            metrics,
            generation: 0,
            serving: None,
            last_reload: None,
            watch_paths: Vec::new(),
            cluster,
            status: StatusPublisher::spawn(admin.clone(), status_writer),
            leadership: None,
            ipam_state: None,
            acme: None,
            acme_requests: Vec::new(),
            wasm: None,
            secret_writer: None,
            xdp: None,
            xdp_attached: None,
            l4: None,
            host_routes: None,
            translator: gatehouse_gateway::Translator::new(),
            compiler: gatehouse_proxy::Compiler::new(),
            parsed: None,
            table: None,
        }
    }

    /// Feeds the XDP data plane a plan per generation, after the proxy swapped.
    pub fn set_xdp(&mut self, xdp: crate::xdp::Xdp) {
        self.xdp = Some(xdp);
    }

    /// Keeps the local routes for the addresses user-space listeners bind, every generation.
    pub fn set_host_routes(&mut self, routes: crate::local_routes::HostRoutes) {
        self.host_routes = Some(routes);
    }

    /// Takes the keeper of the local routes (at exit, to remove them after the drain).
    pub fn take_host_routes(&mut self) -> Option<crate::local_routes::HostRoutes> {
        self.host_routes.take()
    }

    /// Feeds the user-space L4 data plane every generation, right after the proxy.
    pub fn set_l4(&mut self, l4: Arc<gatehouse_l4proxy::L4Proxy>) {
        self.l4 = Some(l4);
    }

    /// The XDP data plane's state changed: `/status` shows it. Returns whether its interface
    /// was lost or came back since the last apply: the listeners XDP serves then need a
    /// reload for their status (not served while it is gone).
    pub fn xdp_changed(&mut self) -> bool {
        self.publish_status();
        let attached = self.xdp.as_ref().map(crate::xdp::Xdp::attached);
        attached.is_some() && attached != self.xdp_attached
    }

    /// Detaches the XDP program (shutdown).
    pub fn stop_xdp(&mut self) {
        if let Some(xdp) = self.xdp.as_mut() {
            xdp.stop();
        }
    }

    /// Keeps LB-IPAM allocations in `state`: reloads start from them, and every successful
    /// load stores its allocation.
    pub fn set_ipam_state(&mut self, state: IpamState) {
        self.ipam_state = Some(state);
    }

    /// Lets the ACME manager certify listeners; its certificates join every apply.
    pub fn set_acme(&mut self, acme: gatehouse_acme::Manager) {
        self.acme = Some(acme);
    }

    /// Enables `[[plugins]]`: each reload prepares them before the swap.
    pub fn set_wasm(&mut self, wasm: WasmPlugins) {
        self.wasm = Some(wasm);
    }

    /// Cluster mode: ACME certificates of annotated Gateways go to their listeners' Secrets.
    pub fn set_secret_writer(&mut self, writer: gatehouse_kube::SecretWriter) {
        self.secret_writer = Some(writer);
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

    /// Serves `fallback` because the configured source could not be served at boot: `errors`
    /// (empty when the file is simply absent) and `note` show in `/status` under `last_reload`.
    pub async fn serve_fallback(
        &mut self,
        fallback: Loaded,
        mut errors: Vec<String>,
        note: String,
    ) {
        self.watch_paths = pipeline::watch_paths(&self.source, None);
        let mut fallback = fallback;
        let plugins = match self.prepare_plugins(&mut fallback).await {
            Ok(plugins) => plugins,
            Err(plugin_errors) => {
                errors.extend(plugin_errors);
                Plugins::default()
            }
        };
        fallback.warnings.push(note);
        // One publication, already with the boot errors: `/status` never shows the fallback
        // as a clean reload.
        self.apply(fallback, &plugins, errors).await;
    }

    /// One line for systemd's `STATUS=`: the generation served and whether the last reload
    /// worked.
    pub fn summary(&self) -> String {
        match &self.last_reload {
            Some(last) if !last.ok => format!(
                "serving generation {}; last reload failed: {}",
                self.generation,
                last.errors.first().map_or("", String::as_str)
            ),
            _ => format!("serving generation {}", self.generation),
        }
    }

    /// Loads every source anew and applies it; on failure keeps serving the last good state.
    pub async fn reload(&mut self) -> bool {
        self.parsed = None;
        // A full reload (SIGHUP, a file changed) also checks the local routes again.
        if let Some(routes) = self.host_routes.as_mut() {
            routes.recheck();
        }
        self.reload_cluster().await
    }

    /// Reloads after a change of the cluster's objects only: the TOML config is read again
    /// only if its file changed since it was last read (files it names, such as certificates,
    /// are read again on a file change or SIGHUP, as `reload` does).
    pub async fn reload_cluster(&mut self) -> bool {
        tracing::trace!(target: gatehouse_kube::PROPAGATION, hop = "reload_start");
        let started = Instant::now();
        let fingerprint = match &self.source {
            ConfigSource::File(path) => Fingerprint::of(std::slice::from_ref(path)),
            ConfigSource::Embedded => Fingerprint::default(),
        };
        let config = match self.parsed.take() {
            Some((seen, config)) if seen == fingerprint => Ok(config),
            _ => pipeline::read_config(&self.source),
        };
        if let Ok(config) = &config {
            self.parsed = Some((fingerprint, config.clone()));
        }
        // A copy: the watches keep updating while this reload translates.
        let cluster = self.cluster.as_mut().map(|(rx, _)| rx.borrow_and_update().clone());
        let previous = self.ipam_state.as_ref().map(|s| s.previous().clone()).unwrap_or_default();
        let loaded = config.and_then(|config| {
            pipeline::load_with(config, cluster, &previous, &mut self.translator)
        });
        match loaded {
            Ok(mut loaded) => {
                self.metrics.observe("load", started);
                if let Some(warning) = self.boot_only_change(&loaded) {
                    loaded.warnings.push(warning);
                }
                self.watch_paths = pipeline::watch_paths(&self.source, Some(&loaded.config));
                if let Some(acme) = &self.acme {
                    let (requests, secrets) = crate::acme::gateway_api(&mut loaded, &acme.certs());
                    self.acme_requests = requests;
                    acme.want(crate::acme::wanted(&loaded.config, &self.acme_requests));
                    if let Some(writer) = &self.secret_writer {
                        writer.publish(secrets);
                    }
                }
                // Modules compile before the swap: a bad one fails this reload, not traffic.
                match self.prepare_plugins(&mut loaded).await {
                    Ok(plugins) => {
                        self.apply(loaded, &plugins, Vec::new()).await;
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

    /// Compiles (or finds cached) the WASM modules `loaded` names, before anything swaps.
    async fn prepare_plugins(&mut self, loaded: &mut Loaded) -> Result<Plugins, Vec<String>> {
        match self.wasm.as_mut() {
            Some(wasm) => {
                let prepared = wasm.prepare(&loaded.desired.wasm_plugins).await?;
                loaded.warnings.extend(prepared.warnings);
                // Their routes' status says so (ResolvedRefs=False).
                if let Some(api) = loaded.gateway_api.as_mut() {
                    gatehouse_gateway::translate::mark_failed_plugins(
                        &mut api.translation.report,
                        &loaded.desired.http_routes,
                        &prepared.failed,
                    );
                }
                Ok(prepared.plugins)
            }
            None if loaded.desired.wasm_plugins.is_empty() => Ok(Plugins::default()),
            None => Err(vec!["wasm plugins are not available in this mode".to_owned()]),
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
            "[kubernetes] kubeconfig, namespaces, write_status, backend_addressing, the lease settings (or the section \
             itself) changed: the watches and the election keep their boot settings until a restart"
                .to_owned()
        })
    }

    /// Serves `loaded`. `errors` is empty for a successful reload; a fallback served because
    /// the configured source failed passes that source's errors, which `last_reload` shows.
    async fn apply(&mut self, mut loaded: Loaded, plugins: &Plugins, errors: Vec<String>) {
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        self.generation += 1;
        let mut desired = std::mem::take(&mut loaded.desired);
        desired.generation = self.generation;
        if let Some(api) = loaded.gateway_api.as_mut() {
            api.translation.desired.generation = self.generation;
        }

        let acme_problems = match &self.acme {
            Some(acme) => {
                let requests: Vec<_> = loaded
                    .config
                    .acme
                    .requests
                    .iter()
                    .chain(&self.acme_requests)
                    .cloned()
                    .collect();
                crate::acme::merge(&mut desired, &requests, &acme.certs())
            }
            None => Vec::new(),
        };
        let started = Instant::now();
        let (table, compile_problems) = self.compiler.compile(&desired, plugins);
        let compiled = self.metrics.observe("compile", started);
        let table = Arc::new(table);
        let mut report = self.proxy.apply(table.clone(), self.generation).await;
        tracing::trace!(
            target: gatehouse_kube::PROPAGATION,
            hop = "swapped",
            generation = self.generation
        );
        // XDP follows the proxy, then the user-space L4 proxy serves what XDP left to it (a
        // listener XDP takes over is balanced before its socket closes). A plan XDP refuses
        // leaves the previous one serving.
        self.xdp_attached = self.xdp.as_ref().map(crate::xdp::Xdp::attached);
        let xdp = match &self.xdp {
            Some(xdp) => xdp.apply(&desired, loaded.config.xdp.as_ref()).await,
            None => crate::xdp::Applied::default(),
        };
        if let Some(l4) = &self.l4 {
            let problems = match &xdp.user_space {
                Some(listeners) => {
                    let part = Desired {
                        generation: desired.generation,
                        l4_listeners: listeners.clone(),
                        ..Desired::default()
                    };
                    l4.apply(&part, loaded.config.l4).await
                }
                None => l4.apply(&desired, loaded.config.l4).await,
            };
            report.listener_problems.extend(problems);
        }
        // What the user-space listeners bind (XDP's VIPs are forwarded, never delivered
        // locally) must be routed as local for the kernel to deliver it to them.
        if let Some(routes) = self.host_routes.as_mut() {
            let l4_listeners = xdp.user_space.as_deref().unwrap_or(&desired.l4_listeners);
            let bound = desired.listeners.iter().flat_map(|l| l.addresses.iter().copied());
            let bound = bound.chain(l4_listeners.iter().flat_map(|l| l.addresses.iter().copied()));
            let warnings = routes.apply(loaded.config.local_routes, bound).await;
            loaded.warnings.extend(warnings);
        }
        report.listener_problems.extend(xdp.listener_problems);
        let previous_table = self.table.replace(table.clone());
        let applied = self.metrics.observe("apply", compiled);
        let (generation, described) = (self.generation, table.clone());
        self.admin.publish_config_with(
            move || json!({"generation": generation, "routes": described.describe()}),
        );
        let xdp_problems = match &self.xdp {
            Some(_) => xdp.warnings,
            // LoadBalancer Services without XDP only get their addresses: no warning for them.
            None if desired
                .l4_services
                .iter()
                .any(|s| s.id.kind == gatehouse_config::L4_SERVICE_KIND) =>
            {
                vec!["[[l4_services]] are served by XDP only: they need [xdp] (at boot)".to_owned()]
            }
            None => Vec::new(),
        };
        for problem in &xdp_problems {
            tracing::warn!("{problem}");
        }
        loaded.warnings.extend(xdp_problems);
        report.listener_problems.extend(compile_problems);
        // First, so a listener waiting for ACME shows the ACME reason, not "no certificate".
        report.listener_problems.splice(0..0, acme_problems);
        for problem in &report.listener_problems {
            tracing::warn!(listener = %problem.listener, kind = ?problem.kind, "{}", problem.message);
        }
        tracing::info!(
            generation = self.generation,
            listeners = desired.listeners.len(),
            routes = desired.http_routes.len(),
            translated = self.translator.last_translated(),
            compiled = self.compiler.last_compiled(),
            problems = report.listener_problems.len(),
            "config applied"
        );

        let result = if errors.is_empty() { "success" } else { "failure" };
        self.metrics.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.metrics.generation.set(i64::try_from(self.generation).unwrap_or(i64::MAX));
        self.metrics.last_success.set(jiff::Timestamp::now().as_second());
        self.last_reload = Some(LastReload {
            ok: errors.is_empty(),
            errors,
            warnings: loaded.warnings.clone(),
            at: jiff::Timestamp::now(),
        });
        if let (Some(state), Some(allocation)) = (self.ipam_state.as_mut(), &loaded.ipam) {
            state.store(allocation);
        }
        let synced = loaded.sources_synced;
        let previous = self.serving.replace(Arc::new(Serving { loaded, desired, report }));
        self.publish_status();
        self.admin.set_ready(self.proxy.ready() && synced);
        // The previous generation (thousands of routes in a cluster) is freed elsewhere: the
        // next event need not wait for it.
        drop_off_path((previous, previous_table));
        self.metrics.observe("status", applied);
    }

    /// Hands the state to the status task; `/status` follows shortly after.
    fn publish_status(&mut self) {
        let last_reload = self.last_reload.as_ref().map_or(Value::Null, |last| {
            json!({
                "ok": last.ok,
                "errors": last.errors,
                "warnings": last.warnings,
                "at": last.at.to_string(),
            })
        });
        let kubernetes = self.leadership.as_ref().map(|leadership| {
            let leadership = leadership.borrow();
            json!({"leader": leadership.leader, "holder": leadership.holder})
        });
        let acme = self.acme.as_ref().map(|acme| acme.certs().describe());
        let xdp = self.xdp.as_ref().map(crate::xdp::Xdp::describe);
        self.status.publish(StatusInput {
            generation: self.generation,
            serving: self.serving.clone(),
            last_reload,
            kubernetes,
            acme,
            xdp,
        });
    }
}

impl StatusSource for Serving {
    fn objects(&self, memo: &mut StatusMemo) -> StatusObjects {
        status_objects(self, memo)
    }

    /// The same objects `/status` shows (the writer keeps only the Gateway API ones), computed
    /// after the data planes answered for this generation. Never from a partial index (before
    /// every watch listed once), and not when `write_status = false`.
    fn write_back(&self, writer: &gatehouse_kube::StatusWriter, objects: &StatusObjects) {
        let enabled = self.loaded.config.kubernetes.as_ref().is_some_and(|k| k.write_status);
        if !enabled || !self.loaded.sources_synced {
            return;
        }
        if let Some(api) = &self.loaded.gateway_api {
            writer.publish_set(&api.settings.controller_name, objects.targets.clone());
        }
    }
}

/// Frees `value` on a blocking thread (inline outside a runtime): dropping a generation's
/// objects, tables and reports costs time the reload path should not spend.
pub fn drop_off_path<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
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
        backend_addressing: backend_addressing(k.backend_addressing),
    }
}

/// The config's `backend_addressing` as the translation reads it.
pub fn backend_addressing(
    addressing: gatehouse_config::BackendAddressing,
) -> gatehouse_gateway::BackendAddressing {
    match addressing {
        gatehouse_config::BackendAddressing::Endpoints => {
            gatehouse_gateway::BackendAddressing::Endpoints
        }
        gatehouse_config::BackendAddressing::NodePort => {
            gatehouse_gateway::BackendAddressing::NodePort
        }
    }
}

/// The status objects of `serving`: the Gateway API ones through `memo` (only changed
/// routes recomputed), the LB-IPAM Services and native objects whole.
fn status_objects(serving: &Serving, memo: &mut StatusMemo) -> StatusObjects {
    let now = jiff::Timestamp::now();
    let api = serving.loaded.gateway_api.as_ref().map(|api| ApiState {
        index: &api.index,
        settings: &api.settings,
        translation: &api.translation,
        data_plane: &serving.report,
    });
    let mut objects = Vec::new();
    if let (Some(api), Some(allocation)) = (&serving.loaded.gateway_api, &serving.loaded.ipam) {
        objects.extend(
            gatehouse_gateway::ipam::service_status(&api.index, allocation, now)
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
    memo.compute(api, objects, now)
}
