"""Modules, alerts, the probes and the errors of the plain server, through `Client`."""

import base64

import pytest
from live import KEY
from wat import ADD, ECHO, EMPTY_BINARY, numbered

import wasmcage_client as wc
from wasmcage_client import Client


def test_upload_describe_list_invoke_run_delete(client):
    add = client.upload_module(ADD, name="add.wat")
    assert add.status == "ready" and add.name == "add.wat" and len(add.id) == 64
    assert [e.name for e in add.exports] == ["add", "trap", "spin"]
    assert add.exports[0].params == ["i32", "i32"] and add.exports[0].results == ["i32"]
    # The same bytes again are the same module, with its first name.
    assert client.upload_module(ADD, name="other.wat").name == "add.wat"
    assert client.get_module(add.id) == add

    out = client.invoke(add.id, "add", [2, 3])
    assert out.results == [5] and out.outcome == "completed"
    trapped = client.invoke(add.id, "trap")
    assert trapped.results == [] and trapped.outcome == "trap"
    spun = client.invoke(add.id, "spin", limits=wc.Limits(fuel=10_000))
    assert spun.outcome == "out_of_fuel"

    echo = client.upload_module(ECHO, name="echo.wat")
    text = client.run(echo.id, stdin="hello")
    assert (text.stdout, text.exit_code, text.output_encoding) == ("hello", 0, "text")
    raw = client.run(echo.id, stdin=b"\x00\xff\x01", output="base64")
    assert raw.stdout_bytes == b"\x00\xff\x01" and raw.stdout == base64.b64encode(b"\x00\xff\x01").decode()

    binary = client.upload_module(EMPTY_BINARY, name="empty.wasm")
    assert binary.exports == [] and binary.imports_wasi is False

    ids = [m.id for m in client.iter_modules(page_size=1)]
    assert sorted(ids) == ids and {add.id, echo.id, binary.id} <= set(ids)
    first = client.list_modules(limit=1)
    assert len(first.modules) == 1 and first.next_cursor == first.modules[0].id

    client.delete_module(binary.id)
    with pytest.raises(wc.UnknownModule) as e:
        client.get_module(binary.id)
    assert (e.value.status, e.value.code) == (404, "unknown_module") and e.value.request_id


def test_another_keys_modules_are_not_found(client, other):
    mine = client.upload_module(numbered(1))
    with pytest.raises(wc.UnknownModule):
        other.invoke(mine.id, "f1")
    assert mine.id not in {m.id for m in other.iter_modules()}


def test_keys_are_checked(plain):
    with pytest.raises(wc.Unauthorized) as missing:
        Client(plain.base, "").list_modules()
    assert missing.value.code == "unauthorized" and "required" in missing.value.message
    with pytest.raises(wc.Unauthorized) as wrong:
        Client(plain.base, "not-the-key-0123456789").list_modules()
    assert "not valid" in wrong.value.message
    # The probes and the document need no key.
    anonymous = Client(plain.base, "")
    assert anonymous.alive() is True and anonymous.ready() is True
    assert anonymous.health()["status"] in ("healthy", "degraded")
    assert anonymous.openapi()["openapi"] == "3.0.3"
    assert "wasmcage_http_requests_total" in anonymous.metrics()
    assert isinstance(anonymous.performance(), dict)


