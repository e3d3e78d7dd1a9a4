"""Tiled calibration against jwst's whole-exposure run (issue 18): wall, peak RSS of the whole
process tree (workers included), equality of the stores; the flagship IRS2 case scored against
the simulator's truth.

    python benchmarks/bench_tiled.py trad88      # one TRAD FULL 88-group exposure: --pieces whole
                                                 # (jwst's run) vs tiled on local:2 (~8 min)
    python benchmarks/bench_tiled.py peers       # 2 TRAD FULL 88: stock one at a time, stock two
                                                 # processes at once, tiled local:2 (~15 min)
    python benchmarks/bench_tiled.py scaling     # tiled on local:1, local:2, local:4 (~10 min)
    python benchmarks/bench_tiled.py irs2        # IRS2 NRS2 FULL 200 groups x 2, uncal -> FITS,
                                                 # truth scores; stock wall fitted from 25 and
                                                 # 50 groups run whole (~45 min)
    python benchmarks/bench_tiled.py monitor     # the report's TRAD monitor: nrsdark run on 25 TRAD
                                                 # FULL 88 (~60 GB disk, ~1 h); stock fitted from
                                                 # a subset run whole
    python benchmarks/bench_tiled.py whole-memory  # --pieces whole's peak at two sizes of each
                                                 # family: jwst_recipe.MEMORY_MODEL (~15 min)
    python benchmarks/bench_tiled.py pieces      # peak memory of each kind of piece at two sizes
                                                 # (the constants of
                                                 # nrsdark_dask.calibration.budget)

Each case writes ``benchmarks/results/calibrate-tiled-<case>.json`` and SUMMARY.md.  Data sets
are simulated once and cached under ``benchmarks/data/tiled/``.  Run one case at a time on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import (DATA, GiB, NRSDARK, PYTHON, BenchError, check_ok, metric,  # noqa: E402
                   print_metrics, rel, run_monitored, write_result)

TILED = DATA / "tiled"
# cached simulated sets: name -> nrsdark simulate arguments
CASES = {
    "trad88": ("--ngroups", 88, "--nexp", 1, "--seed", 88),
    "irs2_25": ("--readout", "irs2", "--detector", "NRS2", "--ngroups", 25, "--nexp", 1,
                "--seed", 200),
}


def simulate(name: str, *args) -> Path:
    """A cached simulated set ``DATA/tiled/<name>`` and its manifest."""
    d = TILED / name
    if not (d / "simulation.json").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.parent.mkdir(parents=True, exist_ok=True)
        print(f"simulating {rel(d)}")
        check_ok(run_monitored([NRSDARK, "simulate", d, "--gratings", "G140H", "--workers", 2,
                                *args], f"tiled-{name}-simulate"), "nrsdark simulate")
    manifest = d / "manifest.ecsv"
    if not manifest.exists():
        check_ok(run_monitored([NRSDARK, "select", d / "uncal", "--telemetry",
                                d / "telemetry.ecsv", "-o", manifest], f"tiled-{name}-select"),
                 "nrsdark select")
    return d


def calibrate(sim: Path, store: Path, label: str, *args) -> dict:
    """``nrsdark calibrate`` in a fresh, monitored process into a new ``store``."""
    shutil.rmtree(store, ignore_errors=True)
    r = check_ok(run_monitored([NRSDARK, "calibrate", sim / "manifest.ecsv", "--store", store,
                                "--refkit", sim / "refkit", *args], label), label)
    log = [json.loads(x) for x in (store / "nrsdark_log.jsonl").read_text().splitlines()]
    r["exposure_s"] = [e["seconds"] for e in log if e["event"] == "committed"]
    print(f"  {label}: {r['wall_s']:.0f} s, peak tree RSS {r['peak_rss'] / GiB:.2f} GiB", flush=True)
    return r


def same_store(a: Path, b: Path) -> bool:
    """Every variable and coordinate bit for bit equal (the tests' check, on big stores one
    exposure at a time)."""
    import numpy as np

    from nrsdark_dask.store import open_dataset

    da, db = open_dataset(a), open_dataset(b)
    if da.exposure.values.tolist() != db.exposure.values.tolist():
        return False
    for e in range(da.sizes["exposure"]):
        for var in da.data_vars:
            x, y = da[var].isel(exposure=e).values, db[var].isel(exposure=e).values
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                print(f"  {var} differs in exposure {e}")
                return False
    return all(np.array_equal(da[c].values, db[c].values) for c in da.coords)


def case_trad88(args) -> int:
    sim = simulate("trad88", *CASES["trad88"])
    work = TILED / "work"
    whole = calibrate(sim, work / "whole.zarr", "tiled-trad88-whole", "--pieces", "whole",
                      "--scheduler", "sync")
    tiled = calibrate(sim, work / "tiled.zarr", "tiled-trad88-local2", "--scheduler", "local:2",
                      "--record-tasks", TILED / "tasks-trad88-local2.json",
                      *(["--task-memory", args.task_memory] if args.task_memory else []))
    equal = same_store(work / "whole.zarr", work / "tiled.zarr")
    ratio = tiled["wall_s"] / whole["wall_s"]
    metrics = [
        metric("whole (jwst run_detector1 + staging), wall", whole["wall_s"], "s", fmt="{:.0f}"),
        metric("whole, peak RSS of the process tree", whole["peak_rss"] / GiB, "GiB",
               fmt="{:.2f}"),
        metric("tiled local:2, wall", tiled["wall_s"], "s", fmt="{:.0f}"),
        metric("tiled / whole, wall", ratio, "", 0.42, "<=", "{:.2f}"),
        metric("tiled local:2, peak RSS of the process tree", tiled["peak_rss"] / GiB, "GiB",
               4.0, "<=", "{:.2f}"),
        metric("stores bit-identical", equal, "", True, "=="),
    ]
    print_metrics(metrics)
    write_result("calibrate-tiled", "trad88", "One TRAD FULL 88-group exposure: tiled on 2 "
                 "workers vs jwst's whole-exposure run", metrics,
                 {"whole": whole, "tiled": tiled})
    shutil.rmtree(work, ignore_errors=True)
    return 0 if equal else 1


def stage_seconds(record_path: Path) -> dict:
    """Task seconds per kind of piece (``calibrate --record-tasks``), summed over exposures:
    where the workers' time goes."""
    doc = json.loads(Path(record_path).read_text())
    out: dict = {}
    for exp in doc["exposures"]:
        for name, task in exp["tasks"].items():
            for r in exp["runs"].get(name, [])[-1:]:
                out[task["kind"]] = out.get(task["kind"], 0.0) + r["stop"] - r["start"]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def stock_side_by_side(sim: Path, work: Path, label: str, n: int) -> dict:
    """Stock jwst as a careful user runs it on this machine: ``n`` processes at once, each
    ``calibrate --pieces whole --scheduler sync`` on its share of the manifest into its own
    store, the whole process tree monitored."""
    from nrsdark_dask.stages.select import read_manifest, write_manifest

    tab = read_manifest(sim / "manifest.ecsv")
    cmds = []
    for i in range(n):
        part = work / f"part{i}"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        write_manifest(tab[i::n], part / "manifest.ecsv")
        cmds.append(" ".join(str(c) for c in [
            NRSDARK, "calibrate", part / "manifest.ecsv", "--store", part / "s.zarr",
            "--refkit", sim / "refkit", "--pieces", "whole", "--scheduler", "sync"]))
    r = check_ok(run_monitored(["sh", "-c", " & ".join(cmds) + " & wait"], label), label)
    print(f"  {label}: {r['wall_s']:.0f} s, peak tree RSS {r['peak_rss'] / GiB:.2f} GiB",
          flush=True)
    return r


