"""The MCP server, driven by the official Python SDK (`mcp` from PyPI): over stdio
(`wasmcage mcp`) and over Streamable HTTP (`/mcp` on `wasmcage serve`)."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from live import KEY, LiveServer, binary

pytestmark = pytest.mark.anyio

TOOLS = {
    "execute_python",
    "execute_javascript",
    "run_wasm",
    "create_session",
    "execute_in_session",
    "close_session",
    "list_modules",
}

# A module with an export and a WASI command that echoes its stdin.
ADD_WAT = '(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))'
ECHO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 256))
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 4) (i32.load (i32.const 8)))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))
"""


@pytest.fixture
def anyio_backend():
    return "asyncio"


@asynccontextmanager
async def stdio_session(server: LiveServer, key: str | None = KEY):
    env = {"PATH": os.environ.get("PATH", "")}
    if key:
        env["WASMCAGE_API_KEY"] = key
    params = StdioServerParameters(
        command=binary(), args=["mcp", "--config", str(server.config_path)], env=env
    )
    with open(server.dir / "mcp-stderr.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def http_session(server: LiveServer, key: str | None = KEY):
    headers = {"x-api-key": key} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as client:
        async with streamable_http_client(server.base + "/mcp", http_client=client) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text(result) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


async def exercise_runtimes(session: ClientSession) -> None:
    """The one-shot and session tools, a guest failure, a timeout and bad arguments."""
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} == TOOLS
    for tool in listed.tools:
        assert tool.input_schema["type"] == "object"
        assert tool.description

    r = await session.call_tool("execute_python", {"code": "import sys\nprint(1+1)\nprint('e', file=sys.stderr)"})
    assert not r.is_error, text(r)
    assert r.structured_content["stdout"] == "2\n"
    assert r.structured_content["stderr"] == "e\n"
    assert r.structured_content["exit_code"] == 0
    assert r.structured_content["report"]["runtime"] == "python"
    assert "2" in text(r)

    r = await session.call_tool(
        "execute_javascript", {"code": "console.log(6*7)", "limits": {"timeout_ms": 5000}}
    )
    assert not r.is_error, text(r)
    assert r.structured_content["stdout"] == "42\n"

    # Files land in /workspace; stdin is read.
    r = await session.call_tool(
        "execute_python",
        {"code": "import sys\nprint(open('data.txt').read() + sys.stdin.read())",
         "files": {"data.txt": "ab"}, "stdin": "cd"},
    )
    assert r.structured_content["stdout"] == "abcd\n", text(r)

    # The guest failing is a tool result with isError, never a protocol error.
    r = await session.call_tool("execute_python", {"code": "raise SystemExit(3)"})
    assert r.is_error
    assert r.structured_content["exit_code"] == 3
    r = await session.call_tool("execute_python", {"code": "1/0"})
    assert r.is_error
    assert "ZeroDivisionError" in r.structured_content["stderr"]

    # A guest that never stops ends at its deadline (well before its fuel runs out).
    r = await session.call_tool(
        "execute_python", {"code": "while True: pass", "limits": {"timeout_ms": 40}}
    )
    assert r.is_error
    assert r.structured_content["outcome"] == "timeout", text(r)

    # Bad arguments are a clear tool error.
    r = await session.call_tool("execute_python", {"cod": "print(1)"})
    assert r.is_error
    assert r.structured_content["error"]["code"] == "bad_input"
    r = await session.call_tool("create_session", {"language": "cobol"})
    assert r.is_error
    assert r.structured_content["error"]["code"] == "unknown_language"

    # Sessions keep state between calls, and end when closed.
    r = await session.call_tool("create_session", {"language": "python"})
    assert not r.is_error, text(r)
    sid = r.structured_content["id"]
    r = await session.call_tool("execute_in_session", {"session_id": sid, "code": "x = 41"})
    assert not r.is_error, text(r)
    r = await session.call_tool("execute_in_session", {"session_id": sid, "code": "x += 1\nprint(x)"})
    assert r.structured_content["stdout"] == "42\n", text(r)
    r = await session.call_tool("close_session", {"session_id": sid})
    assert not r.is_error, text(r)
    r = await session.call_tool("execute_in_session", {"session_id": sid, "code": "print(x)"})
    assert r.is_error
    assert r.structured_content["error"]["code"] == "unknown_session"
    # An id that is not one never reaches a URL.
    r = await session.call_tool("close_session", {"session_id": "../../v1/modules"})
    assert r.is_error
    assert r.structured_content["error"]["code"] == "bad_input"

    # An unknown tool is the one protocol error.
    with pytest.raises(MCPError):
        await session.call_tool("rm_rf", {})


async def test_stdio_runs_every_runtime_tool():
    with LiveServer(runtimes=True) as server:
        server.stop_process()
        async with stdio_session(server) as session:
            await exercise_runtimes(session)
            r = await session.call_tool("list_modules", {})
            assert not r.is_error
            assert r.structured_content["modules"] == []
            r = await session.call_tool("run_wasm", {"module": "nothing-here"})
            assert r.is_error
            assert r.structured_content["error"]["code"] == "unknown_module"


