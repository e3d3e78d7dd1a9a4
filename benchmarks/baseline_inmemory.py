"""In-memory baseline: the NIRSpec bias/dark/mask report rules as a scientist would script them.

This is the speed and memory reference that the chunked Dask build (``nrsdark build``) is
compared against.  It loads the whole store into memory (``ds.ramp.values`` etc.), uses only
numpy, scipy.ndimage and astropy, and does NOT import the package's science code
(``nrsdark_dask.reduction.graph``, ``.kernels``, ``.build``): it is an independent
re-implementation
of the same rules (JWST-STScI-009226 §4.1.1, §4.1.3-§4.1.4 with the decisions of the docs'
"nrsdark build" section and the defaults of ``nrsdark_dask.config``), so agreement between the
two is also a cross-check of the science.

Usage (from the repository root)::

    .venv/bin/python benchmarks/baseline_inmemory.py STORE [--out baseline.npz]
        [--dark DARK.fits [--superbias SUPERBIAS.fits]]

prints the wall time of :func:`run` (store read + reductions; imports excluded), the process's
peak RSS (``ru_maxrss``, imports included), the flag counts, and with ``--dark`` the agreement
with the files of ``nrsdark build`` (:func:`compare`).

API::

    run(store_path) -> dict[str, np.ndarray]
    compare(baseline, dark_fits, superbias_fits=None) -> dict

Memory: the peak is astropy's ``sigma_clip`` over the whole cube.  Measured on a FULL-frame
store of 3 x 6 groups (75 M ramp values): ~19 bytes per ramp value (E x G x ny x nx) at that
moment (ramp 4, group DQ 1, good-group mask 1, astropy's clipping ~13: it works in float64),
plus the per-exposure images and ~0.18 GB of imports; i.e. ~140 GB for 20 full-frame TRAD
inputs of 88 groups, against ~560 MB per tile task for the Dask build.  Mean and std of the
survivors and the dark cube are computed one group at a time (float64), so they add little.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

import numpy as np
import xarray as xr
from astropy.stats import sigma_clip, sigma_clipped_stats
from scipy import ndimage
from stdatamodels.jwst.datamodels.dqflags import pixel as DQ

# --- the report's numbers (nrsdark_dask.config defaults: DarkConfig, BiasConfig) -----------
CLIP_SIGMA = 3.0          # average ramp: sigma_clip over exposures, 5 iterations
CLIP_ITERS = 5
HOT_RATE = 1.0            # DN/s
HOT_SIGMA = 3.0           # HOT where significantly above HOT_RATE (issue 21)
RC_SIGMA = 10.0           # group-1 threshold: g1_mean + 10 g1_std
RC_IPC_FRACTION = 0.02    # a neighbour below 2 % of the candidate's excess is IPC, no veto
                          # (and a candidate with a negative jump is a telegraph pixel)
RTN_SIGMA = 5.0           # ST rule: mean + 5 std of negative-jump counts, > 1 exposure
BADREF_SIGMA = 4.0        # reference pixels: median +- 4 x 1.4826 MAD
UNRELIABLE_DARK_SIGMA = 3.0  # UNC > mean + 3 std over active pixels
FRAME_RATE_SIGMA = 3.0
UNRELIABLE_BIAS_SIGMA = 5.0  # superbias ERR > clipped mean + 5 std
N_REF, FULL = 4, 2048     # reference pixels: outer 4 rows/columns of the 2048 x 2048 frame

# 4-neighbours (not the pixel itself)
CROSS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)


def _load(store_path) -> dict:
    """Everything the reductions use, as numpy arrays in memory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 consolidated-metadata / unknown-entry notes
        ds = xr.open_zarr(str(store_path), consolidated=True, chunks=None)
    d = {
        "ramp": ds.ramp.values,            # (E, G, y, x) float32
        "gdq": ds.groupdq.values,          # (E, G, y, x) uint8
        "rate": ds.rate.values,            # (E, y, x) float32
        "rate_err": ds.rate_err.values,    # loaded like the rest; no rule below needs it
        "pixeldq": ds.pixeldq.values,      # (E, y, x) uint32
        "neg_jumps": ds.neg_jumps.values,  # (E, y, x) int16
        "g1_mean": ds.g1_mean.values.astype(np.float64),
        "g1_std": ds.g1_std.values.astype(np.float64),
        "group_time": ds.group_time.values.astype(np.float64),
        "y": ds.y.values, "x": ds.x.values,
    }
    if "bias_groups" in ds.data_vars:
        d["bias_groups"] = ds.bias_groups.values   # (E, 2, y_raw, x) float32
        d["bias_level"] = ds.bias_level.values.astype(np.float64)
    return d