def case_peers(args) -> int:
    """The peers a careful user has (issue 28 part 3): N TRAD FULL 88 exposures calibrated by
    stock jwst one at a time, by stock jwst N processes side by side (as many as memory allows:
    two on this machine; ``--pieces whole --scheduler local:2`` runs them one at a time here,
    its workers' shares holding one each with the margin), and tiled on local:2; wall, CPU and
    peak process-tree RSS of each, ratios, stores compared."""
    n = args.nexp
    sim = simulate(f"trad88x{n}", "--ngroups", 88, "--nexp", n, "--seed", 88)
    work = TILED / "work" / "peers"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    serial = calibrate(sim, work / "serial.zarr", "tiled-peers-stock-serial", "--pieces",
                       "whole", "--scheduler", "sync")
    pair = stock_side_by_side(sim, work, "tiled-peers-stock-side-by-side", n)
    tiled = calibrate(sim, work / "tiled.zarr", "tiled-peers-tiled-local2", "--scheduler",
                      "local:2", "--record-tasks", work / "tasks.json")
    stages = stage_seconds(work / "tasks.json")
    equal = same_store(work / "serial.zarr", work / "tiled.zarr")
    metrics = []
    for label, r in (("stock, one at a time", serial), (f"stock, {n} processes at once", pair),
                     ("tiled, local:2", tiled)):
        metrics += [metric(f"{label}: wall", r["wall_s"], "s", fmt="{:.0f}"),
                    metric(f"{label}: CPU", r["cpu_s"], "s", fmt="{:.0f}"),
                    metric(f"{label}: peak RSS of the process tree", r["peak_rss"] / GiB,
                           "GiB", fmt="{:.2f}")]
    metrics += [
        metric("tiled / stock one at a time, wall", tiled["wall_s"] / serial["wall_s"], "",
               fmt="{:.2f}"),
        metric(f"tiled / stock {n} at once, wall", tiled["wall_s"] / pair["wall_s"], "", 0.8,
               "<=", "{:.2f}"),
        metric("tiled / stock one at a time, CPU", tiled["cpu_s"] / serial["cpu_s"], "",
               fmt="{:.2f}"),
        metric("stores bit-identical", equal, "", True, "=="),
    ]
    for kind, sec in stages.items():
        metrics.append(metric(f"tiled task seconds: {kind}", sec, "s", fmt="{:.1f}"))
    print_metrics(metrics)
    write_result("calibrate-tiled", "peers", f"{n} TRAD FULL 88-group exposures: stock one at a "
                 f"time, stock {n} at once, tiled (local:2)", metrics,
                 {"serial": serial, "side_by_side": pair, "tiled": tiled,
                  "stage_seconds": stages})
    shutil.copy(work / "tasks.json", TILED / f"tasks-trad88x{n}-local2.json")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if equal else 1


