//! The monitor: runs checks with timeouts, counts failures, computes the overall status.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use wasmcage_events::{Event, HealthChange, HealthStatus, NoopObserver, Observer};

use crate::{CheckResult, HealthCheck};

/// How the monitor runs its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time between runs (default 10 s).
    pub interval: Duration,
    /// Time one check may take before it counts as failed (default 2 s).
    pub timeout: Duration,
    /// Consecutive failures of a critical check that make the process critical (default 3;
    /// 0 is taken as 1).
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            unhealthy_threshold: 3,
        }
    }
}

/// The last result of one check, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Whether failing past the threshold makes the process critical.
    pub critical: bool,
    /// `healthy`, `degraded` or `critical`.
    pub status: &'static str,
    /// Whether the last run passed (false before the first run).
    pub passed: bool,
    /// What the last run said.
    pub message: String,
    /// Its measurements.
    pub details: std::collections::BTreeMap<String, String>,
    /// How long the last run took, in milliseconds.
    pub response_time_ms: f64,
    /// Failures in a row (0 after a pass).
    pub consecutive_failures: u32,
    /// When it last ran, in seconds since the Unix epoch (0 before the first run).
    pub last_checked: f64,
}

/// Every check and the overall status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// `healthy`, `degraded` or `critical`.
    pub status: &'static str,
    /// When the report was made, in seconds since the Unix epoch.
    pub timestamp: f64,
    /// Every check, in registration order.
    pub checks: Vec<CheckReport>,
}

struct Slot {
    check: Arc<dyn HealthCheck>,
    state: CheckState,
}

#[derive(Clone)]
struct CheckState {
    result: Option<CheckResult>,
    response_time: Duration,
    consecutive_failures: u32,
    last_checked: Option<SystemTime>,
    status: HealthStatus,
}

/// Runs health checks and keeps their state. Share it in an `Arc`.
pub struct HealthMonitor {
    config: HealthConfig,
    observer: Arc<dyn Observer>,
    slots: Mutex<Vec<Slot>>,
    overall: Mutex<HealthStatus>,
}

impl std::fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn epoch_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl HealthMonitor {
    /// A monitor with no checks yet, whose status changes go nowhere.
    pub fn new(config: HealthConfig) -> Self {
        Self::with_observer(config, Arc::new(NoopObserver))
    }

    /// A monitor whose status changes go to `observer` as `HealthChanged` events.
    pub fn with_observer(config: HealthConfig, observer: Arc<dyn Observer>) -> Self {
        HealthMonitor {
            config,
            observer,
            slots: Mutex::default(),
            overall: Mutex::new(HealthStatus::Healthy),
        }
    }

    /// Adds a check. Until it first runs it counts as healthy.
    pub fn register(&self, check: Arc<dyn HealthCheck>) {
        lock(&self.slots).push(Slot {
            check,
            state: CheckState {
                result: None,
                response_time: Duration::ZERO,
                consecutive_failures: 0,
                last_checked: None,
                status: HealthStatus::Healthy,
            },
        });
    }

    /// Runs every check once, concurrently, and updates the state. Returns the overall status.
    ///
    /// Each check runs in a task of its own, watched by a second task that enforces the
    /// timeout and aborts the check when it expires. So a check that hangs is a failure
    /// ("timed out after N ms"), a check that panics is a failure ("panicked: ..."), and
    /// neither delays the others or takes the monitor down. Must be called on a tokio runtime.
    pub async fn run_once(&self) -> HealthStatus {
        let checks: Vec<Arc<dyn HealthCheck>> =
            lock(&self.slots).iter().map(|s| s.check.clone()).collect();
        let timeout = self.config.timeout;
        // All the watchers start before any is awaited, so the checks run concurrently and
        // one run takes at most about one timeout however many checks there are.
        let runs: Vec<_> = checks
            .into_iter()
            .map(|check| tokio::spawn(watch(check, timeout)))
            .collect();
        let mut outcomes = Vec::with_capacity(runs.len());
        for run in runs {
            // A watcher neither panics nor is aborted; an error here means that the runtime
            // is shutting down.
            outcomes.push(run.await.unwrap_or_else(|e| {
                (
                    CheckResult::fail(format!("did not finish: {e}")),
                    Duration::ZERO,
                )
            }));
        }
        self.apply(outcomes)
    }

