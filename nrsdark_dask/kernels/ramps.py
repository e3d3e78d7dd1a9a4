"""Per-exposure ramp bookkeeping (report §4.1.3)."""

from __future__ import annotations

import numpy as np

from ..instrument import DQ


def good_groups(groupdq: np.ndarray) -> np.ndarray:
    """Usable groups: before the first JUMP_DET and not DO_NOT_USE.

    ``groupdq`` (..., G, y, x) uint; returns bool of the same shape.  Every group at and after
    the first jump is masked (the report masks "any groups that occur after a jump"), so a
    cosmic ray never enters the average ramp.
    """
    jump = (groupdq & DQ["JUMP_DET"]) != 0
    after_jump = np.cumsum(jump, axis=-3) > 0
    return ~after_jump & ((groupdq & DQ["DO_NOT_USE"]) == 0)


def negative_jump_counts(ramp: np.ndarray, groupdq: np.ndarray) -> np.ndarray:
    """Number of negative jumps per pixel of one exposure: groups flagged JUMP_DET whose count
    is lower than the previous group's.  ``ramp``/``groupdq`` (..., G, y, x); returns int16
    (..., y, x)."""
    jump = (groupdq[..., 1:, :, :] & DQ["JUMP_DET"]) != 0
    with np.errstate(invalid="ignore"):
        down = np.diff(ramp, axis=-3) < 0
    return np.sum(jump & down, axis=-3, dtype=np.int16)
