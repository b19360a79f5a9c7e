//! Rule timing on a manual clock: `for` durations, repeats, escalation, acknowledgement,
//! resolution, error-rate windows and health failures. No sleeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmcage_alert::{
    AcknowledgeError, AlertConfig, AlertEngine, ChannelConfig, Condition, DeliveryConfig,
    Escalation, EscalationPolicy, Function, ManualClock, MetricRef, Notification,
    NotificationStatus, Operator, Rule, RuleState, Severity,
};

use crate::Values;

fn config(
    condition: Condition,
    repeat: Option<Duration>,
    escalation: Option<Escalation>,
) -> AlertConfig {
    let channel = |url: &str| ChannelConfig::Webhook {
        url: url.into(),
        secret: None,
        headers: BTreeMap::new(),
    };
    AlertConfig {
        interval: Duration::from_secs(15),
        delivery: DeliveryConfig::default(),
        channels: BTreeMap::from([
            ("team".into(), channel("http://127.0.0.1:1/a")),
            ("boss".into(), channel("http://127.0.0.1:1/b")),
            ("director".into(), channel("http://127.0.0.1:1/c")),
        ]),
        escalation_policies: BTreeMap::new(),
        rules: vec![Rule {
            name: "r".into(),
            description: "test rule".into(),
            severity: Severity::Warning,
            channels: vec!["team".into()],
            repeat_interval: repeat,
            escalation,
            escalation_policy: None,
            enabled: true,
            condition,
        }],
    }
}

fn threshold(for_: Duration) -> Condition {
    Condition::Threshold {
        metric: MetricRef {
            name: "queue_depth".into(),
            labels: BTreeMap::new(),
        },
        function: Function::Value,
        op: Operator::Ge,
        threshold: 10.0,
        for_,
    }
}

fn setup(config: AlertConfig) -> (AlertEngine, Arc<Values>, ManualClock) {
    let values = Arc::new(Values::default());
    let clock = ManualClock::default();
    let engine = AlertEngine::new(config, values.clone(), Arc::new(clock.clone()));
    (engine, values, clock)
}

fn summary(ns: &[Notification]) -> Vec<(NotificationStatus, Vec<String>)> {
    ns.iter().map(|n| (n.status, n.channels.clone())).collect()
}

#[test]
fn a_condition_must_hold_for_its_duration_before_firing() {
    let (engine, values, clock) = setup(config(threshold(Duration::from_secs(60)), None, None));
    values.set("queue_depth", &[], 12.0);
    assert!(engine.evaluate().is_empty());
    assert_eq!(engine.state("r"), Some(RuleState::Pending));
    clock.advance(Duration::from_secs(59));
    assert!(engine.evaluate().is_empty());
    clock.advance(Duration::from_secs(1));
    let fired = engine.evaluate();
    assert_eq!(
        summary(&fired),
        [(NotificationStatus::Firing, vec!["team".to_owned()])]
    );
    assert_eq!(engine.state("r"), Some(RuleState::Firing));
    // Deduplicated: still firing, no repeat interval, nothing more.
    clock.advance(Duration::from_secs(3600));
    assert!(engine.evaluate().is_empty());
    values.set("queue_depth", &[], 3.0);
    let resolved = engine.evaluate();
    assert_eq!(
        summary(&resolved),
        [(NotificationStatus::Resolved, vec!["team".to_owned()])]
    );
    let instance = &resolved[0].instance;
    assert!(instance.starts_with("1-"), "{instance}");
    assert_eq!(
        resolved[0].idempotency_key,
        format!("r:{instance}:resolved")
    );
    assert_eq!(
        resolved[0].for_channel("team").idempotency_key,
        format!("r:team:{instance}:resolved")
    );
    assert!(resolved[0].ends_at.is_some());
    assert_eq!(engine.state("r"), Some(RuleState::Resolved));
    assert!(engine.evaluate().is_empty());
    assert_eq!(engine.state("r"), Some(RuleState::Inactive));
}

