//! Metrics: the exposition text parsed back, bounded labels, custom metrics, the `/metrics`
//! endpoint, and a real Prometheus server scraping it.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage::events::{self, RuntimeEventKind, SessionEnd};
use wasmcage::metrics::{FAMILIES, Metrics, MetricsConfig, MetricsError};
use wasmcage::monitoring::{Monitoring, MonitoringServer};
use wasmcage::{
    CommandInput, Engine, EngineConfig, Event, ExecutionReport, ExecutionType, Limits, Observer,
    Outcome, RuntimeTag, Sandbox,
};

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
    let exprs = dashboard_exprs(&dashboard());
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
            // And never "highly variable": three calls on busy cores can vary by any ratio.
            high_variance: f64::INFINITY,
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

/// Every `expr` of the dashboard's panels (rows have none).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    ))
    .unwrap();
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn the_grafana_dashboard_keeps_its_conventions() {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, &str)> = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id used twice"
        );
        let g = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: {g}");
        for (x2, y2, w2, h2, other) in &boxes {
            let apart = x + w <= *x2 || x2 + w2 <= x || y + h <= *y2 || y2 + h2 <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title));
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: the datasource variable"
        );
        let refs: std::collections::BTreeSet<&str> = panel["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(
            refs.len(),
            panel["targets"].as_array().unwrap().len(),
            "{title}: refIds"
        );
    }
    // The language runtimes' row holds a panel for every runtime family.
    let row = panels
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Language runtimes")
        .expect("a Language runtimes row");
    let below: String = panels[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for family in FAMILIES.iter().filter(|f| f.labels.contains(&"runtime")) {
        assert!(below.contains(family.name), "{} has no panel", family.name);
    }
}

/// A report of code that ran in a runtime (or, with `runtime` `None`, of a plain module).
fn report(
    runtime: Option<(&str, ExecutionType)>,
    outcome: Outcome,
    duration: Duration,
) -> ExecutionReport {
    ExecutionReport {
        execution_id: events::ExecutionId::next(),
        sandbox_id: events::SandboxId::next(),
        trace_id: None,
        module: events::ModuleInfo::new("python.wasm", events::ModuleHash([7; 32])),
        kind: wasmcage::ExecutionKind::Command,
        entry: "_start".into(),
        outcome,
        exit_code: match outcome {
            Outcome::Exited(code) => Some(code),
            _ => None,
        },
        message: None,
        duration,
        instantiate_duration: Duration::ZERO,
        fuel_consumed: None,
        fuel_limit: None,
        memory_peak_bytes: 0,
        memory_limit_bytes: 1 << 20,
        memory_limit_hit: false,
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        runtime: runtime.map(|(name, execution_type)| {
            Arc::new(RuntimeTag {
                name: name.into(),
                version: "3.12.0".into(),
                execution_type,
            })
        }),
    }
}

fn runtime_event(metrics: &Metrics, runtime: &str, kind: RuntimeEventKind) {
    metrics.on_event(&Event::Runtime(&events::RuntimeEvent {
        runtime: runtime.into(),
        kind,
    }));
}

fn finished(metrics: &Metrics, report: &ExecutionReport) {
    metrics.on_event(&Event::ExecutionFinished(report));
}

/// The distinct values of `label` among the samples of `family` (any suffix).
fn label_values(
    samples: &[Sample],
    family: &str,
    label: &str,
) -> std::collections::BTreeSet<String> {
    samples
        .iter()
        .filter(|s| s.name.starts_with(family))
        .filter_map(|s| s.labels.get(label).cloned())
        .collect()
}

