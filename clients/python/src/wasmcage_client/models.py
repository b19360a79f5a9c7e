"""Request and response models of the `/v1` API, one dataclass per OpenAPI schema.

Each class names its schema in `SCHEMA`; a test checks the fields of every model (names,
required or optional, nullable) against `/v1/openapi.json` of a live server, both ways.
A response field the schema does not require has the default `None`. Answers are parsed
leniently by default (unknown fields are ignored, so that a newer server does not break an
older client); `strict=True` on the client refuses unknown or missing fields instead.
"""

from __future__ import annotations

import base64
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

Profile = Literal["strict", "standard", "permissive"]
OutputEncoding = Literal["text", "base64"]
Outcome = Literal["completed", "exited", "out_of_fuel", "timeout", "memory_limit",
                  "stack_overflow", "trap", "cancelled"]
Report = dict[str, Any]
"""The execution report (docs/monitoring.md): outcome, trap, exit_code, fuel_consumed,
memory_peak_bytes, duration_ms, ... The API documents it as a free-form object."""


class ModelError(ValueError):
    """An answer did not fit its model (only raised in strict mode, or for a wrong type of
    the answer as a whole)."""


class _Model:
    SCHEMA: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of a request: fields left at None are not sent."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = _dump(v)
        return out

    @classmethod
    def from_json(cls, data: Any, *, strict: bool = False):
        """Builds the model from an answer's JSON."""
        return _load(cls, data, strict, cls.__name__)


def _dump(v: Any) -> Any:
    if isinstance(v, _Model):
        return v.to_json()
    if isinstance(v, (list, tuple)):
        return [_dump(x) for x in v]
    if isinstance(v, dict):
        return {k: _dump(x) for k, x in v.items()}
    return v


