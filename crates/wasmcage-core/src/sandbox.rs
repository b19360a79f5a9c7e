//! The sandbox: runs exports and WASI commands under [`Limits`], one fresh instance each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage_events::{ExecutionContext, ExecutionKind, ExecutionReport, SandboxId, TraceParent};
use wasmtime::{Instance, ModuleExport, Store, Val};

use crate::execution::{Assigned, Execution, Finished};
use crate::store::{CancelFlag, Io, StoreState};
use crate::{Engine, Error, Limits, Module, Policy, Value};

/// Input for a WASI command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandInput {
    /// Arguments after the program name; the guest sees the module's name as `argv[0]`.
    pub args: Vec<String>,
    /// What the guest reads from stdin: bytes (`b"...".to_vec().into()`, shared rather
    /// than copied when the input is cloned), after which stdin is at end of file, or a
    /// [`StreamedStdin`](crate::StreamedStdin) read as the guest reads.
    pub stdin: crate::Stdin,
    /// The language runtime whose interpreter this command is, when it runs code for one:
    /// it goes into the execution's events and report.
    pub runtime: Option<Arc<wasmcage_events::RuntimeTag>>,
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
pub(crate) struct Plan {
    pub(crate) kind: ExecutionKind,
    /// The entry's name as the module holds it, for the events and the report.
    pub(crate) name: Arc<str>,
    /// The entry among the module's exports, resolved when the module was compiled.
    pub(crate) export: ModuleExport,
    pub(crate) params: Vec<Val>,
    pub(crate) results: usize,
    pub(crate) command: Option<CommandInput>,
    pub(crate) trace: Option<TraceParent>,
    /// Set by the caller to stop the execution; see [`CancelOnDrop`].
    pub(crate) cancel: Option<CancelFlag>,
}

impl Plan {
    /// Checks the arguments against the export's signature; nothing runs on a mismatch.
    pub(crate) fn call(module: &Module, export: &str, args: &[Value]) -> Result<Self, Error> {
        let entry = module.entry(export)?;
        let (Some(expected), Some(results)) = (&entry.params, entry.results) else {
            return Err(Error::UnsupportedSignature {
                export: export.to_owned(),
                signature: module
                    .func_type(export)
                    .map_or_else(String::new, |ty| format!("{ty:?}")),
            });
        };
        let matches =
            expected.len() == args.len() && expected.iter().zip(args).all(|(t, a)| *t == a.ty());
        if !matches {
            return Err(Error::ArgumentMismatch {
                export: export.to_owned(),
                expected: expected.to_vec(),
                given: args.iter().map(Value::ty).collect(),
            });
        }
        Ok(Plan {
            kind: ExecutionKind::Call,
            name: entry.name.clone(),
            export: entry.export,
            params: args.iter().map(|a| a.to_wasmtime()).collect(),
            results,
            command: None,
            trace: None,
            cancel: None,
        })
    }

    /// Checks that the module is a WASI command.
    pub(crate) fn command(module: &Module, input: CommandInput) -> Result<Self, Error> {
        let entry = match module.entry("_start") {
            Ok(entry) if entry.params.as_deref() == Some(&[]) && entry.results == Some(0) => entry,
            _ => {
                return Err(Error::NotACommand {
                    module: module.info().name.to_string(),
                });
            }
        };
        Ok(Plan {
            kind: ExecutionKind::Command,
            name: entry.name.clone(),
            export: entry.export,
            params: Vec::new(),
            results: 0,
            command: Some(input),
            trace: None,
            cancel: None,
        })
    }
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
    ///
    /// Dropping the future (a request that timed out, a client that went away) cancels the
    /// execution: the guest is stopped within milliseconds and its report says `cancelled`.
    pub async fn call_async(
        &self,
        module: &Module,
        export: &str,
        args: &[Value],
    ) -> Result<CallOutput, Error> {
        self.call_async_holding(module, export, args, None, ())
            .await
    }