def case_whole_memory(args) -> int:
    """The memory model of ``--pieces whole`` (``jwst_recipe.MEMORY_MODEL``): the peak RSS of
    ``calibrate --pieces whole --scheduler sync`` (jwst's detector1 and the staging, one
    exposure) at two sizes of each readout family, fitted as fixed + bytes per raw
    pixel-group."""
    sizes = {"TRAD": (44, 88), "IRS2": (25, 50)}
    runs, metrics = {}, []
    for family, groups in sizes.items():
        for g in groups:
            name = f"{family.lower()}_{g}"
            spec = ("--ngroups", g, "--nexp", 1, "--seed", 88 if family == "TRAD" else 200) \
                if family == "TRAD" else ("--readout", "irs2", "--detector", "NRS2",
                                          "--ngroups", g, "--nexp", 1, "--seed", 200)
            sim = simulate(name if family == "IRS2" else f"trad{g}", *spec)
            r = calibrate(sim, TILED / "work" / f"whole-{name}.zarr", f"tiled-whole-mem-{name}",
                          "--pieces", "whole", "--scheduler", "sync")
            shutil.rmtree(TILED / "work" / f"whole-{name}.zarr", ignore_errors=True)
            raw = 3200 if family == "IRS2" else 2048
            runs[name] = {**r, "pixel_groups": g * raw * 2048}
            metrics.append(metric(f"{family} FULL {g} groups: peak RSS", r["max_rss_one"] / 1e9,
                                  "GB", fmt="{:.2f}", note=f"wall {r['wall_s']:.0f} s"))
        (a, b) = (runs[f"{family.lower()}_{g}"] for g in groups)
        per = (b["max_rss_one"] - a["max_rss_one"]) / (b["pixel_groups"] - a["pixel_groups"])
        fixed = a["max_rss_one"] - per * a["pixel_groups"]
        metrics += [metric(f"{family}: fixed", fixed / 1e9, "GB", fmt="{:.2f}"),
                    metric(f"{family}: per raw pixel-group", per, "B", fmt="{:.1f}")]
    print_metrics(metrics)
    write_result("calibrate-tiled", "whole-memory", "Peak memory of calibrate --pieces whole "
                 "(jwst's detector1 + staging), one exposure, fitted", metrics, runs)
    return 0


