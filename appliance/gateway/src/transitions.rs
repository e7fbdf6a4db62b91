//! Keeps `lastTransitionTime` stable: a condition whose status did not change since the last
//! published status keeps the time it last changed, as the Gateway API requires.

use std::collections::HashMap;

use serde_json::Value;

/// Where a condition lives: object identity, the part (listener, parent) and the condition type.
type Key = (String, String, String);

fn object_key(object: &Value) -> String {
    format!(
        "{}|{}|{}|{}",
        object["apiVersion"].as_str().unwrap_or(""),
        object["kind"].as_str().unwrap_or(""),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or(""),
    )
}

fn listener_part(listener: &Value) -> String {
    format!("listener:{}", listener["name"].as_str().unwrap_or(""))
}

/// Several controllers may report on one parentRef (the cluster's status holds them all).
fn parent_part(parent: &Value) -> String {
    format!("parent:{}:{}", parent["controllerName"].as_str().unwrap_or(""), parent["parentRef"])
}

/// A policy's entry per ancestor and controller (BackendTLSPolicy `status.ancestors`).
fn ancestor_part(ancestor: &Value) -> String {
    format!(
        "ancestor:{}:{}",
        ancestor["controllerName"].as_str().unwrap_or(""),
        ancestor["ancestorRef"]
    )
}

/// Every condition list of an object with a name for its part.
fn condition_lists(status: &Value) -> Vec<(String, &Value)> {
    let mut lists = vec![(String::new(), &status["conditions"])];
    for listener in status["listeners"].as_array().into_iter().flatten() {
        lists.push((listener_part(listener), &listener["conditions"]));
    }
    for parent in status["parents"].as_array().into_iter().flatten() {
        lists.push((parent_part(parent), &parent["conditions"]));
    }
    for ancestor in status["ancestors"].as_array().into_iter().flatten() {
        lists.push((ancestor_part(ancestor), &ancestor["conditions"]));
    }
    lists
}

fn index(objects: &[Value]) -> HashMap<Key, (String, String)> {
    let mut out = HashMap::new();
    for object in objects {
        let id = object_key(object);
        for (part, conditions) in condition_lists(&object["status"]) {
            for condition in conditions.as_array().into_iter().flatten() {
                let (Some(kind), Some(status), Some(time)) = (
                    condition["type"].as_str(),
                    condition["status"].as_str(),
                    condition["lastTransitionTime"].as_str(),
                ) else {
                    continue;
                };
                out.insert(
                    (id.clone(), part.clone(), kind.to_owned()),
                    (status.to_owned(), time.to_owned()),
                );
            }
        }
    }
    out
}

/// Copies `lastTransitionTime` from `previous` into `current` for every condition whose
/// status is unchanged.
pub fn preserve(previous: &[Value], current: &mut [Value]) {
    let before = index(previous);
    if before.is_empty() {
        return;
    }
    for object in current.iter_mut() {
        let id = object_key(object);
        // Only existing lists are touched: indexing a missing key mutably would add nulls.
        let Some(status) = object.get_mut("status") else { continue };
        let restamp = |part: &str, conditions: Option<&mut Value>| {
            for condition in conditions.and_then(Value::as_array_mut).into_iter().flatten() {
                let Some(kind) = condition["type"].as_str() else { continue };
                let key = (id.clone(), part.to_owned(), kind.to_owned());
                if let Some((status, time)) = before.get(&key)
                    && condition["status"].as_str() == Some(status.as_str())
                {
                    condition["lastTransitionTime"] = Value::String(time.clone());
                }
            }
        };
        restamp("", status.get_mut("conditions"));
        for listener in
            status.get_mut("listeners").and_then(Value::as_array_mut).into_iter().flatten()
        {
            restamp(&listener_part(listener), listener.get_mut("conditions"));
        }
        for parent in status.get_mut("parents").and_then(Value::as_array_mut).into_iter().flatten()
        {
            restamp(&parent_part(parent), parent.get_mut("conditions"));
        }
        for ancestor in
            status.get_mut("ancestors").and_then(Value::as_array_mut).into_iter().flatten()
        {
            restamp(&ancestor_part(ancestor), ancestor.get_mut("conditions"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gateway(accepted: &str, listener: &str, time: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "default", "name": "web"},
            "status": {
                "conditions": [{"type": "Accepted", "status": accepted, "lastTransitionTime": time}],
                "listeners": [{"name": "http", "conditions": [
                    {"type": "Programmed", "status": listener, "lastTransitionTime": time}]}],
            },
        })
    }

    fn route(resolved: &str, time: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"namespace": "default", "name": "r"},
            "status": {"parents": [{"parentRef": {"name": "web"}, "conditions": [
                {"type": "ResolvedRefs", "status": resolved, "lastTransitionTime": time}]}]},
        })
    }

    #[test]
    fn unchanged_conditions_keep_their_time_and_changed_ones_move() {
        let previous = vec![gateway("True", "True", "t1"), route("True", "t1")];
        let mut current = vec![gateway("True", "False", "t2"), route("False", "t2")];
        preserve(&previous, &mut current);
        assert_eq!(current[0]["status"]["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(
            current[0]["status"]["listeners"][0]["conditions"][0]["lastTransitionTime"],
            "t2"
        );
        assert_eq!(current[1]["status"]["parents"][0]["conditions"][0]["lastTransitionTime"], "t2");

        assert!(current[1]["status"].get("conditions").is_none(), "no null lists added");

        let mut again = vec![route("False", "t3")];
        preserve(&current, &mut again);
        assert_eq!(again[0]["status"]["parents"][0]["conditions"][0]["lastTransitionTime"], "t2");
    }
}
