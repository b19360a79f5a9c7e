//! Warm pools: pre-instantiated instances of one module under one sandbox's limits.
//!
//! A pool keeps up to `min_ready` instances instantiated ahead of time (from the pooling
//! allocator's slots and copy-on-write memory images) and lets at most `max_in_use`
//! executions run at once. An execution takes a ready instance (a warm hit) or, when none
//! is ready, instantiates one on the spot (a cold miss); it runs once and is destroyed.
//! An instance is never handed to a second execution. After each execution the pool makes
//! one new ready instance if it is below `min_ready`, on the thread that just finished.
//!
//! Refilling on that thread is deliberate: a background refiller thread was measured at
//! 7.1 µs per warm call against 1.8 µs for this design (see docs/performance.md), because
//! waking it and handing a store across cores costs more than the ~1 µs instantiation it
//! would hide.
//!
//! The only locks are this pool's own, held for a push or a pop; there is no global lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wasmcage_events::{Event, PoolEvent, PoolEventKind, TraceParent};
use wasmtime::{Instance, Store};

use crate::execution::{Assigned, Execution, Finished};
use crate::sandbox::{Plan, blocking};
use crate::store::StoreState;
use crate::{CallOutput, CommandInput, CommandOutput, Error, Module, Sandbox, Value};

/// What a pool does when every slot is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExhausted {
    /// Refuse at once with [`Error::PoolExhausted`].
    Fail,
    /// Wait up to this long for a slot, then refuse with [`Error::PoolExhausted`].
    Wait(Duration),
}

/// How a warm pool is sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Instances kept instantiated and ready (default 4). Made when the pool is created.
    pub min_ready: usize,
    /// Executions that may run at once (default 64).
    pub max_in_use: usize,
    /// What to do when `max_in_use` executions are running (default: wait up to 1 s).
    pub on_exhausted: OnExhausted,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_ready: 4,
            max_in_use: 64,
            on_exhausted: OnExhausted::Wait(Duration::from_secs(1)),
        }
    }
}

/// A snapshot of a pool's state and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances ready now.
    pub available: u64,
    /// Executions running now.
    pub in_use: u64,
    /// The most executions that may run at once.
    pub max: u64,
    /// Executions served from a ready instance.
    pub hits: u64,
    /// Executions that had to instantiate on demand.
    pub misses: u64,
    /// Times an execution found every slot in use.
    pub exhausted: u64,
}

impl PoolStats {
    /// The share of executions served warm, from 0.0 to 1.0 (1.0 before any execution).
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            1.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A warm pool of one module under one sandbox's limits. Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<PoolInner>,
}

struct Ready {
    store: Store<StoreState>,
    instance: Instance,
    instantiate_duration: Duration,
}

