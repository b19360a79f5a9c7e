//! Warm pools: isolation between executions, exhaustion as configured, concurrency.

use std::sync::Arc;
use std::time::Duration;

use wasmcage::events::{PoolEventKind, RecordedEvent};
use wasmcage::{Error, Limits, OnExhausted, Outcome, PoolConfig, Sandbox, Value, WarmPool};

use crate::common::{recorded_engine, sandbox, tight, wat};

const BUMP: &str = r#"(module (memory 1) (global $g (mut i32) (i32.const 0))
    (func (export "bump") (result i32)
      (global.set $g (i32.add (global.get $g) (i32.const 1)))
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
      (i32.add (global.get $g) (i32.load (i32.const 0)))))"#;

const SPIN: &str = r#"(module (func (export "spin") (loop (br 0))))"#;

fn pool(limits: Limits, module: &str, config: PoolConfig) -> WarmPool {
    WarmPool::new(&sandbox(limits), &wat(module), config).unwrap()
}

#[test]
fn memory_writes_never_reach_the_next_execution() {
    let pool = pool(
        tight(),
        BUMP,
        PoolConfig {
            min_ready: 2,
            max_in_use: 4,
            ..PoolConfig::default()
        },
    );
    for _ in 0..20 {
        assert_eq!(pool.call("bump", &[]).unwrap().results, vec![Value::I32(2)]);
    }
    let stats = pool.stats();
    assert_eq!(
        stats.hits, 20,
        "each execution found a ready instance: {stats:?}"
    );
    assert_eq!(stats.misses, 0);
    assert_eq!(stats.available, 2);
    assert_eq!(stats.in_use, 0);
}

/// Starts a spinning execution on another thread and waits until it holds its slot.
fn occupy(pool: &WarmPool) -> std::thread::JoinHandle<Outcome> {
    let busy = pool.clone();
    let handle = std::thread::spawn(move || busy.call("spin", &[]).unwrap().report.outcome);
    while pool.stats().in_use == 0 {
        std::thread::yield_now();
    }
    handle
}

#[test]
fn an_exhausted_pool_that_fails_refuses_at_once() {
    let limits = Limits {
        fuel: None,
        timeout: Duration::from_millis(300),
        ..tight()
    };
    let pool = pool(
        limits,
        SPIN,
        PoolConfig {
            min_ready: 1,
            max_in_use: 1,
            on_exhausted: OnExhausted::Fail,
        },
    );
    let busy = occupy(&pool);
    match pool.call("spin", &[]) {
        Err(Error::PoolExhausted { max: 1, .. }) => {}
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert_eq!(busy.join().unwrap(), Outcome::Timeout);
    assert_eq!(pool.stats().exhausted, 1);
}

#[test]
fn an_exhausted_pool_that_waits_serves_when_a_slot_frees() {
    let (engine, recorder) = recorded_engine();
    let limits = Limits {
        fuel: None,
        timeout: Duration::from_millis(200),
        ..tight()
    };
    let sandbox = Sandbox::builder(&engine).limits(limits).build().unwrap();
    let module = engine.compile("spin.wat", SPIN.as_bytes()).unwrap();
    let config = PoolConfig {
        min_ready: 1,
        max_in_use: 1,
        on_exhausted: OnExhausted::Wait(Duration::from_secs(30)),
    };
    let pool = WarmPool::new(&sandbox, &module, config).unwrap();
    let busy = occupy(&pool);
    // This one waits for the first to time out, then runs (and times out) itself.
    assert_eq!(
        pool.call("spin", &[]).unwrap().report.outcome,
        Outcome::Timeout
    );
    assert_eq!(busy.join().unwrap(), Outcome::Timeout);
    let exhausted: Vec<bool> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RecordedEvent::Pool(p) => match p.kind {
                PoolEventKind::Exhausted { refused } => Some(refused),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(exhausted, [false]);
}

#[test]
fn a_pool_of_size_zero_refuses_everything() {
    let pool = pool(
        tight(),
        BUMP,
        PoolConfig {
            min_ready: 0,
            max_in_use: 0,
            on_exhausted: OnExhausted::Fail,
        },
    );
    assert!(matches!(
        pool.call("bump", &[]),
        Err(Error::PoolExhausted { .. })
    ));
}

#[test]
fn min_ready_above_max_in_use_is_refused() {
    let err = WarmPool::new(
        &sandbox(tight()),
        &wat(BUMP),
        PoolConfig {
            min_ready: 5,
            max_in_use: 2,
            ..PoolConfig::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn pool_events_report_assignments_and_prewarm() {
    let (engine, recorder) = recorded_engine();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let module = engine.compile("bump.wat", BUMP.as_bytes()).unwrap();
    let pool = WarmPool::new(
        &sandbox,
        &module,
        PoolConfig {
            min_ready: 1,
            max_in_use: 2,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    pool.call("bump", &[]).unwrap();
    let kinds: Vec<PoolEventKind> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RecordedEvent::Pool(p) => Some(p.kind),
            _ => None,
        })
        .collect();
    assert!(
        matches!(kinds[0], PoolEventKind::Prewarmed { instances: 1, .. }),
        "{kinds:?}"
    );
    assert!(
        matches!(kinds[1], PoolEventKind::Assigned { warm: true, .. }),
        "{kinds:?}"
    );
    assert!(matches!(kinds[2], PoolEventKind::Released), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_over_a_pool_of_eight() {
    let module = r#"(module (memory 1)
        (func (export "work") (param i32) (result i32)
          (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (local.get 0)))
          (i32.load (i32.const 0))))"#;
    let config = PoolConfig {
        min_ready: 8,
        max_in_use: 8,
        on_exhausted: OnExhausted::Wait(Duration::from_secs(60)),
    };
    let pool = Arc::new(pool(tight(), module, config));
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.call_async("work", &[Value::I32(i)]).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        // A fresh instance starts from zeroed memory, so each sees only its own input.
        assert_eq!(out.results, vec![Value::I32(i as i32)]);
    }
    let stats = pool.stats();
    assert_eq!(stats.hits + stats.misses, 64);
    assert_eq!(stats.in_use, 0);
}

#[test]
fn the_pool_tops_itself_back_up_after_each_execution() {
    let pool = pool(
        tight(),
        BUMP,
        PoolConfig {
            min_ready: 3,
            max_in_use: 4,
            ..PoolConfig::default()
        },
    );
    for _ in 0..5 {
        assert_eq!(pool.call("bump", &[]).unwrap().results, vec![Value::I32(2)]);
        assert_eq!(pool.stats().available, 3);
    }
    assert_eq!(pool.stats().hits, 5);
}
