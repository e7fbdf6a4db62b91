//! Gateway API for gatehouse: the source side of file mode and cluster mode.
//!
//! ```text
//! YAML files ──loader::load──► Objects ──Index::apply──┐
//! Kubernetes watch (gatehouse-kube) apply/delete/reset ┤
//!                                                      ▼
//!                         Index ──translate(&Index, &Settings)──► Translation
//!                                                      │  .desired: gatehouse_model::Desired → proxy
//!                                                      │  .report:  facts for status
//!                                                      ▼
//!   status(&Index, &Settings, &Translation, &DataPlaneReport, now) ──► Vec<ObjectStatus>
//! ```
//!
//! Public API:
//! - [`loader::load`]`(&[PathBuf]) -> Loaded { objects, warnings, errors }` (and
//!   [`loader::load_str`] for one in-memory text); every error names its place.
//! - [`from_json`]`(serde_json::Value) -> Result<Object, JsonError>`: one object as a Kubernetes
//!   API server sends it, through the same conversion as a YAML document (cluster mode).
//! - [`Index`]: `apply(Object)`, `delete(Kind, ns, name)`, `reset(objects)`,
//!   `reset_kind(Kind, objects)`. Pure, no I/O.
//! - [`translate()`]`(&Index, &Settings) -> Translation`: pure; [`translate_with_addresses`]
//!   takes the LB-IPAM allocation whose requests [`ipam::requests`] collected; [`Translator`]
//!   memoises it per route (cluster events retranslate only what changed).
//! - [`status()`]`(&Index, &Settings, &Translation, &DataPlaneReport, jiff::Timestamp) ->
//!   Vec<ObjectStatus>`: pure, serializes to the Gateway API status schema.
//! - [`conditions`]: condition types and reasons as constants.
//! - [`transitions::preserve`]: keeps `lastTransitionTime` of unchanged conditions (pure, on
//!   the JSON form, so both the admin API and the cluster status writer use it).
//!
//! Only objects of GatewayClasses whose `controllerName` is ours are translated or reported.

pub mod conditions;
pub mod features;
pub mod index;
pub mod ipam;
pub mod loader;
pub mod object;
pub mod policy_status;
pub mod status;
pub mod transitions;
pub mod translate;
pub mod types;

#[cfg(test)]
mod fixtures;

pub use index::Index;
pub use loader::{JsonError, LoadError, LoadWarning, Loaded, from_json};
pub use object::{Kind, Object, ObjectRef};
pub use status::{ListenerStatus, ObjectStatus, native_listener_status, status};
pub use translate::{
    BackendAddressing, Problem, Report, Settings, Translation, Translator, translate,
    translate_with_addresses,
};
