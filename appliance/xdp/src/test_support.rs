//! Helpers shared by the crate's unit tests and its integration tests (which include this
//! file by path).

/// Whether the tests that load the program can run (root, for a BPF-capable kernel); says so
/// when they cannot.
pub(crate) fn root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root =
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root and a BPF-capable kernel");
    }
    root
}
