//! Listener certificates from `kubernetes.io/tls` Secrets, validated as rustls would load them.

use k8s_openapi::api::core::v1::Secret;

use gatehouse_model::Certificate;

use super::Problem;
use super::grants::{self, From, To};
use crate::conditions::reason;
use crate::index::Index;
use crate::loader::TLS_SECRET_TYPE;
use crate::types::{GROUP, SecretObjectReference};

/// The usable certificates of a listener's `certificateRefs`, and a problem for each other ref.
///
/// `owner_kind` is `Gateway` or `ListenerSet`: ReferenceGrants name the kind they trust.
pub(super) fn resolve(
    index: &Index,
    owner_kind: &'static str,
    gateway_ns: &str,
    refs: &[SecretObjectReference],
) -> (Vec<Certificate>, Vec<Problem>) {
    let mut certificates = Vec::new();
    let mut problems = Vec::new();
    for r in refs {
        match resolve_one(index, owner_kind, gateway_ns, r) {
            Ok(cert) => certificates.push(cert),
            Err(p) => problems.push(p),
        }
    }
    (certificates, problems)
}

pub(super) fn resolve_one(
    index: &Index,
    owner_kind: &'static str,
    gateway_ns: &str,
    r: &SecretObjectReference,
) -> Result<Certificate, Problem> {
    let invalid = |message: String| Problem::new(reason::INVALID_CERTIFICATE_REF, message);
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Secret" {
        return Err(invalid(format!(
            "certificateRef kind {}/{} is not supported (only Secret)",
            r.group, r.kind
        )));
    }
    let ns = r.namespace.as_deref().unwrap_or(gateway_ns);
    let source = format!("Secret {ns}/{}", r.name);
    let from = From { group: GROUP, kind: owner_kind, namespace: gateway_ns };
    let to = To { group: "", kind: "Secret", namespace: ns, name: &r.name };
    if !grants::permits(index, &from, &to) {
        return Err(Problem::new(
            reason::REF_NOT_PERMITTED,
            format!("{source} is in another namespace and no ReferenceGrant allows it"),
        ));
    }
    let secret = index
        .secrets
        .get(&(ns.to_owned(), r.name.clone()))
        .ok_or_else(|| invalid(format!("{source} does not exist")))?;
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(invalid(format!("{source} is not of type {TLS_SECRET_TYPE}")));
    }
    let chain =
        field(secret, "tls.crt").ok_or_else(|| invalid(format!("{source} has no tls.crt")))?;
    let key =
        field(secret, "tls.key").ok_or_else(|| invalid(format!("{source} has no tls.key")))?;
    validate(&chain, &key).map_err(|e| invalid(format!("{source}: {e}")))?;
    let chain_pem = String::from_utf8(chain)
        .map_err(|_| invalid(format!("{source}: tls.crt is not PEM text")))?;
    let key_pem = String::from_utf8(key)
        .map_err(|_| invalid(format!("{source}: tls.key is not PEM text")))?;
    Ok(Certificate { source, chain_pem, key_pem })
}

/// A Secret's value; `stringData` wins over `data`, as the API server merges them.
fn field(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()))
}

/// Checks a Secret's chain and key as the proxy will load them (`gatehouse_model::certified_key`).
pub(crate) fn validate(chain: &[u8], key: &[u8]) -> Result<(), String> {
    gatehouse_model::certified_key(chain, key).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::validate;
    use crate::fixtures::*;

    #[test]
    fn accepts_rsa_pkcs1_ecdsa_sec1_and_ed25519_pkcs8() {
        for (crt, key) in [(RSA_CRT, RSA_KEY), (EC_CRT, EC_KEY), (ED_CRT, ED_KEY)] {
            assert_eq!(validate(crt.as_bytes(), key.as_bytes()), Ok(()));
        }
    }

    #[test]
    fn rejects_broken_and_mismatched_keys() {
        assert!(validate(EC_CRT.as_bytes(), b"not a key").is_err());
        assert!(validate(b"", EC_KEY.as_bytes()).is_err());
        let truncated = EC_KEY.replace("\n", "").get(..60).unwrap().to_owned();
        assert!(validate(EC_CRT.as_bytes(), truncated.as_bytes()).is_err());
        let err = validate(EC_CRT.as_bytes(), RSA_KEY.as_bytes()).unwrap_err();
        assert!(err.contains("does not belong"), "{err}");
    }
}
