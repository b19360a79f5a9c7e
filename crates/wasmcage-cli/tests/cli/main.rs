//! `wasmcage run` and `wasmcage serve` driven as a user (or an attacker) would drive them: a
//! real process, real files, real stdin, real TCP.

mod dashboard;
mod exec;
mod monitored;
mod pools;
mod runtime;
mod serve_hostile;
mod stdin;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn wasmcage(args: &[&str], stdin: &[u8]) -> Output {
    // Tests keep their compiled modules away from the user's own cache.
    let cache = std::env::temp_dir().join("wasmcage-cli-tests-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .env("WASMCAGE_CACHE_DIR", cache)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmcage");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn write_module(name: &str, text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn runs_the_example_command_with_stdin() {
    let hello = examples().join("hello.wat");
    let out = wasmcage(&["run", hello.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello, world!\n");

    let out = wasmcage(&["run", hello.to_str().unwrap()], b"cage");
    assert_eq!(text(&out.stdout), "Hello, cage!\n");
}

#[test]
fn invokes_an_export_with_typed_values() {
    let add = examples().join("add.wat");
    let out = wasmcage(
        &["run", "--invoke", "add", add.to_str().unwrap(), "40", "-2"],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "38\n");
}

#[test]
fn writes_the_report_as_json() {
    let (dir, module) = write_module(
        "trap.wat",
        r#"(module (memory 1) (func (export "f") unreachable))"#,
    );
    let report = dir.path().join("report.json");
    let out = wasmcage(
        &[
            "run",
            "--invoke",
            "f",
            "--report",
            report.to_str().unwrap(),
            &module,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(128));
    let json = std::fs::read_to_string(&report).unwrap();
    let parsed = wasmcage::ExecutionReport::from_json(&json).unwrap();
    assert_eq!(
        parsed.outcome,
        wasmcage::Outcome::Trap(wasmcage::TrapKind::Unreachable)
    );
    for field in [
        "\"outcome\":\"trap\"",
        "\"trap\":\"unreachable\"",
        "\"exit_code\":null",
        "\"memory_peak_bytes\":65536",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
    assert!(text(&out.stderr).contains("trapped (unreachable)"));
}

#[test]
fn report_to_stderr_with_dash() {
    let add = examples().join("add.wat");
    let out = wasmcage(
        &[
            "run",
            "--invoke",
            "add",
            "--report",
            "-",
            add.to_str().unwrap(),
            "1",
            "1",
        ],
        b"",
    );
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line on stderr");
    let report = wasmcage::ExecutionReport::from_json(line).unwrap();
    assert_eq!(report.outcome, wasmcage::Outcome::Completed);
}

/// (module text, options and then guest arguments, expected status, words the message must
/// contain). The module goes before the first word that is not an option or its value
/// (`@` marks where, when guest arguments follow).
fn check_status(module: &str, options: &[&str], status: i32, says: &str) {
    let (_dir, path) = write_module("m.wat", module);
    let mut args = vec!["run"];
    let at = options.iter().position(|o| *o == "@");
    match at {
        Some(i) => {
            args.extend_from_slice(&options[..i]);
            args.push(path.as_str());
            args.extend_from_slice(&options[i + 1..]);
        }
        None => {
            args.extend_from_slice(options);
            args.push(path.as_str());
        }
    }
    let out = wasmcage(&args, b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "{args:?}: expected {says:?} in {stderr}"
    );
}

#[test]
fn each_limit_breach_has_its_own_status_and_names_the_option() {
    let spin = r#"(module (func (export "_start") (loop (br 0))))"#;
    check_status(spin, &["--fuel", "10000"], 129, "--fuel");
    check_status(
        spin,
        &["--fuel", "none", "--timeout", "100ms"],
        130,
        "--timeout",
    );
    let bomb = r#"(module (memory 1) (func (export "_start") (loop (drop (memory.grow (i32.const 1))) (br 0))))"#;
    check_status(
        bomb,
        &["--memory", "2MiB", "--on-memory-limit", "terminate"],
        131,
        "--memory",
    );
    // By default the guest is refused (memory.grow returns -1) and carries on: this one
    // spins until its fuel runs out.
    check_status(
        bomb,
        &["--memory", "2MiB", "--fuel", "100000"],
        129,
        "--fuel",
    );
    let deep = r#"(module (func $f (export "_start") call $f))"#;
    check_status(
        deep,
        &["--fuel", "none", "--stack", "64KiB"],
        132,
        "--stack",
    );
    check_status(
        r#"(module (func (export "_start") unreachable))"#,
        &[],
        128,
        "unreachable",
    );
}

#[test]
fn guest_exit_codes_pass_through() {
    let exit = |code: i32| {
        format!(
            r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") (call $exit (i32.const {code}))))"#
        )
    };
    check_status(&exit(0), &[], 0, "");
    check_status(&exit(42), &[], 42, "");
}

#[test]
fn host_errors_are_status_126_with_a_reason() {
    check_status("(module (func", &[], 126, "not valid WebAssembly");
    check_status(
        r#"(module (func (export "f")))"#,
        &[],
        126,
        "not a WASI command",
    );
    check_status(
        r#"(module (func (export "f") (param i32)))"#,
        &["--invoke", "g"],
        126,
        "no exported function `g`",
    );
    check_status(
        r#"(module (func (export "f") (param i32)))"#,
        &["--invoke", "f", "@", "x"],
        126,
        "cannot read \"x\" as i32",
    );
    check_status(
        r#"(module (func (export "f")))"#,
        &["--memory", "lots"],
        126,
        "not a size",
    );
    let out = wasmcage(&["run", "/nonexistent/module.wasm"], b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("cannot read module file"));
}

#[test]
fn truncated_output_is_reported() {
    let flood = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start") (local $i i32)
          (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 1000))
          (loop $l (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))))"#;
    let (_dir, path) = write_module("flood.wat", flood);
    let out = wasmcage(
        &["run", "--max-output", "5000", "--report", "-", &path],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), 5000);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\"stdout_truncated\":true"), "{stderr}");
    assert!(stderr.contains("--max-output"), "{stderr}");
}

