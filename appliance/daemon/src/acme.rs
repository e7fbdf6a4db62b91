//! ACME wiring: what the config asks the certificate manager for, the manager's certificates
//! merged into the listeners before compile (so a certificate goes live in the same swap as
//! its routes), and `gatehouse certs`.

use std::process::ExitCode;
use std::time::SystemTime;

use gatehouse_acme::{CertKey, Certs, Store, Wanted};
use gatehouse_config::Config;
use gatehouse_model::acme::ListenerCertificateRequest;
use gatehouse_model::{
    Certificate, Desired, ListenerProblem, ListenerProblemKind, ListenerTls, Protocol,
};

use crate::cli::CertsArgs;

/// What the manager should keep issued for this config.
pub fn wanted(config: &Config) -> Wanted {
    Wanted {
        issuers: config.acme.issuers.clone(),
        requests: config.acme.requests.iter().map(|r| r.request.clone()).collect(),
    }
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
        let Some(listener) = desired.listeners.iter_mut().find(|l| l.id == request.listener) else {
            continue;
        };
        if listener.protocol != Protocol::Https {
            continue;
        }
        let key = CertKey::of(&request.request);
        let entry = certs.entries.get(&key);
        match entry.and_then(|e| e.cert.as_ref()) {
            Some(cert) => {
                let tls = listener.tls.get_or_insert_with(|| ListenerTls { certificates: vec![] });
                tls.certificates.insert(
                    0,
                    Certificate {
                        source: format!("ACME issuer {} for {}", key.issuer, key.names.join(",")),
                        chain_pem: cert.chain_pem.clone(),
                        key_pem: cert.key_pem.clone(),
                    },
                );
            }
            None => {
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
