//! Every limit, broken by a guest that tries: the engine stops it and classifies the outcome.

use std::time::Duration;

use wasmcage::events::{LimitKind, SecurityAction, SecurityEventKind};
use wasmcage::{CommandInput, Engine, EngineConfig, Limits, Outcome, Sandbox, TrapKind, Value};

use crate::common::{command, command_text, recorded_engine, sandbox, tight, wat};

const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;

#[test]
fn infinite_loop_runs_out_of_fuel() {
    let out = sandbox(Limits {
        fuel: Some(50_000),
        ..tight()
    })
    .call(&wat(SPIN), "spin", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::OutOfFuel);
    assert_eq!(out.report.fuel_consumed, Some(50_000));
    assert_eq!(out.report.fuel_limit, Some(50_000));
}

#[test]
fn infinite_loop_without_fuel_stops_at_the_timeout() {
    let limits = Limits {
        fuel: None,
        timeout: Duration::from_millis(100),
        ..tight()
    };
    let out = sandbox(limits).call(&wat(SPIN), "spin", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Timeout);
    assert!(out.report.duration >= Duration::from_millis(100));
    assert_eq!(out.report.fuel_limit, None);
}

#[test]
fn a_timed_out_guest_reports_its_fuel_as_unknown_not_as_zero() {
    let limits = Limits {
        fuel: Some(u64::MAX / 2),
        timeout: Duration::from_millis(100),
        ..tight()
    };
    let out = sandbox(limits).call(&wat(SPIN), "spin", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Timeout);
    // The spinning loop never wrote its count back; 0 would be a lie.
    assert_eq!(out.report.fuel_consumed, None);
    assert_eq!(out.report.fuel_limit, Some(u64::MAX / 2));
}

#[test]
fn infinite_loop_on_an_engine_without_fuel_metering_stops_at_the_timeout() {
    let engine = Engine::new(EngineConfig {
        consume_fuel: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let module = engine.compile("spin.wat", SPIN.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: None,
            timeout: Duration::from_millis(50),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let out = sandbox.call(&module, "spin", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Timeout);
    assert_eq!(out.report.fuel_consumed, None);
}

#[test]
fn a_fuel_limit_on_an_engine_without_metering_is_refused() {
    let engine = Engine::new(EngineConfig {
        consume_fuel: false,
        ..EngineConfig::default()
    })
    .unwrap();
    let err = Sandbox::builder(&engine).build().unwrap_err();
    assert!(err.to_string().contains("does not meter fuel"), "{err}");
}

#[test]
fn memory_grow_bomb_hits_the_memory_limit() {
    let bomb = wat(r#"(module (memory 1)
        (func (export "bomb") (loop (drop (memory.grow (i32.const 1))) (br 0))))"#);
    let out = sandbox(Limits {
        memory_bytes: 4 << 20,
        on_memory_limit: wasmcage::core::OnMemoryLimit::Terminate,
        ..tight()
    })
    .call(&bomb, "bomb", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::MemoryLimit);
    assert!(out.report.memory_limit_hit);
    assert_eq!(out.report.memory_peak_bytes, 4 << 20);
    assert_eq!(out.report.memory_limit_bytes, 4 << 20);
}

/// By default a grow past the limit is refused the WebAssembly way: `memory.grow` returns
/// -1, the guest handles it and completes, and the report and a security event say the
/// limit was hit.
#[test]
fn a_refused_grow_returns_minus_one_and_the_guest_carries_on() {
    let (engine, recorder) = recorded_engine();
    let module = engine
        .compile(
            "grow.wat",
            br#"(module (memory 1)
        (func (export "grow") (result i32) (memory.grow (i32.const 100))))"#,
        )
        .unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let out = sandbox.call(&module, "grow", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert_eq!(out.results, [Value::I32(-1)]);
    assert!(out.report.memory_limit_hit);
    assert_eq!(out.report.memory_peak_bytes, 65536);
    assert!(
        recorder
            .security_events()
            .iter()
            .any(|e| e.capability == "memory"),
        "{:?}",
        recorder.security_events()
    );
}

#[test]
fn initial_memory_over_the_limit_fails_at_instantiation() {
    // 32 pages = 2 MiB, against a 1 MiB limit.
    let module = wat(r#"(module (memory 32) (func (export "f")))"#);
    let out = sandbox(tight()).call(&module, "f", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::MemoryLimit);
}

#[test]
fn memory_peak_is_reported() {
    let module = wat(r#"(module (memory 2)
        (func (export "grow") (drop (memory.grow (i32.const 3)))))"#);
    let out = sandbox(tight()).call(&module, "grow", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert_eq!(out.report.memory_peak_bytes, 5 * 65536);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    let module = wat(
        r#"(module (func $f (export "recurse") (param i64) (result i64)
        (i64.add (call $f (i64.add (local.get 0) (i64.const 1))) (i64.const 1))))"#,
    );
    let out = sandbox(Limits {
        fuel: None,
        ..tight()
    })
    .call(&module, "recurse", &[Value::I64(0)])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::StackOverflow);
}

#[test]
fn table_grow_bomb_hits_the_table_limit() {
    let module = wat(r#"(module (table 1 funcref)
        (func (export "bomb") (loop (drop (table.grow (ref.null func) (i32.const 100))) (br 0))))"#);
    let out = sandbox(Limits {
        table_elements: 1_000,
        ..tight()
    })
    .call(&module, "bomb", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::Trap(TrapKind::TableLimit));
}

#[test]
fn instance_and_memory_count_limits_are_enforced() {
    let module = wat(r#"(module (func (export "f")))"#);
    let out = sandbox(Limits {
        instances: 0,
        ..tight()
    })
    .call(&module, "f", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::Trap(TrapKind::InstanceLimit));

    let two_memories = wat(r#"(module (memory 1) (memory 1) (func (export "f")))"#);
    let out = sandbox(tight()).call(&two_memories, "f", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Trap(TrapKind::InstanceLimit));
    let out = sandbox(Limits {
        memories: 2,
        ..tight()
    })
    .call(&two_memories, "f", &[])
    .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
}

#[test]
fn stdout_flood_is_truncated_and_the_guest_carries_on() {
    // Writes the same 4 KiB page 1000 times (4 MB), then returns normally.
    let flood = command_text(
        r#"(local $i i32)
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 4096))
        (loop $l
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))"#,
    );
    let (engine, recorder) = recorded_engine();
    let module = engine.compile("flood.wat", flood.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            max_stdout_bytes: 10_000,
            ..tight()
        })
        .build()
        .unwrap();
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert_eq!(out.report.exit_code, Some(0));
    assert_eq!(out.stdout.len(), 10_000);
    assert_eq!(out.report.stdout_bytes, 4096 * 1000);
    assert!(out.report.stdout_truncated);
    assert!(!out.report.stderr_truncated);
    let security = recorder.security_events();
    assert_eq!(security.len(), 1, "{security:?}");
    assert_eq!(
        security[0].kind,
        SecurityEventKind::LimitExceeded(LimitKind::Output)
    );
    assert_eq!(security[0].action, SecurityAction::Truncated);
}

