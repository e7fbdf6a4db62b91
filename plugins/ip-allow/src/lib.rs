//! `ip-allow`: answers 403 to clients outside the allowed networks.
//!
//! Configuration (JSON): `{"allow": ["10.0.0.0/8", "::1/128"], "deny": ["10.9.0.0/16"],
//! "status": 403}`. A client in `deny` is refused; with a non-empty `allow`, a client must be
//! in it. Counts refusals in the `ip_allow_denied` metric.
//!
//! An optional remote allow list, `"remote": {"upstream": "lists", "path": "/allow.txt",
//! "refresh_seconds": 60}`, is fetched from one of the plugin's upstreams (`GET`, `Host:` the
//! upstream's name) when the plugin starts and then every `refresh_seconds`, by the root
//! context: one network per line, `#` starts a comment. With `remote`, a client must be in
//! `allow` or in the last list fetched (until the first fetch, only `allow` counts). A fetch
//! that fails, answers other than 2xx, or holds a line that is not a network keeps the list
//! in use and logs why (with the line's number). The last good list is kept in the plugin's
//! shared data too, so an instance that starts later (or after a reload) uses it at once,
//! before its own first fetch is answered.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, Bytes, ContextType, LogLevel, MetricType};
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
    remote: Option<Remote>,
}

fn forbidden() -> u32 {
    403
}

/// Where the remote allow list is fetched from, and how often.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Remote {
    upstream: String,
    path: String,
    refresh_seconds: u64,
}

/// The longest refresh period (a day).
const MAX_REFRESH_SECONDS: u64 = 86_400;

/// How long one fetch of the remote list may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses a remote list: one network per line, `#` to the end of a line is a comment, blank
/// lines are skipped. The error names the first bad line (counted from 1).
fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
    let mut list = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        list.push(Cidr::parse(line).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(list)
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
    /// The remote list in use (empty until the first fetch); `None` without `remote`.
    remote: Option<Vec<Cidr>>,
    status: u32,
    denied_metric: u32,
}

impl Rules {
    fn admits(&self, ip: IpAddr) -> bool {
        let within = |list: &[Cidr]| list.iter().any(|c| c.contains(ip));
        if within(&self.deny) {
            return false;
        }
        match &self.remote {
            Some(remote) => within(&self.allow) || within(remote),
            None => self.allow.is_empty() || within(&self.allow),
        }
    }
}

#[derive(Default)]
struct Root {
    /// Shared with every HTTP context created since the last change.
    rules: Rc<Rules>,
    remote: Option<Remote>,
    /// The token of the fetch under way, if any.
    fetching: Option<u32>,
}

impl Remote {
    /// The shared-data key of the last good list from this source.
    fn key(&self) -> String {
        format!("ip-allow.remote {} {}", self.upstream, self.path)
    }
}

impl Root {
    /// Starts a fetch of the remote list unless one is under way.
    fn fetch(&mut self) -> Result<(), String> {
        let Some(remote) = &self.remote else { return Ok(()) };
        if self.fetching.is_some() {
            return Ok(());
        }
        let headers = vec![
            (":method", "GET"),
            (":path", remote.path.as_str()),
            (":authority", remote.upstream.as_str()),
        ];
        let token = self
            .dispatch_http_call(&remote.upstream, headers, None, Vec::new(), FETCH_TIMEOUT)
            .map_err(|status| {
                format!("cannot fetch {} from {}: {status:?}", remote.path, remote.upstream)
            })?;
        self.fetching = Some(token);
        Ok(())
    }

    /// The fetched list and its text, or why it cannot be used.
    fn fetched(&self, num_headers: usize, body_size: usize) -> Result<(Vec<Cidr>, Bytes), String> {
        if num_headers == 0 {
            return Err("the fetch failed (see the host's log)".into());
        }
        let status = self.get_http_call_response_header(":status").unwrap_or_default();
        if !status.starts_with('2') {
            return Err(format!("the upstream answered {status}"));
        }
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let text = std::str::from_utf8(&body).map_err(|_| "the list is not UTF-8".to_string())?;
        Ok((parse_list(text)?, body))
    }

    /// Puts `list` in use for the HTTP contexts created from now on.
    fn use_list(&mut self, list: Vec<Cidr>) {
        let mut rules = (*self.rules).clone();
        rules.remote = Some(list);
        self.rules = Rc::new(rules);
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.fetching != Some(token) {
            return;
        }
        self.fetching = None;
        let Some(remote) = self.remote.clone() else { return };
        let source = &remote.path;
        match self.fetched(num_headers, body_size) {
            Ok((list, text)) => {
                log::info!("ip-allow: {source}: {} networks", list.len());
                self.use_list(list);
                // Every instance writes what it fetched; the last write wins.
                if let Err(status) = self.set_shared_data(&remote.key(), Some(&text), None) {
                    log::warn!("ip-allow: {source}: not kept in shared data: {status:?}");
                }
            }
            Err(e) => log::warn!("ip-allow: {source}: {e}; keeping the list in use"),
        }
    }
}

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
        let bad_remote = |r: &Remote| {
            !(1..=MAX_REFRESH_SECONDS).contains(&r.refresh_seconds) || !r.path.starts_with('/')
        };
        if config.remote.as_ref().is_some_and(bad_remote) {
            log::error!(
                "ip-allow: remote needs refresh_seconds in 1..={MAX_REFRESH_SECONDS} and a path starting with /"
            );
            return false;
        }
        match (parse(&config.allow), parse(&config.deny)) {
            (Ok(allow), Ok(deny)) if (200..600).contains(&config.status) => {
                let denied_metric =
                    proxy_wasm::hostcalls::define_metric(MetricType::Counter, "ip_allow_denied")
                        .unwrap_or(0);
                let remote = config.remote.as_ref().map(|_| Vec::new());
                self.rules =
                    Rc::new(Rules { allow, deny, remote, status: config.status, denied_metric });
                self.remote = config.remote;
                if let Some(remote) = self.remote.clone() {
                    self.set_tick_period(Duration::from_secs(remote.refresh_seconds));
                    // The last good list another instance (or the plugin before a reload)
                    // fetched from the same source, until this instance's own fetch.
                    let (kept, _) = self.get_shared_data(&remote.key());
                    let kept = kept.and_then(|b| parse_list(std::str::from_utf8(&b).ok()?).ok());
                    if let Some(list) = kept {
                        self.use_list(list);
                    }
                }
                // The first fetch now: an upstream the plugin was not given fails here.
                if let Err(e) = self.fetch() {
                    log::error!("ip-allow: {e}");
                    return false;
                }
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

    fn on_tick(&mut self) {
        if let Err(e) = self.fetch() {
            log::warn!("ip-allow: {e}");
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
    rules: Rc<Rules>,
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
