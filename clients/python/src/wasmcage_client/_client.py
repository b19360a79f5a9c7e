"""`Client` and `AsyncClient`: every route of the wasmcage HTTP API, on httpx."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from . import errors
from .models import (
    Alert, AlertAck, AlertList, CellLimits, CellRequest, CellResult, CreateSession,
    ExecuteRequest, ExecuteResult, InvokeRequest, InvokeResult, Limits, Module, ModuleList,
    OutputEncoding, Profile, RunRequest, RunResult, RuntimeList, Session, SessionList,
)

DEFAULT_URL = "http://127.0.0.1:8000"

ROUTES: dict[tuple[str, str], str] = {
    ("post", "/v1/modules"): "upload_module",
    ("get", "/v1/modules"): "list_modules",
    ("get", "/v1/modules/{id}"): "get_module",
    ("delete", "/v1/modules/{id}"): "delete_module",
    ("post", "/v1/modules/{id}/invoke"): "invoke",
    ("post", "/v1/modules/{id}/run"): "run",
    ("post", "/v1/execute"): "execute",
    ("get", "/v1/runtimes"): "list_runtimes",
    ("post", "/v1/sessions"): "create_session",
    ("get", "/v1/sessions"): "list_sessions",
    ("get", "/v1/sessions/{id}"): "get_session",
    ("delete", "/v1/sessions/{id}"): "delete_session",
    ("post", "/v1/sessions/{id}/execute"): "execute_cell",
    ("get", "/v1/alerts"): "list_alerts",
    ("post", "/v1/alerts/{rule}/ack"): "ack_alert",
    ("get", "/v1/openapi.json"): "openapi",
    ("get", "/metrics"): "metrics",
    ("get", "/metrics/performance"): "performance",
    ("get", "/livez"): "alive",
    ("get", "/readyz"): "ready",
    ("get", "/healthz"): "health",
}
"""Every route of the API (as `/v1/openapi.json` lists them) and the method of `Client` and
`AsyncClient` that calls it. A test checks it against a live server's document."""


def _segment(value: str) -> str:
    """One path segment from a caller's string: every reserved character escaped, and `.`
    and `..` escaped too, so that no id can reach another route."""
    if not isinstance(value, str) or not value:
        raise ValueError("an id must be a non-empty string")
    quoted = urllib.parse.quote(value, safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return quoted


def _limits(value: Limits | Mapping[str, Any] | None, cls: type = Limits) -> Any:
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"limits must be {cls.__name__} or a dict, not {type(value).__name__}")


@dataclass
class _Call:
    """One request, built once and sent by either client."""
    method: str
    path: str
    parse: Callable[[httpx.Response, bool], Any]
    json: dict[str, Any] | None = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    ok: tuple[int, ...] = (200,)


def _model(cls: Any) -> Callable[[httpx.Response, bool], Any]:
    return lambda r, strict: cls.from_json(r.json(), strict=strict)


def _nothing(r: httpx.Response, strict: bool) -> None:
    return None