#[test]
fn a_guest_that_sleeps_past_its_timeout_is_stopped_on_time() {
    // One relative clock subscription for an hour.
    let sleeper = command(
        r#"(i64.store (i32.const 0) (i64.const 7))          ;; userdata
        (i32.store8 (i32.const 8) (i32.const 0))           ;; tag: clock
        (i32.store (i32.const 16) (i32.const 1))           ;; monotonic
        (i64.store (i32.const 24) (i64.const 3600000000000)) ;; one hour in ns
        (i32.store16 (i32.const 40) (i32.const 0))         ;; relative
        (drop (call $poll_oneoff (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200)))"#,
    );
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..tight()
    };
    let out = sandbox(limits)
        .run_command(&sleeper, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Timeout);
    assert!(out.report.duration < Duration::from_secs(60));
}

#[test]
fn a_short_sleep_completes_and_reports_its_event() {
    let sleeper = command(
        r#"(i64.store (i32.const 0) (i64.const 7))
        (i32.store8 (i32.const 8) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 1000000))     ;; 1 ms
        (i32.store16 (i32.const 40) (i32.const 0))
        (if (call $poll_oneoff (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 200))
          (then unreachable))
        (if (i32.ne (i32.load (i32.const 200)) (i32.const 1)) (then unreachable))
        (if (i64.ne (i64.load (i32.const 100)) (i64.const 7)) (then unreachable))"#,
    );
    let out = sandbox(tight())
        .run_command(&sleeper, CommandInput::default())
        .unwrap();
    assert_eq!(
        out.report.outcome,
        Outcome::Completed,
        "{:?}",
        out.report.message
    );
    assert!(out.report.duration >= Duration::from_millis(1));
}

#[test]
fn limit_breaches_are_security_events() {
    let (engine, recorder) = recorded_engine();
    let module = engine.compile("spin.wat", SPIN.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: Some(1_000),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let out = sandbox.call(&module, "spin", &[]).unwrap();
    let events = recorder.security_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].kind,
        SecurityEventKind::LimitExceeded(LimitKind::Fuel)
    );
    assert_eq!(events[0].action, SecurityAction::Terminated);
    assert_eq!(events[0].execution_id, out.report.execution_id);
}

#[test]
fn the_host_survives_every_guest_and_keeps_serving() {
    let sandbox = sandbox(Limits {
        fuel: Some(100_000),
        ..tight()
    });
    let bad = wat(r#"(module (func (export "f") unreachable))"#);
    let good = wat(r#"(module (func (export "f") (result i32) i32.const 7))"#);
    for _ in 0..3 {
        assert_eq!(
            sandbox.call(&bad, "f", &[]).unwrap().report.outcome,
            Outcome::Trap(TrapKind::Unreachable)
        );
        assert_eq!(
            sandbox
                .call(&wat(SPIN), "spin", &[])
                .unwrap()
                .report
                .outcome,
            Outcome::OutOfFuel
        );
        assert_eq!(
            sandbox.call(&good, "f", &[]).unwrap().results,
            vec![Value::I32(7)]
        );
    }
}

#[test]
fn fresh_instance_per_execution() {
    // A global and a memory cell that each execution increments: a reused instance would
    // return 2 the second time.
    let module = wat(r#"(module (memory 1) (global $g (mut i32) (i32.const 0))
        (func (export "bump") (result i32)
          (global.set $g (i32.add (global.get $g) (i32.const 1)))
          (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
          (i32.add (global.get $g) (i32.load (i32.const 0)))))"#);
    let sandbox = sandbox(tight());
    for _ in 0..3 {
        assert_eq!(
            sandbox.call(&module, "bump", &[]).unwrap().results,
            vec![Value::I32(2)]
        );
    }
}
