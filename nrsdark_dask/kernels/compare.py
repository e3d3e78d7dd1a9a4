"""One science exposure calibrated with two reference sets, compared (report §8).

Pure numpy: the two rate images and DQ arrays in, numbers and the difference image out.
"""

from __future__ import annotations

import warnings

import numpy as np

from .clip import median_robust_sigma


def _median_sigma(v: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD of the finite values (NaN, NaN when there are none)."""
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return float("nan"), float("nan")
    med, sig = median_robust_sigma(v)
    return float(med), float(sig)


def rate_difference(rate_new: np.ndarray, rate_old: np.ndarray, dq_new: np.ndarray,
                    dq_old: np.ndarray, unc_new: np.ndarray, unc_old: np.ndarray,
                    hot: np.ndarray, background: np.ndarray, do_not_use: int,
                    unreliable_dark: int) -> dict:
    """The report's §8 comparison of one exposure's rate under a new and an old reference set.

    ``rate_*``, ``dq_*``: the science rate (DN/s) and its DQ under each set; ``unc_*``: each
    set's DARK uncertainty (its UNC image, DN/s); ``hot``: pixels hot in either set (bool);
    ``background``: the pixels that measure the science noise (bool: an empty area, or every
    pixel of a dark exposure).  Pixels DO_NOT_USE under either set are left out of every
    statistic but the flag counts.

    Returns ``difference`` (new - old, NaN where left out) and the numbers:

    * ``diff_median``, ``diff_sigma``: median and robust sigma (1.4826 MAD) of the difference;
    * ``unc_new_median``, ``unc_old_median``: each DARK's median UNC on the same pixels, and
      ``expected_sigma``, the median of sqrt(UNC_new^2 + UNC_old^2): the difference's scatter
      if the two DARKs were independent estimates of one dark (an upper bound when they share
      inputs), and ``diff_sigma_over_expected``;
    * ``background_sigma``: the robust sigma of the new set's rate over ``background``, the
      report's yardstick ("deviations tiny compared to the standard deviation of the science
      data"), and ``diff_sigma_over_background``, ``column_max_over_background`` (the largest
      absolute median column of the difference, in those units);
    * ``hot_n``, ``hot_residual_new``, ``hot_residual_old``: the hot pixels' median rate less
      the median rate of all usable pixels, under each set (a DARK that knows a hot pixel
      leaves ~0);
    * ``new_do_not_use``, ``gone_do_not_use``, ``new_unreliable_dark``,
      ``gone_unreliable_dark``: pixels flagged under the new set and not the old, and back.
    """
    dnu_new, dnu_old = (dq_new & do_not_use) != 0, (dq_old & do_not_use) != 0
    usable = ~dnu_new & ~dnu_old & np.isfinite(rate_new) & np.isfinite(rate_old)
    diff = np.where(usable, rate_new.astype(np.float64) - rate_old, np.nan)
    out: dict = {"difference": diff, "n_usable": int(usable.sum())}
    out["diff_median"], out["diff_sigma"] = _median_sigma(diff[usable])
    out["unc_new_median"] = float(np.nanmedian(np.where(usable, unc_new, np.nan)))
    out["unc_old_median"] = float(np.nanmedian(np.where(usable, unc_old, np.nan)))
    expected = np.sqrt(unc_new.astype(np.float64) ** 2 + unc_old.astype(np.float64) ** 2)
    out["expected_sigma"] = float(np.nanmedian(np.where(usable, expected, np.nan)))
    out["diff_sigma_over_expected"] = out["diff_sigma"] / out["expected_sigma"]
    bg = background & usable & ~hot
    out["n_background"] = int(bg.sum())
    out["background_sigma"] = _median_sigma(rate_new[bg])[1]
    out["diff_sigma_over_background"] = out["diff_sigma"] / out["background_sigma"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        column = np.nanmedian(diff, axis=0)
    out["column_median"] = column
    out["column_max_over_background"] = float(np.nanmax(np.abs(column))
                                              / out["background_sigma"])
    h = hot & usable
    out["hot_n"] = int(h.sum())
    level_new = np.median(rate_new[usable]) if usable.any() else np.nan
    level_old = np.median(rate_old[usable]) if usable.any() else np.nan
    out["hot_residual_new"] = float(np.median(rate_new[h]) - level_new) if h.any() else None
    out["hot_residual_old"] = float(np.median(rate_old[h]) - level_old) if h.any() else None
    ud_new, ud_old = (dq_new & unreliable_dark) != 0, (dq_old & unreliable_dark) != 0
    out["new_do_not_use"] = int((dnu_new & ~dnu_old).sum())
    out["gone_do_not_use"] = int((dnu_old & ~dnu_new).sum())
    out["new_unreliable_dark"] = int((ud_new & ~ud_old).sum())
    out["gone_unreliable_dark"] = int((ud_old & ~ud_new).sum())
    return out