def case_scaling(args) -> int:
    sim = simulate("trad88", *CASES["trad88"])
    runs = {}
    for n in (1, 2, 4):
        runs[n] = calibrate(sim, TILED / "work" / f"s{n}.zarr", f"tiled-scaling-local{n}",
                            "--scheduler", f"local:{n}", "--record-tasks",
                            TILED / f"tasks-trad88-local{n}.json")  # capacity.py --check
    shutil.rmtree(TILED / "work", ignore_errors=True)
    metrics = []
    for n, r in runs.items():
        metrics += [metric(f"local:{n} wall", r["wall_s"], "s", fmt="{:.0f}"),
                    metric(f"local:{n} speed-up over local:1", runs[1]["wall_s"] / r["wall_s"],
                           "x", fmt="{:.2f}",
                           note="4 workers oversubscribe the 2 cores" if n == 4 else ""),
                    metric(f"local:{n} peak RSS of the process tree", r["peak_rss"] / GiB,
                           "GiB", fmt="{:.2f}")]
    print_metrics(metrics)
    write_result("calibrate-tiled", "scaling", "Pieces of one TRAD FULL 88-group exposure on "
                 "1, 2 and 4 worker processes", metrics, {"runs": runs})
    return 0


def linear_fit(xs, ys):
    """Least-squares a + b x."""
    import numpy as np

    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def truth_scores(sim: Path, outdir: Path) -> dict:
    """HOT, RC, TELEGRAPH and bad-reference precision and recall of a build against the
    simulator's truth (scored as benchmarks/flag_reliability.py does), and DRK - truth."""
    import numpy as np
    from astropy.io import fits

    from flag_reliability import BITS, populations, score
    from nrsdark_dask import instrument as inst
    from nrsdark_dask.stages.analyze import flag_pixels
    from nrsdark_dask.config import Config
    from nrsdark_dask.reduction.tables import flag
    from nrsdark_dask.simulate import read_truth

    truth = read_truth(sim / "truth.fits")
    dark = sorted(outdir.glob("*dark*.fits"))[0]
    with fits.open(dark, memmap=False) as h:
        dq = np.asarray(h["DQ"].data).astype(np.uint32)
        drk = np.asarray(h["DRK"].data, np.float32)
        unc = np.asarray(h["UNC"].data, np.float32)
        inputs = sum(str(c).startswith("Input: ") for c in h[0].header.get("HISTORY", []))
    flags = {r: (dq & inst.DQ[b]) != 0 for r, b in BITS.items()}
    flags["hot"] = flag_pixels(flag("hot"), None, {"mean_rate": drk, "unc": unc}, Config(),
                               ~truth["refpix"], {"n_exposures": inputs})  # no HOT bit: the row
    out = {}
    pops = populations(truth)
    for rule, (true, pop) in pops.items():
        s = score(flags[rule], true, pop)
        s["precision"] = s["tp"] / s["flagged"] if s["flagged"] else None
        s["recall"] = s["tp"] / s["true"] if s["true"] else None
        out[rule] = s
    plain = pops["hot"][1] & ~truth["hot"]  # active, away from RC, RTN, IPC neighbours
    diff = (drk - truth["rate"])[plain & np.isfinite(drk)]
    out["drk_minus_truth"] = {"median": float(np.median(diff)),
                              "robust_sigma": float(1.4826 * np.median(np.abs(
                                  diff - np.median(diff))))}
    return out


