//! The `/v1` API: state, routes, handlers, errors and authentication.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use subtle::ConstantTimeEq;
use wasmcage::health::{HealthConfig, HealthMonitor};
use wasmcage::health_checks::CanaryCheck;
use wasmcage::metrics::{Metrics, MetricsConfig};
use wasmcage::monitoring::{self, Monitoring};
use wasmcage::{
    CommandInput, Engine, EngineConfig, Limits, Module, Policy, PoolConfig, Profile, Sandbox, Value,
};

use crate::{ServerConfig, ServerError};

/// Token buckets per API key.
struct RateLimiter {
    limit: crate::config::RateLimit,
    buckets: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    /// Takes a token for `who`, or says how long until one is free.
    fn take(&self, who: &str) -> Result<(), Duration> {
        let now = std::time::Instant::now();
        let burst = f64::from(self.limit.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.limit.per_second).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - *tokens) / self.limit.per_second,
            ))
        }
    }
}

/// Everything the handlers share.
pub(crate) struct State {
    limiter: Option<RateLimiter>,
    config: ServerConfig,
    engine: Engine,
    modules: RwLock<HashMap<String, Module>>,
    module_dir: PathBuf,
    pub(crate) health: Arc<HealthMonitor>,
    metrics: Arc<Metrics>,
}

impl State {
    pub(crate) fn new(config: ServerConfig) -> Result<Self, ServerError> {
        let module_dir = config.data_dir.join("modules");
        std::fs::create_dir_all(&module_dir).map_err(|e| {
            ServerError::Start(format!("cannot create {}: {e}", module_dir.display()))
        })?;
        let metrics = Arc::new(
            Metrics::new(MetricsConfig::default())
                .map_err(|e| ServerError::Start(e.to_string()))?,
        );
        let engine_config = EngineConfig {
            cache: wasmcage::core::CacheConfig {
                dir: Some(config.data_dir.join("cache")),
                ..Default::default()
            },
            ..EngineConfig::default()
        };
        let engine = Engine::with_observer(engine_config, metrics.clone())
            .map_err(|e| ServerError::Start(e.to_string()))?;
        let health = Arc::new(HealthMonitor::with_observer(
            HealthConfig::default(),
            metrics.clone(),
        ));
        let canary = CanaryCheck::new(
            &engine,
            PoolConfig {
                min_ready: 1,
                max_in_use: 4,
                ..PoolConfig::default()
            },
        )
        .map_err(|e| ServerError::Start(e.to_string()))?;
        health.register(Arc::new(canary));
        let limiter = config.rate_limit.map(|limit| RateLimiter {
            limit,
            buckets: Default::default(),
        });
        let state = State {
            limiter,
            config,
            engine,
            modules: RwLock::default(),
            module_dir,
            health,
            metrics,
        };
        state.reload();
        Ok(state)
    }

    /// Modules stored by an earlier run of the service are served again.
    fn reload(&self) {
        let Ok(entries) = std::fs::read_dir(&self.module_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let (Some(stem), Ok(bytes)) = (
                path.file_stem().and_then(|s| s.to_str()),
                std::fs::read(&path),
            ) else {
                continue;
            };
            let name = std::fs::read_to_string(path.with_extension("name"))
                .unwrap_or_else(|_| stem.to_owned());
            if let Ok(module) = self.engine.compile(&name, &bytes) {
                self.modules
                    .write()
                    .expect("module map lock")
                    .insert(module.info().hash.to_string(), module);
            }
        }
    }

    fn module(&self, id: &str) -> Result<Module, ApiError> {
        self.modules
            .read()
            .expect("module map lock")
            .get(id)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_module",
                    format!("no module with id {id:?}; upload it with POST /v1/modules"),
                )
            })
    }

    /// A sandbox under the server's (or the requested) profile, with limits clamped to the
    /// server's maxima.
    fn sandbox(
        &self,
        profile: Option<&str>,
        limits: Option<&RequestLimits>,
        env: &BTreeMap<String, String>,
    ) -> Result<Sandbox, ApiError> {
        let profile = match profile {
            None => self.config.profile,
            Some(p) => p
                .parse::<Profile>()
                .map_err(|e| ApiError::bad("bad_profile", e))?,
        };
        let base = Policy::profile(profile);
        let max = &self.config.max_limits;
        let mut l = base.limits.clone();
        if let Some(r) = limits {
            if let Some(fuel) = r.fuel {
                l.fuel = Some(fuel);
            }
            if let Some(m) = &r.memory {
                l.memory_bytes = size(m)
                    .map_err(|e| ApiError::bad("bad_limits", format!("limits.memory: {e}")))?;
            }
            if let Some(ms) = r.timeout_ms {
                l.timeout = Duration::from_millis(ms);
            }
            if let Some(o) = &r.max_output {
                let o = size(o)
                    .map_err(|e| ApiError::bad("bad_limits", format!("limits.max_output: {e}")))?;
                l.max_stdout_bytes = o;
                l.max_stderr_bytes = o;
            }
        }
        // A request can lower every limit, and raise none past the server's maxima.
        let clamped = Limits {
            memory_bytes: l.memory_bytes.min(max.memory_bytes),
            fuel: match (l.fuel, max.fuel) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (None, b) => b,
                (a, None) => a,
            },
            timeout: l.timeout.min(max.timeout),
            max_stdout_bytes: l.max_stdout_bytes.min(max.max_stdout_bytes),
            max_stderr_bytes: l.max_stderr_bytes.min(max.max_stderr_bytes),
            ..l
        };
        let mut builder = base.to_builder().limits(clamped);
        for (key, value) in env {
            if !self.config.allowed_env.contains(key) {
                return Err(ApiError::bad(
                    "env_not_allowed",
                    format!(
                        "the server's policy does not allow setting the environment variable {key:?}"
                    ),
                ));
            }
            builder = builder.env(key, value);
        }
        let policy = builder
            .build()
            .map_err(|e| ApiError::bad("bad_limits", e.to_string()))?;
        Sandbox::builder(&self.engine)
            .policy(policy)
            .build()
            .map_err(|e| ApiError::bad("bad_limits", e.to_string()))
    }
}

