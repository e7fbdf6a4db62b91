//! `Desired` → [`Plan`]: the sockets to bind and what each serves. Pure.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_model::{
    Desired, Hostname, L4Backend, L4Limits, L4Mode, L4Protocol, ListenerId, ListenerProblem,
    ListenerProblemKind, ObjectId,
};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A socket: address, port and transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bind {
    pub addr: SocketAddr,
    pub protocol: L4Protocol,
}

/// What one socket serves.
#[derive(Clone, Debug)]
pub enum Frontend {
    /// TCP: every connection to these backends.
    Stream(Target),
    /// UDP: every client flow to these backends.
    Datagram(Target),
    /// TLS listeners sharing the socket (one or several hostnames; Passthrough and Terminate
    /// may mix), most specific hostname first.
    Tls(Vec<TlsListener>),
}

impl Frontend {
    /// The listeners this socket serves.
    pub fn listeners(&self) -> Vec<ListenerId> {
        match self {
            Frontend::Stream(t) | Frontend::Datagram(t) => vec![t.listener.clone()],
            Frontend::Tls(listeners) => listeners.iter().map(|l| l.id.clone()).collect(),
        }
    }
}

/// A TCP or UDP listener's route.
#[derive(Clone, Debug)]
pub struct Target {
    pub listener: ListenerId,
    /// `None`: no route attached (connections are refused).
    pub route: Option<ObjectId>,
    pub backends: Vec<L4Backend>,
}

/// One TLS listener on a shared socket.
#[derive(Clone)]
pub struct TlsListener {
    pub id: ListenerId,
    pub hostname: Option<Hostname>,
    /// `Some`: mode Terminate with this server config; `None`: Passthrough.
    pub terminate: Option<Arc<ServerConfig>>,
    /// Routes, oldest first.
    pub routes: Vec<TlsRoute>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("id", &self.id)
            .field("hostname", &self.hostname)
            .field("terminate", &self.terminate.is_some())
            .field("routes", &self.routes)
            .finish()
    }
}

/// A TLSRoute on one listener.
#[derive(Clone, Debug)]
pub struct TlsRoute {
    pub id: ObjectId,
    /// Empty: any name the listener takes.
    pub hostnames: Vec<Hostname>,
    pub backends: Vec<L4Backend>,
}

/// Everything the L4 proxy serves at one generation.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub generation: u64,
    pub limits: L4Limits,
    pub frontends: BTreeMap<Bind, Frontend>,
}

/// How specific a listener or route hostname is: exact names first, then longer wildcards,
/// then none (any name).
fn specificity(hostname: Option<&Hostname>) -> (u8, usize) {
    match hostname {
        Some(h) if !h.is_wildcard() => (0, 0),
        Some(h) => (1, usize::MAX - h.as_str().len()),
        None => (2, 0),
    }
}

impl Plan {
    /// The TLS listener and route for a ClientHello's SNI (`None`: the client sent none).
    pub fn route_tls<'a>(
        listeners: &'a [TlsListener],
        sni: Option<&str>,
    ) -> Option<(&'a TlsListener, &'a TlsRoute)> {
        let listener = listeners.iter().find(|l| match (&l.hostname, sni) {
            (None, _) => true,
            (Some(h), Some(sni)) => h.matches(sni),
            (Some(_), None) => false,
        })?;
        let route = listener
            .routes
            .iter()
            .filter_map(|r| {
                if r.hostnames.is_empty() {
                    return Some((specificity(None), r));
                }
                let sni = sni?;
                r.hostnames
                    .iter()
                    .filter(|h| h.matches(sni))
                    .map(|h| specificity(Some(h)))
                    .min()
                    .map(|s| (s, r))
            })
            // Stable: among equals, the oldest route (first in the list) wins.
            .min_by_key(|(s, _)| *s)
            .map(|(_, r)| r)?;
        Some((listener, route))
    }
}

