//! The hostile-module suite: guests that try to get out of their grants. Each attempt must
//! fail inside the guest and be reported as a SecurityEvent, while the host stays healthy;
//! granted reads and writes must work and land where expected.

use std::path::Path;

use wasmcage::events::{SecurityAction, SecurityEventKind};
use wasmcage::{Access, CommandInput, Limits, Outcome, Policy, Sandbox, Value};

use crate::common::recorded_engine;

/// A guest that opens, reads and writes paths relative to its first preopened directory
/// (fd 3), and counts its environment. Paths live in data segments at fixed offsets.
const GUEST: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "../secret.txt")
  (data (i32.const 1100) "/etc/passwd")
  (data (i32.const 1200) "escape/secret.txt")
  (data (i32.const 1300) "new.txt")
  (data (i32.const 1400) "inside.txt")
  (data (i32.const 1500) "sub/../../secret.txt")
  (data (i32.const 1600) "written by the guest")

  ;; Opens a path for reading; returns the errno (0 when it opened).
  (func (export "open_read") (param $ptr i32) (param $len i32) (result i32)
    (call $path_open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
      (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 0)))

  ;; Reads a file into offset 4096; returns the bytes read, or minus the errno.
  (func (export "read_file") (param $ptr i32) (param $len i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $path_open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
      (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 0)))
    (if (local.get $errno) (then (return (i32.sub (i32.const 0) (local.get $errno)))))
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 4096))
    (drop (call $fd_read (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.load (i32.const 24)))

  ;; Creates (or truncates) a file and writes 20 bytes; returns the errno.
  (func (export "write_file") (param $ptr i32) (param $len i32) (result i32)
    (local $errno i32)
    (local.set $errno (call $path_open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
      (i32.const 9) (i64.const 64) (i64.const 64) (i32.const 0) (i32.const 0)))
    (if (local.get $errno) (then (return (local.get $errno))))
    (i32.store (i32.const 16) (i32.const 1600))
    (i32.store (i32.const 20) (i32.const 20))
    (call $fd_write (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))

  ;; The number of environment variables the guest can see.
  (func (export "env_count") (result i32)
    (drop (call $environ_sizes_get (i32.const 32) (i32.const 36)))
    (i32.load (i32.const 32)))

  (func (export "_start")))"#;

/// root/grant/inside.txt, root/grant/escape -> root/outside, root/outside/secret.txt,
/// root/secret.txt.
fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let p = root.path();
    std::fs::create_dir_all(p.join("grant/sub")).unwrap();
    std::fs::create_dir_all(p.join("outside")).unwrap();
    std::fs::write(p.join("grant/inside.txt"), "granted content").unwrap();
    std::fs::write(p.join("outside/secret.txt"), "outside secret").unwrap();
    std::fs::write(p.join("secret.txt"), "root secret").unwrap();
    std::os::unix::fs::symlink(p.join("outside"), p.join("grant/escape")).unwrap();
    root
}

fn setup(
    root: &Path,
    access: Access,
) -> (
    Sandbox,
    wasmcage::Module,
    std::sync::Arc<wasmcage::RecordingObserver>,
) {
    let (engine, recorder) = recorded_engine();
    let module = engine.compile("hostile.wat", GUEST.as_bytes()).unwrap();
    let policy = Policy::builder()
        .dir(root.join("grant"), "/grant", access)
        .env("GRANTED", "yes")
        .limits(Limits {
            fuel: Some(10_000_000),
            ..Limits::default()
        })
        .build()
        .unwrap();
    let sandbox = Sandbox::builder(&engine).policy(policy).build().unwrap();
    (sandbox, module, recorder)
}

fn call(sandbox: &Sandbox, module: &wasmcage::Module, export: &str, args: &[i32]) -> i32 {
    let args: Vec<Value> = args.iter().map(|a| Value::I32(*a)).collect();
    let out = sandbox.call(module, export, &args).unwrap();
    assert_eq!(
        out.report.outcome,
        Outcome::Completed,
        "{export}: {:?}",
        out.report.message
    );
    match out.results[..] {
        [Value::I32(v)] => v,
        ref other => panic!("unexpected results {other:?}"),
    }
}

