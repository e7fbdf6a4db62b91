//! BackendTLSPolicy: which policy applies to a Service port, what it asks of the proxy, and
//! its own conditions (Accepted, ResolvedRefs), judged the same way for both.
//!
//! A policy that cannot be used (bad CA refs, bad names) still applies to its targets: their
//! requests fail with a 5xx instead of falling back to cleartext, as the spec requires.

use gatehouse_model::{BackendTls, CaBundle, Certificate, SubjectAltName, TrustRoots};
use k8s_openapi::api::core::v1::ConfigMap;

use super::Problem;
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{BackendTlsPolicy, PolicyTargetReference};

/// The key of a ConfigMap holding PEM CA certificates.
pub const CA_CERT_KEY: &str = "ca.crt";

/// What a policy means and how it stands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Judged {
    /// The proxy's settings, or why requests to its targets must fail.
    pub tls: Result<BackendTls, Problem>,
    /// `Accepted`: Invalid or NoValidCACertificate (Conflicted is decided per target).
    pub accepted: Result<(), Problem>,
    /// `ResolvedRefs`: InvalidCACertificateRef or InvalidKind.
    pub resolved_refs: Result<(), Problem>,
}

/// Judges one policy on its own.
pub(crate) fn judge(index: &Index, policy: &BackendTlsPolicy) -> Judged {
    let ns = policy.namespace();
    let source = format!("BackendTLSPolicy {ns}/{}", policy.name());
    let v = &policy.spec.validation;
    let invalid = |message: String| Problem::new(reason::INVALID, message);

    let mut bundles = Vec::new();
    let mut ref_problems = Vec::new();
    for r in &v.ca_certificate_refs {
        match ca_bundle(index, ns, r) {
            Ok(b) => bundles.push(b),
            Err(p) => ref_problems.push(p),
        }
    }
    let resolved_refs = Problem::merge(&ref_problems).map_or(Ok(()), Err);

    let roots = match (v.ca_certificate_refs.is_empty(), v.well_known_ca_certificates.as_deref()) {
        (false, Some(w)) if !w.is_empty() => Err(invalid(
            "caCertificateRefs and wellKnownCACertificates exclude each other".to_owned(),
        )),
        (true, None | Some("")) => Err(invalid(
            "one of caCertificateRefs or wellKnownCACertificates is required".to_owned(),
        )),
        (true, Some("System")) => Ok(TrustRoots::System),
        (true, Some(other)) => {
            Err(invalid(format!("wellKnownCACertificates {other:?} is not supported (System is)")))
        }
        (false, _) if bundles.is_empty() => Err(Problem::new(
            reason::NO_VALID_CA_CERTIFICATE,
            format!(
                "no valid CA certificate: {}",
                Problem::merge(&ref_problems).map(|p| p.message).unwrap_or_default()
            ),
        )),
        (false, _) => Ok(TrustRoots::Pem(bundles)),
    };
    let names = subject_alt_names(policy);
    let hostname = gatehouse_model::Hostname::parse(&v.hostname)
        .map_err(|e| invalid(format!("hostname: {e}")))
        .and_then(|h| {
            if h.is_wildcard() {
                Err(invalid(format!("hostname {:?} must not be a wildcard", v.hostname)))
            } else {
                Ok(h)
            }
        });
    let accepted = match (&roots, &names, &hostname) {
        (Err(p), _, _) | (_, Err(p), _) | (_, _, Err(p)) => Err(p.clone()),
        _ => Ok(()),
    };
    let tls = match (roots, names, hostname) {
        (Ok(roots), Ok(subject_alt_names), Ok(hostname)) => Ok(BackendTls {
            source,
            hostname: hostname.as_str().to_owned(),
            roots,
            subject_alt_names,
            client_certificate: None,
        }),
        (Err(p), _, _) | (_, Err(p), _) | (_, _, Err(p)) => {
            Err(Problem::new(p.reason, format!("{source}: {}", p.message)))
        }
    };
    Judged { tls, accepted, resolved_refs }
}

