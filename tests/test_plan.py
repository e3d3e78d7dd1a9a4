"""``nrsdark plan`` (issue 14 part 4) against the report's own numbers (§9.3-9.4)."""

from __future__ import annotations

import json
import math

import pytest

from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.plan import exposure_seconds, plan


def test_the_reports_irs2_plan_comes_out(capsys):
    """NRS2 IRS2: ~12 clean files for SNR ~6; 63 % usable: 19 an epoch, 76 over 4 epochs."""
    for per_file in (6 / math.sqrt(12), 1.73):  # exactly, and as a user would type it
        assert cli.main(["plan", "--per-file-snr", str(per_file), "--target-snr", "6",
                         "--usable-fraction", "0.63", "--epochs", "4", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert (out["clean_per_epoch"], out["request_per_epoch"], out["request_total"]) == \
            (12, 19, 76)
        assert all(not isinstance(v, (dict, list)) for v in out.values())  # one flat object
    # "about 10 clean files to attain a minimum SNR ~5": the same per-file SNR
    assert plan(6 / math.sqrt(12), 5.0, 0.63)["clean_per_epoch"] in (9, 10)


def test_charged_time_follows_the_exposure_duration():
    """An IRS2 full frame of 200 NRSIRS2RAPID groups lasts 201 frames of 14.5889 s; the
    report's epoch of 19 such files is 19.26 h (charged)."""
    assert exposure_seconds("NRSIRS2RAPID", 200) == pytest.approx(201 * 14.5889)
    p = plan(1.73, 6, 0.63, 4, duration_s=exposure_seconds("NRSIRS2RAPID", 200))
    assert p["science_hours_per_epoch"] == pytest.approx(19 * 201 * 14.5889 / 3600, abs=0.01)
    assert p["charged_hours_per_epoch"] == pytest.approx(19.26, rel=0.05)
    assert p["charged_hours_total"] == pytest.approx(4 * p["charged_hours_per_epoch"], abs=0.02)


def test_more_usable_files_or_a_lower_target_need_fewer_requests():
    base = plan(1.0, 5.0, 0.5)
    assert base["clean_per_epoch"] == 25 and base["request_per_epoch"] == 50
    assert plan(1.0, 5.0, 1.0)["request_per_epoch"] == 25
    assert plan(1.0, 2.5, 0.5)["clean_per_epoch"] == 7  # 6.25 -> 7: whole files, rounded up


def test_bad_arguments_are_one_line_errors(capsys):
    assert cli.main(["plan", "--per-file-snr", "1", "--target-snr", "5",
                     "--usable-fraction", "1.5"]) == 2
    assert "usable fraction must be in (0, 1]" in capsys.readouterr().err
    assert cli.main(["plan", "--target-snr", "5", "--usable-fraction", "0.5"]) == 2
    assert "give --per-file-snr or --store" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["plan", "--per-file-snr", "-1", "--target-snr", "5",
                  "--usable-fraction", "0.5"])


def test_per_file_snr_measured_from_a_store_is_the_builds(cal_store, tmp_path, capsys):
    """--store: the SNR of the store's rate images is the build's delivery SNR (same rule,
    same pixels), divided by sqrt(N)."""
    from nrsdark_dask.stages.build import build

    store = cal_store["path"]
    built = build(store, tmp_path / "ref", scheduler="sync")["stats"]["snr"]
    assert cli.main(["plan", "--store", str(store), "--target-snr", "2.5",
                     "--usable-fraction", "0.7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["store_snr"] == pytest.approx(built, abs=1e-3)
    assert out["per_file_snr"] == pytest.approx(built / math.sqrt(out["store_inputs"]), abs=1e-3)
    assert out["exposure_s"] > 0 and out["readpatt"] == "NRSRAPID"
