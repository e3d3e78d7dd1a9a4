"""Integrity and security (issue 19): no build from corrupted bytes, names that are data and
never paths, servers on loopback, damaged metadata named and repaired, nothing left behind,
bad values refused."""

import shutil

import numpy as np
import pytest

from nrsdark_dask import cli
from nrsdark_dask.chunksums import CorruptChunk
from nrsdark_dask.store import RampStore, open_dataset, read_block


@pytest.fixture(scope="module")
def damaged_copy(cal_store, tmp_path_factory):
    def make():
        dst = tmp_path_factory.mktemp("damaged") / "d.zarr"
        shutil.copytree(cal_store["path"], dst)
        return dst
    return make


def _flip(chunk, n=100):
    """XOR ``n`` bytes in the middle of a chunk file: same size, other bytes."""
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    for k in range(mid, mid + n):
        data[k] ^= 0x5A
    chunk.write_bytes(bytes(data))


def _one_chunk(store, var, exposure=1):
    return sorted(p for p in (store / var / "c" / str(exposure)).rglob("*") if p.is_file())[0]


@pytest.mark.parametrize("var", ["rate", "ramp", "groupdq"])
def test_a_corrupt_chunk_fails_the_build_in_one_line(damaged_copy, tmp_path, capsys, var):
    store = damaged_copy()
    chunk = _one_chunk(store, var)
    name = RampStore(store).committed()[1]
    _flip(chunk)
    assert RampStore(store).verify() == []  # sizes alone cannot tell
    out = tmp_path / "out"
    capsys.readouterr()
    code = cli.main(["build", "--store", str(store), "--outdir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for part in (f"store {store}", f"{var} of exposure {name}", str(chunk),
                 "does not match its CRC32C", "nrsdark verify"):
        assert part in err, (part, err)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_every_reader_checks_what_it_reads(damaged_copy):
    """xarray (the notebook's path), read_block's fast path, zarr's path (a step), and a
    chunk the manifest lists that is gone."""
    store = damaged_copy()
    chunk = _one_chunk(store, "rate")
    good = open_dataset(store).rate.isel(exposure=0).values  # other exposures stay readable
    assert np.isfinite(good).any()
    _flip(chunk, 4)
    ds = open_dataset(store)
    name = RampStore(store).committed()[1]
    with pytest.raises(CorruptChunk, match=f"rate of exposure {name}: chunk file {chunk} "):
        ds.rate.values
    pos = 1  # the store index of the damaged chunk's exposure
    with pytest.raises(CorruptChunk, match=str(chunk)):
        read_block(store / "rate", (slice(pos, pos + 1), slice(None), slice(None)))
    with pytest.raises(CorruptChunk, match=str(chunk)):
        read_block(store / "rate", (slice(pos, pos + 1), slice(None, None, 2), slice(None)))
    np.testing.assert_array_equal(
        read_block(store / "rate", ([0], slice(None), slice(None)))[0],
        open_dataset(store).rate.sel(exposure=RampStore(store).committed()[0]).values)
    gone = _one_chunk(store, "pixeldq", 2)
    gone.unlink()
    with pytest.raises(CorruptChunk, match="is missing"):
        read_block(store / "pixeldq", (slice(2, 3), slice(None), slice(None)))


def test_unphysical_statistics_publish_nothing(cal_store, tmp_path, monkeypatch, capsys):
    from nrsdark_dask import build as B

    assert B.insane_statistics({"frame_rate": -1.0852e19, "bias_level": 12000.0}) == [
        "frame_rate -1.0852e+19 (expected -100 to 100)"]
    assert B.insane_statistics({"frame_rate": np.nan})[0].startswith("frame_rate nan")
    monkeypatch.setitem(B.SANE, "frame_rate", (50.0, 100.0))  # the real rate (~0.01) is "absurd"
    code = cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not physical, nothing was published: frame_rate" in err
    assert list(tmp_path.iterdir()) == []
