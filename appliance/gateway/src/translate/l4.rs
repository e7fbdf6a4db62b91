//! Services of type LoadBalancer as L4 services: every address LB-IPAM gave the Service, on
//! each of its TCP and UDP ports, balanced over the Service's ready endpoints (or its nodes'
//! nodePorts, with `backend_addressing = "nodeport"`). The XDP data plane serves them.

use gatehouse_ipam::Allocation;
use gatehouse_model::{Backend, L4Backend, L4Protocol, L4Service, ObjectId};

use super::Settings;
use crate::index::Index;
use crate::types::BackendRef;

/// The L4 services of every LoadBalancer Service without a `loadBalancerClass` that holds
/// addresses. A port without endpoints is a VIP without backends (it serves nothing).
pub(super) fn services(
    index: &Index,
    settings: &Settings,
    allocation: Option<&Allocation>,
) -> Vec<L4Service> {
    let Some(allocation) = allocation else { return Vec::new() };
    let mut out = Vec::new();
    for service in index.services.values() {
        let Some(spec) = service.spec.as_ref() else { continue };
        if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
            continue;
        }
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let id = ObjectId::new("Service", &namespace, &name);
        let addresses = allocation.outcome(&id).map(|o| o.ips()).unwrap_or_default();
        if addresses.is_empty() {
            continue;
        }
        for port in spec.ports.iter().flatten() {
            let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => L4Protocol::Tcp,
                "UDP" => L4Protocol::Udp,
                _ => continue,
            };
            let Ok(number) = u16::try_from(port.port) else { continue };
            let reference = BackendRef {
                group: String::new(),
                kind: "Service".into(),
                name: name.clone(),
                namespace: None,
                port: Some(number),
                weight: 1,
                filters: Vec::new(),
            };
            let (backend, _) = super::backends::resolve(
                index,
                settings.backend_addressing,
                super::RouteKind::Http,
                &namespace,
                &reference,
            );
            let backends = match backend {
                Backend::Endpoints(e) => {
                    e.addrs.into_iter().map(|addr| L4Backend { addr, weight: 1 }).collect()
                }
                _ => Vec::new(),
            };
            out.push(L4Service {
                id: id.clone(),
                addresses: addresses.clone(),
                port: number,
                protocol,
                backends,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gatehouse_ipam::{Block, Pool, Pools, Previous, allocate};
    use k8s_openapi::api::core::v1::ServiceSpec;

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;

    #[test]
    fn load_balancer_services_become_l4_services_over_their_endpoints() {
        let Object::Service(mut lb) = service("apps", "dns", &[(Some("dns"), 53)]) else {
            panic!()
        };
        let spec: &mut ServiceSpec = lb.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        let mut slice = endpoint_slice(
            "apps",
            "dns-1",
            "dns",
            &[("dns", 5353)],
            &[("10.1.0.1", None), ("10.1.0.2", Some(false))],
        );
        if let Object::EndpointSlice(s) = &mut slice {
            s.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
        }
        let plain = service("apps", "plain", &[(None, 80)]);
        let index = index([Object::Service(lb), slice, plain]);
        let settings = Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        };
        let pools =
            Pools::new(vec![Pool::new("lb", vec![Block::cidr("192.0.2.0/30").unwrap()])]).unwrap();
        let requests = crate::ipam::requests(&index, &settings);
        let allocation = allocate(&pools, &requests, &Previous::new());

        let services = services(&index, &settings, Some(&allocation));
        assert_eq!(services.len(), 1, "{services:?}");
        let s = &services[0];
        assert_eq!(s.id, ObjectId::new("Service", "apps", "dns"));
        assert_eq!(s.addresses.len(), 1);
        assert_eq!((s.port, s.protocol), (53, L4Protocol::Udp));
        let backends: Vec<String> = s.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(backends, ["10.1.0.1:5353"], "only ready endpoints");
        assert!(super::services(&index, &settings, None).is_empty());
    }
}
