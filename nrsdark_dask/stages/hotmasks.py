"""``nrsdark masks``: hot-pixel masks per month (or per N inputs), decoupled from the period
darks, and the growth of new hot pixels (report §7.1's open problem).

The HOT flag needs far fewer inputs than a dark of deliverable SNR: a pixel is hot when its
mean rate exceeds ``[dark] hot_rate`` (1 DN/s), and one exposure's rate is already good to a
few 0.1 DN/s, while the delivery SNR needs the *median* pixel's ~0.01 DN/s measured. So:

1. **bins**: the store's (not culled) exposures in date order are grouped by calendar month
   (UTC, ``per="month"``) or into runs of ``per=N`` inputs (a last run shorter than N joins the
   one before); a bin with fewer than ``[masks] min_inputs`` inputs joins the next one (the
   last joins the one before), labelled ``FIRST_LAST`` (e.g. ``2024-04_2024-06``);
2. **hot**: in each bin, HOT = mean of the bin's rate images > ``hot_rate``, on active pixels:
   the build's HOT row (``reduction.tables.FLAGS``, ``reduction.graph.flag_from_images``) on the bin's inputs,
   under ``[masks] hot_rule`` (default the report's plain rule: a bin's 2-3 rates cannot
   test significance, and the build's default, "significant", found 0.73 precision and 0.57
   recall where the plain rule finds 0.98 and 1.00 in ``tests/test_hotmasks.py``);
3. **masks**: one MASK per bin (``OUTDIR/nrsdark_<det>_<readpatt>_<sub>_mask_<label>.fits``):
   the comparison mask (``--mask-in``, cut to the store's region) OR HOT|DO_NOT_USE on the
   bin's hot pixels, PEDIGREE / USEAFTER from the bin's dates. For subarray stores the masks
   are monitoring products (report §6: the full-frame mask serves subarray science);
4. **growth**: a pixel is *new* in the first bin where it is hot and was hot in no earlier
   bin (and, with ``--mask-in``, is not HOT there). The first bin is the baseline (its "new"
   pixels are the comparison mask's misses, not growth); the growth per month is the
   least-squares slope of the cumulative new count against the bins' middle dates, from the
   first bin on (its cumulative count is 0), with its standard error and the Poisson error
   of the total; ``hot_growth.png`` draws counts and fit, ``hot_growth.ecsv`` is the table.

A pixel hot in one bin and not in the next (a noise excursion near the threshold, or a pixel
that anneals) is new once. A pixel that turns hot during a bin is flagged there only if its
share of the bin's mean rate exceeds the threshold, otherwise in the next bin: the cumulative
count lags by at most one bin, which does not change the slope.

Memory: each bin's mean rate is computed tile by tile from (E_bin, y, x) rate tiles; what is
held is one boolean frame per bin (4 MB a full frame) and the comparison mask (16 MB).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from astropy.table import Table

from .. import instrument as inst
from ..config import Config, settings_history
from ..instrument import DQ
from ..paths import atomic_write, write_table
from ..reduction.delivery import rate_images
from ..reduction.graph import flag_from_images, output_mask
from ..reduction.source import check_store
from ..store import open_dataset
from .select import cull_note, read_culled

DAYS_PER_MONTH = 30.44


class MasksError(ValueError):
    pass


def bins(dates: np.ndarray, per: str | int) -> list[tuple[str, np.ndarray]]:
    """``[(label, indices)]`` of exposures (``dates`` in date order): calendar months
    (labels ``YYYY-MM``) for ``per="month"``, else runs of ``per`` inputs (labels ``N001``,
    ``N002``...; a last run shorter than ``per`` joins the one before)."""
    dates = np.asarray(dates).astype("datetime64[s]")
    if per == "month":
        months = dates.astype("datetime64[M]")
        return [(str(m), np.flatnonzero(months == m)) for m in np.unique(months)]
    per = int(per)
    if per < 1:
        raise MasksError(f"per must be 'month' or a positive number of inputs, not {per}")
    starts = list(range(0, len(dates), per))
    if len(starts) > 1 and len(dates) - starts[-1] < per:
        starts.pop()
    stops = starts[1:] + [len(dates)]
    return [(f"N{k + 1:03d}", np.arange(a, b)) for k, (a, b) in enumerate(zip(starts, stops))]


def fit_growth(months: np.ndarray, cumulative: np.ndarray) -> dict:
    """Least-squares line through (months, cumulative new hot pixels): ``slope`` (pixels a
    month), its standard error ``slope_err`` (from the residuals; 0 with two points),
    ``intercept``, and ``poisson_err`` (sqrt(total) / span: the counting error)."""
    t, c = np.asarray(months, float), np.asarray(cumulative, float)
    if t.size < 2 or np.ptp(t) == 0:
        return {"slope": math.nan, "slope_err": math.nan, "intercept": math.nan,
                "poisson_err": math.nan}
    A = np.vstack([t, np.ones_like(t)]).T
    (slope, icpt), *_ = np.linalg.lstsq(A, c, rcond=None)
    dof = t.size - 2
    resid = c - (slope * t + icpt)
    err = math.sqrt(resid @ resid / dof / ((t - t.mean()) @ (t - t.mean()))) if dof > 0 else 0.0
    span = float(np.ptp(t))
    return {"slope": float(slope), "slope_err": float(err), "intercept": float(icpt),
            "poisson_err": math.sqrt(max(c[-1], 0.0)) / span}


def hot_masks(store, outdir, per: str | int | None = None, config=None, cull=None,
              mask_in=None, scheduler: str | None = None, progress=None) -> Table:
    """Make the masks and the growth table (module docstring); return the table (also
    ``OUTDIR/hot_growth.ecsv``; its ``meta`` holds the fit).  ``per``: ``"month"`` or a
    number of inputs (default ``[masks] per``); ``scheduler``: ``sync`` or ``threads[:N]``
    (the work is small images); ``progress(text)``: a line per step."""
    from .build import read_mask_in
    from ..cluster import parse_scheduler
    from ..export.fits import write_mask

    cfg = Config.from_toml(config)
    per = per or cfg.masks.per
    say = progress or (lambda text: None)
    kind, threads = parse_scheduler(scheduler or "threads")
    if kind not in ("sync", "threads"):
        raise MasksError(f"masks runs on this process's threads (sync or threads[:N]), not "
                         f"{scheduler}: it reads only the rate images")
    culled = read_culled(cull) if cull else {}
    ds = open_dataset(store, exclude=culled)
    layout = check_store(ds)
    dates = ds.date.values
    order = np.argsort(dates, kind="stable")
    groups = [(label, order[idx]) for label, idx in bins(dates[order], per)]
    known = None
    notes = settings_history(cfg)
    if cull:
        notes.append(cull_note(cull, len(culled)))
    if mask_in:
        known = read_mask_in(mask_in, layout)
        notes.append(f"Comparison MASK: {Path(mask_in).name}")
    ref = inst.reference_pixel_mask(layout.geometry())
    rate = ds.rate.data
    active = ~da.from_array(ref, chunks=rate.chunks[1:])
    usable = [(label, idx) for label, idx in groups if idx.size >= cfg.masks.min_inputs]
    if not usable:
        raise MasksError(f"no bin of {per} has {cfg.masks.min_inputs} inputs "
                         f"([masks] min_inputs); {len(dates)} inputs in {len(groups)} bins")
    say(f"{len(dates)} inputs in {len(groups)} bins ({per}); {len(usable)} with at least "
        f"{cfg.masks.min_inputs} input(s) make a mask")
    # a bin with too few inputs joins the next usable one (its pixels are judged there)
    # (a merged bin is labelled FIRST_LAST, e.g. 2024-04_2024-06)
    members, pending, first = {}, [], None
    for label, idx in groups:
        pending.extend(idx.tolist())
        first = first or label
        if idx.size >= cfg.masks.min_inputs:
            members[label if first == label else f"{first}_{label}"] = np.array(pending)
            pending, first = [], None
    if pending:  # trailing short bins join the last usable one
        last = list(members)[-1]
        members[f"{last.split('_')[0]}_{groups[-1][0]}"] = np.concatenate(
            [members.pop(last), pending])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*Mean of empty.*")
        rule = replace(cfg, dark=replace(cfg.dark, hot_rule=cfg.masks.hot_rule))
        hot = [flag_from_images("hot", rate_images(rate[np.sort(idx)]), rule, active,
                                {"n_exposures": idx.size}) for idx in members.values()]
        with dask.config.set(scheduler="sync" if kind == "sync" else "threads",
                             num_workers=threads):
            hot = [np.asarray(h) for h in dask.compute(*hot)]
    hot_known = np.zeros(ref.shape, bool) if known is None else \
        layout.science_rows((known & np.uint32(DQ["HOT"])) != 0)
    seen = hot_known.copy()
    rows = []
    first_mjd = None
    for (label, idx), h in zip(members.items(), hot):
        d = np.sort(dates[idx])
        mid = d[0] + (d[-1] - d[0]) / 2
        mjd = (mid - np.datetime64("1858-11-17")) / np.timedelta64(1, "D")
        if first_mjd is None:
            first_mjd, origin = mjd, str(mid)[:10]
        new = h & ~seen
        seen |= h
        dq = np.asarray(output_mask({"hot": da.from_array(h)}, known, layout))
        path = write_mask(dq, outdir, layout, d, label,
                          f"NIRSpec hot-pixel mask of {label}: {idx.size} inputs", history=[
                              f"Hot-pixel mask of bin {label} ({per}): {idx.size} inputs from "
                              f"{str(d[0])[:10]} to {str(d[-1])[:10]}, HOT = mean rate > "
                              f"{cfg.dark.hot_rate} DN/s (nrsdark masks)", *notes,
                              *[f"Input: {e}" for e in ds.exposure.values[np.sort(idx)]]])
        rows.append({"label": label, "start": str(d[0])[:10], "end": str(d[-1])[:10],
                     "months": round(float((mjd - first_mjd) / DAYS_PER_MONTH), 3),
                     "inputs": int(idx.size), "hot": int(h.sum()),
                     "new_vs_mask": int((h & ~hot_known).sum()) if known is not None else -1,
                     "new": int(new.sum()), "mask": str(path)})
        say(f"{label}: {idx.size} inputs, {int(h.sum())} hot, {int(new.sum())} new -> "
            f"{Path(path).name}")
    tab = Table(rows=rows)
    tab["cumulative_new"] = np.cumsum(tab["new"]) - tab["new"][0]  # the first bin: baseline
    fit = fit_growth(tab["months"], tab["cumulative_new"])
    tab.meta.update(store=str(store), per=str(per), hot_rate=cfg.dark.hot_rate,
                    months_from=origin, min_inputs=cfg.masks.min_inputs,
                    comparison_mask=str(mask_in) if mask_in else "",
                    growth_per_month=fit["slope"], growth_err=fit["slope_err"],
                    growth_poisson_err=fit["poisson_err"], growth_intercept=fit["intercept"],
                    description="nrsdark masks: new = hot for the first time (the first bin "
                                "is the baseline); months from the first bin's middle date; "
                                "new_vs_mask -1 = no comparison mask")
    outdir = Path(outdir)
    write_table(tab, outdir / "hot_growth.ecsv")
    atomic_write(outdir / "hot_growth.png", growth_figure(tab), "wb")
    return tab


def growth_figure(tab: Table) -> bytes:
    """PNG: new hot pixels per bin (bars) and cumulative (points) against months, with the
    fitted line and its slope."""
    import matplotlib.pyplot as plt

    from .analyze import png_bytes

    fig, ax = plt.subplots(figsize=(7, 4))
    t = np.asarray(tab["months"], float)
    width = max(0.3, 0.6 * float(np.min(np.diff(t)))) if len(t) > 1 else 0.6
    ax.bar(t[1:], np.asarray(tab["new"][1:]), width=width, color="0.8", label="new in bin")
    ax.plot(t, tab["cumulative_new"], "o", color="C0", label="cumulative new")
    m = tab.meta
    if np.isfinite(m["growth_per_month"]):
        ax.plot(t, m["growth_per_month"] * t + m["growth_intercept"], "-", color="C3",
                label=f"fit: {m['growth_per_month']:.1f} ± {m['growth_err']:.1f} a month")
    ax.set_xlabel(f"months since {m['months_from']} (the first bin's middle; {m['per']} bins)")
    ax.set_ylabel("new hot pixels")
    ax.set_title(f"Hot-pixel growth (HOT: mean rate > {m['hot_rate']} DN/s)")
    ax.legend(loc="upper left")
    return png_bytes(fig)
