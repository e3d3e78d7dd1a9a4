"""Per-exposure ramp bookkeeping (report §4.1.3)."""

from __future__ import annotations

import numpy as np

from .clip import median_robust_sigma


def good_groups(groupdq: np.ndarray, jump_bit: int, unusable_bits: int) -> np.ndarray:
    """Usable groups: before the first ``jump_bit`` (JUMP_DET), none of ``unusable_bits``
    (DO_NOT_USE | SATURATED: jwst's saturation step sets only SATURATED, and ramp fitting
    ignores such groups).  The slow, obvious reference of :func:`clipped_ramp`'s mask.

    ``groupdq`` (..., G, y, x) uint; returns bool of the same shape.  Every group at and after
    the first jump is masked (the report masks "any groups that occur after a jump"), so a
    cosmic ray never enters the average ramp.
    """
    jump = (groupdq & jump_bit) != 0
    after_jump = np.cumsum(jump, axis=-3) > 0
    return ~after_jump & ((groupdq & unusable_bits) == 0)


CDS_STEP = 7  # the CDS noise sample: every 7th row and column of the frame (1/49 of a ramp)


def cds_sample(ramp: np.ndarray, step: int = CDS_STEP, row0: int = 0) -> np.ndarray:
    """The pixels of the CDS noise sample in ``ramp`` (..., group, y, x): every ``step``-th
    column, and every ``step``-th row of the frame (``row0``: the frame row of ``ramp``'s
    first row, so that slabs of a frame sample the rows the whole frame would).  Gathered one
    group plane at a time (``ramp[..., g, rows, ::step]``), so a lazy array-like
    (``calibration.recipe.MappedArray``) never has the whole cube read at once."""
    first = (-row0) % step
    return np.stack([np.asarray(ramp[..., g, first::step, ::step])
                     for g in range(ramp.shape[-3])], axis=-3)


def sample_scatter(sample: np.ndarray) -> float:
    """Robust sigma (1.4826 x MAD) of the group-to-group differences of a CDS sample
    (:func:`cds_sample`; the samples of an exposure's slabs joined along y); ``nan`` with
    fewer than two groups."""
    if sample.shape[-3] < 2:
        return float("nan")
    return float(median_robust_sigma(np.diff(sample, axis=-3))[1])


def difference_scatter(ramp: np.ndarray, step: int = CDS_STEP) -> float:
    """The exposure's CDS noise, for :func:`negative_jump_counts`: :func:`sample_scatter` of
    :func:`cds_sample` (1 / step**2 of the ramp)."""
    return sample_scatter(cds_sample(ramp, step))


def negative_jump_counts(ramp: np.ndarray, groupdq: np.ndarray, min_drop: float = 0.0, *,
                         jump_bit: int) -> np.ndarray:
    """Number of negative jumps per pixel of one exposure (report §4.1.3): groups flagged
    JUMP_DET whose count is lower than the previous group's by more than ``min_drop``.

    jwst also flags the neighbours of large jumps (``min_jump_to_flag_neighbors``); those flags
    are not jumps of the neighbour, and half of them look "negative" by chance, which would
    make every neighbour of a strong RTN pixel a TELEGRAPH candidate.  Requiring a real drop
    (``calibrate`` uses 3 x the exposure's :func:`difference_scatter`) counts only the pixel's
    own negative jumps.  ``ramp``/``groupdq`` (..., G, y, x); returns int16 (..., y, x).

    Memory: one group plane at a time (two ramp planes and a few plane-sized temporaries, never
    a cube-sized difference or mask), so ``ramp``/``groupdq`` may also be lazy array-likes whose
    ``[..., g, :, :]`` reads one plane (``calibration.recipe.MappedArray``).  Same result as
    ``sum((groupdq[1:] & jump_bit != 0) & (diff(ramp) < -min_drop))``: each difference is the
    same float32 subtraction ``ramp[g] - ramp[g - 1]``."""
    shape = tuple(ramp.shape)
    out = np.zeros(shape[:-3] + shape[-2:], np.int16)
    for lead in np.ndindex(*shape[:-3]):
        prev = np.asarray(ramp[lead + (0,)]) if shape[-3] else None
        for g in range(1, shape[-3]):
            cur = np.asarray(ramp[lead + (g,)])
            with np.errstate(invalid="ignore"):
                hit = (cur - prev) < -min_drop
            hit &= (np.asarray(groupdq[lead + (g,)]) & jump_bit) != 0
            out[lead] += hit
            prev = cur
    return out


def rc_next_flags(groupdq: np.ndarray, bad_bits: int, ramp=None, times=None, *,
                  jump_bit: int = 0, saturated_bit: int = 0,
                  tolerance: float = 0.1) -> np.ndarray:
    """RC input of one exposure (report §4.1.3), packed: bit 0 set where group 2 has any of
    ``bad_bits`` (JUMP_DET | DO_NOT_USE | SATURATED), bit 1 for group 3, bit 3 where group 1
    has ``saturated_bit`` (its count is a floor: issue 21), and (with ``ramp``
    and the groups' ``times``) bit 2 where the pixel is a very hot pixel, not an RC pixel: no
    JUMP_DET in groups 1-3, groups 1 and 2 unsaturated, and group 2 on the line from time 0
    through group 1 (``g2 / g1`` within ``tolerance`` of ``t2 / t1``), so what flags group 3
    is saturation of a linear ramp, not the decaying excess of an RC pixel.  (A hot pixel that
    saturates already in group 2 cannot be told apart from one point: it stays a candidate.)
    ``groupdq``/``ramp`` (G, y, x), read plane by plane; returns uint8 (y, x)."""
    out = np.zeros(groupdq.shape[1:], np.uint8)
    for bit, g in ((0, 1), (1, 2)):
        if g < groupdq.shape[0]:
            out |= ((groupdq[g] & bad_bits) != 0).astype(np.uint8) << bit
    if saturated_bit:
        out |= ((np.asarray(groupdq[0]) & saturated_bit) != 0).astype(np.uint8) << 3
    if ramp is None or groupdq.shape[0] < 3:
        return out
    q = [np.asarray(groupdq[g]) for g in range(3)]
    calm = ((q[0] | q[1] | q[2]) & jump_bit) == 0
    calm &= ((q[0] | q[1]) & saturated_bit) == 0
    g1, g2 = np.asarray(ramp[0], np.float64), np.asarray(ramp[1], np.float64)
    expected = times[1] / times[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        linear = np.abs(g2 / g1 - expected) <= tolerance * expected
    out |= (calm & linear & (g1 > 0)).astype(np.uint8) << 2
    return out


def jump_counts(groupdq: np.ndarray, jump_bit: int) -> np.ndarray:
    """Number of JUMP_DET groups per pixel of one exposure, positive and negative (the ESA RTN
    rule's count); ``groupdq`` (G, y, x) read plane by plane -> int16 (y, x)."""
    out = np.zeros(groupdq.shape[1:], np.int16)
    for g in range(groupdq.shape[0]):
        out += (np.asarray(groupdq[g]) & jump_bit) != 0
    return out


def first_jump_index(groupdq: np.ndarray, jump_bit: int, none: int) -> np.ndarray:
    """0-based index of each pixel's first group with ``jump_bit`` set, ``none`` where there is
    none.  ``groupdq`` (G, y, x) -> int16 (y, x); one plane at a time (no cube temporaries)."""
    out = np.full(groupdq.shape[1:], none, np.int16)
    for g in range(groupdq.shape[0] - 1, -1, -1):
        out[(groupdq[g] & jump_bit) != 0] = g
    return out
