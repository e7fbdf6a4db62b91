//! Compiled modules, by the sha256 of their wasm bytes: in memory for this process, and on disk
//! under `<state_dir>/wasm/` for the next one (`Module::serialize`), so no module is compiled
//! twice and never per request.
//!
//! A cache file is `sha256(artifact) ‖ artifact`, named by the module digest and a hash of the
//! engine's compatibility fingerprint. It is checked twice before use: its own digest (a torn
//! or altered file is recompiled, not loaded) and wasmtime's own version/config check.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::WasmError;

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a module came from this time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Memory,
    Disk,
    Compiled,
}

impl CacheOutcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            CacheOutcome::Memory => "memory",
            CacheOutcome::Disk => "disk",
            CacheOutcome::Compiled => "compiled",
        }
    }
}

#[derive(Debug)]
pub(crate) struct ModuleCache {
    engine: Engine,
    dir: Option<PathBuf>,
    fingerprint: String,
    compiled: Mutex<HashMap<String, Module>>,
}

impl ModuleCache {
    pub(crate) fn new(engine: Engine, dir: Option<PathBuf>) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());
        Self { engine, dir, fingerprint, compiled: Mutex::default() }
    }

    /// The directory cache files go to, if any.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The compiled module for `wasm`, whose sha256 is `digest`.
    pub(crate) fn module(
        &self,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Module, CacheOutcome), WasmError> {
        if let Some(m) = self.compiled.lock().get(digest) {
            return Ok((m.clone(), CacheOutcome::Memory));
        }
        let file =
            self.dir.as_ref().map(|d| d.join(format!("{digest}-{}.cwasm", self.fingerprint)));
        let (module, outcome) = match file.as_deref().and_then(|f| self.read(f)) {
            Some(m) => (m, CacheOutcome::Disk),
            None => {
                let m = Module::new(&self.engine, wasm)
                    .map_err(|e| WasmError::Compile(format!("{e:#}")))?;
                if let Some(f) = &file
                    && let Err(e) = self.write(f, &m)
                {
                    tracing::warn!(file = %f.display(), error = %e, "could not cache compiled module");
                }
                (m, CacheOutcome::Compiled)
            }
        };
        self.compiled.lock().insert(digest.to_owned(), module.clone());
        Ok((module, outcome))
    }

    /// Drops in-memory modules whose digest is not in `keep`.
    pub(crate) fn retain(&self, keep: &[String]) {
        self.compiled.lock().retain(|d, _| keep.contains(d));
    }

    fn read(&self, file: &Path) -> Option<Module> {
        let bytes = std::fs::read(file).ok()?;
        let verified = bytes
            .split_at_checked(32)
            .filter(|(sum, artifact)| Sha256::digest(artifact).as_slice() == *sum);
        let Some((_, artifact)) = verified else {
            tracing::warn!(file = %file.display(), "compiled module cache file is corrupt; recompiling");
            let _ = std::fs::remove_file(file);
            return None;
        };
        match deserialize(&self.engine, artifact) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cached module unusable; recompiling");
                let _ = std::fs::remove_file(file);
                None
            }
        }
    }

    fn write(&self, file: &Path, module: &Module) -> std::io::Result<()> {
        let artifact = module.serialize().map_err(|e| std::io::Error::other(e.to_string()))?;
        let dir = file.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&Sha256::digest(&artifact))?;
        tmp.write_all(&artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Loads a compiled artifact produced by `Module::serialize`.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Module> {
    if Engine::detect_precompiled(artifact).is_none() {
        return Err(wasmtime::Error::msg("not a wasmtime artifact"));
    }
    // SAFETY: `Module::deserialize` runs machine code from `artifact` without validating it. The
    // bytes are ones this host wrote itself with `Module::serialize` into its own state
    // directory (0700, owned by the daemon's user), and they passed the sha256 check stored
    // with them, so they are exactly what we serialised; wasmtime then rejects artifacts from
    // another version or an incompatible engine configuration.
    unsafe { Module::deserialize(engine, artifact) }
}
