//! The Gateway API source's side of LB-IPAM: which of its objects need addresses (Gateways
//! of our classes, Services of type LoadBalancer), and the Services' status.
//!
//! Pure: the daemon collects these requests with the other sources', runs
//! [`gatehouse_ipam::allocate`] once, and passes the [`Allocation`] to
//! [`crate::translate_with_addresses`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use gatehouse_ipam::{
    Allocation, Failure, Families, Family, IPS_ANNOTATION, Labels, Port, Request,
    SHARING_CROSS_NAMESPACE_ANNOTATION, SHARING_KEY_ANNOTATION, Sharing, Transport,
};
use gatehouse_model::ObjectId;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::index::{Index, NAMESPACE_NAME_LABEL};
use crate::status::{Condition, ObjectStatus, Status, StatusMetadata};
use crate::translate::Settings;

/// Condition type on a LoadBalancer Service's status: whether it got its addresses.
pub const ADDRESS_ASSIGNED: &str = "gatehouse.dev/AddressAssigned";

/// Requests of every Gateway of our classes and every Service of type LoadBalancer without
/// a `loadBalancerClass`.
pub fn requests(index: &Index, settings: &Settings) -> Vec<Request> {
    let mut out = Vec::new();
    for gateway in index.gateways.values() {
        let ours = index
            .gateway_classes
            .get(&gateway.spec.gateway_class_name)
            .is_some_and(|c| c.spec.controller_name == settings.controller_name);
        if !ours {
            continue;
        }
        let owner = ObjectId::new("Gateway", gateway.namespace(), gateway.name());
        let mut request = base_request(index, owner, &gateway.metadata);
        request.requested = gateway
            .spec
            .addresses
            .iter()
            .filter(|a| a.kind == "IPAddress")
            .filter_map(|a| a.value.parse::<IpAddr>().ok())
            .collect();
        request.ports = gateway.spec.listeners.iter().map(|l| Port::tcp(l.port)).collect();
        // ListenerSets' listeners bind the Gateway's addresses too.
        let sets = index.listener_sets.values().filter(|s| {
            let p = &s.spec.parent_ref;
            p.kind == "Gateway"
                && p.name == gateway.name()
                && p.namespace.as_deref().unwrap_or(s.namespace()) == gateway.namespace()
        });
        for listener in sets.flat_map(|s| &s.spec.listeners) {
            if !request.ports.contains(&Port::tcp(listener.port)) {
                request.ports.push(Port::tcp(listener.port));
            }
        }
        out.push(request);
    }
    for service in index.services.values() {
        if let Some(request) = service_request(index, service) {
            out.push(request);
        }
    }
    out
}

fn service_request(index: &Index, service: &Service) -> Option<Request> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let meta = &service.metadata;
    let owner = ObjectId::new(
        "Service",
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let mut request = base_request(index, owner, meta);
    let annotated = meta.annotations.as_ref().and_then(|a| a.get(IPS_ANNOTATION));
    request.requested = spec
        .load_balancer_ip
        .iter()
        .map(String::as_str)
        .chain(annotated.into_iter().flat_map(|ips| ips.split(',')))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .collect();
    request.families = families(spec.ip_families.as_deref(), spec.ip_family_policy.as_deref());
    request.ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let transport = match p.protocol.as_deref() {
                None | Some("TCP") => Transport::Tcp,
                Some("UDP") => Transport::Udp,
                Some("SCTP") => Transport::Sctp,
                Some(_) => return None,
            };
            Some(Port { transport, port: u16::try_from(p.port).ok()? })
        })
        .collect();
    Some(request)
}

/// `spec.ipFamilyPolicy` / `spec.ipFamilies`: dual stack wants both; one named family wants
/// that one; nothing said (typical in files) takes any.
fn families(families: Option<&[String]>, policy: Option<&str>) -> Families {
    let named: Vec<Family> = families
        .unwrap_or_default()
        .iter()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        })
        .collect();
    match (policy, named.as_slice()) {
        (Some("RequireDualStack" | "PreferDualStack"), _) => Families::Both,
        (_, [family, ..]) => Families::Only(*family),
        _ => Families::Any,
    }
}

