//! The service's configuration: a TOML file in which every value has a default, so that no
//! file at all starts a loopback service with the `standard` profile.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmcage::core::policy::{parse_duration, parse_size};
use wasmcage::{Limits, Profile};

use crate::ServerError;

/// The service's configuration, with every value resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where the API listens (default `127.0.0.1:8000`).
    pub listen: SocketAddr,
    /// Where uploaded modules and compiled code are kept (default: the user's cache
    /// directory, `wasmcage/server`).
    pub data_dir: PathBuf,
    /// The profile executions start from (default `standard`).
    pub profile: Profile,
    /// The most any request may ask for; requests ask for less or get these.
    pub max_limits: Limits,
    /// API keys; none means the service refuses to listen beyond loopback.
    pub api_keys: Vec<String>,
    /// The largest request body, in bytes (default 16 MiB).
    pub max_body_bytes: usize,
    /// The most bytes of request bodies held in memory at once across all requests (file
    /// key `max_body_memory`, default 256 MiB): a request whose body would not fit is a
    /// 503 `busy` before its body is read. At least `max_body_bytes`.
    pub max_body_memory: u64,
    /// The longest a request may take (default 60 s).
    pub request_timeout: Duration,
    /// Environment variables a `run` request may set (default: none).
    pub allowed_env: Vec<String>,
    /// Requests per second allowed per API key (anonymous callers share one bucket);
    /// `None` (the default) sets no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Whether `/metrics` and `/metrics/performance` need a valid API key like `/v1`
    /// (file key `metrics_require_key`, default `false`). The probes never need one.
    pub metrics_require_key: bool,
    /// The API keys that may list and acknowledge alerts (file key `alert_keys`, default
    /// none: any valid key may). Each must be one of `api_keys`; with them set, a tenant's key
    /// cannot silence the page its own traffic raised.
    pub alert_keys: Vec<String>,
    /// How failed authentication is throttled per client IP (file table `[auth_throttle]`).
    pub auth_throttle: AuthThrottle,
    /// Bounds on concurrent executions and their memory (file table `[admission]`).
    pub admission: Admission,
    /// Per-key bounds on stored modules (file table `[quota]`).
    pub quota: Quota,
    /// The largest stdin a `run` request may give, in bytes, after base64 decoding (file key
    /// `max_stdin`, default 4 MiB); more is a 413 `stdin_too_large`.
    pub max_stdin_bytes: u64,
    /// How long a client may take to send a request's headers (file key
    /// `header_read_timeout`, default 10 s). hyper also applies it to the wait for the next
    /// request on a kept-alive connection, so it is the idle keep-alive limit as well.
    pub header_read_timeout: Duration,
    /// How long a client may take to send a whole request body (file key
    /// `body_read_timeout`, default 10 s); a slower body is a 408 `body_timeout`.
    pub body_read_timeout: Duration,
    /// After a shutdown signal, how long in-flight requests may still run before `serve`
    /// returns anyway (file key `shutdown_timeout`, default 30 s).
    pub shutdown_timeout: Duration,
    /// Modules compiled at once, across all keys (file key `max_concurrent_compiles`,
    /// default 2); each key compiles one module at a time.
    pub max_concurrent_compiles: usize,
    /// How long an upload waits for a compile slot before a 503 `busy` (file key
    /// `compile_wait`, default 2 s).
    pub compile_wait: Duration,
    /// The longest one module may take to compile (file key `compile_timeout`, default
    /// 60 s); enforced when a compile worker is set.
    pub compile_timeout: Duration,
    /// The most memory one compile may use (file key `compile_memory`, default 4 GiB);
    /// enforced when a compile worker is set.
    pub compile_memory: u64,
    /// The child process that compiles under `compile_timeout` and `compile_memory`
    /// (`wasmcage serve` sets itself); `None` compiles in the server's own process, bounded
    /// by the engine's static compile limits only. Not a file key.
    pub compile_worker: Option<wasmcage::core::CompileWorker>,
    /// The alert rules and channels file (file key `alert_rules`, default none: no alerting),
    /// in the format of docs/alerting.md. A relative path is relative to the configuration
    /// file. `SIGHUP` reloads it; when its `[delivery]` names no `outbox`, notifications wait
    /// in `alert-outbox.redb` in the data directory, so that none is lost to a crash.
    pub alert_rules: Option<PathBuf>,
    /// How the health checks run (file table `[health]`).
    pub health: Health,
    /// Log lines on stderr (file table `[logging]`); installed by `wasmcage serve`.
    pub logging: Logging,
    /// Span export (file table `[tracing]`); installed by `wasmcage serve`.
    pub tracing: Tracing,
    /// Warm pools for stored modules (file table `[pools]`).
    pub pools: Pools,
    /// Language runtimes: `/v1/execute` and `/v1/sessions` (file table `[runtimes]`).
    pub runtimes: Runtimes,
    /// The Model Context Protocol server for agents (file table `[mcp]`).
    pub mcp: Mcp,
    /// This process's name among replicas (file key `replica_id`, default
    /// `$WASMCAGE_REPLICA_ID`, else the host name, sanitised): every session id starts with
    /// it, and a request for another replica's session is a 421 `wrong_replica` naming it.
    /// 1 to 63 characters of `a`-`z`, `0`-`9` and `-` (see [`crate::replica`]).
    pub replica_id: String,
    /// The file this configuration was read from, re-read on `SIGHUP` (set by
    /// [`ServerConfig::load`]; not a file key).
    pub source: Option<PathBuf>,
}

/// Language runtimes (Python, JavaScript, or an operator's own interpreter), installed with
/// `wasmcage runtime fetch|add`, served at `/v1/execute` and `/v1/sessions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtimes {
    /// Whether to serve them at all (default `true`; with none installed the routes answer
    /// 400 `unknown_language`).
    pub enabled: bool,
    /// Where they are installed (default: `wasmcage runtime`'s data directory,
    /// `$WASMCAGE_DATA_DIR`, else `$XDG_DATA_HOME/wasmcage`, else `~/.local/share/wasmcage`).
    pub dir: PathBuf,
    /// Serve only these runtimes (default: every usable one installed).
    pub only: Option<Vec<String>>,
    /// Pre-started interpreters kept ready per runtime (default 2).
    pub pool_size: usize,
    /// Sessions at once on this server (default 64).
    pub max_sessions: usize,
    /// Sessions at once per API key (default 16).
    pub max_sessions_per_key: usize,
    /// A session unused this long ends (default 10 minutes).
    pub session_idle: Duration,
    /// The most bytes code may write to its workspace: a one-shot execution's, or a
    /// session's over all its cells (default 64 MiB).
    pub workspace_quota: u64,
}

