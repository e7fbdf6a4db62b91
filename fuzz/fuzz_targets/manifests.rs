//! Gateway API manifests (hostile YAML from files, later from the API server) through the whole
//! gateway crate: load → index → translate → status, then the proxy compiles the translation.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use gatehouse_gateway::{Index, Settings, loader, status, translate};
use gatehouse_model::DataPlaneReport;
use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let loaded = loader::load_str(Path::new("fuzz.yaml"), text);
    // Errors must render: `gatehouse check` prints every one of them.
    for err in &loaded.errors {
        let _ = err.to_string();
    }
    for warning in &loaded.warnings {
        let _ = warning.to_string();
    }
    if loaded.objects.is_empty() {
        return;
    }

    let mut index = Index::new();
    index.reset(loaded.objects);
    let settings = Settings {
        controller_name: gatehouse_config::DEFAULT_CONTROLLER_NAME.to_owned(),
        default_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let translation = translate(&index, &settings);
    // A fixed time keeps every run reproducible.
    let now = Timestamp::constant(1_700_000_000, 0);
    let statuses = status(&index, &settings, &translation, &DataPlaneReport::default(), now);
    let _ = serde_json::to_string(&statuses);

    let (table, _problems) = gatehouse_proxy::compile(&translation.desired);
    let _ = table.describe();
});
