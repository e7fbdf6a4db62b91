//! Sources → one `Desired`: load the TOML file and the Gateway API manifests, replay the
//! objects into a fresh index (or take the index the cluster watches keep), translate, merge.
//! No I/O beyond reading files; no data plane.

use std::path::PathBuf;

use gatehouse_config::Config;
use gatehouse_gateway::{Index, Settings, Translation, Translator};
use gatehouse_ipam::{Allocation, Previous};
use gatehouse_kube::ClusterState;
use gatehouse_model::Desired;

use crate::addresses;

/// Where the TOML config comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    File(PathBuf),
    /// The default config compiled into the binary.
    Embedded,
}

impl ConfigSource {
    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Embedded => gatehouse_config::DEFAULT_CONFIG_NAME.to_owned(),
        }
    }
}

/// The Gateway API part of a load.
#[derive(Debug)]
pub struct GatewayApi {
    pub index: Index,
    pub settings: Settings,
    pub translation: Translation,
}

/// Everything one successful load produced.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub gateway_api: Option<GatewayApi>,
    /// Native form and Gateway API merged; generation still 0 (the reloader numbers it).
    pub desired: Desired,
    pub warnings: Vec<String>,
    /// In cluster mode, whether every watch has listed once; before that the appliance is
    /// not ready (it would serve half a cluster). Always true in file mode.
    pub sources_synced: bool,
    /// The LB-IPAM allocation, when pools are configured.
    pub ipam: Option<Allocation>,
}

/// A load that failed, with every error found and its place.
#[derive(Debug)]
pub struct LoadFailure {
    pub errors: Vec<String>,
    /// The TOML config, when it loaded and a later source failed (its paths stay watched).
    pub config: Option<Box<Config>>,
}

/// Paths whose changes should trigger a reload: the config file and the manifest paths.
pub fn watch_paths(source: &ConfigSource, config: Option<&Config>) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let ConfigSource::File(path) = source {
        paths.push(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
    }
    if let Some(settings) = config.and_then(|c| c.gateway_api.as_ref()) {
        paths.extend(settings.manifests.iter().cloned());
    }
    // A rebuilt local WASM module reloads like a changed config.
    for plugin in config.map(|c| &c.native.wasm_plugins[..]).unwrap_or_default() {
        if let gatehouse_model::ModuleSource::Path { path, .. } = &plugin.module {
            paths.push(path.clone());
        }
    }
    paths
}

/// Loads every source and merges them into one desired state. `cluster` is what the
/// Kubernetes watches hold (cluster mode); without it a `[kubernetes]` config translates an
/// empty index (as `gatehouse check` does).
pub fn load(source: &ConfigSource, cluster: Option<ClusterState>) -> Result<Loaded, LoadFailure> {
    let config = read_config(source)?;
    load_with(config, cluster, &Previous::new(), &mut Translator::new())
}

/// Reads and validates the TOML config (and the files it names).
pub fn read_config(source: &ConfigSource) -> Result<Config, LoadFailure> {
    let config = match source {
        ConfigSource::File(path) => gatehouse_config::load(path),
        ConfigSource::Embedded => gatehouse_config::parse_default(),
    };
    config.map_err(|errors| {
        let errors = errors.errors().iter().map(ToString::to_string).collect();
        LoadFailure { errors, config: None }
    })
}

/// [`load`] from a config already read, keeping the LB-IPAM allocations of `previous` where
/// they are still valid, and translating through `translator` (which reuses what it
/// translated last time, where the objects did not change).
pub fn load_with(
    mut config: Config,
    cluster: Option<ClusterState>,
    previous: &Previous,
    translator: &mut Translator,
) -> Result<Loaded, LoadFailure> {
    let mut warnings = Vec::new();
    let mut sources_synced = true;
    let api: Option<(Index, Settings)> = match (&config.kubernetes, &config.gateway_api) {
        (Some(kube), _) => {
            let index = match cluster {
                Some(cluster) => {
                    sources_synced = cluster.synced();
                    warnings.extend(
                        cluster.rejected.iter().map(|(r, why)| format!("cluster {r}: {why}")),
                    );
                    cluster.index
                }
                None => Index::default(),
            };
            let settings = Settings {
                controller_name: kube.controller_name.clone(),
                default_address: kube.default_address,
                backend_addressing: crate::reload::backend_addressing(kube.backend_addressing),
                wasm_module_dir: kube.wasm_module_dir.clone(),
            };
            Some((index, settings))
        }
        (None, None) => None,
        (None, Some(api)) => {
            let loaded = gatehouse_gateway::loader::load(&api.manifests);
            warnings.extend(loaded.warnings.iter().map(ToString::to_string));
            if !loaded.errors.is_empty() {
                let errors = loaded.errors.iter().map(ToString::to_string).collect();
                return Err(LoadFailure { errors, config: Some(Box::new(config)) });
            }
            let mut index = Index::default();
            index.reset(loaded.objects);
            let settings = Settings {
                controller_name: api.controller_name.clone(),
                default_address: api.default_address,
                backend_addressing: gatehouse_gateway::BackendAddressing::Endpoints,
                wasm_module_dir: api.wasm_module_dir.clone(),
            };
            Some((index, settings))
        }
    };

    // LB-IPAM, once over every source's objects, when pools are configured. In cluster mode
    // what the objects' status records wins over the local history.
    let ipam = (!config.ipam_pools.is_empty()).then(|| {
        let mut requests = addresses::native_requests(&config);
        let mut previous = previous.clone();
        if let Some((index, settings)) = &api {
            requests.extend(gatehouse_gateway::ipam::requests(index, settings));
            if config.kubernetes.is_some() {
                previous.extend(gatehouse_gateway::ipam::previous_from_status(index));
            }
        }
        gatehouse_ipam::allocate(&config.ipam_pools, &requests, &previous)
    });
    if let Some(allocation) = &ipam {
        addresses::apply_native(&mut config, allocation, &mut warnings);
    }

    let mut desired = config.native_desired();
    let gateway_api = api.map(|(index, settings)| {
        let mut translation = translator.translate(&index, &settings, ipam.as_ref());
        // Moved, not copied: status reads only the translation's report and generation.
        let generation = translation.desired.generation;
        desired.merge(std::mem::take(&mut translation.desired));
        translation.desired.generation = generation;
        GatewayApi { index, settings, translation }
    });
    if let Some(allocation) = &ipam {
        desired.owned_addresses = addresses::owned(allocation);
    }
    Ok(Loaded { config, gateway_api, desired, warnings, sources_synced, ipam })
}
