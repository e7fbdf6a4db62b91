//! The proxy-wasm ABI boundary: a guest calls our host functions with fuzz-chosen pointers,
//! lengths and map types over memory holding fuzz-chosen bytes (malformed header-map
//! serialisations included). Whatever it passes, the host answers a status and never panics
//! or traps on its own; the request ends with a verdict. The same bytes also go straight into
//! the header-map parser.

#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use gatehouse_model::{FailurePolicy, ModuleSource, WasmPlugin};
use gatehouse_wasm::{Head, Host, HostOptions, RequestInfo, Verdict};
use libfuzzer_sys::fuzz_target;

/// Host functions the guest may call, with their parameter counts (all i32 except where noted).
const FUNCTIONS: [(&str, usize); 16] = [
    ("proxy_log", 3),
    ("proxy_get_buffer_bytes", 5),
    ("proxy_set_buffer_bytes", 5),
    ("proxy_get_header_map_pairs", 3),
    ("proxy_set_header_map_pairs", 3),
    ("proxy_get_header_map_value", 5),
    ("proxy_add_header_map_value", 5),
    ("proxy_replace_header_map_value", 5),
    ("proxy_remove_header_map_value", 3),
    ("proxy_get_property", 4),
    ("proxy_set_property", 4),
    ("proxy_get_shared_data", 5),
    ("proxy_set_shared_data", 5),
    ("proxy_send_local_response", 8),
    ("proxy_define_metric", 4),
    ("proxy_continue_stream", 1),
];

#[derive(Arbitrary, Debug)]
struct Call {
    function: u8,
    /// Small values hit the data (offset 1024) and map types; large ones test bounds.
    args: [u32; 8],
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    calls: Vec<Call>,
}

fn host() -> &'static (Host, tokio::runtime::Runtime, tempfile::TempDir) {
    static HOST: OnceLock<(Host, tokio::runtime::Runtime, tempfile::TempDir)> = OnceLock::new();
    HOST.get_or_init(|| {
        let options = HostOptions { cache_dir: None, instances_per_plugin: 1, pool_size: 8 };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        (Host::unregistered(options).unwrap(), runtime, tempfile::tempdir().unwrap())
    })
}

/// A module whose `proxy_on_request_headers` makes the calls, ignoring their statuses.
fn module(input: &Input) -> String {
    let mut imports = String::new();
    for (name, params) in FUNCTIONS {
        let params = if name == "proxy_send_local_response" {
            "i32 i32 i32 i32 i32 i32 i32 i32".to_owned()
        } else {
            vec!["i32"; params].join(" ")
        };
        imports.push_str(&format!(
            "(import \"env\" \"{name}\" (func ${name} (param {params}) (result i32)))\n"
        ));
    }
    let mut body = String::new();
    for call in input.calls.iter().take(64) {
        let (name, params) = FUNCTIONS[call.function as usize % FUNCTIONS.len()];
        for arg in &call.args[..params] {
            // Bias towards the interesting region: data at 1024, the scratch slots at 64.
            let v = match arg % 4 {
                0 => arg % 16,
                1 => 1024 + arg % 512,
                2 => 64 + (arg % 8) * 4,
                _ => *arg,
            };
            body.push_str(&format!("(i32.const {v})\n"));
        }
        body.push_str(&format!("(call ${name}) (drop)\n"));
    }
    let data: String = input.data.iter().take(4096).map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
{imports}
(memory (export "memory") 1)
(data (i32.const 1024) "{data}")
(global $heap (mut i32) (i32.const 8192))
(func (export "proxy_abi_version_0_2_1"))
(func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
  (local $p i32)
  (local.set $p (global.get $heap))
  (global.set $heap (i32.add (global.get $heap) (local.get $size)))
  (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
    (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16)) (i32.const 1))) (i32.const -1))
      (then (return (i32.const 0))))))
  (local.get $p))
(func (export "proxy_on_context_create") (param i32 i32))
(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
{body}
  (i32.const 0))
)"#
    )
}

fuzz_target!(|input: Input| {
    let _ = gatehouse_wasm::parse_header_map(&input.data);

    let (host, runtime, dir) = host();
    let path = dir.path().join("guest.wat");
    std::fs::write(&path, module(&input)).unwrap();
    let spec = WasmPlugin {
        name: "fuzz".into(),
        module: ModuleSource::Path { path: PathBuf::from(&path), sha256: None },
        config: "{}".into(),
        failure_policy: FailurePolicy::Closed,
        timeout: Duration::from_millis(500),
        memory_limit: 16 << 20,
        upstreams: Vec::new(),
    };
    let plugins = runtime.block_on(host.prepare(&[spec])).unwrap();
    let plugin = plugins.get("fuzz").unwrap();
    let info = RequestInfo {
        source: SocketAddr::from(([127, 0, 0, 1], 1)),
        destination: SocketAddr::from(([127, 0, 0, 1], 2)),
        server_name: None,
        route_name: "r".into(),
        listener_name: "l".into(),
        protocol: "HTTP/1.1",
        tls: false,
    };
    let mut ctx = plugin.start_request(info);
    let mut head = Head { pseudo: vec![(":path", "/".into())], ..Head::default() };
    head.headers.insert("x-a", "b".parse().unwrap());
    match ctx.on_request_headers(&mut head, true) {
        // A guest that traps is the guest's failure, never the host's: only a trap raised
        // by the guest itself (none here: it only calls us) would turn into a 500.
        Verdict::Respond(r) => assert!(r.status >= 200 && r.status <= 599 && r.details != "plugin fuzz failed", "{r:?}"),
        Verdict::Continue => {}
        // Buffer is for body phases only; Wait needs a queued HTTP call, and this plugin has
        // no upstreams, so every dispatch is refused.
        other @ (Verdict::Buffer | Verdict::Wait) => panic!("impossible verdict {other:?}"),
    }
});
