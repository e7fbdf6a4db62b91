//! The appliance's TOML config file: strict, every error with its `file:line:column`.
//!
//! Place in the data flow: this is the TOML source. It yields the boot settings (admin listen
//! address, shutdown grace, where the Gateway API manifests are, or which cluster to watch) and
//! converts the file's native form (`[[gateways]]`, `[[routes]]`) 1:1 into
//! [`gatehouse_model::Desired`], which the daemon merges with the Gateway API source before the
//! compile step. Certificate files of the native
//! form are read here, so a loaded [`Config`] is self-contained.
//!
//! Syntax and schema errors (bad TOML, unknown keys, wrong types) stop at the first; every
//! semantic error (names, hostnames, regexes, references, files) is collected and reported at once.

mod acme;
mod default;
mod error;
mod ipam;
mod l4;
mod native;
mod plugins;
mod schema;
mod xdp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_model::Desired;
use toml::Spanned;

pub use acme::{AcmeSettings, DEFAULT_CLOUDFLARE_API, DEFAULT_EXEC_TIMEOUT};
pub use default::{DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, parse_default};
pub use error::{ConfigError, ConfigErrors, LEASE_DURATION_RANGE, Place, Position, Problem};
pub use native::{MAX_WEIGHT, NAMESPACE, NativeGateway};
pub use xdp::{
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_FLOWS, L4_SERVICE_KIND, XdpForwarding, XdpMode,
    XdpSettings,
};

use error::Errors;

/// Admin API address when `[admin] listen` is absent.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
/// Drain bound on SIGTERM when `[runtime] shutdown_grace_ms` is absent.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// GatewayClass `spec.controllerName` that is ours when `[gateway_api] controller_name` is absent.
pub const DEFAULT_CONTROLLER_NAME: &str = "gatehouse.dev/gateway-controller";
/// Where Gateways without `spec.addresses` bind when `[gateway_api] default_address` is absent.
pub const DEFAULT_LEASE_NAMESPACE: &str = "gatehouse-system";
pub const DEFAULT_LEASE_NAME: &str = "gatehouse";
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Where state lives when `[runtime] state_dir` is absent and systemd gave no
/// `$STATE_DIRECTORY`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gatehouse";
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// A loaded, validated config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the admin API listens (boot-only: a change needs a restart).
    pub admin_listen: SocketAddr,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Where the appliance keeps state that must survive restarts (address allocations, ACME
    /// accounts and certificates, compiled WASM modules). Boot-only.
    pub state_dir: PathBuf,
    /// Whether the appliance adds a `local` route for each address a user-space listener binds
    /// that the host does not already take as its own (`[runtime] local_routes`, default on).
    pub local_routes: bool,
    /// The Gateway API source, when `[gateway_api]` is present.
    pub gateway_api: Option<GatewayApiSettings>,
    /// Cluster mode, when `[kubernetes]` is present (boot-only: a change needs a restart).
    pub kubernetes: Option<KubernetesSettings>,
    /// The native form, already converted (generation 0; the daemon numbers generations).
    pub native: Desired,
    /// The native gateways and the addresses they name, for IPAM.
    pub native_gateways: Vec<NativeGateway>,
    /// `[[ipam.pools]]`; empty when IPAM is off (gateways without addresses then bind the
    /// default address, as before). Hot-reloads.
    pub ipam_pools: gatehouse_ipam::Pools,
    /// `[acme]` issuers and the native listeners they certify (hot-reloaded).
    pub acme: AcmeSettings,
    /// `[xdp]`, unless absent or `mode = "off"`. `[[l4_services]]` are in [`Config::native`].
    pub xdp: Option<XdpSettings>,
    /// `[l4]`: bounds of the user-space L4 proxy (hot-reloads).
    pub l4: gatehouse_model::L4Limits,
}

impl Config {
    /// The native form's listeners and routes as the model (a copy of [`Config::native`]).
    pub fn native_desired(&self) -> Desired {
        self.native.clone()
    }
}

/// `[gateway_api]`: where Gateway API objects come from and which are ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayApiSettings {
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller_name: String,
    /// Manifest files and directories, resolved against the config file's directory.
    pub manifests: Vec<PathBuf>,
    /// Where Gateways without `spec.addresses` bind.
    pub default_address: IpAddr,
    /// Where WasmPlugin objects may name local modules; `None`: URLs with sha256 only.
    pub wasm_module_dir: Option<PathBuf>,
}

