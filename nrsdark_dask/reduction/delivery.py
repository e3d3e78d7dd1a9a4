"""The delivery criterion (report §4.2) and what it needs: DRK and UNC from rate images
(:func:`rate_images`), the SNR and the verdict (:func:`delivery`), the same from a dataset's
rate images alone (:func:`rate_snr`), and the whole-frame clipped statistics
(:func:`frame_clipped_stats`)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .. import instrument as inst
from .. import kernels as K
from ..config import Config
from ..store import StoreLayout
from .source import build_source


def frame_clipped_stats(x: da.Array, valid: da.Array, sigma=3.0, iters=5):
    """Whole-frame clipped mean and std of an image (0-d dask arrays): one task on the
    gathered image (a full frame is 16 MB) instead of ``iters`` rounds of tree reductions."""
    valid = da.broadcast_to(valid, x.shape)
    out = da.map_blocks(lambda a, b: K.mean_clipped_mean_std(a, b, sigma, iters),
                        x.rechunk(-1), valid.rechunk(-1), drop_axis=list(range(x.ndim)),
                        new_axis=0, chunks=((2,),), dtype=np.float64, token="frame-statistics")
    return out[0], out[1]


def rate_snr(ds: xr.Dataset, cfg: Config | None = None) -> dict:
    """The delivery SNR of a build of every exposure of ``ds``, from its rate images alone
    (DRK = their mean, UNC = their standard error, as the build makes them): lazy ``snr``,
    ``snr_required``, ``deliverable`` and ``n``.  Reads only (E, y, x) rate tiles; what
    ``nrsdark plan --store`` and period predictions use before building anything."""
    cfg = cfg or Config()
    ds, layout = build_source(ds)
    im = rate_images(ds.rate.data.rechunk({0: -1}))
    ref = inst.reference_pixel_mask(layout.geometry())
    active = ~da.from_array(ref, chunks=im["mean_rate"].chunks)
    return {**delivery(im["mean_rate"], im["unc"], active, layout, cfg),
            "n": ds.sizes["exposure"]}


def rate_images(rate: da.Array) -> dict:
    """DRK (``mean_rate``: the plain mean of the inputs' rates, report) and UNC (``unc``: its
    standard error, ddof = 1) from rate images (E, y, x), lazily."""
    n = da.isfinite(rate).sum(axis=0)
    return {"mean_rate": da.nanmean(rate, axis=0),
            "unc": da.nanstd(rate, axis=0, ddof=1) / da.sqrt(n)}


def delivery(mean_rate, unc, active, layout: StoreLayout, cfg: Config) -> dict:
    """The delivery criterion (report §4.2): SNR = the 3-sigma clipped median over
    the active pixels of DRK / UNC; deliverable when it reaches 2.5 (TRAD and subarrays) or
    5.0 (IRS2) (``[delivery]``).  Lazy; one task on the gathered ratio image."""
    d = cfg.delivery
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = mean_rate / unc
    ok = active & (unc > 0)
    snr = da.map_blocks(lambda a, b: K.median_clipped_median(a, b, d.snr_clip_sigma),
                        ratio.rechunk(-1), ok.rechunk(-1), drop_axis=[0, 1], new_axis=0,
                        chunks=((1,),),
                        dtype=np.float64, token="delivery-snr")[0]
    required = d.required(layout.family)
    return {"snr": snr, "snr_required": required, "deliverable": snr >= required}
