//! The `/v1` API: state, routes, handlers, errors and authentication.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use wasmcage::events::TraceParent;
use wasmcage::health::HealthMonitor;
use wasmcage::metrics::Metrics;
use wasmcage::monitoring::{self, Monitoring};
use wasmcage::{
    CommandInput, Engine, EngineConfig, Limits, Module, MonitoringConfig, OnExhausted, Policy,
    PoolConfig, Profile, Sandbox, Value, WarmPool, Wasmcage,
};

use crate::store::{self, Store};

mod lang;
use crate::{ServerConfig, ServerError};
pub(crate) use lang::load as load_runtimes;

/// Token buckets per API key, under a limit that `SIGHUP` may change (or remove).
struct RateLimiter {
    limit: RwLock<Option<crate::config::RateLimit>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Takes a token for `who`, or says how long until one is free.
    fn take(&self, who: &str) -> Result<(), Duration> {
        let Some(limit) = *self.limit.read().unwrap_or_else(PoisonError::into_inner) else {
            return Ok(());
        };
        self.take_under(limit, who)
    }

    fn take_under(&self, limit: crate::config::RateLimit, who: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(limit.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * limit.per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            // Saturating: a tiny rate must never turn into a panic on an infinite duration.
            let wait = (1.0 - *tokens) / limit.per_second;
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
        }
    }
}

/// Failed authentications per client address, in fixed windows.
struct AuthThrottle {
    config: crate::config::AuthThrottle,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Entries kept before expired ones are swept.
    const SWEEP_AT: usize = 4096;
    /// Addresses tracked at most, so that an attacker with very many addresses cannot grow
    /// the table without bound; past it, new addresses are not tracked until entries expire
    /// (each address still gets no more than its own guesses per window).
    const MAX_TRACKED: usize = 65_536;

    /// `Err(wait)` while `ip` has failed too often in its current window.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(&ip) {
            Some(&(count, since)) if count >= self.config.max_failures => {
                let elapsed = since.elapsed();
                if elapsed < self.config.window {
                    Err(self.config.window - elapsed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn fail(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let window = self.config.window;
        if failures.len() >= Self::SWEEP_AT && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| since.elapsed() < window);
            if failures.len() >= Self::MAX_TRACKED {
                return;
            }
        }
        let now = Instant::now();
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// Bounds on what runs at once: execution slots (global and per key) and a memory budget,
/// counted in 64 KiB wasm pages.
struct Admission {
    config: crate::config::Admission,
    /// For the gauge of executions waiting for admission.
    metrics: Arc<Metrics>,
    global: Arc<Semaphore>,
    per_key: Mutex<HashMap<String, Arc<Semaphore>>>,
    memory: Arc<Semaphore>,
    memory_pages: u32,
}

/// What an admitted execution holds until it ends (or its request is dropped).
#[allow(dead_code)] // Held for their `Drop`, never read.
struct Admitted(
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
    OwnedSemaphorePermit,
);

const PAGE: u64 = 64 << 10;

fn pages(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(PAGE)).unwrap_or(u32::MAX)
}

impl Admission {
    fn new(config: crate::config::Admission, metrics: Arc<Metrics>) -> Self {
        // Semaphores hold at most `Semaphore::MAX_PERMITS`, far above u32::MAX pages.
        let memory_pages = pages(config.memory_budget);
        Admission {
            config,
            metrics,
            global: Arc::new(Semaphore::new(config.max_executions)),
            per_key: Mutex::default(),
            memory: Arc::new(Semaphore::new(memory_pages as usize)),
            memory_pages,
        }
    }

    /// Waits up to the configured time for a slot of `who`'s, a global slot and
    /// `memory_bytes` of the budget; or says why not.
    async fn admit(&self, who: &str, memory_bytes: u64) -> Result<Admitted, ApiError> {
        let key = self
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(who.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_executions_per_key)))
            .clone();
        // A request never needs more than the whole budget; validation keeps the largest
        // memory limit inside it.
        let want = pages(memory_bytes).min(self.memory_pages);
        let busy = |what: String| ApiError::busy(what, 1);
        // Counted as queued from here until admitted, refused, or dropped with its request.
        let _queued = Queued::new(&self.metrics);
        let acquire = async {
            let k = key.clone().acquire_owned().await;
            let g = self.global.clone().acquire_owned().await;
            let m = self.memory.clone().acquire_many_owned(want).await;
            match (k, g, m) {
                (Ok(k), Ok(g), Ok(m)) => Ok(Admitted(k, g, m)),
                // The semaphores are never closed.
                _ => Err(busy("the server is shutting down".into())),
            }
        };
        match tokio::time::timeout(self.config.wait, acquire).await {
            Ok(admitted) => admitted,
            Err(_) if key.available_permits() == 0 => Err(busy(format!(
                "this API key already runs {} executions, the most it may; retry when one ends",
                self.config.max_executions_per_key
            ))),
            Err(_) => Err(busy(format!(
                "the server is at capacity ({} executions at once, {} MiB of memory limits); retry later",
                self.config.max_executions,
                self.config.memory_budget >> 20
            ))),
        }
    }

    /// Why no execution could start now, if none could.
    fn full(&self) -> Option<String> {
        if self.global.available_permits() == 0 {
            Some(format!(
                "all {} execution slots are in use",
                self.config.max_executions
            ))
        } else if self.memory.available_permits() == 0 {
            Some("the memory budget is used up".into())
        } else {
            None
        }
    }
}

/// One execution waiting for admission, in `wasmcage_executions_queued` while it lives.
struct Queued<'a>(&'a Metrics);

impl<'a> Queued<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.executions_queued(1);
        Queued(metrics)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.executions_queued(-1);
    }
}

/// The warm pools of stored modules, by module id.
#[derive(Default)]
struct PoolTable {
    by_id: HashMap<String, WarmPool>,
    /// Pools made by `every_module` (not named in the configuration), and reservations for
    /// ones being made.
    automatic: usize,
}

/// A module the service knows: compiling (after an upload or at start), or ready.
#[derive(Clone)]
enum Slot {
    Compiling {
        name: String,
        size: u64,
        /// Becomes `Some` once the compile (and the store) ended, either way.
        done: watch::Receiver<Option<Result<(), ApiError>>>,
    },
    Ready(Module),
}

/// What one API key has stored, by the key's digest; the store's `.owners` files keep it
/// across restarts.
#[derive(Default)]
struct Account {
    modules: BTreeSet<String>,
    bytes: u64,
}

/// Who made a request: its API key, or `anonymous` when the server has no keys.
#[derive(Clone)]
pub(crate) struct Caller(Arc<str>);

/// A request the server makes to itself for a caller it has already authenticated and
/// charged: an MCP tool call over HTTP (see `mcp`). Only extensions carry it, and nothing
/// a client sends becomes an extension.
#[derive(Clone)]
pub(crate) struct Internal(pub(crate) Caller);

