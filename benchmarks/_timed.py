"""Run a console entry point or a script in this (fresh) process and time its start-up apart.

    python benchmarks/_timed.py TIMING.json [--preload MOD,MOD] --entry PKG.MOD:FUNC -- ARGS...
    python benchmarks/_timed.py TIMING.json --script PATH -- ARGS...

``--entry``: ``FUNC(ARGS)`` is called exactly as the console script does (``nrsdark`` is
``nrsdark_dask.cli.main:main``); ``--preload`` modules are imported first.  ``--script``: the
script is imported as a module first (its top-level imports; ``__main__`` code not run), then
run as ``__main__`` with ``sys.argv = [PATH, *ARGS]``.

TIMING.json gets ``startup_s`` (process start to end of the imports: interpreter, imports,
numba cache loading of module-level code) and ``run_s`` (the call itself), so a benchmark can
show how much of a short wall time is start-up.  The exit code is the call's.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import runpy
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv or len(argv) < 3:
        sys.exit(__doc__)
    cut = argv.index("--")
    opts, args = argv[:cut], argv[cut + 1:]
    out = opts.pop(0)
    preload, entry, script = [], None, None
    while opts:
        key = opts.pop(0)
        if key == "--preload":
            preload = [m for m in opts.pop(0).split(",") if m]
        elif key == "--entry":
            entry = opts.pop(0)
        elif key == "--script":
            script = opts.pop(0)
        else:
            sys.exit(f"unknown option {key}")
    import psutil

    started = psutil.Process().create_time()
    skipped = []
    for mod in preload:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            skipped.append(mod)
    if entry:
        mod, func = entry.split(":")
        fn = getattr(importlib.import_module(mod), func)
    else:
        spec = importlib.util.spec_from_file_location("_timed_script", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    loaded = time.time()
    rc = 0
    try:
        if entry:
            rc = fn(args) or 0
        else:
            sys.argv = [script, *args]
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    end = time.time()
    with open(out, "w") as f:
        json.dump({"startup_s": loaded - started, "run_s": end - loaded, "rc": rc,
                   "preload_missing": skipped}, f)
    return rc


if __name__ == "__main__":
    sys.exit(main())
