//! Hostile requests against a live `wasmcage serve`: the real binary, configured by a file,
//! attacked over real TCP. One test per hole of the hardening review (issue 12); each
//! checks the exact documented answer and that the server still answers `/livez` after.
//!
//! Limits and timeouts are small so that the suite runs in seconds; waits are for states
//! (polled, with a generous bound), never for times.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// API keys long enough for the server to accept.
pub(crate) const KEY: &str = "hostile-suite-key-0123456789";
pub(crate) const OTHER: &str = "hostile-suite-other-0123456789";

/// How long any wait for a state may take before the test fails; only a broken server
/// comes near it.
pub(crate) const BOUND: Duration = Duration::from_secs(60);

pub(crate) const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#;

/// A command that sleeps (without using CPU) for 20 s in `poll_oneoff`.
pub(crate) const SLEEPER: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 20000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

/// Copies one read of stdin (up to 4 KiB) to stdout.
const ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 4096))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// What a server answered.
pub(crate) struct Answer {
    pub(crate) status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn body_bytes(&self) -> Vec<u8> {
        self.body.clone()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    /// The error code of an error answer.
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// `(status, error code)`, for comparing with the documented answer at once.
    fn error(&self) -> (u16, String) {
        (self.status, self.code())
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.text();
        let shown: String = text.chars().take(2000).collect();
        write!(f, "{} {shown}", self.status)
    }
}

fn request(method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(key) = key {
        r.push_str(&format!("x-api-key: {key}\r\n"));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request over a fresh connection, answered in full.
fn exchange(addr: &str, request: &[u8]) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(BOUND))?;
    stream.write_all(request)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no complete answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    Ok(Answer { status, head, body })
}

fn unchunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    body
}

