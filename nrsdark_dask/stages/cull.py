"""``nrsdark cull``: find the exposures the report's authors removed by eye (report §3).

From what a store holds, each exposure gets three scores in units of the noise
(:mod:`nrsdark_dask.kernels.artifacts`), on *residual images*: the exposure minus the
per-pixel median of the other exposures.

=============  =========================================================  ====================
artifact       score                                                      image
=============  =========================================================  ====================
mode_switch    large-scale structure (variance of 32 x 32 block medians,  bias residual (DN)
               column medians removed; tree rings, picture frame along
               rows) as a ratio to the other exposures', minus 1, over
               that ratio's scatter; the picture-frame amplitude in DN
               at the detector edges is reported beside it
glow           stripes near 45 / 135 degrees, periods 60-200 px:          rate residual /
               matched-filter SNR from a directional periodogram whose    rate_err
               every cell is normalised by the same cell in the others;
               0 when the same stripes are stronger in the bias residual
               (tree rings of a mode switch, not light)
persistence    SNR of the most significant extended positive region       rate residual /
               (>= 40 pixels, smoothed over 3 rows x 15 columns); where   rate_err
               glow is found, with its stripes taken out (a bright
               glow's crests are extended positive regions)
=============  =========================================================  ====================

Charge or bias (issue 21).  The mode-switch offset is a bias: 12 DN per 0.1 K, decaying with
tau ~ 600 s, so the slope sees only its derivative.  Glow and persistence add charge at a rate,
so they show in the rate, and they also build up in the mean of the calibrated groups (a
glow of r DN/s adds r x the mean group time there).  The *bias image* separates the two: the
mean frame minus the rate x the mean group time, the ramp's value at t = 0, where charge
that grows from the reset leaves nothing and the mode switch stays whole.  Scoring the mode
switch on it keeps bright glow and persistence from being named ``mode_switch``; a stripe
pattern that is stronger there than in the rate is the tree rings of a mode switch (their
rate image is the decay's derivative), not glow.  Its noise: the reset (kTC) noise, in both
images, plus ~sqrt(3) x the read noise of the mean frame.  Pixels with fewer than
``[cull] min_good_groups`` usable groups (not SATURATED or DO_NOT_USE: a snowball's core,
hit early) are left out of the rate images: their rates come from a few groups and carry
those groups' pedestal offset, which made a persistence region of clean exposures.  An
exposure is culled when a score passes its limit (``[cull]`` of the configuration);
``artifact`` names the kind furthest over its limit.

Passes: the medians and the noise references are first taken over all exposures, then over
the exposures not culled (the clipped median of the others: an artifact in the reference
prints its negative into everyone's residual), until the culled set stops changing.

Graph and memory: the mean frames and usable-group counts are made once, one task per ramp
chunk (reading the ramps and GROUPDQ is the cost of a cull, about a build's read), into
scratch Zarr arrays; the residuals are
made tile by tile (one tile of every exposure: ``E x tile`` float64 values, x 5); one task per
exposure scores its whole frame (three frame-sized images, the projections: ~0.3 GB for a
full frame).  Each pass after the first reads only per-exposure images.

The table (``culled.ecsv``) is for people as much as for programs: ``build --cull`` and
``select --cull`` read its ``exposure`` and ``culled`` columns only, so a scientist overrules
the machine by editing ``culled`` (True/False) in the file, or adds exposures to ``select``'s
hand-made exclusion list as before.
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from astropy.table import Table

from .. import __version__
from .. import instrument as inst
from ..config import Config, CullConfig
from ..instrument import DQ
from ..kernels import artifacts as art
from ..paths import atomic_write, check_name, inside
from ..store import StoreLayout, open_dataset

KINDS = ("mode_switch", "glow", "persistence")
WORDS = {"mode_switch": "bias structure after a readout-mode switch",
         "glow": "diagonal stripes (MSA glow)",
         "persistence": "extended positive region (persistence)"}


class CullError(ValueError):
    pass


def _rate_stats(rate_res, err, min_area):
    """One exposure's stripe spectrum, persistence statistic and rate thumbnail (one task)."""
    rate_res, err = rate_res[0], err[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        power, period, angle, profiles = art.stripe_spectra(rate_res, err)
        pers, area, level, region = art.extended_positive(rate_res, err, min_area,
                                                          region=True)
        # the same without the exposure's strongest stripes (used where glow is found)
        a = float(angle[int(np.argmax(power))])
        flat = art.extended_positive(art.destripe(rate_res, a, profiles[a]), err, min_area)
        return {"stripe_power": power, "stripe_period": period, "stripe_angle": angle,
                "stripe_profiles": profiles,
                "persistence": pers, "persistence_area": area, "persistence_rate": level,
                "persistence_region": region, "persistence_destriped": flat,
                "rate_preview": art.preview(rate_res - np.nanmedian(rate_res, axis=0))}


def _bias_stats(bias_res, y, x, scale):
    """One exposure's picture-frame and large-scale statistics, bias stripe spectrum and
    bias thumbnail (one task)."""
    bias = bias_res[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        amp, _ = art.picture_frame(bias, y, x, scale)
        power = art.stripe_spectra(bias, art.robust_sigma(bias))[0]
        return {"frame_dn": amp, "structure": art.large_scale_structure(bias),
                "bias_stripe_power": power, "bias_preview": art.preview(bias)}


def _merge(a: dict, b: dict) -> dict:
    return {**a, **b}


def limits(cfg: CullConfig) -> dict:
    """Each kind's score limit (``[cull] <kind>_sigma``)."""
    return {k: getattr(cfg, f"{k}_sigma") for k in KINDS}


def check_enough(n: int, cfg: CullConfig) -> None:
    if n < cfg.min_exposures:
        raise CullError(f"{n} exposure(s) in the store: a cull compares each exposure with the "
                        f"others and needs at least {cfg.min_exposures} ([cull] min_exposures)")


def mean_frames(ds):
    """Lazy mean of each exposure's calibrated groups, (exposure, y, x) float32, chunked like
    the rate images: one task per ramp chunk."""
    mean = ds.ramp.data.mean(axis=1, dtype=np.float32)
    return mean.rechunk(ds.rate.data.chunksize)


def usable_group_counts(ds):
    """Lazy count of each pixel's usable groups (neither SATURATED nor DO_NOT_USE in
    GROUPDQ), (exposure, y, x) int16, chunked like the rate images."""
    good = ((ds.groupdq.data & np.uint8(inst.GROUP_UNUSABLE)) == 0).sum(axis=1, dtype=np.int16)
    return good.rechunk(ds.rate.data.chunksize)


def bias_images(ds, frames):
    """Lazy bias images: the mean frames minus the rate x the mean group time, the ramp's
    value at t = 0 (module docstring: charge or bias)."""
    t_mean = float(np.mean(StoreLayout(**ds.attrs["layout"]).group_times()))
    return frames - ds.rate.data * np.float32(t_mean)


def diagnose(ds, frames, cfg: CullConfig | None = None, reference=None, good=None) -> list:
    """Lazy: one ``dask.delayed`` per exposure of ``ds`` (a store's dataset) giving its raw
    statistics.  ``frames``: its mean frames (:func:`mean_frames`), ``good``: its usable-group
    counts (:func:`usable_group_counts`; default: every pixel usable), both best read back from
    scratch copies so that the passes read the ramps once; ``reference``: the exposures that
    make the per-pixel medians (default all).  Task names: ``cull-residual``,
    ``cull-bias-residual``, ``cull-rate-stats``, ``cull-bias-stats``, ``cull-stats``."""
    cfg = cfg or CullConfig()
    n = ds.sizes["exposure"]
    check_enough(n, cfg)
    usable = (ds.pixeldq.data & np.uint32(DQ["DO_NOT_USE"])) == 0
    rate_usable = usable
    if good is not None:  # a rate from a few groups carries their pedestal (snowballs)
        need = min(cfg.min_good_groups, ds.sizes["group"])
        rate_usable = usable & (good >= need)
    ty, tx = ds.rate.data.chunksize[1:]
    tiles = (n, ty, tx)
    whole = (1,) + ds.rate.shape[1:]
    ref = None if reference is None else np.asarray(reference, bool)
    tag = "" if ref is None else "-" + dask.base.tokenize(ref.tobytes())[:8]

    def resid(img, ok, name):
        return da.map_blocks(art.residuals, img.rechunk(tiles), ok.rechunk(tiles), ref,
                             dtype=np.float32, name=name + tag).rechunk(whole)

    rate_res = resid(ds.rate.data, rate_usable, "cull-residual").to_delayed().ravel()
    bias_res = resid(bias_images(ds, frames), usable, "cull-bias-residual").to_delayed().ravel()
    err = ds.rate_err.data.rechunk(whole).to_delayed().ravel()
    y, x = ds.y.values, ds.x.values
    rate_task = dask.delayed(_rate_stats, pure=True)
    bias_task = dask.delayed(_bias_stats, pure=True)
    merge = dask.delayed(_merge, pure=True)
    return [merge(rate_task(r, e, cfg.persistence_min_area,
                            dask_key_name=f"cull-rate-stats{tag}-{i}"),
                  bias_task(b, y, x, cfg.frame_scale_px,
                            dask_key_name=f"cull-bias-stats{tag}-{i}"),
                  dask_key_name=f"cull-stats{tag}-{i}")
            for i, (r, b, e) in enumerate(zip(rate_res, bias_res, err))]


def decide(ds, raw: list[dict], cfg: CullConfig | None = None, reference=None) -> Table:
    """The cull table from the per-exposure statistics: one row per exposure (the dataset's
    order) with ``exposure``, ``artifact``, ``score``, ``culled``, ``reason`` and every
    kind's score (``score_<kind>``) and measured size.  ``reference``: the exposures the
    picture-frame centre and scatter, and the stripe noise, are taken from (default all)."""
    cfg = cfg or CullConfig()
    n = len(raw)
    ref = np.ones(n, bool) if reference is None else np.asarray(reference, bool)
    amp = np.array([r["frame_dn"] for r in raw], float)
    centre = float(np.nanmedian(amp[ref])) if np.isfinite(amp[ref]).any() else 0.0
    structure = np.array([r["structure"] for r in raw], float)
    usual = structure[ref & np.isfinite(structure)]
    if usual.size:  # ratio to the reference exposures' median, over its scatter
        ratio = structure / np.median(usual)
        scatter = max(art.robust_sigma(ratio[ref]), 0.05)
    else:
        ratio, scatter = np.full(n, np.nan), np.nan
    glow, cell, in_bias, rings = art.glow_scores(
        np.stack([r["stripe_power"] for r in raw]),
        np.stack([r["bias_stripe_power"] for r in raw]), ref)
    periods, angles = raw[0]["stripe_period"], raw[0]["stripe_angle"]
    limit = limits(cfg)
    rows = []
    for i, r in enumerate(raw):
        pers = (r["persistence"], r["persistence_area"], r["persistence_rate"])
        if glow[i] > limit["glow"] and not rings[i]:  # glow crests are positive regions too
            pers = r["persistence_destriped"]
        scores = {"mode_switch": (ratio[i] - 1.0) / scatter,
                  "glow": 0.0 if rings[i] else float(glow[i]), "persistence": pers[0]}
        over = {k: s / limit[k] for k, s in scores.items() if np.isfinite(s) and s > limit[k]}
        kind = max(over, key=over.get) if over else ""
        size = {"mode_switch": f"large-scale structure {ratio[i]:.1f} x the others', picture "
                               f"frame {r['frame_dn'] - centre:+.1f} DN at the detector edges",
                "glow": f"period {periods[cell[i]]:.0f} px at {angles[cell[i]]:.0f} deg",
                "rings": f"stripes of {glow[i]:.1f} sigma in the rate are {in_bias[i]:.1f} sigma "
                         "in the bias image (tree rings of a mode switch, not glow)",
                "persistence": f"{pers[1]} px at {pers[2]:+.3f} DN/s"}
        if kind:
            reason = "; ".join(f"{WORDS[k]}: {size[k]}, {scores[k]:.1f} sigma > {limit[k]:g}"
                               for k in sorted(over, key=over.get, reverse=True))
            if rings[i] and glow[i] > limit["glow"]:
                reason += "; " + size["rings"]
        else:
            best = max((k for k in scores if np.isfinite(scores[k])),
                       key=lambda k: scores[k] / limit[k], default=None)
            reason = (f"clean (highest: {best} {scores[best]:.1f} sigma of {limit[best]:g})"
                      if best else "no statistic could be measured")
        finite = [v for v in scores.values() if np.isfinite(v)]
        rows.append({
            "exposure": str(ds.exposure.values[i]), "artifact": kind,
            "score": float(scores[kind]) if kind else float(max(finite, default=np.nan)),
            "culled": bool(kind), "reason": reason,
            **{f"score_{k}": float(scores[k]) for k in KINDS},
            "structure": float(ratio[i]),
            "frame_dn": float(r["frame_dn"] - centre), "glow_period": float(periods[cell[i]]),
            "glow_angle": float(angles[cell[i]]), "glow_rate_sigma": float(glow[i]),
            "glow_bias_sigma": float(in_bias[i]),
            "persistence_area": int(pers[1]), "persistence_rate": float(pers[2]),
        })
    tab = Table(rows=rows)
    tab["frame_dn"].unit = "DN"
    tab["persistence_rate"].unit = "DN/s"
    tab["glow_period"].unit = "pix"
    tab["glow_angle"].unit = "deg"
    return tab


MAX_PASSES = 4


def reference_after(tab: Table, cfg: CullConfig) -> np.ndarray:
    """The exposures the next pass takes its medians and noise from: those not culled; when
    fewer than ``min_exposures - 1`` are left, the least severe culls (score over their
    limit) are taken back until there are.  Where half the set carries a bright artifact,
    the first pass's medians carry it too and print it, inverted, into the clean exposures'
    residuals (on the naming sets: a 0.3 DN/s glow in 6 of 12 exposures made 3 clean ones
    "persistence" at 12.7-13.7 of 12, the glow ones 17-22 of 9); without them, too few are
    left to compare with."""
    culled = np.asarray(tab["culled"], bool)
    keep = ~culled
    need = cfg.min_exposures - 1
    if keep.sum() < need:
        limit = limits(cfg)
        severity = np.array([r["score"] / limit[r["artifact"]] if r["culled"] else 0.0
                             for r in tab])
        for i in np.argsort(severity, kind="stable"):
            if keep.sum() >= need:
                break
            keep[i] = True
    return keep


def cull(store, cfg=None, scheduler: str | None = None, progress: bool = False,
         scratch=None):
    """Diagnose every exposure of ``store``; return ``(table, previews)`` where previews maps
    exposure to what its picture shows (:func:`pictures`): the rate and bias residual
    thumbnails and their extent, the stripe profile at its glow angle, its persistence region
    and, for an exposure culled for persistence, the region's charge curve
    (:func:`region_curve`).  ``cfg``: a :class:`Config`, a TOML path or ``None``.
    ``scheduler`` as for ``build`` (:mod:`nrsdark_dask.cluster`).

    Passes (the clipped median of the others): the mean frames and usable-group counts are
    computed once, from one read of the ramps, into scratch Zarr arrays (``scratch``: a
    folder every worker can write; default a temporary folder beside the store, removed at
    the end); then the
    statistics are computed against the median of all exposures, the exposures found culled
    are left out of the medians and of the noise references (:func:`reference_after`), and
    the statistics computed again, until the culled set no longer changes (at most 4 passes;
    each reads only the per-exposure images)."""
    import contextlib
    import shutil
    import tempfile

    from ..cluster import dask_client, local_progress, parse_scheduler

    conf = Config.from_toml(cfg)
    scheduler = scheduler or conf.run.scheduler or "threads"
    kind, threads = parse_scheduler(scheduler)
    ds = open_dataset(store)
    for var in ("rate", "rate_err", "ramp", "groupdq", "pixeldq"):
        if var not in ds:
            raise CullError(f"{store} has no {var!r} array (not a calibrated-ramp store)")
    n = ds.sizes["exposure"]
    check_enough(n, conf.cull)
    local = {"scheduler": "sync" if kind == "sync" else "threads", "num_workers": threads}
    # the rechunks (tiles of every exposure <-> whole frames of one) are small: dask's task
    # rechunk, not distributed's p2p shuffle (which took 5x longer on the demo store)
    local["array.rechunk.method"] = "tasks"
    parent = Path(store).parent if Path(store).parent.is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix=".nrsdark-cull-", dir=scratch or parent))
    try:
        with dask_client(scheduler, quiet=not progress) as client, dask.config.set(
                local if client is None else {"array.rechunk.method": "tasks"}):
            shown = local_progress("cull") if progress and client is None \
                else contextlib.nullcontext()
            with shown:
                dask.compute(
                    da.to_zarr(mean_frames(ds), str(tmp / "mean.zarr"), compute=False),
                    da.to_zarr(usable_group_counts(ds), str(tmp / "good.zarr"), compute=False))
                frames = da.from_zarr(str(tmp / "mean.zarr"))
                good = da.from_zarr(str(tmp / "good.zarr"))
                reference = np.ones(n, bool)
                for passes in range(1, MAX_PASSES + 1):
                    raw = list(dask.compute(*diagnose(ds, frames, conf.cull, reference, good)))
                    tab = decide(ds, raw, conf.cull, reference)
                    keep = reference_after(tab, conf.cull)
                    if (keep == reference).all():
                        break
                    reference = keep
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tab.meta.update(store=str(store), created=dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), software=f"nrsdark_dask {__version__}", passes=passes,
        reference=[str(e) for e, r in zip(ds.exposure.values, reference) if r],
        cull_config=conf.as_dict()["cull"],
        description="nrsdark cull: one row per exposure of the store; edit 'culled' to "
                    "overrule (build --cull and select --cull read exposure and culled)")
    extent = (float(ds.x[0]) - 0.5, float(ds.x[-1]) + 0.5, float(ds.y[0]) - 0.5,
              float(ds.y[-1]) + 0.5)
    previews = {}
    for i, (row, r) in enumerate(zip(tab, raw)):
        previews[row["exposure"]] = {
            "rate": r["rate_preview"], "bias": r["bias_preview"], "extent": extent,
            "profile": r["stripe_profiles"][row["glow_angle"]],
            "region": r["persistence_region"],
            "curve": region_curve(ds, i, r["persistence_region"], reference)
            if row["culled"] and "persistence" in row["reason"] else None}
    return tab, previews


