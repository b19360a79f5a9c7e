//! The shared engine: one wasmtime `Engine`, one linker, one epoch ticker, and the observers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmcage_events::{CompileEvent, Event, ModuleHash, ModuleInfo, NoopObserver, Observer};
use wasmtime::{InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

use crate::cache::{CacheConfig, CacheStats, ModuleCache};
use crate::module::{Compiled, Module};
use crate::precheck::CompileLimits;
use crate::store::StoreState;
use crate::worker::CompileWorker;
use crate::{Error, wasi_guard};

/// How the engine is built. The defaults suit untrusted code; see each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// The most wasm stack a guest may use, in bytes (default 512 KiB). Deeper recursion ends
    /// in the `stack_overflow` outcome. wasmtime fixes this per engine, not per execution.
    pub max_wasm_stack: usize,
    /// Whether the engine meters fuel (default on). Metering costs a little speed; without
    /// it, [`Limits::fuel`](crate::Limits::fuel) cannot be enforced and is rejected.
    pub consume_fuel: bool,
    /// How often the epoch ticks (default 1 ms): the resolution of wall-clock timeouts.
    pub epoch_tick: Duration,
    /// Whether compilation uses all cores (default on).
    pub parallel_compilation: bool,
    /// The module cache: its size in memory and its directory on disk.
    pub cache: CacheConfig,
    /// wasmtime's pooling instance allocator (default on): instance slots reserved up front
    /// and reused, with copy-on-write memory images, so that instantiation costs
    /// microseconds. `None` allocates every instance on demand.
    pub pooling: Option<PoolingConfig>,
    /// What the engine agrees to compile; a module beyond these bounds is refused before
    /// any compiling with [`Error::ModuleTooLarge`].
    pub compile_limits: CompileLimits,
    /// Compile in a child process under a budget of time and memory (default: in this
    /// process, bounded by `compile_limits` only). See [`CompileWorker`].
    pub compile_worker: Option<CompileWorker>,
}

/// Sizes of the pooling allocator's slots, fixed when the engine is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolingConfig {
    /// Instances (and memories, and tables) that may exist at once across the engine
    /// (default 256). Each memory slot reserves address space, not memory.
    pub total_instances: u32,
    /// The largest linear memory a slot can hold (default 4 GiB); a sandbox's memory limit
    /// may be lower, never higher.
    pub max_memory_bytes: u64,
    /// The most elements a table slot can hold (default 20 000).
    pub table_elements: u32,
    /// The most linear memories one module may define (default 4); a sandbox's
    /// `Limits::memories` may be lower.
    pub max_memories_per_module: u32,
    /// The most tables one module may define (default 10); a sandbox's `Limits::tables`
    /// may be lower.
    pub max_tables_per_module: u32,
}

impl Default for PoolingConfig {
    fn default() -> Self {
        PoolingConfig {
            total_instances: 256,
            max_memory_bytes: 4 << 30,
            table_elements: 20_000,
            max_memories_per_module: 4,
            max_tables_per_module: 10,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_wasm_stack: 512 * 1024,
            consume_fuel: true,
            epoch_tick: Duration::from_millis(1),
            parallel_compilation: true,
            cache: CacheConfig::default(),
            pooling: Some(PoolingConfig::default()),
            compile_limits: CompileLimits::default(),
            compile_worker: None,
        }
    }
}

