//! An interactive guest: a WASI command started once that then takes its input one turn at
//! a time, each turn an execution with its own limits and report.
//!
//! This is what a language runtime's pre-started interpreter and a session's interpreter
//! are. The guest runs on a thread of its own; its stdin is a [`Gate`] the host feeds:
//!
//! - **Start-up** runs under the sandbox's limits (fuel and timeout for the start-up, memory
//!   for the whole life of the guest) and ends when the guest first reads stdin and finds
//!   nothing: it is then ready, blocked in that read.
//! - **A turn** hands the guest its input. At that moment, inside the blocked read, the
//!   store is re-armed with the turn's fuel and deadline, so the start-up's cost is never
//!   charged to the code, and the code cannot run on the start-up's budget.
//! - The turn **ends** when the guest reads stdin again and nothing is pending (it is
//!   waiting for the next turn), or, for a turn whose input ends in end of file, when the
//!   guest exits. What the guest wrote during the turn is that turn's output, under the
//!   sandbox's output limits.
//! - A turn may end with a status record, `\x1fwasmcage:status=N\x1f`, the last thing
//!   written to stdout: the record is removed from the output and the turn's outcome is
//!   `exited(N)`. The built-in language drivers write it after each session cell. The
//!   guest writes it, so a guest can lie about its own status, and about nothing else.
//!
//! A guest is never shared: one `Interactive` belongs to one owner (an execution or a
//! session), and dropping it closes the gate (the guest reads end of file) and cancels it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmcage_events::{
    Event, ExecutionContext, ExecutionId, ExecutionKind, ExecutionReport, ExecutionStart,
    InstantiateEvent, LimitKind, Outcome, RuntimeTag, TraceParent,
};
use wasmtime::{AsContextMut, Caller};

use crate::classify::classify;
use crate::limits::LimitBreach;
use crate::output::{BoundedOutput, Taken};
use crate::store::{CancelFlag, Io, StoreState};
use crate::{CommandInput, Error, Module, Sandbox};

/// How long a host waits past a turn's deadline for the guest to stop before it cancels it,
/// and again after cancelling before it gives the guest up as lost.
const GRACE: Duration = Duration::from_secs(2);

/// The status record a turn may end with; see the module documentation.
const STATUS_PREFIX: &[u8] = b"\x1fwasmcage:status=";
const STATUS_END: u8 = 0x1f;

/// The limits of one turn. Memory is the guest's for its whole life (the sandbox's limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    /// Fuel for the turn; `None` is unmetered.
    pub fuel: Option<u64>,
    /// Wall-clock time the turn may take.
    pub timeout: Duration,
}

/// What one turn produced.
#[derive(Debug, Clone)]
pub struct TurnOutput {
    /// What the guest wrote to stdout during the turn, up to the sandbox's limit, without
    /// the status record.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr, up to the limit.
    pub stderr: Vec<u8>,
    /// The turn's report: its outcome, fuel, duration and output sizes.
    pub report: ExecutionReport,
    /// Whether the guest is still there, waiting for another turn.
    pub alive: bool,
}

/// What the guest's start-up cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Startup {
    /// From starting the thread to the guest's first read.
    pub duration: Duration,
    /// The fuel the start-up burnt (`None` when fuel is not metered).
    pub fuel_consumed: Option<u64>,
    /// The guest's linear memory when it became ready.
    pub memory_bytes: u64,
}

/// The guest's stdin, and how the guest and the host hand turns to each other.
pub(crate) struct Gate {
    state: Mutex<GateState>,
    /// The guest may go on: a turn was handed over, or the gate closed.
    to_guest: Condvar,
    /// The host may go on: the guest is waiting for a turn, or it ended.
    to_host: Condvar,
}

