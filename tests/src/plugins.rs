//! The WASM plugins `make plugins` builds (plugins/ and the proxy-wasm SDK's example).

use std::path::PathBuf;

/// Path of a built plugin module, e.g. `header-modifier` → `…/header_modifier.wasm`;
/// `GATEHOUSE_PLUGINS_DIR` (set by the Makefile) says where they are.
pub fn wasm_plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("GATEHOUSE_PLUGINS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
        target.join("plugins/wasm32-wasip1/release")
    });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: `make plugins` builds it", path.display());
    path
}
