//! `wasmcage run`: one module, one execution, one report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmcage::core::DirGrant;
use wasmcage::core::{CacheConfig, PoolingConfig};
use wasmcage::{
    CommandInput, Engine, EngineConfig, ExecutionReport, Outcome, Policy, Profile, Sandbox, Stdin,
    StreamedStdin, Value,
};

use crate::units::{Fuel, parse_duration, parse_fuel, parse_size};

fn parse_profile(text: &str) -> Result<Profile, String> {
    text.parse()
}

fn parse_dir(text: &str) -> Result<DirGrant, String> {
    text.parse()
}

fn parse_on_memory_limit(text: &str) -> Result<wasmcage::core::OnMemoryLimit, String> {
    text.parse()
}

/// A disk limit, or `None` for no limit; a newtype for the same reason as [`Fuel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk(Option<u64>);

fn parse_disk(text: &str) -> Result<Disk, String> {
    match text.trim() {
        "none" | "unlimited" => Ok(Disk(None)),
        size => parse_size(size).map(|s| Disk(Some(s))),
    }
}

/// The effective policy: the profile, then the policy file, then the flags.
pub(crate) fn effective_policy(
    profile: Option<Profile>,
    file: Option<&std::path::Path>,
    args: Option<&SandboxOpts>,
) -> Result<Policy> {
    let base = profile.map(Policy::profile).unwrap_or_default();
    let base = match file {
        Some(path) => Policy::load_over(base, path)?,
        None => base,
    };
    let Some(args) = args else {
        return Ok(base);
    };
    let mut limits = base.limits.clone();
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel.0;
    }
    if let Some(memory) = args.memory {
        limits.memory_bytes = memory;
    }
    if let Some(timeout) = args.timeout {
        limits.timeout = timeout;
    }
    if let Some(max) = args.max_output {
        limits.max_stdout_bytes = max;
        limits.max_stderr_bytes = max;
    }
    if let Some(disk) = args.disk {
        limits.disk_bytes = disk.0;
    }
    if let Some(action) = args.on_memory_limit {
        limits.on_memory_limit = action;
    }
    let mut builder = base.to_builder().limits(limits);
    for dir in &args.dirs {
        let host = dir
            .host
            .canonicalize()
            .with_context(|| format!("--dir {}: cannot open it", dir.host.display()))?;
        builder = builder.dir(host, dir.guest.clone(), dir.access);
    }
    for env in &args.envs {
        builder = match env.split_once('=') {
            Some((key, value)) => builder.env(key, value),
            None => builder.inherit_env(env.clone()),
        };
    }
    for rule in &args.allow_net {
        builder = builder.allow_net(rule);
    }
    Ok(builder.build()?)
}

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
    /// The module to run (a `.wasm` binary or `.wat` text file), then the guest's
    /// arguments for a command, or the typed values for `--invoke` (read according to the
    /// export's parameter types).
    ///
    /// Everything after the module belongs to the guest, options included, as with
    /// `wasmtime run`: `wasmcage run prog.wasm --dir /` hands `--dir /` to the guest and
    /// grants nothing. wasmcage's own options go before the module. A `--` right after the
    /// module is dropped, so `wasmcage run prog.wasm -- --flag` still works.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "MODULE [ARGS]..."
    )]
    command: Vec<String>,

    /// Call this export with the values given as ARGS and print its results, one per line,
    /// instead of running `_start` as a WASI command.
    #[arg(long, value_name = "EXPORT")]
    invoke: Option<String>,

    /// The sandbox: its policy, limits, output, cache.
    #[command(flatten)]
    pub(crate) opts: SandboxOpts,
}

/// The options every command that runs a guest shares: the policy, the limits, the cache.
#[derive(Debug, clap::Args)]
pub struct SandboxOpts {
    /// Start from a named profile: `strict`, `standard` or `permissive` (see
    /// `docs/policy.md`). Without one, nothing is granted.
    #[arg(long, value_name = "NAME", value_parser = parse_profile)]
    pub(crate) profile: Option<Profile>,

    /// A policy file (TOML) applied on top of the profile.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,

    /// Grant a host directory: `<HOST>[::<GUEST>][:ro]` (read-write unless `:ro`; the guest
    /// path defaults to `/<name>`). Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = parse_dir)]
    dirs: Vec<DirGrant>,

    /// Set an environment variable (`K=V`), or pass a host variable through (`K`). Repeatable.
    #[arg(long = "env", value_name = "K=V")]
    envs: Vec<String>,

    /// Allow a network destination: `HOST:PORT` or a CIDR range. Repeatable.
    #[arg(long = "allow-net", value_name = "HOST:PORT|CIDR")]
    allow_net: Vec<String>,

    /// Fuel for the execution (about one unit per instruction), or `none` for unmetered.
    /// Default: the profile's or policy's, else 1000000000.
    #[arg(long, value_name = "N", value_parser = parse_fuel)]
    pub(crate) fuel: Option<Fuel>,

    /// The most linear memory the guest may use, e.g. `64MiB`. Default: the profile's or
    /// policy's, else 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) memory: Option<u64>,

    /// Wall-clock time the execution may take, e.g. `500ms`, `2s`. Default: the profile's
    /// or policy's, else 10s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,

    /// The most stdout and the most stderr kept, each, e.g. `1MiB`; the rest is dropped and
    /// the report says so. Default: the profile's or policy's, else 1MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_output: Option<u64>,