struct PoolInner {
    name: Arc<str>,
    sandbox: Sandbox,
    module: Module,
    config: PoolConfig,
    ready: Mutex<Vec<Ready>>,
    /// Mirrors `ready.len()`, so that events and stats need no lock.
    available: AtomicUsize,
    in_use: Mutex<usize>,
    /// Mirrors `*in_use`, so that events and stats need no lock.
    in_use_now: AtomicUsize,
    freed: Condvar,
    /// Executions waiting on `freed`, counted under the `in_use` lock: a release wakes a
    /// waiter only when there is one (a wake is a system call even when nobody waits).
    waiting: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    exhausted: AtomicU64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("name", &self.inner.name)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WarmPool {
    /// Creates a pool and pre-warms `min_ready` instances.
    pub fn new(sandbox: &Sandbox, module: &Module, config: PoolConfig) -> Result<Self, Error> {
        if config.min_ready > config.max_in_use {
            return Err(Error::Config(format!(
                "a pool's min_ready ({}) cannot exceed its max_in_use ({})",
                config.min_ready, config.max_in_use
            )));
        }
        let info = module.info();
        let inner = Arc::new(PoolInner {
            name: format!("{}@{}", info.name, info.hash.short()).into(),
            sandbox: sandbox.clone(),
            module: module.clone(),
            config,
            ready: Mutex::new(Vec::new()),
            available: AtomicUsize::new(0),
            in_use: Mutex::new(0),
            in_use_now: AtomicUsize::new(0),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        });
        let started = Instant::now();
        let mut made = 0;
        for _ in 0..inner.config.min_ready {
            if inner.refill_one()? {
                made += 1;
            }
        }
        inner.emit(PoolEventKind::Prewarmed {
            instances: made,
            duration: started.elapsed(),
        });
        Ok(WarmPool { inner })
    }

    /// The pool's name: the module's name and short hash.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The sandbox the pool's executions run under: its policy and limits.
    pub fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    /// How the pool is sized.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// The pool's state and counters now.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// [`Sandbox::call`] on an instance from this pool.
    pub fn call(&self, export: &str, args: &[Value]) -> Result<CallOutput, Error> {
        self.call_traced(export, args, None)
    }

    /// [`Sandbox::call_traced`] on an instance from this pool.
    pub fn call_traced(
        &self,
        export: &str,
        args: &[Value],
        trace: Option<TraceParent>,
    ) -> Result<CallOutput, Error> {
        let mut plan = Plan::call(&self.inner.module, export, args)?;
        plan.trace = trace;
        let done = self.inner.execute(plan)?;
        Ok(CallOutput {
            results: done.results,
            report: done.report,
        })
    }

    /// [`Sandbox::run_command`] on an instance from this pool.
    pub fn run_command(&self, input: CommandInput) -> Result<CommandOutput, Error> {
        self.run_command_traced(input, None)
    }

    /// [`Sandbox::run_command_traced`] on an instance from this pool.
    pub fn run_command_traced(
        &self,
        input: CommandInput,
        trace: Option<TraceParent>,
    ) -> Result<CommandOutput, Error> {
        let mut plan = Plan::command(&self.inner.module, input)?;
        plan.trace = trace;
        let done = self.inner.execute(plan)?;
        Ok(CommandOutput {
            stdout: done.stdout,
            stderr: done.stderr,
            report: done.report,
        })
    }

    /// [`WarmPool::call`] for async callers, on tokio's blocking pool.
    pub async fn call_async(&self, export: &str, args: &[Value]) -> Result<CallOutput, Error> {
        self.call_async_holding(export, args, None, ()).await
    }

    /// [`WarmPool::call_async`] under the caller's trace (when given) that keeps `hold` until
    /// the execution has really ended; see [`Sandbox::call_async_holding`].
    pub async fn call_async_holding<H: Send + 'static>(
        &self,
        export: &str,
        args: &[Value],
        trace: Option<TraceParent>,
        hold: H,
    ) -> Result<CallOutput, Error> {
        let (pool, export, args) = (self.clone(), export.to_owned(), args.to_vec());
        blocking(move |cancel| {
            let _hold = hold;
            let mut plan = Plan::call(&pool.inner.module, &export, &args)?;
            plan.cancel = Some(cancel);
            plan.trace = trace;
            let done = pool.inner.execute(plan)?;
            Ok(CallOutput {
                results: done.results,
                report: done.report,
            })
        })
        .await
    }

    /// [`WarmPool::run_command`] for async callers, on tokio's blocking pool.
    pub async fn run_command_async(&self, input: CommandInput) -> Result<CommandOutput, Error> {
        self.run_command_async_holding(input, None, ()).await
    }

    /// [`WarmPool::run_command_async`] under the caller's trace (when given) that keeps
    /// `hold` until the execution has really ended; see [`Sandbox::call_async_holding`].
    pub async fn run_command_async_holding<H: Send + 'static>(
        &self,
        input: CommandInput,
        trace: Option<TraceParent>,
        hold: H,
    ) -> Result<CommandOutput, Error> {
        let pool = self.clone();
        blocking(move |cancel| {
            let _hold = hold;
            let mut plan = Plan::command(&pool.inner.module, input)?;
            plan.cancel = Some(cancel);
            plan.trace = trace;
            let done = pool.inner.execute(plan)?;
            Ok(CommandOutput {
                stdout: done.stdout,
                stderr: done.stderr,
                report: done.report,
            })
        })
        .await
    }
}

/// Returns the slot when the execution is over, however it ended.
struct Slot<'a>(&'a PoolInner);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut in_use = lock(&self.0.in_use);
        *in_use -= 1;
        self.0.in_use_now.store(*in_use, Ordering::Relaxed);
        let waiting = self.0.waiting.load(Ordering::Relaxed);
        drop(in_use);
        if waiting > 0 {
            self.0.freed.notify_one();
        }
        // Replace what was used; a failure only means the next execution runs cold. Released
        // goes out after the refill, so its counts are the pool's state once the execution is
        // over (a gauge of ready instances fed by it is never left at what the assignment
        // left), in one event rather than two on every execution's path.
        if self.0.available.load(Ordering::Relaxed) < self.0.config.min_ready {
            let _ = self.0.refill_one();
        }
        self.0.emit(PoolEventKind::Released);
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.emit(PoolEventKind::Dropped);
    }
}

impl PoolInner {
    fn stats(&self) -> PoolStats {
        PoolStats {
            available: self.available.load(Ordering::Relaxed) as u64,
            in_use: self.in_use_now.load(Ordering::Relaxed) as u64,
            max: self.config.max_in_use as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            exhausted: self.exhausted.load(Ordering::Relaxed),
        }
    }

