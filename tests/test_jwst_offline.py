"""The offline jwst recipe: detector1 runs with no network on simulated TRAD and IRS2 data,
and what it gives agrees with the simulation truth."""

import os

import numpy as np
import pytest
from stdatamodels.jwst import datamodels as dm

from nrsdark_dask import instrument as inst
from nrsdark_dask.calibration import recipe as R


def _robust(x):
    med = np.median(x)
    return med, 1.4826 * np.median(np.abs(x - med))


def _clean_exposure(sim) -> int:
    exps = sim["truth"]["exposures"]
    clean = ~(exps["mode_switch"] | exps["persistence"] | exps["glow"])
    return int(exps["index"][clean][0])


def _calibrate(sim, tmp_path):
    """Run the recipe on the first exposure without injected artifacts."""
    idx = _clean_exposure(sim)
    refs = R.refkit_files(sim["dir"] / "refkit")
    f = sim["dir"] / "uncal" / sim["truth"]["exposures"]["filename"][idx]
    return R.run_detector1(f, refs, workdir=tmp_path), idx


def _score_rates(res, truth, label):
    """Pulls of the recovered rates against truth, after removing the exposure-wide offset
    that correlated (1/f) noise leaves in one exposure (common to all pixels; it averages out
    over exposures and is part of the uncertainty of a mean dark)."""
    rate, err = res.rate.data, res.rate.err
    good = ~truth["refpix"] & ~truth["rc"] & ~truth["ipc_neighbour"] & np.isfinite(rate)
    quiet = good & ~truth["hot"] & ~truth["warm"] & ~truth["rtn"]
    offset = np.median(rate[quiet] - truth["rate"][quiet])
    pull = (rate - offset - truth["rate"]) / err
    print(f"{label}: exposure-wide rate offset {offset:+.4f} DN/s")
    med, rstd = _robust(pull[good & truth["hot"]])
    nmed, nrstd = _robust(pull[good & ~truth["hot"] & ~truth["rtn"]])
    print(f"{label}: hot-pixel rate pulls median {med:.3f} robust std {rstd:.3f}; "
          f"other pixels median {nmed:.3f} robust std {nrstd:.3f}")
    return med, rstd, nmed, nrstd


def test_trad_subarray_detector1_offline(sim_trad, tmp_path, no_network):
    res, idx = _calibrate(sim_trad, tmp_path)
    truth = sim_trad["truth"]
    try:
        assert res.ramp.data.shape == (1, 12, 256, 2048)
        assert res.rate.data.shape == (256, 2048)
        assert res.provenance["crds_mode"] == "offline"
        assert res.provenance["crds_context"] == R.OFFLINE_CONTEXT
        for step in ("dq_init", "saturation", "superbias", "refpix", "linearity", "jump",
                     "ramp_fit"):
            assert getattr(res.ramp.meta.cal_step, step, None) in ("COMPLETE", None) or step == "ramp_fit"
        assert res.ramp.meta.cal_step.jump == "COMPLETE"
        # hot pixels were cleared from the mask: they get rates, and truth is recovered
        med, rstd, nmed, nrstd = _score_rates(res, truth, "TRAD ALLSLITS 12 groups")
        assert abs(med) < 0.2 and 0.8 < rstd < 1.3
        assert abs(nmed) < 0.1 and 0.7 < nrstd < 1.3
        known = truth["known_hot"]
        assert not (res.ramp.pixeldq[known] & inst.DQ["HOT"]).any()
        # cosmic rays of this exposure are flagged as jumps at their first group
        ev = truth["events"]
        big = ev[(ev["exposure"] == idx) & (ev["kind"] == "cr") & (ev["total_dn"] > 300)
                 & (ev["group"] > 0) & (ev["group"] < 12)]
        gdq = res.ramp.groupdq[0]
        found = [bool(gdq[e["group"], e["y"], e["x"]] & inst.DQ["JUMP_DET"]) for e in big
                 if not truth["refpix"][e["y"], e["x"]]]
        print(f"cosmic rays > 300 DN flagged as jumps: {np.mean(found):.3f} of {len(found)}")
        assert len(found) > 20 and np.mean(found) > 0.9
    finally:
        res.close()


