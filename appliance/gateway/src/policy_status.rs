//! Status of BackendTLSPolicies: one `status.ancestors` entry per Gateway of ours whose
//! accepted routes send traffic to a Service the policy targets.

use std::collections::BTreeSet;

use crate::conditions::{self as c, reason};
use crate::index::Index;
use crate::status::{Conditions, ObjectStatus, Status, generation, metadata};
use crate::translate::backend_tls::{judge, winner};
use crate::translate::{Problem, Settings, Translation};
use crate::types::{BackendTlsPolicy, GROUP, ParentReference};

/// `BackendTLSPolicy.status` (Gateway API `PolicyStatus`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyStatus {
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The policy's standing as seen from one ancestor (a Gateway).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<crate::status::Condition>,
}

/// Status of every BackendTLSPolicy that one of our Gateways uses.
pub(crate) fn backend_tls_policies(
    index: &Index,
    settings: &Settings,
    translation: &Translation,
    now: &str,
) -> Vec<ObjectStatus> {
    let mut out = Vec::new();
    for policy in index.backend_tls_policies.values() {
        let ancestors = ancestors(index, translation, policy);
        if ancestors.is_empty() {
            continue;
        }
        let judged = judge(index, policy);
        let accepted = match judged.accepted {
            Err(p) => Err(p),
            Ok(()) => standing(index, policy),
        };
        let generation = generation(&policy.metadata);
        let ancestors = ancestors
            .into_iter()
            .map(|ancestor_ref| {
                let mut conds = Conditions::new(generation, now);
                conds.push_result(c::ACCEPTED, &accepted, reason::ACCEPTED, "accepted");
                conds.push_result(
                    c::RESOLVED_REFS,
                    &judged.resolved_refs,
                    reason::RESOLVED_REFS,
                    "all references resolved",
                );
                PolicyAncestorStatus {
                    ancestor_ref,
                    controller_name: settings.controller_name.clone(),
                    conditions: conds.list,
                }
            })
            .collect();
        out.push(ObjectStatus {
            api_version: crate::status::API_VERSION.into(),
            kind: BackendTlsPolicy::KIND.into(),
            metadata: metadata(&policy.metadata, true),
            status: Status::Policy(PolicyStatus { ancestors }),
        });
    }
    out
}

/// Whether the policy applies to at least one port of a Service it targets: TargetNotFound
/// when none of them exists, Conflicted when another policy wins everywhere.
fn standing(index: &Index, policy: &BackendTlsPolicy) -> Result<(), Problem> {
    let ns = policy.namespace();
    let mut found = false;
    for t in &policy.spec.target_refs {
        let Some(service) = index.services.get(&(ns.to_owned(), t.name.clone())) else {
            continue;
        };
        found = true;
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        for port in ports.into_iter().flatten() {
            let name = port.name.as_deref().unwrap_or_default();
            if winner(index, ns, &t.name, name).is_some_and(|w| std::ptr::eq(w, policy)) {
                return Ok(());
            }
        }
    }
    if found {
        Err(Problem::new(
            reason::CONFLICTED,
            "an older BackendTLSPolicy (or one naming the port) targets the same Service",
        ))
    } else {
        Err(Problem::new(reason::TARGET_NOT_FOUND, "no Service the policy targets exists"))
    }
}

/// Our Gateways whose accepted routes have a backendRef to a Service the policy targets.
fn ancestors(
    index: &Index,
    translation: &Translation,
    policy: &BackendTlsPolicy,
) -> BTreeSet<ParentReference> {
    let ns = policy.namespace();
    let targeted = |name: &str| {
        policy.spec.target_refs.iter().any(|t| {
            (t.group.is_empty() || t.group == "core") && t.kind == "Service" && t.name == name
        })
    };
    let mut out = BTreeSet::new();
    for (id, report) in &translation.report.routes {
        let Some(route) = index.http_routes.get(&(id.namespace.clone(), id.name.clone())) else {
            continue;
        };
        let uses = route.spec.rules.iter().flat_map(|r| &r.backend_refs).any(|b| {
            (b.group.is_empty() || b.group == "core")
                && b.kind == "Service"
                && b.namespace.as_deref().unwrap_or(&id.namespace) == ns
                && targeted(&b.name)
        });
        if !uses {
            continue;
        }
        for parent in report.parents.iter().filter(|p| p.accepted.is_ok()) {
            out.insert(ParentReference {
                group: GROUP.to_owned(),
                kind: "Gateway".to_owned(),
                namespace: parent.parent_ref.namespace.clone(),
                name: parent.parent_ref.name.clone(),
                section_name: None,
                port: None,
            });
        }
    }
    out
}
