//! The performance monitor: per-export timings over a sliding window, hotspots, anomalies.
//!
//! Each export keeps its last `window` durations in a ring buffer, so memory is bounded no
//! matter how long the process runs; quantiles are computed from that window when asked,
//! never on the execution path.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// How the performance monitor judges what it sees.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Durations kept per export (default 1 024).
    pub window: usize,
    /// An execution slower than this is a hotspot (default 100 ms).
    pub hotspot_threshold: Duration,
    /// Hotspots kept, newest first out last (default 100).
    pub max_hotspots: usize,
    /// An export whose p95 is above this is anomalous (default 50 ms).
    pub slow_p95: Duration,
    /// An export whose coefficient of variation (stddev / mean) is above this is anomalous
    /// (default 1.0), once it has at least `min_samples` samples.
    pub high_variance: f64,
    /// Samples an export needs before it is judged (default 20).
    pub min_samples: usize,
    /// Distinct (module, export) pairs tracked; later ones are not tracked (default 1 000).
    pub max_exports: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            window: 1024,
            hotspot_threshold: Duration::from_millis(100),
            max_hotspots: 100,
            slow_p95: Duration::from_millis(50),
            high_variance: 1.0,
            min_samples: 20,
            max_exports: 1000,
        }
    }
}

/// Timing statistics of one export over its window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportStats {
    /// The module's name.
    pub module: String,
    /// The export, or `_start`.
    pub export: String,
    /// Executions recorded since the start, window or not.
    pub count: u64,
    /// Samples in the window.
    pub window: usize,
    /// Fastest in the window, in milliseconds.
    pub min_ms: f64,
    /// Slowest in the window, in milliseconds.
    pub max_ms: f64,
    /// Mean over the window, in milliseconds.
    pub mean_ms: f64,
    /// Median over the window, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile over the window, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile over the window, in milliseconds.
    pub p99_ms: f64,
    /// Standard deviation over the window, in milliseconds.
    pub stddev_ms: f64,
}

/// One execution slower than the hotspot threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hotspot {
    /// The module's name.
    pub module: String,
    /// The export, or `_start`.
    pub export: String,
    /// The execution's id, for finding its logs and report.
    pub execution_id: u64,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

/// What is anomalous about an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Its p95 is above the configured threshold.
    SlowP95,
    /// Its durations vary more than the configured coefficient of variation.
    HighVariance,
}

impl AnomalyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [AnomalyKind; 2] = [AnomalyKind::SlowP95, AnomalyKind::HighVariance];

    /// The snake_case name, as in the JSON report and the `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::SlowP95 => "slow_p95",
            AnomalyKind::HighVariance => "high_variance",
        }
    }
}

/// An export that behaves unusually.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Anomaly {
    /// The module's name.
    pub module: String,
    /// The export, or `_start`.
    pub export: String,
    /// What is unusual.
    pub kind: AnomalyKind,
    /// The measured value: p95 in milliseconds, or the coefficient of variation.
    pub value: f64,
    /// The threshold it crossed, in the same unit.
    pub threshold: f64,
}

/// Everything the monitor knows, as one serialisable report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerformanceReport {
    /// Per-export statistics, sorted by module and export.
    pub exports: Vec<ExportStats>,
    /// The most recent hotspots, oldest first.
    pub hotspots: Vec<Hotspot>,
    /// Exports that look anomalous now.
    pub anomalies: Vec<Anomaly>,
}

struct Window {
    count: u64,
    samples: VecDeque<u64>,
}

/// Per-export timings over a sliding window. Cheap to record into: one short lock.
pub struct PerformanceMonitor {
    config: MonitorConfig,
    windows: Mutex<HashMap<(String, String), Window>>,
    hotspots: Mutex<VecDeque<Hotspot>>,
}

impl std::fmt::Debug for PerformanceMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceMonitor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PerformanceMonitor {
    /// A monitor with this configuration.
    pub fn new(config: MonitorConfig) -> Self {
        PerformanceMonitor {
            config,
            windows: Mutex::default(),
            hotspots: Mutex::default(),
        }
    }

    /// Records one execution's duration.
    pub fn record(&self, module: &str, export: &str, execution_id: u64, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        {
            let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (module.to_owned(), export.to_owned());
            let tracked = windows.len() < self.config.max_exports || windows.contains_key(&key);
            if tracked {
                let window = windows.entry(key).or_insert_with(|| Window {
                    count: 0,
                    samples: VecDeque::with_capacity(64),
                });
                window.count += 1;
                if window.samples.len() == self.config.window.max(1) {
                    window.samples.pop_front();
                }
                window.samples.push_back(nanos);
            }
        }
        if duration > self.config.hotspot_threshold {
            let mut hotspots = self.hotspots.lock().unwrap_or_else(PoisonError::into_inner);
            if hotspots.len() == self.config.max_hotspots.max(1) {
                hotspots.pop_front();
            }
            hotspots.push_back(Hotspot {
                module: module.to_owned(),
                export: export.to_owned(),
                execution_id,
                duration_ms: nanos as f64 / 1e6,
            });
        }
    }

