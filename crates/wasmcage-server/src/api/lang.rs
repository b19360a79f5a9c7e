//! `/v1/execute` and `/v1/sessions`: code in language runtimes (see docs/runtimes.md).
//!
//! A one-shot execution gets a pre-started interpreter of its runtime when its sandbox is
//! the pool's (the server's profile, memory not narrowed), else one started for it; either
//! way the interpreter is used once. A session's interpreter serves that session only, for
//! the key that created it. Each execution and each cell passes admission like `run`.

use std::sync::OnceLock;

use wasmcage::runtime::{Code, RunError, Runtime, SessionError, SessionInfo};
use wasmcage::{LanguageRuntimes, RuntimesConfig, TurnLimits, TurnOutput};

use super::*;

/// The loaded runtimes, set once the background load finishes.
pub(crate) type Loaded = OnceLock<Result<Arc<LanguageRuntimes>, String>>;

/// Loads the configured runtimes on a blocking thread (compiling an interpreter the first
/// time takes seconds), then ends idle sessions every few seconds while the server runs.
pub(crate) async fn load(state: Arc<State>) {
    let config = &state.config.runtimes;
    if !config.enabled {
        let _ = state
            .langs
            .set(Err("language runtimes are disabled on this server".into()));
        return;
    }
    let settings = RuntimesConfig {
        dir: config.dir.clone(),
        only: config.only.clone(),
        pool_size: config.pool_size,
        sessions: wasmcage::runtime::SessionSettings {
            max_per_owner: config.max_sessions_per_key,
            max_total: config.max_sessions,
            idle_expiry: config.session_idle,
        },
        workspace_quota: config.workspace_quota,
    };
    let loading = state.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let base = loading.cage.sandbox().policy().clone();
        LanguageRuntimes::load(&loading.engine, &base, &settings)
    })
    .await;
    let langs = match loaded {
        Ok(langs) => Arc::new(langs),
        Err(e) => {
            let _ = state
                .langs
                .set(Err(format!("loading the runtimes failed: {e}")));
            return;
        }
    };
    for runtime in langs.runtimes() {
        tracing::info!(
            target: "wasmcage::server",
            runtime = runtime.name(),
            language = runtime.language(),
            version = runtime.version(),
            pooled = langs.pool(runtime.name()).is_some(),
            "language runtime loaded"
        );
    }
    for (name, problem) in langs.problems() {
        tracing::warn!(
            target: "wasmcage::server",
            runtime = name.as_str(),
            problem = problem.as_str(),
            "language runtime not loaded"
        );
    }
    let _ = state.langs.set(Ok(langs.clone()));
    let every = (config.session_idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let weak = Arc::downgrade(&langs);
    drop(langs);
    loop {
        tokio::time::sleep(every).await;
        let Some(langs) = weak.upgrade() else { return };
        if state.is_draining() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || langs.sessions().reap()).await;
    }
}

impl State {
    fn langs(&self) -> Result<Arc<LanguageRuntimes>, ApiError> {
        match self.langs.get() {
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "runtimes_loading",
                "the language runtimes are still loading; retry shortly",
            )
            .retry_after(2)),
            Some(Err(why)) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "runtimes_disabled",
                why.clone(),
            )),
            Some(Ok(langs)) => Ok(langs.clone()),
        }
    }
}

fn find(langs: &LanguageRuntimes, language: &str) -> Result<Arc<Runtime>, ApiError> {
    langs.find(language).cloned().ok_or_else(|| {
        let names: Vec<&str> = langs.runtimes().map(|r| r.name()).collect();
        ApiError::bad(
            "unknown_language",
            format!(
                "no runtime for {:?} on this server; it has: {}",
                language.chars().take(64).collect::<String>(),
                if names.is_empty() {
                    "none (install one with `wasmcage runtime fetch python`)".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        )
    })
}

fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::Input(message) => ApiError::bad("bad_input", message),
        RunError::Files(e) => ApiError::storage("cannot write the workspace files", &e),
        RunError::Sandbox(e @ wasmcage::Error::InterpreterStart { .. }) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runtime_unavailable",
            e.to_string(),
        )
        .retry_after(1),
        RunError::Sandbox(wasmcage::Error::InterpreterEnded) => ApiError::new(
            StatusCode::GONE,
            "session_ended",
            "the session's interpreter has ended",
        ),
        RunError::Sandbox(e) => core_error(e),
    }
}

fn session_error(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound(_) => unknown_session(),
        SessionError::Limit(message) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "session_limit", message)
        }
        SessionError::Busy => ApiError::new(
            StatusCode::CONFLICT,
            "session_busy",
            "a cell of this session is running; send the next when it has finished",
        ),
        SessionError::Ended => ApiError::new(
            StatusCode::GONE,
            "session_ended",
            "the session's interpreter has ended",
        ),
        SessionError::Run(e) => run_error(e),
    }
}

fn unknown_session() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_session",
        "no such session for this key; create one with POST /v1/sessions",
    )
}