/// Percent-encodes a query value.
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `check` until it gives a value, or panics after [`BOUND`].
pub(crate) fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let guard = Instant::now() + BOUND;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < guard, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `wasmcage serve` with its own data directory, listening on a port the kernel
/// chose (read from the line the server prints when it listens).
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) addr: String,
    config: PathBuf,
    data: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// A server with both test keys and `settings`: top-level keys first, then tables.
    pub(crate) fn start(settings: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let config = dir.path().join("server.toml");
        write_config(&config, &data, settings);
        let log = Arc::new(Mutex::new(String::new()));
        let (child, addr) = spawn(&config, &log);
        Serve {
            child,
            addr,
            config,
            data,
            log,
            _dir: dir,
        }
    }

    /// `kill -9`, then a new server on the same configuration and data directory.
    pub(crate) fn restart(&mut self) {
        self.kill_9();
        self.respawn();
    }

    /// Rewrites the configuration file with `settings` (for a `SIGHUP`).
    pub(crate) fn rewrite_config(&self, settings: &str) {
        write_config(&self.config, &self.data, settings);
    }

    /// The server's process id, for signals.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown, no flush, nothing the process could still do.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// A new server on the same configuration and data directory.
    pub(crate) fn respawn(&mut self) {
        let (child, addr) = spawn(&self.config, &self.log);
        self.child = child;
        self.addr = addr;
    }

    pub(crate) fn send(&self, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Answer {
        exchange(&self.addr, &request(method, path, key, body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver log:\n{}", self.log()))
    }

    pub(crate) fn get(&self, path: &str) -> Answer {
        self.send("GET", path, Some(KEY), b"")
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(KEY), body.to_string().as_bytes())
    }

    pub(crate) fn upload_as(&self, key: &str, name: &str, module: &[u8]) -> Answer {
        self.send(
            "POST",
            &format!("/v1/modules?name={}", encode(name)),
            Some(key),
            module,
        )
    }

    /// Uploads under [`KEY`] and returns the new module's id.
    pub(crate) fn upload(&self, name: &str, module: &str) -> String {
        let answer = self.upload_as(KEY, name, module.as_bytes());
        assert!(matches!(answer.status, 200 | 201), "{name}: {answer:?}");
        answer.json()["id"].as_str().unwrap().to_owned()
    }

    pub(crate) fn run(&self, id: &str, body: Value) -> Answer {
        self.post(&format!("/v1/modules/{id}/run"), &body)
    }

    pub(crate) fn invoke(&self, id: &str, body: Value) -> Answer {
        self.post(&format!("/v1/modules/{id}/invoke"), &body)
    }

    /// The server is up and answering.
    fn alive(&self) {
        let live = self.send("GET", "/livez", None, b"");
        assert_eq!(live.status, 200, "{live:?}");
        assert!(self.child_running(), "the server exited:\n{}", self.log());
    }

    fn child_running(&self) -> bool {
        // `try_wait` needs `&mut`; /proc says whether the process still runs.
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Opens a connection, sends a whole request, and leaves it waiting for its answer.
    pub(crate) fn hold(&self, method: &str, path: &str, body: &Value) -> TcpStream {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .write_all(&request(
                method,
                path,
                Some(KEY),
                body.to_string().as_bytes(),
            ))
            .unwrap();
        stream
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test servers' configuration: both keys, an ephemeral port, then `settings`.
fn write_config(config: &Path, data: &Path, settings: &str) {
    std::fs::write(
        config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\napi_keys = [{KEY:?}, {OTHER:?}]\n{settings}\n"
        ),
    )
    .unwrap();
}

/// Starts `wasmcage serve --config`, keeps its stderr in `log`, and returns once it listens.
fn spawn(config: &Path, log: &Arc<Mutex<String>>) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("WASMCAGE_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmcage serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("wasmcage: serving on http://") {
                let _ = tx.send(addr.to_owned());
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    match rx.recv_timeout(BOUND) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            panic!("wasmcage serve did not start");
        }
    }
}

/// Item 1: `poll_oneoff` with `nsubscriptions = 0xFFFFFFFF` once aborted the server, under
/// every profile, and crash-looped it at restart. The guest exits with the errno it got:
/// EINVAL (28), refused by its memory size before anything is allocated.
#[test]
fn a_huge_poll_oneoff_is_refused_and_survives_a_restart() {
    let mut s = Serve::start("profile = \"permissive\"");
    let id = s.upload(
        "poll.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "poll_oneoff" (func $p (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (call $exit (call $p (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 0)))))"#,
    );
    let check = |s: &Serve| {
        for profile in ["strict", "standard", "permissive"] {
            let out = s.run(&id, json!({"profile": profile}));
            assert_eq!(out.status, 200, "{profile}: {out:?}");
            let out = out.json();
            assert_eq!(out["report"]["outcome"], "exited", "{profile}: {out}");
            assert_eq!(out["exit_code"], 28, "{profile}: {out}");
            s.alive();
        }
    };
    check(&s);
    s.restart();
    eventually("the module is compiled again", || {
        (s.get(&format!("/v1/modules/{id}")).status == 200).then_some(())
    });
    check(&s);
}

/// Items 2 and 3: a start function calling WASI once panicked the server; the fuel limit
/// once reset after the start function. One execution has one budget, start included.
#[test]
fn a_start_function_may_call_wasi_and_pays_from_the_same_fuel() {
    let s = Serve::start("");
    let start = s.upload(
        "start.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "sched_yield" (func $y (result i32)))
          (func $s (drop (call $y)))
          (start $s)
          (memory (export "memory") 1)
          (func (export "f") (result i32) (i32.const 1)))"#,
    );
    let out = s.invoke(&start, json!({"export": "f"}));
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.json()["results"], json!([1]));
    s.alive();

    // A million loop iterations in the start function and a million more in `_start`.
    let burn = "(local $i i32) (local.set $i (i32.const 1000000)) \
        (loop $l (local.set $i (i32.sub (local.get $i) (i32.const 1))) \
        (br_if $l (i32.ne (local.get $i) (i32.const 0))))";
    let burner = s.upload(
        "burner.wat",
        &format!(
            r#"(module (memory (export "memory") 1) (func $s {burn}) (start $s)
                (func (export "_start") {burn}))"#
        ),
    );
    let fuel = |limit: u64| {
        let out = s.run(&burner, json!({"limits": {"fuel": limit}}));
        assert_eq!(out.status, 200, "{out:?}");
        out.json()["report"].clone()
    };
    let both = fuel(100_000_000);
    assert_eq!(both["outcome"], "completed", "{both}");
    let consumed = both["fuel_consumed"].as_u64().unwrap();
    assert!(consumed > 2_000_000, "both loops are counted: {both}");
    let short = fuel(consumed * 3 / 4);
    assert_eq!(
        (&short["outcome"], &short["fuel_consumed"]),
        (&json!("out_of_fuel"), &json!(consumed * 3 / 4)),
        "{short}"
    );
    let in_start = fuel(1000);
    assert_eq!(
        (&in_start["outcome"], &in_start["fuel_consumed"]),
        (&json!("out_of_fuel"), &json!(1000)),
        "{in_start}"
    );
    s.alive();
}

