"""Tiled calibration (nrsdark_dask.tiled): the store it writes is bit for bit the store that
jwst's whole-exposure run writes, on the same inputs and references: every variable, every
per-exposure coordinate, the chunk manifests; with cosmic rays and a snowball on the slab
edges, on threads and on a real cluster that loses a worker in the middle of a slab.

CI: a TRAD subarray (ALLSLITS) and a 5-group IRS2 full frame.  Slow: the issue's full frames
(TRAD 20 and 88 groups, IRS2 25 groups on NRS1 and NRS2)."""


import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import instrument as inst
from nrsdark_dask.calibrate import calibrate
from nrsdark_dask.select import select_inputs, write_manifest
from nrsdark_dask.simulate import SimConfig, simulate_dataset
from nrsdark_dask.store import RampStore, open_dataset
from nrsdark_dask.tiled.plan import PiecePlan

JUMP, SAT = inst.DQ["JUMP_DET"], inst.DQ["SATURATED"]
SLAB = 32  # rows of the test's slabs: edges at 32, 64, 96, ...
EDGE_PLAN = PiecePlan(slab_rows=SLAB, group_block=3, region_block=4, fit_rows=24,
                      budget=int(1.5 * 2**30))


def inject(uncal, snowball=None, crs=()):
    """Add charge to a raw uncal file in place: a snowball ``(y, x, group, r)`` (a saturating
    core of radius r/2, a halo to r, from ``group`` on, as the simulator draws them) and
    cosmic rays ``(y, x, group, dn)``."""
    with fits.open(uncal, mode="update") as h:
        data = h["SCI"].data.astype(np.int64)  # (1, G, y, x), scaled to uint16 by astropy
        if snowball:
            y, x, g, r = snowball
            c = int(np.ceil(r))
            dy, dx = np.mgrid[-c:c + 1, -c:c + 1]
            d = np.hypot(dy, dx)
            dn = np.where(d <= r / 2, 6.0e4, 400.0 * (1 - d / r) + 50.0)
            inside = d <= r
            after = data[0, g:]
            after[:, y + dy[inside], x + dx[inside]] += dn[inside].astype(np.int64)
        for y, x, g, dn in crs:
            data[0, g:, y, x] += dn
        h["SCI"].data = np.clip(data, 0, 65535).astype(np.uint16)


def _manifest(d, out):
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), out)
    return out


def assert_same_store(a, b):
    """Two stores hold the same exposures with identical arrays and coordinates."""
    da, db = open_dataset(a), open_dataset(b)
    assert da.exposure.values.tolist() == db.exposure.values.tolist()
    assert set(da.data_vars) == set(db.data_vars)
    for var in da.data_vars:
        x, y = da[var].values, db[var].values
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=var)
    for c in da.coords:
        np.testing.assert_array_equal(da[c].values, db[c].values, err_msg=c)
    assert RampStore(a).verify(checksums=True) == [] and RampStore(b).verify(checksums=True) == []


@pytest.fixture(scope="module")
def edge_set(tmp_path_factory):
    """ALLSLITS (256 x 2048) TRAD, 10 groups, 2 exposures; exposure 1 gets a snowball whose
    saturated core straddles the slab edge at row 96 and cosmic rays on the rows either side
    of the edges at 32 and 64; calibrated whole (the reference store)."""
    root = tmp_path_factory.mktemp("edges")
    d = root / "data"
    simulate_dataset(d, SimConfig(subarray="ALLSLITS", ngroups=10, nexp=2, seed=11))
    first = sorted((d / "uncal").glob("*.fits"))[0]
    inject(first, snowball=(96, 1000, 4, 9.0),
           crs=[(31, 500, 6, 900), (32, 700, 3, 1500), (63, 1200, 5, 800),
                (64, 1201, 5, 800), (95, 300, 2, 2000)])
    manifest = _manifest(d, root / "m.ecsv")
    whole = root / "whole.zarr"
    calibrate(manifest, whole, refkit=d / "refkit", scheduler="threads:2", pieces="whole",
              tile=(64, 512))
    return {"dir": d, "manifest": manifest, "whole": whole, "root": root}


def test_the_edge_case_is_there(edge_set):
    """The reference store shows what the tiled run must cut through: jump flags on both sides
    of slab edges, a snowball's saturation and its expanded jump flags on both sides of one."""
    ds = open_dataset(edge_set["whole"])
    name = [e for e in ds.exposure.values if "00001_nrs1" in str(e)][0]
    gdq = ds.groupdq.sel(exposure=name).values
    for y in (31, 32, 63, 64):
        assert ((gdq[:, y] & JUMP) != 0).any(), f"no jump on row {y}"
    sat = (gdq[4:] & SAT).any(axis=0)
    assert sat[90:96].any() and sat[96:102].any()
    snow = ((gdq[4] & JUMP) != 0)[80:113, 980:1021]
    assert snow[:16].sum() > 20 and snow[16:].sum() > 20  # expanded halo across the edge


def test_tiled_store_equals_whole_store(edge_set, tmp_path):
    tiled = tmp_path / "tiled.zarr"
    summary = calibrate(edge_set["manifest"], tiled, refkit=edge_set["dir"] / "refkit",
                        scheduler="threads:2", pieces="tiled", plan=EDGE_PLAN, tile=(64, 512))
    assert summary["pieces"] == "tiled" and len(summary["committed"]) == 2
    assert_same_store(tiled, edge_set["whole"])
    assert not (tiled / "_staging").exists()  # scratch cubes and staging gone
    log = RampStore(tiled).read_log()
    assert log[0]["pieces"] == "tiled"


