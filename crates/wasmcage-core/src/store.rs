//! One execution's store: its state, its WASI context, and how it is armed with fuel, a
//! deadline and a cancellation flag.
//!
//! Everything an instance can reach during instantiation (a start function may call WASI,
//! burn fuel or loop) is in place before `instantiate` runs: the limiter, the fuel, the
//! deadline and, for modules that import WASI, the WASI context built from the policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmcage_events::{ExecutionContext, LimitKind};
use wasmtime::{Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::limits::{LimitBreach, Limiter};
use crate::output::BoundedOutput;
use crate::{CommandInput, Error, Module, Policy};

/// The most directory entries (files, directories, symlinks, links) one execution may
/// create. It bounds how deep a tree a guest can leave behind (a scratch directory is
/// removed recursively when the execution ends, and a tree 16 000 levels deep once
/// overflowed the stack of the thread removing it) and how many inodes it can take.
pub(crate) const MAX_NEW_ENTRIES: u32 = 4096;

/// The most files one execution may hold open at once: the host's descriptors are shared
/// by every tenant.
pub(crate) const MAX_OPEN_FILES: u32 = 256;

/// How often, at most, a store with a cancellation flag checks it (in epoch ticks), so that
/// a cancelled guest stops within about this many ticks even when its deadline is far away.
const CANCEL_CHECK_TICKS: u64 = 10;

/// A shared flag the caller sets to stop an execution; the guest ends with the
/// `cancelled` outcome at its next epoch check or host call.
pub(crate) type CancelFlag = Arc<AtomicBool>;

/// The error that ends a cancelled execution, so that it is classified exactly.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the caller cancelled the execution")
    }
}

impl std::error::Error for Cancelled {}

/// The per-execution state wasmtime keeps in each store.
pub(crate) struct StoreState {
    pub(crate) limiter: Limiter,
    /// The guest's WASI context; see [`StoreState::wasi`]. Boxed: it is large, and a store
    /// of a module without WASI should not carry (and copy) its room.
    pub(crate) wasi: Option<Box<WasiP1Ctx>>,
    /// When the WASI context was created: the zero of its monotonic clock.
    pub(crate) wasi_clock_start: Instant,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) cancel: Option<CancelFlag>,
    /// The ids of the execution running in this store, for host functions that log or
    /// trace; `None` while a pooled instance waits for its execution.
    pub(crate) context: Option<ExecutionContext>,
    /// Where the WASI guards report denials; set with the WASI context.
    pub(crate) guard: Option<crate::wasi_guard::Guard>,
    /// The per-execution scratch directory, deleted when the store is dropped.
    pub(crate) scratch: Option<tempfile::TempDir>,
    /// Bytes the guest may still write to files (the disk limit); `None` is unlimited.
    pub(crate) disk_left: Option<u64>,
    /// Directory entries (files, directories, links) the guest may still create.
    pub(crate) entries_left: u32,
    /// Files the guest has open through `path_open` and not closed.
    pub(crate) open_files: u32,
    /// Whether `path_open` has succeeded in this execution (so a descriptor may be a file).
    pub(crate) opened_files: bool,
    /// Whether a disk or entry refusal was already reported for this execution.
    pub(crate) disk_reported: bool,
    /// The engine's epoch tick, to turn the time left into ticks.
    pub(crate) tick: Duration,
    /// For an interactive guest, where its stdin comes from turn by turn.
    pub(crate) gate: Option<Arc<crate::interactive::Gate>>,
}

impl StoreState {
    /// The guest's WASI context. A store whose module imports WASI gets its real context
    /// before instantiation; should any path ever reach a WASI import without one, the
    /// guest gets an empty context that grants nothing, never a host panic.
    pub(crate) fn wasi(&mut self) -> &mut WasiP1Ctx {
        self.wasi
            .get_or_insert_with(|| Box::new(wasmtime_wasi::WasiCtxBuilder::new().build_p1()))
    }

    /// Why the execution must stop now, if it must: the caller cancelled it, or its
    /// deadline passed.
    pub(crate) fn stop_reason(&self) -> Option<wasmtime::Error> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Some(wasmtime::Error::new(Cancelled));
        }
        (Instant::now() >= self.deadline).then(|| self.timeout_error())
    }

    pub(crate) fn timeout_error(&self) -> wasmtime::Error {
        let ms = self.timeout.as_millis() as u64;
        wasmtime::Error::new(LimitBreach {
            kind: LimitKind::Timeout,
            requested: ms,
            limit: ms,
        })
    }

    /// Sleeps up to `wait`, waking early (and saying why) when the execution is cancelled
    /// or reaches its deadline.
    pub(crate) fn sleep(&self, wait: Duration) -> Result<(), wasmtime::Error> {
        const SLICE: Duration = Duration::from_millis(10);
        let until = deadline(Instant::now(), wait);
        loop {
            if let Some(stop) = self.stop_reason() {
                return Err(stop);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let left = (until - now).min(self.deadline.saturating_duration_since(now));
            // Without a cancellation flag only the deadline can interrupt, so one sleep to
            // whichever comes first is enough.
            let slice = if self.cancel.is_some() {
                left.min(SLICE)
            } else {
                left
            };
            std::thread::sleep(slice.max(Duration::from_micros(50)));
        }
    }
}

