//! `wasmcage exec`: run code in a language runtime (Python, JavaScript, or an installed
//! interpreter of your own), one fresh interpreter per execution.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wasmcage::runtime::{Registry, Runtime, guest_args};
use wasmcage::{CommandInput, ExecutionType, Sandbox, Stdin};

use crate::run::{SandboxOpts, conclude, effective_policy, guest_stdin, status, write_report};

/// Run code in a language runtime: `wasmcage exec python -c 'print(1+1)'`,
/// `wasmcage exec javascript -c 'console.log(1+1)'`, `wasmcage exec python script.py ARGS`,
/// or code on stdin with `-`.
///
/// The runtime's default limits (in its manifest) apply unless --fuel, --memory or
/// --timeout say otherwise; a profile or policy file gives the grants. Exit status as for
/// `run`: the code's exit status (0-125), 126 for a host error (an unknown runtime, bad
/// options), 128 trap, 129 out of fuel, 130 timeout, 131 memory limit, 132 stack overflow.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The runtime (see `wasmcage runtime list`), then `-c CODE`, `FILE [ARGS]...` or `-`
    /// (code on stdin). Everything after the runtime belongs to the code, as with `run`.
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "RUNTIME -c CODE | FILE [ARGS]... | -"
    )]
    command: Vec<String>,

    /// Where runtimes are installed. Default: $WASMCAGE_DATA_DIR, else
    /// $XDG_DATA_HOME/wasmcage, else ~/.local/share/wasmcage.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// The sandbox: its policy, limits, output, cache.
    #[command(flatten)]
    opts: SandboxOpts,
}

/// What to run.
enum Source {
    /// `-c CODE` (or `-e CODE`) and the code's arguments.
    Code(String, Vec<String>),
    /// A script file on the host and its arguments.
    File(PathBuf, Vec<String>),
    /// The code on stdin, then its arguments.
    Stdin(Vec<String>),
}

fn source(words: &[String]) -> Result<Source> {
    let mut words = words.iter();
    let first = words
        .next()
        .context("no code given: use -c CODE, a script FILE, or - for stdin")?;
    let mut rest: Vec<String> = words.cloned().collect();
    match first.as_str() {
        "-c" | "-e" => {
            if rest.is_empty() {
                bail!("{first} needs the code to run");
            }
            let code = rest.remove(0);
            Ok(Source::Code(code, rest))
        }
        "-" => Ok(Source::Stdin(rest)),
        "--" => source(&rest),
        file => Ok(Source::File(PathBuf::from(file), rest)),
    }
}

pub fn main(args: ExecArgs) -> ExitCode {
    match exec(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wasmcage: error: {e:#}");
            ExitCode::from(status::HOST_ERROR)
        }
    }
}

fn exec(args: &ExecArgs) -> Result<ExitCode> {
    let name = &args.command[0];
    let source = source(&args.command[1..])?;
    let data_dir = args
        .data_dir
        .clone()
        .or_else(wasmcage::runtime::default_data_dir)
        .context("no data directory: give --data-dir or set WASMCAGE_DATA_DIR")?;
    let installed = Registry::new(&data_dir).get(name)?;
    let opts = &args.opts;
    let engine = crate::run::engine(opts)?;
    let runtime = Runtime::load(&engine, installed)?;

    // Grants from the profile and policy file; limits: flags, else the runtime's defaults.
    let mut policy = effective_policy(opts.profile, opts.policy.as_deref(), Some(opts))?;
    let defaults = runtime.limits(&policy.limits);
    if opts.fuel.is_none() {
        policy.limits.fuel = defaults.fuel;
    }
    if opts.memory.is_none() {
        policy.limits.memory_bytes = defaults.memory_bytes;
    }
    if opts.timeout.is_none() {
        policy.limits.timeout = defaults.timeout;
    }
    let manifest = &runtime.installed().manifest;
    // A script is copied alone into a directory the guest sees read-only at /app, so that
    // the code reaches its script and nothing beside it.
    let mut script_dir = None;
    let (argv, stdin) = match source {
        Source::Code(code, rest) => {
            let mut argv = manifest.argv_for_code(&code)?;
            argv.extend(rest);
            (argv, Stdin::default())
        }
        Source::File(path, rest) => {
            let text = std::fs::read(&path)
                .with_context(|| format!("cannot read the script {}", path.display()))?;
            let file_name = path
                .file_name()
                .context("the script path names no file")?
                .to_string_lossy()
                .into_owned();
            let dir = tempfile::Builder::new()
                .prefix("wasmcage-script-")
                .tempdir()
                .context("cannot make a directory for the script")?;
            std::fs::write(dir.path().join(&file_name), text)?;
            policy.dirs.push(wasmcage::core::DirGrant {
                host: dir.path().canonicalize()?,
                guest: "/app".into(),
                access: wasmcage::core::Access::ReadOnly,
            });
            script_dir = Some(dir);
            let argv = manifest.argv_for_file(&format!("/app/{file_name}"), &rest)?;
            (argv, Stdin::default())
        }
        Source::Stdin(rest) => (manifest.argv_for_stdin(&rest)?, guest_stdin(opts.max_stdin)),
    };
    let policy = runtime.policy(&policy, false)?;
    let sandbox = Sandbox::builder(&engine).policy(policy).build()?;
    let out = sandbox.run_command(
        runtime.module(),
        CommandInput {
            args: guest_args(Ok(argv))?,
            stdin,
            runtime: Some(runtime.tag(ExecutionType::Oneshot)),
        },
    )?;
    drop(script_dir);
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    write_report(opts.report.as_deref(), &out.report)?;
    Ok(conclude(&out.report, opts, sandbox.limits()))
}
