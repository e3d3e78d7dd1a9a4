"""Nothing lost, nothing silently wrong (issue 11), build side: the input mask checked and
recorded, outputs never overwritten and never left half-written, an unwritable or full outdir
found before any computing, configuration and arguments checked up front."""

import os
import shutil
import subprocess

import pytest
from astropy.io import fits

from nrsdark_dask.cli import main as cli
from nrsdark_dask.export import fits as export
from nrsdark_dask.stages.build import build


def _kit(sim_cal, reftype):
    return next((sim_cal["dir"] / "refkit").glob(f"*_{reftype}.fits"))


def _run(capsys, *args):
    code = cli.main(list(map(str, args)))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_input_mask_is_checked_and_recorded(cal_store, sim_cal, tmp_path, capsys,
                                                computes):
    store, out = cal_store["path"], tmp_path / "out"
    code, _, err = _run(capsys, "build", "--store", store, "--outdir", out, "--mask-in",
                        _kit(sim_cal, "superbias"))
    assert code == 2 and "--mask-in does not fit the store" in err
    assert "REFTYPE SUPERBIAS, expected MASK" in err
    other = tmp_path / "nrs2_mask.fits"
    shutil.copy(_kit(sim_cal, "mask"), other)
    with fits.open(other, mode="update") as h:
        h[0].header["DETECTOR"] = "NRS2"
    code, _, err = _run(capsys, "build", "--store", store, "--outdir", out, "--mask-in", other)
    assert code == 2 and "DETECTOR NRS2, the data are NRS1" in err
    assert computes == [] and not (out.exists() and any(out.iterdir()))
    mask = _kit(sim_cal, "mask")
    files = build(store, out, mask_in=mask)["files"]
    for path in files.values():
        history = "\n".join(str(c) for c in fits.getheader(path)["HISTORY"])
        assert f"Input MASK: {mask.name} (SHA-256 " in history


def test_outputs_are_never_overwritten_nor_left_half_written(cal_store, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(export, "_stamp", lambda: "20261201T000000")  # two builds, one second
    dead = out / f"nrsdark_x_dark_1.fits.{os.uname().nodename}-{2**22 + 7}.part"
    sleeper = subprocess.Popen(["sleep", "60"])
    live = out / f"nrsdark_x_dark_2.fits.{os.uname().nodename}-{sleeper.pid}.part"
    try:
        dead.write_bytes(b"killed build")
        live.write_bytes(b"running build")
        first = build(cal_store["path"], out)["files"]
        second = build(cal_store["path"], out)["files"]
        assert set(first.values()).isdisjoint(second.values())
        assert all(p.endswith("_20261201T000000.fits") for p in first.values())
        assert all(p.endswith("_20261201T000000_2.fits") for p in second.values())
        assert all(os.path.exists(p) for p in [*first.values(), *second.values()])
        assert not dead.exists() and live.exists()  # a killed build's part is removed
        assert sorted(p.name for p in out.glob("*.part")) == [live.name]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_failing_build_leaves_no_part_files(cal_store, tmp_path, monkeypatch):
    import nrsdark_dask.export.fits as ex

    def broken(path, reftype):
        raise ValueError("validation failed")

    monkeypatch.setattr(ex, "validate", broken)
    with pytest.raises(ValueError, match="validation failed"):
        build(cal_store["path"], tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_unwritable_or_full_outdir_is_found_before_computing(cal_store, tmp_path, capsys,
                                                                computes, small_mount):
    store = cal_store["path"]
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    code, _, err = _run(capsys, "build", "--store", store, "--outdir", not_a_dir / "out")
    assert code == 2 and "cannot write reference files into" in err
    ro = small_mount(readonly=True)
    code, _, err = _run(capsys, "build", "--store", store, "--outdir", ro)
    assert code == 2 and "cannot write reference files into" in err and "Read-only" in err
    assert computes == []
    full = small_mount(size="1m")
    code, _, err = _run(capsys, "build", "--store", store, "--outdir", full)
    assert code == 2 and "not enough disk space for nrsdark_" in err and "MB are free" in err
    assert computes == [] and list(full.iterdir()) == []


@pytest.mark.parametrize("toml, message", [
    ('[dark]\nhot_rate = "2.0"', "[dark] hot_rate must be a number, not '2.0'"),
    ('[select]\ndt_subarray = "0.13"', "[select] dt_subarray must be a number"),
    ("[dark]\nclip_sigma = -3", "[dark] clip_sigma must be > 0.0, not -3.0"),
    ("[dark]\nhot_rate = -1", "[dark] hot_rate must be > 0.0"),
    ('[dark]\nrc_next_groups = "al"', "[dark] rc_next_groups must be one of 'any', 'all'"),
    ("[dark]\nhot_rat = 2", "unknown keys in [dark]: hot_rat"),
    ("[dark\n", "not valid TOML"),
])
def test_bad_configuration_is_a_one_line_error_before_any_work(cal_store, tmp_path, capsys,
                                                               computes, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "build", "--store", cal_store["path"], "--outdir", out,
                        "--config", cfg)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert computes == [] and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["build", "--store", "S", "--outdir", "O", "--workers", "0"], "not a positive integer"),
    (["select", "IN", "-o", "m.ecsv", "--requested", "-5"], "not a count"),
    (["select", "IN", "-o", "m.ecsv", "--dt-sub", "-1"], "a temperature difference is >= 0"),
    (["select", "IN", "-o", "m.ecsv", "--start", "2024-13-45"], "not an ISO date"),
    (["calibrate", "M", "--store", "S", "--group-chunk", "0"], "not a positive integer"),
    (["simulate", "OUT", "--workers", "0"], "not a positive integer"),
])
def test_bad_arguments_are_refused_by_the_parser(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_start_after_the_end_is_refused(sim_cal, tmp_path, capsys):
    code, _, err = _run(capsys, "select", sim_cal["dir"] / "uncal", "-o", tmp_path / "m.ecsv",
                        "--start", "2024-06-01", "--end", "2024-01-01")
    assert code == 2 and "--start 2024-06-01 is after --end 2024-01-01" in err
    assert not (tmp_path / "m.ecsv").exists()