    fn emit(&self, kind: PoolEventKind) {
        let stats = self.stats();
        let event = PoolEvent {
            pool: self.name.clone(),
            kind,
            available: stats.available,
            in_use: stats.in_use,
            max: stats.max,
        };
        self.sandbox.observer().on_event(&Event::Pool(&event));
    }

    /// Instantiates one ready instance; `false` if the module is not instantiated ahead.
    ///
    /// A module with a start function never is: its start function is guest code that may
    /// call WASI, burn fuel or loop, so it runs inside the execution, under that execution's
    /// grants, fuel and deadline. Those executions run cold. So do the executions of a module
    /// whose instantiation fails (they are classified then), and a refill that finds no free
    /// instance slot simply leaves the pool short.
    fn refill_one(&self) -> Result<bool, Error> {
        if self.module.has_start() {
            return Ok(false);
        }
        let now = Instant::now();
        let mut store = self.sandbox.empty_store(None, now);
        self.sandbox.arm(&mut store, now)?;
        let (instance, instantiate_duration) =
            match self.sandbox.instantiate(&self.module, &mut store) {
                Ok(made) => made,
                Err(Error::Capacity(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
        match instance {
            Ok(instance) => {
                let mut ready = lock(&self.ready);
                ready.push(Ready {
                    store,
                    instance,
                    instantiate_duration,
                });
                self.available.store(ready.len(), Ordering::Relaxed);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    fn acquire_slot(&self, asked: Instant) -> Result<Slot<'_>, Error> {
        let mut in_use = lock(&self.in_use);
        if *in_use >= self.config.max_in_use {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            let refuse = |waited: Duration| Error::PoolExhausted {
                pool: self.name.to_string(),
                max: self.config.max_in_use,
                waited,
            };
            let OnExhausted::Wait(patience) = self.config.on_exhausted else {
                drop(in_use);
                self.emit(PoolEventKind::Exhausted { refused: true });
                return Err(refuse(Duration::ZERO));
            };
            let deadline = asked + patience;
            while *in_use >= self.config.max_in_use {
                let now = Instant::now();
                if now >= deadline {
                    drop(in_use);
                    self.emit(PoolEventKind::Exhausted { refused: true });
                    return Err(refuse(asked.elapsed()));
                }
                self.waiting.fetch_add(1, Ordering::Relaxed);
                in_use = self
                    .freed
                    .wait_timeout(in_use, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            *in_use += 1;
            self.in_use_now.store(*in_use, Ordering::Relaxed);
            drop(in_use);
            self.emit(PoolEventKind::Exhausted { refused: false });
        } else {
            *in_use += 1;
            self.in_use_now.store(*in_use, Ordering::Relaxed);
        }
        Ok(Slot(self))
    }

    fn execute(&self, mut plan: Plan) -> Result<Finished, Error> {
        let asked = Instant::now();
        self.module.instance_pre()?;
        let _slot = self.acquire_slot(asked)?;
        let execution = Execution::begin(&self.sandbox, &self.module, &plan);
        let popped = {
            let mut ready = lock(&self.ready);
            let popped = ready.pop();
            self.available.store(ready.len(), Ordering::Relaxed);
            popped
        };
        let warm = popped.is_some();
        let assigned = match popped {
            Some(ready) => self.assign_warm(ready, &mut plan, &execution),
            None => self.sandbox.cold(
                &self.module,
                &mut plan,
                execution.context,
                execution.started,
            ),
        };
        let counter = if warm { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        let instantiate = match (&assigned, warm) {
            (Ok((a, _)), false) => a.instantiate_duration,
            _ => Duration::ZERO,
        };
        self.emit(PoolEventKind::Assigned {
            warm,
            wait: asked.elapsed(),
            instantiate,
        });
        match assigned {
            Ok((assigned, io)) => Ok(execution.run(plan, assigned, io)),
            Err(e) => Err(execution.fail(e)),
        }
    }

    /// Hands a ready instance to an execution: armed afresh (its fuel and deadline count
    /// from now) and given the execution's WASI context.
    fn assign_warm(
        &self,
        ready: Ready,
        plan: &mut Plan,
        execution: &Execution<'_>,
    ) -> Result<(Assigned, Option<crate::store::Io>), Error> {
        let mut store = ready.store;
        store.data_mut().cancel = plan.cancel.clone();
        let fuel_given = self.sandbox.arm(&mut store, execution.started)?;
        let io = self
            .sandbox
            .prepare(&mut store, &self.module, plan, execution.context)?;
        Ok((
            Assigned {
                store,
                instance: Ok(ready.instance),
                instantiate_duration: ready.instantiate_duration,
                fuel_given,
            },
            io,
        ))
    }
}
