//! The appliance's TOML config file: strict, every error with its `file:line:column`.
//!
//! Place in the data flow: this is the TOML source. It yields the boot settings (admin listen
//! address, shutdown grace, where the Gateway API manifests are) and converts the file's native
//! form (`[[gateways]]`, `[[routes]]`) 1:1 into [`gatehouse_model::Desired`], which the daemon
//! merges with the Gateway API source before the compile step. Certificate files of the native
//! form are read here, so a loaded [`Config`] is self-contained.
//!
//! Syntax and schema errors (bad TOML, unknown keys, wrong types) stop at the first; every
//! semantic error (names, hostnames, regexes, references, files) is collected and reported at once.

mod default;
mod error;
mod native;
mod schema;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_model::Desired;
use toml::Spanned;

pub use default::{DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, parse_default};
pub use error::{ConfigError, ConfigErrors, Place, Position, Problem};
pub use native::{MAX_WEIGHT, NAMESPACE};

use error::Errors;

/// Admin API address when `[admin] listen` is absent.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
/// Drain bound on SIGTERM when `[runtime] shutdown_grace_ms` is absent.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// GatewayClass `spec.controllerName` that is ours when `[gateway_api] controller_name` is absent.
pub const DEFAULT_CONTROLLER_NAME: &str = "gatehouse.dev/gateway-controller";
/// Where Gateways without `spec.addresses` bind when `[gateway_api] default_address` is absent.
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// A loaded, validated config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the admin API listens (boot-only: a change needs a restart).
    pub admin_listen: SocketAddr,
    /// How long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// The Gateway API source, when `[gateway_api]` is present.
    pub gateway_api: Option<GatewayApiSettings>,
    /// The native form, already converted (generation 0; the daemon numbers generations).
    pub native: Desired,
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
    let shutdown_grace = file
        .runtime
        .and_then(|r| r.shutdown_grace_ms)
        .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis);
    let gateway_api = file.gateway_api.map(|g| gateway_api(g, base_dir, &mut errors));
    let native = native::convert(file.gateways, file.routes, base_dir, &mut errors);
    errors.finish(Config { admin_listen, shutdown_grace, gateway_api, native })
}

fn gateway_api(
    settings: schema::GatewayApi,
    base_dir: &Path,
    errors: &mut Errors<'_>,
) -> GatewayApiSettings {
    let controller_name = match settings.controller_name {
        None => DEFAULT_CONTROLLER_NAME.to_owned(),
        Some(name) => {
            if !native::is_controller_name(name.get_ref()) {
                errors.push(&name.span(), Problem::InvalidControllerName(name.get_ref().clone()));
            }
            name.into_inner()
        }
    };
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
    let default_address = match settings.default_address {
        None => DEFAULT_ADDRESS,
        Some(address) => leaf(errors, &address, native::parse_ip).unwrap_or(DEFAULT_ADDRESS),
    };
    GatewayApiSettings { controller_name, manifests, default_address }
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
