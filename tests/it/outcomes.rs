//! Every outcome kind, every caller error, and the report that describes them.

use wasmcage::events::RecordedEvent;
use wasmcage::{Error, ExecutionKind, Outcome, Sandbox, TrapKind, Value, ValueType};

use crate::common::{engine, recorded_engine, sandbox, tight, wat};

#[test]
fn a_completed_call_returns_typed_results() {
    let module = wat(r#"(module
        (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
        (func (export "mix") (param i64 f32 f64) (result f64 i64)
          (f64.add (f64.promote_f32 (local.get 1)) (local.get 2)) (local.get 0)))"#);
    let sandbox = sandbox(tight());
    let out = sandbox
        .call(&module, "add", &[Value::I32(40), Value::I32(2)])
        .unwrap();
    assert_eq!(out.results, vec![Value::I32(42)]);
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert_eq!(out.report.kind, ExecutionKind::Call);
    assert_eq!(out.report.exit_code, None);
    assert!(out.report.fuel_consumed.unwrap() > 0);

    let out = sandbox
        .call(
            &module,
            "mix",
            &[Value::I64(-9), Value::F32(1.5), Value::F64(0.25)],
        )
        .unwrap();
    assert_eq!(out.results, vec![Value::F64(1.75), Value::I64(-9)]);
}

fn check_trap(body: &str, expected: TrapKind) {
    let module = wat(&format!(
        r#"(module (memory 1) (table 2 funcref) (type $t (func (result i32)))
            (func $other (param i32))
            (elem (i32.const 1) $other)
            (func (export "f") {body}))"#
    ));
    let out = sandbox(tight()).call(&module, "f", &[]).unwrap();
    assert_eq!(
        out.report.outcome,
        Outcome::Trap(expected),
        "for {body}: {:?}",
        out.report.message
    );
    assert!(out.results.is_empty());
    assert!(out.report.message.is_some());
}

#[test]
fn each_trap_is_classified() {
    check_trap("unreachable", TrapKind::Unreachable);
    check_trap("(drop (i32.load (i32.const 70000)))", TrapKind::OutOfBounds);
    check_trap(
        "(drop (i32.div_u (i32.const 1) (i32.const 0)))",
        TrapKind::DivisionByZero,
    );
    check_trap(
        "(drop (i32.div_s (i32.const 0x80000000) (i32.const -1)))",
        TrapKind::IntegerOverflow,
    );
    check_trap(
        "(drop (i32.trunc_f32_s (f32.const nan)))",
        TrapKind::BadConversionToInteger,
    );
    check_trap(
        "(drop (call_indirect (type $t) (i32.const 0)))",
        TrapKind::IndirectCallToNull,
    );
    check_trap(
        "(drop (call_indirect (type $t) (i32.const 1)))",
        TrapKind::BadSignature,
    );
    check_trap(
        "(drop (call_indirect (type $t) (i32.const 5)))",
        TrapKind::TableOutOfBounds,
    );
}