#[derive(Default)]
struct GateState {
    /// Input of the current turn not yet read by the guest.
    pending: Bytes,
    /// Whether the current turn's input ends in end of file (the guest then exits).
    eof: bool,
    /// A turn handed over and not yet taken by the guest.
    next: Option<Handover>,
    /// The guest is blocked waiting for a turn (filled in when it starts waiting).
    waiting: Option<Pause>,
    /// The guest's thread ended, and how.
    ended: Option<Ended>,
    /// The host is gone: the guest reads end of file.
    closed: bool,
    /// The guest's scratch directory on the host, if its policy grants one.
    scratch: Option<std::path::PathBuf>,
}

struct Handover {
    input: Bytes,
    eof: bool,
    limits: TurnLimits,
    context: ExecutionContext,
    /// Bytes the host wrote into the guest's scratch directory for this turn, charged
    /// against the guest's disk allowance.
    disk_charge: u64,
}

/// The guest's state when it stopped to wait for a turn.
#[derive(Clone, Copy)]
struct Pause {
    fuel_left: Option<u64>,
    memory_peak: u64,
    breach: Option<LimitBreach>,
    /// What is left of the disk allowance (`None`: unlimited).
    disk_left: Option<u64>,
}

struct Ended {
    outcome: Outcome,
    message: Option<String>,
    /// `None` when unknown (an epoch interrupt does not write the count back).
    fuel_left: Option<u64>,
    memory_peak: u64,
    breach: Option<LimitBreach>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            state: Mutex::new(GateState::default()),
            to_guest: Condvar::new(),
            to_host: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.to_guest.notify_all();
    }

    fn end(&self, ended: Ended) {
        self.lock().ended = Some(ended);
        self.to_host.notify_all();
    }
}

/// The guest's `fd_read` of stdin when it has a gate: up to `want` bytes of the current
/// turn's input; with none left, end of file (a turn that ends in end of file) or a pause
/// until the next turn, re-arming the store for it. An empty result is end of file.
pub(crate) fn read_stdin(
    caller: &mut Caller<'_, StoreState>,
    gate: &Gate,
    want: usize,
) -> wasmtime::Result<Bytes> {
    let mut state = gate.lock();
    if state.pending.is_empty() && !state.eof && !state.closed {
        // The guest asks for more than its turn gave it: the turn is over.
        let data = caller.data();
        state.waiting = Some(Pause {
            fuel_left: caller.get_fuel().ok(),
            memory_peak: data.limiter.memory_peak,
            breach: data.limiter.breach,
            disk_left: data.disk_left,
        });
        gate.to_host.notify_all();
        let handover = loop {
            if state.closed {
                break None;
            }
            if let Some(next) = state.next.take() {
                break Some(next);
            }
            state = gate
                .to_guest
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        };
        state.waiting = None;
        if let Some(next) = handover {
            state.pending = next.input;
            state.eof = next.eof;
            drop(state);
            arm_turn(caller, next.limits, next.context, next.disk_charge)?;
            state = gate.lock();
        }
    }
    let n = want.min(state.pending.len());
    Ok(state.pending.split_to(n))
}

/// Gives the store the turn's fuel and deadline, and the turn's ids for the WASI guards.
fn arm_turn(
    caller: &mut Caller<'_, StoreState>,
    limits: TurnLimits,
    context: ExecutionContext,
    disk_charge: u64,
) -> wasmtime::Result<()> {
    if caller.get_fuel().is_ok() {
        caller.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
    }
    let now = Instant::now();
    let state = caller.data_mut();
    state.deadline = crate::store::deadline(now, limits.timeout);
    state.timeout = limits.timeout;
    state.limiter.breach = None;
    state.disk_left = state.disk_left.map(|left| left.saturating_sub(disk_charge));
    state.context = Some(context);
    if let Some(guard) = &mut state.guard {
        guard.execution_id = context.execution_id;
    }
    let ticks = crate::store::next_check(caller.data(), now);
    caller.as_context_mut().set_epoch_deadline(ticks);
    Ok(())
}

