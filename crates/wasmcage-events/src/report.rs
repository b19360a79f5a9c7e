//! The report every execution returns, and the classified outcome inside it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ModuleInfo;

/// A process-unique id for one execution.
///
/// Ids are never reused within a process; they are for correlating the report, the events
/// and the logs of one run, and must never be used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub u64);

impl ExecutionId {
    /// Returns a fresh id, distinct from every other id this process has handed out.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ExecutionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A process-unique id for one sandbox (one configuration of limits and grants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SandboxId(pub u64);

impl SandboxId {
    /// Returns a fresh id, distinct from every other sandbox id this process has handed out.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SandboxId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What kind of execution produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionKind {
    /// A named export called with typed arguments.
    Call,
    /// A WASI command: `_start` with arguments, stdin and captured output.
    Command,
}

impl ExecutionKind {
    /// The stable lowercase name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionKind::Call => "call",
            ExecutionKind::Command => "command",
        }
    }
}

/// The kind of a guest trap that is not one of the resource-limit outcomes.
///
/// The names follow the WebAssembly specification's trap conditions; [`TrapKind::Host`] is
/// a host function (such as a WASI call) that failed and stopped the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrapKind {
    /// The guest executed an `unreachable` instruction (also how Rust guests panic and abort).
    Unreachable,
    /// A load or store outside the bounds of linear memory.
    OutOfBounds,
    /// An access outside the bounds of a table.
    TableOutOfBounds,
    /// Integer division or remainder by zero.
    DivisionByZero,
    /// Integer overflow (for example `i32.div_s` of `i32::MIN` by `-1`).
    IntegerOverflow,
    /// A float-to-integer conversion of NaN or of a value out of range.
    BadConversionToInteger,
    /// An indirect call through a null table entry.
    IndirectCallToNull,
    /// An indirect call whose callee has a different signature.
    BadSignature,
    /// A misaligned atomic memory access.
    HeapMisaligned,
    /// A null reference was dereferenced.
    NullReference,
    /// A table grew past the sandbox's table-elements limit.
    TableLimit,
    /// The sandbox's limit on instances, tables or memories was exceeded.
    InstanceLimit,
    /// A host function (for example a WASI call) returned an error that stopped the guest.
    Host,
    /// Any other trap condition.
    Other,
}

impl TrapKind {
    /// The stable snake_case name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TrapKind::Unreachable => "unreachable",
            TrapKind::OutOfBounds => "out_of_bounds",
            TrapKind::TableOutOfBounds => "table_out_of_bounds",
            TrapKind::DivisionByZero => "division_by_zero",
            TrapKind::IntegerOverflow => "integer_overflow",
            TrapKind::BadConversionToInteger => "bad_conversion_to_integer",
            TrapKind::IndirectCallToNull => "indirect_call_to_null",
            TrapKind::BadSignature => "bad_signature",
            TrapKind::HeapMisaligned => "heap_misaligned",
            TrapKind::NullReference => "null_reference",
            TrapKind::TableLimit => "table_limit",
            TrapKind::InstanceLimit => "instance_limit",
            TrapKind::Host => "host",
            TrapKind::Other => "other",
        }
    }
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an execution ended. Every execution ends in exactly one outcome.
///
/// A guest that traps, loops or exhausts a limit is not an error of the host: it is one of
/// these outcomes, and the host carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The export or `_start` returned normally.
    Completed,
    /// The guest called WASI `proc_exit` with this code.
    Exited(i32),
    /// The guest used all the fuel it was given.
    OutOfFuel,
    /// The wall-clock timeout expired.
    Timeout,
    /// The guest tried to grow linear memory past the memory limit.
    MemoryLimit,
    /// The guest exhausted the wasm stack.
    StackOverflow,
    /// The guest trapped for another reason.
    Trap(TrapKind),
    /// The caller gave up on the execution (its request timed out or its client went away)
    /// and the host stopped the guest.
    Cancelled,
}

/// The kind of an [`Outcome`] without its data: a bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// See [`Outcome::Completed`].
    Completed,
    /// See [`Outcome::Exited`].
    Exited,
    /// See [`Outcome::OutOfFuel`].
    OutOfFuel,
    /// See [`Outcome::Timeout`].
    Timeout,
    /// See [`Outcome::MemoryLimit`].
    MemoryLimit,
    /// See [`Outcome::StackOverflow`].
    StackOverflow,
    /// See [`Outcome::Trap`].
    Trap,
    /// See [`Outcome::Cancelled`].
    Cancelled,
}

impl OutcomeKind {
    /// Every outcome kind, in a stable order.
    pub const ALL: [OutcomeKind; 8] = [
        OutcomeKind::Completed,
        OutcomeKind::Exited,
        OutcomeKind::OutOfFuel,
        OutcomeKind::Timeout,
        OutcomeKind::MemoryLimit,
        OutcomeKind::StackOverflow,
        OutcomeKind::Trap,
        OutcomeKind::Cancelled,
    ];

