"""Wall time, throughput and peak memory of ``nrsdark calibrate`` on ALREADY-CALIBRATED inputs.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_calibrate_calibrated.py --label after
    .venv/bin/python benchmarks/bench_calibrate_calibrated.py --nexp 2 --ngroups 20 --profile

Inputs: ``--nexp`` (default 2) synthetic NRS1 FULL-frame NRSRAPID darks of ``--ngroups``
(default 20) groups, each a jwst RampModel ``*_jump.fits`` (after jump: S_JUMP = COMPLETE; noise,
small slopes, a few JUMP_DET groups with real up/down steps, reference pixels flagged) and its
ImageModel ``*_rate.fits``, written through stdatamodels.  They are cached under
``benchmarks/data/calibrated_FULL_G<ngroups>/`` (git-ignored) and reused while their parameters
match.  A 20-group full-frame ramp is 20 x 2048 x 2048 float32 = 336 MB (+84 MB GROUPDQ).
``--legacy-err`` adds to each jump file the 4-D float32 ERR extension (zeros, as big as SCI)
that jwst wrote into RampModels until JP-3827 (2025), so most archive ``*_ramp``/``*_jump``
files have it; stdatamodels 6 no longer knows it and keeps it as ``extra_fits``
(``calibrated_FULL_G<ngroups>_err/``).

Measurements (each case in fresh processes, one after the other):

* ``direct``: :func:`nrsdark_dask.stages.calibrate.calibrate_exposure` on one exposure in a fresh
  child process (``--child``).  peak RSS = the child's high-water mark VmHWM (imports
  included; not ``ru_maxrss``, which Linux carries over fork + exec from this parent, big after
  making the inputs); ``base`` = its RSS after the imports, before the call.  With
  ``--profile`` the child also records the process's RSS and high-water mark (VmRSS/VmHWM)
  after each phase of the task (read, difference_scatter, negative_jump_counts, ...,
  write_staging), which shows where the copies are made.
* ``local:1``, ``local:2`` (``--schedulers``): ``nrsdark calibrate --scheduler S`` on the
  manifest made by ``nrsdark select --accept-no-telemetry``.  Per exposure: the task's seconds
  and ``peak_rss_gb`` (the worker's ``ru_maxrss``; a worker that ran two exposures reports the
  larger) from the store log ``nrsdark_log.jsonl``; for the whole command: wall seconds and, by
  psutil sampling every 50 ms, the peak RSS of the biggest single process of the tree and of the
  tree's sum.

MB/s = ramp bytes (ngroups x ny x nx x 4, MB = 1e6 bytes) / the task's seconds.

Output: ``benchmarks/results/calibrate_calibrated.json`` (runs keyed by ``--label``, merged
with what is there) and a Markdown table on stdout and in
``benchmarks/results/calibrate_calibrated.md``.  Run it alone: full frames use a few GB and the
2-core machine is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
NY = NX = 2048
GB = 1e9


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def make_inputs(ngroups: int, nexp: int, seed: int = 7, legacy_err: bool = False) -> Path:
    """Write (or reuse) ``nexp`` calibrated exposures; return their folder."""
    folder = DATA / f"calibrated_FULL_G{ngroups}{'_err' if legacy_err else ''}"
    params = {"ngroups": ngroups, "seed": seed, "version": 1, "legacy_err": legacy_err}
    stamp = folder / "params.json"
    names = [f"jw90001001001_02101_{i + 1:05d}_nrs1" for i in range(nexp)]
    if stamp.exists() and json.loads(stamp.read_text()) == params and all(
            (folder / f"{n}_jump.fits").exists() and (folder / f"{n}_rate.fits").exists()
            for n in names):
        extra = [p for p in folder.glob("*_jump.fits") if p.name[:-10] not in names]
        for p in extra:  # keep exactly nexp inputs in the folder select reads
            p.unlink()
            p.with_name(p.name.replace("_jump", "_rate")).unlink(missing_ok=True)
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, n in enumerate(names):
        t0 = time.time()
        write_exposure(folder, n, ngroups, i, seed, legacy_err)
        print(f"wrote {n} ({time.time() - t0:.0f} s)", file=sys.stderr)
    stamp.write_text(json.dumps(params))
    return folder


def write_exposure(folder: Path, name: str, ngroups: int, index: int, seed: int,
                   legacy_err: bool = False):
    from astropy.time import Time
    from stdatamodels.jwst import datamodels as dm

    from nrsdark_dask import instrument as inst

    DQ = inst.DQ
    rng = np.random.default_rng([seed, index])
    sub = inst.get_subarray("FULL")
    pattern = inst.get_read_pattern("NRSRAPID")
    tframe = sub.frame_time("TRAD")
    tgroup = inst.group_time(pattern, tframe)
    times = inst.group_times(pattern, tframe, ngroups)
    slope = rng.gamma(2.0, 0.004, (NY, NX)).astype(np.float32)  # DN/s, dark-like
    hot = rng.random((NY, NX)) < 1e-3
    slope[hot] = rng.uniform(0.5, 5.0, hot.sum()).astype(np.float32)
    ramp = np.empty((1, ngroups, NY, NX), np.float32)
    for g in range(ngroups):
        plane = rng.standard_normal((NY, NX), dtype=np.float32)
        plane *= np.float32(9.0)
        plane += np.float32(times[g]) * slope
        ramp[0, g] = plane
    gdq = np.zeros((1, ngroups, NY, NX), np.uint8)
    njump = 4000
    gj = rng.integers(1, ngroups, njump)
    yj, xj = rng.integers(0, NY, njump), rng.integers(0, NX, njump)
    step = np.where(rng.random(njump) < 0.5, -1.0, 1.0) * rng.uniform(50, 500, njump)
    for g, y, x, s in zip(gj, yj, xj, step):
        ramp[0, g:, y, x] += np.float32(s)
        gdq[0, g, y, x] |= DQ["JUMP_DET"]
    pdq = np.zeros((NY, NX), np.uint32)
    ref = inst.reference_pixel_mask(sub)
    pdq[ref] = DQ["REFERENCE_PIXEL"]
    start = Time("2024-03-01T00:00:00", scale="utc") + dt.timedelta(hours=6 * index)
    duration = (ngroups + 1) * tframe
    end = start + dt.timedelta(seconds=duration)

    def meta(m):
        m.meta.filename = f"{name}_{'jump' if isinstance(m, dm.RampModel) else 'rate'}.fits"
        m.meta.telescope = "JWST"
        m.meta.instrument.name = "NIRSPEC"
        m.meta.instrument.detector = "NRS1"
        m.meta.instrument.grating = "G395H"
        m.meta.instrument.filter = "F290LP"
        m.meta.exposure.type = "NRS_DARK"
        m.meta.exposure.readpatt = "NRSRAPID"
        m.meta.exposure.nints = 1
        m.meta.exposure.ngroups = ngroups
        m.meta.exposure.nframes = pattern.nframes
        m.meta.exposure.groupgap = pattern.groupgap
        m.meta.exposure.frame_time = tframe
        m.meta.exposure.group_time = tgroup
        m.meta.exposure.start_time = start.mjd
        m.meta.exposure.end_time = end.mjd
        m.meta.exposure.mid_time = (start.mjd + end.mjd) / 2
        m.meta.observation.date = start.isot[:10]
        m.meta.observation.time = start.isot[11:23]
        m.meta.subarray.name = "FULL"
        m.meta.subarray.xstart, m.meta.subarray.ystart = 1, 1
        m.meta.subarray.xsize, m.meta.subarray.ysize = NX, NY
        m.meta.calibration_software_version = "3.0.0"
        for s in ("group_scale", "dq_init", "saturation", "superbias", "refpix",
                  "linearity", "jump"):
            setattr(m.meta.cal_step, s, "COMPLETE")

    with dm.RampModel(data=ramp, groupdq=gdq, pixeldq=pdq) as m:
        meta(m)
        m.save(folder / f"{name}_jump.fits")
    del ramp, gdq
    if legacy_err:  # the 4-D ERR that jwst RampModels carried until JP-3827 (2025): zeros
        from astropy.io import fits

        err = fits.ImageHDU(np.zeros((1, ngroups, NY, NX), np.float32), name="ERR")
        fits.append(folder / f"{name}_jump.fits", err.data, header=err.header)
        del err
    rate = (slope + rng.normal(0, 0.01, (NY, NX))).astype(np.float32)
    with dm.ImageModel(data=rate, err=np.full((NY, NX), 0.01, np.float32), dq=pdq) as m:
        meta(m)
        m.meta.cal_step.ramp_fit = "COMPLETE"
        m.save(folder / f"{name}_rate.fits")


# ---------------------------------------------------------------------------------------------
# direct: calibrate_exposure in a fresh child process
# ---------------------------------------------------------------------------------------------
def _status_gb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / GB
    return float("nan")


def child(row_json: str, store: str, out_json: str, profile: bool):
    """One calibrate_exposure call in this (fresh) process; numbers to ``out_json``."""
    import nrsdark_dask.stages.calibrate as C
    from nrsdark_dask.store import RampStore, StoreLayout, exposure_id
    from astropy.io import fits
    from stdatamodels.jwst import datamodels  # noqa: F401 - imports counted in the base

    row = json.loads(row_json)
    row.setdefault("exposure", exposure_id(row["name"], row["sha256"]))
    layout = StoreLayout.from_header(fits.getheader(row["file"], 0), has_bias=False)
    if Path(store).exists():
        shutil.rmtree(store)
    RampStore.create(store, layout, provenance={})
    phases = []
    if profile:
        def wrap(mod, fname):
            f = getattr(mod, fname)

            def inner(*a, **k):
                t = time.time()
                out = f(*a, **k)
                phases.append({"phase": fname, "s": round(time.time() - t, 2),
                               "rss_gb": round(_status_gb("VmRSS"), 3),
                               "hwm_gb": round(_status_gb("VmHWM"), 3)})
                return out
            setattr(mod, fname, inner)

        for fname in ("difference_scatter", "negative_jump_counts", "rc_next_flags",
                      "first_jump_index", "group1_statistics", "write_staging"):
            wrap(C, fname)
        wrap(C.recipe, "read_calibrated")
    base = _status_gb("VmRSS")
    t0 = time.time()
    res = C.calibrate_exposure(row, store, layout, None, "/tmp")
    wall = time.time() - t0
    if res["status"] != "ok":
        raise SystemExit(f"calibrate_exposure failed: {res['reason']}")
    Path(out_json).write_text(json.dumps({
        "wall_s": round(wall, 2), "task_seconds": res["seconds"],
        "base_rss_gb": round(base, 3),
        "peak_rss_gb": round(_status_gb("VmHWM"), 3),
        "task_peak_rss_gb": res["peak_rss_gb"],
        "phases": phases}))
    shutil.rmtree(store, ignore_errors=True)


def run_direct(rows: list[dict], work: Path, profile: bool) -> list[dict]:
    out = []
    for r in rows:
        js = work / "direct.json"
        cmd = [sys.executable, __file__, "--child", json.dumps(r), "--store",
               str(work / "direct.zarr"), "--out", str(js)] + (["--profile"] if profile else [])
        subprocess.run(cmd, check=True)
        d = json.loads(js.read_text())
        out.append({"name": r["name"], **d})
        print(f"  direct {r['name']}: {d['wall_s']} s, peak {d['peak_rss_gb']} GB "
              f"(base {d['base_rss_gb']} GB)", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# the CLI on a LocalCluster
# ---------------------------------------------------------------------------------------------
class TreeSampler(threading.Thread):
    """Peak RSS of the biggest process and of the sum over a process tree, every ``dt`` s."""

    def __init__(self, pid: int, dt: float = 0.05):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.dt = dt
        self.peak_single = self.peak_sum = 0
        self.per_pid: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_single = max(self.peak_single, rss)
                name, old = self.per_pid.get(p.pid, ("", 0))
                if rss > old:
                    if not name:
                        try:
                            cmd = " ".join(p.cmdline())
                        except psutil.Error:
                            cmd = "?"
                        name = "main" if p.pid == self.root.pid else (
                            "worker" if ("spawn_main" in cmd or "forkserver" in cmd)
                            and "resource_tracker" not in cmd else cmd[:40])
                    self.per_pid[p.pid] = (name, rss)
            self.peak_sum = max(self.peak_sum, total)
            time.sleep(self.dt)


def run_cli(manifest: Path, scheduler: str, work: Path) -> dict:
    store = work / f"store_{scheduler.replace(':', '')}.zarr"
    if store.exists():
        shutil.rmtree(store)
    cmd = [str(BIN / "nrsdark"), "calibrate", str(manifest), "--store", str(store),
           "--scheduler", scheduler, "--workdir", str(work / "scratch")]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    text, _ = proc.communicate()
    wall = time.time() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text}")
    log = [json.loads(x) for x in (store / "nrsdark_log.jsonl").read_text().splitlines()]
    per = [{"name": e["name"], "task_seconds": e["seconds"], "peak_rss_gb": e["peak_rss_gb"]}
           for e in log if e["event"] == "committed"]
    workers = sorted((rss / GB for pid, (name, rss) in sampler.per_pid.items()
                      if name == "worker"), reverse=True)
    main = [rss / GB for pid, (name, rss) in sampler.per_pid.items() if name == "main"]
    shutil.rmtree(store, ignore_errors=True)
    out = {"scheduler": scheduler, "wall_s": round(wall, 1), "exposures": per,
           "peak_single_process_gb": round(sampler.peak_single / GB, 3),
           "peak_tree_sum_gb": round(sampler.peak_sum / GB, 3),
           "peak_worker_rss_gb": [round(w, 3) for w in workers],
           "peak_main_rss_gb": round(main[0], 3) if main else None}
    print(f"  {scheduler}: {out['wall_s']} s, tree peak {out['peak_tree_sum_gb']} GB, workers "
          f"{out['peak_worker_rss_gb']}", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _short(name: str) -> str:
    """jw90001001001_02101_00002_nrs1_jump.fits -> e2"""
    try:
        return f"e{int(name.split('_')[2])}"
    except (IndexError, ValueError):
        return name


def markdown(results: dict) -> str:
    lines = ["# `nrsdark calibrate` on already-calibrated inputs (jump + rate files)", "",
             "`benchmarks/bench_calibrate_calibrated.py`; NRS1 FULL NRSRAPID, per exposure; MB/s = "
             "ramp bytes (G x 2048 x 2048 x 4) / task seconds; peak RSS in GB (1e9 bytes) of the "
             "process that ran the task (imports included), base = RSS after imports; "
             "local:N = `nrsdark calibrate --scheduler local:N` (worker ru_maxrss from the store "
             "log; tree = psutil peak of the sum over all processes); +ERR = jump files with the "
             "legacy 4-D ERR extension (`--legacy-err`).", "",
             "| label | ngroups | mode | exposure | task s | MB/s | peak RSS GB | target GB | "
             "wall s (command) | tree peak GB |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, run in results.items():
        g = f"{run['ngroups']}{' +ERR' if run.get('legacy_err') else ''}"
        ramp_mb = run["ramp_bytes"] / 1e6
        target = run["target_peak_gb"]
        for d in run.get("direct", []):
            mbps = ramp_mb / d["task_seconds"] if d["task_seconds"] else float("nan")
            lines.append(f"| {label} | {g} | direct | {_short(d['name'])} | "
                         f"{d['task_seconds']:.1f} | {mbps:.0f} | {d['peak_rss_gb']:.2f} "
                         f"(base {d['base_rss_gb']:.2f}) "
                         f"| {target:.2f} | {d['wall_s']:.1f} | |")
        for c in run.get("cli", []):
            for e in c["exposures"]:
                mbps = ramp_mb / e["task_seconds"] if e["task_seconds"] else float("nan")
                lines.append(f"| {label} | {g} | {c['scheduler']} | {_short(e['name'])} | "
                             f"{e['task_seconds']:.1f} | {mbps:.0f} | {e['peak_rss_gb']:.2f} | "
                             f"{target:.2f} | {c['wall_s']:.1f} | {c['peak_tree_sum_gb']:.2f} |")
    notes = [f"* {label}: {run['note']}" for label, run in results.items() if run.get("note")]
    if notes:
        lines += [""] + notes
    prof = [(label, run["direct"][0]["phases"]) for label, run in results.items()
            if run.get("direct") and run["direct"][0].get("phases")]
    for label, phases in prof:
        lines += ["", f"Phases of one direct task ({label}): RSS / high-water mark after each "
                  "call, GB", "", "| phase | s | RSS | HWM |", "|---|---:|---:|---:|"]
        lines += [f"| {p['phase']} | {p['s']} | {p['rss_gb']} | {p['hwm_gb']} |" for p in phases]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ngroups", type=int, default=20)
    ap.add_argument("--nexp", type=int, default=2)
    ap.add_argument("--schedulers", default="local:1,local:2",
                    help="comma-separated --scheduler values for the CLI runs ('' for none)")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct child runs")
    ap.add_argument("--profile", action="store_true", help="phase-by-phase RSS in direct runs")
    ap.add_argument("--legacy-err", action="store_true",
                    help="jump files also carry a 4-D float32 ERR extension (zeros), as the "
                    "RampModels written by jwst before the 4-D ERR was removed (JP-3827, 2025) "
                    "do: most archive *_ramp/*_jump files")
    ap.add_argument("--note", default="", help="free text stored with the run (e.g. code state)")
    ap.add_argument("--label", default="run", help="key of this run in the JSON (before/after)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.store, args.out, args.profile)
        return 0

    folder = make_inputs(args.ngroups, args.nexp, legacy_err=args.legacy_err)
    work = DATA / "calibrate_calibrated_work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    manifest = work / "manifest.ecsv"
    subprocess.run([str(BIN / "nrsdark"), "select", str(folder), "--accept-no-telemetry",
                    "-o", str(manifest)], check=True, stdout=subprocess.DEVNULL)
    from nrsdark_dask.stages.select import read_manifest

    tab = read_manifest(manifest)
    if not all(tab["accepted"]) or len(tab) != args.nexp:
        raise SystemExit(f"select did not accept the {args.nexp} inputs:\n{tab['name', 'reason']}")
    rows = [{c: (v.item() if hasattr(v, "item") else v) for c, v in zip(tab.colnames, r)}
            for r in tab]
    ramp_bytes = args.ngroups * NY * NX * 4
    import nrsdark_dask

    run = {
        "code": str(Path(nrsdark_dask.__file__).parent),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": f"{platform.node()} ({os.cpu_count()} cores)",
        "ngroups": args.ngroups, "nexp": args.nexp, "shape": [1, args.ngroups, NY, NX],
        "legacy_err": args.legacy_err, "note": args.note,
        "ramp_bytes": ramp_bytes, "groupdq_bytes": ramp_bytes // 4,
        "target_peak_gb": round((1.6 * 1.25 * ramp_bytes + 0.5e9) / GB, 3),
    }
    if not args.no_direct:
        run["direct"] = run_direct(rows, work, args.profile)
    run["cli"] = [run_cli(manifest, s, work) for s in args.schedulers.split(",") if s]
    shutil.rmtree(work, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    out_json = RESULTS / "calibrate_calibrated.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    results[args.label] = run
    tmp = out_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(out_json)
    md = markdown(results)
    (RESULTS / "calibrate_calibrated.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
