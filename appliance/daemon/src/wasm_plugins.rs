//! The WASM filter host as the reloader uses it: started on first use (a config without
//! plugins never starts an engine), then asked to prepare each generation's plugins before
//! the swap.

use gatehouse_model::WasmPlugin;
use gatehouse_wasm::{Host, HostMetrics, HostOptions, Plugins};
use prometheus_client::registry::Registry;

/// The host, or what it takes to start it.
#[derive(Debug)]
pub struct WasmPlugins {
    options: HostOptions,
    metrics: HostMetrics,
    host: Option<Host>,
}

impl WasmPlugins {
    /// Registers the metrics now (the registry is sealed after start-up); compiled modules
    /// are cached under `<state_dir>/wasm`.
    pub fn new(state_dir: &std::path::Path, registry: &mut Registry) -> Self {
        let options =
            HostOptions { cache_dir: Some(state_dir.join("wasm")), ..HostOptions::default() };
        Self { options, metrics: HostMetrics::register(registry), host: None }
    }

    /// Prepares every plugin of a generation; each error names its plugin.
    ///
    /// A plugin of the operator's TOML that fails fails the reload. One from a Gateway API
    /// WasmPlugin object (named `namespace/name`; TOML names cannot hold a `/`) is left out
    /// with a warning instead: the rules that use it answer 500, and whoever may write such an
    /// object cannot hold back every other change by pointing it at a broken module.
    pub async fn prepare(&mut self, specs: &[WasmPlugin]) -> Result<Prepared, Vec<String>> {
        if specs.is_empty() && self.host.is_none() {
            return Ok(Prepared::default());
        }
        let host = match &self.host {
            Some(host) => host.clone(),
            None => {
                let host = match Host::with_metrics(self.options.clone(), self.metrics.clone()) {
                    Ok(host) => host,
                    Err(error) => {
                        // An unwritable state directory costs the disk cache, not the plugins.
                        tracing::warn!(%error, "wasm module cache disabled");
                        let options = HostOptions { cache_dir: None, ..self.options.clone() };
                        Host::with_metrics(options, self.metrics.clone())
                            .map_err(|e| vec![format!("cannot start the wasm host: {e}")])?
                    }
                };
                self.host = Some(host.clone());
                host
            }
        };
        let describe = |errors: Vec<(String, gatehouse_wasm::WasmError)>| -> Vec<String> {
            errors.into_iter().map(|(name, e)| format!("plugin {name:?}: {e}")).collect()
        };
        let errors = match host.prepare(specs).await {
            Ok(plugins) => return Ok(Prepared { plugins, ..Prepared::default() }),
            Err(errors) => errors,
        };
        if errors.iter().any(|(name, _)| !is_object(name)) {
            return Err(describe(errors));
        }
        let kept: Vec<WasmPlugin> = specs
            .iter()
            .filter(|s| errors.iter().all(|(name, _)| *name != s.name))
            .cloned()
            .collect();
        let plugins = host.prepare(&kept).await.map_err(describe)?;
        let warnings = errors
            .iter()
            .map(|(name, e)| {
                format!(
                    "WasmPlugin {name}: {e}; the rules that use it answer 500 until it is fixed"
                )
            })
            .collect();
        let failed = errors.into_iter().map(|(name, e)| (name, e.to_string())).collect();
        Ok(Prepared { plugins, warnings, failed })
    }
}

/// The plugins of a generation, and the WasmPlugin objects left out.
#[derive(Debug, Default)]
pub struct Prepared {
    pub plugins: Plugins,
    pub warnings: Vec<String>,
    /// `(namespace/name, error)` of each WasmPlugin whose module could not be prepared.
    pub failed: Vec<(String, String)>,
}

/// Whether a plugin comes from a Gateway API WasmPlugin object (`namespace/name`).
fn is_object(name: &str) -> bool {
    name.contains('/')
}
