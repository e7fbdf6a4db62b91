//! `gatehouse run` and `gatehouse check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use gatehouse_admin::{AdminServer, AdminState};
use gatehouse_proxy::Proxy;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::cli::{CheckArgs, RunArgs};
use crate::pipeline::{self, ConfigSource};
use crate::reload::{ReloadMetrics, Reloader};
use crate::watch::{FileWatcher, Fingerprint};

/// How long file changes are collected before one reload runs.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// `gatehouse check`: validates and prints every error with its place.
pub fn check(args: &CheckArgs) -> ExitCode {
    let source = ConfigSource::File(args.config.clone());
    match pipeline::load(&source, None) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            // Binding is not tried here, so the data plane report is empty.
            let report = gatehouse_model::DataPlaneReport::default();
            let mut problems = match &loaded.gateway_api {
                Some(api) => {
                    let objects: Vec<serde_json::Value> = gatehouse_gateway::status(
                        &api.index,
                        &api.settings,
                        &api.translation,
                        &report,
                        jiff::Timestamp::now(),
                    )
                    .into_iter()
                    .filter_map(|object| serde_json::to_value(object).ok())
                    .collect();
                    crate::problems::from_status(&objects)
                }
                None => Vec::new(),
            };
            // Cluster mode: the objects are the cluster's; the kubeconfig at least must read.
            if let Some(path) =
                loaded.config.kubernetes.as_ref().and_then(|k| k.kubeconfig.as_deref())
                && let Err(error) = gatehouse_kube::check_kubeconfig(path)
            {
                problems.push(error.to_string());
            }
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            if problems.is_empty() {
                println!(
                    "{}: ok ({} listeners, {} HTTP routes)",
                    source.describe(),
                    loaded.desired.listeners.len(),
                    loaded.desired.http_routes.len()
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("{}: {} problem(s)", source.describe(), problems.len());
                ExitCode::FAILURE
            }
        }
        Err(failure) => {
            for error in &failure.errors {
                eprintln!("error: {error}");
            }
            eprintln!("{}: {} error(s)", source.describe(), failure.errors.len());
            ExitCode::FAILURE
        }
    }
}

/// Re-arms the file watches for `paths`, then compares them with `before` (taken before the
/// load): a change made while no watch was armed triggers one more reload instead of being lost.
fn rewatch(
    watcher: &mut FileWatcher,
    paths: &[PathBuf],
    before: &Fingerprint,
    recheck: &mpsc::Sender<()>,
) {
    watcher.rewatch(paths);
    if Fingerprint::of(paths) != *before {
        tracing::debug!("watched files changed during the reload: reloading again");
        let _ = recheck.try_send(());
    }
}

