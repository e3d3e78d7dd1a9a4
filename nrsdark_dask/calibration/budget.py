"""Piece sizes from a per-task memory budget.

A piece of each kind peaks at a fixed part (the worker: Python, numpy, jwst; the reference
files and whole-frame arrays that kind reads) plus a part proportional to the pixel-groups it
holds (its data, jwst's working arrays and its temporaries; the steps run as pipeline
members, without jwst's defensive copy of the input:
:func:`nrsdark_dask.calibration.recipe.call_step`).
Both were measured, one piece in a fresh process (its VmHWM), at two sizes each, on full frames
(TRAD 88 groups, IRS2 25 groups, the larger jump slope of the two; jwst 3.0, stcal 1.20;
``benchmarks/bench_tiled.py pieces``): :data:`COSTS`, with 0.1 GB and 15 % added.  :func:`plan_pieces` makes pieces as large as the budget allows (fewer pieces: less of
jwst's fixed cost per step call), no larger than needed to give every worker thread a piece,
and cuts the frame or the ramp evenly.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ..config import parse_bytes

DEFAULT_TASK_MEMORY = "1.5GiB"
"""The default budget of one task, raised for an exposure whose whole-frame pieces need more
(:func:`plan_pieces`; a budget the user gives is never raised)."""
MARGIN_FIXED = 0.1e9
MARGIN_SLOPE = 1.15

# kind: (fixed bytes, bytes per pixel-group held), measured peaks (see the module doc)
COSTS = {
    "early_trad": (0.24e9, 8.7),  # group_scale .. superbias on a row slab (+ halo)
    "early_irs2": (0.48e9, 7.2),  # ... on a group block of the 3200-row raw frame
    "refpix_trad": (0.36e9, 5.0),  # per pixel-group of the block (+ its warm-up group)
    "refpix_irs2": (0.65e9, 19.2),  # per raw pixel-group: jwst's FFT working arrays
    "offset": (0.49e9, 7.6),  # IRS2 b_offset link, per raw pixel-group
    "jump": (0.21e9, 23.8),  # linearity + two-point (float64 differences), slab + halo
    "snowballs": (0.31e9, 1.2),  # the whole GROUPDQ and its jump bits
    "fit": (0.21e9, 7.3),  # ramp_fit's copies of ramp and GROUPDQ
    "bias_trad": (0.55e9, 0.0),  # two raw frames and refpix
    "bias_irs2": (0.99e9, 0.0),  # two raw IRS2 frames and IRS2 refpix (its reference table)
}
MIN_ROWS = 8
MIN_PIECE_BYTES = 64e6
"""Pieces are not cut smaller than this much float32 data (unless the budget says so): below
it jwst's fixed cost per step call (reading reference files, validation; ~0.3 s) outweighs
the work, and a small exposure is best one piece per stage."""


def peak(kind: str, pixel_groups: float) -> int:
    """Predicted peak bytes of one piece of ``kind`` holding ``pixel_groups``."""
    fixed, slope = COSTS[kind]
    return int(fixed + MARGIN_FIXED + MARGIN_SLOPE * slope * pixel_groups)


def _fits(kind: str, budget: int, per_unit: float) -> int:
    """How many units (rows, groups) of ``per_unit`` pixel-groups one piece can hold."""
    fixed, slope = COSTS[kind]
    room = budget - fixed - MARGIN_FIXED
    return int(room // (MARGIN_SLOPE * slope * per_unit)) if room > 0 else 0


@dataclass(frozen=True)
class PiecePlan:
    """How one exposure is cut.  Rows are science rows; groups are counted from 0."""

    slab_rows: int  # early (TRAD) and jump slabs
    group_block: int  # refpix blocks, IRS2 early blocks and offset links
    fit_rows: int  # ramp_fit sub-slabs within one tile row of the store
    budget: int
    peaks: dict = field(default_factory=dict)  # predicted peak bytes per kind of piece

    threads: int = 1  # worker threads the plan was made for: piece counts are multiples

    def slabs(self, ny: int) -> list[tuple[int, int]]:
        return _spans(ny, self.slab_rows, self.threads)

    @staticmethod
    def tile_spans(ny: int, tile_y: int) -> list[tuple[int, int]]:
        """The store's tile rows: one store piece each."""
        return [(y, min(ny, y + tile_y)) for y in range(0, ny, tile_y)]

    def blocks(self, ngroups: int, first_at_least: int = 1) -> list[tuple[int, int]]:
        """Group blocks; the first holds at least ``first_at_least`` groups (IRS2
        saturation's group-2 check needs groups 1-3 together)."""
        out = _spans(ngroups, self.group_block, self.threads)
        while len(out) > 1 and out[0][1] < min(first_at_least, ngroups):
            out = [(0, out[1][1])] + out[2:]
        return out