/// Compiles the L4 listeners of `desired`; listeners that cannot be served are reported and
/// left out (a second non-TLS listener on a socket, a certificate rustls refuses).
pub fn compile(desired: &Desired, limits: L4Limits) -> (Plan, Vec<ListenerProblem>) {
    let mut plan = Plan { generation: desired.generation, limits, frontends: BTreeMap::new() };
    let mut problems = Vec::new();
    for listener in &desired.l4_listeners {
        let problem = |kind, message: String| ListenerProblem {
            listener: listener.id.clone(),
            kind,
            message,
        };
        let terminate = match &listener.mode {
            L4Mode::TlsTerminate(tls) => match server_config(tls) {
                Ok(config) => Some(config),
                Err(e) => {
                    problems.push(problem(ListenerProblemKind::InvalidCertificate, e));
                    continue;
                }
            },
            _ => None,
        };
        for address in &listener.addresses {
            let bind = Bind {
                addr: SocketAddr::new(*address, listener.port),
                protocol: listener.mode.protocol(),
            };
            let first = listener.routes.first();
            let target = || Target {
                listener: listener.id.clone(),
                route: first.map(|r| r.id.clone()),
                backends: first.map(|r| r.backends.clone()).unwrap_or_default(),
            };
            let frontend = match &listener.mode {
                L4Mode::Tcp => Frontend::Stream(target()),
                L4Mode::Udp => Frontend::Datagram(target()),
                L4Mode::TlsPassthrough | L4Mode::TlsTerminate(_) => {
                    Frontend::Tls(vec![TlsListener {
                        id: listener.id.clone(),
                        hostname: listener.hostname.clone(),
                        terminate: terminate.clone(),
                        routes: listener
                            .routes
                            .iter()
                            .map(|r| TlsRoute {
                                id: r.id.clone(),
                                hostnames: r.hostnames.clone(),
                                backends: r.backends.clone(),
                            })
                            .collect(),
                    }])
                }
            };
            match (plan.frontends.get_mut(&bind), frontend) {
                (None, frontend) => {
                    plan.frontends.insert(bind, frontend);
                }
                (Some(Frontend::Tls(existing)), Frontend::Tls(new)) => {
                    let clash =
                        new.iter().find(|n| existing.iter().any(|e| e.hostname == n.hostname));
                    match clash {
                        Some(n) => problems.push(problem(
                            ListenerProblemKind::HostnameConflict,
                            format!(
                                "another TLS listener on {} takes hostname {}",
                                bind.addr,
                                n.hostname.as_ref().map_or("(any)", |h| h.as_str())
                            ),
                        )),
                        None => {
                            existing.extend(new);
                            existing.sort_by_key(|l| specificity(l.hostname.as_ref()));
                        }
                    }
                }
                (Some(existing), _) => {
                    let owner = existing.listeners().first().map(ToString::to_string);
                    problems.push(problem(
                        ListenerProblemKind::ProtocolConflict,
                        format!(
                            "{} {} is already served by {}",
                            bind.protocol,
                            bind.addr,
                            owner.unwrap_or_default()
                        ),
                    ));
                }
            }
        }
    }
    (plan, problems)
}

/// A server config presenting the listener's certificate whose names match the SNI (the
/// first one otherwise); no ALPN (the stream is forwarded as it is).
fn server_config(tls: &gatehouse_model::ListenerTls) -> Result<Arc<ServerConfig>, String> {
    let mut keys = Vec::new();
    for cert in &tls.certificates {
        let key =
            gatehouse_model::certified_key(cert.chain_pem.as_bytes(), cert.key_pem.as_bytes())
                .map_err(|e| format!("{}: {e}", cert.source))?;
        keys.push(Arc::new(key));
    }
    if keys.is_empty() {
        return Err("no usable certificate".to_owned());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificates(keys)));
    Ok(Arc::new(config))
}

