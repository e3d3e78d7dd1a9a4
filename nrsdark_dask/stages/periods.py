"""``nrsdark periods``: the report's temporal darks T0, T1, ... (report §5).

From the dates of a store's (not culled) exposures, the shortest windows whose inputs reach
the delivery SNR:

1. **predict**: the per-file SNR ``x`` is the delivery SNR of all the store's rate images
   over sqrt(N) (:func:`nrsdark_dask.reduction.delivery.rate_snr`; SNR grows as sqrt(N), report
   Table 4),
   so a window needs ``n = (required / x)^2`` inputs (whole, as ``nrsdark plan`` rounds);
2. **windows**: consecutive runs of ``n`` inputs in date order, T0 the earliest; a remainder
   shorter than ``n`` is the last ``n`` inputs, overlapping the window before it (the
   report's periods overlap where the inputs are sparse);
3. **confirm**: each window's SNR from its own rate images (exactly what its build reaches);
   a window under the requirement grows by the next input (the previous one at the end of the
   data) until it reaches it or holds every input, and the next window starts after it;
4. **build** each window, and a *master* over all inputs for comparison only (not for
   delivery), each into ``OUTDIR/<label>/`` with its own PEDIGREE / USEAFTER (from its inputs'
   dates), selected from the store by exposure (nothing copied); HISTORY names the period.
   A store with fewer inputs than one period needs gives the master only (and says so).

The table (``OUTDIR/periods.ecsv``, like the report's Tables 3-4): label, first and last
date, months, predicted and built SNR, inputs, median rate, new hot pixels against the
comparison mask (``--mask-in``), deliverable, the DARK file.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import dask
import numpy as np
from astropy.table import Table

from ..config import Config
from ..paths import write_table
from ..reduction.delivery import rate_snr
from ..store import open_dataset
from .plan import whole_files
from .select import read_culled


def windows(n_inputs: int, n: int) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of consecutive runs of ``n`` of ``n_inputs`` (in date
    order); a shorter remainder becomes the last ``n``, overlapping."""
    if n >= n_inputs:
        return [(0, n_inputs)]
    out = [(i, i + n) for i in range(0, n_inputs - n + 1, n)]
    if out[-1][1] < n_inputs:
        out.append((n_inputs - n, n_inputs))
    return out


def window_snr(store, keep: list[str], cfg: Config, every: list[str] | None = None) -> float:
    """The delivery SNR of the exposures ``keep`` of the store, from their rate images;
    ``every``: all the store's exposures (read from the store when not given)."""
    if every is None:
        every = [str(e) for e in open_dataset(store).exposure.values]
    ds = open_dataset(store, exclude=[i for i in every if i not in set(keep)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(dask.compute(rate_snr(ds, cfg)["snr"], scheduler="threads")[0])


def periods(store, outdir, config=None, cull=None, mask_in=None, scheduler=None,
            progress=None, db=None) -> Table:
    """Plan, confirm and build the period darks and the master (module docstring); return
    the table (also written to ``OUTDIR/periods.ecsv``).  ``progress(text)``: one line per
    step.  ``db``: a results database (:mod:`nrsdark_dask.results`) where each period's
    build and its analysis (against the period before it) are recorded, the master's build
    too (not analysed: it is for comparison, not a point of the trends)."""
    from .analyze import analyze
    from .build import build

    cfg = Config.from_toml(config)
    say = progress or (lambda text: None)
    culled = read_culled(cull) if cull else {}
    ds = open_dataset(store, exclude=culled)
    ids = [str(e) for e in ds.exposure.values]
    every = [str(e) for e in open_dataset(store).exposure.values]  # culled ones included
    dates = ds.date.values
    n_all = len(ids)
    if n_all < 2:
        raise ValueError(f"{store} has {n_all} usable exposure(s): periods need at least 2")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    snr_all = window_snr(store, ids, cfg, every)
    required = cfg.delivery.required(ds.attrs["layout"]["family"])
    per_file = snr_all / math.sqrt(n_all)
    n = whole_files((required / per_file) ** 2) if per_file > 0 else n_all
    say(f"per-file SNR {per_file:.3f} ({n_all} inputs give {snr_all:.2f}): a period needs "
        f"{n} inputs for SNR {required:g}")
    found = []
    if n > n_all:
        say(f"{n_all} inputs are fewer than the {n} a period needs: no period dark, the "
            "master only")
    for i0, i1 in windows(n_all, n) if n <= n_all else ():
        if found and i0 < found[-1][1] and i1 <= found[-1][1]:
            continue  # inside the window before it (that one grew)
        i0 = max(i0, found[-1][1]) if found and i1 < n_all else i0
        i0 = min(i0, n_all - n) if i1 == n_all else i0
        snr = window_snr(store, ids[i0:i1], cfg, every)
        while snr < required and i1 - i0 < n_all:  # confirm; grow by one input if short
            i0, i1 = (i0, i1 + 1) if i1 < n_all else (i0 - 1, i1)
            snr = window_snr(store, ids[i0:i1], cfg, every)
        if found and (i0, i1) == found[-1][:2]:
            continue
        found.append((i0, i1, snr))
    plans = [(f"T{k}", i0, i1, per_file * math.sqrt(i1 - i0))
             for k, (i0, i1, _) in enumerate(found)]
    plans.append(("master", 0, n_all, snr_all))
    rows = []
    for label, i0, i1, predicted in plans:
        keep = set(ids[i0:i1])
        what = "comparison only, not for delivery" if label == "master" else "temporal dark"
        note = (f"Period {label} ({what}): {i1 - i0} inputs from "
                f"{str(dates[i0])[:10]} to {str(dates[i1 - 1])[:10]}")
        say(f"{label}: building from {i1 - i0} inputs, {str(dates[i0])[:10]} to "
            f"{str(dates[i1 - 1])[:10]}")
        res = build(store, outdir / label, mask_in=mask_in, scheduler=scheduler, config=cfg,
                    cull=cull, exclude=[i for i in ids if i not in keep], notes=[note], db=db)
        if db and label != "master":
            analyze(outdir / label, compare=[rows[-1]["dark"]] if rows else None, config=cfg,
                    db=db)
        st = res["stats"]
        days = (dates[i1 - 1] - dates[i0]) / np.timedelta64(1, "D")
        rows.append({"label": label, "start": str(dates[i0])[:10],
                     "end": str(dates[i1 - 1])[:10], "months": round(float(days) / 30.44, 1),
                     "snr_predicted": round(float(predicted), 3), "snr": round(st["snr"], 3),
                     "inputs": i1 - i0, "median_rate": st["median_rate"],
                     "new_hot": st.get("n_new_hot", -1), "deliverable": bool(st["deliverable"]),
                     "dark": res["files"]["dark"]})
    tab = Table(rows=rows)
    tab["median_rate"].unit = "DN/s"
    tab.meta.update(store=str(store), per_file_snr=per_file, inputs_per_period=n,
                    snr_required=required,
                    description="nrsdark periods: new_hot -1 = no comparison mask given; the "
                                "master is for comparison only")
    write_table(tab, outdir / "periods.ecsv")
    return tab
