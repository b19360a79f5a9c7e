//! Prometheus metrics for wasmcage.
//!
//! [`Metrics`] is an [`Observer`]: give it to the engine and every compile, instantiation,
//! execution, cache and pool change, language runtime's pool and sessions, security event
//! and health change becomes a Prometheus series in its own [`Registry`] (never a hidden global; pass your own with
//! [`Metrics::with_registry`]). Names follow Prometheus conventions: one `wasmcage_` prefix,
//! base units, `_total` on counters, and bounded label sets: modules are labelled by name,
//! at most [`MetricsConfig::max_module_labels`] of them, language runtimes likewise (at most
//! [`MetricsConfig::max_runtime_labels`]), and never by an execution id.
//!
//! ```
//! use std::sync::Arc;
//! use wasmcage_metrics::{Metrics, MetricsConfig};
//!
//! let metrics = Arc::new(Metrics::new(MetricsConfig::default())?);
//! // Engine::with_observer(config, metrics.clone()) ... then serve `metrics.render()`.
//! assert!(metrics.render().contains("wasmcage_up 1"));
//! # Ok::<(), wasmcage_metrics::MetricsError>(())
//! ```

mod custom;
mod families;
mod monitor;
mod runtime;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{Encoder, Histogram, IntCounter, IntGauge, Registry, TextEncoder};
use wasmcage_events::{
    CacheEventKind, CacheTier, Event, ExecutionKind, ExecutionReport, HealthStatus, ModuleHash,
    ModuleInfo, Observer, OutcomeKind, PoolEventKind, SecurityEventKind,
};

pub use custom::CustomMetrics;
pub use families::{FAMILIES, FamilyInfo};
pub use monitor::{
    Anomaly, AnomalyKind, ExportStats, Hotspot, MonitorConfig, PerformanceMonitor,
    PerformanceReport,
};
pub use runtime::{RUNTIME_LABEL_CHARS, runtime_label};

use families::Families;
use runtime::Runtimes;

/// An error from registering or naming a metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The name does not follow Prometheus naming rules.
    #[error("`{name}` is not a valid Prometheus {what} name: {rule}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// `metric` or `label`.
        what: &'static str,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// The name belongs to a built-in wasmcage metric (the `wasmcage_` prefix is reserved).
    #[error(
        "`{0}` clashes with wasmcage's built-in metrics: names starting with `wasmcage_` are reserved; choose another prefix"
    )]
    Reserved(String),
    /// The registry refused the metric (most often: a metric of that name already exists).
    #[error("the registry refused the metric: {0}")]
    Registry(#[from] prometheus::Error),
}

/// How [`Metrics`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Distinct module names used as label values (default 100); executions of further
    /// modules are counted under `module="_other"`, which keeps cardinality bounded however
    /// many modules users upload.
    pub max_module_labels: usize,
    /// Distinct language runtimes used as label values (default 32); further runtimes are
    /// counted under `runtime="_other"`. Operators install runtimes, so there are few, but
    /// the bound holds whatever names reach the observer.
    pub max_runtime_labels: usize,
    /// Whether to register the standard process collector (CPU, RSS, fds) where the
    /// platform supports it (default on).
    pub process_collector: bool,
    /// The performance monitor's configuration.
    pub monitor: MonitorConfig,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_module_labels: 100,
            max_runtime_labels: 32,
            process_collector: true,
            monitor: MonitorConfig::default(),
        }
    }
}

/// The label value used once `max_module_labels` distinct modules have been seen.
pub const OTHER_MODULE: &str = "_other";

/// Label handles for one (module, execution kind), resolved once and reused: the hot path
/// never formats or hashes label values again.
struct ModuleHandles {
    outcomes: [IntCounter; OutcomeKind::ALL.len()],
    duration: Histogram,
    fuel: IntCounter,
    fuel_per_execution: Histogram,
    memory_peak: Histogram,
    memory_limit: IntGauge,
    /// Commands only: exits with status zero and nonzero.
    exits: Option<[IntCounter; 2]>,
}

/// What the metrics know of one warm pool name: its label, and how many live pools share it.
struct PoolLabel {
    label: Arc<str>,
    live: usize,
}

