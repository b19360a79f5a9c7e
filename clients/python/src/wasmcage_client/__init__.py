"""A typed Python client for the wasmcage HTTP API: `Client` (blocking) and `AsyncClient`.

    from wasmcage_client import Client
    print(Client().execute("python", "print(6 * 7)").stdout)   # 42
"""

from . import errors, models
from ._client import DEFAULT_URL, ROUTES, AsyncClient, Client, SessionHandle
from .errors import (
    AlertingDisabled, ApiError, AuthThrottled, BadRequest, BodyTimeout, Busy, ClientTimeout,
    Conflict, Forbidden, Gone, InvalidModule, KeyBusy, ModuleCompiling, ModuleTooLarge,
    NotFiring, NotFound, PayloadTooLarge, PolicyWidening, QuotaExceeded, RateLimited,
    RequestTimeout, RuntimesDisabled, RuntimesLoading, RuntimeUnavailable, ServerBusy,
    ServerError, SessionBusy, SessionEnded, SessionLimit, ShuttingDown, Timeout,
    TooManyRequests, TransportError, Unauthorized, Unavailable, UnknownExport,
    UnknownLanguage, UnknownModule, UnknownRule, UnknownSession, WasmcageError, WrongReplica,
)
from .models import (
    Alert, AlertList, CellLimits, CellResult, ExecuteResult, Export, InvokeResult, Limits,
    Module, ModuleList, RunResult, Runtime, RuntimeList, RuntimePool, Session, SessionList,
)

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
