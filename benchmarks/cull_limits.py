"""Detection limits and naming of ``nrsdark cull`` against simulation truth (issues 13, 21).

Simulates ALLSLITS (256 x 2048) sets of 20-group darks whose artifacts have fixed sizes, one
size level per set (mode-switch ASIC excursion dT, MSA-glow crest rate, persistence scale),
plus sets with no artifacts at all; every set goes through the real pipeline (select with no
telemetry limit, so every artifact reaches the store; jwst detector1; the store) and is culled
with the default ``[cull]`` limits.  Prints, per artifact kind and size, how many exposures
carried it and how many were culled; the false-cull rate of clean exposures; the score
distributions; and the size at which an artifact starts to matter: the one that moves the
final DRK by 0.5 x UNC (from a build of a clean set: UNC is the standard error of the mean of
N rates, so one input of N moves DRK by A / N, and that is 0.5 UNC at A = 0.5 UNC N).

Naming (issue 21): besides the detection-limit levels, sets with one artifact far above its
limit (bright glow, strong persistence, a large mode switch whose tree rings cross a 256-row
strip) and mixed sets (one kind strong, another at its limit).  An exposure's *dominant* kind
is the true kind largest in units of its detection limit (``DETECTION``, the sizes caught in
every exposure by the issue-13 run); it is clear when it is at least twice the next one.  The
naming score is the fraction of culled exposures with a clear dominant kind whose
``artifact`` names it.  (Every exposure also has a small switch, 0.01-0.02 K, below the
limit; it does not count.)

    python benchmarks/cull_limits.py [--quick] [--label L]  # ~20 min (--quick: 2 sets, ~3 min)

Writes ``benchmarks/results/cull_limits.json`` (with ``--label``: ``cull_limits-L.json``, e.g.
a run of the code before a change) and SUMMARY.md.  Data sets are cached in
``benchmarks/data/cull/``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import DATA, metric, write_result  # noqa: E402

from nrsdark_dask import instrument as inst  # noqa: E402
from nrsdark_dask.stages.calibrate import calibrate  # noqa: E402
from nrsdark_dask.config import CullConfig, SelectConfig  # noqa: E402
from nrsdark_dask.stages.cull import KINDS, cull  # noqa: E402
from nrsdark_dask.stages.cull import limits as score_limits  # noqa: E402
from nrsdark_dask.stages.select import select_inputs, write_manifest  # noqa: E402
from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset  # noqa: E402

# (switch dT K, glow crest DN/s, persistence scale): one set each, 12 exposures
LEVELS = [(0.01, 0.002, 0.02), (0.02, 0.004, 0.05), (0.04, 0.006, 0.1), (0.08, 0.012, 0.3),
          (0.03, 0.008, 0.2), (0.05, 0.010, 0.15)]
CLEAN_SETS = 3  # sets of 14 exposures without artifacts
NGROUPS = 20
# sizes caught in every exposure (issue 13's run of this script): the unit of dominance
DETECTION = {"mode_switch": 0.03, "glow": 0.008, "persistence": 0.2}
# naming sets (issue 21): name -> (switch dT, fraction), (glow crest, PRISM share),
# (persistence scale, fraction); 12 exposures each
NAMING = {
    "glow_bright": ((0.0, 0.0), (0.1, 0.5), (0.0, 0.0)),
    "glow_brighter": ((0.0, 0.0), (0.3, 0.5), (0.0, 0.0)),
    "persistence_strong": ((0.0, 0.0), (0.0, 0.0), (3.0, 0.35)),
    "switch_strong": ((0.2, 0.35), (0.0, 0.0), (0.0, 0.0)),
    "mixed_glow_switch": ((0.03, 0.35), (0.2, 0.5), (0.0, 0.0)),
    "mixed_switch_persistence": ((0.2, 0.35), (0.0, 0.0), (0.2, 0.35)),
    "mixed_persistence_glow": ((0.0, 0.0), (0.008, 0.5), (3.0, 0.35)),
}
WORK = DATA / "cull"


def make_store(name: str, **kw) -> tuple[Path, dict]:
    d = WORK / name
    store = WORK / f"{name}.zarr"
    if not (d / "simulation.json").exists():
        WORK.mkdir(parents=True, exist_ok=True)
        simulate_dataset(d, SimConfig(subarray="ALLSLITS", ngroups=NGROUPS, **kw), workers=2)
    if not (d / "manifest.ecsv").exists():
        tab = select_inputs([d / "uncal"], cfg=SelectConfig(accept_without_telemetry=True,
                                                             reject_gratings=()))
        write_manifest(tab, d / "manifest.ecsv")
    # resumable: a store left by an interrupted run gets its missing exposures
    calibrate(d / "manifest.ecsv", store, refkit=d / "refkit", scheduler="threads")
    return store, read_truth(d / "truth.fits")


def rate_equivalent_switch(dt_k: float) -> float:
    """Peak (edge-pixel) slope, DN/s, that a mode switch of ``dt_k`` K puts into a rate: the
    least-squares slope of 120 dT exp(-t/600 s) over the groups' times."""
    sub = inst.get_subarray("ALLSLITS")
    t = inst.group_times(inst.get_read_pattern("NRSRAPID"), sub.frame_time("TRAD"), NGROUPS)
    return float(abs(np.polyfit(t, 120.0 * dt_k * np.exp(-t / 600.0), 1)[0]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--label", default="", help="result name suffix (cull_limits-LABEL.json)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    levels = LEVELS[2:4] if args.quick else LEVELS
    n_clean = 1 if args.quick else CLEAN_SETS
    rows = []
    for i, (dt_k, glow, pscale) in enumerate(levels):
        store, truth = make_store(
            f"level{i}", nexp=12, seed=300 + i, artifacts=True, switch_dt=dt_k, glow_rate=glow,
            persistence_scale=pscale, mode_switch_fraction=0.25, persistence_fraction=0.25,
            gratings={"G140H": 2, "PRISM": 1})
        rows += score_rows(store, truth, dict(mode_switch=dt_k, glow=glow, persistence=pscale))
    for j in range(n_clean):
        store, truth = make_store(f"clean{j}", nexp=14, seed=400 + j,
                                  gratings={"G140H": 2, "PRISM": 1})
        rows += score_rows(store, truth, {})
    for k, (name, ((dt_k, f_sw), (glow, f_glow), (pscale, f_p))) in enumerate(NAMING.items()):
        if args.quick and k:
            break
        store, truth = make_store(
            name, nexp=12, seed=500 + k, artifacts=True, switch_dt=dt_k, glow_rate=glow,
            persistence_scale=pscale or 1.0, mode_switch_fraction=f_sw,
            persistence_fraction=f_p,
            gratings={"G140H": 1 - f_glow, "PRISM": f_glow} if f_glow else {"G140H": 1})
        rows += score_rows(store, truth, dict(mode_switch=dt_k, glow=glow, persistence=pscale),
                           name)
    limit = score_limits(CullConfig())
    out = {"rows": rows}
    print(f"{'kind':12s} {'size':>8s} {'with':>5s} {'culled':>7s} {'as kind':>8s}  scores")
    limits = {}
    levels = [r for r in rows if r["set"].startswith("level")]  # the limits: as in issue 13
    for kind in KINDS:
        sizes = sorted({r["size"][kind] for r in levels if r["truth"][kind]})
        for s in sizes:
            sel = [r for r in levels if r["truth"][kind] and r["size"][kind] == s]
            caught = sum(r["culled"] for r in sel)
            as_kind = sum(r["score"][kind] > limit[kind] for r in sel)
            print(f"{kind:12s} {s:8.3f} {len(sel):5d} {caught:7d} {as_kind:8d}  "
                  + " ".join(f"{r['score'][kind]:.1f}" for r in sel))
            if as_kind == len(sel) and kind not in limits:
                limits[kind] = s
    clean = [r for r in rows if not any(r["truth"].values())]
    false = sum(r["culled"] for r in clean)
    print(f"clean exposures: {len(clean)}, culled {false} ({100 * false / max(len(clean), 1):.1f} %)")
    for kind in KINDS:
        sc = np.array([r["score"][kind] for r in clean])
        print(f"  {kind} score on clean: median {np.nanmedian(sc):.2f}, max {np.nanmax(sc):.2f}"
              f" (limit {limit[kind]})")
    names = naming(rows)
    print(f"artifact names the dominant kind: {names['right']} of {names['total']} culled "
          f"exposures with a clear dominant kind ({100 * names['fraction']:.0f} %); per kind "
          + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in names["per_kind"].items()))
    for w in names["wrong"]:
        print(f"  {w['set']} {w['exposure'].split('@')[0]}: {w['dominant']} named "
              f"{w['named'] or 'clean'}; scores " + ", ".join(f"{k} {v:.1f}"
                                                             for k, v in w["score"].items()))
    for name in NAMING:
        sel = [r for r in rows if r["set"] == name]
        if sel:
            print(f"  {name}: " + "; ".join(
                f"{'+'.join(k for k in KINDS if r['truth'][k]) or 'clean'} -> "
                f"{r['artifact'] or '-'}" for r in sel))
    # the size that matters: 0.5 UNC N in rate, from a build of the first clean set
    from astropy.io import fits

    from nrsdark_dask.stages.build import build

    store = WORK / "clean0.zarr"
    outdir = WORK / "clean0_reffiles"
    darks = sorted(outdir.glob("*dark*.fits")) if outdir.exists() else []
    if not darks:
        res = build(store, outdir)
        darks = [Path(res["files"]["dark"])]
    from nrsdark_dask.store import open_dataset

    n = open_dataset(store).sizes["exposure"]
    with fits.open(darks[0]) as h:
        unc = float(np.nanmedian(h["UNC"].data))
    a_crit = 0.5 * unc * n
    print(f"DRK UNC median {unc:.4f} DN/s with N = {n}: one input moves DRK by 0.5 UNC at "
          f"{a_crit:.3f} DN/s")
    print(f"  mode switch: {a_crit / rate_equivalent_switch(1.0):.2f} K (edge slope "
          f"{rate_equivalent_switch(0.109):.4f} DN/s at 0.109 K); glow crest {a_crit:.3f} DN/s;"
          f" persistence scale {a_crit / 0.05:.2f} (weakest region 0.05 DN/s x scale)")
    print("smallest size with every exposure caught: "
          + ", ".join(f"{k} {v}" for k, v in limits.items()))
    persistence_clean = float(np.nanmax([r["score"]["persistence"] for r in clean]))
    out.update(unc=unc, n_inputs=n, a_crit=a_crit, limits=limits,
               false_cull=false / max(len(clean), 1), n_clean=len(clean), naming=names,
               persistence_max_clean=persistence_clean)
    case = "-".join(c for c in ("quick" if args.quick else "", args.label) if c)
    write_result("cull_limits", case, "nrsdark cull against truth", [
        metric("false-cull rate, clean exposures", 100 * false / max(len(clean), 1), "%",
               target=2, op="<="),
        *[metric(f"smallest {k} caught in every exposure", v,
                 {"mode_switch": "K", "glow": "DN/s", "persistence": "x"}[k])
          for k, v in limits.items()],
        metric("artifact size moving DRK by 0.5 UNC", a_crit, "DN/s"),
        metric("artifact names the dominant kind (culled, clear dominant)",
               100 * names["fraction"], "%", target=90, op=">="),
        metric("highest persistence score of a clean exposure", persistence_clean, "sigma",
               target=limit["persistence"], op="<="),
    ], details=out)
    return 0


def dominant(row) -> tuple[str, bool]:
    """The true kind of an exposure largest in units of its detection limit, and whether it
    is clear (at least twice the next one); ``("", False)`` for a clean exposure."""
    size = sorted(((row["size"][k] / DETECTION[k], k) for k in KINDS
                   if row["truth"][k] and row["size"][k] > 0), reverse=True)
    if not size:
        return "", False
    return size[0][1], len(size) == 1 or size[0][0] >= 2 * size[1][0]


def naming(rows: list[dict]) -> dict:
    """How often the ``artifact`` column names the dominant kind, over culled exposures whose
    dominant kind is clear; per kind, and the misnamed ones."""
    per = {k: [0, 0] for k in KINDS}
    wrong = []
    for r in rows:
        kind, clear = dominant(r)
        if not (r["culled"] and kind and clear):
            continue
        per[kind][1] += 1
        if r["artifact"] == kind:
            per[kind][0] += 1
        else:
            wrong.append({"set": r["set"], "exposure": r["exposure"], "dominant": kind,
                          "named": r["artifact"], "score": r["score"]})
    right, total = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
    return {"right": right, "total": total, "fraction": right / max(total, 1),
            "per_kind": per, "wrong": wrong}


def score_rows(store, truth, size, name="") -> list[dict]:
    tab, _ = cull(store)
    exp = {str(r["filename"]): r for r in truth["exposures"]}
    rows = []
    for r in tab:
        t = exp[str(r["exposure"]).split("@")[0]]
        rows.append({
            "set": name or Path(store).stem, "exposure": str(r["exposure"]),
            "culled": bool(r["culled"]),
            "artifact": str(r["artifact"]),
            "truth": {"mode_switch": bool(t["mode_switch"]), "glow": bool(t["glow"]),
                      "persistence": bool(t["persistence"])},
            "size": {k: size.get(k, 0.0) for k in KINDS},
            "score": {k: float(r[f"score_{k}"]) for k in KINDS},
        })
    return rows


if __name__ == "__main__":
    sys.exit(main())
