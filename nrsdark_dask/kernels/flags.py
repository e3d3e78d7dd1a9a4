"""Pixel flags (report §4.1.3-§4.1.4).  Whole-frame thresholds are arguments."""

from __future__ import annotations

import numpy as np

from .clip import median_robust_sigma


def neighbours(mask: np.ndarray) -> np.ndarray:
    """4-neighbours of True pixels (not the pixels themselves unless they are neighbours too).
    Works on (..., y, x); edges have no neighbour outside."""
    out = np.zeros_like(mask, dtype=bool)
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    out[..., :, 1:] |= mask[..., :, :-1]
    out[..., :, :-1] |= mask[..., :, 1:]
    return out


def _max_neighbour(a: np.ndarray) -> np.ndarray:
    out = np.full_like(a, -np.inf)
    out[..., 1:, :] = np.maximum(out[..., 1:, :], a[..., :-1, :])
    out[..., :-1, :] = np.maximum(out[..., :-1, :], a[..., 1:, :])
    out[..., :, 1:] = np.maximum(out[..., :, 1:], a[..., :, :-1])
    out[..., :, :-1] = np.maximum(out[..., :, :-1], a[..., :, 1:])
    return out


def rc_candidates(group1: np.ndarray, next_flags: np.ndarray, neg_jumps: np.ndarray | None,
                  mean: np.ndarray, std: np.ndarray, group1_sigma: float = 10.0,
                  ipc_fraction: float = 0.02, next_groups: str = "any",
                  telegraph_veto: bool = True) -> np.ndarray:
    """RC candidates of each exposure (report §4.1.3).

    ``group1`` (E, y, x) calibrated counts of group 1; ``next_flags`` (E, y, x) uint8, bit 0
    set where group 2 is flagged JUMP_DET or unusable (DO_NOT_USE, or SATURATED: jwst flags
    saturation so), bit 1 the same for group 3 (the store's ``rc_next``); ``mean``, ``std``
    (E,) the frame's clipped group-1 mean and std.  A candidate is more than ``group1_sigma``
    std above the mean; it is dropped when a 4-neighbour is also above the threshold (a
    cosmic ray spreading charge), and kept only if the next two groups are flagged:
    ``next_groups="any"`` (default) asks one of them, ``"all"`` both.  The report says "flagged
    ... in the next two groups"; both readings reject a cosmic ray in group 1 (its jump is
    before group 2), but "all" misses RC pixels whose group 2 is the last one before
    saturation (jwst cannot test a single difference) or the middle of a smooth curve (equal to
    the median difference).  Refinement (documented): a neighbour whose excess is below
    ``ipc_fraction`` of the candidate's is lit by inter-pixel capacitance, not by a shared
    cosmic ray, and does not drop the candidate (``ipc_fraction=0`` gives the report's rule
    literally); a pixel whose bit 2 is set (a linear ramp until saturation flags groups 2-3,
    :func:`~nrsdark_dask.kernels.rc_next_flags`) is a very hot pixel, not an RC candidate.
    A candidate whose group 1 is SATURATED (bit 3; issue 21) shows only the saturation level
    while its neighbours' IPC grows with its true charge (2.4-3.7 % of the capped excess were
    measured), so for it only a neighbour at least as bright is a shared cosmic ray: jwst
    grows SATURATED onto the 8 neighbours, and those, fainter, still drop out against it.
    ``neg_jumps`` (E, y, x), the exposure's negative jumps (the store's ``neg_jumps``): with
    ``telegraph_veto`` (default; issue 21) a candidate whose ramp drops is a telegraph pixel
    in its high state at group 1, toggling low in group 2 or 3, not RC: an RC pixel's dark
    current only adds charge (report §4.1.3: "an exponential curve"), so its flagged groups
    are rises.  On simulated sets no RC candidate had a negative jump, and 99.6 % of the
    telegraph candidates had one (``telegraph_veto=False`` or ``neg_jumps=None``: the
    report's rule).  Returns bool (E, y, x).  Needs a 1-pixel halo when tiled.
    """
    m = np.asarray(mean, np.float64)[:, None, None]
    thr = m + group1_sigma * np.asarray(std, np.float64)[:, None, None]
    with np.errstate(invalid="ignore"):
        excess = np.where(np.isfinite(group1), group1 - m, -np.inf)
        above = excess > thr - m
        nb_excess = _max_neighbour(np.where(above, excess, -np.inf))
        saturated = (next_flags & 8) != 0  # group 1 SATURATED: its excess is a floor
        shared = np.where(saturated, nb_excess >= excess, nb_excess > ipc_fraction * excess)
    if next_groups == "any":
        nxt = (next_flags & 3) != 0
    elif next_groups == "all":
        nxt = (next_flags & 3) == 3
    else:
        raise ValueError(f"next_groups must be 'any' or 'all', not {next_groups!r}")
    very_hot = (next_flags & 4) != 0  # linear until it saturates: HOT, not RC
    cand = above & ~shared & nxt & ~very_hot
    if telegraph_veto and neg_jumps is not None:
        cand &= np.asarray(neg_jumps) == 0  # its ramp drops: a telegraph toggle
    return cand


