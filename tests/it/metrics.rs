//! Metrics: the exposition text parsed back, bounded labels, custom metrics, the `/metrics`
//! endpoint, and a real Prometheus server scraping it.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage::metrics::{FAMILIES, Metrics, MetricsConfig, MetricsError};
use wasmcage::monitoring::{Monitoring, MonitoringServer};
use wasmcage::{Engine, EngineConfig, Limits, Sandbox};

use crate::common::{http_get, tight};

/// One sample line of the text format: name, labels, value.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (samples only; comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}');
                let parsed = labels
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), parsed)
            }
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn metered_engine(config: MetricsConfig) -> (Engine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(config).unwrap());
    let engine = Engine::with_observer(EngineConfig::default(), metrics.clone()).unwrap();
    (engine, metrics)
}

const MODULE: &str = r#"(module (memory 1)
    (func (export "ok") (result i32) i32.const 1)
    (func (export "trap") unreachable)
    (func (export "spin") (loop (br 0))))"#;

#[test]
fn the_exposition_text_parses_back_to_what_happened() {
    let (engine, metrics) = metered_engine(MetricsConfig::default());
    let module = engine.compile("m.wat", MODULE.as_bytes()).unwrap();
    // The label is the name and the short content hash: names are the uploader's to choose.
    let label = wasmcage::metrics::module_label(&module.info().name, &module.info().hash);
    assert!(label.starts_with("m.wat@"), "{label}");
    let m = &*label;
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: Some(10_000),
            ..tight()
        })
        .build()
        .unwrap();
    for _ in 0..3 {
        sandbox.call(&module, "ok", &[]).unwrap();
    }
    sandbox.call(&module, "trap", &[]).unwrap();
    sandbox.call(&module, "spin", &[]).unwrap();
    engine.compile("m.wat", MODULE.as_bytes()).unwrap();

    let samples = parse(&metrics.render());
    let executions = |outcome| {
        value(
            &samples,
            "wasmcage_executions_total",
            &[("module", m), ("kind", "call"), ("outcome", outcome)],
        )
    };
    assert_eq!(executions("completed"), Some(3.0));
    assert_eq!(executions("trap"), Some(1.0));
    assert_eq!(executions("out_of_fuel"), Some(1.0));
    assert_eq!(executions("timeout"), Some(0.0));
    assert_eq!(
        value(&samples, "wasmcage_traps_total", &[("trap", "unreachable")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "wasmcage_execution_duration_seconds_count",
            &[("module", m)]
        ),
        Some(5.0)
    );
    assert_eq!(
        value(&samples, "wasmcage_instances_created_total", &[]),
        Some(5.0)
    );
    assert_eq!(
        value(&samples, "wasmcage_instances_destroyed_total", &[]),
        Some(5.0)
    );
    assert_eq!(value(&samples, "wasmcage_instances_active", &[]), Some(0.0));
    assert_eq!(
        value(&samples, "wasmcage_modules_compiled_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "wasmcage_cache_misses_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "wasmcage_cache_hits_total", &[("tier", "memory")]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "wasmcage_cache_entries", &[]), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "wasmcage_resource_limit_exceeded_total",
            &[("resource", "fuel")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "wasmcage_memory_limit_bytes", &[("module", m)]),
        Some((1u64 << 20) as f64)
    );
    let fuel = value(&samples, "wasmcage_fuel_consumed_total", &[("module", m)]).unwrap();
    assert!(
        fuel >= 10_000.0,
        "the out-of-fuel run alone used 10 000: {fuel}"
    );
    assert_eq!(value(&samples, "wasmcage_up", &[]), Some(1.0));
    assert!(value(&samples, "process_resident_memory_bytes", &[]).unwrap() > 0.0);

    let performance = metrics.monitor().stats();
    assert_eq!(performance.iter().map(|s| s.count).sum::<u64>(), 5);
}

#[test]
fn module_labels_are_bounded() {
    let (engine, metrics) = metered_engine(MetricsConfig {
        max_module_labels: 2,
        ..MetricsConfig::default()
    });
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    for n in 0..5 {
        let text = format!(r#"(module (func (export "f") (result i32) i32.const {n}))"#);
        let module = engine.compile(&format!("mod{n}"), text.as_bytes()).unwrap();
        sandbox.call(&module, "f", &[]).unwrap();
    }
    let samples = parse(&metrics.render());
    let modules: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "wasmcage_executions_total")
        .map(|s| s.labels["module"].split('@').next().unwrap())
        .collect();
    assert_eq!(
        modules.into_iter().collect::<Vec<_>>(),
        ["_other", "mod0", "mod1"]
    );
    let other = value(
        &samples,
        "wasmcage_executions_total",
        &[("module", "_other"), ("outcome", "completed")],
    );
    assert_eq!(other, Some(3.0));
}

#[test]
fn custom_metrics_share_the_registry_and_names_are_checked() {
    let metrics = Metrics::new(MetricsConfig::default()).unwrap();
    let calls = metrics
        .custom()
        .counter("plugin_calls_total", "Calls per plugin.", &["plugin"])
        .unwrap();
    calls.with_label_values(&["resize"]).inc_by(3);
    let samples = parse(&metrics.render());
    assert_eq!(
        value(&samples, "plugin_calls_total", &[("plugin", "resize")]),
        Some(3.0)
    );

    assert!(matches!(
        metrics
            .custom()
            .gauge("wasmcage_executions_total", "x", &[]),
        Err(MetricsError::Reserved(_))
    ));
    assert!(matches!(
        metrics.custom().gauge("bad name", "x", &[]),
        Err(MetricsError::InvalidName { .. })
    ));
    let again = metrics
        .custom()
        .counter("plugin_calls_total", "Calls per plugin.", &["plugin"]);
    assert!(matches!(again, Err(MetricsError::Registry(_))), "{again:?}");
}