CURVE_MAX_BYTES = 256 * 2**20  # ramps read for one region's charge curve


def region_curve(ds, i: int, region, reference, margin: int = 8):
    """The charge of exposure ``i`` in a persistence region against the others, group by
    group: ``(t, excess)`` with ``t`` the group times (s) and ``excess`` the region's mean of
    the ramp minus the per-pixel median of the ``reference`` exposures' ramps (DN), less the
    same in the rows within ``margin`` of the region, same columns (the 1/f read noise of a
    group is a column pattern: this cancels it).  What a person sees in it: persistence
    accumulates from the reset at a rate that falls as it decays (the curve bends below a
    line); a snowball or a cosmic ray is a step.  Reads the region's bounding box of every
    exposure (``None`` when that is more than ``CURVE_MAX_BYTES`` or there is no region)."""
    from scipy import ndimage

    if region is None:
        return None
    y0, x0, mask = region
    ny = ds.sizes["y"]
    top, bottom = max(y0 - margin, 0), min(y0 + mask.shape[0] + margin, ny)
    sel = dict(y=slice(top, bottom), x=slice(x0, x0 + mask.shape[1]))
    inside_ = np.zeros((bottom - top, mask.shape[1]), bool)
    inside_[y0 - top:y0 - top + mask.shape[0]] = mask
    around = ~ndimage.binary_dilation(inside_, iterations=2)
    n_exp, n_grp = ds.sizes["exposure"], ds.sizes["group"]
    if n_exp * n_grp * inside_.size * 4 > CURVE_MAX_BYTES:
        return None
    ramp = np.asarray(ds.ramp.isel(**sel).values, np.float64)  # (E, G, y, x)
    bad = (np.asarray(ds.groupdq.isel(**sel).values) & inst.GROUP_UNUSABLE) != 0
    ramp[bad] = np.nan
    ref = np.asarray(reference, bool).copy()
    ref[i] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = ramp[i] - np.nanmedian(ramp[ref], axis=0)  # (G, y, x)
        excess = np.nanmean(diff[:, inside_], axis=-1)
        if around.any():
            excess = excess - np.nanmean(diff[:, around], axis=-1)
    return StoreLayout(**ds.attrs["layout"]).group_times(), excess


