//! The OpenAPI document of the `/v1` API, served at `/v1/openapi.json`.

use serde_json::{Value, json};

/// Every route the service answers, as (method, OpenAPI path). A test checks that the
/// document lists exactly these and that the server answers each of them.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/modules"),
    ("get", "/v1/modules"),
    ("get", "/v1/modules/{id}"),
    ("delete", "/v1/modules/{id}"),
    ("post", "/v1/modules/{id}/invoke"),
    ("post", "/v1/modules/{id}/run"),
    ("post", "/v1/execute"),
    ("get", "/v1/runtimes"),
    ("post", "/v1/sessions"),
    ("get", "/v1/sessions"),
    ("get", "/v1/sessions/{id}"),
    ("delete", "/v1/sessions/{id}"),
    ("post", "/v1/sessions/{id}/execute"),
    ("get", "/v1/alerts"),
    ("post", "/v1/alerts/{rule}/ack"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/metrics/performance"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/healthz"),
];

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The named schemas of requests and answers. A test checks live answers against them, and
/// the Python client's models are checked against them too.
fn schemas() -> Value {
    json!({
        "ExecuteRequest": {"type": "object", "required": ["language", "code"], "additionalProperties": false, "properties": {
            "language": {"type": "string", "description": "A runtime's name (python, javascript) or language."},
            "code": {"type": "string"},
            "stdin": {"type": "string", "description": "At most max_stdin bytes (413 stdin_too_large)."},
            "files": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Files put in /workspace before the code runs: relative paths (data/in.csv) to contents; at most 256."},
            "limits": {"$ref": "#/components/schemas/Limits"},
            "profile": {"type": "string", "enum": ["strict", "standard", "permissive"]},
            "output": {"type": "string", "enum": ["text", "base64"], "default": "text"}}},
        "ExecuteResult": {"type": "object", "required": ["exit_code", "outcome", "output_encoding", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "runtime", "language", "version", "report"], "properties": {
            "exit_code": {"type": "integer", "nullable": true, "description": "The code's exit status; null when it did not exit (a limit or a trap)."},
            "outcome": {"type": "string", "enum": ["completed", "exited", "out_of_fuel", "timeout", "memory_limit", "stack_overflow", "trap", "cancelled"]},
            "output_encoding": {"type": "string", "enum": ["text", "base64"]},
            "stdout": {"type": "string"}, "stderr": {"type": "string"},
            "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
            "runtime": {"type": "string"}, "language": {"type": "string"}, "version": {"type": "string"},
            "warm": {"type": "boolean", "description": "Whether a pre-started interpreter ran the code (one-shot only)."},
            "report": {"type": "object", "description": "The execution report (docs/monitoring.md), with runtime, runtime_version and execution_type."}}},
        "CellResult": {"allOf": [{"$ref": "#/components/schemas/ExecuteResult"}, {"type": "object", "required": ["session_alive"], "properties": {"session_alive": {"type": "boolean"}}}]},
        "CreateSession": {"type": "object", "required": ["language"], "additionalProperties": false, "properties": {
            "language": {"type": "string"}, "limits": {"$ref": "#/components/schemas/Limits"},
            "profile": {"type": "string", "enum": ["strict", "standard", "permissive"]}}},
        "CellRequest": {"type": "object", "required": ["code"], "additionalProperties": false, "properties": {
            "code": {"type": "string"}, "stdin": {"type": "string", "description": "Python cells read it as sys.stdin."},
            "files": {"type": "object", "additionalProperties": {"type": "string"}},
            "limits": {"$ref": "#/components/schemas/CellLimits"},
            "output": {"type": "string", "enum": ["text", "base64"], "default": "text"}}},
        "Session": {"type": "object", "required": ["id", "runtime", "language", "created_at", "last_used_at", "expires_at", "cells"], "properties": {
            "id": {"type": "string"}, "runtime": {"type": "string"}, "language": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"}, "last_used_at": {"type": "string", "format": "date-time"},
            "expires_at": {"type": "string", "format": "date-time", "description": "When it ends if unused."}, "cells": {"type": "integer"}}},
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "replica": {"type": "string", "description": "wrong_replica only: the replica that holds the session."}}}}},
        "Module": {"type": "object", "required": ["id", "name", "size_bytes", "status"], "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "size_bytes": {"type": "integer"},
            "imports_wasi": {"type": "boolean", "description": "Present once the module is ready."}, "status": {"type": "string", "enum": ["ready", "compiling"]},
            "exports": {"type": "array", "description": "Present once the module is ready.", "items": {"$ref": "#/components/schemas/Export"}}}},
        "Export": {"type": "object", "required": ["name", "params", "results"], "properties": {"name": {"type": "string"},
            "params": {"type": "array", "nullable": true, "items": {"type": "string"}, "description": "Value types (i32, i64, f32, f64); null when the export uses a type the host cannot pass."},
            "results": {"type": "array", "nullable": true, "items": {"type": "string"}, "description": "Null when the export returns a type the host cannot receive."}}},
        "ModuleList": {"type": "object", "required": ["modules", "next_cursor"], "properties": {"modules": {"type": "array", "items": {"$ref": "#/components/schemas/Module"}},
            "next_cursor": {"type": "string", "nullable": true, "description": "The cursor of the next page; null on the last page."}}},
        "InvokeRequest": {"type": "object", "required": ["export"], "additionalProperties": false, "properties": {
            "export": {"type": "string"}, "args": {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string"}]}},
            "limits": {"$ref": "#/components/schemas/Limits"}, "profile": {"type": "string", "enum": ["strict", "standard", "permissive"], "description": "The server's profile or a narrower one (strict < standard < permissive); wider is a 403 policy_widening."}}},
        "InvokeResult": {"type": "object", "required": ["results", "report"], "properties": {
            "results": {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string"}]}, "description": "The export's results: numbers, or strings for values JSON cannot hold (NaN, infinities)."},
            "report": {"$ref": "#/components/schemas/Report"}}},
        "RunRequest": {"type": "object", "additionalProperties": false, "properties": {
            "args": {"type": "array", "items": {"type": "string"}}, "stdin": {"type": "string", "description": "At most max_stdin bytes (413 stdin_too_large)."}, "stdin_base64": {"type": "string"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}}, "limits": {"$ref": "#/components/schemas/Limits"}, "profile": {"type": "string", "enum": ["strict", "standard", "permissive"]},
            "output": {"type": "string", "enum": ["text", "base64"], "default": "text", "description": "How stdout and stderr are returned: UTF-8 text (invalid bytes replaced) or base64 of the exact bytes."}}},
        "RunResult": {"type": "object", "required": ["exit_code", "output_encoding", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "report"], "properties": {
            "exit_code": {"type": "integer", "nullable": true}, "output_encoding": {"type": "string", "enum": ["text", "base64"]},
            "stdout": {"type": "string"}, "stderr": {"type": "string"}, "stdout_truncated": {"type": "boolean"}, "stderr_truncated": {"type": "boolean"},
            "report": {"$ref": "#/components/schemas/Report"}}},
        "SessionList": {"type": "object", "required": ["sessions"], "properties": {"sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}}}},
        "RuntimePool": {"type": "object", "required": ["size", "ready", "warm", "cold"], "properties": {"size": {"type": "integer"}, "ready": {"type": "integer"}, "warm": {"type": "integer"}, "cold": {"type": "integer"}}},
        "Runtime": {"type": "object", "required": ["name", "language", "version", "sessions", "pool"], "properties": {"name": {"type": "string"}, "language": {"type": "string"}, "version": {"type": "string"},
            "sessions": {"type": "boolean", "description": "Whether it runs sessions."},
            "pool": {"allOf": [{"$ref": "#/components/schemas/RuntimePool"}], "nullable": true, "description": "Its pre-started interpreters; null without a pool."}}},
        "RuntimeList": {"type": "object", "required": ["runtimes"], "properties": {"runtimes": {"type": "array", "items": {"$ref": "#/components/schemas/Runtime"}}}},
        "Alert": {"type": "object", "required": ["rule", "severity", "state", "since", "value", "instance", "escalation_steps_notified", "acknowledged", "acknowledged_at"], "properties": {
            "rule": {"type": "string"}, "severity": {"type": "string"}, "state": {"type": "string", "enum": ["pending", "firing"]},
            "since": {"type": "string", "format": "date-time"}, "value": {"type": "number"}, "instance": {"type": "string", "nullable": true},
            "escalation_steps_notified": {"type": "integer"}, "acknowledged": {"type": "boolean"}, "acknowledged_at": {"type": "string", "format": "date-time", "nullable": true}}},
        "AlertList": {"type": "object", "required": ["enabled", "alerts"], "properties": {"enabled": {"type": "boolean"}, "alerts": {"type": "array", "items": {"$ref": "#/components/schemas/Alert"}}}},
        "AlertAck": {"type": "object", "required": ["alert"], "properties": {"alert": {"$ref": "#/components/schemas/Alert"}}},
        "CellLimits": {"type": "object", "additionalProperties": false, "description": "A cell's limits; its memory is the session's.", "properties": {"fuel": {"type": "integer"}, "timeout_ms": {"type": "integer"}, "max_output": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
        "Limits": {"type": "object", "additionalProperties": false, "description": "Each is clamped to the server's maximum.", "properties": {"fuel": {"type": "integer"}, "memory": {"oneOf": [{"type": "integer"}, {"type": "string"}]}, "timeout_ms": {"type": "integer"}, "max_output": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
        "Report": {"type": "object", "description": "The execution report: outcome (completed, exited, out_of_fuel, timeout, memory_limit, stack_overflow, trap), trap, exit_code, fuel_consumed, memory_peak_bytes, duration_ms, stdout_truncated and more."},
    })
}

/// The document.
pub fn document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The module's SHA-256, 64 hex digits."});
    let session = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The session's id, `<replica id>.<32 hex digits>`: the replica id names the server process that holds it (see x-wasmcage-replica)."});
    let errors = json!({
        "400": error_response("The request was malformed or refers to something that does not fit (bad JSON, wrong argument types, invalid module)."),
        "401": error_response("An API key is required or was not valid."),
        "403": error_response("policy_widening: the requested profile is wider than the server's; quota_exceeded: the API key's module quota is used up."),
        "404": error_response("No such module."),
        "408": error_response("body_timeout: the request body did not arrive within the server's body read timeout."),
        "413": error_response("body_too_large: the body is larger than the server allows; stdin_too_large: stdin is larger than max_stdin."),
        "429": error_response("rate_limited: too many requests for this API key; auth_throttled: too many failed authentications from this address; busy (uploads): this key is already compiling. See Retry-After."),
        "503": error_response("busy: no execution or compile capacity free; module_compiling: the module is still being compiled after a restart; shutting_down: the server is draining after SIGTERM. See Retry-After."),
        "504": error_response("The request took longer than the server allows."),
    });
    let with_errors = |ok: Value| {
        let mut responses = errors.clone();
        for (k, v) in ok.as_object().expect("an object") {
            responses[k] = v.clone();
        }
        responses
    };
    let text =
        |description: &str| json!({"description": description, "content": {"text/plain": {}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "wasmcage", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Run untrusted WebAssembly in fresh sandboxes under enforced limits."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}, "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": {
            "/v1/modules": {
                "post": {"summary": "Upload a module (WebAssembly binary or WAT text) as the request body.",
                         "parameters": [{"name": "name", "in": "query", "schema": {"type": "string"}}],
                         "requestBody": {"content": {"application/wasm": {}, "text/plain": {}}},
                         "responses": with_errors(json!({"201": {"description": "Compiled and durably stored by this request.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Module"}}}},
                                                          "200": {"description": "Already stored: a module's identity is the SHA-256 of its binary, so the same bytes under another name are the same module, answered with its first name.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Module"}}}}}))},
                "get": {"summary": "List modules, one page at a time, in id order.",
                        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                                       {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "The next_cursor of the previous page (the last id it held)."}],
                        "responses": with_errors(json!({"200": {"description": "A page of modules.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModuleList"}}}}}))}
            },
            "/v1/modules/{id}": {
                "get": {"summary": "Describe a module.", "parameters": [id.clone()], "responses": with_errors(json!({"200": {"description": "The module.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Module"}}}}}))},
                "delete": {"summary": "Delete a module.", "parameters": [id.clone()], "responses": with_errors(json!({"204": {"description": "Deleted."}}))}
            },
            "/v1/modules/{id}/invoke": {
                "post": {"summary": "Call an export with typed arguments in a fresh sandbox.", "parameters": [id.clone()],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InvokeRequest"}}}},
                         "responses": with_errors(json!({"200": {"description": "Results and the report; a guest trap is a 200 with its outcome.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InvokeResult"}}}}}))}
            },
            "/v1/modules/{id}/run": {
                "post": {"summary": "Run a WASI command in a fresh sandbox.", "parameters": [id],
                         "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunRequest"}}}},
                         "responses": with_errors(json!({"200": {"description": "exit_code, output_encoding, stdout and stderr (each once, in the requested encoding), truncation flags and the report.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunResult"}}}}}))}
            },
            "/v1/execute": {
                "post": {"summary": "Run code once in a language runtime (Python, JavaScript, or one the operator installed), on a fresh interpreter: a pre-started one when the request's sandbox is the pool's.",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteRequest"}}}},
                         "responses": with_errors(json!({"200": {"description": "The code ran (whatever its exit code or outcome).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteResult"}}}},
                                                          "503": error_response("runtimes_loading: the runtimes are still loading after a start; runtime_unavailable: an interpreter failed to start; busy: no capacity. See Retry-After.")}))}
            },
            "/v1/runtimes": {"get": {"summary": "The language runtimes this server runs, with their pools.", "responses": with_errors(json!({"200": {"description": "The runtimes.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RuntimeList"}}}}}))}},
            "/v1/sessions": {
                "post": {"summary": "Start a session: an interpreter that keeps variables, imports and /workspace files between cells, for this API key only.",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateSession"}}}},
                         "responses": with_errors(json!({"201": {"description": "The session.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Session"}}}},
                                                          "429": error_response("session_limit: this key, or the server, holds its maximum of sessions.")}))},
                "get": {"summary": "This key's sessions.", "responses": with_errors(json!({"200": {"description": "The sessions.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionList"}}}}}))}
            },
            "/v1/sessions/{id}": {
                "get": {"summary": "One of this key's sessions.", "parameters": [session], "responses": with_errors(json!({"200": {"description": "The session.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Session"}}}}, "404": error_response("unknown_session: no such session for this key."), "421": error_response("wrong_replica: another replica holds this session; error.replica and the x-wasmcage-session-replica header name it. Send the request there.")}))},
                "delete": {"summary": "End a session; its interpreter and workspace are gone.", "parameters": [session], "responses": with_errors(json!({"204": {"description": "Ended."}, "404": error_response("unknown_session: no such session for this key."), "421": error_response("wrong_replica: another replica holds this session; error.replica and the x-wasmcage-session-replica header name it. Send the request there.")}))}
            },
            "/v1/sessions/{id}/execute": {
                "post": {"summary": "Run one cell in a session, under the cell's own fuel and timeout.", "parameters": [session],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CellRequest"}}}},
                         "responses": with_errors(json!({"200": {"description": "The cell ran. session_alive is false when the cell ended the interpreter (it exited the process or hit a limit): the session is gone.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CellResult"}}}},
                                                          "404": error_response("unknown_session: no such session for this key."), "421": error_response("wrong_replica: another replica holds this session; error.replica and the x-wasmcage-session-replica header name it. Send the request there."),
                                                          "409": error_response("session_busy: a cell of this session is running."),
                                                          "410": error_response("session_ended: the session's interpreter has ended.")}))}
            },
            "/v1/alerts": {"get": {"summary": "Pending and firing alerts of the configured alert rules.", "responses": {"200": {"description": "The alerts; enabled is false when no alert rules are configured.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AlertList"}}}}, "401": error_response("A key is required or was wrong."), "403": error_response("forbidden: the key is not one of alert_keys.")}}},
            "/v1/alerts/{rule}/ack": {"post": {"summary": "Acknowledge a firing alert: its escalation stops.", "parameters": [{"name": "rule", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The alert, acknowledged.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AlertAck"}}}}, "401": error_response("A key is required or was wrong."), "403": error_response("forbidden: the key is not one of alert_keys."), "404": error_response("unknown_rule, or alerting_disabled when no rules are configured."), "409": error_response("not_firing: only a firing alert can be acknowledged.")}}},
            "/v1/openapi.json": {"get": {"summary": "This document.", "security": [], "responses": {"200": {"description": "OpenAPI 3.", "content": {"application/json": {}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (behind an API key when metrics_require_key is set).", "responses": {"200": text("The text exposition format."), "401": error_response("metrics_require_key is set and no valid key was given.")}}},
            "/metrics/performance": {"get": {"summary": "The performance report: per-export latency quantiles, hotspots, anomalies (behind an API key when metrics_require_key is set).", "responses": {"200": {"description": "JSON.", "content": {"application/json": {}}}, "401": error_response("metrics_require_key is set and no valid key was given.")}}},
            "/livez": {"get": {"summary": "Liveness.", "security": [], "responses": {"200": text("ok")}}},
            "/readyz": {"get": {"summary": "Readiness: not ready when a critical health check fails or no execution capacity is free.", "security": [], "responses": {"200": text("ok"), "503": {"description": "Not ready: the failing checks (capacity when every execution slot or the memory budget is in use).", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "The full health report.", "security": [], "responses": {"200": {"description": "Healthy or degraded.", "content": {"application/json": {}}}, "503": {"description": "Critical.", "content": {"application/json": {}}}}}}
        }
    })
}
