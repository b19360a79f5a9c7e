//! [`Wasmcage`]: every layer composed through its traits, with the monitoring endpoints and
//! the alert engine started. The one place that knows all the layers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use wasmcage_core::{Engine, EngineConfig, Module, PoolConfig, Sandbox, WarmPool};
use wasmcage_events::{FanOut, Observer};
use wasmcage_health::{HealthConfig, HealthMonitor, MonitorTask, ProcessMemoryCheck};
use wasmcage_metrics::{Metrics, MetricsConfig};
use wasmcage_tracing::{LogFormat, OtlpConfig, TracingConfig, TracingGuard, TracingObserver};

use crate::alerting::{self, Alerting};
use crate::health_checks::CanaryCheck;
use crate::monitoring::{Monitoring, MonitoringServer};
use crate::{Error, Policy};

/// What to watch the sandbox with.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    /// Where `/metrics` is served (default `127.0.0.1:9090`); `None` serves no metrics endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// Where `/livez`, `/readyz` and `/healthz` are served (default `127.0.0.1:8080`). `None`,
    /// or the same address as `metrics_addr`, serves them on the metrics listener.
    pub health_addr: Option<SocketAddr>,
    /// Install a global log subscriber in this format; `None` (the default) installs none.
    pub log_format: Option<LogFormat>,
    /// Export spans to this OTLP/HTTP endpoint (needs `log_format`).
    pub otlp_endpoint: Option<String>,
    /// Evaluate the alert rules in this TOML file.
    pub alert_rules: Option<PathBuf>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            metrics_addr: Some(crate::monitoring::DEFAULT_ADDR),
            health_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            log_format: None,
            otlp_endpoint: None,
            alert_rules: None,
        }
    }
}

