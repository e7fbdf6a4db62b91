//! The config compiled into the binary, used by `gatehouse run` without `--config`.

use std::path::Path;

use crate::{Config, ConfigErrors, parse};

/// How the embedded config is named in error messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// A standalone appliance on loopback: the admin API on 127.0.0.1:9901, and a demo gateway on
/// 127.0.0.1:8080 whose catch-all route proxies to the admin API, so
/// `curl 127.0.0.1:8080/status` shows the live status through the proxy.
pub const DEFAULT_CONFIG: &str = r#"# Gatehouse embedded default config: standalone, loopback only.
[admin]
listen = "127.0.0.1:9901"

[[gateways]]
name = "demo"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "http"
  port = 8080
  protocol = "HTTP"

[[routes]]
name = "demo"
parents = ["demo"]
  # `GET /` answers a redirect to the live status.
  [[routes.rules]]
  name = "home"
  matches = [{ path = { exact = "/" } }]
  filters = [{ request_redirect = { path = { replace_full = "/status" }, status = 302 } }]
  # Everything else goes to the admin API through the proxy: /status, /healthz, /metrics, /config.
  [[routes.rules]]
  name = "admin"
  filters = [{ response_header_modifier = { set = { "x-gatehouse-route" = "toml/demo" } } }]
  backends = [{ address = "127.0.0.1:9901" }]
"#;

/// Parses [`DEFAULT_CONFIG`] (it reads no files).
pub fn parse_default() -> Result<Config, ConfigErrors> {
    parse(DEFAULT_CONFIG, Path::new(DEFAULT_CONFIG_NAME), Path::new("."))
}
