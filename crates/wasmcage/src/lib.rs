//! wasmcage: a secure WebAssembly sandbox.
//!
//! Run code you do not trust (plugins, user-submitted functions, code an LLM agent just
//! wrote) in a fresh WebAssembly instance per execution, under limits that the engine
//! enforces, and get a classified [`ExecutionReport`] for every run.
//!
//! [`Wasmcage::builder`] composes everything (with the default features): metrics, tracing,
//! health checks and alerting, and the endpoints that serve them.
//!
//! ```
//! use wasmcage::{MonitoringConfig, Policy, Profile, Value, Wasmcage};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cage = Wasmcage::builder()
//!     .policy(Policy::profile(Profile::Strict))
//!     .monitoring(MonitoringConfig {
//!         metrics_addr: Some("127.0.0.1:0".parse()?), // /metrics
//!         health_addr: None,                          // probes on the metrics port too
//!         ..MonitoringConfig::default()
//!     })
//!     .start()
//!     .await?;
//! let module = cage.compile("add.wat", br#"(module (func (export "add")
//!     (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#)?;
//! let out = cage.pool(&module)?.call_async("add", &[Value::I32(2), Value::I32(3)]).await?;
//! assert_eq!(out.results, [Value::I32(5)]);
//! assert!(cage.metrics().render().contains("wasmcage_executions_total"));
//! assert!(cage.health().is_ready());
//! # Ok(()) }
//! ```
//!
//! This facade re-exports the layers so that most users depend on this one crate:
//! [`core`] (execution on wasmtime), [`events`] (the vocabulary every layer shares), and,
//! behind cargo features, `metrics` (Prometheus, feature `metrics`) and `monitoring` (the
//! HTTP server for `/metrics`, feature `monitoring`). Both features are on by default.
//!
//! ```
//! use wasmcage::{CommandInput, Engine, EngineConfig, Limits, Outcome, Sandbox};
//! use std::time::Duration;
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! // A guest that never stops: the sandbox stops it.
//! let module = engine.compile("spin.wat", br#"(module (func (export "_start") (loop (br 0))))"#)?;
//! let sandbox = Sandbox::builder(&engine)
//!     .limits(Limits { fuel: None, timeout: Duration::from_millis(50), ..Limits::default() })
//!     .build()?;
//! let out = sandbox.run_command(&module, CommandInput::default())?;
//! assert_eq!(out.report.outcome, Outcome::Timeout);
//! # Ok::<(), wasmcage::Error>(())
//! ```

pub use wasmcage_core as core;
pub use wasmcage_events as events;
/// Prometheus metrics and the performance monitor (feature `metrics`).
#[cfg(feature = "metrics")]
pub use wasmcage_metrics as metrics;
/// Spans, JSON logs and OpenTelemetry export (feature `tracing`).
#[cfg(feature = "tracing")]
pub use wasmcage_tracing as tracing;

#[cfg(feature = "monitoring")]
pub mod monitoring;

/// Alert rules and notifiers (feature `alert`).
#[cfg(feature = "alert")]
pub use wasmcage_alert as alert;

#[cfg(feature = "alert")]
pub mod alerting;

/// Health checks, the monitor and the probes (feature `health`).
#[cfg(feature = "health")]
pub use wasmcage_health as health;

#[cfg(feature = "health")]
pub mod health_checks;

/// Language runtimes: installed interpreters, pre-started pools and sessions (feature
/// `runtime`).
#[cfg(feature = "runtime")]
pub use wasmcage_runtime as runtime;

#[cfg(feature = "runtime")]
mod runtimes;
#[cfg(feature = "runtime")]
pub use runtimes::{LanguageRuntimes, RuntimesConfig};

mod cage;
pub use cage::{MonitoringConfig, StartError, Wasmcage, WasmcageBuilder};

pub use wasmcage_core::{
    Access, Clocks, NetRule, NetworkPolicy, Output, Policy, PolicyBuilder, PolicyError, Profile,
    Randomness,
};
pub use wasmcage_core::{
    CacheConfig, CallOutput, CommandInput, CommandOutput, CompileLimits, Engine, EngineConfig,
    Error, ExecutionKind, ExecutionReport, ExportInfo, Interactive, Limits, Module, OnExhausted,
    Outcome, OutcomeKind, PoolConfig, PoolStats, PoolingConfig, Sandbox, SandboxBuilder, Startup,
    Stdin, StreamedStdin, TraceParent, TrapKind, TurnLimits, TurnOutput, Value, ValueType,
    WarmPool,
};
pub use wasmcage_events::{Event, FanOut, NoopObserver, Observer, RecordingObserver};
pub use wasmcage_events::{ExecutionType, RecordedEvent, RuntimeTag};

/// The README's Rust example, compiled and run as a doc test so that it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// docs/policy.md's Rust example, compiled and run as a doc test so that it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/policy.md")]
pub struct PolicyDocDoctests;

/// docs/tracing.md's Rust example, compiled as a doc test so that it cannot drift.
#[cfg(all(doctest, feature = "tracing"))]
#[doc = include_str!("../../../docs/tracing.md")]
pub struct TracingDocDoctests;

/// docs/monitoring.md's Rust example, compiled as a doc test so that it cannot drift.
#[cfg(all(doctest, feature = "metrics", feature = "monitoring"))]
#[doc = include_str!("../../../docs/monitoring.md")]
pub struct MonitoringDocDoctests;