_PRIMITIVES = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _load(tp: Any, data: Any, strict: bool, at: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        for a in args:
            try:
                return _load(a, data, strict, at)
            except ModelError:
                if a is args[-1]:
                    raise
        return data
    if tp is Any or tp is typing.Any:
        return data
    if origin is Literal:
        if strict and data not in typing.get_args(tp):
            raise ModelError(f"{at}: {data!r} is not one of {typing.get_args(tp)}")
        return data
    if origin is list:
        if not isinstance(data, list):
            raise ModelError(f"{at}: expected a list, got {type(data).__name__}")
        (item,) = typing.get_args(tp)
        return [_load(item, x, strict, f"{at}[{i}]") for i, x in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise ModelError(f"{at}: expected an object, got {type(data).__name__}")
        _, value = typing.get_args(tp)
        return {k: _load(value, x, strict, f"{at}.{k}") for k, x in data.items()}
    if isinstance(tp, type) and issubclass(tp, _Model):
        if not isinstance(data, dict):
            raise ModelError(f"{at}: expected an object, got {type(data).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}  # type: ignore[arg-type]
        if strict:
            unknown = sorted(set(data) - set(fields))
            if unknown:
                raise ModelError(f"{at}: fields the client does not know: {unknown}")
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = _load(hints[name], data[name], strict, f"{at}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if strict:
                    raise ModelError(f"{at}: the required field {name} is missing")
                kwargs[name] = None
        return tp(**kwargs)
    if tp in _PRIMITIVES:
        ok = isinstance(data, _PRIMITIVES[tp]) and not (tp is not bool and isinstance(data, bool))
        if not ok:
            raise ModelError(f"{at}: expected {tp.__name__}, got {data!r}")
        return data
    return data


def _decode(encoding: str, text: str) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode()


# ---- requests -------------------------------------------------------------------------

@dataclass
class Limits(_Model):
    """Limits a request asks for; each is clamped to the server's maximum. `memory` and
    `max_output` are bytes or a size such as "64MiB"."""
    SCHEMA: ClassVar[str] = "Limits"
    fuel: int | None = None
    memory: int | str | None = None
    timeout_ms: int | None = None
    max_output: int | str | None = None


@dataclass
class CellLimits(_Model):
    """A cell's limits; its memory is the session's, set when the session is created."""
    SCHEMA: ClassVar[str] = "CellLimits"
    fuel: int | None = None
    timeout_ms: int | None = None
    max_output: int | str | None = None


@dataclass
class InvokeRequest(_Model):
    SCHEMA: ClassVar[str] = "InvokeRequest"
    export: str
    args: list[int | float | str] | None = None
    limits: Limits | None = None
    profile: Profile | None = None


@dataclass
class RunRequest(_Model):
    SCHEMA: ClassVar[str] = "RunRequest"
    args: list[str] | None = None
    stdin: str | None = None
    stdin_base64: str | None = None
    env: dict[str, str] | None = None
    limits: Limits | None = None
    profile: Profile | None = None
    output: OutputEncoding | None = None


@dataclass
class ExecuteRequest(_Model):
    SCHEMA: ClassVar[str] = "ExecuteRequest"
    language: str
    code: str
    stdin: str | None = None
    files: dict[str, str] | None = None
    limits: Limits | None = None
    profile: Profile | None = None
    output: OutputEncoding | None = None


@dataclass
class CreateSession(_Model):
    SCHEMA: ClassVar[str] = "CreateSession"
    language: str
    limits: Limits | None = None
    profile: Profile | None = None


@dataclass
class CellRequest(_Model):
    SCHEMA: ClassVar[str] = "CellRequest"
    code: str
    stdin: str | None = None
    files: dict[str, str] | None = None
    limits: CellLimits | None = None
    output: OutputEncoding | None = None


class _Output:
    output_encoding: OutputEncoding
    stdout: str
    stderr: str

    @property
    def stdout_bytes(self) -> bytes:
        """stdout as bytes (exact with `output="base64"`)."""
        return _decode(self.output_encoding, self.stdout)

    @property
    def stderr_bytes(self) -> bytes:
        """stderr as bytes (exact with `output="base64"`)."""
        return _decode(self.output_encoding, self.stderr)


# ---- answers --------------------------------------------------------------------------

@dataclass
class Export(_Model):
    SCHEMA: ClassVar[str] = "Export"
    name: str
    params: list[str] | None
    """Value types (i32, i64, f32, f64); None when the export uses a type the host cannot pass."""
    results: list[str] | None


@dataclass
class Module(_Model):
    SCHEMA: ClassVar[str] = "Module"
    id: str
    name: str
    size_bytes: int
    status: Literal["ready", "compiling"]
    imports_wasi: bool | None = None
    exports: list[Export] | None = None


@dataclass
class ModuleList(_Model):
    SCHEMA: ClassVar[str] = "ModuleList"
    modules: list[Module]
    next_cursor: str | None


@dataclass
class InvokeResult(_Model):
    SCHEMA: ClassVar[str] = "InvokeResult"
    results: list[int | float | str]
    """Numbers, or strings for values JSON cannot hold (NaN, infinities)."""
    report: Report

    @property
    def outcome(self) -> str:
        return str(self.report.get("outcome"))


@dataclass
class RunResult(_Output, _Model):
    SCHEMA: ClassVar[str] = "RunResult"
    exit_code: int | None
    output_encoding: OutputEncoding
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    report: Report


@dataclass
class ExecuteResult(_Output, _Model):
    SCHEMA: ClassVar[str] = "ExecuteResult"
    exit_code: int | None
    """The code's exit status; None when it did not exit (a limit or a trap)."""
    outcome: Outcome
    output_encoding: OutputEncoding
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    runtime: str
    language: str
    version: str
    report: Report
    warm: bool | None = None
    """Whether a pre-started interpreter ran the code (one-shot executions only)."""


@dataclass
class CellResult(_Output, _Model):
    SCHEMA: ClassVar[str] = "CellResult"
    exit_code: int | None
    outcome: Outcome
    output_encoding: OutputEncoding
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    runtime: str
    language: str
    version: str
    report: Report
    session_alive: bool
    """False when the cell ended the interpreter (it exited or hit a limit): the session is
    gone, and the next cell is answered UnknownSession."""
    warm: bool | None = None


@dataclass
class Session(_Model):
    SCHEMA: ClassVar[str] = "Session"
    id: str
    runtime: str
    language: str
    created_at: str
    last_used_at: str
    expires_at: str
    cells: int


@dataclass
class SessionList(_Model):
    SCHEMA: ClassVar[str] = "SessionList"
    sessions: list[Session]


@dataclass
class RuntimePool(_Model):
    SCHEMA: ClassVar[str] = "RuntimePool"
    size: int
    ready: int
    warm: int
    cold: int


@dataclass
class Runtime(_Model):
    SCHEMA: ClassVar[str] = "Runtime"
    name: str
    language: str
    version: str
    sessions: bool
    pool: RuntimePool | None


@dataclass
class RuntimeList(_Model):
    SCHEMA: ClassVar[str] = "RuntimeList"
    runtimes: list[Runtime]


@dataclass
class Alert(_Model):
    SCHEMA: ClassVar[str] = "Alert"
    rule: str
    severity: str
    state: Literal["pending", "firing"]
    since: str
    value: float
    instance: str | None
    escalation_steps_notified: int
    acknowledged: bool
    acknowledged_at: str | None


@dataclass
class AlertList(_Model):
    SCHEMA: ClassVar[str] = "AlertList"
    enabled: bool
    alerts: list[Alert]


@dataclass
class AlertAck(_Model):
    SCHEMA: ClassVar[str] = "AlertAck"
    alert: Alert


MODELS: tuple[type[_Model], ...] = (
    Limits, CellLimits, InvokeRequest, RunRequest, ExecuteRequest, CreateSession, CellRequest,
    Export, Module, ModuleList, InvokeResult, RunResult, ExecuteResult, CellResult, Session,
    SessionList, RuntimePool, Runtime, RuntimeList, Alert, AlertList, AlertAck,
)
"""Every model, each with the OpenAPI schema it mirrors."""

UNMODELLED_SCHEMAS: dict[str, str] = {
    "Error": "raised as a typed exception (errors.py), never returned",
    "Report": "a free-form object in the API; returned as a dict (Report)",
}
"""The OpenAPI schemas with no model, and why."""
