//! The outbox across a real `kill -9`: a child process (this test binary, re-executed) raises
//! notifications against a receiver answering 500 and is killed; a restart against a healthy
//! receiver delivers every one of them exactly once per idempotency key. And an outbox file
//! that cannot be opened is a typed error.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage_alert::{
    AlertConfig, AlertEngine, AlertError, ChannelConfig, DeliveryConfig, Dispatcher, ManualClock,
    Outbox, OutboxError, SeverityMap,
};

use crate::Values;
use crate::delivery::{Behaviour, deduplicated, fast_delivery, receiver, rule};

/// Set in the child process: the outbox path and the receiver's URL, one per line.
const CHILD: &str = "WASMCAGE_ALERT_TEST_OUTBOX_CHILD";
const THIS_TEST: &str =
    "outbox::a_killed_process_delivers_every_due_notification_exactly_once_after_restart";

fn channels(url: &str) -> BTreeMap<String, ChannelConfig> {
    BTreeMap::from([
        (
            "hook".to_owned(),
            ChannelConfig::Webhook {
                url: url.to_owned(),
                secret: None,
                headers: BTreeMap::new(),
            },
        ),
        (
            "pd".to_owned(),
            ChannelConfig::PagerDuty {
                url: url.to_owned(),
                routing_key: "key".into(),
                severity: SeverityMap::default(),
            },
        ),
    ])
}

fn delivery(outbox: &std::path::Path) -> DeliveryConfig {
    DeliveryConfig {
        // The child must still be retrying when it is killed.
        max_attempts: 1000,
        outbox: Some(outbox.to_owned()),
        ..fast_delivery()
    }
}