class _Calls:
    """The requests of every route, shared by both clients."""

    @staticmethod
    def upload_module(module: bytes | str, name: str | None) -> _Call:
        if isinstance(module, str):
            module = module.encode()
        if not isinstance(module, (bytes, bytearray, memoryview)):
            raise TypeError("module must be bytes (a .wasm binary) or str (WAT text)")
        body = bytes(module)
        kind = "application/wasm" if body.startswith(b"\0asm") else "text/plain"
        return _Call("POST", "/v1/modules", _model(Module), content=body,
                     params={"name": name} if name is not None else None,
                     headers={"content-type": kind}, ok=(200, 201))

    @staticmethod
    def list_modules(limit: int | None, cursor: str | None) -> _Call:
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return _Call("GET", "/v1/modules", _model(ModuleList), params=params or None)

    @staticmethod
    def get_module(module_id: str) -> _Call:
        return _Call("GET", f"/v1/modules/{_segment(module_id)}", _model(Module))

    @staticmethod
    def delete_module(module_id: str) -> _Call:
        return _Call("DELETE", f"/v1/modules/{_segment(module_id)}", _nothing, ok=(204,))

    @staticmethod
    def invoke(module_id: str, export: str, args: Sequence[int | float | str],
               limits: Any, profile: Profile | None) -> _Call:
        req = InvokeRequest(export=export, args=list(args), limits=_limits(limits),
                            profile=profile)
        return _Call("POST", f"/v1/modules/{_segment(module_id)}/invoke", _model(InvokeResult),
                     json=req.to_json())

    @staticmethod
    def run(module_id: str, args: Sequence[str], stdin: str | bytes | None,
            env: Mapping[str, str] | None, limits: Any, profile: Profile | None,
            output: OutputEncoding | None) -> _Call:
        text, b64 = None, None
        if isinstance(stdin, (bytes, bytearray, memoryview)):
            b64 = base64.b64encode(bytes(stdin)).decode()
        else:
            text = stdin
        req = RunRequest(args=list(args), stdin=text, stdin_base64=b64,
                         env=dict(env) if env else None, limits=_limits(limits),
                         profile=profile, output=output)
        return _Call("POST", f"/v1/modules/{_segment(module_id)}/run", _model(RunResult),
                     json=req.to_json())

    @staticmethod
    def execute(language: str, code: str, stdin: str | None, files: Mapping[str, str] | None,
                limits: Any, profile: Profile | None, output: OutputEncoding | None) -> _Call:
        req = ExecuteRequest(language=language, code=code, stdin=stdin,
                             files=dict(files) if files else None, limits=_limits(limits),
                             profile=profile, output=output)
        return _Call("POST", "/v1/execute", _model(ExecuteResult), json=req.to_json())

    @staticmethod
    def list_runtimes() -> _Call:
        return _Call("GET", "/v1/runtimes", _model(RuntimeList))

    @staticmethod
    def create_session(language: str, limits: Any, profile: Profile | None) -> _Call:
        req = CreateSession(language=language, limits=_limits(limits), profile=profile)
        return _Call("POST", "/v1/sessions", _model(Session), json=req.to_json(), ok=(201,))

    @staticmethod
    def list_sessions() -> _Call:
        return _Call("GET", "/v1/sessions", _model(SessionList))

    @staticmethod
    def get_session(session_id: str) -> _Call:
        return _Call("GET", f"/v1/sessions/{_segment(session_id)}", _model(Session))

    @staticmethod
    def delete_session(session_id: str) -> _Call:
        return _Call("DELETE", f"/v1/sessions/{_segment(session_id)}", _nothing, ok=(204,))

    @staticmethod
    def execute_cell(session_id: str, code: str, stdin: str | None,
                     files: Mapping[str, str] | None, limits: Any,
                     output: OutputEncoding | None) -> _Call:
        req = CellRequest(code=code, stdin=stdin, files=dict(files) if files else None,
                          limits=_limits(limits, CellLimits), output=output)
        return _Call("POST", f"/v1/sessions/{_segment(session_id)}/execute",
                     _model(CellResult), json=req.to_json())

    @staticmethod
    def list_alerts() -> _Call:
        return _Call("GET", "/v1/alerts", _model(AlertList))

    @staticmethod
    def ack_alert(rule: str) -> _Call:
        return _Call("POST", f"/v1/alerts/{_segment(rule)}/ack",
                     lambda r, strict: AlertAck.from_json(r.json(), strict=strict).alert)

    @staticmethod
    def openapi() -> _Call:
        return _Call("GET", "/v1/openapi.json", lambda r, strict: r.json())

    @staticmethod
    def metrics() -> _Call:
        return _Call("GET", "/metrics", lambda r, strict: r.text)

    @staticmethod
    def performance() -> _Call:
        return _Call("GET", "/metrics/performance", lambda r, strict: r.json())

    @staticmethod
    def alive() -> _Call:
        return _Call("GET", "/livez", lambda r, strict: r.status_code == 200)

    @staticmethod
    def ready() -> _Call:
        # 503 is an answer here (not ready), not an error.
        return _Call("GET", "/readyz", lambda r, strict: r.status_code == 200, ok=(200, 503))

    @staticmethod
    def health() -> _Call:
        return _Call("GET", "/healthz", lambda r, strict: r.json(), ok=(200, 503))


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, *, timeout: float,
                 max_retries: int, max_retry_wait: float, strict: bool) -> None:
        if base_url is None:
            base_url = os.environ.get("WASMCAGE_URL") or DEFAULT_URL
        if api_key is None:
            api_key = os.environ.get("WASMCAGE_API_KEY") or None
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.strict = strict
        self._headers = {"user-agent": "wasmcage-client-python/0.1.0"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._timeout = timeout

    def _retry_delay(self, error: errors.ApiError, attempt: int) -> float | None:
        """How long to wait before sending the request again, or None to raise `error`."""
        if attempt >= self.max_retries or error.code not in errors.RETRYABLE_CODES:
            return None
        if error.retry_after is None or error.retry_after > self.max_retry_wait:
            return None
        return error.retry_after

    def _finish(self, call: _Call, response: httpx.Response) -> Any:
        try:
            return call.parse(response, self.strict)
        except ValueError as e:
            raise errors.ApiError(response.status_code, "", f"the answer is not what the API "
                                  f"documents: {e}") from e


def _transport_error(e: httpx.HTTPError) -> errors.TransportError:
    if isinstance(e, httpx.TimeoutException):
        return errors.ClientTimeout(f"no answer within the client's timeout: {e!r}")
    return errors.TransportError(f"the request failed before an answer: {e!r}")


class Client(_Base):
    """A blocking client of a wasmcage server.

    `Client()` reads `WASMCAGE_URL` (default `http://127.0.0.1:8000`) and `WASMCAGE_API_KEY`
    from the environment. Errors are typed (`wasmcage_client.errors`). Answers the server
    gives before any work starts (`RETRYABLE_CODES`: rate limited, busy, still compiling or
    loading, shutting down) are retried up to `max_retries` times after the `Retry-After`
    the server sent, when that is at most `max_retry_wait` seconds.
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, max_retries: int = 3, max_retry_wait: float = 30.0,
                 strict: bool = False, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries,
                         max_retry_wait=max_retry_wait, strict=strict)
        self._http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json,
                                              content=call.content, params=call.params,
                                              headers=call.headers)
            except httpx.HTTPError as e:
                raise _transport_error(e) from e
            if response.status_code in call.ok:
                return self._finish(call, response)
            error = errors.from_response(response)
            delay = self._retry_delay(error, attempt)
            if delay is None:
                raise error
            attempt += 1
            time.sleep(delay)

    # Modules
    def upload_module(self, module: bytes | str, name: str | None = None) -> Module:
        """Stores a module (a `.wasm` binary as bytes, or WAT text as str). The same bytes
        uploaded again are the same module, answered with its first name."""
        return self._send(_Calls.upload_module(module, name))

    def list_modules(self, limit: int | None = None, cursor: str | None = None) -> ModuleList:
        """One page of this key's modules in id order; pass `next_cursor` for the next."""
        return self._send(_Calls.list_modules(limit, cursor))

    def iter_modules(self, page_size: int = 100) -> Iterator[Module]:
        """Every module of this key, following the pages."""
        cursor = None
        while True:
            page = self.list_modules(page_size, cursor)
            yield from page.modules
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get_module(self, module_id: str) -> Module:
        return self._send(_Calls.get_module(module_id))

    def delete_module(self, module_id: str) -> None:
        """Drops this key's hold on the module (the last holder's delete removes it)."""
        self._send(_Calls.delete_module(module_id))

    def invoke(self, module_id: str, export: str, args: Sequence[int | float | str] = (), *,
               limits: Limits | Mapping[str, Any] | None = None,
               profile: Profile | None = None) -> InvokeResult:
        """Calls an export with typed arguments in a fresh sandbox. A guest trap is a result
        with its outcome in `report`, not an exception."""
        return self._send(_Calls.invoke(module_id, export, args, limits, profile))

    def run(self, module_id: str, args: Sequence[str] = (), *, stdin: str | bytes | None = None,
            env: Mapping[str, str] | None = None,
            limits: Limits | Mapping[str, Any] | None = None, profile: Profile | None = None,
            output: OutputEncoding | None = None) -> RunResult:
        """Runs a WASI command (`_start`). `stdin` as bytes is sent as base64."""
        return self._send(_Calls.run(module_id, args, stdin, env, limits, profile, output))

    # Language runtimes
    def execute(self, language: str, code: str, *, stdin: str | None = None,
                files: Mapping[str, str] | None = None,
                limits: Limits | Mapping[str, Any] | None = None, profile: Profile | None = None,
                output: OutputEncoding | None = None) -> ExecuteResult:
        """Runs code once on a fresh interpreter (python, javascript, ...)."""
        return self._send(_Calls.execute(language, code, stdin, files, limits, profile, output))

    def list_runtimes(self) -> RuntimeList:
        return self._send(_Calls.list_runtimes())

    def create_session(self, language: str, *, limits: Limits | Mapping[str, Any] | None = None,
                       profile: Profile | None = None) -> Session:
        """Starts an interpreter whose variables and /workspace files persist between cells."""
        return self._send(_Calls.create_session(language, limits, profile))

    def list_sessions(self) -> SessionList:
        return self._send(_Calls.list_sessions())

    def get_session(self, session_id: str) -> Session:
        return self._send(_Calls.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        self._send(_Calls.delete_session(session_id))

    def execute_cell(self, session_id: str, code: str, *, stdin: str | None = None,
                     files: Mapping[str, str] | None = None,
                     limits: CellLimits | Mapping[str, Any] | None = None,
                     output: OutputEncoding | None = None) -> CellResult:
        """Runs one cell in a session, under the cell's own fuel and timeout."""
        return self._send(_Calls.execute_cell(session_id, code, stdin, files, limits, output))

    def session(self, language: str, *, limits: Limits | Mapping[str, Any] | None = None,
                profile: Profile | None = None) -> SessionHandle:
        """A session as a context manager: `with client.session("python") as s:
        s.execute("x = 1")`; it is ended on leaving the block."""
        return SessionHandle(self, self.create_session(language, limits=limits, profile=profile))

    # Alerts
    def list_alerts(self) -> AlertList:
        return self._send(_Calls.list_alerts())

    def ack_alert(self, rule: str) -> Alert:
        """Acknowledges a firing alert: its escalation stops."""
        return self._send(_Calls.ack_alert(rule))

    # The document, metrics and probes
    def openapi(self) -> dict[str, Any]:
        return self._send(_Calls.openapi())

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self._send(_Calls.metrics())

    def performance(self) -> dict[str, Any]:
        return self._send(_Calls.performance())

    def alive(self) -> bool:
        return self._send(_Calls.alive())

    def ready(self) -> bool:
        """Whether `/readyz` is 200 (False on 503: draining, critical, or no capacity)."""
        return self._send(_Calls.ready())

    def health(self) -> dict[str, Any]:
        """The full health report of `/healthz` (also when critical)."""
        return self._send(_Calls.health())


class SessionHandle:
    """A session of a `Client`; ends the session when its `with` block ends."""

    def __init__(self, client: Client, info: Session) -> None:
        self.client = client
        self.info = info
        self.id = info.id

    def execute(self, code: str, **kwargs: Any) -> CellResult:
        return self.client.execute_cell(self.id, code, **kwargs)

    def close(self) -> None:
        try:
            self.client.delete_session(self.id)
        except errors.UnknownSession:
            pass  # It already ended (a cell ended its interpreter, or it expired).

    def __enter__(self) -> SessionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio twin of `Client`: the same methods, as coroutines."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 120.0, max_retries: int = 3, max_retry_wait: float = 30.0,
                 strict: bool = False,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout=timeout, max_retries=max_retries,
                         max_retry_wait=max_retry_wait, strict=strict)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                       timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json,
                                                    content=call.content, params=call.params,
                                                    headers=call.headers)
            except httpx.HTTPError as e:
                raise _transport_error(e) from e
            if response.status_code in call.ok:
                return self._finish(call, response)
            error = errors.from_response(response)
            delay = self._retry_delay(error, attempt)
            if delay is None:
                raise error
            attempt += 1
            await asyncio.sleep(delay)

    async def upload_module(self, module: bytes | str, name: str | None = None) -> Module:
        return await self._send(_Calls.upload_module(module, name))

    async def list_modules(self, limit: int | None = None,
                           cursor: str | None = None) -> ModuleList:
        return await self._send(_Calls.list_modules(limit, cursor))

    async def iter_modules(self, page_size: int = 100) -> AsyncIterator[Module]:
        cursor = None
        while True:
            page = await self.list_modules(page_size, cursor)
            for m in page.modules:
                yield m
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get_module(self, module_id: str) -> Module:
        return await self._send(_Calls.get_module(module_id))

    async def delete_module(self, module_id: str) -> None:
        await self._send(_Calls.delete_module(module_id))

    async def invoke(self, module_id: str, export: str,
                     args: Sequence[int | float | str] = (), *,
                     limits: Limits | Mapping[str, Any] | None = None,
                     profile: Profile | None = None) -> InvokeResult:
        return await self._send(_Calls.invoke(module_id, export, args, limits, profile))

    async def run(self, module_id: str, args: Sequence[str] = (), *,
                  stdin: str | bytes | None = None, env: Mapping[str, str] | None = None,
                  limits: Limits | Mapping[str, Any] | None = None,
                  profile: Profile | None = None,
                  output: OutputEncoding | None = None) -> RunResult:
        return await self._send(_Calls.run(module_id, args, stdin, env, limits, profile, output))

    async def execute(self, language: str, code: str, *, stdin: str | None = None,
                      files: Mapping[str, str] | None = None,
                      limits: Limits | Mapping[str, Any] | None = None,
                      profile: Profile | None = None,
                      output: OutputEncoding | None = None) -> ExecuteResult:
        return await self._send(_Calls.execute(language, code, stdin, files, limits, profile,
                                               output))

    async def list_runtimes(self) -> RuntimeList:
        return await self._send(_Calls.list_runtimes())

    async def create_session(self, language: str, *,
                             limits: Limits | Mapping[str, Any] | None = None,
                             profile: Profile | None = None) -> Session:
        return await self._send(_Calls.create_session(language, limits, profile))

    async def list_sessions(self) -> SessionList:
        return await self._send(_Calls.list_sessions())

    async def get_session(self, session_id: str) -> Session:
        return await self._send(_Calls.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._send(_Calls.delete_session(session_id))

    async def execute_cell(self, session_id: str, code: str, *, stdin: str | None = None,
                           files: Mapping[str, str] | None = None,
                           limits: CellLimits | Mapping[str, Any] | None = None,
                           output: OutputEncoding | None = None) -> CellResult:
        return await self._send(_Calls.execute_cell(session_id, code, stdin, files, limits,
                                                    output))

    async def list_alerts(self) -> AlertList:
        return await self._send(_Calls.list_alerts())

    async def ack_alert(self, rule: str) -> Alert:
        return await self._send(_Calls.ack_alert(rule))

    async def openapi(self) -> dict[str, Any]:
        return await self._send(_Calls.openapi())

    async def metrics(self) -> str:
        return await self._send(_Calls.metrics())

    async def performance(self) -> dict[str, Any]:
        return await self._send(_Calls.performance())

    async def alive(self) -> bool:
        return await self._send(_Calls.alive())

    async def ready(self) -> bool:
        return await self._send(_Calls.ready())

    async def health(self) -> dict[str, Any]:
        return await self._send(_Calls.health())
