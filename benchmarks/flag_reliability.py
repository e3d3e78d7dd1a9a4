"""Reliability of the pixel-flag rules against the number of inputs N, scored on simulation
truth (issue 14); each flag row's ``reliable_n`` (``products.FLAGS``), the inputs under which
``nrsdark analyze`` warns about a rule, cites its numbers.

Data: independent simulated sets (one detector truth per seed), TRAD NRSRAPID, 20 clean
exposures each: ``allslits88``, 3 sets of NRS1 ALLSLITS (256 x 2048, full width, so it has the
reference columns the bad-reference rule looks at) at 88 groups (the monitor's ramps); and
``full20``, 1 set of NRS1 FULL at 20 groups (the bad-reference rule's rows and columns: ~164
true pixels against ~9 on ALLSLITS).  Made with the project's commands (timed, logs in
``data/flag_reliability/logs``)::

    nrsdark simulate SIM --subarray ALLSLITS --ngroups 88 --nexp 20 --seed S --gratings G140H \
        --workers 2
    nrsdark select SIM/uncal --telemetry SIM/telemetry.ecsv -o SIM-manifest.ecsv
    nrsdark calibrate SIM-manifest.ecsv --store SIM.zarr --refkit SIM/refkit --scheduler local:2

(FULL frames of 88 groups are not affordable here: jwst detector1 peaks at 9.9 GB per worker and
takes ~170 s per exposure, 20 exposures ~45 GB of disk.)  Then, for each N, builds from subsets
of N of the 20 exposures, selected from the store without copying (``build(..., exclude=[the
others])``, threads scheduler, 2 workers): several subsets per N, disjoint where N <= 10.  Flags
are read back from each DARK: RC, TELEGRAPH and BAD_REF_PIXEL are DQ bits; a subarray build
writes no MASK, and the DARK has no HOT bit, so HOT is the build's HOT row on the DARK's DRK
and UNC on active pixels (``analyze.flag_pixels``: the rule itself), checked equal to the
build's ``n_hot``.

Scoring follows ``tests/test_reduce.py::test_science_against_truth``:

========  ====================  ===================================================================
rule      truth                 population scored
========  ====================  ===================================================================
HOT       true rate > 1 DN/s    active, not within 2 px of an RC pixel, not RTN, not an IPC
                                neighbour, true rate outside the 0.8-1.25 DN/s gap
RC        ``rc``                active pixels
TELEGRAPH ``rtn``               active pixels that are not truly hot
BAD REF   ``badref``            reference pixels
========  ====================  ===================================================================

Precision and recall are pooled over the subsets and sets of one N (sum of true positives over
the sums of flags and of true pixels); the spread over the subsets is kept too.  The reliable N
of a rule is the smallest N at which precision >= 0.9 and recall >= 0.9 hold for it and every
larger N measured.  False positives are classified by what the truth says they are.

    python benchmarks/flag_reliability.py [--sets 3] [--subsets 3] [--ns 3,4,5,6,8,10,12,16,20]

First run ~70 min on 2 cores (per set ~15 min to simulate and calibrate, peak RSS 3.5 GB for
ALLSLITS, 5.5 GB for FULL; 75 builds, ~10 min in all) and ~20 GB of disk (stores of 4.0 GB per
ALLSLITS set, 8.4 GB for FULL); the stores and each build's flags are cached in
``benchmarks/data/flag_reliability/`` (the builds' FITS files are deleted once read), so a
rerun only scores.  Writes
``benchmarks/results/flag_reliability.json`` and ``flag_reliability.md`` (SUMMARY.md is left
alone; ``python benchmarks/_util.py summary`` adds the thresholds to it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as U  # noqa: E402
from _util import BenchError, metric, rel  # noqa: E402

NEXP = 20
# data sets: ALLSLITS at the monitor's 88 groups (HOT, RC, TELEGRAPH: ~1100, 57, 2600 true
# pixels per set, but only ~5-10 bad reference pixels: reference columns only), and a FULL
# frame at 20 groups for the bad-reference rule (164 per frame, rows and columns) and as a
# full-frame check of the others
CASES = {"allslits88": {"subarray": "ALLSLITS", "ngroups": 88, "seeds": (1401, 1402, 1403)},
         "full20": {"subarray": "FULL", "ngroups": 20, "seeds": (1501,)}}
NS = (3, 4, 5, 6, 8, 10, 12, 16, 20)
RULES = ("hot", "rc", "telegraph", "bad_reference")
BITS = {"rc": "RC", "telegraph": "TELEGRAPH", "bad_reference": "BAD_REF_PIXEL"}
GOAL = 0.9  # precision and recall both at least this
WORK = U.DATA / "flag_reliability"
U.set_data_dir(WORK)  # logs of the commands go to WORK/logs


def _nice(target: int = 10) -> None:
    """Run at niceness >= ``target`` (the machine is shared); children inherit it."""
    try:
        cur = os.nice(0)
        if cur < target:
            os.nice(target - cur)
    except OSError:
        pass


# ---- data sets ------------------------------------------------------------------------------
def ensure_set(case: str, seed: int, keep_uncal: bool) -> tuple[Path, Path, dict]:
    """Simulate, select and calibrate one set once; reuse it afterwards.  Returns the store,
    the simulation folder and the preparation record (timings, also of a cached set)."""
    from nrsdark_dask.store import SCHEMA_VERSION, RampStore, StoreError

    subarray, ngroups = CASES[case]["subarray"], CASES[case]["ngroups"]
    name = f"{case}-s{seed}"
    sim, store = WORK / f"{name}-sim", WORK / f"{name}.zarr"
    manifest, prep_file = WORK / f"{name}-manifest.ecsv", WORK / f"{name}-prep.json"
    if store.exists() and (sim / "truth.fits").exists() and prep_file.exists():
        try:
            s = RampStore(store)
            ok = len(s.committed()) == NEXP and getattr(s.layout(), "schema", 1) >= SCHEMA_VERSION
        except (StoreError, OSError, KeyError, ValueError):
            ok = False
        if ok:
            print(f"data set {name}: cached {rel(store)}")
            return store, sim, dict(json.loads(prep_file.read_text()), cached=True, case=case,
                                    subarray=subarray, ngroups=ngroups)
    WORK.mkdir(parents=True, exist_ok=True)
    prep = {"name": name, "case": case, "seed": seed, "subarray": subarray,
            "ngroups": ngroups, "store": rel(store), "cached": False}
    prep.update(U.make_store(sim, manifest, store, name, subarray, ngroups, NEXP, seed))
    prep["store_bytes"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    if not keep_uncal:  # the store and truth.fits are all the scoring needs
        shutil.rmtree(sim / "uncal", ignore_errors=True)
        prep["uncal_deleted"] = True
    prep_file.write_text(json.dumps(prep, indent=1))
    return store, sim, prep


def subsets(ids: list[str], n: int, k: int, seed: int) -> list[list[str]]:
    """``k`` different subsets of ``n`` of ``ids`` (disjoint as long as they fit; all of them
    once for n = len(ids))."""
    if n >= len(ids):
        return [list(ids)]
    rng = np.random.default_rng([seed, n])
    out, pool = [], []
    while len(out) < k:
        if len(pool) < n:
            pool = list(rng.permutation(ids))
        pick, pool = pool[:n], pool[n:]
        pick = sorted(pick)
        if pick not in out:
            out.append(pick)
    return out


# ---- one build ------------------------------------------------------------------------------
def build_flags(store: Path, ids: list[str], chosen: list[str], label: str) -> dict:
    """Build from ``chosen`` (the other ``ids`` excluded), read the flags back from the DARK;
    cached in WORK/flags/<label>.npz (with the subset, so a changed subset rebuilds)."""
    cache = WORK / "flags" / f"{label}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if list(z["chosen"]) == chosen:
            shape = tuple(z["shape"])
            return {"flags": {r: np.unpackbits(z[r])[: np.prod(shape)].reshape(shape).astype(bool)
                              for r in RULES},
                    "stats": json.loads(str(z["stats"])), "wall_s": float(z["wall_s"]),
                    "cached": True}
    from astropy.io import fits

    from nrsdark_dask import instrument as inst
    from nrsdark_dask.stages.build import build
    from nrsdark_dask.config import Config

    outdir = WORK / "builds" / label
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    exclude = [i for i in ids if i not in chosen]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build(store, outdir, scheduler="threads", workers=2, exclude=exclude)
    wall = time.perf_counter() - t0
    with fits.open(res["files"]["dark"], memmap=False) as h:
        dq = np.asarray(h["DQ"].data).astype(np.uint32)
        drk = np.asarray(h["DRK"].data, np.float32)
        unc = np.asarray(h["UNC"].data, np.float32)
    from nrsdark_dask.stages.analyze import flag_pixels
    from nrsdark_dask.reduction.tables import flag
    from nrsdark_dask.store import open_dataset

    lay = open_dataset(store).attrs["layout"]
    ref = inst.reference_pixel_mask(inst.get_subarray(lay["subarray"]))
    flags = {r: (dq & inst.DQ[b]) != 0 for r, b in BITS.items()}
    # the DARK has no HOT bit: the build's HOT row on its DRK and UNC
    flags["hot"] = flag_pixels(flag("hot"), None, {"mean_rate": drk, "unc": unc}, Config(), ~ref,
                               {"n_exposures": len(chosen)})
    s = res["stats"]
    for r, key in (("hot", "n_hot"), ("rc", "n_rc"), ("telegraph", "n_telegraph"),
                   ("bad_reference", "n_bad_reference")):
        if int(flags[r].sum()) != int(s[key]):
            raise BenchError(f"{label}: {r} flags read back {int(flags[r].sum())} != build's "
                             f"{key} {s[key]}")
    if s["n_exposures"] != len(chosen):
        raise BenchError(f"{label}: built from {s['n_exposures']} inputs, not {len(chosen)}")
    shutil.rmtree(outdir)  # ~370 MB of DARK cube per build
    cache.parent.mkdir(parents=True, exist_ok=True)
    keep = {k: s[k] for k in ("n_exposures", "n_hot", "n_rc", "n_telegraph", "n_bad_reference")}
    np.savez_compressed(cache, chosen=np.array(chosen), shape=np.array(drk.shape),
                        stats=json.dumps(keep), wall_s=wall,
                        **{r: np.packbits(flags[r].ravel()) for r in RULES})
    return {"flags": flags, "stats": keep, "wall_s": wall, "cached": False}


# ---- scoring ---------------------------------------------------------------------------------
def populations(truth: dict) -> dict:
    """(truth mask, population) per rule, as tests/test_reduce.py scores them."""
    from scipy.ndimage import binary_dilation

    active = ~truth["refpix"]
    plain = active & ~binary_dilation(truth["rc"], iterations=2) & ~truth["rtn"]
    plain &= ~truth["ipc_neighbour"] & ~((truth["rate"] > 0.8) & (truth["rate"] < 1.25))
    return {"hot": (truth["rate"] > 1.0, plain),
            "rc": (truth["rc"], active),
            "telegraph": (truth["rtn"], active & ~truth["hot"]),
            "bad_reference": (truth["badref"], truth["refpix"])}


def score(flag: np.ndarray, true: np.ndarray, pop: np.ndarray) -> dict:
    f, t = flag & pop, true & pop
    return {"tp": int((f & t).sum()), "flagged": int(f.sum()), "true": int(t.sum())}


def false_kinds(rule: str, flag: np.ndarray, truth: dict, pop: np.ndarray,
                true: np.ndarray) -> dict:
    """What the truth says a rule's false positives are (first matching class)."""
    from scipy.ndimage import binary_dilation

    fp = flag & pop & ~true
    near_rc = binary_dilation(truth["rc"], iterations=2) & ~truth["rc"]
    noisy = truth["badref"] & (truth["badref_noise"] > 0)
    classes = [("rtn", truth["rtn"]), ("rc", truth["rc"]), ("hot", truth["hot"]),
               ("near_rc", near_rc), ("ipc_neighbour", truth["ipc_neighbour"]),
               ("warm", truth["warm"]),
               ("next_to_rtn", binary_dilation(truth["rtn"]) & ~truth["rtn"])]
    if rule == "bad_reference":
        # jwst's jump step flags the neighbours of a noisy pixel's big "jumps": the average
        # ramp keeps few of their inputs per group, and the ddof = 0 std of few is low
        classes = [("near_noisy_badref",
                    binary_dilation(noisy, structure=np.ones((3, 3), bool)) & ~noisy)]
    out, left = {}, fp.copy()
    for name, m in classes:
        n = int((left & m).sum())
        if n:
            out[name] = n
        left &= ~m
    if left.any():
        out["other"] = int(left.sum())
    if rule == "rc" and "rtn" in out:
        sel = fp & truth["rtn"]
        out["rtn_median_amp_DN"] = float(np.median(truth["rtn_amp"][sel]))
        out["rtn_median_p"] = float(np.median(truth["rtn_p"][sel]))
    if rule == "bad_reference" and fp.any():
        ys, xs = np.nonzero(fp)
        out["columns"] = {int(c): int((xs == c).sum()) for c in np.unique(xs)}
    return out


