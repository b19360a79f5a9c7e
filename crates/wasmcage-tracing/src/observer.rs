//! The tracing observer: turns wasmcage events into spans and structured events.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::{Level, Span, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wasmcage_events::{
    Event, ExecutionId, ExecutionReport, ExecutionStart, HealthStatus, Observer, Outcome,
    SecurityEvent, SecurityEventKind, TraceParent,
};

/// The target of execution spans and events; filter on it (`wasmcage=debug`).
pub const TARGET: &str = "wasmcage";

/// Emits a `wasmcage.compile` span per compilation and a `wasmcage.execute` span per
/// execution (with a `wasmcage.instantiate` child), plus structured events for executions,
/// security denials and resource usage. It only emits: installing a subscriber is the
/// binary's choice (see [`crate::init`]).
///
/// Levels keep a healthy system quiet at `info`: finished executions and resource usage are
/// `debug`, traps and limit breaches are `info`, capability denials are `warn`.
#[derive(Debug, Default)]
pub struct TracingObserver {
    executions: Mutex<HashMap<ExecutionId, Spans>>,
    compiles: Mutex<HashMap<ThreadId, Span>>,
}

#[derive(Debug)]
struct Spans {
    execute: Span,
    instantiate: Option<Span>,
}

impl TracingObserver {
    /// A tracing observer.
    pub fn new() -> Self {
        Self::default()
    }

    fn started(&self, start: &ExecutionStart) {
        let ctx = &start.context;
        let execute = tracing::info_span!(
            target: TARGET,
            "wasmcage.execute",
            otel.name = "wasmcage.execute",
            module = &*start.module.name,
            module.hash = %start.module.hash,
            entry = &*start.entry,
            kind = start.kind.as_str(),
            sandbox_id = ctx.sandbox_id.0,
            execution_id = ctx.execution_id.0,
            outcome = field::Empty,
            trap = field::Empty,
            exit_code = field::Empty,
            duration_ms = field::Empty,
            fuel_consumed = field::Empty,
            memory_peak_bytes = field::Empty,
            otel.status_code = field::Empty,
        );
        if let Some(parent) = &ctx.trace {
            // Continue the caller's trace: the execution is a child of the caller's span.
            let _ = execute.set_parent(remote_parent(parent));
        }
        let instantiate = tracing::info_span!(
            target: TARGET,
            parent: &execute,
            "wasmcage.instantiate",
            module = &*start.module.name,
            execution_id = ctx.execution_id.0,
        );
        self.executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                ctx.execution_id,
                Spans {
                    execute,
                    instantiate: Some(instantiate),
                },
            );
    }

    fn finished(&self, report: &ExecutionReport) {
        let spans = self
            .executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&report.execution_id);
        let Some(Spans {
            execute,
            instantiate,
        }) = spans
        else {
            return;
        };
        drop(instantiate);
        let duration_ms = report.duration.as_secs_f64() * 1e3;
        execute.record("outcome", report.outcome.kind().as_str());
        if let Some(trap) = report.outcome.trap_kind() {
            execute.record("trap", trap.as_str());
        }
        if let Some(code) = report.exit_code {
            execute.record("exit_code", code);
        }
        execute.record("duration_ms", duration_ms);
        if let Some(fuel) = report.fuel_consumed {
            execute.record("fuel_consumed", fuel);
        }
        execute.record("memory_peak_bytes", report.memory_peak_bytes);
        if !report.outcome.is_success() {
            execute.record("otel.status_code", "ERROR");
        }
        let trace_id = trace_id_of(&execute);
        let message = report.message.as_deref().unwrap_or("");
        macro_rules! execution_event {
            ($level:expr) => {
                tracing::event!(
                    target: "wasmcage::execution",
                    parent: &execute,
                    $level,
                    event = "execution_finished",
                    execution_id = report.execution_id.0,
                    sandbox_id = report.sandbox_id.0,
                    trace_id = %trace_id,
                    module = &*report.module.name,
                    module_hash = %report.module.hash,
                    kind = report.kind.as_str(),
                    entry = &*report.entry,
                    outcome = report.outcome.kind().as_str(),
                    trap = report.outcome.trap_kind().map(|t| t.as_str()),
                    exit_code = report.exit_code,
                    duration_ms,
                    fuel_consumed = report.fuel_consumed,
                    memory_peak_bytes = report.memory_peak_bytes,
                    message,
                    "execution finished",
                )
            };
        }
        match report.outcome {
            Outcome::Completed | Outcome::Exited(_) => execution_event!(Level::DEBUG),
            _ => execution_event!(Level::INFO),
        }
        let percent = report.memory_usage_ratio() * 100.0;
        macro_rules! resource_event {
            ($level:expr) => {
                tracing::event!(
                    target: "wasmcage::resource",
                    parent: &execute,
                    $level,
                    event = "resource_usage",
                    execution_id = report.execution_id.0,
                    module = &*report.module.name,
                    resource = "memory",
                    usage = report.memory_peak_bytes,
                    limit = report.memory_limit_bytes,
                    percent,
                    "resource usage",
                )
            };
        }
        // Close to a limit is worth seeing at info; ordinary usage is debug.
        if percent >= 90.0 {
            resource_event!(Level::INFO);
        } else {
            resource_event!(Level::DEBUG);
        }
    }

    fn security(&self, e: &SecurityEvent) {
        let spans = self
            .executions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let parent = spans.get(&e.execution_id).map(|s| s.execute.id());
        drop(spans);
        let limit = match e.kind {
            SecurityEventKind::LimitExceeded(limit) => Some(limit.as_str()),
            _ => None,
        };
        macro_rules! security_event {
            ($level:expr) => {
                tracing::event!(
                    target: "wasmcage::security",
                    parent: parent.clone().flatten(),
                    $level,
                    event = "security",
                    kind = e.kind.as_str(),
                    capability = e.capability,
                    target = e.target.as_str(),
                    action = e.action.as_str(),
                    limit,
                    execution_id = e.execution_id.0,
                    module = &*e.module.name,
                    "security event",
                )
            };
        }
        match e.kind {
            SecurityEventKind::CapabilityDenied => security_event!(Level::WARN),
            _ => security_event!(Level::INFO),
        }
    }
}