/// A WASI command running on its own thread, taking its input turn by turn; see the module
/// documentation.
pub struct Interactive {
    gate: Arc<Gate>,
    sandbox: Sandbox,
    module: Module,
    cancel: CancelFlag,
    io: Io,
    runtime: Option<Arc<RuntimeTag>>,
    startup: Startup,
    alive: bool,
    /// The guest's disk allowance when it last paused, less what the host charged since.
    disk_left: Option<u64>,
    /// Bytes charged for the next turn.
    disk_charge: u64,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Interactive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interactive")
            .field("module", &self.module.info().name)
            .field("alive", &self.alive)
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

impl Interactive {
    /// Starts `module` as a WASI command with `args` under `sandbox`, and waits until it is
    /// ready for its first turn (it reads stdin) or fails to be.
    ///
    /// The sandbox's fuel and timeout bound the start-up; its memory limit bounds the guest
    /// for its whole life; its grants are the guest's for its whole life. `runtime` tags
    /// every turn's report.
    pub fn start(
        sandbox: &Sandbox,
        module: &Module,
        args: Vec<String>,
        runtime: Option<Arc<RuntimeTag>>,
    ) -> Result<Interactive, Error> {
        sandbox.check_engine(module)?;
        module.instance_pre()?;
        if !module.imports_wasi() {
            return Err(Error::NotACommand {
                module: module.info().name.to_string(),
            });
        }
        // The entry must be a command's.
        crate::sandbox::Plan::command(module, CommandInput::default())?;
        let gate = Arc::new(Gate::new());
        let cancel = CancelFlag::default();
        let io = Io::new(sandbox.policy());
        let started = Instant::now();
        let thread = {
            let (sandbox, module, gate, cancel) = (
                sandbox.clone(),
                module.clone(),
                gate.clone(),
                cancel.clone(),
            );
            let (stdout, stderr) = (io.stdout.clone(), io.stderr.clone());
            std::thread::Builder::new()
                .name("wasmcage-interactive".into())
                .spawn(move || {
                    let ended = run_guest(
                        &sandbox, &module, args, &gate, cancel, stdout, stderr, started,
                    );
                    gate.end(ended);
                })
                .map_err(|e| Error::Internal(format!("cannot start a guest thread: {e}")))?
        };
        let mut interactive = Interactive {
            gate,
            sandbox: sandbox.clone(),
            module: module.clone(),
            cancel,
            io,
            runtime,
            startup: Startup {
                duration: Duration::ZERO,
                fuel_consumed: None,
                memory_bytes: 0,
            },
            alive: true,
            disk_left: None,
            disk_charge: 0,
            thread: Some(thread),
        };
        let limits = sandbox.limits();
        let fuel_given = sandbox
            .engine_meters_fuel()
            .then(|| limits.fuel.unwrap_or(u64::MAX));
        match interactive.wait(limits.timeout) {
            Waited::Paused(pause) => {
                // Start-up output (a banner, warnings) is nobody's turn.
                interactive.io.stdout.take();
                interactive.io.stderr.take();
                interactive.disk_left = pause.disk_left;
                interactive.startup = Startup {
                    duration: started.elapsed(),
                    fuel_consumed: fuel_given
                        .zip(pause.fuel_left)
                        .map(|(given, left)| given.saturating_sub(left)),
                    memory_bytes: pause.memory_peak,
                };
                Ok(interactive)
            }
            Waited::Ended(ended) => {
                interactive.alive = false;
                let stderr = interactive.io.stderr.take();
                let said = String::from_utf8_lossy(&stderr.kept);
                let said = said.trim();
                let message = match ended.message {
                    Some(m) if said.is_empty() => m,
                    Some(m) => format!("{m}; stderr: {}", last_chars(said, 500)),
                    None => last_chars(said, 500).to_owned(),
                };
                Err(Error::InterpreterStart {
                    outcome: ended.outcome,
                    message,
                })
            }
            Waited::Lost => {
                interactive.alive = false;
                Err(Error::InterpreterStart {
                    outcome: Outcome::Timeout,
                    message: "the guest did not stop at its start-up deadline".into(),
                })
            }
        }
    }

    /// What the start-up cost.
    pub fn startup(&self) -> Startup {
        self.startup
    }

