//! [`Wasmcage`]: every layer composed through its traits, with the monitoring endpoints and
//! the alert engine started. The one place that knows all the layers.
//!
//! Each layer is behind its cargo feature and the composition is additive: with a feature
//! off, its part (and its builder methods) is simply absent, and `Wasmcage` still composes
//! the rest (with every feature off, an engine and a sandbox under the policy).

#[cfg(feature = "monitoring")]
use std::net::SocketAddr;
#[cfg(feature = "alert")]
use std::path::PathBuf;
use std::sync::Arc;

use wasmcage_core::{Engine, EngineConfig, Module, PoolConfig, Sandbox, WarmPool};
use wasmcage_events::Observer;
#[cfg(feature = "health")]
use wasmcage_health::{HealthConfig, HealthMonitor, MonitorTask, ProcessMemoryCheck};
#[cfg(feature = "metrics")]
use wasmcage_metrics::{Metrics, MetricsConfig};
#[cfg(feature = "tracing")]
use wasmcage_tracing::{LogFormat, OtlpConfig, TracingConfig, TracingGuard, TracingObserver};

#[cfg(feature = "alert")]
use crate::alerting::{self, Alerting};
#[cfg(feature = "health")]
use crate::health_checks::CanaryCheck;
#[cfg(feature = "monitoring")]
use crate::monitoring::{Monitoring, MonitoringServer};
use crate::{Error, Policy};

/// What to watch the sandbox with.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    /// Where `/metrics` is served (default `127.0.0.1:9090`); `None` serves no metrics endpoint.
    #[cfg(feature = "monitoring")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where `/livez`, `/readyz` and `/healthz` are served (default `127.0.0.1:8080`). `None`,
    /// or the same address as `metrics_addr`, serves them on the metrics listener.
    #[cfg(feature = "monitoring")]
    pub health_addr: Option<SocketAddr>,
    /// Install a global log subscriber in this format; `None` (the default) installs none.
    #[cfg(feature = "tracing")]
    pub log_format: Option<LogFormat>,
    /// Export spans to this OTLP/HTTP endpoint (needs `log_format`).
    #[cfg(feature = "tracing")]
    pub otlp_endpoint: Option<String>,
    /// Evaluate the alert rules in this TOML file.
    #[cfg(feature = "alert")]
    pub alert_rules: Option<PathBuf>,
}

