//! `cargo xtask fuzz --minutes N [--seed S]`: runs the fuzz cases of the test binary
//! (`tests/it/fuzz.rs`) for N minutes in a release build, from a fresh seed unless one is
//! given. The test prints the cases run, the failures with their reproducers (kept under
//! `target/fuzz-repro/`) and the distribution of outcomes, and fails if any case failed.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::root;

pub fn run(args: &[String]) -> Result<()> {
    let mut minutes: u64 = 5;
    let mut seed: Option<u64> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value"))
                .map(String::as_str)
        };
        match arg.as_str() {
            "--minutes" => minutes = value()?.parse().context("--minutes takes a whole number")?,
            "--seed" => seed = Some(parse_seed(value()?)?),
            other => {
                bail!("unknown option {other:?}; usage: cargo xtask fuzz --minutes N [--seed S]")
            }
        }
    }
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    // A new seed per run explores new cases; the time is as good a source as any, and the
    // seed is printed so that the run can be repeated.
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("xtask fuzz: {minutes} minutes from seed {seed:#x} (repeat with --seed {seed:#x})");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "test",
            "--release",
            "-p",
            "wasmcage-tests",
            "--test",
            "it",
            "--",
            "fuzz::generated_and_mutated_modules_never_crash_the_host",
            "--exact",
            "--nocapture",
        ])
        .env("WASMCAGE_FUZZ_SEED", seed.to_string())
        .env("WASMCAGE_FUZZ_SECONDS", (minutes * 60).to_string())
        .env_remove("WASMCAGE_FUZZ_CASES")
        .env_remove("WASMCAGE_FUZZ_FIRST")
        .current_dir(root())
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!(
            "fuzzing found failures (or could not run); reproducers are in {}",
            root().join("target/fuzz-repro").display()
        );
    }
    eprintln!("xtask fuzz: no failures");
    Ok(())
}

/// A seed in decimal or with a 0x prefix in hex.
fn parse_seed(text: &str) -> Result<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .with_context(|| format!("--seed {text:?} is not a number"))
}
