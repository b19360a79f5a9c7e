//! The wasmcage HTTP service: upload modules, invoke their exports and run them as WASI
//! commands over a versioned JSON API (`/v1`), with `/metrics` and the health probes on the
//! same listener.
//!
//! Every request runs in a fresh sandbox under the server's profile and limits no request can
//! raise; a guest that traps is a `200` with the classified outcome in its report, and every
//! bad request is a `4xx` with a JSON body that says what was wrong.

mod api;
mod config;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{RateLimit, ServerConfig};

/// An error starting or configuring the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The service would be reachable beyond loopback without any API key.
    #[error(
        "refusing to listen on {0} without API keys: configure api_keys (or WASMCAGE_API_KEYS), or listen on a loopback address"
    )]
    Unprotected(SocketAddr),
    /// The engine or a directory could not be set up.
    #[error("cannot start: {0}")]
    Start(String),
    /// The listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A service bound to its address, ready to serve.
pub struct Server {
    listener: tokio::net::TcpListener,
    app: axum::Router,
    state: Arc<api::State>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the configuration, builds the engine, store and observers, and binds.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        if config.api_keys.is_empty() && !config.listen.ip().is_loopback() {
            return Err(ServerError::Unprotected(config.listen));
        }
        let state = Arc::new(api::State::new(config.clone())?);
        let app = api::router(state.clone());
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        Ok(Server {
            listener,
            app,
            state,
        })
    }

    /// The address the service listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting and lets in-flight requests
    /// (and their executions) finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let monitor = self.state.health.clone().spawn();
        let result = axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await;
        monitor.stop().await;
        result
    }
}

/// Completes on SIGTERM or Ctrl-C: the signal for a graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
