//! The errors of the core crate: everything a caller can get wrong, in words a user
//! understands. A guest that traps is not here: that is an [`Outcome`](crate::Outcome).

use std::path::PathBuf;

use crate::ValueType;

/// Something the host could not do. Guest misbehaviour is never an `Error`; it is an
/// outcome in the [`ExecutionReport`](crate::ExecutionReport).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a valid WebAssembly module (or WAT text).
    #[error("module `{name}` is not valid WebAssembly: {reason}")]
    InvalidModule {
        /// The name the module was offered under.
        name: String,
        /// What the parser or validator found.
        reason: String,
    },
    /// The module file could not be read.
    #[error("cannot read module file {}", path.display())]
    ReadModule {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The module has no function export of that name.
    #[error(
        "module `{module}` has no exported function `{export}`; its function exports are: {}",
        list(available)
    )]
    ExportNotFound {
        /// The module.
        module: String,
        /// The export asked for.
        export: String,
        /// The function exports it does have.
        available: Vec<String>,
    },
    /// The arguments do not match the export's parameters.
    #[error(
        "export `{export}` takes ({}) but was given ({})",
        types(expected),
        types(given)
    )]
    ArgumentMismatch {
        /// The export.
        export: String,
        /// The parameter types it declares.
        expected: Vec<ValueType>,
        /// The types of the arguments given.
        given: Vec<ValueType>,
    },
    /// The export uses a parameter or result type that cannot be passed from the host.
    #[error(
        "export `{export}` has a signature wasmcage cannot call: {signature} (only i32, i64, f32 and f64 are supported)"
    )]
    UnsupportedSignature {
        /// The export.
        export: String,
        /// Its signature, as wasmtime shows it.
        signature: String,
    },
    /// The module cannot run as a WASI command.
    #[error(
        "module `{module}` is not a WASI command: it has no `_start` function taking and returning nothing; call one of its exports with --invoke instead"
    )]
    NotACommand {
        /// The module.
        module: String,
    },
    /// The module imports something the sandbox does not provide.
    #[error(
        "module `{module}` imports `{import_module}::{import_name}`, which the sandbox does not provide (only WASI preview 1, `wasi_snapshot_preview1`, is available)"
    )]
    UnsupportedImport {
        /// The module.
        module: String,
        /// The import's module name.
        import_module: String,
        /// The import's field name.
        import_name: String,
    },
    /// A text value could not be parsed as the type asked for.
    #[error("cannot read {text:?} as {}: {reason}", ty.map_or("a value type".to_owned(), |t| t.to_string()))]
    BadValue {
        /// The text.
        text: String,
        /// The type it was read as, if known.
        ty: Option<ValueType>,
        /// Why it failed.
        reason: String,
    },
    /// Every slot of a warm pool was in use, and waiting (if configured) did not free one.
    #[error(
        "warm pool `{pool}` is exhausted: all {max} slots were in use (waited {waited:?}); raise max_in_use or retry later"
    )]
    PoolExhausted {
        /// The pool.
        pool: String,
        /// Its slot count.
        max: usize,
        /// How long the execution waited.
        waited: std::time::Duration,
    },
    /// The module is well-formed but larger than the engine agrees to compile (see
    /// `CompileLimits`); nothing was compiled.
    #[error("module `{name}` is too large to compile: {what}")]
    ModuleTooLarge {
        /// The name the module was offered under.
        name: String,
        /// Which bound it exceeds.
        what: String,
    },
    /// The host has no capacity for another execution right now (every instance slot of the
    /// engine is in use). Nothing of the guest ran; retry later.
    #[error("no capacity for another execution: {0}")]
    Capacity(String),
    /// An interactive guest (a pre-started interpreter) ended or failed before it first
    /// asked for input: it never became ready for code.
    #[error("the interpreter did not start: {outcome}: {message}")]
    InterpreterStart {
        /// How its start-up ended.
        outcome: wasmcage_events::Outcome,
        /// What it said (its classified error, or the end of its stderr).
        message: String,
    },
    /// The interactive guest has ended (a turn exited it, or it hit a limit): it takes no
    /// more turns.
    #[error("the interpreter has ended and takes no more input")]
    InterpreterEnded,
    /// The engine or sandbox configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A failure inside the host that is not the caller's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

fn types(items: &[ValueType]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