fn size(v: &Json_) -> Result<u64, String> {
    match v {
        Json_::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a size")),
        Json_::String(s) => wasmcage::core::policy::parse_size(s),
        other => Err(format!("{other} is not a size")),
    }
}

/// An error answer: a status and `{"error": {"code", "message"}}`.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl ApiError {
    /// A body the extractor refused: too large, or else malformed (`code`).
    fn rejected(status: StatusCode, code: &'static str, text: String) -> Self {
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            code
        };
        ApiError::new(status, code, text)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::rejected(r.status(), "bad_json", r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        ApiError::rejected(r.status(), "bad_body", r.body_text())
    }
}

/// Maps a core error to the answer a client can act on.
fn core_error(e: wasmcage::Error) -> ApiError {
    use wasmcage::Error as E;
    let code = match &e {
        E::InvalidModule { .. } => "invalid_module",
        E::UnsupportedImport { .. } => "unsupported_import",
        E::ExportNotFound { .. } => "unknown_export",
        E::ArgumentMismatch { .. } | E::BadValue { .. } | E::UnsupportedSignature { .. } => {
            "bad_arguments"
        }
        E::NotACommand { .. } => "not_a_command",
        E::PoolExhausted { .. } => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string());
        }
        _ => return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    ApiError::bad(code, e.to_string())
}

pub(crate) fn router(state: Arc<State>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/modules", post(upload).get(list))
        .route("/v1/modules/{id}", get(describe).delete(remove))
        .route("/v1/modules/{id}/invoke", post(invoke))
        .route("/v1/modules/{id}/run", post(run))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state.clone());
    let monitoring = monitoring::router(Monitoring {
        metrics: Some(state.metrics.clone()),
        health: Some(state.health.clone()),
    });
    api.merge(monitoring)
        .route(
            "/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API lives under /v1",
            )
        })
}

/// With API keys configured, every `/v1` request needs one, as `Authorization: Bearer <key>`
/// or `X-API-Key: <key>`, compared in constant time.
async fn authenticate(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() {
        return limit_rate(&state, "anonymous", request, next).await;
    }
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let Some(given) = given else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: send Authorization: Bearer <key>",
        )
        .into_response();
    };
    // Compare against every key, without stopping early, so timing says nothing about which.
    let matched = keys.iter().fold(0u8, |acc, key| {
        acc | u8::from(bool::from(key.as_bytes().ct_eq(given.as_bytes())))
    });
    if matched == 1 {
        let who = given.to_owned();
        limit_rate(&state, &who, request, next).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the API key is not valid",
        )
        .into_response()
    }
}

/// Refuses with 429 and `Retry-After` when `who` has used up its requests.
async fn limit_rate(state: &State, who: &str, request: Request, next: Next) -> Response {
    if let Some(Err(wait)) = state.limiter.as_ref().map(|l| l.take(who)) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this API key; retry in {seconds} s"),
        )
        .into_response();
        response.headers_mut().insert("retry-after", seconds.into());
        return response;
    }
    next.run(request).await
}

/// Runs a handler's work under the request timeout.
async fn limited<T>(
    state: &State,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout(state.config.request_timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "request_timeout",
                "the request took longer than the server allows",
            ))
        })
}

fn describe_module(m: &Module) -> Json_ {
    let types = |t: &Option<Vec<wasmcage::ValueType>>| {
        t.as_ref()
            .map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>())
    };
    let exports: Vec<Json_> = m
        .exports()
        .iter()
        .map(|e| json!({"name": e.name, "params": types(&e.params), "results": types(&e.results)}))
        .collect();
    json!({
        "id": m.info().hash.to_string(),
        "name": &*m.info().name,
        "size_bytes": m.size_bytes(),
        "imports_wasi": m.imports_wasi(),
        "exports": exports,
    })
}

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
}

