//! The sandbox: runs exports and WASI commands under [`Limits`], one fresh instance each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage_events::{
    Event, ExecutionContext, ExecutionId, ExecutionKind, ExecutionReport, ExecutionStart,
    InstantiateEvent, LimitKind, Outcome, SandboxId, SecurityAction, SecurityEvent,
    SecurityEventKind, TraceParent, TrapKind,
};
use wasmtime::{Instance, Store, UpdateDeadline, Val};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::classify::classify;
use crate::limits::{LimitBreach, Limiter};
use crate::output::BoundedOutput;
use crate::{Engine, Error, Limits, Module, Policy, Value, ValueType};

/// The per-execution state wasmtime keeps in each store.
pub(crate) struct StoreState {
    pub(crate) limiter: Limiter,
    pub(crate) wasi: Option<WasiP1Ctx>,
    /// When the WASI context was created: the zero of its monotonic clock.
    pub(crate) wasi_clock_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    /// The ids of the execution running in this store, for host functions that log or
    /// trace; `None` while a pooled instance waits for its execution.
    pub(crate) context: Option<ExecutionContext>,
    /// Where the WASI guards report denials; set with the WASI context.
    pub(crate) guard: Option<crate::wasi_guard::Guard>,
}

/// Input for a WASI command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandInput {
    /// Arguments after the program name; the guest sees the module's name as `argv[0]`.
    pub args: Vec<String>,
    /// Bytes the guest reads from stdin; after them, stdin is at end of file.
    pub stdin: Vec<u8>,
}

/// What a call of an export produced.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// The export's results; empty unless the outcome is [`Outcome::Completed`].
    pub results: Vec<Value>,
    /// How the execution went.
    pub report: ExecutionReport,
}

/// What a WASI command produced.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Captured stdout, cut at the limit.
    pub stdout: Vec<u8>,
    /// Captured stderr, cut at the limit.
    pub stderr: Vec<u8>,
    /// How the execution went.
    pub report: ExecutionReport,
}

/// Builds a [`Sandbox`]. Nothing is granted unless asked for.
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    engine: Engine,
    policy: Policy,
}

impl SandboxBuilder {
    /// Sets every resource limit at once (the policy's grants stay as they are).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.policy.limits = limits;
        self
    }

    /// Sets the whole capability policy: grants and limits.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Checks the configuration and builds the sandbox.
    pub fn build(self) -> Result<Sandbox, Error> {
        self.policy
            .validate()
            .map_err(|e| Error::Config(format!("invalid policy: {e}")))?;
        let l = &self.policy.limits;
        if l.fuel.is_some() && !self.engine.config().consume_fuel {
            return Err(Error::Config(
                "a fuel limit was set, but this engine does not meter fuel; enable \
                 EngineConfig::consume_fuel or remove the fuel limit"
                    .into(),
            ));
        }
        if l.timeout.is_zero() {
            return Err(Error::Config("the timeout must be longer than zero".into()));
        }
        if l.memory_bytes == 0 {
            return Err(Error::Config(
                "the memory limit must be larger than zero".into(),
            ));
        }
        Ok(Sandbox {
            inner: Arc::new(SandboxInner {
                id: SandboxId::next(),
                engine: self.engine,
                policy: self.policy,
            }),
        })
    }
}

/// Runs untrusted modules under fixed limits. Every execution gets a fresh instance that is
/// torn down afterwards, so nothing of one execution is ever seen by the next.
///
/// Cloning is cheap; clones share configuration, and executions on clones are independent.
///
/// What a guest gets by default, and nothing more: its arguments, the stdin bytes given,
/// stdout and stderr captured up to a limit, the host's clocks and a random source. It gets no
/// environment variables, no files or directories and no network.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
}

#[derive(Debug)]
struct SandboxInner {
    id: SandboxId,
    engine: Engine,
    policy: Policy,
}

/// What the shared execution path needs to know about one execution.
pub(crate) struct Plan<'a> {
    kind: ExecutionKind,
    entry: &'a str,
    params: Vec<Val>,
    results: usize,
    command: Option<CommandInput>,
    pub(crate) trace: Option<TraceParent>,
}

impl<'a> Plan<'a> {
    /// Checks the arguments against the export's signature; nothing runs on a mismatch.
    pub(crate) fn call(module: &Module, export: &'a str, args: &[Value]) -> Result<Self, Error> {
        let ty = module.func_type(export)?;
        let signature = || Error::UnsupportedSignature {
            export: export.to_owned(),
            signature: format!("{ty:?}"),
        };
        let expected = ty
            .params()
            .map(|t| ValueType::from_wasmtime(&t))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(signature)?;
        if ty.results().any(|t| ValueType::from_wasmtime(&t).is_none()) {
            return Err(signature());
        }
        let given: Vec<ValueType> = args.iter().map(Value::ty).collect();
        if expected != given {
            return Err(Error::ArgumentMismatch {
                export: export.to_owned(),
                expected,
                given,
            });
        }
        Ok(Plan {
            kind: ExecutionKind::Call,
            entry: export,
            params: args.iter().map(|a| a.to_wasmtime()).collect(),
            results: ty.results().len(),
            command: None,
            trace: None,
        })
    }

