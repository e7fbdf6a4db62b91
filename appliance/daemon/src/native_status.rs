//! Status for the TOML file's native gateways and routes, in the same shape as Gateway API
//! status so one tool reads both (`apiVersion: gatehouse.dev/v1alpha1`, namespace `toml`).

use std::collections::BTreeMap;

use gatehouse_model::{DataPlaneReport, Desired};
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
    let mut out = build(native, report, generation, now);
    let now = now.round(jiff::Unit::Second).map_or_else(|_| now.to_string(), |t| t.to_string());
    out.iter_mut().for_each(|object| stamp(object, &now));
    out
}

fn build(
    native: &Desired,
    report: &DataPlaneReport,
    generation: u64,
    now: jiff::Timestamp,
) -> Vec<Value> {
    let mut gateways: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut gateway_ok: BTreeMap<&str, bool> = BTreeMap::new();
    let mut addresses: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for listener in &native.listeners {
        let gateway = listener.id.gateway.name.as_str();
        addresses.entry(gateway).or_insert_with(|| {
            let ips = listener.addresses.iter();
            ips.map(|ip| json!({"type": "IPAddress", "value": ip.to_string()})).collect()
        });
        let attached =
            native.http_routes.iter().filter(|r| r.listeners.contains(&listener.id)).count();
        let attached = u32::try_from(attached).unwrap_or(u32::MAX);
        // The same conditions and reasons as a Gateway API listener: one mapping, in the
        // gateway crate.
        let (status, programmed) =
            gatehouse_gateway::native_listener_status(listener, attached, report, generation, now);
        *gateway_ok.entry(gateway).or_insert(true) &= programmed;
        gateways.entry(gateway).or_default().push(serde_json::to_value(status).unwrap_or_default());
    }

    let unaddressed: Vec<&str> = native
        .listeners
        .iter()
        .filter(|l| l.addresses.is_empty())
        .map(|l| l.id.gateway.name.as_str())
        .collect();
    let mut out = Vec::new();
    for (name, listeners) in gateways {
        let ok = gateway_ok.get(name).copied().unwrap_or(false);
        out.push(json!({
            "apiVersion": API_VERSION,
            "kind": "Gateway",
            "metadata": {"namespace": gatehouse_config::NAMESPACE, "name": name, "generation": generation},
            "status": {
                "addresses": addresses.remove(name).unwrap_or_default(),
                "conditions": [
                    condition("Accepted", true, "Accepted", "", generation),
                    if unaddressed.contains(&name) {
                        // LB-IPAM had no address for it: the reason is in last_reload.warnings.
                        condition("Programmed", false, "AddressNotAssigned", "no address could be assigned", generation)
                    } else if ok {
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
