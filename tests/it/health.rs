//! Health through the facade: the canary runs a real module through a warm pool; a pool of
//! size zero breaks it, readiness follows over real HTTP, and replacing the pool recovers.

use std::sync::Arc;
use std::time::Duration;

use wasmcage::health::{HealthConfig, HealthMonitor, HealthStatus};
use wasmcage::health_checks::{CanaryCheck, pool_check};
use wasmcage::monitoring::{Monitoring, MonitoringServer};
use wasmcage::{Engine, EngineConfig, OnExhausted, PoolConfig};

use crate::common::http_get;

fn zero_pool() -> PoolConfig {
    PoolConfig {
        min_ready: 0,
        max_in_use: 0,
        on_exhausted: OnExhausted::Fail,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_fails_on_a_broken_pool_readiness_follows_and_it_recovers() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let canary = Arc::new(CanaryCheck::new(&engine, PoolConfig::default()).unwrap());
    let config = HealthConfig {
        unhealthy_threshold: 2,
        timeout: Duration::from_secs(10),
        ..HealthConfig::default()
    };
    let monitor = Arc::new(HealthMonitor::new(config));
    monitor.register(canary.clone());
    let server = MonitoringServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Monitoring {
            health: Some(monitor.clone()),
            ..Monitoring::default()
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let get = move |path: &'static str| tokio::task::spawn_blocking(move || http_get(addr, path));

    assert_eq!(monitor.run_once().await, HealthStatus::Healthy);
    let report = monitor.report();
    assert!(report.checks[0].passed, "{}", report.checks[0].message);
    assert_eq!(get("/readyz").await.unwrap().0, 200);

    canary.set_pool(&engine, zero_pool()).unwrap();
    assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
    assert_eq!(monitor.run_once().await, HealthStatus::Critical);
    let (status, body) = get("/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body.contains("canary") && body.contains("exhausted"),
        "{body}"
    );
    assert_eq!(
        get("/livez").await.unwrap().0,
        200,
        "liveness does not depend on the checks"
    );
    let (status, body) = get("/healthz").await.unwrap();
    assert_eq!(status, 503);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["checks"][0]["consecutive_failures"], 2);

    canary.set_pool(&engine, PoolConfig::default()).unwrap();
    assert_eq!(monitor.run_once().await, HealthStatus::Healthy);
    assert_eq!(get("/readyz").await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_degrades_health() {
    let engine = Engine::new(EngineConfig::default()).unwrap();
    let module = engine
        .compile("m.wat", br#"(module (func (export "f")))"#)
        .unwrap();
    let sandbox = wasmcage::Sandbox::builder(&engine).build().unwrap();
    let full = wasmcage::WarmPool::new(&sandbox, &module, zero_pool()).unwrap();
    let roomy = wasmcage::WarmPool::new(&sandbox, &module, PoolConfig::default()).unwrap();
    let monitor = HealthMonitor::new(HealthConfig::default());
    monitor.register(Arc::new(pool_check("pool_full", full)));
    assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
    let monitor = HealthMonitor::new(HealthConfig::default());
    monitor.register(Arc::new(pool_check("pool_roomy", roomy)));
    assert_eq!(monitor.run_once().await, HealthStatus::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_composes_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        "[channels.ops]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         [[rules]]\nname = \"CanaryFailing\"\nseverity = \"critical\"\nchannels = [\"ops\"]\n\
         [rules.condition]\ntype = \"health_failures\"\ncheck = \"canary\"\nconsecutive = 3\n",
    )
    .unwrap();
    let cage = wasmcage::Wasmcage::builder()
        .monitoring(wasmcage::MonitoringConfig {
            metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
            health_addr: None,
            alert_rules: Some(rules),
            ..wasmcage::MonitoringConfig::default()
        })
        .start()
        .await
        .unwrap();
    assert_eq!(
        cage.alerting().unwrap().engine().state("CanaryFailing"),
        Some(wasmcage::alert::RuleState::Inactive)
    );
    let addr = cage.monitoring_addrs()[0];
    let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, "/readyz"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/healthz"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"canary\""), "{body}");
    // The canary's executions went through the composed observers into the registry, under
    // the reserved label `canary` (no uploaded module can have it), not `canary.wat@<hash>`.
    let rendered = cage.metrics().render();
    let canary = rendered
        .lines()
        .find(|l| {
            l.starts_with(
                r#"wasmcage_executions_total{kind="call",module="canary",outcome="completed"}"#,
            )
        })
        .unwrap_or_else(|| panic!("no canary executions in {rendered}"));
    assert!(!canary.ends_with(" 0"), "{canary}");
    assert!(!rendered.contains(r#"wasmcage_executions_total{kind="call",module="canary.wat@"#));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nname = \"X\"\nseverity = \"loud\"\nchannels = []\n[rules.condition]\ntype = \"health_failures\"\ncheck = \"c\"\nconsecutive = 1\n").unwrap();
    let err = wasmcage::Wasmcage::builder()
        .monitoring(wasmcage::MonitoringConfig {
            metrics_addr: None,
            health_addr: None,
            alert_rules: Some(bad),
            ..Default::default()
        })
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("loud"), "{err}");
}
