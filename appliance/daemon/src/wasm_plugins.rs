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
    pub async fn prepare(&mut self, specs: &[WasmPlugin]) -> Result<Plugins, Vec<String>> {
        if specs.is_empty() && self.host.is_none() {
            return Ok(Plugins::default());
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
        host.prepare(specs).await.map_err(|errors| {
            errors.into_iter().map(|(name, e)| format!("plugin {name:?}: {e}")).collect()
        })
    }
}