fn subject_alt_names(policy: &BackendTlsPolicy) -> Result<Vec<SubjectAltName>, Problem> {
    let invalid = |message: String| Problem::new(reason::INVALID, message);
    let mut out = Vec::new();
    for san in &policy.spec.validation.subject_alt_names {
        match (san.kind.as_str(), &san.hostname, &san.uri) {
            ("Hostname", Some(h), None) => {
                let h = gatehouse_model::Hostname::parse(h)
                    .map_err(|e| invalid(format!("subjectAltNames: {e}")))?;
                out.push(SubjectAltName::Hostname(h.as_str().to_owned()));
            }
            ("URI", None, Some(u)) if u.contains(':') => out.push(SubjectAltName::Uri(u.clone())),
            ("URI", None, Some(u)) => {
                return Err(invalid(format!("subjectAltNames: {u:?} is not an absolute URI")));
            }
            (kind, _, _) => {
                return Err(invalid(format!(
                    "subjectAltNames: type {kind:?} needs exactly its own field (Hostname: \
                     hostname, URI: uri)"
                )));
            }
        }
    }
    Ok(out)
}

/// PEM CA certificates from a same-namespace ConfigMap's `ca.crt`.
fn ca_bundle(
    index: &Index,
    ns: &str,
    r: &crate::types::LocalObjectReference,
) -> Result<CaBundle, Problem> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "ConfigMap" {
        return Err(Problem::new(
            reason::INVALID_KIND,
            format!(
                "caCertificateRef kind {}/{} is not supported (only ConfigMap)",
                r.group, r.kind
            ),
        ));
    }
    let source = format!("ConfigMap {ns}/{}", r.name);
    let pem = config_map_ca(index.config_maps.get(&(ns.to_owned(), r.name.clone())).map(|c| &**c))
        .map_err(|why| {
            Problem::new(reason::INVALID_CA_CERTIFICATE_REF, format!("{source} {why}"))
        })?;
    Ok(CaBundle { source, pem })
}

/// The PEM text of a ConfigMap's `ca.crt`, checked to hold at least one certificate.
pub(crate) fn config_map_ca(config_map: Option<&ConfigMap>) -> Result<String, &'static str> {
    let config_map = config_map.ok_or("does not exist")?;
    let pem = config_map.data.as_ref().and_then(|d| d.get(CA_CERT_KEY)).ok_or("has no ca.crt")?;
    if !valid_ca_pem(pem) {
        return Err("holds no valid PEM CA certificate in ca.crt");
    }
    Ok(pem.clone())
}

/// Whether PEM text holds at least one certificate and nothing malformed.
fn valid_ca_pem(pem: &str) -> bool {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    certs.is_ok_and(|c| !c.is_empty() && c.iter().all(|der| webpki_anchor(der)))
}

/// Whether DER bytes parse as a trust anchor (as the proxy will load them).
fn webpki_anchor(der: &rustls_pki_types::CertificateDer<'_>) -> bool {
    let mut store = rustls::RootCertStore::empty();
    store.add(der.clone()).is_ok()
}

/// Whether a targetRef names this Service (and, with a sectionName, this port name).
fn targets(t: &PolicyTargetReference, service: &str, port_name: &str) -> bool {
    (t.group.is_empty() || t.group == "core")
        && t.kind == "Service"
        && t.name == service
        && t.section_name.as_deref().is_none_or(|s| s == port_name)
}

/// The policy that applies to a Service port, if any: a sectionName match wins over a whole
/// Service match; among equals the oldest, then the first by name (spec precedence).
pub(crate) fn winner<'a>(
    index: &'a Index,
    ns: &str,
    service: &str,
    port_name: &str,
) -> Option<&'a BackendTlsPolicy> {
    let mut best: Option<(bool, Option<i64>, &str, &BackendTlsPolicy)> = None;
    for ((_, name), policy) in index
        .backend_tls_policies
        .range((ns.to_owned(), String::new())..)
        .take_while(|((n, _), _)| n == ns)
    {
        let mut specific = None;
        for t in &policy.spec.target_refs {
            if targets(t, service, port_name) {
                specific = Some(specific.unwrap_or(false) || t.section_name.is_some());
            }
        }
        let Some(specific) = specific else { continue };
        let created = policy.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
        let better = match &best {
            None => true,
            Some((b_specific, b_created, b_name, _)) => {
                (!specific, created.unwrap_or(i64::MAX), name.as_str())
                    < (!*b_specific, b_created.unwrap_or(i64::MAX), *b_name)
            }
        };
        if better {
            best = Some((specific, created, name, policy));
        }
    }
    best.map(|(_, _, _, p)| p)
}

