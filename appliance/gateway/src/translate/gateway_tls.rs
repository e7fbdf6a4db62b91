//! A Gateway's own TLS settings (`spec.tls`): the client certificate it presents to TLS
//! backends (`backend.clientCertificateRef`) and client certificate validation on its HTTPS
//! listeners (`frontend.default` / `frontend.perPort`).

use gatehouse_model::{CaBundle, Certificate, ClientValidationMode};

use super::Problem;
use super::backend_tls::config_map_ca;
use super::grants::{self, From, To};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{FrontendValidation, FrontendValidationMode, GROUP, Gateway, Listener};

/// The Gateway's backend client certificate: `None` when it names none, `Err` (reason
/// InvalidClientCertificateRef or RefNotPermitted) when the ref cannot be used.
pub(crate) fn client_certificate(
    index: &Index,
    gateway: &Gateway,
) -> Option<Result<Certificate, Problem>> {
    let r = gateway.spec.tls.as_ref()?.backend.as_ref()?.client_certificate_ref.as_ref()?;
    Some(super::tls::resolve_one(index, "Gateway", gateway.namespace(), r).map_err(|p| {
        let reason = if p.reason == reason::REF_NOT_PERMITTED {
            reason::REF_NOT_PERMITTED
        } else {
            reason::INVALID_CLIENT_CERTIFICATE_REF
        };
        Problem::new(reason, format!("spec.tls.backend.clientCertificateRef: {}", p.message))
    }))
}

/// What client validation asks of one HTTPS listener, once its refs are judged.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frontend {
    /// The usable CA bundles; empty means the listener cannot be served (NoValidCACertificate).
    pub roots: Vec<CaBundle>,
    pub mode: ClientValidationMode,
    /// Refs that could not be used (InvalidCACertificateRef, InvalidKind, RefNotPermitted).
    pub problems: Vec<Problem>,
}

/// Client validation of an HTTPS listener: the per-port setting of its port, else the
/// default; `None` when neither validates clients.
pub(crate) fn frontend(index: &Index, gateway: &Gateway, listener: &Listener) -> Option<Frontend> {
    let config = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    let validation = match config.per_port.iter().find(|p| p.port == listener.port) {
        Some(per_port) => per_port.tls.validation.as_ref(),
        None => config.default.validation.as_ref(),
    }?;
    Some(judge(index, gateway.namespace(), validation))
}

fn judge(index: &Index, gateway_ns: &str, v: &FrontendValidation) -> Frontend {
    let mut roots = Vec::new();
    let mut problems = Vec::new();
    for r in &v.ca_certificate_refs {
        if !(r.group.is_empty() || r.group == "core") || r.kind != "ConfigMap" {
            problems.push(Problem::new(
                reason::INVALID_KIND,
                format!(
                    "caCertificateRef kind {}/{} is not supported (only ConfigMap)",
                    r.group, r.kind
                ),
            ));
            continue;
        }
        let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
        let source = format!("ConfigMap {ns}/{}", r.name);
        let from = From { group: GROUP, kind: "Gateway", namespace: gateway_ns };
        let to = To { group: "", kind: "ConfigMap", namespace: ns, name: &r.name };
        if !grants::permits(index, &from, &to) {
            problems.push(Problem::new(
                reason::REF_NOT_PERMITTED,
                format!("{source} is in another namespace and no ReferenceGrant allows it"),
            ));
            continue;
        }
        match config_map_ca(index.config_maps.get(&(ns.to_owned(), r.name.clone())).map(|c| &**c)) {
            Ok(pem) => roots.push(CaBundle { source, pem }),
            Err(why) => problems
                .push(Problem::new(reason::INVALID_CA_CERTIFICATE_REF, format!("{source} {why}"))),
        }
    }
    let mode = match v.mode {
        FrontendValidationMode::AllowValidOnly => ClientValidationMode::RequireValid,
        FrontendValidationMode::AllowInsecureFallback => {
            ClientValidationMode::AllowInsecureFallback
        }
    };
    Frontend { roots, mode, problems }
}
