"""``nrsdark run CONFIG.toml`` (issue 14 part 5): the stages as the commands a user would type,
the verdict as the exit status, a second run on the same store, and failures that keep what
was done."""

from __future__ import annotations

import re
from pathlib import Path

from nrsdark_dask.cli import main as cli
from nrsdark_dask.cli.run import stages


def _config(path: Path, sim: Path, root: Path, extra: str = "", **run) -> Path:
    keys = {"scheduler": "threads", "inputs": [str(sim / "uncal")],
            "telemetry": str(sim / "telemetry.ecsv"), "refkit": str(sim / "refkit"),
            "store": str(root / "s.zarr"), "outdir": str(root / "run"), **run}
    lines = ["[run]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in keys.items()
                         if v is not None]
    path.write_text("\n".join(lines).replace("True", "true") + "\n" + extra)
    return path


def test_run_goes_from_uncal_files_to_a_verdict(sim_cal, tmp_path, capsys):
    cfg = _config(tmp_path / "run.toml", sim_cal["dir"], tmp_path)
    assert cli.main(["run", str(cfg)]) == 1  # 4 short inputs: not deliverable
    out = capsys.readouterr().out
    assert re.findall(r"\[(\d)/4\] (\w+)", out) == [
        ("1", "select"), ("2", "calibrate"), ("3", "build"), ("4", "analyze")]
    assert f"$ nrsdark calibrate {tmp_path}/run/manifest.ecsv --store {tmp_path}/s.zarr" in out
    assert "4 committed, 0 already there, 0 failed" in out
    assert re.search(r"^nrsdark run: done in \d+ s; NOT deliverable$", out, re.M)
    files = re.findall(r"^  (\S+\.fits)$", out, re.M)
    assert len(files) == 2 and all(Path(f).is_file() for f in files)  # subarray: no MASK
    assert any("_dark_" in f for f in files) and any("_superbias_" in f for f in files)
    report = tmp_path / "run" / "reffiles" / "qa" / "report.html"
    assert f"QA report: {report}" in out and report.is_file()
    assert (tmp_path / "run" / "manifest.ecsv").is_file()

    # the same configuration with a lower bar: calibrate skips what the store has, a new set
    # of files, and the deliverable verdict (exit 0)
    cfg2 = _config(tmp_path / "run2.toml", sim_cal["dir"], tmp_path,
                   extra="[delivery]\nsnr_trad = 0.001\n")
    assert cli.main(["run", str(cfg2)]) == 0
    out = capsys.readouterr().out
    assert "0 committed, 4 already there" in out and "done in" in out
    assert "; deliverable" in out
    again = re.findall(r"^  (\S+\.fits)$", out, re.M)
    assert len(again) == 2 and not set(again) & set(files)
    assert len(list((tmp_path / "run" / "reffiles").glob("*_dark_*.fits"))) == 2


def test_run_refuses_an_incomplete_configuration(sim_cal, tmp_path, capsys):
    cfg = _config(tmp_path / "run.toml", sim_cal["dir"], tmp_path, store=None)
    assert cli.main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[run] store is needed" in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failed_stage_stops_the_run_and_keeps_the_earlier_outputs(sim_cal, tmp_path, capsys):
    cfg = _config(tmp_path / "run.toml", sim_cal["dir"], tmp_path,
                  refkit=str(tmp_path / "no_such_kit"))
    assert cli.main(["run", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert "stage calibrate failed" in captured.err and "no_such_kit" in captured.err
    assert (tmp_path / "run" / "manifest.ecsv").is_file()  # select's output is kept
    assert "[3/4]" not in captured.out


def test_commands_follow_the_run_section(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[run]\ninputs = ["a", "b"]\nstore = "s.zarr"\noutdir = "o"\ncull = true\n'
                   'mask_in = "m.fits"\ncompare = ["old"]\nrequested = 9\n')
    got = dict(stages(cfg))
    assert list(got) == ["select", "calibrate", "cull", "build", "analyze"]
    assert got["select"] == ["select", "a", "b", "-o", "o/manifest.ecsv", "--config", str(cfg),
                             "--requested", "9"]
    assert got["build"][-4:] == ["--cull", "o/culled.ecsv", "--mask-in", "m.fits"]
    from nrsdark_dask.results import default_url

    assert got["analyze"] == ["analyze", "o/reffiles", "--config", str(cfg), "--compare", "old",
                              "--db", default_url("s.zarr")]  # where the build records
    assert "--refkit" not in got["calibrate"]  # no kit: CRDS
