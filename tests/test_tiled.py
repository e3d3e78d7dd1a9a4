"""Tiled calibration (nrsdark_dask.calibration): the store it writes is bit for bit the store that
jwst's whole-exposure run writes, on the same inputs and references: every variable, every
per-exposure coordinate, the chunk manifests; with cosmic rays and a snowball on the slab
edges, on threads and on a real cluster that loses a worker in the middle of a slab.

CI: a TRAD subarray (ALLSLITS) and a 5-group IRS2 full frame.  Slow: the issue's full frames
(TRAD 20 and 88 groups, IRS2 25 groups on NRS1 and NRS2)."""


import pytest

from nrsdark_dask import instrument as inst
from nrsdark_dask.calibration import versions
from nrsdark_dask.calibration.budget import PiecePlan
from nrsdark_dask.cli import main as cli
from nrsdark_dask.simulate import SimConfig, add_charge, read_truth, simulate_dataset
from nrsdark_dask.stages import selfcheck
from nrsdark_dask.stages.calibrate import calibrate
from nrsdark_dask.stages.select import select_inputs, write_manifest
from nrsdark_dask.store import RampStore, open_dataset, store_differences

EDGE_PLAN = selfcheck.EDGE_PLAN

JUMP, SAT = inst.DQ["JUMP_DET"], inst.DQ["SATURATED"]


def _manifest(d, out):
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), out)
    return out


def assert_same_store(a, b):
    """Two stores hold the same exposures with identical arrays and coordinates."""
    assert store_differences(a, b) == []
    assert RampStore(a).verify(checksums=True) == [] and RampStore(b).verify(checksums=True) == []


@pytest.fixture(scope="module")
def edge_set(tmp_path_factory):
    """``nrsdark self-check``, run by its command line and its folder kept: its case
    (:func:`selfcheck.make_case`: ALLSLITS (256 x 2048) TRAD, 10 groups, 2 exposures with
    dense snowballs and cosmic rays; exposure 1 gets a snowball whose saturated core straddles
    the slab edge at row 96, cosmic rays on the rows either side of the edges at 32 and 64,
    and large snowballs on the frame's edges) calibrated by jwst's whole-exposure run (the
    reference store) and tiled in 32-row slabs on threads."""
    root = tmp_path_factory.mktemp("edges") / "check"
    with pytest.MonkeyPatch.context() as mp:
        out = []
        mp.setattr("builtins.print", lambda *a, **k: out.append(" ".join(map(str, a))))
        status = cli.main(["self-check", "--workdir", str(root), "--keep"])
    return {"dir": root / "data", "manifest": root / "data" / "manifest.ecsv",
            "whole": root / "whole.zarr", "tiled": root / "tiled.zarr", "root": root,
            "status": status, "printed": out}


def test_the_edge_case_is_there(edge_set):
    """The reference store shows what the tiled run must cut through: jump flags on both sides
    of slab edges, a snowball's saturation and its expanded jump flags on both sides of one,
    snowballs on the frame's edges, and many more snowballs than nature gives."""
    ds = open_dataset(edge_set["whole"])
    name = [e for e in ds.exposure.values if "00001_nrs1" in str(e)][0]
    gdq = ds.groupdq.sel(exposure=name).values
    for y in (31, 32, 63, 64):
        assert ((gdq[:, y] & JUMP) != 0).any(), f"no jump on row {y}"
    sat = (gdq[4:] & SAT).any(axis=0)
    assert sat[90:96].any() and sat[96:102].any()
    snow = ((gdq[4] & JUMP) != 0)[80:113, 980:1021]
    assert snow[:16].sum() > 20 and snow[16:].sum() > 20  # expanded halo across the edge
    for y, x, g, _ in selfcheck.SNOWBALLS[1:]:  # on the frame's edges
        assert (gdq[g:, y, x] & SAT).all(), (y, x)
        assert ((gdq[g] & JUMP) != 0)[max(0, y - 12):y + 13, max(0, x - 12):x + 13].sum() > 10
    truth = read_truth(edge_set["dir"] / "truth.fits")
    assert min(truth["exposures"]["n_snowballs"]) >= 10


def test_tiled_store_equals_whole_store(edge_set):
    """The self-check passed and said so; its stores are equal, whole, verified; the tiled
    run cleaned its scratch and logged what snowball flagging measured."""
    assert edge_set["status"] == 0, edge_set["printed"]
    assert any(line.startswith("self-check passed on jwst ") for line in edge_set["printed"])
    tiled = edge_set["tiled"]
    assert_same_store(tiled, edge_set["whole"])
    assert not (tiled / "_staging").exists()  # scratch cubes and staging gone
    log = RampStore(tiled).read_log()
    assert log[0]["pieces"] == "tiled"
    snow = [e["snowballs"] for e in log if e["event"] == "committed"]
    assert len(snow) == 2
    assert all(0 < s["measured"] < s["regions"] and s["snowballs"] >= 10 for s in snow), snow


def test_a_failing_self_check_says_what_differs(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "self_check", lambda *a, **k: {
        "equal": False, "versions": {"jwst": "9.9", "stcal": "9.9"}, "snowballs": [],
        "differences": ["groupdq of x@1: 3 values differ"], "seconds": 1.0, "workdir": None})
    assert cli.main(["self-check"]) == 1
    out = capsys.readouterr().out
    assert "groupdq of x@1: 3 values differ" in out and "self-check FAILED on jwst 9.9" in out