    /// The stable snake_case name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::Exited => "exited",
            OutcomeKind::OutOfFuel => "out_of_fuel",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::MemoryLimit => "memory_limit",
            OutcomeKind::StackOverflow => "stack_overflow",
            OutcomeKind::Trap => "trap",
            OutcomeKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The kind of this outcome, without its data.
    pub fn kind(self) -> OutcomeKind {
        match self {
            Outcome::Completed => OutcomeKind::Completed,
            Outcome::Exited(_) => OutcomeKind::Exited,
            Outcome::OutOfFuel => OutcomeKind::OutOfFuel,
            Outcome::Timeout => OutcomeKind::Timeout,
            Outcome::MemoryLimit => OutcomeKind::MemoryLimit,
            Outcome::StackOverflow => OutcomeKind::StackOverflow,
            Outcome::Trap(_) => OutcomeKind::Trap,
            Outcome::Cancelled => OutcomeKind::Cancelled,
        }
    }

    /// The trap kind, when the outcome is a trap.
    pub fn trap_kind(self) -> Option<TrapKind> {
        match self {
            Outcome::Trap(kind) => Some(kind),
            _ => None,
        }
    }

    /// Whether the guest ran to its end as it meant to: it returned, or exited with code 0.
    pub fn is_success(self) -> bool {
        matches!(self, Outcome::Completed | Outcome::Exited(0))
    }

    /// Whether a resource limit of the sandbox ended the execution.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Outcome::OutOfFuel
                | Outcome::Timeout
                | Outcome::MemoryLimit
                | Outcome::StackOverflow
                | Outcome::Trap(TrapKind::TableLimit | TrapKind::InstanceLimit)
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exited({code})"),
            Outcome::Trap(kind) => write!(f, "trap({kind})"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// What one execution did and how it ended.
///
/// Its JSON form (see [`ExecutionReport::to_json`]) is a flat object with the fields
/// `outcome`, `trap`, `exit_code`, `fuel_consumed`, `memory_peak_bytes`, `duration_ms`,
/// `stdout_truncated` and the rest named below; fields without a value are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "ReportJson", try_from = "ReportJson")]
pub struct ExecutionReport {
    /// The process-unique id of this execution.
    pub execution_id: ExecutionId,
    /// The sandbox the execution ran in.
    pub sandbox_id: SandboxId,
    /// The W3C trace id (32 hex digits) of the trace the execution continued, when the caller
    /// passed a `traceparent`.
    pub trace_id: Option<String>,
    /// The module that ran.
    pub module: ModuleInfo,
    /// Whether this was a call of an export or a WASI command.
    pub kind: ExecutionKind,
    /// The export called, or `_start` for a command (shared with the module, never copied
    /// per execution).
    pub entry: Arc<str>,
    /// How the execution ended.
    pub outcome: Outcome,
    /// The process exit code: the guest's code for a command (0 when `_start` returned),
    /// `None` for a call that did not exit.
    pub exit_code: Option<i32>,
    /// A human-readable description of a trap or limit breach, for logs; `None` on success.
    pub message: Option<String>,
    /// Wall-clock time of the whole execution, instantiation included.
    pub duration: Duration,
    /// Wall-clock time spent instantiating the module.
    pub instantiate_duration: Duration,
    /// Fuel the guest consumed; `None` when fuel metering is off.
    pub fuel_consumed: Option<u64>,
    /// The fuel the guest was given; `None` when fuel metering is off.
    pub fuel_limit: Option<u64>,
    /// The largest size any linear memory of the guest reached, in bytes.
    pub memory_peak_bytes: u64,
    /// The memory limit in force, in bytes.
    pub memory_limit_bytes: u64,
    /// Whether the guest asked for more memory than the limit, whether it was stopped
    /// (`memory_limit`) or refused and carried on.
    pub memory_limit_hit: bool,
    /// Bytes the guest wrote to stdout, including any that were dropped.
    pub stdout_bytes: u64,
    /// Bytes the guest wrote to stderr, including any that were dropped.
    pub stderr_bytes: u64,
    /// Whether stdout exceeded its capture limit and was cut.
    pub stdout_truncated: bool,
    /// Whether stderr exceeded its capture limit and was cut.
    pub stderr_truncated: bool,
    /// The language runtime (interpreter) this execution ran code in, if any.
    pub runtime: Option<Arc<RuntimeTag>>,
}

/// The language runtime an execution ran code in: which interpreter, which version, and
/// whether the code ran one-shot or as one cell of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeTag {
    /// The runtime's name, as installed (`python`, `javascript`, or an operator's own).
    pub name: Arc<str>,
    /// The language's version, as its manifest says (`3.12.0`).
    pub version: Arc<str>,
    /// One-shot code, or one cell of a session.
    pub execution_type: ExecutionType,
}

/// How code reached a language runtime: LLMSafeSpace's `execution_type` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionType {
    /// A fresh interpreter ran the code and ended.
    Oneshot,
    /// One cell of a stateful session.
    Session,
}

impl ExecutionType {
    /// The stable lowercase name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionType::Oneshot => "oneshot",
            ExecutionType::Session => "session",
        }
    }
}

