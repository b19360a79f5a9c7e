//! The Model Context Protocol server: the sandbox as tools for LLM agents (docs/mcp.md).
//!
//! Every tool call becomes one request to the service's own `/v1` router, in process, so an
//! agent gets exactly what an HTTP caller gets: the same validation, limits and ceilings,
//! admission, quotas, ownership of modules and sessions, metrics and logs. Over Streamable
//! HTTP (`/mcp` on `wasmcage serve`) the MCP request itself is authenticated and rate
//! limited like any `/v1` request, and its tool calls run as that key without being charged
//! again; over stdio (`wasmcage mcp`) each tool call carries `WASMCAGE_API_KEY` through the
//! normal authentication.
//!
//! What the guest does is a tool *result*: output, exit code and the execution report, with
//! `isError` when the guest failed (a trap, a limit, a non-zero exit) or the API refused the
//! call (its error code and message). Only a malformed MCP message or an unknown tool is a
//! protocol error.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig as Info,
    Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{self, Caller, Internal};
use crate::{ServerConfig, ServerError};

/// The tools, bound to the `/v1` router they call.
#[derive(Clone)]
pub(crate) struct Tools {
    app: axum::Router,
    config: Arc<crate::Mcp>,
    metrics: Option<Arc<wasmcage::metrics::Metrics>>,
    /// Over stdio: the key every call carries (none when the server has no keys).
    key: Option<Arc<str>>,
}

/// The largest `/v1` answer a tool reads back: far above any output limit plus its report.
const MAX_ANSWER: usize = 64 << 20;

/// Ids and names that reach a URL path: what the API's own ids and names can be, bounded.
fn path_safe(what: &str, s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != ".."
    {
        Ok(())
    } else {
        Err(format!(
            "{what} must be 1 to 128 letters, digits, '-', '_' or '.'"
        ))
    }
}

impl Tools {
    pub(crate) fn new(app: axum::Router, state: &api::State, key: Option<Arc<str>>) -> Self {
        Tools {
            app,
            config: Arc::new(state.config.mcp.clone()),
            metrics: Some(state.metrics.clone()),
            key,
        }
    }

