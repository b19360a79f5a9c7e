"""The README's code blocks for Python users run exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from live import WHEEL, binary

ROOT = Path(__file__).resolve().parents[2]


def readme_block(heading: str, language: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, re.S)
    assert len(blocks) == 1, f"expected one {language} block under {heading!r}"
    return blocks[0]


def test_the_mcp_agent_example_runs_as_written():
    code = readme_block("Give it to an agent (MCP)", "python")
    with tempfile.TemporaryDirectory() as home:
        # `wasmcage` on PATH and a fresh home with Python installed where `wasmcage runtime
        # fetch python` puts it (the SDK starts the server with only HOME, PATH and a few
        # other variables of the agent's environment).
        env = {
            "PATH": f"{Path(binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": home,
        }
        subprocess.run(
            [binary(), "runtime", "fetch", "python", "--wheel", WHEEL], env=env, check=True,
            capture_output=True,
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "45\n"


def test_the_python_client_example_runs_as_written():
    from live import KEY, LiveServer

    code = readme_block("Call it from Python", "python")
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 5, "the README promises five lines of Python"
    with LiveServer(runtimes=True) as server:
        env = {**os.environ, "WASMCAGE_URL": server.base, "WASMCAGE_API_KEY": KEY}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