/// Everything the handlers share.
pub(crate) struct State {
    limiter: RateLimiter,
    throttle: AuthThrottle,
    admission: Admission,
    pub(crate) config: ServerConfig,
    engine: Engine,
    modules: RwLock<BTreeMap<String, Slot>>,
    accounts: Mutex<HashMap<String, Account>>,
    store: Store,
    /// Serializes writes and removals in the store with the map updates that go with them,
    /// so that a delete and a concurrent upload of the same bytes cannot interleave.
    store_lock: tokio::sync::Mutex<()>,
    /// Request bodies held in memory, in KiB: see `ServerConfig::max_body_memory`.
    body_memory: Arc<Semaphore>,
    compiles: Arc<Semaphore>,
    compiles_per_key: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    /// One WAT parse at a time per key: parsing costs CPU like a small compile, but has its
    /// own slot so that identical uploads can still wait for one compile together.
    parses_per_key: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    pub(crate) health: Arc<HealthMonitor>,
    pub(crate) metrics: Arc<Metrics>,
    /// Every layer, composed by the facade: the engine, metrics and tracing observers, the
    /// health monitor with its canary, and the alert engine. Its sandbox is the server's
    /// default one, which warm pools run under.
    pub(crate) cage: Wasmcage,
    pools: Mutex<PoolTable>,
    /// Set when shutdown begins: `/readyz` answers 503 and new `/v1` requests are refused
    /// while in-flight ones finish.
    pub(crate) draining: AtomicBool,
    /// The language runtimes, once loaded in the background (see `lang::load`).
    langs: lang::Loaded,
}

