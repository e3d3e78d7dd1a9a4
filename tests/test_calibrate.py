"""calibrate: jwst per exposure into the store; equality with jwst, resume after a kill,
failures isolated, already-calibrated inputs, refusals."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from nrsdark_dask.calibration import recipe as R
from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.calibrate import calibrate, whole_task_memory
from nrsdark_dask.stages.select import read_manifest, select_inputs, write_manifest
from nrsdark_dask.store import RampStore, StoreError, exposure_id, open_dataset

VARS = ("ramp", "groupdq", "pixeldq", "rate", "rate_err", "neg_jumps")


def test_store_holds_every_accepted_exposure_with_tidy_coordinates(cal_store, cal_manifest):
    ds = xr.open_zarr(cal_store["path"])
    m = read_manifest(cal_manifest)
    ids = sorted(exposure_id(n, h) for n, h in zip(m["name"], m["sha256"]))
    assert sorted(ds.exposure.values.tolist()) == ids  # file name @ content hash
    assert dict(ds.sizes) == {"exposure": 4, "group": 10, "y": 64, "x": 2048, "bias_group": 2,
                              "y_raw": 64}
    assert ds.ramp.dims == ("exposure", "group", "y", "x")
    assert ds.rate.dims == ("exposure", "y", "x")
    assert ds.ramp.chunks[0] == (1,) * 4  # one exposure per chunk
    assert set(ds.grating.values) == {"G395H"} and (ds.asic_dt.values <= 0.02).all()
    assert ds.date.dtype.kind == "M" and ds.group_time.values[0] == pytest.approx(1.55724)
    assert ds.y.values[0] == 1040  # SUBS200A1 starts at full-frame row 1041 (1-based)
    assert ds.attrs["layout"]["has_bias"] is True
    assert ds.attrs["provenance"]["steps"][-1] == "ramp_fit"
    assert all(json.loads(r)["mask"].endswith("_mask.fits") for r in ds.references.values)


def test_store_values_equal_jwst_run_directly(cal_store, sim_cal, tmp_path):
    ds = open_dataset(cal_store["path"])
    name = str(ds.exposure.values[1])
    res = R.run_detector1(str(ds.input_file.values[1]), R.refkit_files(sim_cal["dir"] / "refkit"),
                          workdir=tmp_path, with_bias=True)
    try:
        one = ds.sel(exposure=name).compute()
        np.testing.assert_array_equal(one.ramp.values, res.ramp.data[0])
        np.testing.assert_array_equal(one.groupdq.values, res.ramp.groupdq[0])
        np.testing.assert_array_equal(one.pixeldq.values, res.ramp.pixeldq)
        np.testing.assert_array_equal(one.rate.values, res.rate.data)
        np.testing.assert_array_equal(one.rate_err.values, res.rate.err)
        np.testing.assert_array_equal(one.bias_groups.values, res.bias_groups)
        from nrsdark_dask.kernels import negative_jump_counts
        from nrsdark_dask.kernels import difference_scatter
        sigma = difference_scatter(res.ramp.data[0])
        assert float(one.diff_sigma) == pytest.approx(sigma)
        np.testing.assert_array_equal(one.neg_jumps.values, negative_jump_counts(
            res.ramp.data[0], res.ramp.groupdq[0], 3 * sigma, jump_bit=4))
        np.testing.assert_array_equal(one.group1.values, res.ramp.data[0, 0])
        first = one.first_jump.values
        jumps = (res.ramp.groupdq[0] & 4) != 0
        np.testing.assert_array_equal(first < 32767, jumps.any(axis=0))
        np.testing.assert_array_equal(jumps.argmax(axis=0)[first < 32767], first[first < 32767])
        assert 0 < float(one.g1_std) < 30 and abs(float(one.g1_mean)) < 10
    finally:
        res.close()


def test_rerun_is_idempotent(cal_store, cal_manifest, sim_cal):
    again = calibrate(cal_manifest, cal_store["path"], refkit=sim_cal["dir"] / "refkit",
                      scheduler="sync")
    assert again["committed"] == [] and len(again["skipped"]) == 4
    assert len(RampStore(cal_store["path"]).committed()) == 4


def _committed_in_log(store):
    return [e["name"] for e in RampStore(store).read_log() if e["event"] == "committed"]


def test_kill_and_resume(cal_store, cal_manifest, sim_cal, tmp_path):
    store = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "nrsdark_dask.cli.main", "calibrate", str(cal_manifest),
           "--store", str(store), "--refkit", str(sim_cal["dir"] / "refkit"),
           "--scheduler", "sync"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (store / "nrsdark_log.jsonl").exists() or \
                len(_committed_in_log(store)) < 1:
            assert proc.poll() is None, "calibrate finished before it could be killed"
            time.sleep(0.05)
        time.sleep(0.5)  # somewhere inside the next exposure
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    committed = RampStore(store).committed()
    print(f"killed after {len(committed)} of 4 exposures")
    assert 1 <= len(committed) < 4
    assert committed == _committed_in_log(store)
    ds = open_dataset(store)  # opens, and holds only whole exposures
    ref = open_dataset(cal_store["path"])
    for name in committed:
        for var in VARS:
            np.testing.assert_array_equal(ds[var].sel(exposure=name).values,
                                          ref[var].sel(exposure=name).values)
    # resume on a real process cluster
    summary = calibrate(cal_manifest, store, refkit=sim_cal["dir"] / "refkit",
                        scheduler="local:2")
    assert sorted(summary["skipped"]) == sorted(committed)
    assert len(summary["committed"]) == 4 - len(committed) and not summary["failed"]
    ds = open_dataset(store)
    assert sorted(ds.exposure.values.tolist()) == sorted(ref.exposure.values.tolist())
    for var in VARS + ("bias_groups",):  # same order (by date) whatever the arrival order
        np.testing.assert_array_equal(ds[var].values, ref[var].values)
    assert not (store / "_staging").exists() and not (store / ".nrsdark.lock").exists()


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_corrupt_input_fails_alone(sim_cal, tmp_path, capsys):
    src = sorted((sim_cal["dir"] / "uncal").glob("*.fits"))[:3]
    for f in src:
        shutil.copy(f, tmp_path / f.name)
    manifest = tmp_path / "m.ecsv"
    write_manifest(select_inputs([tmp_path], telemetry=sim_cal["dir"] / "telemetry.ecsv"), manifest)
    bad = tmp_path / src[1].name
    size = bad.stat().st_size
    with open(bad, "r+b") as f:  # truncated after selection (e.g. a partial copy)
        f.truncate(size // 2)
    code = cli.main(["calibrate", str(manifest), "--store", str(tmp_path / "s.zarr"),
                     "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "sync"])
    out = capsys.readouterr().out
    assert code == 1 and "2 committed" in out and "1 failed" in out
    assert f"failed {src[1].name}@" in out
    log = RampStore(tmp_path / "s.zarr").read_log()
    failed = [e for e in log if e["event"] == "failed"]
    assert len(failed) == 1 and failed[0]["name"].startswith(src[1].name + "@")
    assert "truncated file: SCI data end" in failed[0]["reason"]  # says which and what
    assert len(RampStore(tmp_path / "s.zarr").committed()) == 2


def test_already_calibrated_inputs_give_the_same_store(cal_store, sim_cal, tmp_path):
    refs = R.refkit_files(sim_cal["dir"] / "refkit")
    for f in sorted((sim_cal["dir"] / "uncal").glob("*.fits")):
        res = R.run_detector1(f, refs, workdir=tmp_path)
        base = f.name.removesuffix("_uncal.fits")
        res.ramp.save(tmp_path / f"{base}_jump.fits")
        res.rate.save(tmp_path / f"{base}_rate.fits")
        res.close()
    manifest = tmp_path / "m.ecsv"
    tab = select_inputs([tmp_path], telemetry=sim_cal["dir"] / "telemetry.ecsv")
    assert tab["accepted"].all() and set(tab["kind"]) == {"ramp"}
    write_manifest(tab, manifest)
    summary = calibrate(manifest, tmp_path / "c.zarr", scheduler="sync")  # no kit needed
    assert len(summary["committed"]) == 4
    ds = open_dataset(tmp_path / "c.zarr")
    ref = open_dataset(cal_store["path"])
    assert "bias_groups" not in ds and ds.attrs["layout"]["has_bias"] is False
    assert set(ds.input_kind.values) == {"ramp"}
    assert [n.split("_jump.fits@")[0] for n in ds.exposure.values.tolist()] == \
        [n.split("_uncal.fits@")[0] for n in ref.exposure.values.tolist()]  # both by date
    for var in VARS:
        np.testing.assert_array_equal(ds[var].values, ref[var].values)


def test_inputs_that_disagree_with_the_store_are_refused(cal_store, sim_trad, tmp_path):
    d = sim_trad["dir"]
    manifest = tmp_path / "m.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv",
                                 exclude=d / "exclusions.ecsv"), manifest)
    before = RampStore(cal_store["path"]).committed()
    with pytest.raises(StoreError, match="disagree with the store.*subarray ALLSLITS"):
        calibrate(manifest, cal_store["path"], refkit=d / "refkit", scheduler="sync")
    assert RampStore(cal_store["path"]).committed() == before


def test_several_groups_need_a_choice(sim_cal, sim_trad, tmp_path):
    tab = select_inputs([sim_cal["dir"] / "uncal", sim_trad["dir"] / "uncal"])
    from nrsdark_dask.config import SelectConfig

    tab = select_inputs([sim_cal["dir"] / "uncal", sim_trad["dir"] / "uncal"],
                        cfg=SelectConfig(accept_without_telemetry=True,
                                         reject_gratings=(), reject_gratings_full_frame=()))
    write_manifest(tab, tmp_path / "m.ecsv")
    with pytest.raises(ValueError, match="2 groups .*choose one with --group"):
        calibrate(tmp_path / "m.ecsv", tmp_path / "x.zarr", scheduler="sync")
    assert not (tmp_path / "x.zarr").exists()


def test_task_memory_model():
    from nrsdark_dask.store import StoreLayout

    full88 = StoreLayout(detector="NRS1", family="TRAD", readpatt="NRSRAPID", subarray="FULL",
                         ngroups=88, ny=2048, nx=2048, ny_raw=2048, ystart=1, xstart=1,
                         tframe=10.73676, tgroup=10.73676, has_bias=True)
    assert 8.16e9 < whole_task_memory(full88) < 9e9  # measured peak 8.16 GB, 5 % margin
    irs2 = StoreLayout(**{**full88.__dict__, "family": "IRS2", "readpatt": "NRSIRS2RAPID",
                          "ngroups": 200, "ny_raw": 3200})
    assert 26e9 < whole_task_memory(irs2) < 30e9  # 25 and 50 groups measured, extrapolated
    calibrated = StoreLayout(**{**full88.__dict__, "has_bias": False})
    assert 0.61e9 < whole_task_memory(calibrated) < 2.5e9  # measured peak 0.61 GB, streamed


def test_whole_runs_as_many_exposures_at_once_as_fit(monkeypatch, capsys):
    """--pieces whole on local:N starts only the workers whose share of the machine holds one
    exposure (a 24 GiB machine: two TRAD FULL 88 at once, not three), and refuses an exposure
    that the whole machine cannot hold."""
    from nrsdark_dask import cluster
    from nrsdark_dask.stages.calibrate import whole_workers
    from nrsdark_dask.store import StoreLayout

    monkeypatch.setattr(cluster, "total_memory", lambda: int(23.5 * 2**30))
    full88 = StoreLayout(detector="NRS1", family="TRAD", readpatt="NRSRAPID", subarray="FULL",
                         ngroups=88, ny=2048, nx=2048, ny_raw=2048, ystart=1, xstart=1,
                         tframe=10.73676, tgroup=10.73676, has_bias=True)
    assert whole_workers("local:2", full88) == "local:2"
    assert capsys.readouterr().err == ""
    assert whole_workers("local:4", full88) == "local:2"
    assert "needs ~8.6 GB, 21.6 GB hold 2: local:2 instead of local:4" in capsys.readouterr().err
    assert whole_workers("tcp://127.0.0.1:8786", full88) == "tcp://127.0.0.1:8786"
    irs2 = StoreLayout(**{**full88.__dict__, "family": "IRS2", "readpatt": "NRSIRS2RAPID",
                          "ngroups": 200, "ny_raw": 3200})
    with pytest.raises(ValueError, match="needs ~28.\\d GB, this machine has 21.6 GB .*tiled"):
        whole_workers("local:2", irs2)