/// What every request carries from the object's metadata: age, labels, namespace labels,
/// and the sharing annotations.
fn base_request(index: &Index, owner: ObjectId, meta: &ObjectMeta) -> Request {
    let namespace_labels: Labels = index
        .namespaces
        .get(&owner.namespace)
        .and_then(|n| n.metadata.labels.clone())
        .unwrap_or_else(|| {
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), owner.namespace.clone())])
        });
    let annotations = meta.annotations.clone().unwrap_or_default();
    let sharing = annotations.get(SHARING_KEY_ANNOTATION).map(|key| Sharing {
        key: key.trim().to_owned(),
        cross_namespace: annotations
            .get(SHARING_CROSS_NAMESPACE_ANNOTATION)
            .map(|list| list.split(',').map(|n| n.trim().to_owned()).collect())
            .unwrap_or_default(),
    });
    let mut request = Request::new(owner);
    request.created = meta.creation_timestamp.as_ref().map(|t| t.0.as_second());
    request.labels = meta.labels.clone().unwrap_or_default();
    request.namespace_labels = namespace_labels;
    request.sharing = sharing;
    request
}

/// Addresses the cluster says objects hold: LoadBalancer Services' `status.loadBalancer.ingress`
/// and Gateways' `status.addresses` (when the source kept them), for cluster mode, where the
/// cluster's status is the record of what was handed out.
pub fn previous_from_status(index: &Index) -> gatehouse_ipam::Previous {
    let mut out = gatehouse_ipam::Previous::new();
    for service in index.services.values() {
        let ingress = service.status.as_ref().and_then(|s| s.load_balancer.as_ref());
        let ips: Vec<IpAddr> = ingress
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        if !ips.is_empty() {
            let meta = &service.metadata;
            let owner = ObjectId::new(
                "Service",
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            );
            out.insert(owner, ips);
        }
    }
    for gateway in index.gateways.values() {
        let addresses = gateway.status.as_ref().and_then(|s| s.get("addresses"));
        let ips: Vec<IpAddr> = addresses
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter(|a| a.get("type").is_none_or(|t| t == "IPAddress"))
            .filter_map(|a| a.get("value")?.as_str()?.parse().ok())
            .collect();
        if !ips.is_empty() {
            out.insert(ObjectId::new("Gateway", gateway.namespace(), gateway.name()), ips);
        }
    }
    out
}

/// `Service.status` as far as LB-IPAM sets it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub load_balancer: LoadBalancerStatus,
    pub conditions: Vec<Condition>,
}

/// `Service.status.loadBalancer`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LoadBalancerStatus {
    pub ingress: Vec<LoadBalancerIngress>,
}

/// One `Service.status.loadBalancer.ingress` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIngress {
    pub ip: String,
    /// `VIP`: traffic reaches the address itself (not a proxy in front).
    pub ip_mode: &'static str,
}

/// The reason a failure shows as on a Service condition.
pub fn failure_reason(failure: &Failure) -> &'static str {
    match failure {
        Failure::PoolExhausted { .. } => "PoolExhausted",
        Failure::NoMatchingPool { .. } => "NoMatchingPool",
        Failure::UnsupportedAddress { .. } => "UnsupportedAddress",
        Failure::PoolNotSelected { .. } => "PoolNotSelected",
        Failure::AddressInUse { .. } => "AddressInUse",
    }
}