/// What one execution writes its output to; the store's WASI context holds clones.
pub(crate) struct Io {
    pub(crate) stdout: BoundedOutput,
    pub(crate) stderr: BoundedOutput,
}

impl Io {
    pub(crate) fn new(policy: &Policy) -> Self {
        Io {
            stdout: BoundedOutput::new(policy.limits.max_stdout_bytes),
            stderr: BoundedOutput::new(policy.limits.max_stderr_bytes),
        }
    }
}

/// Makes an empty store for `module` with its limiter and the epoch callback; it still
/// needs [`arm`] before any guest code may run in it.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    tick: Duration,
    policy: &Policy,
    cancel: Option<CancelFlag>,
    now: Instant,
) -> Store<StoreState> {
    let limits = &policy.limits;
    let mut store = Store::new(
        engine,
        StoreState {
            limiter: Limiter::new(limits),
            wasi: None,
            wasi_clock_start: now,
            deadline: deadline(now, limits.timeout),
            timeout: limits.timeout,
            cancel,
            context: None,
            guard: None,
            scratch: None,
            disk_left: limits.disk_bytes,
            entries_left: MAX_NEW_ENTRIES,
            open_files: 0,
            opened_files: false,
            disk_reported: false,
            tick,
            gate: None,
        },
    );
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(on_epoch);
    store
}

fn on_epoch(ctx: StoreContextMut<'_, StoreState>) -> wasmtime::Result<UpdateDeadline> {
    let state = ctx.data();
    if let Some(stop) = state.stop_reason() {
        return Err(stop);
    }
    Ok(UpdateDeadline::Continue(next_check(state, Instant::now())))
}

/// The epoch ticks from `now` until the store should look again: its deadline, or sooner
/// when it can be cancelled.
pub(crate) fn next_check(state: &StoreState, now: Instant) -> u64 {
    let ticks = ticks(state.deadline.saturating_duration_since(now), state.tick);
    if state.cancel.is_some() {
        ticks.min(CANCEL_CHECK_TICKS)
    } else {
        ticks
    }
}

/// Refills fuel and sets the deadline to `started` plus the timeout; returns the fuel given
/// (`None` when the engine does not meter fuel).
pub(crate) fn arm(
    store: &mut Store<StoreState>,
    policy: &Policy,
    consume_fuel: bool,
    started: Instant,
) -> Result<Option<u64>, Error> {
    let limits = &policy.limits;
    let fuel = consume_fuel.then(|| limits.fuel.unwrap_or(u64::MAX));
    if let Some(fuel) = fuel {
        store
            .set_fuel(fuel)
            .map_err(|e| Error::Internal(format!("cannot set fuel: {e}")))?;
    }
    let state = store.data_mut();
    state.deadline = deadline(started, limits.timeout);
    state.timeout = limits.timeout;
    state.disk_left = limits.disk_bytes;
    state.entries_left = MAX_NEW_ENTRIES;
    state.open_files = 0;
    state.opened_files = false;
    state.disk_reported = false;
    // Counted from the start rather than from now: one clock read less per execution, and
    // the first check comes at most the few microseconds of setup late.
    let first = next_check(store.data(), started);
    store.set_epoch_deadline(first);
    Ok(fuel)
}

/// Gives a store of a module that imports WASI its context, built from the policy and the
/// command's input; a scratch directory, if granted, lives as long as the store.
pub(crate) fn attach_wasi(
    store: &mut Store<StoreState>,
    policy: &Policy,
    module: &Module,
    input: CommandInput,
    io: &Io,
    guard: crate::wasi_guard::Guard,
) -> Result<(), Error> {
    let mut scratch = None;
    let wasi =
        crate::grants::wasi_context(policy, module, input, &io.stdout, &io.stderr, &mut scratch)?;
    let state = store.data_mut();
    state.wasi_clock_start = Instant::now();
    state.wasi = Some(Box::new(wasi));
    state.guard = Some(guard);
    state.scratch = scratch;
    Ok(())
}

/// `from` plus `timeout`; a timeout too long for the clock means about ten years.
pub(crate) fn deadline(from: Instant, timeout: Duration) -> Instant {
    from.checked_add(timeout)
        .or_else(|| from.checked_add(Duration::from_secs(10 * 365 * 86_400)))
        .unwrap_or(from)
}

/// The number of epoch ticks that covers `d`, at least one.
pub(crate) fn ticks(d: Duration, tick: Duration) -> u64 {
    // wasmtime adds the ticks to the current epoch, so they stay far from overflowing it
    // (2^48 ticks of 1 ms is over 8 000 years).
    (d.as_nanos().div_ceil(tick.as_nanos().max(1))).clamp(1, 1 << 48) as u64
}
