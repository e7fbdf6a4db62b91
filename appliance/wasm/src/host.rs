//! The engine, the linker with our host functions, the module cache, the epoch thread and the
//! ticker thread; [`Host::prepare`] turns plugin specs into ready [`Plugins`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use gatehouse_model::WasmPlugin;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, OptLevel, PoolingAllocationConfig,
};

use crate::abi;
use crate::abi::metrics::GuestMetrics;
use crate::abi::shared_data::SharedData;
use crate::cache::{CacheOutcome, ModuleCache};
use crate::calls::{CallClient, CallUpstream};
use crate::error::WasmError;
use crate::metrics::HostMetrics;
use crate::plugin::{Plugin, PluginShared, Settings};
use crate::state::HostState;

/// One epoch tick: the granularity of callback deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How often the ticker runs due `proxy_on_tick`s and delivers root contexts' answers.
const TICKER_ROUND: Duration = Duration::from_millis(10);

/// Largest memory any instance may have, whatever its plugin asks (pool slot size).
const MAX_INSTANCE_MEMORY: usize = 1 << 30;

/// Bodies a plugin sees are buffered up to this many bytes.
pub const BODY_LIMIT: usize = 1 << 20;

/// How the host is set up (boot-only).
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Where compiled modules and fetched sources are kept (`<state_dir>/wasm`); `None` keeps
    /// them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Instances per plugin (requests are spread over them).
    pub instances_per_plugin: usize,
    /// Instance slots in the pooling allocator, for all plugins together.
    pub pool_size: u32,
}

impl Default for HostOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { cache_dir: None, instances_per_plugin: cores.clamp(1, 8), pool_size: 128 }
    }
}

/// Plugins ready to serve, by name.
#[derive(Clone, Debug, Default)]
pub struct Plugins {
    by_name: HashMap<String, Arc<Plugin>>,
}

impl Plugins {
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The WASM host; cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("cache_dir", &self.inner.cache.dir()).finish_non_exhaustive()
    }
}

/// What a plugin name keeps across reloads.
type PerName = (Arc<SharedData>, Arc<GuestMetrics>);

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    linked: HashSet<(String, String)>,
    cache: ModuleCache,
    metrics: HostMetrics,
    options: HostOptions,
    /// Per plugin name: shared data and guest metrics, kept across reloads.
    per_name: Mutex<HashMap<String, PerName>>,
    /// The plugins of the last prepare, reused when their spec and module are unchanged.
    current: Mutex<HashMap<String, (WasmPlugin, Arc<Plugin>)>>,
    /// Every plugin prepared and not dropped, for the ticker.
    live: Arc<Mutex<Vec<Weak<Plugin>>>>,
    /// The client of every plugin's HTTP calls.
    calls: CallClient,
}

impl Host {
    /// Builds the engine (pooling allocator, epoch interruption), links the ABI and starts the
    /// epoch and ticker threads. Metrics register under `gatehouse_wasm_`.
    pub fn new(options: HostOptions, registry: &mut Registry) -> Result<Self, WasmError> {
        Self::with_metrics(options, HostMetrics::register(registry))
    }

    /// As [`Host::new`], with metrics that are not exported (tests, tools).
    pub fn unregistered(options: HostOptions) -> Result<Self, WasmError> {
        Self::with_metrics(options, HostMetrics::default())
    }