def _spans(n: int, size: int, threads: int = 1) -> list[tuple[int, int]]:
    """``n`` items in nearly equal consecutive spans of at most ``size``: ``ceil(n / size)``
    of them, rounded up to a multiple of ``threads`` when there are more spans than threads
    (5 blocks on 2 workers leave one idle for a fifth of the stage; 6 do not)."""
    k = max(1, math.ceil(n / max(1, size)))
    if k > threads > 1:
        k = min(n, math.ceil(k / threads) * threads)
    edges = [round(i * n / k) for i in range(k + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def whole_frame_need(layout) -> int:
    """The budget the exposure's pieces that cannot be cut smaller need: snowball flagging
    (the whole GROUPDQ), the bias inputs, the smallest slab and group block."""
    g, ny, nx, raw = layout.ngroups, layout.ny, layout.nx, layout.ny_raw
    irs2 = layout.family == "IRS2"
    first = min(3, g) if irs2 else 1
    return max(peak("snowballs", g * ny * nx), peak("bias_irs2" if irs2 else "bias_trad", 0),
               peak("jump", g * nx * (MIN_ROWS + 2)), peak("fit", g * nx),
               peak("early_irs2", raw * nx * first) if irs2 else
               peak("early_trad", g * nx * (MIN_ROWS + 4)),
               peak("refpix_irs2", raw * nx * first) if irs2 else
               peak("refpix_trad", 2 * ny * nx),
               peak("offset", raw * nx * first) if irs2 else 0)


def plan_pieces(layout, task_memory=None, threads: int = 1) -> PiecePlan:
    """Cut one exposure of ``layout`` (a ``store.StoreLayout``) so that every piece fits
    ``task_memory`` bytes (default :data:`DEFAULT_TASK_MEMORY`, raised to
    :func:`whole_frame_need` where that is more), with at least ``threads`` pieces a stage
    where the frame allows.  A given budget too small for the smallest pieces is a ValueError
    naming the smallest that works."""
    need = whole_frame_need(layout)
    if task_memory:
        budget = parse_bytes(task_memory)
        if budget < need:
            raise ValueError(f"a task memory of {budget / 2**30:.2f} GiB is too small for "
                             f"{layout.ngroups}-group {layout.subarray} {layout.family} "
                             f"exposures: the smallest pieces need ~{need / 2**30:.2f} GiB "
                             "(--task-memory)")
    else:
        budget = max(parse_bytes(DEFAULT_TASK_MEMORY), need)
    g, ny, nx, raw = layout.ngroups, layout.ny, layout.nx, layout.ny_raw
    irs2 = layout.family == "IRS2"
    threads = max(1, threads)
    # row slabs: early (TRAD, +2 rows of halo each side) and jump (+1)
    slab = _fits("jump", budget, g * nx) - 2
    if not irs2:
        slab = min(slab, _fits("early_trad", budget, g * nx) - 4)
    slab = min(slab, max(math.ceil(ny / threads), int(MIN_PIECE_BYTES // (4 * nx * g))))
    slab = max(MIN_ROWS, min(slab, ny))
    # group blocks: IRS2 early, offset and refpix on the raw frame; TRAD refpix (+ warm-up)
    if irs2:
        block = min(_fits(k, budget, raw * nx) for k in ("early_irs2", "offset", "refpix_irs2"))
    else:
        block = _fits("refpix_trad", budget, ny * nx) - 1
    block = min(block, max(math.ceil(g / threads), int(MIN_PIECE_BYTES // (4 * raw * nx))))
    block = max(min(3, g) if irs2 else 1, min(block, g))
    fit = max(1, min(_fits("fit", budget, g * nx), layout.tile_y))
    peaks = {
        "early": peak("early_irs2", raw * nx * block) if irs2 else
        peak("early_trad", g * nx * (slab + 4)),
        "refpix": max(peak("refpix_irs2", raw * nx * block), peak("offset", raw * nx * block))
        if irs2 else peak("refpix_trad", ny * nx * (block + 1)),
        "jump": peak("jump", g * nx * (slab + 2)),
        "snowballs": peak("snowballs", g * ny * nx),
        "fit": peak("fit", g * nx * fit),
        "bias": peak("bias_irs2" if irs2 else "bias_trad", 0),
    }
    return PiecePlan(slab_rows=slab, group_block=block, fit_rows=fit,
                     budget=budget, peaks=peaks, threads=threads)


def scratch_bytes(layout) -> int:
    """Disk one exposure in flight needs in the store's staging area: its scratch cubes
    (:class:`.pieces.Exposure`: raw-layout data and flags before refpix, then the refpix
    output, the calibrated ramp and three GROUPDQ stages) plus its staged store chunks."""
    pix = layout.ngroups * layout.nx
    cubes = pix * (layout.ny_raw * (4 + 1) + layout.ny * (4 + 4 + 1 + 1)) \
        + (layout.ny_raw + 2 * layout.ny) * layout.nx * 4
    if layout.family == "IRS2":
        cubes += pix * layout.ny * 1 + layout.ny * layout.nx * 4
    staged = pix * layout.ny * 5 + layout.ny * layout.nx * 24 + 2 * layout.ny_raw * layout.nx * 4
    return int(cubes + staged)