/// `gatehouse run`: serves until SIGTERM or SIGINT.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // One worker asked for (as in one-core deployments and the benchmark): the current-thread
    // scheduler serves it without the work-stealing machinery (shared queues, atomics,
    // a separate driver thread hand-off) that a lone worker pays for and cannot use.
    let single = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .enable_all()
        .thread_name("gatehouse")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let source = match args.config {
        Some(path) => ConfigSource::File(path),
        None => ConfigSource::Embedded,
    };
    // The first load decides the boot-only settings; if it fails there is nothing to serve,
    // unless a fallback config was given (an appliance must come up to be repaired).
    let (first, fallback) = match pipeline::load(&source, None) {
        Ok(first) => (first, None),
        Err(failure) => match &args.fallback_config {
            Some(path) => {
                let (first, fallback) = load_fallback(&source, path, failure)?;
                (first, Some(fallback))
            }
            None => anyhow::bail!(
                "{}: invalid config:\n  {}",
                source.describe(),
                failure.errors.join("\n  ")
            ),
        },
    };
    let admin_listen = first.config.admin_listen;
    let shutdown_grace = first.config.shutdown_grace;

    let mut registry = Registry::with_prefix("gatehouse");
    let proxy = Arc::new(Proxy::new(&mut registry));
    let l4 = Arc::new(gatehouse_l4proxy::L4Proxy::new(&mut registry));
    let metrics = ReloadMetrics::register(&mut registry);
    let acme = gatehouse_acme::Manager::start(&first.config.state_dir, &mut registry);
    let mut acme_changes = acme.subscribe();
    let wasm = crate::wasm_plugins::WasmPlugins::new(&first.config.state_dir, &mut registry);
    // XDP attaches once, with the boot config (interface, mode and table sizes are boot-only).
    let xdp = match &first.config.xdp {
        Some(settings) => Some(crate::xdp::Xdp::start(settings, &mut registry)?),
        None => None,
    };
    let mut xdp_changes = xdp.as_ref().map(crate::xdp::Xdp::subscribe);
    // Cluster mode: the watches start once, with the boot config (a change needs a restart).
    let mut cluster = match &first.config.kubernetes {
        None => None,
        Some(kube) => {
            let options = crate::reload::cluster_options(kube);
            let kube_metrics = gatehouse_kube::KubeMetrics::register(&mut registry);
            let cluster = gatehouse_kube::Cluster::connect(&options, kube_metrics)
                .await
                .context("cannot start cluster mode")?;
            tracing::info!(
                kubeconfig = ?options.kubeconfig,
                namespaces = ?options.namespaces,
                lease = ?options.lease,
                "cluster mode: watching the Kubernetes API server"
            );
            Some((cluster, options))
        }
    };
    let mut cluster_changes = cluster.as_ref().map(|(cluster, _)| cluster.subscribe());
    let mut leadership = cluster.as_ref().map(|(cluster, _)| cluster.leadership());
    let admin_state = Arc::new(AdminState::new(Arc::new(registry)));
    let admin = AdminServer::bind(admin_listen, admin_state.clone()).await?;
    tracing::info!(%admin_listen, config = %source.describe(), "gatehouse starting");
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(admin.serve(admin_stopped));

    let mut reloader = Reloader::new(
        source,
        proxy.clone(),
        admin_state.clone(),
        metrics,
        cluster.as_ref().map(|(cluster, options)| (cluster.subscribe(), options.clone())),
        // Always started in cluster mode: `write_status` is read on every reload.
        cluster.as_ref().map(|(cluster, _)| cluster.status_writer()),
    );
    if let Some(leadership) = &leadership {
        reloader.set_leadership(leadership.clone());
    }
    if let Some((cluster, _)) = &cluster {
        reloader.set_secret_writer(cluster.secret_writer());
    }
    // Before READY=1: a SIGHUP right after readiness must reload, not kill.
    let mut hangup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    reloader.set_ipam_state(crate::addresses::IpamState::open(&first.config.state_dir));
    reloader.set_acme(acme);
    reloader.set_wasm(wasm);
    reloader.set_l4(l4.clone());
    reloader.set_host_routes(crate::local_routes::HostRoutes::open());
    if let Some(xdp) = xdp {
        reloader.set_xdp(xdp);
    }
    match fallback {
        None => {
            reloader.reload().await;
        }
        Some(Fallback { errors, note }) => reloader.serve_fallback(first, errors, note).await,
    }
    crate::systemd::ready(&reloader.summary());
    let _watchdog = crate::systemd::spawn_watchdog();
    let mut seen = Fingerprint::of(reloader.watch_paths());

    let (changed_tx, mut changed_rx) = mpsc::channel(1);
    let recheck = changed_tx.clone();
    let mut watcher = match FileWatcher::new(changed_tx) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, "file watching unavailable; reload with SIGHUP");
            None
        }
    };
    if let Some(watcher) = watcher.as_mut() {
        rewatch(watcher, reloader.watch_paths(), &seen, &recheck);
    }

    // Set when systemd was told RELOADING=1: the reload ends with READY=1.
    let mut notify_ready = false;
    loop {
        // Set when only the cluster's objects changed: the config file need not be read.
        let mut cluster_only = false;
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading");
                crate::systemd::reloading("reloading (SIGHUP)");
                notify_ready = true;
            }
            Some(()) = changed_rx.recv() => {
                // Let a burst of writes settle, then reload once.
                tokio::time::sleep(DEBOUNCE).await;
                while changed_rx.try_recv().is_ok() {}
                tracing::info!("watched files changed: reloading");
                crate::systemd::reloading("reloading (files changed)");
                notify_ready = true;
            }
            changed = cluster_changed(cluster_changes.as_mut()) => {
                if !changed {
                    tracing::error!("cluster watches stopped; serving the last state");
                    cluster_changes = None;
                    continue;
                }
                // Before every watch has listed once the index is partial: wait for all.
                let synced =
                    cluster_changes.as_mut().is_some_and(|rx| rx.borrow_and_update().synced());
                if !synced {
                    continue;
                }
                tracing::debug!("cluster objects changed: reloading");
                tracing::trace!(target: gatehouse_kube::PROPAGATION, hop = "woke");
                cluster_only = true;
            }
            changed = leadership_changed(leadership.as_mut()) => {
                if !changed {
                    leadership = None;
                }
                reloader.leadership_changed();
                continue;
            }
            changed = xdp_changed(xdp_changes.as_mut()) => {
                if !changed {
                    xdp_changes = None;
                }
                if !reloader.xdp_changed() {
                    continue;
                }
                tracing::debug!("XDP interface lost or back: reloading");
                cluster_only = true;
            }
            Ok(()) = acme_changes.changed() => {
                tracing::debug!("ACME certificates changed: reloading");
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        if cluster_only {
            // The file watches stay armed through a cluster-only reload (no file was read
            // unless it changed, and then its watch fired): they are re-armed only when the
            // paths changed, followed by one full reload for whatever changed unwatched.
            let before = reloader.watch_paths().to_vec();
            reloader.reload_cluster().await;
            if let Some(watcher) = watcher.as_mut()
                && reloader.watch_paths() != before.as_slice()
            {
                watcher.rewatch(reloader.watch_paths());
                let _ = recheck.try_send(());
            }
        } else {
            seen = Fingerprint::of(reloader.watch_paths());
            reloader.reload().await;
            if let Some(watcher) = watcher.as_mut() {
                rewatch(watcher, reloader.watch_paths(), &seen, &recheck);
            }
        }
        if std::mem::take(&mut notify_ready) {
            crate::systemd::ready(&reloader.summary());
        }
    }

    tracing::info!(grace = ?shutdown_grace, "shutting down: draining in-flight requests");
    crate::systemd::stopping("draining in-flight requests");
    admin_state.set_ready(false);
    // First, so that a follower writes status while this one drains.
    if let Some((cluster, _)) = cluster.as_mut() {
        cluster.release_lease().await;
    }
    l4.shutdown();
    proxy.shutdown(shutdown_grace).await;
    reloader.stop_xdp();
    // After the drain: the connections still open needed their addresses local.
    if let Some(mut routes) = reloader.take_host_routes() {
        routes.clear().await;
    }
    let _ = stop_admin.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), admin_task).await;
    drop(cluster);
    tracing::info!("stopped");
    Ok(())
}

