//! Deliveries to real HTTP receivers on 127.0.0.1: Slack-shaped, HMAC-verifying, flaky, and a
//! real Alertmanager. Every firing and every resolve arrives exactly once (after dropping
//! retried duplicates by idempotency key), in order per rule.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use wasmcage_alert::{
    AlertConfig, AlertEngine, ChannelConfig, Condition, DeliveryConfig, Dispatcher, Function,
    ManualClock, MetricRef, Notification, NotificationStatus, Operator, PagerDutySeverity, Rule,
    Severity, SeverityMap, pagerduty_body, rfc3339, sign,
};

use crate::Values;

/// What a receiver saw: (idempotency key, JSON body), in arrival order.
pub type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Accepts everything.
    Good,
    /// Accepts only requests whose HMAC signature verifies with this secret.
    Signed(&'static str),
    /// Answers 500 to every other request and stalls every fifth past the client's timeout.
    Flaky,
    /// Records every request and answers 500.
    Failing,
    /// Never answers.
    Hanging,
}

/// A receiver on 127.0.0.1 at `/hook`, recording what it accepted (and, when `Failing`, what
/// it refused).
pub async fn receiver(behaviour: Behaviour) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let count = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (sink, count) = (sink.clone(), count.clone());
            async move {
                let n = count.fetch_add(1, Ordering::Relaxed);
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                match behaviour {
                    Behaviour::Signed(secret) => {
                        let given = headers
                            .get("x-wasmcage-signature")
                            .and_then(|v| v.to_str().ok());
                        if given != Some(sign(secret, &body).as_str()) {
                            return StatusCode::UNAUTHORIZED;
                        }
                    }
                    Behaviour::Flaky if n % 2 == 1 => return StatusCode::INTERNAL_SERVER_ERROR,
                    Behaviour::Failing => {
                        let json = serde_json::from_slice(&body).unwrap();
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((key, json));
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    Behaviour::Hanging => {
                        std::future::pending::<()>().await;
                    }
                    Behaviour::Flaky if n % 5 == 0 => {
                        // Recorded, but answered too late: the sender retries, and the
                        // duplicate must be dropped by its idempotency key.
                        let json = serde_json::from_slice(&body).unwrap();
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((key, json));
                        tokio::time::sleep(Duration::from_millis(600)).await;
                        return StatusCode::OK;
                    }
                    _ => {}
                }
                let json = serde_json::from_slice(&body).unwrap();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((key, json));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

pub fn rule(name: &str, metric: &str, channels: &[&str]) -> Rule {
    Rule {
        name: name.into(),
        description: format!("{metric} is high"),
        severity: Severity::Critical,
        channels: channels.iter().map(|c| (*c).to_owned()).collect(),
        repeat_interval: None,
        escalation: None,
        escalation_policy: None,
        enabled: true,
        condition: Condition::Threshold {
            metric: MetricRef {
                name: metric.into(),
                labels: BTreeMap::new(),
            },
            function: Function::Value,
            op: Operator::Gt,
            threshold: 0.0,
            for_: Duration::ZERO,
        },
    }
}

pub fn fast_delivery() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_millis(300),
        max_attempts: 30,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..DeliveryConfig::default()
    }
}