/// The child: raises firings and resolves of two rules through a real engine, prints each
/// channel's idempotency key as `outbox-key <channel> <key>` once the notification is sent
/// (and so written to the outbox), then `outbox-enqueued`, and waits to be killed. (libtest
/// may print its own words before the first line, so the parent looks for the markers.)
async fn child(spec: &str) {
    let (path, url) = spec.split_once('\n').expect("path and URL");
    let path = std::path::Path::new(path);
    let channels = channels(url);
    let config = AlertConfig {
        interval: Duration::from_secs(15),
        delivery: delivery(path),
        channels: channels.clone(),
        escalation_policies: BTreeMap::new(),
        rules: vec![
            rule("DiskFull", "disk", &["hook", "pd"]),
            rule("QueueStuck", "queue", &["hook"]),
        ],
    };
    let values = Arc::new(Values::default());
    let clock = ManualClock::default();
    let engine = AlertEngine::new(config.clone(), values.clone(), Arc::new(clock.clone()));
    let dispatcher = Dispatcher::start(&channels, &config.delivery).unwrap();
    for step in 0..6u32 {
        values.set("disk", &[], f64::from(step % 2 == 0));
        values.set("queue", &[], f64::from(step < 3));
        clock.advance(Duration::from_secs(15));
        for n in engine.evaluate() {
            let keys: Vec<(String, String)> = n
                .channels
                .iter()
                .map(|c| (c.clone(), n.for_channel(c).idempotency_key))
                .collect();
            dispatcher.send(n);
            for (channel, key) in keys {
                println!("\noutbox-key {channel} {key}");
            }
        }
    }
    println!("\noutbox-enqueued");
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_delivers_every_due_notification_exactly_once_after_restart() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.redb");
    let (failing_url, refused) = receiver(Behaviour::Failing).await;
    let mut process = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", THIS_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}\n{failing_url}", path.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = process.stdout.take().unwrap();
    // (channel, key) in the order the child raised them.
    let raised: Vec<(String, String)> = tokio::task::spawn_blocking(move || {
        let mut raised = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.contains("outbox-enqueued") {
                return raised;
            }
            if let Some(rest) = line.strip_prefix("outbox-key ") {
                let (channel, key) = rest.split_once(' ').unwrap();
                raised.push((channel.to_owned(), key.to_owned()));
            }
        }
        panic!("the child ended before enqueueing: {raised:?}");
    })
    .await
    .unwrap();
    assert!(raised.len() >= 10, "{raised:?}");
    // Both channels are being retried against the 500s when the child is killed.
    let guard = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = refused.lock().unwrap().clone();
        let hook = seen.iter().any(|(k, _)| k.contains(":hook:"));
        let pd = seen.iter().any(|(k, _)| k.contains(":pd:"));
        if hook && pd {
            break;
        }
        assert!(Instant::now() < guard, "the child never tried to deliver");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    process.kill().unwrap(); // SIGKILL
    process.wait().unwrap();
    let refused_before_restart = refused.lock().unwrap().len();

    // Everything raised is in the outbox, in order.
    {
        let outbox = Outbox::open(&path).unwrap();
        let pending: Vec<(String, String)> = outbox
            .pending()
            .unwrap()
            .into_iter()
            .map(|n| (n.channels[0].clone(), n.idempotency_key))
            .collect();
        assert_eq!(pending, raised);
    }

    // Restart against a healthy receiver.
    let (good_url, good) = receiver(Behaviour::Good).await;
    let dispatcher = Dispatcher::start(&channels(&good_url), &delivery(&path)).unwrap();
    let guard = Instant::now() + Duration::from_secs(60);
    while dispatcher.total().delivered < raised.len() as u64 {
        assert!(Instant::now() < guard, "{:?}", dispatcher.total());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dispatcher.drain().await;
    let got: Vec<String> = good
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    // Exactly once each (no duplicates at all, not only after dropping them), in order per
    // channel.
    assert_eq!(got.len(), raised.len(), "{got:?}");
    assert_eq!(deduplicated(&good).len(), raised.len());
    for channel in ["hook", "pd"] {
        let want: Vec<&str> = raised
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, k)| k.as_str())
            .collect();
        let have: Vec<&str> = got
            .iter()
            .filter(|k| k.contains(&format!(":{channel}:")))
            .map(String::as_str)
            .collect();
        assert_eq!(have, want, "{channel}");
    }
    // The PagerDuty copies are PagerDuty events, the webhook copies webhook bodies.
    for (key, body) in good.lock().unwrap().iter() {
        if key.contains(":pd:") {
            assert!(body["event_action"] == "trigger" || body["event_action"] == "resolve");
        } else {
            assert_eq!(body["idempotency_key"], key.as_str());
        }
    }
    assert_eq!(refused.lock().unwrap().len(), refused_before_restart);
    // Nothing is left, and a second restart sends nothing.
    let outbox = Outbox::open(&path).unwrap();
    assert!(outbox.pending().unwrap().is_empty());
    assert!(outbox.dead_letters().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_that_cannot_be_opened_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let opens = |path: &std::path::Path| match Outbox::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => {
            assert!(matches!(e, OutboxError::Open { .. }), "{e:?}");
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("move it aside"), "{message}");
        }
    };
    // Not a redb file: text, and random bytes of a plausible size.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a database\n".repeat(100)).unwrap();
    opens(&text);
    let junk = dir.path().join("junk.redb");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&junk, &bytes).unwrap();
    opens(&junk);
    // A directory, and a path under a missing directory.
    opens(dir.path());
    opens(&dir.path().join("missing").join("alerts.redb"));
    // A good outbox, already open (in this process; another process is refused the same way).
    let good = dir.path().join("alerts.redb");
    let first = Outbox::open(&good).unwrap();
    assert!(first.is_durable());
    opens(&good);
    drop(first);
    Outbox::open(&good).unwrap();
    // Through the dispatcher, it is an AlertError that says the same.
    let mut delivery = fast_delivery();
    delivery.outbox = Some(junk.clone());
    match Dispatcher::start(&channels("http://127.0.0.1:9/hook"), &delivery) {
        Err(AlertError::Outbox(OutboxError::Open { path, .. })) => assert_eq!(path, junk),
        other => panic!("{other:?}"),
    }
    assert!(!Outbox::in_memory().is_durable());
}