    /// The most wasm stack the guest may use, e.g. `512KiB`.
    #[arg(long, value_name = "SIZE", default_value = "512KiB", value_parser = parse_size)]
    pub(crate) stack: u64,

    /// What a guest asking for memory past `--memory` gets: `refuse` (`memory.grow` returns
    /// -1 and the guest carries on, as WebAssembly specifies) or `terminate` (stopped at
    /// once, status 131). Default: the profile's or policy's, else `refuse`.
    #[arg(long, value_name = "ACTION", value_parser = parse_on_memory_limit)]
    on_memory_limit: Option<wasmcage::core::OnMemoryLimit>,

    /// The most bytes the guest may write to files in granted and scratch directories,
    /// e.g. `64MiB`, or `none`; a write past it fails with `ENOSPC`. Default: the
    /// profile's or policy's, else 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_disk)]
    disk: Option<Disk>,

    /// The most stdin handed to the guest, e.g. `16MiB`. Stdin is streamed: read from the
    /// host only as the guest reads it, never held whole. Past this many bytes the guest
    /// sees end of file and wasmcage says on stderr that stdin was cut.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub(crate) max_stdin: u64,

    /// The longest compiling the module may take, e.g. `30s`; compiling runs in a child
    /// process that is stopped at this budget.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    compile_timeout: Duration,

    /// The most memory compiling the module may use, e.g. `2GiB`.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    compile_memory: u64,

    /// Write the execution report as JSON to this file, or `-` for stderr.
    #[arg(long, value_name = "PATH")]
    pub(crate) report: Option<String>,

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
fn cache_dir(args: &SandboxOpts) -> Option<PathBuf> {
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

impl RunArgs {
    /// The module's path: the first word of the command.
    fn module(&self) -> &std::path::Path {
        std::path::Path::new(&self.command[0])
    }

    /// The guest's arguments: everything after the module, less a leading `--`.
    fn guest_args(&self) -> &[String] {
        let rest = &self.command[1..];
        match rest.first() {
            Some(first) if first == "--" => &rest[1..],
            _ => rest,
        }
    }
}

/// The engine for one execution: few instance slots, the on-disk cache (or none, with a
/// warning, when it is unusable), compiling in a child under the budget.
pub(crate) fn engine(args: &SandboxOpts) -> Result<Engine> {
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
        // A cache hit loads without compiling; a miss compiles in a child under the budget.
        compile_worker: crate::compile_worker(args.compile_timeout, args.compile_memory),
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
    Ok(engine)
}

fn run(run_args: &RunArgs) -> Result<ExitCode> {
    let args = &run_args.opts;
    let engine = engine(args)?;
    let module = engine.compile_file(run_args.module())?;
    let policy = effective_policy(args.profile, args.policy.as_deref(), Some(args))?;
    let sandbox = Sandbox::builder(&engine).policy(policy).build()?;

    let report = match &run_args.invoke {
        Some(export) => {
            let values = typed_values(&module, export, run_args.guest_args())?;
            let out = sandbox.call(&module, export, &values)?;
            let mut stdout = std::io::stdout().lock();
            for value in &out.results {
                writeln!(stdout, "{value}")?;
            }
            out.report
        }
        None => {
            let stdin = guest_stdin(args.max_stdin);
            let out = sandbox.run_command(
                &module,
                CommandInput {
                    args: run_args.guest_args().to_vec(),
                    stdin: stdin.clone(),
                    runtime: None,
                },
            )?;
            std::io::stdout().write_all(&out.stdout)?;
            std::io::stderr().write_all(&out.stderr)?;
            if let Stdin::Streamed(stream) = &stdin
                && stream.truncated()
            {
                eprintln!(
                    "wasmcage: stdin was cut at {} bytes (the guest saw end of file there); raise --max-stdin to hand the guest more",
                    args.max_stdin
                );
            }
            out.report
        }
    };
    write_report(args.report.as_deref(), &report)?;
    Ok(conclude(&report, args, sandbox.limits()))
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

/// The guest's stdin: ours, streamed as the guest reads it, when it is redirected; nothing
/// when it is a terminal (so that a guest never waits on a person who does not know it is
/// reading).
pub(crate) fn guest_stdin(max: u64) -> Stdin {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        Stdin::default()
    } else {
        StreamedStdin::new(stdin, max).into()
    }
}

pub(crate) fn write_report(target: Option<&str>, report: &ExecutionReport) -> Result<()> {
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
pub(crate) fn conclude(
    report: &ExecutionReport,
    args: &SandboxOpts,
    limits: &wasmcage::Limits,
) -> ExitCode {
    let say = |status: u8, what: String| {
        eprintln!("wasmcage: {what}");
        ExitCode::from(status)
    };
    if report.stdout_truncated || report.stderr_truncated {
        eprintln!(
            "wasmcage: output was cut at {} bytes per stream; raise --max-output to keep more",
            limits.max_stdout_bytes
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
                limits.timeout
            ),
        ),
        Outcome::MemoryLimit => say(
            status::MEMORY_LIMIT,
            format!(
                "the guest tried to use more than {} bytes of memory; raise --memory to allow more",
                limits.memory_bytes
            ),
        ),
        Outcome::StackOverflow => say(
            status::STACK_OVERFLOW,
            format!(
                "the guest exhausted its {}-byte stack; raise --stack to allow deeper recursion",
                args.stack
            ),
        ),
        Outcome::Cancelled => say(
            status::TRAP,
            "the execution was cancelled before the guest finished".to_owned(),
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
