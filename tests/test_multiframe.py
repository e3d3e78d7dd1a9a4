"""Multi-frame readouts (issue 12): NRS inputs (4 frames averaged, 1 skipped per group) give a
superbias at time 0 and a DARK one frame per plane, consistent with each other and with jwst's
own dark subtraction, also on a science ramp longer than the input darks (no extrapolation).
Scored against the simulator's truth like the NRSRAPID science test."""

import logging

import numpy as np
import pytest
from stdatamodels.jwst import datamodels as dm

from nrsdark_dask import instrument as inst
from nrsdark_dask.calibration import recipe as R
from nrsdark_dask.stages.build import build
from nrsdark_dask.stages.calibrate import calibrate
from nrsdark_dask.stages.select import select_inputs, write_manifest

from conftest import _make

NGROUPS, SCIENCE_GROUPS = 8, 12
NRS = inst.get_read_pattern("NRS")
TFRAME = 1.55724  # SUBS200A1 frame time (s)


@pytest.fixture(scope="module")
def nrs(tmp_path_factory):
    """SUBS200A1 NRS darks, 8 groups (39 frames) x 6 exposures, calibrated; a 12-group NRS
    exposure of the same detector (same seed: same static truth) as the science."""
    sim = _make(tmp_path_factory, "nrs", subarray="SUBS200A1", readpatt="NRS", ngroups=NGROUPS,
                nexp=6, seed=21, gratings={"G140H": 1})
    science = _make(tmp_path_factory, "nrs_sci", subarray="SUBS200A1", readpatt="NRS",
                    ngroups=SCIENCE_GROUPS, nexp=1, seed=21, gratings={"G140H": 1})
    d = sim["dir"]
    manifest = d.parent / "manifest.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), manifest)
    store = d.parent / "nrs.zarr"
    calibrate(manifest, store, refkit=d / "refkit", scheduler="threads")
    frames = inst.total_frames(NRS, SCIENCE_GROUPS)
    out = build(store, d.parent / "ref", config=_config(d.parent, frames))
    return {**sim, "store": store, "files": out["files"], "frames": frames,
            "science": next((science["dir"] / "uncal").glob("*_uncal.fits"))}


def _config(folder, frames):
    path = folder / "frames.toml"
    path.write_text(f"[dark]\nframes = {frames}\n")
    return path


def test_the_superbias_is_the_level_at_time_zero(nrs):
    """Before: 2 g1 - g2 sat at -2.5 frame times, so the superbias of a pixel of rate r was
    low by 2.5 r t_frame (here 3.9 s x r)."""
    truth = nrs["truth"]
    with dm.SuperBiasModel(nrs["files"]["superbias"]) as sb:
        resid = sb.data.astype(np.float64) - truth["bias"]
    rows = np.arange(resid.shape[0]) % 2
    good = ~truth["refpix"] & ~truth["rc"] & ~truth["ipc_neighbour"]
    for par in (0, 1):  # the even/odd-row offsets jwst refpix removes
        resid[rows == par] -= np.median(resid[(rows == par)[:, None] & good])
    hot = good & truth["hot"] & (truth["rate"] < 300)
    slope = np.polyfit(truth["rate"][hot], resid[hot], 1)[0]
    print(f"\nsuperbias - truth against the true rate of {hot.sum()} hot pixels: "
          f"{slope:+.3f} s (the old 2 g1 - g2: {-2.5 * TFRAME:+.3f} s)")
    assert abs(slope) < 0.25 * TFRAME


def test_the_dark_is_one_frame_per_plane(nrs):
    truth = nrs["truth"]
    with dm.DarkNirspecModel(nrs["files"]["dark"]) as d:
        assert (d.meta.exposure.nframes, d.meta.exposure.groupgap) == (1, 0)
        assert d.meta.exposure.ngroups == d.data.shape[0] == nrs["frames"]
        assert d.meta.exposure.p_readpatt == "NRS|NRSRAPID|"
        cube = d.data[:, :, :].astype(np.float64)
    t = (np.arange(cube.shape[0]) + 1) * TFRAME
    hot = truth["hot"] & ~truth["rc"] & ~truth["ipc_neighbour"] & (truth["rate"] < 300)
    ratio = cube[:, hot] / (truth["rate"][hot] * t[:, None])
    print(f"dark cube / (true rate x frame time), hot pixels: median {np.median(ratio):.4f}")
    assert abs(np.median(ratio) - 1) < 0.02


