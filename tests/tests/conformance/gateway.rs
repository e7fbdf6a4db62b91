//! GATEWAY-HTTP, Gateway side: ListenerSets, static and empty addresses, port 8080, and the
//! HTTPRoute rows that depend on listeners (destination port matching) or on time (retry
//! backoff, as a lower bound). Cases follow the spec and what the upstream conformance tests
//! check (our own manifests).

use std::time::Duration;

use gatehouse_tests::{Appliance, Client, EchoBackend, Reply, ScriptedBackend, Step, free_port};
use serde_json::Value;

use crate::{
    Case, GATEWAY_API_CONFIG, GATEWAY_CLASS, Outcome, case, condition, ensure, ensure_eq,
    expect_route_condition, namespace, object, run_profile, service,
};

/// A loopback address no other test uses, for the Gateway on port 8080.
const STATIC_IP: &str = "127.0.80.81";

/// One appliance serving every case's manifests.
struct World {
    gh: Appliance,
    /// Gateway `edge`'s catch-all listener (also used by ListenerSet listeners).
    edge: u16,
    /// The port of ListenerSet `team/apps`'s own listener.
    set_port: u16,
    /// Gateway `ports`: two listeners sharing a hostname.
    first: u16,
    second: u16,
    /// Gateway `empty`: an address left for us to choose.
    empty: u16,
    /// Gateway `retry`'s listener, and the backend that answers 503 once.
    retry: u16,
    flaky: ScriptedBackend,
    _backends: Vec<EchoBackend>,
}

impl World {
    async fn get(&self, ip: &str, port: u16, host: &str, path: &str) -> Result<Reply, String> {
        Client::http1().get_host(&format!("http://{ip}:{port}{path}"), host).await
    }

    /// Which backend answers (or the status code when none does).
    async fn answered_by(&self, port: u16, host: &str, path: &str) -> Result<String, String> {
        let reply = self.get("127.0.0.1", port, host, path).await?;
        Ok(match reply.backend() {
            Some(backend) if reply.status == 200 => backend.to_owned(),
            _ => reply.status.to_string(),
        })
    }
}

fn gateways(w: &Ports) -> String {
    let Ports { edge, first, second, empty, retry, .. } = *w;
    format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: edge, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  allowedListeners:
    namespaces:
      from: Selector
      selector: {{matchLabels: {{listeners: "yes"}}}}
  listeners:
  - name: http
    port: {edge}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: static, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  addresses:
  - {{type: IPAddress, value: "{STATIC_IP}"}}
  - {{type: IPAddress, value: "224.0.0.9"}}
  listeners:
  - {{name: http, port: 8080, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: empty, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: ""}}]
  listeners:
  - {{name: http, port: {empty}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: ports, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: first, port: {first}, protocol: HTTP, hostname: dp.example}}
  - {{name: second, port: {second}, protocol: HTTP, hostname: dp.example}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: retry, namespace: infra}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {retry}, protocol: HTTP}}
"#
    )
}

fn listener_sets(w: &Ports) -> String {
    let Ports { edge, set_port, .. } = *w;
    let set = |ns: &str, name: &str, created: &str, listeners: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: ListenerSet\nmetadata: {{name: {name}, namespace: {ns}, creationTimestamp: \"{created}\"}}\nspec:\n  parentRef: {{name: edge, namespace: infra}}\n  listeners:\n{listeners}"
        )
    };
    let mut out = String::new();
    out.push_str(&set(
        "team",
        "apps",
        "2026-01-01T00:00:00Z",
        &format!(
            "  - {{name: app, port: {set_port}, protocol: HTTP, hostname: app.ls.example}}\n  - {{name: shared, port: {edge}, protocol: HTTP, hostname: shared.ls.example}}\n"
        ),
    ));
    // Newer sets whose only listener is not distinct from the Gateway's.
    out.push_str(&set(
        "team",
        "clash",
        "2026-02-01T00:00:00Z",
        &format!("  - {{name: again, port: {edge}, protocol: HTTP}}\n"),
    ));
    out.push_str(&set(
        "team",
        "proto",
        "2026-03-01T00:00:00Z",
        &format!(
            "  - name: tls\n    port: {edge}\n    protocol: HTTPS\n    hostname: tls.ls.example\n    tls: {{certificateRefs: [{{name: none}}]}}\n"
        ),
    ));
    out.push_str(&set(
        "outsider",
        "denied",
        "2026-01-01T00:00:00Z",
        &format!("  - {{name: b, port: {edge}, protocol: HTTP, hostname: denied.ls.example}}\n"),
    ));
    out
}

