//! Builds the XDP program (`ebpf/xdp`, its own workspace) for the BPF target with the nightly
//! toolchain and `bpf-linker` (`make setup-ebpf` installs both); the object lands in `OUT_DIR`
//! and is embedded by `src/program.rs`.

use std::path::Path;

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let ebpf_dir = Path::new(&manifest_dir).join("../../ebpf/xdp");
    let common_dir = Path::new(&manifest_dir).join("../../ebpf/common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // aya-build runs `cargo build --package gatehouse-ebpf` in the current directory, so the
    // eBPF crate's own workspace must be the current one.
    if let Err(e) = std::env::set_current_dir(&ebpf_dir) {
        println!("cargo:warning=cannot enter {}: {e}", ebpf_dir.display());
        std::process::exit(1);
    }
    let Some(root) = ebpf_dir.to_str() else {
        println!("cargo:warning=non-UTF-8 path {}", ebpf_dir.display());
        std::process::exit(1);
    };
    let package = aya_build::Package {
        name: "gatehouse-ebpf",
        root_dir: root,
        no_default_features: false,
        features: &[],
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Nightly) {
        println!("cargo:warning=building the XDP program failed: {e:#}");
        println!("cargo:warning=run `make setup-ebpf` (nightly + rust-src + bpf-linker)");
        std::process::exit(1);
    }
}
