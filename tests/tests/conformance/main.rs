//! A conformance-style suite: for each Gateway API profile, a table of cases derived from the
//! Gateway API specification and from what the upstream conformance tests expect (our own
//! manifests and checks, not upstream's files), run against one real `gatehouse` process and
//! real peers on 127.0.0.1.
//!
//! Each profile is one `#[tokio::test]` that builds its world (manifests + peers), runs every
//! case, prints one line per case and `GATEWAY-<PROFILE>: N passed, M failed`, and fails when
//! a case failed. A case names the SupportedFeature(s) it proves; `docs/gateway-api-support.md`
//! cites cases as `conformance <PROFILE> <case>`.
//!
//! Run: `cargo build -p gatehouse && cargo test -p gatehouse-tests --test conformance -- --nocapture`.

mod backend_tls;
mod gateway;
mod grpc;
mod http;
mod l4;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What a case returns: `Err` says what was expected and what was seen.
pub type Outcome = Result<(), String>;

/// A case's check, run against the profile's world `W`.
pub type Check<W> = for<'a> fn(&'a W) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One row of a profile's table.
pub struct Case<W> {
    /// Short snake_case name, unique within the profile.
    pub name: &'static str,
    /// The SupportedFeature names this case proves (with the profile's other cases).
    pub features: &'static [&'static str],
    pub check: Check<W>,
}

impl<W> std::fmt::Debug for Case<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).field("features", &self.features).finish()
    }
}

/// Builds a [`Case`] from an `async fn(&W) -> Outcome`.
#[macro_export]
macro_rules! case {
    ($name:literal, [$($feature:literal),* $(,)?], $check:path) => {
        $crate::Case { name: $name, features: &[$($feature),*], check: |w| Box::pin($check(w)) }
    };
}

/// Fails the case with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Fails the case unless `left == right`, showing both and a context message.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {
        // A match keeps temporaries in `$left` alive through the comparison.
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err(format!("{}: expected {:?}, got {:?}", format!($($msg)+), right, left));
                }
            }
        }
    };
}

/// How long one case may take before it counts as failed.
const CASE_DEADLINE: Duration = Duration::from_secs(30);

/// Runs every case of `profile` against `world`, prints the tally and panics when one failed.
pub async fn run_profile<W: Sync>(profile: &str, world: &W, cases: &[Case<W>]) {
    let mut names = std::collections::BTreeSet::new();
    for case in cases {
        assert!(names.insert(case.name), "{profile}: case {} listed twice", case.name);
        assert!(!case.features.is_empty(), "{profile}: case {} proves no feature", case.name);
    }
    let mut failed = Vec::new();
    for case in cases {
        let started = Instant::now();
        let outcome = tokio::time::timeout(CASE_DEADLINE, (case.check)(world))
            .await
            .unwrap_or_else(|_| Err(format!("no outcome within {CASE_DEADLINE:?}")));
        let took = started.elapsed().as_millis();
        match outcome {
            Ok(()) => println!("{profile} {:<48} ok    ({took} ms) {:?}", case.name, case.features),
            Err(why) => {
                println!(
                    "{profile} {:<48} FAIL  ({took} ms) {:?}\n    {why}",
                    case.name, case.features
                );
                failed.push(case.name);
            }
        }
    }
    println!("{profile}: {} passed, {} failed", cases.len() - failed.len(), failed.len());
    assert!(failed.is_empty(), "{profile}: failed cases: {failed:?}");
}

/// Our GatewayClass, `gatehouse`, ending with a document separator.
pub const GATEWAY_CLASS: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: gatehouse
spec:
  controllerName: gatehouse.dev/gateway-controller
---
"#;

/// The config file for Gateway API mode with manifests in `manifests/`.
pub const GATEWAY_API_CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
shutdown_grace_ms = 2000
[gateway_api]
manifests = ["manifests"]
"#;

/// A Service (port 80, unnamed) with one ready EndpointSlice at 127.0.0.1:`port`.
pub fn service(namespace: &str, name: &str, port: u16) -> String {
    gatehouse_tests::service_manifest(namespace, name, port, None)
}

/// A Namespace with labels (for `allowedRoutes` selectors).
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> String {
    let mut out = format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
    if !labels.is_empty() {
        out.push_str("  labels:\n");
        for (k, v) in labels {
            out.push_str(&format!("    {k}: {v}\n"));
        }
    }
    out
}

/// The object `kind` `namespace/name` in a `/status` document (namespace "" for
/// cluster-scoped kinds).
pub fn object<'a>(
    status: &'a Value,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<&'a Value, String> {
    status["objects"]
        .as_array()
        .and_then(|objects| {
            objects.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (o["metadata"]["namespace"] == namespace
                        || (namespace.is_empty() && o["metadata"]["namespace"].is_null()))
            })
        })
        .ok_or_else(|| format!("no {kind} {namespace}/{name} in /status"))
}

/// `(status, reason)` of the condition `kind` in a conditions array.
pub fn condition(conditions: &Value, kind: &str) -> Result<(String, String), String> {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("status"), s("reason"))
        })
        .ok_or_else(|| format!("no {kind} condition in {conditions}"))
}

/// The conditions of a route's status entry for the parent named `parent` (a Gateway, or a
/// ListenerSet) with the given `sectionName` (None: the entry without one).
pub fn route_parent_conditions<'a>(
    route: &'a Value,
    parent: &str,
    section: Option<&str>,
) -> Result<&'a Value, String> {
    route["status"]["parents"]
        .as_array()
        .and_then(|parents| {
            parents.iter().find(|p| {
                p["parentRef"]["name"] == parent
                    && p["parentRef"]["sectionName"].as_str() == section
            })
        })
        .map(|p| &p["conditions"])
        .ok_or_else(|| format!("no status for parent {parent} {section:?} in {}", route["status"]))
}

/// Checks a route's `(condition, status, reason)` for one parent.
pub fn expect_route_condition(
    status: &Value,
    kind: &str,
    route: (&str, &str),
    parent: (&str, Option<&str>),
    expected: (&str, &str, &str),
) -> Outcome {
    let object = object(status, kind, route.0, route.1)?;
    let conditions = route_parent_conditions(object, parent.0, parent.1)?;
    let (got_status, got_reason) = condition(conditions, expected.0)?;
    ensure_eq!(
        (got_status.as_str(), got_reason.as_str()),
        (expected.1, expected.2),
        "{kind} {}/{} condition {}",
        route.0,
        route.1,
        expected.0
    );
    Ok(())
}
