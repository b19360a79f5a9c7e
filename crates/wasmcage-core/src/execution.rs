//! One execution, from `ExecutionStarted` to `ExecutionFinished`.
//!
//! [`Execution`] is a guard: it sends `ExecutionStarted` when it begins and exactly one
//! `ExecutionFinished` however it ends. A guest's end is classified into the report; a host
//! error after the start (a scratch directory that cannot be made, no free instance slot)
//! still finishes the execution for the observers, with the `trap` (`host`) outcome, before
//! the error goes back to the caller.

use std::time::{Duration, Instant};

use wasmcage_events::{
    Event, ExecutionContext, ExecutionId, ExecutionKind, ExecutionReport, ExecutionStart,
    InstantiateEvent, LimitKind, Outcome, SecurityAction, SecurityEvent, SecurityEventKind,
    TrapKind,
};
use wasmtime::{Instance, Store, Val};

use crate::classify::classify;
use crate::limits::LimitBreach;
use crate::sandbox::Plan;
use crate::store::{Io, StoreState};
use crate::{Error, Module, Sandbox, Value};

/// What an execution produced, for the public output types.
pub(crate) struct Finished {
    pub(crate) results: Vec<Value>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) report: ExecutionReport,
}

/// An instantiated (or failed) store handed to one execution.
pub(crate) struct Assigned {
    pub(crate) store: Store<StoreState>,
    pub(crate) instance: Result<Instance, wasmtime::Error>,
    pub(crate) instantiate_duration: Duration,
    /// The fuel the store was armed with; `None` when fuel is not metered.
    pub(crate) fuel_given: Option<u64>,
}

/// The guard of one execution; see the module documentation.
pub(crate) struct Execution<'a> {
    sandbox: &'a Sandbox,
    module: &'a Module,
    pub(crate) context: ExecutionContext,
    pub(crate) started: Instant,
    kind: ExecutionKind,
    entry: std::sync::Arc<str>,
    runtime: Option<std::sync::Arc<wasmcage_events::RuntimeTag>>,
    finished: bool,
}

impl<'a> Execution<'a> {
    /// Gives the execution its ids and tells the observers it is starting.
    pub(crate) fn begin(sandbox: &'a Sandbox, module: &'a Module, plan: &Plan) -> Self {
        let context = ExecutionContext {
            execution_id: ExecutionId::next(),
            sandbox_id: sandbox.id(),
            trace: plan.trace,
        };
        let runtime = plan.command.as_ref().and_then(|c| c.runtime.clone());
        sandbox
            .observer()
            .on_event(&Event::ExecutionStarted(&ExecutionStart {
                context,
                module: module.info().clone(),
                kind: plan.kind,
                entry: plan.name.clone(),
                runtime: runtime.clone(),
            }));
        Execution {
            sandbox,
            module,
            context,
            started: Instant::now(),
            kind: plan.kind,
            entry: plan.name.clone(),
            runtime,
            finished: false,
        }
    }

    fn base_report(&self, outcome: Outcome, message: Option<String>) -> ExecutionReport {
        let limits = self.sandbox.limits();
        ExecutionReport {
            execution_id: self.context.execution_id,
            sandbox_id: self.context.sandbox_id,
            trace_id: self.context.trace.map(|t| t.trace_id_hex()),
            module: self.module.info().clone(),
            kind: self.kind,
            entry: self.entry.clone(),
            outcome,
            exit_code: None,
            message,
            duration: self.started.elapsed(),
            instantiate_duration: Duration::ZERO,
            fuel_consumed: None,
            fuel_limit: None,
            memory_peak_bytes: 0,
            memory_limit_bytes: limits.memory_bytes,
            memory_limit_hit: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            runtime: self.runtime.clone(),
        }
    }