#[test]
fn the_documented_metric_list_matches_the_registry() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/monitoring.md"
    ))
    .unwrap();
    let documented: std::collections::BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `wasmcage_"))
        .map(|rest| format!("wasmcage_{}", rest.split('`').next().unwrap()))
        .collect();
    let registered: std::collections::BTreeSet<String> =
        FAMILIES.iter().map(|f| f.name.to_owned()).collect();
    assert_eq!(
        documented, registered,
        "docs/monitoring.md and the registry disagree"
    );
    for family in FAMILIES {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}`", family.name)))
            .unwrap();
        assert!(
            row.contains(&format!("| {} |", family.kind)),
            "{}: type not documented as {}",
            family.name,
            family.kind
        );
        for label in family.labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "{}: label {label} not documented",
                family.name
            );
        }
    }
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_that_exist() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 8, "the dashboard has panels");
    // Histograms expose _bucket, _sum and _count series.
    let mut known: Vec<String> = Vec::new();
    for f in FAMILIES {
        known.push(f.name.to_owned());
        if f.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.push(format!("{}{suffix}", f.name));
            }
        }
    }
    for expr in &exprs {
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("wasmcage_") || w.starts_with("process_"))
            .collect();
        assert!(!names.is_empty(), "{expr} names no metric");
        for name in names {
            assert!(
                name.starts_with("process_") || known.iter().any(|k| k == name),
                "{expr}: {name} does not exist"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_the_text_format() {
    let (engine, metrics) = metered_engine(MetricsConfig::default());
    let module = engine.compile("m.wat", MODULE.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    sandbox.call_async(&module, "ok", &[]).await.unwrap();
    let server = MonitoringServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Monitoring {
            metrics: Some(metrics),
            ..Monitoring::default()
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let samples = parse(&body);
    assert_eq!(
        value(
            &samples,
            "wasmcage_executions_total",
            &[("outcome", "completed")]
        ),
        Some(1.0)
    );
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(addr, "/metrics/performance"))
            .await
            .unwrap();
    assert_eq!(status, 200);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["exports"][0]["export"], "ok");
    let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, "/nope"))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

/// A real Prometheus server on loopback; killed when dropped.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wasmcage\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the `prometheus` server is installed (Debian package `prometheus`; .ci/run installs it)");
    Prometheus {
        child,
        addr,
        _dir: dir,
    }
}

/// Asks Prometheus for `query` until it returns one sample equal to `expected`.
fn wait_for(prometheus: &Prometheus, query: &str, expected: f64) {
    let path = format!(
        "/api/v1/query?query={}",
        query
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D")
            .replace(',', "%2C")
    );
    // Only a guard against a hang: Prometheus scrapes every second.
    let guard = Instant::now() + Duration::from_secs(90);
    let mut last = String::new();
    while Instant::now() < guard {
        if let Ok(stream) = std::net::TcpStream::connect(prometheus.addr) {
            drop(stream);
            let (status, body) = http_get(prometheus.addr, &path);
            if status == 200 {
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                let value = json["data"]["result"][0]["value"][1].as_str();
                if value.and_then(|v| v.parse::<f64>().ok()) == Some(expected) {
                    return;
                }
                last = body;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("Prometheus never returned {expected} for {query}; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_series() {
    let (engine, metrics) = metered_engine(MetricsConfig::default());
    let module = engine.compile("scraped.wat", MODULE.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: Some(10_000),
            ..tight()
        })
        .build()
        .unwrap();
    for _ in 0..7 {
        sandbox.call_async(&module, "ok", &[]).await.unwrap();
    }
    sandbox.call_async(&module, "trap", &[]).await.unwrap();
    let server = MonitoringServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Monitoring {
            metrics: Some(metrics),
            ..Monitoring::default()
        },
    )
    .await
    .unwrap();
    let target = server.local_addr();
    tokio::task::spawn_blocking(move || {
        let prometheus = start_prometheus(target);
        wait_for(
            &prometheus,
            r#"wasmcage_executions_total{module=~"scraped\\.wat@[0-9a-f]{12}",outcome="completed"}"#,
            7.0,
        );
        wait_for(
            &prometheus,
            r#"wasmcage_traps_total{trap="unreachable"}"#,
            1.0,
        );
        wait_for(&prometheus, r#"wasmcage_instances_destroyed_total"#, 8.0);
    })
    .await
    .unwrap();
}

#[test]
fn the_performance_monitors_anomalies_are_metrics_so_rules_can_alert_on_them() {
    let (engine, metrics) = metered_engine(MetricsConfig {
        monitor: wasmcage::metrics::MonitorConfig {
            // Every execution is "slow": the anomaly is certain, not a matter of timing.
            slow_p95: Duration::ZERO,
            min_samples: 3,
            ..wasmcage::metrics::MonitorConfig::default()
        },
        ..MetricsConfig::default()
    });
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let module = engine
        .compile("slow.wat", br#"(module (func (export "f")))"#)
        .unwrap();
    let anomalies = |m: &Metrics| {
        value(
            &parse(&m.render()),
            "wasmcage_performance_anomalies",
            &[("kind", "slow_p95")],
        )
    };
    assert_eq!(
        anomalies(&metrics),
        Some(0.0),
        "exported before any execution"
    );
    for _ in 0..3 {
        sandbox.call(&module, "f", &[]).unwrap();
    }
    assert_eq!(anomalies(&metrics), Some(1.0));
    assert_eq!(
        value(
            &parse(&metrics.render()),
            "wasmcage_performance_anomalies",
            &[("kind", "high_variance")]
        ),
        Some(0.0)
    );
}