impl State {
    pub(crate) async fn new(config: ServerConfig) -> Result<Self, ServerError> {
        let body_kib = usize::try_from(config.max_body_memory.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let store = Store::new(
            config.data_dir.join("modules"),
            config.data_dir.join("quarantine"),
        )
        .map_err(|e| {
            ServerError::Start(format!(
                "cannot create {}: {e}",
                config.data_dir.join("modules").display()
            ))
        })?;
        let engine_config = EngineConfig {
            cache: wasmcage::core::CacheConfig {
                dir: Some(config.data_dir.join("cache")),
                ..Default::default()
            },
            compile_worker: config
                .compile_worker
                .clone()
                .map(|w| wasmcage::core::CompileWorker {
                    timeout: config.compile_timeout,
                    memory_bytes: config.compile_memory,
                    ..w
                }),
            ..EngineConfig::default()
        };
        let default_policy =
            request_policy(&config, None, None, &BTreeMap::new()).map_err(|e| {
                ServerError::Config(format!("the default sandbox is invalid: {}", e.message))
            })?;
        let mut builder = Wasmcage::builder()
            .engine(engine_config)
            // The sandbox of a request that asks for nothing narrower: the one pools use.
            .policy(default_policy)
            .health(config.health.monitor())
            .memory_limit(config.health.memory_limit.bytes())
            .health_check(Arc::new(wasmcage::health::DirectoryCheck::new(
                "disk",
                config.data_dir.clone(),
                config.health.min_free_disk,
                false,
            )))
            // The service mounts the monitoring routes on its own listener.
            .monitoring(MonitoringConfig {
                metrics_addr: None,
                health_addr: None,
                log_format: None,
                otlp_endpoint: None,
                alert_rules: None,
            });
        if let Some(rules) = config.load_alert_rules()? {
            builder = builder.alerts(rules);
        }
        let cage = builder
            .start()
            .await
            .map_err(|e| ServerError::Start(e.to_string()))?;
        let engine = cage.engine().clone();
        let metrics = cage.metrics().clone();
        let health = cage.health().clone();
        let limiter = RateLimiter {
            limit: RwLock::new(config.rate_limit),
            buckets: Default::default(),
        };
        Ok(State {
            limiter,
            throttle: AuthThrottle {
                config: config.auth_throttle,
                failures: Mutex::default(),
            },
            admission: Admission::new(config.admission, metrics.clone()),
            compiles: Arc::new(Semaphore::new(config.max_concurrent_compiles)),
            compiles_per_key: Mutex::default(),
            parses_per_key: Mutex::default(),
            config,
            engine,
            modules: RwLock::default(),
            accounts: Mutex::default(),
            store,
            store_lock: tokio::sync::Mutex::new(()),
            body_memory: Arc::new(Semaphore::new(body_kib)),
            health,
            metrics,
            cage,
            pools: Mutex::default(),
            draining: AtomicBool::new(false),
            langs: lang::Loaded::new(),
        })
    }

    /// Whether shutdown has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Gives a newly stored or loaded module its warm pool, if the configuration names it, or
    /// if `every_module` has room and the module is small enough. Blocking: the pool's ready
    /// instances are made here. A pool that cannot be made only means the module runs cold.
    fn add_pool(&self, id: &str, module: &Module) {
        let pools = &self.config.pools;
        let named = pools.named(id);
        let size = {
            let mut table = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            if table.by_id.contains_key(id) {
                return;
            }
            match named {
                Some(size) => size,
                None if table.automatic < pools.every_module
                    && module.size_bytes() <= pools.max_module_size =>
                {
                    table.automatic += 1;
                    pools.size
                }
                None => return,
            }
        };
        let made = self.cage.pool_with(
            module,
            PoolConfig {
                min_ready: size.min_ready,
                max_in_use: size.max_in_use,
                on_exhausted: OnExhausted::Wait(self.config.admission.wait),
            },
        );
        let mut table = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        match made {
            Ok(pool) => {
                table.by_id.insert(id.to_owned(), pool);
            }
            Err(e) => {
                if named.is_none() {
                    table.automatic -= 1;
                }
                drop(table);
                store::warn(&format!(
                    "no warm pool for module {id}: {e}; it runs without one"
                ));
            }
        }
    }

    /// Drops a deleted module's pool; executions still holding it finish first.
    fn drop_pool(&self, id: &str) {
        let mut table = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if table.by_id.remove(id).is_some() && self.config.pools.named(id).is_none() {
            table.automatic -= 1;
        }
    }

    /// `id`'s warm pool, if it has one and its sandbox is exactly `policy`: a request whose
    /// sandbox differs in anything (a narrower profile, a lower limit, an environment) runs
    /// cold under its own, never under the pool's wider one.
    fn pool_for(&self, id: &str, policy: &Policy) -> Option<WarmPool> {
        let table = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let pool = table.by_id.get(id)?;
        // A full pool is no reason to wait: the request runs cold instead (admission already
        // bounds what runs at once), so that one key holding every slot of a pool shared by
        // all the keys that stored the module cannot make another key's request wait or fail.
        let stats = pool.stats();
        (pool.sandbox().policy() == policy && stats.in_use < stats.max).then(|| pool.clone())
    }

    /// Publishes the stored-module gauges from the module map.
    fn publish_stored(&self) {
        let modules = self.modules.read().expect("module map lock");
        let bytes = modules
            .values()
            .map(|slot| match slot {
                Slot::Ready(m) => m.size_bytes(),
                Slot::Compiling { size, .. } => *size,
            })
            .sum();
        let count = modules.len() as u64;
        drop(modules);
        self.metrics.set_modules_stored(count, bytes);
    }

    /// Applies what `SIGHUP` may change from a re-read configuration: the rate limit, and the
    /// alert rules file (a valid file replaces the rules and channels without dropping a
    /// request; an invalid one is refused with the reason in the log, and the rules in force
    /// stay). Every other key keeps its value until a restart, which the log says.
    pub(crate) fn apply_reload(&self, fresh: &ServerConfig) {
        *self
            .limiter
            .limit
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh.rate_limit;
        self.reload_alerts(fresh);
        let mut rest = fresh.clone();
        rest.rate_limit = self.config.rate_limit;
        rest.alert_rules.clone_from(&self.config.alert_rules);
        rest.logging.clone_from(&self.config.logging);
        if fresh.api_keys != self.config.api_keys {
            tracing::warn!(
                target: "wasmcage::server",
                "SIGHUP: api_keys changed, which takes a restart: until then the keys in force (a removed one included) stay valid"
            );
        }
        if rest.to_toml() != self.config.to_toml() {
            tracing::warn!(
                target: "wasmcage::server",
                "SIGHUP: only rate_limit, [logging] level and the alert rules change while running; the other changed keys take effect at the next start"
            );
        }
        tracing::info!(target: "wasmcage::server", "configuration reloaded");
    }

    fn reload_alerts(&self, fresh: &ServerConfig) {
        let Some(path) = &fresh.alert_rules else {
            if self.config.alert_rules.is_some() {
                tracing::warn!(target: "wasmcage::alert", "SIGHUP: alert_rules was removed, which takes a restart; the rules in force stay");
            }
            return;
        };
        let Some(alerting) = self.cage.alerting() else {
            tracing::warn!(target: "wasmcage::alert", "SIGHUP: alert_rules was not set at start; restart to enable alerting");
            return;
        };
        let reloaded = fresh.load_alert_rules().and_then(|rules| match rules {
            Some(rules) => alerting
                .reload(rules)
                .map_err(|e| ServerError::Config(e.to_string())),
            None => Ok(()),
        });
        match reloaded {
            Ok(()) => {
                tracing::info!(target: "wasmcage::alert", path = %path.display(), "alert rules reloaded")
            }
            Err(e) => tracing::error!(
                target: "wasmcage::alert",
                path = %path.display(),
                error = %e,
                "alert rules not reloaded; the rules in force stay"
            ),
        }
    }

    /// Lists the store (quarantining what does not belong) and marks each module compiling;
    /// the returned task verifies and compiles them in the background, at most
    /// `max_concurrent_compiles` at once, so that the server listens at once.
    pub(crate) fn reload(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let stored = self.store.scan();
        let mut senders = Vec::with_capacity(stored.len());
        {
            let mut modules = self.modules.write().expect("module map lock");
            for s in stored {
                let (tx, rx) = watch::channel(None);
                modules.insert(
                    s.id.clone(),
                    Slot::Compiling {
                        name: s.name.clone(),
                        size: s.size,
                        done: rx,
                    },
                );
                senders.push((s, tx));
            }
        }
        self.publish_stored();
        let state = self.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (s, tx) in senders {
                let state = state.clone();
                tasks.spawn(async move {
                    let Ok(_permit) = state.compiles.clone().acquire_owned().await else {
                        return;
                    };
                    let loader = state.clone();
                    let id = s.id.clone();
                    let loaded = tokio::task::spawn_blocking(move || {
                        let bytes = loader.store.verify(&s.id)?;
                        match loader.engine.compile(&s.name, &bytes) {
                            Ok(module) => {
                                loader.add_pool(&s.id, &module);
                                Some(module)
                            }
                            Err(e) => {
                                // Only a file this server wrote can be here, and it compiled
                                // then; one that no longer does is kept aside, not served.
                                loader.store.quarantine_module(&s.id, &e.to_string());
                                None
                            }
                        }
                    })
                    .await
                    .ok()
                    .flatten();
                    let mut modules = state.modules.write().expect("module map lock");
                    match loaded {
                        Some(module) => {
                            let size = module.size_bytes();
                            modules.insert(id.clone(), Slot::Ready(module));
                            drop(modules);
                            // Quotas count what each key stored before the restart.
                            let owners = state.store.owners(&id);
                            let mut accounts = state
                                .accounts
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner);
                            for owner in owners {
                                let account = accounts.entry(owner).or_default();
                                if account.modules.insert(id.clone()) {
                                    account.bytes += size;
                                }
                            }
                            drop(accounts);
                            let _ = tx.send(Some(Ok(())));
                        }
                        None => {
                            modules.remove(&id);
                            drop(modules);
                            state.publish_stored();
                            let _ = tx.send(Some(Err(unknown_module(&id))));
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }

    fn slot(&self, id: &str) -> Option<Slot> {
        self.modules
            .read()
            .expect("module map lock")
            .get(id)
            .cloned()
    }

    /// Whether `who` may see and use module `id`. With API keys, a module belongs to the keys
    /// that uploaded it (the same bytes uploaded by two keys belong to both); another key
    /// is answered as if it did not exist. Without keys there is one tenant.
    fn owns(&self, who: &str, id: &str) -> bool {
        if self.config.api_keys.is_empty() {
            return true;
        }
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&owner_of(who))
            .is_some_and(|a| a.modules.contains(id))
    }

    /// A module of `who`'s ready to run, or 404, or 503 while it compiles.
    fn owned_module(&self, who: &str, id: &str) -> Result<Module, ApiError> {
        if !self.owns(who, id) {
            return Err(unknown_module(id));
        }
        self.module(id)
    }

    /// A module ready to run, or 404, or 503 while it compiles.
    fn module(&self, id: &str) -> Result<Module, ApiError> {
        match self.slot(id) {
            Some(Slot::Ready(m)) => Ok(m),
            Some(Slot::Compiling { .. }) => Err(compiling(id)),
            None => Err(unknown_module(id)),
        }
    }

    /// A sandbox under `policy`: a fresh instance per execution.
    fn sandbox(&self, policy: Policy) -> Result<Sandbox, ApiError> {
        Sandbox::builder(&self.engine)
            .policy(policy)
            .build()
            .map_err(|e| ApiError::bad("bad_limits", e.to_string()))
    }

    /// Adds `id` to `who`'s account, or refuses when that would pass the quota; `true` when
    /// `who` did not hold it yet.
    fn charge(&self, who: &Arc<str>, id: &str, size: u64) -> Result<bool, ApiError> {
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let account = accounts.entry(owner_of(who)).or_default();
        if account.modules.contains(id) {
            return Ok(false);
        }
        let quota = &self.config.quota;
        if account.modules.len() >= quota.max_modules {
            return Err(quota_exceeded(format!(
                "this API key stores {} modules, the most it may; delete one first",
                account.modules.len()
            )));
        }
        if account.bytes.saturating_add(size) > quota.max_bytes {
            return Err(quota_exceeded(format!(
                "this API key stores {} bytes of modules; {size} more would pass its quota of {} bytes; delete some first",
                account.bytes, quota.max_bytes
            )));
        }
        account.modules.insert(id.to_owned());
        account.bytes += size;
        Ok(true)
    }

    /// Takes `id` off every account that holds it (`only`: just that key's).
    fn refund(&self, id: &str, size: u64, only: Option<&Arc<str>>) {
        let only = only.map(|who| owner_of(who));
        let mut accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        for (owner, account) in accounts.iter_mut() {
            if only.as_ref().is_some_and(|o| o != owner) {
                continue;
            }
            if account.modules.remove(id) {
                account.bytes = account.bytes.saturating_sub(size);
            }
        }
    }

    /// The digests of the keys that hold `id`, sorted.
    fn owners(&self, id: &str) -> Vec<String> {
        let accounts = self.accounts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut owners: Vec<String> = accounts
            .iter()
            .filter(|(_, a)| a.modules.contains(id))
            .map(|(owner, _)| owner.clone())
            .collect();
        owners.sort();
        owners
    }

    /// Records `id`'s owners in the store, if it is still stored. A failure only weakens
    /// quota accounting after a restart, so it is a warning, not an error for the client.
    async fn save_owners(self: &Arc<Self>, id: &str) {
        let _store = self.store_lock.lock().await;
        if !matches!(self.slot(id), Some(Slot::Ready(_))) {
            return;
        }
        let (state, id, owners) = (self.clone(), id.to_owned(), self.owners(id));
        let saved = tokio::task::spawn_blocking(move || state.store.put_owners(&id, &owners)).await;
        if let Ok(Err(e)) = saved {
            store::warn(&format!("cannot record a module's owners: {e}"));
        }
    }

    /// `who`'s one slot in `slots`.
    fn key_slot(
        slots: &Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
        who: &Arc<str>,
    ) -> Arc<Semaphore> {
        slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(who.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone()
    }
}

/// The policy of a request: the server's profile or a narrower requested one, with limits no
/// higher than the profile's and the server's maxima. With nothing asked for, it is the
/// server's default sandbox, the one warm pools run under.
fn request_policy(
    config: &ServerConfig,
    profile: Option<&str>,
    limits: Option<&RequestLimits>,
    env: &BTreeMap<String, String>,
) -> Result<Policy, ApiError> {
    let profile = match profile {
        None => config.profile,
        Some(p) => {
            let requested = p
                .parse::<Profile>()
                .map_err(|e| ApiError::bad("bad_profile", e))?;
            if rank(requested) > rank(config.profile) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "policy_widening",
                    format!(
                        "this server runs the {} profile; a request may choose it or a narrower one (strict < standard < permissive), not {}",
                        config.profile.as_str(),
                        requested.as_str()
                    ),
                ));
            }
            requested
        }
    };
    let base = Policy::profile(profile);
    let ceiling = lower(&base.limits, &config.max_limits);
    let mut l = ceiling.clone();
    if let Some(r) = limits {
        if let Some(fuel) = r.fuel {
            l.fuel = Some(fuel);
        }
        if let Some(m) = &r.memory {
            l.memory_bytes =
                size(m).map_err(|e| ApiError::bad("bad_limits", format!("limits.memory: {e}")))?;
        }
        if let Some(ms) = r.timeout_ms {
            l.timeout = Duration::from_millis(ms);
        }
        if let Some(o) = &r.max_output {
            let o = size(o)
                .map_err(|e| ApiError::bad("bad_limits", format!("limits.max_output: {e}")))?;
            l.max_stdout_bytes = o;
            l.max_stderr_bytes = o;
        }
    }
    // A request can lower every limit, and raise none past its profile or the server.
    let clamped = lower(&l, &ceiling);
    let mut builder = base.to_builder().limits(clamped);
    for (key, value) in env {
        if !config.allowed_env.contains(key) {
            return Err(ApiError::bad(
                "env_not_allowed",
                format!(
                    "the server's policy does not allow setting the environment variable {key:?}"
                ),
            ));
        }
        builder = builder.env(key, value);
    }
    builder
        .build()
        .map_err(|e| ApiError::bad("bad_limits", e.to_string()))
}

/// The digest an API key is known by in the store: keys themselves never touch the disk.
fn owner_of(who: &str) -> String {
    store::hash_hex(who.as_bytes())
}

/// strict < standard < permissive: what each profile grants is a superset of the previous.
pub(crate) fn rank(p: Profile) -> u8 {
    match p {
        Profile::Strict => 0,
        Profile::Standard => 1,
        Profile::Permissive => 2,
    }
}

/// The lower of two optional limits, where `None` means unlimited.
fn lower_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Every limit at the lower of the two.
fn lower(a: &Limits, b: &Limits) -> Limits {
    Limits {
        memory_bytes: a.memory_bytes.min(b.memory_bytes),
        table_elements: a.table_elements.min(b.table_elements),
        instances: a.instances.min(b.instances),
        tables: a.tables.min(b.tables),
        memories: a.memories.min(b.memories),
        fuel: lower_opt(a.fuel, b.fuel),
        timeout: a.timeout.min(b.timeout),
        max_stdout_bytes: a.max_stdout_bytes.min(b.max_stdout_bytes),
        max_stderr_bytes: a.max_stderr_bytes.min(b.max_stderr_bytes),
        disk_bytes: lower_opt(a.disk_bytes, b.disk_bytes),
        // Either way the memory stays under the limit; the profile's choice stands.
        on_memory_limit: a.on_memory_limit,
    }
}

fn size(v: &Json_) -> Result<u64, String> {
    match v {
        Json_::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a size")),
        Json_::String(s) => wasmcage::core::policy::parse_size(s),
        other => Err(format!("{other} is not a size")),
    }
}

/// An error answer: a status and `{"error": {"code", "message"}}`, with `Retry-After` when
/// trying again later can help.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// The replica that holds what the request named (421 `wrong_replica`): the error's
    /// `replica` field and the `x-wasmcage-session-replica` header.
    replica: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            replica: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 500 `storage`: the store could not be written or changed.
    fn storage(what: &str, e: &std::io::Error) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage",
            format!("{what}: {e}"),
        )
    }

    fn busy(message: impl Into<String>, retry_after: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).retry_after(retry_after)
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

