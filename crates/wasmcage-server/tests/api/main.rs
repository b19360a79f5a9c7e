//! The service end to end: a real server on an ephemeral loopback port, driven over HTTP.

#![allow(missing_docs)]

mod hardening;
mod observe;
mod runtimes;
mod store;

use std::time::Duration;

use serde_json::{Value, json};
use wasmcage_server::{Server, ServerConfig};

const ADD: &str = r#"(module
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "trap") unreachable)
  (func (export "spin") (loop (br 0))))"#;

const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// API keys long enough for the server to accept.
const KEY_A: &str = "key-a-0123456789abcdef";
const KEY_B: &str = "key-b-0123456789abcdef";

struct Running {
    base: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_at(dir.path(), configure).await;
    running._dir = Some(dir);
    running
}

/// A server on `data_dir`, which the caller keeps (to restart on it).
async fn start_at(
    data_dir: &std::path::Path,
    configure: impl FnOnce(&mut ServerConfig),
) -> Running {
    let mut config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        ..ServerConfig::default()
    };
    config.max_limits.fuel = Some(50_000_000);
    config.max_limits.timeout = Duration::from_secs(5);
    // Never the machine's own runtimes: a test that wants some installs them.
    config.runtimes.enabled = false;
    configure(&mut config);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let base = format!("http://{addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = wasmcage::alert::http_client(Duration::from_secs(30)).unwrap();
    Running {
        base,
        addr,
        client,
        stop: Some(stop),
        done,
        _dir: None,
    }
}