#[test]
fn a_second_run_loads_the_module_from_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let add = examples().join("add.wat");
    let dir = cache.path().to_str().unwrap();
    let run = || {
        wasmcage(
            &[
                "run",
                "--cache-dir",
                dir,
                "--invoke",
                "add",
                add.to_str().unwrap(),
                "2",
                "3",
            ],
            b"",
        )
    };
    assert_eq!(text(&run().stdout), "5\n");
    let files = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .unwrap()
            .flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap())
            .map(|f| f.unwrap().path())
            .collect()
    };
    let written = files(cache.path());
    assert_eq!(written.len(), 1, "one cache file: {written:?}");
    assert_eq!(text(&run().stdout), "5\n");

    // A corrupted cache file is discarded and replaced, and the run still succeeds.
    std::fs::write(&written[0], b"WCAGE001 garbage").unwrap();
    assert_eq!(text(&run().stdout), "5\n");
    assert!(std::fs::read(&written[0]).unwrap().len() > 100);

    let out = wasmcage(
        &[
            "run",
            "--no-cache",
            "--invoke",
            "add",
            add.to_str().unwrap(),
            "1",
            "1",
        ],
        b"",
    );
    assert_eq!(text(&out.stdout), "2\n");
}

#[test]
fn an_unusable_cache_directory_only_warns() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let add = examples().join("add.wat");
    let out = wasmcage(
        &[
            "run",
            "--cache-dir",
            file.path().to_str().unwrap(),
            "--invoke",
            "add",
            add.to_str().unwrap(),
            "1",
            "2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "3\n");
    assert!(text(&out.stderr).contains("running without the on-disk cache"));
}

/// A command that prints the file `/data/in.txt` from its first preopen (fd 3) to stdout.
const CAT_DATA: &str = r#"(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "in.txt")
  (func (export "_start") (local $errno i32)
    (local.set $errno (call $open (i32.const 3) (i32.const 1) (i32.const 100) (i32.const 6)
      (i32.const 0) (i64.const 2) (i64.const 2) (i32.const 0) (i32.const 0)))
    (if (local.get $errno) (then (call $exit (local.get $errno))))
    (i32.store (i32.const 16) (i32.const 1024)) (i32.store (i32.const 20) (i32.const 1024))
    (drop (call $read (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 20) (i32.load (i32.const 24)))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;

#[test]
fn dir_grants_reach_the_guest_and_nothing_else_does() {
    let (dir, module) = write_module("cat.wat", CAT_DATA);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "from the host").unwrap();
    let grant = format!("{}::/data:ro", data.display());
    let out = wasmcage(&["run", "--dir", &grant, &module], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from the host");
    // Without the grant there is no fd 3: the guest exits with EBADF (8).
    let out = wasmcage(&["run", &module], b"");
    assert_eq!(out.status.code(), Some(8));
}

#[test]
fn profiles_and_policy_files_compose_with_flags() {
    let spin = r#"(module (func (export "_start") (loop (br 0))))"#;
    // The strict profile's 1 s timeout, tightened by a flag to 100 ms.
    check_status(
        spin,
        &[
            "--profile",
            "strict",
            "--fuel",
            "none",
            "--timeout",
            "100ms",
        ],
        130,
        "100ms",
    );
    let (dir, module) = write_module("spin.wat", spin);
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "profile = \"strict\"\n[limits]\nfuel = 5000\n").unwrap();
    let out = wasmcage(&["run", "--policy", policy.to_str().unwrap(), &module], b"");
    assert_eq!(out.status.code(), Some(129), "{}", text(&out.stderr));
    check_status(spin, &["--profile", "lax"], 126, "unknown profile");
    check_status(
        spin,
        &["--allow-net", "10.0.0.0/33"],
        126,
        "not a valid CIDR",
    );
    check_status(
        spin,
        &["--dir", "/definitely/missing::/x"],
        126,
        "--dir /definitely/missing",
    );
}

#[test]
fn policy_check_prints_the_effective_policy_or_the_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "profile = \"standard\"\n[env]\nset = { MODE = \"ci\" }\n[network]\nallow = [\"api.example.com:443\"]\n").unwrap();
    let out = wasmcage(&["policy", "check", good.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for expected in [
        "scratch = \"/scratch\"",
        "MODE = \"ci\"",
        "\"api.example.com:443\"",
        "[limits]",
    ] {
        assert!(
            printed.contains(expected),
            "{expected} missing from {printed}"
        );
    }
    // What it printed is itself a valid policy file.
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &printed).unwrap();
    assert_eq!(
        wasmcage(&["policy", "check", again.to_str().unwrap()], b"")
            .status
            .code(),
        Some(0)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\ntimeout = \"0s\"\n").unwrap();
    let out = wasmcage(&["policy", "check", bad.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("limits.timeout: must be longer than zero"),
        "{}",
        text(&out.stderr)
    );
}

/// Everything after the module belongs to the guest: options there are the guest's
/// arguments and never wasmcage's (they once granted the host root and removed the fuel
/// limit). A `--` right after the module is dropped.
#[test]
fn options_after_the_module_are_the_guests() {
    let (dir, module) = write_module(
        "argc.wat",
        r#"(module
          (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
          (memory (export "memory") 1)
          (func (export "_start")
            (drop (call $sizes (i32.const 0) (i32.const 4)))
            (call $exit (i32.load (i32.const 0)))))"#,
    );
    let host = dir.path().to_str().unwrap();
    let grant = format!("{host}::/host");
    // argv is the module's name and the four words after it.
    let out = wasmcage(
        &["run", &module, "script.py", "--dir", &grant, "--fuel"],
        b"",
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let out = wasmcage(&["run", &module, "--", "--fuel", "none"], b"");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// A module whose compiling takes far longer than its budget is refused (status 126) when
/// the budget runs out, and nothing of it runs; compiling happens in a child process, so
/// the budget holds however much time or memory the compiler would want.
#[test]
fn compiling_stops_at_its_budget() {
    // Ten functions of 2 000 nested branches each: about a second of compiling.
    let branch: String = (0..2000)
        .map(|i| {
            format!(
                "(if (i32.and (local.get 0) (i32.const {i})) \
                 (then (local.set 0 (i32.mul (local.get 0) (i32.const 3)))) \
                 (else (local.set 0 (i32.add (local.get 0) (i32.const {i})))))"
            )
        })
        .collect();
    let funcs: String = (0..10)
        .map(|k| {
            format!("(func (export \"f{k}\") (param i32) (result i32) {branch} (local.get 0))")
        })
        .collect();
    let binary = wat::parse_str(format!("(module {funcs})")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.wasm");
    std::fs::write(&path, binary).unwrap();
    let path = path.to_str().unwrap();
    let out = wasmcage(
        &[
            "run",
            "--no-cache",
            "--compile-timeout",
            "50ms",
            "--invoke",
            "f0",
            path,
            "1",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("longer than the budget"),
        "{}",
        text(&out.stderr)
    );
    let out = wasmcage(
        &[
            "run",
            "--no-cache",
            "--compile-memory",
            "16MiB",
            "--invoke",
            "f0",
            path,
            "1",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("budget"),
        "{}",
        text(&out.stderr)
    );
}

/// One HTTP/1.1 request over a fresh connection; `None` while nothing listens yet.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls until `path` answers `status` (waiting for a state, never for a time), or panics
/// after 60 s.
fn wait_for(port: u16, path: &str, status: u16) -> String {
    let guard = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some((s, body)) = http(port, "GET", path, "")
            && s == status
        {
            return body;
        }
        assert!(
            std::time::Instant::now() < guard,
            "{path} never answered {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_server_killed_after_an_upload_keeps_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let serve = || {
        Command::new(env!("CARGO_BIN_EXE_wasmcage"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("WASMCAGE_API_KEYS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wasmcage serve")
    };
    let mut server = serve();
    wait_for(port, "/livez", 200);
    let add = "(module (func (export \"add\") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))";
    let (status, body) = http(port, "POST", "/v1/modules?name=add.wat", add).unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body.split("\"id\":\"").nth(1).unwrap()[..64].to_owned();
    // SIGKILL: no shutdown, no flush; the 201 promised the module is on disk.
    server.kill().unwrap();
    server.wait().unwrap();

    let mut server = serve();
    let described = wait_for(port, &format!("/v1/modules/{id}"), 200);
    assert!(described.contains("\"name\":\"add.wat\""), "{described}");
    let (status, out) = http(
        port,
        "POST",
        &format!("/v1/modules/{id}/invoke"),
        r#"{"export":"add","args":[2,3]}"#,
    )
    .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("\"results\":[5]"), "{out}");
}