def test_jwst_subtracts_bias_and_dark_of_a_longer_nrs_ramp_without_extrapolation(nrs, tmp_path,
                                                                                no_network):
    """A 12-group NRS science ramp (59 frames; the darks span 39): our 59-plane DARK covers
    it, stcal averages its frames to NRS groups, and after superbias and dark subtraction the
    hot pixels' ramps are flat at zero (before the fix their level was off by 2.5 r t_frame,
    from the superbias)."""
    from jwst.dark_current import DarkCurrentStep
    from jwst.dq_init import DQInitStep
    from jwst.linearity import LinearityStep
    from jwst.refpix import RefPixStep
    from jwst.saturation import SaturationStep
    from jwst.superbias import SuperBiasStep

    R.configure_crds()
    files, kit, truth = nrs["files"], R.refkit_files(nrs["dir"] / "refkit"), nrs["truth"]
    m = dm.RampModel(str(nrs["science"]))
    assert (m.meta.exposure.readpatt, m.meta.exposure.ngroups) == ("NRS", SCIENCE_GROUPS)
    m = DQInitStep.call(m, override_mask=kit["mask"])
    m = SaturationStep.call(m, override_saturation=kit["saturation"],
                            override_superbias=files["superbias"])
    m = SuperBiasStep.call(m, override_superbias=files["superbias"])
    m = RefPixStep.call(m, override_refpix="N/A", override_sirskernel="N/A")
    m = LinearityStep.call(m, override_linearity=kit["linearity"])
    messages = []

    class Catch(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    catch = Catch()
    logging.getLogger("stcal").addHandler(catch)
    try:
        m = DarkCurrentStep.call(m, override_dark=files["dark"])
    finally:
        logging.getLogger("stcal").removeHandler(catch)
    assert m.meta.cal_step.dark_sub == "COMPLETE"
    assert not [x for x in messages if "extrapolat" in x.lower() or "not enough" in x.lower()]
    after = m.data[0].astype(np.float64)
    usable = ((m.groupdq[0] & (inst.DQ["JUMP_DET"] | inst.DQ["SATURATED"])) == 0).all(axis=0)
    hot = truth["hot"] & ~truth["rc"] & ~truth["ipc_neighbour"] & usable & (truth["rate"] < 300)
    # what is left of each hot pixel after both steps, a line in time: its slope is the
    # pixel's rate error (our DRK against this exposure's Poisson rate); its value at time 0 is
    # the pixel's reset offset (kTC noise, independent of the rate) plus, before the fix, the
    # superbias error +2.5 r t_frame: so the intercept's trend with the rate is that error
    t = (np.arange(SCIENCE_GROUPS) * 5 + 2.5) * TFRAME
    ramp_slope, intercept = np.polyfit(t, after[:, hot], 1)
    trend = np.polyfit(truth["rate"][hot], intercept, 1)[0]
    print(f"hot pixels ({hot.sum()}) after superbias and dark: value at t = 0 against the true "
          f"rate {trend:+.3f} s (the old superbias: {2.5 * TFRAME:+.3f} s); ramp slope / rate "
          f"{np.median(ramp_slope / truth['rate'][hot]):+.4f}")
    assert hot.sum() > 100 and abs(trend) < 0.25 * TFRAME
    assert abs(np.median(ramp_slope / truth["rate"][hot])) < 0.05  # the dark removed the ramps

@pytest.mark.slow
def test_nrsirs2_superbias_and_dark_against_truth(tmp_path_factory):
    """NRSIRS2 (5 frames averaged per group) full frame: the superbias at time 0 (a = 0.6)."""
    sim = _make(tmp_path_factory, "irs2multi", readout="irs2", readpatt="NRSIRS2", ngroups=4,
                nexp=3, seed=23)
    d = sim["dir"]
    manifest = d.parent / "m.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), manifest)
    calibrate(manifest, d.parent / "s.zarr", refkit=d / "refkit", scheduler="local:2")
    files = build(d.parent / "s.zarr", d.parent / "ref", config=None)["files"]
    truth = sim["truth"]
    with dm.SuperBiasModel(files["superbias"]) as sb:
        resid = sb.data.astype(np.float64) - truth["bias"]
    normal = inst.irs2_normal_rows("NRS1")
    hot = np.zeros(resid.shape, bool)
    hot[normal] = truth["hot"] & ~truth["rc"] & ~truth["ipc_neighbour"] & (truth["rate"] < 100)
    rate = np.zeros(resid.shape)
    rate[normal] = truth["rate"]
    resid -= np.median(resid[hot])
    slope = np.polyfit(rate[hot], resid[hot], 1)[0]
    print(f"\nIRS2 superbias - truth against the true rate: {slope:+.3f} s "
          f"(2 g1 - g2 would give {-2 * 14.5889:+.2f} s)")
    assert abs(slope) < 0.25 * 14.5889
