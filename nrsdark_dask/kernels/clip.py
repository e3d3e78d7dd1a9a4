"""Sigma-clipped mean and standard deviation across exposures (report §4.1.3): the hot loop.

Semantics are astropy's ``sigma_clip(data, sigma=3, maxiters=5, cenfunc="median",
stdfunc="std", axis=0)`` followed by the mean and the (ddof = 0) standard deviation of the
survivors: each iteration takes the median and standard deviation of the surviving values,
rejects values strictly outside median +- sigma x std, and stops when nothing changes or after
``maxiters`` iterations.  Non-finite values and values with ``valid = False`` never take part.
A pixel with no valid value gives NaN, NaN, 0; one value gives value, 0, 1.

Compiled with numba (one pass over the exposures of each pixel, no temporary cubes); tested
equal to astropy within 1e-5 relative.  Memory: the input plus three output planes.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _mean_std(buf, m):
    mean = 0.0
    for i in range(m):
        mean += buf[i]
    mean /= m
    var = 0.0
    for i in range(m):
        var += (buf[i] - mean) ** 2
    return mean, np.sqrt(var / m)


@numba.njit(cache=True, nogil=True)
def _clip_one(buf, n, sigma, maxiters):
    m = n
    for _ in range(maxiters):
        if m == 0:
            break
        med = np.median(buf[:m])
        _, std = _mean_std(buf, m)
        lo = med - sigma * std
        hi = med + sigma * std
        k = 0
        for i in range(m):
            v = buf[i]
            if not (v < lo or v > hi):
                buf[k] = v
                k += 1
        if k == m:
            break
        m = k
    if m == 0:
        return np.nan, np.nan, 0
    mean, std = _mean_std(buf, m)
    return mean, std, m


@numba.njit(cache=True, nogil=True)
def _clip_cube(data, valid, sigma, maxiters, mean, std, count):
    n_exp = data.shape[0]
    buf = np.empty(n_exp, np.float64)
    for p in range(data.shape[1]):
        n = 0
        for e in range(n_exp):
            v = data[e, p]
            if valid[e, p] and np.isfinite(v):
                buf[n] = v
                n += 1
        mu, sd, m = _clip_one(buf, n, sigma, maxiters)
        mean[p] = mu
        std[p] = sd
        count[p] = m


def clipped_mean_std(data: np.ndarray, valid: np.ndarray | None = None, sigma: float = 3.0,
                     maxiters: int = 5):
    """Clip along axis 0 (exposures).  ``data`` (E, ...) float; ``valid`` (E, ...) bool or
    None.  Returns ``mean`` and ``std`` (float32) and ``count`` (int16), shaped ``data[0]``."""
    data = np.asarray(data)
    shape = data.shape[1:]
    flat = np.ascontiguousarray(data.reshape(data.shape[0], -1))
    if valid is None:
        ok = np.ones(flat.shape, np.bool_)
    else:
        ok = np.ascontiguousarray(np.broadcast_to(valid, data.shape).reshape(flat.shape))
    npix = flat.shape[1]
    mean = np.empty(npix, np.float64)
    std = np.empty(npix, np.float64)
    count = np.empty(npix, np.int16)
    if npix and flat.shape[0]:
        _clip_cube(flat, ok, float(sigma), int(maxiters), mean, std, count)
    elif npix:
        mean[:] = std[:] = np.nan
        count[:] = 0
    return (mean.astype(np.float32).reshape(shape), std.astype(np.float32).reshape(shape),
            count.reshape(shape))
