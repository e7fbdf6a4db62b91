//! Builds the XDP program (`ebpf/xdp`, its own workspace) for the BPF target with the nightly
//! toolchain and `bpf-linker` (`make setup-ebpf` installs both); the object lands in `OUT_DIR`
//! and is embedded by `src/datapath.rs`.
//!
//! The inner build uses one target dir per outer target dir (`<target>/ebpf`), not one per
//! `OUT_DIR`: `cargo clippy` and `cargo test` run this script with different `OUT_DIR`s, and
//! building `core` for BPF twice would cost minutes for nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

const PACKAGE: &str = "gatehouse-ebpf";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    if let Err(message) = build() {
        println!("cargo:warning=building the XDP program failed: {message}");
        println!("cargo:warning=run `make setup-ebpf` (nightly + rust-src + bpf-linker)");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let ebpf_dir = manifest_dir.join("../../ebpf/xdp");
    let common_dir = manifest_dir.join("../../ebpf/common");
    for dir in [&ebpf_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    if env("CARGO_CFG_TARGET_ENDIAN")? != "little" {
        return Err("only little-endian hosts are supported (bpfel)".to_owned());
    }
    let arch = env("CARGO_CFG_TARGET_ARCH")?;
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
    let target_dir = out_dir.ancestors().nth(4).map_or_else(|| out_dir.join("ebpf"), shared);

    let mut cargo = Command::new("rustup");
    cargo
        .args(["run", "nightly", "cargo", "build", "--package", PACKAGE, "--bins", "--release"])
        .args(["--target", TARGET, "-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            // BPF CPU v3: atomic compare-and-swap (the NAT port claim) and 32-bit jumps.
            format!(
                "--cfg=bpf_target_arch=\"{arch}\"\x1f-Ctarget-cpu=v3\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"
            ),
        )
        // The outer build's compiler and wrappers are the stable toolchain's, not ours.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR");
    let status = cargo.status().map_err(|e| format!("cannot run rustup: {e}"))?;
    if !status.success() {
        return Err(format!("{cargo:?} failed: {status}"));
    }
    let object = target_dir.join(TARGET).join("release").join(PACKAGE);
    std::fs::copy(&object, out_dir.join(PACKAGE))
        .map_err(|e| format!("cannot copy {}: {e}", object.display()))?;
    Ok(())
}

fn shared(target: &Path) -> PathBuf {
    target.join("ebpf")
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}
