//! The health monitor: statuses and thresholds, timeouts and panics contained, events on
//! changes, the built-in checks and the probes. No sleeping: each test drives `run_once`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmcage_events::{HealthStatus, RecordedEvent, RecordingObserver};
use wasmcage_health::{
    CheckResult, DirectoryCheck, FnCheck, HealthCheck, HealthConfig, HealthMonitor,
    ProcessMemoryCheck, healthz, livez, readyz,
};

/// A check whose verdict the test sets.
struct Toggle {
    name: &'static str,
    critical: bool,
    passing: AtomicBool,
}

impl Toggle {
    fn new(name: &'static str, critical: bool) -> Arc<Self> {
        Arc::new(Toggle {
            name,
            critical,
            passing: AtomicBool::new(true),
        })
    }
    fn set(&self, passing: bool) {
        self.passing.store(passing, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl HealthCheck for Toggle {
    fn name(&self) -> &str {
        self.name
    }
    fn critical(&self) -> bool {
        self.critical
    }
    async fn check(&self) -> CheckResult {
        if self.passing.load(Ordering::Relaxed) {
            CheckResult::pass("fine")
        } else {
            CheckResult::fail("broken")
        }
    }
}

fn monitor(threshold: u32) -> (Arc<HealthMonitor>, Arc<RecordingObserver>) {
    monitor_with(HealthConfig {
        unhealthy_threshold: threshold,
        ..HealthConfig::default()
    })
}

fn monitor_with(config: HealthConfig) -> (Arc<HealthMonitor>, Arc<RecordingObserver>) {
    let recorder = Arc::new(RecordingObserver::default());
    (
        Arc::new(HealthMonitor::with_observer(config, recorder.clone())),
        recorder,
    )
}

fn changes(recorder: &RecordingObserver) -> Vec<(String, HealthStatus)> {
    recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RecordedEvent::HealthChanged(c) => Some((c.check, c.current)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_failing_non_critical_check_degrades() {
    let (monitor, _) = monitor(3);
    let disk = Toggle::new("disk", false);
    monitor.register(disk.clone());
    disk.set(false);
    for _ in 0..5 {
        assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
    }
    assert!(monitor.is_ready(), "degraded is still ready");
    assert_eq!(readyz(&monitor).status, 200);
}

#[tokio::test]
async fn a_critical_check_failing_past_its_threshold_is_critical_and_not_ready_until_it_recovers() {
    let (monitor, recorder) = monitor(3);
    let canary = Toggle::new("canary", true);
    monitor.register(canary.clone());
    assert_eq!(monitor.run_once().await, HealthStatus::Healthy);
    canary.set(false);
    assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
    assert_eq!(monitor.run_once().await, HealthStatus::Degraded);
    assert_eq!(monitor.run_once().await, HealthStatus::Critical);
    assert_eq!(monitor.consecutive_failures("canary"), Some(3));
    let probe = readyz(&monitor);
    assert_eq!(probe.status, 503);
    let body: serde_json::Value = serde_json::from_str(&probe.body).unwrap();
    assert_eq!(body["failing"][0]["name"], "canary");
    assert_eq!(body["failing"][0]["consecutive_failures"], 3);
    assert_eq!(healthz(&monitor).status, 503);

    canary.set(true);
    assert_eq!(monitor.run_once().await, HealthStatus::Healthy);
    assert_eq!(
        monitor.consecutive_failures("canary"),
        Some(0),
        "recovery resets the count"
    );
    assert_eq!(readyz(&monitor).status, 200);
    assert_eq!(
        changes(&recorder),
        [
            ("canary".to_owned(), HealthStatus::Degraded),
            ("overall".to_owned(), HealthStatus::Degraded),
            ("canary".to_owned(), HealthStatus::Critical),
            ("overall".to_owned(), HealthStatus::Critical),
            ("canary".to_owned(), HealthStatus::Healthy),
            ("overall".to_owned(), HealthStatus::Healthy),
        ],
        "events only on changes"
    );
}

/// Tells the test, by dropping, that the future holding it was dropped (aborted).
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_hanging_check_times_out_and_a_panicking_one_is_contained() {
    // A short timeout so that the hanging check gives up quickly; nothing here depends on
    // how long anything takes.
    let (monitor, _) = monitor_with(HealthConfig {
        unhealthy_threshold: 1,
        timeout: Duration::from_millis(50),
        ..HealthConfig::default()
    });
    let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
    let signal = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    monitor.register(Arc::new(FnCheck::new("hangs", true, move || {
        let guard = DropSignal(signal.lock().unwrap().take());
        async move {
            let _guard = guard;
            std::future::pending::<CheckResult>().await
        }
    })));
    monitor.register(Arc::new(FnCheck::new("panics", false, || async {
        panic!("boom")
    })));
    let fine = Toggle::new("fine", true);
    monitor.register(fine.clone());
    assert_eq!(monitor.run_once().await, HealthStatus::Critical);
    dropped
        .await
        .expect("the hanging check is aborted, not left running");
    assert_eq!(monitor.run_once().await, HealthStatus::Critical);
    let report = monitor.report();
    let by_name = |n: &str| report.checks.iter().find(|c| c.name == n).unwrap().clone();
    assert_eq!(by_name("hangs").message, "timed out after 50 ms");
    assert_eq!(by_name("hangs").status, "critical");
    assert!(!by_name("hangs").passed);
    assert_eq!(by_name("panics").message, "panicked: boom");
    assert_eq!(by_name("panics").status, "degraded");
    assert_eq!(
        by_name("panics").consecutive_failures,
        2,
        "the monitor kept running after the panic"
    );
    assert!(by_name("fine").passed);
    assert_eq!(by_name("fine").consecutive_failures, 0);
}

#[tokio::test]
async fn events_name_the_check_that_changed_and_the_overall_status_only_when_it_changes() {
    let (monitor, recorder) = monitor(2);
    let disk = Toggle::new("disk", false);
    let pool = Toggle::new("pool", false);
    monitor.register(disk.clone());
    monitor.register(pool.clone());
    monitor.run_once().await;
    assert_eq!(
        changes(&recorder),
        [],
        "nothing changed from the initial healthy"
    );

    disk.set(false);
    monitor.run_once().await;
    pool.set(false);
    monitor.run_once().await;
    disk.set(true);
    monitor.run_once().await;
    pool.set(true);
    monitor.run_once().await;
    monitor.run_once().await;
    assert_eq!(
        changes(&recorder),
        [
            ("disk".to_owned(), HealthStatus::Degraded),
            ("overall".to_owned(), HealthStatus::Degraded),
            ("pool".to_owned(), HealthStatus::Degraded),
            ("disk".to_owned(), HealthStatus::Healthy),
            ("pool".to_owned(), HealthStatus::Healthy),
            ("overall".to_owned(), HealthStatus::Healthy),
        ],
    );
    let last = recorder.events().into_iter().rev().find_map(|e| match e {
        RecordedEvent::HealthChanged(c) if c.check == "pool" => Some(c),
        _ => None,
    });
    let last = last.unwrap();
    assert_eq!(
        (
            last.previous,
            last.consecutive_failures,
            last.message.as_str()
        ),
        (HealthStatus::Degraded, 0, "fine")
    );
}

#[tokio::test]
async fn closures_make_checks() {
    let (monitor, _) = monitor(1);
    monitor.register(Arc::new(FnCheck::new_sync("pool", true, || {
        CheckResult::fail("exhausted").with("in_use", 4)
    })));
    monitor.register(Arc::new(FnCheck::new("canary", false, || async {
        CheckResult::pass("the canary returned 42")
    })));
    assert_eq!(monitor.run_once().await, HealthStatus::Critical);
    let report = monitor.report();
    assert_eq!(report.checks[0].details["in_use"], "4");
    assert!(report.checks[1].passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_runs_on_its_interval_until_stopped_or_dropped() {
    let (monitor, _) = monitor_with(HealthConfig {
        interval: Duration::from_millis(1),
        ..HealthConfig::default()
    });
    let (runs_tx, mut runs) = tokio::sync::mpsc::unbounded_channel();
    monitor.register(Arc::new(FnCheck::new_sync("counted", false, move || {
        let _ = runs_tx.send(());
        CheckResult::fail("counted")
    })));
    let task = monitor.clone().spawn();
    runs.recv().await.unwrap();
    runs.recv().await.unwrap();
    task.stop().await;
    assert_eq!(monitor.status(), HealthStatus::Degraded);
    assert!(monitor.consecutive_failures("counted").unwrap() >= 1);

    // Dropping the task ends the loop, which lets go of the monitor and so of the check and
    // its sender: the channel then closes.
    let task = monitor.spawn();
    runs.recv().await.unwrap();
    drop(task);
    while runs.recv().await.is_some() {}
}

#[tokio::test]
async fn process_memory_against_its_threshold() {
    let check = |max: u64| async move { ProcessMemoryCheck::new(max, false).check().await };
    let tiny = check(1024).await;
    if std::path::Path::new("/proc/self/statm").exists() {
        assert!(!tiny.passed, "{}", tiny.message);
        assert!(tiny.message.contains("exceeds"), "{}", tiny.message);
        assert!(tiny.details["rss_bytes"].parse::<u64>().unwrap() > 1024);
    } else {
        assert!(tiny.passed);
        assert!(
            tiny.message.contains("cannot be measured"),
            "{}",
            tiny.message
        );
    }
    let huge = check(u64::MAX).await;
    assert!(huge.passed, "{}", huge.message);
}

#[tokio::test]
async fn a_directory_must_exist_be_writable_and_have_room() {
    let dir = tempfile::tempdir().unwrap();
    let ok = DirectoryCheck::new("cache_dir", dir.path(), 1, true)
        .check()
        .await;
    assert!(ok.passed, "{}", ok.message);
    assert!(ok.details["free_bytes"].parse::<u64>().unwrap() > 0);
    let missing = DirectoryCheck::new("cache_dir", dir.path().join("nope"), 1, true)
        .check()
        .await;
    assert!(!missing.passed);
    assert!(missing.message.contains("does not exist"));
    let full = DirectoryCheck::new("cache_dir", dir.path(), u64::MAX, true)
        .check()
        .await;
    assert!(!full.passed);
    assert!(full.message.contains("free"));
}

#[tokio::test]
async fn healthz_reports_every_check() {
    let (monitor, _) = monitor(3);
    monitor.register(Toggle::new("canary", true));
    monitor.register(Arc::new(ProcessMemoryCheck::new(u64::MAX, false)));
    monitor.run_once().await;
    let probe = healthz(&monitor);
    assert_eq!(
        (probe.status, probe.content_type),
        (200, "application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&probe.body).unwrap();
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].as_f64().unwrap() > 0.0);
    let canary = &body["checks"][0];
    for field in [
        "name",
        "critical",
        "status",
        "passed",
        "message",
        "details",
        "response_time_ms",
        "consecutive_failures",
        "last_checked",
    ] {
        assert!(!canary[field].is_null(), "{field} missing from {canary}");
    }
    assert_eq!(livez().status, 200);
}
