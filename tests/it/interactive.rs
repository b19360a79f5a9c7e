//! Interactive guests: started once, fed turn by turn, each turn its own execution with its
//! own limits and report (what language runtimes' pre-started interpreters and sessions are).

use std::time::Duration;

use bytes::Bytes;
use wasmcage::{Error, Interactive, Limits, Outcome, RecordedEvent, Sandbox, TurnLimits};

use crate::common::{command, recorded_engine, sandbox};

/// Echoes each read back to stdout; a read starting with `L` spins forever, with `S`
/// ends the turn with a status record of 7, with `X` exits 3; end of file returns.
const ECHO: &str = r#"
    (local $n i32)
    (loop $next
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 1024))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.eqz (local.get $n)) (then (return)))
      (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 76)) (then (loop $spin (br $spin))))
      (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 88)) (then (call $proc_exit (i32.const 3))))
      (if (i32.eq (i32.load8_u (i32.const 64)) (i32.const 83))
        (then
          (i32.store (i32.const 16) (i32.const 2048))
          (i32.store (i32.const 20) (i32.const 19))
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
          (br $next)))
      (i32.store (i32.const 16) (i32.const 64))
      (i32.store (i32.const 20) (local.get $n))
      (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $next))
"#;

fn echo_module(engine: Option<&wasmcage::Engine>) -> wasmcage::Module {
    let text = crate::common::command_text(ECHO).replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 1) (data (i32.const 2048) "\1fwasmcage:status=7\1f")"#,
    );
    match engine {
        Some(engine) => engine.compile("echo.wat", text.as_bytes()).unwrap(),
        None => crate::common::wat(&text),
    }
}