    /// [`Tools::once`], waiting while the language runtimes are still loading (nothing ran;
    /// an agent is better served by a slower first answer than by an error to retry).
    async fn call(
        &self,
        caller: Option<&Caller>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (status, value) = self.once(caller, method.clone(), path, body.clone()).await;
            if status != StatusCode::SERVICE_UNAVAILABLE
                || value["error"]["code"] != "runtimes_loading"
                || tokio::time::Instant::now() >= give_up
            {
                return (status, value);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// One request to the `/v1` router as `caller` (Streamable HTTP) or with the stdio key:
    /// the status and the JSON body (an empty body is `null`).
    async fn once(
        &self,
        caller: Option<&Caller>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = &self.key {
            request = request.header("x-api-key", &**key);
        }
        let body = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let mut request = match request.body(body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    error_body("bad_input", &format!("cannot form the request: {e}")),
                );
            }
        };
        if let Some(caller) = caller {
            request.extensions_mut().insert(Internal(caller.clone()));
        }
        let response =
            match tower_service::Service::call(&mut self.app.clone(), request.map(Body::new)).await
            {
                Ok(r) => r,
                Err(never) => match never {},
            };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let bytes = match axum::body::to_bytes(response.into_body(), MAX_ANSWER).await {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_body("internal", &format!("cannot read the answer: {e}")),
                );
            }
        };
        let mut value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                error_body(
                    "internal",
                    &String::from_utf8_lossy(&bytes[..bytes.len().min(512)]),
                )
            })
        };
        if let (Some(s), Some(error)) = (retry_after, value.get_mut("error")) {
            error["retry_after"] = json!(s);
        }
        (status, value)
    }

    /// The request's `limits`, each lowered to `[mcp.max_limits]` (and set to it when the
    /// agent asked for nothing). `memory` only where the route takes one.
    fn capped(&self, asked: Option<Limits>, memory: bool) -> Result<Option<Value>, String> {
        let asked = asked.unwrap_or_default();
        let cap = &self.config.max_limits;
        let size = |v: &Option<Value>, what: &str| -> Result<Option<u64>, String> {
            match v {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("limits.{what}: {n} is not a size")),
                Some(Value::String(s)) => wasmcage::core::policy::parse_size(s)
                    .map(Some)
                    .map_err(|e| format!("limits.{what}: {e}")),
                Some(other) => Err(format!("limits.{what}: {other} is not a size")),
            }
        };
        let low = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut out = Map::new();
        let put = |out: &mut Map<String, Value>, k: &str, v: Option<u64>| {
            if let Some(v) = v {
                out.insert(k.to_owned(), json!(v));
            }
        };
        put(&mut out, "fuel", low(asked.fuel, cap.fuel));
        let timeout = cap
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        put(&mut out, "timeout_ms", low(asked.timeout_ms, timeout));
        put(
            &mut out,
            "max_output",
            low(size(&asked.max_output, "max_output")?, cap.max_output),
        );
        if memory {
            put(
                &mut out,
                "memory",
                low(size(&asked.memory, "memory")?, cap.memory),
            );
        } else if asked.memory.is_some() {
            return Err(
                "limits.memory: a session's memory is set when it is created; a cell may set fuel, timeout_ms and max_output"
                    .into(),
            );
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }

    fn profile(&self) -> Option<&'static str> {
        self.config.profile.map(|p| p.as_str())
    }

    async fn dispatch(&self, caller: Option<&Caller>, name: &str, args: JsonObject) -> Answer {
        let args = Value::Object(args);
        match name {
            "execute_python" | "execute_javascript" => {
                let language = &name["execute_".len()..];
                let a: CodeArgs = parse(args)?;
                let mut body = json!({
                    "language": language,
                    "code": a.code,
                    "files": a.files,
                });
                set(&mut body, "stdin", a.stdin.map(Value::String));
                set(
                    &mut body,
                    "limits",
                    self.capped(a.limits, true).map_err(bad)?,
                );
                set(&mut body, "profile", self.profile().map(|p| json!(p)));
                self.execution(caller, Method::POST, "/v1/execute", body)
                    .await
            }
            "run_wasm" => {
                let a: RunArgs = parse(args)?;
                let id = self.module_id(caller, &a.module).await?;
                let limits = self.capped(a.limits, true).map_err(bad)?;
                let mut body;
                let path;
                if let Some(export) = a.export {
                    if a.stdin.is_some() {
                        return Err(bad(
                            "stdin is for commands; an export call takes args only".into()
                        ));
                    }
                    body = json!({"export": export, "args": a.args});
                    path = format!("/v1/modules/{id}/invoke");
                } else {
                    let args: Vec<String> = a
                        .args
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect();
                    body = json!({"args": args});
                    set(&mut body, "stdin", a.stdin.map(Value::String));
                    path = format!("/v1/modules/{id}/run");
                }
                set(&mut body, "limits", limits);
                set(&mut body, "profile", self.profile().map(|p| json!(p)));
                self.execution(caller, Method::POST, &path, body).await
            }
            "create_session" => {
                let a: SessionArgs = parse(args)?;
                let mut body = json!({"language": a.language});
                set(
                    &mut body,
                    "limits",
                    self.capped(a.limits, true).map_err(bad)?,
                );
                set(&mut body, "profile", self.profile().map(|p| json!(p)));
                let (status, value) = self
                    .call(caller, Method::POST, "/v1/sessions", Some(body))
                    .await;
                plain(status, value, |v| {
                    format!(
                        "session {} ({}) created; it ends after {} unused",
                        v["id"].as_str().unwrap_or("?"),
                        v["language"].as_str().unwrap_or("?"),
                        v["expires_at"].as_str().unwrap_or("a while"),
                    )
                })
            }
            "execute_in_session" => {
                let a: CellArgs = parse(args)?;
                path_safe("session_id", &a.session_id).map_err(bad)?;
                let mut body = json!({"code": a.code, "files": a.files});
                set(&mut body, "stdin", a.stdin.map(Value::String));
                set(
                    &mut body,
                    "limits",
                    self.capped(a.limits, false).map_err(bad)?,
                );
                let path = format!("/v1/sessions/{}/execute", a.session_id);
                self.execution(caller, Method::POST, &path, body).await
            }
            "close_session" => {
                let a: CloseArgs = parse(args)?;
                path_safe("session_id", &a.session_id).map_err(bad)?;
                let path = format!("/v1/sessions/{}", a.session_id);
                let (status, value) = self.call(caller, Method::DELETE, &path, None).await;
                if !status.is_success() {
                    return Err(api_error(status, &value));
                }
                let id = a.session_id;
                plain(status, json!({"closed": id}), |_| {
                    format!("session {id} closed")
                })
            }
            "list_modules" => {
                let _: Empty = parse(args)?;
                let (status, value) = self.call(caller, Method::GET, "/v1/modules", None).await;
                plain(status, value, |v| {
                    let modules = v["modules"].as_array().cloned().unwrap_or_default();
                    if modules.is_empty() {
                        return "no modules stored for this key".to_owned();
                    }
                    modules
                        .iter()
                        .map(|m| {
                            let exports: Vec<&str> = m["exports"]
                                .as_array()
                                .map(|e| e.iter().filter_map(|x| x["name"].as_str()).collect())
                                .unwrap_or_default();
                            format!(
                                "{} {} ({}; exports: {})",
                                m["id"].as_str().unwrap_or("?"),
                                m["name"].as_str().unwrap_or(""),
                                m["status"].as_str().unwrap_or("?"),
                                exports.join(", ")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                })
            }
            _ => unreachable!("unknown tools are refused before dispatch"),
        }
    }

    /// A module's id from its id (64 hex digits) or its name among the caller's modules.
    async fn module_id(
        &self,
        caller: Option<&Caller>,
        module: &str,
    ) -> Result<String, CallToolResult> {
        if module.len() == 64 && module.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(module.to_ascii_lowercase());
        }
        if module.is_empty() || module.len() > 256 {
            return Err(bad("module must be a module id or name".into()));
        }
        let (status, value) = self.call(caller, Method::GET, "/v1/modules", None).await;
        if !status.is_success() {
            return Err(api_error(status, &value));
        }
        let ids: Vec<&str> = value["modules"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["name"].as_str() == Some(module))
                    .filter_map(|m| m["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        match ids.as_slice() {
            [id] => Ok((*id).to_owned()),
            [] => Err(tool_error(
                "unknown_module",
                &format!("no module named {module:?} for this key; list_modules shows them"),
                None,
            )),
            _ => Err(tool_error(
                "ambiguous_module",
                &format!("{} modules are named {module:?}; give the id", ids.len()),
                None,
            )),
        }
    }

    /// A call that runs a guest: its output and report, `isError` when it failed.
    async fn execution(
        &self,
        caller: Option<&Caller>,
        method: Method,
        path: &str,
        body: Value,
    ) -> Answer {
        let (status, value) = self.call(caller, method, path, Some(body)).await;
        if !status.is_success() {
            return Err(api_error(status, &value));
        }
        let report = &value["report"];
        let outcome = value["outcome"]
            .as_str()
            .or_else(|| report["outcome"].as_str())
            .unwrap_or("unknown")
            .to_owned();
        let exit = value["exit_code"]
            .as_i64()
            .or_else(|| report["exit_code"].as_i64());
        let failed = !(outcome == "completed" || (outcome == "exited" && exit == Some(0)));
        let mut text = format!("outcome: {outcome}");
        if let Some(code) = exit {
            text.push_str(&format!(", exit code {code}"));
        }
        if let Some(results) = value.get("results") {
            text.push_str(&format!("\nresults: {results}"));
        }
        for stream in ["stdout", "stderr"] {
            if let Some(s) = value[stream].as_str() {
                text.push_str(&format!("\n--- {stream} ---\n{s}"));
                if value[format!("{stream}_truncated")].as_bool() == Some(true) {
                    text.push_str("\n[truncated at the output limit]");
                }
            }
        }
        // The trap itself, without the guest's backtrace (the report keeps it).
        if failed
            && let Some(message) = report["message"].as_str()
            && let Some(last) = message.lines().map(str::trim).rfind(|l| !l.is_empty())
        {
            let cause = last.rsplit_once(": wasm trap: ").map_or(last, |(_, t)| t);
            text.push_str(&format!("\n--- {outcome} ---\n{cause}"));
        }
        let mut result = CallToolResult::structured(value);
        result.content = vec![ContentBlock::text(text)];
        result.is_error = Some(failed);
        Ok(result)
    }
}

type Answer = Result<CallToolResult, CallToolResult>;

/// An answer that runs no guest: the API's body, or its error.
fn plain(status: StatusCode, value: Value, text: impl FnOnce(&Value) -> String) -> Answer {
    if !status.is_success() {
        return Err(api_error(status, &value));
    }
    let shown = text(&value);
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(shown)];
    Ok(result)
}

fn set(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        body[key] = v;
    }
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message}})
}

