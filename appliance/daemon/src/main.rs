//! `gatehouse`: the appliance binary. It only wires: CLI, logging, the reload loop that runs
//! sources → model → compiled snapshot → data planes → status, signals and shutdown.

mod acme;
mod addresses;
mod cli;
mod kube_manifests;
mod local_routes;
mod logging;
mod native_status;
mod pipeline;
mod problems;
mod reload;
mod run;
mod status_memo;
mod status_task;
mod systemd;
mod wasm_plugins;
mod watch;
mod xdp;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Version => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        cli::Command::Check(args) => run::check(&args),
        cli::Command::Certs(args) => acme::list(&args),
        cli::Command::Kube(cli::KubeArgs { command: cli::KubeCommand::Manifests(args) }) => {
            match kube_manifests::render(&args) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("gatehouse: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Run(args) => {
            logging::init(args.log_format);
            match run::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    eprintln!("gatehouse: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