impl ExecutionReport {
    /// The report as JSON text with the documented flat field names.
    pub fn to_json(&self) -> String {
        // A flat struct of strings, numbers and booleans always serialises.
        serde_json::to_string(self).expect("an execution report serialises to JSON")
    }

    /// Parses a report from its JSON form, as written by [`ExecutionReport::to_json`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The fraction of the memory limit the guest used at its peak, from 0.0 to 1.0.
    pub fn memory_usage_ratio(&self) -> f64 {
        if self.memory_limit_bytes == 0 {
            return 0.0;
        }
        self.memory_peak_bytes as f64 / self.memory_limit_bytes as f64
    }
}

/// The flat JSON shape of a report. Kept separate so that [`Outcome`] stays an enum with
/// data in Rust while the wire format stays the documented flat object.
#[derive(Serialize, Deserialize)]
struct ReportJson {
    execution_id: ExecutionId,
    sandbox_id: SandboxId,
    trace_id: Option<String>,
    module: String,
    module_hash: String,
    kind: ExecutionKind,
    entry: String,
    outcome: OutcomeKind,
    trap: Option<TrapKind>,
    exit_code: Option<i32>,
    message: Option<String>,
    duration_ms: f64,
    instantiate_ms: f64,
    fuel_consumed: Option<u64>,
    fuel_limit: Option<u64>,
    memory_peak_bytes: u64,
    memory_limit_bytes: u64,
    #[serde(default)]
    memory_limit_hit: bool,
    stdout_bytes: u64,
    stderr_bytes: u64,
    stdout_truncated: bool,
    stderr_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execution_type: Option<ExecutionType>,
}

impl From<ExecutionReport> for ReportJson {
    fn from(r: ExecutionReport) -> Self {
        ReportJson {
            execution_id: r.execution_id,
            sandbox_id: r.sandbox_id,
            trace_id: r.trace_id,
            module: r.module.name.to_string(),
            module_hash: r.module.hash.to_string(),
            kind: r.kind,
            entry: r.entry.to_string(),
            outcome: r.outcome.kind(),
            trap: r.outcome.trap_kind(),
            exit_code: r.exit_code,
            message: r.message,
            duration_ms: r.duration.as_secs_f64() * 1e3,
            instantiate_ms: r.instantiate_duration.as_secs_f64() * 1e3,
            fuel_consumed: r.fuel_consumed,
            fuel_limit: r.fuel_limit,
            memory_peak_bytes: r.memory_peak_bytes,
            memory_limit_bytes: r.memory_limit_bytes,
            memory_limit_hit: r.memory_limit_hit,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            runtime: r.runtime.as_ref().map(|t| t.name.to_string()),
            runtime_version: r.runtime.as_ref().map(|t| t.version.to_string()),
            execution_type: r.runtime.as_ref().map(|t| t.execution_type),
        }
    }
}

impl TryFrom<ReportJson> for ExecutionReport {
    type Error = String;

    fn try_from(j: ReportJson) -> Result<Self, String> {
        let outcome = match j.outcome {
            OutcomeKind::Completed => Outcome::Completed,
            OutcomeKind::Exited => {
                Outcome::Exited(j.exit_code.ok_or("outcome `exited` needs an `exit_code`")?)
            }
            OutcomeKind::OutOfFuel => Outcome::OutOfFuel,
            OutcomeKind::Timeout => Outcome::Timeout,
            OutcomeKind::MemoryLimit => Outcome::MemoryLimit,
            OutcomeKind::StackOverflow => Outcome::StackOverflow,
            OutcomeKind::Trap => Outcome::Trap(j.trap.ok_or("outcome `trap` needs a `trap` kind")?),
            OutcomeKind::Cancelled => Outcome::Cancelled,
        };
        let hash = j
            .module_hash
            .parse()
            .map_err(|e| format!("module_hash: {e}"))?;
        Ok(ExecutionReport {
            execution_id: j.execution_id,
            sandbox_id: j.sandbox_id,
            trace_id: j.trace_id,
            module: ModuleInfo::new(j.module, hash),
            kind: j.kind,
            entry: j.entry.into(),
            outcome,
            exit_code: j.exit_code,
            message: j.message,
            duration: duration_from_ms(j.duration_ms),
            instantiate_duration: duration_from_ms(j.instantiate_ms),
            fuel_consumed: j.fuel_consumed,
            fuel_limit: j.fuel_limit,
            memory_peak_bytes: j.memory_peak_bytes,
            memory_limit_bytes: j.memory_limit_bytes,
            memory_limit_hit: j.memory_limit_hit,
            stdout_bytes: j.stdout_bytes,
            stderr_bytes: j.stderr_bytes,
            stdout_truncated: j.stdout_truncated,
            stderr_truncated: j.stderr_truncated,
            runtime: j.runtime.map(|name| {
                Arc::new(RuntimeTag {
                    name: name.into(),
                    version: j.runtime_version.unwrap_or_default().into(),
                    execution_type: j.execution_type.unwrap_or(ExecutionType::Oneshot),
                })
            }),
        })
    }
}

fn duration_from_ms(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms / 1e3).unwrap_or_default()
}
