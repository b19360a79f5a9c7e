//! `wasmcage run` streams its stdin to the guest as the guest reads it, cut at `--max-stdin`:
//! piping more than a guest reads costs the host one chunk, not the whole input.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{text, wasmcage, write_module};

/// Copies stdin to stdout, 64 KiB at a time, until end of file.
const CAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (loop $l
      (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
      (if (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
        (then (call $exit (i32.const 99))))
      (if (i32.eqz (i32.load (i32.const 8))) (then return))
      (i32.store (i32.const 4) (i32.load (i32.const 8)))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $l))))"#;

/// Reads once, up to 10 bytes, and exits with the number of bytes it got.
const HEAD: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 10))
    (if (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $exit (i32.const 99))))
    (call $exit (i32.load (i32.const 8)))))"#;

#[test]
fn stdin_past_the_cap_is_cut_at_end_of_file_and_said() {
    let (_dir, cat) = write_module("cat.wat", CAT);
    // (stdin, what the guest sees, whether wasmcage says it cut stdin)
    for (input, seen, cut) in [
        (&b"123456789"[..], &b"1234"[..], true),
        (b"1234", b"1234", false),
        (b"12", b"12", false),
        (b"", b"", false),
    ] {
        let out = wasmcage(&["run", "--max-stdin", "4", &cat], input);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(out.stdout, seen, "{input:?}");
        assert_eq!(
            stderr.contains("stdin was cut at 4 bytes") && stderr.contains("--max-stdin"),
            cut,
            "{input:?}: {stderr}"
        );
    }
    // Larger than one chunk of the stream, and below the cap: every byte arrives, in order.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = wasmcage(&["run", &cat], &big);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big);
}

/// A guest that reads ten bytes and exits does not wait for a writer with a gigabyte to
/// send: wasmcage reads only what the guest asks for (plus what the pipe holds), exits with
/// the guest's status, and the writer gets `EPIPE` long before its end.
#[test]
fn a_guest_that_stops_reading_does_not_wait_for_the_writer() {
    let (_dir, head) = write_module("head.wat", HEAD);
    let cache = std::env::temp_dir().join("wasmcage-cli-tests-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .env("WASMCAGE_CACHE_DIR", cache)
        .args(["run", "--max-stdin", "4GiB", &head])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmcage");
    let mut pipe = child.stdin.take().unwrap();
    const GIB: u64 = 1 << 30;
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0u64;
        while written < GIB {
            match pipe.write(&chunk) {
                Ok(n) => written += n as u64,
                // EPIPE once wasmcage has exited (the test harness ignores SIGPIPE).
                Err(_) => break,
            }
        }
        written
    });
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", text(&out.stderr));
    let written = writer.join().unwrap();
    // The pipe holds at most 1 MiB on Linux and wasmcage one 64 KiB chunk: far below the
    // gigabyte that buffering stdin whole would have read.
    assert!(
        written < 16 << 20,
        "the writer got {written} bytes in before wasmcage exited"
    );
}

/// A guest waiting on stdin that never comes (the writer holds the pipe open and sends
/// nothing) ends at its timeout, with the timeout's status.
#[test]
fn a_guest_waiting_for_stdin_ends_at_its_timeout() {
    let (_dir, head) = write_module("head.wat", HEAD);
    let cache = std::env::temp_dir().join("wasmcage-cli-tests-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .env("WASMCAGE_CACHE_DIR", cache)
        .args(["run", "--timeout", "300ms", &head])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmcage");
    let silent = child.stdin.take().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(silent);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
}