/// Keys in first-arrival order, duplicates dropped.
pub fn deduplicated(seen: &Seen) -> Vec<(String, serde_json::Value)> {
    let seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    let mut keys = std::collections::HashSet::new();
    seen.iter()
        .filter(|(k, _)| keys.insert(k.clone()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transition_arrives_once_and_in_order_through_flaky_receivers() {
    let (slack_url, slack) = receiver(Behaviour::Good).await;
    let (signed_url, signed) = receiver(Behaviour::Signed("s3cret")).await;
    let (flaky_url, flaky) = receiver(Behaviour::Flaky).await;
    let channels = BTreeMap::from([
        ("slack".to_owned(), ChannelConfig::Slack { url: slack_url }),
        (
            "signed".to_owned(),
            ChannelConfig::Webhook {
                url: signed_url,
                secret: Some("s3cret".into()),
                headers: BTreeMap::from([("x-team".to_owned(), "sandbox".to_owned())]),
            },
        ),
        (
            "flaky".to_owned(),
            ChannelConfig::Webhook {
                url: flaky_url,
                secret: None,
                headers: BTreeMap::new(),
            },
        ),
    ]);
    let all = ["slack", "signed", "flaky"];
    let config = AlertConfig {
        interval: Duration::from_secs(15),
        delivery: fast_delivery(),
        channels: channels.clone(),
        escalation_policies: BTreeMap::new(),
        rules: vec![
            rule("DiskFull", "disk", &all),
            rule("QueueStuck", "queue", &all),
        ],
    };
    let values = Arc::new(Values::default());
    let clock = ManualClock::default();
    let engine = AlertEngine::new(config.clone(), values.clone(), Arc::new(clock.clone()));
    let dispatcher = Dispatcher::start(&channels, &config.delivery).unwrap();

    let mut sent: Vec<Notification> = Vec::new();
    for step in 0..24u32 {
        // The two rules flip at different rates: many firing and resolved transitions.
        values.set("disk", &[], f64::from(step % 2));
        values.set("queue", &[], f64::from((step / 3) % 2));
        clock.advance(Duration::from_secs(15));
        for notification in engine.evaluate() {
            sent.push(notification.clone());
            dispatcher.send(notification);
        }
    }
    assert!(sent.len() >= 20, "enough transitions: {}", sent.len());
    let dispatcher_stats = {
        let guard = Instant::now() + Duration::from_secs(120);
        loop {
            let total = dispatcher.total();
            if total.delivered + total.failed_permanent + total.failed_exhausted
                == 3 * sent.len() as u64
                || Instant::now() > guard
            {
                break total;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    dispatcher.drain().await;
    assert_eq!(
        dispatcher_stats.delivered,
        3 * sent.len() as u64,
        "{dispatcher_stats:?}"
    );
    assert!(
        dispatcher_stats.retried > 0,
        "the flaky receiver forced retries"
    );

    for (name, seen) in [("slack", &slack), ("signed", &signed), ("flaky", &flaky)] {
        let expected: Vec<String> = sent
            .iter()
            .map(|n| n.for_channel(name).idempotency_key)
            .collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let got = deduplicated(seen);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        // Each rule's notifications arrive in the order they were sent.
        for rule in ["DiskFull", "QueueStuck"] {
            let want: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|k| k.starts_with(rule))
                .collect();
            let have: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|k| k.starts_with(rule))
                .collect();
            assert_eq!(have, want, "{name}: {rule}");
        }
        assert_eq!(keys.len(), expected.len(), "{name}: exactly once each");
    }
    assert!(
        flaky.lock().unwrap().len() > sent.len(),
        "the flaky receiver saw retried duplicates"
    );

    // The bodies have the documented shapes.
    let (_, first_slack) = &deduplicated(&slack)[0];
    assert_eq!(first_slack["attachments"][0]["color"], "#d00000");
    assert!(
        first_slack["attachments"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("[FIRING] ")
    );
    let (_, first_hook) = &deduplicated(&signed)[0];
    assert_eq!(first_hook["version"], "1");
    assert_eq!(first_hook["status"], "firing");
    assert_eq!(first_hook["severity"], "critical");
    let resolved = deduplicated(&signed)
        .into_iter()
        .find(|(_, b)| b["status"] == "resolved")
        .unwrap();
    assert!(resolved.1["ends_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_are_not_retried_and_a_dead_channel_blocks_no_other() {
    let (good_url, good) = receiver(Behaviour::Good).await;
    let (wrong_secret_url, _) = receiver(Behaviour::Signed("right")).await;
    let channels = BTreeMap::from([
        (
            "good".to_owned(),
            ChannelConfig::Webhook {
                url: good_url,
                secret: None,
                headers: BTreeMap::new(),
            },
        ),
        (
            "refused".to_owned(),
            ChannelConfig::Webhook {
                url: wrong_secret_url,
                secret: Some("wrong".into()),
                headers: BTreeMap::new(),
            },
        ),
        // Nothing listens on port 9: connections are refused, every attempt is retryable.
        (
            "dead".to_owned(),
            ChannelConfig::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
                headers: BTreeMap::new(),
            },
        ),
    ]);
    let delivery = DeliveryConfig {
        max_attempts: 3,
        ..fast_delivery()
    };
    let dispatcher = Dispatcher::start(&channels, &delivery).unwrap();
    let notification = |key: &str| Notification {
        rule: "R".into(),
        description: String::new(),
        severity: Severity::Warning,
        status: NotificationStatus::Firing,
        value: 1.0,
        starts_at: std::time::SystemTime::now(),
        ends_at: None,
        channels: vec!["dead".into(), "refused".into(), "good".into()],
        idempotency_key: format!("R:{key}:firing"),
        instance: key.into(),
        step: "firing".into(),
        firing_number: 1,
    };
    for i in 0..5 {
        dispatcher.send(notification(&format!("{i}")));
    }
    let guard = Instant::now() + Duration::from_secs(60);
    while dispatcher.stats("good").unwrap().delivered < 5 && Instant::now() < guard {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        deduplicated(&good).len(),
        5,
        "the good channel got everything while the dead one retried"
    );
    while dispatcher.stats("dead").unwrap().failed_exhausted < 5 && Instant::now() < guard {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = dispatcher.stats("refused").unwrap();
    assert_eq!(
        (refused.failed_permanent, refused.retried),
        (5, 0),
        "401 is permanent: {refused:?}"
    );
    let dead = dispatcher.stats("dead").unwrap();
    assert_eq!(
        (dead.failed_exhausted, dead.retried),
        (5, 10),
        "3 attempts each: {dead:?}"
    );
    // What was given up on is kept, with the reason, and counted. The counter moves as the
    // last attempt fails; its dead letter is written just after, so wait for it.
    let mut letters = dispatcher.outbox().dead_letters().unwrap();
    while letters.len() < 10 && Instant::now() < guard {
        tokio::time::sleep(Duration::from_millis(10)).await;
        letters = dispatcher.outbox().dead_letters().unwrap();
    }
    let count = |channel: &str, says: &str| {
        letters
            .iter()
            .filter(|l| l.channel == channel && l.reason.contains(says))
            .count()
    };
    assert_eq!(count("refused", "401"), 5, "{letters:?}");
    assert_eq!(count("dead", "3 attempts failed"), 5, "{letters:?}");
    assert!(letters.iter().all(|l| l.idempotency_key.starts_with("R:")));
}

/// A real Alertmanager on loopback; killed when dropped.
struct Alertmanager {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_alertmanager() -> Alertmanager {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Alertmanager is installed (Debian package `prometheus-alertmanager`; .ci/run installs it)");
    // Owned by the guard at once, so that a failure below still kills the server.
    let am = Alertmanager {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = wasmcage_alert::http_client(Duration::from_secs(5)).unwrap();
    let guard = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(format!("{}/-/ready", am.url)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < guard, "Alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    am
}

async fn alerts(url: &str) -> Vec<serde_json::Value> {
    let client = wasmcage_alert::http_client(Duration::from_secs(5)).unwrap();
    let body = client
        .get(format!("{url}/api/v2/alerts"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_receives_the_alert_and_its_resolution() {
    let am = start_alertmanager().await;
    let channels = BTreeMap::from([(
        "am".to_owned(),
        ChannelConfig::Alertmanager {
            url: am.url.clone(),
        },
    )]);
    let config = AlertConfig {
        interval: Duration::from_secs(15),
        delivery: fast_delivery(),
        channels: channels.clone(),
        escalation_policies: BTreeMap::new(),
        rules: vec![rule("SandboxCanaryFailing", "canary_failures", &["am"])],
    };
    let values = Arc::new(Values::default());
    let engine = AlertEngine::new(
        config.clone(),
        values.clone(),
        Arc::new(wasmcage_alert::SystemClock),
    );
    let dispatcher = Dispatcher::start(&channels, &config.delivery).unwrap();

    values.set("canary_failures", &[], 3.0);
    for n in engine.evaluate() {
        dispatcher.send(n);
    }
    let guard = Instant::now() + Duration::from_secs(60);
    let alert = loop {
        if let Some(a) = alerts(&am.url)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "SandboxCanaryFailing")
        {
            break a;
        }
        assert!(Instant::now() < guard, "the alert never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["source"], "wasmcage");
    assert_eq!(
        alert["annotations"]["description"],
        "canary_failures is high"
    );
    assert_eq!(alert["status"]["state"], "active");

    values.set("canary_failures", &[], 0.0);
    for n in engine.evaluate() {
        assert_eq!(n.status, NotificationStatus::Resolved);
        dispatcher.send(n);
    }
    loop {
        if !alerts(&am.url)
            .await
            .iter()
            .any(|a| a["labels"]["alertname"] == "SandboxCanaryFailing")
        {
            break;
        }
        assert!(Instant::now() < guard, "the alert never resolved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dispatcher.stats("am").unwrap().delivered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_gets_events_api_v2_triggers_and_resolves_with_one_dedup_key() {
    let (url, seen) = receiver(Behaviour::Good).await;
    let channels = BTreeMap::from([(
        "pd".to_owned(),
        ChannelConfig::PagerDuty {
            url,
            routing_key: "R0UT1NGKEY".into(),
            severity: SeverityMap {
                critical: PagerDutySeverity::Error,
                ..SeverityMap::default()
            },
        },
    )]);
    let config = AlertConfig {
        interval: Duration::from_secs(15),
        delivery: fast_delivery(),
        channels: channels.clone(),
        escalation_policies: BTreeMap::new(),
        rules: vec![rule("DiskFull", "disk", &["pd"])],
    };
    let values = Arc::new(Values::default());
    let clock = ManualClock::default();
    let engine = AlertEngine::new(config.clone(), values.clone(), Arc::new(clock.clone()));
    let dispatcher = Dispatcher::start(&channels, &config.delivery).unwrap();
    values.set("disk", &[], 97.5);
    let fired = engine.evaluate();
    clock.advance(Duration::from_secs(30));
    values.set("disk", &[], 0.0);
    let resolved = engine.evaluate();
    for n in fired.iter().chain(&resolved) {
        dispatcher.send(n.clone());
    }
    dispatcher.drain().await;

    let n = &fired[0];
    let dedup_key = format!("DiskFull:{}", n.instance);
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        got[0].1,
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "client": "wasmcage",
            "payload": {
                "summary": "DiskFull: disk is high",
                "source": "wasmcage",
                "severity": "error",
                "timestamp": rfc3339(n.starts_at),
                "component": "wasmcage",
                "group": "DiskFull",
                "class": "alert",
                "custom_details": {
                    "rule": "DiskFull",
                    "description": "disk is high",
                    "value": 97.5,
                    "step": "firing",
                    "firing_number": 1,
                    "idempotency_key": format!("DiskFull:pd:{}:firing", n.instance),
                },
            },
        })
    );
    assert_eq!(
        got[1].1,
        serde_json::json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "resolve",
            "dedup_key": dedup_key,
        })
    );
    assert_eq!(got[0].0, format!("DiskFull:pd:{}:firing", n.instance));
    assert_eq!(got[1].0, format!("DiskFull:pd:{}:resolved", n.instance));
    // A summary longer than PagerDuty's 1024 characters is cut.
    let long = Notification {
        description: "é".repeat(5000),
        ..n.clone()
    };
    let body = pagerduty_body(&long, "k", &SeverityMap::default());
    assert_eq!(
        body["payload"]["summary"].as_str().unwrap().chars().count(),
        1024
    );
    assert_eq!(body["payload"]["severity"], "critical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_and_a_full_queue_drops_and_counts() {
    let (url, _) = receiver(Behaviour::Hanging).await;
    let channels = BTreeMap::from([(
        "stuck".to_owned(),
        ChannelConfig::Webhook {
            url,
            secret: None,
            headers: BTreeMap::new(),
        },
    )]);
    let delivery = DeliveryConfig {
        timeout: Duration::from_millis(200),
        max_attempts: 2,
        max_pending: 2,
        ..fast_delivery()
    };
    let dispatcher = Dispatcher::start(&channels, &delivery).unwrap();
    let notification = |i: u32| Notification {
        rule: "R".into(),
        description: String::new(),
        severity: Severity::Warning,
        status: NotificationStatus::Firing,
        value: 1.0,
        starts_at: std::time::SystemTime::now(),
        ends_at: None,
        channels: vec!["stuck".into()],
        idempotency_key: format!("R:{i}:firing"),
        instance: i.to_string(),
        step: "firing".into(),
        firing_number: 1,
    };
    for i in 0..5 {
        dispatcher.send(notification(i));
    }
    // Two are queued; the other three are refused at once and counted.
    assert_eq!(dispatcher.stats("stuck").unwrap().dropped_full, 3);
    assert!(dispatcher.pending("stuck").unwrap() <= 2);
    // Each attempt ends at the timeout, so the queued two are given up on, not stuck.
    let guard = Instant::now() + Duration::from_secs(60);
    // Counted first, then buried in the outbox and taken off the queue.
    while dispatcher.stats("stuck").unwrap().failed_exhausted < 2
        || dispatcher.pending("stuck") != Some(0)
    {
        assert!(
            Instant::now() < guard,
            "the hanging receiver blocked delivery"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts = dispatcher.stats("stuck").unwrap();
    assert_eq!(
        (counts.retried, counts.failed_exhausted, counts.delivered),
        (2, 2, 0)
    );
    let letters = dispatcher.outbox().dead_letters().unwrap();
    assert_eq!(letters.len(), 2);
    assert!(
        letters.iter().all(|l| l.reason.contains("timed out")),
        "{letters:?}"
    );
    // With room again, the channel takes new notifications.
    dispatcher.send(notification(9));
    assert_eq!(dispatcher.stats("stuck").unwrap().dropped_full, 3);
}
