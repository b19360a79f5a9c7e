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
//! This crate does not run anything: the engine compiles `Installed::module_path`, and the
//! caller compares the hash the engine computed with the manifest's (`Installed::verify`).

use std::path::PathBuf;

mod error;
mod fetch;
mod manifest;
mod registry;
pub mod spec;
pub mod zip;

pub use error::RuntimeError;
pub use fetch::{DEFAULT_INDEX, FetchLimits, Source, fetch, fetch_wheel};
pub use manifest::{
    CODE_PLACEHOLDER, DEFAULT_MODULE, Driver, FILE_PLACEHOLDER, LibDir, MANIFEST_FILE, Manifest,
    RuntimeLimits, RuntimeName, Sha256, format_duration, format_size,
};
pub use registry::{AddOptions, Entry, Installed, Registry};
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
