//! `[pools]` and the service's own gauges on a live `wasmcage serve`: warm pools serve only
//! requests whose sandbox is the pool's, are created on upload and at start and dropped on
//! delete; the ready-instance gauge is fresh after a refill; a restart rejects nothing; the
//! executions waiting for admission are counted; `/readyz` is 503 while draining.

use std::io::Read;
use std::process::Command;

use serde_json::json;

use crate::serve_hostile::{ADD, BOUND, OTHER, SLEEPER, Serve, eventually};

/// The sum of the samples of `name` whose labels include every one of `labels`, in the
/// server's `/metrics`; `None` when there is no such sample.
fn metric(serve: &Serve, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = String::from_utf8(serve.get("/metrics").body_bytes()).unwrap();
    let mut sum = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (family, rest) = series.split_once('{').unwrap_or((series, ""));
        if family != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        {
            *sum.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    sum
}

/// [`metric`], with no sample counting as zero.
fn count(serve: &Serve, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(serve, name, labels).unwrap_or(0.0)
}

/// The `pool`/`module` label of an uploaded module: its name and short hash.
fn label(name: &str, id: &str) -> String {
    format!("{name}@{}", &id[..12])
}

#[test]
fn warm_pools_serve_only_their_own_sandbox_and_live_as_long_as_their_module() {
    let mut serve = Serve::start("[pools]\nevery_module = 1\nmin_ready = 2\nmax_in_use = 4\n");
    let add = serve.upload("add", ADD);
    let pool = label("add", &add);
    // The canary's pool and this module's.
    assert_eq!(count(&serve, "wasmcage_pools_created_total", &[]), 2.0);
    assert_eq!(
        count(&serve, "wasmcage_pool_slots_available", &[("pool", &pool)]),
        2.0
    );

    // A request that asks for nothing narrower runs warm, and the pool refills: the gauge
    // says 2 again, not the 1 the assignment left.
    let out = serve.invoke(&add, json!({"export": "add", "args": [2, 3]}));
    assert_eq!(out.json()["results"], json!([5]), "{out:?}");
    let warm = [("pool", pool.as_str()), ("result", "warm")];
    assert_eq!(count(&serve, "wasmcage_pool_assignments_total", &warm), 1.0);
    assert_eq!(
        count(&serve, "wasmcage_pool_slots_available", &[("pool", &pool)]),
        2.0
    );
    // Narrower limits, a narrower profile: cold, under the request's own sandbox.
    for narrower in [
        json!({"export": "add", "args": [1, 1], "limits": {"fuel": 5000}}),
        json!({"export": "add", "args": [1, 1], "limits": {"memory": "1MiB"}}),
        json!({"export": "add", "args": [1, 1], "profile": "strict"}),
    ] {
        let out = serve.invoke(&add, narrower.clone());
        assert_eq!(out.json()["results"], json!([2]), "{narrower}: {out:?}");
    }
    assert_eq!(
        count(
            &serve,
            "wasmcage_pool_assignments_total",
            &[("pool", &pool)]
        ),
        1.0
    );
    assert_eq!(
        count(
            &serve,
            "wasmcage_executions_total",
            &[("module", pool.as_str()), ("outcome", "completed")]
        ),
        4.0
    );
    // The canary runs under its own label, which no upload can take.
    let canary = serve.upload("canary", "(module (func (export \"f\")))");
    assert!(metric(&serve, "wasmcage_executions_total", &[("module", "canary")]).is_some());
    assert!(
        metric(
            &serve,
            "wasmcage_executions_total",
            &[("module", &label("canary", &canary))]
        )
        .is_some()
    );
    // `every_module = 1`: the second module gets no pool.
    assert_eq!(count(&serve, "wasmcage_pools_created_total", &[]), 2.0);

    // Deleting the module drops its pool and its series; the freed place goes to the next
    // upload.
    assert_eq!(
        serve
            .send(
                "DELETE",
                &format!("/v1/modules/{add}"),
                Some(crate::serve_hostile::KEY),
                b""
            )
            .status,
        204
    );
    assert_eq!(count(&serve, "wasmcage_pools_deleted_total", &[]), 1.0);
    assert_eq!(
        metric(&serve, "wasmcage_pool_slots_max", &[("pool", &pool)]),
        None
    );
    let exits = serve.upload("exit", "(module (func (export \"_start\")))");
    assert_eq!(count(&serve, "wasmcage_pools_created_total", &[]), 3.0);
    assert_eq!(count(&serve, "wasmcage_modules_stored", &[]), 2.0);

    // A restart loads the stored modules (a pool again for one of them) and rejects none;
    // a real rejection counts once.
    serve.restart();
    eventually("the stored modules are loaded", || {
        (serve.run(&exits, json!({})).status == 200).then_some(())
    });
    assert_eq!(count(&serve, "wasmcage_modules_rejected_total", &[]), 0.0);
    assert_eq!(count(&serve, "wasmcage_pools_created_total", &[]), 2.0);
    assert_eq!(count(&serve, "wasmcage_modules_stored", &[]), 2.0);
    assert!(count(&serve, "wasmcage_modules_stored_bytes", &[]) > 0.0);
    let bad = serve.send(
        "POST",
        "/v1/modules?name=bad",
        Some(crate::serve_hostile::KEY),
        b"\0asm\x01\0\0\0\xff",
    );
    assert_eq!(bad.status, 400, "{bad:?}");
    let foreign = serve.send(
        "POST",
        "/v1/modules?name=foreign",
        Some(crate::serve_hostile::KEY),
        br#"(module (import "env" "f" (func)))"#,
    );
    assert_eq!(foreign.status, 400, "{foreign:?}");
    assert_eq!(count(&serve, "wasmcage_modules_rejected_total", &[]), 2.0);
}

#[test]
fn waiting_executions_are_counted_and_readyz_is_503_while_draining() {
    let mut serve = Serve::start(
        "[admission]\nmax_executions = 1\nwait = \"30s\"\n[max_limits]\ntimeout = \"2s\"\n",
    );
    let sleeper = serve.upload("sleeper", SLEEPER);
    let run = json!({});
    let path = format!("/v1/modules/{sleeper}/run");
    let mut first = serve.hold("POST", &path, &run);
    // The scrape itself is one request in flight; the held one is the other.
    eventually("the first request is in flight", || {
        (metric(&serve, "wasmcage_http_requests_in_flight", &[])? >= 2.0).then_some(())
    });
    let mut second = serve.hold("POST", &path, &run);
    eventually("the second execution waits for admission", || {
        (metric(&serve, "wasmcage_executions_queued", &[])? == 1.0).then_some(())
    });

    let term = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // Draining: the listener still answers, not ready, and refuses new work.
    eventually("/readyz says draining", || {
        let ready = serve.send("GET", "/readyz", None, b"");
        (ready.status == 503 && ready.json()["status"] == "draining").then_some(())
    });
    assert_eq!(serve.send("GET", "/livez", None, b"").status, 200);
    let refused = serve.get("/v1/modules");
    assert_eq!(
        (refused.status, refused.json()["error"]["code"].clone()),
        (503, json!("shutting_down"))
    );
    // Both executions in flight finish (each at its 2 s timeout), then the server exits.
    for stream in [&mut first, &mut second] {
        stream.set_read_timeout(Some(BOUND)).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"outcome\":\"timeout\""), "{answer}");
    }
    let status = eventually("the server exits after draining", || {
        serve.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "{}", serve.log());
}

