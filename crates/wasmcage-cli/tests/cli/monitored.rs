//! `wasmcage serve` as the whole monitored system, from outside: JSON logs, spans exported to
//! an OTLP receiver, alerts delivered to a webhook receiver, HTTP metrics scraped by a real
//! Prometheus, and the alert outbox surviving `kill -9`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve_hostile::{ADD, BOUND, KEY, Serve, encode, eventually};

/// One request a receiver got, and the status it answered.
#[derive(Debug, Clone)]
struct Received {
    answered: u16,
    idempotency_key: Option<String>,
    body: Vec<u8>,
}

/// A tiny HTTP receiver on 127.0.0.1 that keeps every request and answers `status`.
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(path: &str) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(200));
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let (answer, kept) = (status.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (answer, kept) = (answer.clone(), kept.clone());
                std::thread::spawn(move || serve_one(stream, &answer, &kept));
            }
        });
        Receiver { url, status, seen }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads requests off one connection (keep-alive) and answers each.
fn serve_one(stream: TcpStream, status: &AtomicU16, seen: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut length = 0usize;
        let mut key = None;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answered = status.load(Ordering::SeqCst);
        seen.lock().unwrap().push(Received {
            answered,
            idempotency_key: key,
            body,
        });
        let reply = format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\n\r\n");
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A real Prometheus scraping `target` every second.
pub(crate) struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    pub(crate) fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: wasmcage\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the `prometheus` server is installed (.ci/run installs it)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, once it has one.
    pub(crate) fn query(&self, query: &str) -> Option<f64> {
        let json = self.api(&format!("/api/v1/query?query={}", encode(query)))?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// The JSON answer of an HTTP API path, whatever its status.
    pub(crate) fn api(&self, path: &str) -> Option<Value> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nhost: {}\r\n\r\n", self.addr).ok()?;
        let mut raw = String::new();
        stream.read_to_string(&mut raw).ok()?;
        let body = &raw[raw.find("\r\n\r\n")? + 4..];
        let body = &body[body.find('{')?..body.rfind('}')? + 1];
        serde_json::from_str(body).ok()
    }
}

pub(crate) const TRACE_ID: &str = "5e3c6a1f00d1e2f3a4b5c6d7e8f90a1b";

fn traced(serve: &Serve, id: &str, call: Value) -> Value {
    let body = call.to_string();
    let request = format!(
        "POST /v1/modules/{id}/invoke HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\nx-api-key: {KEY}\r\ntraceparent: 00-{TRACE_ID}-b7ad6b7169203331-01\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(&serve.addr).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let head = &raw[..raw.find("\r\n\r\n").unwrap()];
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("traceparent: 00-{TRACE_ID}-")),
        "the response continues the caller's trace: {head}"
    );
    let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
    let body = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    serde_json::from_str(body).unwrap()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// Issue 13's "done means": one real `wasmcage serve` with JSON logs, an OTLP endpoint and an
