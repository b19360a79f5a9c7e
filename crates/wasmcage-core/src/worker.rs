//! Compiling in a child process under a budget of time and memory.
//!
//! Cranelift cannot be interrupted, and a few megabytes of hostile code can make it run for
//! minutes and take gigabytes. With a [`CompileWorker`] configured, the engine hands the
//! module's bytes to a child process (the host's own binary, run as a worker) that limits its
//! own address space and CPU time with `setrlimit`, compiles, and writes the serialized
//! native code back, framed with its SHA-256 like a cache file. The parent kills the child at
//! the wall-clock budget. A module that does not compile within the budget is refused with
//! [`Error::ModuleTooLarge`] and nothing of it stays in the host; one that does is loaded
//! exactly as a verified cache file is.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// How to run the compile worker, and its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    /// The program to run: a binary whose `args` make it call [`serve_compile_worker`]
    /// (`wasmcage` with its hidden `compile-worker` subcommand).
    pub program: PathBuf,
    /// Arguments that select the worker mode; the engine appends its own options after them.
    pub args: Vec<String>,
    /// The longest one compile may take, wall clock and CPU (default 60 s).
    pub timeout: Duration,
    /// The most address space the worker may use, in bytes (default 4 GiB).
    pub memory_bytes: u64,
}

impl CompileWorker {
    /// The default budget for `program args...`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>) -> Self {
        CompileWorker {
            program: program.into(),
            args,
            timeout: Duration::from_secs(60),
            memory_bytes: 4 << 30,
        }
    }
}

/// What the parent tells the worker about the engine, so that the code it produces loads
/// into the parent's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Whether the engine meters fuel.
    pub consume_fuel: bool,
    /// The most address space, in bytes.
    pub memory_bytes: u64,
    /// The most CPU time, in whole seconds.
    pub cpu_seconds: u64,
}

impl WorkerOptions {
    /// The options as arguments, in the form [`WorkerOptions::parse`] reads.
    fn to_args(self) -> Vec<String> {
        vec![
            format!("fuel={}", u8::from(self.consume_fuel)),
            format!("memory={}", self.memory_bytes),
            format!("cpu={}", self.cpu_seconds),
        ]
    }

    /// Reads the options the parent passed (`fuel=0|1`, `memory=N`, `cpu=N`).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = WorkerOptions {
            consume_fuel: true,
            memory_bytes: 4 << 30,
            cpu_seconds: 60,
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("{arg:?} is not key=value"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}: {value:?} is not a number"))
            };
            match key {
                "fuel" => options.consume_fuel = number()? != 0,
                "memory" => options.memory_bytes = number()?,
                "cpu" => options.cpu_seconds = number()?,
                other => return Err(format!("unknown compile-worker option {other:?}")),
            }
        }
        Ok(options)
    }
}

/// The worker's side: limits this process, reads a module's binary from stdin, compiles it
/// for an engine configured as `options` says, and writes the framed native code to stdout.
///
/// Call it from the binary named in [`CompileWorker::program`] when it is started with
/// [`CompileWorker::args`]; the process should exit afterwards.
pub fn serve_compile_worker(options: &WorkerOptions) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = |resource, value: u64| {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
        .map_err(|e| format!("cannot limit the worker: {e}"))
    };
    limit(Resource::As, options.memory_bytes)?;
    limit(Resource::Cpu, options.cpu_seconds.max(1))?;
    let mut binary = Vec::new();
    std::io::stdin()
        .read_to_end(&mut binary)
        .map_err(|e| format!("cannot read the module: {e}"))?;
    let mut config = wasmtime::Config::new();
    config
        .consume_fuel(options.consume_fuel)
        .epoch_interruption(true);
    let engine = wasmtime::Engine::new(&config).map_err(|e| e.to_string())?;
    let module =
        wasmtime::Module::from_binary(&engine, &binary).map_err(|e| crate::classify::chain(&e))?;
    let payload = module.serialize().map_err(|e| e.to_string())?;
    std::io::stdout()
        .lock()
        .write_all(&crate::cache::frame(&payload))
        .map_err(|e| format!("cannot write the compiled module: {e}"))
}

/// The parent's side: compiles `binary` in a worker and returns the serialized native code
/// (already checked against its checksum).
pub(crate) fn compile(
    worker: &CompileWorker,
    consume_fuel: bool,
    name: &str,
    binary: &[u8],
) -> Result<Vec<u8>, Error> {
    let refused = |what: String| Error::ModuleTooLarge {
        name: name.to_owned(),
        what,
    };
    let options = WorkerOptions {
        consume_fuel,
        memory_bytes: worker.memory_bytes,
        cpu_seconds: worker.timeout.as_secs().max(1),
    };
    let mut child = Command::new(&worker.program)
        .args(&worker.args)
        .args(options.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .map_err(|e| {
            Error::Internal(format!(
                "cannot start the compile worker {}: {e}",
                worker.program.display()
            ))
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|scope| {
        scope.spawn(move || {
            // A worker that dies early closes its stdin; the wait below says why.
            let _ = stdin.write_all(binary);
        });
        // The native code is bounded by what the worker may allocate.
        let limit = worker.memory_bytes;
        let output = scope.spawn(move || {
            let mut out = Vec::new();
            let _ = (&mut stdout).take(limit).read_to_end(&mut out);
            out
        });
        let errors = scope.spawn(move || {
            let mut text = String::new();
            let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
            text
        });
        let deadline = crate::store::deadline(Instant::now(), worker.timeout);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    let _ = child.kill();
                    return Err(Error::Internal(format!(
                        "cannot wait for the compile worker: {e}"
                    )));
                }
            }
        };
        let output = output.join().unwrap_or_default();
        let errors = errors.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(refused(format!(
                "compiling took longer than the budget of {:?}",
                worker.timeout
            )));
        };
        if !status.success() {
            // The module validated before it was sent, so a worker that fails ran out of
            // its budget (an allocation refused by the address-space limit, SIGXCPU).
            let said = errors.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(refused(format!(
                "compiling needed more than the budget of {} bytes of memory or {} s of CPU \
                 (the worker ended with {status}{}{said})",
                worker.memory_bytes,
                options.cpu_seconds,
                if said.is_empty() { "" } else { ": " },
            )));
        }
        crate::cache::verified_payload(&output)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Internal("the compile worker's output is corrupt".into()))
    })
}
