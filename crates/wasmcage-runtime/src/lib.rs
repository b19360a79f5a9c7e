//! Language runtimes for wasmcage: interpreters compiled to WebAssembly, each installed as a
//! directory with a manifest (`runtime.toml`) and its module.
//!
//! - [`Manifest`]: what a runtime is and how to start it (argument templates with `{code}`
//!   and `{file}`, environment, default limits, library directories).
//! - [`Registry`]: the runtimes installed under `<data_dir>/runtimes/`; installing is atomic
//!   and a directory without a valid manifest is reported broken, never used.
//! - [`spec`]: the built-in runtimes (`python`, `javascript`), pinned by the hashes of their
//!   wheel and module; [`fetch`] downloads and installs one.
//!
//! - [`Runtime`]: an installed runtime compiled on an engine and verified against its
//!   manifest's hash; it runs code cold (`argv_code`) or starts its [`Driver`] in an
//!   interpreter that waits for code (`wasmcage_core::Interactive`).
//! - [`InterpreterPool`]: pre-started one-shot interpreters, each used once.
//! - [`Sessions`]: one interpreter per session, kept between cells, for its owner only.

use std::path::PathBuf;

mod driver;
mod error;
mod fetch;
mod manifest;
mod pool;
mod registry;
mod runner;
mod session;
pub mod spec;
pub mod zip;

pub use error::RuntimeError;
pub use fetch::{DEFAULT_INDEX, FetchLimits, Source, fetch, fetch_wheel};
pub use manifest::{
    CODE_PLACEHOLDER, DEFAULT_MODULE, Driver, FILE_PLACEHOLDER, LibDir, MANIFEST_FILE, Manifest,
    RuntimeLimits, RuntimeName, Sha256, format_duration, format_size,
};
pub use pool::{InterpreterPool, InterpreterPoolStats};
pub use registry::{AddOptions, Entry, Installed, Registry};
pub use runner::{
    Code, MAX_FILES, RunError, Runtime, STARTUP_FUEL, STARTUP_TIMEOUT, WORKSPACE, check_file_name,
    guest_args, run_cell, run_oneshot,
};
pub use session::{SessionError, SessionInfo, SessionSettings, Sessions};
pub use spec::RuntimeSpec;

/// The largest module the registry installs (CPython is 26 MB).
pub const MAX_MODULE_BYTES: u64 = 128 << 20;

/// The environment variable that names the data directory.
pub const DATA_DIR_ENV: &str = "WASMCAGE_DATA_DIR";

/// wasmcage's data directory when none is given: `$WASMCAGE_DATA_DIR`, else
/// `$XDG_DATA_HOME/wasmcage`, else `~/.local/share/wasmcage`. `None` when none of these is
/// set (no `HOME`). Relative `XDG_DATA_HOME` values are ignored, as the XDG specification
/// says.
pub fn default_data_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var(DATA_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    if let Some(xdg) = var("XDG_DATA_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("wasmcage"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".local/share/wasmcage"))
}
