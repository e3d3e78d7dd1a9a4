"""Whole-exposure quantities handed to jwst's and stcal's own code when it runs on a piece.

Three places in detector1 look at the whole ramp or the whole frame
(``shared/docs/TILED_CALIBRATION.md``).  A piece computes them first, over the whole exposure,
and hands them in here; jwst's and stcal's code then does all the work, unchanged and uncopied.
Each hook is a thin wrapper, installed once, that does nothing unless the calling thread asked
for it (a thread-local setting), so pieces of different exposures can run side by side in one
worker, and jwst called anywhere else in the process behaves as stock.

1. **IRS2 ``b_offset``** (``jwst.refpix.irs2_subtract_reference.subtract_reference``): the
   per-pixel mean over all groups, subtracted before the Fourier correction and added back
   after it, is the only thing that ties the groups of an IRS2 correction together.  A group
   block sees only its own groups, so :func:`irs2_offset` hands in the whole-ramp value: the
   data the wrapper passes on is an ndarray subclass whose ``sum(axis=0, dtype=float64)``
   returns the whole-ramp sum, so ``sum / ngroups`` inside jwst is the stock ``b_offset``.
   :func:`irs2_capture` is the other half: it runs jwst's ``correct_model`` on a block up to
   the point where ``subtract_reference`` would start, and adds that block's data (after
   jwst's own bad-reference replacement and clobbering, detector orientation) to a float64
   running sum, one group after the other: the same additions, in the same order, as numpy's
   ``sum(axis=0)`` over the whole ramp (a reduction over the outer axis accumulates group by
   group), so the sum is bit-identical.
2. **All-DO_NOT_USE groups** (``stcal.jump.twopoint_difference.groups_all_set_dnu``): the jump
   detector counts the groups whose every pixel is DO_NOT_USE; on a row slab that count would
   be the slab's.  :func:`dnu_groups` hands in the whole frame's answer as a (1, G, 1, 1)
   group-DQ stand-in with DO_NOT_USE on exactly the all-DO_NOT_USE groups, which stcal's own
   function then counts.
3. **After-jump thresholds** (``stcal.jump.jump.detect_jumps_data``): converted from DN to
   electrons with ``nanmedian(gain)`` of the data it is given; :class:`WholeFrameJumpData`
   fixes them to the whole frame's median (a JumpData whose ``after_jump_flag_e1/e2`` ignore
   the slab's value).  With the recipe's thresholds of 0 this changes nothing, but it is exact
   for any.

4. **Snowball regions** (``stcal.jump.jump.find_ellipses``): not a whole-frame quantity but
   the serial bottleneck: snowball flagging walks the groups in order, and for each it finds
   the connected regions of the new saturation and of the jump flags (``skimage`` labels and
   region moments), 90 % of its time with realistic cosmic rays.  ``find_ellipses`` is a pure
   function of which pixels of its plane carry its flag, so pieces find the regions of every
   plane it will be asked about (from the flags after two-point detection) for blocks of
   groups in parallel, with stcal's own function; :func:`known_regions` then answers a call
   from them when, and only when, the plane it is given has exactly those flags (compared bit
   for bit: extending an earlier snowball's saturated core changes some groups' flags, and
   those are found again by stcal).

The equality tests (``tests/test_tiled.py``) compare every array with stock ``run_detector1``;
they are what notices a jwst or stcal release that moves these places.
"""

from __future__ import annotations

import threading

import numpy as np

_local = threading.local()
_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Put the wrappers in place (idempotent; pieces call it before running steps)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from jwst.refpix import irs2_subtract_reference as irs2
        from stcal.jump import twopoint_difference as twopt

        original_subtract = irs2.subtract_reference
        original_dnu = twopt.groups_all_set_dnu

        def subtract_reference(data0, *args, **kwargs):
            mode = getattr(_local, "irs2", None)
            if mode is None:
                return original_subtract(data0, *args, **kwargs)
            if mode[0] == "capture":
                acc = mode[1]
                for g in range(data0.shape[0]):
                    acc += data0[g]
                ny = data0.shape[1]
                return data0[..., data0.shape[2] - ny:]  # correct_model's shape; not used
            return original_subtract(_RampSum.of(data0, mode[1]), *args, **kwargs)

        def groups_all_set_dnu(nints, ngroups, gdq, twopt_p):
            whole = getattr(_local, "dnu", None)
            if whole is not None:
                gdq = whole
            return original_dnu(nints, ngroups, gdq, twopt_p)

        from stcal.jump import jump

        original_find = jump.find_ellipses

        def find_ellipses(dqplane, bitmask, min_area):
            known = getattr(_local, "regions", None)
            if known is not None:
                found = known.lookup(dqplane, bitmask, min_area)
                if found is not None:
                    return found
            return original_find(dqplane, bitmask, min_area)

        irs2.subtract_reference = subtract_reference
        twopt.groups_all_set_dnu = groups_all_set_dnu
        jump.find_ellipses = find_ellipses
        _installed = True


class _RampSum(np.ndarray):
    """``data0`` whose ``sum(axis=0, dtype=float64)`` is the whole ramp's (see module doc)."""

    _ramp_sum = None

    @classmethod
    def of(cls, data0: np.ndarray, ramp_sum) -> _RampSum:
        out = data0.view(cls)
        out._ramp_sum = ramp_sum
        return out

    def __array_finalize__(self, obj):
        self._ramp_sum = None  # views (reshape, transpose) are plain from here on

    def sum(self, axis=None, dtype=None, out=None, **kwargs):
        if self._ramp_sum is not None and axis == 0 and dtype == np.float64:
            return self._ramp_sum
        return np.asarray(self).sum(axis=axis, dtype=dtype, out=out, **kwargs)


