//! WASI commands: arguments in, stdin in, stdout and stderr out, exit codes.

use wasmcage::{CommandInput, Outcome, TrapKind};

use crate::common::{command, sandbox, tight};

/// Copies stdin to stdout until end of file.
const CAT: &str = r#"(local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 4) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (br $again))))"#;

#[test]
fn a_command_reads_stdin_and_writes_stdout() {
    let input = "hello from the host\n".repeat(500);
    let out = sandbox(tight())
        .run_command(
            &command(CAT),
            CommandInput {
                args: vec![],
                stdin: input.clone().into(),
                runtime: None,
            },
        )
        .unwrap();
    assert_eq!(
        out.report.outcome,
        Outcome::Completed,
        "{:?}",
        out.report.message
    );
    assert_eq!(out.report.exit_code, Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input);
    assert_eq!(out.report.stdout_bytes, input.len() as u64);
    assert!(!out.report.stdout_truncated);
}

#[test]
fn a_command_sees_its_arguments() {
    // Writes the NUL-separated argument buffer to stderr.
    let echo_args = command(
        r#"(drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
        (drop (call $args_get (i32.const 100) (i32.const 1024)))
        (i32.store (i32.const 16) (i32.const 1024))
        (i32.store (i32.const 20) (i32.load (i32.const 4)))
        (drop (call $fd_write (i32.const 2) (i32.const 16) (i32.const 1) (i32.const 8)))"#,
    );
    let out = sandbox(tight())
        .run_command(
            &echo_args,
            CommandInput {
                args: vec!["one".into(), "two words".into()],
                stdin: Default::default(),
                runtime: None,
            },
        )
        .unwrap();
    assert_eq!(out.stderr, b"test.wat\0one\0two words\0");
    assert!(out.stdout.is_empty());
}

#[test]
fn exit_codes_are_outcomes() {
    let exit = |code: i32| {
        let module = command(&format!("(call $proc_exit (i32.const {code})) unreachable"));
        sandbox(tight())
            .run_command(&module, CommandInput::default())
            .unwrap()
    };
    for code in [0, 3, 125] {
        let out = exit(code);
        assert_eq!(out.report.outcome, Outcome::Exited(code));
        assert_eq!(out.report.exit_code, Some(code));
    }
    // WASI preview 1 reserves codes from 126 up; wasmtime refuses them, which stops the guest.
    let out = exit(255);
    assert_eq!(out.report.outcome, Outcome::Trap(TrapKind::Host));
    assert!(out.report.message.unwrap().contains("exit status"));
}

#[test]
fn stdin_is_empty_unless_given() {
    let out = sandbox(tight())
        .run_command(&command(CAT), CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
    assert!(out.stdout.is_empty());
}