fn unknown_module(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_module",
        format!("no module with id {id:?}; upload it with POST /v1/modules"),
    )
}

fn compiling(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "module_compiling",
        format!("module {id} is still being compiled; retry shortly"),
    )
    .retry_after(1)
}

fn quota_exceeded(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", message)
}

/// Whole seconds to wait, at least one, saturating instead of overflowing.
fn seconds(d: Duration) -> u64 {
    d.as_secs()
        .saturating_add(u64::from(d.subsec_nanos() > 0))
        .max(1)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(replica) = &self.replica {
            error["replica"] = json!(replica);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(s) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, s.into());
        }
        if let Some(v) = self
            .replica
            .as_deref()
            .and_then(|r| header::HeaderValue::from_str(r).ok())
        {
            response.headers_mut().insert(SESSION_REPLICA_HEADER, v);
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

/// Every `/v1` response to an authenticated caller names the replica that answered it.
pub(crate) const REPLICA_HEADER: &str = "x-wasmcage-replica";

/// A 421 `wrong_replica` names the replica that holds the session.
pub(crate) const SESSION_REPLICA_HEADER: &str = "x-wasmcage-session-replica";

/// The API error code of an error response, for the access log and the error metrics.
#[derive(Clone, Copy)]
struct ErrorCode(&'static str);

/// The caller's API key, as the access log names it: a short hash, never the key.
#[derive(Clone)]
struct KeyId(Arc<str>);

/// The W3C trace context the caller sent, continued by the request's executions.
#[derive(Clone, Copy)]
pub(crate) struct CallerTrace(pub(crate) Option<TraceParent>);

/// The first 12 hex digits of the key's digest as the store knows it ([`owner_of`]).
fn key_id(key: &str) -> Arc<str> {
    owner_of(key)[..12].into()
}

/// 64 bits no two calls share in practice (a fresh `RandomState` is seeded per call), mixed
/// with `seed`: for ids, never for secrets.
fn random_u64(seed: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed);
    h.finish()
}

/// A process-unique request id: a random prefix chosen at start and a counter.
fn request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        random_u64(&now.to_le_bytes()) as u32
    });
    format!("{prefix:08x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A span id for the service's side of a continued trace, in the response's `traceparent`.
fn span_id(request: &str) -> [u8; 8] {
    random_u64(request.as_bytes()).max(1).to_be_bytes()
}

/// The outermost layer: the request id, the caller's trace context, the in-flight gauge, the
/// HTTP metrics and one access-log line per request.
async fn observe(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route: Arc<str> = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| Arc::from("unmatched"), |p| Arc::from(p.as_str()));
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    };
    // A malformed traceparent is ignored, as the W3C recommendation says: the request
    // starts no trace of its own.
    let trace = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<TraceParent>().ok());
    request.extensions_mut().insert(CallerTrace(trace));
    let id = request_id();
    state.metrics.http_in_flight(1);
    let mut response = next.run(request).await;
    state.metrics.http_in_flight(-1);
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state
        .metrics
        .record_http_request(&route, method, status, elapsed.as_secs_f64());
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    if let Some(code) = code {
        state.metrics.record_http_error(&route, code);
    }
    let key = response.extensions().get::<KeyId>().map(|k| k.0.clone());
    let trace_id = trace.map(|t| t.trace_id_hex());
    tracing::info!(
        target: "wasmcage::access",
        method,
        route = &*route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1e3,
        key_id = key.as_deref().unwrap_or("-"),
        request_id = id.as_str(),
        trace_id = trace_id.as_deref().unwrap_or("-"),
        error = code.unwrap_or("-"),
        "request"
    );
    let headers = response.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&id) {
        headers.insert("x-request-id", v);
    }
    if let Some(t) = trace {
        let ours = TraceParent {
            parent_id: span_id(&id),
            ..t
        };
        if let Ok(v) = header::HeaderValue::from_str(&ours.to_string()) {
            headers.insert("traceparent", v);
        }
    }
    response
}

