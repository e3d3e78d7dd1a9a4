"""Whole-exposure quantities handed to jwst's and stcal's own code when it runs on a piece.

Three places in detector1 look at the whole ramp or the whole frame
(``docs/commands/calibrate.md`` lists the pieces around them), and a fourth is where most of
its avoidable work is.  A piece computes them first, over the whole exposure, and hands them in
here; jwst's and stcal's code then does all the work, unchanged and uncopied.  Each hook is a
thin wrapper, installed once, that does nothing unless the calling thread asked for it (a
thread-local setting), so pieces of different exposures can run side by side in one worker, and
jwst called anywhere else in the process behaves as stock.

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
   most of detector1's avoidable work: snowball flagging measures every connected region of
   every group's jump flags (skimage ``label`` and one ``regionprops`` per region, in
   Python), and keeps only the few that hold a saturation centre or sit near the edge.
   :func:`snowball_filter` answers each call from the same plane holding only the regions
   that could change the result (:mod:`.regions`, with the proof that the answer is
   stcal's), measured by stcal's own ``find_ellipses``.  It relies on the calls of a group
   coming as stcal 1.20 makes them (two saturation planes, then the jump plane), and checks
   each call against that: any other call fails the exposure (:class:`SnowballFilter`).

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
            regions = getattr(_local, "regions", None)
            if regions is None:
                return original_find(dqplane, bitmask, min_area)
            return regions.find(dqplane, bitmask, min_area, original_find)

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


class SnowballError(RuntimeError):
    """Snowball flagging asked ``find_ellipses`` in a way the filter was not proved for."""


class SnowballFilter:
    """One ``flag_large_events`` call on ``gdq`` (the 4-D group DQ it is given, which it
    updates in place), answered as stock (module doc, item 4; :mod:`.regions`).

    stcal 1.20 asks three planes per group g = 1, 2, ... of each integration, in this order:
    the next group's new saturation (N), this group's (S), this group's jump flags (J).  At
    the first call of a group the filter finds the regions of all three from ``gdq`` and has
    stcal measure J's candidates; N and S are then answered against those jump ellipses, and
    the J call gets them.  Each call is checked against that order: N and S must equal the
    planes recomputed from ``gdq`` (stcal's N of the last group is stale and unused: it is
    not checked), J must be ``gdq``'s own plane of group g with the flags it had at the
    group's first call.  A call that does not match raises :class:`SnowballError`: the
    exposure fails instead of getting a silently different GROUPDQ."""

    def __init__(self, jump_data, gdq: np.ndarray):
        from .regions import RegionCount

        self.gdq = gdq
        self.sat, self.jump = int(jump_data.fl_sat), int(jump_data.fl_jump)
        self.min_sat_area, self.min_jump_area = jump_data.min_sat_area, jump_data.min_jump_area
        self.edge_size = int(jump_data.edge_size)
        self.extend_above = float(jump_data.min_sat_radius_extend)
        self.calls = 0
        self.count = RegionCount()
        self._group: dict = {}  # what the group's first call found

    def _new_sat(self, cube, g) -> np.ndarray:
        """stcal's new saturation of group g: SATURATED now and not in g - 1 (as its
        ``current_sat * not_prev_sat``: the flag's value or 0)."""
        return np.bitwise_and(cube[g], self.sat) & ~np.bitwise_and(cube[g - 1], self.sat)

    def find(self, plane, bitmask, min_area, find_ellipses):
        nints, ngroups = self.gdq.shape[:2]
        integration, k = divmod(self.calls, 3 * (ngroups - 1))
        group, role = 1 + k // 3, k % 3
        self.calls += 1
        if integration >= nints:
            raise SnowballError(f"call {self.calls} after the last group")
        cube = self.gdq[integration]
        if role == 0:
            self._start(cube, group, find_ellipses)
            if self._group["N"] is None:  # the last group: stcal's stale plane, unused
                from .regions import find_regions

                self._group["N regions"] = find_regions(np.bitwise_and(plane, bitmask))
        here = self._group
        if role < 2:
            if bitmask != self.sat or min_area != self.min_sat_area:
                raise SnowballError(f"call {self.calls} (group {group}) is not for saturation")
            expected = here["N"] if role == 0 else here["S"]
            if expected is not None and not _same(plane, expected):
                raise SnowballError(f"group {group}: the {'next group' if role == 0 else 'group'}"
                                    "'s new saturation is not what the group DQ gives")
            sats = here["N regions"] if role == 0 else here["S regions"]
            from .regions import saturation_candidates

            keep = saturation_candidates(sats, here["J answer"],
                                         self.extend_above if role == 1 else None)
            return self._measure(sats, keep, bitmask, min_area, find_ellipses, "saturation")
        own = cube[group]
        if bitmask != self.jump or min_area != self.min_jump_area or plane.shape != own.shape \
                or plane.__array_interface__["data"][0] != own.__array_interface__["data"][0] \
                or not _same(np.bitwise_and(plane, bitmask), here["J"]):
            raise SnowballError(f"call {self.calls} is not group {group}'s jump plane as it was")
        return list(here["J answer"])

    def _start(self, cube, g, find_ellipses):
        """Group g's first call: the regions of N, S and J, and stcal's ellipses of J's
        candidates (regions module doc, C)."""
        from .regions import find_regions, jump_candidates

        last = g == cube.shape[0] - 1
        n_plane = None if last else self._new_sat(cube, g + 1)
        s_plane = self._new_sat(cube, g)
        j_plane = np.bitwise_and(cube[g], self.jump)
        # N of the last group is stcal's stale plane: found when it is asked (and unused)
        here = {"N": n_plane, "S": s_plane, "J": j_plane, "S regions": find_regions(s_plane),
                "N regions": None if last else find_regions(n_plane)}
        jumps = find_regions(j_plane)
        sats = [here["S regions"]] + ([] if last else [here["N regions"]])
        keep = jump_candidates(jumps, sats, self.min_jump_area, self.edge_size,
                               j_plane.shape[0])
        self._group = here
        here["J answer"] = self._measure(jumps, keep, self.jump, self.min_jump_area,
                                         find_ellipses, "jump")

    def _measure(self, regions, keep, bitmask, min_area, find_ellipses, kind):
        """stcal's ellipses of the regions ``keep``, in one plane or one plane each
        (:func:`.regions.measuring_planes`); none kept: ``[]``, what stcal gives for an empty
        plane."""
        from .regions import measuring_planes

        self.count.add(kind, regions.n, int(keep.sum()))
        out = []
        for mask in measuring_planes(regions, keep):
            out += find_ellipses(regions.plane(mask) * np.uint8(bitmask), bitmask, min_area)
        return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Two planes equal byte for byte (compared as 8-byte words where they allow)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    a, b = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    if a.dtype.itemsize == 1 and a.size % 8 == 0:
        a, b = a.view(np.uint64), b.view(np.uint64)
    return bool(np.array_equal(a, b))


def snowball_filter(jump_data, gdq: np.ndarray) -> _Setting:
    """Within this block, stcal's ``flag_large_events(gdq, ...)`` measures only the regions
    that can change its result (module doc, item 4).  Only with
    ``jump_data.sat_required_snowball`` (otherwise every jump ellipse is a snowball).  The
    value is the :class:`SnowballFilter`, with its counts."""
    if not jump_data.sat_required_snowball:
        raise ValueError("the snowball filter needs sat_required_snowball")
    return _Setting("regions", SnowballFilter(jump_data, gdq))


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