/// The code, stdin and files of a request, checked against the server's limits.
fn code_of(
    state: &State,
    code: String,
    stdin: Option<String>,
    files: BTreeMap<String, String>,
) -> Result<Code, ApiError> {
    let stdin = stdin.unwrap_or_default().into_bytes();
    if stdin.len() as u64 > state.config.max_stdin_bytes {
        return Err(stdin_too_large(state.config.max_stdin_bytes));
    }
    if files.len() > wasmcage::runtime::MAX_FILES {
        return Err(ApiError::bad(
            "bad_input",
            format!(
                "at most {} files may be given",
                wasmcage::runtime::MAX_FILES
            ),
        ));
    }
    let mut out = Vec::with_capacity(files.len());
    for (name, contents) in files {
        wasmcage::runtime::check_file_name(&name).map_err(run_error)?;
        out.push((name, contents.into_bytes()));
    }
    Ok(Code {
        code,
        stdin,
        files: out,
    })
}

/// A turn's fuel and timeout: the request's, else the runtime's defaults, never past the
/// profile's and the server's ceiling.
fn turn_limits(
    state: &State,
    runtime: &Runtime,
    profile: Option<&str>,
    asked: Option<&RequestLimits>,
) -> Result<TurnLimits, ApiError> {
    let ceiling = request_policy(&state.config, profile, None, &BTreeMap::new())?.limits;
    let own = runtime.limits(&ceiling);
    let fuel = asked
        .and_then(|l| l.fuel)
        .or(runtime.installed().manifest.limits.fuel)
        .or(own.fuel);
    let timeout = asked
        .and_then(|l| l.timeout_ms)
        .map(Duration::from_millis)
        .unwrap_or(own.timeout);
    Ok(TurnLimits {
        fuel: lower_opt(fuel, ceiling.fuel),
        timeout: timeout.min(ceiling.timeout),
    })
}

