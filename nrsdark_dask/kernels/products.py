"""Reference-file contents: superbias, synthesized dark cube, DQ (report §4.1.1, §4.1.4)."""

from __future__ import annotations

import numpy as np


def bias_from_groups(g1: np.ndarray, g2: np.ndarray, levels: np.ndarray | None = None,
                     valid: np.ndarray | None = None):
    """Superbias of one tile (report §4.1.1): ``bias = 2 <g1> - <g2>`` with the per-pixel
    means over inputs; its uncertainty is the standard error of that combination, from the
    spread of the per-input values ``2 g1 - g2`` (ddof = 1), which combines the standard
    deviations of g1 and g2 *and* their covariance (the reset level they share).

    ``levels`` (E,): each input's frame bias level (median of ``2 g1 - g2``).  The bias keeps
    the mean level (the report preserves it), but the spread is taken about each input's own
    level: a level common to the whole frame is removed by jwst's refpix when the superbias is
    used, so it is not an uncertainty of any pixel.  ``g1``, ``g2`` (E, y, x).  Returns bias,
    err (float32) and the number of inputs used."""
    v = np.isfinite(g1) & np.isfinite(g2)
    if valid is not None:
        v &= valid
    n = v.sum(axis=0)
    x = np.where(v, 2.0 * g1.astype(np.float64) - g2, 0.0)
    if levels is None:
        shift = np.zeros((x.shape[0], 1, 1))
    else:
        lv = np.asarray(levels, np.float64).reshape(-1, 1, 1)
        shift = lv - np.nanmean(lv)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x.sum(axis=0) / n
        xs = np.where(v, x - shift, 0.0)
        mean_s = xs.sum(axis=0) / n
        var = np.where(v, (xs - mean_s) ** 2, 0.0).sum(axis=0) / (n - 1)
        err = np.sqrt(var / n)
    return mean.astype(np.float32), err.astype(np.float32), n.astype(np.int16)


def unreliable_bias(err: np.ndarray, mean_err: float, std_err: float,
                    nsigma: float = 5.0) -> np.ndarray:
    """UNRELIABLE_BIAS where the bias uncertainty is more than ``nsigma`` above the (clipped)
    frame mean uncertainty, or unknown."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(err) | (err > mean_err + nsigma * std_err)


def synthesize_dark_cube(mean_rate: np.ndarray, avg_ramp: np.ndarray, group_times: np.ndarray,
                         frame_rate: float, use_ramp: np.ndarray) -> np.ndarray:
    """The dark cube (report §4.1.4), float32 (G, y, x).

    Most pixels: ``rate x t_g``.  Negative (or unknown) rates use the frame-averaged rate.
    Pixels in ``use_ramp`` (DO_NOT_USE, and 4-neighbours of HOT or RC pixels, IPC) take the
    average dark ramp instead; where that is unknown too, the frame rate projection."""
    t = np.asarray(group_times, np.float64)[:, None, None]
    with np.errstate(invalid="ignore"):
        rate = np.where(np.isfinite(mean_rate) & (mean_rate >= 0), mean_rate, frame_rate)
    cube = rate[None] * t
    fill = np.where(np.isfinite(avg_ramp), avg_ramp, frame_rate * t)
    cube = np.where(use_ramp[None], fill, cube)
    return cube.astype(np.float32)


def dq_from_flags(flags, bits) -> np.ndarray:
    """A uint32 DQ plane: ``bits[i]`` set wherever ``flags[i]`` (bool (y, x)) is True."""
    dq = np.zeros(np.shape(flags[0]), np.uint32)
    for flag, bit in zip(flags, bits):
        dq[flag] |= np.uint32(bit)
    return dq