impl Default for Runtimes {
    fn default() -> Self {
        Runtimes {
            enabled: true,
            dir: wasmcage::runtime::default_data_dir()
                .unwrap_or_else(|| std::env::temp_dir().join("wasmcage")),
            only: None,
            pool_size: 2,
            max_sessions: 64,
            max_sessions_per_key: 16,
            session_idle: Duration::from_secs(600),
            workspace_quota: 64 << 20,
        }
    }
}

impl Runtimes {
    /// How many runtimes' pools the slot reserve assumes (the two built-in runtimes).
    pub const POOLED_RUNTIMES: usize = 2;

    /// Instances the runtimes may hold while no request runs: every pool's pre-started
    /// interpreters and every session's.
    pub fn reserved_instances(&self) -> usize {
        if !self.enabled {
            return 0;
        }
        self.pool_size
            .saturating_mul(Self::POOLED_RUNTIMES)
            .saturating_add(self.max_sessions)
    }
}

/// The MCP server: the sandbox's tools for LLM agents, at `/mcp` on `wasmcage serve`
/// (Streamable HTTP) and over stdio with `wasmcage mcp` (see docs/mcp.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Mcp {
    /// Whether `wasmcage serve` answers at `/mcp` (default `true`).
    pub enabled: bool,
    /// The profile tool calls run under, at most the server's (default: the server's).
    pub profile: Option<Profile>,
    /// Ceilings for tool calls below `[max_limits]`: what an agent asks for is lowered to
    /// these, and when it asks for nothing it gets these (default: none beyond the server's).
    pub max_limits: McpLimits,
    /// The `Host` values `/mcp` accepts (DNS-rebinding protection). Empty (the default):
    /// loopback names when the server listens on loopback, any host otherwise (API keys are
    /// required there).
    pub allowed_hosts: Vec<String>,
}

impl Default for Mcp {
    fn default() -> Self {
        Mcp {
            enabled: true,
            profile: None,
            max_limits: McpLimits::default(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Ceilings for MCP tool calls; `None` leaves the server's `[max_limits]` in force.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct McpLimits {
    /// Linear memory, in bytes.
    pub memory: Option<u64>,
    /// Fuel units.
    pub fuel: Option<u64>,
    /// Wall-clock time.
    pub timeout: Option<Duration>,
    /// Bytes kept of stdout and of stderr each.
    pub max_output: Option<u64>,
}

/// Warm pools for stored modules: pre-instantiated instances, so that an execution starts
/// without instantiating. A pool serves only requests whose sandbox is exactly the server's
/// default (its profile, the `max_limits` ceiling, no environment); any other request runs
/// cold under its own, narrower sandbox.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pools {
    /// Pool every stored module that `modules` does not name, up to this many pools at once
    /// (default 0: none). A module gets its pool when it is stored or loaded at start, and
    /// loses it when it is deleted.
    pub every_module: usize,
    /// Modules whose binary is larger than this are not pooled by `every_module` (default
    /// 1 MiB).
    pub max_module_size: u64,
    /// The size of the pools `every_module` makes.
    pub size: PoolSize,
    /// Pools for these modules, by module id (64 hex digits), whatever their size.
    pub modules: BTreeMap<String, PoolSize>,
}

/// How one warm pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Instances kept instantiated and ready (default 2).
    pub min_ready: usize,
    /// Executions of the module at once through its pool (default 16); more wait up to
    /// `admission.wait`, then get a 503 `busy`.
    pub max_in_use: usize,
}

impl Default for PoolSize {
    fn default() -> Self {
        PoolSize {
            min_ready: 2,
            max_in_use: 16,
        }
    }
}

impl Pools {
    /// The most instances the pools keep ready at once: every named pool's `min_ready` and
    /// `every_module` pools of `size.min_ready`.
    pub fn ready_instances(&self) -> usize {
        self.modules
            .values()
            .map(|p| p.min_ready)
            .sum::<usize>()
            .saturating_add(self.every_module.saturating_mul(self.size.min_ready))
    }

    /// The size of `id`'s pool if it gets one by name.
    pub fn named(&self, id: &str) -> Option<PoolSize> {
        self.modules.get(id).copied()
    }
}

/// How often and how patiently the health checks run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    /// Time between runs (default 10 s).
    pub interval: Duration,
    /// Time one check may take before it counts as failed (default 2 s).
    pub timeout: Duration,
    /// Consecutive failures of a critical check that make the service critical (default 3).
    pub failure_threshold: u32,
    /// The resident memory past which the `memory` check fails (default 90 % of the
    /// memory the process may use: its cgroup's `memory.max`, else the host's total).
    pub memory_limit: MemoryLimit,
    /// The free space below which the `disk` check on the data directory fails (default
    /// 1 GiB); it also fails when the directory is not writable.
    pub min_free_disk: u64,
}

/// A memory bound: absolute, or a share of what the process may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// This many bytes.
    Bytes(u64),
    /// This percentage (0 to 100] of the cgroup's `memory.max`, else of the host's memory.
    Percent(f64),
}

impl MemoryLimit {
    /// The bound in bytes on this machine.
    pub fn bytes(self) -> u64 {
        match self {
            MemoryLimit::Bytes(b) => b,
            MemoryLimit::Percent(p) => (available_memory() as f64 * p / 100.0) as u64,
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(format!("{text:?}: a percentage in (0, 100]"));
                }
                Ok(MemoryLimit::Percent(p))
            }
            None => parse_size(text).map(MemoryLimit::Bytes),
        }
    }
}

impl std::fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryLimit::Bytes(b) => write!(f, "{b}"),
            MemoryLimit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// The memory this process may use: its cgroup v2 `memory.max` when one is set, else the
/// host's `MemTotal`, else 16 GiB when neither can be read.
fn available_memory() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let host = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    match (cgroup, host) {
        (Some(c), Some(h)) => c.min(h),
        (Some(c), None) => c,
        (None, Some(h)) => h,
        (None, None) => 16 << 30,
    }
}

impl Default for Health {
    fn default() -> Self {
        let d = wasmcage::health::HealthConfig::default();
        Health {
            interval: d.interval,
            timeout: d.timeout,
            failure_threshold: d.unhealthy_threshold,
            memory_limit: MemoryLimit::Percent(90.0),
            min_free_disk: 1 << 30,
        }
    }
}

