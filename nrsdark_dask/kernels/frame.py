"""Whole-frame statistics of one image: sigma clipping about the mean or about the median,
with astropy ``sigma_clip`` semantics (a round that rejects nothing ends it).  What the build's
whole-frame thresholds (report §4.1: frame rate, UNC and bias-ERR statistics, bias level) and
the delivery SNR (report §4.2) and the ingest's group-1 statistics (RC, report §4.1.3) use,
and what ``nrsdark analyze`` recomputes from the files.

(:func:`nrsdark_dask.kernels.clip.clipped_mean_std` is the per-pixel clip across inputs:
another axis, about the median.)
"""

from __future__ import annotations

import numpy as np


def clip_survivors(x: np.ndarray, valid: np.ndarray, sigma: float, iters: int,
                   centre) -> np.ndarray:
    """The values of ``x[valid]`` (finite) that survive ``iters`` rounds of sigma clipping
    about ``centre`` (``np.mean`` or ``np.median``) with the std."""
    keep = valid & np.isfinite(x)
    for _ in range(iters):
        v = x[keep]
        if v.size == 0:
            break
        with np.errstate(invalid="ignore"):
            new = keep & (np.abs(x - centre(v)) <= sigma * v.std())
        if new.sum() == keep.sum():
            break
        keep = new
    return x[keep]


def mean_clipped_mean_std(x: np.ndarray, valid: np.ndarray, sigma: float = 3.0,
                          iters: int = 5) -> np.ndarray:
    """``[mean, std]`` of ``x[valid]`` after sigma clipping about the mean (NaN if nothing
    is left)."""
    v = clip_survivors(x, valid, sigma, iters, np.mean)
    return np.array([v.mean(), v.std()] if v.size else [np.nan, np.nan])


def median_clipped_mean_std(x: np.ndarray, valid: np.ndarray, sigma: float = 3.0,
                            iters: int = 5) -> np.ndarray:
    """``[mean, std]`` of ``x[valid]`` after sigma clipping about the median: astropy's
    ``sigma_clipped_stats`` (the group-1 frame statistics of the RC rule, report §4.1.3),
    in float64."""
    v = clip_survivors(np.asarray(x, np.float64), valid, sigma, iters, np.median)
    return np.array([v.mean(), v.std()] if v.size else [np.nan, np.nan])


def median_clipped_median(x: np.ndarray, valid: np.ndarray, sigma: float = 3.0,
                          iters: int = 5) -> np.ndarray:
    """``[median]`` of ``x[valid]`` after sigma clipping about the median (the delivery SNR
    of report §4.2)."""
    v = clip_survivors(x, valid, sigma, iters, np.median)
    return np.array([np.median(v) if v.size else np.nan])
