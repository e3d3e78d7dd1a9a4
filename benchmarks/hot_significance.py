"""HOT on short, noisy inputs (issue 21 item 4): the report's plain rule (DRK > hot_rate)
against the significance rule ((DRK - hot_rate) / UNC > hot_sigma), scored on simulation
truth.  Not a speed benchmark and not in ``make bench`` (~5 min the first time, then cached).

Data: ``nrsdark simulate --subarray SUB2048 --ngroups 10 --nexp 12`` (seed 2101), selected
and calibrated once into ``data/hot_significance/``; builds from the first N = 3, 6, 12
inputs (by date) under each rule.  Truth: true rate > 1 DN/s; scored as
``tests/test_reduce.py::test_science_against_truth`` scores HOT (active pixels away from RC
pixels, their IPC neighbours and RTN pixels, outside the truth's 0.8-1.25 DN/s gap).  The
false-hot fraction is of the scored pixels that are not hot.  ``nrsdark analyze``'s
warnings on each build are recorded.  Writes ``results/hot_significance.{json,md}``.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as U  # noqa: E402
from _util import metric, rel  # noqa: E402

WORK = U.DATA / "hot_significance"
U.set_data_dir(WORK)
SUBARRAY, NGROUPS, NEXP, SEED = "SUB2048", 10, 12, 2101
NS = (3, 6, 12)
RULES = ("report", "significant")


def scored(truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """(truth hot, scored population), as the science test scores HOT."""
    from scipy.ndimage import binary_dilation

    active = ~truth["refpix"]
    pop = active & ~binary_dilation(truth["rc"], iterations=2) & ~truth["rtn"]
    pop &= ~truth["ipc_neighbour"] & ~((truth["rate"] > 0.8) & (truth["rate"] < 1.25))
    return truth["rate"] > 1.0, pop


def one(store: Path, ids: list[str], n: int, rule: str, truth: dict) -> dict:
    from astropy.io import fits

    from nrsdark_dask.stages.analyze import analyze, flag_pixels
    from nrsdark_dask.stages.build import build
    from nrsdark_dask.config import Config, DarkConfig
    from nrsdark_dask.reduction.tables import flag

    cfg = Config(dark=DarkConfig(hot_rule=rule))
    out = WORK / "builds" / f"{rule}-{n}"
    shutil.rmtree(out, ignore_errors=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = build(store, out, scheduler="threads", config=cfg, exclude=ids[n:])
        toml = out / "c.toml"
        toml.write_text(f'[dark]\nhot_rule = "{rule}"\n')
        s = analyze(out, config=toml)
    with fits.open(res["files"]["dark"], memmap=False) as h:
        drk = np.asarray(h["DRK"].data, np.float32)
        unc = np.asarray(h["UNC"].data, np.float32)
    hot = flag_pixels(flag("hot"), None, {"mean_rate": drk, "unc": unc}, cfg,
                      ~truth["refpix"], {"n_exposures": n})
    assert int(hot.sum()) == int(res["stats"]["n_hot"]) == s["n_hot"], "HOT read back"
    true, pop = scored(truth)
    tp = int((hot & true & pop).sum())
    fp = int((hot & ~true & pop).sum())
    n_true, n_false_pop = int((true & pop).sum()), int((~true & pop).sum())
    shutil.rmtree(out)
    return {"n": n, "rule": rule, "n_hot": int(hot.sum()), "true": n_true, "tp": tp, "fp": fp,
            "recall": tp / n_true if n_true else float("nan"),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "false_hot_fraction": fp / n_false_pop, "unc_median": s["unc_median"],
            "hot_limit": s["hot_limit"], "snr": s["snr"],
            "warnings": [w for w in s["warnings"] if "HOT" in w]}


def main() -> int:
    from nrsdark_dask.simulate import read_truth
    from nrsdark_dask.store import RampStore, open_dataset

    name = f"sub2048-g{NGROUPS}-s{SEED}"
    sim, store = WORK / f"{name}-sim", WORK / f"{name}.zarr"
    if not (store.exists() and len(RampStore(store).committed()) == NEXP):
        shutil.rmtree(store, ignore_errors=True)
        U.make_store(sim, WORK / f"{name}-manifest.ecsv", store, name, SUBARRAY, NGROUPS,
                     NEXP, SEED)
    truth = read_truth(sim / "truth.fits")
    ids = [str(e) for e in open_dataset(store).exposure.values]  # by date
    rows = [one(store, ids, n, rule, truth) for n in NS for rule in RULES]
    lines = ["# HOT on short, noisy inputs: the report's rule against the significance rule",
             "", f"SUB2048, {NGROUPS} groups, first N of {NEXP} inputs (seed {SEED}); truth "
             "rate > 1 DN/s, scored as the science test scores HOT.  "
             "`benchmarks/hot_significance.py`.", "",
             "| N | rule | HOT flags | recall | precision | false-hot fraction | UNC median "
             "(DN/s) | found HOT above (DN/s) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['rule']} | {r['n_hot']} | {r['recall']:.3f} | "
                     f"{r['precision']:.3f} | {r['false_hot_fraction']:.5f} | "
                     f"{r['unc_median']:.3g} | {r['hot_limit']:.2f} |")
    lines += ["", "Warnings of `nrsdark analyze` about HOT:", ""]
    for r in rows:
        for w in r["warnings"]:
            lines.append(f"* N = {r['n']}, {r['rule']}: {w}")
    text = "\n".join(lines) + "\n"
    (U.RESULTS / "hot_significance.md").write_text(text)
    print(text)
    metrics = [metric(f"false-hot fraction, N = {r['n']}, {r['rule']}",
                      r["false_hot_fraction"], fmt="{:.5f}") for r in rows]
    U.write_result("hot_significance", "", "HOT significance on short, noisy inputs", metrics,
                   {"rows": rows, "store": rel(store)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
