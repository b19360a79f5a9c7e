//! Installing a subscriber, for binaries: human or JSON output, a `RUST_LOG`-style filter,
//! and an optional OTLP/HTTP exporter. Libraries never call this; they only emit.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Human,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Where spans are exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpConfig {
    /// The collector's traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub endpoint: String,
    /// `service.name` (default `wasmcage`).
    pub service_name: String,
    /// `service.version` (default this crate's version).
    pub service_version: String,
    /// `deployment.environment` (default `development`).
    pub environment: String,
    /// The share of new traces exported, from 0.0 to 1.0 (default 1.0: all). A span whose
    /// parent came with a `traceparent` follows the parent's sampled flag instead, so a
    /// caller's sampled trace is never cut.
    pub sample_ratio: f64,
}

impl OtlpConfig {
    /// Exports to `endpoint` with the default resource attributes.
    pub fn new(endpoint: impl Into<String>) -> Self {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: "wasmcage".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
            environment: "development".into(),
            sample_ratio: 1.0,
        }
    }
}

/// What [`init`] installs.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Human or JSON output (on stderr).
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,wasmcage=debug` (default `info`). The
    /// `RUST_LOG` environment variable, when set, wins.
    pub filter: String,
    /// Export spans over OTLP when set.
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            format: LogFormat::Human,
            filter: "info".into(),
            otlp: None,
        }
    }
}

impl TracingConfig {
    /// Checks a filter directive (such as `info,wasmcage=debug`) without installing anything.
    pub fn check_filter(filter: &str) -> Result<(), String> {
        EnvFilter::try_new(filter)
            .map(drop)
            .map_err(|e| format!("{filter:?}: {e}"))
    }
}

/// An error installing tracing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TracingError {
    /// The filter could not be parsed.
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// A global subscriber was already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the exporter alive; dropping it flushes and shuts the exporter down.
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
    filter: Option<FilterHandle>,
}

/// Replaces the installed subscriber's filter while it runs.
type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, Registry>;

impl std::fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingGuard")
            .field("exporting", &self.provider.is_some())
            .finish_non_exhaustive()
    }
}

impl TracingGuard {
    /// Replaces the log filter (an `EnvFilter` directive such as `warn,wasmcage=info`) of the
    /// subscriber [`init`] installed, without dropping a line. `RUST_LOG`, when set, still
    /// wins: the filter stays what it says.
    pub fn set_filter(&self, filter: &str) -> Result<(), TracingError> {
        let Some(handle) = &self.filter else {
            return Ok(());
        };
        if env_filter_override().is_some() {
            return Ok(());
        }
        let env_filter = EnvFilter::try_new(filter).map_err(|e| TracingError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })?;
        handle.reload(env_filter).map_err(|e| TracingError::Filter {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Exports every finished span now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Builds an OTLP/HTTP tracer provider with the service's resource attributes.
pub fn otlp_provider(config: &OtlpConfig) -> Result<SdkTracerProvider, TracingError> {
    // The exporter's HTTP client is reqwest. When another part of the program (alerting)
    // enables reqwest's rustls without a built-in crypto provider, the client panics at
    // creation unless a process-wide provider is installed; installing one when one already
    // exists fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&config.endpoint)
        .build()
        .map_err(|e| TracingError::Exporter {
            endpoint: config.endpoint.clone(),
            reason: e.to_string(),
        })?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", config.service_version.clone()),
            KeyValue::new("deployment.environment", config.environment.clone()),
        ])
        .build();
    let ratio = if config.sample_ratio.is_finite() {
        config.sample_ratio.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
        opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(ratio),
    ));
    Ok(SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The layers [`init`] installs, for callers that compose their own subscriber (or install
/// one for a single thread in tests): the format layer, the filter, and the OTLP layer.
#[allow(clippy::type_complexity)]
pub fn layers<W>(
    config: &TracingConfig,
    writer: W,
) -> Result<
    (
        Box<dyn Layer<Registry> + Send + Sync>,
        Option<SdkTracerProvider>,
    ),
    TracingError,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let (layer, provider, _) = reloadable_layers(config, writer)?;
    Ok((layer, provider))
}

/// `RUST_LOG`, when it is set and not empty.
fn env_filter_override() -> Option<String> {
    std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty())
}

/// [`layers`], with a handle on the filter to change it later.
#[allow(clippy::type_complexity)]
fn reloadable_layers<W>(
    config: &TracingConfig,
    writer: W,
) -> Result<
    (
        Box<dyn Layer<Registry> + Send + Sync>,
        Option<SdkTracerProvider>,
        FilterHandle,
    ),
    TracingError,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = env_filter_override().unwrap_or_else(|| config.filter.clone());
    let env_filter = EnvFilter::try_new(&filter).map_err(|e| TracingError::Filter {
        filter: filter.clone(),
        reason: e.to_string(),
    })?;
    let (env_filter, handle) = tracing_subscriber::reload::Layer::new(env_filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Human => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json().with_current_span(true).with_span_list(false)),
    };
    let (otel, provider) = match &config.otlp {
        None => (None, None),
        Some(otlp) => {
            let provider = otlp_provider(otlp)?;
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("wasmcage"));
            (Some(layer), Some(provider))
        }
    };
    let layer = fmt.and_then(otel).with_filter(env_filter);
    Ok((Box::new(layer), provider, handle))
}

/// Installs the global subscriber described by `config`, writing logs to stderr.
pub fn init(config: &TracingConfig) -> Result<TracingGuard, TracingError> {
    let (layer, provider, filter) = reloadable_layers(config, std::io::stderr)?;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|_| TracingError::AlreadyInstalled)?;
    Ok(TracingGuard {
        provider,
        filter: Some(filter),
    })
}
