"""The ramp pass's block plan: how many groups of every exposure one task holds on one tile,
from a per-task memory budget (:func:`plan_blocks`), and its estimated peak
(:func:`task_bytes`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from ..store import StoreLayout


DEFAULT_TASK_MEMORY = 1 << 30
"""Per-task budget of the ramp pass (1 GiB): two workers' tasks, the small images and the
interpreter stay under 3 GiB, for any number of exposures or groups."""


@dataclass(frozen=True)
class BlockPlan:
    """Shape of the ramp pass's blocks: ``group_block`` groups of every exposure on one tile
    of the dataset's (y, x) chunks; ``task_bytes`` its estimated peak, against ``budget``."""

    group_block: int
    n_exposures: int
    tile: tuple[int, int]
    task_bytes: int
    budget: int

    def describe(self) -> str:
        return (f"ramp pass: blocks of {self.n_exposures} exposures x {self.group_block} groups "
                f"x {self.tile[0]} x {self.tile[1]} pixels, ~{self.task_bytes / 2**20:.0f} MiB "
                f"a task (budget {self.budget / 2**20:.0f} MiB)")


def task_bytes(n_exp: int, n_groups: int, tile_pixels: int) -> int:
    """Peak bytes of one ramp-pass task: the block's ramp (4 B) and group DQ (1 B) of every
    exposure, the jump flags (1 B per exposure and pixel), and per group and pixel the mean,
    std, cube, ERR (4 B each), count (2 B), group DQ (1 B) and one temporary (4 B)."""
    return tile_pixels * (n_groups * (5 * n_exp + 23) + 3 * n_exp)


def plan_blocks(layout: StoreLayout, n_exp: int, tile: tuple[int, int],
                task_memory: int | None = None) -> BlockPlan:
    """The largest group block (a multiple of the store's group chunk, so no chunk is read
    twice) whose task fits ``task_memory`` bytes; at least one group chunk, with a warning
    when even that does not fit (the store's chunks are too big for the budget: calibrate
    into a store with a smaller ``--tile``)."""
    budget = int(task_memory or DEFAULT_TASK_MEMORY)
    gc, G = layout.groups_per_chunk, layout.ngroups
    pixels = tile[0] * tile[1]
    k = 1
    while k * gc < G and task_bytes(n_exp, (k + 1) * gc, pixels) <= budget:
        k += 1
    gb = min(G, k * gc)
    need = task_bytes(n_exp, gb, pixels)
    if need > budget:
        warnings.warn(f"one ramp-pass task needs ~{need / 2**20:.0f} MiB (one group chunk of "
                      f"{n_exp} exposures on a {tile[0]} x {tile[1]} tile), over the "
                      f"{budget / 2**20:.0f} MiB budget; a store with smaller tiles or group "
                      "chunks would fit", stacklevel=2)
    return BlockPlan(gb, n_exp, tile, need, budget)