// Strings a caller or a guest chose (a module's name, an export's name, the path a guest asked
// for) are recorded as `&str` fields, never with `%` (Display): the human format writes a
// `&str` escaped and quoted, so a newline or an escape sequence in one cannot start a forged
// log line or reach a terminal; the JSON format escapes either way.
impl Observer for TracingObserver {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::CompileStarted { name } => {
                let span = tracing::info_span!(
                    target: TARGET,
                    "wasmcage.compile",
                    module = name,
                    module.hash = field::Empty,
                    size_bytes = field::Empty,
                    duration_ms = field::Empty,
                    error = field::Empty,
                );
                self.compiles
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(std::thread::current().id(), span);
            }
            Event::ModuleCompiled(e) => {
                let span = self.take_compile();
                if let Some(span) = span {
                    span.record("module.hash", field::display(&e.module.hash));
                    span.record("size_bytes", e.size_bytes);
                    span.record("duration_ms", e.duration.as_secs_f64() * 1e3);
                }
            }
            Event::ModuleRejected { name, reason } => {
                if let Some(span) = self.take_compile() {
                    span.record("error", reason);
                }
                tracing::info!(target: "wasmcage::module", event = "module_rejected", module = name, reason, "module rejected");
            }
            Event::ExecutionStarted(start) => self.started(start),
            Event::InstanceCreated(e) => {
                let mut spans = self
                    .executions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(s) = spans.get_mut(&e.execution_id) {
                    // Closing the child span now gives it the instantiation's true end.
                    drop(s.instantiate.take());
                }
            }
            Event::ExecutionFinished(report) => self.finished(report),
            Event::Security(e) => self.security(e),
            Event::HealthChanged(c) => {
                let (check, previous, current) =
                    (c.check.as_str(), c.previous.as_str(), c.current.as_str());
                let failures = c.consecutive_failures;
                let message = c.message.as_str();
                match c.current {
                    HealthStatus::Healthy => {
                        tracing::info!(target: "wasmcage::health", check, previous, current, failures, message, "health changed")
                    }
                    HealthStatus::Degraded => {
                        tracing::warn!(target: "wasmcage::health", check, previous, current, failures, message, "health changed")
                    }
                    HealthStatus::Critical => {
                        tracing::error!(target: "wasmcage::health", check, previous, current, failures, message, "health changed")
                    }
                }
            }
            _ => {}
        }
    }
}

impl TracingObserver {
    fn take_compile(&self) -> Option<Span> {
        self.compiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&std::thread::current().id())
    }
}

/// The OpenTelemetry context of a remote parent span from a `traceparent`.
fn remote_parent(parent: &TraceParent) -> opentelemetry::Context {
    let flags = if parent.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        flags,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(context)
}

/// The OpenTelemetry trace id of a span, or an empty string when no OpenTelemetry layer is
/// installed.
fn trace_id_of(span: &Span) -> String {
    let context = span.context();
    let span_ref = context.span();
    let id = span_ref.span_context().trace_id();
    if id == TraceId::INVALID {
        String::new()
    } else {
        id.to_string()
    }
}
