//! The wasmcage HTTP service: upload modules, invoke their exports and run them as WASI
//! commands over a versioned JSON API (`/v1`), with `/metrics` and the health probes on the
//! same listener.
//!
//! Every request runs in a fresh sandbox under the server's profile and limits no request can
//! raise; a guest that traps is a `200` with the classified outcome in its report, and every
//! bad request is a `4xx` with a JSON body that says what was wrong.

mod api;
mod config;
pub mod mcp;
pub mod openapi;
pub mod replica;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    Admission, AuthThrottle, Health, Logging, Mcp, McpLimits, MemoryLimit, PoolSize, Pools, Quota,
    RateLimit, ServerConfig, Tracing,
};

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
    on_reload: Option<Arc<ReloadHook>>,
}

/// Told of each configuration `SIGHUP` re-read, for what lives outside the server (the
/// process's log filter).
pub type ReloadHook = Box<dyn Fn(&ServerConfig) + Send + Sync>;

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the configuration, builds the engine, store and observers, and binds.
    ///
    /// Modules stored by an earlier run are listed (what does not belong is quarantined) but
    /// not compiled here: a background task verifies and compiles them while the server
    /// already answers, and a request for one still compiling is a 503 `module_compiling`.
    /// Must be called within a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        if config.api_keys.is_empty() && !config.listen.ip().is_loopback() {
            return Err(ServerError::Unprotected(config.listen));
        }
        let state = Arc::new(api::State::new(config.clone()).await?);
        let app = api::router(state.clone());
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
        tokio::spawn(state.reload());
        tokio::spawn(api::load_runtimes(state.clone()));
        Ok(Server {
            listener,
            app,
            state,
            on_reload: None,
        })
    }

    /// Calls `hook` with each configuration a `SIGHUP` re-read and accepted (after the server
    /// applied its own part: the rate limit and the alert rules).
    pub fn on_reload(mut self, hook: impl Fn(&ServerConfig) + Send + Sync + 'static) -> Self {
        self.on_reload = Some(Arc::new(Box::new(hook)));
        self
    }

    /// Re-reads the configuration file (`SIGHUP`) on a blocking thread, never on the task
    /// that accepts connections (a file on a hung file system, or a FIFO, would stop the
    /// server from accepting); a file that no longer loads is refused with the reason in the
    /// log and nothing changes.
    fn reload(&self) {
        let (state, hook) = (self.state.clone(), self.on_reload.clone());
        tokio::task::spawn_blocking(move || reload(&state, hook.as_deref()));
    }

    /// The address the service listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then drains: requests in flight (and their
    /// executions) may finish for at most `shutdown_timeout`, and returns. While it drains the
    /// listener stays open, so that a load balancer's probe sees `/readyz` answer 503
    /// `draining`; a new `/v1` request is answered 503 `shutting_down`, and each new
    /// connection carries one request only.
    ///
    /// Each connection is served by hyper directly (not `axum::serve`) so that a client must
    /// send its request headers within `header_read_timeout` (which also bounds an idle
    /// kept-alive connection), and so that shutdown has a deadline.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let config = &self.state.config;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .keep_alive(true);
        let (closing, close) = tokio::sync::watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut hangup = async || {
            #[cfg(unix)]
            if let Some(h) = hangup.as_mut() {
                return h.recv().await;
            }
            std::future::pending::<Option<()>>().await
        };
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(()) = hangup() => self.reload(),
                // Reap finished connections so that the set stays as large as what is open.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(a) => a,
                        Err(_) => {
                            // Out of file descriptors or a connection reset before accept:
                            // pause briefly instead of spinning, then keep serving.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let connection = http.serve_connection(
                        hyper_util::rt::TokioIo::new(stream),
                        service(&self.app, remote),
                    );
                    let mut close = close.clone();
                    connections.spawn(async move {
                        let mut connection = std::pin::pin!(connection);
                        tokio::select! {
                            _ = connection.as_mut() => {}
                            _ = close.changed() => {
                                // Finish the request in flight, if any, then close.
                                connection.as_mut().graceful_shutdown();
                                let _ = connection.await;
                            }
                        }
                    });
                }
            }
        }
        self.state
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = closing.send(true);
        // Connections made while draining: one request each (probes, or a 503), never
        // waited for.
        let mut late = tokio::task::JoinSet::new();
        http.keep_alive(false);
        let deadline = tokio::time::sleep(config.shutdown_timeout);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    // Past the deadline: whatever is still open is dropped, its handlers
                    // with it.
                    connections.abort_all();
                    break;
                }
                joined = connections.join_next() => {
                    if joined.is_none() {
                        break;
                    }
                }
                Some(_) = late.join_next(), if !late.is_empty() => {}
                accepted = self.listener.accept() => {
                    if let Ok((stream, remote)) = accepted {
                        late.spawn(http.serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            service(&self.app, remote),
                        ));
                    }
                }
            }
        }
        drop(self.listener);
        late.abort_all();
        Ok(())
    }
}

/// The router as a hyper service for one connection from `remote`.
fn service(
    app: &axum::Router,
    remote: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
             + Send
             + 'static,
> + Clone
+ Send
+ 'static {
    let app = app.clone();
    hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(remote));
        tower_service::Service::call(&mut app.clone(), request.map(axum::body::Body::new))
    })
}

/// The body of [`Server::reload`], on a blocking thread.
fn reload(state: &api::State, hook: Option<&ReloadHook>) {
    let Some(source) = &state.config.source else {
        state.apply_reload(&state.config);
        return;
    };
    match ServerConfig::load(Some(source)) {
        Ok(fresh) => {
            state.apply_reload(&fresh);
            if let Some(hook) = hook {
                hook(&fresh);
            }
        }
        Err(e) => tracing::error!(
            target: "wasmcage::server",
            path = %source.display(),
            error = %e,
            "configuration not reloaded; the one in force stays"
        ),
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