fn output_json(
    out: &TurnOutput,
    encoding: OutputEncoding,
    runtime: &Runtime,
) -> Result<Json_, ApiError> {
    let encode = |b: &[u8]| encoding.encode(b);
    Ok(json!({
        "exit_code": out.report.exit_code,
        "outcome": out.report.outcome.kind().as_str(),
        "output_encoding": encoding.as_str(),
        "stdout": encode(&out.stdout),
        "stderr": encode(&out.stderr),
        "stdout_truncated": out.report.stdout_truncated,
        "stderr_truncated": out.report.stderr_truncated,
        "runtime": runtime.name(),
        "language": runtime.language(),
        "version": runtime.version(),
        "report": report_json(&out.report)?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecuteRequest {
    language: String,
    code: String,
    stdin: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    limits: Option<RequestLimits>,
    profile: Option<String>,
    #[serde(default)]
    output: OutputEncoding,
}

/// `POST /v1/execute`: one-shot code in a runtime.
pub(crate) async fn execute(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Extension(CallerTrace(trace)): Extension<CallerTrace>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Json(req) = body?;
    limited(&state, async {
        let langs = state.langs()?;
        let runtime = find(&langs, &req.language)?;
        let code = code_of(&state, req.code, req.stdin, req.files)?;
        let policy = request_policy(
            &state.config,
            req.profile.as_deref(),
            req.limits.as_ref(),
            &BTreeMap::new(),
        )?;
        let limits = turn_limits(
            &state,
            &runtime,
            req.profile.as_deref(),
            req.limits.as_ref(),
        )?;
        let admitted = state
            .admission
            .admit(&who, policy.limits.memory_bytes)
            .await?;
        let running = runtime.clone();
        let (out, warm) = tokio::task::spawn_blocking(move || {
            let _admitted = admitted;
            langs.execute(&running, &policy, &code, limits, trace)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the execution thread failed: {e}")))?
        .map_err(run_error)?;
        let mut body = output_json(&out, req.output, &runtime)?;
        body["warm"] = json!(warm);
        Ok(Json(body))
    })
    .await
}

/// A session as callers see it: its id carries this replica's id (see [`session_ref`]).
fn session_json(state: &State, info: &SessionInfo) -> Json_ {
    json!({
        "id": format!("{}.{}", state.config.replica_id, info.id),
        "runtime": info.runtime,
        "language": info.language,
        "created_at": wasmcage::alert::rfc3339(info.created),
        "last_used_at": wasmcage::alert::rfc3339(info.last_used),
        "expires_at": wasmcage::alert::rfc3339(info.expires),
        "cells": info.cells,
    })
}

/// A session id is `<replica id>.<32 lowercase hex digits>`; anything else is not one (404
/// `unknown_session`). One that names another replica is a 421 `wrong_replica` naming it,
/// so that a client or a router can send the request there. Returns the id this replica's
/// session table knows.
fn session_ref<'a>(state: &State, id: &'a str) -> Result<&'a str, ApiError> {
    let (replica, local) = crate::replica::split_session_id(id).ok_or_else(unknown_session)?;
    if replica != state.config.replica_id {
        return Err(wrong_replica(&state.config.replica_id, replica));
    }
    Ok(local)
}

fn wrong_replica(here: &str, owner: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "wrong_replica",
        format!(
            "this is replica {here}; the session is held by replica {owner}: send the request \
             there (sessions live in one replica's memory)"
        ),
    );
    e.replica = Some(owner.to_owned());
    e
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    language: String,
    limits: Option<RequestLimits>,
    profile: Option<String>,
}

/// `POST /v1/sessions`: a session of a runtime for the caller's key.
pub(crate) async fn create_session(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    body: Result<Json<CreateSession>, JsonRejection>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let Json(req) = body?;
    limited(&state, async {
        let langs = state.langs()?;
        let runtime = find(&langs, &req.language)?;
        if runtime.driver().is_none() {
            return Err(ApiError::bad(
                "bad_input",
                format!(
                    "runtime {} has no driver and cannot run sessions",
                    runtime.name()
                ),
            ));
        }
        let policy = request_policy(
            &state.config,
            req.profile.as_deref(),
            req.limits.as_ref(),
            &BTreeMap::new(),
        )?;
        let owner = owner_of(&who);
        // Starting an interpreter costs what an execution does: it is admitted like one.
        let admitted = state
            .admission
            .admit(&who, policy.limits.memory_bytes)
            .await?;
        let info = tokio::task::spawn_blocking(move || {
            let _admitted = admitted;
            langs.create_session(&owner, &runtime, &policy)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the session thread failed: {e}")))?
        .map_err(session_error)?;
        Ok((StatusCode::CREATED, Json(session_json(&state, &info))))
    })
    .await
}

/// `GET /v1/sessions`: the caller's sessions.
pub(crate) async fn list_sessions(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
) -> Result<Json<Json_>, ApiError> {
    let langs = state.langs()?;
    let mut sessions = langs.sessions().list(&owner_of(&who));
    sessions.sort_by_key(|s| s.created);
    let list: Vec<Json_> = sessions.iter().map(|s| session_json(&state, s)).collect();
    Ok(Json(json!({ "sessions": list })))
}

/// `GET /v1/sessions/{id}`.
pub(crate) async fn describe_session(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let id = session_ref(&state, &id)?;
    let langs = state.langs()?;
    let info = langs
        .sessions()
        .get(&owner_of(&who), id)
        .map_err(session_error)?;
    Ok(Json(session_json(&state, &info)))
}

/// `DELETE /v1/sessions/{id}`.
pub(crate) async fn delete_session(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = session_ref(&state, &id)?.to_owned();
    let langs = state.langs()?;
    let owner = owner_of(&who);
    tokio::task::spawn_blocking(move || langs.sessions().delete(&owner, &id))
        .await
        .map_err(|e| ApiError::internal(format!("the session thread failed: {e}")))?
        .map_err(session_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CellRequest {
    code: String,
    stdin: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    limits: Option<RequestLimits>,
    #[serde(default)]
    output: OutputEncoding,
}

/// `POST /v1/sessions/{id}/execute`: one cell.
pub(crate) async fn execute_cell(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Caller(who)): Extension<Caller>,
    Extension(CallerTrace(trace)): Extension<CallerTrace>,
    Path(id): Path<String>,
    body: Result<Json<CellRequest>, JsonRejection>,
) -> Result<Json<Json_>, ApiError> {
    let id = session_ref(&state, &id)?.to_owned();
    let Json(req) = body?;
    if req.limits.as_ref().is_some_and(|l| l.memory.is_some()) {
        return Err(ApiError::bad(
            "bad_limits",
            "a session's memory is set when it is created; a cell may set fuel, timeout_ms and max_output",
        ));
    }
    limited(&state, async {
        let langs = state.langs()?;
        let owner = owner_of(&who);
        let info = langs.sessions().get(&owner, &id).map_err(session_error)?;
        let runtime = find(&langs, &info.runtime)?;
        let code = code_of(&state, req.code, req.stdin, req.files)?;
        let limits = turn_limits(&state, &runtime, None, req.limits.as_ref())?;
        let admitted = state.admission.admit(&who, 0).await?;
        let out = tokio::task::spawn_blocking(move || {
            let _admitted = admitted;
            langs.sessions().execute(&owner, &id, &code, limits, trace)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the cell's thread failed: {e}")))?
        .map_err(session_error)?;
        let mut body = output_json(&out, req.output, &runtime)?;
        body["session_alive"] = json!(out.alive);
        Ok(Json(body))
    })
    .await
}

/// `GET /v1/runtimes`: the loaded runtimes and their pools.
pub(crate) async fn list_runtimes(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
) -> Result<Json<Json_>, ApiError> {
    let langs = state.langs()?;
    let runtimes: Vec<Json_> = langs
        .runtimes()
        .map(|r| {
            let pool = langs.pool(r.name()).map(|p| {
                let s = p.stats();
                json!({"size": s.size, "ready": s.ready, "warm": s.warm, "cold": s.cold})
            });
            json!({
                "name": r.name(),
                "language": r.language(),
                "version": r.version(),
                "sessions": r.driver().is_some(),
                "pool": pool,
            })
        })
        .collect();
    Ok(Json(json!({ "runtimes": runtimes })))
}
