//! Resource limits and the wasmtime `ResourceLimiter` that enforces them.

use std::time::Duration;

use wasmcage_events::LimitKind;

/// The resource limits of one execution. Every limit is enforced by the engine, not by the
/// guest's good behaviour.
///
/// | limit | default | breach becomes |
/// |---|---|---|
/// | `memory_bytes` | 64 MiB per linear memory | `memory_limit` |
/// | `table_elements` | 10 000 per table | `trap` (`table_limit`) |
/// | `instances` / `tables` / `memories` | 1 / 10 / 1 per store | `trap` (`instance_limit`) |
/// | `fuel` | 1 000 000 000 units | `out_of_fuel` |
/// | `timeout` | 10 s wall clock | `timeout` |
/// | `max_stdout_bytes` / `max_stderr_bytes` | 1 MiB each | output cut, `*_truncated` set |
///
/// The wasm stack limit is a property of the engine (see
/// [`EngineConfig::max_wasm_stack`](crate::EngineConfig::max_wasm_stack)) because wasmtime
/// fixes it when the engine is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest size, in bytes, that any one linear memory may reach.
    pub memory_bytes: u64,
    /// The largest number of elements that any one table may hold.
    pub table_elements: u64,
    /// The number of instances a store may create.
    pub instances: u32,
    /// The number of tables a store may create.
    pub tables: u32,
    /// The number of linear memories a store may create.
    pub memories: u32,
    /// Fuel for one execution (roughly, one unit per wasm instruction). Refilled for every
    /// execution. `None` runs unmetered; consumption is still reported if the engine meters fuel.
    pub fuel: Option<u64>,
    /// Wall-clock time one execution may take, instantiation included.
    pub timeout: Duration,
    /// Bytes of stdout kept; the rest is dropped and the report says so.
    pub max_stdout_bytes: u64,
    /// Bytes of stderr kept; the rest is dropped and the report says so.
    pub max_stderr_bytes: u64,
}

impl Limits {
    /// The default memory limit: 64 MiB.
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
    /// The default fuel: one billion units.
    pub const DEFAULT_FUEL: u64 = 1_000_000_000;
    /// The default timeout: 10 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default output capture: 1 MiB per stream.
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            table_elements: 10_000,
            instances: 1,
            tables: 10,
            memories: 1,
            fuel: Some(Self::DEFAULT_FUEL),
            timeout: Self::DEFAULT_TIMEOUT,
            max_stdout_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            max_stderr_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// The error a limit breach raises inside wasmtime, so that the trap can be classified
/// exactly rather than guessed from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LimitBreach {
    pub(crate) kind: LimitKind,
    /// What the guest asked for, in the limit's unit (bytes, elements, count).
    pub(crate) requested: u64,
    /// The limit in force.
    pub(crate) limit: u64,
}

impl std::fmt::Display for LimitBreach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            LimitKind::Memory => write!(
                f,
                "the guest tried to grow linear memory to {} bytes, past the limit of {} bytes",
                self.requested, self.limit
            ),
            LimitKind::Table => write!(
                f,
                "the guest tried to grow a table to {} elements, past the limit of {}",
                self.requested, self.limit
            ),
            LimitKind::Instances => write!(
                f,
                "the module needs {} instances, tables or memories, past the limit of {}",
                self.requested, self.limit
            ),
            LimitKind::Timeout => {
                write!(f, "the execution ran past its timeout of {} ms", self.limit)
            }
            other => write!(f, "the guest exceeded its {} limit", other.as_str()),
        }
    }
}

impl std::error::Error for LimitBreach {}

/// Enforces [`Limits`] on one store and remembers the peak memory and the first breach.
#[derive(Debug)]
pub(crate) struct Limiter {
    memory_bytes: u64,
    table_elements: u64,
    instances: usize,
    tables: usize,
    memories: usize,
    pub(crate) memory_peak: u64,
    pub(crate) breach: Option<LimitBreach>,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            memory_bytes: limits.memory_bytes,
            table_elements: limits.table_elements,
            instances: limits.instances as usize,
            tables: limits.tables as usize,
            memories: limits.memories as usize,
            memory_peak: 0,
            breach: None,
        }
    }

    fn breach(&mut self, kind: LimitKind, requested: u64, limit: u64) -> wasmtime::Error {
        let breach = LimitBreach {
            kind,
            requested,
            limit,
        };
        self.breach.get_or_insert(breach);
        wasmtime::Error::new(breach)
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.memory_bytes {
            // Trapping (rather than returning -1 from memory.grow) stops a memory bomb at
            // once with a classified outcome instead of letting it spin until the timeout.
            return Err(self.breach(LimitKind::Memory, desired, self.memory_bytes));
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.table_elements {
            return Err(self.breach(LimitKind::Table, desired, self.table_elements));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
