"""Reference-file contents: superbias, synthesized dark cube, DQ (report §4.1.1, §4.1.4)."""

from __future__ import annotations

import numpy as np


def bias_combination(g1: np.ndarray, g2: np.ndarray, weight: float) -> np.ndarray:
    """Groups 1 and 2 projected back to time 0 (report §4.1.1): ``(1 + a) g1 - a g2``, ``a =
    weight`` (:func:`nrsdark_dask.instrument.bias_weight`), in the inputs' precision."""
    a = float(weight)
    return (1 + a) * g1 - a * g2


def bias_from_groups(g1: np.ndarray, g2: np.ndarray, levels: np.ndarray | None = None,
                     valid: np.ndarray | None = None, weight: float = 1.0):
    """Superbias of one tile (report §4.1.1): groups 1 and 2 projected back to time 0,
    ``bias = (1 + a) <g1> - a <g2>`` with the per-pixel means over inputs and ``a = weight =
    t1 / (t2 - t1)`` (:func:`nrsdark_dask.instrument.bias_weight`: 1 for one frame per group,
    the report's ``2 g1 - g2``; 0.5 for NRS, whose groups average 4 frames and skip 1).  Its
    uncertainty is the standard error of that combination, from the spread of the per-input
    values (ddof = 1), which combines the standard deviations of g1 and g2 *and* their
    covariance (the reset level they share).

    ``levels`` (E,): each input's frame bias level (median of the same combination).  The
    bias keeps the mean level (the report preserves it), but the spread is taken about each
    input's own level: a level common to the whole frame is removed by jwst's refpix when the
    superbias is used, so it is not an uncertainty of any pixel.  ``g1``, ``g2`` (E, y, x).
    Returns bias, err (float32) and the number of inputs used."""
    v = np.isfinite(g1) & np.isfinite(g2)
    if valid is not None:
        v &= valid
    n = v.sum(axis=0)
    x = np.where(v, bias_combination(g1.astype(np.float64), g2, weight), 0.0)
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


def resample_ramp(values: np.ndarray, group_times: np.ndarray, frame_times: np.ndarray,
                  tail_fraction: float = 0.25, extend: str = "slope") -> np.ndarray:
    """A ramp known at its groups' mean times, at other times: (G, ...) -> (F, ...) (float64
    when resampled).

    Between groups and before the first, linear interpolation (before group 1: the line
    through groups 1 and 2); past the last group, ``extend="slope"`` continues the last
    group's value with the least-squares slope of the last ``tail_fraction`` of the groups
    (at least 2: the noise of one difference is not amplified, jwst#10333), ``"hold"`` keeps
    the last value (for errors).  A NaN group makes the segments it touches NaN.  Times equal
    to the groups' give the values themselves, unconverted and uncopied (one frame per group,
    no extension: the common case costs nothing)."""
    tg = np.asarray(group_times, np.float64)
    tf = np.asarray(frame_times, np.float64)
    if tf.shape == tg.shape and np.array_equal(tf, tg):
        return np.asarray(values)
    y = np.asarray(values, np.float64)
    if tg.size < 2:
        raise ValueError("a ramp of one group cannot be resampled")
    out = np.empty((tf.size,) + y.shape[1:])
    inside = tf <= tg[-1]
    i = np.clip(np.searchsorted(tg, tf[inside], side="right") - 1, 0, tg.size - 2)
    w = ((tf[inside] - tg[i]) / (tg[i + 1] - tg[i])).reshape((-1,) + (1,) * (y.ndim - 1))
    out[inside] = y[i] + (y[i + 1] - y[i]) * w
    if (~inside).any():
        dt = (tf[~inside] - tg[-1]).reshape((-1,) + (1,) * (y.ndim - 1))
        if extend == "hold":
            out[~inside] = y[-1]
        else:
            k = max(2, int(np.ceil(tail_fraction * tg.size)))
            t, v = tg[-k:].reshape((-1,) + (1,) * (y.ndim - 1)), y[-k:]
            tm, vm = t.mean(axis=0), v.mean(axis=0)
            slope = ((t - tm) * (v - vm)).sum(axis=0) / ((t - tm) ** 2).sum(axis=0)
            out[~inside] = y[-1] + slope * dt
    return out


def synthesize_dark_cube(mean_rate: np.ndarray, avg_ramp: np.ndarray, group_times: np.ndarray,
                         frame_times: np.ndarray, frame_rate: float,
                         use_ramp: np.ndarray) -> np.ndarray:
    """The dark cube (report §4.1.4) in the one-frame-per-group form of DARK reference files,
    float32 (F, y, x): plane k is the dark at ``frame_times[k]``.

    Most pixels: ``rate x t``.  Negative (or unknown) rates use the frame-averaged rate.
    Pixels in ``use_ramp`` (DO_NOT_USE, and 4-neighbours of HOT or RC pixels, IPC) take the
    average dark ramp instead (``avg_ramp`` (G, y, x) at ``group_times``, resampled at the
    frame times by :func:`resample_ramp`); where that is unknown too, the frame rate
    projection."""
    t = np.asarray(frame_times, np.float64)[:, None, None]
    with np.errstate(invalid="ignore"):
        rate = np.where(np.isfinite(mean_rate) & (mean_rate >= 0), mean_rate, frame_rate)
    cube = rate[None] * t
    if use_ramp.any():
        ramp = resample_ramp(avg_ramp, group_times, frame_times)
        fill = np.where(np.isfinite(ramp), ramp, frame_rate * t)
        cube = np.where(use_ramp[None], fill, cube)
    return cube.astype(np.float32)


def dq_from_flags(flags, bits) -> np.ndarray:
    """A uint32 DQ plane: ``bits[i]`` set wherever ``flags[i]`` (bool (y, x)) is True."""
    dq = np.zeros(np.shape(flags[0]), np.uint32)
    for flag, bit in zip(flags, bits):
        dq[flag] |= np.uint32(bit)
    return dq
