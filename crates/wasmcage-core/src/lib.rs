//! Execution of untrusted WebAssembly on wasmtime, under limits the engine enforces.
//!
//! An [`Engine`] compiles [`Module`]s; a [`Sandbox`] runs them, each execution in a fresh
//! instance under [`Limits`] on memory, tables, instances, fuel, wall-clock time and stack.
//! Every execution returns an [`ExecutionReport`] whose [`Outcome`] says how it ended; a guest
//! that traps, loops or exhausts a limit is an outcome, never an error of the host.
//!
//! ```
//! use wasmcage_core::{Engine, EngineConfig, Outcome, Sandbox, Value};
//!
//! let engine = Engine::new(EngineConfig::default())?;
//! let module = engine.compile(
//!     "add.wat",
//!     br#"(module (func (export "add") (param i32 i32) (result i32)
//!            local.get 0 local.get 1 i32.add))"#,
//! )?;
//! let sandbox = Sandbox::builder(&engine).build()?;
//! let out = sandbox.call(&module, "add", &[Value::I32(2), Value::I32(3)])?;
//! assert_eq!(out.report.outcome, Outcome::Completed);
//! assert_eq!(out.results, vec![Value::I32(5)]);
//! # Ok::<(), wasmcage_core::Error>(())
//! ```

mod cache;
mod classify;
mod engine;
mod error;
mod execution;
mod grants;
mod interactive;
mod limits;
mod module;
mod output;
mod pool;
mod precheck;
mod sandbox;
mod stdin;
mod store;
mod value;
mod wasi_guard;
mod worker;

pub use cache::{CacheConfig, CacheStats};
pub use engine::{Engine, EngineConfig, PoolingConfig, module_hash};
pub use error::Error;
pub use interactive::{Interactive, Startup, TurnLimits, TurnOutput};
pub use limits::{Limits, OnMemoryLimit};
pub use module::{ExportInfo, Module};
pub use pool::{OnExhausted, PoolConfig, PoolStats, WarmPool};
pub use precheck::CompileLimits;
pub use sandbox::{CallOutput, CommandInput, CommandOutput, Sandbox, SandboxBuilder};
pub use stdin::{Stdin, StreamedStdin};
pub use value::{Value, ValueType};
pub use wasmcage_events::{
    ExecutionContext, ExecutionKind, ExecutionReport, Outcome, OutcomeKind, SandboxId, TraceParent,
    TrapKind,
};
/// The capability policy crate, for its parsers and the rest of its API.
pub use wasmcage_policy as policy;
pub use wasmcage_policy::{
    Access, Clocks, DirGrant, NetRule, NetworkPolicy, Output, Policy, PolicyBuilder, PolicyError,
    Profile, Randomness,
};
pub use worker::{CompileWorker, WorkerOptions, serve_compile_worker};