    /// As [`Host::new`], with metrics registered beforehand ([`HostMetrics::register`]).
    pub fn with_metrics(options: HostOptions, metrics: HostMetrics) -> Result<Self, WasmError> {
        let engine_err = |e: wasmtime::Error| WasmError::Engine(format!("{e:#}"));
        let engine = pooled_engine(options.pool_size).map_err(engine_err)?;
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).map_err(engine_err)?;
        let linked = linked_names(&linker, &engine);
        if let Some(dir) = &options.cache_dir {
            create_private_dir(dir)?;
        }
        let cache = ModuleCache::new(engine.clone(), options.cache_dir.clone());
        let live: Arc<Mutex<Vec<Weak<Plugin>>>> = Arc::default();
        let inner = Arc::new(Inner {
            engine,
            linker,
            linked,
            cache,
            metrics,
            options,
            per_name: Mutex::default(),
            current: Mutex::default(),
            live,
            calls: CallClient::default(),
        });
        spawn_epoch(Arc::downgrade(&inner));
        spawn_ticker(Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Prepares every plugin: reads or fetches its module, compiles it (or takes it from the
    /// cache) and starts a first instance with its configuration. Unchanged plugins are
    /// reused as they are. Every failure is returned with its plugin's name; on any failure
    /// nothing changes. The root contexts' HTTP calls run on the runtime this is called on.
    pub async fn prepare(&self, specs: &[WasmPlugin]) -> Result<Plugins, Vec<(String, WasmError)>> {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle,
            Err(e) => {
                let error = || WasmError::Engine(format!("prepare needs a tokio runtime: {e}"));
                return Err(specs.iter().map(|s| (s.name.clone(), error())).collect());
            }
        };
        let mut errors = Vec::new();
        let mut by_name = HashMap::new();
        let mut prepared = Vec::new();
        for spec in specs {
            let loaded = crate::source::load(&spec.module, self.inner.cache.dir()).await;
            let (wasm, digest) = match loaded {
                Ok(l) => l,
                Err(e) => {
                    errors.push((spec.name.clone(), e));
                    continue;
                }
            };
            let reuse = self.inner.current.lock().get(&spec.name).and_then(|(old, plugin)| {
                (old == spec && plugin.digest() == digest).then(|| plugin.clone())
            });
            let plugin = match reuse {
                Some(p) => Ok(p),
                None => {
                    let host = self.clone();
                    let spec = spec.clone();
                    let digest = digest.clone();
                    let runtime = runtime.clone();
                    tokio::task::spawn_blocking(move || host.build(&spec, &wasm, digest, runtime))
                        .await
                        .unwrap_or_else(|e| Err(WasmError::Engine(format!("compile task: {e}"))))
                }
            };
            match plugin {
                Ok(p) => {
                    prepared.push(digest);
                    by_name.insert(spec.name.clone(), (spec.clone(), p));
                }
                Err(e) => errors.push((spec.name.clone(), e)),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.inner.cache.retain(&prepared);
        let plugins = by_name.iter().map(|(n, (_, p))| (n.clone(), p.clone())).collect();
        *self.inner.current.lock() = by_name;
        Ok(Plugins { by_name: plugins })
    }

    /// Compiles (or loads) and starts one plugin; blocking.
    fn build(
        &self,
        spec: &WasmPlugin,
        wasm: &[u8],
        digest: String,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<Plugin>, WasmError> {
        let inner = &self.inner;
        let mut upstreams = HashMap::new();
        for u in &spec.upstreams {
            let upstream = CallUpstream::new(u).map_err(|e| WasmError::Upstream {
                upstream: u.name.clone(),
                message: e.to_string(),
            })?;
            upstreams.insert(u.name.clone(), Arc::new(upstream));
        }
        let (module, outcome) = inner.cache.module(wasm, &digest)?;
        inner.metrics.module(outcome.label());
        if outcome == CacheOutcome::Compiled {
            tracing::info!(plugin = %spec.name, digest = %digest, "compiled wasm module");
        }
        let has_abi = module.exports().any(|e| e.name().starts_with("proxy_abi_version_0_2_"));
        if !has_abi {
            return Err(WasmError::Abi("no proxy_abi_version_0_2_1 or _0_2_0 export".into()));
        }
        let mut linker = inner.linker.clone();
        abi::unimplemented::link_stubs(&mut linker, &inner.linked, &module)?;
        let pre =
            linker.instantiate_pre(&module).map_err(|e| WasmError::Import(format!("{e:#}")))?;
        let (shared_data, guest_metrics) = inner
            .per_name
            .lock()
            .entry(spec.name.clone())
            .or_insert_with(|| {
                (Arc::default(), GuestMetrics::new(&spec.name, inner.metrics.guest.clone()))
            })
            .clone();
        let shared = Arc::new(PluginShared {
            name: spec.name.clone(),
            config: spec.config.as_bytes().to_vec(),
            vm_config: Vec::new(),
            memory_limit: usize::try_from(spec.memory_limit)
                .unwrap_or(usize::MAX)
                .min(MAX_INSTANCE_MEMORY),
            body_limit: BODY_LIMIT,
            shared_data,
            metrics: guest_metrics,
            host_metrics: inner.metrics.clone(),
            upstreams,
            calls: inner.calls.clone(),
        });
        // The first tick may come at once: one more than the timeout's ticks, rounded up, so a
        // callback always gets at least its timeout (and at most one tick more).
        let ticks = spec.timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        let plugin = Plugin::new(Settings {
            engine: inner.engine.clone(),
            pre,
            shared,
            instances: inner.options.instances_per_plugin,
            policy: spec.failure_policy,
            deadline_ticks: ticks,
            digest,
            runtime,
        })?;
        let mut live = inner.live.lock();
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&plugin));
        Ok(plugin)
    }
}

/// The fewest pool slots the host shrinks to when the address space is short.
const MIN_POOL_SIZE: u32 = 8;

/// An engine with a pooling allocator of `pool_size` slots. Each slot reserves address space
/// for a whole memory (several GiB); where that much cannot be reserved (a `ulimit -v`, or
/// valgrind's smaller address space), the pool is halved, with a warning, down to
/// [`MIN_POOL_SIZE`] slots.
fn pooled_engine(pool_size: u32) -> wasmtime::Result<Engine> {
    let mut size = pool_size.max(1);
    loop {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(size)
            .total_memories(size)
            .total_tables(size)
            .max_memory_size(MAX_INSTANCE_MEMORY);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => {
                if size < pool_size {
                    tracing::warn!(
                        asked = pool_size,
                        slots = size,
                        "wasm instance pool shrunk to fit the address space"
                    );
                }
                return Ok(engine);
            }
            Err(e) if size > MIN_POOL_SIZE => {
                tracing::debug!(slots = size, error = %format!("{e:#}"), "wasm instance pool too large");
                size = (size / 2).max(MIN_POOL_SIZE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every (module, name) pair the linker defines, so the rest can be stubbed.
fn linked_names(linker: &Linker<HostState>, engine: &Engine) -> HashSet<(String, String)> {
    let shared = Arc::new(PluginShared {
        name: String::new(),
        config: Vec::new(),
        vm_config: Vec::new(),
        memory_limit: 0,
        body_limit: 0,
        shared_data: Arc::default(),
        metrics: GuestMetrics::new("", Default::default()),
        host_metrics: HostMetrics::default(),
        upstreams: HashMap::new(),
        calls: CallClient::default(),
    });
    let mut store = wasmtime::Store::new(engine, HostState::new(shared));
    linker.iter(&mut store).map(|(m, n, _)| (m.to_owned(), n.to_owned())).collect()
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), WasmError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| WasmError::Read { path: dir.display().to_string(), source };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)
}

/// Advances the engine's epoch every [`EPOCH_TICK`]; ends when the host is dropped. Its own
/// thread, running no guest code: a callback that never returns (even on the ticker) is still
/// stopped at its deadline.
fn spawn_epoch(host: Weak<Inner>) {
    let spawned = std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            let Some(inner) = host.upgrade() else { return };
            inner.engine.increment_epoch();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the wasm epoch thread: plugin deadlines will not fire");
    }
}

/// Every [`TICKER_ROUND`], runs the root contexts' side of every live plugin (due
/// `proxy_on_tick`s, answers to their HTTP calls; see [`Plugin::tick_due`]); ends when the
/// host is dropped. It runs guest callbacks (under their deadlines) but never waits on I/O:
/// the calls themselves run on the async runtime.
fn spawn_ticker(host: Weak<Inner>) {
    let spawned = std::thread::Builder::new().name("wasm-ticker".into()).spawn(move || {
        loop {
            std::thread::sleep(TICKER_ROUND);
            let Some(inner) = host.upgrade() else { return };
            let live: Vec<Arc<Plugin>> =
                inner.live.lock().iter().filter_map(Weak::upgrade).collect();
            drop(inner);
            for plugin in live {
                plugin.tick_due();
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the wasm ticker: proxy_on_tick will not run");
    }
}