#[test]
fn escapes_are_denied_and_reported() {
    let root = tree();
    let (sandbox, module, recorder) = setup(root.path(), Access::ReadOnly);
    let attempts = [
        (1000, "../secret.txt"),
        (1100, "/etc/passwd"),
        (1200, "escape/secret.txt"),
        (1500, "sub/../../secret.txt"),
    ];
    for (ptr, path) in attempts {
        recorder.clear();
        let errno = call(&sandbox, &module, "open_read", &[ptr, path.len() as i32]);
        assert_ne!(errno, 0, "{path} must not open");
        let events = recorder.security_events();
        assert_eq!(
            events.len(),
            1,
            "{path}: one security event, got {events:?} (errno {errno})"
        );
        assert_eq!(events[0].kind, SecurityEventKind::CapabilityDenied);
        assert_eq!(events[0].capability, "filesystem");
        assert_eq!(events[0].target, path);
        assert_eq!(events[0].action, SecurityAction::Denied);
        // Nothing of the secret reached the guest.
        assert!(call(&sandbox, &module, "read_file", &[ptr, path.len() as i32]) < 0);
    }
}

#[test]
fn a_read_only_grant_refuses_writes_and_reports_them() {
    let root = tree();
    let (sandbox, module, recorder) = setup(root.path(), Access::ReadOnly);
    let errno = call(&sandbox, &module, "write_file", &[1300, 7]);
    assert_ne!(errno, 0);
    assert!(!root.path().join("grant/new.txt").exists());
    let events = recorder.security_events();
    assert_eq!(events.len(), 1, "{events:?} (errno {errno})");
    assert_eq!(events[0].target, "new.txt");
}

#[test]
fn granted_reads_and_writes_work_and_land_on_the_host() {
    let root = tree();
    let (sandbox, module, recorder) = setup(root.path(), Access::ReadWrite);
    assert_eq!(
        call(&sandbox, &module, "read_file", &[1400, 10]),
        "granted content".len() as i32
    );
    assert_eq!(call(&sandbox, &module, "write_file", &[1300, 7]), 0);
    assert_eq!(
        std::fs::read_to_string(root.path().join("grant/new.txt")).unwrap(),
        "written by the guest"
    );
    assert!(
        recorder.security_events().is_empty(),
        "granted access is not a violation"
    );
    // Still no way out, even with write access.
    assert_ne!(call(&sandbox, &module, "open_read", &[1000, 13]), 0);
}

#[test]
fn only_granted_environment_variables_are_visible() {
    let root = tree();
    let (sandbox, module, _) = setup(root.path(), Access::ReadOnly);
    // The host has PATH, HOME and more; the guest sees exactly the one it was granted.
    assert!(std::env::vars().count() > 1);
    assert_eq!(call(&sandbox, &module, "env_count", &[]), 1);
}

#[test]
fn a_sandbox_with_the_default_policy_sees_no_directory() {
    let (engine, recorder) = recorded_engine();
    let module = engine.compile("hostile.wat", GUEST.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    let errno = call(&sandbox, &module, "open_read", &[1400, 10]);
    assert_eq!(
        errno, 8,
        "EBADF: fd 3 does not exist when nothing is granted"
    );
    assert!(recorder.security_events().is_empty());
    assert_eq!(call(&sandbox, &module, "env_count", &[]), 0);
}

#[test]
fn the_scratch_directory_is_fresh_for_every_execution() {
    let (engine, _) = recorded_engine();
    let module = engine.compile("hostile.wat", GUEST.as_bytes()).unwrap();
    let policy = Policy::builder().scratch("/scratch").build().unwrap();
    let sandbox = Sandbox::builder(&engine).policy(policy).build().unwrap();
    assert_eq!(call(&sandbox, &module, "write_file", &[1300, 7]), 0);
    // The next execution gets a new, empty scratch directory.
    let read = call(&sandbox, &module, "read_file", &[1300, 7]);
    assert_eq!(read, -44, "ENOENT: the previous execution's file is gone");
    let out = sandbox
        .run_command(&module, CommandInput::default())
        .unwrap();
    assert_eq!(out.report.outcome, Outcome::Completed);
}

#[test]
fn the_documented_policy_file_loads() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.md")).unwrap();
    let start = doc.find("```toml\n").unwrap() + 8;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let policy = Policy::from_toml(example, dir.path()).unwrap();
    assert_eq!(policy.dirs[0].guest, "/data");
    assert_eq!(policy.dirs[0].access, Access::ReadOnly);
    assert_eq!(policy.scratch.as_deref(), Some("/tmp"));
    assert_eq!(policy.limits.memory_bytes, 32 << 20);
    assert_eq!(policy.env["MODE"], "batch");
    assert_eq!(policy.stderr, wasmcage::Output::Closed);
    assert_eq!(policy.random, wasmcage::Randomness::Deterministic(42));
    // And it runs: a sandbox accepts it.
    let (engine, _) = recorded_engine();
    assert!(Sandbox::builder(&engine).policy(policy).build().is_ok());
}