/// alert rules file; failing and succeeding executions under a caller's `traceparent`; the
/// alert fires and resolves at the receiver; the spans reach the OTLP receiver with the
/// caller's trace id, the access log names it, a real Prometheus scrapes the HTTP metrics;
/// then `kill -9` while the receiver answers 500, a restart with it healthy, and every due
/// notification is delivered exactly once per idempotency key.
#[test]
fn the_service_is_the_whole_monitored_system() {
    let hook = Receiver::start("/hook");
    let otlp = Receiver::start("/v1/traces");
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
[evaluation]
interval = "200ms"

[delivery]
timeout = "2s"
max_attempts = 1000
initial_backoff = "100ms"
max_backoff = "200ms"

[channels.hook]
type = "webhook"
url = "{}"

[[rules]]
name = "GuestsTrapping"
description = "Guests trapped within the last two seconds."
severity = "warning"
channels = ["hook"]
[rules.condition]
type = "threshold"
metric = "wasmcage_executions_total"
labels = {{ outcome = "trap" }}
function = "increase"
window = "2s"
op = ">"
threshold = 0.0
"#,
            hook.url
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&format!(
        "alert_rules = {rules:?}\n[logging]\nformat = \"json\"\nlevel = \"info\"\n[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"wasmcage-e2e\"\n",
        otlp.url
    ));
    let module = format!(
        "{} (func (export \"trap\") unreachable))",
        &ADD[..ADD.len() - 1]
    );
    let id = serve.upload("e2e", &module);
    let prometheus = Prometheus::start(&serve.addr);

    // Succeeding and failing executions under the caller's trace.
    for _ in 0..3 {
        let out = traced(&serve, &id, json!({"export": "add", "args": [2, 3]}));
        assert_eq!(out["results"], json!([5]));
        assert_eq!(out["report"]["trace_id"], TRACE_ID);
    }
    let trapped = traced(&serve, &id, json!({"export": "trap"}));
    assert_eq!(trapped["report"]["outcome"], "trap");
    assert_eq!(trapped["report"]["trace_id"], TRACE_ID);

    // The alert fires, and resolves once nothing has trapped for the window.
    let keys_of = |status: &str| {
        hook.seen()
            .iter()
            .filter(|r| r.answered == 200)
            .filter_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).ok()?;
                (body["status"] == status).then(|| r.idempotency_key.clone().unwrap())
            })
            .collect::<Vec<_>>()
    };
    eventually("the alert fires at the webhook", || {
        keys_of("firing").first().cloned()
    });
    eventually("the alert resolves at the webhook", || {
        keys_of("resolved").first().cloned()
    });

    // The spans reached the OTLP receiver with the caller's trace id (its 16 bytes are in the
    // protobuf as they are).
    let trace_bytes = hex_bytes(TRACE_ID);
    eventually("the execution spans reach the OTLP receiver", || {
        otlp.seen()
            .iter()
            .any(|r| r.body.windows(16).any(|w| w == trace_bytes.as_slice()))
            .then_some(())
    });
    // The JSON access log names the route template and the caller's trace.
    let access: Vec<Value> = serve
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "wasmcage::access")
        .collect();
    let line = access
        .iter()
        .find(|l| l["fields"]["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no access-log line with the trace id:\n{}", serve.log()));
    assert_eq!(line["fields"]["route"], "/v1/modules/{id}/invoke");
    assert_eq!(line["fields"]["status"], 200);
    assert!(!serve.log().contains(KEY), "the key itself is never logged");
    // A real Prometheus scraped the HTTP metrics.
    eventually("Prometheus has the HTTP request counts", || {
        prometheus
            .query(r#"sum(wasmcage_http_requests_total{route="/v1/modules/{id}/invoke",status="200"})"#)
            .filter(|v| *v >= 4.0)
    });

    // A second firing while the receiver fails: it waits in the outbox, the process is killed,
    // and the next process delivers it once the receiver is healthy.
    hook.status.store(500, Ordering::SeqCst);
    traced(&serve, &id, json!({"export": "trap"}));
    let due = eventually("the second firing is being retried", || {
        let seen = hook.seen();
        let firing = seen.iter().find(|r| {
            r.answered == 500
                && serde_json::from_slice::<Value>(&r.body).is_ok_and(|b| b["status"] == "firing")
        })?;
        // Retried at least once: it is in the outbox, not only in flight.
        let key = firing.idempotency_key.clone()?;
        (seen
            .iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(key.as_str()))
            .count()
            >= 2)
            .then_some(key)
    });
    serve.kill_9();
    hook.status.store(200, Ordering::SeqCst);
    serve.respawn();
    eventually("the restarted server delivers the due notification", || {
        keys_of("firing").contains(&due).then_some(())
    });
    // Give any duplicate a chance to show, then count: every key delivered exactly once.
    std::thread::sleep(Duration::from_secs(2));
    let mut delivered: Vec<String> = hook
        .seen()
        .iter()
        .filter(|r| r.answered == 200)
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    let total = delivered.len();
    delivered.sort();
    delivered.dedup();
    assert_eq!(
        delivered.len(),
        total,
        "a key was delivered twice: {:?}",
        hook.seen()
    );
    assert!(delivered.len() >= 3, "{delivered:?}");
}

/// A rules file whose one rule, `name`, fires at the first evaluation: `wasmcage_up` is 1.
fn always_firing(name: &str) -> String {
    format!(
        r#"
[evaluation]
interval = "100ms"

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"

[[rules]]
name = "{name}"
description = "Always on."
severity = "info"
channels = ["hook"]
[rules.condition]
type = "threshold"
metric = "wasmcage_up"
op = ">"
threshold = 0.0
"#
    )
}

/// `SIGHUP` re-reads `alert_rules`: an invalid file is refused with the reason in the log and
/// the rules in force stay; a valid one replaces them, while the server keeps answering.
#[test]
fn sighup_reloads_the_alert_rules_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alerts.toml");
    std::fs::write(&rules, always_firing("First")).unwrap();
    let serve = Serve::start(&format!("alert_rules = {rules:?}\n"));
    let firing = |rule: &str| {
        let alerts = serve.get("/v1/alerts").json();
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["rule"] == rule && a["state"] == "firing")
    };
    eventually("the first rule fires", || firing("First").then_some(()));
    let hangup = |pid: u32| {
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    std::fs::write(
        &rules,
        "[[rules]]\nname = \"Broken\"\nseverity = \"loud\"\n",
    )
    .unwrap();
    hangup(serve.pid());
    eventually("the broken file is refused in the log", || {
        serve
            .log()
            .contains("alert rules not reloaded")
            .then_some(())
    });
    assert!(firing("First"), "the rules in force stay");

    std::fs::write(&rules, always_firing("Second")).unwrap();
    hangup(serve.pid());
    eventually("the new rule fires", || firing("Second").then_some(()));
    assert!(!firing("First"), "the old rule is gone");
    assert_eq!(serve.get("/livez").status, 200);

    // The configuration file itself is re-read: a rate limit and the log level change while
    // the server runs.
    assert!(
        serve.log().contains("wasmcage::access"),
        "access lines at the default level"
    );
    serve.rewrite_config(&format!(
        "alert_rules = {rules:?}\n[rate_limit]\nper_second = 0.001\nburst = 1\n[logging]\nlevel = \"warn\"\n"
    ));
    hangup(serve.pid());
    // Every SIGHUP above re-read the (then unchanged) configuration too: wait for this one's.
    eventually("the new log filter is in force", || {
        serve
            .log()
            .lines()
            .any(|l| l.contains("log filter set") && l.contains("level=warn"))
            .then_some(())
    });
    // Lines reach the log in the order they were written, so every access line from before
    // the change is in by now; at `warn`, no new one comes.
    let accesses = || serve.log().matches("wasmcage::access").count();
    let before = accesses();
    assert_eq!(serve.get("/v1/modules").status, 200);
    let limited = serve.get("/v1/modules");
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert_eq!(serve.get("/livez").status, 200);
    assert_eq!(accesses(), before, "no access lines at warn");
}
