"""Nothing lost, nothing silently wrong (issue 11), store side: the OS lock, chunk manifests
that find deleted and truncated chunks, products independent of the order of arrival, and
stores that are created whole or not at all."""

import json
import multiprocessing as mp
import shutil
import socket
import time

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.build import build
from nrsdark_dask.store import RampStore, StoreError, open_dataset, read_block

from conftest import copy_store
from test_store import LAYOUT, _coords, _exposure


def _hold_lock(path, barrier, out, hold_s):
    barrier.wait()
    try:
        with RampStore(path).writer():
            t0 = time.monotonic()
            time.sleep(hold_s)
            out.put((t0, time.monotonic()))
    except StoreError:
        out.put(None)


def test_two_takers_of_a_dead_owners_lock_never_both_hold_it(tmp_path):
    """A lock file left by a dead process, and 6 processes released at once: at any moment at
    most one holds the lock (before flock, 10 of 40 such trials had two holders)."""
    store = RampStore.create(tmp_path / "s.zarr", LAYOUT, provenance={})
    ctx = mp.get_context("fork")
    holders = 0
    for _ in range(5):
        (store.path / ".nrsdark.lock").write_text(json.dumps({"pid": 2**22 + 7,
                                                               "host": socket.gethostname()}))
        barrier, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_hold_lock, args=(store.path, barrier, out, 0.3))
                 for _ in range(6)]
        for p in procs:
            p.start()
        got = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join()
        spans = sorted(g for g in got if g)
        holders += len(spans)
        assert spans, "nobody took the dead owner's lock"
        for (a0, a1), (b0, _) in zip(spans, spans[1:]):
            assert b0 >= a1, "two processes held the store's lock at once"
    assert holders >= 5
    with store.writer():  # and it is free again afterwards
        pass


def test_a_deleted_exposure_chunk_is_found_and_refused(damaged_copy, tmp_path, capsys):
    store = damaged_copy()
    assert RampStore(store).verify(checksums=True) == []
    assert cli.main(["verify", "--store", str(store)]) == 0
    shutil.rmtree(store / "ramp" / "c" / "2")  # one exposure's ramp chunks gone
    name = RampStore(store).committed()[2]
    capsys.readouterr()
    assert cli.main(["verify", "--store", str(store), "--quick"]) == 2
    out = capsys.readouterr()
    assert f"{name}: ramp chunk" in out.out and "is missing" in out.out
    code = cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the store is damaged" in err and name in err
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_truncated_and_corrupt_chunks(damaged_copy, capsys):
    store = damaged_copy()
    chunk = sorted((store / "ramp" / "c" / "1").rglob("*"))[-1]
    data = chunk.read_bytes()
    chunk.write_bytes(data[:1000])  # truncated
    problems = RampStore(store).verify()
    assert len(problems) == 1 and "bytes" in problems[0] and str(chunk) in problems[0]
    with pytest.raises(StoreError, match=f"chunk file {chunk} is 1000 bytes"):
        read_block(store / "ramp", (slice(1, 2), slice(None), slice(0, 64), slice(0, 2048)))
    flipped = bytearray(data)
    flipped[100] ^= 0xFF
    chunk.write_bytes(bytes(flipped))  # same size, other bytes: only the checksum tells
    assert RampStore(store).verify() == []
    problems = RampStore(store).verify(checksums=True)
    assert len(problems) == 1 and "checksum" in problems[0]
    assert cli.main(["verify", "--store", str(store)]) == 2


def test_same_inputs_in_any_order_give_identical_files(cal_store, tmp_path):
    """The exposures committed in two different orders (as a resumed calibrate can): the
    datasets open in one order (by date) and the files are bit-identical."""
    a = copy_store(cal_store["path"], tmp_path / "a.zarr", order=[0, 1, 2, 3])
    b = copy_store(cal_store["path"], tmp_path / "b.zarr", order=[2, 0, 3, 1])
    assert RampStore(a).committed() != RampStore(b).committed()
    assert list(open_dataset(a).exposure.values) == list(open_dataset(b).exposure.values)
    fa = build(a, tmp_path / "fa")["files"]
    fb = build(b, tmp_path / "fb")["files"]
    for reftype in fa:
        with fits.open(fa[reftype]) as x, fits.open(fb[reftype]) as y:
            for hx, hy in zip(x[1:], y[1:]):
                if hx.is_image:
                    np.testing.assert_array_equal(hx.data, hy.data, err_msg=f"{reftype} "
                                                  f"{hx.name}")


def test_store_creation_is_whole_or_nothing(tmp_path, monkeypatch):
    import nrsdark_dask.store.writer as st

    def fail(path):
        raise OSError("disk went away")

    monkeypatch.setattr(st, "_consolidate", fail)
    with pytest.raises(OSError, match="disk went away"):
        RampStore.create(tmp_path / "s.zarr", LAYOUT, provenance={})
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary folder
    monkeypatch.undo()
    store = RampStore.create(tmp_path / "s.zarr", LAYOUT, provenance={})
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]
    with store.writer():
        st.write_staging(store.path, "a", LAYOUT, _exposure(0))
        store.commit("a", _coords(0))
    assert json.loads((store.path / "nrsdark_chunks" / "0.json").read_text())["ramp"]


@pytest.mark.parametrize("tile", ["-256x256", "0x0", "100x", "256", "256x256x2", "axb"])
def test_bad_tiles_are_refused_before_a_store_exists(cal_manifest, tmp_path, capsys, tile):
    with pytest.raises(SystemExit) as exc:
        cli.main(["calibrate", str(cal_manifest), "--store", str(tmp_path / "s.zarr"),
                  f"--tile={tile}", "--scheduler", "sync"])
    assert exc.value.code == 2 and "ROWSxCOLUMNS" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


def test_the_layout_refuses_bad_chunking_from_python_too():
    from nrsdark_dask.store import StoreLayout

    h = {"READPATT": "NRSRAPID", "SUBSIZE2": 64, "SUBSIZE1": 2048, "DETECTOR": "NRS1",
         "SUBARRAY": "SUBS200A1", "NGROUPS": 10, "SUBSTRT2": 1041, "SUBSTRT1": 1,
         "TFRAME": 1.0, "TGROUP": 1.0}
    for tile, gc in (((0, 0), None), ((-256, 256), None), ((256,), None), ((256, 256), 0)):
        with pytest.raises(ValueError, match="positive integer"):
            StoreLayout.from_header(h, has_bias=True, tile=tile, group_chunk=gc)
    with pytest.raises(ValueError, match="unknown codec"):
        StoreLayout.from_header(h, has_bias=True, codec="lzma")


def test_chunking_options_on_an_existing_store_must_be_its_own(cal_store, cal_manifest,
                                                               capsys):
    before = RampStore(cal_store["path"]).committed()
    for opts, what in ((["--tile", "128x128"], "--tile 128x128 (the store has 64x256)"),
                       (["--codec", "zstd"], "--codec zstd (the store has none)"),
                       (["--group-chunk", "3"], "--group-chunk 3 (the store has 10)")):
        code = cli.main(["calibrate", str(cal_manifest), "--store", str(cal_store["path"]),
                         "--scheduler", "sync", *opts])
        err = capsys.readouterr().err
        assert code == 2 and what in err, err
    # the store's own values (as a new store would clamp them) are fine: nothing to do
    code = cli.main(["calibrate", str(cal_manifest), "--store", str(cal_store["path"]),
                     "--scheduler", "sync", "--tile", "256x256", "--codec", "none"])
    assert code == 0 and "0 committed, 4 already there" in capsys.readouterr().out
    assert RampStore(cal_store["path"]).committed() == before