impl ApiError {
    /// A body the extractor refused: too large, or else malformed (`code`).
    fn rejected(status: StatusCode, code: &'static str, text: String) -> Self {
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            code
        };
        ApiError::new(status, code, text)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::rejected(r.status(), "bad_json", r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        ApiError::rejected(r.status(), "bad_body", r.body_text())
    }
}

/// Maps a core error to the answer a client can act on.
fn core_error(e: wasmcage::Error) -> ApiError {
    use wasmcage::Error as E;
    let code = match &e {
        E::InvalidModule { .. } => "invalid_module",
        E::UnsupportedImport { .. } => "unsupported_import",
        E::ExportNotFound { .. } => "unknown_export",
        E::ArgumentMismatch { .. } | E::BadValue { .. } | E::UnsupportedSignature { .. } => {
            "bad_arguments"
        }
        E::NotACommand { .. } => "not_a_command",
        E::ModuleTooLarge { .. } => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "module_too_large",
                e.to_string(),
            );
        }
        E::PoolExhausted { .. } | E::Capacity(_) => return ApiError::busy(e.to_string(), 1),
        _ => return ApiError::internal(e.to_string()),
    };
    ApiError::bad(code, e.to_string())
}

/// The whole service: `/v1`, the monitoring endpoints, `/v1/openapi.json` and, unless
/// `[mcp] enabled = false`, `/mcp`, whose tool calls go to the same routes in process.
pub(crate) fn router(state: Arc<State>) -> axum::Router {
    let endpoints = endpoints(state.clone());
    let app = finish(endpoints.clone(), &state);
    if !state.config.mcp.enabled {
        return app;
    }
    let tools = crate::mcp::Tools::new(app, &state, None);
    let mcp = axum::Router::new()
        .route_service("/mcp", crate::mcp::http_service(tools, &state.config))
        // Authenticated, rate limited and read under the body limits like `/v1`.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    finish(endpoints.merge(mcp), &state)
}

/// The fallback and the request observer, around a set of routes.
fn finish(routes: axum::Router, state: &Arc<State>) -> axum::Router {
    routes
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API lives under /v1",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
}

fn endpoints(state: Arc<State>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/modules", post(upload).get(list))
        .route("/v1/modules/{id}", get(describe).delete(remove))
        .route("/v1/modules/{id}/invoke", post(invoke))
        .route("/v1/modules/{id}/run", post(run))
        .route("/v1/execute", post(lang::execute))
        .route("/v1/runtimes", get(lang::list_runtimes))
        .route(
            "/v1/sessions",
            post(lang::create_session).get(lang::list_sessions),
        )
        .route(
            "/v1/sessions/{id}",
            get(lang::describe_session).delete(lang::delete_session),
        )
        .route("/v1/sessions/{id}/execute", post(lang::execute_cell))
        .route("/v1/alerts", get(alerts))
        .route("/v1/alerts/{rule}/ack", post(acknowledge))
        // Layers run outside in: authenticate first, then read the body under its deadline.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            read_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state.clone());
    let monitoring = monitoring::router(Monitoring {
        metrics: Some(state.metrics.clone()),
        health: Some(state.health.clone()),
    })
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        guard_monitoring,
    ));
    api.merge(monitoring).route(
        "/v1/openapi.json",
        get(|| async { Json(crate::openapi::document()) }),
    )
}

fn alert_json(a: &wasmcage::alert::ActiveAlert) -> Json_ {
    json!({
        "rule": a.rule,
        "severity": a.severity.as_str(),
        "state": a.state.as_str(),
        "since": wasmcage::alert::rfc3339(a.since),
        "value": a.value,
        "instance": a.instance,
        "escalation_steps_notified": a.escalation_steps_notified,
        "acknowledged": a.acknowledged,
        "acknowledged_at": a.acknowledged_at.map(wasmcage::alert::rfc3339),
    })
}

/// `GET /v1/alerts`: the pending and firing alerts.
/// With `alert_keys` set, only those keys see and acknowledge alerts (403 `forbidden`).
fn may_see_alerts(state: &State, who: &str) -> Result<(), ApiError> {
    let keys = &state.config.alert_keys;
    if keys.is_empty() || keys.iter().any(|k| k.as_str() == who) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this key may not see or acknowledge alerts (see alert_keys)",
    ))
}

async fn alerts(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
) -> Result<Json<Json_>, ApiError> {
    may_see_alerts(&state, &who)?;
    let Some(alerting) = state.cage.alerting() else {
        return Ok(Json(json!({"enabled": false, "alerts": []})));
    };
    let active: Vec<Json_> = alerting
        .engine()
        .active_alerts()
        .iter()
        .map(alert_json)
        .collect();
    Ok(Json(json!({"enabled": true, "alerts": active})))
}

/// `POST /v1/alerts/{rule}/ack`: acknowledges a firing alert, which stops its escalation.
async fn acknowledge(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(rule): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    may_see_alerts(&state, &who)?;
    let Some(alerting) = state.cage.alerting() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "alerting_disabled",
            "this server has no alert rules (set alert_rules in its configuration)",
        ));
    };
    match alerting.engine().acknowledge(&rule) {
        Ok(alert) => {
            tracing::info!(target: "wasmcage::alert", rule = alert.rule.as_str(), key_id = &*key_id(&who), "alert acknowledged");
            Ok(Json(json!({"alert": alert_json(&alert)})))
        }
        Err(e @ wasmcage::alert::AcknowledgeError::UnknownRule(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_rule",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_firing",
            e.to_string(),
        )),
    }
}

