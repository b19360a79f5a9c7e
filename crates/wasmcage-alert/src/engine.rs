//! The rule evaluator: reads values through [`AlertSource`], keeps per-rule state, and
//! produces notifications (deduplicated, repeated, escalated, resolved).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::rules::{AlertConfig, Condition, MetricRef, Rule};
use crate::{EXECUTIONS_METRIC, FAILED_OUTCOMES, Notification, NotificationStatus};

/// Where the engine reads values. The facade implements it over the Prometheus registry and
/// the health monitor; the alert crate depends on neither.
pub trait AlertSource: Send + Sync {
    /// The sum of every series of `metric` whose labels include all of `labels`, or `None`
    /// when no such series exists yet.
    fn value(&self, metric: &MetricRef) -> Option<f64>;
    /// How many times in a row the named health check has failed, or `None` if unknown.
    fn health_failures(&self, check: &str) -> Option<u32>;
}

/// Where the engine reads the time: the real clock, or a [`ManualClock`] in tests.
pub trait Clock: Send + Sync {
    /// A monotonic instant, for durations.
    fn now(&self) -> Instant;
    /// Wall-clock time, for the timestamps in notifications.
    fn wall(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    at: Arc<Mutex<(Instant, SystemTime)>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            at: Arc::new(Mutex::new((Instant::now(), SystemTime::now()))),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut at = self.at.lock().unwrap_or_else(PoisonError::into_inner);
        at.0 += by;
        at.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.at.lock().unwrap_or_else(PoisonError::into_inner).0
    }
    fn wall(&self) -> SystemTime {
        self.at.lock().unwrap_or_else(PoisonError::into_inner).1
    }
}

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, but not yet for its `for` duration.
    Pending,
    /// The rule fires.
    Firing,
    /// The rule fired and has just stopped; it is inactive from the next evaluation on.
    Resolved,
}

#[derive(Debug)]
struct Status {
    state: RuleState,
    /// When the condition started holding.
    active_since: Option<Instant>,
    /// When the rule started firing (monotonic and wall clock).
    firing_since: Option<(Instant, SystemTime)>,
    last_notified: Option<Instant>,
    escalated: bool,
    acknowledged: bool,
    /// Counts firings, so that each firing and its resolve share a key prefix.
    firing_number: u64,
    /// Counts notifications of the current firing (repeats, escalation).
    sends: u64,
    /// For error rates: (time, failed, total) samples within the window.
    samples: VecDeque<(Instant, f64, f64)>,
    last_value: f64,
}

impl Status {
    fn new() -> Self {
        Status {
            state: RuleState::Inactive,
            active_since: None,
            firing_since: None,
            last_notified: None,
            escalated: false,
            acknowledged: false,
            firing_number: 0,
            sends: 0,
            samples: VecDeque::new(),
            last_value: 0.0,
        }
    }
}

/// Evaluates rules. Call [`AlertEngine::evaluate`] on an interval (the facade does); each call
/// returns the notifications to deliver, which the [`crate::Dispatcher`] sends.
pub struct AlertEngine {
    config: AlertConfig,
    source: Arc<dyn AlertSource>,
    clock: Arc<dyn Clock>,
    status: Mutex<BTreeMap<String, Status>>,
}

impl std::fmt::Debug for AlertEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertEngine")
            .field("rules", &self.config.rules.len())
            .finish_non_exhaustive()
    }
}

impl AlertEngine {
    /// An engine over these rules and this source, on this clock.
    pub fn new(config: AlertConfig, source: Arc<dyn AlertSource>, clock: Arc<dyn Clock>) -> Self {
        let status = config
            .rules
            .iter()
            .map(|r| (r.name.clone(), Status::new()))
            .collect();
        AlertEngine {
            config,
            source,
            clock,
            status: Mutex::new(status),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &AlertConfig {
        &self.config
    }

    /// Where a rule stands, or `None` for an unknown rule.
    pub fn state(&self, rule: &str) -> Option<RuleState> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rule)
            .map(|s| s.state)
    }

    /// Acknowledges a firing alert: it will not be escalated. Returns whether it was firing.
    pub fn acknowledge(&self, rule: &str) -> bool {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        match status.get_mut(rule) {
            Some(s) if s.state == RuleState::Firing => {
                s.acknowledged = true;
                true
            }
            _ => false,
        }
    }

