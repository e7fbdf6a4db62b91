//! The HTTP data plane of Gatehouse.
//!
//! Place in the data flow: `model::Desired` → [`compile()`] (pure) → [`RouteTable`] →
//! [`Proxy::apply`] (one atomic swap) → requests. The proxy never reads a config source; it
//! serves the table it was handed and reports what it could not serve as a
//! [`DataPlaneReport`](gatehouse_model::DataPlaneReport).
//!
//! ```ignore
//! let (table, problems) = gatehouse_proxy::compile(&desired);
//! let mut report = proxy.apply(Arc::new(table), desired.generation).await; // bind problems
//! report.listener_problems.extend(problems);
//! ```
//!
//! Routing follows Gateway API (HTTPRoute, standard channel): listener isolation on shared
//! ports, most specific hostname, then match precedence (Exact > RegularExpression >
//! PathPrefix, longer path, method, header count, query count, oldest route,
//! namespace/name, rule and match order). Readers never lock: each request loads the current
//! table once.

mod backend_tls;
mod client_auth;
mod compile;
mod cors;
mod error;
mod filters;
mod forward;
mod h2c;
mod matching;
mod metrics;
mod mirror;
mod redirect;
mod select;
mod server;
mod service;
mod table;
mod tls;
mod tunnel;
mod upstream;
mod wasm;

#[cfg(test)]
mod fixtures;

pub use compile::{Compiler, compile, compile_with_plugins};
pub use server::{Proxy, ProxyOptions};
pub use table::RouteTable;