fn route(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

fn routes(w: &Ports) -> String {
    let to_set = |set: &str, section: &str| {
        format!(
            "  parentRefs: [{{group: gateway.networking.k8s.io, kind: ListenerSet, name: {set}{section}}}]\n"
        )
    };
    let mut out = String::new();
    out.push_str(&route(
        "team",
        "app",
        &format!(
            "{}  rules:\n  - backendRefs: [{{name: v1, port: 80}}]\n",
            to_set("apps", ", sectionName: app")
        ),
    ));
    out.push_str(&route(
        "team",
        "whole-set",
        &format!(
            "{}  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /whole}}}}]\n    backendRefs: [{{name: v2, port: 80}}]\n",
            to_set("apps", "")
        ),
    ));
    // A Gateway parentRef reaches the Gateway's own listeners only.
    out.push_str(&route(
        "team",
        "gateway-only",
        "  parentRefs: [{name: edge, namespace: infra}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /gateway-only}}]\n    backendRefs: [{name: v3, port: 80}]\n",
    ));
    out.push_str(&route(
        "outsider",
        "denied",
        &format!("{}  rules:\n  - backendRefs: [{{name: v1, port: 80}}]\n", to_set("denied", "")),
    ));
    out.push_str(&route(
        "infra",
        "static",
        "  parentRefs: [{name: static}]\n  rules:\n  - backendRefs: [{name: v1, port: 80}]\n",
    ));
    out.push_str(&route(
        "infra",
        "empty",
        "  parentRefs: [{name: empty}]\n  rules:\n  - backendRefs: [{name: v2, port: 80}]\n",
    ));
    for (name, port, backend) in
        [("dp-first", w.first, "v1"), ("dp-second", w.second, "v2"), ("dp-none", 1, "v3")]
    {
        out.push_str(&route(
            "infra",
            name,
            &format!("  parentRefs: [{{name: ports, port: {port}}}]\n  hostnames: [dp.example]\n  rules:\n  - backendRefs: [{{name: {backend}, port: 80}}]\n"),
        ));
    }
    out.push_str(&route(
        "infra",
        "retry",
        "  parentRefs: [{name: retry}]\n  rules:\n  - retry: {codes: [503], attempts: 1, backoff: 300ms}\n    backendRefs: [{name: flaky, port: 80}]\n",
    ));
    out
}

/// The ports the manifests are written for.
#[derive(Clone, Copy)]
struct Ports {
    edge: u16,
    set_port: u16,
    first: u16,
    second: u16,
    empty: u16,
    retry: u16,
}

async fn world() -> World {
    let mut backends = Vec::new();
    for name in ["v1", "v2", "v3"] {
        backends.push(EchoBackend::start(name).await);
    }
    let flaky = ScriptedBackend::start("flaky", vec![Step::Status(503)]).await;
    let ports = Ports {
        edge: free_port(),
        set_port: free_port(),
        first: free_port(),
        second: free_port(),
        empty: free_port(),
        retry: free_port(),
    };
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateways(&ports));
    yaml.push_str(&namespace("infra", &[]));
    yaml.push_str(&namespace("team", &[("listeners", "\"yes\"")]));
    yaml.push_str(&namespace("outsider", &[]));
    for ns in ["infra", "team", "outsider"] {
        for b in &backends {
            yaml.push_str(&service(ns, &b.name, b.port()));
        }
    }
    yaml.push_str(&service("infra", "flaky", flaky.port()));
    yaml.push_str(&listener_sets(&ports));
    yaml.push_str(&routes(&ports));
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/gateway.yaml", &yaml)]).await;
    World {
        gh,
        edge: ports.edge,
        set_port: ports.set_port,
        first: ports.first,
        second: ports.second,
        empty: ports.empty,
        retry: ports.retry,
        flaky,
        _backends: backends,
    }
}

/// `(status, reason)` of condition `kind` of object `kind`/`namespace`/`name`.
fn object_condition(
    status: &Value,
    kind: &str,
    (namespace, name): (&str, &str),
    condition_type: &str,
) -> Result<(String, String), String> {
    condition(&object(status, kind, namespace, name)?["status"]["conditions"], condition_type)
}

fn pair(s: &str, r: &str) -> (String, String) {
    (s.to_owned(), r.to_owned())
}

