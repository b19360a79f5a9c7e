//! How precisely wall-clock timeouts fire under load: many guests spinning at once on a
//! machine with fewer cores, each with the same timeout. Prints the distribution of how
//! far past its timeout each execution ended, and whether every one ended within the
//! target of 5% of the timeout plus 50 ms.
//!
//! `cargo bench -p wasmcage-core --bench timeouts` runs 64 guests with a 10 s timeout;
//! `cargo test --benches` runs a small version (8 guests, 200 ms) to keep it working.
//! A benchmark rather than a test: its numbers depend on the machine.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use wasmcage_core::{Engine, EngineConfig, Limits, Outcome, Sandbox};

const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (guests, timeout) = if bench {
        (64, Duration::from_secs(10))
    } else {
        (8, Duration::from_millis(200))
    };
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let module = engine
        .compile("spin.wat", SPIN.as_bytes())
        .expect("compile");
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: None,
            timeout,
            ..Limits::default()
        })
        .build()
        .expect("sandbox");
    let started = Instant::now();
    let overshoots: Vec<Duration> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..guests)
            .map(|_| {
                scope.spawn(|| {
                    let out = sandbox.call(&module, "spin", &[]).expect("call");
                    assert_eq!(out.report.outcome, Outcome::Timeout);
                    out.report.duration.saturating_sub(timeout)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("guest thread"))
            .collect()
    });
    let mut sorted = overshoots.clone();
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let target = timeout / 20 + Duration::from_millis(50);
    let within = sorted.iter().filter(|o| **o <= target).count();
    println!(
        "timeouts/{guests}_guests_{}ms on {} cores: overshoot p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; \
         {within}/{guests} within the target of {:.0} ms; wall {:.2} s",
        timeout.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        target.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64(),
    );
}
