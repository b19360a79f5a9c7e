//! Reproducers of the holes an outside review found: each guest here once crashed the host,
//! escaped a limit, or held a thread past its caller. Every one must now end in a classified
//! outcome or a typed error, with the host running and the observers told exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmcage::events::{LimitKind, RecordedEvent, SecurityEventKind};
use wasmcage::{
    CommandInput, Engine, EngineConfig, Error, Limits, Outcome, Policy, PoolConfig, PoolingConfig,
    Profile, RecordingObserver, Sandbox, WarmPool,
};

use crate::common::{command, engine, recorded_engine, sandbox, tight, wat};

/// `poll_oneoff` with `nsubscriptions = 0xFFFFFFFF` once asked the host for 206 GB and
/// aborted the process. It must be refused by the guest's memory size, under every profile.
#[test]
fn poll_oneoff_with_a_huge_count_is_refused_not_allocated() {
    let module = wat(r#"(module
      (import "wasi_snapshot_preview1" "poll_oneoff" (func $p (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        (if (i32.ne (call $p (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 0)) (i32.const 28))
          (then unreachable))))"#);
    for profile in [Profile::Strict, Profile::Standard, Profile::Permissive] {
        let sandbox = Sandbox::builder(engine())
            .policy(Policy::profile(profile))
            .build()
            .unwrap();
        let out = sandbox
            .run_command(&module, CommandInput::default())
            .unwrap();
        assert_eq!(out.report.outcome, Outcome::Completed, "{profile:?}");
    }
}

const START_CALLS_WASI: &str = r#"(module
  (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
  (func $s (drop (call $y)))
  (start $s)
  (memory (export "memory") 1)
  (func (export "f") (result i32) (i32.const 1)))"#;

/// A start function that calls a WASI import once panicked the host: the WASI context was
/// made after instantiation.
#[test]
fn a_start_function_may_call_wasi() {
    let module = wat(START_CALLS_WASI);
    let out = sandbox(tight()).call(&module, "f", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert_eq!(out.results, [wasmcage::Value::I32(1)]);
    // A warm pool never instantiates such a module ahead (its start function is guest code
    // that belongs to an execution), so nothing runs outside one.
    let pool = WarmPool::new(&sandbox(tight()), &module, PoolConfig::default()).unwrap();
    assert_eq!(pool.stats().available, 0);
    for _ in 0..3 {
        let out = pool.call("f", &[]).unwrap();
        assert_eq!(out.report.outcome, Outcome::Completed);
    }
}

/// A guest burning `n` units of fuel in its start function and `n` more in `_start`.
fn burner(n: u32) -> String {
    let burn = format!(
        "(local $i i32) (local.set $i (i32.const {n})) \
         (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) \
         (br_if $l (i32.ne (local.get $i) (i32.const 0))))"
    );
    format!(
        r#"(module (memory (export "memory") 1)
          (func $s {burn}) (start $s)
          (func (export "_start") {burn}))"#
    )
}

/// The fuel limit once reset after the start function: one execution has one budget.
#[test]
fn fuel_covers_the_start_function() {
    let module = wat(&burner(1_000_000));
    let limits = Limits {
        fuel: Some(100_000_000),
        ..tight()
    };
    let out = sandbox(limits.clone())
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    let both = out.report.fuel_consumed.unwrap();
    // Each loop iteration costs a handful of units; both loops must be counted.
    assert!(both > 2 * 1_000_000, "consumed {both}");

    // With a budget between one loop and two, the start function's share is not refunded.
    let limits = Limits {
        fuel: Some(both * 3 / 4),
        ..limits
    };
    let out = sandbox(limits.clone())
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
    assert_eq!(out.report.fuel_consumed, limits.fuel);

    // A start function that runs out reports what it used, not zero.
    let limits = Limits {
        fuel: Some(1000),
        ..limits
    };
    let out = sandbox(limits)
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
    assert_eq!(out.report.fuel_consumed, Some(1000));
}

/// An async execution whose future is dropped (a request that timed out, a client that went
/// away) is stopped, not left to burn its whole timeout.
#[test]
fn dropping_an_async_execution_cancels_it() {
    let (engine, recorder) = recorded_engine();
    let module = engine
        .compile(
            "spin.wat",
            br#"(module (func (export "spin") (loop (br 0))))"#,
        )
        .unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: None,
            timeout: Duration::from_secs(120),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let call = sandbox.call_async(&module, "spin", &[]);
        // The caller gives up once the guest is running.
        let gave_up = tokio::time::timeout(Duration::from_millis(100), call).await;
        assert!(gave_up.is_err(), "a spinning guest cannot finish");
    });
    let report = wait_for_finish(&recorder);
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert!(report.duration < Duration::from_secs(120));
}