    /// [`Sandbox::call_async`] under the caller's trace (when given) that keeps `hold` until the
    /// execution has really ended, even
    /// when the future is dropped first: a cancelled guest stops at its next check, not at
    /// once, so whatever accounts for it (an admission permit, a share of a memory budget)
    /// must live as long as it runs.
    pub async fn call_async_holding<H: Send + 'static>(
        &self,
        module: &Module,
        export: &str,
        args: &[Value],
        trace: Option<TraceParent>,
        hold: H,
    ) -> Result<CallOutput, Error> {
        let (sandbox, module, export, args) = (
            self.clone(),
            module.clone(),
            export.to_owned(),
            args.to_vec(),
        );
        blocking(move |cancel| {
            let _hold = hold;
            let mut plan = Plan::call(&module, &export, &args)?;
            plan.cancel = Some(cancel);
            plan.trace = trace;
            let done = sandbox.execute(&module, plan)?;
            Ok(CallOutput {
                results: done.results,
                report: done.report,
            })
        })
        .await
    }

    /// [`Sandbox::run_command`] for async callers; see [`Sandbox::call_async`].
    pub async fn run_command_async(
        &self,
        module: &Module,
        input: CommandInput,
    ) -> Result<CommandOutput, Error> {
        self.run_command_async_holding(module, input, None, ())
            .await
    }

    /// [`Sandbox::run_command_async`] that keeps `hold` until the execution has really
    /// ended; see [`Sandbox::call_async_holding`].
    pub async fn run_command_async_holding<H: Send + 'static>(
        &self,
        module: &Module,
        input: CommandInput,
        trace: Option<TraceParent>,
        hold: H,
    ) -> Result<CommandOutput, Error> {
        let (sandbox, module) = (self.clone(), module.clone());
        blocking(move |cancel| {
            let _hold = hold;
            let mut plan = Plan::command(&module, input)?;
            plan.cancel = Some(cancel);
            plan.trace = trace;
            let done = sandbox.execute(&module, plan)?;
            Ok(CommandOutput {
                stdout: done.stdout,
                stderr: done.stderr,
                report: done.report,
            })
        })
        .await
    }

    /// The one execution path for a sandbox without a pool: a fresh store and instance.
    pub(crate) fn execute(&self, module: &Module, mut plan: Plan) -> Result<Finished, Error> {
        // What can fail as the caller's error is checked before the execution starts.
        self.check_engine(module)?;
        module.instance_pre()?;
        let execution = Execution::begin(self, module, &plan);
        match self.cold(module, &mut plan, execution.context, execution.started) {
            Ok((assigned, io)) => Ok(execution.run(plan, assigned, io)),
            Err(e) => Err(execution.fail(e)),
        }
    }

    /// A fresh store, armed and given its WASI context, then instantiated: the start
    /// function (if any) runs under the execution's own fuel, deadline and grants.
    pub(crate) fn cold(
        &self,
        module: &Module,
        plan: &mut Plan,
        context: ExecutionContext,
        started: Instant,
    ) -> Result<(Assigned, Option<Io>), Error> {
        let mut store = self.empty_store(plan.cancel.clone(), started);
        let fuel_given = self.arm(&mut store, started)?;
        let io = self.prepare(&mut store, module, plan, context)?;
        let (instance, instantiate_duration) = self.instantiate(module, &mut store)?;
        Ok((
            Assigned {
                store,
                instance,
                instantiate_duration,
                fuel_given,
            },
            io,
        ))
    }

    /// Makes a store's instance ready for one execution: its ids and, for a module that
    /// imports WASI, its WASI context.
    pub(crate) fn prepare(
        &self,
        store: &mut Store<StoreState>,
        module: &Module,
        plan: &mut Plan,
        context: ExecutionContext,
    ) -> Result<Option<Io>, Error> {
        store.data_mut().context = Some(context);
        store.data_mut().cancel = plan.cancel.clone();
        if !module.imports_wasi() {
            // Without WASI the guest has no output streams to capture.
            return Ok(None);
        }
        let io = Io::new(&self.inner.policy);
        let guard = crate::wasi_guard::Guard {
            observer: self.inner.engine.inner().observer.clone(),
            module: module.info().clone(),
            execution_id: context.execution_id,
        };
        // The command's input moves into the WASI context: stdin is never copied.
        let input = plan.command.take().unwrap_or_default();
        crate::store::attach_wasi(store, &self.inner.policy, module, input, &io, guard)?;
        Ok(Some(io))
    }

    /// Whether this sandbox's engine meters fuel.
    pub(crate) fn engine_meters_fuel(&self) -> bool {
        self.inner.engine.config().consume_fuel
    }

    /// The engine's observer, shared.
    pub(crate) fn engine_observer(&self) -> Arc<dyn wasmcage_events::Observer> {
        self.inner.engine.inner().observer.clone()
    }

    pub(crate) fn max_wasm_stack(&self) -> usize {
        self.inner.engine.config().max_wasm_stack
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

    /// An empty store under this sandbox's limits, not yet armed.
    pub(crate) fn empty_store(
        &self,
        cancel: Option<CancelFlag>,
        now: Instant,
    ) -> Store<StoreState> {
        let engine = self.inner.engine.inner();
        crate::store::new_store(
            &engine.wasmtime,
            engine.config.epoch_tick,
            &self.inner.policy,
            cancel,
            now,
        )
    }

    /// Refills fuel and sets the deadline to `started` plus the timeout.
    pub(crate) fn arm(
        &self,
        store: &mut Store<StoreState>,
        started: Instant,
    ) -> Result<Option<u64>, Error> {
        let consume_fuel = self.inner.engine.config().consume_fuel;
        crate::store::arm(store, &self.inner.policy, consume_fuel, started)
    }

    /// Instantiates `module` into `store`. A trap in the start function is the guest's
    /// (classified later); no free instance slot is the host's [`Error::Capacity`].
    pub(crate) fn instantiate(
        &self,
        module: &Module,
        store: &mut Store<StoreState>,
    ) -> Result<(Result<Instance, wasmtime::Error>, Duration), Error> {
        let pre = module.instance_pre()?;
        let started = Instant::now();
        let instance = pre.instantiate(&mut *store);
        if let Err(e) = &instance
            && e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                .is_some()
        {
            return Err(Error::Capacity(crate::classify::chain(e)));
        }
        Ok((instance, started.elapsed()))
    }
}

/// Sets the cancellation flag when dropped unless disarmed: an async execution whose future
/// is dropped (its request timed out, its client went away) stops its guest.
struct CancelOnDrop(Option<CancelFlag>);

impl CancelOnDrop {
    fn new() -> (Self, CancelFlag) {
        let flag = CancelFlag::default();
        (CancelOnDrop(Some(flag.clone())), flag)
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Runs `work` on tokio's blocking pool; dropping the returned future cancels the execution
/// through `cancel`.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce(CancelFlag) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let (guard, flag) = CancelOnDrop::new();
    let joined = tokio::task::spawn_blocking(move || work(flag)).await;
    guard.disarm();
    joined.unwrap_or_else(|e| Err(Error::Internal(format!("the execution thread failed: {e}"))))
}