    /// Whether the guest is waiting for another turn.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// The host directory behind the guest's scratch directory (the sandbox policy's
    /// `scratch`), for the host to put files in before a turn; `None` without one.
    pub fn scratch_dir(&self) -> Option<std::path::PathBuf> {
        self.gate.lock().scratch.clone()
    }

    /// Charges `bytes` the host is about to write into the guest's scratch directory
    /// against the guest's disk allowance (the sandbox's `disk_bytes`, over the guest's
    /// whole life), so that files handed in with turns cannot fill the disk past it.
    /// When they do not fit, nothing is charged and the error holds the bytes left.
    pub fn charge_disk(&mut self, bytes: u64) -> Result<(), u64> {
        if let Some(left) = self.disk_left {
            let left = left.saturating_sub(self.disk_charge);
            if bytes > left {
                return Err(left);
            }
        }
        self.disk_charge = self.disk_charge.saturating_add(bytes);
        Ok(())
    }

    /// The module the guest runs.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Hands the guest `input` as its next turn under `limits`, and waits for the turn to
    /// end. With `eof`, the guest reads end of file after `input` and the turn ends when it
    /// exits (a one-shot execution); without, when it waits for more input.
    ///
    /// Every turn is an execution for the observers, with its own id and report. After a
    /// turn in which the guest ended, [`Error::InterpreterEnded`].
    pub fn turn(
        &mut self,
        input: Bytes,
        eof: bool,
        limits: TurnLimits,
        trace: Option<TraceParent>,
    ) -> Result<TurnOutput, Error> {
        if !self.alive {
            return Err(Error::InterpreterEnded);
        }
        let context = ExecutionContext {
            execution_id: ExecutionId::next(),
            sandbox_id: self.sandbox.id(),
            trace,
        };
        let entry: Arc<str> = Arc::from("_start");
        self.sandbox
            .observer()
            .on_event(&Event::ExecutionStarted(&ExecutionStart {
                context,
                module: self.module.info().clone(),
                kind: ExecutionKind::Command,
                entry: entry.clone(),
                runtime: self.runtime.clone(),
            }));
        let started = Instant::now();
        {
            let mut state = self.gate.lock();
            state.next = Some(Handover {
                input,
                eof,
                limits,
                context,
                disk_charge: std::mem::take(&mut self.disk_charge),
            });
        }
        self.gate.to_guest.notify_all();
        let waited = self.wait(limits.timeout);
        let duration = started.elapsed();
        let (outcome, mut message, fuel_left, memory_peak, breach) = match waited {
            Waited::Paused(p) => {
                self.disk_left = p.disk_left;
                (
                    Outcome::Completed,
                    None,
                    p.fuel_left,
                    p.memory_peak,
                    p.breach,
                )
            }
            Waited::Ended(e) => {
                self.alive = false;
                (e.outcome, e.message, e.fuel_left, e.memory_peak, e.breach)
            }
            Waited::Lost => {
                self.alive = false;
                (
                    Outcome::Timeout,
                    Some("the guest did not stop at its deadline".into()),
                    None,
                    0,
                    None,
                )
            }
        };
        let out = take_output(&self.io.stdout);
        let err = self.io.stderr.take();
        let (outcome, exit_code) = match (outcome, out.status) {
            (Outcome::Completed, Some(status)) => (Outcome::Exited(status), Some(status)),
            (Outcome::Completed, None) if !self.alive => (Outcome::Completed, Some(0)),
            (Outcome::Exited(code), _) => (Outcome::Exited(code), Some(code)),
            (other, _) => (other, None),
        };
        if outcome == Outcome::Completed && self.alive {
            message = None;
        }
        let interrupted = matches!(outcome, Outcome::Timeout | Outcome::Cancelled);
        let metered = self.sandbox.engine_meters_fuel();
        let fuel_given = metered.then(|| limits.fuel.unwrap_or(u64::MAX));
        let limits_of_sandbox = self.sandbox.limits();
        let report = ExecutionReport {
            execution_id: context.execution_id,
            sandbox_id: context.sandbox_id,
            trace_id: trace.map(|t| t.trace_id_hex()),
            module: self.module.info().clone(),
            kind: ExecutionKind::Command,
            entry,
            outcome,
            exit_code,
            message,
            duration,
            instantiate_duration: Duration::ZERO,
            fuel_consumed: fuel_given
                .zip(fuel_left)
                .filter(|_| !interrupted)
                .map(|(given, left)| given.saturating_sub(left)),
            fuel_limit: limits.fuel.filter(|_| metered),
            memory_peak_bytes: memory_peak,
            memory_limit_bytes: limits_of_sandbox.memory_bytes,
            memory_limit_hit: breach.is_some_and(|b| b.kind == LimitKind::Memory),
            stdout_bytes: out.total,
            stderr_bytes: err.total,
            stdout_truncated: out.truncated,
            stderr_truncated: err.truncated,
            runtime: self.runtime.clone(),
        };
        crate::execution::report_security(&self.sandbox, &report, breach, limits.timeout);
        self.sandbox
            .observer()
            .on_event(&Event::ExecutionFinished(&report));
        Ok(TurnOutput {
            stdout: out.kept,
            stderr: err.kept,
            report,
            alive: self.alive,
        })
    }

