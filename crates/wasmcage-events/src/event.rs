//! The events an execution emits, and the identity of a module.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::{ExecutionId, ExecutionKind, ExecutionReport, SandboxId};

/// The identity of a compiled module: a human name and the SHA-256 of its bytes.
///
/// Cloning is cheap (the name is shared). The hash, not the name, identifies the module:
/// two uploads of the same bytes under different names are the same module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModuleInfo {
    /// A name for people: the file name, or what the caller chose.
    pub name: Arc<str>,
    /// The SHA-256 of the module's bytes (of the binary, after WAT was converted).
    pub hash: ModuleHash,
}

impl ModuleInfo {
    /// A module identity from a name and a hash.
    pub fn new(name: impl Into<Arc<str>>, hash: ModuleHash) -> Self {
        ModuleInfo {
            name: name.into(),
            hash,
        }
    }
}

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    /// The first 12 hex digits: short enough for logs, long enough to tell modules apart.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_owned()
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleHash({self})")
    }
}

impl FromStr for ModuleHash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.is_ascii() {
            return Err(format!("expected 64 hex digits, got {:?}", s));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("not a hex digest: {s:?}"))?;
        }
        Ok(ModuleHash(out))
    }
}

/// A W3C trace context parent (`traceparent`): the caller's trace and span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace id; never all zeros.
    pub trace_id: [u8; 16],
    /// The caller's span id, the parent of the execution's span; never all zeros.
    pub parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// Whether the caller sampled this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }
}

impl FromStr for TraceParent {
    type Err = String;

    /// Parses a version-00 `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase,
    /// with neither id all zeros, as the W3C Trace Context specification requires.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)");
        let parts: Vec<&str> = s.trim().split('-').collect();
        let [version, trace, parent, flags] = parts[..] else {
            return Err(bad());
        };
        if version != "00" {
            return Err(bad());
        }
        let trace_id = unhex::<16>(trace).ok_or_else(bad)?;
        let parent_id = unhex::<8>(parent).ok_or_else(bad)?;
        let [flags] = unhex::<1>(flags).ok_or_else(bad)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return Err(format!("{s:?} has an all-zero trace or parent id"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// The ids that tie one execution to its sandbox, its logs and its trace. Host functions
/// can read it from the store; the report carries the same ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutionContext {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The sandbox it runs in.
    pub sandbox_id: SandboxId,
    /// The caller's trace context, when it passed a `traceparent`.
    pub trace: Option<TraceParent>,
}

/// An execution is about to start (before its instance is taken or made).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStart {
    /// Its ids.
    pub context: ExecutionContext,
    /// The module.
    pub module: ModuleInfo,
    /// Call or command.
    pub kind: ExecutionKind,
    /// The export, or `_start`.
    pub entry: Arc<str>,
    /// The language runtime the code runs in, if any.
    pub runtime: Option<Arc<crate::RuntimeTag>>,
}

/// A module was compiled (or taken from a cache) and is ready to instantiate.
#[derive(Debug, Clone, PartialEq)]
pub struct CompileEvent {
    /// The module compiled.
    pub module: ModuleInfo,
    /// Size of the module's binary, in bytes.
    pub size_bytes: u64,
    /// Time spent compiling.
    pub duration: Duration,
}

/// A module was instantiated for one execution.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantiateEvent {
    /// The module instantiated.
    pub module: ModuleInfo,
    /// The execution the instance belongs to.
    pub execution_id: ExecutionId,
    /// Time spent instantiating, start function excluded.
    pub duration: Duration,
}

/// Which resource limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// Linear memory bytes.
    Memory,
    /// Table elements.
    Table,
    /// Instances, tables or memories per store.
    Instances,
    /// Fuel.
    Fuel,
    /// Wall-clock time.
    Timeout,
    /// Wasm stack.
    Stack,
    /// Captured output bytes.
    Output,
    /// Bytes written to files.
    Disk,
}

