//! `cargo xtask load [DURATION]`: drives `invoke` of a tiny export and `run` of a tiny WASI
//! command on a release build of `wasmcage serve` with `wrk` (64 connections, 30 s each by
//! default) and prints throughput, latency percentiles, their ratio and the server's resident
//! memory before and after.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, target_dir};

const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1))))"#;

/// A WASI command that prints `hello` and exits, run under the server's default profile.
const HELLO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hello\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 6))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// Kills the server when the load run ends, however it ends.
pub(crate) struct Serving(pub(crate) Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let duration = args.first().map_or("30s", String::as_str);
    cargo(&["build", "--release", "-p", "wasmcage-cli"])?;
    let dir = std::env::temp_dir().join(format!("wasmcage-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )?;
    let server = Serving(
        Command::new(target_dir().join("release/wasmcage"))
            .args([
                "serve",
                "--config",
                config.to_str().context("a UTF-8 temp path")?,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start wasmcage serve")?,
    );
    let ready = Instant::now() + Duration::from_secs(60);
    while !request(addr, "GET", "/livez", "").is_ok_and(|(s, _)| s == 200) {
        if Instant::now() > ready {
            bail!("the server did not come up on {addr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = request(addr, "POST", "/v1/modules?name=add.wat", ADD)?;
    if status != 201 {
        bail!("upload failed with {status}: {body}");
    }
    let id = serde_json::from_str::<serde_json::Value>(&body)?["id"]
        .as_str()
        .context("an id")?
        .to_owned();
    let invoke = format!("/v1/modules/{id}/invoke");
    let (status, body) = request(addr, "POST", &invoke, r#"{"export":"add","args":[2,3]}"#)?;
    if status != 200 || !body.contains("\"results\":[5]") {
        bail!("invoke failed with {status}: {body}");
    }
    let (status, body) = request(addr, "POST", "/v1/modules?name=hello.wat", HELLO)?;
    if status != 201 {
        bail!("upload failed with {status}: {body}");
    }
    let hello = serde_json::from_str::<serde_json::Value>(&body)?["id"]
        .as_str()
        .context("an id")?
        .to_owned();
    let run = format!("/v1/modules/{hello}/run");
    let (status, body) = request(addr, "POST", &run, "{}")?;
    if status != 200 || !body.contains("hello") {
        bail!("run failed with {status}: {body}");
    }

    let rss_before = rss_kib(server.0.id())?;
    let invoked = drive(
        &dir,
        addr,
        &invoke,
        r#"{"export":"add","args":[2,3]}"#,
        duration,
    )?;
    let ran = drive(&dir, addr, &run, "{}", duration)?;
    let rss_after = rss_kib(server.0.id())?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let field = |report: &str, prefix: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "\n| measure | invoke (export `add`) | run (WASI command printing one line) |\n|---|---|---|"
    );
    for (name, prefix) in [
        ("requests/s", "Requests/sec:"),
        ("p50 latency", "50%"),
        ("p99 latency", "99%"),
    ] {
        println!(
            "| {name} | {} | {} |",
            field(&invoked, prefix),
            field(&ran, prefix)
        );
    }
    println!(
        "| non-2xx responses | {} | {} |",
        field(&invoked, "Non-2xx or 3xx responses:").replace('?', "0"),
        field(&ran, "Non-2xx or 3xx responses:").replace('?', "0")
    );
    let rate = |report: &str| field(report, "Requests/sec:").parse::<f64>().ok();
    if let (Some(i), Some(r)) = (rate(&invoked), rate(&ran)) {
        println!("| invoke / run throughput | {:.2}x | |", i / r);
    }
    println!(
        "| server RSS before / after | {} MiB / {} MiB | |",
        rss_before / 1024,
        rss_after / 1024
    );
    Ok(())
}

/// Drives `POST path` with `body` from wrk (2 threads, 64 connections) and returns its report.
fn drive(
    dir: &std::path::Path,
    addr: SocketAddr,
    path: &str,
    body: &str,
    duration: &str,
) -> Result<String> {
    let script = dir.join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )?;
    let url = format!("http://{addr}{path}");
    eprintln!("\n$ wrk -t2 -c64 -d{duration} --latency -s post.lua {url}");
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c64",
            &format!("-d{duration}"),
            "--latency",
            "-s",
            script.to_str().context("UTF-8")?,
            &url,
        ])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{report}");
    Ok(report)
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("a status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The resident set of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc")
}