/// The Prometheus observer. See the crate documentation.
pub struct Metrics {
    registry: Registry,
    families: Families,
    config: MetricsConfig,
    labels: Mutex<HashMap<ModuleHash, Arc<str>>>,
    handles: Mutex<HashMap<(ModuleHash, ExecutionKind), Arc<ModuleHandles>>>,
    /// Warm pools by name (as the pool reports it), for their bounded labels.
    pools: Mutex<HashMap<Arc<str>, PoolLabel>>,
    /// Language runtimes by name, for their bounded labels and resolved handles.
    runtimes: Runtimes,
    monitor: PerformanceMonitor,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics in a registry of their own.
    pub fn new(config: MetricsConfig) -> Result<Self, MetricsError> {
        Self::with_registry(Registry::new(), config)
    }

    /// Metrics registered into `registry`, next to whatever else it holds.
    pub fn with_registry(registry: Registry, config: MetricsConfig) -> Result<Self, MetricsError> {
        let families = Families::register(&registry)?;
        families.up.set(1.0);
        // Healthy until a health monitor says otherwise, so that the family has a series from
        // the first scrape (dashboards and rules over it would otherwise see nothing).
        families
            .health_status
            .with_label_values(&["overall"])
            .set(0);
        // Families with a small fixed label set exist at zero from the first scrape, so that
        // `rate()` sees their first increase and dashboards over them have a series.
        for tier in ["memory", "disk"] {
            families.cache_hits.with_label_values(&[tier]);
        }
        for stream in ["stdout", "stderr"] {
            families.output_truncated.with_label_values(&[stream]);
        }
        if config.process_collector {
            register_process_collector(&registry)?;
        }
        Ok(Metrics {
            registry,
            families,
            monitor: PerformanceMonitor::new(config.monitor.clone()),
            runtimes: Runtimes::new(config.max_runtime_labels),
            config,
            labels: Mutex::default(),
            handles: Mutex::default(),
            pools: Mutex::default(),
        })
    }

    /// The registry the metrics live in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The performance monitor fed by every execution.
    pub fn monitor(&self) -> &PerformanceMonitor {
        &self.monitor
    }