impl Health {
    /// The health monitor's configuration.
    pub fn monitor(&self) -> wasmcage::health::HealthConfig {
        wasmcage::health::HealthConfig {
            interval: self.interval,
            timeout: self.timeout,
            unhealthy_threshold: self.failure_threshold,
        }
    }
}

/// Log lines: one access-log line per request, and a line for every execution, security
/// event, health transition and alert delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logging {
    /// `human` (default) or `json`.
    pub format: wasmcage::tracing::LogFormat,
    /// An `EnvFilter` directive such as `info` or `info,wasmcage=debug` (default `info`);
    /// `RUST_LOG`, when set, wins.
    pub level: String,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: wasmcage::tracing::LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Span export over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The collector's traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces` (default
    /// none: no export).
    pub otlp_endpoint: Option<String>,
    /// `service.name` (default `wasmcage`).
    pub service_name: String,
    /// `deployment.environment` (default `development`).
    pub environment: String,
    /// The share of new traces exported, 0.0 to 1.0 (default 1.0); a request with a
    /// `traceparent` follows its sampled flag instead.
    pub sample_ratio: f64,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            otlp_endpoint: None,
            service_name: "wasmcage".into(),
            environment: "development".into(),
            sample_ratio: 1.0,
        }
    }
}

impl Tracing {
    /// The tracing layer's configuration for these settings and `logging`.
    pub fn with_logging(&self, logging: &Logging) -> wasmcage::tracing::TracingConfig {
        wasmcage::tracing::TracingConfig {
            format: logging.format,
            filter: logging.level.clone(),
            otlp: self.otlp_endpoint.as_ref().map(|endpoint| {
                let mut otlp = wasmcage::tracing::OtlpConfig::new(endpoint.clone());
                otlp.service_name = self.service_name.clone();
                otlp.environment = self.environment.clone();
                otlp.sample_ratio = self.sample_ratio;
                otlp
            }),
        }
    }
}

/// Failed-authentication throttling: after `max_failures` failures from one IP address within
/// `window`, every request from that address is a 429 `auth_throttled` until the window ends,
/// whether its key is right or not, so that guessing keys learns nothing while throttled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthThrottle {
    /// Failures allowed per window (default 10, at least 1).
    pub max_failures: u32,
    /// The window, counted from the first failure (default 60 s).
    pub window: Duration,
}

/// Admission control: what a server runs at once. A request beyond these waits up to `wait`,
/// then gets a 503 `busy` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Executions at once across all callers (default 32 per available core, at most
    /// [`Admission::ENGINE_SLOTS`]: the engine's pooling allocator has that many instance
    /// slots, and the server never asks it for more).
    pub max_executions: usize,
    /// Executions at once per API key; anonymous callers share one (default: a quarter of
    /// `max_executions`, at least 1).
    pub max_executions_per_key: usize,
    /// The most the `memory_bytes` limits of running executions may add up to (default
    /// 2 GiB).
    pub memory_budget: u64,
    /// How long a request waits for capacity before it is refused (default 1 s).
    pub wait: Duration,
}

impl Admission {
    /// Instance slots the server's executions and its warm pools' ready instances may use:
    /// the engine's 256 pooling slots less a reserve for the health canary's warm pool.
    pub const ENGINE_SLOTS: usize = 248;
}

impl Default for Admission {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let max_executions = (2 * cores * 16).min(Self::ENGINE_SLOTS);
        Admission {
            max_executions,
            max_executions_per_key: (max_executions / 4).max(1),
            memory_budget: 2 << 30,
            wait: Duration::from_secs(1),
        }
    }
}

/// What one API key may store (anonymous callers share one account). Module identity is the
/// content hash, so a module stored by two keys counts for both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Modules per key (default 1000).
    pub max_modules: usize,
    /// Bytes of module binaries per key (default 1 GiB).
    pub max_bytes: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            max_modules: 1000,
            max_bytes: 1 << 30,
        }
    }
}

/// A token bucket: `per_second` sustained, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// The most requests at once.
    pub burst: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir: default_data_dir(),
            profile: Profile::Standard,
            max_limits: Limits {
                memory_bytes: 256 << 20,
                fuel: Some(10_000_000_000),
                timeout: Duration::from_secs(30),
                max_stdout_bytes: 4 << 20,
                max_stderr_bytes: 4 << 20,
                // One table and one memory per execution, so that every admitted execution
                // fits in the engine's pooling slots (see `Admission::ENGINE_SLOTS`).
                tables: 1,
                memories: 1,
                instances: 1,
                ..Limits::default()
            },
            api_keys: Vec::new(),
            max_body_bytes: 16 << 20,
            max_body_memory: 256 << 20,
            request_timeout: Duration::from_secs(60),
            allowed_env: Vec::new(),
            rate_limit: None,
            metrics_require_key: false,
            alert_keys: Vec::new(),
            auth_throttle: AuthThrottle {
                max_failures: 10,
                window: Duration::from_secs(60),
            },
            admission: Admission::default(),
            quota: Quota::default(),
            max_stdin_bytes: 4 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(30),
            max_concurrent_compiles: 2,
            compile_wait: Duration::from_secs(2),
            compile_timeout: Duration::from_secs(60),
            compile_memory: 4 << 30,
            compile_worker: None,
            alert_rules: None,
            health: Health::default(),
            logging: Logging::default(),
            tracing: Tracing::default(),
            pools: Pools {
                max_module_size: 1 << 20,
                ..Pools::default()
            },
            runtimes: Runtimes::default(),
            mcp: Mcp::default(),
            replica_id: crate::replica::default_id(),
            source: None,
        }
    }
}

fn default_data_dir() -> PathBuf {
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("wasmcage/server")
}