def telegraph_candidates_st(neg_jumps: np.ndarray, mean: np.ndarray, std: np.ndarray,
                            sigma: float = 5.0) -> np.ndarray:
    """Random telegraph candidates (report §4.1.3, ST rule): more negative jumps than the
    exposure's mean count + ``sigma`` x its std over the active pixels (``mean``, ``std``
    (E,)).  ``neg_jumps`` (E, y, x) -> bool (E, y, x)."""
    thr = np.asarray(mean, np.float64) + sigma * np.asarray(std, np.float64)
    return neg_jumps > thr[:, None, None]


def telegraph_candidates_esa(jumps: np.ndarray, ngroups: int) -> np.ndarray:
    """ESA rule (report §4.1.3): the number of jumps, positive and negative, averaged over the
    inputs > (1 - 0.9973) (Ngroups - 1) 4.  ``jumps`` (E, y, x) JUMP_DET groups per input.
    Returns bool (y, x) (already the final flag: no "more than one input" step)."""
    return np.mean(jumps, axis=0) > (1 - 0.9973) * (int(ngroups) - 1) * 4


def bad_reference_pixels(mean_counts: np.ndarray, mean_err: np.ndarray,
                         sigma: float = 4.0) -> np.ndarray:
    """Bad reference pixels (report §4.1.3): a reference pixel whose group-averaged count or
    error is more than ``sigma`` robust sigmas from the median over all reference pixels.
    ``mean_counts``, ``mean_err``: those of every reference pixel of the frame (any shape).
    Returns bool, same shape."""
    (cm, cs), (em, es) = median_robust_sigma(mean_counts), median_robust_sigma(mean_err)
    with np.errstate(invalid="ignore"):
        return (np.abs(mean_counts - cm) > sigma * cs) | (np.abs(mean_err - em) > sigma * es)


def bad_reference_pixels_normalized(mean_counts: np.ndarray, mean_err: np.ndarray,
                                    sigma: float = 4.0) -> np.ndarray:
    """:func:`bad_reference_pixels` with the error tested as ``mean_err ** (2/3)`` (issue 21).

    A reference pixel's error is the standard deviation of its N inputs: its square follows
    chi-square with N - 1 degrees of freedom, skewed to high values (at N = 3 a quiet pixel
    is 4 robust sigmas high at a rate of ~0.4 %, not Gaussian's 6e-5).  The cube root of a
    chi-square (Wilson & Hilferty 1931), the error's 2/3 power, is close to normal from 2
    degrees of freedom, so the 4-sigma test keeps its Gaussian meaning at any N.  Counts are
    tested as they are (a mean of N inputs)."""
    with np.errstate(invalid="ignore"):
        err = np.power(np.asarray(mean_err, np.float64), 2.0 / 3.0)
    return bad_reference_pixels(mean_counts, err, sigma)


def hot_pixels(mean_rate: np.ndarray, rate: float = 1.0) -> np.ndarray:
    """HOT: mean dark rate above ``rate`` DN/s (report §4.1.4)."""
    with np.errstate(invalid="ignore"):
        return mean_rate > rate


def significance_factor(sigma: float, n_inputs: int) -> float:
    """How many UNC an excess must reach to be as unlikely as a ``sigma`` excess of a normal
    variable, when UNC is the standard error of ``n_inputs`` values (Student's t with
    n - 1 degrees of freedom: 19.2 for 3 inputs, 5.5 for 6, 3.85 for 12, 3.45 for 20 at
    sigma = 3); ``sigma`` itself when the number is unknown (under 2: a DARK whose HISTORY
    lists no inputs)."""
    from scipy.special import ndtr, stdtrit  # (scipy.stats would add 0.4 s to a build)

    n = int(n_inputs)
    return float(stdtrit(n - 1, ndtr(sigma))) if n >= 2 else float(sigma)


def hot_pixels_significant(mean_rate: np.ndarray, unc: np.ndarray, n_inputs: int,
                           rate: float = 1.0, sigma: float = 3.0) -> np.ndarray:
    """HOT where the mean dark rate exceeds ``rate`` significantly: (DRK - rate) / UNC above
    :func:`significance_factor` (``sigma`` as a one-sided normal tail, through Student's t
    for UNC from ``n_inputs`` rates).  Where UNC is unknown (not finite, or 0) the excess
    cannot be tested and the plain rule (:func:`hot_pixels`) decides."""
    k = significance_factor(sigma, n_inputs)
    with np.errstate(invalid="ignore"):
        testable = np.isfinite(unc) & (unc > 0)
        return np.where(testable, mean_rate - rate > k * unc, mean_rate > rate)


def high_uncertainty(unc: np.ndarray, mean: float, std: float, sigma: float = 3.0) -> np.ndarray:
    """UNRELIABLE_DARK by its uncertainty: UNC above the frame's mean + ``sigma`` std."""
    with np.errstate(invalid="ignore"):
        return unc > float(mean) + sigma * float(std)


def flagged(pixeldq: np.ndarray, ignore: int = 0) -> np.ndarray:
    """Any DQ bit set in each input's pixel DQ, bits ``ignore`` aside (per input, bool)."""
    return (pixeldq & np.uint32(~np.uint32(ignore))) != 0
