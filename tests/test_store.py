"""The store's commit protocol, without jwst: synthetic exposures, simulated crashes."""

import json

import numpy as np
import pytest
import xarray as xr

from nrsdark_dask.store import (STAGING, RampStore, StoreError, StoreLayout, open_dataset,
                                write_staging)

LAYOUT = StoreLayout(detector="NRS1", family="TRAD", readpatt="NRSRAPID", subarray="SUB512S",
                     ngroups=3, ny=16, nx=512, ny_raw=16, ystart=946, xstart=1, tframe=0.14364,
                     tgroup=0.14364, has_bias=True, tile_y=16, tile_x=256, codec="zstd")


def _exposure(seed):
    rng = np.random.default_rng(seed)
    return {
        "ramp": rng.normal(0, 10, (3, 16, 512)).astype(np.float32),
        "groupdq": (rng.random((3, 16, 512)) < 0.01).astype(np.uint8) * 4,
        "pixeldq": np.zeros((16, 512), np.uint32),
        "rate": rng.normal(0, 1, (16, 512)).astype(np.float32),
        "rate_err": np.ones((16, 512), np.float32),
        "neg_jumps": rng.integers(0, 3, (16, 512)).astype(np.int16),
        "bias_groups": rng.normal(1e4, 5, (2, 16, 512)).astype(np.float32),
    }


def _coords(i):
    return {"date": 1.7e9 + i, "grating": "G140H", "asic_dt": 0.01, "detector": "NRS1",
            "readpatt": "NRSRAPID", "subarray": "SUB512S", "ngroups": 3, "input_kind": "uncal",
            "input_file": f"/x/e{i}.fits", "jwst_version": "3.0.0", "crds_context": "c",
            "references": json.dumps({"mask": "m.fits"})}


@pytest.fixture
def store(tmp_path):
    return RampStore.create(tmp_path / "s.zarr", LAYOUT, provenance={"test": True})


def test_empty_store_opens_tidy(store):
    ds = xr.open_zarr(store.path)
    assert dict(ds.sizes) == {"exposure": 0, "group": 3, "y": 16, "x": 512, "bias_group": 2,
                              "y_raw": 16}
    assert ds.y.values[0] == 945 and ds.x.values[-1] == 511  # full-frame 0-based indices
    np.testing.assert_allclose(ds.group_time.values, [0.14364, 0.28728, 0.43092])
    assert ds.attrs["layout"]["subarray"] == "SUB512S"
    assert ds.groupdq.attrs["flag_meanings"].split()[2] == "JUMP_DET"


def test_commit_makes_whole_exposures_visible_in_order(store):
    data = {f"e{i}.fits": _exposure(i) for i in range(3)}
    with store.writer():
        for i, (name, d) in enumerate(data.items()):
            write_staging(store.path, name, LAYOUT, d)
            assert name not in store.committed()  # staged is not visible
            assert store.commit(name, _coords(i)) == i
    ds = open_dataset(store.path)
    assert list(ds.exposure.values) == list(data)
    for i, (name, d) in enumerate(data.items()):
        for var in d:
            np.testing.assert_array_equal(ds[var].sel(exposure=name).values, d[var])
    assert str(ds.date.values[1])[:4] == "2023"
    assert ds.grating.values.tolist() == ["G140H"] * 3
    assert not (store.path / STAGING).exists()


def test_crash_before_consolidation_is_invisible_and_repaired(store, monkeypatch):
    with store.writer():
        write_staging(store.path, "a.fits", LAYOUT, _exposure(0))
        store.commit("a.fits", _coords(0))
    import nrsdark_dask.store.writer as st

    # crash inside the next commit, after arrays were resized and chunks moved
    monkeypatch.setattr(st, "_consolidate", lambda path: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        with store.writer():
            write_staging(store.path, "b.fits", LAYOUT, _exposure(1))
            store.commit("b.fits", _coords(1))
    monkeypatch.undo()
    ds = open_dataset(store.path)
    assert list(ds.exposure.values) == ["a.fits"]
    assert ds.ramp.shape[0] == 1 and np.isfinite(ds.ramp.values).all()
    with store.writer():  # repair trims the half-committed tail, then commit again works
        write_staging(store.path, "b.fits", LAYOUT, _exposure(1))
        store.commit("b.fits", _coords(1))
    ds = open_dataset(store.path)
    assert list(ds.exposure.values) == ["a.fits", "b.fits"]
    np.testing.assert_array_equal(ds.ramp.values[1], _exposure(1)["ramp"])


def test_writer_lock_is_exclusive_and_stale_locks_are_taken_over(store):
    with store.writer():
        with pytest.raises(StoreError, match="being written"):
            with store.writer():
                pass
    (store.path / ".nrsdark.lock").write_text(json.dumps({"pid": 2**22 + 7, "host":
                                                          __import__("socket").gethostname()}))
    with store.writer():  # dead pid on this host
        pass


def test_layout_mismatch_and_bad_shapes_are_refused(store):
    other = StoreLayout(**{**LAYOUT.__dict__, "detector": "NRS2", "ngroups": 5})
    msg = LAYOUT.mismatches(other)
    assert any("detector NRS2" in m for m in msg) and any("ngroups 5" in m for m in msg)
    calibrated = StoreLayout(**{**LAYOUT.__dict__, "has_bias": False})
    assert "cannot share a store" in LAYOUT.mismatches(calibrated)[0]
    bad = _exposure(0)
    bad["ramp"] = bad["ramp"][:2]
    with pytest.raises(ValueError, match="ramp has shape"):
        write_staging(store.path, "x.fits", LAYOUT, bad)
    with store.writer(), pytest.raises(StoreError, match="already in the store"):
        write_staging(store.path, "y.fits", LAYOUT, _exposure(0))
        store.commit("y.fits", _coords(0))
        write_staging(store.path, "y.fits", LAYOUT, _exposure(0))
        store.commit("y.fits", _coords(0))