#[test]
fn a_blip_shorter_than_for_never_fires() {
    let (engine, values, clock) = setup(config(threshold(Duration::from_secs(60)), None, None));
    values.set("queue_depth", &[], 12.0);
    engine.evaluate();
    clock.advance(Duration::from_secs(30));
    values.set("queue_depth", &[], 1.0);
    assert!(engine.evaluate().is_empty());
    values.set("queue_depth", &[], 12.0);
    clock.advance(Duration::from_secs(45));
    assert!(
        engine.evaluate().is_empty(),
        "the hold restarted when the condition broke"
    );
}

#[test]
fn firing_alerts_repeat_on_their_interval() {
    let (engine, values, clock) = setup(config(
        threshold(Duration::ZERO),
        Some(Duration::from_secs(600)),
        None,
    ));
    values.set("queue_depth", &[], 50.0);
    assert_eq!(engine.evaluate().len(), 1);
    clock.advance(Duration::from_secs(599));
    assert!(engine.evaluate().is_empty());
    clock.advance(Duration::from_secs(1));
    let repeat = engine.evaluate();
    assert_eq!(repeat.len(), 1);
    assert_eq!(
        repeat[0].idempotency_key,
        format!("r:{}:repeat-1", repeat[0].instance),
        "a repeat is a new delivery"
    );
}

#[test]
fn unacknowledged_alerts_escalate_and_acknowledged_ones_do_not() {
    let escalation = Some(Escalation {
        after: Duration::from_secs(900),
        channels: vec!["boss".into()],
    });
    let (engine, values, clock) = setup(config(threshold(Duration::ZERO), None, escalation));
    values.set("queue_depth", &[], 50.0);
    engine.evaluate();
    clock.advance(Duration::from_secs(900));
    let escalated = engine.evaluate();
    assert_eq!(
        summary(&escalated),
        [(NotificationStatus::Firing, vec!["boss".to_owned()])]
    );
    values.set("queue_depth", &[], 0.0);
    let resolved = engine.evaluate();
    assert_eq!(
        summary(&resolved),
        [(
            NotificationStatus::Resolved,
            vec!["team".to_owned(), "boss".to_owned()]
        )],
        "everyone who heard it fire hears it resolve"
    );

    // Second firing: acknowledged before the escalation time.
    values.set("queue_depth", &[], 50.0);
    clock.advance(Duration::from_secs(1));
    let fired = engine.evaluate();
    assert_eq!(fired[0].firing_number, 2);
    assert!(engine.acknowledge("r").unwrap().acknowledged);
    clock.advance(Duration::from_secs(3600));
    assert!(engine.evaluate().is_empty(), "acknowledged: no escalation");
    assert_eq!(
        engine.acknowledge("nope"),
        Err(AcknowledgeError::UnknownRule("nope".into()))
    );
}

#[test]
fn error_rate_uses_counter_growth_within_the_window_not_totals() {
    let condition = Condition::ErrorRate {
        window: Duration::from_secs(300),
        percent: 5.0,
        for_: Duration::ZERO,
    };
    let (engine, values, clock) = setup(config(condition, None, None));
    // A bad past: 10 000 executions, half failed, long ago.
    let set = |completed: f64, trapped: f64| {
        values.set(
            "wasmcage_executions_total",
            &[("outcome", "completed")],
            completed,
        );
        values.set("wasmcage_executions_total", &[("outcome", "trap")], trapped);
    };
    set(5_000.0, 5_000.0);
    engine.evaluate();
    // Now: 1 000 new executions with 10 failures (1 %): below 5 % though the total is 50 %.
    for step in 1..=10 {
        clock.advance(Duration::from_secs(60));
        set(5_000.0 + 99.0 * f64::from(step), 5_000.0 + f64::from(step));
        assert!(engine.evaluate().is_empty(), "step {step}");
    }
    // Then 120 new executions with 40 failures: within the 5-minute window (baseline 360 s
    // ago: 10 600 executions, 5 006 failed) that is 44 failures in 520 executions, 8.5 %.
    clock.advance(Duration::from_secs(60));
    set(5_990.0 + 80.0, 5_010.0 + 40.0);
    let fired = engine.evaluate();
    assert_eq!(fired.len(), 1);
    assert!(
        fired[0].value > 5.0 && fired[0].value < 20.0,
        "rate over the window: {}",
        fired[0].value
    );
}

