//! `wasmcage mcp`: the sandbox's tools for an LLM agent, over the Model Context Protocol on
//! stdin and stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use wasmcage_server::ServerConfig;

use crate::run::status;

/// Serve the sandbox to an agent over MCP on stdin and stdout: execute_python,
/// execute_javascript, run_wasm, create_session, execute_in_session, close_session and
/// list_modules. The service is the one `wasmcage serve` runs, from the same configuration
/// file, without listening anywhere; logs go to stderr. With `api_keys` configured, set
/// `WASMCAGE_API_KEY` to the key the agent acts as.
#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// A configuration file (TOML), as for `wasmcage serve`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

pub fn main(args: McpArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("wasmcage: error: {e}");
        ExitCode::from(status::HOST_ERROR)
    };
    let mut config = match ServerConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    // stdout carries the protocol: every log line goes to stderr.
    let _logs = match wasmcage::tracing::init(&config.tracing.with_logging(&config.logging)) {
        Ok(guard) => guard,
        Err(e) => return fail(&e),
    };
    config.compile_worker = crate::compile_worker(config.compile_timeout, config.compile_memory);
    let key = std::env::var("WASMCAGE_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let served = runtime.block_on(wasmcage_server::mcp::serve_stdio(config, key));
    // Interpreters and pools wind down with the runtime; do not wait for idle tasks.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