def test_irs2_full_frame_detector1_offline(sim_irs2, tmp_path, no_network):
    res, _ = _calibrate(sim_irs2, tmp_path)
    truth = sim_irs2["truth"]
    try:
        assert res.ramp.data.shape == (1, 5, 2048, 2048)  # reference samples stripped
        assert res.rate.data.shape == (2048, 2048)
        assert res.ramp.meta.cal_step.refpix == "COMPLETE"
        med, rstd, _, _ = _score_rates(res, truth, "IRS2 FULL 5 groups")
        assert abs(med) < 0.2 and 0.8 < rstd < 1.3
        # correlated noise is largely gone after the IRS2 correction: column and row medians
        # of the last-minus-first difference scatter by < 2 DN (TRAD subarrays: ~8 DN)
        d = res.ramp.data[0, -1] - res.ramp.data[0, 0]
        assert np.std(np.median(d, axis=0)) < 2.0 and np.std(np.median(d, axis=1)) < 2.0
    finally:
        res.close()


def test_offline_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CRDS_SERVER_URL", raising=False)
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "crds"))
    env = R.configure_crds()
    assert env["mode"] == "offline"
    cfg = tmp_path / "crds" / "config" / "jwst" / "server_config"
    content = eval(cfg.read_text())  # noqa: S307 - our own one-line dict
    assert set(content) == {"observatory", "operational_context", "force_remote_mode",
                            "bad_files_list", "last_synced"}
    assert os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] == "true"


def test_with_crds_server_the_environment_is_left_to_crds(tmp_path, monkeypatch):
    monkeypatch.setenv("CRDS_SERVER_URL", "https://crds.example.invalid")
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "cache"))
    env = R.configure_crds()
    assert env["mode"] == "crds"
    assert os.environ["CRDS_PATH"] == str(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing written into a real cache
    monkeypatch.delenv("CRDS_SERVER_URL")
    # and offline without local files is a clear error, not a crds crash
    with pytest.raises(RuntimeError, match="no local reference file for"):
        R.run_detector1("unused.fits", refs={"mask": "m.fits"})


def test_step_arguments_follow_the_recipe():
    refs = {t: f"/k/{t}.fits" for t in ("mask", "saturation", "superbias", "linearity", "gain",
                                        "readnoise", "refpix")}
    trad = R.step_arguments(refs, "TRAD", "/k/cleared.fits")
    assert trad["refpix"] == {"override_refpix": "N/A", "override_sirskernel": "N/A"}
    assert trad["dq_init"] == {"override_mask": "/k/cleared.fits"}
    assert trad["saturation"] == {"override_saturation": "/k/saturation.fits",
                                  "override_superbias": "/k/superbias.fits"}
    assert trad["jump"]["expand_large_events"] is True
    irs2 = R.step_arguments(refs, "IRS2", None)
    assert irs2["refpix"] == {"override_refpix": "/k/refpix.fits"}


def test_cleared_mask_keeps_other_flags(tmp_path):
    DQ = inst.DQ
    dq = np.zeros((8, 8), np.uint32)
    dq[0, 0] = DQ["HOT"] | DQ["DO_NOT_USE"]
    dq[1, 1] = DQ["WARM"]
    dq[2, 2] = DQ["HOT"] | DQ["DO_NOT_USE"] | DQ["DEAD"]
    dq[3, 3] = DQ["RC"] | DQ["DO_NOT_USE"]
    m = dm.MaskModel(dq=dq)
    m.meta.instrument.name, m.meta.instrument.detector = "NIRSPEC", "NRS1"
    m.save(tmp_path / "mask.fits")
    out = R.cleared_mask(str(tmp_path / "mask.fits"), tmp_path)
    with dm.MaskModel(out) as c:
        got = c.dq
    assert got[0, 0] == 0 and got[1, 1] == 0
    assert got[2, 2] == DQ["DO_NOT_USE"] | DQ["DEAD"]
    assert got[3, 3] == DQ["RC"] | DQ["DO_NOT_USE"]