#[test]
fn error_rate_counts_nonzero_exits_and_leaves_out_the_canary() {
    let condition = Condition::ErrorRate {
        window: Duration::from_secs(300),
        percent: 5.0,
        for_: Duration::ZERO,
    };
    let check = |user_exits: (f64, f64), canary: (f64, f64)| {
        let (engine, values, clock) = setup(config(condition.clone(), None, None));
        let set = |scale: f64| {
            let (zero, nonzero) = user_exits;
            let (completed, trapped) = canary;
            let m = "wasmcage_executions_total";
            values.set(
                m,
                &[("module", "cmd@1"), ("outcome", "exited")],
                scale * (zero + nonzero),
            );
            let exits = "wasmcage_command_exits_total";
            values.set(
                exits,
                &[("module", "cmd@1"), ("status", "zero")],
                scale * zero,
            );
            values.set(
                exits,
                &[("module", "cmd@1"), ("status", "nonzero")],
                scale * nonzero,
            );
            values.set(
                m,
                &[("module", "canary"), ("outcome", "completed")],
                scale * completed,
            );
            values.set(
                m,
                &[("module", "canary"), ("outcome", "trap")],
                scale * trapped,
            );
        };
        set(0.0);
        engine.evaluate();
        clock.advance(Duration::from_secs(60));
        set(1.0);
        engine.evaluate().first().map(|n| n.value)
    };
    // 10 of 100 commands exited nonzero: 10 %, though no execution trapped.
    assert_eq!(check((90.0, 10.0), (0.0, 0.0)), Some(10.0));
    // Healthy users and a failing canary: the canary has its own rule, not this one.
    assert_eq!(check((100.0, 0.0), (10.0, 90.0)), None);
    // The canary's successes do not dilute the users' failures either.
    assert_eq!(check((90.0, 10.0), (10_000.0, 0.0)), Some(10.0));
}

#[test]
fn consecutive_health_failures_fire_and_recovery_resolves() {
    let condition = Condition::HealthFailures {
        check: "canary".into(),
        consecutive: 3,
    };
    let (engine, values, _clock) = setup(config(condition, None, None));
    for failures in [1, 2] {
        values.set_health_failures("canary", failures);
        assert!(engine.evaluate().is_empty());
    }
    values.set_health_failures("canary", 3);
    assert_eq!(engine.evaluate()[0].status, NotificationStatus::Firing);
    values.set_health_failures("canary", 0);
    assert_eq!(engine.evaluate()[0].status, NotificationStatus::Resolved);
}

#[test]
fn resource_usage_percent_held_for_a_duration() {
    let metric = |name: &str| MetricRef {
        name: name.into(),
        labels: BTreeMap::new(),
    };
    let condition = Condition::ResourceUsage {
        usage: metric("used_bytes"),
        limit: metric("limit_bytes"),
        percent: 90.0,
        for_: Duration::from_secs(120),
    };
    let (engine, values, clock) = setup(config(condition, None, None));
    values.set("limit_bytes", &[], 1000.0);
    values.set("used_bytes", &[], 950.0);
    assert!(engine.evaluate().is_empty());
    clock.advance(Duration::from_secs(120));
    let fired = engine.evaluate();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].value, 95.0);
}

fn counter(function: Function, threshold: f64) -> Condition {
    Condition::Threshold {
        metric: MetricRef {
            name: "denials_total".into(),
            labels: BTreeMap::new(),
        },
        function,
        op: Operator::Gt,
        threshold,
        for_: Duration::ZERO,
    }
}

