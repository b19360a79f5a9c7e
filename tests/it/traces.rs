//! Tracing: spans exported over OTLP/HTTP to a receiver on 127.0.0.1 that decodes them with
//! the OpenTelemetry protobuf types, and JSON log lines captured and parsed.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message;
use tracing_subscriber::layer::SubscriberExt;
use wasmcage::tracing::{LogFormat, OtlpConfig, TracingConfig, TracingObserver};
use wasmcage::{Engine, EngineConfig, FanOut, Limits, Observer, Sandbox, TraceParent};

use crate::common::tight;

const MODULE: &str = r#"(module (memory 1)
    (func (export "ok") (result i32) i32.const 1)
    (func (export "trap") unreachable)
    (func (export "spin") (loop (br 0))))"#;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Spans received by the fake collector, and the resource attributes they came with.
#[derive(Default)]
struct Received {
    spans: Vec<OtlpSpan>,
    resource: Vec<(String, String)>,
}

async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body)
                    .expect("an OTLP protobuf export request");
                let mut received = sink.lock().unwrap_or_else(PoisonError::into_inner);
                for resource_spans in request.resource_spans {
                    if let Some(resource) = resource_spans.resource {
                        for kv in resource.attributes {
                            received
                                .resource
                                .push((kv.key, text(kv.value.and_then(|v| v.value))));
                        }
                    }
                    for scope in resource_spans.scope_spans {
                        received.spans.extend(scope.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

fn text(value: Option<Any>) -> String {
    match value {
        Some(Any::StringValue(s)) => s,
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &OtlpSpan, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.clone().and_then(|v| v.value)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_and_continue_the_callers_trace() {
    let (addr, received) = receiver().await;
    let provider =
        wasmcage::tracing::otlp_provider(&OtlpConfig::new(format!("http://{addr}/v1/traces")))
            .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("wasmcage")));
    // Executions below run on this thread, so a thread-local subscriber sees them all.
    let _default = tracing::subscriber::set_default(subscriber);

    let engine =
        Engine::with_observer(EngineConfig::default(), Arc::new(TracingObserver::new())).unwrap();
    let module = engine.compile("traced.wat", MODULE.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let parent: TraceParent = TRACEPARENT.parse().unwrap();
    let ok = sandbox
        .call_traced(&module, "ok", &[], Some(parent))
        .unwrap();
    assert_eq!(
        ok.report.trace_id.as_deref(),
        Some("0af7651916cd43dd8448eb211c80319c")
    );
    let trapped = sandbox.call(&module, "trap", &[]).unwrap();
    assert_eq!(trapped.report.trace_id, None);

    let flush = provider.clone();
    tokio::task::spawn_blocking(move || flush.force_flush().unwrap())
        .await
        .unwrap();
    let received = received.lock().unwrap_or_else(PoisonError::into_inner);

    let named = |name: &str| {
        received
            .spans
            .iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    };
    assert_eq!(named("wasmcage.compile").len(), 1);
    let executes = named("wasmcage.execute");
    assert_eq!(executes.len(), 2, "one span per execution");
    let traced = executes
        .iter()
        .find(|s| attribute(s, "execution_id") == Some(ok.report.execution_id.0.to_string()))
        .expect("the traced execution's span");
    assert_eq!(
        traced.trace_id,
        parent.trace_id.to_vec(),
        "the caller's trace continues"
    );
    assert_eq!(
        traced.parent_span_id,
        parent.parent_id.to_vec(),
        "the caller's span is the parent"
    );
    assert_eq!(attribute(traced, "module").as_deref(), Some("traced.wat"));
    assert_eq!(attribute(traced, "entry").as_deref(), Some("ok"));
    assert_eq!(attribute(traced, "outcome").as_deref(), Some("completed"));
    assert_eq!(
        attribute(traced, "sandbox_id"),
        Some(sandbox.id().0.to_string())
    );
    assert!(attribute(traced, "fuel_consumed").is_some());
    assert!(attribute(traced, "module.hash").unwrap().len() == 64);

    let trap_span = executes
        .iter()
        .find(|s| attribute(s, "outcome").as_deref() == Some("trap"))
        .unwrap();
    assert_eq!(attribute(trap_span, "trap").as_deref(), Some("unreachable"));
    assert_ne!(
        trap_span.trace_id,
        parent.trace_id.to_vec(),
        "an untraced execution starts its own trace"
    );

    let instantiates = named("wasmcage.instantiate");
    assert_eq!(instantiates.len(), 2);
    let child = instantiates
        .iter()
        .find(|s| s.trace_id == traced.trace_id)
        .expect("instantiate span in the trace");
    assert_eq!(
        child.parent_span_id, traced.span_id,
        "instantiate is a child of execute"
    );

    let resource: Vec<&str> = received.resource.iter().map(|(k, _)| k.as_str()).collect();
    for key in ["service.name", "service.version", "deployment.environment"] {
        assert!(
            resource.contains(&key),
            "{key} missing from the resource: {resource:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_ratio_of_zero_drops_new_traces_but_keeps_a_callers_sampled_one() {
    let (addr, received) = receiver().await;
    let mut config = OtlpConfig::new(format!("http://{addr}/v1/traces"));
    config.sample_ratio = 0.0;
    let provider = wasmcage::tracing::otlp_provider(&config).unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("wasmcage")));
    let _default = tracing::subscriber::set_default(subscriber);

    let engine =
        Engine::with_observer(EngineConfig::default(), Arc::new(TracingObserver::new())).unwrap();
    let module = engine.compile("sampled.wat", MODULE.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    let parent: TraceParent = TRACEPARENT.parse().unwrap();
    for _ in 0..5 {
        sandbox.call(&module, "ok", &[]).unwrap();
    }
    sandbox
        .call_traced(&module, "ok", &[], Some(parent))
        .unwrap();

    let flush = provider.clone();
    tokio::task::spawn_blocking(move || flush.force_flush().unwrap())
        .await
        .unwrap();
    let received = received.lock().unwrap_or_else(PoisonError::into_inner);
    let executes: Vec<&OtlpSpan> = received
        .spans
        .iter()
        .filter(|s| s.name == "wasmcage.execute")
        .collect();
    assert_eq!(
        executes.len(),
        1,
        "only the caller's sampled trace is exported"
    );
    assert_eq!(executes[0].trace_id, parent.trace_id.to_vec());
}

/// A `MakeWriter` that keeps every line written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn json_logs_carry_execution_and_security_events() {
    let captured = Captured::default();
    let config = TracingConfig {
        format: LogFormat::Json,
        filter: "debug".into(),
        otlp: None,
    };
    let (layer, _) = wasmcage::tracing::layers(&config, captured.clone()).unwrap();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let observer: Arc<dyn Observer> = Arc::new(FanOut::new(vec![Arc::new(TracingObserver::new())]));
    let engine = Engine::with_observer(EngineConfig::default(), observer).unwrap();
    let module = engine.compile("logged.wat", MODULE.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine)
        .limits(Limits {
            fuel: Some(5_000),
            ..tight()
        })
        .build()
        .unwrap();
    let ok = sandbox.call(&module, "ok", &[]).unwrap();
    let spun = sandbox.call(&module, "spin", &[]).unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finished: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["event"] == "execution_finished")
        .collect();
    assert_eq!(finished.len(), 2);
    let first = &finished[0];
    assert_eq!(
        first["level"], "DEBUG",
        "a completed execution is quiet at info"
    );
    assert_eq!(first["target"], "wasmcage::execution");
    let fields = &first["fields"];
    assert_eq!(fields["execution_id"], ok.report.execution_id.0);
    assert_eq!(fields["module"], "logged.wat");
    assert_eq!(fields["outcome"], "completed");
    assert_eq!(fields["entry"], "ok");
    assert!(fields["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(fields["fuel_consumed"].as_u64().unwrap() > 0);
    assert_eq!(
        finished[1]["level"], "INFO",
        "a limit breach is visible at info"
    );
    assert_eq!(finished[1]["fields"]["outcome"], "out_of_fuel");

    let security: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["event"] == "security")
        .collect();
    assert_eq!(security.len(), 1);
    let fields = &security[0]["fields"];
    assert_eq!(security[0]["target"], "wasmcage::security");
    assert_eq!(fields["kind"], "limit_exceeded");
    assert_eq!(fields["capability"], "fuel");
    assert_eq!(fields["action"], "terminated");
    assert_eq!(fields["target"], "5000 fuel");
    assert_eq!(fields["execution_id"], spun.report.execution_id.0);

    let resource = lines
        .iter()
        .find(|l| l["fields"]["event"] == "resource_usage")
        .unwrap();
    assert_eq!(resource["fields"]["resource"], "memory");
    assert_eq!(resource["fields"]["usage"], 65536);
    assert!(resource["fields"]["percent"].as_f64().unwrap() > 0.0);
}

/// A module name and a path a guest asks for are chosen by callers and guests: in the human
/// format, a newline in either must not start a line of its own (a forged log line).
#[test]
fn human_logs_escape_names_and_paths_a_caller_or_guest_chose() {
    let captured = Captured::default();
    let config = TracingConfig {
        format: LogFormat::Human,
        filter: "debug".into(),
        otlp: None,
    };
    let (layer, _) = wasmcage::tracing::layers(&config, captured.clone()).unwrap();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let engine =
        Engine::with_observer(EngineConfig::default(), Arc::new(TracingObserver::new())).unwrap();
    // A guest that asks for a path holding a newline and a forged line; it is refused (no
    // directory is granted) and the refusal is logged with the path.
    let evil = "x\nFORGED INFO wasmcage::access: key_id=admin\u{1b}[31m";
    let wat = format!(
        r#"(module
          (import "wasi_snapshot_preview1" "path_open"
            (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (data (i32.const 64) "{}")
          (func (export "_start")
            (drop (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const {})
              (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 32)))
            unreachable))"#,
        evil.replace('\n', "\\0a").replace('\u{1b}', "\\1b"),
        evil.len()
    );
    let module = engine.compile(evil, wat.as_bytes()).unwrap();
    let sandbox = Sandbox::builder(&engine).limits(tight()).build().unwrap();
    sandbox
        .run_command(&module, wasmcage::CommandInput::default())
        .unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("module="), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{text}"
    );
    assert!(!text.contains('\u{1b}'), "a raw escape byte:\n{text}");
}
