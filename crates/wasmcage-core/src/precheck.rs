//! A cheap scan of a module's sections before it is compiled.
//!
//! Compiling is the one thing the host does with a module before any limit of an execution
//! applies, and its cost grows with the code: a few megabytes of hostile code can take
//! minutes and gigabytes. The scan reads section headers and function-body headers (never
//! the instructions) and refuses, before any compiling, a module that imports what the
//! sandbox does not provide or is larger than [`CompileLimits`] allow. It also learns what
//! the rest of the core needs to know (whether the module has a start function).

use wasmparser::{Parser, Payload};

use crate::Error;
use crate::module::WASI_P1;

/// Static bounds on what the engine agrees to compile. The defaults admit real programs
/// with room to spare (CPython 3.12 for WASI has 11 448 functions, 6.2 MB of code, a largest
/// body of 104 KiB and at most 187 locals in one function) and refuse the shapes that make
/// compiling explode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// The largest module binary, in bytes (default 64 MiB).
    pub max_module_bytes: u64,
    /// The most functions a module may define (default 50 000).
    pub max_functions: u32,
    /// The largest function body, in bytes (default 1 MiB).
    pub max_function_body_bytes: u32,
    /// The total size of all function bodies, in bytes (default 24 MiB).
    pub max_code_bytes: u64,
    /// The most locals one function may declare (default 10 000).
    pub max_locals: u32,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_module_bytes: 64 << 20,
            max_functions: 50_000,
            max_function_body_bytes: 1 << 20,
            max_code_bytes: 24 << 20,
            max_locals: 10_000,
        }
    }
}

/// Refuses input (binary, or WAT text before it is parsed) larger than
/// [`CompileLimits::max_module_bytes`].
pub(crate) fn check_size(name: &str, bytes: &[u8], limits: &CompileLimits) -> Result<(), Error> {
    if bytes.len() as u64 > limits.max_module_bytes {
        return Err(Error::ModuleTooLarge {
            name: name.to_owned(),
            what: format!(
                "the module is {} bytes; the most this engine compiles is {}",
                bytes.len(),
                limits.max_module_bytes
            ),
        });
    }
    Ok(())
}

/// What the scan learned.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Scan {
    pub(crate) has_start: bool,
}

/// Scans `binary` (already WAT-converted) against `limits`. Malformed sections are left to
/// the validator, which gives the better message; this only refuses what is well-formed but
/// too large, or imports something the sandbox does not provide.
pub(crate) fn scan(name: &str, binary: &[u8], limits: &CompileLimits) -> Result<Scan, Error> {
    let too_large = |what: String| Error::ModuleTooLarge {
        name: name.to_owned(),
        what,
    };
    check_size(name, binary, limits)?;
    let mut scan = Scan::default();
    let mut functions = 0u64;
    for payload in Parser::new(0).parse_all(binary) {
        let Ok(payload) = payload else {
            // The validator reports malformed input precisely; leave it to it.
            return Ok(scan);
        };
        match payload {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let Ok(import) = import else {
                        return Ok(scan);
                    };
                    if import.module != WASI_P1 {
                        return Err(Error::UnsupportedImport {
                            module: name.to_owned(),
                            import_module: import.module.to_owned(),
                            import_name: import.name.to_owned(),
                        });
                    }
                }
            }
            Payload::StartSection { .. } => scan.has_start = true,
            Payload::CodeSectionStart { count, size, .. } => {
                if count > limits.max_functions {
                    return Err(too_large(format!(
                        "it defines {count} functions; the most this engine compiles is {}",
                        limits.max_functions
                    )));
                }
                if u64::from(size) > limits.max_code_bytes {
                    return Err(too_large(format!(
                        "its code is {size} bytes; the most this engine compiles is {}",
                        limits.max_code_bytes
                    )));
                }
            }
            Payload::CodeSectionEntry(body) => {
                functions += 1;
                let size = body.range().len() as u64;
                if size > u64::from(limits.max_function_body_bytes) {
                    return Err(too_large(format!(
                        "function {} is {size} bytes; the largest this engine compiles is {}",
                        functions - 1,
                        limits.max_function_body_bytes
                    )));
                }
                let Ok(locals) = body.get_locals_reader() else {
                    return Ok(scan);
                };
                let mut declared = 0u64;
                for group in locals {
                    let Ok((count, _)) = group else {
                        return Ok(scan);
                    };
                    declared += u64::from(count);
                    if declared > u64::from(limits.max_locals) {
                        return Err(too_large(format!(
                            "function {} declares more than {} locals",
                            functions - 1,
                            limits.max_locals
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(wat: &str, limits: &CompileLimits) -> Result<Scan, Error> {
        scan("t", &wat::parse_str(wat).unwrap(), limits)
    }

    #[test]
    fn refuses_foreign_imports_before_compiling() {
        let e = check(
            r#"(module (import "env" "f" (func)))"#,
            &CompileLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::UnsupportedImport { .. }), "{e}");
    }

    #[test]
    fn refuses_too_many_functions_and_large_bodies() {
        let few = CompileLimits {
            max_functions: 2,
            ..CompileLimits::default()
        };
        let e = check("(module (func) (func) (func))", &few).unwrap_err();
        assert!(e.to_string().contains("3 functions"), "{e}");
        let small = CompileLimits {
            max_function_body_bytes: 8,
            ..CompileLimits::default()
        };
        let e = check(
            "(module (func (drop (i32.add (i32.const 1) (i32.const 2))) (nop) (nop) (nop)))",
            &small,
        )
        .unwrap_err();
        assert!(e.to_string().contains("function 0"), "{e}");
        let locals = CompileLimits {
            max_locals: 3,
            ..CompileLimits::default()
        };
        let e = check("(module (func (local i32 i32) (local i64 i64)))", &locals).unwrap_err();
        assert!(e.to_string().contains("locals"), "{e}");
    }

    #[test]
    fn finds_the_start_function() {
        let limits = CompileLimits::default();
        assert!(
            check("(module (func $s) (start $s))", &limits)
                .unwrap()
                .has_start
        );
        assert!(!check("(module (func))", &limits).unwrap().has_start);
    }
}