    /// Registers metrics of your own into the same registry.
    pub fn custom(&self) -> CustomMetrics<'_> {
        CustomMetrics::new(&self.registry)
    }

    /// Everything in the registry, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding families gathered from our own registry into a Vec cannot fail.
        TextEncoder::new()
            .encode(&self.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Counts one alert delivery result (`delivered`, `retried`, `failed_permanent`,
    /// `failed_exhausted`) for a channel. Channels come from configuration, so the label set
    /// stays bounded.
    pub fn record_alert_delivery(&self, channel: &str, result: &str) {
        self.families
            .alert_deliveries
            .with_label_values(&[channel, result])
            .inc();
    }

    /// Counts one HTTP request answered by the service. `route` is the route template (never
    /// the raw path) and `method` one of the standard methods, so the label sets stay bounded.
    pub fn record_http_request(&self, route: &str, method: &str, status: u16, duration: f64) {
        let f = &self.families;
        let status = status.to_string();
        f.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        f.http_duration
            .with_label_values(&[route])
            .observe(duration);
    }

    /// Counts one MCP tool call by tool, transport (`http`, `stdio`) and result (`ok`,
    /// `guest_error`, `refused`). Tool names are checked against the server's own tools
    /// before they are counted, so the label sets stay bounded.
    pub fn record_mcp_tool_call(&self, tool: &str, transport: &str, result: &str) {
        self.families
            .mcp_tool_calls
            .with_label_values(&[tool, transport, result])
            .inc();
    }

    /// Counts one error response by its API error code (a fixed set of names).
    pub fn record_http_error(&self, route: &str, code: &str) {
        self.families
            .http_errors
            .with_label_values(&[route, code])
            .inc();
    }

    /// Moves the in-flight request gauge by `delta` (+1 when a request arrives, -1 when it is
    /// answered).
    pub fn http_in_flight(&self, delta: i64) {
        self.families.http_in_flight.add(delta);
    }

    /// Moves the gauge of executions waiting for admission by `delta` (+1 when a request
    /// starts waiting, -1 when it is admitted or gives up).
    pub fn executions_queued(&self, delta: i64) {
        self.families.executions_queued.add(delta);
    }

    /// Sets the gauges of stored modules: how many, and their binaries' bytes.
    pub fn set_modules_stored(&self, count: u64, bytes: u64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.families.modules_stored.set(gauge(count));
        self.families.modules_stored_bytes.set(gauge(bytes));
    }

    /// Gives the module with this content hash the fixed `module` label `label` instead of
    /// `<name>@<hash>`, and creates its series at zero. For the host's own modules, such as
    /// the health canary ([`CANARY_MODULE`]): a module's label always contains `@` otherwise,
    /// so no uploaded module can take a reserved label, and `module!="canary"` excludes
    /// exactly the canary's executions. Call it before the module is first compiled.
    pub fn reserve_module_label(&self, hash: ModuleHash, label: &'static str) {
        debug_assert!(!label.contains('@'), "a reserved label has no `@`");
        let label: Arc<str> = label.into();
        let fresh = self
            .labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, label.clone())
            .is_none();
        if fresh {
            self.create_module_series(&label);
        }
    }

    /// Every family of the registry, with the values computed on demand (the performance
    /// monitor's anomalies) brought up to date first: what a scrape or an alert rule reads.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let anomalies = self.monitor.anomalies();
        for kind in AnomalyKind::ALL {
            let now = anomalies.iter().filter(|a| a.kind == kind).count();
            self.families
                .performance_anomalies
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
        self.registry.gather()
    }

    /// The content type of [`Metrics::render`]'s output.
    pub fn content_type(&self) -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }

    fn module_label(&self, report: &ExecutionReport) -> Arc<str> {
        self.label_of(&report.module).0
    }

    /// The module's label, and whether it was given just now.
    fn label_of(&self, module: &ModuleInfo) -> (Arc<str>, bool) {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(label) = labels.get(&module.hash) {
            return (label.clone(), false);
        }
        if labels.len() >= self.config.max_module_labels {
            return (OTHER_MODULE.into(), false);
        }
        let label = module_label(&module.name, &module.hash);
        labels.insert(module.hash, label.clone());
        (label, true)
    }

    /// Creates a newly seen module's execution series at zero, so that its first executions
    /// are an increase that `rate()` and `increase()` see, not a first sample.
    fn register_module(&self, module: &ModuleInfo) {
        let (label, new) = self.label_of(module);
        if new {
            self.create_module_series(&label);
        }
    }

    fn create_module_series(&self, label: &str) {
        for kind in ["call", "command"] {
            for outcome in OutcomeKind::ALL {
                self.families
                    .executions
                    .with_label_values(&[label, kind, outcome.as_str()]);
            }
        }
        for status in EXIT_STATUSES {
            self.families
                .command_exits
                .with_label_values(&[label, status]);
        }
    }

    fn handles(&self, report: &ExecutionReport) -> Arc<ModuleHandles> {
        let key = (report.module.hash, report.kind);
        if let Some(h) = self
            .handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return h.clone();
        }
        let module = self.module_label(report);
        let f = &self.families;
        let kind = report.kind.as_str();
        let handles = Arc::new(ModuleHandles {
            outcomes: OutcomeKind::ALL.map(|o| {
                f.executions
                    .with_label_values(&[&*module, kind, o.as_str()])
            }),
            duration: f.execution_duration.with_label_values(&[&*module, kind]),
            fuel: f.fuel_consumed.with_label_values(&[&*module]),
            fuel_per_execution: f.execution_fuel.with_label_values(&[&*module]),
            memory_peak: f.memory_peak.with_label_values(&[&*module]),
            memory_limit: f.memory_limit.with_label_values(&[&*module]),
            exits: (report.kind == ExecutionKind::Command).then(|| {
                EXIT_STATUSES.map(|status| f.command_exits.with_label_values(&[&*module, status]))
            }),
        });
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, handles.clone());
        handles
    }

    fn on_execution(&self, report: &ExecutionReport) {
        let h = self.handles(report);
        let outcome = report.outcome.kind();
        let index = OutcomeKind::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("every kind is listed");
        h.outcomes[index].inc();
        if let (Some(exits), Some(code)) = (&h.exits, report.exit_code) {
            exits[usize::from(code != 0)].inc();
        }
        h.duration.observe(report.duration.as_secs_f64());
        if let Some(fuel) = report.fuel_consumed {
            h.fuel.inc_by(fuel);
            h.fuel_per_execution.observe(fuel as f64);
        }
        h.memory_peak.observe(report.memory_peak_bytes as f64);
        h.memory_limit
            .set(i64::try_from(report.memory_limit_bytes).unwrap_or(i64::MAX));
        if let Some(trap) = report.outcome.trap_kind() {
            let module = self.module_label(report);
            self.families
                .traps
                .with_label_values(&[&*module, trap.as_str()])
                .inc();
        }
        for (stream, cut) in [
            ("stdout", report.stdout_truncated),
            ("stderr", report.stderr_truncated),
        ] {
            if cut {
                self.families
                    .output_truncated
                    .with_label_values(&[stream])
                    .inc();
            }
        }
        if let Some(tag) = &report.runtime {
            self.runtimes.on_execution(&self.families, tag, report);
        }
        self.monitor.record(
            &report.module.name,
            &report.entry,
            report.execution_id.0,
            report.duration,
        );
    }
}

