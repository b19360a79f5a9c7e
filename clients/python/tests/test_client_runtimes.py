"""Python and JavaScript through the client: one-shot executions, sessions and their errors,
with the blocking and the asyncio client."""

import asyncio
import threading

import pytest
from live import KEY, OTHER_KEY

import wasmcage_client as wc
from wasmcage_client import AsyncClient, Client


def test_execute_python_and_javascript(lang):
    py = lang.execute("python", "print(6 * 7)")
    assert (py.stdout, py.exit_code, py.outcome, py.language) == ("42\n", 0, "exited", "python")
    assert py.report["outcome"] == "exited" and isinstance(py.warm, bool)
    js = lang.execute("javascript", "console.log([1, 2].map(x => x * 2).join(','))")
    assert js.stdout == "2,4\n" and js.runtime == "javascript"
    runtimes = {r.name: r for r in lang.list_runtimes().runtimes}
    assert runtimes["python"].sessions and runtimes["python"].pool.size == 1


def test_execute_with_files_stdin_limits_and_base64(lang):
    out = lang.execute("python", "import sys; print(open('data/in.txt').read() + sys.stdin.read())",
                       files={"data/in.txt": "from a file, "}, stdin="from stdin")
    assert out.stdout == "from a file, from stdin\n", out.stderr
    failed = lang.execute("python", "import sys; sys.stderr.write('no'); sys.exit(3)")
    assert (failed.exit_code, failed.stderr, failed.outcome) == (3, "no", "exited")
    raw = lang.execute("python", "import sys; sys.stdout.buffer.write(bytes([0, 255]))", output="base64")
    assert raw.stdout_bytes == b"\x00\xff"
    looped = lang.execute("python", "while True: pass", limits=wc.Limits(fuel=10**7))
    assert looped.outcome == "out_of_fuel" and looped.exit_code is None
    big = lang.execute("python", "print('x' * 100000)", limits={"max_output": 1000})
    assert big.stdout_truncated and len(big.stdout) == 1000


@pytest.mark.parametrize("call, error, code", [
    (lambda c: c.execute("cobol", "1"), wc.UnknownLanguage, "unknown_language"),
    (lambda c: c.execute("python", "1", files={"../x": "y"}), wc.BadRequest, "bad_input"),
    (lambda c: c.execute("python", "1", profile="permissive"), wc.PolicyWidening, "policy_widening"),
    (lambda c: c.get_session("0" * 32), wc.UnknownSession, "unknown_session"),
    (lambda c: c.get_session("not-a-session"), wc.UnknownSession, "unknown_session"),
    (lambda c: c.delete_session("0" * 32), wc.UnknownSession, "unknown_session"),
    (lambda c: c.execute_cell("0" * 32, "1"), wc.UnknownSession, "unknown_session"),
])
def test_runtime_errors_have_their_class(lang, call, error, code):
    with pytest.raises(error) as e:
        call(lang)
    assert e.value.code == code


def test_a_session_keeps_its_state_and_belongs_to_its_key(langs, lang):
    with lang.session("python") as s:
        assert s.execute("x = 20").stdout == ""
        lang.execute_cell(s.id, "open('/workspace/f', 'w').write('kept')")
        cell = s.execute("print(x + 22, open('/workspace/f').read())")
        assert cell.stdout == "42 kept\n" and cell.session_alive
        info = lang.get_session(s.id)
        assert info.cells == 3 and info.language == "python"
        assert s.id in {x.id for x in lang.list_sessions().sessions}
        with pytest.raises(wc.UnknownSession):
            Client(langs.base, OTHER_KEY).execute_cell(s.id, "print(x)")
        # A cell's memory is the session's: the client does not even send one.
        with pytest.raises(TypeError):
            s.execute("1", limits={"memory": 1})
    # Leaving the block ended it.
    with pytest.raises(wc.UnknownSession):
        lang.get_session(s.id)


def test_a_cell_that_ends_the_interpreter_ends_the_session(lang):
    s = lang.create_session("python")
    # SystemExit is caught by the session's driver; running out of fuel ends the interpreter.
    assert lang.execute_cell(s.id, "import sys; sys.exit(4)").session_alive
    ended = lang.execute_cell(s.id, "while True: pass", limits=wc.CellLimits(fuel=10**7))
    assert ended.session_alive is False and ended.outcome == "out_of_fuel"
    # The server forgets an ended session: the next cell is not found.
    with pytest.raises(wc.UnknownSession):
        lang.execute_cell(s.id, "1")


def test_a_busy_session_and_the_session_limit(langs, lang):
    s = lang.create_session("python")
    try:
        # Another cell while one runs is 409 session_busy; retried? no: it has no Retry-After.
        done = threading.Event()
        result = {}

        def slow():
            result["cell"] = lang.execute_cell(
                s.id, "import time; time.sleep(2); print('done')")
            done.set()

        threading.Thread(target=slow).start()
        seen = None
        while not done.is_set():
            try:
                lang.execute_cell(s.id, "1")
            except wc.SessionBusy as e:
                seen = e
                break
        assert seen is not None and seen.status == 409 and seen.retry_after is None
        done.wait(30)
        assert result["cell"].stdout == "done\n"
        # The key's limit is 2 sessions.
        second = lang.create_session("python")
        with pytest.raises(wc.SessionLimit) as e:
            lang.create_session("python")
        assert e.value.status == 429
        lang.delete_session(second.id)
    finally:
        lang.delete_session(s.id)


def test_the_async_client(langs):
    async def main():
        async with AsyncClient(langs.base, KEY, strict=True) as c:
            results = await asyncio.gather(*[c.execute("python", f"print({n} * 2)") for n in range(4)])
            assert [r.stdout for r in results] == [f"{n * 2}\n" for n in range(4)]
            s = await c.create_session("python")
            await c.execute_cell(s.id, "y = 'kept'")
            assert (await c.execute_cell(s.id, "print(y)")).stdout == "kept\n"
            assert s.id in {x.id for x in (await c.list_sessions()).sessions}
            assert (await c.get_session(s.id)).cells == 2
            await c.delete_session(s.id)
            with pytest.raises(wc.UnknownSession):
                await c.get_session(s.id)
            with pytest.raises(wc.UnknownLanguage):
                await c.execute("cobol", "1")
            assert {r.name for r in (await c.list_runtimes()).runtimes} == {"python", "javascript"}
    asyncio.run(main())
