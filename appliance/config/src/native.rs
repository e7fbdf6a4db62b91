//! The native form (`[[gateways]]`, `[[routes]]`) converted 1:1 into the model.
//!
//! Every check records its error and carries on, so one pass reports all of them; the
//! returned [`Desired`] is only used when no error was recorded.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use gatehouse_model::{
    Backend, BackendEndpoints, Certificate, Desired, HeaderMatch, HeaderModifier, Hostname,
    HttpFilter, HttpMatch, HttpRoute, HttpRule, Listener, ListenerFilters, ListenerId, ListenerTls,
    ObjectId, PathMatch, PathModifier, Protocol, QueryMatch, Redirect, Rewrite, StringMatch,
    WeightedBackend,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use crate::error::{Errors, Position, Problem};
use crate::schema;

mod policy;

/// Namespace of every object of the native form.
pub const NAMESPACE: &str = "toml";
/// Largest backend weight (Gateway API limit).
pub const MAX_WEIGHT: u32 = 1_000_000;

const DEFAULT_GATEWAY_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const DEFAULT_REDIRECT_STATUS: u16 = 302;
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];
const METHODS: [&str; 9] =
    ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Converts the native gateways and routes; certificate files are read relative to `base_dir`.
pub(crate) fn convert(
    gateways: Vec<schema::Gateway>,
    routes: Vec<schema::Route>,
    plugins: &[&str],
    base_dir: &Path,
    acme: &mut crate::acme::AcmeSettings,
    errors: &mut Errors<'_>,
) -> (Desired, Vec<NativeGateway>) {
    let mut cx = Cx { errors, base_dir, acme, plugins, listener_filters: Vec::new() };
    let native_gateways = gateways
        .iter()
        .map(|g| NativeGateway {
            id: ObjectId::new("Gateway", NAMESPACE, g.name.get_ref()),
            addresses: g
                .addresses
                .as_ref()
                .map(|list| list.iter().filter_map(|a| parse_ip(a.get_ref()).ok()).collect()),
        })
        .collect();
    let listeners = cx.gateways(gateways);
    let http_routes = cx.routes(routes, &listeners).into_iter().map(std::sync::Arc::new).collect();
    let listener_filters = cx.listener_filters;
    (
        Desired { generation: 0, listeners, http_routes, listener_filters, ..Desired::default() },
        native_gateways,
    )
}

/// A native gateway and the addresses it names; `None` when it names none (IPAM may choose,
/// else it binds the unspecified address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeGateway {
    pub id: ObjectId,
    pub addresses: Option<Vec<IpAddr>>,
}

struct Cx<'e, 'a> {
    errors: &'e mut Errors<'a>,
    base_dir: &'e Path,
    /// Issuers known (read) and listeners certified by them (written).
    acme: &'e mut crate::acme::AcmeSettings,
    /// Names of the `[[plugins]]`, which `wasm` filters and listeners refer to.
    plugins: &'e [&'e str],
    listener_filters: Vec<ListenerFilters>,
}

/// Remembers where each name was first defined, to report duplicates.
#[derive(Default)]
struct Names(HashMap<String, Position>);

impl Cx<'_, '_> {
    fn gateways(&mut self, gateways: Vec<schema::Gateway>) -> Vec<Listener> {
        let mut names = Names::default();
        let mut out = Vec::new();
        for gateway in gateways {
            self.name("gateway", &gateway.name, &mut names);
            let id = ObjectId::new("Gateway", NAMESPACE, gateway.name.get_ref());
            let addresses = match gateway.addresses {
                None => vec![DEFAULT_GATEWAY_ADDRESS],
                Some(addresses) => {
                    if addresses.is_empty() {
                        self.errors
                            .push(&gateway.name.span(), Problem::Empty { what: "addresses" });
                    }
                    addresses.iter().filter_map(|a| self.ip(a)).collect()
                }
            };
            if gateway.listeners.is_empty() {
                self.errors.push(&gateway.name.span(), Problem::Empty { what: "listeners" });
            }
            let mut listener_names = Names::default();
            for listener in gateway.listeners {
                self.name("listener", &listener.name, &mut listener_names);
                out.push(self.listener(listener, &id, &addresses));
            }
        }
        out
    }