/// The `status` label values of `wasmcage_command_exits_total`, indexed by "nonzero".
const EXIT_STATUSES: [&str; 2] = ["zero", "nonzero"];

impl Metrics {
    /// The label of a warm pool's series, keeping count of the live pools behind it: a new
    /// pool creates its counters at zero, and when its last pool is dropped every series of
    /// the label is removed (and `None` says there is nothing more to record).
    fn pool_label(&self, name: &Arc<str>, kind: PoolEventKind) -> Option<Arc<str>> {
        let f = &self.families;
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        match kind {
            PoolEventKind::Prewarmed { .. } => {
                f.pools_created.inc();
                if let Some(known) = pools.get_mut(name) {
                    known.live += 1;
                    return Some(known.label.clone());
                }
                if pools.len() >= self.config.max_module_labels {
                    return Some(OTHER_MODULE.into());
                }
                let label = pool_label(name);
                for action in ["waited", "refused"] {
                    f.pool_exhausted.with_label_values(&[&*label, action]);
                }
                for result in ["warm", "cold"] {
                    f.pool_assignments.with_label_values(&[&*label, result]);
                }
                pools.insert(
                    name.clone(),
                    PoolLabel {
                        label: label.clone(),
                        live: 1,
                    },
                );
                Some(label)
            }
            PoolEventKind::Dropped => {
                f.pools_deleted.inc();
                let known = pools.get_mut(name)?;
                known.live -= 1;
                if known.live > 0 {
                    return None;
                }
                let label = pools.remove(name).expect("present").label;
                let one = [&*label];
                let _ = f.pool_available.remove_label_values(&one);
                let _ = f.pool_in_use.remove_label_values(&one);
                let _ = f.pool_max.remove_label_values(&one);
                let _ = f.pool_hit_ratio.remove_label_values(&one);
                let _ = f.pool_prewarm_duration.remove_label_values(&one);
                let _ = f.pool_assignment_duration.remove_label_values(&one);
                let _ = f.pool_instantiation_duration.remove_label_values(&one);
                for result in ["warm", "cold"] {
                    let _ = f.pool_assignments.remove_label_values(&[&*label, result]);
                }
                for action in ["waited", "refused"] {
                    let _ = f.pool_exhausted.remove_label_values(&[&*label, action]);
                }
                None
            }
            _ => Some(
                pools
                    .get(name)
                    .map_or_else(|| OTHER_MODULE.into(), |p| p.label.clone()),
            ),
        }
    }
}

