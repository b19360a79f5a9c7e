//! Every built-in metric family: its name, type, labels and help, in one table.
//!
//! `docs/monitoring.md` lists the same families; a test checks the two against each other.

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::MetricsError;

/// Buckets for execution durations: 1 µs to 30 s.
const EXECUTION_SECONDS: &[f64] = &[
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];
/// Buckets for instantiation and pool assignment: 100 ns to 1 s.
const FAST_SECONDS: &[f64] = &[
    1e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0,
];
/// Buckets for code run in a language runtime: 0.5 ms (a trivial cell in a warm
/// interpreter) to 30 s (the longest default timeout).
const RUNTIME_SECONDS: &[f64] = &[
    5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Buckets for the wait for a language runtime's interpreter: 10 µs (a pre-started one
/// taken from the pool) to 1 s (one started on the spot).
const RUNTIME_ASSIGN_SECONDS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
/// Buckets for compilation: 1 ms to 60 s.
const COMPILE_SECONDS: &[f64] = &[1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0];
/// Buckets for fuel per execution: 1 000 to 10 billion units.
const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
/// Buckets for peak linear memory: 64 KiB to 4 GiB, by fours.
const MEMORY_BYTES: &[f64] = &[
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

/// The built-in families, registered once.
pub(crate) struct Families {
    pub(crate) executions: IntCounterVec,
    pub(crate) command_exits: IntCounterVec,
    pub(crate) execution_duration: HistogramVec,
    pub(crate) fuel_consumed: IntCounterVec,
    pub(crate) execution_fuel: HistogramVec,
    pub(crate) memory_peak: HistogramVec,
    pub(crate) memory_limit: IntGaugeVec,
    pub(crate) traps: IntCounterVec,
    pub(crate) output_truncated: IntCounterVec,
    pub(crate) instances_active: IntGauge,
    pub(crate) instances_created: IntCounter,
    pub(crate) instances_destroyed: IntCounter,
    pub(crate) instantiation_duration: Histogram,
    pub(crate) modules_compiled: IntCounter,
    pub(crate) modules_rejected: IntCounter,
    pub(crate) compile_duration: Histogram,
    pub(crate) cache_hits: IntCounterVec,
    pub(crate) cache_misses: IntCounter,
    pub(crate) cache_evictions: IntCounter,
    pub(crate) cache_discarded: IntCounter,
    pub(crate) cache_entries: IntGauge,
    pub(crate) cache_bytes: IntGauge,
    pub(crate) pool_available: IntGaugeVec,
    pub(crate) pool_in_use: IntGaugeVec,
    pub(crate) pool_max: IntGaugeVec,
    pub(crate) pool_assignments: IntCounterVec,
    pub(crate) pool_assignment_duration: HistogramVec,
    pub(crate) pool_instantiation_duration: HistogramVec,
    pub(crate) pool_hit_ratio: GaugeVec,
    pub(crate) pool_exhausted: IntCounterVec,
    pub(crate) pool_prewarm_duration: GaugeVec,
    pub(crate) pools_created: IntCounter,
    pub(crate) pools_deleted: IntCounter,
    pub(crate) security_violations: IntCounterVec,
    pub(crate) limits_exceeded: IntCounterVec,
    pub(crate) health_status: IntGaugeVec,
    pub(crate) alert_deliveries: IntCounterVec,
    pub(crate) http_requests: IntCounterVec,
    pub(crate) http_duration: HistogramVec,
    pub(crate) http_in_flight: IntGauge,
    pub(crate) http_errors: IntCounterVec,
    pub(crate) executions_queued: IntGauge,
    pub(crate) modules_stored: IntGauge,
    pub(crate) modules_stored_bytes: IntGauge,
    pub(crate) performance_anomalies: IntGaugeVec,
    pub(crate) runtime_executions: IntCounterVec,
    pub(crate) runtime_duration: HistogramVec,
    pub(crate) sessions_active: IntGaugeVec,
    pub(crate) sessions_created: IntCounterVec,
    pub(crate) sessions_ended: IntCounterVec,
    pub(crate) runtime_pool_ready: IntGaugeVec,
    pub(crate) runtime_pool_target: IntGaugeVec,
    pub(crate) runtime_pool_assignments: IntCounterVec,
    pub(crate) runtime_pool_assignment: HistogramVec,
    pub(crate) runtime_pool_start_failures: IntCounterVec,
    pub(crate) mcp_tool_calls: IntCounterVec,
    pub(crate) up: Gauge,
}

/// One row of the family table: what `docs/monitoring.md` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyInfo {
    /// The full metric name.
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

macro_rules! families {
    ($( $field:ident : $ty:ident $name:literal [$($label:literal),*] $buckets:expr, $help:literal; )*) => {
        /// Every built-in family, in the order they are registered.
        pub const FAMILIES: &[FamilyInfo] = &[
            $( FamilyInfo { name: $name, kind: families!(@kind $ty), labels: &[$($label),*], help: $help }, )*
        ];

        impl Families {
            pub(crate) fn register(registry: &Registry) -> Result<Self, MetricsError> {
                let families = Families {
                    $( $field: families!(@make $ty $name [$($label),*] $buckets, $help), )*
                };
                $( registry.register(Box::new(families.$field.clone())).map_err(MetricsError::from)?; )*
                Ok(families)
            }
        }
    };
    (@kind IntCounterVec) => { "counter" };
    (@kind IntCounter) => { "counter" };
    (@kind IntGaugeVec) => { "gauge" };
    (@kind IntGauge) => { "gauge" };
    (@kind GaugeVec) => { "gauge" };
    (@kind Gauge) => { "gauge" };
    (@kind HistogramVec) => { "histogram" };
    (@kind Histogram) => { "histogram" };
    (@make IntCounterVec $name:literal [$($label:literal),*] $b:expr, $help:literal) => {
        IntCounterVec::new(Opts::new($name, $help), &[$($label),*])?
    };
    (@make IntCounter $name:literal [] $b:expr, $help:literal) => { IntCounter::new($name, $help)? };
    (@make IntGaugeVec $name:literal [$($label:literal),*] $b:expr, $help:literal) => {
        IntGaugeVec::new(Opts::new($name, $help), &[$($label),*])?
    };
    (@make IntGauge $name:literal [] $b:expr, $help:literal) => { IntGauge::new($name, $help)? };
    (@make GaugeVec $name:literal [$($label:literal),*] $b:expr, $help:literal) => {
        GaugeVec::new(Opts::new($name, $help), &[$($label),*])?
    };
    (@make Gauge $name:literal [] $b:expr, $help:literal) => { Gauge::new($name, $help)? };
    (@make HistogramVec $name:literal [$($label:literal),*] $b:expr, $help:literal) => {
        HistogramVec::new(HistogramOpts::new($name, $help).buckets($b.to_vec()), &[$($label),*])?
    };
    (@make Histogram $name:literal [] $b:expr, $help:literal) => {
        Histogram::with_opts(HistogramOpts::new($name, $help).buckets($b.to_vec()))?
    };
}

families! {
    executions: IntCounterVec "wasmcage_executions_total" ["module", "kind", "outcome"] (),
        "Executions finished, by module, execution kind (call or command) and outcome.";
    command_exits: IntCounterVec "wasmcage_command_exits_total" ["module", "status"] (),
        "Commands that ended by exiting (outcome `exited`), by module and exit status (`zero` or `nonzero`).";
    execution_duration: HistogramVec "wasmcage_execution_duration_seconds" ["module", "kind"] EXECUTION_SECONDS,
        "Wall-clock time of an execution, instantiation included.";
    fuel_consumed: IntCounterVec "wasmcage_fuel_consumed_total" ["module"] (),
        "Fuel consumed by guests.";
    execution_fuel: HistogramVec "wasmcage_execution_fuel" ["module"] FUEL,
        "Fuel consumed by one execution.";
    memory_peak: HistogramVec "wasmcage_memory_peak_bytes" ["module"] MEMORY_BYTES,
        "Peak linear memory of one execution.";
    memory_limit: IntGaugeVec "wasmcage_memory_limit_bytes" ["module"] (),
        "Linear memory limit in force for the module's last execution.";
    traps: IntCounterVec "wasmcage_traps_total" ["module", "trap"] (),
        "Executions that ended in a trap, by trap kind.";
    output_truncated: IntCounterVec "wasmcage_output_truncated_total" ["stream"] (),
        "Executions whose stdout or stderr capture was cut at its limit.";
    instances_active: IntGauge "wasmcage_instances_active" [] (),
        "Instances alive now.";
    instances_created: IntCounter "wasmcage_instances_created_total" [] (),
        "Instances created for executions.";
    instances_destroyed: IntCounter "wasmcage_instances_destroyed_total" [] (),
        "Instances destroyed after their execution (instances are never reused).";
    instantiation_duration: Histogram "wasmcage_instantiation_duration_seconds" [] FAST_SECONDS,
        "Time to instantiate a module.";
    modules_compiled: IntCounter "wasmcage_modules_compiled_total" [] (),
        "Modules compiled (cache misses that compiled successfully).";
    modules_rejected: IntCounter "wasmcage_modules_rejected_total" [] (),
        "Modules rejected as malformed, invalid or unsupported.";
    compile_duration: Histogram "wasmcage_compile_duration_seconds" [] COMPILE_SECONDS,
        "Time to compile a module.";
    cache_hits: IntCounterVec "wasmcage_cache_hits_total" ["tier"] (),
        "Module cache hits, by tier (memory or disk).";
    cache_misses: IntCounter "wasmcage_cache_misses_total" [] (),
        "Module cache misses.";
    cache_evictions: IntCounter "wasmcage_cache_evictions_total" [] (),
        "Modules evicted from the in-memory cache.";
    cache_discarded: IntCounter "wasmcage_cache_discarded_total" [] (),
        "Corrupt or foreign disk cache files discarded.";
    cache_entries: IntGauge "wasmcage_cache_entries" [] (),
        "Modules held in the in-memory cache.";
    cache_bytes: IntGauge "wasmcage_cache_bytes" [] (),
        "Bytes of module binaries held in the in-memory cache.";
    pool_available: IntGaugeVec "wasmcage_pool_slots_available" ["pool"] (),
        "Pre-instantiated instances ready in a warm pool.";
    pool_in_use: IntGaugeVec "wasmcage_pool_slots_in_use" ["pool"] (),
        "Executions running in a warm pool.";
    pool_max: IntGaugeVec "wasmcage_pool_slots_max" ["pool"] (),
        "The most executions a warm pool runs at once.";
    pool_assignments: IntCounterVec "wasmcage_pool_assignments_total" ["pool", "result"] (),
        "Instances handed to executions, by result (warm or cold).";
    pool_assignment_duration: HistogramVec "wasmcage_pool_assignment_duration_seconds" ["pool"] FAST_SECONDS,
        "Time from asking a warm pool for an instance to having one.";
    pool_instantiation_duration: HistogramVec "wasmcage_pool_instantiation_duration_seconds" ["pool"] FAST_SECONDS,
        "Time a cold assignment spent instantiating.";
    pool_hit_ratio: GaugeVec "wasmcage_pool_hit_ratio" ["pool"] (),
        "Share of assignments served warm since the pool was created.";
    pool_exhausted: IntCounterVec "wasmcage_pool_exhausted_total" ["pool", "action"] (),
        "Times every slot of a warm pool was in use, by action (waited or refused).";
    pool_prewarm_duration: GaugeVec "wasmcage_pool_prewarm_duration_seconds" ["pool"] (),
        "Time the pool's pre-warm took.";
    pools_created: IntCounter "wasmcage_pools_created_total" [] (),
        "Warm pools created (and pre-warmed).";
    pools_deleted: IntCounter "wasmcage_pools_deleted_total" [] (),
        "Warm pools dropped; their series are removed with them.";
    security_violations: IntCounterVec "wasmcage_security_violations_total" ["kind", "capability", "action"] (),
        "Denied capabilities and exceeded limits, by kind, capability and action taken.";
    limits_exceeded: IntCounterVec "wasmcage_resource_limit_exceeded_total" ["resource"] (),
        "Executions that ran into a resource limit, by resource.";
    health_status: IntGaugeVec "wasmcage_health_status" ["check"] (),
        "Health of a check or of `overall`: 0 healthy, 1 degraded, 2 critical.";
    alert_deliveries: IntCounterVec "wasmcage_alert_deliveries_total" ["channel", "result"] (),
        "Alert notification delivery results by channel: delivered, retried, failed_permanent, failed_exhausted.";
    http_requests: IntCounterVec "wasmcage_http_requests_total" ["route", "method", "status"] (),
        "HTTP requests answered by the service, by route template, method and status code.";
    http_duration: HistogramVec "wasmcage_http_request_duration_seconds" ["route"] EXECUTION_SECONDS,
        "Time from a request's arrival to its response, by route template.";
    http_in_flight: IntGauge "wasmcage_http_requests_in_flight" [] (),
        "HTTP requests being handled now.";
    http_errors: IntCounterVec "wasmcage_http_errors_total" ["route", "code"] (),
        "Error responses by route template and API error code (unauthorized, auth_throttled, rate_limited, busy, ...).";
    executions_queued: IntGauge "wasmcage_executions_queued" [] (),
        "Executions waiting for admission (an execution slot or memory budget) now.";
    modules_stored: IntGauge "wasmcage_modules_stored" [] (),
        "Modules the service stores (ready or compiling).";
    modules_stored_bytes: IntGauge "wasmcage_modules_stored_bytes" [] (),
        "Bytes of module binaries the service stores.";
    performance_anomalies: IntGaugeVec "wasmcage_performance_anomalies" ["kind"] (),
        "Exports that look anomalous now in the performance monitor, by kind (slow_p95, high_variance); refreshed at each scrape.";
    runtime_executions: IntCounterVec "wasmcage_runtime_executions_total" ["runtime", "execution_type", "status"] (),
        "Code run in a language runtime, by runtime, execution type (oneshot or session) and status (success, error, timeout, out_of_fuel, memory_limit, stack_overflow).";
    runtime_duration: HistogramVec "wasmcage_runtime_execution_duration_seconds" ["runtime", "execution_type"] RUNTIME_SECONDS,
        "Wall-clock time of code run in a language runtime (a one-shot run, or one session cell).";
    sessions_active: IntGaugeVec "wasmcage_sessions_active" ["runtime"] (),
        "Sessions of a language runtime alive now (created minus ended).";
    sessions_created: IntCounterVec "wasmcage_sessions_created_total" ["runtime"] (),
        "Sessions of a language runtime created.";
    sessions_ended: IntCounterVec "wasmcage_sessions_ended_total" ["runtime", "reason"] (),
        "Sessions of a language runtime ended, by reason (deleted, expired, died, shutdown).";
    runtime_pool_ready: IntGaugeVec "wasmcage_runtime_pool_ready" ["runtime"] (),
        "Pre-started interpreters of a language runtime ready for code now.";
    runtime_pool_target: IntGaugeVec "wasmcage_runtime_pool_target" ["runtime"] (),
        "Pre-started interpreters a language runtime's pool keeps ready.";
    runtime_pool_assignments: IntCounterVec "wasmcage_runtime_pool_assignments_total" ["runtime", "warm"] (),
        "Interpreters handed to executions by a language runtime's pool, by whether the interpreter was pre-started (`true`) or started on the spot (`false`).";
    runtime_pool_assignment: HistogramVec "wasmcage_runtime_pool_assignment_seconds" ["runtime"] RUNTIME_ASSIGN_SECONDS,
        "Time an execution waited for an interpreter from a language runtime's pool.";
    runtime_pool_start_failures: IntCounterVec "wasmcage_runtime_pool_start_failures_total" ["runtime"] (),
        "Interpreters a language runtime's pool failed to pre-start.";
    mcp_tool_calls: IntCounterVec "wasmcage_mcp_tool_calls_total" ["tool", "transport", "result"] (),
        "MCP tool calls answered, by tool, transport (http or stdio) and result (ok, guest_error, refused).";
    up: Gauge "wasmcage_up" [] (),
        "1 while the wasmcage metrics observer is installed.";
}
