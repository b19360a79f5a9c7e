//! The shared vocabulary of wasmcage.
//!
//! Every layer of wasmcage speaks in the types of this crate: the [`ExecutionReport`] that
//! each run returns, the classified [`Outcome`], the [`Event`]s that execution emits, and the
//! [`Observer`] trait that metrics, tracing, health and alerting implement.
//!
//! The crate is deliberately small and has no runtime dependencies beyond `serde`: it knows
//! nothing of wasmtime, tokio or any exporter, so that an observer can be written, compiled and
//! tested without the engine.
//!
//! ```
//! use std::sync::Arc;
//! use wasmcage_events::{Event, FanOut, NoopObserver, Observer, RecordingObserver};
//!
//! let recorder = Arc::new(RecordingObserver::default());
//! let observers = FanOut::new(vec![Arc::new(NoopObserver), recorder.clone()]);
//! observers.on_event(&Event::ModuleRejected { name: "bad.wasm", reason: "not wasm" });
//! assert_eq!(recorder.events().len(), 1);
//! ```

mod event;
mod observer;
mod report;
pub mod units;

pub use event::{
    CacheEvent, CacheEventKind, CacheTier, CompileEvent, Event, ExecutionContext, ExecutionStart,
    HealthChange, HealthStatus, InstantiateEvent, LimitKind, ModuleHash, ModuleInfo, PoolEvent,
    PoolEventKind, RuntimeEvent, RuntimeEventKind, SecurityAction, SecurityEvent,
    SecurityEventKind, SessionEnd, TraceParent,
};
pub use observer::{FanOut, NoopObserver, Observer, RecordedEvent, RecordingObserver};
pub use report::{
    ExecutionId, ExecutionKind, ExecutionReport, ExecutionType, Outcome, OutcomeKind, RuntimeTag,
    SandboxId, TrapKind,
};