def test_untested_releases_fall_back_to_whole_or_refuse(edge_set, tmp_path, monkeypatch,
                                                        capsys):
    """On jwst/stcal releases outside the tested ones, the default is jwst's own run (said in
    one line), an explicit --pieces tiled is refused before any work, and
    NRSDARK_TILED_UNTESTED=1 allows tiled."""
    monkeypatch.setitem(versions.TESTED, "stcal", ("0.1", "0.2"))
    monkeypatch.delenv(versions.OVERRIDE, raising=False)
    with pytest.raises(ValueError, match=r"tiled calibration is tested on .*stcal >=0.1,<0.2; "
                                         r"installed: stcal 1\.\d+.*nrsdark self-check"):
        calibrate(edge_set["manifest"], tmp_path / "t.zarr", refkit=edge_set["dir"] / "refkit",
                  scheduler="sync", pieces="tiled")
    assert not (tmp_path / "t.zarr").exists()
    monkeypatch.setenv(versions.OVERRIDE, "1")
    assert versions.tiled_refusal() is None
    monkeypatch.delenv(versions.OVERRIDE)
    one = tmp_path / "one.ecsv"  # one exposure: the fallback's whole run, kept short
    from nrsdark_dask.stages.select import read_manifest

    write_manifest(read_manifest(edge_set["manifest"])[:1], one)
    summary = calibrate(one, tmp_path / "w.zarr", refkit=edge_set["dir"] / "refkit",
                        scheduler="threads:2", tile=selfcheck.TILE)
    assert summary["pieces"] == "whole" and len(summary["committed"]) == 1
    assert "calibrate: --pieces whole: tiled calibration is tested on" in capsys.readouterr().err


def _check_record(path, n_exposures, workers):
    """A --record-tasks file: every task of every exposure ran once (or more), after its
    dependencies; on the workers there were."""
    import json

    doc = json.loads(path.read_text())
    assert len(doc["exposures"]) == n_exposures
    assert doc["layout"]["ngroups"] > 0 and doc["plan"]["slab_rows"] > 0
    seen_workers = set()
    for exp in doc["exposures"]:
        tasks, runs = exp["tasks"], exp["runs"]
        assert {"prepare", "jump-slab", "snowballs", "store-rows", "finish"} <= {
            t["kind"] for t in tasks.values()}
        for name, task in tasks.items():
            assert runs[name], name
            r = runs[name][-1]
            assert r["start"] <= r["stop"]
            seen_workers.add(r["worker"])
            for dep in task["deps"]:
                # (a cluster's times are corrected for each worker's clock offset: ~ms)
                assert dep in tasks and runs[dep][-1]["stop"] <= r["start"] + 0.05, (name, dep)
    assert 1 <= len(seen_workers) <= workers
    return doc


def test_budget_plan_equals_whole_store_on_a_cluster(edge_set, tmp_path):
    """Pieces sized from a budget, on a LocalCluster of two processes; the tasks recorded."""
    tiled = tmp_path / "tiled.zarr"
    calibrate(edge_set["manifest"], tiled, refkit=edge_set["dir"] / "refkit",
              scheduler="local:2", task_memory="1GiB", tile=selfcheck.TILE,
              record_tasks=tmp_path / "tasks.json")
    assert_same_store(tiled, edge_set["whole"])
    doc = _check_record(tmp_path / "tasks.json", 2, 2)
    assert len(doc["workers"]) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in {
        r[-1]["worker"] for e in doc["exposures"] for r in e["runs"].values()})


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
                                       tile=selfcheck.TILE)
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
    from nrsdark_dask.calibration import recipe as jwst_recipe

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
                  scheduler="sync", task_memory="200MB")
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
    plan = PiecePlan(slab_rows=512, group_block=2, fit_rows=256,
                     budget=int(3 * 2**30))
    assert plan.blocks(5, first_at_least=3) == [(0, 3), (3, 5)]
    calibrate(irs2_small["manifest"], tmp_path / "w.zarr", refkit=d / "refkit",
              scheduler="threads:2", pieces="whole")
    calibrate(irs2_small["manifest"], tmp_path / "t.zarr", refkit=d / "refkit",
              scheduler="threads:2", pieces="tiled", plan=plan,
              record_tasks=tmp_path / "tasks.json")
    assert_same_store(tmp_path / "t.zarr", tmp_path / "w.zarr")
    _check_record(tmp_path / "tasks.json", 1, 2)  # the threads


FULL_CASES = [("trad", "NRS1", 20), ("trad", "NRS1", 88), ("irs2", "NRS1", 25),
              ("irs2", "NRS2", 25)]


@pytest.mark.slow
@pytest.mark.parametrize("readout,detector,ngroups", FULL_CASES)
def test_full_frames_tiled_equals_whole(readout, detector, ngroups, tmp_path):
    """Full frames with 40x the natural snowball rate; TRAD also with snowballs placed on the
    default plan's slab edges (every 256 rows here) and the frame's edges."""
    d = tmp_path / "data"
    simulate_dataset(d, SimConfig(readout=readout, detector=detector, ngroups=ngroups, nexp=1,
                                  seed=7, snowball_scale=40.0))
    if readout == "trad":
        add_charge(next((d / "uncal").glob("*.fits")), cosmic_rays=[(255, 900, 3, 3000)],
                   snowballs=[(256, 700, 2, 9.0), (1024, 1500, 5, 11.0), (3, 1000, 4, 8.0),
                              (2044, 400, 6, 10.0), (900, 6, 3, 9.0), (1300, 2042, 7, 12.0)])
    assert read_truth(d / "truth.fits")["exposures"]["n_snowballs"][0] >= 10
    manifest = _manifest(d, tmp_path / "m.ecsv")
    calibrate(manifest, tmp_path / "w.zarr", refkit=d / "refkit", scheduler="sync",
              pieces="whole")
    calibrate(manifest, tmp_path / "t.zarr", refkit=d / "refkit", scheduler="local:2")
    assert_same_store(tmp_path / "t.zarr", tmp_path / "w.zarr")