def missed_kinds(rule: str, flag: np.ndarray, truth: dict, pop: np.ndarray,
                 true: np.ndarray) -> dict:
    fn = ~flag & pop & true
    out = {"missed": int(fn.sum())}
    if rule == "bad_reference" and fn.any():
        out["noisy"] = int((fn & (truth["badref_noise"] > 0)).sum())
        out["drifting"] = int((fn & (truth["badref_drift"] != 0)).sum())
    if rule == "hot" and fn.any():
        out["median_true_rate"] = float(np.median(truth["rate"][fn]))
    if rule == "rc" and fn.any():
        # the IPC veto: a neighbour above 2 % of the candidate's excess "shares" it; the
        # simulator gives neighbours 0.7 % of the unsaturated charge of an RC pixel that
        # saturates within group 1, i.e. more than 2 % of its (saturated) count
        t1 = truth["_group1_time"]
        q1 = truth["rc_amp"] * (1 - np.exp(-t1 / np.maximum(truth["rc_tau"], 1e-6)))
        out["saturated_in_group1"] = int((fn & (q1 > truth["full_well"])).sum())
    if rule == "telegraph" and fn.any():
        out["median_p"] = float(np.median(truth["rtn_p"][fn]))
        out["median_amp_DN"] = float(np.median(truth["rtn_amp"][fn]))
    return out


