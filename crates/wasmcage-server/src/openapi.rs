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

/// The document.
pub fn document() -> Value {
    let id = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "The module's SHA-256, 64 hex digits."});
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
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Module": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "size_bytes": {"type": "integer"}, "imports_wasi": {"type": "boolean"}, "status": {"type": "string", "enum": ["ready", "compiling"]},
                    "exports": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "params": {"type": "array", "items": {"type": "string"}}, "results": {"type": "array", "items": {"type": "string"}}}}}}},
                "Limits": {"type": "object", "description": "Each is clamped to the server's maximum.", "properties": {"fuel": {"type": "integer"}, "memory": {"oneOf": [{"type": "integer"}, {"type": "string"}]}, "timeout_ms": {"type": "integer"}, "max_output": {"oneOf": [{"type": "integer"}, {"type": "string"}]}}},
                "Report": {"type": "object", "description": "The execution report: outcome (completed, exited, out_of_fuel, timeout, memory_limit, stack_overflow, trap), trap, exit_code, fuel_consumed, memory_peak_bytes, duration_ms, stdout_truncated and more."},
            }
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
                        "responses": with_errors(json!({"200": {"description": "A page: {\"modules\": [Module], \"next_cursor\": string or null}.", "content": {"application/json": {}}}}))}
            },
            "/v1/modules/{id}": {
                "get": {"summary": "Describe a module.", "parameters": [id.clone()], "responses": with_errors(json!({"200": {"description": "The module.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Module"}}}}}))},
                "delete": {"summary": "Delete a module.", "parameters": [id.clone()], "responses": with_errors(json!({"204": {"description": "Deleted."}}))}
            },
            "/v1/modules/{id}/invoke": {
                "post": {"summary": "Call an export with typed arguments in a fresh sandbox.", "parameters": [id.clone()],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["export"], "properties": {
                             "export": {"type": "string"}, "args": {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string"}]}},
                             "limits": {"$ref": "#/components/schemas/Limits"}, "profile": {"type": "string", "enum": ["strict", "standard", "permissive"], "description": "The server's profile or a narrower one (strict < standard < permissive); wider is a 403 policy_widening."}}}}}},
                         "responses": with_errors(json!({"200": {"description": "Results and the report; a guest trap is a 200 with its outcome.", "content": {"application/json": {}}}}))}
            },
            "/v1/modules/{id}/run": {
                "post": {"summary": "Run a WASI command in a fresh sandbox.", "parameters": [id],
                         "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
                             "args": {"type": "array", "items": {"type": "string"}}, "stdin": {"type": "string", "description": "At most max_stdin bytes (413 stdin_too_large)."}, "stdin_base64": {"type": "string"},
                             "env": {"type": "object", "additionalProperties": {"type": "string"}}, "limits": {"$ref": "#/components/schemas/Limits"}, "profile": {"type": "string", "enum": ["strict", "standard", "permissive"]},
                             "output": {"type": "string", "enum": ["text", "base64"], "default": "text", "description": "How stdout and stderr are returned: UTF-8 text (invalid bytes replaced) or base64 of the exact bytes."}}}}}},
                         "responses": with_errors(json!({"200": {"description": "exit_code, output_encoding, stdout and stderr (each once, in the requested encoding), truncation flags and the report.", "content": {"application/json": {}}}}))}
            },
            "/v1/alerts": {"get": {"summary": "Pending and firing alerts of the configured alert rules.", "responses": {"200": {"description": "{enabled, alerts: [{rule, severity, state, since, value, instance, escalation_steps_notified, acknowledged, acknowledged_at}]}.", "content": {"application/json": {}}}, "401": error_response("A key is required or was wrong."), "403": error_response("forbidden: the key is not one of alert_keys.")}}},
            "/v1/alerts/{rule}/ack": {"post": {"summary": "Acknowledge a firing alert: its escalation stops.", "parameters": [{"name": "rule", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{alert}: the alert, acknowledged.", "content": {"application/json": {}}}, "401": error_response("A key is required or was wrong."), "403": error_response("forbidden: the key is not one of alert_keys."), "404": error_response("unknown_rule, or alerting_disabled when no rules are configured."), "409": error_response("not_firing: only a firing alert can be acknowledged.")}}},
            "/v1/openapi.json": {"get": {"summary": "This document.", "security": [], "responses": {"200": {"description": "OpenAPI 3.", "content": {"application/json": {}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (behind an API key when metrics_require_key is set).", "responses": {"200": text("The text exposition format."), "401": error_response("metrics_require_key is set and no valid key was given.")}}},
            "/metrics/performance": {"get": {"summary": "The performance report: per-export latency quantiles, hotspots, anomalies (behind an API key when metrics_require_key is set).", "responses": {"200": {"description": "JSON.", "content": {"application/json": {}}}, "401": error_response("metrics_require_key is set and no valid key was given.")}}},
            "/livez": {"get": {"summary": "Liveness.", "security": [], "responses": {"200": text("ok")}}},
            "/readyz": {"get": {"summary": "Readiness: not ready when a critical health check fails or no execution capacity is free.", "security": [], "responses": {"200": text("ok"), "503": {"description": "Not ready: the failing checks (capacity when every execution slot or the memory budget is in use).", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "The full health report.", "security": [], "responses": {"200": {"description": "Healthy or degraded.", "content": {"application/json": {}}}, "503": {"description": "Critical.", "content": {"application/json": {}}}}}}
        }
    })
}
