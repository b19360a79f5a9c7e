//! The monitoring HTTP server: `/metrics` in the Prometheus text format, the performance
//! report, and the health probes `/livez`, `/readyz` and `/healthz`. [`router`] gives the
//! routes alone, so that a bigger service can mount them on its own listener;
//! [`MonitoringServer`] serves them on an address of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// What the monitoring endpoints serve.
#[derive(Clone, Default)]
pub struct Monitoring {
    /// Serves `/metrics` when set.
    #[cfg(feature = "metrics")]
    pub metrics: Option<Arc<wasmcage_metrics::Metrics>>,
    /// Answers `/readyz` and `/healthz` from this monitor when set (`/livez` always answers).
    #[cfg(feature = "health")]
    pub health: Option<Arc<wasmcage_health::HealthMonitor>>,
}

impl std::fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitoring").finish_non_exhaustive()
    }
}

/// The monitoring routes, to serve alone or to merge into another router.
pub fn router(monitoring: Monitoring) -> Router {
    let monitoring = Arc::new(monitoring);
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/performance", get(performance))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(healthz))
        .with_state(monitoring)
}

/// Liveness needs nothing but a process that answers.
async fn livez() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
}

async fn readyz(axum::extract::State(m): State) -> axum::response::Response {
    #[cfg(feature = "health")]
    if let Some(monitor) = &m.health {
        return probe(wasmcage_health::readyz(monitor));
    }
    let _ = m;
    // Without health checks there is nothing that could make the process unready.
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

async fn healthz(axum::extract::State(m): State) -> axum::response::Response {
    #[cfg(feature = "health")]
    if let Some(monitor) = &m.health {
        return probe(wasmcage_health::healthz(monitor));
    }
    let _ = m;
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "health checks are not enabled\n",
    )
        .into_response()
}

#[cfg(feature = "health")]
fn probe(p: wasmcage_health::ProbeResponse) -> axum::response::Response {
    let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, p.content_type)], p.body).into_response()
}

type State = axum::extract::State<Arc<Monitoring>>;

async fn metrics(axum::extract::State(m): State) -> impl IntoResponse {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &m.metrics {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics.content_type())],
            metrics.render(),
        );
    }
    let _ = m;
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "metrics are not enabled\n".to_owned(),
    )
}

async fn performance(axum::extract::State(m): State) -> impl IntoResponse {
    #[cfg(feature = "metrics")]
    if let Some(metrics) = &m.metrics {
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            metrics.monitor().report_json(),
        );
    }
    let _ = m;
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "metrics are not enabled\n".to_owned(),
    )
}

/// The default monitoring address: loopback only, Prometheus's conventional port.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// A running monitoring server. Dropping it stops the server.
#[derive(Debug)]
pub struct MonitoringServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MonitoringServer {
    /// Binds `addr` (port 0 picks a free port) and serves the monitoring routes on the
    /// current tokio runtime.
    pub async fn start(addr: SocketAddr, monitoring: Monitoring) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(monitoring);
        tokio::spawn(async move {
            // Serving ends only when asked to; an accept error on one connection is
            // handled inside axum and does not end the server.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(MonitoringServer {
            addr,
            stop: Some(stop),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MonitoringServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