/// `[kubernetes]`: cluster mode, Gateway API objects watched from a Kubernetes API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The kubeconfig file, resolved against the config file's directory; `None` means the
    /// in-cluster config (service account token and `KUBERNETES_SERVICE_HOST`).
    pub kubeconfig: Option<PathBuf>,
    /// GatewayClasses with this `spec.controllerName` are ours.
    pub controller_name: String,
    /// Namespaces whose namespaced objects are watched; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Where Gateways without `spec.addresses` bind.
    pub default_address: IpAddr,
    /// Whether status is written back to the cluster (server-side apply on `…/status`);
    /// `false` for an identity with read-only RBAC. Default `true`.
    pub write_status: bool,
    /// The coordination.k8s.io Lease that elects the one appliance writing status.
    pub lease: LeaseSettings,
    /// How Service backendRefs become addresses (boot-only: nodeport mode watches Nodes).
    pub backend_addressing: BackendAddressing,
    /// Where WasmPlugin objects may name local modules; `None`: URLs with sha256 only.
    pub wasm_module_dir: Option<PathBuf>,
}

/// `[kubernetes] backend_addressing`: how a Service backendRef becomes socket addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendAddressing {
    /// `"endpoints"` (default): pod addresses from EndpointSlices; the appliance routes to pods.
    #[default]
    Endpoints,
    /// `"nodeport"`: every usable Node's address with the Service port's `nodePort`.
    NodePort,
}

/// `[kubernetes]` `lease_*` and `identity`: leader election among appliances watching one
/// cluster. All serve traffic; the holder of the Lease writes status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Default [`DEFAULT_LEASE_NAMESPACE`].
    pub namespace: String,
    /// Default [`DEFAULT_LEASE_NAME`].
    pub name: String,
    /// This appliance's `holderIdentity`; `None` means hostname and process id.
    pub identity: Option<String>,
    /// How long a Lease not renewed stays held. Default [`DEFAULT_LEASE_DURATION`].
    pub duration: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_LEASE_NAMESPACE.to_owned(),
            name: DEFAULT_LEASE_NAME.to_owned(),
            identity: None,
            duration: DEFAULT_LEASE_DURATION,
        }
    }
}

/// Reads and validates the config file at `path`; relative paths in it are resolved against
/// the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let place = Place { file: path.to_owned(), position: None };
        ConfigErrors::new(vec![ConfigError { place, problem: Problem::Read(e.to_string()) }])
    })?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Absolute, so that resolved paths survive a later change of the working directory.
    let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    parse(&text, path, &base_dir)
}

/// Validates config text; `path` names the file in errors, relative paths in it are resolved
/// against `base_dir` (certificate files are read from there).
pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut errors = Errors::new(path.to_owned(), text);
    let file: schema::File = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            errors.push(&e.span().unwrap_or(0..0), Problem::Syntax(e.message().trim().to_owned()));
            return Err(errors.into_errors());
        }
    };

    let admin_listen = match file.admin.and_then(|a| a.listen) {
        None => DEFAULT_ADMIN_LISTEN,
        Some(listen) => {
            leaf(&mut errors, &listen, native::parse_socket_addr).unwrap_or(DEFAULT_ADMIN_LISTEN)
        }
    };
    let (shutdown_grace_ms, state_dir, local_routes) = file
        .runtime
        .map_or((None, None, None), |r| (r.shutdown_grace_ms, r.state_dir, r.local_routes));
    let shutdown_grace = shutdown_grace_ms.map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis);
    let state_dir = match state_dir {
        Some(dir) => base_dir.join(dir.into_inner()),
        None => std::env::var_os("STATE_DIRECTORY")
            // systemd may pass several, colon-separated; the first is ours.
            .and_then(|dirs| std::env::split_paths(&dirs).next())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
    };
    let gateway_api = file.gateway_api.map(|g| gateway_api(g, base_dir, &mut errors));
    let kubernetes = file.kubernetes.map(|k| {
        let has_manifests = gateway_api.as_ref().is_some_and(|g| !g.manifests.is_empty());
        kubernetes(k, has_manifests, base_dir, &mut errors)
    });
    let ipam_pools = ipam::convert(file.ipam, &mut errors);
    let mut acme = AcmeSettings {
        issuers: acme::issuers(file.acme, base_dir, &mut errors),
        requests: Vec::new(),
    };
    let wasm_plugins = plugins::convert(file.plugins, base_dir, &mut errors);
    let plugin_names: Vec<&str> = wasm_plugins.iter().map(|p| p.name.as_str()).collect();
    let (mut native, native_gateways) = native::convert(
        file.gateways,
        file.routes,
        &plugin_names,
        base_dir,
        &mut acme,
        &mut errors,
    );
    native.wasm_plugins = wasm_plugins;
    native.l4_services = xdp::l4_services(file.l4_services, &mut errors);
    let xdp = xdp::settings(file.xdp, &mut errors);
    let l4 = l4::limits(file.l4, &mut errors);
    errors.finish(Config {
        admin_listen,
        shutdown_grace,
        state_dir,
        local_routes: local_routes.unwrap_or(true),
        gateway_api,
        kubernetes,
        native,
        native_gateways,
        ipam_pools,
        acme,
        xdp,
        l4,
    })
}

