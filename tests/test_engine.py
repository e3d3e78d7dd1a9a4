"""The reduction engine: every ramp chunk read once and clipped once, group blocks from a
memory budget give the same files, and the statistics come from the same computation."""

import collections
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr.storage

from nrsdark_dask import kernels as K
from nrsdark_dask.config import parse_bytes
from nrsdark_dask.reduction import budget
from nrsdark_dask.reduction import graph as R
from nrsdark_dask.stages.build import build
from nrsdark_dask.store import StoreLayout, open_dataset, read_block
from nrsdark_dask.store import reader as store_module

from conftest import copy_store


@pytest.fixture(scope="module")
def blocked(cal_store, tmp_path_factory):
    """cal_store (4 exposures x 10 groups x 64 x 2048) with ramps chunked every 3 groups."""
    return copy_store(cal_store["path"], tmp_path_factory.mktemp("blocked") / "b.zarr", 3)


class _Count:
    """Counts chunk-file reads of the store (``store.chunk_read_hook`` of the fast path, and
    zarr's LocalStore.get for anything read through zarr) and fused-kernel calls."""

    def __init__(self, monkeypatch):
        self.reads = collections.Counter()
        self.calls = []
        get, kernel = zarr.storage.LocalStore.get, K.clipped_ramp
        counter = self

        async def counting_get(self, key, *args, **kwargs):
            counter.reads[str(Path(self.root) / key)] += 1
            return await get(self, key, *args, **kwargs)

        def counting_kernel(ramp, gdq, **kwargs):
            counter.calls.append(ramp.shape)
            return kernel(ramp, gdq, **kwargs)

        def hook(path):
            counter.reads[str(path)] += 1

        monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
        monkeypatch.setattr(store_module, "chunk_read_hook", hook)
        monkeypatch.setattr(K, "clipped_ramp", counting_kernel)

    def chunk_reads(self, store, var):
        """{chunk file of ``var`` relative to ``store``: number of reads}."""
        prefix = str(Path(store) / var / "c") + "/"
        return {k[len(str(store)) + 1:]: n for k, n in self.reads.items()
                if k.startswith(prefix)}


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_each_ramp_chunk_is_read_once_and_clipped_once(blocked, tmp_path, monkeypatch, scheduler):
    ds = open_dataset(blocked)
    E, G, Y, X = ds.ramp.shape
    n_chunks = {v: int(np.prod([len(c) for c in getattr(ds, v).data.chunks]))
                for v in ("ramp", "groupdq")}
    count = _Count(monkeypatch)
    # a budget that fits 6 groups (2 group chunks) of the 4 exposures on a 64 x 256 tile
    task_budget = budget.task_bytes(E, 6, 64 * 256)
    out = build(blocked, tmp_path, scheduler=scheduler, task_memory=task_budget)
    assert "6 groups" in out["plan"]
    for var in ("ramp", "groupdq"):
        reads = count.chunk_reads(blocked, var)
        # every chunk file on disk read exactly once (all-fill chunks are not on disk)
        on_disk = {str(p.relative_to(blocked)) for p in (blocked / var / "c").rglob("*")
                   if p.is_file()}
        assert set(reads) == on_disk, var
        assert set(reads.values()) == {1}, (var, collections.Counter(reads.values()))
        assert len(on_disk) <= n_chunks[var]
    for var in ("rate", "group1", "rc_next", "neg_jumps", "pixeldq", "bias_groups"):
        assert set(count.chunk_reads(blocked, var).values()) == {1}, var
    # one kernel call per (group block, tile), and every (exposure, group, pixel) clipped once
    blocks = -(-G // 6) * len(ds.ramp.data.chunks[2]) * len(ds.ramp.data.chunks[3])
    assert len(count.calls) == blocks
    assert sum(np.prod(s) for s in count.calls) == E * G * Y * X
    assert all(s[0] == E for s in count.calls)
    assert out["stats"]["n_exposures"] == E and out["stats"]["n_hot"] > 0


def test_group_blocks_give_the_same_products(cal_store, blocked):
    """Blocks of 3 groups (first jumps carried in from the ingest) equal one block of 10."""
    whole = R.build_products(open_dataset(cal_store["path"]))
    small = R.build_products(open_dataset(blocked), task_memory=1)
    assert whole.plan.group_block == 10 and small.plan.group_block == 3
    names = ("dark_cube", "dark_err", "average_ramp_count", "dark_dq", "average_ramp", "mask",
             "superbias", "superbias_dq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = dask.compute(*[whole[n].data for n in names], whole.stats)
        b = dask.compute(*[small[n].data for n in names], small.stats)
    for name, x, y in zip(names, a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)
    for k, v in a[-1].items():
        np.testing.assert_array_equal(v, b[-1][k], err_msg=k)


def test_budget_sets_the_group_block_not_the_data():
    lay = StoreLayout(detector="NRS1", family="TRAD", readpatt="NRSRAPID", subarray="FULL",
                      ngroups=88, ny=2048, nx=2048, ny_raw=2048, ystart=1, xstart=1,
                      tframe=10.737, tgroup=10.737, has_bias=True, group_chunk=30, schema=2)
    tile = (256, 256)
    for n_exp in (5, 25, 60):
        plan = budget.plan_blocks(lay, n_exp, tile, parse_bytes("1GiB"))
        assert plan.task_bytes <= 2**30 and plan.group_block % 30 in (0, 28)
    assert budget.plan_blocks(lay, 5, tile, 2**30).group_block == 88  # small data: one block
    assert budget.plan_blocks(lay, 60, tile, 2**30).group_block == 30
    with pytest.warns(UserWarning, match="over the"):
        budget.plan_blocks(lay, 200, tile, 2**30)  # one group chunk of 200 inputs does not fit
    assert parse_bytes("512MB") == 512e6 and parse_bytes("2GiB") == 2 * 2**30
    with pytest.raises(ValueError, match="size"):
        parse_bytes("lots")


def test_fast_block_reads_equal_zarr(blocked):
    """store.read_block (chunk files read into place) equals zarr's own indexing, for aligned
    and unaligned blocks, compressed and uncompressed arrays, and missing (fill) chunks."""
    for var, index in [("ramp", np.s_[:, 3:6, 0:64, 256:512]),
                       ("ramp", np.s_[1:3, 2:9, 5:60, 100:1000]),
                       ("groupdq", np.s_[:, 0:10, :, 0:2048]),
                       ("rate", np.s_[:, 10:20, 2000:2048]),
                       ("first_jump", np.s_[:, :, :])]:
        want = zarr.open_array(blocked / var, mode="r")[index]
        np.testing.assert_array_equal(read_block(blocked / var, index), want, err_msg=var)


def test_progress_lines_in_logs():
    """Not a terminal: plain progress lines (label, done/total tasks, percent, seconds)."""
    import io
    import time

    import dask.array as da

    from nrsdark_dask.cluster import local_progress

    def slow(x):
        time.sleep(0.2)
        return x

    out = io.StringIO()
    with local_progress("build", stream=out, every_s=0.3, min_s=0.1):
        da.ones(8, chunks=1).map_blocks(slow).sum().compute(scheduler="threads", num_workers=2)
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("build: ") and "tasks (" in line for line in lines)
