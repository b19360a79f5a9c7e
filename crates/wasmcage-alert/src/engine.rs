//! The rule evaluator: reads values through [`AlertSource`], keeps per-rule state, and
//! produces notifications (deduplicated, repeated, escalated, resolved).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::rules::{
    AlertConfig, Condition, Function, MAX_WINDOW_SAMPLES, MetricRef, Rule, Severity,
};
use crate::{
    CANARY_MODULE, COMMAND_EXITS_METRIC, EXECUTIONS_METRIC, FAILED_OUTCOMES, Notification,
    NotificationStatus,
};

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

impl RuleState {
    /// The lowercase name, as in an API response.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleState::Inactive => "inactive",
            RuleState::Pending => "pending",
            RuleState::Firing => "firing",
            RuleState::Resolved => "resolved",
        }
    }
}

/// A rule whose condition holds: pending (waiting out its `for`) or firing. What
/// [`AlertEngine::active_alerts`] lists, e.g. for `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    /// The rule's name.
    pub rule: String,
    /// The rule's severity.
    pub severity: Severity,
    /// [`RuleState::Pending`] or [`RuleState::Firing`].
    pub state: RuleState,
    /// Since when: when the condition started holding (pending) or when the rule started
    /// firing (firing).
    pub since: SystemTime,
    /// The value the condition saw at the last evaluation.
    pub value: f64,
    /// The firing's instance id, shared by its notifications' idempotency keys (firing only).
    pub instance: Option<String>,
    /// How many escalation steps have been notified.
    pub escalation_steps_notified: usize,
    /// Whether someone acknowledged the firing alert (it no longer escalates).
    pub acknowledged: bool,
    /// When it was acknowledged.
    pub acknowledged_at: Option<SystemTime>,
}

/// Why [`AlertEngine::acknowledge`] did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcknowledgeError {
    /// No rule has this name (an API answers 404).
    #[error("there is no alert rule named {0:?}")]
    UnknownRule(String),
    /// The rule exists but is not firing, so there is nothing to acknowledge (an API answers
    /// 409).
    #[error("the alert {0:?} is not firing; only a firing alert can be acknowledged")]
    NotFiring(String),
}

/// The current firing of a rule.
#[derive(Debug)]
struct Firing {
    since: Instant,
    since_wall: SystemTime,
    /// Unique per firing of a rule, across restarts: the firing's number and start time.
    instance: String,
    last_notified: Instant,
    repeats: u64,
    /// Escalation steps notified so far.
    steps_notified: usize,
    acknowledged_at: Option<SystemTime>,
    /// Every channel told of this firing, in order, so that each hears it resolve.
    notified: Vec<String>,
}

impl Firing {
    fn tell(&mut self, channels: &[String]) {
        for channel in channels {
            if !self.notified.contains(channel) {
                self.notified.push(channel.clone());
            }
        }
    }
}

/// A counter's samples over a window, for its growth within the window.
///
/// Values are reset-corrected (a drop counts as a restart from zero), and samples closer
/// together than `window / MAX_WINDOW_SAMPLES` are not kept, so memory stays bounded however
/// often the rule is evaluated.
#[derive(Debug)]
struct Window {
    span: Duration,
    /// (time, reset-corrected value), oldest first; the first is at or before the window's
    /// start once the history is that long.
    samples: VecDeque<(Instant, f64)>,
    last_raw: Option<f64>,
    corrected: f64,
}

impl Window {
    fn new(span: Duration) -> Self {
        Window {
            span,
            samples: VecDeque::new(),
            last_raw: None,
            corrected: 0.0,
        }
    }

    /// Records `raw` (`None`: no series) at `now` and returns the growth within the window.
    /// A series that does not exist yet counts as zero, so its first value is growth; one
    /// that disappears keeps its last value.
    fn observe(&mut self, now: Instant, raw: Option<f64>) -> f64 {
        let raw = raw
            .filter(|v| v.is_finite())
            .or(self.last_raw)
            .unwrap_or(0.0);
        match self.last_raw {
            Some(previous) if raw >= previous => self.corrected += raw - previous,
            Some(_) => self.corrected += raw,
            None => {}
        }
        self.last_raw = Some(raw);
        // Keep one sample at or before the window's start as the baseline.
        while self.samples.len() >= 2 && now.duration_since(self.samples[1].0) >= self.span {
            self.samples.pop_front();
        }
        let growth = self
            .samples
            .front()
            .map_or(0.0, |(_, then)| self.corrected - then);
        let spacing = self.span / MAX_WINDOW_SAMPLES as u32;
        let keep = self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= spacing);
        if keep {
            self.samples.push_back((now, self.corrected));
            if self.samples.len() > MAX_WINDOW_SAMPLES + 1 {
                self.samples.pop_front();
            }
        }
        growth
    }
}

#[derive(Debug)]
struct Status {
    state: RuleState,
    /// When the condition started holding (monotonic and wall clock).
    active_since: Option<(Instant, SystemTime)>,
    /// The current firing, kept until the next evaluation after it resolves.
    firing: Option<Firing>,
    /// Counts firings, so that each firing and its resolve share a key prefix.
    firing_number: u64,
    /// For windowed thresholds: the metric; for error rates: the failed executions.
    window: Option<Window>,
    /// For error rates: all executions.
    total: Option<Window>,
    last_value: f64,
}