def _ratio(a, b):
    return a / b if b else None


def _smallest(ns: list, ok: list):
    for i, n in enumerate(ns):
        if all(ok[i:]):
            return n
    return None


def reliable_n(per_n: dict) -> dict:
    """Smallest N with precision and recall >= GOAL there and at every larger N measured
    (``n``); the same for precision alone (``n_precision``) and recall alone (``n_recall``)."""
    ns = sorted(per_n)

    def good(n, key):
        return per_n[n][key] is not None and per_n[n][key] >= GOAL

    p_ok, r_ok = [good(n, "precision") for n in ns], [good(n, "recall") for n in ns]
    top = per_n[ns[-1]]
    return {"n": _smallest(ns, [a and b for a, b in zip(p_ok, r_ok)]),
            "n_precision": _smallest(ns, p_ok), "n_recall": _smallest(ns, r_ok),
            "plateau": {"N": ns[-1], "precision": top["precision"], "recall": top["recall"]},
            "best_precision": max((v["precision"] or 0) for v in per_n.values()),
            "best_recall": max((v["recall"] or 0) for v in per_n.values())}


def _never(n):
    return f"N >= {n}" if n else "never"


def _f(v, nd=3):
    return "  —  " if v is None else f"{v:.{nd}f}"


def run_case(case: str, sets: list, ns: list[int], n_subsets: int) -> dict:
    """Build every subset of every set of ``case``; pooled scores per rule and N."""
    from nrsdark_dask.simulate import read_truth
    from nrsdark_dask.store import open_dataset

    runs = []
    for store, sim, prep in sets:
        truth = read_truth(sim / "truth.fits")
        pops = populations(truth)
        ds = open_dataset(store)
        ids = sorted(str(i) for i in ds.exposure.values)
        truth["_group1_time"] = float(ds.group_time.values[0])
        for n in ns:
            for k, chosen in enumerate(subsets(ids, n, n_subsets, prep["seed"])):
                label = f"{prep['name']}-N{n:02d}-{k}"
                b = build_flags(store, ids, chosen, label)
                row = {"set": prep["name"], "N": n, "subset": k, "build_s": round(b["wall_s"], 1),
                       "cached": b["cached"], "stats": b["stats"], "scores": {}, "false": {},
                       "missed": {}}
                for r in RULES:
                    true, pop = pops[r]
                    row["scores"][r] = score(b["flags"][r], true, pop)
                    row["false"][r] = false_kinds(r, b["flags"][r], truth, pop, true)
                    row["missed"][r] = missed_kinds(r, b["flags"][r], truth, pop, true)
                sc = row["scores"]
                print(f"  {label}: build {b['wall_s']:5.1f} s{' (cached)' if b['cached'] else ''}"
                      + "".join(f"  {r} {sc[r]['tp']}/{sc[r]['flagged']}/{sc[r]['true']}"
                                for r in RULES), flush=True)
                runs.append(row)
        del truth, pops
    per_rule = {r: {} for r in RULES}
    for r in RULES:
        for n in ns:
            rows = [x for x in runs if x["N"] == n]
            tp = sum(x["scores"][r]["tp"] for x in rows)
            fl = sum(x["scores"][r]["flagged"] for x in rows)
            tr = sum(x["scores"][r]["true"] for x in rows)
            prec = [_ratio(x["scores"][r]["tp"], x["scores"][r]["flagged"]) for x in rows]
            rec = [_ratio(x["scores"][r]["tp"], x["scores"][r]["true"]) for x in rows]
            fk, mk = {}, {}
            for x in rows:
                for kind, v in x["false"][r].items():
                    if isinstance(v, int):
                        fk[kind] = fk.get(kind, 0) + v
                for kind, v in x["missed"][r].items():
                    if isinstance(v, int):
                        mk[kind] = mk.get(kind, 0) + v
            per_rule[r][n] = {
                "precision": _ratio(tp, fl), "recall": _ratio(tp, tr), "tp": tp,
                "flagged": fl, "true": tr, "builds": len(rows),
                "precision_min": min((p for p in prec if p is not None), default=None),
                "precision_max": max((p for p in prec if p is not None), default=None),
                "recall_min": min((p for p in rec if p is not None), default=None),
                "recall_max": max((p for p in rec if p is not None), default=None),
                "false_per_build": round((fl - tp) / len(rows), 2),
                "false_kinds": fk, "missed_kinds": mk}
    return {"per_rule": per_rule, "thresholds": {r: reliable_n(per_rule[r]) for r in RULES},
            "runs": runs, "sets": [p for _, _, p in sets]}


