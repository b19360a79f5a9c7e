//! `wasmcage serve`: the HTTP service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use wasmcage_server::{Server, ServerConfig, shutdown_signal};

use crate::run::status;

/// Serve the HTTP API (`/v1`), `/metrics` and the health probes on one listener. Every value
/// has a default: with no arguments it listens on 127.0.0.1:8000 with the standard profile.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A configuration file (TOML); see `--print-config` for its keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Listen here instead of the configured address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

pub fn main(args: ServeArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("wasmcage: error: {e}");
        ExitCode::from(status::HOST_ERROR)
    };
    let mut config = match ServerConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    // Logs (and spans, when an OTLP endpoint is set) for the whole process: the access log,
    // executions, security events, health transitions and alert deliveries.
    let logs = match wasmcage::tracing::init(&config.tracing.with_logging(&config.logging)) {
        Ok(guard) => std::sync::Arc::new(guard),
        Err(e) => return fail(&e),
    };
    // Uploads compile in a child process of this binary, under the configured budget.
    config.compile_worker = crate::compile_worker(config.compile_timeout, config.compile_memory);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    runtime.block_on(async {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        // SIGHUP re-reads the configuration; the log filter is the process's to change.
        let filter = logs.clone();
        let server = server.on_reload(move |fresh| {
            match filter.set_filter(&fresh.logging.level) {
                // At warn, so that the line survives the level it announces.
                Ok(()) => tracing::warn!(target: "wasmcage::server", level = %fresh.logging.level, "log filter set"),
                Err(e) => tracing::error!(target: "wasmcage::server", error = %e, "the log level was not changed"),
            }
        });
        // The address on stderr as a plain line, whatever the log format: scripts wait for it.
        eprintln!("wasmcage: serving on http://{}", server.local_addr());
        match server.serve(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        }
    })
}