impl LimitKind {
    /// The stable snake_case name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::Instances => "instances",
            LimitKind::Fuel => "fuel",
            LimitKind::Timeout => "timeout",
            LimitKind::Stack => "stack",
            LimitKind::Output => "output",
            LimitKind::Disk => "disk",
        }
    }
}

/// What kind of denial or breach a [`SecurityEvent`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityEventKind {
    /// The guest tried to use a capability it was not granted.
    CapabilityDenied,
    /// The guest exceeded a resource limit.
    LimitExceeded(LimitKind),
}

impl SecurityEventKind {
    /// The stable snake_case name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEventKind::CapabilityDenied => "capability_denied",
            SecurityEventKind::LimitExceeded(_) => "limit_exceeded",
        }
    }
}

/// What the sandbox did about a denial or breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SecurityAction {
    /// The operation failed with an error the guest can see and handle.
    Denied,
    /// Output beyond the limit was dropped; the guest carried on.
    Truncated,
    /// The guest was stopped.
    Terminated,
}

impl SecurityAction {
    /// The stable snake_case name, as used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityAction::Denied => "denied",
            SecurityAction::Truncated => "truncated",
            SecurityAction::Terminated => "terminated",
        }
    }
}

/// A guest tried something it is not allowed to do, or ran into a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    /// What kind of denial or breach this was.
    pub kind: SecurityEventKind,
    /// The capability involved, e.g. `filesystem`, `network`, `env`, `memory`, `fuel`.
    pub capability: &'static str,
    /// What the guest tried to reach: a path, an address, a variable name, or an amount.
    pub target: String,
    /// What the sandbox did about it.
    pub action: SecurityAction,
    /// The module involved.
    pub module: ModuleInfo,
    /// The execution involved.
    pub execution_id: ExecutionId,
}

/// Where a cached module was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheTier {
    /// In this process's memory.
    Memory,
    /// Serialized native code in the on-disk cache directory.
    Disk,
}

/// What happened in the module cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEventKind {
    /// The module was found compiled.
    Hit(CacheTier),
    /// The module was not cached and had to be compiled.
    Miss,
    /// The module was dropped from memory to make room.
    Evicted,
    /// A disk cache file was corrupt or foreign; it was discarded and the module recompiled.
    Discarded,
}

/// The module cache changed; the sizes are the in-memory cache's after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheEvent {
    /// The module concerned.
    pub module: ModuleInfo,
    /// What happened.
    pub kind: CacheEventKind,
    /// Modules now held in memory.
    pub entries: u64,
    /// Bytes of module binaries now held in memory.
    pub bytes: u64,
}

/// What happened in a warm pool.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PoolEventKind {
    /// The pool was created and pre-warmed with `instances` ready instances.
    Prewarmed {
        /// Instances made ready.
        instances: u64,
        /// Time the pre-warm took.
        duration: Duration,
    },
    /// An execution was given an instance.
    Assigned {
        /// Whether a pre-instantiated instance was ready (a hit), or one was made on demand.
        warm: bool,
        /// Time from asking to having the instance, waiting for capacity included.
        wait: Duration,
        /// Time spent instantiating on demand (zero when warm).
        instantiate: Duration,
    },
    /// An execution finished; its instance was destroyed, its capacity returned, and (below
    /// `min_ready`) a replacement made: the event's counts include it.
    Released,
    /// Every slot was in use when an execution asked for one.
    Exhausted {
        /// Whether the execution was refused (true) or got a slot after waiting (false).
        refused: bool,
    },
    /// The pool was dropped (its last handle went away); its ready instances are destroyed.
    Dropped,
}

/// A warm pool changed; the gauges are the pool's after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolEvent {
    /// The pool's name: its module's name and short hash. The name is whatever the module
    /// was offered under: an observer that uses it as a label must bound it (as
    /// `wasmcage-metrics` does).
    pub pool: Arc<str>,
    /// What happened.
    pub kind: PoolEventKind,
    /// Pre-instantiated instances ready now.
    pub available: u64,
    /// Executions running now.
    pub in_use: u64,
    /// The most executions that may run at once.
    pub max: u64,
}

