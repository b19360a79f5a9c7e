//! `wasmcage run` driven as a user would drive it: a real process, real files, real stdin.

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
        &["run", add.to_str().unwrap(), "--invoke", "add", "40", "-2"],
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
            &module,
            "--invoke",
            "f",
            "--report",
            report.to_str().unwrap(),
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
            add.to_str().unwrap(),
            "--invoke",
            "add",
            "1",
            "1",
            "--report",
            "-",
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

/// (module text, extra options, expected status, words the message must contain)
fn check_status(module: &str, options: &[&str], status: i32, says: &str) {
    let (_dir, path) = write_module("m.wat", module);
    let mut args = vec!["run", path.as_str()];
    args.extend_from_slice(options);
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
    check_status(bomb, &["--memory", "2MiB"], 131, "--memory");
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
        &["--invoke", "f", "x"],
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
        &["run", &path, "--max-output", "5000", "--report", "-"],
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
                add.to_str().unwrap(),
                "--cache-dir",
                dir,
                "--invoke",
                "add",
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
            add.to_str().unwrap(),
            "--no-cache",
            "--invoke",
            "add",
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
            add.to_str().unwrap(),
            "--cache-dir",
            file.path().to_str().unwrap(),
            "--invoke",
            "add",
            "1",
            "2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "3\n");
    assert!(text(&out.stderr).contains("running without the on-disk cache"));
}