fn turn(fuel: u64, timeout_ms: u64) -> TurnLimits {
    TurnLimits {
        fuel: Some(fuel),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn start(sandbox: &Sandbox, module: &wasmcage::Module) -> Interactive {
    Interactive::start(sandbox, module, vec!["echo".into()], None).expect("the guest starts")
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 1 << 20,
        fuel: Some(1_000_000),
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

#[test]
fn each_turn_is_an_execution_with_its_own_output_and_report() {
    let (engine, recorder) = recorded_engine();
    let module = echo_module(Some(&engine));
    let sandbox = Sandbox::builder(&engine).limits(limits()).build().unwrap();
    let mut guest = start(&sandbox, &module);
    assert!(guest.is_alive());
    assert!(guest.startup().fuel_consumed.is_some_and(|f| f > 0));

    let first = guest
        .turn(
            Bytes::from_static(b"hello"),
            false,
            turn(1_000_000, 1000),
            None,
        )
        .unwrap();
    assert_eq!(first.stdout, b"hello");
    assert!(first.alive);
    assert_eq!(first.report.outcome, Outcome::Completed);
    assert_eq!(first.report.stdout_bytes, 5);
    assert_eq!(first.report.fuel_limit, Some(1_000_000));
    let used = first
        .report
        .fuel_consumed
        .expect("fuel is counted per turn");
    assert!(used > 0 && used < 1_000_000, "{used}");

    let second = guest
        .turn(
            Bytes::from_static(b"again"),
            false,
            turn(1_000_000, 1000),
            None,
        )
        .unwrap();
    assert_eq!(
        second.stdout, b"again",
        "the first turn's output is not repeated"
    );
    assert_ne!(second.report.execution_id, first.report.execution_id);

    let status = guest
        .turn(Bytes::from_static(b"S"), false, turn(1_000_000, 1000), None)
        .unwrap();
    assert_eq!(status.stdout, b"", "the status record is not output");
    assert_eq!(status.report.outcome, Outcome::Exited(7));
    assert_eq!(status.report.exit_code, Some(7));
    assert!(status.alive);

    let last = guest
        .turn(
            Bytes::from_static(b"bye"),
            true,
            turn(1_000_000, 1000),
            None,
        )
        .unwrap();
    assert_eq!(last.stdout, b"bye");
    assert!(!last.alive, "end of file ends the guest");
    assert_eq!(last.report.exit_code, Some(0));
    assert!(matches!(
        guest.turn(Bytes::new(), false, turn(1, 1000), None),
        Err(Error::InterpreterEnded)
    ));

    let reports = recorder.reports();
    assert_eq!(
        reports.len(),
        4,
        "one report per turn, none for the start-up"
    );
    let started = recorder
        .events()
        .iter()
        .filter(|e| matches!(e, RecordedEvent::ExecutionStarted(_)))
        .count();
    assert_eq!(started, 4);
}

#[test]
fn a_turn_has_its_own_fuel_and_deadline_not_the_start_ups() {
    let module = echo_module(None);
    // The start-up gets generous limits; the turns get tight ones.
    let sandbox = sandbox(Limits {
        fuel: Some(1_000_000_000),
        timeout: Duration::from_secs(30),
        ..limits()
    });
    let mut guest = start(&sandbox, &module);
    let spun = guest
        .turn(
            Bytes::from_static(b"L"),
            false,
            turn(1_000_000, 5_000),
            None,
        )
        .unwrap();
    assert_eq!(spun.report.outcome, Outcome::OutOfFuel);
    assert!(!spun.alive);

    let mut guest = start(&sandbox, &module);
    let spun = guest
        .turn(Bytes::from_static(b"L"), false, turn(u64::MAX, 100), None)
        .unwrap();
    assert_eq!(spun.report.outcome, Outcome::Timeout);
    assert_eq!(
        spun.report.fuel_consumed, None,
        "an interrupted turn's fuel is unknown"
    );
    assert!(
        spun.report.duration < Duration::from_secs(3),
        "{:?}",
        spun.report.duration
    );
}

#[test]
fn an_exit_in_a_turn_ends_the_guest_with_its_code() {
    let module = echo_module(None);
    let sandbox = sandbox(limits());
    let mut guest = start(&sandbox, &module);
    let out = guest
        .turn(Bytes::from_static(b"X"), false, turn(1_000_000, 1000), None)
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Exited(3));
    assert!(!out.alive);
}

#[test]
fn a_guest_that_ends_before_reading_never_starts() {
    let module = command("(call $proc_exit (i32.const 9))");
    let sandbox = sandbox(limits());
    match Interactive::start(&sandbox, &module, vec![], None) {
        Err(Error::InterpreterStart { outcome, .. }) => assert_eq!(outcome, Outcome::Exited(9)),
        other => panic!("expected a start-up failure, got {other:?}"),
    }
    let spin = command("(loop $l (br $l))");
    match Interactive::start(&sandbox, &spin, vec![], None) {
        Err(Error::InterpreterStart { outcome, .. }) => assert_eq!(outcome, Outcome::OutOfFuel),
        other => panic!("expected a start-up failure, got {other:?}"),
    }
}

#[test]
fn a_hostile_read_cannot_reach_outside_the_guests_memory() {
    // An iovec pointing past memory, and an nread pointer past memory: EFAULT, no crash.
    let module = command(
        r#"
        (i32.store (i32.const 0) (i32.const 65530))
        (i32.store (i32.const 4) (i32.const 100))
        (if (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 21))
          (then unreachable))
        (i32.store (i32.const 0) (i32.const 64))
        (if (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 65534)) (i32.const 21))
          (then unreachable))
        (if (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 8)) (i32.const 28))
          (then unreachable))
        ;; a list of 2000 buffers (inside memory): more than IOV_MAX, refused before copying
        (if (i32.ne (call $fd_read (i32.const 0) (i32.const 0) (i32.const 2000) (i32.const 8)) (i32.const 28))
          (then unreachable))
        ;; a real read then: the guest becomes ready
        (i32.store (i32.const 4) (i32.const 16))
        (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        "#,
    );
    let sandbox = sandbox(limits());
    let mut guest = Interactive::start(&sandbox, &module, vec![], None).expect("ready");
    let out = guest
        .turn(Bytes::from_static(b"x"), true, turn(1_000_000, 1000), None)
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
}

#[test]
fn dropping_a_waiting_guest_frees_its_instance() {
    let module = echo_module(None);
    let sandbox = sandbox(limits());
    // More guests than the engine has instance slots, one after another: each dropped guest
    // must give its slot back.
    for _ in 0..300 {
        let guest = start(&sandbox, &module);
        drop(guest);
    }
}