#[test]
fn runtime_executions_pools_and_sessions_become_series() {
    let metrics = Metrics::new(MetricsConfig::default()).unwrap();
    let ms = Duration::from_millis;
    // A plain execution creates no runtime series: nothing exists before a runtime's first
    // event.
    finished(&metrics, &report(None, Outcome::Completed, ms(1)));
    let samples = parse(&metrics.render());
    assert!(
        samples
            .iter()
            .all(|s| !s.name.starts_with("wasmcage_runtime_")
                && !s.name.starts_with("wasmcage_sessions_")),
        "runtime series before any runtime"
    );
    assert_eq!(
        value(
            &samples,
            "wasmcage_executions_total",
            &[("outcome", "completed")]
        ),
        Some(1.0)
    );

    let oneshot = Some(("python", ExecutionType::Oneshot));
    for (outcome, millis) in [
        (Outcome::Completed, 2),
        (Outcome::Exited(0), 3),
        (Outcome::Exited(1), 4),
        (Outcome::Trap(wasmcage::TrapKind::Unreachable), 5),
        (Outcome::Cancelled, 6),
        (Outcome::Timeout, 7_000),
        (Outcome::OutOfFuel, 8),
        (Outcome::MemoryLimit, 9),
        (Outcome::StackOverflow, 10),
    ] {
        finished(&metrics, &report(oneshot, outcome, ms(millis)));
    }
    let session = Some(("python", ExecutionType::Session));
    finished(&metrics, &report(session, Outcome::Completed, ms(1)));
    finished(&metrics, &report(session, Outcome::Exited(1), ms(1)));

    for (warm, micros) in [(true, 20), (true, 30), (true, 40), (false, 300_000)] {
        let wait = Duration::from_micros(micros);
        runtime_event(
            &metrics,
            "python",
            RuntimeEventKind::Assigned { warm, wait },
        );
    }
    runtime_event(
        &metrics,
        "python",
        RuntimeEventKind::PoolSize {
            ready: 2,
            target: 4,
        },
    );
    runtime_event(
        &metrics,
        "python",
        RuntimeEventKind::PoolSize {
            ready: 3,
            target: 4,
        },
    );
    runtime_event(&metrics, "python", RuntimeEventKind::StartFailed);
    for _ in 0..6 {
        runtime_event(&metrics, "python", RuntimeEventKind::SessionCreated);
    }
    for end in [
        SessionEnd::Deleted,
        SessionEnd::Expired,
        SessionEnd::Died,
        SessionEnd::Died,
    ] {
        runtime_event(&metrics, "python", RuntimeEventKind::SessionEnded(end));
    }
    // A runtime with sessions and no pool: no pool gauges, whose values nobody reported.
    runtime_event(&metrics, "javascript", RuntimeEventKind::SessionCreated);
    runtime_event(
        &metrics,
        "javascript",
        RuntimeEventKind::SessionEnded(SessionEnd::Shutdown),
    );

    let samples = parse(&metrics.render());
    let get = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    let executions = |t: &str, status: &str| {
        get(
            "wasmcage_runtime_executions_total",
            &[
                ("runtime", "python"),
                ("execution_type", t),
                ("status", status),
            ],
        )
    };
    for (status, n) in [
        ("success", 2.0),
        ("error", 3.0),
        ("timeout", 1.0),
        ("out_of_fuel", 1.0),
        ("memory_limit", 1.0),
        ("stack_overflow", 1.0),
    ] {
        assert_eq!(executions("oneshot", status), Some(n), "oneshot {status}");
    }
    assert_eq!(executions("session", "success"), Some(1.0));
    assert_eq!(executions("session", "error"), Some(1.0));
    assert_eq!(
        executions("session", "timeout"),
        Some(0.0),
        "at zero from the first event"
    );
    // Every runtime execution is an execution of its interpreter's module as well.
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "wasmcage_executions_total")
            .map(|s| s.value)
            .sum::<f64>(),
        12.0
    );
    let duration = |t: &str, suffix: &str, le: Option<&str>| {
        let name = format!("wasmcage_runtime_execution_duration_seconds{suffix}");
        let mut labels = vec![("runtime", "python"), ("execution_type", t)];
        labels.extend(le.map(|le| ("le", le)));
        get(&name, &labels)
    };
    assert_eq!(duration("oneshot", "_count", None), Some(9.0));
    assert_eq!(duration("session", "_count", None), Some(2.0));
    let sum = duration("oneshot", "_sum", None).unwrap();
    assert!((sum - 7.047).abs() < 1e-9, "{sum}");
    // Buckets suited to interpreters: 0.5 ms at the bottom, 30 s at the top.
    assert_eq!(duration("oneshot", "_bucket", Some("0.0005")), Some(0.0));
    assert_eq!(duration("oneshot", "_bucket", Some("0.01")), Some(8.0));
    assert_eq!(duration("oneshot", "_bucket", Some("5")), Some(8.0));
    assert_eq!(duration("oneshot", "_bucket", Some("10")), Some(9.0));
    assert_eq!(duration("oneshot", "_bucket", Some("30")), Some(9.0));

    let python = [("runtime", "python")];
    assert_eq!(
        get(
            "wasmcage_runtime_pool_assignments_total",
            &[("runtime", "python"), ("warm", "true")]
        ),
        Some(3.0)
    );
    assert_eq!(
        get(
            "wasmcage_runtime_pool_assignments_total",
            &[("runtime", "python"), ("warm", "false")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get("wasmcage_runtime_pool_assignment_seconds_count", &python),
        Some(4.0)
    );
    // Buckets from 10 µs to 1 s: the warm waits under 50 µs, the cold one under 0.5 s.
    let bucket = |le: &str| {
        get(
            "wasmcage_runtime_pool_assignment_seconds_bucket",
            &[("runtime", "python"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.00001"), Some(0.0));
    assert_eq!(bucket("0.00005"), Some(3.0));
    assert_eq!(bucket("0.25"), Some(3.0));
    assert_eq!(bucket("0.5"), Some(4.0));
    assert_eq!(bucket("1"), Some(4.0));
    assert_eq!(get("wasmcage_runtime_pool_ready", &python), Some(3.0));
    assert_eq!(get("wasmcage_runtime_pool_target", &python), Some(4.0));
    assert_eq!(
        get("wasmcage_runtime_pool_start_failures_total", &python),
        Some(1.0)
    );
    assert_eq!(get("wasmcage_sessions_created_total", &python), Some(6.0));
    assert_eq!(get("wasmcage_sessions_active", &python), Some(2.0));
    let ended = |runtime: &str, reason: &str| {
        get(
            "wasmcage_sessions_ended_total",
            &[("runtime", runtime), ("reason", reason)],
        )
    };
    assert_eq!(ended("python", "deleted"), Some(1.0));
    assert_eq!(ended("python", "expired"), Some(1.0));
    assert_eq!(ended("python", "died"), Some(2.0));
    assert_eq!(ended("python", "shutdown"), Some(0.0));

    let javascript = [("runtime", "javascript")];
    assert_eq!(get("wasmcage_sessions_active", &javascript), Some(0.0));
    assert_eq!(ended("javascript", "shutdown"), Some(1.0));
    assert_eq!(get("wasmcage_runtime_pool_ready", &javascript), None);
    assert_eq!(get("wasmcage_runtime_pool_target", &javascript), None);
    assert_eq!(
        label_values(&samples, "wasmcage_runtime_", "runtime"),
        ["javascript", "python"].map(String::from).into()
    );
}

#[test]
fn runtime_labels_are_capped_and_sanitised() {
    let cap = MetricsConfig::default().max_runtime_labels;
    assert_eq!(cap, 32);
    let metrics = Metrics::new(MetricsConfig::default()).unwrap();
    for n in 0..100 {
        let name = format!("runtime-{n}");
        let oneshot = Some((name.as_str(), ExecutionType::Oneshot));
        finished(
            &metrics,
            &report(oneshot, Outcome::Completed, Duration::from_millis(1)),
        );
        runtime_event(&metrics, &name, RuntimeEventKind::SessionCreated);
        runtime_event(
            &metrics,
            &name,
            RuntimeEventKind::PoolSize {
                ready: 1,
                target: 1,
            },
        );
    }
    let samples = parse(&metrics.render());
    for family in FAMILIES.iter().filter(|f| f.labels.contains(&"runtime")) {
        let values = label_values(&samples, family.name, "runtime");
        // The first runtimes seen keep their names; every later one is `_other`.
        assert!(
            values.len() <= cap + 1,
            "{}: {} values",
            family.name,
            values.len()
        );
        if family.name.starts_with("wasmcage_runtime_pool_ready")
            || family.name.starts_with("wasmcage_runtime_pool_target")
        {
            // A gauge of one runtime's state has no meaning for many: `_other` has none.
            assert_eq!(values.len(), cap, "{}", family.name);
            assert!(!values.contains("_other"), "{}", family.name);
        } else {
            assert_eq!(values.len(), cap + 1, "{}", family.name);
            assert!(values.contains("_other"), "{}", family.name);
            assert!(values.contains("runtime-0") && values.contains("runtime-31"));
            assert!(!values.contains("runtime-32"), "{}", family.name);
        }
    }
    let other = |status| {
        value(
            &samples,
            "wasmcage_runtime_executions_total",
            &[
                ("runtime", "_other"),
                ("execution_type", "oneshot"),
                ("status", status),
            ],
        )
    };
    assert_eq!(other("success"), Some(68.0));
    assert_eq!(
        value(
            &samples,
            "wasmcage_sessions_active",
            &[("runtime", "_other")]
        ),
        Some(68.0),
        "the sessions of every runtime past the cap"
    );
}

#[test]
fn a_hostile_runtime_name_cannot_break_the_exposition_format() {
    let metrics = Metrics::new(MetricsConfig::default()).unwrap();
    let hostile = "py\"}\n evil";
    let oneshot = Some((hostile, ExecutionType::Oneshot));
    finished(
        &metrics,
        &report(oneshot, Outcome::Completed, Duration::from_millis(1)),
    );
    runtime_event(&metrics, hostile, RuntimeEventKind::SessionCreated);
    runtime_event(
        &metrics,
        hostile,
        RuntimeEventKind::PoolSize {
            ready: 1,
            target: 2,
        },
    );
    let long = "x".repeat(10_000);
    runtime_event(&metrics, &long, RuntimeEventKind::StartFailed);
    let text = metrics.render();
    // Every line is a comment or a whole sample: the name opened no line of its own.
    for line in text.lines() {
        assert!(
            line.starts_with("# ") || line.starts_with("wasmcage_") || line.starts_with("process_"),
            "{line:?}"
        );
    }
    let samples = parse(&text);
    let label = wasmcage::metrics::runtime_label(hostile);
    assert_eq!(&*label, "py____evil");
    assert_eq!(
        value(
            &samples,
            "wasmcage_runtime_executions_total",
            &[("runtime", &label), ("status", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "wasmcage_runtime_pool_target",
            &[("runtime", &label)]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &samples,
            "wasmcage_runtime_pool_start_failures_total",
            &[(
                "runtime",
                &"x".repeat(wasmcage::metrics::RUNTIME_LABEL_CHARS)
            )]
        ),
        Some(1.0)
    );
    assert_eq!(
        label_values(&samples, "wasmcage_", "runtime"),
        [label.to_string(), "x".repeat(32)].into()
    );
}

#[test]
fn code_run_for_a_runtime_is_counted_from_the_engines_report() {
    let (engine, metrics) = metered_engine(MetricsConfig::default());
    let module = engine
        .compile("interpreter.wat", br#"(module (func (export "_start")))"#)
        .unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let tag = Arc::new(RuntimeTag {
        name: "python".into(),
        version: "3.12.0".into(),
        execution_type: ExecutionType::Oneshot,
    });
    let run = || {
        sandbox
            .run_command(
                &module,
                CommandInput {
                    runtime: Some(tag.clone()),
                    ..CommandInput::default()
                },
            )
            .unwrap()
    };
    assert!(run().report.outcome.is_success());
    sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    let samples = parse(&metrics.render());
    let executions = |status| {
        value(
            &samples,
            "wasmcage_runtime_executions_total",
            &[
                ("runtime", "python"),
                ("execution_type", "oneshot"),
                ("status", status),
            ],
        )
    };
    assert_eq!(executions("success"), Some(1.0));
    assert_eq!(executions("error"), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "wasmcage_runtime_execution_duration_seconds_count",
            &[("runtime", "python")]
        ),
        Some(1.0),
        "the run without a runtime is not counted"
    );
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The expressions of the dashboard's "Language runtimes" row and of the PromQL block of
/// docs/monitoring.md's "Language runtimes" section.
fn runtime_queries() -> Vec<String> {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().unwrap();
    let row = panels
        .iter()
        .position(|p| p["type"] == "row" && p["title"] == "Language runtimes")
        .unwrap();
    let mut exprs: Vec<String> = panels[row + 1..]
        .iter()
        .take_while(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/monitoring.md"
    ))
    .unwrap();
    let section = doc.split("## Language runtimes").nth(1).unwrap();
    let block = section
        .split("```promql")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let documented: Vec<String> = block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(documented.len() >= 5, "{documented:?}");
    exprs.extend(documented);
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_panels_and_documented_queries_answer_from_a_real_scrape() {
    let metrics = Arc::new(Metrics::new(MetricsConfig::default()).unwrap());
    let server = MonitoringServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Monitoring {
            metrics: Some(metrics.clone()),
            ..Monitoring::default()
        },
    )
    .await
    .unwrap();
    let target = server.local_addr();
    tokio::task::spawn_blocking(move || {
        let prometheus = start_prometheus(target);
        let queries = runtime_queries();
        let ms = Duration::from_millis;
        // Traffic until Prometheus has scraped it twice, so that every rate has two samples
        // and every expression a value.
        let guard = Instant::now() + Duration::from_secs(90);
        let mut missing = Vec::new();
        while Instant::now() < guard {
            for (t, outcome) in [
                (ExecutionType::Oneshot, Outcome::Completed),
                (ExecutionType::Oneshot, Outcome::Exited(1)),
                (ExecutionType::Session, Outcome::Completed),
            ] {
                finished(&metrics, &report(Some(("python", t)), outcome, ms(20)));
            }
            for warm in [true, false] {
                let wait = ms(1);
                runtime_event(
                    &metrics,
                    "python",
                    RuntimeEventKind::Assigned { warm, wait },
                );
            }
            runtime_event(
                &metrics,
                "python",
                RuntimeEventKind::PoolSize {
                    ready: 2,
                    target: 4,
                },
            );
            runtime_event(&metrics, "python", RuntimeEventKind::StartFailed);
            runtime_event(&metrics, "python", RuntimeEventKind::SessionCreated);
            runtime_event(&metrics, "python", RuntimeEventKind::SessionCreated);
            runtime_event(
                &metrics,
                "python",
                RuntimeEventKind::SessionEnded(SessionEnd::Died),
            );
            missing.clear();
            let listening = std::net::TcpStream::connect(prometheus.addr).is_ok();
            if !listening {
                missing.push("Prometheus is not listening yet".to_owned());
            }
            for query in queries.iter().filter(|_| listening) {
                let (status, body) = http_get(
                    prometheus.addr,
                    &format!("/api/v1/query?query={}", encode(query)),
                );
                if status != 200 {
                    missing.push(format!("{query}: HTTP {status} {body}"));
                    continue;
                }
                let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(answer["status"], "success", "{query}: {answer}");
                let values: Vec<f64> = answer["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
                    .collect();
                if values.is_empty() || values.iter().any(|v: &f64| !v.is_finite()) {
                    missing.push(format!("{query}: {values:?}"));
                }
            }
            if missing.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("runtime queries without a value: {missing:#?}");
    })
    .await
    .unwrap();
}
