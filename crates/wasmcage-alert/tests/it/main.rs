//! Alerting end to end: configuration, rule timing on a manual clock, and real deliveries to
//! receivers on 127.0.0.1 (and to a real Alertmanager).

// Test helpers are public to the test modules, not documented API.
#![allow(missing_docs)]

mod config;
mod delivery;
mod outbox;
mod timing;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use wasmcage_alert::{AlertSource, MetricRef};

/// One series: name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// An in-memory source: series set by the test, summed by label match like the real one.
#[derive(Default)]
pub struct Values {
    series: Mutex<Vec<Series>>,
    health: Mutex<HashMap<String, u32>>,
}

impl Values {
    pub fn set(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        series.retain(|(n, l, _)| !(n == name && *l == labels));
        series.push((name.into(), labels, value));
    }

    pub fn set_health_failures(&self, check: &str, failures: u32) {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(check.into(), failures);
    }
}

impl AlertSource for Values {
    fn value(&self, metric: &MetricRef) -> Option<f64> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let matching: Vec<f64> = series
            .iter()
            .filter(|(n, labels, _)| {
                *n == metric.name
                    && metric
                        .labels
                        .iter()
                        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn health_failures(&self, check: &str) -> Option<u32> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(check)
            .copied()
    }
}
