//! The Python side of CI: a venv under the target directory with the pinned packages of
//! `xtask/requirements-ci.txt`, and pytest run in it against the release `wasmcage` binary.
//!
//! Tests that need a real counterpart nobody on this project wrote (the official MCP SDK, the
//! Kubernetes schemas, an S3-compatible server, the HTTP client package) are written in
//! Python and live under `tests/py/` and `clients/python/tests/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::{root, target_dir};

/// The pytest roots CI runs, relative to the workspace root.
pub const TEST_DIRS: &[&str] = &["tests/py", "clients/python/tests"];

/// `<target>/ci-venv`, created when missing and brought up to the pinned requirements (pip
/// does nothing when they are already installed). Returns its `python`.
pub fn venv() -> Result<PathBuf> {
    let venv = target_dir().join("ci-venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        crate::run_program(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let requirements = root().join("xtask/requirements-ci.txt");
    crate::run_program(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
    )?;
    Ok(python)
}

/// Builds the release CLI (the binary users run; the Python tests drive it) and returns its
/// path.
pub fn release_binary() -> Result<PathBuf> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "wasmcage-cli",
        "--bin",
        "wasmcage",
    ])?;
    let bin = target_dir().join("release/wasmcage");
    if !bin.is_file() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// Runs pytest over [`TEST_DIRS`] (those that exist) with `WASMCAGE_BIN` set to `bin` and
/// `WASMCAGE_TEST_WHEEL` to the pinned wheel.
pub fn pytest(python: &Path, bin: &Path, wheel: &Path, extra: &[String]) -> Result<()> {
    let dirs: Vec<&str> = TEST_DIRS
        .iter()
        .copied()
        .filter(|d| root().join(d).is_dir())
        .collect();
    if dirs.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(&dirs)
        .args(extra)
        .env("WASMCAGE_BIN", bin)
        .env("WASMCAGE_TEST_WHEEL", wheel)
        .env("WASMCAGE_TARGET_DIR", target_dir());
    crate::run_program(&mut cmd)
}

/// `cargo xtask pytest [PYTEST ARGS]`: builds the release binary, prepares the venv and runs
/// the Python tests alone.
pub fn run(args: &[String]) -> Result<()> {
    let wheel = crate::test_wheel()?;
    let bin = release_binary()?;
    let python = venv()?;
    pytest(&python, &bin, &wheel, args)
}
