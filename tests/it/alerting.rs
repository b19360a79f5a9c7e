//! Alerting over real metrics: executions trap, the rule fires, a webhook on 127.0.0.1
//! receives the notification, and the delivery is counted in the registry.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmcage::alert::{AlertConfig, AlertSource, MetricRef};
use wasmcage::alerting::{Alerting, RegistrySource, metric_exists};
use wasmcage::metrics::{Metrics, MetricsConfig};
use wasmcage::{Engine, EngineConfig, Sandbox};

use crate::common::tight;

fn metered() -> (Engine, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(MetricsConfig::default()).unwrap());
    (
        Engine::with_observer(EngineConfig::default(), metrics.clone()).unwrap(),
        metrics,
    )
}

fn metric(name: &str, labels: &[(&str, &str)]) -> MetricRef {
    MetricRef {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

#[test]
fn the_registry_source_reads_counters_gauges_and_histograms() {
    let (engine, metrics) = metered();
    let module = engine
        .compile(
            "m.wat",
            br#"(module (func (export "ok")) (func (export "bad") unreachable))"#,
        )
        .unwrap();
    let label = wasmcage::metrics::module_label(&module.info().name, &module.info().hash);
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    for _ in 0..3 {
        sandbox.call(&module, "ok", &[]).unwrap();
    }
    sandbox.call(&module, "bad", &[]).unwrap();
    let source = RegistrySource::new(
        metrics,
        Some(Arc::new(|check: &str| (check == "canary").then_some(2))),
    );
    let check =
        |m: MetricRef, expected: Option<f64>| assert_eq!(source.value(&m), expected, "{m:?}");
    check(metric("wasmcage_executions_total", &[]), Some(4.0));
    check(
        metric("wasmcage_executions_total", &[("outcome", "trap")]),
        Some(1.0),
    );
    check(
        metric("wasmcage_executions_total", &[("outcome", "timeout")]),
        Some(0.0),
    );
    check(
        metric("wasmcage_executions_total", &[("module", "other.wat")]),
        None,
    );
    check(metric("wasmcage_instances_active", &[]), Some(0.0));
    check(
        metric(
            "wasmcage_execution_duration_seconds_count",
            &[("module", &*label)],
        ),
        Some(4.0),
    );
    assert!(
        source
            .value(&metric("wasmcage_execution_duration_seconds_sum", &[]))
            .unwrap()
            > 0.0
    );
    assert_eq!(source.health_failures("canary"), Some(2));
    assert_eq!(source.health_failures("disk"), None);
    assert!(metric_exists("wasmcage_execution_duration_seconds_bucket"));
    assert!(!metric_exists("wasmcage_nope_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_guests_raise_an_alert_that_a_webhook_receives() {
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = AlertConfig::from_toml(
        &format!(
            r#"
[evaluation]
interval = "50ms"
[channels.hook]
type = "webhook"
url = "http://{addr}/hook"
[[rules]]
name = "GuestsTrapping"
description = "Guests are trapping."
severity = "warning"
channels = ["hook"]
[rules.condition]
type = "threshold"
metric = "wasmcage_traps_total"
op = ">="
threshold = 2.0
"#
        ),
        &metric_exists,
    )
    .unwrap();
    let (engine, metrics) = metered();
    let alerting = Alerting::start(config, metrics.clone(), None).unwrap();
    let module = engine
        .compile("t.wat", br#"(module (func (export "bad") unreachable))"#)
        .unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    for _ in 0..2 {
        sandbox.call_async(&module, "bad", &[]).await.unwrap();
    }
    // Only a guard against a hang; the rule is evaluated every 50 ms.
    let guard = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < guard, "the alert never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = received.lock().unwrap()[0].clone();
    assert_eq!(first["rule"], "GuestsTrapping");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["value"], 2.0);
    assert_eq!(
        alerting.engine().state("GuestsTrapping"),
        Some(wasmcage::alert::RuleState::Firing)
    );
    while alerting.dispatcher().stats("hook").unwrap().delivered == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = metrics.render();
    assert!(
        text.contains(r#"wasmcage_alert_deliveries_total{channel="hook",result="delivered"} 1"#),
        "delivery counted: {}",
        text.lines()
            .filter(|l| l.contains("alert"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