impl Status {
    fn new(condition: &Condition) -> Self {
        let (window, total) = match condition {
            Condition::Threshold { function, .. } => (function.window().map(Window::new), None),
            Condition::ErrorRate { window, .. } => {
                (Some(Window::new(*window)), Some(Window::new(*window)))
            }
            Condition::HealthFailures { .. } | Condition::ResourceUsage { .. } => (None, None),
        };
        Status {
            state: RuleState::Inactive,
            active_since: None,
            firing: None,
            firing_number: 0,
            window,
            total,
            last_value: 0.0,
        }
    }

    fn active_alert(&self, rule: &Rule) -> Option<ActiveAlert> {
        let (since, firing) = match (self.state, &self.firing) {
            (RuleState::Firing, Some(f)) => (f.since_wall, Some(f)),
            (RuleState::Pending, _) => (self.active_since?.1, None),
            _ => return None,
        };
        Some(ActiveAlert {
            rule: rule.name.clone(),
            severity: rule.severity,
            state: self.state,
            since,
            value: self.last_value,
            instance: firing.map(|f| f.instance.clone()),
            escalation_steps_notified: firing.map_or(0, |f| f.steps_notified),
            acknowledged: firing.is_some_and(|f| f.acknowledged_at.is_some()),
            acknowledged_at: firing.and_then(|f| f.acknowledged_at),
        })
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
            .map(|r| (r.name.clone(), Status::new(&r.condition)))
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

    /// Every pending or firing alert, in the order of the rules. Backs `GET /v1/alerts`.
    pub fn active_alerts(&self) -> Vec<ActiveAlert> {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        self.config
            .rules
            .iter()
            .filter_map(|rule| status.get(&rule.name)?.active_alert(rule))
            .collect()
    }

    /// Acknowledges a firing alert: it is not escalated further (repeats and the resolve are
    /// still sent). Acknowledging twice is harmless. Returns the alert as it now stands.
    /// Backs `POST /v1/alerts/{rule}/ack`.
    pub fn acknowledge(&self, rule: &str) -> Result<ActiveAlert, AcknowledgeError> {
        let wall = self.clock.wall();
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(s), Some(r)) = (
            status.get_mut(rule),
            self.config.rules.iter().find(|r| r.name == rule),
        ) else {
            return Err(AcknowledgeError::UnknownRule(rule.to_owned()));
        };
        match (&s.state, &mut s.firing) {
            (RuleState::Firing, Some(firing)) => {
                firing.acknowledged_at.get_or_insert(wall);
            }
            _ => return Err(AcknowledgeError::NotFiring(rule.to_owned())),
        }
        Ok(s.active_alert(r).expect("a firing rule is active"))
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
                s.firing = None;
            }
            let (active, value) = self.active(rule, s, now);
            s.last_value = value;
            if !active {
                s.active_since = None;
                if s.state == RuleState::Firing {
                    s.state = RuleState::Resolved;
                    let firing = s.firing.as_ref().expect("a firing rule has a firing");
                    // Everyone who heard it fire hears it resolve.
                    let channels = firing.notified.clone();
                    out.push(notification(
                        rule,
                        s,
                        NotificationStatus::Resolved,
                        "resolved".into(),
                        &channels,
                        wall,
                    ));
                } else {
                    s.state = RuleState::Inactive;
                }
                continue;
            }
            let since = s.active_since.get_or_insert((now, wall)).0;
            if s.state != RuleState::Firing {
                if now.duration_since(since) < hold(&rule.condition) {
                    s.state = RuleState::Pending;
                    continue;
                }
                s.state = RuleState::Firing;
                s.firing_number += 1;
                let mut firing = Firing {
                    since: now,
                    since_wall: wall,
                    instance: format!("{}-{}", s.firing_number, unix_millis(wall)),
                    last_notified: now,
                    repeats: 0,
                    steps_notified: 0,
                    acknowledged_at: None,
                    notified: Vec::new(),
                };
                firing.tell(&rule.channels);
                s.firing = Some(firing);
                out.push(notification(
                    rule,
                    s,
                    NotificationStatus::Firing,
                    "firing".into(),
                    &rule.channels,
                    wall,
                ));
            }
            // Firing: repeat on the interval, and escalate step by step while nobody has
            // acknowledged. Steps that fell due together (after a long pause) are each sent.
            let firing = s.firing.as_mut().expect("a firing rule has a firing");
            let mut due = Vec::new();
            if let Some(every) = rule.repeat_interval
                && now.duration_since(firing.last_notified) >= every
            {
                firing.last_notified = now;
                firing.repeats += 1;
                due.push((format!("repeat-{}", firing.repeats), rule.channels.clone()));
            }
            let steps = rule.escalation_steps(&self.config);
            while firing.acknowledged_at.is_none()
                && let Some(step) = steps.get(firing.steps_notified)
                && now.duration_since(firing.since) >= step.after
            {
                firing.steps_notified += 1;
                firing.tell(&step.channels);
                due.push((
                    format!("escalation-{}", firing.steps_notified),
                    step.channels.clone(),
                ));
            }
            for (step, channels) in due {
                out.push(notification(
                    rule,
                    s,
                    NotificationStatus::Firing,
                    step,
                    &channels,
                    wall,
                ));
            }
        }
        out
    }

    /// Whether the rule's condition holds now, and the value it looked at.
    fn active(&self, rule: &Rule, s: &mut Status, now: Instant) -> (bool, f64) {
        match &rule.condition {
            Condition::Threshold {
                metric,
                function,
                op,
                threshold,
                ..
            } => {
                let read = self.source.value(metric);
                let value = match (function, s.window.as_mut()) {
                    (Function::Increase(_), Some(w)) => Some(w.observe(now, read)),
                    (Function::Rate(span), Some(w)) => {
                        Some(w.observe(now, read) / span.as_secs_f64())
                    }
                    _ => read,
                };
                match value {
                    Some(v) => (op.holds(v, *threshold), v),
                    None => (false, 0.0),
                }
            }
            Condition::HealthFailures { check, consecutive } => {
                let failures = self.source.health_failures(check).unwrap_or(0);
                (failures >= *consecutive, f64::from(failures))
            }
            Condition::ErrorRate { percent, .. } => {
                // The canary's executions are the host's own, not user traffic: they are
                // taken out of both sides. A command that exited nonzero failed too.
                let value = |name: &str, labels: &[(&str, &str)]| {
                    self.source.value(&MetricRef {
                        name: name.into(),
                        labels: labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    })
                };
                let user = |name: &str, labels: &[(&str, &str)]| {
                    let all = value(name, labels)?;
                    let mut canary = labels.to_vec();
                    canary.push(("module", CANARY_MODULE));
                    Some(all - value(name, &canary).unwrap_or(0.0))
                };
                let total = user(EXECUTIONS_METRIC, &[]);
                let failed = FAILED_OUTCOMES
                    .iter()
                    .filter_map(|outcome| user(EXECUTIONS_METRIC, &[("outcome", outcome)]))
                    .chain(user(COMMAND_EXITS_METRIC, &[("status", "nonzero")]))
                    .fold(None, |sum: Option<f64>, v| Some(sum.unwrap_or(0.0) + v));
                let (Some(failed_window), Some(total_window)) = (&mut s.window, &mut s.total)
                else {
                    return (false, 0.0);
                };
                let failed = failed_window.observe(now, failed);
                let executions = total_window.observe(now, total);
                if executions <= 0.0 {
                    return (false, 0.0);
                }
                let rate = 100.0 * failed / executions;
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
/// notification to `dispatcher`. Evaluation never waits on delivery, only on the outbox write.
pub fn spawn_evaluation(
    engine: Arc<AlertEngine>,
    dispatcher: Arc<crate::Dispatcher>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(engine.config().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Sending writes each notification to the outbox (a synchronous, durable write)
            // before it returns, so evaluation and sending run off the async workers.
            let (engine, dispatcher) = (engine.clone(), dispatcher.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for notification in engine.evaluate() {
                    tracing::warn!(
                        target: "wasmcage::alert",
                        rule = %notification.rule,
                        severity = notification.severity.as_str(),
                        status = notification.status.as_str(),
                        step = %notification.step,
                        value = notification.value,
                        key = %notification.idempotency_key,
                        "alert {}", notification.status.as_str()
                    );
                    dispatcher.send(notification);
                }
            })
            .await;
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

fn unix_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn notification(
    rule: &Rule,
    s: &Status,
    status: NotificationStatus,
    step: String,
    channels: &[String],
    wall: SystemTime,
) -> Notification {
    let firing = s.firing.as_ref().expect("notifications are about a firing");
    Notification {
        rule: rule.name.clone(),
        description: rule.description.clone(),
        severity: rule.severity,
        status,
        value: s.last_value,
        starts_at: firing.since_wall,
        ends_at: (status == NotificationStatus::Resolved).then_some(wall),
        channels: channels.to_vec(),
        idempotency_key: format!("{}:{}:{step}", rule.name, firing.instance),
        instance: firing.instance.clone(),
        step,
        firing_number: s.firing_number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_keeps_a_bounded_number_of_samples_however_often_it_is_fed() {
        let mut window = Window::new(Duration::from_secs(60));
        let start = Instant::now();
        let mut growth = 0.0;
        // One sample a millisecond for 100 s, the counter growing by one each time.
        for i in 0..100_000u32 {
            let now = start + Duration::from_millis(u64::from(i));
            growth = window.observe(now, Some(f64::from(i)));
            assert!(window.samples.len() <= MAX_WINDOW_SAMPLES + 1, "at {i}");
        }
        // About 60 000 within the last 60 s, give or take one sample's spacing (~59 ms).
        assert!((60_000.0..60_100.0).contains(&growth), "{growth}");
    }
}
