"""Shared pieces of the benchmark harness (``make bench``; see benchmarks/README.md).

* :func:`run_monitored`: run a command in a fresh process (its own session), poll the RSS of
  its whole process tree every 0.05 s (psutil, children recursively, summed) and return wall
  time, peak tree RSS and the exit code; optionally kill the tree above a memory limit so a
  runaway case cannot take the shared machine down.
* :func:`drop_page_cache`: make the next read of a store come from disk.
* :func:`metric`, :func:`write_result`, :func:`write_summary`: every benchmark writes
  ``benchmarks/results/<name>.json`` (machine, git state, metrics with targets, details) and
  then regenerates ``benchmarks/results/SUMMARY.md`` from all of them.

``python benchmarks/_util.py summary`` regenerates SUMMARY.md alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"          # generated data sets (cached, git-ignored); set_data_dir()
RESULTS = BENCH / "results"
LOGS = DATA / "logs"           # stdout/stderr of every monitored command
BIN = Path(sys.executable).parent
NRSDARK = BIN / "nrsdark"
PYTHON = Path(sys.executable)
MB = 1e6
GiB = 2**30

# order of the benchmarks in SUMMARY.md (others follow alphabetically)
ORDER = ("kernel", "build", "cold", "big", "calibrate")


def set_data_dir(path) -> None:
    """Cache data sets (and logs) under ``path`` instead of benchmarks/data."""
    global DATA, LOGS
    DATA = Path(path).resolve()
    LOGS = DATA / "logs"


class BenchError(RuntimeError):
    """A prerequisite is missing or a measured command failed: one clear message."""


def rel(path) -> str:
    """``path`` relative to the repository when inside it (for messages and results)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---- units ----------------------------------------------------------------------------------
from nrsdark_dask.config import parse_bytes  # noqa: E402,F401  ('3GiB', '500MB', '1.5e9' -> bytes)


# ---- machine and code state -------------------------------------------------------------------
def machine() -> dict:
    import psutil

    out = {"cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / GiB, 1),
           "cpu": _cpu_model(), "python": platform.python_version(),
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("numpy", "numba", "dask", "zarr", "xarray", "astropy", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state() -> dict:
    def git(*a):
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    changed = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no",
                                    "--", "nrsdark_dask", "benchmarks").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


# ---- running and measuring -----------------------------------------------------------------
def _tree_rss(proc) -> tuple[int, int]:
    """Summed RSS of ``proc`` and all its descendants, and how many processes that is."""
    import psutil

    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0
    total = n = 0
    for p in procs:
        try:
            total += p.memory_info().rss
            n += 1
        except psutil.Error:  # exited between listing and reading
            pass
    return total, n


def run_monitored(cmd, label: str, env: dict | None = None, poll: float = 0.05,
                  kill_above: int | None = None, cwd=ROOT, echo: bool = True) -> dict:
    """Run ``cmd``; return ``wall_s``, ``peak_rss`` (bytes, whole tree, polled), ``max_rss_one``
    (the largest single process, from the kernel's rusage), ``cpu_s`` (user + system of the
    tree, waited-for descendants included), ``rc``, ``killed``, ``log``.

    stdout and stderr go to ``benchmarks/data/logs/<label>.log``.  The command runs in its own
    session; with ``kill_above`` (bytes) the tree is killed when its RSS passes it.
    """
    import psutil

    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{label}.log"
    cmd = [str(c) for c in cmd]
    full_env = dict(os.environ, **(env or {}))
    if echo:
        print(f"  $ {' '.join(cmd)}", flush=True)
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=full_env, cwd=cwd,
                                 start_new_session=True)
        proc = psutil.Process(child.pid)
        peak = peak_n = 0
        killed = None
        try:
            while True:
                pid, status, ru = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    wall = time.perf_counter() - t0
                    break
                rss, n = _tree_rss(proc)
                if rss > peak:
                    peak = rss
                peak_n = max(peak_n, n)
                if kill_above and rss > kill_above and not killed:
                    killed = (f"process tree RSS {rss / GiB:.3f} GiB > limit "
                              f"{kill_above / GiB:.3f} GiB")
                    _kill_session(child.pid, signal.SIGKILL)
                time.sleep(poll)
        except BaseException:  # Ctrl-C etc.: the child runs in its own session, stop it too
            _kill_session(child.pid, signal.SIGTERM)
            raise
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4 above
    return {"wall_s": wall, "peak_rss": peak, "max_rss_one": ru.ru_maxrss * 1024,
            "cpu_s": ru.ru_utime + ru.ru_stime, "max_procs": peak_n, "rc": child.returncode,
            "killed": killed, "log": str(log)}


