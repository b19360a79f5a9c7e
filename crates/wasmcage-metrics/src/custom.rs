//! Metrics of your own, registered into the same registry as the built-in ones.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::MetricsError;

/// Registers custom counters, gauges and histograms, checking their names first.
///
/// Names must follow Prometheus rules (`[a-zA-Z_:][a-zA-Z0-9_:]*`, labels
/// `[a-zA-Z_][a-zA-Z0-9_]*` and not starting with `__`), and must not start with `wasmcage_`,
/// which is reserved for the built-in families.
#[derive(Debug, Clone, Copy)]
pub struct CustomMetrics<'a> {
    registry: &'a Registry,
}

impl<'a> CustomMetrics<'a> {
    pub(crate) fn new(registry: &'a Registry) -> Self {
        CustomMetrics { registry }
    }

    /// A counter with these labels.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        check(name, labels)?;
        let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A gauge with these labels.
    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        check(name, labels)?;
        let metric = GaugeVec::new(Opts::new(name, help), labels)?;
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    /// A histogram with these labels and buckets (Prometheus's defaults when `None`).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Option<Vec<f64>>,
    ) -> Result<HistogramVec, MetricsError> {
        check(name, labels)?;
        let mut opts = HistogramOpts::new(name, help);
        if let Some(buckets) = buckets {
            opts = opts.buckets(buckets);
        }
        let metric = HistogramVec::new(opts, labels)?;
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }
}

fn check(name: &str, labels: &[&str]) -> Result<(), MetricsError> {
    let valid = |s: &str, colon: bool| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    if !valid(name, true) {
        return Err(MetricsError::InvalidName {
            name: name.to_owned(),
            what: "metric",
            rule: "use letters, digits, `_` and `:`, not starting with a digit",
        });
    }
    if name.starts_with("wasmcage_") {
        return Err(MetricsError::Reserved(name.to_owned()));
    }
    for label in labels {
        if !valid(label, false) || label.starts_with("__") {
            return Err(MetricsError::InvalidName {
                name: (*label).to_owned(),
                what: "label",
                rule: "use letters, digits and `_`, not starting with a digit or `__`",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_name(name: &str, labels: &[&str], ok: bool) {
        assert_eq!(check(name, labels).is_ok(), ok, "{name} {labels:?}");
    }

    #[test]
    fn names_are_checked() {
        check_name("plugin_calls_total", &["plugin"], true);
        check_name("ns:rule_total", &[], true);
        check_name("_private", &[], true);
        check_name("9lives", &[], false);
        check_name("has-dash", &[], false);
        check_name("", &[], false);
        check_name("ok_total", &["bad-label"], false);
        check_name("ok_total", &["__reserved"], false);
        check_name("ok_total", &["a:b"], false);
        check_name("wasmcage_executions_total", &[], false);
        check_name("wasmcage_anything", &[], false);
    }
}
