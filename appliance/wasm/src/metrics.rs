//! Host-side metrics of the WASM filters, under `gatehouse_wasm_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::abi::metrics::GuestFamilies;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    plugin: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    plugin: String,
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabels {
    source: &'static str,
}

/// Metric handles shared by every plugin.
#[derive(Debug, Clone, Default)]
pub struct HostMetrics {
    failures: Family<FailureLabels, Counter>,
    recycled: Family<PluginLabels, Counter>,
    local_responses: Family<PluginLabels, Counter>,
    unimplemented: Family<FunctionLabels, Counter>,
    modules: Family<ModuleLabels, Counter>,
    http_calls: Family<CallLabels, Counter>,
    pub(crate) guest: GuestFamilies,
}

impl HostMetrics {
    /// Registers every metric under the `wasm` prefix of `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("wasm");
        r.register(
            "failures",
            "Plugin callbacks that failed, by plugin and kind",
            m.failures.clone(),
        );
        r.register(
            "instances_recycled",
            "Plugin instances replaced after a failure",
            m.recycled.clone(),
        );
        r.register(
            "local_responses",
            "Responses sent by plugins instead of the upstream",
            m.local_responses.clone(),
        );
        r.register(
            "unimplemented_calls",
            "Calls to host functions that answered UNIMPLEMENTED",
            m.unimplemented.clone(),
        );
        r.register(
            "modules_loaded",
            "Modules prepared, by where the compiled code came from",
            m.modules.clone(),
        );
        r.register(
            "http_calls",
            "HTTP calls plugins made (proxy_http_call), by outcome: ok or failed",
            m.http_calls.clone(),
        );
        r.register("guest_counter", "Counters defined by plugins", m.guest.counters.clone());
        r.register("guest_gauge", "Gauges defined by plugins", m.guest.gauges.clone());
        r.register("guest_histogram", "Histograms defined by plugins", m.guest.histograms.clone());
        m
    }

    pub(crate) fn failure(&self, plugin: &str, kind: &'static str) {
        self.failures.get_or_create(&FailureLabels { plugin: plugin.to_owned(), kind }).inc();
    }

    pub(crate) fn recycled(&self, plugin: &str) {
        self.recycled.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).inc();
    }

    pub(crate) fn local_response(&self, plugin: &str) {
        self.local_responses.get_or_create(&PluginLabels { plugin: plugin.to_owned() }).inc();
    }

    pub(crate) fn unimplemented(&self, plugin: &str, function: &str) {
        let labels = FunctionLabels { plugin: plugin.to_owned(), function: function.to_owned() };
        self.unimplemented.get_or_create(&labels).inc();
    }

    pub(crate) fn http_call(&self, plugin: &str, outcome: &'static str) {
        self.http_calls.get_or_create(&CallLabels { plugin: plugin.to_owned(), outcome }).inc();
    }

    pub(crate) fn module(&self, source: &'static str) {
        self.modules.get_or_create(&ModuleLabels { source }).inc();
    }
}