    fn listener(
        &mut self,
        listener: schema::Listener,
        gateway: &ObjectId,
        addresses: &[IpAddr],
    ) -> Listener {
        let port = *listener.port.get_ref();
        if port == 0 {
            self.errors.push(&listener.port.span(), Problem::ZeroPort);
        }
        let hostname = listener.hostname.as_ref().map(|h| self.hostname(h, true));
        let (protocol, tls) = match (*listener.protocol.get_ref(), listener.tls) {
            (schema::Protocol::Http, None) => (Protocol::Http, None),
            (schema::Protocol::Http, Some(tls)) => {
                self.errors.push(&tls.span(), Problem::UnexpectedTls);
                (Protocol::Http, None)
            }
            (schema::Protocol::Https, None) => {
                self.errors.push(&listener.protocol.span(), Problem::MissingCertificates);
                (Protocol::Https, None)
            }
            (schema::Protocol::Https, Some(tls)) => {
                let span = tls.span();
                let tls = tls.into_inner();
                let files = tls.certificates;
                if let Some(acme) = tls.acme {
                    let id = ListenerId {
                        gateway: gateway.clone(),
                        name: listener.name.get_ref().clone(),
                    };
                    self.acme_listener(acme, id, hostname.clone().flatten());
                } else if files.is_empty() {
                    self.errors.push(&span, Problem::MissingCertificates);
                }
                let certificates = files.iter().filter_map(|f| self.certificate(f)).collect();
                (Protocol::Https, Some(ListenerTls { certificates }))
            }
        };
        let id = ListenerId { gateway: gateway.clone(), name: listener.name.into_inner() };
        let filters: Vec<HttpFilter> =
            listener.plugins.iter().map(|p| self.wasm_filter(p)).collect();
        if !filters.is_empty() {
            self.listener_filters.push(ListenerFilters { listener: id.clone(), filters });
        }
        Listener {
            id,
            addresses: addresses.to_vec(),
            port,
            protocol,
            hostname: hostname.flatten(),
            tls,
        }
    }

    /// A listener certified by an ACME issuer: its hostname, from a configured issuer.
    fn acme_listener(
        &mut self,
        acme: Spanned<crate::acme::schema::ListenerAcme>,
        listener: ListenerId,
        hostname: Option<Hostname>,
    ) {
        let span = acme.span();
        let acme = acme.into_inner();
        let issuer = acme.issuer.get_ref();
        if !self.acme.issuers.iter().any(|i| &i.name == issuer) {
            let problem = Problem::Acme(format!("no [[acme.issuers]] named {issuer:?}"));
            self.errors.push(&acme.issuer.span(), problem);
        }
        let Some(hostname) = hostname else {
            let problem =
                Problem::Acme("tls.acme certifies the listener's hostname: set hostname".into());
            self.errors.push(&span, problem);
            return;
        };
        self.acme.requests.push(gatehouse_model::acme::ListenerCertificateRequest {
            listener,
            request: gatehouse_model::acme::CertificateRequest {
                issuer: issuer.clone(),
                names: vec![hostname],
                renew_before: acme.renew_before_seconds.map(std::time::Duration::from_secs),
            },
        });
    }

