"""Shared servers for the client's tests: real release `wasmcage serve` processes from
`tests/py/live.py` (`cargo xtask pytest` sets `WASMCAGE_BIN` and `WASMCAGE_TEST_WHEEL`)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "py"))

from live import KEY, OTHER_KEY, LiveServer  # noqa: E402

from wasmcage_client import Client  # noqa: E402

ALERTS = """
[evaluation]
interval = "100ms"

[channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/unreachable"

[[rules]]
name = "GuestsTrapping"
description = "Guests trapped in the last minute."
severity = "warning"
channels = ["hook"]
[rules.condition]
type = "threshold"
metric = "wasmcage_executions_total"
labels = { outcome = "trap" }
function = "increase"
window = "1m"
op = ">"
threshold = 0.0
"""


@pytest.fixture(scope="session")
def plain():
    """No runtimes; small body and stdin limits, a module quota of 4, alert rules that fire
    when a guest traps, and `alert_keys` = KEY only."""
    server = LiveServer(
        "max_body = \"65536\"\nmax_stdin = \"1024\"\n"
        f"alert_keys = [\"{KEY}\"]\n"
        "[quota]\nmax_modules = 4\n"
    )
    rules = server.dir / "alerts.toml"
    rules.write_text(ALERTS)
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace("[runtimes]", f'alert_rules = "{rules}"\n[runtimes]', 1))
    with server:
        yield server


@pytest.fixture(scope="session")
def langs():
    """Python and JavaScript served; at most 2 sessions per key."""
    server = LiveServer(runtimes=True)
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace("max_sessions_per_key = 4", "max_sessions_per_key = 2"))
    with server:
        # The runtimes load in the background: 503 runtimes_loading (Retry-After 2) until
        # then, which a client without retries sees as RuntimesLoading.
        from wasmcage_client import RuntimesLoading
        eager = Client(server.base, KEY, max_retries=0)
        patient = Client(server.base, KEY, max_retries=120)
        try:
            eager.list_runtimes()
        except RuntimesLoading as e:
            assert e.status == 503 and e.retry_after == 2
        assert {r.name for r in patient.list_runtimes().runtimes} == {"python", "javascript"}
        yield server


@pytest.fixture
def client(plain):
    with Client(plain.base, KEY, strict=True) as c:
        yield c


@pytest.fixture
def other(plain):
    with Client(plain.base, OTHER_KEY, strict=True) as c:
        yield c


@pytest.fixture
def lang(langs):
    with Client(langs.base, KEY, strict=True) as c:
        yield c