def case_irs2(args) -> int:
    """The report's flagship: IRS2 NRS2 FULL 200 groups, uncal -> FITS on this machine."""
    n = args.nexp
    stock = {}
    for g in (25, 50):
        sim = simulate(f"irs2_{g}", "--readout", "irs2", "--detector", "NRS2", "--ngroups", g,
                       "--nexp", 1, "--seed", 200)
        stock[g] = calibrate(sim, TILED / "work" / f"stock{g}.zarr", f"tiled-irs2-stock{g}",
                             "--pieces", "whole", "--scheduler", "sync")
        shutil.rmtree(TILED / "work" / f"stock{g}.zarr", ignore_errors=True)
    a, b = linear_fit(list(stock), [r["wall_s"] for r in stock.values()])
    stock_200 = a + 200 * b
    ra, rb = linear_fit(list(stock), [r["peak_rss"] for r in stock.values()])
    sim = simulate("irs2_200", "--readout", "irs2", "--detector", "NRS2", "--ngroups", 200,
                   "--nexp", n, "--seed", 200)
    store = TILED / "work" / "irs2_200.zarr"
    tiled = calibrate(sim, store, "tiled-irs2-200-local2", "--scheduler", "local:2",
                      "--record-tasks", TILED / f"tasks-irs2-200x{n}-local2.json")
    outdir = TILED / "work" / "irs2_200_reffiles"
    shutil.rmtree(outdir, ignore_errors=True)
    build = run_monitored([NRSDARK, "build", "--store", store, "--outdir", outdir,
                           "--scheduler", "local:2"], "tiled-irs2-200-build")
    if build["rc"] not in (0, 1):  # 1: not deliverable (a verdict), not a failure
        raise BenchError(f"nrsdark build failed ({build['log']})")
    scores = truth_scores(sim, outdir)
    per_exp = tiled["wall_s"] / n
    metrics = [
        metric("stock whole-exposure wall, 200 groups (fit of 25, 50)", stock_200, "s",
               fmt="{:.0f}"),
        metric("stock peak RSS, 200 groups (fit)", (ra + 200 * rb) / GiB, "GiB", fmt="{:.1f}"),
        metric(f"tiled local:2, {n} exposures, wall", tiled["wall_s"], "s", fmt="{:.0f}"),
        metric("tiled wall per exposure / stock", per_exp / stock_200, "", 0.5, "<=",
               "{:.2f}"),
        metric("tiled peak RSS of the process tree", tiled["peak_rss"] / GiB, "GiB", 6.0, "<=",
               "{:.2f}"),
        metric("build (local:2) wall", build["wall_s"], "s", fmt="{:.0f}"),
        metric("build peak RSS of the process tree", build["peak_rss"] / GiB, "GiB",
               fmt="{:.2f}"),
    ]
    for rule in ("hot", "rc", "telegraph", "bad_reference"):
        s = scores[rule]
        metrics += [metric(f"{rule} precision (N = {n})", s["precision"], "", fmt="{:.3f}"),
                    metric(f"{rule} recall (N = {n})", s["recall"], "", fmt="{:.3f}")]
    d = scores["drk_minus_truth"]
    metrics.append(metric("DRK - truth, median (plain pixels)", d["median"], "DN/s",
                          fmt="{:.4f}"))
    metrics.append(metric("DRK - truth, robust sigma", d["robust_sigma"], "DN/s",
                          fmt="{:.4f}"))
    print_metrics(metrics)
    write_result("calibrate-tiled", "irs2", f"The report's flagship: IRS2 NRS2 FULL 200 groups x "
                 f"{n}, uncal to FITS on 2 workers", metrics,
                 {"stock": stock, "tiled": tiled, "build": build, "scores": scores,
                  "stock_fit": {"wall_a": a, "wall_b": b, "rss_a": ra, "rss_b": rb}})
    return 0


def case_pieces(args) -> int:
    """Peak RSS of one piece of each kind, alone in a fresh process, at two sizes: the
    constants of nrsdark_dask.calibration.budget.COSTS."""
    print("see nrsdark_dask/calibration/budget.py for how they are used; measuring...")
    import subprocess

    results = {}
    for name in ("trad88", "irs2_25"):
        sim = simulate(name, *CASES[name])
        out = subprocess.run([PYTHON, Path(__file__).with_name("_piece_memory.py"), sim,
                              TILED / "work" / f"pieces-{name}"], capture_output=True,
                             text=True)
        if out.returncode:
            raise BenchError(f"piece measurement failed:\n{out.stderr[-3000:]}")
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(TILED / "work", ignore_errors=True)
    metrics = []
    for name, per_kind in results.items():
        for kind, r in per_kind.items():
            if "peak" in r:  # measured on the whole exposure only
                metrics.append(metric(f"{name} {kind}: peak", r["peak"] / 1e9, "GB",
                                      fmt="{:.2f}"))
                continue
            metrics.append(metric(f"{name} {kind}: fixed", r["fixed"] / 1e9, "GB", fmt="{:.2f}"))
            metrics.append(metric(f"{name} {kind}: per pixel-group", r["slope"], "B",
                                  fmt="{:.1f}"))
    print_metrics(metrics)
    write_result("calibrate-tiled", "pieces", "Peak memory of each kind of piece (fixed + per "
                 "pixel-group), one piece in a fresh process", metrics, results)
    return 0


