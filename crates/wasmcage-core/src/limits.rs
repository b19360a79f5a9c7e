//! Resource limits and the wasmtime `ResourceLimiter` that enforces them.

use wasmcage_events::LimitKind;
pub use wasmcage_policy::{Limits, OnMemoryLimit};

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
    on_memory_limit: OnMemoryLimit,
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
            on_memory_limit: limits.on_memory_limit,
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
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.memory_bytes {
            // A module whose initial memory is already too large cannot run at all; a guest
            // growing past the limit gets what the policy says: -1 from memory.grow, as the
            // WebAssembly specification has it, or a stop at once.
            if current == 0 || self.on_memory_limit == OnMemoryLimit::Terminate {
                return Err(self.breach(LimitKind::Memory, desired, self.memory_bytes));
            }
            self.breach.get_or_insert(LimitBreach {
                kind: LimitKind::Memory,
                requested: desired,
                limit: self.memory_bytes,
            });
            return Ok(false);
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
