//! Cold start of a new `wasmcage` process running a module of about 1 MB, with and without
//! the on-disk module cache. Each iteration is a whole process: start, compile or load,
//! instantiate, call, exit.

// criterion_group! generates public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

/// A module of about 1 MB of code: many exported functions with long arithmetic bodies.
fn big_module() -> Vec<u8> {
    let mut text = String::from("(module\n");
    for f in 0..1_050 {
        text.push_str(&format!(
            "(func (export \"f{f}\") (param i32) (result i32) local.get 0\n"
        ));
        for i in 0..120 {
            text.push_str(&format!(
                "i32.const {} i32.add i32.const {} i32.xor\n",
                f + i,
                i * 7 + 1
            ));
        }
        text.push_str(")\n");
    }
    text.push(')');
    wat::parse_str(&text).expect("the generated module is valid")
}

fn cold_start(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("big.wasm");
    let bytes = big_module();
    std::fs::write(&module, &bytes).unwrap();
    let cache = dir.path().join("cache");
    let run = |cache_args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wasmcage"))
            .arg("run")
            .args(cache_args)
            .args(["--invoke", "f0"])
            .arg(&module)
            .arg("1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cache_arg = ["--cache-dir", cache.to_str().unwrap()];
    run(&cache_arg); // fills the cache

    let mut group = c.benchmark_group("cold_start");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(15));
    eprintln!("cold_start: module is {} bytes", bytes.len());
    group.bench_function("no_cache", |b| b.iter(|| run(&["--no-cache"])));
    group.bench_function("disk_cache", |b| b.iter(|| run(&cache_arg)));
    group.finish();
}

criterion_group!(benches, cold_start);
criterion_main!(benches);