/// The listener's certificates; chosen by SNI against each leaf's names.
#[derive(Debug)]
struct Certificates(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|sni| {
            let name = rustls::pki_types::ServerName::try_from(sni).ok()?;
            self.0.iter().find(|k| {
                k.end_entity_cert().is_ok_and(|leaf| {
                    rustls::server::ParsedCertificate::try_from(leaf)
                        .is_ok_and(|p| rustls::client::verify_server_name(&p, &name).is_ok())
                })
            })
        });
        by_name.or_else(|| self.0.first()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_model::{L4Listener, L4Route};

    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s).unwrap()
    }

    fn id(name: &str) -> ListenerId {
        ListenerId { gateway: ObjectId::new("Gateway", "infra", "edge"), name: name.into() }
    }

    fn route(name: &str, hostnames: &[&str], port: u16) -> L4Route {
        L4Route {
            id: ObjectId::new("TLSRoute", "apps", name),
            hostnames: hostnames.iter().map(|n| h(n)).collect(),
            backends: vec![L4Backend { addr: SocketAddr::from(([127, 0, 0, 1], port)), weight: 1 }],
        }
    }

    fn listener(
        name: &str,
        port: u16,
        mode: L4Mode,
        hostname: Option<&str>,
        routes: Vec<L4Route>,
    ) -> L4Listener {
        L4Listener {
            id: id(name),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            port,
            mode,
            hostname: hostname.map(h),
            routes,
        }
    }

    #[test]
    fn tls_listeners_share_a_socket_and_sni_picks_the_most_specific() {
        let desired = Desired {
            generation: 3,
            l4_listeners: vec![
                listener("any", 443, L4Mode::TlsPassthrough, None, vec![route("fallback", &[], 1)]),
                listener(
                    "wild",
                    443,
                    L4Mode::TlsPassthrough,
                    Some("*.example.test"),
                    vec![
                        route("wild", &["*.example.test"], 2),
                        route("exact", &["a.example.test"], 3),
                    ],
                ),
                listener("tcp", 5432, L4Mode::Tcp, None, vec![]),
                listener("udp", 5432, L4Mode::Udp, None, vec![]),
                listener("clash", 5432, L4Mode::Tcp, None, vec![]),
            ],
            ..Desired::default()
        };
        let (plan, problems) = compile(&desired, L4Limits::default());
        assert_eq!(plan.frontends.len(), 3);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].listener, id("clash"));
        assert_eq!(problems[0].kind, ListenerProblemKind::ProtocolConflict);

        let bind = Bind { addr: "127.0.0.1:443".parse().unwrap(), protocol: L4Protocol::Tcp };
        let Frontend::Tls(listeners) = &plan.frontends[&bind] else { panic!() };
        let pick = |sni| {
            Plan::route_tls(listeners, sni).map(|(l, r)| (l.id.name.clone(), r.id.name.clone()))
        };
        assert_eq!(pick(Some("a.example.test")), Some(("wild".into(), "exact".into())));
        assert_eq!(pick(Some("b.example.test")), Some(("wild".into(), "wild".into())));
        assert_eq!(pick(Some("other.test")), Some(("any".into(), "fallback".into())));
        assert_eq!(pick(None), Some(("any".into(), "fallback".into())));
    }

    #[test]
    fn an_unusable_certificate_is_a_listener_problem() {
        let tls = gatehouse_model::ListenerTls {
            certificates: vec![gatehouse_model::Certificate {
                source: "Secret infra/broken".into(),
                chain_pem: "not pem".into(),
                key_pem: "not pem".into(),
            }],
        };
        let desired = Desired {
            l4_listeners: vec![listener("term", 443, L4Mode::TlsTerminate(tls), None, vec![])],
            ..Desired::default()
        };
        let (plan, problems) = compile(&desired, L4Limits::default());
        assert!(plan.frontends.is_empty());
        assert_eq!(problems[0].kind, ListenerProblemKind::InvalidCertificate);
    }
}