/// A pool is shared by every key that stored its module: one key holding its only slot must
/// not make another key's request wait for it (or fail): that request runs cold at once.
#[test]
fn a_full_pool_sends_other_requests_cold_instead_of_making_them_wait() {
    let serve = Serve::start(
        "[pools]\nevery_module = 1\nmin_ready = 1\nmax_in_use = 1\n[admission]\nwait = \"300ms\"\n[max_limits]\ntimeout = \"3s\"\n",
    );
    let module = format!(
        "{} (func (export \"spin\") (loop (br 0))))",
        &ADD[..ADD.len() - 1]
    );
    let id = serve.upload("shared", &module);
    assert!(matches!(
        serve.upload_as(OTHER, "shared", module.as_bytes()).status,
        200 | 201
    ));
    let pool = label("shared", &id);
    // The first key's spinning call takes the pool's only slot and keeps it for 3 s.
    let _held = serve.hold(
        "POST",
        &format!("/v1/modules/{id}/invoke"),
        &json!({"export": "spin"}),
    );
    eventually("the spin holds the pool's slot", || {
        (count(&serve, "wasmcage_pool_slots_in_use", &[("pool", &pool)]) == 1.0).then_some(())
    });
    // Waiting for the slot would outlast the 300 ms admission wait and end in 503 `busy`.
    let out = serve.send(
        "POST",
        &format!("/v1/modules/{id}/invoke"),
        Some(OTHER),
        json!({"export": "add", "args": [2, 3]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["results"], json!([5]));
    assert_eq!(
        count(&serve, "wasmcage_pool_slots_in_use", &[("pool", &pool)]),
        1.0,
        "the held slot was not taken"
    );
}