    /// Waits until the guest pauses for a turn or ends, at most `timeout` plus a grace;
    /// past it the guest is cancelled, and given up as lost after another grace.
    fn wait(&mut self, timeout: Duration) -> Waited {
        let give_up = crate::store::deadline(Instant::now(), timeout.saturating_add(GRACE));
        let mut cancelled_at: Option<Instant> = None;
        let mut state = self.gate.lock();
        loop {
            if let Some(ended) = state.ended.take() {
                return Waited::Ended(ended);
            }
            if let Some(pause) = state.waiting.take() {
                return Waited::Paused(pause);
            }
            let now = Instant::now();
            let until = match cancelled_at {
                None if now >= give_up => {
                    self.cancel.store(true, Ordering::Relaxed);
                    state.closed = true;
                    self.gate.to_guest.notify_all();
                    cancelled_at = Some(now);
                    continue;
                }
                None => give_up,
                Some(at) if now >= at + GRACE => return Waited::Lost,
                Some(at) => at + GRACE,
            };
            state = self
                .gate
                .to_host
                .wait_timeout(state, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        // The guest reads end of file (a driver then exits) and is cancelled should it run
        // on; its thread ends on its own and frees its instance slot.
        self.cancel.store(true, Ordering::Relaxed);
        self.gate.close();
        drop(self.thread.take());
    }
}

enum Waited {
    Paused(Pause),
    Ended(Ended),
    Lost,
}

/// A turn's stdout without its status record, and the status it gave.
struct TurnStdout {
    kept: Vec<u8>,
    total: u64,
    truncated: bool,
    status: Option<i32>,
}

fn take_output(stdout: &BoundedOutput) -> TurnStdout {
    let Taken {
        mut kept,
        total,
        truncated,
        tail,
    } = stdout.take();
    let Some((status, record)) = status_record(&tail) else {
        return TurnStdout {
            kept,
            total,
            truncated,
            status: None,
        };
    };
    let total = total.saturating_sub(record as u64);
    // The record is the last thing written: drop whatever of it was kept.
    kept.truncate(usize::try_from(total).unwrap_or(usize::MAX).min(kept.len()));
    TurnStdout {
        truncated: total > kept.len() as u64,
        kept,
        total,
        status: Some(status),
    }
}

/// The status in a record at the very end of `tail`, and the record's length.
fn status_record(tail: &[u8]) -> Option<(i32, usize)> {
    let body = tail.strip_suffix(&[STATUS_END])?;
    let start = body
        .windows(STATUS_PREFIX.len())
        .rposition(|w| w == STATUS_PREFIX)?;
    let digits = std::str::from_utf8(&body[start + STATUS_PREFIX.len()..]).ok()?;
    let status = digits.parse().ok()?;
    Some((status, tail.len() - start))
}

fn last_chars(text: &str, n: usize) -> &str {
    let start = text.char_indices().rev().nth(n).map_or(0, |(i, _)| i);
    &text[start..]
}

/// The guest's thread: makes the store, starts the command, and says how it ended.
#[allow(clippy::too_many_arguments)]
fn run_guest(
    sandbox: &Sandbox,
    module: &Module,
    args: Vec<String>,
    gate: &Arc<Gate>,
    cancel: CancelFlag,
    stdout: BoundedOutput,
    stderr: BoundedOutput,
    started: Instant,
) -> Ended {
    let host_error = |message: String| Ended {
        outcome: Outcome::Trap(wasmcage_events::TrapKind::Host),
        message: Some(message),
        fuel_left: None,
        memory_peak: 0,
        breach: None,
    };
    let mut store = sandbox.empty_store(Some(cancel), started);
    if let Err(e) = sandbox.arm(&mut store, started) {
        return host_error(e.to_string());
    }
    let context = ExecutionContext {
        execution_id: ExecutionId::next(),
        sandbox_id: sandbox.id(),
        trace: None,
    };
    store.data_mut().context = Some(context);
    store.data_mut().gate = Some(gate.clone());
    let guard = crate::wasi_guard::Guard {
        observer: sandbox.engine_observer(),
        module: module.info().clone(),
        execution_id: context.execution_id,
    };
    let io = Io { stdout, stderr };
    let input = CommandInput {
        args,
        ..CommandInput::default()
    };
    if let Err(e) =
        crate::store::attach_wasi(&mut store, sandbox.policy(), module, input, &io, guard)
    {
        return host_error(e.to_string());
    }
    gate.lock().scratch = store.data().scratch.as_ref().map(|d| d.path().to_owned());
    let (instance, duration) = match sandbox.instantiate(module, &mut store) {
        Ok(done) => done,
        Err(e) => return host_error(e.to_string()),
    };
    let observer = sandbox.observer();
    let mut instantiated = false;
    let result = instance.and_then(|instance| {
        instantiated = true;
        observer.on_event(&Event::InstanceCreated(&InstantiateEvent {
            module: module.info().clone(),
            execution_id: context.execution_id,
            duration,
        }));
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call(&mut store, ())
    });
    let (outcome, message) = match &result {
        Ok(()) => (Outcome::Completed, None),
        Err(e) => {
            let c = classify(e);
            (c.outcome, c.message)
        }
    };
    let interrupted = matches!(outcome, Outcome::Timeout | Outcome::Cancelled);
    let fuel_left = store.get_fuel().ok().filter(|_| !interrupted);
    let state = store.into_data();
    let ended = Ended {
        outcome,
        message,
        fuel_left,
        memory_peak: state.limiter.memory_peak,
        breach: state.limiter.breach,
    };
    // The WASI context and any scratch directory go before the instance is reported gone.
    drop(state);
    if instantiated {
        observer.on_event(&Event::InstanceDestroyed {
            module: module.info(),
        });
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_record_at_the_end_is_found_and_measured() {
        let tail = b"2\n\x1fwasmcage:status=3\x1f";
        assert_eq!(status_record(tail), Some((3, 19)));
        assert_eq!(status_record(b"\x1fwasmcage:status=-1\x1f"), Some((-1, 20)));
        assert_eq!(status_record(b"no record"), None);
        assert_eq!(status_record(b"\x1fwasmcage:status=x\x1f"), None);
        assert_eq!(status_record(b"\x1fwasmcage:status=1\x1f trailing"), None);
    }

    #[test]
    fn the_record_is_cut_from_the_output() {
        let out = BoundedOutput::new(1024);
        let mut written = b"hello\n".to_vec();
        written.extend_from_slice(b"\x1fwasmcage:status=0\x1f");
        out.append_for_test(&written);
        let t = take_output(&out);
        assert_eq!(
            (t.kept.as_slice(), t.total, t.status),
            (&b"hello\n"[..], 6, Some(0))
        );
    }
}
