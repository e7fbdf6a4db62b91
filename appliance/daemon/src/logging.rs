use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The WASM compiler's own chatter (per-function timings at debug) is capped at info unless
/// `RUST_LOG` names these targets: at debug it multiplies a module's compile time.
const COMPILER_TARGETS: [&str; 3] =
    ["cranelift_codegen", "wasmtime_internal_cranelift", "wasmtime"];

/// Logs to stderr; the level comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let named = std::env::var("RUST_LOG").unwrap_or_default();
    for target in COMPILER_TARGETS {
        if !named.contains(target)
            && let Ok(directive) = format!("{target}=info").parse()
        {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Human => {
            builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init()
        }
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    if let Err(error) = result {
        eprintln!("gatehouse: logging already initialised: {error}");
    }
}
