//! The cost of one execution: wasmcage against wasmtime used by hand, in the same run.
//!
//! Every side does the same work per execution: a fresh store with fuel and an epoch
//! deadline, an instantiation from a pre-linked module on the pooling allocator, one call.
//! wasmcage adds its limiter, report, observer events and output capture on top; the
//! difference is its overhead. `wasmcage_warm_pool` takes pre-instantiated instances and
//! refills after each execution; `wasmcage_sandbox` instantiates on demand.

// criterion_group! generates public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};

use wasmcage_core::{CommandInput, Engine, EngineConfig, PoolConfig, Sandbox, Value, WarmPool};

const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1))))"#;

const HELLO: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 100) "hello\n")
    (func (export "_start")
      (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 6))
      (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

/// The floor: what a careful user of wasmtime would write by hand, with the pooling
/// allocator, a pre-linked `InstancePre` and a `TypedFunc`.
fn by_hand_engine() -> wasmtime::Engine {
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true).epoch_interruption(true);
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_core_instances(256)
        .total_memories(256)
        .total_tables(256);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
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
    let pool = WarmPool::new(&sandbox, &module, PoolConfig::default()).unwrap();
    let args = [Value::I32(2), Value::I32(3)];
    group.bench_function("wasmcage_warm_pool", |b| {
        b.iter(|| black_box(pool.call("add", black_box(&args)).unwrap()))
    });
    group.bench_function("wasmcage_sandbox", |b| {
        b.iter(|| black_box(sandbox.call(&module, "add", black_box(&args)).unwrap()))
    });
    group.finish();
}

/// Executions per second from 1 and from 2 threads, a fresh instance per execution: wasmtime
/// by hand (each thread with its own store per call), one shared warm pool, and one shared
/// sandbox instantiating on demand. Reported as time per execution; executions/s = 1e9 / ns.
fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");

    let raw_engine = by_hand_engine();
    let raw_module = wasmtime::Module::new(&raw_engine, ADD).unwrap();
    let pre = wasmtime::Linker::<()>::new(&raw_engine)
        .instantiate_pre(&raw_module)
        .unwrap();
    let by_hand = || {
        let mut store = wasmtime::Store::new(&raw_engine, ());
        store.set_fuel(1_000_000).unwrap();
        store.set_epoch_deadline(1_000);
        let instance = pre.instantiate(&mut store).unwrap();
        let add = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "add")
            .unwrap();
        black_box(add.call(&mut store, (2, 3)).unwrap());
    };

    let engine = Engine::new(EngineConfig::default()).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    let pool = WarmPool::new(&sandbox, &module, PoolConfig::default()).unwrap();
    let args = [Value::I32(2), Value::I32(3)];
    let pooled = || {
        black_box(pool.call("add", &args).unwrap());
    };
    let on_demand = || {
        black_box(sandbox.call(&module, "add", &args).unwrap());
    };

    for threads in [1u64, 2] {
        let sides: [(&str, &(dyn Fn() + Sync)); 3] = [
            ("wasmtime_by_hand", &by_hand),
            ("warm_pool", &pooled),
            ("sandbox", &on_demand),
        ];
        for (name, one) in sides {
            group.bench_function(format!("{name}_{threads}_threads"), |b| {
                b.iter_custom(|iters| across_threads(threads, iters, one))
            });
        }
    }
    group.finish();
}

/// Runs `iters` executions spread over `threads` threads and returns the wall time scaled to
/// exactly `iters` executions: the time per execution is the inverse of the throughput.
fn across_threads(threads: u64, iters: u64, one: &(dyn Fn() + Sync)) -> Duration {
    let per_thread = iters.div_ceil(threads);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    one();
                }
            });
        }
    });
    let ran = (per_thread * threads) as f64;
    Duration::from_secs_f64(started.elapsed().as_secs_f64() * iters as f64 / ran)
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
    let pool = WarmPool::new(&sandbox, &module, PoolConfig::default()).unwrap();
    group.bench_function("wasmcage_warm_pool", |b| {
        b.iter(|| black_box(pool.run_command(CommandInput::default()).unwrap()))
    });
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

criterion_group!(benches, call, command, throughput);
criterion_main!(benches);