def case_monitor(args) -> int:
    """The report's TRAD monitor end to end: nrsdark run on N TRAD FULL 88-group exposures
    (fewer when the disk cannot hold them); stock one at a time and two side by side fitted
    from a subset (``--subset``, even) run whole, plus the tiled run's build."""
    n = args.nexp
    # disk: the inputs (0.74 GB each), the store (1.9 GB each), two exposures' scratch in
    # flight (7.6 GB each) and the build's DARK (3 GB); fewer exposures when it does not fit
    TILED.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(TILED).free / 1e9 + (
        sum(f.stat().st_size for f in (TILED / f"monitor{n}").rglob("*") if f.is_file()) / 1e9
        if (TILED / f"monitor{n}").exists() else 0.0)
    fits = int((free - 2 * 7.6 - 3 - 5) // (0.74 + 1.9))
    if fits < n:
        print(f"monitor: {n} exposures need ~{n * 2.64 + 23:.0f} GB, {free:.0f} GB free: "
              f"running {fits}", flush=True)
        n = args.nexp = fits
    sim = simulate(f"monitor{n}", "--ngroups", 88, "--nexp", n, "--seed", 2025)
    work = TILED / "work" / "monitor"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = work / "run.toml"
    cfg.write_text(f'[run]\nscheduler = "local:2"\ninputs = ["{sim / "uncal"}"]\n'
                   f'telemetry = "{sim / "telemetry.ecsv"}"\nrefkit = "{sim / "refkit"}"\n'
                   f'store = "{work / "monitor.zarr"}"\noutdir = "{work / "run"}"\n')
    tiled = run_monitored([NRSDARK, "run", cfg], "tiled-monitor-run")
    if tiled["rc"] not in (0, 1):
        raise BenchError(f"nrsdark run failed ({tiled['log']})")
    log = [json.loads(x) for x in (work / "monitor.zarr" / "nrsdark_log.jsonl").read_text()
           .splitlines()]
    committed = sum(e["event"] == "committed" for e in log)
    # stock: calibrate a subset whole, serially, then the build of the run's store
    sub = TILED / f"monitor{n}-subset"
    if not (sub / "manifest.ecsv").exists():
        sub.mkdir(parents=True, exist_ok=True)
        from nrsdark_dask.stages.select import read_manifest, write_manifest

        tab = read_manifest(sim / "manifest.ecsv")
        write_manifest(tab[:args.subset], sub / "manifest.ecsv")
    shutil.copytree(sim / "refkit", sub / "refkit", dirs_exist_ok=True)
    stock = calibrate(sub, work / "stock.zarr", "tiled-monitor-stock", "--pieces", "whole",
                      "--scheduler", "sync")
    shutil.rmtree(work / "stock.zarr", ignore_errors=True)
    pair = stock_side_by_side(sub, work / "pair", "tiled-monitor-stock-side-by-side", 2)
    shutil.rmtree(work / "pair", ignore_errors=True)
    build = run_monitored([NRSDARK, "build", "--store", work / "monitor.zarr", "--outdir",
                           work / "build", "--scheduler", "local:2"], "tiled-monitor-build")
    stock_serial = stock["wall_s"] / args.subset * n + build["wall_s"]
    stock_pairs = pair["wall_s"] / args.subset * n + build["wall_s"]
    metrics = [
        metric(f"nrsdark run, {n} x TRAD FULL 88 (tiled, local:2), wall", tiled["wall_s"], "s",
               fmt="{:.0f}"),
        metric("exposures committed", committed, "", n, "=="),
        metric(f"stock serial calibration ({args.subset} run whole, scaled) + build",
               stock_serial, "s", fmt="{:.0f}"),
        metric("run / stock serial", tiled["wall_s"] / stock_serial, "", 0.45, "<=", "{:.2f}"),
        metric(f"stock two at once ({args.subset} side by side, scaled) + build", stock_pairs,
               "s", fmt="{:.0f}"),
        metric("run / stock two at once", tiled["wall_s"] / stock_pairs, "", 0.85, "<=",
               "{:.2f}"),
        metric("run peak RSS of the process tree", tiled["peak_rss"] / GiB, "GiB",
               fmt="{:.2f}"),
    ]
    print_metrics(metrics)
    write_result("calibrate-tiled", "monitor", f"The report's TRAD monitor: {n} x TRAD FULL 88 "
                 "groups, nrsdark run", metrics, {"run": tiled, "stock": stock, "pair": pair,
                                                  "build": build})
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(sim, ignore_errors=True)  # the inputs: ~0.74 GB an exposure
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("case", choices=["trad88", "peers", "scaling", "irs2", "monitor", "pieces",
                                     "whole-memory"])
    ap.add_argument("--task-memory", help="--task-memory of the tiled runs")
    ap.add_argument("--nexp", type=int, help="exposures (irs2: 2, monitor: 25)")
    ap.add_argument("--subset", type=int, default=2, help="monitor: exposures run whole")
    args = ap.parse_args(argv)
    args.nexp = args.nexp or {"irs2": 2, "monitor": 25, "peers": 2}.get(args.case, 1)
    try:
        return globals()[f"case_{args.case.replace('-', '_')}"](args)
    except BenchError as exc:
        print(f"bench_tiled: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
