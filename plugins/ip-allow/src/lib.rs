//! `ip-allow`: answers 403 to clients outside the allowed networks.
//!
//! Configuration (JSON): `{"allow": ["10.0.0.0/8", "::1/128"], "deny": ["10.9.0.0/16"],
//! "status": 403}`. A client in `deny` is refused; with a non-empty `allow`, a client must be
//! in it. Counts refusals in the `ip_allow_denied` metric.

use std::net::IpAddr;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default = "forbidden")]
    status: u32,
}

fn forbidden() -> u32 {
    403
}

/// A network: address and prefix length.
#[derive(Clone, Copy, Debug)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(raw: &str) -> Result<Self, String> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("bad address in {raw:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix in {raw:?}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            _ => ip,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Default, Clone)]
struct Rules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    status: u32,
    denied_metric: u32,
}

impl Rules {
    fn admits(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }
}

#[derive(Default)]
struct Root {
    rules: Rules,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config: Config = match serde_json::from_slice(&raw) {
            Ok(c) => c,
            Err(e) => {
                log::error!("ip-allow: bad configuration: {e}");
                return false;
            }
        };
        let parse =
            |list: &[String]| list.iter().map(|c| Cidr::parse(c)).collect::<Result<Vec<_>, _>>();
        match (parse(&config.allow), parse(&config.deny)) {
            (Ok(allow), Ok(deny)) if (200..600).contains(&config.status) => {
                let denied_metric =
                    proxy_wasm::hostcalls::define_metric(MetricType::Counter, "ip_allow_denied")
                        .unwrap_or(0);
                self.rules = Rules { allow, deny, status: config.status, denied_metric };
                true
            }
            (Err(e), _) | (_, Err(e)) => {
                log::error!("ip-allow: {e}");
                false
            }
            _ => {
                log::error!("ip-allow: status must be 200..599");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { rules: self.rules.clone() }))
    }
}

struct Filter {
    rules: Rules,
}

impl Context for Filter {}

/// The IP of `ip:port` or `[ip6]:port`.
fn client_ip(address: &str) -> Option<IpAddr> {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    address.parse().ok()
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let address = self.get_property(vec!["source", "address"]).unwrap_or_default();
        let ip = std::str::from_utf8(&address).ok().and_then(client_ip);
        if ip.is_some_and(|ip| self.rules.admits(ip)) {
            return Action::Continue;
        }
        if self.rules.denied_metric != 0 {
            let _ = proxy_wasm::hostcalls::increment_metric(self.rules.denied_metric, 1);
        }
        self.send_http_response(
            self.rules.status,
            vec![("content-type", "text/plain")],
            Some(b"forbidden\n"),
        );
        Action::Pause
    }
}