    fn apply(&self, outcomes: Vec<(CheckResult, Duration)>) -> HealthStatus {
        let now = SystemTime::now();
        let threshold = self.config.unhealthy_threshold.max(1);
        let mut changes = Vec::new();
        let overall = {
            let mut slots = lock(&self.slots);
            for (slot, (result, took)) in slots.iter_mut().zip(outcomes) {
                let state = &mut slot.state;
                state.consecutive_failures = if result.passed {
                    0
                } else {
                    state.consecutive_failures + 1
                };
                let status = match (result.passed, slot.check.critical()) {
                    (true, _) => HealthStatus::Healthy,
                    (false, true) if state.consecutive_failures >= threshold => {
                        HealthStatus::Critical
                    }
                    (false, _) => HealthStatus::Degraded,
                };
                if status != state.status {
                    changes.push(HealthChange {
                        check: slot.check.name().to_owned(),
                        previous: state.status,
                        current: status,
                        consecutive_failures: state.consecutive_failures,
                        message: result.message.clone(),
                    });
                }
                state.status = status;
                state.result = Some(result);
                state.response_time = took;
                state.last_checked = Some(now);
            }
            slots
                .iter()
                .map(|s| s.state.status)
                .max()
                .unwrap_or(HealthStatus::Healthy)
        };
        let previous = std::mem::replace(&mut *lock(&self.overall), overall);
        if previous != overall {
            changes.push(HealthChange {
                check: "overall".into(),
                previous,
                current: overall,
                consecutive_failures: 0,
                message: format!("overall health is {}", overall.as_str()),
            });
        }
        for change in &changes {
            self.observer.on_event(&Event::HealthChanged(change));
        }
        overall
    }

    /// Runs the checks now and then every interval on the current tokio runtime, until the
    /// returned task is stopped or dropped.
    ///
    /// A run that takes longer than the interval delays the next one rather than bunching
    /// runs up. An interval of zero is taken as one millisecond.
    pub fn spawn(self: Arc<Self>) -> MonitorTask {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let period = self.config.interval.max(Duration::from_millis(1));
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A stop, or a dropped task, ends the loop between ticks or in the middle of
                // a run; a run either updates the state completely or not at all.
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    _ = self.run_once() => {}
                }
            }
        });
        MonitorTask {
            stop: Some(stop),
            handle,
        }
    }

    /// The overall status after the last run.
    pub fn status(&self) -> HealthStatus {
        *lock(&self.overall)
    }

    /// Whether the process should receive work: no critical check has failed past its
    /// threshold.
    pub fn is_ready(&self) -> bool {
        self.status() != HealthStatus::Critical
    }

    /// How many times in a row the named check has failed, or `None` for an unknown check.
    pub fn consecutive_failures(&self, check: &str) -> Option<u32> {
        lock(&self.slots)
            .iter()
            .find(|s| s.check.name() == check)
            .map(|s| s.state.consecutive_failures)
    }

    /// Every check's last result and the overall status.
    pub fn report(&self) -> HealthReport {
        let checks = lock(&self.slots)
            .iter()
            .map(|s| {
                let result = s
                    .state
                    .result
                    .clone()
                    .unwrap_or_else(|| CheckResult::pass("not run yet"));
                CheckReport {
                    name: s.check.name().to_owned(),
                    critical: s.check.critical(),
                    status: s.state.status.as_str(),
                    passed: result.passed && s.state.last_checked.is_some(),
                    message: result.message,
                    details: result.details,
                    response_time_ms: s.state.response_time.as_secs_f64() * 1e3,
                    consecutive_failures: s.state.consecutive_failures,
                    last_checked: s.state.last_checked.map_or(0.0, epoch_seconds),
                }
            })
            .collect();
        HealthReport {
            status: self.status().as_str(),
            timestamp: epoch_seconds(SystemTime::now()),
            checks,
        }
    }
}

/// Runs one check in a task of its own under `timeout`: the check's verdict, or a failure
/// when it timed out or panicked, and how long it took.
async fn watch(check: Arc<dyn HealthCheck>, timeout: Duration) -> (CheckResult, Duration) {
    let started = Instant::now();
    let mut run = tokio::spawn(async move { check.check().await });
    let result = match tokio::time::timeout(timeout, &mut run).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) if e.is_panic() => CheckResult::fail(format!("panicked: {}", panic_message(e))),
        Ok(Err(e)) => CheckResult::fail(format!("did not finish: {e}")),
        Err(_) => {
            // The check may never finish on its own; do not leave it running.
            run.abort();
            CheckResult::fail(format!("timed out after {} ms", timeout.as_millis()))
        }
    };
    (result, started.elapsed())
}

/// The interval loop of a [`HealthMonitor`], from [`HealthMonitor::spawn`]. Dropping it stops
/// the loop too.
#[derive(Debug)]
#[must_use = "dropping the task stops the monitor's loop"]
pub struct MonitorTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl MonitorTask {
    /// Stops the loop and waits until it has ended. A run in progress is abandoned; the
    /// checks it started finish or time out on their own.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            // The loop may have ended already (its runtime shut down); nothing to tell it then.
            let _ = stop.send(());
        }
        // The loop returns when told; an error means it was cancelled with its runtime.
        let _ = (&mut self.handle).await;
    }

    /// Whether the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