/// Why [`WasmcageBuilder::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The engine, the policy or the canary could not be set up.
    #[error(transparent)]
    Core(#[from] Error),
    /// The metrics registry refused a family.
    #[error(transparent)]
    Metrics(#[from] wasmcage_metrics::MetricsError),
    /// Logging or trace export could not be installed.
    #[error(transparent)]
    Tracing(#[from] wasmcage_tracing::TracingError),
    /// The alert rules are invalid.
    #[error(transparent)]
    Alert(#[from] wasmcage_alert::AlertError),
    /// A monitoring endpoint could not listen.
    #[error("cannot serve monitoring on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds a [`Wasmcage`].
#[derive(Clone, Default)]
pub struct WasmcageBuilder {
    engine: EngineConfig,
    policy: Policy,
    pool: PoolConfig,
    monitoring: MonitoringConfig,
    health: HealthConfig,
    memory_limit: Option<u64>,
    checks: Vec<Arc<dyn wasmcage_health::HealthCheck>>,
    alerts: Option<wasmcage_alert::AlertConfig>,
}

impl std::fmt::Debug for WasmcageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmcageBuilder")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .field("monitoring", &self.monitoring)
            .field("health", &self.health)
            .field("memory_limit", &self.memory_limit)
            .field(
                "checks",
                &self.checks.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl WasmcageBuilder {
    /// The engine's configuration.
    pub fn engine(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// The capability policy every execution runs under.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How warm pools made by [`Wasmcage::pool`] are sized.
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// What to watch with.
    pub fn monitoring(mut self, monitoring: MonitoringConfig) -> Self {
        self.monitoring = monitoring;
        self
    }

    /// How often and how patiently the health checks run.
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// The resident memory past which the `memory` health check fails (default 16 GiB).
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Another health check for the monitor, beside the canary and the memory check (for
    /// example a [`wasmcage_health::DirectoryCheck`] on a data directory).
    pub fn health_check(mut self, check: Arc<dyn wasmcage_health::HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Alert rules and channels already loaded and validated (see [`crate::alerting::load`]);
    /// they take the place of [`MonitoringConfig::alert_rules`].
    pub fn alerts(mut self, alerts: wasmcage_alert::AlertConfig) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Composes the layers and starts the endpoints, the health monitor and the alert engine
    /// on the current tokio runtime.
    pub async fn start(self) -> Result<Wasmcage, StartError> {
        let m = &self.monitoring;
        let tracing = match m.log_format {
            None => None,
            Some(format) => Some(wasmcage_tracing::init(&TracingConfig {
                format,
                otlp: m.otlp_endpoint.clone().map(OtlpConfig::new),
                ..TracingConfig::default()
            })?),
        };
        let metrics = Arc::new(Metrics::new(MetricsConfig::default())?);
        let observers: Arc<dyn Observer> = Arc::new(FanOut::new(vec![
            metrics.clone(),
            Arc::new(TracingObserver::new()),
        ]));
        let engine = Engine::with_observer(self.engine, observers.clone())?;
        let sandbox = Sandbox::builder(&engine).policy(self.policy).build()?;

        let health = Arc::new(HealthMonitor::with_observer(self.health, observers));
        health.register(Arc::new(CanaryCheck::new(
            &engine,
            PoolConfig {
                min_ready: 1,
                max_in_use: 2,
                ..PoolConfig::default()
            },
        )?));
        health.register(Arc::new(ProcessMemoryCheck::new(
            self.memory_limit.unwrap_or(16 << 30),
            false,
        )));
        for check in self.checks {
            health.register(check);
        }
        health.run_once().await;
        let health_task = health.clone().spawn();

        let rules = match (self.alerts, &m.alert_rules) {
            (Some(rules), _) => Some(rules),
            (None, Some(path)) => Some(alerting::load(path)?),
            (None, None) => None,
        };
        let alerting = match rules {
            None => None,
            Some(rules) => Some(Alerting::start(
                rules,
                metrics.clone(),
                Some(alerting::health_failures(health.clone())),
            )?),
        };

        let mut servers = Vec::new();
        let both = Monitoring {
            metrics: Some(metrics.clone()),
            health: Some(health.clone()),
        };
        let listen = |addr: SocketAddr, monitoring: Monitoring| async move {
            MonitoringServer::start(addr, monitoring)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        match (m.metrics_addr, m.health_addr) {
            (None, None) => {}
            (Some(a), None) => servers.push(listen(a, both).await?),
            (Some(a), Some(b)) if a == b => servers.push(listen(a, both).await?),
            (None, Some(b)) => servers.push(
                listen(
                    b,
                    Monitoring {
                        metrics: None,
                        ..both
                    },
                )
                .await?,
            ),
            (Some(a), Some(b)) => {
                servers.push(
                    listen(
                        a,
                        Monitoring {
                            health: None,
                            ..both.clone()
                        },
                    )
                    .await?,
                );
                servers.push(
                    listen(
                        b,
                        Monitoring {
                            metrics: None,
                            ..both
                        },
                    )
                    .await?,
                );
            }
        }
        Ok(Wasmcage {
            engine,
            sandbox,
            pool: self.pool,
            metrics,
            health,
            _health_task: health_task,
            servers,
            alerting,
            _tracing: tracing,
        })
    }
}

/// A running sandbox with metrics, tracing, health checks and alerting composed. Dropping it
/// stops the endpoints, the health monitor and the alert engine.
pub struct Wasmcage {
    engine: Engine,
    sandbox: Sandbox,
    pool: PoolConfig,
    metrics: Arc<Metrics>,
    health: Arc<HealthMonitor>,
    _health_task: MonitorTask,
    servers: Vec<MonitoringServer>,
    alerting: Option<Alerting>,
    _tracing: Option<TracingGuard>,
}

impl std::fmt::Debug for Wasmcage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wasmcage")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Wasmcage {
    /// Starts building.
    pub fn builder() -> WasmcageBuilder {
        WasmcageBuilder::default()
    }

    /// Compiles a module (cached by content hash).
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Module, Error> {
        self.engine.compile(name, bytes)
    }

    /// The sandbox: the configured policy and limits, a fresh instance per execution.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// A warm pool of `module` under the configured policy and pool sizes.
    pub fn pool(&self, module: &Module) -> Result<WarmPool, Error> {
        WarmPool::new(&self.sandbox, module, self.pool.clone())
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The health monitor.
    pub fn health(&self) -> &Arc<HealthMonitor> {
        &self.health
    }

    /// The alert engine, when rules were configured.
    pub fn alerting(&self) -> Option<&Alerting> {
        self.alerting.as_ref()
    }

    /// The addresses the monitoring endpoints listen on.
    pub fn monitoring_addrs(&self) -> Vec<SocketAddr> {
        self.servers
            .iter()
            .map(MonitoringServer::local_addr)
            .collect()
    }
}
