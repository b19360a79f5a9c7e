//! The shipped Grafana dashboard and Prometheus rules against a real Prometheus that scraped
//! a real `wasmcage serve`: every expression must parse and evaluate, and every metric it
//! names must be in the scraped data (not only in the registry's family table).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::monitored::Prometheus;
use crate::serve_hostile::encode;
use crate::serve_hostile::{ADD, Serve, eventually};

fn docs(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../../docs/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&docs("grafana-dashboard.json")).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect()
}

/// Every `expr` of the rules file: `expr: <one line>` or a `expr: |` block (the lines
/// indented deeper than `expr:`).
fn rule_exprs() -> Vec<String> {
    let text = docs("alerting/wasmcage-rules.yml");
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest != "|" {
            exprs.push(rest.to_owned());
            continue;
        }
        let mut block = Vec::new();
        while i < lines.len() {
            let next = lines[i];
            if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                break;
            }
            block.push(next.trim());
            i += 1;
        }
        exprs.push(block.join(" ").trim().to_owned());
    }
    exprs
}

/// The metric names an expression reads: its words that start like ours or the process
/// collector's, outside quoted label values.
fn metric_names(expr: &str) -> Vec<String> {
    let mut outside = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            outside.push(' ');
        } else if !quoted {
            outside.push(c);
        }
    }
    outside
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wasmcage_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Whether `name` is a series of a family labelled by language runtime. A runtime's series
/// appear with its first event, and this test's `wasmcage serve` runs no runtime code yet.
fn runtime_series(name: &str) -> bool {
    wasmcage::metrics::FAMILIES
        .iter()
        .filter(|f| f.labels.contains(&"runtime"))
        .any(|f| {
            name.strip_prefix(f.name)
                .is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
        })
}

/// A command that exits with the status given as its first argument's first digit.
const EXIT_WITH: &str = r#"(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (drop (call $args (i32.const 16) (i32.const 64)))
    ;; argv[1] points at its first byte; '0' is 48.
    (call $exit (i32.sub (i32.load8_u (i32.load (i32.const 20))) (i32.const 48)))))"#;

#[test]
fn every_dashboard_and_rule_expression_runs_against_a_real_scrape() {
    let serve = Serve::start("[pools]\nevery_module = 4\nmin_ready = 1\nmax_in_use = 4\n");
    // Calls that complete, trap and run out of fuel (a limit, so a security event).
    let calls = format!(
        "{} (func (export \"trap\") unreachable) (func (export \"spin\") (loop (br 0))))",
        &ADD[..ADD.len() - 1]
    );
    let id = serve.upload("calls", &calls);
    let command = serve.upload("exit-with", EXIT_WITH);
    let prometheus = Prometheus::start(&serve.addr);
    let invoke = |body: Value| {
        let answer = serve.invoke(&id, body);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["report"]["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let run = |status: &str| {
        let answer = serve.run(&command, json!({"args": [status]}));
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json()["exit_code"].as_i64().unwrap()
    };
    // One unauthenticated request, for the HTTP error families (more would get the test's
    // own address throttled).
    assert_eq!(serve.send("GET", "/v1/modules", None, b"").status, 401);
    // Until Prometheus has scraped twice after the traffic, so that rates have two samples.
    eventually("Prometheus scraped the traffic", || {
        assert_eq!(
            invoke(json!({"export": "add", "args": [1, 2]})),
            "completed"
        );
        assert_eq!(invoke(json!({"export": "trap"})), "trap");
        assert_eq!(
            invoke(json!({"export": "spin", "limits": {"fuel": 1000}})),
            "out_of_fuel"
        );
        assert_eq!(run("0"), 0);
        assert_eq!(run("3"), 3);
        prometheus
            .query(r#"sum(increase(wasmcage_command_exits_total{status="nonzero"}[1m]))"#)
            .filter(|v| *v > 0.0)
    });

    let names = prometheus.api("/api/v1/label/__name__/values").unwrap();
    let scraped: BTreeSet<String> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let dashboard = dashboard_exprs();
    let rules = rule_exprs();
    assert!(
        dashboard.len() >= 30,
        "{} dashboard expressions",
        dashboard.len()
    );
    assert_eq!(rules.len(), 4, "{rules:?}");
    // Until the traffic above includes code run in a language runtime, the runtime families
    // are not scraped: their expressions must still evaluate, and name registered families
    // (`runtime_series`). Once any runtime series is scraped, every one named must be.
    let runtimes_scraped = scraped.iter().any(|n| runtime_series(n));
    for expr in dashboard.iter().chain(&rules) {
        let answer = prometheus
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr} names no metric");
        for name in names {
            assert!(
                scraped.contains(&name) || (!runtimes_scraped && runtime_series(&name)),
                "{expr}: {name} is not in what Prometheus scraped from `wasmcage serve`"
            );
        }
    }
    // The dashboard's user-traffic success rate counts the nonzero exit and the canary not
    // at all: some executions failed, so it is below 1.
    let success = dashboard
        .iter()
        .find(|e| e.starts_with("1 - "))
        .expect("the success-rate stat");
    let rate = prometheus.query(success).unwrap();
    assert!(rate < 1.0 && rate > 0.0, "success rate {rate}");
}
