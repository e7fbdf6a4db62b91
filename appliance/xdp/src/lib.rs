//! The XDP data plane's user side: loads the program built from `ebpf/xdp`, attaches it to
//! the configured interface (driver mode, generic as a fallback), and keeps its maps in step
//! with the compiled snapshot. The daemon hands it a [`Plan`] after every compile and gets
//! back the generation it applied; counters come back as [`Stats`].
//!
//! Flow: `Desired` → [`Plan`] (pure) → [`Datapath::apply`] (map writes, never torn: new
//! Maglev tables go to the idle half of a VIP's ring and one atomic VIP update switches; a
//! plan that fails half-way is undone).

pub mod announce;
mod applier;
mod datapath;
mod desired;
mod error;
mod journal;
pub mod maglev;
mod metrics;
pub mod model;
mod nexthop;
mod plan;
mod plane;
#[cfg(test)]
mod test_support;
mod vip_index;

pub use applier::{vip_key, wire_addr};
pub use datapath::{AttachMode, Attachment, Datapath, Stats};
pub use desired::{L4Split, PlanSettings, plan, split_l4};
pub use error::XdpError;
pub use gatehouse_ebpf_common as common;
pub use metrics::XdpCollector;
pub use nexthop::NextHopWatch;
pub use plan::{Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};
pub use plane::{Plane, PlaneConfig, PlaneStatus};