def _kill_session(pid: int, sig) -> None:
    """Signal the session (process group) of a child we started with start_new_session."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def check_ok(res: dict, what: str) -> dict:
    if res["killed"]:
        raise BenchError(f"{what}: killed, {res['killed']} (log: {res['log']})")
    if res["rc"] != 0:
        raise BenchError(f"{what}: exit code {res['rc']}; last lines of {res['log']}:\n"
                         + tail(res["log"]))
    return res


def make_store(sim: Path, manifest: Path, store: Path, name: str, subarray: str,
               ngroups: int, nexp: int, seed: int) -> dict:
    """A simulated G140H set made with the project's commands (``simulate`` unless ``sim``
    holds one, ``select``, ``calibrate --scheduler local:2``; logs under DATA/logs), every
    exposure calibrated into ``store``.  Returns the timings and peak RSS."""
    from nrsdark_dask.store import RampStore

    prep = {}
    if not (sim / "simulation.json").exists() or not (sim / "uncal").is_dir():
        if sim.exists():  # a set whose uncal files were deleted once scored is simulated again
            shutil.rmtree(sim)
        print(f"data set {name}: simulating {rel(sim)}")
        r = check_ok(run_monitored([NRSDARK, "simulate", sim, "--subarray", subarray,
                                    "--ngroups", ngroups, "--nexp", nexp, "--seed", seed,
                                    "--gratings", "G140H", "--workers", 2], f"{name}-simulate"),
                     "nrsdark simulate")
        prep.update(simulate_s=r["wall_s"], simulate_peak_rss=r["peak_rss"])
    r = check_ok(run_monitored([NRSDARK, "select", sim / "uncal", "--telemetry",
                                sim / "telemetry.ecsv", "-o", manifest], f"{name}-select"),
                 "nrsdark select")
    prep["select_s"] = r["wall_s"]
    print(f"data set {name}: calibrating into {rel(store)} (some minutes)")
    r = check_ok(run_monitored([NRSDARK, "calibrate", manifest, "--store", store, "--refkit",
                                sim / "refkit", "--scheduler", "local:2"], f"{name}-calibrate"),
                 "nrsdark calibrate")
    prep.update(calibrate_s=r["wall_s"], calibrate_peak_rss=r["peak_rss"])
    n = len(RampStore(store).committed())
    if n != nexp:
        raise BenchError(f"{store}: {n} of {nexp} exposures calibrated (select rejected some? "
                         f"see {manifest})")
    return prep


def tail(path, n: int = 15) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + ln for ln in lines[-n:])


def drop_page_cache(root: Path) -> str:
    """Evict the files under ``root`` from the page cache; return how.

    ``drop_caches``: ``os.sync()`` then ``3 > /proc/sys/vm/drop_caches`` (root on Linux; the
    whole machine's cache).  Otherwise ``fadvise``: ``posix_fadvise(DONTNEED)`` on every file of
    ``root`` after fsync, which evicts exactly those (clean) pages without privileges; this is
    better than reading a fresh copy, whose pages the copy itself leaves cached.
    """
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        pass
    if not hasattr(os, "posix_fadvise"):
        return "none (page cache could not be dropped: figures may include cached data)"
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "fadvise"


def free_disk(path: Path) -> int:
    path = Path(path)
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


# ---- results --------------------------------------------------------------------------------
def metric(name: str, value, unit: str = "", target=None, op: str = ">=", fmt: str = "{:.3g}",
           note: str = "") -> dict:
    """One measured number.  ``target`` with ``op`` ('>=' or '<=' or '==') gives pass/miss;
    ``value`` None means not measured (shown as such)."""
    ok = None
    if target is not None and value is not None:
        ok = {">=": value >= target, "<=": value <= target, "==": value == target}[op]
    return {"name": name, "value": value, "unit": unit, "target": target, "op": op,
            "pass": None if ok is None else bool(ok), "fmt": fmt, "note": note}


def _fmt(m: dict, key: str) -> str:
    v = m[key]
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    try:
        return m["fmt"].format(v)
    except (ValueError, TypeError):
        return str(v)


def print_metrics(metrics: list[dict]):
    for m in metrics:
        unit = f" {m['unit']}" if m["unit"] else ""
        tgt = f"   (target {m['op']} {_fmt(m, 'target')}{unit}: " \
              f"{'pass' if m['pass'] else 'MISS'})" if m["target"] is not None else ""
        note = f"   [{m['note']}]" if m.get("note") else ""
        print(f"  {m['name']:<52s} {_fmt(m, 'value'):>10s}{unit}{tgt}{note}")


def write_result(name: str, case: str, title: str, metrics: list[dict], details: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "case": case, "title": title,
               "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": machine(), "git": git_state(), "metrics": metrics,
               "details": details}
    path = RESULTS / f"{name}-{case}.json" if case else RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    summary = write_summary()
    print(f"wrote {summary.relative_to(ROOT)}")
    return path


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_summary() -> Path:
    """SUMMARY.md: one table of every metric of every ``results/*.json`` with a ``metrics``
    list (files of other formats are listed below the table)."""
    rows, runs, other = [], [], []
    files = sorted(RESULTS.glob("*.json"))

    def order(item):
        b = item[1].get("benchmark", "")
        return (ORDER.index(b) if b in ORDER else len(ORDER), b, item[1].get("case", ""))

    loaded = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            other.append(f.name)
            continue
        if not isinstance(d, dict) or not isinstance(d.get("metrics"), list):
            other.append(f.name)
            continue
        loaded.append((f, d))
    for f, d in sorted(loaded, key=order):
        for m in d["metrics"]:
            m = dict({"unit": "", "target": None, "op": ">=", "pass": None, "fmt": "{:.3g}",
                      "note": ""}, **m)
            result = "" if m["pass"] is None else ("pass" if m["pass"] else "**miss**")
            target = f"{m['op']} {_fmt(m, 'target')}" if m["target"] is not None else ""
            unit = f" {m['unit']}" if m["unit"] else ""
            name = m["name"] + (f" ({m['note']})" if m["note"] else "")
            rows.append(f"| {d.get('title') or d['benchmark']} | {name} | "
                        f"{_fmt(m, 'value')}{unit} | {target}{unit if target else ''} | "
                        f"{result} |")
        g = d.get("git", {})
        mach = d.get("machine", {})
        runs.append(f"- `{f.name}`: {d.get('date', '?')}, git {g.get('commit', '?')}"
                    + (" + uncommitted changes" if g.get("uncommitted") else "")
                    + f", {mach.get('cores', '?')} cores, {mach.get('ram_gib', '?')} GiB RAM"
                    + (f", load {mach['load_avg_1min']}" if "load_avg_1min" in mach else ""))
    text = ["# Benchmark results", "",
            "Generated by the benchmark scripts (`make bench`; see `benchmarks/README.md`) "
            "from `benchmarks/results/*.json`; do not edit by hand.", "",
            "| benchmark | measurement | value | target | result |",
            "|---|---|---|---|---|", *rows, "", "Runs:", "", *runs]
    if other:
        text += ["", "Other result files (not in the table): "
                 + ", ".join(f"`{o}`" for o in other)]
    out = RESULTS / "SUMMARY.md"
    out.write_text("\n".join(text) + "\n")
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["summary"]:
        print(write_summary())
    else:
        sys.exit("usage: python benchmarks/_util.py summary")
