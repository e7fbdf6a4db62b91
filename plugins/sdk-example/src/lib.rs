//! Empty: this package exists only to fetch the pinned SDK release (see Cargo.toml).
