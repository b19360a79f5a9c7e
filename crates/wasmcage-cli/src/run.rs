//! `wasmcage run`: one module, one execution, one report.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmcage::core::{CacheConfig, PoolingConfig};
use wasmcage::{
    CommandInput, Engine, EngineConfig, ExecutionReport, Limits, Outcome, Sandbox, Value,
};

use crate::units::{Fuel, parse_duration, parse_fuel, parse_size};

/// Exit statuses of `wasmcage run`. Guest exit codes are 0 to 125 (WASI preview 1 reserves
/// the rest), so every status the host chooses is 126 or above and can never be mistaken
/// for a guest's.
pub mod status {
    /// The module, the options or the files were bad; nothing ran.
    pub const HOST_ERROR: u8 = 126;
    /// The guest trapped (unreachable, out-of-bounds access, a table or instance limit...).
    pub const TRAP: u8 = 128;
    /// The guest used all its fuel.
    pub const OUT_OF_FUEL: u8 = 129;
    /// The guest ran past its timeout.
    pub const TIMEOUT: u8 = 130;
    /// The guest tried to use more memory than allowed.
    pub const MEMORY_LIMIT: u8 = 131;
    /// The guest exhausted its stack.
    pub const STACK_OVERFLOW: u8 = 132;
}

/// Run a module: call an export with `--invoke`, or run it as a WASI command.
///
/// Exit status: the guest's exit code (0-125) for a command, 0 for a completed call,
/// 126 for a host error (bad module, options or arguments), 128 for a trap, 129 out of fuel,
/// 130 timeout, 131 memory limit, 132 stack overflow.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The module to run: a `.wasm` binary or `.wat` text file.
    module: PathBuf,

    /// Guest arguments for a command, or the typed values for `--invoke` (read according
    /// to the export's parameter types). Options may come before or after them; put `--`
    /// before guest arguments that start with `-`.
    #[arg(allow_negative_numbers = true, value_name = "ARGS")]
    args: Vec<String>,

    /// Call this export with the values given as ARGS and print its results, one per line,
    /// instead of running `_start` as a WASI command.
    #[arg(long, value_name = "EXPORT")]
    invoke: Option<String>,

    /// Fuel for the execution (about one unit per instruction), or `none` for unmetered.
    #[arg(long, value_name = "N", default_value = "1000000000", value_parser = parse_fuel)]
    fuel: Fuel,

    /// The most linear memory the guest may use, e.g. `64MiB`.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    memory: u64,

    /// Wall-clock time the execution may take, e.g. `500ms`, `2s`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    /// The most stdout and the most stderr kept, each, e.g. `1MiB`; the rest is dropped and
    /// the report says so.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    max_output: u64,

    /// The most wasm stack the guest may use, e.g. `512KiB`.
    #[arg(long, value_name = "SIZE", default_value = "512KiB", value_parser = parse_size)]
    stack: u64,

    /// Write the execution report as JSON to this file, or `-` for stderr.
    #[arg(long, value_name = "PATH")]
    report: Option<String>,

    /// Keep compiled native code here so the next run of the same module skips compiling.
    /// Default: `$WASMCAGE_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmcage`, else
    /// `~/.cache/wasmcage`.
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,

    /// Compile the module afresh and keep nothing on disk.
    #[arg(long)]
    no_cache: bool,
}

/// The cache directory to use, if any.
fn cache_dir(args: &RunArgs) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    if let Some(dir) = &args.cache_dir {
        return Some(dir.clone());
    }
    let env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("WASMCAGE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("wasmcage")))
        .or_else(|| env("HOME").map(|d| d.join(".cache/wasmcage")))
}

pub fn main(args: RunArgs) -> ExitCode {
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmcage: error: {e:#}");
            ExitCode::from(status::HOST_ERROR)
        }
    }
}