/// The monitoring routes with the server's own rules: `/metrics` behind a key when so
/// configured, and `/readyz` not ready while no execution could be admitted.
async fn guard_monitoring(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path.starts_with("/metrics") && state.config.metrics_require_key {
        if let Err(refused) = check_key(&state, &request) {
            return refused;
        }
    } else if path == "/readyz" && state.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "failing": [{"name": "shutdown", "message": "the server is shutting down; requests in flight are finishing"}]})),
        )
            .into_response();
    } else if path == "/readyz"
        && let Some(why) = state.admission.full()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "busy", "failing": [{"name": "capacity", "message": why}]})),
        )
            .into_response();
    }
    next.run(request).await
}

/// The caller's key (or `anonymous` without keys), or the answer that refuses it: 401 for
/// a missing or wrong key, 429 `auth_throttled` while its address has failed too often.
#[allow(clippy::result_large_err)] // The error is the response itself, built once.
fn check_key(state: &State, request: &Request) -> Result<Arc<str>, Response> {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return Ok(Arc::from("anonymous"));
    }
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Throttled addresses are refused before their key is looked at, so that guessing
    // learns nothing while throttled; other addresses are unaffected.
    if let Some(Err(wait)) = ip.map(|ip| state.throttle.check(ip)) {
        let s = seconds(wait);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "auth_throttled",
            format!("too many failed authentications from this address; retry in {s} s"),
        )
        .retry_after(s)
        .into_response());
    }
    let headers: &HeaderMap = request.headers();
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: send Authorization: Bearer <key>",
        )
        .into_response());
    };
    // Compare against every key, without stopping early, so timing says nothing about which.
    let matched = keys.iter().fold(0u8, |acc, key| {
        acc | u8::from(bool::from(key.as_bytes().ct_eq(given.as_bytes())))
    });
    if matched == 1 {
        Ok(Arc::from(given))
    } else {
        if let Some(ip) = ip {
            state.throttle.fail(ip);
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
        )
        .into_response())
    }
}

/// With API keys configured, every `/v1` request needs one, as `Authorization: Bearer <key>`
/// or `X-API-Key: <key>`, compared in constant time. The caller is then rate limited.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.is_draining() {
        let mut refused = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry against another instance",
        )
        .retry_after(1)
        .into_response();
        refused.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        return refused;
    }
    let internal = request
        .extensions()
        .get::<Internal>()
        .map(|i| i.0.0.clone());
    let who = match internal.clone() {
        Some(who) => who,
        None => match check_key(&state, &request) {
            Ok(who) => who,
            Err(refused) => return refused,
        },
    };
    if internal.is_none()
        && let Err(wait) = state.limiter.take(&who)
    {
        let s = seconds(wait);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this API key; retry in {s} s"),
        )
        .retry_after(s)
        .into_response();
    }
    request.extensions_mut().insert(Caller(who.clone()));
    let mut response = next.run(request).await;
    if !state.config.api_keys.is_empty() {
        response.extensions_mut().insert(KeyId(key_id(&who)));
    }
    // Only a caller that passed authentication learns which replica answered: the id may be
    // the host's name.
    if let Ok(v) = header::HeaderValue::from_str(&state.config.replica_id) {
        response.headers_mut().insert(REPLICA_HEADER, v);
    }
    response
}

/// Reads the whole body within `body_read_timeout` (408 `body_timeout` otherwise) and at
/// most `max_body_bytes` (413 `body_too_large`), so that a client trickling a body cannot
/// hold a handler, and with it an execution slot, for long.
async fn read_body(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, mut body) = request.into_parts();
    let max = state.config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the server's limit of {max} bytes"),
        )
        .into_response()
    };
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > max as u64)
    {
        return too_large();
    }
    // The body is held in memory from here until the request ends, so it is reserved out of
    // the server's budget for bodies first (at its declared length, or the largest allowed):
    // many slow bodies at once must not add up past what the server can hold.
    // A request with neither a length nor a transfer encoding has no body.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let reserve = match declared {
        Some(n) => n,
        None if chunked => max as u64,
        None => 0,
    };
    let kib = u32::try_from(reserve.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(_reserved) = state.body_memory.clone().try_acquire_many_owned(kib) else {
        return ApiError::busy(
            "the server holds as many request bodies as it may; retry shortly",
            1,
        )
        .into_response();
    };
    let read = async {
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| {
                ApiError::bad("bad_body", format!("cannot read the request body: {e}"))
                    .into_response()
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf)
    };
    match tokio::time::timeout(state.config.body_read_timeout, read).await {
        Ok(Ok(buf)) => next.run(Request::from_parts(parts, Body::from(buf))).await,
        Ok(Err(refused)) => refused,
        Err(_) => {
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    state.config.body_read_timeout.as_millis()
                ),
            )
            .into_response();
            // The rest of the body is unread; the connection cannot carry another request.
            response.headers_mut().insert(
                header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// Runs a handler's work under the request timeout. On timeout the work's future is
/// dropped, which releases its admission and stops its execution.
async fn limited<T>(
    state: &State,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.config.request_timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "the request took longer than the server allows",
            ))
        })
}

