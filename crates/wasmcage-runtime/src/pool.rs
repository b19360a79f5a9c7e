//! A runtime's pool of pre-started interpreters: each has run its start-up and waits, blocked
//! reading stdin, for its code. Each is handed to exactly one execution and then discarded;
//! a background thread starts new ones to keep the pool at its size.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use wasmcage_core::{Error, Interactive, Sandbox};
use wasmcage_events::{Event, Observer};
use wasmcage_events::{RuntimeEvent, RuntimeEventKind};

use crate::runner::Runtime;

/// After a start-up failure, how long the refiller waits before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// A pool of pre-started one-shot interpreters of one runtime under one sandbox.
pub struct InterpreterPool {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    sandbox: Sandbox,
    size: usize,
    observer: Arc<dyn Observer>,
    ready: Mutex<VecDeque<Interactive>>,
    /// Wakes the refiller: an interpreter was taken, or the pool is closing.
    wake: Condvar,
    closed: AtomicBool,
    stats: Stats,
    /// Why the last start-up failed.
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct Stats {
    warm: AtomicU64,
    cold: AtomicU64,
    started: AtomicU64,
    failed: AtomicU64,
}

/// What a pool has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterPoolStats {
    /// Interpreters ready now.
    pub ready: usize,
    /// The size the pool keeps.
    pub size: usize,
    /// Executions given a pre-started interpreter.
    pub warm: u64,
    /// Executions that found none ready and started their own.
    pub cold: u64,
    /// Interpreters the refiller started.
    pub started: u64,
    /// Start-ups that failed.
    pub failed: u64,
}

impl std::fmt::Debug for InterpreterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterpreterPool")
            .field("runtime", &self.inner.runtime.name())
            .field("stats", &self.stats())
            .finish()
    }
}

impl InterpreterPool {
    /// A pool that keeps `size` interpreters of `runtime` ready under `sandbox` (whose fuel
    /// and timeout bound each start-up), started by one background thread. The runtime must
    /// have a driver.
    pub fn new(
        runtime: Arc<Runtime>,
        sandbox: Sandbox,
        size: usize,
        observer: Arc<dyn Observer>,
    ) -> Result<InterpreterPool, Error> {
        if runtime.driver().is_none() {
            return Err(Error::Config(format!(
                "runtime {} has no driver and cannot be pre-started",
                runtime.name()
            )));
        }
        let inner = Arc::new(Inner {
            runtime,
            sandbox,
            size,
            observer,
            ready: Mutex::new(VecDeque::with_capacity(size)),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            last_error: Mutex::new(None),
        });
        if size > 0 {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name(format!("wasmcage-prestart-{}", inner.runtime.name()))
                .spawn(move || refill(&weak))
                .map_err(|e| Error::Internal(format!("cannot start the refill thread: {e}")))?;
        }
        Ok(InterpreterPool { inner })
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// An interpreter for one execution: a pre-started one when one is ready (`true`), else
    /// one started now (`false`).
    pub fn take(&self) -> Result<(Interactive, bool), Error> {
        let asked = Instant::now();
        let ready = {
            let mut ready = self.inner.lock();
            let taken = ready.pop_front();
            let left = ready.len();
            drop(ready);
            self.inner.wake.notify_all();
            taken.map(|i| (i, left))
        };
        let (interpreter, warm) = match ready {
            Some((interpreter, left)) => {
                self.inner.stats.warm.fetch_add(1, Ordering::Relaxed);
                self.inner.pool_size(left);
                (interpreter, true)
            }
            None => {
                self.inner.stats.cold.fetch_add(1, Ordering::Relaxed);
                let started = self.inner.runtime.start(&self.inner.sandbox, false)?;
                (started, false)
            }
        };
        self.inner.emit(RuntimeEventKind::Assigned {
            warm,
            wait: asked.elapsed(),
        });
        Ok((interpreter, warm))
    }

    /// What the pool has done so far.
    pub fn stats(&self) -> InterpreterPoolStats {
        let s = &self.inner.stats;
        InterpreterPoolStats {
            ready: self.inner.lock().len(),
            size: self.inner.size,
            warm: s.warm.load(Ordering::Relaxed),
            cold: s.cold.load(Ordering::Relaxed),
            started: s.started.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }

    /// Why the last pre-start failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the pool is full or `timeout` passes; whether it is full.
    pub fn wait_full(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.inner.lock().len() >= self.inner.size {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for InterpreterPool {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_all();
        self.inner.lock().clear();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Interactive>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, kind: RuntimeEventKind) {
        self.observer.on_event(&Event::Runtime(&RuntimeEvent {
            runtime: self.runtime.name().into(),
            kind,
        }));
    }

    fn pool_size(&self, ready: usize) {
        self.emit(RuntimeEventKind::PoolSize {
            ready: ready as u64,
            target: self.size as u64,
        });
    }
}

/// The refiller: starts interpreters while the pool is short, sleeps while it is full.
/// Holds only a weak reference, so a dropped pool ends it.
fn refill(weak: &std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Relaxed) {
            return;
        }
        let short = inner.lock().len() < inner.size;
        if !short {
            let ready = inner.lock();
            // Woken by a take or a close; the timeout only guards against a lost wake-up.
            let _ = inner
                .wake
                .wait_timeout(ready, Duration::from_millis(500))
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        match inner.runtime.start(&inner.sandbox, false) {
            Ok(interpreter) => {
                inner.stats.started.fetch_add(1, Ordering::Relaxed);
                let mut ready = inner.lock();
                if inner.closed.load(Ordering::Relaxed) {
                    return;
                }
                ready.push_back(interpreter);
                let n = ready.len();
                drop(ready);
                inner.pool_size(n);
            }
            Err(e) => {
                inner.stats.failed.fetch_add(1, Ordering::Relaxed);
                inner.emit(RuntimeEventKind::StartFailed);
                *inner
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                drop(inner);
                std::thread::sleep(RETRY);
            }
        }
    }
}