#[test]
fn a_trap_in_the_start_function_is_an_outcome() {
    let module = wat(r#"(module (func $s unreachable) (start $s) (func (export "f")))"#);
    let out = sandbox(tight()).call(&module, "f", &[]).unwrap();
    assert_eq!(out.report.outcome, Outcome::Trap(TrapKind::Unreachable));
}

#[test]
fn a_missing_export_names_what_exists() {
    let module = wat(r#"(module (func (export "present")) (memory (export "mem") 1))"#);
    match sandbox(tight()).call(&module, "absent", &[]) {
        Err(Error::ExportNotFound {
            export, available, ..
        }) => {
            assert_eq!(export, "absent");
            assert_eq!(available, vec!["present".to_owned()]);
        }
        other => panic!("expected ExportNotFound, got {other:?}"),
    }
}

#[test]
fn wrong_argument_types_or_counts_are_refused_before_running() {
    let module = wat(r#"(module (func (export "f") (param i32 i64)))"#);
    let sandbox = sandbox(tight());
    for args in [
        vec![Value::I32(1)],
        vec![Value::I32(1), Value::F64(2.0)],
        vec![],
    ] {
        match sandbox.call(&module, "f", &args) {
            Err(Error::ArgumentMismatch { expected, .. }) => {
                assert_eq!(expected, vec![ValueType::I32, ValueType::I64]);
            }
            other => panic!("expected ArgumentMismatch for {args:?}, got {other:?}"),
        }
    }
    let err = sandbox.call(&module, "f", &[Value::I32(1)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "export `f` takes (i32, i64) but was given (i32)"
    );
}

#[test]
fn malformed_modules_are_typed_errors_and_events() {
    let (engine, recorder) = recorded_engine();
    let cases: [&[u8]; 4] = [
        b"\0asm\x01\0\0\0\xff\xff",
        b"(module (func (export \"f\") (result i32)))",
        b"(module (func",
        b"\x7fELF this is not wasm",
    ];
    for bytes in cases {
        match engine.compile("bad", bytes) {
            Err(Error::InvalidModule { name, reason }) => {
                assert_eq!(name, "bad");
                assert!(!reason.is_empty());
            }
            other => panic!("expected InvalidModule, got {other:?}"),
        }
    }
    let rejected = recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, RecordedEvent::ModuleRejected { .. }))
        .count();
    assert_eq!(rejected, 4);
}

#[test]
fn unsupported_imports_are_refused_at_compile_time() {
    let err = engine()
        .compile("env.wat", br#"(module (import "env" "secret" (func)))"#)
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedImport { ref import_module, .. } if import_module == "env"),
        "{err}"
    );
}

#[test]
fn a_module_without_start_is_not_a_command() {
    let module = wat(r#"(module (func (export "f")))"#);
    let err = sandbox(tight())
        .run_command(&module, Default::default())
        .unwrap_err();
    assert!(matches!(err, Error::NotACommand { .. }), "{err}");
}

#[test]
fn a_module_from_another_engine_is_refused() {
    let (other, _) = recorded_engine();
    let module = other
        .compile("f.wat", br#"(module (func (export "f")))"#)
        .unwrap();
    let err = Sandbox::builder(engine())
        .build()
        .unwrap()
        .call(&module, "f", &[])
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn every_execution_is_observed_once_in_order() {
    let (engine, recorder) = recorded_engine();
    let module = engine
        .compile(
            "f.wat",
            br#"(module (func (export "f") (result i32) i32.const 1))"#,
        )
        .unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let out = sandbox.call(&module, "f", &[]).unwrap();
    let kinds: Vec<&str> = recorder
        .events()
        .iter()
        .map(|e| match e {
            RecordedEvent::CompileStarted(_) => "compiling",
            RecordedEvent::ModuleCompiled(_) => "compiled",
            RecordedEvent::Cache(_) => "cache",
            RecordedEvent::ExecutionStarted(_) => "started",
            RecordedEvent::InstanceCreated(_) => "created",
            RecordedEvent::InstanceDestroyed(_) => "destroyed",
            RecordedEvent::ExecutionFinished(_) => "finished",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "compiling",
            "compiled",
            "cache",
            "started",
            "created",
            "destroyed",
            "finished"
        ]
    );
    assert_eq!(recorder.reports(), vec![out.report]);
}

#[test]
fn the_report_serialises_to_the_documented_json() {
    let module = wat(r#"(module (memory 1) (func (export "f") unreachable))"#);
    let report = sandbox(tight()).call(&module, "f", &[]).unwrap().report;
    let json = report.to_json();
    for field in [
        r#""outcome":"trap""#,
        r#""trap":"unreachable""#,
        r#""exit_code":null"#,
        r#""memory_peak_bytes":65536"#,
        r#""stdout_truncated":false"#,
        r#""fuel_consumed":"#,
        r#""duration_ms":"#,
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    let back: wasmcage::ExecutionReport = serde_json_from(&json);
    assert_eq!(back.outcome, report.outcome);
    assert_eq!(back.module, report.module);
}

fn serde_json_from(json: &str) -> wasmcage::ExecutionReport {
    wasmcage::ExecutionReport::from_json(json).expect("report parses back")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_run_many_executions_at_once() {
    let module = wat(
        r#"(module (func (export "sq") (param i64) (result i64) (i64.mul (local.get 0) (local.get 0))))"#,
    );
    let sandbox = sandbox(tight());
    let tasks: Vec<_> = (0..32i64)
        .map(|i| {
            let (sandbox, module) = (sandbox.clone(), module.clone());
            tokio::spawn(async move { sandbox.call_async(&module, "sq", &[Value::I64(i)]).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out.results, vec![Value::I64((i * i) as i64)]);
    }
}