def reference_pixels(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference pixels of a (sub)array from its 0-based full-frame coordinates."""
    ry = (y < N_REF) | (y >= FULL - N_REF)
    rx = (x < N_REF) | (x >= FULL - N_REF)
    return ry[:, None] | rx[None, :]


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """4-neighbours of True pixels; nothing outside the array."""
    return ndimage.maximum_filter(mask.astype(np.uint8), footprint=CROSS, mode="constant",
                                  cval=0).astype(bool)


def _robust(v: np.ndarray):
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.nan, np.nan
    med = np.median(v)
    return med, 1.4826 * np.median(np.abs(v - med))


def run(store_path) -> dict[str, np.ndarray]:
    """All reference-file arrays and flags of the store, computed in memory."""
    d = _load(store_path)
    ramp, gdq = d["ramp"], d["gdq"]
    n_exp, n_grp = ramp.shape[:2]
    ref = reference_pixels(d["y"], d["x"])
    active = ~ref
    out: dict[str, np.ndarray] = {}

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN pixels are expected
        warnings.filterwarnings("ignore", message=".*invalid values.*")  # astropy on NaNs

        # ---- average dark ramp (§4.1.3): groups before the first jump, usable -----------
        # (on reference pixels JUMP_DET does not cut it: they collect no charge, issue 21)
        jump = ((gdq & DQ["JUMP_DET"]) != 0) & active
        after_jump = np.cumsum(jump, axis=1, dtype=np.int16) > 0   # int16: not 8 B/value
        del jump
        good = ~after_jump & ((gdq & (DQ["DO_NOT_USE"] | DQ["SATURATED"])) == 0)
        del after_jump
        masked = np.ma.masked_array(ramp, mask=~good)
        del good
        clipped = sigma_clip(masked, sigma=CLIP_SIGMA, maxiters=CLIP_ITERS, axis=0,
                             cenfunc="median", stdfunc="std", masked=True, copy=False)
        del masked
        # mean and std (ddof 0: the per-group std of the counts) of the survivors, in
        # float64 one group at a time (a float64 temporary of the whole cube would double
        # the peak memory)
        avg_ramp = np.empty(ramp.shape[1:], np.float32)
        err = np.empty(ramp.shape[1:], np.float32)
        for g in range(n_grp):
            cg = clipped[:, g]
            avg_ramp[g] = np.ma.filled(cg.mean(axis=0, dtype=np.float64), np.nan)
            err[g] = np.ma.filled(cg.std(axis=0, dtype=np.float64), np.nan)
        count = clipped.count(axis=0).astype(np.int16)
        del clipped, cg

        # ---- mean dark rate and its standard error (§4.1.4) -----------------------------
        rate = d["rate"]
        drk = np.nanmean(rate, axis=0)
        n_fin = np.isfinite(rate).sum(axis=0)
        unc = np.nanstd(rate, axis=0, ddof=1) / np.sqrt(n_fin)
        # HOT where significant (issue 21): (DRK - 1) / UNC > Student's t of 3 sigma (one-sided)
        # for E - 1 degrees of freedom; where UNC is unknown, DRK > 1
        from scipy import stats

        t_crit = stats.t.isf(stats.norm.sf(HOT_SIGMA), rate.shape[0] - 1)
        with np.errstate(invalid="ignore"):
            testable = np.isfinite(unc) & (unc > 0)
            hot = np.where(testable, drk - HOT_RATE > t_crit * unc, drk > HOT_RATE) & active

        # ---- RC (§4.1.3): bright group 1, no brighter-than-IPC neighbour, groups 2-3 bad --
        if n_grp >= 3:
            m = d["g1_mean"][:, None, None]
            thr = (d["g1_mean"] + RC_SIGMA * d["g1_std"])[:, None, None]
            g1 = ramp[:, 0]
            excess = np.where(np.isfinite(g1), g1 - m, -np.inf)
            above = excess > thr - m
            nb = ndimage.maximum_filter(np.where(above, excess, -np.inf),
                                        footprint=CROSS[None], mode="constant", cval=-np.inf)
            # saturated in group 1 (issue 21): the excess is capped, so only a neighbour at
            # least as bright is a shared cosmic ray
            sat1 = (gdq[:, 0] & DQ["SATURATED"]) != 0
            shared = np.where(sat1, nb >= excess, nb > RC_IPC_FRACTION * excess)
            bad = DQ["JUMP_DET"] | DQ["DO_NOT_USE"] | DQ["SATURATED"]
            nxt = ((gdq[:, 1:3] & bad) != 0).any(axis=1)         # "any" of groups 2-3
            # a very hot pixel, not RC: no jump in groups 1-3, groups 1-2 unsaturated and on a
            # line from time 0 (so what flags group 3 is saturation of a linear ramp)
            t = d["group_time"]
            calm = ((gdq[:, :3] & DQ["JUMP_DET"]) == 0).all(axis=1) \
                & ((gdq[:, :2] & DQ["SATURATED"]) == 0).all(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = ramp[:, 1].astype(np.float64) / ramp[:, 0]
            very_hot = calm & (ramp[:, 0] > 0) & (np.abs(ratio - t[1] / t[0]) <= 0.1 * t[1] / t[0])
            # a candidate whose ramp drops is a telegraph pixel high at group 1 (issue 21)
            cand = above & ~shared & nxt & ~very_hot & (d["neg_jumps"] == 0)
            rc = (cand.sum(axis=0) > n_exp / 2) & active
            del g1, excess, above, nb, shared, nxt, cand, calm, ratio, very_hot, sat1
        else:
            rc = np.zeros(ref.shape, bool)
        del ramp, gdq, d["ramp"], d["gdq"]   # the ramps are not needed any more

        # ---- RTN, ST rule (§4.1.3) ------------------------------------------------------
        neg = d["neg_jumps"].astype(np.float64)
        na = neg[:, active]
        rtn_thr = na.mean(axis=1) + RTN_SIGMA * na.std(axis=1)
        rtn = ((neg > rtn_thr[:, None, None]).sum(axis=0) > 1) & active
        telegraph = rtn & ~hot
        del neg, na

        # ---- bad reference pixels (§4.1.3) ----------------------------------------------
        mc = np.nanmean(avg_ramp, axis=0)
        # the error tested as its 2/3 power: a std of N inputs is chi-distributed, skewed;
        # its 2/3 power is nearly normal (Wilson-Hilferty; issue 21)
        me = np.nanmean(err, axis=0) ** (2.0 / 3.0)
        if ref.any():
            c_med, c_sig = _robust(mc[ref])
            e_med, e_sig = _robust(me[ref])
            badref = ref & ((np.abs(mc - c_med) > BADREF_SIGMA * c_sig)
                            | (np.abs(me - e_med) > BADREF_SIGMA * e_sig))
        else:
            badref = np.zeros(ref.shape, bool)

        # ---- frame rate: 3-sigma clipped mean of DRK over active, non-hot pixels ---------
        # The package clips 5 times about the mean with the (ddof 0) std, keeping
        # |x - mean| <= 3 std, in float32 dask reductions.  astropy with cenfunc="mean",
        # stdfunc="std" applies the same rule (it rejects x < mean - 3 std or x > mean + 3 std)
        # but stops early once nothing changes (same result) and sums in its own precision:
        # differences are at the float32 rounding level.
        sel = active & ~hot & np.isfinite(drk)
        frame_rate, _, _ = sigma_clipped_stats(drk[sel], sigma=FRAME_RATE_SIGMA,
                                               maxiters=5, cenfunc="mean", stdfunc="std")
        frame_rate = float(frame_rate)

        # ---- dark cube (§4.1.4) ---------------------------------------------------------
        # rate x t (negative or unknown rates: the frame rate); DO_NOT_USE pixels (reference
        # pixels, RC, DO_NOT_USE in every input) and the 4-neighbours of HOT or RC pixels take
        # the average ramp (where unknown, the frame rate x t).  float64 products cast to
        # float32, one group at a time.  (One frame per group: the inputs' groups are frames.)
        dnu = ((d["pixeldq"] & np.uint32(DQ["DO_NOT_USE"])) != 0).all(axis=0)
        use_ramp = ref | rc | dnu | _neighbours(hot | rc)
        r = np.where(np.isfinite(drk) & (drk >= 0), drk, frame_rate)
        cube = np.empty(avg_ramp.shape, np.float32)
        for g, t in enumerate(d["group_time"]):
            fill = np.where(np.isfinite(avg_ramp[g]), avg_ramp[g], frame_rate * t)
            cube[g] = np.where(use_ramp, fill, r * t)

        # ---- dark DQ (§4.1.4) -----------------------------------------------------------
        everywhere = ((d["pixeldq"] & ~np.uint32(DQ["REFERENCE_PIXEL"])) != 0).all(axis=0)
        ua = unc[active & np.isfinite(unc)]
        high_unc = unc > ua.mean() + UNRELIABLE_DARK_SIGMA * ua.std()
        unknown = ~np.isfinite(drk) | ~np.isfinite(unc)
        dq = np.zeros(ref.shape, np.uint32)
        dq[rc] |= DQ["RC"] | DQ["DO_NOT_USE"]
        dq[badref] |= DQ["BAD_REF_PIXEL"] | DQ["DO_NOT_USE"]
        dq[telegraph] |= DQ["TELEGRAPH"]
        dq[everywhere | hot | rc | badref | unknown | high_unc] |= DQ["UNRELIABLE_DARK"]

        out.update(
            average_ramp=avg_ramp,
            dark_err=np.where(np.isfinite(err), err, 0).astype(np.float32),
            dark_count=count.astype(np.int16),
            dark_cube=cube,
            dark_rate=np.where(np.isfinite(drk), drk, 0).astype(np.float32),
            dark_rate_unc=np.where(np.isfinite(unc), unc, 0).astype(np.float32),
            dark_dq=dq, hot=hot, rc=rc, telegraph=telegraph, bad_reference=badref,
            reference_pixel=ref, frame_rate=np.float64(frame_rate),
            rtn_threshold=rtn_thr,
        )

        # ---- superbias (§4.1.1): groups 1-2 projected to t = 0, (1 + a) <g1> - a <g2> with
        # a = t1 / (t2 - t1) (2 <g1> - <g2> for one frame per group); error about each
        # input's own level
        if "bias_groups" in d:
            bg = d.pop("bias_groups")
            t1, t2 = d["group_time"][:2]
            a = t1 / (t2 - t1)
            x = (1 + a) * bg[:, 0].astype(np.float64) - a * bg[:, 1]  # NaN where unknown
            del bg
            n = np.isfinite(x).sum(axis=0)
            bias = np.nanmean(x, axis=0)
            lv = d["bias_level"]
            shift = (lv - np.nanmean(lv))[:, None, None]
            x -= shift
            berr = (np.nanstd(x, axis=0, ddof=1) / np.sqrt(n)).astype(np.float32)
            del x
            fin = berr[np.isfinite(berr)]
            # package: 5 iterations of 3-sigma clipping about the mean over all finite ERR
            # (float32 dask); astropy with cenfunc="mean" is the same rule (see frame rate)
            e_mean, _, e_std = sigma_clipped_stats(fin, sigma=3.0, maxiters=5,
                                                   cenfunc="mean", stdfunc="std")
            unreliable = (~np.isfinite(berr) | (berr > e_mean + UNRELIABLE_BIAS_SIGMA * e_std)
                          | ~np.isfinite(bias))
            out.update(
                superbias=np.where(np.isfinite(bias), bias, 0).astype(np.float32),
                superbias_err=np.where(np.isfinite(berr), berr, 0).astype(np.float32),
                superbias_dq=np.where(unreliable, DQ["UNRELIABLE_BIAS"], 0).astype(np.uint32),
                bias_err_mean=np.float64(e_mean), bias_err_std=np.float64(e_std),
            )
    return out


# --- agreement with the files of nrsdark build ----------------------------------------------
DARK_FLAGS = ("HOT", "RC", "TELEGRAPH", "BAD_REF_PIXEL", "UNRELIABLE_DARK", "DO_NOT_USE")


def _diff(a: np.ndarray, b: np.ndarray) -> dict:
    """max |a - b|, max relative difference |a - b| / max(|a|, |b|) (0 where both are 0),
    and the number of elements beyond 1e-5 relative."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return {"shape_mismatch": (a.shape, b.shape)}
    ad = np.abs(a - b)
    den = np.maximum(np.abs(a), np.abs(b))
    rel = np.divide(ad, den, out=np.zeros_like(ad), where=den > 0)
    return {"max_abs": float(ad.max(initial=0)), "max_rel": float(rel.max(initial=0)),
            "n_rel_gt_1e-5": int((rel > 1e-5).sum())}


def compare(baseline: dict, dark_fits, superbias_fits=None) -> dict:
    """Agreement of :func:`run`'s arrays with ``nrsdark build``'s DARK (and SUPERBIAS) files.

    Returns ``{"dark_dq": {flag: n pixels where the bit differs}, "arrays": {name: _diff}}``
    and, with a superbias, ``"superbias_dq": {"UNRELIABLE_BIAS": n}``."""
    from astropy.io import fits

    res: dict = {"dark_dq": {}, "arrays": {}}
    with fits.open(dark_fits) as h:
        dq = np.asarray(h["DQ"].data, np.uint32)
        for flag in DARK_FLAGS:
            bit = np.uint32(DQ[flag])
            res["dark_dq"][flag] = int((((dq & bit) != 0)
                                        != ((baseline["dark_dq"] & bit) != 0)).sum())
        res["dark_dq"]["any_bit"] = int((dq != baseline["dark_dq"]).sum())
        for ext, key in (("DRK", "dark_rate"), ("UNC", "dark_rate_unc"), ("SCI", "dark_cube"),
                         ("ERR", "dark_err")):
            res["arrays"][ext] = _diff(baseline[key], h[ext].data)
    if superbias_fits is not None and "superbias" in baseline:
        with fits.open(superbias_fits) as h:
            res["arrays"]["SUPERBIAS SCI"] = _diff(baseline["superbias"], h["SCI"].data)
            res["arrays"]["SUPERBIAS ERR"] = _diff(baseline["superbias_err"], h["ERR"].data)
            bit = np.uint32(DQ["UNRELIABLE_BIAS"])
            sdq = np.asarray(h["DQ"].data, np.uint32)
            res["superbias_dq"] = {"UNRELIABLE_BIAS": int(
                (((sdq & bit) != 0) != ((baseline["superbias_dq"] & bit) != 0)).sum())}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="calibrated-ramp Zarr store (nrsdark calibrate)")
    ap.add_argument("--out", help="save every array to this .npz")
    ap.add_argument("--dark", help="DARK file of nrsdark build, to compare with")
    ap.add_argument("--superbias", help="SUPERBIAS file of nrsdark build, to compare with")
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    res = run(a.store)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux
    print(f"wall {wall:.2f} s (run: read + reductions)  peak RSS {peak_gb:.3f} GB")
    print(f"hot {int(res['hot'].sum())}  rc {int(res['rc'].sum())}  "
          f"telegraph {int(res['telegraph'].sum())}  "
          f"bad_reference {int(res['bad_reference'].sum())}  "
          f"frame_rate {float(res['frame_rate']):.10g} DN/s"
          + (f"  unreliable_bias {int((res['superbias_dq'] != 0).sum())}"
             if "superbias_dq" in res else ""))
    if a.out:
        np.savez(a.out, **res)
        print(f"saved {a.out}")
    if a.dark:
        c = compare(res, a.dark, a.superbias)
        print("DQ bits differing (pixels): " + ", ".join(f"{k} {v}"
                                                          for k, v in c["dark_dq"].items()))
        if "superbias_dq" in c:
            print(f"UNRELIABLE_BIAS differing: {c['superbias_dq']['UNRELIABLE_BIAS']}")
        if "dark_groupdq_differ" in c:
            print(f"GROUPDQ differing: {c['dark_groupdq_differ']}")
        for k, v in c["arrays"].items():
            print(f"{k:14s} " + "  ".join(f"{kk} {vv:.3g}" if isinstance(vv, float)
                                           else f"{kk} {vv}" for kk, vv in v.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
