//! The cost of one execution: wasmcage against wasmtime used by hand, in the same run.
//!
//! Both sides do the same work per iteration: a fresh store with fuel and an epoch
//! deadline, an instantiation from a pre-linked module, one call. wasmcage adds its limiter,
//! report, observer events and output capture on top; the difference is its overhead.

// criterion_group! generates public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmcage_core::{CommandInput, Engine, EngineConfig, Sandbox, Value};

const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1))))"#;

const HELLO: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 100) "hello\n")
    (func (export "_start")
      (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 6))
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

fn by_hand_engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true).epoch_interruption(true);
    wasmtime::Engine::new(&config).unwrap()
}

fn call(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");

    let engine = by_hand_engine();
    let module = wasmtime::Module::new(&engine, ADD).unwrap();
    let linker = wasmtime::Linker::<()>::new(&engine);
    let pre = linker.instantiate_pre(&module).unwrap();
    group.bench_function("wasmtime_by_hand", |b| {
        b.iter(|| {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_fuel(1_000_000).unwrap();
            store.set_epoch_deadline(1_000);
            let instance = pre.instantiate(&mut store).unwrap();
            let add = instance
                .get_typed_func::<(i32, i32), i32>(&mut store, "add")
                .unwrap();
            black_box(add.call(&mut store, (black_box(2), 3)).unwrap())
        })
    });

    let engine = Engine::new(EngineConfig::default()).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    group.bench_function("wasmcage_sandbox", |b| {
        b.iter(|| {
            black_box(
                sandbox
                    .call(&module, "add", &[Value::I32(black_box(2)), Value::I32(3)])
                    .unwrap(),
            )
        })
    });
    group.finish();
}

fn command(c: &mut Criterion) {
    let mut group = c.benchmark_group("command");

    let engine = by_hand_engine();
    let module = wasmtime::Module::new(&engine, HELLO).unwrap();
    let mut linker = wasmtime::Linker::<wasmtime_wasi::p1::WasiP1Ctx>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |cx| cx).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    group.bench_function("wasmtime_by_hand", |b| {
        b.iter(|| {
            let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(1 << 20);
            let wasi = wasmtime_wasi::WasiCtxBuilder::new()
                .args(&["hello"])
                .stdout(stdout.clone())
                .allow_blocking_current_thread(true)
                .build_p1();
            let mut store = wasmtime::Store::new(&engine, wasi);
            store.set_fuel(1_000_000).unwrap();
            store.set_epoch_deadline(1_000);
            let instance = pre.instantiate(&mut store).unwrap();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .unwrap();
            start.call(&mut store, ()).unwrap();
            drop(store);
            black_box(stdout.contents())
        })
    });

    let engine = Engine::new(EngineConfig::default()).unwrap();
    let module = engine.compile("hello.wat", HELLO.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    group.bench_function("wasmcage_sandbox", |b| {
        b.iter(|| {
            black_box(
                sandbox
                    .run_command(&module, CommandInput::default())
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, call, command);
criterion_main!(benches);