#[test]
fn a_windowed_increase_fires_on_growth_and_resolves_when_growth_stops() {
    let five_minutes = Duration::from_secs(300);
    let (engine, values, clock) = setup(config(
        counter(Function::Increase(five_minutes), 0.0),
        None,
        None,
    ));
    // A counter with a past: its total is far above the threshold, but it does not grow.
    values.set("denials_total", &[], 1_000.0);
    for _ in 0..5 {
        assert!(engine.evaluate().is_empty());
        clock.advance(Duration::from_secs(60));
    }
    values.set("denials_total", &[], 1_003.0);
    let fired = engine.evaluate();
    assert_eq!(
        summary(&fired),
        [(NotificationStatus::Firing, vec!["team".to_owned()])]
    );
    assert_eq!(
        fired[0].value, 3.0,
        "the growth within the window, not the total"
    );
    // No more growth: still firing while the growth is inside the window...
    for _ in 0..4 {
        clock.advance(Duration::from_secs(60));
        assert!(engine.evaluate().is_empty());
        assert_eq!(engine.state("r"), Some(RuleState::Firing));
    }
    // ...and resolved once the window has moved past it: the rule does not latch.
    clock.advance(Duration::from_secs(60));
    let resolved = engine.evaluate();
    assert_eq!(resolved[0].status, NotificationStatus::Resolved);
    assert_eq!(resolved[0].value, 0.0);

    // The same counter compared by value latches: it never resolves.
    let (engine, values, clock) = setup(config(counter(Function::Value, 0.0), None, None));
    values.set("denials_total", &[], 1_003.0);
    assert_eq!(engine.evaluate().len(), 1);
    clock.advance(Duration::from_secs(3600));
    assert!(engine.evaluate().is_empty());
    assert_eq!(engine.state("r"), Some(RuleState::Firing));
}

#[test]
fn rate_is_growth_per_second_and_resets_and_new_series_count_as_growth() {
    let minute = Duration::from_secs(60);
    let check = |steps: &[(u64, Option<f64>)], function: Function, expected: f64| {
        let (engine, values, clock) = setup(config(counter(function, -1.0), None, None));
        let mut last = f64::NAN;
        for (at, value) in steps {
            clock.advance(Duration::from_secs(*at));
            if let Some(v) = value {
                values.set("denials_total", &[], *v);
            }
            engine.evaluate();
            last = engine.active_alerts()[0].value;
        }
        assert_eq!(last, expected, "{steps:?} {function:?}");
    };
    // 120 in a minute is 2 per second.
    check(
        &[(0, Some(0.0)), (60, Some(120.0))],
        Function::Rate(minute),
        2.0,
    );
    // A restart of the counter (down to 10) counts the 10 as growth: 5 + 10.
    check(
        &[(0, Some(100.0)), (20, Some(105.0)), (20, Some(10.0))],
        Function::Increase(minute),
        15.0,
    );
    // A series that appears counts from zero.
    check(
        &[(0, None), (30, Some(7.0))],
        Function::Increase(minute),
        7.0,
    );
    // Growth older than the window is out of it.
    check(
        &[
            (0, Some(0.0)),
            (30, Some(50.0)),
            (60, Some(50.0)),
            (30, Some(51.0)),
        ],
        Function::Increase(minute),
        1.0,
    );
}

