//! Resource limits: data here, enforcement in `wasmcage-core`.

use std::time::Duration;

/// The resource limits of one execution. Every limit is enforced by the engine, not by the
/// guest's good behaviour.
///
/// | limit | default | breach becomes |
/// |---|---|---|
/// | `memory_bytes` | 64 MiB per linear memory | `memory.grow` returns -1 (or `memory_limit`, see `on_memory_limit`) |
/// | `table_elements` | 10 000 per table | `trap` (`table_limit`) |
/// | `instances` / `tables` / `memories` | 1 / 10 / 1 per store | `trap` (`instance_limit`) |
/// | `fuel` | 1 000 000 000 units | `out_of_fuel` |
/// | `timeout` | 10 s wall clock | `timeout` |
/// | `max_stdout_bytes` / `max_stderr_bytes` | 1 MiB each | output cut, `*_truncated` set |
/// | `disk_bytes` | 64 MiB written to files | the write fails with `ENOSPC`, a security event |
///
/// The wasm stack limit is a property of the engine (see
/// `EngineConfig::max_wasm_stack` in `wasmcage-core`) because wasmtime
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
    /// Bytes one execution may write to files in its granted directories and scratch
    /// directory, counted as they are written (rewriting a byte counts again; growing a file
    /// with `fd_allocate` or `fd_filestat_set_size` counts the growth). A write past it fails
    /// with `ENOSPC` and is reported as a security event; the guest keeps running. `None`
    /// sets no limit.
    pub disk_bytes: Option<u64>,
    /// What a guest that asks for memory past `memory_bytes` gets (default
    /// [`OnMemoryLimit::Refuse`]).
    pub on_memory_limit: OnMemoryLimit,
}

/// What happens when a guest asks to grow its memory past the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum OnMemoryLimit {
    /// WebAssembly's own semantics: `memory.grow` returns -1 and the guest carries on, so a
    /// program that handles a failed allocation (CPython's `MemoryError`, an allocator's
    /// null) does so. The report's `memory_limit_hit` is set and a security event is sent.
    #[default]
    Refuse,
    /// The guest is stopped at once with the `memory_limit` outcome.
    Terminate,
}

impl OnMemoryLimit {
    /// The name used in policy files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMemoryLimit::Refuse => "refuse",
            OnMemoryLimit::Terminate => "terminate",
        }
    }
}

impl std::str::FromStr for OnMemoryLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "refuse" => Ok(OnMemoryLimit::Refuse),
            "terminate" => Ok(OnMemoryLimit::Terminate),
            other => Err(format!(
                "{other:?} is not a memory-limit action; use \"refuse\" or \"terminate\""
            )),
        }
    }
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
    /// The default disk limit: 64 MiB written per execution.
    pub const DEFAULT_DISK_BYTES: u64 = 64 << 20;
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
            disk_bytes: Some(Self::DEFAULT_DISK_BYTES),
            on_memory_limit: OnMemoryLimit::Refuse,
        }
    }
}