def case_text(case: str, res: dict, ns: list[int], n_subsets: int) -> str:
    c, per_rule, thr = CASES[case], res["per_rule"], res["thresholds"]
    true = {r: round(per_rule[r][ns[-1]]["true"] / per_rule[r][ns[-1]]["builds"]) for r in RULES}
    lines = [f"## {case}: {len(res['sets'])} simulated NRS1 {c['subarray']} TRAD sets, "
             f"{c['ngroups']} groups, {NEXP} clean exposures each", "",
             f"Precision (P) / recall (R) pooled over the sets and {n_subsets} subsets per set "
             f"and N (1 for N = {NEXP}); true pixels per set: "
             + ", ".join(f"{r} {true[r]}" for r in RULES) + ".", "",
             "| N | builds | " + " | ".join(f"{r} P | {r} R" for r in RULES) + " |",
             "|---|---|" + "---|---|" * len(RULES)]
    for n in ns:
        lines.append(f"| {n} | {per_rule[RULES[0]][n]['builds']} | " + " | ".join(
            f"{_f(per_rule[r][n]['precision'])} | {_f(per_rule[r][n]['recall'])}"
            for r in RULES) + " |")
    lines += ["", "Range over the builds of one N (P min-max / R min-max):", ""]
    for r in RULES:
        lines.append(f"- {r}: " + "; ".join(
            f"{n}: {_f(per_rule[r][n]['precision_min'], 2)}-{_f(per_rule[r][n]['precision_max'], 2)}"
            f" / {_f(per_rule[r][n]['recall_min'], 2)}-{_f(per_rule[r][n]['recall_max'], 2)}"
            for n in ns))
    lines += ["", "False positives per build, and what the truth says they are (per build; "
              "next_to_rtn: a 4-neighbour of an RTN pixel, near_noisy_badref: an 8-neighbour "
              "of a noisy bad reference pixel):", ""]
    for r in RULES:
        lines.append(f"- {r}: " + "; ".join(
            f"{n}: {per_rule[r][n]['false_per_build']}"
            + (" (" + ", ".join(f"{k} {round(v / per_rule[r][n]['builds'], 2)}"
                                for k, v in per_rule[r][n]["false_kinds"].items()) + ")"
               if per_rule[r][n]["false_kinds"] else "") for n in ns))
    lines += ["", f"Reliable N (P >= {GOAL} and R >= {GOAL} at N and at every larger N "
              "measured):", ""]
    for r in RULES:
        t, p = thr[r], thr[r]["plateau"]
        lines.append(f"- {r}: " + (f"N >= {t['n']}" if t["n"] else
                                   f"never; at N = {p['N']}: P {_f(p['precision'])}, "
                                   f"R {_f(p['recall'])} (best P {_f(t['best_precision'])}, "
                                   f"best R {_f(t['best_recall'])})")
                     + f"; precision alone: {_never(t['n_precision'])}, recall alone: "
                     f"{_never(t['n_recall'])}")
    lines += ["", "Missed true pixels per build, and what they are:", ""]
    for r in RULES:
        lines.append(f"- {r}: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {round(v / per_rule[r][n]['builds'], 1)}"
                                 for k, v in per_rule[r][n]["missed_kinds"].items())
            for n in ns))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help="data-set kinds: "
                    + ", ".join(f"{k} ({v['subarray']}, {v['ngroups']} groups)"
                                for k, v in CASES.items()))
    ap.add_argument("--sets", type=int, default=None,
                    help="independent simulated sets (seeds) per case (default: all listed)")
    ap.add_argument("--subsets", type=int, default=3, help="builds per N and set (N < 20)")
    ap.add_argument("--ns", default=",".join(map(str, NS)))
    ap.add_argument("--keep-uncal", action="store_true",
                    help="keep the simulated uncal files after calibrating (1.8 GB per "
                         "ALLSLITS set, 3.4 GB per FULL set)")
    ap.add_argument("--only", choices=("data",), help="only prepare the data sets")
    a = ap.parse_args(argv)
    _nice()
    ns = sorted({int(x) for x in a.ns.split(",")})
    cases = [c for c in a.cases.split(",") if c]
    if bad := [c for c in cases if c not in CASES]:
        ap.error(f"unknown case(s) {bad}; known: {', '.join(CASES)}")
    if max(ns) > NEXP or min(ns) < 2:
        ap.error(f"N must be between 2 and {NEXP}")
    t_start = time.perf_counter()
    sets = {c: [ensure_set(c, seed, a.keep_uncal) for seed in CASES[c]["seeds"][: a.sets]]
            for c in cases}
    if a.only == "data":
        return 0
    results, texts = {}, []
    for c in cases:
        print(f"case {c}:")
        results[c] = run_case(c, sets[c], ns, a.subsets)
        texts.append(case_text(c, results[c], ns, a.subsets))
    text = "\n\n".join(texts)
    print("\n" + text)
    total = time.perf_counter() - t_start
    details = {
        "data": {c: {"subarray": CASES[c]["subarray"], "ngroups": CASES[c]["ngroups"],
                     "nexp": NEXP, "readpatt": "NRSRAPID", "detector": "NRS1",
                     "gratings": "G140H", "artifacts": False, "sets": results[c]["sets"]}
                 for c in cases},
        "scoring": "tests/test_reduce.py::test_science_against_truth populations; HOT = the "
                   "build's HOT row on the DARK's DRK and UNC, active pixels (the DARK has no "
                   "HOT bit, a subarray build no MASK); RC/TELEGRAPH/BAD_REF_PIXEL from the "
                   "DARK DQ; pooled over the builds of one N",
        "ns": ns, "subsets_per_n": a.subsets, "goal": GOAL,
        "per_rule": {c: {r: {str(n): v for n, v in results[c]["per_rule"][r].items()}
                         for r in RULES} for c in cases},
        "thresholds": {c: results[c]["thresholds"] for c in cases},
        "runs": {c: results[c]["runs"] for c in cases}, "wall_s": round(total, 1),
        "build_s_total": round(sum(x["build_s"] for c in cases for x in results[c]["runs"]
                                   if not x["cached"]), 1),
    }
    metrics = []
    for c in cases:
        for r in RULES:
            t = results[c]["thresholds"][r]
            metrics.append(metric(
                f"{c} {r}: smallest N with precision and recall >= {GOAL}", t["n"], "inputs",
                fmt="{:d}", note="" if t["n"] else
                f"never up to {max(ns)}: P {_f(t['plateau']['precision'], 2)} "
                f"R {_f(t['plateau']['recall'], 2)}"))
            metrics.append(metric(
                f"{c} {r}: smallest N with precision >= {GOAL}", t["n_precision"], "inputs",
                fmt="{:d}", note="" if t["n_precision"] else
                f"never up to {max(ns)}: best P {_f(t['best_precision'], 2)}"))
    write_json(metrics, details)
    md = U.RESULTS / "flag_reliability.md"
    md.write_text("# Flag reliability vs number of inputs\n\nGenerated by "
                  "`benchmarks/flag_reliability.py` (see its docstring).\n\n" + text + "\n")
    print(f"wrote {rel(md)}  (total {total / 60:.1f} min)")
    return 0


def write_json(metrics: list, details: dict) -> Path:
    """``_util.write_result``'s format, without regenerating SUMMARY.md."""
    import datetime as dt

    U.RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "flag_reliability", "case": "",
               "title": "flag rules vs number of inputs",
               "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": U.machine(), "git": U.git_state(), "metrics": metrics,
               "details": details}
    path = U.RESULTS / "flag_reliability.json"
    path.write_text(json.dumps(payload, indent=1, default=U._json_default) + "\n")
    print(f"wrote {rel(path)}")
    return path


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        sys.exit(f"flag_reliability: {exc}")