    /// Statistics of every export, sorted by module and export.
    pub fn stats(&self) -> Vec<ExportStats> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<ExportStats> = windows
            .iter()
            .map(|((module, export), w)| stats_of(module, export, w))
            .collect();
        out.sort_by(|a, b| (&a.module, &a.export).cmp(&(&b.module, &b.export)));
        out
    }

    /// The most recent hotspots, oldest first.
    pub fn hotspots(&self) -> Vec<Hotspot> {
        self.hotspots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Exports that look anomalous now.
    pub fn anomalies(&self) -> Vec<Anomaly> {
        let slow = self.config.slow_p95.as_secs_f64() * 1e3;
        let mut out = Vec::new();
        for s in self
            .stats()
            .into_iter()
            .filter(|s| s.window >= self.config.min_samples)
        {
            if s.p95_ms > slow {
                out.push(Anomaly {
                    module: s.module.clone(),
                    export: s.export.clone(),
                    kind: AnomalyKind::SlowP95,
                    value: s.p95_ms,
                    threshold: slow,
                });
            }
            let cv = if s.mean_ms > 0.0 {
                s.stddev_ms / s.mean_ms
            } else {
                0.0
            };
            if cv > self.config.high_variance {
                out.push(Anomaly {
                    module: s.module,
                    export: s.export,
                    kind: AnomalyKind::HighVariance,
                    value: cv,
                    threshold: self.config.high_variance,
                });
            }
        }
        out
    }

    /// Everything at once.
    pub fn report(&self) -> PerformanceReport {
        PerformanceReport {
            exports: self.stats(),
            hotspots: self.hotspots(),
            anomalies: self.anomalies(),
        }
    }

    /// The report as JSON.
    pub fn report_json(&self) -> String {
        serde_json::to_string_pretty(&self.report()).expect("a performance report serialises")
    }
}

fn stats_of(module: &str, export: &str, w: &Window) -> ExportStats {
    let mut sorted: Vec<u64> = w.samples.iter().copied().collect();
    sorted.sort_unstable();
    let ms = |n: u64| n as f64 / 1e6;
    let quantile = |q: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        ms(sorted[rank - 1])
    };
    let n = sorted.len().max(1) as f64;
    let mean = sorted.iter().map(|&x| ms(x)).sum::<f64>() / n;
    let variance = sorted.iter().map(|&x| (ms(x) - mean).powi(2)).sum::<f64>() / n;
    ExportStats {
        module: module.to_owned(),
        export: export.to_owned(),
        count: w.count,
        window: sorted.len(),
        min_ms: sorted.first().map_or(0.0, |&x| ms(x)),
        max_ms: sorted.last().map_or(0.0, |&x| ms(x)),
        mean_ms: mean,
        p50_ms: quantile(0.50),
        p95_ms: quantile(0.95),
        p99_ms: quantile(0.99),
        stddev_ms: variance.sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_over_the_window() {
        let monitor = PerformanceMonitor::new(MonitorConfig::default());
        for i in 1..=100 {
            monitor.record("m", "f", i, ms(i));
        }
        let s = &monitor.stats()[0];
        assert_eq!((s.count, s.window), (100, 100));
        assert_eq!((s.min_ms, s.max_ms), (1.0, 100.0));
        assert_eq!((s.p50_ms, s.p95_ms, s.p99_ms), (50.0, 95.0, 99.0));
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn the_window_is_bounded_and_slides() {
        let monitor = PerformanceMonitor::new(MonitorConfig {
            window: 10,
            ..MonitorConfig::default()
        });
        for i in 1..=1000 {
            monitor.record("m", "f", i, ms(i));
        }
        let s = &monitor.stats()[0];
        assert_eq!((s.count, s.window), (1000, 10));
        assert_eq!(s.min_ms, 991.0);
    }

    #[test]
    fn hotspots_and_anomalies() {
        let config = MonitorConfig {
            min_samples: 5,
            ..MonitorConfig::default()
        };
        let monitor = PerformanceMonitor::new(config);
        for i in 0..10 {
            monitor.record("m", "steady", i, ms(1));
            monitor.record("m", "slow", i, ms(80));
        }
        // Mostly fast with rare huge outliers: high variance, and one hotspot each.
        for i in 0..19 {
            monitor.record("m", "spiky", i, Duration::from_micros(100));
        }
        monitor.record("m", "spiky", 99, ms(500));
        let anomalies = monitor.anomalies();
        let kinds: Vec<(&str, AnomalyKind)> = anomalies
            .iter()
            .map(|a| (a.export.as_str(), a.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("slow", AnomalyKind::SlowP95),
                ("spiky", AnomalyKind::HighVariance)
            ]
        );
        let hotspots = monitor.hotspots();
        assert_eq!(hotspots.len(), 1);
        assert_eq!(
            (hotspots[0].export.as_str(), hotspots[0].execution_id),
            ("spiky", 99)
        );
        let json: serde_json::Value = serde_json::from_str(&monitor.report_json()).unwrap();
        assert_eq!(json["exports"].as_array().unwrap().len(), 3);
        assert_eq!(json["anomalies"][0]["kind"], "slow_p95");
    }

    #[test]
    fn tracked_exports_are_bounded() {
        let monitor = PerformanceMonitor::new(MonitorConfig {
            max_exports: 2,
            ..MonitorConfig::default()
        });
        for name in ["a", "b", "c"] {
            monitor.record("m", name, 1, ms(1));
        }
        assert_eq!(monitor.stats().len(), 2);
    }
}