def pictures(tab: Table, previews: dict, folder, only_culled: bool = True) -> list[Path]:
    """One PNG per (culled) exposure with the evidence a person can check by eye: the rate
    residual (for glow, smoothed at a sixth of the stripes' period so that they show; the
    persistence region boxed) and the bias residual (the picture frame and tree rings of a
    mode switch); for glow, the rate averaged along the stripes (a wave); for persistence,
    the region's charge against time.  Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in tab:
        if only_culled and not row["culled"]:
            continue
        p = previews[row["exposure"]]
        rate, extent = p["rate"], p["extent"]
        stripes = row["artifact"] == "glow" or "MSA glow" in row["reason"]
        curve = p["curve"]
        extra = int(stripes) + int(curve is not None)
        n_ax = 2 + extra
        fig, axes = plt.subplots(n_ax, 1, figsize=(10, 1.5 + n_ax * max(
            1.6, 8 * rate.shape[0] / rate.shape[1])), squeeze=True)
        rate_note = ", column medians removed"
        if stripes:  # smoothed below the stripes' period: noise blurs, stripes stay
            scale = (extent[1] - extent[0]) / rate.shape[1]  # pixels per thumbnail pixel
            sigma = row["glow_period"] / 6
            rate = ndimage.gaussian_filter(np.nan_to_num(rate - np.nanmedian(rate)),
                                           sigma / scale, mode="nearest")
            rate_note += f", Gaussian {sigma:.0f} px"
        for ax, img, what, unit, note in (
                (axes[0], rate, "rate residual", "DN/s", rate_note),
                (axes[1], p["bias"], "bias residual (mean frame - rate x mean group time)",
                 "DN", "")):
            finite = img[np.isfinite(img)]
            lim = 4 * art.robust_sigma(finite) if finite.size else 1.0
            im = ax.imshow(img, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                           aspect="auto", interpolation="nearest", extent=extent)
            ax.set_title(f"{what} ({unit}, block medians{note})", fontsize=9)
            ax.set_ylabel("y (DMS row)", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        axes[1].set_xlabel("x (DMS column)", fontsize=8)
        if p["region"] is not None and "persistence" in row["reason"]:
            y0, x0, mask = p["region"]
            ys = extent[2] + 0.5 + y0 + np.arange(mask.shape[0])
            xs = extent[0] + 0.5 + x0 + np.arange(mask.shape[1])
            pad = 4 + 0.02 * (extent[3] - extent[2])  # a box around it, not over it
            axes[0].plot([xs[0] - pad, xs[-1] + pad, xs[-1] + pad, xs[0] - pad, xs[0] - pad],
                         [ys[0] - pad, ys[0] - pad, ys[-1] + pad, ys[-1] + pad, ys[0] - pad],
                         "--", color="k", lw=0.8)
            axes[0].set_xlim(extent[0], extent[1])
            axes[0].set_ylim(extent[2], extent[3])
        ax_i = 2
        if stripes:  # the stripes as a wave: the residual averaged along the found angle
            ax = axes[ax_i]
            ax_i += 1
            profile = p["profile"]
            k = max(int(row["glow_period"] / 8), 1)
            smooth = np.convolve(profile, np.ones(k) / k, mode="same")
            ax.plot(profile, lw=0.4, color="0.6")
            ax.plot(smooth, lw=1.2, color="C3")
            lim = 4 * art.robust_sigma(smooth) or 1.0
            ax.set_ylim(-lim, lim)
            ax.set_xlim(0, profile.size)
            ax.set_title(f"rate residual averaged along lines at {row['glow_angle']:.0f} deg "
                         f"(DN/s; stripes of period {row['glow_period']:.0f} px are a wave)",
                         fontsize=9)
            ax.set_xlabel("position across the lines (pixels)", fontsize=8)
        if curve is not None:  # persistence: charge from the reset, bending as it decays
            ax = axes[ax_i]
            t, excess = curve
            ax.plot(t, excess, "o-", ms=3, color="C3",
                    label="region - median of the others, less the rows around it")
            rate_line = row["persistence_rate"] * t
            ax.plot(t, rate_line, "--", color="0.5", lw=0.8,
                    label=f"its mean rate residual, {row['persistence_rate']:+.3f} DN/s, constant")
            ax.axhline(0, color="0.7", lw=0.5)
            ax.set_xlabel("time since reset (s)", fontsize=8)
            ax.set_ylabel("DN", fontsize=8)
            ax.set_title(f"charge in the boxed region ({row['persistence_area']} px): "
                         "persistence grows from the reset and bends as it decays; a "
                         "snowball is a step", fontsize=9)
            ax.legend(fontsize=7, loc="upper left")
        scores = ", ".join(f"{k} {row[f'score_{k}']:.1f}" for k in KINDS)
        fig.suptitle(f"{row['exposure']}\n{row['artifact'] or 'clean'} (score {row['score']:.1f}"
                     f"; {scores})", fontsize=9)
        fig.tight_layout()
        name = inside(folder / f"{check_name(row['exposure']).replace('@', '_')}.png", folder)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        atomic_write(name, buf.getvalue(), "wb")
        out.append(name)
    return out

