//! ACME wiring: what the config asks the certificate manager for, the manager's certificates
//! merged into the listeners before compile (so a certificate goes live in the same swap as
//! its routes), and `gatehouse certs`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use gatehouse_acme::{CertKey, Certs, Store, Wanted};
use gatehouse_config::Config;
use gatehouse_gateway::{Index, Kind as GatewayKind, Object, ObjectRef};
use gatehouse_kube::TlsSecret;
use gatehouse_model::acme::{CertificateRequest, ListenerCertificateRequest};
use gatehouse_model::{
    Certificate, Desired, Hostname, ListenerId, ListenerProblem, ListenerProblemKind, ListenerTls,
    ObjectId, Protocol,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::cli::CertsArgs;
use crate::pipeline::Loaded;

/// cert-manager's annotations on a Gateway, understood as they are written for cert-manager.
pub const CLUSTER_ISSUER: &str = "cert-manager.io/cluster-issuer";
pub const ISSUER: &str = "cert-manager.io/issuer";
pub const COMMON_NAME: &str = "cert-manager.io/common-name";
pub const RENEW_BEFORE: &str = "cert-manager.io/renew-before";

/// What the manager should keep issued: the config's listeners and the annotated Gateways'.
pub fn wanted(config: &Config, gateway_requests: &[ListenerCertificateRequest]) -> Wanted {
    Wanted {
        issuers: config.acme.issuers.clone(),
        requests: config
            .acme
            .requests
            .iter()
            .chain(gateway_requests)
            .map(|r| r.request.clone())
            .collect(),
    }
}

/// Gateway API: Gateways of ours annotated for cert-manager get their certificates from the
/// issuer of that name. Each Secret named by a listener's first certificateRef holds one
/// certificate for the hostnames of every listener naming it (common name first), as
/// cert-manager would issue it; an issued certificate is put into the index as that Secret
/// (file mode: it lives in the state directory, not in a manifest) and the Gateway API objects
/// are translated again, so the listener resolves like any other. Returns one request per
/// listener, and the Secrets to keep in the cluster (cluster mode writes them back).
pub fn gateway_api(
    loaded: &mut Loaded,
    certs: &Certs,
) -> (Vec<ListenerCertificateRequest>, Vec<TlsSecret>) {
    let Some(api) = loaded.gateway_api.as_mut() else {
        return (Vec::new(), Vec::new());
    };
    let found = annotated(&api.index, &api.settings.controller_name);
    let mut injected = false;
    let mut secrets = Vec::new();
    for (request, (namespace, name)) in &found {
        let key = CertKey::of(&request.request);
        if let Some(cert) = certs.entries.get(&key).and_then(|e| e.cert.as_ref()) {
            let present = api.index.contains(&ObjectRef::new(GatewayKind::Secret, namespace, name));
            api.index.apply(Object::Secret(tls_secret(namespace, name, cert)));
            injected = true;
            let (labels, annotations) = infrastructure(&api.index, &request.listener.gateway);
            secrets.push(TlsSecret {
                namespace: namespace.clone(),
                name: name.clone(),
                issuer: key.issuer.clone(),
                chain_pem: cert.chain_pem.clone(),
                key_pem: cert.key_pem.clone(),
                labels,
                annotations,
                present,
            });
        }
    }
    if injected {
        api.translation = gatehouse_gateway::translate(&api.index, &api.settings);
        let mut desired = loaded.config.native_desired();
        desired.merge(api.translation.desired.clone());
        loaded.desired = desired;
    }
    (found.into_iter().map(|(request, _)| request).collect(), secrets)
}

type SecretKey = (String, String);

/// The label Gateway API asks generated resources to carry with their Gateway's name.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Labels and annotations for what the appliance creates for a Gateway (its ACME Secrets):
/// `spec.infrastructure` (GatewayInfrastructurePropagation) and the gateway-name label.
fn infrastructure(
    index: &Index,
    gateway: &ObjectId,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let found =
        index.gateways().find(|g| g.namespace() == gateway.namespace && g.name() == gateway.name);
    let infra = found.and_then(|g| g.spec.infrastructure.as_ref());
    let mut labels = infra.map(|i| i.labels.clone()).unwrap_or_default();
    labels.insert(GATEWAY_NAME_LABEL.to_owned(), gateway.name.clone());
    (labels, infra.map(|i| i.annotations.clone()).unwrap_or_default())
}

fn annotated(index: &Index, controller: &str) -> Vec<(ListenerCertificateRequest, SecretKey)> {
    let mut out = Vec::new();
    for gateway in index.gateways() {
        let ours = index
            .gateway_class(&gateway.spec.gateway_class_name)
            .is_some_and(|c| c.spec.controller_name == controller);
        let annotations = gateway.metadata.annotations.clone().unwrap_or_default();
        let issuer = annotations.get(CLUSTER_ISSUER).or_else(|| annotations.get(ISSUER));
        let (true, Some(issuer)) = (ours, issuer) else { continue };
        let renew_before = annotations.get(RENEW_BEFORE).and_then(|v| go_duration(v));
        let namespace = gateway.namespace().to_owned();
        // Hostnames per Secret, in listener order.
        let mut secrets: BTreeMap<SecretKey, Vec<(String, Hostname)>> = BTreeMap::new();
        for listener in &gateway.spec.listeners {
            let (Some(tls), Some(hostname)) = (&listener.tls, &listener.hostname) else {
                continue;
            };
            let (Some(r), Ok(hostname)) = (tls.certificate_refs.first(), Hostname::parse(hostname))
            else {
                continue;
            };
            let secret_ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
            secrets
                .entry((secret_ns, r.name.clone()))
                .or_default()
                .push((listener.name.clone(), hostname));
        }
        for (secret, listeners) in secrets {
            let mut names: Vec<Hostname> = Vec::new();
            if let Some(cn) = annotations.get(COMMON_NAME).and_then(|c| Hostname::parse(c).ok()) {
                names.push(cn);
            }
            for (_, hostname) in &listeners {
                if !names.contains(hostname) {
                    names.push(hostname.clone());
                }
            }
            let request = CertificateRequest { issuer: issuer.clone(), names, renew_before };
            for (listener, _) in listeners {
                let id = ListenerId {
                    gateway: ObjectId::new("Gateway", &namespace, gateway.name()),
                    name: listener,
                };
                out.push((
                    ListenerCertificateRequest { listener: id, request: request.clone() },
                    secret.clone(),
                ));
            }
        }
    }
    out
}

fn tls_secret(namespace: &str, name: &str, cert: &gatehouse_acme::StoredCert) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.namespace = Some(namespace.to_owned());
    secret.metadata.name = Some(name.to_owned());
    secret.type_ = Some("kubernetes.io/tls".to_owned());
    secret.data = Some(BTreeMap::from([
        ("tls.crt".to_owned(), ByteString(cert.chain_pem.clone().into_bytes())),
        ("tls.key".to_owned(), ByteString(cert.key_pem.clone().into_bytes())),
    ]));
    secret
}

