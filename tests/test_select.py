"""The pre-filter: a reason for every injected artifact, groups, yield table, bad input."""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nrsdark_dask.cli import main as cli
from nrsdark_dask.config import Config, SelectConfig
from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset
from nrsdark_dask.stages.select import groups, read_manifest, select_inputs, yield_table


@pytest.fixture(scope="module")
def sim_full(tmp_path_factory):
    """FULL frame, 2 groups, 6 exposures with artifacts and every grating kind (no kit)."""
    out = tmp_path_factory.mktemp("full") / "data"
    simulate_dataset(out, SimConfig(subarray="FULL", ngroups=2, nexp=6, seed=20, artifacts=True,
                                    refkit=False, mode_switch_fraction=0.34,
                                    gratings={"G140H": 1, "PRISM": 1, "MIRROR": 1}))
    return out


def _expected(exposure, full: bool, cfg=SelectConfig()):
    reasons = []
    if exposure["grating"] == "MIRROR":
        reasons.append("MIRROR grating")
    if full and exposure["grating"] == "PRISM":
        reasons.append("PRISM on a full frame")
    if exposure["d_temp"] > (cfg.dt_full_frame if full else cfg.dt_subarray):
        reasons.append("ASIC dT")
    if exposure["persistence"]:
        reasons.append("excluded by user")
    return reasons


@pytest.mark.parametrize("which", ["full", "subarray"])
def test_reasons_match_every_injected_artifact(which, sim_full, sim_trad):
    d = sim_full if which == "full" else sim_trad["dir"]
    tab = select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv",
                        exclude=d / "exclusions.ecsv")
    truth = read_truth(d / "truth.fits")["exposures"]
    assert len(tab) == len(truth)
    seen = set()
    for e in truth:
        row = tab[tab["name"] == e["filename"]][0]
        want = _expected(e, which == "full")
        got = row["reason"].split("; ") if row["reason"] else []
        assert len(got) == len(want), (e["filename"], got, want)
        for w, g in zip(want, got):
            assert g.startswith(w), (g, w)
            seen.add(w)
        assert row["accepted"] == (not want)
        assert row["asic_dt"] == pytest.approx(e["d_temp"], abs=1.5e-3)
    if which == "full":
        assert {"MIRROR grating", "PRISM on a full frame", "ASIC dT"} <= seen


def test_subarray_threshold_is_wider(sim_trad):
    d = sim_trad["dir"]
    exps = read_truth(d / "truth.fits")["exposures"]
    for limit in (0.02, 0.13):
        tab = select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv",
                            cfg=SelectConfig(dt_subarray=limit))
        flagged = {r["name"] for r in tab if "ASIC dT" in r["reason"]}
        assert flagged == {e["filename"] for e in exps if e["d_temp"] > limit}
    assert exps["mode_switch"].any()


def test_missing_telemetry_is_flagged_not_guessed(sim_trad, tmp_path):
    d = sim_trad["dir"]
    tel = Table.read(d / "telemetry.ecsv")
    first = select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv")[0]
    keep = (tel["time"] < first["date"][:10]) | (tel["time"] > first["date_end"][:10] + "T23")
    tel[keep].write(tmp_path / "partial.ecsv")
    tab = select_inputs([d / "uncal"], telemetry=tmp_path / "partial.ecsv")
    row = tab[tab["name"] == first["name"]][0]
    assert not row["accepted"] and "no ASIC telemetry" in row["reason"]
    assert row["asic_nsamples"] == 0 and np.isnan(row["asic_dt"])
    ok = select_inputs([d / "uncal"], telemetry=tmp_path / "partial.ecsv",
                       cfg=SelectConfig(accept_without_telemetry=True))
    assert "no ASIC telemetry" not in ok[ok["name"] == first["name"]][0]["reason"]


def test_mixed_detectors_split_into_groups_and_bad_files_get_reasons(sim_trad, tmp_path):
    d = sim_trad["dir"]
    files = sorted((d / "uncal").glob("*.fits"))
    shutil.copy(files[0], tmp_path / "a_uncal.fits")
    with fits.open(files[1]) as h:
        h[0].header["DETECTOR"] = "NRS2"
        h.writeto(tmp_path / "b_uncal.fits")
    with fits.open(files[2]) as h:
        h[0].header["INSTRUME"] = "NIRCAM"
        h.writeto(tmp_path / "c_uncal.fits")
    (tmp_path / "d_uncal.fits").write_bytes(b"not a fits file")
    tab = select_inputs([tmp_path], telemetry=d / "telemetry.ecsv")
    by = {r["name"]: r for r in tab}
    assert by["c_uncal.fits"]["reason"].startswith("not a NIRSpec dark (INSTRUME=NIRCAM")
    assert by["d_uncal.fits"]["reason"].startswith("unreadable FITS file")
    assert len(groups(tab)) == 2  # NRS1 and NRS2 never merged
    assert by["a_uncal.fits"]["group"] != by["b_uncal.fits"]["group"]


def test_yield_table_numbers(sim_full):
    d = sim_full
    tab = select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv",
                        exclude=d / "exclusions.ecsv")
    y = yield_table(tab, requested=8)
    assert len(y) == 1
    truth = read_truth(d / "truth.fits")["exposures"]
    n_t = int(np.sum(truth["d_temp"] <= 0.02))
    good = int(tab["accepted"].sum())
    row = y[0]
    assert row["observed (% of requested)"] == "6 (75%)"
    assert row["T-filtered (% of requested)"] == f"{n_t} ({100 * n_t / 8:.0f}%)"
    assert row["GOOD (% of observed)"] == f"{good} ({100 * good / 6:.0f}%)"


def test_cli_select_writes_manifest_and_prints_yield(sim_trad, tmp_path, capsys):
    d = sim_trad["dir"]
    out = tmp_path / "m.ecsv"
    assert cli.main(["select", str(d / "uncal"), "--telemetry", str(d / "telemetry.ecsv"),
                     "--exclude", str(d / "exclusions.ecsv"), "-o", str(out),
                     "--requested", "5"]) == 0
    text = capsys.readouterr().out
    assert "GOOD (% of observed)" in text and "4 (80%)" in text
    m = read_manifest(out)
    assert len(m) == 4 and m.meta["select_config"]["dt_subarray"] == 0.13
    assert cli.main(["select", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_config_toml_overrides_and_rejects_unknown_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[select]\ndt_full_frame = 0.05\nreject_gratings = ['MIRROR', 'G140M']\n")
    cfg = Config.from_toml(p)
    assert cfg.select.dt_full_frame == 0.05 and cfg.select.reject_gratings == ("MIRROR", "G140M")
    assert cfg.dark.telegraph_sigma == 5.0
    p.write_text("[dark]\nrtn_sigma = 6.0\nbadref_sigma = 3.5\n")  # the flags' old key names
    with pytest.warns(FutureWarning, match="rtn_sigma is now telegraph_sigma"):
        cfg = Config.from_toml(p)
    assert (cfg.dark.telegraph_sigma, cfg.dark.bad_reference_sigma) == (6.0, 3.5)
    p.write_text("[select]\ndt_ful = 1\n")
    with pytest.raises(ValueError, match="unknown keys"):
        Config.from_toml(p)