/// The file format: every key optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    profile: Option<String>,
    api_keys: Option<Vec<String>>,
    max_body: Option<String>,
    max_body_memory: Option<String>,
    request_timeout: Option<String>,
    allowed_env: Option<Vec<String>>,
    metrics_require_key: Option<bool>,
    alert_keys: Option<Vec<String>>,
    max_stdin: Option<String>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    max_concurrent_compiles: Option<usize>,
    compile_wait: Option<String>,
    compile_timeout: Option<String>,
    compile_memory: Option<String>,
    alert_rules: Option<PathBuf>,
    replica_id: Option<String>,
    // Tables last: TOML needs plain values before tables.
    rate_limit: Option<RateLimit>,
    max_limits: Option<FileLimits>,
    auth_throttle: Option<FileAuthThrottle>,
    admission: Option<FileAdmission>,
    quota: Option<FileQuota>,
    health: Option<FileHealth>,
    logging: Option<FileLogging>,
    tracing: Option<FileTracing>,
    pools: Option<FilePools>,
    runtimes: Option<FileRuntimes>,
    mcp: Option<FileMcp>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileMcp {
    enabled: Option<bool>,
    profile: Option<String>,
    allowed_hosts: Option<Vec<String>>,
    // A table last.
    max_limits: Option<FileMcpLimits>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileMcpLimits {
    memory: Option<String>,
    fuel: Option<u64>,
    timeout: Option<String>,
    max_output: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileRuntimes {
    enabled: Option<bool>,
    dir: Option<PathBuf>,
    only: Option<Vec<String>>,
    pool_size: Option<usize>,
    max_sessions: Option<usize>,
    max_sessions_per_key: Option<usize>,
    session_idle: Option<String>,
    workspace_quota: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FilePools {
    every_module: Option<usize>,
    max_module_size: Option<String>,
    min_ready: Option<usize>,
    max_in_use: Option<usize>,
    // A table last.
    modules: Option<BTreeMap<String, FilePoolSize>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FilePoolSize {
    min_ready: Option<usize>,
    max_in_use: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    interval: Option<String>,
    timeout: Option<String>,
    failure_threshold: Option<u32>,
    memory_limit: Option<String>,
    min_free_disk: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileLogging {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileTracing {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
    environment: Option<String>,
    sample_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileAuthThrottle {
    max_failures: Option<u32>,
    window: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileAdmission {
    max_executions: Option<usize>,
    max_executions_per_key: Option<usize>,
    memory_budget: Option<String>,
    wait: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileQuota {
    max_modules: Option<usize>,
    max_bytes: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    memory: Option<String>,
    fuel: Option<u64>,
    timeout: Option<String>,
    max_output: Option<String>,
    disk: Option<String>,
}

/// The keys in a `WASMCAGE_API_KEYS` value: comma-separated, trimmed. An empty value means
/// no keys; an empty entry in a list is a mistake (a stray comma) that would otherwise go
/// unnoticed, so it is refused.
fn env_keys(value: &str) -> Result<Vec<String>, ServerError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(str::trim)
        .map(|key| {
            if key.is_empty() {
                Err(bad(
                    "WASMCAGE_API_KEYS",
                    "contains an empty key; separate non-empty keys with single commas",
                ))
            } else {
                Ok(key.to_owned())
            }
        })
        .collect()
}

/// The shortest API key accepted: shorter keys are guessable.
const MIN_KEY_CHARS: usize = 16;

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn bad(key: &str, reason: impl std::fmt::Display) -> ServerError {
    ServerError::Config(format!("{key}: {reason}"))
}

impl ServerConfig {
    /// Parses a configuration file's text; missing keys keep their defaults. API keys may
    /// also come from `WASMCAGE_API_KEYS` (comma-separated), added to the file's.
    pub fn from_toml(text: &str) -> Result<Self, ServerError> {
        let file: File =
            toml::from_str(text).map_err(|e| ServerError::Config(e.message().to_owned()))?;
        let mut c = ServerConfig::default();
        if let Some(listen) = file.listen {
            c.listen = listen
                .parse()
                .map_err(|e| bad("listen", format!("{listen:?}: {e}")))?;
        }
        if let Some(dir) = file.data_dir {
            c.data_dir = dir;
        }
        if let Some(profile) = file.profile {
            c.profile = profile.parse().map_err(|e| bad("profile", e))?;
        }
        if let Some(keys) = file.api_keys {
            c.api_keys = keys;
        }
        if let Some(body) = file.max_body {
            c.max_body_bytes = parse_size(&body).map_err(|e| bad("max_body", e))? as usize;
        }
        if let Some(memory) = file.max_body_memory {
            c.max_body_memory = parse_size(&memory).map_err(|e| bad("max_body_memory", e))?;
        }
        if let Some(t) = file.request_timeout {
            c.request_timeout = parse_duration(&t).map_err(|e| bad("request_timeout", e))?;
        }
        if let Some(env) = file.allowed_env {
            c.allowed_env = env;
        }
        if let Some(rate) = file.rate_limit {
            c.rate_limit = Some(rate);
        }
        if let Some(v) = file.alert_keys {
            c.alert_keys = v;
        }
        if let Some(v) = file.metrics_require_key {
            c.metrics_require_key = v;
        }
        if let Some(v) = file.max_stdin {
            c.max_stdin_bytes = parse_size(&v).map_err(|e| bad("max_stdin", e))?;
        }
        let duration = |key: &str, v: &str| parse_duration(v).map_err(|e| bad(key, e));
        if let Some(v) = file.header_read_timeout {
            c.header_read_timeout = duration("header_read_timeout", &v)?;
        }
        if let Some(v) = file.body_read_timeout {
            c.body_read_timeout = duration("body_read_timeout", &v)?;
        }
        if let Some(v) = file.shutdown_timeout {
            c.shutdown_timeout = duration("shutdown_timeout", &v)?;
        }
        if let Some(v) = file.max_concurrent_compiles {
            c.max_concurrent_compiles = v;
        }
        if let Some(v) = file.compile_wait {
            c.compile_wait = duration("compile_wait", &v)?;
        }
        if let Some(v) = file.compile_timeout {
            c.compile_timeout = duration("compile_timeout", &v)?;
        }
        if let Some(v) = file.compile_memory {
            c.compile_memory = parse_size(&v).map_err(|e| bad("compile_memory", e))?;
        }
        if let Some(v) = file.replica_id {
            crate::replica::check(&v).map_err(|e| bad("replica_id", e))?;
            c.replica_id = v;
        }
        if let Some(t) = file.auth_throttle {
            if let Some(v) = t.max_failures {
                c.auth_throttle.max_failures = v;
            }
            if let Some(v) = t.window {
                c.auth_throttle.window = duration("auth_throttle.window", &v)?;
            }
        }
        let mut max_executions_set = false;
        if let Some(a) = file.admission {
            if let Some(v) = a.max_executions {
                max_executions_set = true;
                c.admission.max_executions = v;
                // The per-key default follows the global bound unless it is set too.
                c.admission.max_executions_per_key = (v / 4).max(1);
            }
            if let Some(v) = a.max_executions_per_key {
                c.admission.max_executions_per_key = v;
            }
            if let Some(v) = a.memory_budget {
                c.admission.memory_budget =
                    parse_size(&v).map_err(|e| bad("admission.memory_budget", e))?;
            }
            if let Some(v) = a.wait {
                c.admission.wait = duration("admission.wait", &v)?;
            }
        }
        if let Some(q) = file.quota {
            if let Some(v) = q.max_modules {
                c.quota.max_modules = v;
            }
            if let Some(v) = q.max_bytes {
                c.quota.max_bytes = parse_size(&v).map_err(|e| bad("quota.max_bytes", e))?;
            }
        }
        if let Some(l) = file.max_limits {
            if let Some(m) = l.memory {
                c.max_limits.memory_bytes =
                    parse_size(&m).map_err(|e| bad("max_limits.memory", e))?;
            }
            if let Some(f) = l.fuel {
                c.max_limits.fuel = Some(f);
            }
            if let Some(t) = l.timeout {
                c.max_limits.timeout =
                    parse_duration(&t).map_err(|e| bad("max_limits.timeout", e))?;
            }
            if let Some(o) = l.max_output {
                let o = parse_size(&o).map_err(|e| bad("max_limits.max_output", e))?;
                c.max_limits.max_stdout_bytes = o;
                c.max_limits.max_stderr_bytes = o;
            }
            if let Some(d) = l.disk {
                c.max_limits.disk_bytes = match d.as_str() {
                    "none" => None,
                    d => Some(parse_size(d).map_err(|e| bad("max_limits.disk", e))?),
                };
            }
        }
        if let Some(v) = file.alert_rules {
            c.alert_rules = Some(v);
        }
        if let Some(h) = file.health {
            if let Some(v) = h.interval {
                c.health.interval = duration("health.interval", &v)?;
            }
            if let Some(v) = h.timeout {
                c.health.timeout = duration("health.timeout", &v)?;
            }
            if let Some(v) = h.failure_threshold {
                c.health.failure_threshold = v;
            }
            if let Some(v) = h.memory_limit {
                c.health.memory_limit =
                    MemoryLimit::parse(&v).map_err(|e| bad("health.memory_limit", e))?;
            }
            if let Some(v) = h.min_free_disk {
                c.health.min_free_disk =
                    parse_size(&v).map_err(|e| bad("health.min_free_disk", e))?;
            }
        }
        if let Some(l) = file.logging {
            if let Some(v) = l.format {
                c.logging.format = match v.as_str() {
                    "human" => wasmcage::tracing::LogFormat::Human,
                    "json" => wasmcage::tracing::LogFormat::Json,
                    other => {
                        return Err(bad(
                            "logging.format",
                            format!("{other:?}: expected \"human\" or \"json\""),
                        ));
                    }
                };
            }
            if let Some(v) = l.level {
                c.logging.level = v;
            }
        }
        if let Some(t) = file.tracing {
            if let Some(v) = t.otlp_endpoint {
                c.tracing.otlp_endpoint = Some(v);
            }
            if let Some(v) = t.service_name {
                c.tracing.service_name = v;
            }
            if let Some(v) = t.environment {
                c.tracing.environment = v;
            }
            if let Some(v) = t.sample_ratio {
                c.tracing.sample_ratio = v;
            }
        }
        if let Some(p) = file.pools {
            if let Some(v) = p.every_module {
                c.pools.every_module = v;
            }
            if let Some(v) = p.max_module_size {
                c.pools.max_module_size =
                    parse_size(&v).map_err(|e| bad("pools.max_module_size", e))?;
            }
            if let Some(v) = p.min_ready {
                c.pools.size.min_ready = v;
            }
            if let Some(v) = p.max_in_use {
                c.pools.size.max_in_use = v;
            }
            for (id, size) in p.modules.unwrap_or_default() {
                let default = c.pools.size;
                c.pools.modules.insert(
                    id,
                    PoolSize {
                        min_ready: size.min_ready.unwrap_or(default.min_ready),
                        max_in_use: size.max_in_use.unwrap_or(default.max_in_use),
                    },
                );
            }
        }
        if let Some(r) = file.runtimes {
            if let Some(v) = r.enabled {
                c.runtimes.enabled = v;
            }
            if let Some(v) = r.dir {
                c.runtimes.dir = v;
            }
            if let Some(v) = r.only {
                c.runtimes.only = Some(v);
            }
            if let Some(v) = r.pool_size {
                c.runtimes.pool_size = v;
            }
            if let Some(v) = r.max_sessions {
                c.runtimes.max_sessions = v;
            }
            if let Some(v) = r.max_sessions_per_key {
                c.runtimes.max_sessions_per_key = v;
            }
            if let Some(v) = r.session_idle {
                c.runtimes.session_idle =
                    parse_duration(&v).map_err(|e| bad("runtimes.session_idle", e))?;
            }
            if let Some(v) = r.workspace_quota {
                c.runtimes.workspace_quota =
                    parse_size(&v).map_err(|e| bad("runtimes.workspace_quota", e))?;
            }
        }
        if let Some(m) = file.mcp {
            if let Some(v) = m.enabled {
                c.mcp.enabled = v;
            }
            if let Some(v) = m.profile {
                c.mcp.profile = Some(v.parse().map_err(|e| bad("mcp.profile", e))?);
            }
            if let Some(v) = m.allowed_hosts {
                c.mcp.allowed_hosts = v;
            }
            if let Some(l) = m.max_limits {
                let limits = &mut c.mcp.max_limits;
                if let Some(v) = l.memory {
                    limits.memory =
                        Some(parse_size(&v).map_err(|e| bad("mcp.max_limits.memory", e))?);
                }
                limits.fuel = l.fuel;
                if let Some(v) = l.timeout {
                    limits.timeout =
                        Some(parse_duration(&v).map_err(|e| bad("mcp.max_limits.timeout", e))?);
                }
                if let Some(v) = l.max_output {
                    limits.max_output =
                        Some(parse_size(&v).map_err(|e| bad("mcp.max_limits.max_output", e))?);
                }
            }
        }
        // The default number of executions leaves room for the pools' ready instances and
        // the runtimes' interpreters.
        if !max_executions_set && c.held_instances() > 0 {
            let room = Admission::ENGINE_SLOTS
                .saturating_sub(c.held_instances().saturating_mul(c.slots_each()))
                / c.slots_each();
            c.admission.max_executions = c.admission.max_executions.min(room.max(1));
            c.admission.max_executions_per_key = c
                .admission
                .max_executions_per_key
                .min(c.admission.max_executions);
        }
        c.add_env_keys()?;
        c.validate()?;
        Ok(c)
    }

    /// Pooling slots (memories, tables, instances) one execution may hold.
    /// Instances held while no request runs: warm pools' ready instances, and the
    /// runtimes' pre-started and session interpreters.
    fn held_instances(&self) -> usize {
        self.pools
            .ready_instances()
            .saturating_add(self.runtimes.reserved_instances())
    }

    fn slots_each(&self) -> usize {
        self.max_limits
            .memories
            .max(self.max_limits.tables)
            .max(self.max_limits.instances)
            .max(1) as usize
    }

    /// Reads and validates the alert rules file, if one is configured; with no outbox of its
    /// own, notifications wait in `alert-outbox.redb` in the data directory.
    pub fn load_alert_rules(&self) -> Result<Option<wasmcage::alert::AlertConfig>, ServerError> {
        let Some(path) = &self.alert_rules else {
            return Ok(None);
        };
        let mut rules =
            wasmcage::alerting::load(path).map_err(|e| bad("alert_rules", e.to_string()))?;
        if rules.delivery.outbox.is_none() {
            rules.delivery.outbox = Some(self.data_dir.join("alert-outbox.redb"));
        }
        Ok(Some(rules))
    }

    /// Checks every value's range; [`Server::bind`](crate::Server::bind) calls it too, so a
    /// configuration built in code is held to the same rules as a file.
    pub fn validate(&self) -> Result<(), ServerError> {
        if self.max_body_memory < self.max_body_bytes as u64 {
            return Err(bad(
                "max_body_memory",
                format!(
                    "{} is less than max_body ({}); one largest body must fit",
                    self.max_body_memory, self.max_body_bytes
                ),
            ));
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.chars().count() < MIN_KEY_CHARS {
                return Err(bad(
                    "api_keys",
                    format!(
                        "key #{} is {} characters long; every key needs at least {MIN_KEY_CHARS} (generate one with `openssl rand -hex 32`)",
                        i + 1,
                        key.chars().count()
                    ),
                ));
            }
        }
        if let Some(rate) = self.rate_limit {
            // NaN fails both comparisons, so it is refused too.
            if !(0.001..=1e6).contains(&rate.per_second) {
                return Err(bad(
                    "rate_limit.per_second",
                    format!("{} is out of range; use 0.001 to 1000000", rate.per_second),
                ));
            }
            if !(1..=1_000_000).contains(&rate.burst) {
                return Err(bad(
                    "rate_limit.burst",
                    format!("{} is out of range; use 1 to 1000000", rate.burst),
                ));
            }
        }
        if self.auth_throttle.max_failures == 0 {
            return Err(bad("auth_throttle.max_failures", "must be at least 1"));
        }
        let a = &self.admission;
        // Every execution, and every ready instance of a warm pool, may hold up to this many
        // pooling slots (memories or tables).
        let slots_each = self.slots_each();
        let ready = self.held_instances();
        let room = Admission::ENGINE_SLOTS.saturating_sub(ready.saturating_mul(slots_each));
        if a.max_executions == 0 || a.max_executions.saturating_mul(slots_each) > room {
            return Err(bad(
                "admission.max_executions",
                format!(
                    "{} is out of range; use 1 to {} (the engine has {} instance slots for executions and the {ready} instances warm pools and language runtimes hold, and each may use {slots_each})",
                    a.max_executions,
                    room / slots_each,
                    Admission::ENGINE_SLOTS
                ),
            ));
        }
        let r = &self.runtimes;
        if r.pool_size > 32 {
            return Err(bad(
                "runtimes.pool_size",
                format!("{} is out of range; use 0 to 32", r.pool_size),
            ));
        }
        if r.max_sessions_per_key > r.max_sessions {
            return Err(bad(
                "runtimes.max_sessions_per_key",
                format!(
                    "{} is more than runtimes.max_sessions ({})",
                    r.max_sessions_per_key, r.max_sessions
                ),
            ));
        }
        if r.session_idle < Duration::from_secs(1) {
            return Err(bad("runtimes.session_idle", "must be at least 1s"));
        }
        if r.workspace_quota == 0 {
            return Err(bad("runtimes.workspace_quota", "must be larger than zero"));
        }
        if let Some(p) = self.mcp.profile
            && crate::api::rank(p) > crate::api::rank(self.profile)
        {
            return Err(bad(
                "mcp.profile",
                format!(
                    "{} is wider than the server's profile ({}); tool calls may only narrow it",
                    p.as_str(),
                    self.profile.as_str()
                ),
            ));
        }
        for host in &self.mcp.allowed_hosts {
            if host.is_empty()
                || host.len() > 261
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_*".contains(&b))
            {
                return Err(bad(
                    "mcp.allowed_hosts",
                    format!("{host:?} is not a host name or host:port"),
                ));
            }
        }
        let m = &self.mcp.max_limits;
        if m.memory == Some(0) || m.fuel == Some(0) || m.timeout.is_some_and(|t| t.is_zero()) {
            return Err(bad("mcp.max_limits", "a ceiling must be larger than zero"));
        }
        // The size of `every_module` pools matters only when there are some.
        let every = (self.pools.every_module > 0).then_some(("pools".to_owned(), self.pools.size));
        let sizes = every.into_iter().chain(
            self.pools
                .modules
                .iter()
                .map(|(id, size)| (format!("pools.modules.{id}"), *size)),
        );
        for (key, size) in sizes {
            if size.max_in_use == 0 || size.max_in_use > a.max_executions {
                return Err(bad(
                    &format!("{key}.max_in_use"),
                    format!(
                        "{} is out of range; use 1 to admission.max_executions ({})",
                        size.max_in_use, a.max_executions
                    ),
                ));
            }
            if size.min_ready > size.max_in_use {
                return Err(bad(
                    &format!("{key}.min_ready"),
                    format!(
                        "{} is more than max_in_use ({})",
                        size.min_ready, size.max_in_use
                    ),
                ));
            }
        }
        if let Some(id) = self
            .pools
            .modules
            .keys()
            .find(|id| !crate::store::is_id(id))
        {
            return Err(bad(
                "pools.modules",
                format!(
                    "{id:?} is not a module id; use the 64 hex digits POST /v1/modules answered with"
                ),
            ));
        }
        if a.max_executions_per_key == 0 || a.max_executions_per_key > a.max_executions {
            return Err(bad(
                "admission.max_executions_per_key",
                format!(
                    "{} is out of range; use 1 to max_executions ({})",
                    a.max_executions_per_key, a.max_executions
                ),
            ));
        }
        if a.memory_budget < self.max_limits.memory_bytes.max(1) {
            return Err(bad(
                "admission.memory_budget",
                format!(
                    "{} bytes cannot hold even one execution at max_limits.memory ({} bytes)",
                    a.memory_budget, self.max_limits.memory_bytes
                ),
            ));
        }
        if self.quota.max_modules == 0 || self.quota.max_bytes == 0 {
            return Err(bad(
                "quota",
                "max_modules and max_bytes must be larger than zero",
            ));
        }
        if !(1..=256).contains(&self.max_concurrent_compiles) {
            return Err(bad(
                "max_concurrent_compiles",
                format!(
                    "{} is out of range; use 1 to 256",
                    self.max_concurrent_compiles
                ),
            ));
        }
        for (key, d) in [
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
            ("auth_throttle.window", self.auth_throttle.window),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be longer than zero"));
            }
        }
        crate::replica::check(&self.replica_id).map_err(|e| bad("replica_id", e))?;
        if let Some(i) = self
            .alert_keys
            .iter()
            .position(|k| !self.api_keys.contains(k))
        {
            return Err(bad(
                "alert_keys",
                format!("key #{} is not one of api_keys", i + 1),
            ));
        }
        if self.health.failure_threshold == 0 {
            return Err(bad("health.failure_threshold", "must be at least 1"));
        }
        for (key, d) in [
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
        ] {
            if d.is_zero() {
                return Err(bad(key, "must be longer than zero"));
            }
        }
        if let Err(e) = wasmcage::tracing::TracingConfig::check_filter(&self.logging.level) {
            return Err(bad("logging.level", e));
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return Err(bad(
                "tracing.sample_ratio",
                format!("{} is not between 0.0 and 1.0", self.tracing.sample_ratio),
            ));
        }
        if let Some(endpoint) = &self.tracing.otlp_endpoint
            && !endpoint.starts_with("http://")
        {
            // The exporter speaks plain HTTP: TLS to a collector is not built in.
            return Err(bad(
                "tracing.otlp_endpoint",
                format!(
                    "{endpoint:?} is not an http:// URL (TLS to the collector is not built in: use a collector on loopback)"
                ),
            ));
        }
        Ok(())
    }

    /// Reads a configuration file, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ServerError> {
        match path {
            None => {
                let mut c = ServerConfig::default();
                c.add_env_keys()?;
                c.validate()?;
                Ok(c)
            }
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ServerError::Config(format!("cannot read {}: {e}", p.display()))
                })?;
                let mut c = Self::from_toml(&text)?;
                // The rules file sits next to the configuration that names it.
                if let (Some(rules), Some(dir)) = (&mut c.alert_rules, p.parent())
                    && rules.is_relative()
                {
                    *rules = dir.join(&*rules);
                }
                // So is a relative runtimes directory.
                if let Some(dir) = p.parent()
                    && c.runtimes.dir.is_relative()
                {
                    c.runtimes.dir = dir.join(&c.runtimes.dir);
                }
                c.source = Some(p.to_owned());
                Ok(c)
            }
        }
    }

    fn add_env_keys(&mut self) -> Result<(), ServerError> {
        match std::env::var("WASMCAGE_API_KEYS") {
            Ok(keys) => self.api_keys.extend(env_keys(&keys)?),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(bad("WASMCAGE_API_KEYS", "is not valid UTF-8"));
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        Ok(())
    }

    /// The effective configuration in the file format (API keys shown only as a count).
    pub fn to_toml(&self) -> String {
        let file = File {
            listen: Some(self.listen.to_string()),
            data_dir: Some(self.data_dir.clone()),
            profile: Some(self.profile.as_str().to_owned()),
            api_keys: Some(
                self.api_keys
                    .iter()
                    .map(|_| "<redacted>".to_owned())
                    .collect(),
            ),
            max_body: Some(self.max_body_bytes.to_string()),
            max_body_memory: Some(self.max_body_memory.to_string()),
            request_timeout: Some(format!("{}ms", self.request_timeout.as_millis())),
            allowed_env: Some(self.allowed_env.clone()),
            rate_limit: self.rate_limit,
            metrics_require_key: Some(self.metrics_require_key),
            alert_keys: Some(
                self.alert_keys
                    .iter()
                    .map(|_| "<redacted>".to_owned())
                    .collect(),
            ),
            max_stdin: Some(self.max_stdin_bytes.to_string()),
            header_read_timeout: Some(ms(self.header_read_timeout)),
            body_read_timeout: Some(ms(self.body_read_timeout)),
            shutdown_timeout: Some(ms(self.shutdown_timeout)),
            max_concurrent_compiles: Some(self.max_concurrent_compiles),
            compile_wait: Some(ms(self.compile_wait)),
            compile_timeout: Some(ms(self.compile_timeout)),
            compile_memory: Some(self.compile_memory.to_string()),
            auth_throttle: Some(FileAuthThrottle {
                max_failures: Some(self.auth_throttle.max_failures),
                window: Some(ms(self.auth_throttle.window)),
            }),
            admission: Some(FileAdmission {
                max_executions: Some(self.admission.max_executions),
                max_executions_per_key: Some(self.admission.max_executions_per_key),
                memory_budget: Some(self.admission.memory_budget.to_string()),
                wait: Some(ms(self.admission.wait)),
            }),
            quota: Some(FileQuota {
                max_modules: Some(self.quota.max_modules),
                max_bytes: Some(self.quota.max_bytes.to_string()),
            }),
            alert_rules: self.alert_rules.clone(),
            replica_id: Some(self.replica_id.clone()),
            health: Some(FileHealth {
                interval: Some(ms(self.health.interval)),
                timeout: Some(ms(self.health.timeout)),
                failure_threshold: Some(self.health.failure_threshold),
                memory_limit: Some(self.health.memory_limit.to_string()),
                min_free_disk: Some(self.health.min_free_disk.to_string()),
            }),
            logging: Some(FileLogging {
                format: Some(
                    match self.logging.format {
                        wasmcage::tracing::LogFormat::Json => "json",
                        _ => "human",
                    }
                    .to_owned(),
                ),
                level: Some(self.logging.level.clone()),
            }),
            tracing: Some(FileTracing {
                otlp_endpoint: self.tracing.otlp_endpoint.clone(),
                service_name: Some(self.tracing.service_name.clone()),
                environment: Some(self.tracing.environment.clone()),
                sample_ratio: Some(self.tracing.sample_ratio),
            }),
            pools: Some(FilePools {
                every_module: Some(self.pools.every_module),
                max_module_size: Some(self.pools.max_module_size.to_string()),
                min_ready: Some(self.pools.size.min_ready),
                max_in_use: Some(self.pools.size.max_in_use),
                modules: Some(
                    self.pools
                        .modules
                        .iter()
                        .map(|(id, size)| {
                            (
                                id.clone(),
                                FilePoolSize {
                                    min_ready: Some(size.min_ready),
                                    max_in_use: Some(size.max_in_use),
                                },
                            )
                        })
                        .collect(),
                ),
            }),
            runtimes: Some(FileRuntimes {
                enabled: Some(self.runtimes.enabled),
                dir: Some(self.runtimes.dir.clone()),
                only: self.runtimes.only.clone(),
                pool_size: Some(self.runtimes.pool_size),
                max_sessions: Some(self.runtimes.max_sessions),
                max_sessions_per_key: Some(self.runtimes.max_sessions_per_key),
                session_idle: Some(ms(self.runtimes.session_idle)),
                workspace_quota: Some(self.runtimes.workspace_quota.to_string()),
            }),
            mcp: Some(FileMcp {
                enabled: Some(self.mcp.enabled),
                // Unset: the server's profile, whatever it is after a reload.
                profile: self.mcp.profile.map(|p| p.as_str().to_owned()),
                allowed_hosts: Some(self.mcp.allowed_hosts.clone()),
                max_limits: Some(FileMcpLimits {
                    memory: self.mcp.max_limits.memory.map(|v| v.to_string()),
                    fuel: self.mcp.max_limits.fuel,
                    timeout: self.mcp.max_limits.timeout.map(ms),
                    max_output: self.mcp.max_limits.max_output.map(|v| v.to_string()),
                }),
            }),
            max_limits: Some(FileLimits {
                memory: Some(self.max_limits.memory_bytes.to_string()),
                fuel: self.max_limits.fuel,
                timeout: Some(format!("{}ms", self.max_limits.timeout.as_millis())),
                max_output: Some(self.max_limits.max_stdout_bytes.to_string()),
                disk: Some(
                    self.max_limits
                        .disk_bytes
                        .map_or_else(|| "none".to_owned(), |d| d.to_string()),
                ),
            }),
        };
        toml::to_string(&file).expect("the configuration serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_fits_the_engines_pooling_slots() {
        // The server builds its engine with the default pooling configuration; if core
        // changes it, the admission bound must follow.
        let pool = wasmcage::core::PoolingConfig::default();
        assert_eq!(Admission::ENGINE_SLOTS + 8, pool.total_instances as usize);
        let default = ServerConfig::default();
        assert!(default.admission.max_executions <= Admission::ENGINE_SLOTS);
        assert_eq!(
            (default.max_limits.memories, default.max_limits.tables),
            (1, 1)
        );
        default.validate().unwrap();
    }

    #[test]
    fn pools_fit_the_engines_slots_with_the_executions() {
        let id = "ab".repeat(32);
        // The default number of executions shrinks to leave room for the ready instances.
        let c = ServerConfig::from_toml(&format!(
            "[runtimes]\nenabled = false\n[pools]\nevery_module = 100\nmin_ready = 2\nmax_in_use = 8\n[pools.modules.{id}]\nmin_ready = 8\n"
        ))
        .unwrap();
        assert_eq!(c.pools.ready_instances(), 208);
        assert!(c.admission.max_executions + 208 <= Admission::ENGINE_SLOTS);
        assert_eq!(c.pools.named(&id).unwrap().max_in_use, 8);
        // Printed and read back, the same configuration.
        assert_eq!(ServerConfig::from_toml(&c.to_toml()).unwrap(), c);
        // Set explicitly, executions and ready instances must fit together.
        let err = ServerConfig::from_toml(
            "[admission]\nmax_executions = 240\n[runtimes]\nenabled = false\n[pools]\nevery_module = 5\nmin_ready = 2\nmax_in_use = 8\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("admission.max_executions") && err.contains("the 10 instances"),
            "{err}"
        );
        for (pools, says) in [
            (
                "every_module = 1\nmin_ready = 9\nmax_in_use = 8",
                "pools.min_ready",
            ),
            ("every_module = 1\nmax_in_use = 0", "pools.max_in_use"),
            ("[pools.modules.nope]\nmin_ready = 1", "not a module id"),
        ] {
            let err = ServerConfig::from_toml(&format!("[pools]\n{pools}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{pools}: {err}");
        }
        // Without `every_module` its sizes do not matter, so a small server stays valid.
        ServerConfig::from_toml("[admission]\nmax_executions = 4\n").unwrap();
    }

    #[test]
    fn tracing_values_are_checked() {
        let load = |t: &str| ServerConfig::from_toml(&format!("[tracing]\n{t}\n"));
        assert!(load("otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"").is_ok());
        let https = load("otlp_endpoint = \"https://collector/v1/traces\"").unwrap_err();
        assert!(https.to_string().contains("TLS"), "{https}");
        assert!(load("sample_ratio = 0.25").is_ok());
        for ratio in ["1.5", "-0.1", "nan"] {
            assert!(load(&format!("sample_ratio = {ratio}")).is_err(), "{ratio}");
        }
    }

    #[test]
    fn environment_keys_are_checked_like_file_keys() {
        let key = "0123456789abcdef";
        assert_eq!(env_keys("").unwrap(), Vec::<String>::new());
        assert_eq!(
            env_keys(&format!(" {key} ,{key}x")).unwrap(),
            [key.to_owned(), format!("{key}x")]
        );
        let err = env_keys(&format!("{key},,{key}")).unwrap_err().to_string();
        assert!(err.contains("empty key"), "{err}");
        // A short key from the environment is refused by the same validation as the file's.
        let config = ServerConfig {
            api_keys: env_keys("short").unwrap(),
            ..ServerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("at least 16"), "{err}");
    }
}
