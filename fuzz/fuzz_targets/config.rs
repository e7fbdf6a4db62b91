//! The appliance's TOML config file, then the proxy compile of its native form.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    // A base directory that does not exist: certificate paths in the input fail to read
    // instead of reading this machine's files.
    match gatehouse_config::parse(text, Path::new("fuzz.toml"), Path::new("/nonexistent")) {
        Ok(config) => {
            let (table, _problems) = gatehouse_proxy::compile(&config.native);
            let _ = table.describe();
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
