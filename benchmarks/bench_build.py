"""``nrsdark build`` end to end: against the in-memory script, 1 vs 2 workers, against a cold
read of the store, and (``--big``) on a store larger than RAM.

    .venv/bin/python benchmarks/bench_build.py                 # parts b and c (503 MB case)
    .venv/bin/python benchmarks/bench_build.py --big           # b, c and d (37 GB store)
    .venv/bin/python benchmarks/bench_build.py --only big --big-nexp 3 --big-ngroups 10

b) **build vs the in-memory baseline** (``results/build-<N>MB.json``).  The data set is
   ``nrsdark simulate --subarray ALLSLITS --ngroups 20 --nexp 12 --gratings G140H`` (no
   artifacts), ``nrsdark select`` and ``nrsdark calibrate --scheduler local:2`` into
   ``benchmarks/data/allslits20.zarr`` (12 x 20 x 256 x 2048 float32 = 503 MB of ramps), made
   once and cached (a store of an older schema is recalibrated).  Then, each in a fresh process:
   an untimed warm-up build (numba cache, page cache), ``nrsdark build --scheduler threads
   --workers 1`` (numba/BLAS limited to one thread), ``--workers 2``, and
   ``benchmarks/baseline_inmemory.py STORE``.  Per run: wall time of the process, peak RSS of
   its whole process tree (psutil, polled every 0.05 s, summed), CPU time, and MB/s = ramp bytes
   (E x G x ny x nx x 4) / wall.  Each process runs under ``benchmarks/_timed.py``, which calls
   the same entry point (``nrsdark_dask.cli.main:main`` / the script's ``__main__``) and reports
   its
   start-up (interpreter + imports) apart from the run, so "excluding start-up" ratios are shown
   too; ``--no-split`` runs the ``nrsdark`` console script itself instead.
c) **cold read** (``results/cold-<N>MB.json``): the store's files are evicted from the page
   cache (``--drop store``, default: ``posix_fadvise(DONTNEED)`` on every file of the store,
   which drops exactly the store and leaves the Python libraries cached, so the build's
   start-up is not charged with a cold venv; ``--drop global``: ``sync; 3 >
   /proc/sys/vm/drop_caches``; residency is checked with ``fincore``), then every chunk file of
   ``ramp`` and ``groupdq`` is read once, in store order, with plain 8 MiB reads: MB/s = ramp
   bytes / wall (disk bytes/s also shown).  Then the store is evicted again and built with
   ``--workers 2``: its throughput as a fraction of the cold read (target >= 50 %).
d) **larger than RAM** (``--big``/``--only big``; ``results/big-<N>GB.json``): a TRAD
   full-frame store of ``--big-nexp`` 25 x ``--big-ngroups`` 88 (37 GB of ramps) is written
   directly with the store API (no jwst): noise + slope ramps with cosmic-ray jumps and hot
   pixels, and the per-exposure summaries and coordinates ``calibrate`` writes.  Refused when
   the disk has less free space than the store + the build's output + 5 GB (45 GB at the
   default size).  Then ``nrsdark build --workers 2`` on it: peak RSS of the process tree
   (target <= 3 GiB; the tree is killed above ``--big-kill-above``, default 12 GiB, to protect
   the shared machine) and wall time.  The store is deleted afterwards unless ``--keep`` (a
   kept store of the same size is reused).

Targets (issue 9): build on 1 thread >= 10x the in-memory script's MB/s; 2 workers >= 1.8x 1;
cold build on 2 workers >= 50 % of the cold-read rate; peak RSS <= 3 GiB for the big store.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util as U  # noqa: E402
from _util import (BENCH, GiB, MB, NRSDARK, PYTHON, ROOT, BenchError, check_ok,  # noqa: E402
                   drop_page_cache, rel, free_disk, metric, parse_bytes, print_metrics,
                   run_monitored, write_result)

BASELINE = BENCH / "baseline_inmemory.py"
TIMED = BENCH / "_timed.py"
ONE_THREAD = {v: "1" for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                               "MKL_NUM_THREADS")}
PRELOAD_BUILD = ("nrsdark_dask.cli.main,nrsdark_dask.stages.build,nrsdark_dask.reduction.graph,"
                 "nrsdark_dask.export.fits,nrsdark_dask.kernels,stdatamodels.jwst.datamodels")


# ---- prerequisites --------------------------------------------------------------------------
def check_prerequisites(need_baseline: bool, build_options=("--workers",)):
    problems = []
    if not NRSDARK.exists():
        problems.append(f"{NRSDARK} not found: run `make venv` first")
    else:
        r = subprocess.run([NRSDARK, "build", "--help"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            problems.append("`nrsdark build --help` fails:\n" + (r.stderr or r.stdout)[-2000:])
        else:
            missing = [o for o in build_options if o not in r.stdout]
            if missing:
                problems.append(f"`nrsdark build` has no {', '.join(missing)} option yet "
                                "(issue 9 adds --workers N and --task-memory BYTES)")
    if need_baseline and not BASELINE.exists():
        problems.append(f"{rel(BASELINE)} is missing (the in-memory baseline)")
    if problems:
        raise BenchError("cannot run the build benchmark:\n  - " + "\n  - ".join(problems))


# ---- the 503 MB data set ----------------------------------------------------------------------
def store_info(store: Path) -> dict:
    from nrsdark_dask.store import RampStore

    s = RampStore(store)
    lay = s.layout()
    n = len(s.committed())
    return {"n_exposures": n, "ngroups": lay.ngroups, "ny": lay.ny, "nx": lay.nx,
            "schema": getattr(lay, "schema", 1),
            "group_chunk": getattr(lay, "groups_per_chunk", lay.ngroups),
            "tile": [lay.tile_y, lay.tile_x],
            "ramp_bytes": n * lay.ngroups * lay.ny * lay.nx * 4,
            "disk_bytes": sum(f.stat().st_size for f in store.rglob("*") if f.is_file())}


def ensure_allslits(nexp: int, ngroups: int, seed: int, recalibrate: bool) -> tuple[Path, dict]:
    """Simulate, select and calibrate the ALLSLITS data set once; reuse it afterwards."""
    from nrsdark_dask.store import SCHEMA_VERSION, RampStore, StoreError

    name = f"allslits{ngroups}" + ("" if nexp == 12 else f"x{nexp}")
    store, sim = U.DATA / f"{name}.zarr", U.DATA / f"{name}-sim"
    manifest = U.DATA / f"{name}-manifest.ecsv"
    prep = {"store": str(rel(store)), "cached": True}
    if store.exists() and not recalibrate:
        try:
            s = RampStore(store)
            lay, n = s.layout(), len(s.committed())
            schema = getattr(lay, "schema", 1)
            reason = (f"schema {schema} < current {SCHEMA_VERSION}" if schema <
                      SCHEMA_VERSION else f"{n} of {nexp} exposures" if n != nexp else None)
        except (StoreError, OSError, KeyError, ValueError) as exc:
            reason = f"unreadable ({exc})"
        if reason is None:
            print(f"data set: cached {rel(store)} ({nexp} x {ngroups} groups)")
            return store, prep
        print(f"data set: cached store is stale ({reason}): recalibrating")
    if store.exists():
        shutil.rmtree(store)
    prep["cached"] = False
    U.DATA.mkdir(parents=True, exist_ok=True)
    prep.update(U.make_store(sim, manifest, store, name, "ALLSLITS", ngroups, nexp, seed))
    return store, prep


# ---- one build / baseline run ---------------------------------------------------------------
UNCHECKED = {"NRSDARK_CHUNK_CHECKS": "0"}  # the per-read CRC32C checks off (their cost)


def build_run(store: Path, label: str, workers: int, extra: list[str], split: bool,
              kill_above=None, check: bool = True, env: dict | None = None) -> dict:
    outdir = U.DATA / "out" / label
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    args = ["build", "--store", store, "--outdir", outdir, "--scheduler", "threads",
            "--workers", workers, *extra]
    timing = U.DATA / "logs" / f"{label}.timing.json"
    cmd = ([PYTHON, TIMED, timing, "--preload", PRELOAD_BUILD, "--entry",
            "nrsdark_dask.cli.main:main", "--", *args] if split else [NRSDARK, *args])
    env = {**(ONE_THREAD if workers == 1 else {}), **(env or {})}
    try:
        res = run_monitored(cmd, label, env=env, kill_above=kill_above)
        if check or not res["killed"]:
            check_ok(res, f"nrsdark build --workers {workers}")
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    return _with_timing(res, timing if split else None, workers=workers)


def baseline_run(store: Path, label: str, split: bool) -> dict:
    timing = U.DATA / "logs" / f"{label}.timing.json"
    cmd = ([PYTHON, TIMED, timing, "--script", BASELINE, "--", store] if split
           else [PYTHON, BASELINE, store])
    res = check_ok(run_monitored(cmd, label), "baseline_inmemory.py")
    return _with_timing(res, timing if split else None)


def _with_timing(res: dict, timing: Path | None, **extra) -> dict:
    res = dict(res, **extra)
    if timing is not None and timing.exists():
        t = json.loads(timing.read_text())
        res.update(startup_s=t["startup_s"], run_s=t["run_s"])
        timing.unlink()
    else:
        res.update(startup_s=None, run_s=None)
    return res


def _row(name: str, r: dict, nbytes: int):
    run = f"{r['run_s']:6.2f}" if r.get("run_s") is not None else "     —"
    start = f"{r['startup_s']:6.2f}" if r.get("startup_s") is not None else "     —"
    print(f"  {name:<22s} {r['wall_s']:7.2f} {start} {run} {nbytes / MB / r['wall_s']:9.1f} "
          f"{r['peak_rss'] / GiB:8.2f} {r['cpu_s']:7.1f}")


def _header():
    print(f"  {'run':<22s} {'wall s':>7s} {'start':>6s} {'run s':>6s} {'MB/s':>9s} "
          f"{'peak GiB':>8s} {'CPU s':>7s}")


def best(runs: list[dict]) -> dict:
    """Fastest of repeated runs (by wall), with the highest peak RSS of them all."""
    b = dict(min(runs, key=lambda r: r["wall_s"]))
    b["peak_rss"] = max(r["peak_rss"] for r in runs)
    b["walls"] = [round(r["wall_s"], 3) for r in runs]
    return b


def _rate(nbytes, r, key="wall_s"):
    return None if r.get(key) is None else nbytes / MB / r[key]


def part_b(store: Path, info: dict, a) -> dict:
    nbytes = info["ramp_bytes"]
    load_before = os.getloadavg()[0]
    extra = a.build_args.split() if a.build_args else []
    if a.task_memory:
        extra += ["--task-memory", a.task_memory]
    if not a.no_warmup:
        print("warm-up build (untimed: numba cache, page cache)")
        build_run(store, "build-warmup", 2, extra, a.split)
    runs = {"w1": [], "w2": [], "baseline": [], "w2u": []}
    for i in range(a.repeat):
        print(f"timed runs{f' (repeat {i + 1}/{a.repeat})' if a.repeat > 1 else ''}")
        runs["w1"].append(build_run(store, "build-w1", 1, extra, a.split))
        runs["w2"].append(build_run(store, "build-w2", 2, extra, a.split))
        runs["w2u"].append(build_run(store, "build-w2-unchecked", 2, extra, a.split,
                                     env=UNCHECKED))
        if not a.no_baseline:
            runs["baseline"].append(baseline_run(store, "baseline", a.split))
    w1, w2, w2u = best(runs["w1"]), best(runs["w2"]), best(runs["w2u"])
    bl = best(runs["baseline"]) if runs["baseline"] else None
    share = w1["cpu_s"] / w1["wall_s"]
    busy = share < 0.85
    if busy:
        print(f"  WARNING: the 1-thread build got {100 * share:.0f} % of a core (CPU time / "
              "wall): the machine is busy and the throughputs are pessimistic")
    _header()
    _row("build, 1 thread", w1, nbytes)
    _row("build, 2 threads", w2, nbytes)
    if bl:
        _row("in-memory baseline", bl, nbytes)

    def ratio(x, y, key="wall_s"):
        return None if y is None or x.get(key) is None or y.get(key) is None \
            else y[key] / x[key]

    metrics = [
        metric("build, 1 thread", _rate(nbytes, w1), "MB/s", fmt="{:.0f}",
               note=f"busy machine: {100 * share:.0f} % of a core" if busy else ""),
        metric("build, 2 threads", _rate(nbytes, w2), "MB/s", fmt="{:.0f}"),
        metric("in-memory baseline", _rate(nbytes, bl) if bl else None, "MB/s", fmt="{:.0f}"),
        metric("build 1 thread / baseline (throughput)", ratio(w1, bl), "x", target=10,
               fmt="{:.2f}"),
        metric("build 1 thread / baseline, start-up excluded", ratio(w1, bl, "run_s"), "x",
               fmt="{:.2f}"),
        metric("speed-up 2 threads / 1 thread", ratio(w2, w1), "x", target=1.8, fmt="{:.2f}"),
        metric("speed-up 2 / 1, start-up excluded", ratio(w2, w1, "run_s"), "x", fmt="{:.2f}"),
        metric("build wall, 1 thread", w1["wall_s"], "s", fmt="{:.1f}"),
        metric("build wall, 2 threads", w2["wall_s"], "s", fmt="{:.1f}"),
        metric("baseline wall", bl["wall_s"] if bl else None, "s", fmt="{:.1f}"),
        metric("peak RSS build, 1 thread", w1["peak_rss"] / GiB, "GiB", fmt="{:.2f}"),
        metric("peak RSS build, 2 threads", w2["peak_rss"] / GiB, "GiB", fmt="{:.2f}"),
        metric("peak RSS baseline", bl["peak_rss"] / GiB if bl else None, "GiB", fmt="{:.2f}"),
        metric("CRC32C checks on read: cost (2 threads, vs NRSDARK_CHUNK_CHECKS=0)",
               100 * (w2["wall_s"] / w2u["wall_s"] - 1), "%", target=5, op="<=",
               fmt="{:.1f}"),
    ]
    print_metrics(metrics)
    case = f"{nbytes / MB:.0f}MB"
    write_result("build", case, f"build vs in-memory, {case} ALLSLITS", metrics,
                 {"store": info, "runs": runs, "build_args": extra, "split": a.split,
                  "env_1_thread": ONE_THREAD, "load_avg_before": load_before,
                  "core_share_1_thread": share})
    return {"w2": w2}


# ---- c) cold read ---------------------------------------------------------------------------
def _chunk_files(store: Path, var: str) -> list[Path]:
    files = [p for p in (store / var / "c").rglob("*") if p.is_file()]
    return sorted(files, key=lambda p: [int(x) if x.isdigit() else x
                                        for x in p.relative_to(store).parts])


def resident_bytes(files: list[Path]) -> int | None:
    """Page-cache bytes of ``files`` (util-linux ``fincore``), None if unavailable."""
    if not shutil.which("fincore"):
        return None
    total = 0
    for i in range(0, len(files), 500):
        r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                            *map(str, files[i:i + 500])], capture_output=True, text=True)
        if r.returncode != 0:
            return None
        total += sum(int(x) for x in r.stdout.split())
    return total


def evict(store: Path, how: str, files: list[Path]) -> dict:
    if how == "global":
        method = drop_page_cache(store)
    else:
        os.sync()
        for p in store.rglob("*"):
            if p.is_file():
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
        method = "fadvise (store files only)"
    res = resident_bytes(files)
    print(f"  page cache: {method}; store chunk bytes still cached: "
          f"{'unknown' if res is None else f'{res / MB:.1f} MB'}")
    return {"method": method, "resident_after": res}


def cold_read(files: list[Path], bufsize: int = 8 * 2**20) -> tuple[float, int]:
    buf = bytearray(bufsize)
    mv = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while True:
                n = f.readinto(mv)
                if not n:
                    break
                total += n
    return time.perf_counter() - t0, total


def part_c(store: Path, info: dict, a, warm_w2: dict | None):
    nbytes = info["ramp_bytes"]
    files = _chunk_files(store, "ramp") + _chunk_files(store, "groupdq")
    print(f"cold read of {len(files)} chunk files (ramp + groupdq)")
    ev1 = evict(store, a.drop, files)
    read_s, disk_bytes = cold_read(files)
    print(f"  read {disk_bytes / MB:.0f} MB on disk in {read_s:.2f} s: "
          f"{nbytes / MB / read_s:.0f} MB/s of ramp, {disk_bytes / MB / read_s:.0f} MB/s of disk")
    print("cold build, 2 threads")
    extra = a.build_args.split() if a.build_args else []
    if a.task_memory:
        extra += ["--task-memory", a.task_memory]
    ev2 = evict(store, a.drop, files)
    cb = build_run(store, "build-cold-w2", 2, extra, a.split)
    _header()
    _row("cold build, 2 threads", cb, nbytes)
    read_rate = nbytes / MB / read_s
    metrics = [
        metric("cold sequential read (ramp + groupdq)", read_rate, "MB/s", fmt="{:.0f}",
               note=f"page cache: {ev1['method']}"),
        metric("cold build, 2 threads", _rate(nbytes, cb), "MB/s", fmt="{:.0f}"),
        metric("cold build 2 threads / cold read", _rate(nbytes, cb) / read_rate, "", target=0.5,
               fmt="{:.2f}"),
        metric("cold build / cold read, start-up excluded",
               None if cb["run_s"] is None else _rate(nbytes, cb, "run_s") / read_rate, "",
               fmt="{:.2f}"),
        metric("warm build 2 threads / cold read",
               None if warm_w2 is None else _rate(nbytes, warm_w2) / read_rate, "",
               fmt="{:.2f}"),
    ]
    print_metrics(metrics)
    case = f"{nbytes / MB:.0f}MB"
    write_result("cold", case, f"build vs cold read, {case} ALLSLITS", metrics,
                 {"store": info, "read_s": read_s, "disk_bytes_read": disk_bytes,
                  "files": len(files), "evict_read": ev1, "evict_build": ev2, "build": cb})


# ---- d) larger than RAM -------------------------------------------------------------------
FULL = 2048
TFRAME_FULL = 10.73676


def big_layout(ngroups: int):
    from nrsdark_dask.store import StoreLayout

    h = {"READPATT": "NRSRAPID", "SUBSIZE1": FULL, "SUBSIZE2": FULL, "SUBSTRT1": 1,
         "SUBSTRT2": 1, "DETECTOR": "NRS1", "SUBARRAY": "FULL", "NGROUPS": ngroups,
         "TFRAME": TFRAME_FULL, "TGROUP": TFRAME_FULL}
    return StoreLayout.from_header(h, has_bias=False)


def synthetic_exposure(layout, rate, e: int, seed: int):
    """One calibrated TRAD exposure as ``calibrate`` would stage it (no bias groups) and its
    coordinates.  Ramps: per-pixel kTC offset (15 DN) + rate x t + 9 DN read noise; 1.5 % of
    the pixels hit by one cosmic ray (log-normal, median 500 DN) from a random group on, flagged
    JUMP_DET there."""
    import numpy as np

    from nrsdark_dask import instrument as inst
    from nrsdark_dask.stages.calibrate import NEG_JUMP_SIGMA
    from nrsdark_dask.calibration.ingest import group1_statistics
    from nrsdark_dask.kernels import (difference_scatter, first_jump_index, jump_counts,
                                      rc_next_flags)
    from nrsdark_dask.store import NO_JUMP, date_seconds

    rng = np.random.default_rng([seed, e])
    g_n, ny, nx = layout.ngroups, layout.ny, layout.nx
    t = layout.group_times().astype(np.float32)
    jump = np.uint8(inst.DQ["JUMP_DET"])
    offset = rng.normal(0, 15, (ny, nx)).astype(np.float32)
    ramp = np.empty((g_n, ny, nx), np.float32)
    for g in range(g_n):
        rng.standard_normal(out=ramp[g], dtype=np.float32)
        ramp[g] *= 9
        ramp[g] += offset
        ramp[g] += rate * t[g]
    gdq = np.zeros((g_n, ny, nx), np.uint8)
    n_cr = int(0.015 * ny * nx)
    ys, xs = rng.integers(0, ny, n_cr), rng.integers(0, nx, n_cr)
    ks = rng.integers(1, g_n, n_cr) if g_n > 1 else np.zeros(n_cr, int)
    qs = rng.lognormal(np.log(500), 0.8, n_cr).astype(np.float32)
    charge = np.zeros((ny, nx), np.float32)  # cosmic-ray charge collected so far
    for g in range(1, g_n):
        at = ks == g
        np.add.at(charge, (ys[at], xs[at]), qs[at])
        ramp[g] += charge
    gdq[ks, ys, xs] = jump
    # ramp_fit stand-in (jwst fits around the jumps): the true rate + the read-noise error of
    # a least-squares slope over the ramp
    slope_sigma = 9 * np.sqrt(12 / max(g_n ** 3 - g_n, 1)) / layout.tgroup
    slope = rate + rng.normal(0, slope_sigma, (ny, nx)).astype(np.float32)
    diff_sigma = difference_scatter(ramp)
    neg = np.zeros((ny, nx), np.int16)
    for g in range(1, g_n):
        neg += ((gdq[g] & jump) != 0) & (ramp[g] - ramp[g - 1] < -NEG_JUMP_SIGMA * diff_sigma)
    ref = inst.reference_pixel_mask(layout.geometry())
    pixeldq = np.where(ref, np.uint32(inst.DQ["REFERENCE_PIXEL"]), np.uint32(0))
    rate_err = (slope_sigma + np.sqrt(np.abs(slope) / t[-1])).astype(np.float32)
    data = {"ramp": ramp, "groupdq": gdq, "pixeldq": pixeldq, "rate": slope,
            "rate_err": rate_err, "neg_jumps": neg, "group1": ramp[0].copy(),
            "rc_next": rc_next_flags(gdq, inst.RC_NEXT_FLAGS),
            "first_jump": first_jump_index(gdq, inst.DQ["JUMP_DET"], NO_JUMP),
            "jump_counts": jump_counts(gdq, inst.DQ["JUMP_DET"])}
    g1_mean, g1_std = group1_statistics(data["group1"], layout)
    coords = {"date": date_seconds("2024-01-01T00:00:00") + 86400.0 * e, "grating": "MIRROR",
              "asic_dt": 0.01, "g1_mean": g1_mean, "g1_std": g1_std, "diff_sigma": diff_sigma,
              "bias_level": float("nan"), "detector": layout.detector,
              "readpatt": layout.readpatt, "subarray": layout.subarray, "ngroups": g_n,
              "input_kind": "ramp", "input_file": f"synthetic_{e:03d}", "jwst_version": "",
              "crds_context": "", "references": "{}"}
    return data, coords


def write_big_store(path: Path, nexp: int, ngroups: int, seed: int) -> float:
    import numpy as np

    from nrsdark_dask.store import RampStore, write_staging

    layout = big_layout(ngroups)
    rng = np.random.default_rng(seed)
    rate = rng.lognormal(np.log(0.0083), 0.35 * np.log(10), (FULL, FULL)).astype(np.float32)
    hot = rng.random((FULL, FULL)) < 0.002
    rate[hot] = rng.uniform(1.25, 100, int(hot.sum())).astype(np.float32)
    rate[:4], rate[-4:], rate[:, :4], rate[:, -4:] = 0, 0, 0, 0
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    store = RampStore.create(tmp, layout, {"synthetic": "benchmarks/bench_build.py --big",
                                           "seed": seed})
    with store.writer():
        for e in range(nexp):
            data, coords = synthetic_exposure(layout, rate, e, seed)
            name = f"synthetic_{e:03d}"
            write_staging(tmp, name, layout, data)
            del data
            store.commit(name, coords)
            print(f"  [{e + 1}/{nexp}] written ({time.perf_counter() - t0:.0f} s)", flush=True)
    os.rename(tmp, path)
    return time.perf_counter() - t0


def part_d(a):
    import psutil

    from nrsdark_dask.store import SCHEMA_VERSION, RampStore

    nexp, ngroups = a.big_nexp, a.big_ngroups
    ramp_bytes = nexp * ngroups * FULL * FULL * 4
    store = U.DATA / f"big-{nexp}x{ngroups}.zarr"
    ram = psutil.virtual_memory().total
    print(f"larger-than-RAM build: {nexp} x {ngroups} groups full frame = "
          f"{ramp_bytes / 1e9:.1f} GB of ramps; RAM {ram / GiB:.1f} GiB")
    reuse = False
    if store.exists():
        try:
            s = RampStore(store)
            reuse = (len(s.committed()) == nexp and s.layout().ngroups == ngroups
                     and getattr(s.layout(), "schema", 1) == SCHEMA_VERSION)
        except Exception:  # noqa: BLE001 - any unreadable store is rewritten
            reuse = False
        if not reuse:
            shutil.rmtree(store)
    write_s = None
    try:
        if reuse:
            print(f"  reusing {rel(store)} (kept by an earlier --keep)")
        else:
            out_bytes = 2 * ngroups * FULL * FULL * 4  # DARK SCI + ERR cubes
            store_bytes = ramp_bytes * 1.02 + nexp * FULL * FULL * 24  # + DQ, images
            need = int(store_bytes + out_bytes + 5e9)
            free = free_disk(U.DATA)
            if free < need:
                raise BenchError(f"not enough free disk for the big store: {free / 1e9:.1f} GB "
                                 f"free under {U.DATA}, need {need / 1e9:.1f} GB (store "
                                 f"{store_bytes / 1e9:.1f} + build output "
                                 f"{out_bytes / 1e9:.1f} + 5 GB margin)")
            print(f"  writing {rel(store)} ({free / 1e9:.0f} GB free, need "
                  f"{need / 1e9:.0f})")
            U.DATA.mkdir(parents=True, exist_ok=True)
            write_s = write_big_store(store, nexp, ngroups, a.seed)
            print(f"  store written in {write_s:.0f} s ({ramp_bytes / MB / write_s:.0f} MB/s)")
        info = store_info(store)
        extra = a.build_args.split() if a.build_args else []
        if a.task_memory:
            extra += ["--task-memory", a.task_memory]
        files = _chunk_files(store, "ramp") + _chunk_files(store, "groupdq")
        print("build, 2 threads, cold")
        evict(store, a.drop, files)
        r = build_run(store, "build-big-w2", 2, extra, a.split,
                      kill_above=parse_bytes(a.big_kill_above), check=False)
        print("build, 2 threads, cold, without the per-read CRC32C checks")
        evict(store, a.drop, files)
        ru = build_run(store, "build-big-w2-unchecked", 2, extra, a.split,
                       kill_above=parse_bytes(a.big_kill_above), check=False, env=UNCHECKED)
        _header()
        _row("build big, 2 threads", r, ramp_bytes)
        if r["killed"]:
            print(f"  KILLED: {r['killed']}")
        print(f"cold read of {len(files)} chunk files (ramp + groupdq)")
        evict(store, a.drop, files)
        read_s, _ = cold_read(files)
        read_rate = ramp_bytes / MB / read_s
        print(f"  {read_rate:.0f} MB/s of ramp")
    finally:
        if not a.keep and store.exists():
            shutil.rmtree(store)
            print(f"  removed {rel(store)} (--keep keeps it)")
    ratio = info["disk_bytes"] / ram
    metrics = [
        metric("store size / RAM", ratio, "x", target=1.5, fmt="{:.2f}",
               note=f"{info['disk_bytes'] / 1e9:.1f} GB on disk"),
        metric("peak RSS of the build's process tree", r["peak_rss"] / GiB, "GiB", target=3,
               op="<=", fmt="{:.2f}", note="killed at the limit" if r["killed"] else ""),
        metric("build wall, 2 threads", None if r["killed"] else r["wall_s"], "s",
               fmt="{:.0f}"),
        metric("build throughput, 2 threads (cold)", None if r["killed"] else
               _rate(ramp_bytes, r), "MB/s", fmt="{:.0f}"),
        metric("cold sequential read (ramp + groupdq)", read_rate, "MB/s", fmt="{:.0f}"),
        metric("cold build 2 threads / cold read", None if r["killed"] else
               _rate(ramp_bytes, r) / read_rate, "", target=0.5, fmt="{:.2f}"),
        metric("store write (synthetic, no jwst)", None if write_s is None else
               ramp_bytes / MB / write_s, "MB/s", fmt="{:.0f}"),
        metric("CRC32C checks on read: cost (cold, 2 threads)", None
               if r["killed"] or ru["killed"] else 100 * (r["wall_s"] / ru["wall_s"] - 1), "%",
               target=5, op="<=", fmt="{:.1f}"),
    ]
    print_metrics(metrics)
    case = f"{ramp_bytes / 1e9:.0f}GB" if ramp_bytes >= 1e10 else f"{ramp_bytes / 1e9:.1f}GB"
    write_result("big", case, f"build larger than RAM, {nexp} x {ngroups} groups FULL",
                 metrics, {"store": info, "ram_bytes": ram, "write_s": write_s, "build": r,
                           "build_unchecked": ru,
                           "read_s": read_s,
                           "build_args": extra, "kill_above": a.big_kill_above})


# ---- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring / benchmarks/README.md.")
    p.add_argument("--only", choices=["build", "cold", "big", "data"],
                   help="one part only (data: prepare the cached ALLSLITS store and stop)")
    p.add_argument("--nexp", type=int, default=12, help="ALLSLITS exposures (default 12)")
    p.add_argument("--ngroups", type=int, default=20, help="ALLSLITS groups (default 20)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--data", help="where data sets are cached (default benchmarks/data)")
    p.add_argument("--recalibrate", action="store_true", help="remake the cached store")
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each (best wall kept)")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--no-baseline", action="store_true", help="skip the in-memory script")
    p.add_argument("--no-split", dest="split", action="store_false",
                   help="run the `nrsdark` console script directly (no start-up/run split)")
    p.add_argument("--drop", choices=["store", "global"], default="store",
                   help="page-cache eviction before cold runs (default: the store's files)")
    p.add_argument("--task-memory", help="passed to nrsdark build --task-memory")
    p.add_argument("--build-args", default="", help="more options for nrsdark build")
    p.add_argument("--big", action="store_true", help="also run the larger-than-RAM case")
    p.add_argument("--big-nexp", type=int, default=25)
    p.add_argument("--big-ngroups", type=int, default=88)
    p.add_argument("--big-kill-above", default="12GiB",
                   help="kill the big build above this tree RSS (default 12GiB)")
    p.add_argument("--keep", action="store_true", help="keep the big store (reused next time)")
    a = p.parse_args(argv)
    if a.data:
        U.set_data_dir(a.data)
    parts = [a.only] if a.only else ["build", "cold"] + (["big"] if a.big else [])
    try:
        opts = ("--workers",) + (("--task-memory",) if a.task_memory else ())
        if parts != ["data"]:
            check_prerequisites("build" in parts and not a.no_baseline, opts)
        if {"build", "cold", "data"} & set(parts):
            store, prep = ensure_allslits(a.nexp, a.ngroups, a.seed, a.recalibrate)
            info = dict(store_info(store), preparation=prep)
            print(f"store: {info['n_exposures']} x {info['ngroups']} x {info['ny']} x "
                  f"{info['nx']} = {info['ramp_bytes'] / MB:.0f} MB of ramps "
                  f"({info['disk_bytes'] / MB:.0f} MB on disk)")
            warm = None
            if "build" in parts:
                warm = part_b(store, info, a)["w2"]
            if "cold" in parts:
                part_c(store, info, a, warm)
        if "big" in parts:
            part_d(a)
    except BenchError as exc:
        print(f"bench_build: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
