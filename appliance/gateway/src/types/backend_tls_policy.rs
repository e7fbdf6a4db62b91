use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{LocalObjectReference, resource};

resource!(
    /// A BackendTLSPolicy: how the proxy speaks TLS to the Services it targets.
    BackendTlsPolicy,
    BackendTlsPolicySpec,
    "BackendTLSPolicy"
);

/// `BackendTLSPolicy.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTlsPolicySpec {
    pub target_refs: Vec<PolicyTargetReference>,
    pub validation: BackendTlsValidation,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// A same-namespace target, optionally one port (by its name) of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `BackendTLSPolicy.spec.validation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTlsValidation {
    #[serde(default)]
    pub ca_certificate_refs: Vec<LocalObjectReference>,
    /// `System` is the only value the spec defines.
    #[serde(default, rename = "wellKnownCACertificates", skip_serializing_if = "Option::is_none")]
    pub well_known_ca_certificates: Option<String>,
    pub hostname: String,
    #[serde(default)]
    pub subject_alt_names: Vec<SubjectAltName>,
}

/// One subject alternative name: `type` Hostname with `hostname`, or URI with `uri`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectAltName {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, rename = "uri", skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}