fn tool_error(code: &str, message: &str, status: Option<StatusCode>) -> CallToolResult {
    let mut body = error_body(code, message);
    if let Some(s) = status {
        body["error"]["status"] = json!(s.as_u16());
    }
    let mut result = CallToolResult::structured_error(body);
    result.content = vec![ContentBlock::text(format!("error {code}: {message}"))];
    result
}

/// The API's refusal as a tool error: its code, message, status and `retry_after`.
fn api_error(status: StatusCode, value: &Value) -> CallToolResult {
    let code = value["error"]["code"].as_str().unwrap_or("error");
    let message = value["error"]["message"]
        .as_str()
        .unwrap_or("the call failed");
    let mut result = tool_error(code, message, Some(status));
    if let Some(s) = value["error"]["retry_after"].as_u64() {
        if let Some(body) = result.structured_content.as_mut() {
            body["error"]["retry_after"] = json!(s);
        }
        result.content = vec![ContentBlock::text(format!(
            "error {code}: {message} (retry in {s} s)"
        ))];
    }
    result
}

fn bad(message: String) -> CallToolResult {
    tool_error("bad_input", &message, None)
}

fn parse<T: for<'de> Deserialize<'de>>(args: Value) -> Result<T, CallToolResult> {
    serde_json::from_value(args).map_err(|e| bad(format!("invalid arguments: {e}")))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Limits {
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory: Option<Value>,
    max_output: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeArgs {
    code: String,
    stdin: Option<String>,
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
    limits: Option<Limits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunArgs {
    module: String,
    export: Option<String>,
    #[serde(default)]
    args: Vec<Value>,
    stdin: Option<String>,
    limits: Option<Limits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionArgs {
    language: String,
    limits: Option<Limits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CellArgs {
    session_id: String,
    code: String,
    stdin: Option<String>,
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
    limits: Option<Limits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseArgs {
    session_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("tool schemas are objects"),
    }
}

fn limits_schema(memory: bool) -> Value {
    let mut properties = json!({
        "fuel": {"type": "integer", "minimum": 1, "description": "WebAssembly fuel (about one unit per instruction)"},
        "timeout_ms": {"type": "integer", "minimum": 1, "description": "Wall-clock limit in milliseconds"},
        "max_output": {"type": ["integer", "string"], "description": "Bytes kept of stdout and of stderr each, e.g. 65536 or \"64KiB\""},
    });
    if memory {
        properties["memory"] = json!({"type": ["integer", "string"], "description": "Linear memory limit, e.g. \"64MiB\""});
    }
    json!({
        "type": "object",
        "description": "Limits for this call; each is lowered to what the operator allows",
        "properties": properties,
        "additionalProperties": false,
    })
}

fn code_schema(language: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": format!("The {language} program to run")},
            "stdin": {"type": "string", "description": "Text given to the program on standard input"},
            "files": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Files written to /workspace before the code runs: relative path to text",
            },
            "limits": limits_schema(true),
        },
        "required": ["code"],
        "additionalProperties": false,
    })
}

/// The tools and their input schemas.
pub fn tools() -> Vec<Tool> {
    let mut tools = Vec::new();
    let one_shot = |language: &str| {
        format!(
            "Run {language} code once in a fresh WebAssembly sandbox (no network, no host files; /workspace is writable for this run only) and return its stdout, stderr, exit code and execution report. Print what you want to see."
        )
    };
    tools.push(
        Tool::new(
            "execute_python",
            one_shot("Python 3.12"),
            schema(code_schema("Python")),
        )
        .with_title("Run Python")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
    );
    tools.push(
        Tool::new(
            "execute_javascript",
            one_shot("JavaScript (QuickJS, ES2023)"),
            schema(code_schema("JavaScript")),
        )
        .with_title("Run JavaScript")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
    );
    tools.push(
        Tool::new(
            "run_wasm",
            "Run a stored WebAssembly module: with `export`, call that exported function with `args` (numbers); without, run it as a WASI command with `args` (strings) and `stdin`. `module` is its id or name (see list_modules).",
            schema(json!({
                "type": "object",
                "properties": {
                    "module": {"type": "string", "description": "The module's id (64 hex digits) or name"},
                    "export": {"type": "string", "description": "The exported function to call; omit to run the module as a command"},
                    "args": {"type": "array", "description": "Arguments: numbers for an export, strings for a command"},
                    "stdin": {"type": "string", "description": "Standard input of a command"},
                    "limits": limits_schema(true),
                },
                "required": ["module"],
                "additionalProperties": false,
            })),
        )
        .with_title("Run a WebAssembly module")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
    );
    tools.push(
        Tool::new(
            "create_session",
            "Start a stateful interpreter session: variables, imports and /workspace files persist between execute_in_session calls until close_session or idle expiry. Returns the session id.",
            schema(json!({
                "type": "object",
                "properties": {
                    "language": {"type": "string", "description": "python or javascript"},
                    "limits": limits_schema(true),
                },
                "required": ["language"],
                "additionalProperties": false,
            })),
        )
        .with_title("Start a session")
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).open_world(false)),
    );
    tools.push(
        Tool::new(
            "execute_in_session",
            "Run code in a session created by create_session; state from earlier calls is kept. Returns stdout, stderr, exit code and the report.",
            schema(json!({
                "type": "object",
                "properties": {
                    "session_id": {"type": "string"},
                    "code": {"type": "string"},
                    "stdin": {"type": "string"},
                    "files": {"type": "object", "additionalProperties": {"type": "string"}},
                    "limits": limits_schema(false),
                },
                "required": ["session_id", "code"],
                "additionalProperties": false,
            })),
        )
        .with_title("Run code in a session")
        .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).open_world(false)),
    );
    tools.push(
        Tool::new(
            "close_session",
            "End a session and free its interpreter.",
            schema(json!({
                "type": "object",
                "properties": {"session_id": {"type": "string"}},
                "required": ["session_id"],
                "additionalProperties": false,
            })),
        )
        .with_title("Close a session")
        .with_annotations(
            ToolAnnotations::new()
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
    );
    tools.push(
        Tool::new(
            "list_modules",
            "List the WebAssembly modules stored for this key: id, name, status and exports.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_title("List modules")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
    );
    tools
}

impl ServerHandler for Tools {
    fn get_info(&self) -> Info {
        Info::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wasmcage", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "wasmcage runs untrusted code in WebAssembly sandboxes. Use execute_python or execute_javascript for one-off code, create_session + execute_in_session for state across calls (close_session when done), run_wasm for stored modules. Results carry stdout, stderr, the exit code and an execution report; isError is set when the code failed or hit a limit.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name: Cow<'static, str> = request.name;
        if !tools().iter().any(|t| t.name == name) {
            return Err(ErrorData::invalid_params(
                format!(
                    "no tool named {:?}; tools/list names them",
                    name.chars().take(64).collect::<String>()
                ),
                None,
            ));
        }
        // Over HTTP, the key the `/mcp` request was authenticated with.
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned();
        let args = request.arguments.unwrap_or_default();
        let (result, outcome) = match self.dispatch(caller.as_ref(), &name, args).await {
            Ok(r) if r.is_error == Some(true) => (r, "guest_error"),
            Ok(r) => (r, "ok"),
            Err(r) => (r, "refused"),
        };
        if let Some(metrics) = &self.metrics {
            let transport = if caller.is_some() { "http" } else { "stdio" };
            metrics.record_mcp_tool_call(&name, transport, outcome);
        }
        Ok(result.into())
    }
}

/// `/mcp`: Streamable HTTP, stateless (any replica can answer any message), JSON answers.
pub(crate) fn http_service(
    tools: Tools,
    config: &ServerConfig,
) -> StreamableHttpService<Tools, NeverSessionManager> {
    let hosts = if !config.mcp.allowed_hosts.is_empty() {
        config.mcp.allowed_hosts.clone()
    } else if config.listen.ip().is_loopback() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        // Beyond loopback API keys are required, which DNS rebinding cannot supply.
        Vec::new()
    };
    let mut http = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_max_request_body_bytes(config.max_body_bytes);
    http.legacy_session_mode = false;
    http.json_response = true;
    http.sse_keep_alive = None;
    StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(NeverSessionManager::default()),
        http,
    )
}