    /// Checks that the module is a WASI command.
    pub(crate) fn command(module: &Module, input: CommandInput) -> Result<Self, Error> {
        match module.func_type("_start") {
            Ok(ty) if ty.params().len() == 0 && ty.results().len() == 0 => {}
            _ => {
                return Err(Error::NotACommand {
                    module: module.info().name.to_string(),
                });
            }
        }
        Ok(Plan {
            kind: ExecutionKind::Command,
            entry: "_start",
            params: Vec::new(),
            results: 0,
            command: Some(input),
            trace: None,
        })
    }
}

/// An instantiated store handed to one execution, by a pool or made on the spot.
pub(crate) struct Assigned {
    pub(crate) store: Store<StoreState>,
    pub(crate) instance: Result<Instance, wasmtime::Error>,
    pub(crate) instantiate_duration: Duration,
}

pub(crate) struct Finished {
    pub(crate) results: Vec<Value>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) report: ExecutionReport,
}

impl Sandbox {
    /// Starts building a sandbox on this engine that grants nothing
    /// ([`Policy::default`]), under default [`Limits`].
    pub fn builder(engine: &Engine) -> SandboxBuilder {
        SandboxBuilder {
            engine: engine.clone(),
            policy: Policy::default(),
        }
    }

    /// The capability policy every execution of this sandbox runs under.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    pub(crate) fn observer(&self) -> &dyn wasmcage_events::Observer {
        &*self.inner.engine.inner().observer
    }

    /// The limits every execution of this sandbox runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.policy.limits
    }

    /// Calls the export `export` with `args` and returns its results and report.
    ///
    /// A missing export or arguments of the wrong number or type are an [`Error`]; a guest
    /// that traps or breaks a limit is a report with that outcome and no results.
    ///
    /// This blocks the calling thread for up to the timeout. From async code use
    /// [`Sandbox::call_async`].
    pub fn call(&self, module: &Module, export: &str, args: &[Value]) -> Result<CallOutput, Error> {
        self.call_traced(module, export, args, None)
    }

    /// [`Sandbox::call`] continuing the caller's trace: the execution's span becomes a child
    /// of `trace`'s span and the report carries its trace id.
    pub fn call_traced(
        &self,
        module: &Module,
        export: &str,
        args: &[Value],
        trace: Option<TraceParent>,
    ) -> Result<CallOutput, Error> {
        let mut plan = Plan::call(module, export, args)?;
        plan.trace = trace;
        let done = self.execute(module, plan)?;
        Ok(CallOutput {
            results: done.results,
            report: done.report,
        })
    }

    /// Runs the module as a WASI command: `_start` with `input`'s arguments and stdin, and
    /// stdout and stderr captured up to their limits.
    ///
    /// This blocks the calling thread for up to the timeout. From async code use
    /// [`Sandbox::run_command_async`].
    pub fn run_command(
        &self,
        module: &Module,
        input: CommandInput,
    ) -> Result<CommandOutput, Error> {
        self.run_command_traced(module, input, None)
    }

    /// [`Sandbox::run_command`] continuing the caller's trace; see [`Sandbox::call_traced`].
    pub fn run_command_traced(
        &self,
        module: &Module,
        input: CommandInput,
        trace: Option<TraceParent>,
    ) -> Result<CommandOutput, Error> {
        let mut plan = Plan::command(module, input)?;
        plan.trace = trace;
        let done = self.execute(module, plan)?;
        Ok(CommandOutput {
            stdout: done.stdout,
            stderr: done.stderr,
            report: done.report,
        })
    }

    /// [`Sandbox::call`] for async callers: the execution runs on tokio's blocking pool, so
    /// the runtime's workers are never blocked by a guest.
    pub async fn call_async(
        &self,
        module: &Module,
        export: &str,
        args: &[Value],
    ) -> Result<CallOutput, Error> {
        let (sandbox, module, export, args) = (
            self.clone(),
            module.clone(),
            export.to_owned(),
            args.to_vec(),
        );
        join(tokio::task::spawn_blocking(move || sandbox.call(&module, &export, &args)).await)
    }

    /// [`Sandbox::run_command`] for async callers; see [`Sandbox::call_async`].
    pub async fn run_command_async(
        &self,
        module: &Module,
        input: CommandInput,
    ) -> Result<CommandOutput, Error> {
        let (sandbox, module) = (self.clone(), module.clone());
        join(tokio::task::spawn_blocking(move || sandbox.run_command(&module, input)).await)
    }

    /// The one execution path for a sandbox without a pool: a fresh store and instance.
    fn execute(&self, module: &Module, plan: Plan<'_>) -> Result<Finished, Error> {
        // Everything that can fail as a host error is checked before the execution starts,
        // so that every ExecutionStarted event is followed by its ExecutionFinished.
        self.check_engine(module)?;
        module.instance_pre()?;
        let (context, started) = self.start(module, &plan);
        let mut store = self.new_store(module)?;
        let (instance, duration) = self.instantiate(module, &mut store)?;
        let assigned = Assigned {
            store,
            instance,
            instantiate_duration: duration,
        };
        self.finish(module, plan, assigned, context, started)
    }

    /// Gives the execution its ids and tells the observers it is starting.
    pub(crate) fn start(&self, module: &Module, plan: &Plan<'_>) -> (ExecutionContext, Instant) {
        let context = ExecutionContext {
            execution_id: ExecutionId::next(),
            sandbox_id: self.inner.id,
            trace: plan.trace,
        };
        let start = ExecutionStart {
            context,
            module: module.info().clone(),
            kind: plan.kind,
            entry: plan.entry.to_owned(),
        };
        self.observer().on_event(&Event::ExecutionStarted(&start));
        (context, Instant::now())
    }

    pub(crate) fn check_engine(&self, module: &Module) -> Result<(), Error> {
        let engine = self.inner.engine.inner();
        if !wasmtime::Engine::same(&engine.wasmtime, &module.engine().inner().wasmtime) {
            return Err(Error::Config(
                "the module was compiled by a different engine than this sandbox's".into(),
            ));
        }
        Ok(())
    }

    /// This sandbox's process-unique id.
    pub fn id(&self) -> SandboxId {
        self.inner.id
    }

    /// A store for one execution of `module`, with the limiter, fuel and a deadline, armed
    /// so that even instantiation (a start function) is bounded.
    pub(crate) fn new_store(&self, module: &Module) -> Result<Store<StoreState>, Error> {
        self.check_engine(module)?;
        let engine = self.inner.engine.inner();
        let limits = &self.inner.policy.limits;
        let now = Instant::now();
        let mut store = Store::new(
            &engine.wasmtime,
            StoreState {
                limiter: Limiter::new(limits),
                wasi: None,
                wasi_clock_start: now,
                deadline: now + limits.timeout,
                timeout: limits.timeout,
                context: None,
                guard: None,
            },
        );
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store, now)?;
        Ok(store)
    }

    /// Refills fuel and sets the deadline to `started` plus the timeout.
    fn arm(&self, store: &mut Store<StoreState>, started: Instant) -> Result<Option<u64>, Error> {
        let engine = self.inner.engine.inner();
        let limits = &self.inner.policy.limits;
        let fuel = engine
            .config
            .consume_fuel
            .then(|| limits.fuel.unwrap_or(u64::MAX));
        if let Some(fuel) = fuel {
            store
                .set_fuel(fuel)
                .map_err(|e| Error::Internal(format!("cannot set fuel: {e}")))?;
        }
        let (timeout, tick) = (limits.timeout, engine.config.epoch_tick);
        let deadline = started + timeout;
        store.data_mut().deadline = deadline;
        store.set_epoch_deadline(ticks(timeout, tick));
        store.epoch_deadline_callback(move |_| {
            let now = Instant::now();
            if now >= deadline {
                return Err(wasmtime::Error::new(LimitBreach {
                    kind: LimitKind::Timeout,
                    requested: timeout.as_millis() as u64,
                    limit: timeout.as_millis() as u64,
                }));
            }
            Ok(UpdateDeadline::Continue(ticks(deadline - now, tick)))
        });
        Ok(fuel)
    }

    /// Instantiates `module` into `store`; a failure is the guest's (classified later).
    pub(crate) fn instantiate(
        &self,
        module: &Module,
        store: &mut Store<StoreState>,
    ) -> Result<(Result<Instance, wasmtime::Error>, Duration), Error> {
        let pre = module.instance_pre()?;
        let started = Instant::now();
        let instance = pre.instantiate(&mut *store);
        Ok((instance, started.elapsed()))
    }

    /// Runs the entry on an instantiated store, classifies the end, reports it once.
    pub(crate) fn finish(
        &self,
        module: &Module,
        plan: Plan<'_>,
        assigned: Assigned,
        context: ExecutionContext,
        started: Instant,
    ) -> Result<Finished, Error> {
        let Assigned {
            mut store,
            instance,
            instantiate_duration,
        } = assigned;
        let limits = &self.inner.policy.limits;
        let observer = &*self.inner.engine.inner().observer;
        let execution_id = context.execution_id;
        store.data_mut().context = Some(context);
        let fuel_given = self.arm(&mut store, started)?;

        let stdout = BoundedOutput::new(limits.max_stdout_bytes);
        let stderr = BoundedOutput::new(limits.max_stderr_bytes);
        // The scratch directory lives exactly as long as this execution.
        let mut scratch = None;
        if module.imports_wasi() {
            let input = plan.command.clone().unwrap_or_default();
            let wasi = crate::grants::wasi_context(
                &self.inner.policy,
                module.info(),
                input,
                &stdout,
                &stderr,
                &mut scratch,
            )?;
            let state = store.data_mut();
            state.wasi_clock_start = Instant::now();
            state.wasi = Some(wasi);
            state.guard = Some(crate::wasi_guard::Guard {
                observer: self.inner.engine.inner().observer.clone(),
                module: module.info().clone(),
                execution_id,
            });
        }

        let mut results = vec![Val::I32(0); plan.results];
        let (outcome, message, instantiated) = match instance {
            Err(e) => {
                let c = classify(&e);
                (c.outcome, c.message, false)
            }
            Ok(instance) => {
                let event = InstantiateEvent {
                    module: module.info().clone(),
                    execution_id,
                    duration: instantiate_duration,
                };
                observer.on_event(&Event::InstanceCreated(&event));
                let func = instance
                    .get_func(&mut store, plan.entry)
                    .ok_or_else(|| Error::Internal(format!("export `{}` vanished", plan.entry)))?;
                match func.call(&mut store, &plan.params, &mut results) {
                    Ok(()) => (Outcome::Completed, None, true),
                    Err(e) => {
                        let c = classify(&e);
                        (c.outcome, c.message, true)
                    }
                }
            }
        };

        let fuel_consumed = fuel_given.map(|given| given - store.get_fuel().unwrap_or(0));
        let state = store.into_data();
        let duration = started.elapsed();
        if instantiated {
            observer.on_event(&Event::InstanceDestroyed {
                module: module.info(),
            });
        }
        let (stdout, stdout_bytes, stdout_truncated) = stdout.finish();
        let (stderr, stderr_bytes, stderr_truncated) = stderr.finish();
        let exit_code = match (outcome, plan.kind) {
            (Outcome::Exited(code), _) => Some(code),
            (Outcome::Completed, ExecutionKind::Command) => Some(0),
            _ => None,
        };
        let results = if outcome == Outcome::Completed {
            results.iter().filter_map(Value::from_wasmtime).collect()
        } else {
            Vec::new()
        };
        let report = ExecutionReport {
            execution_id,
            sandbox_id: self.inner.id,
            trace_id: plan.trace.map(|t| t.trace_id_hex()),
            module: module.info().clone(),
            kind: plan.kind,
            entry: plan.entry.to_owned(),
            outcome,
            exit_code,
            message,
            duration,
            instantiate_duration,
            fuel_consumed,
            fuel_limit: limits.fuel.filter(|_| fuel_given.is_some()),
            memory_peak_bytes: state.limiter.memory_peak,
            memory_limit_bytes: limits.memory_bytes,
            stdout_bytes,
            stderr_bytes,
            stdout_truncated,
            stderr_truncated,
        };
        self.report_security(&report, state.limiter.breach);
        observer.on_event(&Event::ExecutionFinished(&report));
        Ok(Finished {
            results,
            stdout,
            stderr,
            report,
        })
    }

    /// Tells the observers of every limit the execution ran into.
    fn report_security(&self, report: &ExecutionReport, breach: Option<LimitBreach>) {
        let limits = &self.inner.policy.limits;
        let observer = &*self.inner.engine.inner().observer;
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
            Outcome::Timeout => Some((
                LimitKind::Timeout,
                format!("{} ms", limits.timeout.as_millis()),
            )),
            Outcome::StackOverflow => Some((
                LimitKind::Stack,
                format!("{} bytes", self.inner.engine.config().max_wasm_stack),
            )),
            Outcome::MemoryLimit
            | Outcome::Trap(TrapKind::TableLimit | TrapKind::InstanceLimit) => {
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
}

/// The number of epoch ticks that covers `d`, at least one.
fn ticks(d: Duration, tick: Duration) -> u64 {
    (d.as_nanos().div_ceil(tick.as_nanos())).clamp(1, u64::MAX as u128) as u64
}

pub(crate) fn join<T>(
    joined: Result<Result<T, Error>, tokio::task::JoinError>,
) -> Result<T, Error> {
    joined.unwrap_or_else(|e| Err(Error::Internal(format!("the execution thread failed: {e}"))))
}