/// The compilation and execution engine, shared by every sandbox of a process.
///
/// Cloning is cheap and shares everything. Create one per process (or per distinct
/// configuration) and hand clones to the sandboxes; modules compiled by one engine only run
/// in sandboxes of the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) wasmtime: wasmtime::Engine,
    pub(crate) linker: Linker<StoreState>,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) config: EngineConfig,
    cache: ModuleCache,
    /// An empty directory, made on first use and removed with the engine; see
    /// [`Engine::empty_dir`].
    empty_dir: std::sync::OnceLock<Result<tempfile::TempDir, String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with this configuration and no observers.
    pub fn new(config: EngineConfig) -> Result<Self, Error> {
        Self::with_observer(config, Arc::new(NoopObserver))
    }

    /// An engine with this configuration whose events go to `observer` (use
    /// [`FanOut`](wasmcage_events::FanOut) for several).
    pub fn with_observer(config: EngineConfig, observer: Arc<dyn Observer>) -> Result<Self, Error> {
        if config.epoch_tick.is_zero() {
            return Err(Error::Config(
                "the epoch tick must be longer than zero".into(),
            ));
        }
        let mut wt = wasmtime::Config::new();
        wt.consume_fuel(config.consume_fuel)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .parallel_compilation(config.parallel_compilation);
        if let Some(pool) = &config.pooling {
            let mut p = PoolingAllocationConfig::new();
            p.total_core_instances(pool.total_instances)
                .total_memories(pool.total_instances)
                .total_tables(pool.total_instances)
                .max_memory_size(usize::try_from(pool.max_memory_bytes).unwrap_or(usize::MAX))
                .table_elements(pool.table_elements as usize)
                .max_memories_per_module(pool.max_memories_per_module)
                .max_tables_per_module(pool.max_tables_per_module);
            wt.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
        }
        let wasmtime = wasmtime::Engine::new(&wt).map_err(|e| {
            Error::Config(format!("wasmtime rejected the engine configuration: {e}"))
        })?;

        let mut linker = Linker::new(&wasmtime);
        // Modules that import WASI get their context before instantiation; `wasi()` still
        // answers with an empty, grant-nothing context rather than panic should one be absent.
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, StoreState::wasi)
            .map_err(|e| Error::Internal(format!("cannot link WASI: {e}")))?;
        wasi_guard::install(&mut linker)
            .map_err(|e| Error::Internal(format!("cannot install the WASI guard: {e}")))?;

        let cache = ModuleCache::new(config.cache.clone(), &wasmtime)
            .map_err(|e| Error::Config(format!("cannot create the module cache directory: {e}")))?;
        spawn_epoch_ticker(&wasmtime, config.epoch_tick);
        Ok(Engine {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                observer,
                config,
                cache,
                empty_dir: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The observer every execution on this engine reports to.
    pub fn observer(&self) -> Arc<dyn Observer> {
        self.inner().observer.clone()
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn inner(&self) -> &EngineInner {
        &self.inner
    }

    /// The engine's one empty directory, preopened read-only as the scratch directory of
    /// modules that cannot reach into a directory (so none is made and removed per run).
    pub(crate) fn empty_dir(&self) -> Result<&std::path::Path, Error> {
        self.inner
            .empty_dir
            .get_or_init(|| {
                tempfile::Builder::new()
                    .prefix("wasmcage-empty-")
                    .tempdir()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map(tempfile::TempDir::path)
            .map_err(|e| Error::Internal(format!("cannot create an empty directory: {e}")))
    }

    /// Compiles a module from WebAssembly binary or WAT text.
    ///
    /// Malformed or invalid input is an [`Error::InvalidModule`] that says what is wrong,
    /// a foreign import an [`Error::UnsupportedImport`], a module past the compile limits or
    /// budget an [`Error::ModuleTooLarge`]; observers see one `ModuleRejected` event for each
    /// of these (and for nothing else: a module found in the cache or compiled is not a
    /// rejection), and a `ModuleCompiled` event when it was compiled.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Module, Error> {
        self.inner
            .observer
            .on_event(&Event::CompileStarted { name });
        let result = self.compile_inner(name, bytes);
        if let Err(
            e @ (Error::InvalidModule { .. }
            | Error::UnsupportedImport { .. }
            | Error::ModuleTooLarge { .. }),
        ) = &result
        {
            let reason = match e {
                Error::InvalidModule { reason, .. } => reason.clone(),
                other => other.to_string(),
            };
            self.inner.observer.on_event(&Event::ModuleRejected {
                name,
                reason: &reason,
            });
        }
        result
    }

    fn compile_inner(&self, name: &str, bytes: &[u8]) -> Result<Module, Error> {
        let invalid = |reason: String| Error::InvalidModule {
            name: name.to_owned(),
            reason,
        };
        let limits = &self.inner.config.compile_limits;
        // Large WAT text is refused before it is parsed, the binary again by the scan.
        crate::precheck::check_size(name, bytes, limits)?;
        let binary = wat::parse_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
        let scan = crate::precheck::scan(name, &binary, limits)?;
        let hash = ModuleHash(Sha256::digest(&binary).into());
        let info = ModuleInfo::new(name, hash);
        let inner = &*self.inner;
        let size = binary.len() as u64;
        // A cached module passed the import check when it was first compiled; should it
        // fail now, the cache treats it as a bad entry and we compile afresh below.
        let cached = inner
            .cache
            .get(&info, &inner.wasmtime, &*inner.observer, |module| {
                Compiled::new(module, info.clone(), size, scan)
                    .ok()
                    .map(Arc::new)
            });
        if let Some(compiled) = cached {
            return Ok(Module::new(self, info, compiled));
        }
        let start = Instant::now();
        let module = match &inner.config.compile_worker {
            None => wasmtime::Module::from_binary(&inner.wasmtime, &binary)
                .map_err(|e| invalid(crate::classify::chain(&e)))?,
            Some(worker) => {
                // Validation is linear and cheap; only valid modules go to the worker, so
                // that a worker's failure can only mean the budget ran out.
                wasmtime::Module::validate(&inner.wasmtime, &binary)
                    .map_err(|e| invalid(crate::classify::chain(&e)))?;
                let payload =
                    crate::worker::compile(worker, inner.config.consume_fuel, name, &binary)?;
                crate::cache::deserialize(&inner.wasmtime, &payload).ok_or_else(|| {
                    Error::Internal("the compile worker's code does not match this engine".into())
                })?
            }
        };
        let event = CompileEvent {
            module: info.clone(),
            size_bytes: size,
            duration: start.elapsed(),
        };
        inner.observer.on_event(&Event::ModuleCompiled(&event));
        let compiled = Arc::new(Compiled::new(module, info.clone(), size, scan)?);
        inner.cache.put(&info, compiled.clone(), &*inner.observer);
        Ok(Module::new(self, info, compiled))
    }

    /// The in-memory module cache's current size.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Forgets a compiled module: drops it from the in-memory cache and deletes its
    /// serialized code from the disk cache, so that a module its owner deleted leaves no
    /// native code behind. `Module` handles already held keep working.
    pub fn forget(&self, hash: &ModuleHash) -> std::io::Result<()> {
        self.inner.cache.forget(hash)
    }

    /// Reads and compiles a `.wasm` or `.wat` file; the module is named after the file.
    pub fn compile_file(&self, path: &std::path::Path) -> Result<Module, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadModule {
            path: path.to_owned(),
            source,
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.compile(&name, &bytes)
    }
}

/// The content hash a module compiled from `bytes` (wasm or WAT) will have, without
/// compiling it: the SHA-256 of its binary. Malformed text is an [`Error::InvalidModule`].
pub fn module_hash(bytes: &[u8]) -> Result<ModuleHash, Error> {
    let binary = wat::parse_bytes(bytes).map_err(|e| Error::InvalidModule {
        name: "module".into(),
        reason: e.to_string(),
    })?;
    Ok(ModuleHash(Sha256::digest(&binary).into()))
}

/// Starts the thread that advances the engine's epoch. It holds only a weak reference, so
/// it ends by itself once the engine is dropped.
fn spawn_epoch_ticker(engine: &wasmtime::Engine, tick: Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasmcage-epoch".into())
        .spawn(move || {
            // The epoch follows the clock, not the number of wake-ups: on a loaded machine
            // this thread wakes late, and ticking once per wake-up would stretch every
            // timeout by the load factor. Each wake-up advances the epoch by the ticks that
            // really elapsed.
            let zero = Instant::now();
            let mut epoch: u128 = 0;
            loop {
                std::thread::sleep(tick);
                let Some(engine) = weak.upgrade() else {
                    break;
                };
                let due = zero.elapsed().as_nanos() / tick.as_nanos().max(1);
                while epoch < due {
                    engine.increment_epoch();
                    epoch += 1;
                }
            }
        });
    // Without the ticker timeouts would never fire; failing to spawn a thread at startup
    // means the process is out of resources, and carrying on would be unsafe.
    spawned.expect("spawn the epoch ticker thread");
}