/// Waits (bounded) until the recorder has seen an execution finish.
fn wait_for_finish(recorder: &RecordingObserver) -> wasmcage::ExecutionReport {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(report) = recorder.reports().into_iter().next() {
            return report;
        }
        assert!(Instant::now() < give_up, "the execution never finished");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// When every instance slot of the engine is taken, an execution is a host error the caller
/// can retry (`Error::Capacity`), never a guest trap; the observers still see the
/// execution start and finish exactly once.
#[test]
fn no_free_instance_slot_is_a_capacity_error() {
    let recorder = Arc::new(RecordingObserver::default());
    let engine = Engine::with_observer(
        EngineConfig {
            pooling: Some(PoolingConfig {
                total_instances: 1,
                ..PoolingConfig::default()
            }),
            ..EngineConfig::default()
        },
        recorder.clone(),
    )
    .unwrap();
    let module = engine
        .compile(
            "add.wat",
            br#"(module (func (export "f") (result i32) (i32.const 7)))"#,
        )
        .unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    // The pool holds the engine's only slot with its one ready instance.
    let pool = WarmPool::new(
        &sandbox,
        &module,
        PoolConfig {
            min_ready: 1,
            max_in_use: 1,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    assert_eq!(pool.stats().available, 1);
    let err = sandbox.call(&module, "f", &[]).unwrap_err();
    assert!(matches!(err, Error::Capacity(_)), "{err}");
    let events = recorder.events();
    let started = events
        .iter()
        .filter(|e| matches!(e, RecordedEvent::ExecutionStarted(_)))
        .count();
    let finished = recorder.reports();
    assert_eq!((started, finished.len()), (1, 1), "{events:?}");
    assert_eq!(finished[0].outcome, Outcome::Trap(wasmcage::TrapKind::Host));
    drop(pool);
    assert_eq!(
        sandbox.call(&module, "f", &[]).unwrap().report.outcome,
        Outcome::Completed
    );
}

/// A guest writing to its scratch directory stops getting bytes onto the disk at its disk
/// limit: the write fails with `ENOSPC` (51), the guest carries on, and a security event
/// says so.
#[test]
fn writes_to_files_stop_at_the_disk_limit() {
    let (engine, recorder) = recorded_engine();
    // Opens /scratch/f (the scratch directory is fd 3), then writes 64 KiB at a time until
    // a write fails, and exits with that write's errno.
    let module = engine
        .compile(
            "fill.wat",
            br#"(module
      (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 2)
      (data (i32.const 0) "f")
      (func (export "_start") (local $fd i32) (local $e i32) (local $n i32)
        (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
          (i32.const 1) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16)))
        (if (local.get $e) (then (call $exit (i32.add (i32.const 100) (local.get $e)))))
        (local.set $fd (i32.load (i32.const 16)))
        (i32.store (i32.const 32) (i32.const 65536))
        (i32.store (i32.const 36) (i32.const 65536))
        (loop $l
          (local.set $e (call $write (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 40)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if $l (i32.and (i32.eqz (local.get $e)) (i32.lt_u (local.get $n) (i32.const 1000)))))
        (call $exit (local.get $e))))"#,
        )
        .unwrap();
    let mut policy = Policy::profile(Profile::Standard);
    policy.limits.disk_bytes = Some(1 << 20);
    let sandbox = Sandbox::builder(&engine).policy(policy).build().unwrap();
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(51), "{:?}", out.report);
    let events = recorder.security_events();
    assert!(
        events
            .iter()
            .any(|e| e.kind == SecurityEventKind::LimitExceeded(LimitKind::Disk)),
        "{events:?}"
    );
}

/// `poll_oneoff` on a descriptor is answered (stdout is always writable), not refused with
/// `ENOTSUP` as it once was.
#[test]
fn poll_oneoff_answers_descriptor_subscriptions() {
    // One subscription: fd_write readiness (tag 2) on fd 1. The event's errno (bytes 8..10)
    // must be 0 and its type 2; the guest exits with errno * 10 + type.
    let module = command(
        r#"
        (i64.store (i32.const 0) (i64.const 7))
        (i32.store8 (i32.const 8) (i32.const 2))
        (i32.store (i32.const 16) (i32.const 1))
        (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
          (then unreachable))
        (call $proc_exit (i32.add
          (i32.mul (i32.load16_u (i32.const 72)) (i32.const 10))
          (i32.load8_u (i32.const 74))))"#,
    );
    let out = sandbox(tight())
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(2));
}

/// Modules whose compiling would explode are refused before any compiling.
#[test]
fn compile_bombs_are_refused_before_compiling() {
    let engine = Engine::new(EngineConfig {
        compile_limits: wasmcage::CompileLimits {
            max_functions: 1000,
            ..wasmcage::CompileLimits::default()
        },
        ..EngineConfig::default()
    })
    .unwrap();
    let many: String = (0..2000).map(|_| "(func)").collect();
    let err = engine
        .compile("bomb.wat", format!("(module {many})").as_bytes())
        .unwrap_err();
    assert!(matches!(err, Error::ModuleTooLarge { .. }), "{err}");
    // An import the sandbox does not provide is refused the same way, before compiling.
    let err = engine
        .compile("env.wat", br#"(module (import "env" "f" (func)))"#)
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedImport { .. }), "{err}");
}

