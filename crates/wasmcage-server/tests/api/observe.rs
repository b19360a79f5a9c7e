//! The service as a monitored system: alert rules evaluated against its own metrics and
//! delivered to a real receiver, the alerts API, HTTP request metrics, request ids and W3C
//! trace context continued into executions.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{ADD, KEY_A, eventually, start};

/// A webhook receiver on an ephemeral port that keeps every body it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_fire_on_the_services_own_metrics_and_can_be_acknowledged() {
    let (url, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
[evaluation]
interval = "100ms"

[channels.hook]
type = "webhook"
url = "{url}"

[[rules]]
name = "GuestsTrapping"
description = "Guests trapped in the last minute."
severity = "warning"
channels = ["hook"]
[rules.condition]
type = "threshold"
metric = "wasmcage_executions_total"
labels = {{ outcome = "trap" }}
function = "increase"
window = "1m"
op = ">"
threshold = 0.0
"#
        ),
    )
    .unwrap();
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into()];
        c.alert_rules = Some(rules.clone());
    })
    .await;
    let get = |path: &'static str| {
        let (client, base) = (s.client.clone(), s.base.clone());
        async move {
            let r = client
                .get(format!("{base}{path}"))
                .header("x-api-key", KEY_A)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("/v1/alerts").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"enabled": true, "alerts": []}));

    // Acknowledging needs a firing alert of a known rule.
    let r = s
        .post_with("/v1/alerts/NoSuchRule/ack", KEY_A, json!({}))
        .await;
    assert_eq!(r.status(), 404);
    let r = s
        .post_with("/v1/alerts/GuestsTrapping/ack", KEY_A, json!({}))
        .await;
    assert_eq!(r.status(), 409);

    let r = s
        .client
        .post(format!("{}/v1/modules?name=add", s.base))
        .header("x-api-key", KEY_A)
        .body(ADD)
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .post_with(
            &format!("/v1/modules/{id}/invoke"),
            KEY_A,
            json!({"export": "trap"}),
        )
        .await;
    assert_eq!(r.status(), 200);

    let firing = eventually("the webhook receives the firing", || {
        let seen = seen.clone();
        async move {
            seen.lock()
                .unwrap()
                .iter()
                .find(|b| b["status"] == "firing")
                .cloned()
        }
    })
    .await;
    assert_eq!(firing["rule"], "GuestsTrapping");
    assert!(firing["idempotency_key"].as_str().unwrap().contains("hook"));

    let (_, body) = get("/v1/alerts").await;
    let alert = &body["alerts"][0];
    assert_eq!(alert["rule"], "GuestsTrapping");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["acknowledged"], false);

    let r = s
        .post_with("/v1/alerts/GuestsTrapping/ack", KEY_A, json!({}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["alert"]["acknowledged"], true);
    let (_, body) = get("/v1/alerts").await;
    assert_eq!(body["alerts"][0]["acknowledged"], true);

    // The alerts API is behind the key like the rest of /v1.
    let r = s
        .client
        .get(format!("{}/v1/alerts", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The outbox is in the data directory, durable by default.
    assert!(
        s._dir
            .as_ref()
            .unwrap()
            .path()
            .join("alert-outbox.redb")
            .exists()
    );
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_template_and_a_traceparent_is_continued() {
    let s = start(|_| {}).await;
    let (status, body) = s.upload("add", ADD).await;
    assert!(status == 201 || status == 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = s
        .client
        .post(format!("{}/v1/modules/{id}/invoke", s.base))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"export": "add", "args": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed = r.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(echoed.starts_with(&format!("00-{trace_id}-")), "{echoed}");
    assert!(
        !echoed.contains("00f067aa0ba902b7"),
        "the service's own span id: {echoed}"
    );
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["report"]["trace_id"], trace_id);

    // Without one, nothing is invented: no trace id in the report, no traceparent back.
    let r = s
        .client
        .post(format!("{}/v1/modules/{id}/invoke", s.base))
        .header("traceparent", "garbage")
        .json(&json!({"export": "add", "args": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("traceparent"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["report"]["trace_id"], Value::Null);

    let _ = s.get(&format!("/v1/modules/{}", "f".repeat(64))).await;
    let _ = s.get("/no/such/route/with/a/long/unique/path/123").await;
    let (_, metrics) = s.get("/metrics").await;
    let line = |needle: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in /metrics"))
            .to_owned()
    };
    let invoked = line(
        "wasmcage_http_requests_total{method=\"POST\",route=\"/v1/modules/{id}/invoke\",status=\"200\"}",
    );
    assert!(invoked.ends_with(" 2"), "{invoked}");
    line("wasmcage_http_errors_total{code=\"unknown_module\",route=\"/v1/modules/{id}\"}");
    line("wasmcage_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}");
    line("wasmcage_http_request_duration_seconds_count{route=\"/v1/modules/{id}/invoke\"}");
    // The raw path never becomes a label.
    assert!(!metrics.contains("unique/path"));
    assert!(!metrics.contains(&"f".repeat(64)));
    line("wasmcage_http_requests_in_flight");
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_checks_cover_memory_and_the_data_directory() {
    let s = start(|c| {
        c.health.memory_limit = wasmcage_server::MemoryLimit::Bytes(1024);
        c.health.min_free_disk = u64::MAX;
    })
    .await;
    let (status, body) = s.get("/healthz").await;
    // Neither is critical: the service is degraded, still ready, and says why.
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "degraded", "{report}");
    let check = |name: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {report}"))
    };
    assert_eq!(check("memory")["passed"], false);
    assert_eq!(check("disk")["passed"], false);
    assert_eq!(check("canary")["passed"], true);
    s.shut_down().await;

    for (value, ok) in [
        ("90%", true),
        ("2GiB", true),
        ("0%", false),
        ("150%", false),
    ] {
        let parsed = wasmcage_server::ServerConfig::from_toml(&format!(
            "[health]\nmemory_limit = \"{value}\"\n"
        ));
        assert_eq!(parsed.is_ok(), ok, "{value}: {parsed:?}");
    }
}

/// A module's name reaches log lines: a newline or an escape sequence in it could forge an
/// access-log line in the human format, so names with control characters are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_names_with_control_characters_are_refused() {
    let s = start(|_| {}).await;
    for name in ["x%0Akey_id%3D%22admin%22", "x%1B%5B31m", "tab%09bed"] {
        let r = s
            .client
            .post(format!("{}/v1/modules?name={name}", s.base))
            .body(ADD)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_name", "{name}");
    }
    let (status, body) = s.upload("plain name (v2).wat", ADD).await;
    assert!(status == 201 || status == 200, "{body}");
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_alert_keys_only_those_keys_see_and_acknowledge_alerts() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into(), super::KEY_B.into()];
        c.alert_keys = vec![KEY_A.into()];
    })
    .await;
    let get = |key: &'static str| {
        let (client, base) = (s.client.clone(), s.base.clone());
        async move {
            client
                .get(format!("{base}/v1/alerts"))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(KEY_A).await, 200);
    assert_eq!(get(super::KEY_B).await, 403);
    let r = s
        .post_with("/v1/alerts/AnyRule/ack", super::KEY_B, json!({}))
        .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    s.shut_down().await;

    // A key in alert_keys must be one of api_keys.
    let mut config = wasmcage_server::ServerConfig {
        api_keys: vec![KEY_A.into()],
        alert_keys: vec!["not-one-of-the-api-keys-000".into()],
        ..wasmcage_server::ServerConfig::default()
    };
    assert!(config.validate().is_err());
    config.alert_keys = vec![KEY_A.into()];
    assert!(config.validate().is_ok());
}