    /// Reads a certificate chain and its key; checks both hold what they should.
    fn certificate(&mut self, files: &schema::CertificateFiles) -> Option<Certificate> {
        let chain_pem = self.read_pem(&files.cert, |path, bytes| {
            let mut certs = CertificateDer::pem_slice_iter(bytes).peekable();
            match certs.peek() {
                None => Err(Problem::NoCertificate { path: path.into() }),
                Some(_) => match certs.find_map(Result::err) {
                    Some(e) => {
                        Err(Problem::InvalidPem { path: path.into(), reason: e.to_string() })
                    }
                    None => Ok(()),
                },
            }
        });
        let key_pem = self.read_pem(&files.key, |path, bytes| {
            PrivateKeyDer::from_pem_slice(bytes).map(drop).map_err(|e| match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    Problem::NoPrivateKey { path: path.into() }
                }
                e => Problem::InvalidPem { path: path.into(), reason: e.to_string() },
            })
        });
        Some(Certificate {
            source: self.base_dir.join(files.cert.get_ref()).display().to_string(),
            chain_pem: chain_pem?,
            key_pem: key_pem?,
        })
    }

    fn read_pem(
        &mut self,
        file: &Spanned<String>,
        check: impl FnOnce(&str, &[u8]) -> Result<(), Problem>,
    ) -> Option<String> {
        let path = self.base_dir.join(file.get_ref());
        let shown = path.display().to_string();
        let checked = std::fs::read_to_string(&path)
            .map_err(|e| Problem::UnreadableFile { path: shown.clone(), reason: e.to_string() })
            .and_then(|text| check(&shown, text.as_bytes()).map(|()| text));
        self.ok(&file.span(), checked)
    }

    fn routes(&mut self, routes: Vec<schema::Route>, listeners: &[Listener]) -> Vec<HttpRoute> {
        let mut names = Names::default();
        let mut out = Vec::new();
        for route in routes {
            self.name("route", &route.name, &mut names);
            let hostnames: Vec<Hostname> =
                route.hostnames.iter().filter_map(|h| self.hostname(h, true)).collect();
            if route.parents.is_empty() {
                self.errors.push(&route.name.span(), Problem::Empty { what: "parents" });
            }
            let mut attached = Vec::new();
            for parent in &route.parents {
                for id in self.parent(parent, &hostnames, listeners) {
                    if !attached.contains(&id) {
                        attached.push(id);
                    }
                }
            }
            if route.rules.is_empty() {
                self.errors.push(&route.name.span(), Problem::Empty { what: "rules" });
            }
            let mut rule_names = Names::default();
            let rules = route
                .rules
                .into_iter()
                .map(|rule| {
                    if let Some(name) = &rule.name {
                        self.name("rule", name, &mut rule_names);
                    }
                    self.rule(rule)
                })
                .collect();
            out.push(HttpRoute {
                id: ObjectId::new("HTTPRoute", NAMESPACE, route.name.into_inner()),
                created: None,
                hostnames,
                listeners: attached,
                rules,
            });
        }
        out
    }

    /// The listeners a parent (`gateway` or `gateway/listener`) attaches the route to.
    ///
    /// Like a Gateway API parentRef: a gateway attaches to each of its listeners whose hostname
    /// intersects the route's hostnames (any, when either side has none).
    fn parent(
        &mut self,
        parent: &Spanned<String>,
        hostnames: &[Hostname],
        listeners: &[Listener],
    ) -> Vec<ListenerId> {
        let text = parent.get_ref();
        let (gateway, section) = match text.split_once('/') {
            Some((gateway, section)) => (gateway, Some(section)),
            None => (text.as_str(), None),
        };
        let unknown = |reason: String| Problem::UnknownParent { parent: text.clone(), reason };
        let of_gateway: Vec<&Listener> =
            listeners.iter().filter(|l| l.id.gateway.name == gateway).collect();
        if of_gateway.is_empty() {
            self.errors.push(&parent.span(), unknown(format!("no gateway is named {gateway:?}")));
            return Vec::new();
        }
        let candidates: Vec<&Listener> = match section {
            None => of_gateway,
            Some(section) => {
                let found: Vec<&Listener> =
                    of_gateway.into_iter().filter(|l| l.id.name == section).collect();
                if found.is_empty() {
                    let reason = format!("gateway {gateway:?} has no listener named {section:?}");
                    self.errors.push(&parent.span(), unknown(reason));
                    return Vec::new();
                }
                found
            }
        };
        let attached: Vec<ListenerId> = candidates
            .into_iter()
            .filter(|l| intersects(l.hostname.as_ref(), hostnames))
            .map(|l| l.id.clone())
            .collect();
        if attached.is_empty() {
            self.errors
                .push(&parent.span(), Problem::NoMatchingListenerHostname { parent: text.clone() });
        }
        attached
    }

    fn rule(&mut self, rule: schema::Rule) -> HttpRule {
        let matches: Vec<HttpMatch> =
            rule.matches.into_iter().map(|m| self.http_match(m)).collect();
        let filters = self.filters(rule.filters, Level::Rule, &matches);
        let redirect = filters.iter().find(|(_, f)| matches!(f, HttpFilter::RequestRedirect(_)));
        if let Some((span, _)) = redirect
            && !rule.backends.is_empty()
        {
            self.errors.push(span, Problem::RedirectWithBackends);
        }
        let backends =
            rule.backends.into_iter().filter_map(|b| self.backend(b, &matches)).collect();
        HttpRule {
            name: rule.name.map(Spanned::into_inner),
            matches,
            filters: filters.into_iter().map(|(_, f)| f).collect(),
            backends,
            policy: self.rule_policy(rule.timeouts, rule.retry),
        }
    }

    fn http_match(&mut self, m: schema::Match) -> HttpMatch {
        let path = match m.path.map(Spanned::into_inner) {
            None => PathMatch::Prefix("/".into()),
            Some(schema::PathMatch::Exact(p)) => PathMatch::Exact(self.path(p)),
            Some(schema::PathMatch::Prefix(p)) => PathMatch::Prefix(self.path(p)),
            Some(schema::PathMatch::Regex(r)) => PathMatch::Regex(self.regex(r)),
        };
        let method = m.method.map(|method| {
            if !METHODS.contains(&method.get_ref().as_str()) {
                self.errors.push(&method.span(), Problem::InvalidMethod(method.get_ref().clone()));
            }
            method.into_inner()
        });
        let headers = m
            .headers
            .into_iter()
            .filter_map(|h| {
                let (name, value) = self.string_match(h)?;
                Some(HeaderMatch { name: name.to_ascii_lowercase(), value })
            })
            .collect();
        let query = m
            .query
            .into_iter()
            .filter_map(|q| {
                let (name, value) = self.string_match(q)?;
                Some(QueryMatch { name, value })
            })
            .collect();
        HttpMatch { path, headers, query, method }
    }

    fn string_match(&mut self, m: Spanned<schema::StringMatch>) -> Option<(String, StringMatch)> {
        let span = m.span();
        let m = m.into_inner();
        let name = self.header_name(m.name);
        let value = match (m.exact, m.regex) {
            (Some(exact), None) => StringMatch::Exact(exact),
            (None, Some(regex)) => StringMatch::Regex(self.regex(regex)),
            _ => {
                self.errors.push(&span, Problem::StringMatchForm);
                return None;
            }
        };
        Some((name, value))
    }

    /// Converts filters and checks the Gateway API rules on their combination.
    fn filters(
        &mut self,
        filters: Vec<Spanned<schema::Filter>>,
        level: Level,
        matches: &[HttpMatch],
    ) -> Vec<(Range<usize>, HttpFilter)> {
        let mut seen: Vec<&'static str> = Vec::new();
        let mut out = Vec::new();
        for filter in filters {
            let span = filter.span();
            let (kind, converted) = match filter.into_inner() {
                schema::Filter::RequestHeaderModifier(m) => (
                    "request_header_modifier",
                    HttpFilter::RequestHeaderModifier(self.header_modifier(m)),
                ),
                schema::Filter::ResponseHeaderModifier(m) => (
                    "response_header_modifier",
                    HttpFilter::ResponseHeaderModifier(self.header_modifier(m)),
                ),
                schema::Filter::RequestRedirect(r) => {
                    if level == Level::Backend {
                        self.errors.push(&span, Problem::RedirectOnBackend);
                    }
                    ("request_redirect", HttpFilter::RequestRedirect(self.redirect(r, matches)))
                }
                schema::Filter::UrlRewrite(r) => {
                    ("url_rewrite", HttpFilter::UrlRewrite(self.rewrite(r, matches)))
                }
                // Several plugins may filter one rule, in order.
                schema::Filter::Wasm(w) => {
                    out.push((span, self.wasm_filter(&w.plugin)));
                    continue;
                }
                // Several mirrors may copy one rule's requests.
                schema::Filter::RequestMirror(m) => {
                    if let Some(f) = self.mirror(m, &span) {
                        out.push((span, f));
                    }
                    continue;
                }
                schema::Filter::Cors(c) => ("cors", self.cors(c)),
            };
            if seen.contains(&kind) {
                self.errors.push(&span, Problem::DuplicateFilter(kind));
            } else if (kind == "request_redirect" && seen.contains(&"url_rewrite"))
                || (kind == "url_rewrite" && seen.contains(&"request_redirect"))
            {
                self.errors.push(&span, Problem::RedirectWithRewrite);
            }
            seen.push(kind);
            out.push((span, converted));
        }
        out
    }

    /// A reference to a `[[plugins]]` entry.
    fn wasm_filter(&mut self, plugin: &Spanned<String>) -> HttpFilter {
        if !self.plugins.contains(&plugin.get_ref().as_str()) {
            self.errors.push(&plugin.span(), Problem::UnknownPlugin(plugin.get_ref().clone()));
        }
        HttpFilter::Wasm { plugin: plugin.get_ref().clone() }
    }

    fn header_modifier(&mut self, m: schema::HeaderModifier) -> HeaderModifier {
        let mut pairs = |map: std::collections::BTreeMap<Spanned<String>, Spanned<String>>| {
            map.into_iter()
                .map(|(name, value)| (self.header_name(name), self.header_value(value)))
                .collect()
        };
        let set = pairs(m.set);
        let add = pairs(m.add);
        let remove = m.remove.into_iter().map(|name| self.header_name(name)).collect();
        HeaderModifier { set, add, remove }
    }

    fn redirect(&mut self, r: schema::Redirect, matches: &[HttpMatch]) -> Redirect {
        let scheme = r.scheme.map(|scheme| {
            if !matches!(scheme.get_ref().as_str(), "http" | "https") {
                self.errors.push(&scheme.span(), Problem::InvalidScheme(scheme.get_ref().clone()));
            }
            scheme.into_inner()
        });
        let port = r.port.map(|port| {
            if *port.get_ref() == 0 {
                self.errors.push(&port.span(), Problem::ZeroPort);
            }
            *port.get_ref()
        });
        let status = r.status.map_or(DEFAULT_REDIRECT_STATUS, |status| {
            if !REDIRECT_STATUSES.contains(status.get_ref()) {
                self.errors.push(&status.span(), Problem::InvalidRedirectStatus(*status.get_ref()));
            }
            *status.get_ref()
        });
        Redirect {
            scheme,
            hostname: r.hostname.map(|h| self.precise_hostname(h)),
            path: r.path.map(|p| self.path_modifier(p, matches)),
            port,
            status,
        }
    }

    fn rewrite(&mut self, r: schema::Rewrite, matches: &[HttpMatch]) -> Rewrite {
        Rewrite {
            hostname: r.hostname.map(|h| self.precise_hostname(h)),
            path: r.path.map(|p| self.path_modifier(p, matches)),
        }
    }

    /// `replace_prefix` needs exactly one match, a prefix match (Gateway API CEL rule); no
    /// match at all is the default prefix `/`.
    fn path_modifier(&mut self, p: schema::PathModifier, matches: &[HttpMatch]) -> PathModifier {
        match p {
            schema::PathModifier::ReplaceFull(path) => {
                PathModifier::ReplaceFullPath(self.path(path))
            }
            schema::PathModifier::ReplacePrefix(path) => {
                let prefix_only = match matches {
                    [] => true,
                    [m] => matches!(m.path, PathMatch::Prefix(_)),
                    _ => false,
                };
                if !prefix_only {
                    self.errors.push(&path.span(), Problem::ReplacePrefixWithoutPrefixMatch);
                }
                PathModifier::ReplacePrefixMatch(self.path(path))
            }
        }
    }

    fn backend(
        &mut self,
        backend: Spanned<schema::Backend>,
        matches: &[HttpMatch],
    ) -> Option<WeightedBackend> {
        let span = backend.span();
        let b = backend.into_inner();
        let weight = b.weight.map_or(1, |weight| {
            if *weight.get_ref() > MAX_WEIGHT {
                self.errors.push(&weight.span(), Problem::WeightOutOfRange(*weight.get_ref()));
            }
            *weight.get_ref()
        });
        let filters = self.filters(b.filters, Level::Backend, matches);
        let protocol = b.protocol.into();
        let backend = match (b.address, b.dns) {
            (Some(address), None) => {
                let addr = self.socket_addr(&address)?;
                let name = addr.to_string();
                Backend::Endpoints(BackendEndpoints {
                    name,
                    addrs: vec![addr],
                    tls: None,
                    protocol,
                })
            }
            (None, Some(dns)) => {
                let (host, port) = self.host_port(&dns)?;
                Backend::Dns { name: format!("{host}:{port}"), host, port, protocol }
            }
            _ => {
                self.errors.push(&span, Problem::BackendForm);
                return None;
            }
        };
        Some(WeightedBackend {
            weight,
            backend,
            filters: filters.into_iter().map(|(_, f)| f).collect(),
        })
    }

    // Leaf checks. Each records its error and returns a usable placeholder or `None`.

    fn ok<T>(&mut self, span: &Range<usize>, result: Result<T, Problem>) -> Option<T> {
        result.map_err(|problem| self.errors.push(span, problem)).ok()
    }

    fn name(&mut self, what: &'static str, name: &Spanned<String>, seen: &mut Names) {
        if !is_dns_subdomain(name.get_ref()) {
            self.errors
                .push(&name.span(), Problem::InvalidName { what, name: name.get_ref().clone() });
        }
        let position = self.errors.position(&name.span());
        match seen.0.entry(name.get_ref().clone()) {
            Entry::Vacant(entry) => {
                entry.insert(position);
            }
            Entry::Occupied(entry) => {
                let first = *entry.get();
                let problem = Problem::DuplicateName { what, name: name.get_ref().clone(), first };
                self.errors.push(&name.span(), problem);
            }
        }
    }

    fn ip(&mut self, text: &Spanned<String>) -> Option<IpAddr> {
        let parsed = parse_ip(text.get_ref());
        self.ok(&text.span(), parsed)
    }

    fn socket_addr(&mut self, text: &Spanned<String>) -> Option<SocketAddr> {
        let parsed = parse_socket_addr(text.get_ref());
        let addr = self.ok(&text.span(), parsed)?;
        if addr.port() == 0 {
            self.errors.push(&text.span(), Problem::ZeroPort);
        }
        Some(addr)
    }

    fn host_port(&mut self, text: &Spanned<String>) -> Option<(String, u16)> {
        let invalid = |reason: &str| Problem::InvalidHostPort {
            value: text.get_ref().clone(),
            reason: reason.into(),
        };
        let Some((host, port)) = text.get_ref().rsplit_once(':') else {
            self.errors.push(&text.span(), invalid("the port is missing"));
            return None;
        };
        let port = match port.parse::<u16>() {
            Ok(0) => {
                self.errors.push(&text.span(), Problem::ZeroPort);
                return None;
            }
            Ok(port) => port,
            Err(e) => {
                self.errors.push(&text.span(), invalid(&format!("port: {e}")));
                return None;
            }
        };
        let host = Spanned::new(text.span(), host.to_owned());
        let host = self.precise_hostname(host);
        Some((host, port))
    }

    /// A hostname; wildcards only when `wildcard` is allowed.
    fn hostname(&mut self, text: &Spanned<String>, wildcard: bool) -> Option<Hostname> {
        let parsed = Hostname::parse(text.get_ref()).map_err(Problem::from).and_then(|h| {
            if h.is_wildcard() && !wildcard {
                Err(Problem::WildcardNotAllowed(text.get_ref().clone()))
            } else {
                Ok(h)
            }
        });
        self.ok(&text.span(), parsed)
    }

    fn precise_hostname(&mut self, text: Spanned<String>) -> String {
        match self.hostname(&text, false) {
            Some(h) => h.as_str().to_owned(),
            None => text.into_inner(),
        }
    }

    fn path(&mut self, path: Spanned<String>) -> String {
        if !is_clean_path(path.get_ref()) {
            self.errors.push(&path.span(), Problem::InvalidPath(path.get_ref().clone()));
        }
        path.into_inner()
    }

    fn regex(&mut self, pattern: Spanned<String>) -> String {
        if let Err(e) = regex::Regex::new(pattern.get_ref()) {
            // Syntax errors draw the pattern over several lines; the last one says what is wrong.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or_default().trim_start_matches("error: ");
            let problem =
                Problem::InvalidRegex { pattern: pattern.get_ref().clone(), reason: reason.into() };
            self.errors.push(&pattern.span(), problem);
        }
        pattern.into_inner()
    }

    fn header_name(&mut self, name: Spanned<String>) -> String {
        let valid = !name.get_ref().is_empty() && name.get_ref().bytes().all(is_token_byte);
        if !valid {
            self.errors.push(&name.span(), Problem::InvalidHeaderName(name.get_ref().clone()));
        }
        name.into_inner()
    }

    fn header_value(&mut self, value: Spanned<String>) -> String {
        if value.get_ref().chars().any(|c| c.is_control() && c != '\t') {
            self.errors.push(&value.span(), Problem::InvalidHeaderValue(value.get_ref().clone()));
        }
        value.into_inner()
    }
}