impl Observer for Metrics {
    fn on_event(&self, event: &Event<'_>) {
        let f = &self.families;
        match *event {
            Event::ModuleCompiled(e) => {
                self.register_module(&e.module);
                f.modules_compiled.inc();
                f.compile_duration.observe(e.duration.as_secs_f64());
            }
            Event::ModuleRejected { .. } => f.modules_rejected.inc(),
            Event::InstanceCreated(e) => {
                f.instances_created.inc();
                f.instances_active.inc();
                f.instantiation_duration.observe(e.duration.as_secs_f64());
            }
            Event::InstanceDestroyed { .. } => {
                f.instances_destroyed.inc();
                f.instances_active.dec();
            }
            Event::ExecutionFinished(report) => self.on_execution(report),
            Event::Security(e) => {
                let kind = e.kind.as_str();
                f.security_violations
                    .with_label_values(&[kind, e.capability, e.action.as_str()])
                    .inc();
                if let SecurityEventKind::LimitExceeded(limit) = e.kind {
                    f.limits_exceeded.with_label_values(&[limit.as_str()]).inc();
                }
            }
            Event::HealthChanged(e) => {
                let value = match e.current {
                    HealthStatus::Healthy => 0,
                    HealthStatus::Degraded => 1,
                    HealthStatus::Critical => 2,
                };
                f.health_status.with_label_values(&[&e.check]).set(value);
            }
            Event::Cache(e) => {
                if let CacheEventKind::Hit(_) = e.kind {
                    self.register_module(&e.module);
                }
                match e.kind {
                    CacheEventKind::Hit(CacheTier::Memory) => {
                        f.cache_hits.with_label_values(&["memory"]).inc()
                    }
                    CacheEventKind::Hit(CacheTier::Disk) => {
                        f.cache_hits.with_label_values(&["disk"]).inc()
                    }
                    CacheEventKind::Miss => f.cache_misses.inc(),
                    CacheEventKind::Evicted => f.cache_evictions.inc(),
                    CacheEventKind::Discarded => f.cache_discarded.inc(),
                    _ => {}
                }
                f.cache_entries
                    .set(i64::try_from(e.entries).unwrap_or(i64::MAX));
                f.cache_bytes
                    .set(i64::try_from(e.bytes).unwrap_or(i64::MAX));
            }
            Event::Runtime(e) => self.runtimes.on_event(f, e),
            Event::Pool(e) => {
                let Some(label) = self.pool_label(&e.pool, e.kind) else {
                    return;
                };
                let pool = &*label;
                let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                f.pool_available
                    .with_label_values(&[pool])
                    .set(gauge(e.available));
                f.pool_in_use
                    .with_label_values(&[pool])
                    .set(gauge(e.in_use));
                f.pool_max.with_label_values(&[pool]).set(gauge(e.max));
                match e.kind {
                    PoolEventKind::Prewarmed { duration, .. } => {
                        f.pool_prewarm_duration
                            .with_label_values(&[pool])
                            .set(duration.as_secs_f64());
                    }
                    PoolEventKind::Assigned {
                        warm,
                        wait,
                        instantiate,
                    } => {
                        let result = if warm { "warm" } else { "cold" };
                        f.pool_assignments.with_label_values(&[pool, result]).inc();
                        f.pool_assignment_duration
                            .with_label_values(&[pool])
                            .observe(wait.as_secs_f64());
                        if !warm {
                            f.pool_instantiation_duration
                                .with_label_values(&[pool])
                                .observe(instantiate.as_secs_f64());
                        }
                        let hits = f.pool_assignments.with_label_values(&[pool, "warm"]).get();
                        let misses = f.pool_assignments.with_label_values(&[pool, "cold"]).get();
                        f.pool_hit_ratio
                            .with_label_values(&[pool])
                            .set(hits as f64 / (hits + misses).max(1) as f64);
                    }
                    PoolEventKind::Exhausted { refused } => {
                        let action = if refused { "refused" } else { "waited" };
                        f.pool_exhausted.with_label_values(&[pool, action]).inc();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(target_os = "linux")]
fn register_process_collector(registry: &Registry) -> Result<(), MetricsError> {
    let collector = prometheus::process_collector::ProcessCollector::for_self();
    registry.register(Box::new(collector))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn register_process_collector(_registry: &Registry) -> Result<(), MetricsError> {
    // The prometheus crate's process collector reads /proc; elsewhere there is nothing to add.
    Ok(())
}

/// The `module` label of a module: its name, as the uploader chose it, cut to at most
/// [`MODULE_LABEL_NAME_CHARS`] characters of `[A-Za-z0-9_.-]` (anything else becomes `_`),
/// then `@` and the short content hash. The name is caller-controlled; the hash keeps two
/// modules apart when their names collide, and the label stays short whatever was uploaded.
pub fn module_label(name: &str, hash: &ModuleHash) -> Arc<str> {
    let mut label = sanitized(name, MODULE_LABEL_NAME_CHARS);
    label.push('@');
    label.push_str(&hash.short());
    label.into()
}

/// The `pool` label of a warm pool named `<module name>@<short hash>`: the same shape and
/// bound as a module label, whatever the name holds.
pub fn pool_label(pool: &str) -> Arc<str> {
    let (name, hash) = pool.rsplit_once('@').unwrap_or((pool, ""));
    let mut label = sanitized(name, MODULE_LABEL_NAME_CHARS);
    label.push('@');
    label.push_str(&sanitized(hash, 12));
    label.into()
}

/// At most `max` characters of `text`, each in `[A-Za-z0-9_.-]` (anything else becomes
/// `_`); `_` for an empty text.
fn sanitized(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The `module` label of the health canary's executions (see
/// [`Metrics::reserve_module_label`]); shipped rules and dashboards leave it out with
/// `module!="canary"`.
pub const CANARY_MODULE: &str = "canary";

/// The most characters of a module's name that go into its `module` label.
pub const MODULE_LABEL_NAME_CHARS: usize = 32;
