//! Turns status documents into problem lines for `gatehouse check`.

use serde_json::Value;

/// Conditions that mean "this object (or part) is not served as written".
fn is_problem(condition: &Value) -> bool {
    let status = condition["status"].as_str().unwrap_or("");
    match condition["type"].as_str().unwrap_or("") {
        "Accepted" | "ResolvedRefs" => status == "False",
        "Conflicted" | "PartiallyInvalid" => status == "True",
        _ => false,
    }
}

fn describe(out: &mut Vec<String>, object: &str, part: &str, conditions: &Value) {
    for condition in conditions.as_array().into_iter().flatten().filter(|c| is_problem(c)) {
        out.push(format!(
            "{object}{part}: {}={} {}: {}",
            condition["type"].as_str().unwrap_or("?"),
            condition["status"].as_str().unwrap_or("?"),
            condition["reason"].as_str().unwrap_or("?"),
            condition["message"].as_str().unwrap_or(""),
        ));
    }
}

/// Every problem condition in the status documents, one line each, naming the object
/// (`Kind namespace/name`) and the field path of the part (`status.listeners[http]`).
pub fn from_status(objects: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for object in objects {
        let meta = &object["metadata"];
        let name = match meta["namespace"].as_str() {
            Some(namespace) => format!("{namespace}/{}", meta["name"].as_str().unwrap_or("?")),
            None => meta["name"].as_str().unwrap_or("?").to_owned(),
        };
        let id = format!("{} {name}", object["kind"].as_str().unwrap_or("?"));
        let status = &object["status"];
        describe(&mut out, &id, "", &status["conditions"]);
        for listener in status["listeners"].as_array().into_iter().flatten() {
            let part = format!(": spec.listeners[{}]", listener["name"].as_str().unwrap_or("?"));
            describe(&mut out, &id, &part, &listener["conditions"]);
        }
        for parent in status["parents"].as_array().into_iter().flatten() {
            let reference = &parent["parentRef"];
            let mut part = format!(
                ": spec.parentRefs[{}/{}",
                reference["namespace"].as_str().unwrap_or(""),
                reference["name"].as_str().unwrap_or("?")
            );
            if let Some(section) = reference["sectionName"].as_str() {
                part.push_str(&format!("/{section}"));
            }
            part.push(']');
            describe(&mut out, &id, &part, &parent["conditions"]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lists_false_acceptance_and_conflicts_with_their_place() {
        let objects = vec![
            json!({"kind": "Gateway", "metadata": {"namespace": "default", "name": "web"},
                   "status": {"conditions": [{"type": "Accepted", "status": "True"}],
                              "listeners": [{"name": "http", "conditions": [
                                  {"type": "Conflicted", "status": "True", "reason": "ProtocolConflict", "message": "m"}]}]}}),
            json!({"kind": "HTTPRoute", "metadata": {"namespace": "default", "name": "r"},
                   "status": {"parents": [{"parentRef": {"namespace": "default", "name": "web"},
                       "conditions": [{"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "svc"}]}]}}),
        ];
        let problems = from_status(&objects);
        assert_eq!(
            problems,
            vec![
                "Gateway default/web: spec.listeners[http]: Conflicted=True ProtocolConflict: m",
                "HTTPRoute default/r: spec.parentRefs[default/web]: ResolvedRefs=False BackendNotFound: svc",
            ]
        );
    }
}