/// Status of every LoadBalancer Service that asked for addresses.
pub fn service_status(
    index: &Index,
    allocation: &Allocation,
    now: jiff::Timestamp,
) -> Vec<ObjectStatus> {
    let now = now.to_string();
    let mut out = Vec::new();
    for (owner, outcome) in &allocation.objects {
        if owner.kind != "Service" {
            continue;
        }
        let key = (owner.namespace.clone(), owner.name.clone());
        let Some(service) = index.services.get(&key) else { continue };
        let generation = service.metadata.generation.unwrap_or(1);
        let (status, reason, message) = match outcome.failures.first() {
            None => ("True", "Assigned", "every address is assigned".to_owned()),
            Some(first) => {
                let all: Vec<String> = outcome.failures.iter().map(ToString::to_string).collect();
                ("False", failure_reason(first), all.join("; "))
            }
        };
        out.push(ObjectStatus {
            api_version: "v1".into(),
            kind: "Service".into(),
            metadata: StatusMetadata {
                namespace: Some(owner.namespace.clone()),
                name: owner.name.clone(),
                generation,
            },
            status: Status::Service(ServiceStatus {
                load_balancer: LoadBalancerStatus {
                    ingress: outcome
                        .addresses
                        .iter()
                        .map(|a| LoadBalancerIngress { ip: a.address.to_string(), ip_mode: "VIP" })
                        .collect(),
                },
                conditions: vec![Condition {
                    type_: ADDRESS_ASSIGNED,
                    status,
                    reason,
                    message,
                    observed_generation: generation,
                    last_transition_time: now.clone(),
                }],
            }),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::net::Ipv4Addr;

    use gatehouse_ipam::{Block, Pool, Pools, Previous, allocate};
    use gatehouse_model::DataPlaneReport;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use serde_json::json;

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;
    use crate::types::GatewaySpecAddress;
    use crate::{Translation, translate_with_addresses};

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    fn pools(cidr: &str) -> Pools {
        Pools::new(vec![Pool::new("lb", vec![Block::cidr(cidr).unwrap()])]).unwrap()
    }

    fn gw(name: &str, addresses: &[&str]) -> Object {
        let mut g = gateway("infra", name, "gatehouse", vec![listener("http", 80, "HTTP")]);
        g.spec.addresses = addresses
            .iter()
            .map(|a| GatewaySpecAddress { kind: "IPAddress".into(), value: (*a).into() })
            .collect();
        Object::Gateway(g)
    }

    fn lb_service(namespace: &str, name: &str, annotations: &[(&str, &str)]) -> Object {
        let Object::Service(mut s) = service(namespace, name, &[(None, 53)]) else { panic!() };
        let spec: &mut ServiceSpec = s.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        s.metadata.annotations =
            Some(annotations.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
        Object::Service(s)
    }

    fn gateway_status(translation: &Translation, index: &Index, name: &str) -> serde_json::Value {
        let report =
            DataPlaneReport { generation: translation.desired.generation, ..Default::default() };
        let all =
            crate::status(index, &settings(), translation, &report, jiff::Timestamp::UNIX_EPOCH);
        let found = all.into_iter().find(|o| o.kind == "Gateway" && o.metadata.name == name);
        serde_json::to_value(found.unwrap()).unwrap()
    }

    fn condition(status: &serde_json::Value, type_: &str) -> (String, String) {
        let c = status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap();
        (c["status"].as_str().unwrap().into(), c["reason"].as_str().unwrap().into())
    }

    #[test]
    fn requests_come_from_our_gateways_and_load_balancer_services() {
        let mut other = gateway("infra", "theirs", "other", vec![listener("http", 80, "HTTP")]);
        other.spec.addresses = vec![];
        let Object::Service(mut cluster_ip) = service("apps", "plain", &[(None, 80)]) else {
            panic!()
        };
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let index = index([
            gateway_class("gatehouse", CONTROLLER),
            gateway_class("other", "example.com/other"),
            gw("web", &["10.0.0.9"]),
            Object::Gateway(other),
            Object::Service(cluster_ip),
            lb_service(
                "apps",
                "dns",
                &[
                    (IPS_ANNOTATION, "10.0.0.3, 10.0.0.4"),
                    (SHARING_KEY_ANNOTATION, "k"),
                    (SHARING_CROSS_NAMESPACE_ANNOTATION, "infra,web"),
                ],
            ),
            namespace("apps", &[("tier", "edge")]),
        ]);
        let requests = requests(&index, &settings());
        let owners: Vec<String> = requests.iter().map(|r| r.owner.to_string()).collect();
        assert_eq!(owners, ["Gateway infra/web", "Service apps/dns"]);
        assert_eq!(requests[0].requested, ["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert_eq!(requests[0].ports, [Port::tcp(80)]);
        assert_eq!(requests[0].namespace_labels[NAMESPACE_NAME_LABEL], "infra");
        let dns = &requests[1];
        assert_eq!(dns.requested.len(), 2);
        assert_eq!(dns.namespace_labels["tier"], "edge");
        let sharing = dns.sharing.as_ref().unwrap();
        assert_eq!((sharing.key.as_str(), sharing.cross_namespace.len()), ("k", 2));
    }

    #[test]
    fn the_cluster_status_seeds_previous_allocations() {
        use k8s_openapi::api::core::v1::{
            LoadBalancerIngress as Ingress, LoadBalancerStatus as Lb, ServiceStatus as Ss,
        };
        let Object::Service(mut dns) = lb_service("apps", "dns", &[]) else { panic!() };
        dns.status = Some(Ss {
            load_balancer: Some(Lb {
                ingress: Some(vec![Ingress { ip: Some("10.0.0.5".into()), ..Ingress::default() }]),
            }),
            ..Ss::default()
        });
        let Object::Gateway(mut web) = gw("web", &[]) else { panic!() };
        web.status = Some(json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.6"}]}));
        let index =
            index([Object::Service(dns), Object::Gateway(web), lb_service("apps", "new", &[])]);
        let previous = previous_from_status(&index);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(previous.len(), 2);
        assert_eq!(previous[&ObjectId::new("Service", "apps", "dns")], [ip("10.0.0.5")]);
        assert_eq!(previous[&ObjectId::new("Gateway", "infra", "web")], [ip("10.0.0.6")]);
    }

    #[test]
    fn service_families_follow_the_spec() {
        assert_eq!(families(None, None), Families::Any);
        assert_eq!(families(Some(&["IPv6".into()]), None), Families::Only(Family::V6));
        assert_eq!(families(Some(&["IPv4".into()]), Some("RequireDualStack")), Families::Both);
    }

    #[test]
    fn gateways_bind_what_the_pools_hand_out_and_report_what_they_cannot() {
        let index = index([
            gateway_class("gatehouse", CONTROLLER),
            gw("a", &[]),
            gw("b", &[]),
            gw("c", &[]),
            gw("outside", &["192.0.2.1"]),
            lb_service("apps", "dns", &[]),
        ]);
        let allocation =
            allocate(&pools("10.0.0.0/30"), &requests(&index, &settings()), &Previous::new());
        let translation = translate_with_addresses(&index, &settings(), Some(&allocation));
        let bound: Vec<(String, Vec<IpAddr>)> = translation
            .desired
            .listeners
            .iter()
            .map(|l| (l.id.gateway.name.clone(), l.addresses.clone()))
            .collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The Service (namespace "apps" ranks first without creation times) took .1.
        assert_eq!(bound, [("a".into(), vec![ip("10.0.0.2")])]);

        let a = gateway_status(&translation, &index, "a");
        assert_eq!(a["status"]["addresses"], json!([{"type": "IPAddress", "value": "10.0.0.2"}]));
        assert_eq!(condition(&a, "Programmed"), ("True".into(), "Programmed".into()));
        let c = gateway_status(&translation, &index, "c");
        assert_eq!(condition(&c, "Accepted"), ("True".into(), "Accepted".into()));
        assert_eq!(condition(&c, "Programmed"), ("False".into(), "AddressNotAssigned".into()));
        let outside = gateway_status(&translation, &index, "outside");
        assert_eq!(condition(&outside, "Accepted"), ("False".into(), "UnsupportedAddress".into()));

        let services = service_status(&index, &allocation, jiff::Timestamp::UNIX_EPOCH);
        let dns = serde_json::to_value(&services[0]).unwrap();
        assert_eq!(dns["apiVersion"], "v1");
        assert_eq!(dns["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.1");
        assert_eq!(dns["status"]["conditions"][0]["status"], "True");
    }
}