fn describe_module(m: &Module) -> Json_ {
    let types = |t: &Option<Vec<wasmcage::ValueType>>| {
        t.as_ref()
            .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    let exports: Vec<Json_> = m
        .exports()
        .iter()
        .map(|e| json!({"name": e.name, "params": types(&e.params), "results": types(&e.results)}))
        .collect();
    json!({
        "id": m.info().hash.to_string(),
        "name": &*m.info().name,
        "size_bytes": m.size_bytes(),
        "imports_wasi": m.imports_wasi(),
        "exports": exports,
        "status": "ready",
    })
}

fn describe_slot(id: &str, slot: &Slot) -> Json_ {
    match slot {
        Slot::Ready(m) => describe_module(m),
        Slot::Compiling { name, size, .. } => {
            json!({"id": id, "name": name, "size_bytes": size, "status": "compiling"})
        }
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

/// Stores a module. Its identity is the SHA-256 of its binary: the same bytes uploaded again
/// (under any name) are the same module, answered with 200 and the first name; a new module
/// is a 201, sent only once it is compiled and durably stored.
async fn upload(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Query(q): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad(
            "empty_module",
            "the request body must be a WebAssembly module (binary or WAT text)",
        ));
    }
    let name = q.name.unwrap_or_else(|| "module".to_owned());
    if name.len() > store::MAX_NAME_BYTES {
        return Err(ApiError::bad(
            "bad_name",
            format!(
                "the name is {} bytes long; use at most {}",
                name.len(),
                store::MAX_NAME_BYTES
            ),
        ));
    }
    // A name ends up in log lines (and, sanitised, in metric labels): a control character
    // (a newline, an escape sequence) could forge a log line in the human format.
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad(
            "bad_name",
            format!("the name contains the control character {c:?}; names are printable text"),
        ));
    }
    // The hash first (WAT text becomes a binary; a binary is used as it is), so that a known
    // module is answered without compiling. Text is parsed one upload at a time per key.
    let parse_slot = if body.starts_with(b"\0asm") {
        None
    } else {
        Some(acquire_key_slot(&state, &state.parses_per_key, &who, "parsing").await?)
    };
    let (binary, id) = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || {
            let binary = wat::parse_bytes(&body)
                .map_err(|e| {
                    core_error(wasmcage::Error::InvalidModule {
                        name,
                        reason: e.to_string(),
                    })
                })?
                .into_owned();
            let id = store::hash_hex(&binary);
            Ok::<_, ApiError>((Arc::<[u8]>::from(binary), id))
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??
    };
    drop(parse_slot);
    let size = binary.len() as u64;
    // At most twice: a follower whose module turned out bad at start (and was quarantined)
    // stores its own upload on the second round.
    for _ in 0..2 {
        let stored = {
            let mut modules = state.modules.write().expect("module map lock");
            match modules.get(&id) {
                Some(Slot::Ready(m)) => Err(describe_module(m)),
                Some(Slot::Compiling { done, .. }) => Ok((done.clone(), None)),
                None => {
                    state.charge(&who, &id, size)?;
                    let (tx, rx) = watch::channel(None);
                    modules.insert(
                        id.clone(),
                        Slot::Compiling {
                            name: name.clone(),
                            size,
                            done: rx.clone(),
                        },
                    );
                    Ok((rx, Some(tx)))
                }
            }
        };
        let (mut done, leader) = match stored {
            Ok(waiting) => waiting,
            // Already stored: answered at once, without compiling.
            Err(described) => {
                if state.charge(&who, &id, size)? {
                    state.save_owners(&id).await;
                }
                return Ok((StatusCode::OK, Json(described)));
            }
        };
        let created = leader.is_some();
        // Whether this request made `who` an owner (the leader charged above).
        let mut newly = created;
        if let Some(tx) = leader {
            // The compile and store run in a task of their own, so that a client that goes
            // away cannot leave the module half-known; identical uploads wait for this one.
            let state = state.clone();
            let (id, who, name, binary) = (id.clone(), who.clone(), name.clone(), binary.clone());
            state.publish_stored();
            tokio::spawn(async move {
                let result = compile_and_store(&state, &who, &id, &name, binary).await;
                if result.is_err() {
                    state.modules.write().expect("module map lock").remove(&id);
                    state.publish_stored();
                    state.refund(&id, size, Some(&who));
                }
                let _ = tx.send(Some(result));
            });
        } else {
            newly = state.charge(&who, &id, size)?;
        }
        let lost = || ApiError::internal("the compile task ended without an answer");
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| lost())?
            .clone()
            .unwrap_or_else(|| Err(lost()));
        match outcome {
            Ok(()) => {
                if newly && !created {
                    state.save_owners(&id).await;
                }
                let module = state.module(&id)?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                return Ok((status, Json(describe_module(&module))));
            }
            Err(e) => {
                if newly && !created {
                    state.refund(&id, size, Some(&who));
                }
                if created || e.code != "unknown_module" {
                    return Err(e);
                }
            }
        }
    }
    Err(ApiError::busy(
        "the module is being replaced; retry shortly",
        1,
    ))
}

/// Waits up to `compile_wait` for `who`'s one slot in `slots`, or answers 429 `busy`.
async fn acquire_key_slot(
    state: &State,
    slots: &Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
    who: &Arc<str>,
    doing: &str,
) -> Result<OwnedSemaphorePermit, ApiError> {
    let key_slot = State::key_slot(slots, who);
    tokio::time::timeout(state.config.compile_wait, key_slot.acquire_owned())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "this API key is already {doing} a module; retry when that upload is answered"
                ),
            )
            .retry_after(1)
        })?
        .map_err(|_| ApiError::internal("the compile slots are closed"))
}

/// Compiles under the compile bounds, stores durably, then makes the module ready.
async fn compile_and_store(
    state: &Arc<State>,
    who: &Arc<str>,
    id: &str,
    name: &str,
    binary: Arc<[u8]>,
) -> Result<(), ApiError> {
    let wait = state.config.compile_wait;
    let _key = acquire_key_slot(state, &state.compiles_per_key, who, "compiling").await?;
    let _global = tokio::time::timeout(wait, state.compiles.clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::busy(
                format!(
                    "the server is compiling {} modules, the most at once; retry shortly",
                    state.config.max_concurrent_compiles
                ),
                1,
            )
        })?
        .map_err(|_| ApiError::internal("the compile slots are closed"))?;
    let engine = state.engine.clone();
    let module = {
        let (name, binary) = (name.to_owned(), binary.clone());
        tokio::task::spawn_blocking(move || engine.compile(&name, &binary))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(core_error)?
    };
    let _store = state.store_lock.lock().await;
    let writer = state.clone();
    let (id_, name_, owners) = (id.to_owned(), name.to_owned(), state.owners(id));
    tokio::task::spawn_blocking(move || {
        writer.store.put(&id_, &binary, &name_)?;
        writer.store.put_owners(&id_, &owners)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::storage("cannot store the module", &e))?;
    let (pooler, id_, module_) = (state.clone(), id.to_owned(), module.clone());
    tokio::task::spawn_blocking(move || pooler.add_pool(&id_, &module_))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    state
        .modules
        .write()
        .expect("module map lock")
        .insert(id.to_owned(), Slot::Ready(module));
    state.publish_stored();
    Ok(())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// One page of modules in id order; `next_cursor` is the last id of the page when more
/// may follow.
async fn list(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad("bad_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad(
            "bad_query",
            format!("limit {limit} is out of range; use 1 to 1000"),
        ));
    }
    let modules = state.modules.read().expect("module map lock");
    let from = match &q.cursor {
        Some(c) => Bound::Excluded(c.clone()),
        None => Bound::Unbounded,
    };
    let page: Vec<Json_> = modules
        .range((from, Bound::Unbounded))
        .filter(|(id, _)| state.owns(&who, id))
        .take(limit + 1)
        .map(|(id, slot)| describe_slot(id, slot))
        .collect();
    let more = page.len() > limit;
    let page: Vec<Json_> = page.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(|m| m["id"].clone())
    } else {
        None
    };
    Ok(Json(json!({ "modules": page, "next_cursor": next })))
}

async fn describe(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    Ok(Json(describe_module(&state.owned_module(&who, &id)?)))
}