/// A module that imports no function reaching into a directory gets the engine's shared
/// empty directory as its scratch: it still sees `/scratch` preopened, and cannot change
/// the shared directory (setting its times is refused), so nothing passes between tenants.
#[test]
fn the_shared_empty_scratch_is_read_only() {
    let module = wat(r#"(module
      (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_filestat_set_times" (func $times (param i32 i64 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        ;; fd 3 is a preopened directory whose name is 8 bytes long ("/scratch").
        (if (call $prestat (i32.const 3) (i32.const 0)) (then (call $exit (i32.const 1))))
        (if (i32.ne (i32.load (i32.const 4)) (i32.const 8)) (then (call $exit (i32.const 2))))
        ;; Setting its times (both, explicitly) must be refused.
        (if (i32.eqz (call $times (i32.const 3) (i64.const 1) (i64.const 1) (i32.const 5)))
          (then (call $exit (i32.const 3))))
        (call $exit (i32.const 0))))"#);
    let sandbox = Sandbox::builder(engine())
        .policy(Policy::profile(Profile::Standard))
        .build()
        .unwrap();
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(0), "{:?}", out.report);
}

const DIR_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "a.")"#;

/// A tree thousands of levels deep once overflowed the stack of the thread that removed
/// the scratch directory and aborted the server. A guest may create at most 4 096 entries
/// per execution; past that it gets `ENOSPC`, and the host removes what it made.
#[test]
fn a_guest_cannot_build_an_unbounded_tree() {
    // Creates `a`, opens it (closing the previous directory), and again, until refused;
    // exits 0 when the refusal is ENOSPC after exactly 4 096 directories.
    let module = wat(&format!(
        r#"(module {DIR_IMPORTS}
      (func (export "_start") (local $fd i32) (local $n i32) (local $e i32)
        (local.set $fd (i32.const 3))
        (block $done (loop $l
          (local.set $e (call $mkdir (local.get $fd) (i32.const 0) (i32.const 1)))
          (br_if $done (local.get $e))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (local.set $e (call $open (local.get $fd) (i32.const 0) (i32.const 0) (i32.const 1)
            (i32.const 2) (i64.const 0) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16)))
          (br_if $done (local.get $e))
          (if (i32.ne (local.get $fd) (i32.const 3)) (then (drop (call $close (local.get $fd)))))
          (local.set $fd (i32.load (i32.const 16)))
          (br $l)))
        (if (i32.ne (local.get $e) (i32.const 51)) (then (call $exit (i32.add (i32.const 10) (local.get $e)))))
        (if (i32.ne (local.get $n) (i32.const 4096)) (then (call $exit (i32.const 2))))
        (call $exit (i32.const 0))))"#
    ));
    let mut policy = Policy::profile(Profile::Standard);
    policy.limits.fuel = None;
    let sandbox = Sandbox::builder(engine()).policy(policy).build().unwrap();
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(0), "{:?}", out.report);
}

/// The host's descriptors are shared by every tenant: one execution may hold at most 256
/// files open; past that `path_open` answers `EMFILE` (33).
#[test]
fn a_guest_cannot_take_every_descriptor() {
    let module = wat(&format!(
        r#"(module {DIR_IMPORTS}
      (func (export "_start") (local $n i32) (local $e i32)
        (block $done (loop $l
          (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 1)
            (i32.const 2) (i64.const 0) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16)))
          (br_if $done (local.get $e))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $n) (i32.const 100000)))))
        (if (i32.ne (local.get $e) (i32.const 33)) (then (call $exit (i32.add (i32.const 10) (local.get $e)))))
        (if (i32.ne (local.get $n) (i32.const 256)) (then (call $exit (i32.const 2))))
        ;; Closing one makes room for one more.
        (drop (call $close (i32.load (i32.const 16))))
        (if (call $open (i32.const 3) (i32.const 0) (i32.const 1) (i32.const 1)
            (i32.const 2) (i64.const 0) (i64.const 0x1fffffff) (i32.const 0) (i32.const 16))
          (then (call $exit (i32.const 3))))
        (call $exit (i32.const 0))))"#
    ));
    let sandbox = Sandbox::builder(engine())
        .policy(Policy::profile(Profile::Standard))
        .build()
        .unwrap();
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(0), "{:?}", out.report);
}

/// A timeout too long for the clock is clamped, not an overflow in the host.
#[test]
fn an_absurd_timeout_does_not_overflow() {
    let module = wat(r#"(module (func (export "f") (result i32) (i32.const 1)))"#);
    let out = sandbox(Limits {
        timeout: Duration::from_secs(100_000_000_000_000_000),
        ..tight()
    })
    .call(&module, "f", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
}