/// Why the boot config is not the one served.
struct Fallback {
    errors: Vec<String>,
    note: String,
}

/// The configured source failed at boot: loads the fallback config instead. A missing file is
/// not an error (an image without a config drive); an invalid one is, and is logged.
fn load_fallback(
    source: &ConfigSource,
    path: &std::path::Path,
    failure: pipeline::LoadFailure,
) -> anyhow::Result<(pipeline::Loaded, Fallback)> {
    let missing = matches!(source, ConfigSource::File(config) if !config.exists());
    let fallback_source = ConfigSource::File(path.to_path_buf());
    let loaded = pipeline::load(&fallback_source, None).map_err(|fallback_failure| {
        anyhow::anyhow!(
            "{}: invalid config:\n  {}\nand the fallback {} is invalid too:\n  {}",
            source.describe(),
            failure.errors.join("\n  "),
            fallback_source.describe(),
            fallback_failure.errors.join("\n  ")
        )
    })?;
    let (errors, note) = if missing {
        tracing::info!(
            config = %source.describe(),
            fallback = %fallback_source.describe(),
            "no config file: serving the fallback config"
        );
        (Vec::new(), format!("{} does not exist: serving {}", source.describe(), path.display()))
    } else {
        for error in &failure.errors {
            tracing::error!(source = %source.describe(), "{error}");
        }
        tracing::error!(
            errors = failure.errors.len(),
            fallback = %fallback_source.describe(),
            "invalid config at boot: serving the fallback config until it is fixed"
        );
        let note = format!("{} is invalid: serving {}", source.describe(), path.display());
        (failure.errors, note)
    };
    Ok((loaded, Fallback { errors, note }))
}

/// Waits for the next change of the XDP data plane's state; `false` when it is gone. Without
/// XDP it never completes.
async fn xdp_changed(changes: Option<&mut watch::Receiver<gatehouse_xdp::PlaneStatus>>) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Waits for the next change of the election; `false` when it is gone (or never ran: a
/// read-only appliance). Without a cluster it never completes.
async fn leadership_changed(
    changes: Option<&mut watch::Receiver<gatehouse_kube::Leadership>>,
) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Waits for the next change of the cluster state; `false` when the watches are gone. Without
/// a cluster it never completes.
async fn cluster_changed(
    changes: Option<&mut watch::Receiver<gatehouse_kube::ClusterState>>,
) -> bool {
    match changes {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
