//! Hostile callers: profiles, keys, throttling, admission, quotas, slow clients, output and
//! stdin bounds.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmcage::Profile;
use wasmcage_server::ServerConfig;

use crate::{ADD, ECHO, KEY_A, KEY_B, error_code, eventually, start};

fn id_of(module: &Value) -> String {
    module["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_narrow_the_profile_but_never_widen_it() {
    let s = start(|c| c.profile = Profile::Standard).await;
    let (_, module) = s.upload("add.wat", ADD).await;
    let url = format!("/v1/modules/{}/invoke", id_of(&module));
    let (status, body) = s
        .post(
            &url,
            json!({"export": "add", "args": [1, 2], "profile": "permissive"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "policy_widening"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("standard"),
        "{body}"
    );
    // Narrower is fine, and the narrower profile's limits hold even when the request asks
    // for more: strict has 100 million fuel, the server allows 50 million... so use the
    // memory limit, where strict (16 MiB) is below the server's maximum (256 MiB).
    let (status, out) = s
        .post(
            &url,
            json!({"export": "spin", "profile": "strict", "limits": {"memory": "200MiB", "timeout_ms": 100000}}),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["report"]["memory_limit_bytes"], 16 << 20, "{out}");
    assert_eq!(out["report"]["outcome"], "out_of_fuel");

    let strict = start(|c| c.profile = Profile::Strict).await;
    let (_, module) = strict.upload("add.wat", ADD).await;
    let url = format!("/v1/modules/{}/invoke", id_of(&module));
    for wider in ["standard", "permissive"] {
        let (status, body) = strict
            .post(
                &url,
                json!({"export": "add", "args": [1, 2], "profile": wider}),
            )
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (403, "policy_widening"),
            "{wider}: {body}"
        );
    }
    let (status, out) = strict
        .post(
            &url,
            json!({"export": "add", "args": [1, 2], "profile": "strict"}),
        )
        .await;
    assert_eq!((status, &out["results"]), (200, &json!([3])), "{out}");
}

#[test]
fn configuration_values_are_validated() {
    let check = |toml: &str, expected: &str| {
        let err = ServerConfig::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains(expected), "{toml}: {err}");
    };
    check(r#"api_keys = [""]"#, "api_keys");
    check(r#"api_keys = ["short-key"]"#, "at least 16");
    check(
        "[rate_limit]\nper_second = 1e-300\nburst = 5",
        "rate_limit.per_second",
    );
    check(
        "[rate_limit]\nper_second = 2.0\nburst = 0",
        "rate_limit.burst",
    );
    check(
        "[rate_limit]\nper_second = nan\nburst = 1",
        "rate_limit.per_second",
    );
    check(
        "[admission]\nmax_executions = 0",
        "admission.max_executions",
    );
    check(
        "[admission]\nmax_executions = 100000",
        "admission.max_executions",
    );
    check(
        "[admission]\nmax_executions = 4\nmax_executions_per_key = 5",
        "max_executions_per_key",
    );
    check("[admission]\nmemory_budget = \"1MiB\"", "memory_budget");
    check("[quota]\nmax_modules = 0", "quota");
    check(
        "[auth_throttle]\nmax_failures = 0",
        "auth_throttle.max_failures",
    );
    check("shutdown_timeout = \"0s\"", "shutdown_timeout");
    check("max_concurrent_compiles = 0", "max_concurrent_compiles");
    check("metrics_require_key = 3", "");

    // Every key survives the round trip through the printed form.
    let toml = r#"
        metrics_require_key = true
        max_stdin = "1MiB"
        header_read_timeout = "3s"
        body_read_timeout = "4s"
        shutdown_timeout = "5s"
        max_concurrent_compiles = 3
        compile_wait = "250ms"
        [rate_limit]
        per_second = 0.5
        burst = 3
        [auth_throttle]
        max_failures = 7
        window = "90s"
        [admission]
        max_executions = 12
        max_executions_per_key = 6
        memory_budget = "1GiB"
        wait = "100ms"
        [quota]
        max_modules = 9
        max_bytes = "10MiB"
    "#;
    let config = ServerConfig::from_toml(toml).unwrap();
    assert!(config.metrics_require_key);
    assert_eq!(config.admission.max_executions, 12);
    assert_eq!(config.quota.max_bytes, 10 << 20);
    assert_eq!(config.auth_throttle.window, Duration::from_secs(90));
    let printed = config.to_toml();
    assert_eq!(
        ServerConfig::from_toml(&printed).unwrap(),
        config,
        "{printed}"
    );
    // And the defaults print every new key.
    let defaults = ServerConfig::default().to_toml();
    for key in [
        "metrics_require_key",
        "max_stdin",
        "header_read_timeout",
        "body_read_timeout",
        "shutdown_timeout",
        "max_concurrent_compiles",
        "compile_wait",
        "[auth_throttle]",
        "[admission]",
        "[quota]",
    ] {
        assert!(defaults.contains(key), "{key} missing from\n{defaults}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_throttled_per_address() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into()];
        c.auth_throttle.max_failures = 10;
        // Long enough that 300 local requests fit in a few windows, short enough to wait out.
        c.auth_throttle.window = Duration::from_secs(2);
    })
    .await;
    let url = format!("{}/v1/modules", s.base);
    let mut throttled = 0;
    for i in 0..300 {
        let r = s
            .client
            .get(&url)
            .header("x-api-key", format!("wrong-key-{i:08}-0123456789"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => {}
            429 => {
                throttled += 1;
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
                assert_eq!(
                    error_code(&r.json::<Value>().await.unwrap()),
                    "auth_throttled"
                );
            }
            other => panic!("wrong key answered {other}"),
        }
    }
    assert!(throttled >= 250, "only {throttled} of 300 were throttled");
    // Once the window has passed, the right key from the same address works again.
    eventually("the right key is accepted after the window", || {
        let r = s.client.get(&url).header("x-api-key", KEY_A).send();
        async move { (r.await.unwrap().status().as_u16() == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_key() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into()];
        c.metrics_require_key = true;
    })
    .await;
    for path in ["/metrics", "/metrics/performance"] {
        assert_eq!(s.get(path).await.0, 401, "{path}");
        let r = s
            .client
            .get(format!("{}{path}", s.base))
            .header("authorization", format!("Bearer {KEY_A}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // The probes stay open to the orchestrator.
    assert_eq!(s.get("/livez").await.0, 200);
    // Without the setting, metrics need no key (the default).
    let open = start(|c| c.api_keys = vec![KEY_A.into()]).await;
    assert_eq!(open.get("/metrics").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_busy_and_is_not_ready() {
    let s = start(|c| {
        c.profile = Profile::Permissive;
        c.max_limits.fuel = None;
        c.admission.max_executions = 1;
        c.admission.max_executions_per_key = 1;
        c.admission.wait = Duration::ZERO;
    })
    .await;
    let (_, module) = s.upload("add.wat", ADD).await;
    let url = format!("/v1/modules/{}/invoke", id_of(&module));
    let spin = {
        let (client, url) = (s.client.clone(), format!("{}{url}", s.base));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"export": "spin", "limits": {"timeout_ms": 3000}}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // The one slot is taken once /readyz says so.
    let body = eventually("readyz reports no capacity", || async {
        let (status, body) = s.get("/readyz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("capacity"), "{body}");
    let r = s
        .client
        .post(format!("{}{url}", s.base))
        .json(&json!({"export": "add", "args": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(&r.json::<Value>().await.unwrap()), "busy");
    let spun = spin.await.unwrap();
    assert_eq!(spun["report"]["outcome"], "timeout", "{spun}");
    // The slot is free again.
    let (status, out) = s.post(&url, json!({"export": "add", "args": [1, 2]})).await;
    assert_eq!((status, &out["results"]), (200, &json!([3])), "{out}");
    assert_eq!(s.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_bounded_per_key_and_by_the_memory_budget() {
    let s = start(|c| {
        c.api_keys = vec![KEY_A.into(), KEY_B.into()];
        c.profile = Profile::Permissive;
        c.max_limits.fuel = None;
        c.max_limits.memory_bytes = 64 << 20;
        c.admission.max_executions = 4;
        c.admission.max_executions_per_key = 1;
        c.admission.memory_budget = 64 << 20;
        c.admission.wait = Duration::ZERO;
    })
    .await;
    let r = s
        .client
        .post(format!("{}/v1/modules?name=add", s.base))
        .header("x-api-key", KEY_A)
        .body(ADD)
        .send()
        .await
        .unwrap();
    let url = format!(
        "/v1/modules/{}/invoke",
        id_of(&r.json::<Value>().await.unwrap())
    );
    // Key B holds the same module: a module belongs to the keys that uploaded it.
    let r = s
        .client
        .post(format!("{}/v1/modules?name=add", s.base))
        .header("x-api-key", KEY_B)
        .body(ADD)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let spin = {
        let (client, url) = (s.client.clone(), format!("{}{url}", s.base));
        tokio::spawn(async move {
            // The probes below briefly hold memory too; with no wait, this request retries
            // until it is admitted.
            loop {
                let status = client
                    .post(&url)
                    .header("x-api-key", KEY_A)
                    .json(&json!({"export": "spin", "limits": {"timeout_ms": 3000, "memory": "48MiB"}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                if status != 503 {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let add = |key: &'static str, memory: &'static str| {
        let (s, url) = (&s, url.clone());
        async move {
            let r = s
                .post_with(
                    &url,
                    key,
                    json!({"export": "add", "args": [1, 2], "limits": {"memory": memory}}),
                )
                .await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // Key B asking for 32 MiB fits until A's 48 MiB execution is admitted.
    let refused = eventually("the memory budget is taken", || async {
        let (status, body) = add(KEY_B, "32MiB").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(error_code(&refused), "busy");
    // 16 MiB still fits the budget, for B; A is at its one execution.
    assert_eq!(add(KEY_B, "16MiB").await.0, 200);
    let (status, body) = add(KEY_A, "16MiB").await;
    assert_eq!((status, error_code(&body)), (503, "busy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{body}"
    );
    assert_eq!(spin.await.unwrap(), 200);
    assert_eq!(add(KEY_A, "48MiB").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_is_a_504() {
    let s = start(|c| {
        c.request_timeout = Duration::from_millis(200);
        c.profile = Profile::Permissive;
        c.max_limits.fuel = None;
    })
    .await;
    let (_, module) = s.upload("add.wat", ADD).await;
    let url = format!("/v1/modules/{}/invoke", id_of(&module));
    // Unmetered and allowed 3 s: only the request timeout can end this request early.
    let (status, body) = s
        .post(
            &url,
            json!({"export": "spin", "limits": {"timeout_ms": 3000}}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (504, "request_timeout"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_pages() {
    let s = start(|c| c.quota.max_modules = 3).await;
    let module = |n: u32| format!("(module (func (export \"n\") (result i32) (i32.const {n})))");
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, m) = s.upload("m", &module(n)).await;
        assert_eq!(status, 201, "{m}");
        ids.push(id_of(&m));
    }
    let (status, body) = s.upload("m", &module(3)).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "quota_exceeded"),
        "{body}"
    );
    // The same bytes again cost nothing more.
    assert_eq!(s.upload("m", &module(0)).await.0, 200);
    // Deleting one frees its place.
    let r = s
        .client
        .delete(format!("{}/v1/modules/{}", s.base, ids[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, m) = s.upload("m", &module(3)).await;
    assert_eq!(status, 201, "{m}");
    ids[0] = id_of(&m);
    ids.sort();

    // Pages of two: two, then one with no cursor after it.
    let (_, page) = s.get("/v1/modules?limit=2").await;
    let page: Value = serde_json::from_str(&page).unwrap();
    let first: Vec<String> = page["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(first, ids[..2]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    assert_eq!(cursor, ids[1]);
    let (_, page) = s.get(&format!("/v1/modules?limit=2&cursor={cursor}")).await;
    let page: Value = serde_json::from_str(&page).unwrap();
    let second: Vec<String> = page["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(second, ids[2..]);
    assert_eq!(page["next_cursor"], Value::Null);
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let (status, body) = s.get(&format!("/v1/modules?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("bad_query"), "{body}");
    }

    let small = start(|c| c.quota.max_bytes = 8).await;
    let (status, body) = small.upload("add.wat", ADD).await;
    assert_eq!(
        (status, error_code(&body)),
        (403, "quota_exceeded"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_each_stream_once_in_the_chosen_encoding() {
    // A guest that writes 1 MiB of NUL bytes to stdout.
    let nul = r#"(module
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 32)
      (func (export "_start")
        (i32.store (i32.const 0) (i32.const 65536)) (i32.store (i32.const 4) (i32.const 1048576))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
    let s = start(|_| {}).await;
    let (_, module) = s.upload("nul.wat", nul).await;
    let url = format!("{}/v1/modules/{}/run", s.base, id_of(&module));
    let r = s
        .client
        .post(&url)
        .json(&json!({"output": "base64"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.len() < 1_500_000,
        "{} bytes for 1 MiB of output",
        text.len()
    );
    let out: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(out["output_encoding"], "base64");
    assert!(out.get("stdout_base64").is_none(), "no second copy");
    use base64::Engine as _;
    let stdout = base64::engine::general_purpose::STANDARD
        .decode(out["stdout"].as_str().unwrap())
        .unwrap();
    assert_eq!(stdout.len(), 1 << 20, "{}", out["report"]);
    assert!(stdout.iter().all(|&b| b == 0));

    let (_, echo) = s.upload("echo.wat", ECHO).await;
    let (status, out) = s
        .post(
            &format!("/v1/modules/{}/run", id_of(&echo)),
            json!({"stdin": "hi", "output": "text"}),
        )
        .await;
    assert_eq!(
        (status, &out["stdout"], &out["output_encoding"]),
        (200, &json!("hi"), &json!("text"))
    );
    let (status, body) = s
        .post(
            &format!("/v1/modules/{}/run", id_of(&echo)),
            json!({"output": "hex"}),
        )
        .await;
    assert_eq!((status, error_code(&body)), (422, "bad_json"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_is_bounded() {
    let s = start(|c| c.max_stdin_bytes = 1000).await;
    let (_, echo) = s.upload("echo.wat", ECHO).await;
    let url = format!("/v1/modules/{}/run", id_of(&echo));
    use base64::Engine as _;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![b'x'; n]);
    for (body, status) in [
        (json!({"stdin": "x".repeat(1001)}), 413),
        (json!({"stdin_base64": b64(1001)}), 413),
        (json!({"stdin_base64": b64(100_000)}), 413),
        (json!({"stdin": "x".repeat(1000)}), 200),
        (json!({"stdin_base64": b64(1000)}), 200),
    ] {
        let (got, out) = s.post(&url, body).await;
        assert_eq!(got, status, "{out}");
        if status == 413 {
            assert_eq!(error_code(&out), "stdin_too_large");
        }
    }
}

/// Reads until the server closes the connection (or resets it).
async fn closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Err(_) => panic!("the server never closed the connection"),
            Ok(Ok(0) | Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_shutdown_has_a_deadline() {
    let s = start(|c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.body_read_timeout = Duration::from_millis(300);
    })
    .await;
    // Fifty clients that send one byte of their headers and stall are all closed.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        let answer = closed(stream).await;
        assert!(
            answer.is_empty() || String::from_utf8_lossy(&answer).contains(" 408 "),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // A kept-alive connection that goes idle is closed too.
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&closed(&mut idle).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A body that trickles is a 408.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(
        b"POST /v1/modules HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let answer = String::from_utf8_lossy(&closed(&mut slow).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");

    // With stalled clients open and no header deadline in sight, `serve` still returns
    // after the shutdown deadline.
    let s = start(|c| {
        c.header_read_timeout = Duration::from_secs(600);
        c.shutdown_timeout = Duration::from_millis(200);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        stalled.push(stream);
    }
    // Each is accepted before the server is asked to stop: a request on a fresh connection
    // is answered only after the earlier connections were accepted.
    assert_eq!(s.get("/livez").await.0, 200);
    tokio::time::timeout(Duration::from_secs(30), s.shut_down())
        .await
        .expect("serve returned after its shutdown deadline");
    for stream in &mut stalled {
        closed(stream).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_uploads_share_one_compile_and_keep_the_first_name() {
    let s = start(|_| {}).await;
    let compiled = || async {
        let (_, metrics) = s.get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("wasmcage_modules_compiled_total "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let before = compiled().await;
    let module = "(module (func (export \"seven\") (result i32) (i32.const 7)))";
    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let (client, url) = (s.client.clone(), format!("{}/v1/modules?name=n{i}", s.base));
            tokio::spawn(async move {
                let r = client.post(url).body(module).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut created = 0;
    let mut names = std::collections::BTreeSet::new();
    for upload in uploads {
        let (status, body) = upload.await.unwrap();
        assert!(status == 200 || status == 201, "{status} {body}");
        created += usize::from(status == 201);
        names.insert(body["name"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, 1, "exactly one upload stored the module");
    assert_eq!(
        names.len(),
        1,
        "every answer names the module by its first name: {names:?}"
    );
    assert_eq!(
        compiled().await - before,
        1.0,
        "one compile for eight uploads"
    );
    // Another name later does not rename it either.
    let (status, body) = s.upload("renamed", module).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"].as_str().unwrap(), names.first().unwrap());
}

#[test]
fn the_server_guide_lists_every_configuration_key() {
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/server.md"))
            .unwrap();
    let printed: toml::Table = toml::from_str(&ServerConfig::default().to_toml()).unwrap();
    for (key, value) in &printed {
        match value.as_table() {
            Some(table) => {
                for inner in table.keys() {
                    // Listed as "`[table] key`" or with siblings: "`[table] a`, `b`".
                    let row = guide.lines().find(|l| {
                        l.contains(&format!("`[{key}] ")) && l.contains(&format!("{inner}`"))
                    });
                    assert!(row.is_some(), "[{key}] {inner} is not in docs/server.md");
                }
            }
            None => assert!(
                guide.contains(&format!("| `{key}` |")),
                "{key} is not in docs/server.md"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_execution_slot() {
    // A guest that sleeps (without using CPU) for 20 s, its whole timeout.
    let sleeper = r#"(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 20000000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;
    let s = start(|c| {
        c.max_limits.timeout = Duration::from_secs(20);
        c.admission.max_executions = 1;
        c.admission.max_executions_per_key = 1;
    })
    .await;
    let (status, module) = s.upload("sleeper.wat", sleeper).await;
    assert_eq!(status, 201, "{module}");
    let body = r#"{"limits":{"timeout_ms":20000}}"#;
    let mut client = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    client
        .write_all(
            format!(
                "POST /v1/modules/{}/run HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                id_of(&module),
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    eventually("the execution holds the only slot", || async {
        (s.get("/readyz").await.0 == 503).then_some(())
    })
    .await;
    drop(client);
    // The handler's future is dropped with the connection, and its slot with it, long
    // before the guest's 20 s are up (10 s is only the bound of this wait).
    let guard = std::time::Instant::now() + Duration::from_secs(10);
    while s.get("/readyz").await.0 != 200 {
        assert!(
            std::time::Instant::now() < guard,
            "the slot stayed taken after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With API keys, a module belongs to the keys that uploaded it: another key cannot list,
/// describe, run or delete it (it is answered 404, as if it did not exist), and a key that
/// uploaded the same bytes too deletes only its own hold on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_and_delete_only_their_own_modules() {
    let s = start(|c| c.api_keys = vec![KEY_A.into(), KEY_B.into()]).await;
    let send = |method: reqwest::Method, path: String, key: &'static str, body: Option<String>| {
        let mut r = s
            .client
            .request(method, format!("{}{path}", s.base))
            .header("x-api-key", key);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    let (status, m) = send(
        reqwest::Method::POST,
        "/v1/modules?name=add".into(),
        KEY_A,
        Some(ADD.into()),
    )
    .await;
    assert_eq!(status, 201, "{m}");
    let id = id_of(&serde_json::from_str(&m).unwrap());
    let one = format!("/v1/modules/{id}");
    let invoke = format!("/v1/modules/{id}/invoke");
    let call = Some(r#"{"export":"add","args":[1,2]}"#.to_owned());

    let (_, listed) = send(reqwest::Method::GET, "/v1/modules".into(), KEY_B, None).await;
    assert!(!listed.contains(&id), "{listed}");
    assert_eq!(
        send(reqwest::Method::GET, one.clone(), KEY_B, None).await.0,
        404
    );
    assert_eq!(
        send(reqwest::Method::POST, invoke.clone(), KEY_B, call.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        send(reqwest::Method::DELETE, one.clone(), KEY_B, None)
            .await
            .0,
        404
    );
    assert_eq!(
        send(reqwest::Method::POST, invoke.clone(), KEY_A, call.clone())
            .await
            .0,
        200
    );

    // B uploads the same bytes: both hold them; B's delete leaves A's.
    let (status, _) = send(
        reqwest::Method::POST,
        "/v1/modules?name=mine".into(),
        KEY_B,
        Some(ADD.into()),
    )
    .await;
    assert!(status == 200 || status == 201, "{status}");
    assert_eq!(
        send(reqwest::Method::POST, invoke.clone(), KEY_B, call.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        send(reqwest::Method::DELETE, one.clone(), KEY_B, None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(reqwest::Method::POST, invoke.clone(), KEY_B, call.clone())
            .await
            .0,
        404
    );
    assert_eq!(
        send(reqwest::Method::POST, invoke.clone(), KEY_A, call.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        send(reqwest::Method::DELETE, one.clone(), KEY_A, None)
            .await
            .0,
        204
    );
    assert_eq!(
        send(reqwest::Method::POST, invoke, KEY_A, call).await.0,
        404
    );
}

/// Request bodies are reserved out of one budget before they are read: slow clients each
/// holding a large body open cannot add up past what the server may hold (100 stalled
/// 16 MiB bodies once grew it to 2.4 GB); a body that does not fit is 503 `busy` until
/// room is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_one_memory_budget() {
    use tokio::io::AsyncWriteExt;
    let s = start(|c| {
        c.max_body_bytes = 1 << 20;
        c.max_body_memory = 1 << 20;
        c.body_read_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/modules?name=slow HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n(mod",
        )
        .await
        .unwrap();
    let refused = eventually("the stalled body holds the budget", || async {
        let (status, body) = s.upload("add", ADD).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(error_code(&refused), "busy", "{refused}");
    // Requests without a body are not held up.
    assert_eq!(s.get("/v1/modules").await.0, 200);
    drop(stalled);
    eventually("the budget is free again", || async {
        let (status, _) = s.upload("add", ADD).await;
        (status == 201).then_some(())
    })
    .await;
}