/// Item 5: on a `strict` server a request once picked `permissive` and got 256 MiB, 10¹⁰
/// fuel and a writable `/scratch`. A request may only narrow: 403 `policy_widening`.
#[test]
fn a_request_cannot_widen_the_servers_profile() {
    let s = Serve::start("profile = \"strict\"");
    let add = s.upload("add.wat", ADD);
    for wider in ["standard", "permissive"] {
        let out = s.invoke(
            &add,
            json!({"export": "add", "args": [1, 2], "profile": wider}),
        );
        assert_eq!(out.error(), (403, "policy_widening".into()), "{out:?}");
        s.alive();
    }
    // Asking for more than the profile's limits gets the profile's limits.
    let out = s.invoke(
        &add,
        json!({"export": "add", "args": [1, 2], "profile": "strict", "limits": {"memory": "1GiB", "fuel": 100000000000u64}}),
    );
    assert_eq!(out.status, 200, "{out:?}");
    let out = out.json();
    assert_eq!(out["results"], json!([3]));
    assert_eq!(out["report"]["memory_limit_bytes"], 16 << 20, "{out}");
    assert_eq!(out["report"]["fuel_limit"], 100_000_000, "{out}");
    s.alive();
}

/// "Smaller" items: `"--5"` was read as 5 and `"0x-5"` as -5. A sign comes first, once;
/// anything else is 400 `bad_arguments`.
#[test]
fn arguments_that_only_look_like_numbers_are_refused() {
    let s = Serve::start("");
    let add = s.upload("add.wat", ADD);
    for (arg, sum) in [
        ("-5", Some(-5)),
        ("+5", Some(5)),
        ("-0x5", Some(-5)),
        ("0X10", Some(16)),
    ]
    .into_iter()
    .chain(["--5", "+-5", "0x-5", "0x+5", "-0x-5", "5x", ""].map(|a| (a, None)))
    {
        let out = s.invoke(&add, json!({"export": "add", "args": [arg, 0]}));
        match sum {
            Some(sum) => assert_eq!(out.json()["results"], json!([sum]), "{arg}: {out:?}"),
            None => assert_eq!(out.error(), (400, "bad_arguments".into()), "{arg}: {out:?}"),
        }
    }
    s.alive();
}

/// Runs `wasmcage serve` on a configuration that must be refused: it exits at once with
/// status 126 and says why on stderr.
fn refused_at_start(config: &str, env_keys: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(
        &path,
        format!("data_dir = {:?}\n{config}\n", dir.path().join("data")),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmcage"));
    command
        .args(["serve", "--config", path.to_str().unwrap()])
        .env_remove("WASMCAGE_API_KEYS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(keys) = env_keys {
        command.env("WASMCAGE_API_KEYS", keys);
    }
    let mut child = command.spawn().unwrap();
    let status = eventually("wasmcage serve exits", || child.try_wait().unwrap());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(126), "{config}: {stderr}");
    stderr
}

