//! LB-IPAM: pools of addresses and their allocation to the objects that need one.
//!
//! Place in the data flow: between the sources and the model. The daemon collects requests
//! from every source (Gateways and LoadBalancer Services of the Gateway API source, native
//! gateways of the TOML file), calls [`allocate`] with the configured [`Pools`] and what was
//! held before ([`Previous`]), and feeds the [`Allocation`] back into the translation (listener
//! addresses, `Desired::owned_addresses`) and into status. Pure: no I/O, no source types.

mod allocate;
mod block;
mod pool;
mod request;
mod selector;

pub use allocate::{Allocation, Assigned, Failure, Outcome, Previous, allocate};
pub use block::{Block, BlockError, Family};
pub use pool::{Pool, PoolError, Pools};
pub use request::{Families, Port, Request, Sharing, Transport};
pub use selector::{Expression, Labels, NAME_LABEL, NAMESPACE_LABEL, Operator, Selector};

/// Annotation asking for addresses by value (comma-separated), as Cilium LB-IPAM reads it.
pub const IPS_ANNOTATION: &str = "lbipam.cilium.io/ips";
/// Annotation naming a sharing key.
pub const SHARING_KEY_ANNOTATION: &str = "lbipam.cilium.io/sharing-key";
/// Annotation listing namespaces (comma-separated, `*` for any) allowed to share.
pub const SHARING_CROSS_NAMESPACE_ANNOTATION: &str = "lbipam.cilium.io/sharing-cross-namespace";
