//! The `wasmcage` command line.

use std::process::ExitCode;

use clap::Parser;

mod exec;
mod mcp;
mod policy_cmd;
mod run;
mod runtime_cmd;
mod serve;
mod units;

/// Run untrusted WebAssembly in a sandbox with enforced limits.
#[derive(Debug, Parser)]
#[command(name = "wasmcage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum Command {
    Run(run::RunArgs),
    Exec(exec::ExecArgs),
    Policy(policy_cmd::PolicyArgs),
    Serve(serve::ServeArgs),
    Mcp(mcp::McpArgs),
    Runtime(runtime_cmd::RuntimeArgs),
    /// Compiles one module from stdin to stdout under the given budget; the engine runs
    /// this in a child process (see `CompileWorker`). Not for people.
    #[command(hide = true)]
    CompileWorker {
        /// `fuel=0|1`, `memory=BYTES`, `cpu=SECONDS`.
        options: Vec<String>,
    },
}

/// The compile worker for this binary: itself, in its hidden `compile-worker` mode, under
/// `timeout` and `memory_bytes`. `None` when the binary cannot find itself.
pub(crate) fn compile_worker(
    timeout: std::time::Duration,
    memory_bytes: u64,
) -> Option<wasmcage::core::CompileWorker> {
    let program = std::env::current_exe().ok()?;
    Some(wasmcage::core::CompileWorker {
        timeout,
        memory_bytes,
        ..wasmcage::core::CompileWorker::new(program, vec!["compile-worker".into()])
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are successes; any other usage error is a host error, with
            // the same status as every other host error so it never looks like a guest's code.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(run::status::HOST_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Exec(args) => exec::main(args),
        Command::Policy(args) => policy_cmd::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Mcp(args) => mcp::main(args),
        Command::Runtime(args) => runtime_cmd::main(args),
        Command::CompileWorker { options } => {
            let served = wasmcage::core::WorkerOptions::parse(&options)
                .and_then(|o| wasmcage::core::serve_compile_worker(&o));
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wasmcage compile-worker: {e}");
                    ExitCode::from(run::status::HOST_ERROR)
                }
            }
        }
    }
}