fn controller_name(name: Option<Spanned<String>>, errors: &mut Errors<'_>) -> String {
    match name {
        None => DEFAULT_CONTROLLER_NAME.to_owned(),
        Some(name) => {
            if !native::is_controller_name(name.get_ref()) {
                errors.push(&name.span(), Problem::InvalidControllerName(name.get_ref().clone()));
            }
            name.into_inner()
        }
    }
}

fn default_address(address: Option<Spanned<String>>, errors: &mut Errors<'_>) -> IpAddr {
    match address {
        None => DEFAULT_ADDRESS,
        Some(address) => leaf(errors, &address, native::parse_ip).unwrap_or(DEFAULT_ADDRESS),
    }
}

fn kubernetes(
    settings: Spanned<schema::Kubernetes>,
    has_manifests: bool,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> KubernetesSettings {
    if has_manifests {
        errors.push(&settings.span(), Problem::ClusterWithManifests);
    }
    let settings = settings.into_inner();
    let kubeconfig = settings.kubeconfig.map(|path| {
        if path.get_ref().is_empty() {
            errors.push(&path.span(), Problem::Empty { what: "kubeconfig path" });
        }
        base_dir.join(path.into_inner())
    });
    let mut namespaces: Vec<String> = Vec::new();
    if let Some(list) = settings.namespaces {
        if list.get_ref().is_empty() {
            // An empty filter would watch nothing; every namespace is the key's absence.
            errors.push(&list.span(), Problem::Empty { what: "namespaces" });
        }
        for namespace in list.into_inner() {
            let name = namespace.get_ref();
            if !native::is_dns_label(name) {
                errors.push(&namespace.span(), Problem::InvalidNamespace(name.clone()));
            } else if namespaces.contains(name) {
                errors.push(&namespace.span(), Problem::DuplicateNamespace(name.clone()));
            } else {
                namespaces.push(namespace.into_inner());
            }
        }
    }
    KubernetesSettings {
        kubeconfig,
        controller_name: controller_name(settings.controller_name, errors),
        namespaces,
        default_address: default_address(settings.default_address, errors),
        write_status: settings.write_status.unwrap_or(true),
        backend_addressing: settings.backend_addressing.unwrap_or_default(),
        wasm_module_dir: wasm_module_dir(settings.wasm_module_dir, base_dir, errors),
        lease: lease(
            settings.lease_namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_duration_seconds,
            errors,
        ),
    }
}

fn lease(
    namespace: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    duration: Option<Spanned<u64>>,
    errors: &mut Errors<'_>,
) -> LeaseSettings {
    let mut lease = LeaseSettings::default();
    if let Some(namespace) = namespace {
        if !native::is_dns_label(namespace.get_ref()) {
            errors.push(&namespace.span(), Problem::InvalidNamespace(namespace.get_ref().clone()));
        }
        lease.namespace = namespace.into_inner();
    }
    if let Some(name) = name {
        if !native::is_dns_subdomain(name.get_ref()) {
            let problem = Problem::InvalidName { what: "lease", name: name.get_ref().clone() };
            errors.push(&name.span(), problem);
        }
        lease.name = name.into_inner();
    }
    if let Some(identity) = identity {
        if identity.get_ref().trim().is_empty() {
            errors.push(&identity.span(), Problem::Empty { what: "identity" });
        }
        lease.identity = Some(identity.into_inner());
    }
    if let Some(seconds) = duration {
        if LEASE_DURATION_RANGE.contains(seconds.get_ref()) {
            lease.duration = Duration::from_secs(*seconds.get_ref());
        } else {
            errors.push(&seconds.span(), Problem::LeaseDuration);
        }
    }
    lease
}

fn gateway_api(
    settings: schema::GatewayApi,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> GatewayApiSettings {
    let controller_name = controller_name(settings.controller_name, errors);
    let manifests = settings
        .manifests
        .into_iter()
        .map(|m| {
            if m.get_ref().is_empty() {
                errors.push(&m.span(), Problem::Empty { what: "manifest path" });
            }
            base_dir.join(m.into_inner())
        })
        .collect();
    let default_address = default_address(settings.default_address, errors);
    let wasm_module_dir = wasm_module_dir(settings.wasm_module_dir, base_dir, errors);
    GatewayApiSettings { controller_name, manifests, default_address, wasm_module_dir }
}

/// `wasm_module_dir`, resolved against the config file's directory.
fn wasm_module_dir(
    dir: Option<Spanned<String>>,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> Option<PathBuf> {
    let dir = dir?;
    if dir.get_ref().is_empty() {
        errors.push(&dir.span(), Problem::Empty { what: "wasm_module_dir" });
    }
    Some(base_dir.join(dir.into_inner()))
}

/// Parses one spanned string, recording the error at its place.
fn leaf<T>(
    errors: &mut Errors<'_>,
    text: &Spanned<String>,
    parse: impl FnOnce(&str) -> Result<T, Problem>,
) -> Option<T> {
    parse(text.get_ref()).map_err(|problem| errors.push(&text.span(), problem)).ok()
}

#[cfg(test)]
mod tests;