/// Deletes the caller's module. While other keys still hold the same module it stays for
/// them and only the caller's share goes; the last holder's delete removes it from memory,
/// from the store (durably) and its compiled code from the engine's disk cache.
async fn remove(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.store_lock.lock().await;
    let module = state.owned_module(&who, &id)?;
    if !state.config.api_keys.is_empty() {
        state.refund(&id, module.size_bytes(), Some(&who));
        if !state.owners(&id).is_empty() {
            // `save_owners` takes the store lock itself.
            drop(store);
            state.save_owners(&id).await;
            return Ok(StatusCode::NO_CONTENT);
        }
    }
    state.modules.write().expect("module map lock").remove(&id);
    state.publish_stored();
    state.drop_pool(&id);
    state.refund(&id, module.size_bytes(), None);
    let writer = state.clone();
    let hash = module.info().hash;
    tokio::task::spawn_blocking(move || {
        writer.store.remove(&id)?;
        writer.engine.forget(&hash)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::storage("cannot delete the module's files", &e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Limits a request may ask for; each is clamped to its profile's and the server's maximum.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestLimits {
    fuel: Option<u64>,
    memory: Option<Json_>,
    timeout_ms: Option<u64>,
    max_output: Option<Json_>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeRequest {
    export: String,
    #[serde(default)]
    args: Vec<Json_>,
    limits: Option<RequestLimits>,
    profile: Option<String>,
}

fn to_json(v: &Value) -> Json_ {
    match *v {
        Value::I32(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) if x.is_finite() => json!(x),
        Value::F64(x) if x.is_finite() => json!(x),
        other => json!(other.to_string()),
    }
}

fn report_json(report: &wasmcage::ExecutionReport) -> Result<Json_, ApiError> {
    serde_json::to_value(report).map_err(|e| ApiError::internal(e.to_string()))
}

async fn invoke(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Extension(CallerTrace(trace)): Extension<CallerTrace>,
    Path(id): Path<String>,
    body: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Json(req) = body?;
    limited(&state, async {
        let module = state.owned_module(&who, &id)?;
        let policy = request_policy(
            &state.config,
            req.profile.as_deref(),
            req.limits.as_ref(),
            &BTreeMap::new(),
        )?;
        let export = module
            .exports()
            .into_iter()
            .find(|e| e.name == req.export)
            .ok_or_else(|| {
                core_error(wasmcage::Error::ExportNotFound {
                    module: module.info().name.to_string(),
                    export: req.export.clone(),
                    available: module.exports().into_iter().map(|e| e.name).collect(),
                })
            })?;
        let params = export.params.unwrap_or_default();
        if params.len() != req.args.len() {
            return Err(ApiError::bad(
                "bad_arguments",
                format!(
                    "export `{}` takes {} argument(s), {} given",
                    req.export,
                    params.len(),
                    req.args.len()
                ),
            ));
        }
        let mut args = Vec::with_capacity(params.len());
        for (i, (ty, arg)) in params.iter().zip(&req.args).enumerate() {
            let text = match arg {
                Json_::Number(n) => n.to_string(),
                Json_::String(s) => s.clone(),
                other => {
                    return Err(ApiError::bad(
                        "bad_arguments",
                        format!("args[{i}]: {other} is not a number"),
                    ));
                }
            };
            args.push(
                Value::parse(&text, *ty)
                    .map_err(|e| ApiError::bad("bad_arguments", format!("args[{i}]: {e}")))?,
            );
        }
        // The admission is held by the execution itself: a request that times out or loses
        // its client stops the guest, but its slot is free only once the guest has stopped.
        let admitted = state
            .admission
            .admit(&who, policy.limits.memory_bytes)
            .await?;
        let out = match state.pool_for(&id, &policy) {
            Some(pool) => {
                pool.call_async_holding(&req.export, &args, trace, admitted)
                    .await
            }
            None => {
                state
                    .sandbox(policy)?
                    .call_async_holding(&module, &req.export, &args, trace, admitted)
                    .await
            }
        }
        .map_err(core_error)?;
        let results: Vec<Json_> = out.results.iter().map(to_json).collect();
        Ok(Json(
            json!({"results": results, "report": report_json(&out.report)?}),
        ))
    })
    .await
}

/// How `run` returns the guest's output.
#[derive(Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum OutputEncoding {
    /// UTF-8 text; invalid sequences become U+FFFD.
    #[default]
    Text,
    /// The exact bytes, base64 (standard alphabet, padded).
    Base64,
}

impl OutputEncoding {
    /// `bytes` in this encoding, as a JSON string.
    fn encode(self, bytes: &[u8]) -> Json_ {
        Json_::String(match self {
            OutputEncoding::Text => String::from_utf8_lossy(bytes).into_owned(),
            OutputEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            OutputEncoding::Text => "text",
            OutputEncoding::Base64 => "base64",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    args: Vec<String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    limits: Option<RequestLimits>,
    profile: Option<String>,
    #[serde(default)]
    output: OutputEncoding,
}

fn stdin_too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "stdin_too_large",
        format!("stdin is larger than the server's limit of {max} bytes"),
    )
}

async fn run(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Extension(CallerTrace(trace)): Extension<CallerTrace>,
    Path(id): Path<String>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Json(req) = body?;
    // WASI hands arguments to the guest as C strings: a NUL would cut one short, or split
    // it, differently than the caller meant.
    if let Some(i) = req.args.iter().position(|a| a.contains('\0')) {
        return Err(ApiError::bad(
            "bad_args",
            format!("args[{i}] contains a NUL byte, which a guest's argument cannot hold"),
        ));
    }
    limited(&state, async {
        let module = state.owned_module(&who, &id)?;
        let max = state.config.max_stdin_bytes;
        let stdin = match (req.stdin, req.stdin_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(
                    "bad_stdin",
                    "give stdin or stdin_base64, not both",
                ));
            }
            (Some(text), None) => {
                if text.len() as u64 > max {
                    return Err(stdin_too_large(max));
                }
                text.into_bytes()
            }
            (None, Some(b64)) => {
                // Checked before decoding, so that no oversized buffer is ever made.
                if (b64.len() as u64 / 4).saturating_mul(3) > max.saturating_add(2) {
                    return Err(stdin_too_large(max));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| {
                        ApiError::bad("bad_stdin", format!("stdin_base64 is not base64: {e}"))
                    })?;
                if bytes.len() as u64 > max {
                    return Err(stdin_too_large(max));
                }
                bytes
            }
            (None, None) => Vec::new(),
        };
        let policy = request_policy(
            &state.config,
            req.profile.as_deref(),
            req.limits.as_ref(),
            &req.env,
        )?;
        let admitted = state
            .admission
            .admit(&who, policy.limits.memory_bytes)
            .await?;
        let input = CommandInput {
            args: req.args,
            stdin: stdin.into(),
            runtime: None,
        };
        let out = match state.pool_for(&id, &policy) {
            Some(pool) => pool.run_command_async_holding(input, trace, admitted).await,
            None => {
                state
                    .sandbox(policy)?
                    .run_command_async_holding(&module, input, trace, admitted)
                    .await
            }
        }
        .map_err(core_error)?;
        // Each stream once, in the encoding the client chose: never both, which would double
        // what a guest's output costs the server to send.
        let encode = |b: &[u8]| req.output.encode(b);
        Ok(Json(json!({
            "exit_code": out.report.exit_code,
            "output_encoding": req.output.as_str(),
            "stdout": encode(&out.stdout),
            "stderr": encode(&out.stderr),
            "stdout_truncated": out.report.stdout_truncated,
            "stderr_truncated": out.report.stderr_truncated,
            "report": report_json(&out.report)?,
        })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_saturate_instead_of_panicking() {
        // Validation refuses such a rate; the limiter must not panic even if one slips by.
        let limiter = RateLimiter {
            limit: RwLock::new(Some(crate::config::RateLimit {
                per_second: 1e-300,
                burst: 1,
            })),
            buckets: Mutex::default(),
        };
        assert!(limiter.take("k").is_ok());
        let wait = limiter.take("k").unwrap_err();
        assert_eq!(wait, Duration::MAX);
        assert_eq!(seconds(wait), u64::MAX);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_millis(1500)), 2);
        assert_eq!(pages(u64::MAX), u32::MAX);
        assert_eq!(pages(1), 1);
    }

    #[test]
    fn limits_only_go_down() {
        let low = Limits {
            fuel: Some(10),
            memory_bytes: 1 << 20,
            ..Limits::default()
        };
        let unmetered = Limits {
            fuel: None,
            memory_bytes: 1 << 30,
            ..Limits::default()
        };
        assert_eq!(lower(&low, &unmetered), low);
        assert_eq!(lower(&unmetered, &low), low);
        assert_eq!(lower(&unmetered, &unmetered).fuel, None);
        assert!(rank(Profile::Strict) < rank(Profile::Standard));
        assert!(rank(Profile::Standard) < rank(Profile::Permissive));
    }
}