/// `wasmcage mcp`: the MCP server over stdin and stdout, on a service built from `config`
/// that listens nowhere. `key` is the API key its calls carry (required when the
/// configuration has keys). Returns when the client closes stdin.
pub async fn serve_stdio(config: ServerConfig, key: Option<String>) -> Result<(), ServerError> {
    config.validate()?;
    if !config.api_keys.is_empty() {
        let Some(given) = &key else {
            return Err(ServerError::Config(
                "this configuration has api_keys: set WASMCAGE_API_KEY to the key the MCP server acts as".into(),
            ));
        };
        if !config.api_keys.iter().any(|k| k == given) {
            return Err(ServerError::Config(
                "WASMCAGE_API_KEY is not one of the configuration's api_keys".into(),
            ));
        }
    }
    let state = Arc::new(api::State::new(config.clone()).await?);
    tokio::spawn(api::load_runtimes(state.clone()));
    let app = api::router(state.clone());
    let key = if config.api_keys.is_empty() {
        None
    } else {
        key.map(Arc::from)
    };
    let tools = Tools::new(app, &state, key);
    let running = tools
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServerError::Start(format!("MCP over stdio: {e}")))?;
    let _ = running.waiting().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_caps(caps: crate::McpLimits) -> Tools {
        Tools {
            app: axum::Router::new(),
            config: Arc::new(crate::Mcp {
                max_limits: caps,
                ..crate::Mcp::default()
            }),
            metrics: None,
            key: None,
        }
    }

    fn limits(v: Value) -> Option<Limits> {
        Some(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn an_agents_limits_are_lowered_to_the_operators_ceilings() {
        let t = with_caps(crate::McpLimits {
            memory: Some(64 << 20),
            fuel: Some(1000),
            timeout: Some(std::time::Duration::from_millis(250)),
            max_output: None,
        });
        let asked = limits(
            json!({"fuel": 10_u64.pow(12), "timeout_ms": 100, "memory": "1GiB", "max_output": "1KiB"}),
        );
        assert_eq!(
            t.capped(asked, true).unwrap(),
            Some(json!({"fuel": 1000, "timeout_ms": 100, "memory": 64 << 20, "max_output": 1024}))
        );
        // Asking for nothing gets the ceilings.
        assert_eq!(
            t.capped(None, true).unwrap(),
            Some(json!({"fuel": 1000, "timeout_ms": 250, "memory": 64 << 20}))
        );
        // A cell takes no memory; a bad size is refused, not ignored.
        assert!(t.capped(limits(json!({"memory": 1})), false).is_err());
        assert!(
            t.capped(limits(json!({"max_output": "lots"})), true)
                .is_err()
        );
        assert!(t.capped(limits(json!({"max_output": -1})), true).is_err());
        // Without ceilings nothing is added.
        assert_eq!(
            with_caps(crate::McpLimits::default())
                .capped(None, true)
                .unwrap(),
            None
        );
    }

    #[test]
    fn only_plain_ids_reach_a_url_path() {
        for ok in ["0123abcd", "a.b-c_d"] {
            assert!(path_safe("id", ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a?b",
            "a%2f",
            "a b",
            "ü",
            long.as_str(),
        ] {
            assert!(path_safe("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_tool_has_a_closed_object_schema() {
        let all = tools();
        assert_eq!(all.len(), 7);
        for tool in &all {
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            assert_eq!(
                tool.input_schema["additionalProperties"], false,
                "{}",
                tool.name
            );
        }
    }
}