/// The TLS a backendRef to `ns/service` port `port` gets: `None` for cleartext, `Some(Err)`
/// when a policy applies but cannot be used (its requests must fail).
pub(crate) fn for_backend(
    index: &Index,
    ns: &str,
    service: &str,
    port_name: &str,
) -> Option<Result<BackendTls, Problem>> {
    let policy = winner(index, ns, service, port_name)?;
    Some(judge(index, policy).tls)
}

/// Attaches the Gateway's backend client certificate to every TLS backend of a model route.
pub(crate) fn with_client_certificate(
    rules: &mut [gatehouse_model::HttpRule],
    certificate: &Certificate,
) {
    use gatehouse_model::{Backend, HttpFilter};
    let set = |b: &mut Backend| {
        if let Backend::Endpoints(e) = b
            && let Some(tls) = &mut e.tls
        {
            tls.client_certificate = Some(certificate.clone());
        }
    };
    for rule in rules {
        for wb in &mut rule.backends {
            set(&mut wb.backend);
            for f in wb.filters.iter_mut() {
                if let HttpFilter::RequestMirror(m) = f {
                    set(&mut m.backend);
                }
            }
        }
        for f in rule.filters.iter_mut() {
            if let HttpFilter::RequestMirror(m) = f {
                set(&mut m.backend);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;
    use crate::types::{BackendTlsPolicySpec, BackendTlsValidation, LocalObjectReference};

    fn config_map(name: &str, ca: &str) -> Object {
        let data = BTreeMap::from([(CA_CERT_KEY.to_owned(), ca.to_owned())]);
        Object::ConfigMap(ConfigMap {
            metadata: meta("app", name),
            data: Some(data),
            ..ConfigMap::default()
        })
    }

    fn ca_ref(kind: &str, name: &str) -> LocalObjectReference {
        LocalObjectReference { group: String::new(), kind: kind.to_owned(), name: name.to_owned() }
    }

    fn policy(
        name: &str,
        section: Option<&str>,
        validation: BackendTlsValidation,
    ) -> BackendTlsPolicy {
        BackendTlsPolicy {
            api_version: String::new(),
            kind: String::new(),
            metadata: meta("app", name),
            spec: BackendTlsPolicySpec {
                target_refs: vec![PolicyTargetReference {
                    group: String::new(),
                    kind: "Service".to_owned(),
                    name: "svc".to_owned(),
                    section_name: section.map(str::to_owned),
                }],
                validation,
                options: BTreeMap::new(),
            },
            status: None,
        }
    }

    fn validation(refs: Vec<LocalObjectReference>) -> BackendTlsValidation {
        BackendTlsValidation {
            ca_certificate_refs: refs,
            well_known_ca_certificates: None,
            hostname: "svc.example.com".to_owned(),
            subject_alt_names: Vec::new(),
        }
    }

    fn created(mut p: BackendTlsPolicy, second: i64) -> BackendTlsPolicy {
        let ts = jiff::Timestamp::from_second(second).unwrap();
        p.metadata.creation_timestamp = Some(Time(ts));
        p
    }

    #[test]
    fn a_valid_policy_carries_its_roots_hostname_and_names() {
        let mut v = validation(vec![ca_ref("ConfigMap", "ca")]);
        v.subject_alt_names = vec![
            crate::types::SubjectAltName {
                kind: "Hostname".into(),
                hostname: Some("Other.Example.com".into()),
                uri: None,
            },
            crate::types::SubjectAltName {
                kind: "URI".into(),
                hostname: None,
                uri: Some("spiffe://td/ns/app".into()),
            },
        ];
        let index = index([config_map("ca", EC_CRT)]);
        let judged = judge(&index, &policy("p", None, v));
        assert_eq!(judged.accepted, Ok(()));
        assert_eq!(judged.resolved_refs, Ok(()));
        let tls = judged.tls.unwrap();
        assert_eq!(tls.hostname, "svc.example.com");
        assert_eq!(tls.source, "BackendTLSPolicy app/p");
        assert!(
            matches!(&tls.roots, TrustRoots::Pem(b) if b.len() == 1 && b[0].source == "ConfigMap app/ca")
        );
        assert_eq!(
            tls.subject_alt_names,
            [
                SubjectAltName::Hostname("other.example.com".into()),
                SubjectAltName::Uri("spiffe://td/ns/app".into())
            ]
        );
    }

    #[test]
    fn bad_ca_refs_have_the_spec_reasons() {
        let index = index([config_map("garbage", "not a certificate")]);
        for (refs, resolved) in [
            (vec![ca_ref("ConfigMap", "missing")], reason::INVALID_CA_CERTIFICATE_REF),
            (vec![ca_ref("ConfigMap", "garbage")], reason::INVALID_CA_CERTIFICATE_REF),
            (vec![ca_ref("Secret", "s")], reason::INVALID_KIND),
        ] {
            let judged = judge(&index, &policy("p", None, validation(refs)));
            assert_eq!(judged.resolved_refs.unwrap_err().reason, resolved);
            assert_eq!(judged.accepted.unwrap_err().reason, reason::NO_VALID_CA_CERTIFICATE);
            assert!(judged.tls.is_err(), "an unusable policy must fail requests, not go cleartext");
        }
        // One good ref among bad ones: usable, but ResolvedRefs says which ref is wrong.
        let index = crate::fixtures::index([config_map("ca", EC_CRT)]);
        let refs = vec![ca_ref("ConfigMap", "ca"), ca_ref("ConfigMap", "missing")];
        let judged = judge(&index, &policy("p", None, validation(refs)));
        assert!(judged.tls.is_ok());
        assert_eq!(judged.accepted, Ok(()));
        assert!(judged.resolved_refs.unwrap_err().message.contains("ConfigMap app/missing"));
    }

    #[test]
    fn well_known_system_and_invalid_combinations() {
        let index = Index::new();
        let mut v = validation(Vec::new());
        v.well_known_ca_certificates = Some("System".into());
        assert_eq!(
            judge(&index, &policy("p", None, v.clone())).tls.unwrap().roots,
            TrustRoots::System
        );
        v.well_known_ca_certificates = Some("Mozilla".into());
        assert_eq!(
            judge(&index, &policy("p", None, v.clone())).accepted.unwrap_err().reason,
            reason::INVALID
        );
        v.well_known_ca_certificates = None;
        assert_eq!(
            judge(&index, &policy("p", None, v.clone())).accepted.unwrap_err().reason,
            reason::INVALID
        );
        v.well_known_ca_certificates = Some("System".into());
        v.hostname = "*.example.com".into();
        assert_eq!(
            judge(&index, &policy("p", None, v)).accepted.unwrap_err().reason,
            reason::INVALID
        );
    }

    #[test]
    fn the_port_specific_then_oldest_then_first_named_policy_wins() {
        let v = || validation(vec![ca_ref("ConfigMap", "ca")]);
        let objects = [
            Object::BackendTlsPolicy(created(policy("b-old", None, v()), 100)),
            Object::BackendTlsPolicy(created(policy("a-new", None, v()), 200)),
            Object::BackendTlsPolicy(created(policy("z-port", Some("https"), v()), 300)),
            Object::BackendTlsPolicy(created(policy("y-other-port", Some("admin"), v()), 50)),
        ];
        let index = index(objects);
        assert_eq!(winner(&index, "app", "svc", "https").unwrap().name(), "z-port");
        assert_eq!(winner(&index, "app", "svc", "admin").unwrap().name(), "y-other-port");
        assert_eq!(winner(&index, "app", "svc", "").unwrap().name(), "b-old");
        assert!(winner(&index, "app", "other", "https").is_none());
        assert!(winner(&index, "elsewhere", "svc", "https").is_none());
        // Equal age: the first by name.
        let same = [
            Object::BackendTlsPolicy(created(policy("b", None, v()), 100)),
            Object::BackendTlsPolicy(created(policy("a", None, v()), 100)),
        ];
        assert_eq!(winner(&crate::fixtures::index(same), "app", "svc", "").unwrap().name(), "a");
    }
}