class _Quotient:
    """A whole-ramp sum that divides into the whole-ramp mean (``sum / ngroups`` inside jwst
    becomes ``sum / n_all`` computed the stock way)."""

    def __init__(self, total: np.ndarray, ngroups: int):
        self.total, self.ngroups = total, ngroups

    def __truediv__(self, _block_ngroups):
        return self.total / float(self.ngroups)


class _Setting:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        install()
        self.before = getattr(_local, self.name, None)
        setattr(_local, self.name, self.value)
        return self.value

    def __exit__(self, *exc):
        setattr(_local, self.name, self.before)


def irs2_capture(acc: np.ndarray) -> _Setting:
    """Within this block, ``subtract_reference`` adds each group of its input to ``acc``
    (float64, detector orientation (2048, 3200)) and returns without correcting."""
    return _Setting("irs2", ("capture", acc))


def irs2_offset(ramp_sum: np.ndarray, ngroups: int) -> _Setting:
    """Within this block, ``subtract_reference`` uses the whole ramp's ``b_offset``:
    ``ramp_sum`` (float64, detector orientation) over ``ngroups`` groups."""
    return _Setting("irs2", ("offset", _Quotient(ramp_sum, ngroups)))


def dnu_groups(all_dnu: np.ndarray, dnu_flag: int) -> _Setting:
    """Within this block, the jump detector counts the groups flagged in ``all_dnu`` (bool
    (G,): every pixel of the whole frame DO_NOT_USE) as its all-DO_NOT_USE groups."""
    stand_in = (np.asarray(all_dnu, bool) * np.uint8(dnu_flag)).astype(np.uint8)
    return _Setting("dnu", stand_in[None, :, None, None])


def region_key(plane: np.ndarray, bitmask: int, min_area: float) -> tuple:
    """What ``find_ellipses(plane, bitmask, min_area)`` depends on: the pixels carrying
    ``bitmask`` (packed bits, and their digest to look them up by)."""
    import hashlib

    bits = np.packbits(np.asarray(plane & bitmask) != 0)
    return (int(bitmask), float(min_area), hashlib.sha1(bits).hexdigest(), plane.shape), bits


class _KnownRegions:
    def __init__(self, found: list):
        self.table = {key: (bits, ellipses) for key, bits, ellipses in found}
        self.used = self.asked = 0

    def lookup(self, plane, bitmask, min_area):
        key, bits = region_key(plane, bitmask, min_area)
        self.asked += 1
        hit = self.table.get(key)
        if hit is None or not np.array_equal(hit[0], bits):
            return None
        self.used += 1
        return list(hit[1])


def find_regions(gdq: np.ndarray, jump_data, find_ellipses) -> list:
    """``(key, bits, regions)`` of every plane snowball flagging asks about for the groups of
    ``gdq`` (G, y, x) after its first (which is only the group before them): each group's new
    saturation (``SATURATED`` now and not in the group before, computed as stcal does) and its
    jump flags, with ``jump_data``'s flags and minimum areas.  ``find_ellipses``: stcal's."""
    sat, jump = jump_data.fl_sat, jump_data.fl_jump
    out = []
    for i in range(1, len(gdq)):
        new_sat = np.bitwise_and(gdq[i], sat) * np.logical_not(np.bitwise_and(gdq[i - 1], sat))
        for plane, flag, area in ((new_sat, sat, jump_data.min_sat_area),
                                  (gdq[i], jump, jump_data.min_jump_area)):
            key, bits = region_key(plane, flag, area)
            out.append((key, bits, find_ellipses(plane, flag, area)))
    return out


def known_regions(found: list) -> _Setting:
    """Within this block, stcal's ``find_ellipses`` answers from ``found``: ``(key, bits,
    ellipses)`` triples (:func:`region_key` of a plane and what stcal found on it), for any
    plane with exactly those flagged pixels."""
    return _Setting("regions", _KnownRegions(found))


def whole_frame_jump_data(jump_data, gain_median: float):
    """``jump_data`` (stcal JumpData) whose after-jump thresholds use ``gain_median``, the
    whole frame's ``nanmedian(gain)``, whatever the slab's gain."""
    jump_data.__class__ = _jump_data_class(type(jump_data))
    jump_data._whole_gain_median = gain_median
    return jump_data


_JUMP_CLASSES: dict = {}


def _jump_data_class(base):
    if base in _JUMP_CLASSES:
        return _JUMP_CLASSES[base]
    if getattr(base, "_nrsdark_whole_frame", False):
        return base

    def threshold(dn_name):
        def get(self):
            return getattr(self, dn_name) * self._whole_gain_median

        def set_(self, value):  # detect_jumps_data's slab-median value: ignored
            pass

        return property(get, set_)

    cls = type("WholeFrameJumpData", (base,), {
        "_nrsdark_whole_frame": True,
        "after_jump_flag_e1": threshold("after_jump_flag_dn1"),
        "after_jump_flag_e2": threshold("after_jump_flag_dn2"),
    })
    _JUMP_CLASSES[base] = cls
    return cls
