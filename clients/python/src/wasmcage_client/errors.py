"""Typed exceptions for the wasmcage API's errors.

Every error the server answers is `{"error": {"code", "message"}}` with an HTTP status. The
client raises the class mapped from the code (`ERROR_CODES`); a code it does not know falls
back to the class of its HTTP status (`STATUS_CLASSES`), so that a newer server's new codes
still land in the right family. Failures below HTTP (connection refused, reset, timeouts)
are a `TransportError`.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class WasmcageError(Exception):
    """The base of every exception this client raises."""


class TransportError(WasmcageError):
    """The request did not get an HTTP answer: connection refused or reset, DNS, TLS, or a
    protocol error. Whether the server ran anything is unknown; the client never retries it."""


class ClientTimeout(TransportError):
    """The client's own timeout passed before the answer arrived (the server may still be
    running the request)."""


class ApiError(WasmcageError):
    """The server answered with an error status.

    `status` is the HTTP status, `code` the API's error code (empty when the body was not an
    API error, e.g. from a proxy), `message` the server's explanation, `retry_after` the
    seconds the server asked to wait (from `Retry-After`), and `request_id` the server's
    `X-Request-Id` for its access log.
    """

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None,
                 request_id: str | None = None):
        super().__init__(f"{status} {code}: {message}" if code else f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.request_id = request_id


# 400
class BadRequest(ApiError):
    """The request is malformed or does not fit (bad JSON, limits, arguments, input)."""


class InvalidModule(BadRequest):
    """The module is not valid WebAssembly or WAT, imports something other than WASI preview 1,
    or is empty."""


class UnknownExport(BadRequest):
    """The module has no such export, or no `_start` to run as a command."""


class UnknownLanguage(BadRequest):
    """The server has no runtime for that language."""


# 401, 403
class Unauthorized(ApiError):
    """An API key is required, or the one given is not valid."""


class Forbidden(ApiError):
    """The key may not do this."""


class PolicyWidening(Forbidden):
    """The requested profile is wider than the server's."""


class QuotaExceeded(Forbidden):
    """The key's module count or bytes would pass its quota."""


# 404
class NotFound(ApiError):
    """No such thing for this key (another key's module or session is not found either)."""


class UnknownModule(NotFound):
    """No such module for this key."""


class UnknownSession(NotFound):
    """No such session for this key (it may have ended: a cell that ends the interpreter ends
    the session)."""


class UnknownRule(NotFound):
    """No such alert rule."""


class RuntimesDisabled(NotFound):
    """The server does not serve language runtimes."""


class AlertingDisabled(NotFound):
    """The server has no alert rules."""


# 408, 504
class Timeout(ApiError):
    """The server gave up on the request: its body arrived too slowly (408) or it ran past the
    server's request timeout (504)."""


class BodyTimeout(Timeout):
    """408: the body did not arrive within the server's body read timeout."""


class RequestTimeout(Timeout):
    """504: the request took longer than the server allows."""


# 409, 410
class Conflict(ApiError):
    """The request conflicts with the state of what it names."""


class SessionBusy(Conflict):
    """A cell of this session is running; send the next when it has finished."""


class NotFiring(Conflict):
    """Only a firing alert can be acknowledged."""


class Gone(ApiError):
    """What the request names existed and has ended."""


class SessionEnded(Gone):
    """The session's interpreter has ended."""


# 421
class WrongReplica(ApiError):
    """Another replica holds this session; `replica` names it (from `error.replica`), so that
    a client or ingress routing on replica ids can send the request there."""

    replica: str | None = None


# 413
class PayloadTooLarge(ApiError):
    """The body, stdin or module is past the server's limits."""


class ModuleTooLarge(PayloadTooLarge):
    """The module is past the engine's compile limits or its compile budget."""


# 429, 503: the server's "not now" answers.
class TooManyRequests(ApiError):
    """429: too many requests (see `retry_after`)."""


class RateLimited(TooManyRequests):
    """The key's rate limit is used up."""


class AuthThrottled(TooManyRequests):
    """Too many failed authentications from this address."""


class SessionLimit(TooManyRequests):
    """The key, or the server, holds its maximum of sessions (no `Retry-After`: end one)."""


class Unavailable(ApiError):
    """503: the server cannot take the request now (see `retry_after`)."""


class Busy(ApiError):
    """No capacity: no execution slot, memory budget or compile slot was free within the
    server's wait (503), or this key's compile slot is taken (429). Nothing ran."""