def test_budget_plan_equals_whole_store_on_a_cluster(edge_set, tmp_path):
    """Pieces sized from a budget, on a LocalCluster of two processes."""
    tiled = tmp_path / "tiled.zarr"
    calibrate(edge_set["manifest"], tiled, refkit=edge_set["dir"] / "refkit",
              scheduler="local:2", task_memory_="1GiB", tile=(64, 512))
    assert_same_store(tiled, edge_set["whole"])


def test_a_killed_worker_changes_nothing(edge_set, tmp_path, monkeypatch):
    """SIGKILL the worker running a jump slab (a real ``dask worker`` process, no nanny): the
    scheduler runs the slab again elsewhere and the store is bit for bit the reference.  The
    workers start without this process's CRDS settings, as on a real cluster: every piece
    sets jwst up itself."""
    from conftest import DaskProcesses, kill_worker_running

    for var in ("CRDS_PATH", "STPIPE_DISABLE_CRDS_STEPPARS"):
        monkeypatch.delenv(var, raising=False)
    cluster = DaskProcesses(tmp_path, n_workers=2)
    tiled = tmp_path / "tiled.zarr"
    out = {}

    def run():
        try:
            out["summary"] = calibrate(edge_set["manifest"], tiled,
                                       refkit=edge_set["dir"] / "refkit",
                                       scheduler=cluster.address, plan=EDGE_PLAN,
                                       tile=(64, 512))
        except BaseException as exc:  # noqa: BLE001 - reported below
            out["error"] = exc

    try:
        killed = kill_worker_running(cluster.address, run, "jump-slab", timeout=300, join=600)
        assert killed is not None, "no jump slab was seen running"
        assert "error" not in out, out.get("error")
        assert len(out["summary"]["committed"]) == 2 and not out["summary"]["failed"]
    finally:
        cluster.close()
    assert_same_store(tiled, edge_set["whole"])


def test_pieces_whole_and_settings_refused(edge_set, tmp_path, monkeypatch):
    from nrsdark_dask import jwst_recipe

    monkeypatch.setitem(jwst_recipe.STEP_PARAMETERS, "jump",
                        {"expand_large_events": True, "find_showers": True})
    with pytest.raises(ValueError, match="cannot honour: jump find_showers .*--pieces whole"):
        calibrate(edge_set["manifest"], tmp_path / "x.zarr", refkit=edge_set["dir"] / "refkit",
                  scheduler="sync")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="--pieces must be one of tiled, whole"):
        calibrate(edge_set["manifest"], tmp_path / "x.zarr", refkit=edge_set["dir"] / "refkit",
                  scheduler="sync", pieces="slabs")
    with pytest.raises(ValueError, match="too small .* smallest pieces need"):
        calibrate(edge_set["manifest"], tmp_path / "x.zarr", refkit=edge_set["dir"] / "refkit",
                  scheduler="sync", task_memory_="200MB")
    assert not (tmp_path / "x.zarr").exists()


@pytest.fixture(scope="module")
def irs2_small(tmp_path_factory):
    root = tmp_path_factory.mktemp("irs2")
    d = root / "data"
    simulate_dataset(d, SimConfig(readout="irs2", detector="NRS2", ngroups=5, nexp=1, seed=5))
    return {"dir": d, "manifest": _manifest(d, root / "m.ecsv"), "root": root}


def test_irs2_tiled_equals_whole(irs2_small, tmp_path):
    """IRS2 (NRS2, flipped): group blocks of 3 + 2 with the whole-ramp b_offset and bad
    reference flags handed to jwst, saturation carried between blocks."""
    d = irs2_small["dir"]
    plan = PiecePlan(slab_rows=512, group_block=2, region_block=3, fit_rows=256,
                     budget=int(3 * 2**30))
    assert plan.blocks(5, first_at_least=3) == [(0, 3), (3, 5)]
    calibrate(irs2_small["manifest"], tmp_path / "w.zarr", refkit=d / "refkit",
              scheduler="threads:2", pieces="whole")
    calibrate(irs2_small["manifest"], tmp_path / "t.zarr", refkit=d / "refkit",
              scheduler="threads:2", pieces="tiled", plan=plan)
    assert_same_store(tmp_path / "t.zarr", tmp_path / "w.zarr")


FULL_CASES = [("trad", "NRS1", 20), ("trad", "NRS1", 88), ("irs2", "NRS1", 25),
              ("irs2", "NRS2", 25)]


@pytest.mark.slow
@pytest.mark.parametrize("readout,detector,ngroups", FULL_CASES)
def test_full_frames_tiled_equals_whole(readout, detector, ngroups, tmp_path):
    d = tmp_path / "data"
    simulate_dataset(d, SimConfig(readout=readout, detector=detector, ngroups=ngroups, nexp=1,
                                  seed=7))
    manifest = _manifest(d, tmp_path / "m.ecsv")
    calibrate(manifest, tmp_path / "w.zarr", refkit=d / "refkit", scheduler="sync",
              pieces="whole")
    calibrate(manifest, tmp_path / "t.zarr", refkit=d / "refkit", scheduler="local:2")
    assert_same_store(tmp_path / "t.zarr", tmp_path / "w.zarr")