/// A Go duration as cert-manager writes it (`720h`, `1h30m`, `90s`); `None` when malformed.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += number * seconds;
        rest = tail;
    }
    Some(Duration::from_secs_f64(total))
}

/// Puts each ACME certificate first in its listener's certificates. A listener whose
/// certificate has not been obtained gets a problem carrying the ACME error, which status shows
/// as `ResolvedRefs=False`.
pub fn merge(
    desired: &mut Desired,
    requests: &[ListenerCertificateRequest],
    certs: &Certs,
) -> Vec<ListenerProblem> {
    let mut problems = Vec::new();
    for request in requests {
        let key = CertKey::of(&request.request);
        let entry = certs.entries.get(&key);
        let listener = desired
            .listeners
            .iter_mut()
            .find(|l| l.id == request.listener && l.protocol == Protocol::Https);
        match (entry.and_then(|e| e.cert.as_ref()), listener) {
            (Some(_), None) => {}
            (Some(cert), Some(listener)) => {
                let tls = listener.tls.get_or_insert_with(|| ListenerTls { certificates: vec![] });
                // Gateway API listeners already carry it (as their Secret).
                if tls.certificates.iter().any(|c| c.chain_pem == cert.chain_pem) {
                    continue;
                }
                tls.certificates.insert(
                    0,
                    Certificate {
                        source: format!("ACME issuer {} for {}", key.issuer, key.names.join(",")),
                        chain_pem: cert.chain_pem.clone(),
                        key_pem: cert.key_pem.clone(),
                    },
                );
            }
            (None, _) => {
                let why = match entry.and_then(|e| e.last_error.as_ref()) {
                    Some(failure) => format!(
                        "ACME certificate for {} from issuer {} not obtained ({}): {}{}",
                        key.names.join(","),
                        key.issuer,
                        failure.reason,
                        failure.message,
                        retry_note(entry.and_then(|e| e.next_attempt)),
                    ),
                    None => format!(
                        "ACME certificate for {} from issuer {} is being obtained",
                        key.names.join(","),
                        key.issuer
                    ),
                };
                problems.push(ListenerProblem {
                    listener: request.listener.clone(),
                    kind: ListenerProblemKind::InvalidCertificate,
                    message: why,
                });
            }
        }
    }
    problems
}

fn retry_note(next: Option<SystemTime>) -> String {
    match next.map(|t| t.duration_since(SystemTime::now()).unwrap_or_default()) {
        Some(d) => format!(" (retrying in {}s)", d.as_secs()),
        None => String::new(),
    }
}

/// `gatehouse certs`: the certificates in the state directory with issuer, expiry and the
/// latest planned renewal (the manager renews up to 1/20 of the lifetime earlier, and earlier
/// still when the CA's renewal information says so).
pub fn list(args: &CertsArgs) -> ExitCode {
    let config = match gatehouse_config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let store = Store::new(&config.state_dir);
    let certs = match store.certs() {
        Ok(certs) => certs,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let issuers: Vec<&str> = config.acme.issuers.iter().map(|i| i.name.as_str()).collect();
    println!("issuers: {}", if issuers.is_empty() { "-".into() } else { issuers.join(", ") });
    if certs.is_empty() {
        println!("no ACME certificates in {}", store.root().display());
        return ExitCode::SUCCESS;
    }
    println!("{:<40} {:<12} {:<22} {:<22}", "NAMES", "ISSUER", "EXPIRES", "RENEWAL DUE BY");
    for cert in certs {
        let meta = &cert.meta;
        let renew_before = config
            .acme
            .requests
            .iter()
            .find(|r| CertKey::of(&r.request).names == meta.names)
            .and_then(|r| r.request.renew_before);
        let due = gatehouse_acme::renew::renewal_time(
            meta.not_before,
            meta.not_after,
            renew_before,
            None,
            0.0,
        );
        println!(
            "{:<40} {:<12} {:<22} {:<22}",
            meta.names.join(","),
            meta.issuer,
            timestamp(meta.not_after),
            timestamp(due)
        );
    }
    ExitCode::SUCCESS
}

fn timestamp(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map_or_else(|_| "?".into(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_manager_durations_are_read() {
        assert_eq!(go_duration("720h"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("360h0m0s"), Some(Duration::from_secs(360 * 3600)));
        assert_eq!(go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(go_duration("10d"), None);
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("h"), None);
    }
}
