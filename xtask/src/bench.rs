//! `cargo xtask bench`: runs the criterion benchmarks and prints one comparison table from
//! criterion's own estimates, with each row's ratio to the baseline of its group, then the
//! language runtimes section (`runtimes.rs`): the service, the CLI and the peers.
//! `cargo xtask bench runtimes [CRITERION ARGS]` runs only the runtimes' benchmark and that
//! section (`bench runtimes --no-criterion`: the section alone, reading whatever estimates
//! criterion left); any other arguments go to criterion as before.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{cargo, target_dir};

/// Benchmark groups, each with its baseline first; the rest are compared against it.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "call a tiny export",
        &[
            "call/wasmtime_by_hand",
            "call/wasmcage_warm_pool",
            "call/wasmcage_sandbox",
        ],
    ),
    (
        "run a tiny WASI command",
        &[
            "command/wasmtime_by_hand",
            "command/wasmcage_warm_pool",
            "command/wasmcage_sandbox",
        ],
    ),
    (
        "observing one execution (metrics on vs off)",
        &[
            "observe/execution_no_observer",
            "observe/execution_with_metrics",
            "observe/metrics_record_one_execution",
        ],
    ),
    (
        "tracing one execution (subscriber off, info logs, OTLP export)",
        &[
            "trace/subscriber_off",
            "trace/info_logs",
            "trace/otlp_export",
        ],
    ),
    (
        "cold start of a ~1 MB module in a new process",
        &["cold_start/no_cache", "cold_start/disk_cache"],
    ),
    (
        "time per execution on 1 thread (executions/s = 1e9 / ns)",
        &[
            "throughput/wasmtime_by_hand_1_threads",
            "throughput/warm_pool_1_threads",
            "throughput/sandbox_1_threads",
        ],
    ),
    (
        "time per execution on 2 threads (throughput = baseline / ratio)",
        &[
            "throughput/wasmtime_by_hand_2_threads",
            "throughput/warm_pool_2_threads",
            "throughput/sandbox_2_threads",
        ],
    ),
    (
        "Python `print(1+1)` in-process: fresh interpreter, pre-started, session cell",
        &[
            "runtime/python_cold",
            "runtime/python_prestarted",
            "runtime/python_session_cell",
        ],
    ),
    (
        "JavaScript `console.log(1+1)` in-process: fresh interpreter, pre-started, session cell",
        &[
            "runtime/javascript_cold",
            "runtime/javascript_prestarted",
            "runtime/javascript_session_cell",
        ],
    ),
];

pub fn run(extra: &[String]) -> Result<()> {
    let criterion = target_dir().join("criterion");
    let only_runtimes = extra.first().is_some_and(|a| a == "runtimes");
    let (benches, extra): (&[(&str, &str)], _) = if only_runtimes {
        (&[("wasmcage-runtime", "runtimes")], &extra[1..])
    } else {
        (
            &[
                ("wasmcage-core", "execution"),
                ("wasmcage-cli", "cold_start"),
                ("wasmcage", "observers"),
                ("wasmcage-runtime", "runtimes"),
            ],
            extra,
        )
    };
    let skip = only_runtimes && extra.first().is_some_and(|a| a == "--no-criterion");
    for (package, bench) in benches.iter().filter(|_| !skip) {
        let mut args = vec!["bench", "-p", package, "--bench", bench, "--"];
        args.extend(extra.iter().map(String::as_str));
        cargo(&args)?;
    }
    print_table(&criterion, only_runtimes)?;
    crate::runtimes::run(&criterion)
}

/// Prints the groups' table (with `only_runtimes`, the runtimes' groups alone).
fn print_table(dir: &Path, only_runtimes: bool) -> Result<()> {
    println!("\n| benchmark | mean | 95% CI | vs baseline |");
    println!("|---|---|---|---|");
    for (title, ids) in GROUPS {
        if only_runtimes && !ids.iter().all(|id| id.starts_with("runtime/")) {
            continue;
        }
        println!("| **{title}** | | | |");
        let mut baseline = None;
        for id in *ids {
            let Some((mean, lo, hi)) = estimate(dir, id)? else {
                println!("| {id} | not run | | |");
                continue;
            };
            let ratio = match baseline {
                None => {
                    baseline = Some(mean);
                    "baseline".to_owned()
                }
                Some(b) => format!("{:.2}x", mean / b),
            };
            println!(
                "| {id} | {} | {} – {} | {ratio} |",
                human(mean),
                human(lo),
                human(hi)
            );
        }
    }
    Ok(())
}

/// Criterion's mean estimate and its confidence interval, in nanoseconds.
pub(crate) fn estimate(dir: &Path, id: &str) -> Result<Option<(f64, f64, f64)>> {
    let path = dir.join(id).join("new/estimates.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    let mean = &json["mean"];
    let get = |v: &serde_json::Value| v.as_f64().context("criterion estimate is not a number");
    Ok(Some((
        get(&mean["point_estimate"])?,
        get(&mean["confidence_interval"]["lower_bound"])?,
        get(&mean["confidence_interval"]["upper_bound"])?,
    )))
}

fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