async def test_stdio_oversize_input_is_a_tool_error():
    with LiveServer('max_stdin = "1KiB"', runtimes=True) as server:
        server.stop_process()
        async with stdio_session(server) as session:
            r = await session.call_tool("execute_python", {"code": "print(1)", "stdin": "x" * 4096})
            assert r.is_error
            assert r.structured_content["error"]["code"] == "stdin_too_large"
            assert r.structured_content["error"]["status"] == 413


async def test_stdio_with_keys_needs_one():
    with LiveServer(runtimes=True) as server:
        server.stop_process()
        # The configuration has keys: without WASMCAGE_API_KEY the server refuses to start.
        with pytest.raises(Exception):
            async with stdio_session(server, key=None) as session:
                await session.list_tools()
        log = (server.dir / "mcp-stderr.log").read_text()
        assert "WASMCAGE_API_KEY" in log
        async with stdio_session(server) as session:
            r = await session.call_tool("list_modules", {})
            assert not r.is_error, text(r)


async def test_http_runs_every_tool_as_the_callers_key():
    with LiveServer(runtimes=True) as server:
        headers = {"x-api-key": KEY}
        for name, wat in (("adder", ADD_WAT), ("echo", ECHO_WAT)):
            up = httpx.post(f"{server.base}/v1/modules?name={name}", content=wat, headers=headers)
            assert up.status_code == 201, up.text
        add_id = httpx.get(server.base + "/v1/modules", headers=headers).json()["modules"]
        async with http_session(server) as session:
            await exercise_runtimes(session)
            r = await session.call_tool("list_modules", {})
            names = {m["name"] for m in r.structured_content["modules"]}
            assert names == {"adder", "echo"}
            r = await session.call_tool("run_wasm", {"module": "adder", "export": "add", "args": [2, 3]})
            assert not r.is_error, text(r)
            assert r.structured_content["results"] == [5]
            r = await session.call_tool("run_wasm", {"module": "echo", "stdin": "hello"})
            assert not r.is_error, text(r)
            assert r.structured_content["stdout"] == "hello"
            by_id = next(m["id"] for m in add_id if m["name"] == "adder")
            r = await session.call_tool("run_wasm", {"module": by_id, "export": "add", "args": [1, 1]})
            assert r.structured_content["results"] == [2]
        # Each call is counted by tool, transport and result.
        metrics = httpx.get(server.base + "/metrics").text.splitlines()

        def counted(tool: str, result: str) -> float:
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics
                if line.startswith("wasmcage_mcp_tool_calls_total{")
                and f'tool="{tool}"' in line
                and 'transport="http"' in line
                and f'result="{result}"' in line
            )

        assert counted("run_wasm", "ok") == 3
        assert counted("execute_python", "guest_error") >= 3
        assert counted("execute_python", "refused") >= 1
        # Another key sees none of them: tool calls act as the key of the MCP request.
        async with http_session(server, key="other-key-0123456789abcdef") as session:
            r = await session.call_tool("list_modules", {})
            assert r.structured_content["modules"] == []
            r = await session.call_tool("run_wasm", {"module": "adder", "export": "add", "args": [1, 2]})
            assert r.is_error
            assert r.structured_content["error"]["code"] == "unknown_module"


async def test_http_without_a_key_is_refused():
    with LiveServer() as server:
        raw = httpx.post(
            server.base + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
        assert raw.status_code == 401
        assert raw.json()["error"]["code"] == "unauthorized"
        with pytest.raises(Exception):
            async with http_session(server, key=None) as session:
                await session.list_tools()
        with pytest.raises(Exception):
            async with http_session(server, key="wrong-key-0123456789abcdef") as session:
                await session.list_tools()


async def test_http_operator_caps_limit_what_an_agent_asks():
    config = '[mcp.max_limits]\ntimeout = "40ms"'
    with LiveServer(config, runtimes=True) as server:
        async with http_session(server) as session:
            r = await session.call_tool(
                "execute_python", {"code": "while True: pass", "limits": {"timeout_ms": 20000}}
            )
            assert r.is_error
            assert r.structured_content["outcome"] == "timeout", text(r)
            assert r.structured_content["report"]["duration_ms"] < 5000


async def test_http_rate_limit_applies_to_mcp_requests():
    with LiveServer("[rate_limit]\nper_second = 0.001\nburst = 3") as server:
        statuses = []
        for i in range(6):
            raw = httpx.post(
                server.base + "/mcp",
                json={"jsonrpc": "2.0", "id": i, "method": "ping"},
                headers={"accept": "application/json, text/event-stream", "x-api-key": KEY},
            )
            statuses.append(raw.status_code)
        assert statuses.count(429) >= 3, statuses


async def test_mcp_can_be_turned_off():
    with LiveServer("[mcp]\nenabled = false") as server:
        raw = httpx.post(server.base + "/mcp", json={}, headers={"x-api-key": KEY})
        assert raw.status_code == 404


async def test_http_refuses_foreign_hosts():
    # A page on another origin reaching a loopback server through DNS rebinding arrives with
    # its own Host: refused even with a key, while the server's own names are served.
    with LiveServer() as server:
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = "application/json, text/event-stream"
        port = server.base.rsplit(":", 1)[1]
        for host, ok in ((f"attacker.example:{port}", False), (f"localhost:{port}", True)):
            raw = httpx.post(
                server.base + "/mcp",
                json=ping,
                headers={"accept": accept, "x-api-key": KEY, "host": host},
            )
            assert (raw.status_code == 200) == ok, (host, raw.status_code, raw.text)
