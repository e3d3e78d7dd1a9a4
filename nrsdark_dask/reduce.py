"""Lazy graph builders: the report's §4.1.1 and §4.1.3-§4.1.4 over (y, x) tiles.

``build_products(ds)`` returns dask-backed ``xarray.DataArray`` objects for every reference-file
array and statistic; building computes nothing (tested with a scheduler that raises).  The
kernels of :mod:`nrsdark_dask.kernels` are applied tile by tile with all exposures of the tile
in one block (the store's exposure chunks are merged: ``rechunk({0: -1})``), with a 1-pixel halo
where neighbours matter (RC rule, IPC neighbours).

Whole-frame statistics are small reductions of their own (:func:`frame_statistics`):

=====================  ===================================================================
RC threshold (E,)      clipped group-1 mean + 10 sigma, per exposure (stored at ingest)
RTN threshold (E,)     mean + 5 sigma of the negative-jump counts over the active pixels
frame rate             3-sigma clipped mean of the mean dark rate over active, non-hot pixels
UNC mean, sigma        of the rate uncertainty over active pixels (UNRELIABLE_DARK, 3 sigma)
bias ERR mean, sigma   3-sigma clipped, of the superbias uncertainty (UNRELIABLE_BIAS, 5 sigma)
reference pixels       median and robust sigma (1.4826 MAD) of the group-averaged counts and
                       errors over all reference pixels (bad reference pixels, 4 sigma)
=====================  ===================================================================

``nrsdark build`` computes the first five (they read only the small per-exposure images) and
passes the numbers to ``build_products``: the tile graph then streams, each tile independent,
and no intermediate cube is ever held waiting for a frame statistic.  The reference-pixel
statistics stay in the graph: they need the average ramp only at reference pixels (small).

Memory per tile task (the clipped mean, the largest): the tile's ramp and group DQ for all
exposures, E x G x ty x tx x 5 bytes, plus ~3 x G x ty x tx x 4 bytes of results and a
validity mask of E x G x ty x tx bytes: about 560 MB for 20 full-frame TRAD inputs of 88 groups
with 256 x 256 tiles, whatever the frame size.  Everything else works on (E, ty, tx) images.

Decisions (the report is silent or ambiguous; SPEC.md asks to document them):

* the average ramp uses groups before the first JUMP_DET of each input, without DO_NOT_USE or
  SATURATED (jwst marks saturated groups SATURATED only);
* a negative jump is a JUMP_DET group whose count drops by more than 3 x the exposure's CDS
  scatter (jwst's neighbour flags around large jumps are not the pixel's own jumps);
* DRK is the plain mean of the input rates (report: "averages the individual ... rate
  images"), UNC its standard error (ddof = 1); ERR is the per-group standard deviation of the
  surviving counts (report), not the error of their mean;
* RC needs groups 2 and 3: with fewer than 3 groups no pixel is flagged RC;
* a neighbour lit only by IPC (< 2 % of the candidate's excess) does not veto an RC candidate;
* RC: one of groups 2-3 JUMP_DET or unusable suffices (``rc_next_groups="any"``; "all" is the
  stricter reading, see ``kernels.flags.rc_candidates``);
* reference pixels take the average dark ramp in the cube (they have no dark current; the bad
  ones are DO_NOT_USE anyway), so the cube never waits for the reference statistics;
* "flagged in the pixel DQ of every input" ignores REFERENCE_PIXEL (always set by the mask);
* pixels whose DRK or UNC is unknown get UNRELIABLE_DARK (and 0 in the file);
* the dark's group DQ plane (extension GROUPDQ) marks DO_NOT_USE where fewer than two inputs
  survive at that group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
import xarray as xr

from . import instrument as inst
from . import kernels as K
from .config import Config
from .store import StoreLayout

DQ = inst.DQ


class BuildError(ValueError):
    pass


@dataclass
class Products:
    """Lazy reference-file arrays (``xarray.DataArray`` backed by dask) and statistics."""

    layout: StoreLayout
    exposures: list = field(default_factory=list)
    dates: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def __getitem__(self, name):
        return self.arrays[name]


def _layout(ds) -> StoreLayout:
    return StoreLayout(**ds.attrs["layout"])


def check_store(ds) -> StoreLayout:
    """Clear errors for stores the reductions cannot use."""
    layout = _layout(ds)
    n = ds.sizes.get("exposure", 0)
    if n == 0:
        raise BuildError("the store holds no exposure; run nrsdark calibrate first")
    if n < 2:
        raise BuildError(f"the store holds {n} exposure; the report's statistics are across "
                         "inputs (clipped mean, standard error): at least 2 are needed")
    # one detector / readout / subarray per store is guaranteed by calibrate (StoreLayout)
    return layout


def _clipped_stats_lazy(x: da.Array, valid: da.Array, sigma=3.0, iters=5):
    """Mean and std of ``x[valid]`` with ``iters`` rounds of sigma clipping about the mean
    (0-d dask arrays).  Used for whole-frame statistics of small images."""
    keep = valid & da.isfinite(x)
    mean = std = None
    for _ in range(iters):
        xs = da.where(keep, x, np.nan)
        mean = da.nanmean(xs)
        std = da.nanstd(xs)
        keep = keep & (abs(x - mean) <= sigma * std)
    xs = da.where(keep, x, np.nan)
    return da.nanmean(xs), da.nanstd(xs)


def _median_robust_sigma(values: np.ndarray):
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.array([np.nan, np.nan])
    med = np.median(v)
    return np.array([med, 1.4826 * np.median(np.abs(v - med))])


def _shared(ds: xr.Dataset, layout: StoreLayout, cfg: Config) -> dict:
    """Lazy pieces both the frame statistics and the products need, built once so that a
    lazy build does not compute them twice: reference-pixel masks, mean rate, its standard
    error, HOT, and the superbias stack."""
    ref = inst.reference_pixel_mask(layout.geometry())
    refpix = da.from_array(ref, chunks=ds.rate.data.chunks[1:])
    rate = ds.rate.data.rechunk({0: -1})
    mean_rate = da.nanmean(rate, axis=0)
    active = ~refpix
    n = da.isfinite(rate).sum(axis=0)
    out = {
        "ref": ref, "refpix": refpix, "active": active, "mean_rate": mean_rate,
        "unc": da.nanstd(rate, axis=0, ddof=1) / da.sqrt(n),
        "hot": da.map_blocks(K.hot_pixels, mean_rate, cfg.dark.hot_rate, dtype=bool) & active,
    }
    if layout.has_bias:
        out["bias"] = _bias_stack(ds)
    return out


def frame_statistics(ds: xr.Dataset, cfg: Config | None = None,
                     shared: dict | None = None) -> dict:
    """Lazy whole-frame statistics (see module docstring); values are dask arrays."""
    cfg = cfg or Config()
    layout = check_store(ds)
    sh = shared if shared is not None else _shared(ds, layout, cfg)
    active = sh["active"]
    neg = ds.neg_jumps.data.rechunk({0: -1}).astype(np.float32)
    neg_active = da.where(active[None], neg, np.nan)
    stats = {
        "g1_mean": ds.g1_mean.data,
        "rc_threshold": ds.g1_mean.data + cfg.dark.rc_group1_sigma * ds.g1_std.data,
        "rtn_threshold": da.nanmean(neg_active, axis=(1, 2))
        + cfg.dark.rtn_sigma * da.nanstd(neg_active, axis=(1, 2)),
    }
    stats["frame_rate"], _ = _clipped_stats_lazy(sh["mean_rate"], active & ~sh["hot"])
    unc = sh["unc"]
    unc_a = da.where(active & da.isfinite(unc), unc, np.nan)
    stats["unc_mean"], stats["unc_std"] = da.nanmean(unc_a), da.nanstd(unc_a)
    if layout.has_bias:
        err = sh["bias"][1]
        stats["bias_err_mean"], stats["bias_err_std"] = _clipped_stats_lazy(
            err, da.ones_like(err, dtype=bool))
    return stats


def compute_frame_statistics(ds: xr.Dataset, cfg: Config | None = None) -> dict:
    """The same, computed (numpy values).  Reads only per-exposure images, not the ramps."""
    (values,) = dask.compute(frame_statistics(ds, cfg))
    return {k: np.asarray(v) for k, v in values.items()}


def _bias_stack(ds) -> da.Array:
    bg = ds.bias_groups.data.rechunk({0: -1})
    levels = ds.bias_level.data.rechunk(-1).reshape((-1, 1, 1, 1))

    def block(b, lv):
        bias, err, n = K.bias_from_groups(b[:, 0], b[:, 1], lv.ravel())
        return np.stack([bias, err, n.astype(np.float32)])

    return da.map_blocks(block, bg, levels, dtype=np.float32,
                         chunks=((3,),) + bg.chunks[2:], drop_axis=1)


def _ramp_stack(ramp: da.Array, gdq: da.Array, sigma: float) -> da.Array:
    def block(r, q):
        mean, std, count = K.clipped_mean_std(r, K.good_groups(q), sigma=sigma)
        return np.stack([mean, std, count.astype(np.float32)])

    return da.map_blocks(block, ramp, gdq, dtype=np.float32,
                         chunks=((3,),) + ramp.chunks[1:])


def _rc_flags(ramp, gdq, stats, layout, n_exp, cfg: Config) -> da.Array:
    if layout.ngroups < 3:
        return da.zeros(ramp.shape[2:], dtype=bool, chunks=ramp.chunks[2:])
    g1 = ramp[:, 0]
    # groups 2 and 3 "JUMP_DET or DO_NOT_USE", packed in two bits of one (E, y, x) image
    bad = np.uint8(DQ["JUMP_DET"] | DQ["DO_NOT_USE"] | DQ["SATURATED"])
    packed = ((gdq[:, 1] & bad) != 0).astype(np.uint8) | \
        (((gdq[:, 2] & bad) != 0).astype(np.uint8) << 1)
    d3 = {0: 0, 1: 1, 2: 1}
    g1o = da.overlap.overlap(g1, depth=d3, boundary="none")
    pko = da.overlap.overlap(packed, depth=d3, boundary="none")
    mean = da.asarray(stats["g1_mean"]).reshape((-1, 1, 1)).rechunk(-1)
    thr = da.asarray(stats["rc_threshold"]).reshape((-1, 1, 1)).rechunk(-1)

    def block(a, p, m, t):
        nxt = np.stack([(p & 1), (p >> 1) & 1], axis=1) * np.uint8(DQ["JUMP_DET"])
        return K.rc_candidates(a, nxt, m.ravel(), t.ravel(), ipc_fraction=cfg.dark.rc_ipc_fraction,
                               next_groups=cfg.dark.rc_next_groups)

    cand = da.map_blocks(block, g1o, pko, mean, thr, dtype=bool, chunks=g1o.chunks)
    cand = da.overlap.trim_internal(cand, d3, boundary="none")
    return cand.sum(axis=0) > n_exp / 2


def build_products(ds: xr.Dataset, cfg: Config | None = None, stats: dict | None = None,
                   mask_in: np.ndarray | None = None) -> Products:
    """Every SUPERBIAS / DARK / MASK array, lazily.

    ``stats``: whole-frame statistics (numbers, from :func:`compute_frame_statistics`); default
    lazy ones from :func:`frame_statistics`.  ``mask_in``: the input MASK's DQ (raw layout:
    3200 rows for IRS2) or None.
    """
    cfg = cfg or Config()
    layout = check_store(ds)
    sh = _shared(ds, layout, cfg)
    stats = dict(stats) if stats is not None else frame_statistics(ds, cfg, sh)
    n_exp = ds.sizes["exposure"]
    dims2, dims3 = ("y", "x"), ("group", "y", "x")
    coords2 = {"y": ds.y, "x": ds.x}
    coords3 = {"group": ds.group, "group_time": ds.group_time, **coords2}

    ramp = ds.ramp.data.rechunk({0: -1})
    gdq = ds.groupdq.data.rechunk({0: -1})
    chunks2 = ramp.chunks[2:]
    refpix, active = sh["refpix"], sh["active"]
    stack = _ramp_stack(ramp, gdq, cfg.dark.clip_sigma)
    avg_ramp, err, count = stack[0], stack[1], stack[2]

    mean_rate, unc, hot = sh["mean_rate"], sh["unc"], sh["hot"]

    rc = _rc_flags(ramp, gdq, stats, layout, n_exp, cfg) & active
    neg = ds.neg_jumps.data.rechunk({0: -1})
    if cfg.dark.rtn_rule == "esa":
        rtn = da.map_blocks(K.rtn_candidates_esa, neg, layout.ngroups, dtype=bool,
                            drop_axis=0)
    elif cfg.dark.rtn_rule == "st":
        thr = da.asarray(stats["rtn_threshold"]).reshape((-1, 1, 1)).rechunk(-1)
        rtn = (neg > thr).sum(axis=0) > 1
    else:
        raise BuildError(f"unknown RTN rule {cfg.dark.rtn_rule!r}; use 'st' or 'esa'")
    rtn = rtn & active

    # bad reference pixels: group-averaged average ramp and error, against all reference pixels
    mc = da.nanmean(avg_ramp, axis=0)
    me = da.nanmean(err, axis=0)
    if sh["ref"].any():
        c_stats = da.from_delayed(dask.delayed(_median_robust_sigma)(mc[refpix]), (2,), float)
        e_stats = da.from_delayed(dask.delayed(_median_robust_sigma)(me[refpix]), (2,), float)

        def badref_block(c, e, r, c_med, c_sig, e_med, e_sig):
            return K.bad_reference_pixels(c, e, r, (float(c_med), float(e_med)),
                                          (float(c_sig), float(e_sig)), cfg.dark.badref_sigma)

        badref = da.map_blocks(badref_block, mc, me, refpix, c_stats[0], c_stats[1],
                               e_stats[0], e_stats[1], dtype=bool, chunks=mc.chunks)
    else:
        badref = da.zeros(mc.shape, dtype=bool, chunks=mc.chunks)

    # cube: average ramp for reference pixels, RC, and IPC neighbours of HOT or RC pixels
    bright = hot | rc
    ipc = da.map_overlap(K.neighbours, bright, depth=1, boundary="none", dtype=bool)
    use_ramp = refpix | rc | ipc
    t = layout.group_times()
    frame_rate = stats["frame_rate"]

    def cube_block(r, a, u, fr):
        return K.synthesize_dark_cube(r, a, t, float(fr), u)

    cube = da.map_blocks(cube_block, mean_rate, avg_ramp, use_ramp, frame_rate,
                         dtype=np.float32, chunks=avg_ramp.chunks)
    dark_err = da.where(da.isfinite(err), err, 0).astype(np.float32)
    group_dq = da.where(count < 2, np.uint8(DQ["DO_NOT_USE"]), np.uint8(0)).astype(np.uint8)

    pix = ds.pixeldq.data.rechunk({0: -1})
    everywhere = ((pix & np.uint32(~np.uint32(DQ["REFERENCE_PIXEL"]))) != 0).all(axis=0)
    unknown = ~da.isfinite(mean_rate) | ~da.isfinite(unc)
    high_unc = unc > stats["unc_mean"] + cfg.dark.unreliable_err_sigma * stats["unc_std"]

    def dq_block(*flags):
        return K.assemble_dark_dq(rc=flags[0], telegraph=flags[1], badref=flags[2],
                                  hot=flags[3], flagged_everywhere=flags[4],
                                  unreliable_err=flags[5])

    dark_dq = da.map_blocks(dq_block, rc, rtn, badref, hot, everywhere, unknown | high_unc,
                            dtype=np.uint32)

    A = {
        "dark_cube": xr.DataArray(cube, dims=dims3, coords=coords3,
                                  attrs={"units": "DN", "long_name": "synthesized dark cube"}),
        "dark_err": xr.DataArray(dark_err, dims=dims3, coords=coords3,
                                 attrs={"units": "DN", "long_name": "per-group std of counts"}),
        "dark_groupdq": xr.DataArray(group_dq, dims=dims3, coords=coords3),
        "dark_dq": xr.DataArray(dark_dq, dims=dims2, coords=coords2),
        "dark_rate": xr.DataArray(da.where(da.isfinite(mean_rate), mean_rate, 0)
                                  .astype(np.float32), dims=dims2, coords=coords2,
                                  attrs={"units": "DN/s", "long_name": "mean dark rate (DRK)"}),
        "dark_rate_unc": xr.DataArray(da.where(da.isfinite(unc), unc, 0).astype(np.float32),
                                      dims=dims2, coords=coords2,
                                      attrs={"units": "DN/s", "long_name": "its uncertainty"}),
        "average_ramp": xr.DataArray(avg_ramp, dims=dims3, coords=coords3),
        "hot": xr.DataArray(hot, dims=dims2, coords=coords2),
        "rc": xr.DataArray(rc, dims=dims2, coords=coords2),
        "telegraph": xr.DataArray(rtn & ~hot, dims=dims2, coords=coords2),
        "bad_reference": xr.DataArray(badref, dims=dims2, coords=coords2),
    }
    raw_rows = _raw_rows(layout)
    A["mask"] = xr.DataArray(_mask(hot, mask_in, layout, raw_rows), dims=("y_raw", "x"),
                             coords={"y_raw": ds.y_raw, "x": ds.x})
    S = {
        "n_exposures": n_exp,
        "n_hot": hot.sum(), "n_rc": rc.sum(), "n_telegraph": (rtn & ~hot).sum(),
        "n_bad_reference": badref.sum(),
        "n_active": active.sum(),
        "negative_rate_fraction": ((mean_rate < 0) & active).sum() / active.sum(),
        "frame_rate": frame_rate,
        "median_rate": da.nanmedian(da.where(active, mean_rate, np.nan).ravel()
                                    .rechunk(-1), axis=0),
    }
    S["telegraph_fraction"] = S["n_telegraph"] / S["n_active"]
    if mask_in is not None:
        known = da.from_array((_science_rows(mask_in, layout) & DQ["HOT"]) != 0, chunks=chunks2)
        S["n_new_hot"] = (hot & ~known).sum()
    if layout.has_bias:
        bias = sh["bias"]

        def bias_dq_block(b, e, m, sd):
            bad = K.unreliable_bias(e, float(m), float(sd), cfg.bias.unreliable_sigma)
            return np.where(bad | ~np.isfinite(b), np.uint32(DQ["UNRELIABLE_BIAS"]),
                            np.uint32(0))

        bdq = da.map_blocks(bias_dq_block, bias[0], bias[1], stats["bias_err_mean"],
                            stats["bias_err_std"], dtype=np.uint32)
        rawc = {"y_raw": ds.y_raw, "x": ds.x}
        A["superbias"] = xr.DataArray(da.where(da.isfinite(bias[0]), bias[0], 0)
                                      .astype(np.float32), dims=("y_raw", "x"), coords=rawc,
                                      attrs={"units": "DN"})
        A["superbias_err"] = xr.DataArray(da.where(da.isfinite(bias[1]), bias[1], 0)
                                          .astype(np.float32), dims=("y_raw", "x"), coords=rawc)
        A["superbias_dq"] = xr.DataArray(bdq.astype(np.uint32), dims=("y_raw", "x"), coords=rawc)
        science = da.broadcast_to(da.from_array(raw_rows[:, None], chunks=(bias.chunks[1], 1)),
                                  bias[0].shape).rechunk(bias[0].chunks)
        S["bias_level"], _ = _clipped_stats_lazy(bias[0], science)
        S["n_unreliable_bias"] = (bdq != 0).sum()
    return Products(layout=layout, exposures=np.asarray(ds.exposure.values).tolist(),
                    dates=ds.date, arrays=A, stats=S)


def _raw_rows(layout: StoreLayout) -> np.ndarray:
    """Which raw rows hold science pixels (all of them except in IRS2)."""
    if layout.family == "IRS2":
        return inst.irs2_normal_rows(layout.detector)
    return np.ones(layout.ny_raw, bool)


def _science_rows(raw: np.ndarray, layout: StoreLayout) -> np.ndarray:
    return raw[_raw_rows(layout)] if raw.shape[0] != layout.ny else raw


def _mask(hot: da.Array, mask_in, layout: StoreLayout, raw_rows: np.ndarray) -> da.Array:
    """Output MASK (raw layout): the input mask OR HOT|DO_NOT_USE on the new hot pixels; with
    no input mask, reference pixels (and IRS2 reference samples) get REFERENCE_PIXEL."""
    flag = np.uint32(DQ["HOT"] | DQ["DO_NOT_USE"])
    hot_dq = da.where(hot, flag, np.uint32(0))
    if layout.family == "IRS2":  # science row i sits at raw row idx[i]
        idx = np.flatnonzero(raw_rows)
        rows = np.zeros(layout.ny_raw, int)
        rows[idx] = np.arange(idx.size)
        hot_dq = da.where(da.from_array(raw_rows[:, None]), hot_dq[rows], np.uint32(0))
        hot_dq = hot_dq.rechunk((layout.tile_y, hot.chunks[1]))
    if mask_in is None:
        ref = inst.reference_pixel_mask(layout.geometry())
        base = np.zeros((layout.ny_raw, layout.nx), np.uint32)
        if layout.family == "IRS2":
            base[~raw_rows] = DQ["REFERENCE_PIXEL"]
            base[raw_rows] |= np.where(ref, DQ["REFERENCE_PIXEL"], 0).astype(np.uint32)
        else:
            base[ref] = DQ["REFERENCE_PIXEL"]
    else:
        base = np.asarray(mask_in, np.uint32)
        if base.shape != (layout.ny_raw, layout.nx):
            raise BuildError(f"input mask has shape {base.shape}, expected "
                             f"{(layout.ny_raw, layout.nx)}")
    return da.from_array(base, chunks=hot_dq.chunks) | hot_dq