class ServerBusy(Busy, Unavailable):
    """503 `busy`: the server is at capacity."""


class KeyBusy(Busy, TooManyRequests):
    """429 `busy`: this key is already compiling or parsing a module."""


class ModuleCompiling(Unavailable):
    """The module is still being compiled after the server started."""


class RuntimesLoading(Unavailable):
    """The language runtimes are still loading after the server started."""


class RuntimeUnavailable(Unavailable):
    """An interpreter failed to start."""


class ShuttingDown(Unavailable):
    """The server is draining after SIGTERM; send the request to another instance."""


class ServerError(ApiError):
    """5xx other than 503 and 504: the server failed (`internal`, `storage`)."""


ERROR_CODES: dict[str, type[ApiError]] = {
    "bad_json": BadRequest,
    "bad_body": BadRequest,
    "bad_arguments": BadRequest,
    "bad_limits": BadRequest,
    "bad_profile": BadRequest,
    "bad_stdin": BadRequest,
    "bad_args": BadRequest,
    "bad_query": BadRequest,
    "bad_name": BadRequest,
    "bad_input": BadRequest,
    "env_not_allowed": BadRequest,
    "invalid_module": InvalidModule,
    "unsupported_import": InvalidModule,
    "empty_module": InvalidModule,
    "unknown_export": UnknownExport,
    "not_a_command": UnknownExport,
    "unknown_language": UnknownLanguage,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "policy_widening": PolicyWidening,
    "quota_exceeded": QuotaExceeded,
    "not_found": NotFound,
    "unknown_module": UnknownModule,
    "unknown_session": UnknownSession,
    "unknown_rule": UnknownRule,
    "runtimes_disabled": RuntimesDisabled,
    "alerting_disabled": AlertingDisabled,
    "body_timeout": BodyTimeout,
    "request_timeout": RequestTimeout,
    "session_busy": SessionBusy,
    "not_firing": NotFiring,
    "session_ended": SessionEnded,
    "wrong_replica": WrongReplica,
    "body_too_large": PayloadTooLarge,
    "stdin_too_large": PayloadTooLarge,
    "module_too_large": ModuleTooLarge,
    "rate_limited": RateLimited,
    "auth_throttled": AuthThrottled,
    "session_limit": SessionLimit,
    "busy": ServerBusy,  # 429 busy is KeyBusy: see error_class
    "module_compiling": ModuleCompiling,
    "runtimes_loading": RuntimesLoading,
    "runtime_unavailable": RuntimeUnavailable,
    "shutting_down": ShuttingDown,
    "internal": ServerError,
    "storage": ServerError,
}
"""Every error code the server emits, to its exception class."""

STATUS_CLASSES: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: Timeout,
    409: Conflict,
    410: Gone,
    421: WrongReplica,
    413: PayloadTooLarge,
    429: TooManyRequests,
    503: Unavailable,
    504: Timeout,
}
"""The class of a code the client does not know, by HTTP status (else `ServerError` for
5xx, `ApiError` for the rest)."""

RETRYABLE_CODES: frozenset[str] = frozenset({
    "rate_limited", "auth_throttled", "busy", "module_compiling", "runtimes_loading",
    "runtime_unavailable", "shutting_down",
})
"""The codes the client retries (with `Retry-After`): each is answered before the request's
work starts, so nothing ran and nothing was stored, and sending the same request again is
safe for every route."""


def error_class(status: int, code: str) -> type[ApiError]:
    """The exception class for an error answer."""
    if code == "busy" and status == 429:
        return KeyBusy
    cls = ERROR_CODES.get(code)
    if cls is not None:
        return cls
    if status in STATUS_CLASSES:
        return STATUS_CLASSES[status]
    return ServerError if status >= 500 else ApiError


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date; None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def from_response(response: httpx.Response) -> ApiError:
    """The typed exception for an error response."""
    code, message, replica = "", "", None
    try:
        body: Any = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = str(error.get("message") or "")
            replica = error.get("replica")
    except ValueError:
        pass
    if not message:
        # Not an API error body (a proxy's page, say): keep a bounded piece of it.
        message = response.text[:500] or response.reason_phrase
    cls = error_class(response.status_code, code)
    error = cls(response.status_code, code, message,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                request_id=response.headers.get("x-request-id"))
    if isinstance(error, WrongReplica) and isinstance(replica, str):
        error.replica = replica
    return error