fn run(args: &RunArgs) -> Result<ExitCode> {
    let config = EngineConfig {
        max_wasm_stack: usize::try_from(args.stack).context("--stack is too large")?,
        // One execution needs few instance slots; a small pool reserves little address space.
        pooling: Some(PoolingConfig {
            total_instances: 4,
            ..PoolingConfig::default()
        }),
        cache: CacheConfig {
            dir: cache_dir(args),
            ..CacheConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = match Engine::new(config.clone()) {
        Ok(engine) => engine,
        // An unusable cache directory costs speed, not correctness: run without it.
        Err(e) if config.cache.dir.is_some() => {
            eprintln!("wasmcage: warning: {e}; running without the on-disk cache");
            Engine::new(EngineConfig {
                cache: CacheConfig::default(),
                ..config
            })?
        }
        Err(e) => return Err(e.into()),
    };
    let module = engine.compile_file(&args.module)?;
    let limits = Limits {
        memory_bytes: args.memory,
        fuel: args.fuel.0,
        timeout: args.timeout,
        max_stdout_bytes: args.max_output,
        max_stderr_bytes: args.max_output,
        ..Limits::default()
    };
    let sandbox = Sandbox::builder(&engine).limits(limits).build()?;

    let report = match &args.invoke {
        Some(export) => {
            let values = typed_values(&module, export, &args.args)?;
            let out = sandbox.call(&module, export, &values)?;
            let mut stdout = std::io::stdout().lock();
            for value in &out.results {
                writeln!(stdout, "{value}")?;
            }
            out.report
        }
        None => {
            let stdin = read_stdin()?;
            let out = sandbox.run_command(
                &module,
                CommandInput {
                    args: args.args.clone(),
                    stdin,
                },
            )?;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            out.report
        }
    };
    write_report(args.report.as_deref(), &report)?;
    Ok(conclude(&report, args))
}

/// Reads the values for `--invoke` according to the export's parameter types.
fn typed_values(module: &wasmcage::Module, export: &str, texts: &[String]) -> Result<Vec<Value>> {
    let Some(info) = module.exports().into_iter().find(|e| e.name == export) else {
        // Let the sandbox produce its error, which lists the exports that do exist.
        return Ok(Vec::new());
    };
    let Some(params) = info.params else {
        return Ok(Vec::new());
    };
    if params.len() != texts.len() {
        let types: Vec<String> = params.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "export `{export}` takes {} value(s) ({}) but {} were given",
            params.len(),
            types.join(", "),
            texts.len()
        );
    }
    params
        .iter()
        .zip(texts)
        .map(|(ty, text)| Value::parse(text, *ty).map_err(Into::into))
        .collect()
}

/// The guest's stdin: ours when it is redirected, nothing when it is a terminal (so that a
/// guest never waits on a person who does not know it is reading).
fn read_stdin() -> Result<Vec<u8>> {
    let mut stdin = std::io::stdin();
    let mut bytes = Vec::new();
    if !stdin.is_terminal() {
        stdin.read_to_end(&mut bytes).context("cannot read stdin")?;
    }
    Ok(bytes)
}

fn write_report(target: Option<&str>, report: &ExecutionReport) -> Result<()> {
    let json = report.to_json();
    match target {
        None => Ok(()),
        Some("-") => {
            eprintln!("{json}");
            Ok(())
        }
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the report to {path}")),
    }
}

/// Prints a one-line explanation of any failure and picks the exit status.
fn conclude(report: &ExecutionReport, args: &RunArgs) -> ExitCode {
    let say = |status: u8, what: String| {
        eprintln!("wasmcage: {what}");
        ExitCode::from(status)
    };
    if report.stdout_truncated || report.stderr_truncated {
        eprintln!(
            "wasmcage: output was cut at {} bytes per stream; raise --max-output to keep more",
            args.max_output
        );
    }
    match report.outcome {
        Outcome::Completed => ExitCode::from(report.exit_code.unwrap_or(0).clamp(0, 255) as u8),
        Outcome::Exited(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Outcome::OutOfFuel => say(
            status::OUT_OF_FUEL,
            format!(
                "the guest ran out of fuel after {} units; raise --fuel to allow more",
                report.fuel_consumed.unwrap_or(0)
            ),
        ),
        Outcome::Timeout => say(
            status::TIMEOUT,
            format!(
                "the guest ran past its timeout of {:?}; raise --timeout to allow more",
                args.timeout
            ),
        ),
        Outcome::MemoryLimit => say(
            status::MEMORY_LIMIT,
            format!(
                "the guest tried to use more than {} bytes of memory; raise --memory to allow more",
                args.memory
            ),
        ),
        Outcome::StackOverflow => say(
            status::STACK_OVERFLOW,
            format!(
                "the guest exhausted its {}-byte stack; raise --stack to allow deeper recursion",
                args.stack
            ),
        ),
        Outcome::Trap(kind) => say(
            status::TRAP,
            format!(
                "the guest trapped ({kind}): {}",
                report
                    .message
                    .as_deref()
                    .unwrap_or("no details")
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
        ),
    }
}