#[test]
fn an_escalation_policy_escalates_step_by_step_until_acknowledged() {
    let mut config = config(threshold(Duration::ZERO), None, None);
    let step = |minutes: u64, channel: &str| Escalation {
        after: Duration::from_secs(60 * minutes),
        channels: vec![channel.to_owned()],
    };
    config.escalation_policies.insert(
        "ladder".into(),
        EscalationPolicy {
            steps: vec![step(10, "boss"), step(30, "director")],
        },
    );
    config.rules[0].escalation_policy = Some("ladder".into());
    config.validate(&|_| true).unwrap();
    let (engine, values, clock) = setup(config);
    values.set("queue_depth", &[], 50.0);
    let step_of = |ns: &[Notification]| -> Vec<(String, Vec<String>)> {
        ns.iter()
            .map(|n| (n.step.clone(), n.channels.clone()))
            .collect()
    };
    let s = |step: &str, channel: &str| (step.to_owned(), vec![channel.to_owned()]);
    assert_eq!(step_of(&engine.evaluate()), [s("firing", "team")]);
    clock.advance(Duration::from_secs(600));
    assert_eq!(step_of(&engine.evaluate()), [s("escalation-1", "boss")]);
    clock.advance(Duration::from_secs(1200));
    assert_eq!(step_of(&engine.evaluate()), [s("escalation-2", "director")]);
    values.set("queue_depth", &[], 0.0);
    let resolved = engine.evaluate();
    assert_eq!(
        summary(&resolved),
        [(
            NotificationStatus::Resolved,
            vec!["team".to_owned(), "boss".to_owned(), "director".to_owned()]
        )],
        "everyone told of the firing hears it resolve"
    );

    // Steps that fell due together are each sent; acknowledgement stops the rest.
    values.set("queue_depth", &[], 50.0);
    clock.advance(Duration::from_secs(1));
    engine.evaluate();
    clock.advance(Duration::from_secs(900));
    assert_eq!(step_of(&engine.evaluate()), [s("escalation-1", "boss")]);
    let acked = engine.acknowledge("r").unwrap();
    assert_eq!(acked.escalation_steps_notified, 1);
    assert!(acked.acknowledged_at.is_some());
    clock.advance(Duration::from_secs(7200));
    assert!(engine.evaluate().is_empty(), "acknowledged: no second step");
    values.set("queue_depth", &[], 0.0);
    assert_eq!(
        summary(&engine.evaluate()),
        [(
            NotificationStatus::Resolved,
            vec!["team".to_owned(), "boss".to_owned()]
        )]
    );

    // After a long pause both steps are due at once.
    values.set("queue_depth", &[], 50.0);
    clock.advance(Duration::from_secs(1));
    engine.evaluate();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        step_of(&engine.evaluate()),
        [s("escalation-1", "boss"), s("escalation-2", "director")]
    );
}

#[test]
fn active_alerts_list_pending_and_firing_rules_and_acknowledge_says_why_not() {
    let (engine, values, clock) = setup(config(threshold(Duration::from_secs(60)), None, None));
    assert!(engine.active_alerts().is_empty());
    assert_eq!(
        engine.acknowledge("r"),
        Err(AcknowledgeError::NotFiring("r".into()))
    );
    values.set("queue_depth", &[], 12.0);
    let started = wasmcage_alert::Clock::wall(&clock);
    engine.evaluate();
    let pending = engine.active_alerts();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, RuleState::Pending);
    assert_eq!(pending[0].value, 12.0);
    assert!(pending[0].instance.is_none() && !pending[0].acknowledged);
    let pending_since = pending[0].since;
    assert_eq!(pending_since, started);
    assert!(engine.acknowledge("r").is_err(), "pending is not firing");

    clock.advance(Duration::from_secs(60));
    values.set("queue_depth", &[], 13.0);
    let fired = engine.evaluate();
    let firing = engine.active_alerts();
    assert_eq!(firing[0].state, RuleState::Firing);
    assert_eq!(firing[0].since, pending_since + Duration::from_secs(60));
    assert_eq!(firing[0].value, 13.0);
    assert_eq!(
        firing[0].instance.as_deref(),
        Some(fired[0].instance.as_str())
    );
    assert_eq!(firing[0].severity, Severity::Warning);
    let acked = engine.acknowledge("r").unwrap();
    assert!(acked.acknowledged);
    assert_eq!(engine.active_alerts(), std::slice::from_ref(&acked));
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        engine.acknowledge("r").unwrap().acknowledged_at,
        acked.acknowledged_at,
        "acknowledging twice keeps the first time"
    );
    values.set("queue_depth", &[], 1.0);
    engine.evaluate();
    assert!(engine.active_alerts().is_empty());
    assert_eq!(RuleState::Firing.as_str(), "firing");
}