async fn upload(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Query(q): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad(
            "empty_module",
            "the request body must be a WebAssembly module (binary or WAT text)",
        ));
    }
    let name = q.name.unwrap_or_else(|| "module".to_owned());
    let engine = state.engine.clone();
    let module = {
        let (name, body) = (name.clone(), body.clone());
        tokio::task::spawn_blocking(move || engine.compile(&name, &body))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(core_error)?
    };
    let id = module.info().hash.to_string();
    let path = state.module_dir.join(format!("{id}.wasm"));
    std::fs::write(&path, &body)
        .and_then(|()| std::fs::write(path.with_extension("name"), &name))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("cannot store the module: {e}"),
            )
        })?;
    let described = describe_module(&module);
    state
        .modules
        .write()
        .expect("module map lock")
        .insert(id, module);
    Ok((StatusCode::CREATED, Json(described)))
}

async fn list(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Json<Json_> {
    let modules = state.modules.read().expect("module map lock");
    let mut all: Vec<Json_> = modules.values().map(describe_module).collect();
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Json(json!({ "modules": all }))
}

async fn describe(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    Ok(Json(describe_module(&state.module(&id)?)))
}

async fn remove(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.module(&id)?;
    state.modules.write().expect("module map lock").remove(&id);
    let path = state.module_dir.join(format!("{id}.wasm"));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("name"));
    Ok(StatusCode::NO_CONTENT)
}

/// Limits a request may ask for; each is clamped to the server's maximum.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RequestLimits {
    fuel: Option<u64>,
    memory: Option<Json_>,
    timeout_ms: Option<u64>,
    max_output: Option<Json_>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeRequest {
    export: String,
    #[serde(default)]
    args: Vec<Json_>,
    limits: Option<RequestLimits>,
    profile: Option<String>,
}

fn to_json(v: &Value) -> Json_ {
    match *v {
        Value::I32(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) if x.is_finite() => json!(x),
        Value::F64(x) if x.is_finite() => json!(x),
        other => json!(other.to_string()),
    }
}

async fn invoke(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Path(id): Path<String>,
    body: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Json(req) = body?;
    limited(&state, async {
        let module = state.module(&id)?;
        let sandbox = state.sandbox(req.profile.as_deref(), req.limits.as_ref(), &BTreeMap::new())?;
        let export = module
            .exports()
            .into_iter()
            .find(|e| e.name == req.export)
            .ok_or_else(|| core_error(wasmcage::Error::ExportNotFound {
                module: module.info().name.to_string(),
                export: req.export.clone(),
                available: module.exports().into_iter().map(|e| e.name).collect(),
            }))?;
        let params = export.params.unwrap_or_default();
        if params.len() != req.args.len() {
            return Err(ApiError::bad("bad_arguments", format!("export `{}` takes {} argument(s), {} given", req.export, params.len(), req.args.len())));
        }
        let mut args = Vec::with_capacity(params.len());
        for (i, (ty, arg)) in params.iter().zip(&req.args).enumerate() {
            let text = match arg {
                Json_::Number(n) => n.to_string(),
                Json_::String(s) => s.clone(),
                other => return Err(ApiError::bad("bad_arguments", format!("args[{i}]: {other} is not a number"))),
            };
            args.push(Value::parse(&text, *ty).map_err(|e| ApiError::bad("bad_arguments", format!("args[{i}]: {e}")))?);
        }
        let out = sandbox.call_async(&module, &req.export, &args).await.map_err(core_error)?;
        let results: Vec<Json_> = out.results.iter().map(to_json).collect();
        Ok(Json(json!({"results": results, "report": serde_json::to_value(&out.report).expect("a report serialises")})))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    #[serde(default)]
    args: Vec<String>,
    stdin: Option<String>,
    stdin_base64: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    limits: Option<RequestLimits>,
    profile: Option<String>,
}

async fn run(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Path(id): Path<String>,
    body: Result<Json<RunRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Json(req) = body?;
    limited(&state, async {
        let module = state.module(&id)?;
        let stdin = match (req.stdin, req.stdin_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(
                    "bad_stdin",
                    "give stdin or stdin_base64, not both",
                ));
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| {
                    ApiError::bad("bad_stdin", format!("stdin_base64 is not base64: {e}"))
                })?,
            (None, None) => Vec::new(),
        };
        let sandbox = state.sandbox(req.profile.as_deref(), req.limits.as_ref(), &req.env)?;
        let out = sandbox
            .run_command_async(
                &module,
                CommandInput {
                    args: req.args,
                    stdin,
                },
            )
            .await
            .map_err(core_error)?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        Ok(Json(json!({
            "exit_code": out.report.exit_code,
            "stdout": String::from_utf8_lossy(&out.stdout),
            "stderr": String::from_utf8_lossy(&out.stderr),
            "stdout_base64": b64(&out.stdout),
            "stderr_base64": b64(&out.stderr),
            "stdout_truncated": out.report.stdout_truncated,
            "stderr_truncated": out.report.stderr_truncated,
            "report": serde_json::to_value(&out.report).expect("a report serialises"),
        })))
    })
    .await
}
