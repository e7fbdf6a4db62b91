//! `/metrics` of the XDP data plane: per-VIP and per-backend packet and byte counters summed
//! over the per-CPU maps (refreshed every second by the plane's thread), drops by reason, and
//! the interface's state.

use std::sync::Arc;

use gatehouse_ebpf_common as c;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::plane::Shared;

/// Reads the counters the plane's thread refreshed; registered with
/// `Registry::register_collector`.
#[derive(Debug)]
pub struct XdpCollector {
    shared: Arc<Shared>,
}

impl XdpCollector {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Global counters as (metric, label value, counter index).
const DROPS: [(&str, u32); 2] =
    [("drop_list", c::COUNTER_DROP_LIST), ("no_backend", c::COUNTER_NO_BACKEND)];
const PASSED: [(&str, u32); 5] = [
    ("miss", c::COUNTER_MISS),
    ("malformed", c::COUNTER_MALFORMED),
    ("fragment", c::COUNTER_FRAGMENT),
    ("l7_vip", c::COUNTER_VIP_PASS),
    ("forwarded_by_kernel", c::COUNTER_FIB_PASS),
];
const REPLIES: [(&str, u32); 3] = [
    ("arp_reply", c::COUNTER_ARP_REPLY),
    ("nd_reply", c::COUNTER_ND_REPLY),
    ("nat_reverse", c::COUNTER_NAT_REVERSE),
];

fn counter_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (&'a str, &'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (label, value, count) in series {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.shared.stats.load();
        let status = self.shared.status.load();
        let global = |i: u32| stats.counters.get(i as usize).copied().unwrap_or(0);

        let vips: Vec<(&str, &c::VipStats)> =
            stats.vips.iter().map(|(k, v)| (k.as_str(), v)).collect();
        counter_family(
            &mut encoder,
            "xdp_vip_packets",
            "Packets to a VIP seen by XDP",
            vips.iter().map(|(k, v)| ("vip", *k, v.packets)),
        )?;
        counter_family(
            &mut encoder,
            "xdp_vip_bytes",
            "Bytes to a VIP seen by XDP",
            vips.iter().map(|(k, v)| ("vip", *k, v.bytes)),
        )?;
        counter_family(
            &mut encoder,
            "xdp_vip_new_flows",
            "Flows of a VIP that were not in the connection table",
            vips.iter().map(|(k, v)| ("vip", *k, v.new_flows)),
        )?;
        let backends: Vec<(String, &c::BackendStats)> =
            stats.backends.iter().map(|(k, v)| (k.to_string(), v)).collect();
        counter_family(
            &mut encoder,
            "xdp_backend_packets",
            "Packets XDP forwarded to a backend",
            backends.iter().map(|(k, v)| ("backend", k.as_str(), v.packets)),
        )?;
        counter_family(
            &mut encoder,
            "xdp_backend_bytes",
            "Bytes XDP forwarded to a backend",
            backends.iter().map(|(k, v)| ("backend", k.as_str(), v.bytes)),
        )?;
        let syn_drops: u64 = stats.vips.values().map(|v| v.syn_drops).sum();
        let drops = DROPS
            .iter()
            .map(|(reason, i)| ("reason", *reason, global(*i)))
            .chain(std::iter::once(("reason", "syn_guard", syn_drops)));
        counter_family(&mut encoder, "xdp_drops", "Packets XDP dropped, by reason", drops)?;
        counter_family(
            &mut encoder,
            "xdp_passed",
            "Packets XDP passed to the kernel, by reason",
            PASSED.iter().map(|(reason, i)| ("reason", *reason, global(*i))),
        )?;
        counter_family(
            &mut encoder,
            "xdp_replies",
            "Frames XDP answered or rewrote in place, by kind",
            REPLIES.iter().map(|(kind, i)| ("kind", *kind, global(*i))),
        )?;
        let attached = encoder.encode_descriptor(
            "xdp_attached",
            "1 while the XDP program is attached to its interface",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(status.attached)).encode(attached)?;
        let losses = encoder.encode_descriptor(
            "xdp_interface_losses",
            "Times the XDP interface disappeared",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(status.interface_losses).encode(losses)?;
        let generation = encoder.encode_descriptor(
            "xdp_applied_generation",
            "Generation of the plan the XDP maps hold",
            None,
            MetricType::Gauge,
        )?;
        let applied = status.applied_generation.map_or(0, |g| i64::try_from(g).unwrap_or(i64::MAX));
        ConstGauge::new(applied).encode(generation)?;
        let mixed = encoder.encode_descriptor(
            "xdp_needs_full_apply",
            "1 while the XDP maps may mix two generations (a failed plan could not be undone)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(status.needs_full_apply)).encode(mixed)?;
        Ok(())
    }
}