    /// Runs the entry on an assigned store, classifies the end and reports it once.
    pub(crate) fn run(mut self, plan: Plan, assigned: Assigned, io: Option<Io>) -> Finished {
        let observer = self.sandbox.observer();
        let limits = self.sandbox.limits();
        let execution_id = self.context.execution_id;
        let Assigned {
            mut store,
            instance,
            instantiate_duration,
            fuel_given,
        } = assigned;

        let mut results = vec![Val::I32(0); plan.results];
        let (outcome, message, instantiated) = match instance {
            Err(e) => {
                let c = classify(&e);
                (c.outcome, c.message, false)
            }
            Ok(instance) => {
                observer.on_event(&Event::InstanceCreated(&InstantiateEvent {
                    module: self.module.info().clone(),
                    execution_id,
                    duration: instantiate_duration,
                }));
                // The export was checked against the module's type before the execution
                // started, so it is there; should it not be, that is the guest's trap.
                let func = instance
                    .get_module_export(&mut store, &plan.export)
                    .and_then(wasmtime::Extern::into_func);
                let called = match func {
                    Some(func) => func.call(&mut store, &plan.params, &mut results),
                    None => Err(wasmtime::Error::msg(format!(
                        "export `{}` is missing from the instance",
                        plan.name
                    ))),
                };
                match called {
                    Ok(()) => (Outcome::Completed, None, true),
                    Err(e) => {
                        let c = classify(&e);
                        (c.outcome, c.message, true)
                    }
                }
            }
        };

        // wasmtime keeps a running guest's fuel count in a register and writes it back to the
        // store only at calls, returns and exhaustion; an epoch interrupt (the deadline or a
        // cancellation) stops the guest without writing it back, so what the store holds then
        // says nothing of what the guest used (a spinning loop would read as 0). Unknown is
        // reported as unknown.
        let interrupted = matches!(outcome, Outcome::Timeout | Outcome::Cancelled);
        let fuel_consumed = fuel_given
            .filter(|_| !interrupted)
            .map(|given| given.saturating_sub(store.get_fuel().unwrap_or(0)));
        let state = store.into_data();
        if instantiated {
            observer.on_event(&Event::InstanceDestroyed {
                module: self.module.info(),
            });
        }
        let ((stdout, stdout_bytes, stdout_truncated), (stderr, stderr_bytes, stderr_truncated)) =
            io.map_or_else(Default::default, |io| {
                (io.stdout.finish(), io.stderr.finish())
            });
        let exit_code = match (outcome, plan.kind) {
            (Outcome::Exited(code), _) => Some(code),
            (Outcome::Completed, ExecutionKind::Command) => Some(0),
            _ => None,
        };
        let results = if outcome == Outcome::Completed {
            let mut values = Vec::with_capacity(results.len());
            values.extend(results.iter().filter_map(Value::from_wasmtime));
            values
        } else {
            Vec::new()
        };
        let report = ExecutionReport {
            exit_code,
            instantiate_duration,
            fuel_consumed,
            fuel_limit: limits.fuel.filter(|_| fuel_given.is_some()),
            memory_peak_bytes: state.limiter.memory_peak,
            memory_limit_hit: state
                .limiter
                .breach
                .is_some_and(|b| b.kind == LimitKind::Memory),
            stdout_bytes,
            stderr_bytes,
            stdout_truncated,
            stderr_truncated,
            ..self.base_report(outcome, message)
        };
        report_security(self.sandbox, &report, state.limiter.breach, limits.timeout);
        // The scratch directory and the WASI context go before the execution is reported
        // finished, so that nothing of it outlives its report.
        drop(state);
        self.finished = true;
        observer.on_event(&Event::ExecutionFinished(&report));
        Finished {
            results,
            stdout,
            stderr,
            report,
        }
    }

    /// Ends the execution with a host error: the observers see it finish (`trap`, `host`)
    /// and the caller gets the error.
    pub(crate) fn fail(mut self, error: Error) -> Error {
        self.finish_with_host_error(&error.to_string());
        error
    }

    fn finish_with_host_error(&mut self, message: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        let report = self.base_report(Outcome::Trap(TrapKind::Host), Some(message.to_owned()));
        self.sandbox
            .observer()
            .on_event(&Event::ExecutionFinished(&report));
    }
}

impl Drop for Execution<'_> {
    fn drop(&mut self) {
        // Only reached when the execution path returned early or panicked: the observers
        // still see this execution finish, so no span or in-flight gauge is left open.
        self.finish_with_host_error("the execution ended with a host error before it finished");
    }
}

/// Tells the observers of every limit the execution ran into.
/// `timeout` is the execution's own (a turn of an interactive guest has its own).
pub(crate) fn report_security(
    sandbox: &Sandbox,
    report: &ExecutionReport,
    breach: Option<LimitBreach>,
    timeout: Duration,
) {
    let limits = sandbox.limits();
    let observer = sandbox.observer();
    let emit = |limit: LimitKind, target: String, action: SecurityAction| {
        observer.on_event(&Event::Security(&SecurityEvent {
            kind: SecurityEventKind::LimitExceeded(limit),
            capability: limit.as_str(),
            target,
            action,
            module: report.module.clone(),
            execution_id: report.execution_id,
        }));
    };
    let terminated = match report.outcome {
        Outcome::OutOfFuel => Some((
            LimitKind::Fuel,
            format!("{} fuel", limits.fuel.unwrap_or(0)),
        )),
        Outcome::Timeout => Some((LimitKind::Timeout, format!("{} ms", timeout.as_millis()))),
        Outcome::StackOverflow => Some((
            LimitKind::Stack,
            format!("{} bytes", sandbox.max_wasm_stack()),
        )),
        Outcome::MemoryLimit | Outcome::Trap(TrapKind::TableLimit | TrapKind::InstanceLimit) => {
            let kind = breach.map_or(LimitKind::Instances, |b| b.kind);
            let target = breach.map_or_else(
                || format!("{} instances", limits.instances),
                |b| format!("{} requested, {} allowed", b.requested, b.limit),
            );
            Some((kind, target))
        }
        _ => None,
    };
    if let Some((kind, target)) = terminated {
        emit(kind, target, SecurityAction::Terminated);
    } else if let Some(b) = breach.filter(|b| b.kind == LimitKind::Memory) {
        // The guest was refused memory (memory.grow returned -1) and carried on.
        emit(
            LimitKind::Memory,
            format!("{} requested, {} allowed", b.requested, b.limit),
            SecurityAction::Denied,
        );
    }
    if report.stdout_truncated {
        emit(
            LimitKind::Output,
            format!("stdout {} bytes", limits.max_stdout_bytes),
            SecurityAction::Truncated,
        );
    }
    if report.stderr_truncated {
        emit(
            LimitKind::Output,
            format!("stderr {} bytes", limits.max_stderr_bytes),
            SecurityAction::Truncated,
        );
    }
}
