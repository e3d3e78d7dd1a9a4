"""Per-exposure ramp bookkeeping (report §4.1.3)."""

from __future__ import annotations

import numpy as np

from ..instrument import DQ


UNUSABLE = np.uint8(DQ["DO_NOT_USE"] | DQ["SATURATED"])
"""Group flags that make a group's count unusable.  jwst's saturation step sets SATURATED
(not DO_NOT_USE) in GROUPDQ, and ramp fitting ignores such groups: so do we."""


def good_groups(groupdq: np.ndarray) -> np.ndarray:
    """Usable groups: before the first JUMP_DET, not DO_NOT_USE, not SATURATED.

    ``groupdq`` (..., G, y, x) uint; returns bool of the same shape.  Every group at and after
    the first jump is masked (the report masks "any groups that occur after a jump"), so a
    cosmic ray never enters the average ramp.
    """
    jump = (groupdq & DQ["JUMP_DET"]) != 0
    after_jump = np.cumsum(jump, axis=-3) > 0
    return ~after_jump & ((groupdq & UNUSABLE) == 0)


def difference_scatter(ramp: np.ndarray, step: int = 7) -> float:
    """Robust sigma (1.4826 x MAD) of the group-to-group differences of one exposure, over
    every ``step``-th pixel: the exposure's CDS noise, for :func:`negative_jump_counts`."""
    sample = ramp[..., ::step, ::step]
    d = np.diff(sample, axis=-3)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    med = np.median(d)
    return float(1.4826 * np.median(np.abs(d - med)))


def negative_jump_counts(ramp: np.ndarray, groupdq: np.ndarray,
                         min_drop: float = 0.0) -> np.ndarray:
    """Number of negative jumps per pixel of one exposure (report §4.1.3): groups flagged
    JUMP_DET whose count is lower than the previous group's by more than ``min_drop``.

    jwst also flags the neighbours of large jumps (``min_jump_to_flag_neighbors``); those flags
    are not jumps of the neighbour, and half of them look "negative" by chance, which would
    make every neighbour of a strong RTN pixel a TELEGRAPH candidate.  Requiring a real drop
    (``calibrate`` uses 3 x the exposure's :func:`difference_scatter`) counts only the pixel's
    own negative jumps.  ``ramp``/``groupdq`` (..., G, y, x); returns int16 (..., y, x)."""
    jump = (groupdq[..., 1:, :, :] & DQ["JUMP_DET"]) != 0
    with np.errstate(invalid="ignore"):
        down = np.diff(ramp, axis=-3) < -min_drop
    return np.sum(jump & down, axis=-3, dtype=np.int16)