/// Polls `check` every 20 ms until it returns `Some`, failing after 30 s: waiting for a
/// state, never for a time.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let guard = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < guard, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Running {
    async fn post_with(&self, path: &str, key: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-api-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Stops the server gracefully and waits until `serve` returned.
    async fn shut_down(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        (&mut self.done).await.unwrap().unwrap();
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, name: &str, module: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/v1/modules?name={name}", self.base))
            .body(module.to_owned())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_invoke_run_and_every_error_class() {
    let s = start(|_| {}).await;
    let (status, module) = s.upload("add.wat", ADD).await;
    assert_eq!(status, 201, "{module}");
    let id = module["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(
        module["exports"][0],
        json!({"name": "add", "params": ["i32", "i32"], "results": ["i32"]})
    );

    let (status, listed) = s.get("/v1/modules").await;
    assert_eq!(status, 200);
    assert!(listed.contains(&id));

    let (status, out) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "add", "args": [40, "2"]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["results"], json!([42]));
    assert_eq!(out["report"]["outcome"], "completed");

    // A guest trap is a 200 with the classified outcome.
    let (status, out) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "trap"}),
        )
        .await;
    assert_eq!(
        (
            status,
            out["report"]["outcome"].as_str(),
            out["report"]["trap"].as_str()
        ),
        (200, Some("trap"), Some("unreachable"))
    );

    // Limits never rise above the server's maxima.
    let (status, out) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "spin", "limits": {"fuel": 1_000_000_000_000u64}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(out["report"]["outcome"], "out_of_fuel");
    assert_eq!(out["report"]["fuel_limit"], 50_000_000);

    // Bad requests are 4xx with a JSON error that says what was wrong.
    let checks: Vec<(u16, Value, &str)> = vec![
        {
            let (st, b) = s
                .post(
                    &format!("/v1/modules/{id}/invoke"),
                    json!({"export": "add", "args": [1]}),
                )
                .await;
            (st, b, "bad_arguments")
        },
        {
            let (st, b) = s
                .post(
                    &format!("/v1/modules/{id}/invoke"),
                    json!({"export": "add", "args": ["x", 1]}),
                )
                .await;
            (st, b, "bad_arguments")
        },
        {
            let (st, b) = s
                .post(
                    &format!("/v1/modules/{id}/invoke"),
                    json!({"export": "nope"}),
                )
                .await;
            (st, b, "unknown_export")
        },
        {
            let (st, b) = s
                .post(
                    &format!("/v1/modules/{}/invoke", "0".repeat(64)),
                    json!({"export": "add"}),
                )
                .await;
            (st, b, "unknown_module")
        },
        {
            let (st, b) = s
                .post(
                    &format!("/v1/modules/{id}/invoke"),
                    json!({"export": "add", "profile": "lax"}),
                )
                .await;
            (st, b, "bad_profile")
        },
        {
            let (st, b) = s.upload("bad.wasm", "(module (func").await;
            (st, b, "invalid_module")
        },
        {
            let (st, b) = s.post(&format!("/v1/modules/{id}/run"), json!({})).await;
            (st, b, "not_a_command")
        },
    ];
    for (status, body, code) in checks {
        assert_eq!(
            (status, error_code(&body)),
            (if code == "unknown_module" { 404 } else { 400 }, code),
            "{body}"
        );
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = s
        .client
        .post(format!("{}/v1/modules/{id}/invoke", s.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(&r.json::<Value>().await.unwrap()), "bad_json");

    // A WASI command with stdin.
    let (_, echo) = s.upload("echo.wat", ECHO).await;
    let echo_id = echo["id"].as_str().unwrap();
    let (status, out) = s
        .post(
            &format!("/v1/modules/{echo_id}/run"),
            json!({"stdin": "hello service"}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "hello service");
    assert_eq!(out["exit_code"], 0);
    let (_, out) = s
        .post(
            &format!("/v1/modules/{echo_id}/run"),
            json!({"stdin_base64": "aGk="}),
        )
        .await;
    assert_eq!(out["stdout"], "hi");
    let (status, out) = s
        .post(
            &format!("/v1/modules/{echo_id}/run"),
            json!({"env": {"SECRET": "x"}}),
        )
        .await;
    assert_eq!((status, error_code(&out)), (400, "env_not_allowed"));
    let (status, out) = s
        .post(
            &format!("/v1/modules/{echo_id}/run"),
            json!({"args": ["ok", "a\0b"]}),
        )
        .await;
    assert_eq!((status, error_code(&out)), (400, "bad_args"), "{out}");

    // Monitoring on the same listener.
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("wasmcage_executions_total"));
    assert_eq!(s.get("/livez").await.0, 200);
    assert_eq!(s.get("/readyz").await.0, 200);

    // Delete, then it is gone.
    let r = s
        .client
        .delete(format!("{}/v1/modules/{id}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(s.get(&format!("/v1/modules/{id}")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_body_limits() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into(), KEY_B.into()];
        c.max_body_bytes = 1024;
    })
    .await;
    let (status, body) = s.upload("add.wat", ADD).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    for (header, expected) in [
        (("authorization", format!("Bearer {KEY_B}")), 201),
        (("x-api-key", KEY_A.to_owned()), 200),
    ] {
        let r = s
            .client
            .post(format!("{}/v1/modules?name=add.wat", s.base))
            .header(header.0, header.1)
            .body(ADD)
            .send()
            .await
            .unwrap();
        // The second upload of the same bytes finds the module already stored.
        assert_eq!(r.status().as_u16(), expected);
    }
    let r = s
        .client
        .get(format!("{}/v1/modules", s.base))
        .header("x-api-key", "wrong-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let big = "x".repeat(4096);
    let r = s
        .client
        .post(format!("{}/v1/modules?name=big", s.base))
        .header("x-api-key", KEY_A)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(
        error_code(&r.json::<Value>().await.unwrap()),
        "body_too_large"
    );
    // Probes and metrics need no key.
    assert_eq!(s.get("/livez").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_keys_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let err = Server::bind(config).await.unwrap_err();
    assert!(err.to_string().contains("without API keys"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_executions() {
    // No fuel ceiling (the permissive profile has none either), so the guest runs until its
    // 800 ms timeout.
    let mut s = start(|c| {
        c.max_limits.fuel = None;
        c.profile = wasmcage::Profile::Permissive;
    })
    .await;
    let (_, module) = s.upload("add.wat", ADD).await;
    let id = module["id"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/modules/{id}/invoke", s.base);
    let client = s.client.clone();
    let busy = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"export": "spin", "limits": {"timeout_ms": 800}}))
            .send()
            .await
            .unwrap()
    });
    // Wait until the execution is running before asking the server to stop.
    let guard = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = s.get("/metrics").await;
        if metrics
            .lines()
            .any(|l| l.starts_with("wasmcage_instances_active 1"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < guard,
            "the execution never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.stop.take().unwrap().send(()).unwrap();
    let response = busy.await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "the in-flight request finished"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["report"]["outcome"], "timeout");
    (&mut s.done).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_its_own_rate_limit() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into(), KEY_B.into()];
        c.rate_limit = Some(wasmcage_server::RateLimit {
            per_second: 0.5,
            burst: 2,
        });
    })
    .await;
    let get = |key: &'static str| {
        let (client, url) = (s.client.clone(), format!("{}/v1/modules", s.base));
        async move {
            client
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(KEY_A).await.status().as_u16(), 200);
    assert_eq!(get(KEY_A).await.status().as_u16(), 200);
    let limited = get(KEY_A).await;
    assert_eq!(limited.status().as_u16(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(
        error_code(&limited.json::<Value>().await.unwrap()),
        "rate_limited"
    );
    // Another key is unaffected.
    assert_eq!(get(KEY_B).await.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_the_server_answers() {
    let s = start(|_| {}).await;
    let (status, text) = s.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> = wasmcage_server::openapi::ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    routes.sort();
    assert_eq!(
        documented, routes,
        "the document and the route table disagree"
    );
    // And the server answers every documented route (anything but the unknown-route 404).
    for (method, path) in routes {
        let url = format!("{}{}", s.base, path.replace("{id}", &"0".repeat(64)));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = s.client.request(method.clone(), url).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            status != 405 && !body.contains("\"not_found\""),
            "{method} {path}: {status} {body}"
        );
    }
}

/// Checks `value` against `schema` of the OpenAPI document `doc`: types, nullability,
/// required properties, and no property the schema does not name. Enough of OpenAPI 3.0 for
/// the service's own schemas (`$ref`, `allOf`, `oneOf`, `enum`, `items`,
/// `additionalProperties`); anything else in a schema is a test failure, not a pass.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "{at}: no schema {name}");
        return conforms(doc, target, value, at);
    }
    if value.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    if let Some(all) = schema["allOf"].as_array() {
        // Each part names some properties; together they must name every one present.
        let mut named = std::collections::BTreeSet::new();
        for part in all {
            let part = match part["$ref"].as_str() {
                Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
                None => part,
            };
            if let Some(props) = part["properties"].as_object() {
                named.extend(props.keys().cloned());
            }
            let mut open = part.clone();
            open["additionalProperties"] = json!(true);
            conforms(doc, &open, value, at)?;
        }
        if let Some(obj) = value.as_object() {
            for key in obj.keys() {
                if !named.contains(key) {
                    return Err(format!("{at}: {key} is not in the schema"));
                }
            }
        }
        return Ok(());
    }
    if let Some(one) = schema["oneOf"].as_array() {
        return match one.iter().any(|s| conforms(doc, s, value, at).is_ok()) {
            true => Ok(()),
            false => Err(format!("{at}: {value} matches none of {one:?}")),
        };
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let fits = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        None => true,
        Some(other) => return Err(format!("{at}: the validator does not know type {other}")),
    };
    if !fits {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(obj) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(required.as_str().unwrap()) {
                return Err(format!("{at}: {required} is missing from {value}"));
            }
        }
        let props = schema["properties"].as_object();
        for (key, v) in obj {
            match props.and_then(|p| p.get(key)) {
                Some(s) => conforms(doc, s, v, &format!("{at}.{key}"))?,
                // A free-form object (the report) names no properties.
                None if props.is_none() && schema["additionalProperties"] != false => {}
                None => match &schema["additionalProperties"] {
                    Value::Object(_) => conforms(
                        doc,
                        &schema["additionalProperties"],
                        v,
                        &format!("{at}.{key}"),
                    )?,
                    _ => return Err(format!("{at}: {key} is not in the schema")),
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_openapi_schemas() {
    let s = start(|_| {}).await;
    let (_, text) = s.get("/v1/openapi.json").await;
    let doc: Value = serde_json::from_str(&text).unwrap();
    // The 200 or 201 schema of (method, path).
    let schema_of = |method: &str, path: &str, status: &str| -> Value {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            .clone()
    };
    let check = |what: &str, schema: Value, value: &Value| {
        assert!(schema.is_object(), "{what}: no schema documented");
        conforms(&doc, &schema, value, what).unwrap_or_else(|e| panic!("{e}"));
    };
    let (status, module) = s.upload("add.wat", ADD).await;
    assert_eq!(status, 201);
    check("upload", schema_of("post", "/v1/modules", "201"), &module);
    let id = module["id"].as_str().unwrap().to_owned();
    let (_, echo) = s.upload("echo.wat", ECHO).await;
    let echo = echo["id"].as_str().unwrap().to_owned();
    let (_, text) = s.get("/v1/modules?limit=1").await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert!(page["next_cursor"].is_string(), "{page}");
    check("list", schema_of("get", "/v1/modules", "200"), &page);
    let (_, text) = s
        .get(&format!(
            "/v1/modules?limit=2&cursor={}",
            page["next_cursor"].as_str().unwrap()
        ))
        .await;
    let last: Value = serde_json::from_str(&text).unwrap();
    assert!(last["next_cursor"].is_null(), "{last}");
    check("last page", schema_of("get", "/v1/modules", "200"), &last);
    let (_, text) = s.get(&format!("/v1/modules/{id}")).await;
    check(
        "describe",
        schema_of("get", "/v1/modules/{id}", "200"),
        &serde_json::from_str(&text).unwrap(),
    );
    let (status, out) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "add", "args": [2, 3]}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    check(
        "invoke",
        schema_of("post", "/v1/modules/{id}/invoke", "200"),
        &out,
    );
    let (status, out) = s
        .post(&format!("/v1/modules/{echo}/run"), json!({"stdin": "hi"}))
        .await;
    assert_eq!(status, 200, "{out}");
    check(
        "run",
        schema_of("post", "/v1/modules/{id}/run", "200"),
        &out,
    );
    let (_, text) = s.get("/v1/alerts").await;
    check(
        "alerts",
        schema_of("get", "/v1/alerts", "200"),
        &serde_json::from_str(&text).unwrap(),
    );
    let (status, err) = s
        .post("/v1/modules/nope/invoke", json!({"export": "add"}))
        .await;
    assert_eq!(status, 404);
    check("error", json!({"$ref": "#/components/schemas/Error"}), &err);
    // Every named request schema refuses what the server refuses: unknown fields.
    for name in [
        "InvokeRequest",
        "RunRequest",
        "ExecuteRequest",
        "CreateSession",
        "CellRequest",
        "Limits",
        "CellLimits",
    ] {
        assert_eq!(
            doc["components"]["schemas"][name]["additionalProperties"], false,
            "{name}"
        );
    }
    let (status, err) = s
        .post(
            &format!("/v1/modules/{id}/invoke"),
            json!({"export": "add", "args": [1, 2], "limits": {"fule": 1}}),
        )
        .await;
    assert_eq!((status, error_code(&err)), (422, "bad_json"), "{err}");
    // The validator itself refuses what does not fit.
    assert!(
        conforms(
            &doc,
            &json!({"$ref": "#/components/schemas/Module"}),
            &json!({"id": "x"}),
            "m"
        )
        .is_err()
    );
    assert!(
        conforms(
            &doc,
            &json!({"$ref": "#/components/schemas/ModuleList"}),
            &json!({"modules": [], "next_cursor": null, "extra": 1}),
            "m"
        )
        .is_err()
    );
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_quick_start_works_as_written() {
    let s = start(|_| {}).await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("## Serve it").expect("a Serve it section")..];
    let start_block = section.find("```sh\nID=").expect("the curl block") + 6;
    let script = &section[start_block..start_block + section[start_block..].find("```").unwrap()];
    // The same commands, pointed at this test's server instead of port 8000.
    let script = script.replace("http://127.0.0.1:8000", &s.base);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(root)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"results\":[5]"), "{stdout}");
    assert!(stdout.contains("\"outcome\":\"completed\""), "{stdout}");
}
