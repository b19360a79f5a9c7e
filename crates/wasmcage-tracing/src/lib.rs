//! Tracing for wasmcage.
//!
//! [`TracingObserver`] turns the sandbox's events into `tracing` spans and events: a
//! `wasmcage.compile` span per compilation, a `wasmcage.execute` span per execution with a
//! `wasmcage.instantiate` child, and structured events for finished executions, security
//! denials and resource usage. An execution started with a W3C `traceparent` continues that
//! trace. The observer only emits; binaries install a subscriber with [`init`], which adds
//! human or JSON output, a `RUST_LOG`-style filter and, optionally, OTLP/HTTP export.

mod init;
mod observer;

pub use init::{
    LogFormat, OtlpConfig, TracingConfig, TracingError, TracingGuard, init, layers, otlp_provider,
};
pub use observer::{TARGET, TracingObserver};