/// Where a filter list sits: on a rule, or on one of its backends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Rule,
    Backend,
}

/// Whether a listener with `listener` hostname accepts a route with `route` hostnames.
fn intersects(listener: Option<&Hostname>, route: &[Hostname]) -> bool {
    match listener {
        None => true,
        Some(listener) => route.is_empty() || route.iter().any(|h| listener.intersect(h).is_some()),
    }
}

pub(crate) fn parse_ip(text: &str) -> Result<IpAddr, Problem> {
    text.parse::<IpAddr>()
        .map_err(|e| Problem::InvalidIp { value: text.to_owned(), reason: e.to_string() })
}

pub(crate) fn parse_socket_addr(text: &str) -> Result<SocketAddr, Problem> {
    text.parse::<SocketAddr>()
        .map_err(|e| Problem::InvalidSocketAddr { value: text.to_owned(), reason: e.to_string() })
}

/// Gateway API `GatewayController`: `domain/path`.
pub(crate) fn is_controller_name(name: &str) -> bool {
    name.split_once('/').is_some_and(|(domain, path)| {
        is_dns_subdomain(domain)
            && !path.is_empty()
            && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b))
    })
}

/// RFC 1123 label, as Kubernetes namespace names.
pub(crate) fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// RFC 1123 subdomain, as Kubernetes object names and Gateway API section names.
pub(crate) fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Gateway API path rules: absolute, no empty or dot segments, no encoded slash, no fragment.
fn is_clean_path(path: &str) -> bool {
    path.starts_with('/')
        && !["//", "/./", "/../", "%2f", "%2F", "#"].iter().any(|bad| path.contains(bad))
        && !path.ends_with("/.")
        && !path.ends_with("/..")
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