/// Items 6 and "smaller": empty and short API keys once let anyone in; `rate_limit.per_second
/// = 1e-300` passed validation and then panicked every throttled request. Each is refused at
/// start with the key's name, before anything listens.
#[test]
fn keys_and_absurd_values_are_refused_at_start() {
    for (config, env, says) in [
        (
            r#"api_keys = [""]"#,
            None,
            "api_keys: key #1 is 0 characters long",
        ),
        (r#"api_keys = ["short-key"]"#, None, "at least 16"),
        ("", Some("short"), "at least 16"),
        ("", Some("0123456789abcdef,,0123456789abcdef"), "empty key"),
        (
            "listen = \"0.0.0.0:0\"",
            None,
            "refusing to listen on 0.0.0.0:0 without API keys",
        ),
        (
            "[rate_limit]\nper_second = 1e-300\nburst = 5",
            None,
            "rate_limit.per_second: 0.000",
        ),
        (
            "[rate_limit]\nper_second = nan\nburst = 5",
            None,
            "rate_limit.per_second",
        ),
        (
            "[rate_limit]\nper_second = 1e300\nburst = 5",
            None,
            "rate_limit.per_second",
        ),
        (
            "[rate_limit]\nper_second = 2.0\nburst = 0",
            None,
            "rate_limit.burst",
        ),
        (
            "[admission]\nmax_executions = 100000",
            None,
            "admission.max_executions",
        ),
        (
            "[auth_throttle]\nmax_failures = 0",
            None,
            "auth_throttle.max_failures",
        ),
        ("[quota]\nmax_modules = 0", None, "quota"),
        ("shutdown_timeout = \"0s\"", None, "shutdown_timeout"),
    ] {
        let stderr = refused_at_start(config, env);
        assert!(
            stderr.starts_with("wasmcage: error:") && stderr.contains(says),
            "{config} / {env:?}: expected {says:?} in {stderr}"
        );
    }
}

/// Item 6: 300 wrong keys in 0.04 s were all answered 401. After `max_failures` from one
/// address, every request from it is 429 `auth_throttled`, the right key included; the
/// probes stay open.
#[test]
fn failed_keys_are_throttled() {
    let s = Serve::start("[auth_throttle]\nmax_failures = 3\nwindow = \"60s\"");
    for i in 0..3 {
        let wrong = s.send(
            "GET",
            "/v1/modules",
            Some(&format!("wrong-key-{i:04}-0123456789")),
            b"",
        );
        assert_eq!(wrong.error(), (401, "unauthorized".into()), "{wrong:?}");
    }
    for key in ["wrong-key-9999-0123456789", KEY] {
        let throttled = s.send("GET", "/v1/modules", Some(key), b"");
        assert_eq!(
            throttled.error(),
            (429, "auth_throttled".into()),
            "{throttled:?}"
        );
        let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    s.alive();
}

/// Item 6: `/metrics` exposes module and export names; with `metrics_require_key` it needs
/// a key like `/v1`, while the probes stay open to the orchestrator.
#[test]
fn metrics_can_require_a_key() {
    let s = Serve::start("metrics_require_key = true");
    for path in ["/metrics", "/metrics/performance"] {
        assert_eq!(s.send("GET", path, None, b"").status, 401, "{path}");
        let with_key = s.send("GET", path, Some(KEY), b"");
        assert_eq!(with_key.status, 200, "{path}: {with_key:?}");
    }
    assert!(s.get("/metrics").text().contains("wasmcage_"));
    for probe in ["/livez", "/readyz", "/healthz"] {
        let answer = s.send("GET", probe, None, b"");
        assert!(answer.status != 401, "{probe}: {answer:?}");
    }
    s.alive();
}

/// Item 8 and 10: concurrency was unbounded (another tenant got `200` with a host trap once
/// the instance slots were gone) and there was no memory budget. A full server answers 503
/// `busy` with `Retry-After`, `/readyz` says so, and a client that leaves frees its slot.
#[test]
fn a_full_server_answers_busy_and_recovers_when_clients_leave() {
    let s = Serve::start(
        "[max_limits]\nmemory = \"64MiB\"\n[admission]\nmax_executions = 2\nmax_executions_per_key = 2\nmemory_budget = \"64MiB\"\nwait = \"0ms\"",
    );
    let add = s.upload("add.wat", ADD);
    let sleeper = s.upload("sleeper.wat", SLEEPER);
    let run = format!("/v1/modules/{sleeper}/run");
    let add_with = |memory: &str| {
        s.invoke(
            &add,
            json!({"export": "add", "args": [1, 2], "limits": {"memory": memory}}),
        )
    };
    let busy = |answer: &Answer| {
        assert_eq!(answer.error(), (503, "busy".into()), "{answer:?}");
        assert!(answer.header("retry-after").is_some(), "{answer:?}");
    };

    // One sleeper holds 48 of the 64 MiB: 32 MiB more does not fit, 8 MiB does.
    let first = s.hold("POST", &run, &json!({"limits": {"memory": "48MiB"}}));
    let refused = eventually("the first sleeper holds its memory", || {
        let answer = add_with("32MiB");
        (answer.status == 503).then_some(answer)
    });
    busy(&refused);
    assert_eq!(add_with("8MiB").status, 200);
    assert_eq!(s.send("GET", "/readyz", None, b"").status, 200);

    // A second sleeper takes the second slot: nothing more is admitted, whatever it asks.
    let second = s.hold("POST", &run, &json!({"limits": {"memory": "1MiB"}}));
    eventually("readyz reports no capacity", || {
        (s.send("GET", "/readyz", None, b"").status == 503).then_some(())
    });
    busy(&add_with("1MiB"));
    s.alive();

    // The clients leave: their executions are cancelled and their slots come back long
    // before the sleepers' 10 s timeout.
    drop(first);
    drop(second);
    eventually(
        "every slot and the whole memory budget are free again",
        || (add_with("64MiB").status == 200).then_some(()),
    );
    assert_eq!(s.send("GET", "/readyz", None, b"").status, 200);
    s.alive();
}

/// Item 8: with `request_timeout = 2s` the client got a 504 while the guest burnt 5.6 s more.
/// The request times out with 504 `request_timeout` and its execution stops with it: the
/// only slot is free again long before the guest's own 10 s timeout.
#[test]
fn a_request_past_its_timeout_is_a_504_and_its_guest_stops() {
    let s = Serve::start(
        "request_timeout = \"300ms\"\n[admission]\nmax_executions = 1\nmax_executions_per_key = 1\nwait = \"0ms\"",
    );
    let sleeper = s.upload("sleeper.wat", SLEEPER);
    let add = s.upload("add.wat", ADD);
    let out = s.run(&sleeper, json!({}));
    assert_eq!(out.error(), (504, "request_timeout".into()), "{out:?}");
    eventually("the slot is free again", || {
        let out = s.invoke(&add, json!({"export": "add", "args": [1, 2]}));
        (out.status == 200).then_some(())
    });
    s.alive();
}

/// Item 10: 3 150 uploads were all accepted and the listing was unpaginated. Per-key
/// module and byte quotas (403 `quota_exceeded`) and pages.
#[test]
fn quotas_and_pages() {
    let s = Serve::start("[quota]\nmax_modules = 2\nmax_bytes = \"1MiB\"");
    let module = |n: u32| format!("(module (func (export \"n\") (result i32) (i32.const {n})))");
    let mut ids = vec![s.upload("m0", &module(0)), s.upload("m1", &module(1))];
    let third = s.upload_as(KEY, "m2", module(2).as_bytes());
    assert_eq!(third.error(), (403, "quota_exceeded".into()), "{third:?}");
    // The same bytes again cost nothing; another key has its own quota.
    assert_eq!(s.upload_as(KEY, "m0", module(0).as_bytes()).status, 200);
    assert_eq!(s.upload_as(OTHER, "m2", module(2).as_bytes()).status, 201);
    // 1.5 MiB of data is past the other key's byte quota.
    let big = wat::parse_str(format!(
        "(module (memory 32) (data (i32.const 0) \"{}\"))",
        "a".repeat(3 << 19)
    ))
    .unwrap();
    let over = s.upload_as(OTHER, "big", &big);
    assert_eq!(over.error(), (403, "quota_exceeded".into()), "{over:?}");
    s.alive();

    ids.sort();
    let page = |query: &str| {
        let answer = s.get(&format!("/v1/modules?{query}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        let page = answer.json();
        let ids: Vec<String> = page["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, page["next_cursor"].as_str().map(str::to_owned))
    };
    let (first, cursor) = page("limit=1");
    assert_eq!(
        (first.as_slice(), cursor.as_deref()),
        (&ids[..1], Some(&*ids[0]))
    );
    // The last page has no cursor after it.
    let (second, cursor) = page(&format!("limit=1&cursor={}", ids[0]));
    assert_eq!((second.as_slice(), cursor), (&ids[1..], None));
    // The other key's module is not in this key's pages.
    let (all, _) = page("limit=1000");
    assert_eq!(all, ids);
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let answer = s.get(&format!("/v1/modules?{bad}"));
        assert_eq!(
            answer.error(),
            (400, "bad_query".into()),
            "{bad}: {answer:?}"
        );
    }
    s.alive();
}

/// Twenty functions of 2 000 nested branches each: about two seconds of compiling, far past
/// a 500 ms budget (which a tiny module, worker start included, stays well within).
fn compile_bomb() -> Vec<u8> {
    let branch: String = (0..2000)
        .map(|i| {
            format!(
                "(if (i32.and (local.get 0) (i32.const {i})) \
                 (then (local.set 0 (i32.mul (local.get 0) (i32.const 3)))) \
                 (else (local.set 0 (i32.add (local.get 0) (i32.const {i})))))"
            )
        })
        .collect();
    let funcs: String = (0..20)
        .map(|k| {
            format!("(func (export \"f{k}\") (param i32) (result i32) {branch} (local.get 0))")
        })
        .collect();
    wat::parse_str(format!("(module {funcs})")).unwrap()
}

/// Item 7: compiling was unbounded (a 4 MB module took 57 s and 5.7 GB), a rejected import
/// was compiled in full first, and two bombs blocked a tiny upload. Within the upload
/// limit: a module past the static limits is refused before compiling, a foreign import
/// before compiling, a slow one at the compile budget (413 `module_too_large`), while
/// another tenant's tiny upload still goes through.
#[test]
fn compile_bombs_are_refused_and_the_server_keeps_answering() {
    let s = Serve::start("max_body = \"2MiB\"\ncompile_timeout = \"500ms\"");
    // 60 000 functions of WAT text (about 420 KB), past the 50 000 a module may define.
    let many = format!("(module {})", "(func)".repeat(60_000));
    let answer = s.upload_as(KEY, "many.wat", many.as_bytes());
    assert_eq!(
        answer.error(),
        (413, "module_too_large".into()),
        "{answer:?}"
    );
    assert!(answer.text().contains("60000 functions"), "{answer:?}");
    s.alive();

    let foreign = r#"(module (import "env" "system" (func (param i32))) (func (export "f")))"#;
    let answer = s.upload_as(KEY, "foreign.wat", foreign.as_bytes());
    assert_eq!(
        answer.error(),
        (400, "unsupported_import".into()),
        "{answer:?}"
    );

    // A body declared past `max_body` is refused before a byte of it is read (so only the
    // head is sent: the server closes without reading the rest).
    let mut head = request("POST", "/v1/modules?name=huge", Some(KEY), b"");
    let at = head
        .windows(18)
        .position(|w| w == b"content-length: 0\r")
        .unwrap();
    head.splice(at..at + 17, b"content-length: 3145728".iter().copied());
    let answer = exchange(&s.addr, &head).unwrap();
    assert_eq!(answer.error(), (413, "body_too_large".into()), "{answer:?}");
    s.alive();

    // Two bombs at once, and a tiny upload by another key while they compile.
    let bomb = Arc::new(compile_bomb());
    let bombs: Vec<_> = (0..2)
        .map(|i| {
            let (addr, bomb) = (s.addr.clone(), bomb.clone());
            std::thread::spawn(move || {
                exchange(
                    &addr,
                    &request(
                        "POST",
                        &format!("/v1/modules?name=bomb{i}"),
                        Some(KEY),
                        &bomb,
                    ),
                )
                .unwrap()
            })
        })
        .collect();
    let tiny = s.upload_as(OTHER, "add.wat", ADD.as_bytes());
    assert!(matches!(tiny.status, 200 | 201), "{tiny:?}");
    for bomb in bombs {
        let answer = bomb.join().unwrap();
        // The key's second bomb may find its key's compile slot taken (429 `busy`).
        match answer.status {
            413 => assert_eq!(answer.code(), "module_too_large"),
            429 => assert_eq!(answer.code(), "busy"),
            _ => panic!("a compile bomb was answered {answer:?}"),
        }
    }
    let id = tiny.json()["id"].as_str().unwrap().to_owned();
    let out = s.send(
        "POST",
        &format!("/v1/modules/{id}/invoke"),
        Some(OTHER),
        json!({"export": "add", "args": [40, 2]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(out.json()["results"], json!([42]), "{out:?}");
    s.alive();
}

/// Whether the server has closed `stream` (end of file, a reset, or a 408 answer).
fn is_closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            // A 408 before the close: keep reading to the end of file.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Item 12: 200 connections sending a byte every 3 s were never closed, and with them open
/// SIGTERM did not stop the server in 45 s. Slow-loris connections are closed by the header
/// timeout, and SIGTERM stops the server at its shutdown deadline whatever is still open.
#[test]
fn slow_loris_connections_are_cut_and_sigterm_still_stops_the_server() {
    let s = Serve::start("header_read_timeout = \"500ms\"\nbody_read_timeout = \"500ms\"");
    let mut loris: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    let request = b"GET /livez HTTP/1.1\r\nhost: 127.0.0.1\r\n";
    let guard = Instant::now() + BOUND;
    let mut sent = 0;
    // Each round, every connection still open sends the next byte of its headers, as a
    // slow-loris client does; the server must close them all before they finish.
    while !loris.is_empty() {
        assert!(
            Instant::now() < guard,
            "{} slow connections still open",
            loris.len()
        );
        assert!(
            sent < request.len(),
            "a slow client got to finish its headers"
        );
        for stream in &mut loris {
            let _ = stream.write_all(&request[sent..sent + 1]);
        }
        sent += 1;
        // The attacker's pace: a byte per connection every 300 ms.
        std::thread::sleep(Duration::from_millis(300));
        loris.retain_mut(|stream| !is_closed(stream));
        s.alive();
    }

    // A body that trickles is cut by the body timeout: 408 `body_timeout`.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(
        format!("POST /v1/modules?name=slow HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {KEY}\r\ncontent-length: 100\r\n\r\n(module").as_bytes(),
    )
    .unwrap();
    slow.set_read_timeout(Some(BOUND)).unwrap();
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("body_timeout"),
        "{answer}"
    );
    s.alive();

    // Sixty-four connections stalled in their headers, with a header timeout of ten
    // minutes: only the shutdown deadline can end the server in time.
    let mut s = Serve::start("header_read_timeout = \"10m\"\nshutdown_timeout = \"300ms\"");
    let mut stalled: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut stream = TcpStream::connect(&s.addr).unwrap();
            stream.write_all(b"G").unwrap();
            stream
        })
        .collect();
    // Connections are accepted in order: once a later one is answered, all are in.
    s.alive();
    let term = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = eventually("the server exits after SIGTERM", || {
        s.child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "{}", s.log());
    for stream in &mut stalled {
        stream.set_read_timeout(Some(BOUND)).unwrap();
        let mut rest = Vec::new();
        // The server is gone: end of file or a reset.
        let _ = stream.read_to_end(&mut rest);
    }
}

/// Items 13 and 14, and a NUL in an argument: a 34-byte request once produced a 61.5 MB
/// answer. Each stream comes once, in one encoding, cut at `max_output`; stdin is bounded
/// (413 `stdin_too_large`); a guest argument cannot hold a NUL (400 `bad_args`).
#[test]
fn output_stdin_and_arguments_are_bounded() {
    let s = Serve::start("max_stdin = \"1KiB\"\n[max_limits]\nmax_output = \"64KiB\"");
    // Writes 1 MiB of NUL bytes to stdout, which JSON text escapes six-fold.
    let nul = s.upload(
        "nul.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 32)
          (func (export "_start")
            (i32.store (i32.const 0) (i32.const 65536)) (i32.store (i32.const 4) (i32.const 1048576))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    );
    for (encoding, most) in [("text", 6 * 65536), ("base64", 4 * 65536 / 3)] {
        let answer = s.run(&nul, json!({"output": encoding}));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(
            answer.body.len() < most + 8192,
            "{encoding}: {} bytes for 64 KiB of output",
            answer.body.len()
        );
        let out = answer.json();
        assert_eq!(out["output_encoding"], encoding);
        assert_eq!(out["stdout_truncated"], true);
        assert_eq!(out["report"]["stdout_bytes"], 1 << 20);
        assert!(out.get("stdout_base64").is_none(), "no second copy");
        if encoding == "base64" {
            use base64::Engine as _;
            let stdout = base64::engine::general_purpose::STANDARD
                .decode(out["stdout"].as_str().unwrap())
                .unwrap();
            assert_eq!(stdout, vec![0u8; 65536]);
        }
    }
    s.alive();

    use base64::Engine as _;
    let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![b'x'; n]);
    let echo = s.upload("echo.wat", ECHO);
    for (body, status, code) in [
        (json!({"stdin": "x".repeat(1025)}), 413, "stdin_too_large"),
        (json!({"stdin_base64": b64(1025)}), 413, "stdin_too_large"),
        (
            json!({"stdin_base64": b64(1 << 20)}),
            413,
            "stdin_too_large",
        ),
        (
            json!({"stdin": "x", "stdin_base64": "eA=="}),
            400,
            "bad_stdin",
        ),
        (json!({"stdin_base64": "not base64!"}), 400, "bad_stdin"),
        (json!({"args": ["a\u{0}b"]}), 400, "bad_args"),
        (json!({"args": ["ok", "\u{0}"]}), 400, "bad_args"),
    ] {
        let answer = s.run(&echo, body.clone());
        assert_eq!(answer.error(), (status, code.into()), "{body}: {answer:?}");
        s.alive();
    }
    let answer = s.run(&echo, json!({"stdin": "y".repeat(1024)}));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["stdout"], "y".repeat(1024));
}

/// Item 11: a guest wrote 960 MiB into `/scratch` in 0.2 s. Past `max_limits.disk` a write
/// fails with `ENOSPC` (51), which this guest turns into its exit code.
#[test]
fn a_guest_writing_past_the_disk_limit_gets_enospc() {
    let s = Serve::start("[max_limits]\ndisk = \"256KiB\"");
    // Opens /scratch/f (the scratch directory is fd 3), then writes 64 KiB at a time until
    // a write fails, and exits with that write's errno (100 + errno if the open fails).
    let fill = s.upload(
        "fill.wat",
        r#"(module
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
    );
    let out = s.run(&fill, json!({}));
    assert_eq!(out.status, 200, "{out:?}");
    let out = out.json();
    assert_eq!(
        (&out["report"]["outcome"], &out["exit_code"]),
        (&json!("exited"), &json!(51)),
        "{out}"
    );
    s.alive();
}

/// Item 15: uploading a module, re-uploading the same bytes from 8 threads, then `kill -9`
/// once lost the module in half the rounds (truncate-and-write). A 201 survives `kill -9`
/// in the middle of identical uploads, round after round.
#[test]
fn kill_9_during_identical_uploads_keeps_the_module() {
    let mut s = Serve::start("");
    // 1 MiB of data, so that a rewrite in place would have bytes to lose.
    let wat = format!(
        "(module (memory 17) (data (i32.const 0) \"{}\") \
         (func (export \"add\") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))",
        "z".repeat(1 << 20)
    );
    let module = Arc::new(wat::parse_str(&wat).unwrap());
    let first = s.upload_as(KEY, "big-add", &module);
    assert_eq!(first.status, 201, "{first:?}");
    let id = first.json()["id"].as_str().unwrap().to_owned();
    for round in 0..3 {
        let (sent, all_sent) = std::sync::mpsc::channel();
        let uploads: Vec<_> = (0..8)
            .map(|i| {
                let (addr, module, sent) = (s.addr.clone(), module.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut stream = TcpStream::connect(&addr).unwrap();
                    let upload = request(
                        "POST",
                        &format!("/v1/modules?name=again{i}"),
                        Some(KEY),
                        &module,
                    );
                    let _ = stream.write_all(&upload);
                    sent.send(()).unwrap();
                    // Answered 200 or cut by the kill: only the module matters.
                    let _ = stream.read_to_end(&mut Vec::new());
                })
            })
            .collect();
        // Every upload is on the wire when the server is killed.
        for _ in 0..8 {
            all_sent.recv().unwrap();
        }
        s.restart();
        for upload in uploads {
            upload.join().unwrap();
        }
        let described = eventually("the module is served after the restart", || {
            let answer = s.get(&format!("/v1/modules/{id}"));
            (answer.status == 200).then_some(answer)
        });
        let described = described.json();
        assert_eq!(described["name"], "big-add", "round {round}: {described}");
        assert_eq!(described["size_bytes"], module.len(), "round {round}");
        let out = s.invoke(&id, json!({"export": "add", "args": [2, 3]}));
        assert_eq!(out.json()["results"], json!([5]), "round {round}: {out:?}");
        s.alive();
    }
}

/// Item 16: a restart once loaded whatever was in the store: a module's `.name` file
/// compiled as WAT (a module nobody uploaded), a deleted module, a stray `README.txt`, and
/// silently dropped a file with flipped bytes. Only files whose SHA-256 matches their name
/// are served; anything else is quarantined and logged.
#[test]
fn a_restart_serves_only_what_was_uploaded() {
    let mut s = Serve::start("");
    // A module whose name is itself a module.
    let phantom_name = r#"(module (func (export "phantom") (result i32) (i32.const 666)))"#;
    let kept = s.upload(phantom_name, ADD);
    let deleted = s.upload("deleted.wat", ECHO);
    let answer = s.send("DELETE", &format!("/v1/modules/{deleted}"), Some(KEY), b"");
    assert_eq!(answer.status, 204, "{answer:?}");
    let flipped = s.upload(
        "flipped.wat",
        r#"(module (func (export "seven") (result i32) (i32.const 7)))"#,
    );

    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let modules = s.data.join("modules");
    std::fs::write(modules.join("README.txt"), "not a module").unwrap();
    let file = modules.join(format!("{flipped}.wasm"));
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    s.restart();
    eventually("the uploaded module is served again", || {
        (s.get(&format!("/v1/modules/{kept}")).status == 200).then_some(())
    });
    let answer = s.get(&format!("/v1/modules/{deleted}"));
    assert_eq!(answer.error(), (404, "unknown_module".into()), "{answer:?}");
    // The flipped module is listed until the background check reads its bytes (answering
    // 503 `module_compiling` meanwhile), then quarantined and never served.
    let answer = eventually("the flipped module is refused", || {
        let answer = s.get(&format!("/v1/modules/{flipped}"));
        if answer.status == 503 {
            assert_eq!(answer.code(), "module_compiling", "{answer:?}");
            assert!(answer.header("retry-after").is_some(), "{answer:?}");
        }
        (answer.status != 503).then_some(answer)
    });
    assert_eq!(answer.error(), (404, "unknown_module".into()), "{answer:?}");
    let quarantined: Vec<String> = std::fs::read_dir(s.data.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["README.txt".to_owned(), format!("{flipped}.wasm")] {
        assert!(
            quarantined.iter().any(|q| q.starts_with(&name)),
            "{name} not in quarantine: {quarantined:?}"
        );
    }
    let listed = s.get("/v1/modules").json();
    let ids: Vec<&str> = listed["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [kept.as_str()], "{listed}");
    assert_eq!(listed["modules"][0]["name"], phantom_name);
    let log = s.log();
    assert!(log.contains("README.txt"), "{log}");
    s.alive();
}