    /// Evaluates every enabled rule once and returns the notifications due now.
    pub fn evaluate(&self) -> Vec<Notification> {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let mut out = Vec::new();
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        for rule in self.config.rules.iter().filter(|r| r.enabled) {
            let s = status.get_mut(&rule.name).expect("every rule has a status");
            if s.state == RuleState::Resolved {
                s.state = RuleState::Inactive;
            }
            let (active, value) = self.active(rule, s, now);
            s.last_value = value;
            if active {
                let since = *s.active_since.get_or_insert(now);
                if s.state != RuleState::Firing {
                    if now.duration_since(since) >= hold(&rule.condition) {
                        s.state = RuleState::Firing;
                        s.firing_since = Some((now, wall));
                        s.firing_number += 1;
                        s.sends = 0;
                        s.escalated = false;
                        s.acknowledged = false;
                        s.last_notified = Some(now);
                        out.push(notification(
                            rule,
                            s,
                            NotificationStatus::Firing,
                            &rule.channels,
                            wall,
                        ));
                    } else {
                        s.state = RuleState::Pending;
                    }
                    continue;
                }
                // Firing: repeat, and escalate when nobody has acknowledged.
                if let (Some(every), Some(last)) = (rule.repeat_interval, s.last_notified)
                    && now.duration_since(last) >= every
                {
                    s.last_notified = Some(now);
                    s.sends += 1;
                    out.push(notification(
                        rule,
                        s,
                        NotificationStatus::Firing,
                        &rule.channels,
                        wall,
                    ));
                }
                if let (Some(escalation), Some((started, _))) = (&rule.escalation, s.firing_since)
                    && !s.escalated
                    && !s.acknowledged
                    && now.duration_since(started) >= escalation.after
                {
                    s.escalated = true;
                    s.sends += 1;
                    out.push(notification(
                        rule,
                        s,
                        NotificationStatus::Firing,
                        &escalation.channels,
                        wall,
                    ));
                }
            } else {
                s.active_since = None;
                if s.state == RuleState::Firing {
                    // Everyone who heard it fire hears it resolve.
                    let mut channels = rule.channels.clone();
                    if s.escalated {
                        channels.extend(
                            rule.escalation
                                .iter()
                                .flat_map(|e| e.channels.iter().cloned()),
                        );
                    }
                    s.state = RuleState::Resolved;
                    out.push(notification(
                        rule,
                        s,
                        NotificationStatus::Resolved,
                        &channels,
                        wall,
                    ));
                } else {
                    s.state = RuleState::Inactive;
                }
            }
        }
        out
    }

    /// Whether the rule's condition holds now, and the value it looked at.
    fn active(&self, rule: &Rule, s: &mut Status, now: Instant) -> (bool, f64) {
        match &rule.condition {
            Condition::Threshold {
                metric,
                op,
                threshold,
                ..
            } => match self.source.value(metric) {
                Some(v) => (op.holds(v, *threshold), v),
                None => (false, 0.0),
            },
            Condition::HealthFailures { check, consecutive } => {
                let failures = self.source.health_failures(check).unwrap_or(0);
                (failures >= *consecutive, f64::from(failures))
            }
            Condition::ErrorRate {
                window, percent, ..
            } => {
                let total = self.source.value(&MetricRef {
                    name: EXECUTIONS_METRIC.into(),
                    labels: BTreeMap::new(),
                });
                let failed: f64 = FAILED_OUTCOMES
                    .iter()
                    .filter_map(|outcome| {
                        let labels =
                            BTreeMap::from([("outcome".to_owned(), (*outcome).to_owned())]);
                        self.source.value(&MetricRef {
                            name: EXECUTIONS_METRIC.into(),
                            labels,
                        })
                    })
                    .sum();
                let total = total.unwrap_or(0.0);
                s.samples.push_back((now, failed, total));
                // Keep one sample at or beyond the window's start as the baseline.
                while s.samples.len() > 2 && now.duration_since(s.samples[1].0) >= *window {
                    s.samples.pop_front();
                }
                let (_, failed_then, total_then) = s.samples[0];
                let executions = total - total_then;
                if executions <= 0.0 {
                    return (false, 0.0);
                }
                let rate = 100.0 * (failed - failed_then) / executions;
                (rate >= *percent, rate)
            }
            Condition::ResourceUsage {
                usage,
                limit,
                percent,
                ..
            } => match (self.source.value(usage), self.source.value(limit)) {
                (Some(u), Some(l)) if l > 0.0 => {
                    let p = 100.0 * u / l;
                    (p >= *percent, p)
                }
                _ => (false, 0.0),
            },
        }
    }
}

/// Evaluates `engine` every configured interval on the current tokio runtime and hands each
/// notification to `dispatcher`. Evaluation never waits on delivery.
pub fn spawn_evaluation(
    engine: Arc<AlertEngine>,
    dispatcher: Arc<crate::Dispatcher>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(engine.config().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for notification in engine.evaluate() {
                dispatcher.send(notification);
            }
        }
    })
}

fn hold(condition: &Condition) -> Duration {
    match condition {
        Condition::Threshold { for_, .. }
        | Condition::ErrorRate { for_, .. }
        | Condition::ResourceUsage { for_, .. } => *for_,
        Condition::HealthFailures { .. } => Duration::ZERO,
    }
}

fn notification(
    rule: &Rule,
    s: &Status,
    status: NotificationStatus,
    channels: &[String],
    wall: SystemTime,
) -> Notification {
    let starts_at = s.firing_since.map_or(wall, |(_, w)| w);
    let key = match status {
        NotificationStatus::Firing => {
            format!("{}:{}:firing:{}", rule.name, s.firing_number, s.sends)
        }
        NotificationStatus::Resolved => format!("{}:{}:resolved", rule.name, s.firing_number),
    };
    Notification {
        rule: rule.name.clone(),
        description: rule.description.clone(),
        severity: rule.severity,
        status,
        value: s.last_value,
        starts_at,
        ends_at: (status == NotificationStatus::Resolved).then_some(wall),
        channels: channels.to_vec(),
        idempotency_key: key,
        firing_number: s.firing_number,
    }
}
