//! Status for the TOML file's native gateways and routes, in the same shape as Gateway API
//! status so one tool reads both (`apiVersion: gatehouse.dev/v1alpha1`, namespace `toml`).

use std::collections::BTreeMap;

use gatehouse_model::{DataPlaneReport, Desired, ListenerProblemKind};
use serde_json::{Value, json};

const API_VERSION: &str = "gatehouse.dev/v1alpha1";

fn condition(kind: &str, ok: bool, reason: &str, message: &str, generation: u64) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    })
}

/// Sets `lastTransitionTime` on every condition below `value` (the caller keeps it stable
/// across unchanged reloads).
fn stamp(value: &mut Value, now: &str) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "conditions" {
                    for condition in child.as_array_mut().into_iter().flatten() {
                        condition["lastTransitionTime"] = Value::String(now.to_owned());
                    }
                } else {
                    stamp(child, now);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| stamp(item, now)),
        _ => {}
    }
}

/// Status documents for every native gateway and route.
pub fn objects(
    native: &Desired,
    report: &DataPlaneReport,
    generation: u64,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let mut out = build(native, report, generation);
    let now = now.round(jiff::Unit::Second).map_or_else(|_| now.to_string(), |t| t.to_string());
    out.iter_mut().for_each(|object| stamp(object, &now));
    out
}

fn build(native: &Desired, report: &DataPlaneReport, generation: u64) -> Vec<Value> {
    let mut gateways: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut gateway_ok: BTreeMap<&str, bool> = BTreeMap::new();
    for listener in &native.listeners {
        let gateway = listener.id.gateway.name.as_str();
        let problems: Vec<_> =
            report.listener_problems.iter().filter(|p| p.listener == listener.id).collect();
        let attached =
            native.http_routes.iter().filter(|r| r.listeners.contains(&listener.id)).count();
        let mut conditions = Vec::new();
        let find = |kind: ListenerProblemKind| problems.iter().find(|p| p.kind == kind);
        let port = find(ListenerProblemKind::PortUnavailable);
        conditions.push(match port {
            Some(p) => condition("Accepted", false, "PortUnavailable", &p.message, generation),
            None => condition("Accepted", true, "Accepted", "", generation),
        });
        let conflict =
            find(ListenerProblemKind::ProtocolConflict).map(|p| ("ProtocolConflict", p)).or_else(
                || find(ListenerProblemKind::HostnameConflict).map(|p| ("HostnameConflict", p)),
            );
        conditions.push(match conflict {
            Some((reason, p)) => json!({
                "type": "Conflicted", "status": "True", "reason": reason,
                "message": p.message, "observedGeneration": generation,
            }),
            None => json!({
                "type": "Conflicted", "status": "False", "reason": "NoConflicts",
                "message": "", "observedGeneration": generation,
            }),
        });
        let certificate = find(ListenerProblemKind::InvalidCertificate);
        conditions.push(match certificate {
            Some(p) => {
                condition("ResolvedRefs", false, "InvalidCertificateRef", &p.message, generation)
            }
            None => condition("ResolvedRefs", true, "ResolvedRefs", "", generation),
        });
        let programmed = problems.is_empty();
        conditions.push(if programmed {
            condition("Programmed", true, "Programmed", "", generation)
        } else {
            condition("Programmed", false, "Invalid", "the listener is not served", generation)
        });
        *gateway_ok.entry(gateway).or_insert(true) &= programmed;
        gateways.entry(gateway).or_default().push(json!({
            "name": listener.id.name,
            "attachedRoutes": attached,
            "supportedKinds": [{"group": API_VERSION.split('/').next(), "kind": "HTTPRoute"}],
            "conditions": conditions,
        }));
    }

    let mut out = Vec::new();
    for (name, listeners) in gateways {
        let ok = gateway_ok.get(name).copied().unwrap_or(false);
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "Gateway",
            "metadata": {"namespace": gatehouse_config::NAMESPACE, "name": name, "generation": generation},
            "status": {
                "conditions": [
                    condition("Accepted", true, "Accepted", "", generation),
                    if ok {
                        condition("Programmed", true, "Programmed", "", generation)
                    } else {
                        condition("Programmed", false, "Invalid", "some listeners are not served", generation)
                    },
                ],
                "listeners": listeners,
            },
        }));
    }
    for route in &native.http_routes {
        let mut parents: BTreeMap<(&str, &str), ()> = BTreeMap::new();
        for listener in &route.listeners {
            parents.insert((listener.gateway.name.as_str(), listener.name.as_str()), ());
        }
        let parents: Vec<Value> = parents
            .keys()
            .map(|(gateway, listener)| {
                json!({
                    "parentRef": {"kind": "Gateway", "name": gateway, "sectionName": listener},
                    "conditions": [
                        condition("Accepted", true, "Accepted", "", generation),
                        condition("ResolvedRefs", true, "ResolvedRefs", "", generation),
                    ],
                })
            })
            .collect();
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "HTTPRoute",
            "metadata": {"namespace": route.id.namespace, "name": route.id.name, "generation": generation},
            "status": {"parents": parents},
        }));
    }
    out
}
