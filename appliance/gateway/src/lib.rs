//! Gateway API for gatehouse: types, YAML loader, index, translation and status.
pub mod loader;
pub mod object;
pub mod types;