// Without the monitoring feature every default is `None` and clippy would have this derived;
// with it, the two addresses are not.
#[allow(clippy::derivable_impls)]
impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            #[cfg(feature = "monitoring")]
            metrics_addr: Some(crate::monitoring::DEFAULT_ADDR),
            #[cfg(feature = "monitoring")]
            health_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            #[cfg(feature = "tracing")]
            log_format: None,
            #[cfg(feature = "tracing")]
            otlp_endpoint: None,
            #[cfg(feature = "alert")]
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
    #[cfg(feature = "metrics")]
    #[error(transparent)]
    Metrics(#[from] wasmcage_metrics::MetricsError),
    /// Logging or trace export could not be installed.
    #[cfg(feature = "tracing")]
    #[error(transparent)]
    Tracing(#[from] wasmcage_tracing::TracingError),
    /// The alert rules are invalid.
    #[cfg(feature = "alert")]
    #[error(transparent)]
    Alert(#[from] wasmcage_alert::AlertError),
    /// A monitoring endpoint could not listen.
    #[cfg(feature = "monitoring")]
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
    #[cfg(feature = "health")]
    health: HealthConfig,
    #[cfg(feature = "health")]
    memory_limit: Option<u64>,
    #[cfg(feature = "health")]
    checks: Vec<Arc<dyn wasmcage_health::HealthCheck>>,
    #[cfg(feature = "alert")]
    alerts: Option<wasmcage_alert::AlertConfig>,
}

impl std::fmt::Debug for WasmcageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmcageBuilder")
            .field("engine", &self.engine)
            .field("policy", &self.policy)
            .field("monitoring", &self.monitoring)
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
    #[cfg(feature = "health")]
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// The resident memory past which the `memory` health check fails (default 16 GiB).
    #[cfg(feature = "health")]
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Another health check for the monitor, beside the canary and the memory check (for
    /// example a [`wasmcage_health::DirectoryCheck`] on a data directory).
    #[cfg(feature = "health")]
    pub fn health_check(mut self, check: Arc<dyn wasmcage_health::HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Alert rules and channels already loaded and validated (see [`crate::alerting::load`]);
    /// they take the place of [`MonitoringConfig::alert_rules`].
    #[cfg(feature = "alert")]
    pub fn alerts(mut self, alerts: wasmcage_alert::AlertConfig) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Composes the layers the enabled features provide and starts the endpoints, the health
    /// monitor and the alert engine on the current tokio runtime.
    pub async fn start(self) -> Result<Wasmcage, StartError> {
        #[cfg(any(feature = "tracing", feature = "alert", feature = "monitoring"))]
        let m = &self.monitoring;
        #[cfg(feature = "tracing")]
        let tracing = match m.log_format {
            None => None,
            Some(format) => Some(wasmcage_tracing::init(&TracingConfig {
                format,
                otlp: m.otlp_endpoint.clone().map(OtlpConfig::new),
                ..TracingConfig::default()
            })?),
        };
        let mut observers: Vec<Arc<dyn Observer>> = Vec::new();
        #[cfg(feature = "metrics")]
        let metrics = Arc::new(Metrics::new(MetricsConfig::default())?);
        #[cfg(feature = "metrics")]
        observers.push(metrics.clone());
        #[cfg(feature = "tracing")]
        observers.push(Arc::new(TracingObserver::new()));
        let observer: Arc<dyn Observer> = match observers.len() {
            0 => Arc::new(wasmcage_events::NoopObserver),
            1 => observers.remove(0),
            _ => Arc::new(wasmcage_events::FanOut::new(observers)),
        };
        let engine = Engine::with_observer(self.engine, observer.clone())?;
        let sandbox = Sandbox::builder(&engine).policy(self.policy).build()?;

        #[cfg(feature = "health")]
        let (health, health_task) = {
            // The canary's executions are labelled `module="canary"`, a label no uploaded
            // module can have, so that rules and dashboards can leave them out of user traffic.
            #[cfg(feature = "metrics")]
            metrics.reserve_module_label(
                wasmcage_core::module_hash(crate::health_checks::CANARY_WAT.as_bytes())?,
                wasmcage_metrics::CANARY_MODULE,
            );
            let health = Arc::new(HealthMonitor::with_observer(self.health, observer));
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
            let task = health.clone().spawn();
            (health, task)
        };
        #[cfg(not(feature = "health"))]
        drop(observer);

        #[cfg(feature = "alert")]
        let alerting = {
            let rules = match (self.alerts, &m.alert_rules) {
                (Some(rules), _) => Some(rules),
                (None, Some(path)) => Some(alerting::load(path)?),
                (None, None) => None,
            };
            #[cfg(feature = "health")]
            let failures = Some(alerting::health_failures(health.clone()));
            #[cfg(not(feature = "health"))]
            let failures = None;
            match rules {
                None => None,
                Some(rules) => Some(Alerting::start(rules, metrics.clone(), failures)?),
            }
        };

        #[cfg(feature = "monitoring")]
        let servers = {
            let mut servers = Vec::new();
            let both = Monitoring {
                #[cfg(feature = "metrics")]
                metrics: Some(metrics.clone()),
                #[cfg(feature = "health")]
                health: Some(health.clone()),
            };
            // With only one of metrics and health compiled in, the update sets every field.
            #[allow(clippy::needless_update)]
            let only_metrics = || Monitoring {
                #[cfg(feature = "health")]
                health: None,
                ..both.clone()
            };
            #[allow(clippy::needless_update)]
            let only_health = || Monitoring {
                #[cfg(feature = "metrics")]
                metrics: None,
                ..both.clone()
            };
            let listen = |addr: SocketAddr, monitoring: Monitoring| async move {
                MonitoringServer::start(addr, monitoring)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })
            };
            match (m.metrics_addr, m.health_addr) {
                (None, None) => {}
                (Some(a), None) => servers.push(listen(a, both.clone()).await?),
                (Some(a), Some(b)) if a == b => servers.push(listen(a, both.clone()).await?),
                (None, Some(b)) => servers.push(listen(b, only_health()).await?),
                (Some(a), Some(b)) => {
                    servers.push(listen(a, only_metrics()).await?);
                    servers.push(listen(b, only_health()).await?);
                }
            }
            servers
        };
        Ok(Wasmcage {
            engine,
            sandbox,
            pool: self.pool,
            #[cfg(feature = "metrics")]
            metrics,
            #[cfg(feature = "health")]
            health,
            #[cfg(feature = "health")]
            _health_task: health_task,
            #[cfg(feature = "monitoring")]
            servers,
            #[cfg(feature = "alert")]
            alerting,
            #[cfg(feature = "tracing")]
            _tracing: tracing,
        })
    }
}

/// A running sandbox with metrics, tracing, health checks and alerting composed (those the
/// enabled features provide). Dropping it stops the endpoints, the health monitor and the
/// alert engine.
pub struct Wasmcage {
    engine: Engine,
    sandbox: Sandbox,
    pool: PoolConfig,
    #[cfg(feature = "metrics")]
    metrics: Arc<Metrics>,
    #[cfg(feature = "health")]
    health: Arc<HealthMonitor>,
    #[cfg(feature = "health")]
    _health_task: MonitorTask,
    #[cfg(feature = "monitoring")]
    servers: Vec<MonitoringServer>,
    #[cfg(feature = "alert")]
    alerting: Option<Alerting>,
    #[cfg(feature = "tracing")]
    _tracing: Option<TracingGuard>,
}

impl std::fmt::Debug for Wasmcage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wasmcage")
            .field("sandbox", &self.sandbox.id())
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
        self.pool_with(module, self.pool.clone())
    }

    /// A warm pool of `module` under the configured policy, sized by `config`.
    pub fn pool_with(&self, module: &Module, config: PoolConfig) -> Result<WarmPool, Error> {
        WarmPool::new(&self.sandbox, module, config)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The metrics.
    #[cfg(feature = "metrics")]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The health monitor.
    #[cfg(feature = "health")]
    pub fn health(&self) -> &Arc<HealthMonitor> {
        &self.health
    }

    /// The alert engine, when rules were configured.
    #[cfg(feature = "alert")]
    pub fn alerting(&self) -> Option<&Alerting> {
        self.alerting.as_ref()
    }

    /// The addresses the monitoring endpoints listen on.
    #[cfg(feature = "monitoring")]
    pub fn monitoring_addrs(&self) -> Vec<SocketAddr> {
        self.servers
            .iter()
            .map(MonitoringServer::local_addr)
            .collect()
    }
}
