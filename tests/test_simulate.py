"""The simulator: valid Level-1b files, injected populations, recoverable truth, bad input."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from stdatamodels.jwst import datamodels as dm

from nrsdark_dask import instrument as inst
from nrsdark_dask.cli import main as cli
from nrsdark_dask.simulate import SimConfig, simulate_dataset
from nrsdark_dask.simulate import dataset as ds
from nrsdark_dask.simulate.model import DETECTOR_PARAMS, TRAD_NOISE, make_truth


def _uncals(sim):
    return sorted((sim["dir"] / "uncal").glob("*_uncal.fits"))


def test_every_file_opens_with_stdatamodels(sim_trad, sim_irs2):
    for sim, shape in ((sim_trad, (1, 12, 256, 2048)), (sim_irs2, (1, 5, 3200, 2048))):
        files = _uncals(sim)
        assert len(files) == sim["summary"]["exposures"]
        cfg = sim["summary"]["config"]
        for f in files:
            with dm.Level1bModel(str(f)) as m:
                assert m.data.shape == shape and m.data.dtype == np.uint16
                e, i = m.meta.exposure, m.meta.instrument
                assert (i.name, i.detector, i.filter) == ("NIRSPEC", "NRS1", "OPAQUE")
                assert e.type == "NRS_DARK" and e.readpatt == cfg["readpatt"]
                assert e.ngroups == shape[1] and e.nframes == 1 and e.groupgap == 0
                sub = inst.get_subarray(cfg["subarray"])
                assert m.meta.subarray.name == sub.name
                assert (m.meta.subarray.xstart, m.meta.subarray.ystart) == (sub.xstart, sub.ystart)
                assert e.frame_time == pytest.approx(sub.frame_time(cfg["readout"].upper()))
                assert m.meta.observation.date and e.start_time > 59000
            with dm.open(str(f)) as m:  # what jwst does
                assert m.meta.exposure.readpatt == cfg["readpatt"]
        for f in (sim["dir"] / "refkit").glob("*.fits"):
            with dm.open(str(f)) as m:
                m.validate()


def test_full_frame_population_counts_match_configuration():
    t = make_truth("NRS2", inst.SUBARRAYS["FULL"], "TRAD", seed=9)
    p = DETECTOR_PARAMS["NRS2"]
    n_active = (~t.refpix).sum()
    n_ref = t.refpix.sum()
    assert n_active == 2040**2 and n_ref == 2048**2 - 2040**2
    counts = t.counts()
    print("full-frame NRS2 counts:", counts)
    assert counts["hot"] == p.n_hot
    assert counts["rc"] == round(p.rc_fraction * n_active)
    assert counts["rtn"] == round(p.rtn_fraction * n_active)
    assert counts["warm"] == round(p.warm_fraction * n_active)
    assert counts["badref"] == round(p.badref_fraction * n_ref)
    assert not (t.hot & t.rc).any() and not (t.rtn & (t.hot | t.rc)).any()
    assert not (t.badref & ~t.refpix).any()
    # hot means true rate > 1 DN/s, with no true rate inside the scoring gap
    rate = t.rate
    assert (rate[t.hot] > p.hot_gap[1]).all()
    lo, hi = p.hot_gap
    assert not ((rate > lo) & (rate < hi) & ~t.rc & ~t.refpix & ~t.ipc_neighbour).any()
    assert np.median(rate[~t.refpix]) == pytest.approx(p.median_rate, rel=0.05)
    assert 0.69 < t.known_hot.sum() / counts["hot"] < 0.71
    # a subarray is a cut of the same detector
    sub = make_truth("NRS2", inst.SUBARRAYS["SUBS400A1"], "TRAD", seed=9)
    ys, xs = inst.SUBARRAYS["SUBS400A1"].slices
    np.testing.assert_array_equal(sub.hot, t.hot[ys, xs])
    np.testing.assert_array_equal(sub.rate, t.rate[ys, xs])


def _ols_slope(t, y):
    tc = t - t.mean()
    return np.tensordot(tc, y - y.mean(axis=0), axes=(0, 0)) / (tc**2).sum()


def test_straight_line_fit_recovers_hot_pixel_rates(sim_trad):
    """Fit the raw ramps (bias removed, linearity from the kit, column 1/f removed) of hot
    pixels not touched by cosmic rays or saturation; pulls against the true rate ~ N(0, 1)."""
    truth = sim_trad["truth"]
    kit = sim_trad["dir"] / "refkit"
    with dm.LinearityModel(str(next(kit.glob("*_linearity.fits")))) as lin:
        coeffs = lin.coeffs.astype(np.float64)
    near_rc = np.zeros_like(truth["rc"])
    for ax in (0, 1):
        for s in (1, -1):
            near_rc |= np.roll(truth["rc"], s, axis=ax)
    quiet = ~(truth["hot"] | truth["rc"] | truth["rtn"] | truth["refpix"] | truth["warm"]
              | truth["ipc_neighbour"])
    pulls = []
    for f in _uncals(sim_trad):
        with fits.open(f) as h:
            raw = h["SCI"].data[0].astype(np.float64)
            hdr = h[0].header
        idx = int(hdr["EXPOSURE"]) - 1
        n = raw.shape[0]
        t = inst.group_times(inst.READ_PATTERNS[hdr["READPATT"]], hdr["TFRAME"], n)
        r = raw - truth["bias"]
        lin_r = sum(coeffs[i] * r**i for i in range(coeffs.shape[0]))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # reference-pixel-only columns
            common = np.nanmedian(np.where(quiet, lin_r, np.nan), axis=1, keepdims=True)
        slope = _ols_slope(t, lin_r - common)
        ev = truth["events"][truth["events"]["exposure"] == idx]
        yy, xx = np.mgrid[0 : r.shape[1], 0 : r.shape[2]]
        hit = np.zeros(r.shape[1:], bool)
        for e in ev:
            radius = 3 if e["kind"] == "cr" else 14
            y0, x0 = e["y"], e["x"]
            sl = (slice(max(y0 - radius, 0), y0 + radius + 1), slice(max(x0 - radius, 0), x0 + radius + 1))
            hit[sl] = True
        rate = truth["rate"]
        ok = truth["hot"] & ~hit & ~near_rc & (rate * t[-1] < 0.6 * truth["full_well"])
        dt = t[1] - t[0]
        read = np.hypot(np.hypot(TRAD_NOISE.white, TRAD_NOISE.amp_1f), TRAD_NOISE.acn)
        var = (12 * read**2 / (n * (n**2 - 1) * dt**2)
               + 6 * (n**2 + 1) / (5 * n * (n**2 - 1)) * rate / (truth["gain"] * dt))
        pulls.append(((slope - rate) / np.sqrt(var))[ok])
    pulls = np.concatenate(pulls)
    med = np.median(pulls)
    rstd = 1.4826 * np.median(np.abs(pulls - med))
    print(f"hot-pixel rate pulls: n={pulls.size} median={med:.3f} robust std={rstd:.3f} "
          f"|pull|>5: {np.mean(np.abs(pulls) > 5):.4f}")
    assert pulls.size > 1000
    assert abs(med) < 0.15
    assert 0.85 < rstd < 1.25
    assert np.mean(np.abs(pulls) > 5) < 0.01


def _dtemp(tel, start, duration, pad=600.0):
    t = Time(tel["time"]).mjd
    t0 = Time(start).mjd
    w = (t >= t0 - pad / 86400) & (t <= t0 + (duration + pad) / 86400)
    return np.ptp(np.asarray(tel["asic_temp"])[w])


def test_artifacts_telemetry_and_exclusions_agree_with_truth(sim_trad):
    exps = sim_trad["truth"]["exposures"]
    tel = Table.read(sim_trad["dir"] / "telemetry.ecsv")
    excl = Table.read(sim_trad["dir"] / "exclusions.ecsv")
    assert set(exps["grating"]) <= {"G140H", "PRISM", "MIRROR"}
    for e in exps:
        with fits.open(sim_trad["dir"] / "uncal" / e["filename"]) as h:
            hdr = h[0].header
            assert hdr["GRATING"] == e["grating"]
        d = _dtemp(tel, e["start"], hdr["DURATION"])
        assert d == pytest.approx(e["d_temp"], abs=1.5e-3)
        assert (d > 0.021) == bool(e["mode_switch"])
        assert bool(e["glow"]) == (e["grating"] == "PRISM")
        assert (e["filename"] in set(excl["file"])) == bool(e["persistence"])
    assert exps["mode_switch"].any() and exps["persistence"].any()


def test_same_seed_same_data_and_no_artifacts_without_flag(tmp_path):
    cfg = SimConfig(subarray="SUB512S", ngroups=3, nexp=2, seed=42, refkit=False,
                    gratings={"PRISM": 1})
    simulate_dataset(tmp_path / "a", cfg)
    simulate_dataset(tmp_path / "b", cfg)
    for fa in sorted((tmp_path / "a" / "uncal").glob("*.fits")):
        fb = tmp_path / "b" / "uncal" / fa.name
        np.testing.assert_array_equal(fits.getdata(fa, "SCI"), fits.getdata(fb, "SCI"))
    exps = ds.read_truth(tmp_path / "a" / "truth.fits")["exposures"]
    assert not (exps["glow"] | exps["mode_switch"] | exps["persistence"]).any()
    assert (exps["d_temp"] <= 0.02).all()


@pytest.mark.parametrize("argv,message", [
    (["--subarray", "SUB999"], "invalid choice"),
    (["--readout", "irs2", "--subarray", "SUB2048"], "IRS2 readout exists only for FULL"),
    (["--ngroups", "1"], "ngroups must be between"),
    (["--gratings", "G999"], "bad grating mix"),
    (["--start", "2024-01-01", "--end", "2023-01-01"], "is not after"),
])
def test_bad_input_is_a_one_line_error(tmp_path, capsys, argv, message):
    out = tmp_path / "x"
    try:
        code = cli.main(["simulate", str(out), "--subarray", "SUB512S", "--nexp", "1"] + argv)
    except SystemExit as exc:  # argparse choices
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert message in err[-1]
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_existing_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert cli.main(["simulate", str(tmp_path / "x"), "--subarray", "SUB512S"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_failure_half_way_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def boom(path, truth, plan):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(path, truth, plan)

    real = ds.write_uncal
    monkeypatch.setattr(ds, "write_uncal", boom)
    with pytest.raises(OSError, match="disk full"):
        simulate_dataset(tmp_path / "x", SimConfig(subarray="SUB512S", ngroups=3, nexp=3))
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_simulate_writes_a_dataset(tmp_path, capsys):
    code = cli.main(["simulate", str(tmp_path / "d"), "--subarray", "SUB512", "--ngroups", "3",
                     "--nexp", "2", "--detector", "nrs2", "--artifacts",
                     "--gratings", "PRISM,G395H:2"])
    assert code == 0
    assert "2 exposures" in capsys.readouterr().out
    files = sorted((tmp_path / "d" / "uncal").glob("*_nrs2_uncal.fits"))
    assert len(files) == 2
    assert fits.getheader(files[0])["DETECTOR"] == "NRS2"
