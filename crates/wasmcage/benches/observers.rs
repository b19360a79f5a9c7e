//! What observing costs: one execution with no observer, with Prometheus metrics, and the
//! metrics observer's own cost for the events of one execution, in the same run.

// criterion_group! generates public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmcage::events::{Event, InstantiateEvent, Observer, RecordedEvent, RecordingObserver};
use wasmcage::metrics::{Metrics, MetricsConfig};
use wasmcage::{Engine, EngineConfig, Sandbox, Value};

const ADD: &str = r#"(module (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1))))"#;

fn observers(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe");
    let args = [Value::I32(2), Value::I32(3)];

    let engine = Engine::new(EngineConfig::default()).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    group.bench_function("execution_no_observer", |b| {
        b.iter(|| black_box(sandbox.call(&module, "add", &args).unwrap()))
    });

    let metrics = Arc::new(Metrics::new(MetricsConfig::default()).unwrap());
    let engine = Engine::with_observer(EngineConfig::default(), metrics.clone()).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    group.bench_function("execution_with_metrics", |b| {
        b.iter(|| black_box(sandbox.call(&module, "add", &args).unwrap()))
    });

    // The events one execution produces, replayed into the metrics observer alone.
    let recorder = Arc::new(RecordingObserver::default());
    let engine = Engine::with_observer(EngineConfig::default(), recorder.clone()).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();
    recorder.clear();
    sandbox.call(&module, "add", &args).unwrap();
    let events = recorder.events();
    let created: InstantiateEvent = events
        .iter()
        .find_map(|e| match e {
            RecordedEvent::InstanceCreated(c) => Some(c.clone()),
            _ => None,
        })
        .unwrap();
    let report = recorder.reports().pop().unwrap();
    group.bench_function("metrics_record_one_execution", |b| {
        b.iter(|| {
            metrics.on_event(&Event::InstanceCreated(black_box(&created)));
            metrics.on_event(&Event::InstanceDestroyed {
                module: &report.module,
            });
            metrics.on_event(&Event::ExecutionFinished(black_box(&report)));
        })
    });
    group.finish();
}

/// The tracing observer with no subscriber, with a subscriber at `info` (which filters out
/// the `debug` events of successful executions), and exporting every span over OTLP.
fn tracing_overhead(c: &mut Criterion) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    use wasmcage::tracing::{OtlpConfig, TracingConfig, TracingObserver};

    let mut group = c.benchmark_group("trace");
    let args = [Value::I32(2), Value::I32(3)];
    let engine =
        Engine::with_observer(EngineConfig::default(), Arc::new(TracingObserver::new())).unwrap();
    let module = engine.compile("add.wat", ADD.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).build().unwrap();

    group.bench_function("subscriber_off", |b| {
        b.iter(|| black_box(sandbox.call(&module, "add", &args).unwrap()))
    });

    let config = TracingConfig::default();
    let (layer, _) = wasmcage::tracing::layers(&config, std::io::sink).unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("info_logs", |b| {
            b.iter(|| black_box(sandbox.call(&module, "add", &args).unwrap()))
        });
    });

    // Spans are batched and sent from the exporter's own thread; the endpoint refuses
    // connections, so this measures what exporting costs the execution path.
    let provider =
        wasmcage::tracing::otlp_provider(&OtlpConfig::new("http://127.0.0.1:9/v1/traces")).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("wasmcage")));
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("otlp_export", |b| {
            b.iter(|| black_box(sandbox.call(&module, "add", &args).unwrap()))
        });
    });
    group.finish();
}

criterion_group!(benches, observers, tracing_overhead);
criterion_main!(benches);
