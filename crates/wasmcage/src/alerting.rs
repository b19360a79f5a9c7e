//! Alerting wired to the rest of wasmcage: rules read the Prometheus registry (and, when
//! given, health-check failures), and delivery results become metrics.

use std::sync::Arc;

use wasmcage_alert::{
    AlertConfig, AlertEngine, AlertError, AlertSource, DeliveryListener, Dispatcher, MetricRef,
    SystemClock,
};
use wasmcage_metrics::{FAMILIES, Metrics};

/// How many times in a row a named health check has failed (`None` for an unknown check).
pub type HealthFailures = Arc<dyn Fn(&str) -> Option<u32> + Send + Sync>;

/// An [`AlertSource`] over a metrics registry: a metric's value is the sum of its series
/// whose labels match; a histogram is read through its `_sum` and `_count` series.
pub struct RegistrySource {
    metrics: Arc<Metrics>,
    health: Option<HealthFailures>,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource").finish_non_exhaustive()
    }
}

impl RegistrySource {
    /// Reads `metrics`; health-failure conditions read `health` when given.
    pub fn new(metrics: Arc<Metrics>, health: Option<HealthFailures>) -> Self {
        RegistrySource { metrics, health }
    }
}

impl AlertSource for RegistrySource {
    fn value(&self, metric: &MetricRef) -> Option<f64> {
        let mut total = None;
        for family in self.metrics.gather() {
            let name = family.name();
            let part = if name == metric.name {
                Part::Value
            } else if metric.name.strip_suffix("_sum") == Some(name) {
                Part::Sum
            } else if metric.name.strip_suffix("_count") == Some(name) {
                Part::Count
            } else {
                continue;
            };
            let counter = family.get_field_type() == prometheus::proto::MetricType::COUNTER;
            for m in family.get_metric() {
                let labels = m.get_label();
                let matches = metric
                    .labels
                    .iter()
                    .all(|(k, v)| labels.iter().any(|l| l.name() == k && l.value() == v));
                if !matches {
                    continue;
                }
                let value = match part {
                    Part::Sum => m.get_histogram().get_sample_sum(),
                    Part::Count => m.get_histogram().get_sample_count() as f64,
                    Part::Value if counter => m.get_counter().get_value(),
                    Part::Value => m.get_gauge().get_value(),
                };
                *total.get_or_insert(0.0) += value;
            }
        }
        total
    }

    fn health_failures(&self, check: &str) -> Option<u32> {
        self.health.as_ref().and_then(|health| health(check))
    }
}

enum Part {
    Value,
    Sum,
    Count,
}

/// Whether `name` is a built-in metric (histograms also as `_sum`, `_count`, `_bucket`), for
/// validating rules when they are loaded.
pub fn metric_exists(name: &str) -> bool {
    FAMILIES.iter().any(|f| {
        f.name == name
            || (f.kind == "histogram"
                && ["_sum", "_count", "_bucket"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.name)))
    })
}

/// The health side of a [`RegistrySource`]: consecutive failures from a health monitor.
#[cfg(feature = "health")]
pub fn health_failures(monitor: Arc<wasmcage_health::HealthMonitor>) -> HealthFailures {
    Arc::new(move |check| monitor.consecutive_failures(check))
}

/// Reads and validates an alerting configuration file against the built-in metrics.
pub fn load(path: &std::path::Path) -> Result<AlertConfig, AlertError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AlertError::Config(format!("cannot read {}: {e}", path.display())))?;
    AlertConfig::from_toml(&text, &metric_exists)
}

/// A running alert engine: evaluation on its interval, delivery on per-channel queues, and
/// `wasmcage_alert_deliveries_total` counting the results. [`Alerting::reload`] swaps in a new
/// configuration; dropping it stops evaluation (a durable outbox keeps what was not delivered
/// for the next start).
pub struct Alerting {
    running: std::sync::Mutex<Running>,
    metrics: Arc<Metrics>,
    health: Option<HealthFailures>,
}

struct Running {
    engine: Arc<AlertEngine>,
    dispatcher: Arc<Dispatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting")
            .field("dispatcher", &self.dispatcher())
            .finish_non_exhaustive()
    }
}

fn delivery_listener(metrics: &Arc<Metrics>) -> DeliveryListener {
    let counted = metrics.clone();
    Arc::new(move |channel, result| counted.record_alert_delivery(channel, result.as_str()))
}

impl Alerting {
    /// Starts evaluating `config`'s rules against `metrics` on the current tokio runtime.
    pub fn start(
        config: AlertConfig,
        metrics: Arc<Metrics>,
        health: Option<HealthFailures>,
    ) -> Result<Self, AlertError> {
        let dispatcher = Arc::new(Dispatcher::start_observed(
            &config.channels,
            &config.delivery,
            Some(delivery_listener(&metrics)),
        )?);
        let running = Self::run(config, dispatcher, &metrics, health.clone());
        Ok(Alerting {
            running: std::sync::Mutex::new(running),
            metrics,
            health,
        })
    }

    fn run(
        config: AlertConfig,
        dispatcher: Arc<Dispatcher>,
        metrics: &Arc<Metrics>,
        health: Option<HealthFailures>,
    ) -> Running {
        let source = Arc::new(RegistrySource::new(metrics.clone(), health));
        let engine = Arc::new(AlertEngine::new(config, source, Arc::new(SystemClock)));
        let task = wasmcage_alert::spawn_evaluation(engine.clone(), dispatcher.clone());
        Running {
            engine,
            dispatcher,
            task,
        }
    }

    /// Replaces the rules and channels with `config`, already validated. Delivery moves to
    /// the new channels on the same outbox (see [`Dispatcher::restart`]); the rules start
    /// afresh, so an alert still firing is announced again by the new rules. On an error
    /// nothing changes.
    pub fn reload(&self, config: AlertConfig) -> Result<(), AlertError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let dispatcher = Arc::new(running.dispatcher.restart(
            &config.channels,
            &config.delivery,
            Some(delivery_listener(&self.metrics)),
        )?);
        running.task.abort();
        *running = Self::run(config, dispatcher, &self.metrics, self.health.clone());
        Ok(())
    }

    /// The engine: rule states, active alerts and acknowledgement.
    pub fn engine(&self) -> Arc<AlertEngine> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .engine
            .clone()
    }

    /// The dispatcher: delivery counters per channel.
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dispatcher
            .clone()
    }
}

impl Drop for Alerting {
    fn drop(&mut self) {
        // Evaluation stops; the queues still deliver what they hold as the dispatcher goes.
        let running = self.running.get_mut().unwrap_or_else(|e| e.into_inner());
        running.task.abort();
    }
}