@pytest.mark.parametrize("call, error, code", [
    (lambda c, m: c.upload_module("(module (func"), wc.InvalidModule, "invalid_module"),
    (lambda c, m: c.upload_module(b""), wc.InvalidModule, "empty_module"),
    (lambda c, m: c.upload_module(ADD, name="bad\nname"), wc.BadRequest, "bad_name"),
    (lambda c, m: c.list_modules(limit=0), wc.BadRequest, "bad_query"),
    (lambda c, m: c.invoke(m, "nope"), wc.UnknownExport, "unknown_export"),
    (lambda c, m: c.invoke(m, "add", [1]), wc.BadRequest, "bad_arguments"),
    (lambda c, m: c.invoke(m, "add", [1, 2], limits={"memory": "lots"}), wc.BadRequest, "bad_limits"),
    (lambda c, m: c.invoke(m, "add", [1, 2], profile="lax"), wc.BadRequest, "bad_profile"),
    (lambda c, m: c.invoke(m, "add", [1, 2], profile="permissive"), wc.PolicyWidening, "policy_widening"),
    (lambda c, m: c.run(m), wc.UnknownExport, "not_a_command"),
    (lambda c, m: c.run(m, ["a\0b"]), wc.BadRequest, "bad_args"),
    (lambda c, m: c.run(m, env={"HOME": "/"}), wc.BadRequest, "env_not_allowed"),
    (lambda c, m: c.run(m, stdin="x" * 2000), wc.PayloadTooLarge, "stdin_too_large"),
    (lambda c, m: c.upload_module(b"\0asm" + b"\0" * 70_000), wc.PayloadTooLarge, "body_too_large"),
    (lambda c, m: c.get_module("0" * 64), wc.UnknownModule, "unknown_module"),
    (lambda c, m: c.get_module(".."), wc.UnknownModule, "unknown_module"),
    (lambda c, m: c.get_module("x/../../alerts"), wc.UnknownModule, "unknown_module"),
    (lambda c, m: c.execute("python", "1"), wc.RuntimesDisabled, "runtimes_disabled"),
    (lambda c, m: c.list_sessions(), wc.RuntimesDisabled, "runtimes_disabled"),
])
def test_each_error_has_its_class(client, call, error, code):
    module = client.upload_module(ADD).id
    with pytest.raises(error) as e:
        call(client, module)
    assert e.value.code == code, e.value
    assert isinstance(e.value, wc.ApiError) and isinstance(e.value, wc.WasmcageError)


def test_the_quota_is_a_typed_error(plain):
    # KEY_3 stores nothing else: the quota of 4 modules is its own.
    c = Client(plain.base, plain.keys[1], strict=True)
    for n in range(100, 104):
        c.upload_module(numbered(n))
    with pytest.raises(wc.QuotaExceeded) as e:
        c.upload_module(numbered(104))
    assert e.value.status == 403
    for m in list(c.iter_modules()):
        c.delete_module(m.id)


def test_alerts_list_acknowledge_and_refuse(client, other):
    assert client.list_alerts().enabled is True
    with pytest.raises(wc.UnknownRule):
        client.ack_alert("NoSuchRule")
    with pytest.raises(wc.Forbidden) as e:
        other.list_alerts()
    assert e.value.code == "forbidden"
    # A trap makes the rule fire on its next evaluation; until then, acknowledging is 409.
    add = client.upload_module(ADD)
    try:
        client.ack_alert("GuestsTrapping")
    except wc.NotFiring as refused:
        assert refused.status == 409
    client.invoke(add.id, "trap")
    import time
    deadline = time.monotonic() + 30
    while True:
        alerts = client.list_alerts().alerts
        if any(a.state == "firing" for a in alerts):
            break
        assert time.monotonic() < deadline, alerts
        time.sleep(0.05)
    acked = client.ack_alert("GuestsTrapping")
    assert acked.rule == "GuestsTrapping" and acked.acknowledged and acked.acknowledged_at


def test_transport_errors_are_typed():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on a port the kernel gave and took back.
    with pytest.raises(wc.TransportError):
        Client(f"http://127.0.0.1:{port}", KEY).alive()


def test_the_client_timeout_is_typed(plain, client):
    add = client.upload_module(ADD)
    slow = Client(plain.base, KEY, timeout=0.3)
    with pytest.raises(wc.ClientTimeout):
        slow.invoke(add.id, "spin", limits={"timeout_ms": 3000, "fuel": 10**10})


def test_no_arguments_read_the_environment(plain, monkeypatch):
    monkeypatch.setenv("WASMCAGE_URL", plain.base)
    monkeypatch.setenv("WASMCAGE_API_KEY", KEY)
    c = Client()
    assert c.base_url == plain.base
    assert isinstance(c.list_modules(), wc.ModuleList)
    monkeypatch.delenv("WASMCAGE_URL")
    assert Client().base_url == "http://127.0.0.1:8000"