async fn listener_set_serves_from_another_namespace(w: &World) -> Outcome {
    ensure_eq!(w.answered_by(w.set_port, "app.ls.example", "/").await?, "v1", "set's own port");
    ensure_eq!(
        w.answered_by(w.edge, "shared.ls.example", "/whole/x").await?,
        "v2",
        "set listener on the Gateway's port"
    );
    ensure_eq!(w.answered_by(w.set_port, "app.ls.example", "/whole").await?, "v2", "whole set");
    let status = w.gh.status().await;
    let gateway = object(&status, "Gateway", "infra", "edge")?;
    ensure_eq!(gateway["status"]["attachedListenerSets"].as_u64(), Some(1), "attachedListenerSets");
    ensure_eq!(
        object_condition(&status, "Gateway", ("infra", "edge"), "Programmed")?,
        pair("True", "Programmed"),
        "Gateway Programmed"
    );
    Ok(())
}

async fn listener_set_status(w: &World) -> Outcome {
    let status = w.gh.status().await;
    let set = ("team", "apps");
    ensure_eq!(
        object_condition(&status, "ListenerSet", set, "Accepted")?,
        pair("True", "Accepted"),
        "Accepted"
    );
    ensure_eq!(
        object_condition(&status, "ListenerSet", set, "Programmed")?,
        pair("True", "Programmed"),
        "Programmed"
    );
    let apps = object(&status, "ListenerSet", "team", "apps")?;
    let listeners = apps["status"]["listeners"].as_array().cloned().unwrap_or_default();
    for (name, routes) in [("app", 2), ("shared", 1)] {
        let l = listeners
            .iter()
            .find(|l| l["name"] == name)
            .ok_or(format!("no listener {name} in {}", apps["status"]))?;
        ensure_eq!(l["attachedRoutes"].as_u64(), Some(routes), "{name}.attachedRoutes");
        for kind in ["Accepted", "ResolvedRefs", "Programmed"] {
            ensure_eq!(condition(&l["conditions"], kind)?.0, "True", "{name} {kind}");
        }
        ensure_eq!(condition(&l["conditions"], "Conflicted")?.0, "False", "{name} Conflicted");
        ensure!(l["supportedKinds"].to_string().contains("HTTPRoute"), "{name} supportedKinds");
    }
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("team", "app"),
        ("apps", Some("app")),
        ("Accepted", "True", "Accepted"),
    )
}

async fn listener_set_not_allowed(w: &World) -> Outcome {
    let status = w.gh.status().await;
    let set = ("outsider", "denied");
    for kind in ["Accepted", "Programmed"] {
        ensure_eq!(
            object_condition(&status, "ListenerSet", set, kind)?,
            pair("False", "NotAllowed"),
            "denied {kind}"
        );
    }
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("outsider", "denied"),
        ("denied", None),
        ("Accepted", "False", "NotAllowedByListeners"),
    )?;
    ensure_eq!(w.answered_by(w.edge, "denied.ls.example", "/").await?, "404", "denied host");
    Ok(())
}

async fn listener_set_conflicts_lose_to_earlier_listeners(w: &World) -> Outcome {
    let status = w.gh.status().await;
    for (set, reason) in [("clash", "HostnameConflict"), ("proto", "ProtocolConflict")] {
        ensure_eq!(
            object_condition(&status, "ListenerSet", ("team", set), "Accepted")?,
            pair("False", "ListenersNotValid"),
            "{set} Accepted"
        );
        let object = object(&status, "ListenerSet", "team", set)?;
        let l = &object["status"]["listeners"][0];
        ensure_eq!(
            condition(&l["conditions"], "Conflicted")?,
            pair("True", reason),
            "{set} Conflicted"
        );
        ensure_eq!(
            condition(&l["conditions"], "Accepted")?,
            pair("False", reason),
            "{set} Accepted"
        );
        ensure_eq!(condition(&l["conditions"], "Programmed")?.0, "False", "{set} Programmed");
    }
    // The Gateway's own listener keeps serving its routes.
    ensure_eq!(w.answered_by(w.edge, "any.example", "/gateway-only").await?, "v3", "Gateway route");
    Ok(())
}

async fn routes_attach_only_where_their_parent_ref_points(w: &World) -> Outcome {
    // The Gateway parentRef does not reach the set's listeners: on the set's port the
    // set's route (any path) answers.
    ensure_eq!(
        w.answered_by(w.set_port, "app.ls.example", "/gateway-only").await?,
        "v1",
        "Gateway route on a ListenerSet listener"
    );
    let status = w.gh.status().await;
    let edge = object(&status, "Gateway", "infra", "edge")?;
    ensure_eq!(edge["status"]["listeners"][0]["attachedRoutes"].as_u64(), Some(1), "edge.http");
    Ok(())
}

