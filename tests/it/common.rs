//! Helpers shared by the end-to-end tests.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmcage::{Engine, EngineConfig, Limits, Module, RecordingObserver, Sandbox};

/// One engine for the whole test binary, as a real process would have.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(EngineConfig::default()).expect("engine"))
}

/// An engine of its own whose events are recorded.
pub fn recorded_engine() -> (Engine, Arc<RecordingObserver>) {
    let recorder = Arc::new(RecordingObserver::default());
    let engine = Engine::with_observer(EngineConfig::default(), recorder.clone()).expect("engine");
    (engine, recorder)
}

/// Compiles WAT text on the shared engine.
pub fn wat(text: &str) -> Module {
    engine()
        .compile("test.wat", text.as_bytes())
        .expect("test module compiles")
}

/// A sandbox on the shared engine with these limits.
pub fn sandbox(limits: Limits) -> Sandbox {
    Sandbox::builder(engine())
        .limits(limits)
        .build()
        .expect("sandbox")
}

/// Limits small enough that a runaway test guest ends quickly.
pub fn tight() -> Limits {
    Limits {
        memory_bytes: 1 << 20,
        fuel: Some(10_000_000),
        timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// The WASI imports the test guests use, as WAT.
pub const WASI_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
"#;

/// The WAT text of a WASI command: the WASI imports, one page of memory, `body` as `_start`.
pub fn command_text(body: &str) -> String {
    format!(
        r#"(module {WASI_IMPORTS} (memory (export "memory") 1) (func (export "_start") {body}))"#
    )
}

/// A WASI command module compiled on the shared engine; see [`command_text`].
pub fn command(body: &str) -> Module {
    wat(&command_text(body))
}

/// A plain HTTP/1.1 GET over a TCP connection: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// Undoes `Transfer-Encoding: chunked` when the body looks chunked.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        if tail.len() < size {
            return body.to_owned();
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
}