/// A language runtime's pre-started interpreters or sessions changed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeEvent {
    /// The runtime's name, as installed: operators choose it, and an observer that uses it
    /// as a label must bound it (as `wasmcage-metrics` does).
    pub runtime: Arc<str>,
    /// What happened.
    pub kind: RuntimeEventKind,
}

/// What happened to a runtime's pool or sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RuntimeEventKind {
    /// An execution was given an interpreter: a pre-started one (`warm`), or one started
    /// for it because none was ready; `wait` is how long the execution waited for it.
    Assigned {
        /// Whether the interpreter had been started ahead.
        warm: bool,
        /// From asking for an interpreter to having one.
        wait: Duration,
    },
    /// The pool's pre-started interpreters now number `ready` (of `target`).
    PoolSize {
        /// Interpreters started and waiting for code.
        ready: u64,
        /// How many the pool keeps ready.
        target: u64,
    },
    /// A pre-started interpreter failed to start (its module trapped or ran out of its
    /// start-up budget).
    StartFailed,
    /// A session was created.
    SessionCreated,
    /// A session ended.
    SessionEnded(SessionEnd),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionEnd {
    /// Its owner deleted it.
    Deleted,
    /// It was idle past its expiry.
    Expired,
    /// Its interpreter ended (a cell exited the process, trapped or hit a limit).
    Died,
    /// The host shut down.
    Shutdown,
}

impl SessionEnd {
    /// The stable lowercase name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Deleted => "deleted",
            SessionEnd::Expired => "expired",
            SessionEnd::Died => "died",
            SessionEnd::Shutdown => "shutdown",
        }
    }
}

/// The health of one check, or of the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HealthStatus {
    /// Everything the check looks at is fine.
    Healthy,
    /// Something is failing, but the process can still run guests.
    Degraded,
    /// A critical check has failed past its threshold: do not send work here.
    Critical,
}

impl HealthStatus {
    /// The stable lowercase name, as used in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Critical => "critical",
        }
    }
}

/// A health check, or the overall health, changed status.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChange {
    /// The check's name, or `overall` for the aggregate of all checks.
    pub check: String,
    /// The status before.
    pub previous: HealthStatus,
    /// The status now.
    pub current: HealthStatus,
    /// How many times in a row the check has failed (0 when it passes).
    pub consecutive_failures: u32,
    /// What the check said last.
    pub message: String,
}

/// Something that happened in the sandbox, delivered to every [`Observer`](crate::Observer).
///
/// Events borrow their data: an observer that keeps one must clone what it needs (see
/// [`RecordedEvent`](crate::RecordedEvent)). New kinds of event are added over time, so
/// observers should ignore the ones they do not know.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Compilation of bytes offered under this name is starting (ends with `ModuleCompiled`,
    /// `ModuleRejected`, or a cache hit).
    CompileStarted {
        /// The name the bytes were offered under.
        name: &'a str,
    },
    /// A module was compiled.
    ModuleCompiled(&'a CompileEvent),
    /// Bytes offered as a module were rejected: malformed, invalid, or unsupported.
    ModuleRejected {
        /// The name the bytes were offered under.
        name: &'a str,
        /// Why they were rejected.
        reason: &'a str,
    },
    /// An instance was created for an execution.
    InstanceCreated(&'a InstantiateEvent),
    /// An instance was torn down after its execution; instances are never reused.
    InstanceDestroyed {
        /// The module of the instance.
        module: &'a ModuleInfo,
    },
    /// An execution is starting.
    ExecutionStarted(&'a ExecutionStart),
    /// An execution ended; the report says how.
    ExecutionFinished(&'a ExecutionReport),
    /// A capability was denied or a limit was exceeded.
    Security(&'a SecurityEvent),
    /// A health check, or the overall health, changed status.
    HealthChanged(&'a HealthChange),
    /// The module cache was used or changed.
    Cache(&'a CacheEvent),
    /// A warm pool was used or changed.
    Pool(&'a PoolEvent),
    /// A language runtime's pool of pre-started interpreters or its sessions changed.
    Runtime(&'a RuntimeEvent),
}