async fn port_8080_on_a_static_address(w: &World) -> Outcome {
    let reply = w.get(STATIC_IP, 8080, "static.example", "/").await?;
    ensure_eq!((reply.status, reply.backend()), (200, Some("v1")), "GET {STATIC_IP}:8080");
    let status = w.gh.status().await;
    let gateway = object(&status, "Gateway", "infra", "static")?;
    let addresses: Vec<&str> = gateway["status"]["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|a| a["value"].as_str()).collect())
        .unwrap_or_default();
    ensure_eq!(addresses, [STATIC_IP], "status.addresses");
    Ok(())
}

async fn unusable_static_address(w: &World) -> Outcome {
    let status = w.gh.status().await;
    let gw = ("infra", "static");
    ensure_eq!(
        object_condition(&status, "Gateway", gw, "Accepted")?,
        pair("True", "Accepted"),
        "Accepted"
    );
    ensure_eq!(
        object_condition(&status, "Gateway", gw, "Programmed")?,
        pair("False", "AddressNotUsable"),
        "Programmed"
    );
    Ok(())
}

async fn empty_address_is_assigned(w: &World) -> Outcome {
    let status = w.gh.status().await;
    let gateway = object(&status, "Gateway", "infra", "empty")?;
    let addresses = gateway["status"]["addresses"].as_array().cloned().unwrap_or_default();
    ensure_eq!(addresses.len(), 1, "status.addresses {addresses:?}");
    ensure_eq!(addresses[0]["type"].as_str(), Some("IPAddress"), "address type");
    let ip = addresses[0]["value"].as_str().unwrap_or_default().to_owned();
    ensure!(!ip.is_empty(), "an address was assigned");
    ensure_eq!(
        object_condition(&status, "Gateway", ("infra", "empty"), "Programmed")?,
        pair("True", "Programmed"),
        "Programmed"
    );
    let reply = w.get(&ip, w.empty, "empty.example", "/").await?;
    ensure_eq!((reply.status, reply.backend()), (200, Some("v2")), "GET {ip}:{}", w.empty);
    Ok(())
}

async fn destination_port_matching(w: &World) -> Outcome {
    ensure_eq!(w.answered_by(w.first, "dp.example", "/").await?, "v1", "first port");
    ensure_eq!(w.answered_by(w.second, "dp.example", "/").await?, "v2", "second port");
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "HTTPRoute",
        ("infra", "dp-none"),
        ("ports", None),
        ("Accepted", "False", "NoMatchingParent"),
    )?;
    let gateway = object(&status, "Gateway", "infra", "ports")?;
    for l in gateway["status"]["listeners"].as_array().cloned().unwrap_or_default() {
        ensure_eq!(l["attachedRoutes"].as_u64(), Some(1), "{} attachedRoutes", l["name"]);
    }
    Ok(())
}

async fn retry_waits_the_backoff(w: &World) -> Outcome {
    ensure_eq!(w.answered_by(w.retry, "retry.example", "/").await?, "flaky", "retried");
    let seen = w.flaky.requests().await;
    ensure_eq!(seen.len(), 2, "tries");
    let pause = seen[1].at.duration_since(seen[0].at);
    ensure!(pause >= Duration::from_millis(300), "retried after {pause:?}, before the backoff");
    Ok(())
}

#[tokio::test]
async fn gateway_http_gateway_profile() {
    let world = world().await;
    let cases: &[Case<World>] = &[
        case!(
            "listener_set_serves_from_another_namespace",
            ["ListenerSet"],
            listener_set_serves_from_another_namespace
        ),
        case!("listener_set_status", ["ListenerSet"], listener_set_status),
        case!("listener_set_not_allowed", ["ListenerSet"], listener_set_not_allowed),
        case!(
            "listener_set_conflicts_lose_to_earlier_listeners",
            ["ListenerSet"],
            listener_set_conflicts_lose_to_earlier_listeners
        ),
        case!(
            "routes_attach_only_where_their_parent_ref_points",
            ["ListenerSet"],
            routes_attach_only_where_their_parent_ref_points
        ),
        case!(
            "port_8080_on_a_static_address",
            ["GatewayPort8080", "GatewayStaticAddresses"],
            port_8080_on_a_static_address
        ),
        case!("unusable_static_address", ["GatewayStaticAddresses"], unusable_static_address),
        case!("empty_address_is_assigned", ["GatewayAddressEmpty"], empty_address_is_assigned),
        case!(
            "destination_port_matching",
            ["HTTPRouteDestinationPortMatching"],
            destination_port_matching
        ),
        case!("retry_waits_the_backoff", ["HTTPRouteRetryBackoff"], retry_waits_the_backoff),
    ];
    run_profile("GATEWAY-HTTP-GATEWAY", &world, cases).await;
}
