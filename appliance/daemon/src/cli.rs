use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Gatehouse: an edge appliance serving Gateway API routes.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the appliance in the foreground.
    Run(RunArgs),
    /// Validate the config file and its manifests; print every error with its place.
    Check(CheckArgs),
    /// Cluster mode helpers.
    Kube(KubeArgs),
    /// List ACME certificates in the state directory: names, issuer, expiry, renewal.
    Certs(CertsArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    #[command(subcommand)]
    pub command: KubeCommand,
}

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// Print the YAML to apply for cluster mode: namespace, ServiceAccount and its token,
    /// least-privilege RBAC, our GatewayClass, and a kubeconfig recipe.
    Manifests(ManifestsArgs),
}

#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// The GatewayClass's controllerName (the config's `controller_name`).
    #[arg(long, default_value = gatehouse_config::DEFAULT_CONTROLLER_NAME)]
    pub controller_name: String,
    /// The GatewayClass's name.
    #[arg(long, default_value = "gatehouse")]
    pub gateway_class: String,
    /// Namespace of the ServiceAccount and the Lease (the config's `lease_namespace`).
    #[arg(long, default_value = gatehouse_config::DEFAULT_LEASE_NAMESPACE)]
    pub namespace: String,
    /// The Lease's name (the config's `lease_name`).
    #[arg(long, default_value = gatehouse_config::DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// Name of the ServiceAccount, its roles and bindings.
    #[arg(long, default_value = "gatehouse")]
    pub service_account: String,
    /// The config's `backend_addressing`: `nodeport` also grants list/watch on Nodes.
    #[arg(long, value_enum, default_value = "endpoints")]
    pub backend_addressing: BackendAddressingArg,
}

/// `--backend-addressing`, as the config's `[kubernetes] backend_addressing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendAddressingArg {
    /// Pod addresses from EndpointSlices.
    Endpoints,
    /// Node addresses and the Service's nodePort (needs Nodes).
    Nodeport,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML config file; without it the embedded default config is used.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Served instead when `--config` is missing or invalid at boot (the errors show in
    /// `/status` and the log), so a bad config never leaves the appliance down; fixing
    /// `--config` then reloads as usual.
    #[arg(long, requires = "config")]
    pub fallback_config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The TOML config file (for the state directory and the issuers).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file to validate.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Human,
    /// One JSON object per line.
    Json,
}
