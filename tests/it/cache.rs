//! The module cache: hits in memory, hits on disk across engines, corrupt files recovered,
//! eviction when full.

use std::sync::Arc;

use wasmcage::core::{CacheConfig, CacheStats};
use wasmcage::events::{CacheEventKind, CacheTier, RecordedEvent};
use wasmcage::{Engine, EngineConfig, RecordingObserver, Sandbox, Value};

const ANSWER: &[u8] = br#"(module (func (export "answer") (result i32) i32.const 42))"#;

fn engine_with(cache: CacheConfig) -> (Engine, Arc<RecordingObserver>) {
    let recorder = Arc::new(RecordingObserver::default());
    let config = EngineConfig {
        cache,
        ..EngineConfig::default()
    };
    (
        Engine::with_observer(config, recorder.clone()).unwrap(),
        recorder,
    )
}

fn cache_events(recorder: &RecordingObserver) -> Vec<CacheEventKind> {
    recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RecordedEvent::Cache(c) => Some(c.kind),
            _ => None,
        })
        .collect()
}

fn compiles(recorder: &RecordingObserver) -> usize {
    recorder
        .events()
        .iter()
        .filter(|e| matches!(e, RecordedEvent::ModuleCompiled(_)))
        .count()
}

fn answer(engine: &Engine, name: &str) -> Value {
    let module = engine.compile(name, ANSWER).unwrap();
    Sandbox::builder(engine)
        .build()
        .unwrap()
        .call(&module, "answer", &[])
        .unwrap()
        .results[0]
}

#[test]
fn the_same_bytes_compile_once_per_engine() {
    let (engine, recorder) = engine_with(CacheConfig::default());
    assert_eq!(answer(&engine, "a.wat"), Value::I32(42));
    // Another name for the same bytes is the same module, and keeps its own name.
    let again = engine.compile("b.wat", ANSWER).unwrap();
    assert_eq!(&*again.info().name, "b.wat");
    assert_eq!(compiles(&recorder), 1);
    assert_eq!(
        cache_events(&recorder),
        [CacheEventKind::Miss, CacheEventKind::Hit(CacheTier::Memory)]
    );
    assert_eq!(
        engine.cache_stats(),
        CacheStats {
            entries: 1,
            bytes: again.size_bytes()
        }
    );
}

#[test]
fn a_second_engine_loads_native_code_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        dir: Some(dir.path().to_owned()),
        ..CacheConfig::default()
    };
    let (first, first_events) = engine_with(config.clone());
    assert_eq!(answer(&first, "m.wat"), Value::I32(42));
    assert_eq!(compiles(&first_events), 1);

    // A new engine stands for a new process: empty memory, same directory.
    let (second, second_events) = engine_with(config);
    assert_eq!(answer(&second, "m.wat"), Value::I32(42));
    assert_eq!(compiles(&second_events), 0);
    assert_eq!(
        cache_events(&second_events),
        [CacheEventKind::Hit(CacheTier::Disk)]
    );
}

#[test]
fn corrupt_or_foreign_cache_files_are_discarded_and_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        dir: Some(dir.path().to_owned()),
        ..CacheConfig::default()
    };
    let (first, _) = engine_with(config.clone());
    answer(&first, "m.wat");
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("a cache file was written");
    let good = std::fs::read(&file).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    let foreign = b"WCAGE001 definitely not native code".to_vec();
    for bad in [
        flipped,
        good[..good.len() / 2].to_vec(),
        foreign,
        Vec::new(),
    ] {
        std::fs::write(&file, &bad).unwrap();
        let (engine, events) = engine_with(config.clone());
        assert_eq!(answer(&engine, "m.wat"), Value::I32(42));
        assert_eq!(compiles(&events), 1, "the module was recompiled");
        assert_eq!(
            cache_events(&events),
            [CacheEventKind::Discarded, CacheEventKind::Miss]
        );
        // The recompiled module was written back and is good again.
        assert_eq!(std::fs::read(&file).unwrap().len(), good.len());
    }
}

#[test]
fn the_least_recently_used_module_is_evicted_when_full() {
    let (engine, recorder) = engine_with(CacheConfig {
        max_entries: 2,
        ..CacheConfig::default()
    });
    let module = |n: i32| format!(r#"(module (func (export "f") (result i32) i32.const {n}))"#);
    engine.compile("one", module(1).as_bytes()).unwrap();
    engine.compile("two", module(2).as_bytes()).unwrap();
    engine.compile("one", module(1).as_bytes()).unwrap(); // `one` is now the most recent
    engine.compile("three", module(3).as_bytes()).unwrap(); // evicts `two`
    let evicted: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RecordedEvent::Cache(c) if c.kind == CacheEventKind::Evicted => {
                Some(c.module.name.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(evicted, ["two"]);
    assert_eq!(engine.cache_stats().entries, 2);
    engine.compile("two", module(2).as_bytes()).unwrap();
    assert_eq!(
        compiles(&recorder),
        4,
        "two was compiled again after eviction"
    );
}
