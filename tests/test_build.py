"""nrsdark build: CRDS-format files that stdatamodels validates and jwst's own steps consume."""

import numpy as np
import pytest
from astropy.io import fits
from stdatamodels.jwst import datamodels as dm

from nrsdark_dask.calibration import recipe as R
from nrsdark_dask.cli import main as cli
from nrsdark_dask.instrument import DQ
from nrsdark_dask.stages.build import build


@pytest.fixture(scope="module")
def built(sci, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    kit_mask = next((sci["dir"] / "refkit").glob("*_mask.fits"))
    return build(sci["store"], out, mask_in=kit_mask)


def test_files_validate_and_carry_crds_keywords(built, sci):
    files = built["files"]
    assert set(files) == {"dark", "superbias"}  # a subarray build: no MASK (report §6)
    exps = sci["truth"]["exposures"][:-1]  # the store's inputs
    first, last = min(exps["start"])[:10], max(exps["start"])[:10]
    for reftype, path in files.items():
        h = fits.getheader(path)
        assert h["REFTYPE"] == reftype.upper()
        assert h["PEDIGREE"] == f"INFLIGHT {first} {last}"
        assert first <= h["USEAFTER"][:10] <= last
        for key in ("DETECTOR", "READPATT", "P_READPA", "SUBARRAY", "EXP_TYPE", "P_EXP_TY",
                    "AUTHOR", "DESCRIP"):
            assert h[key], key
        history = "\n".join(str(c) for c in h["HISTORY"])
        assert "Input: " + exps["filename"][0] in history and "jwst" in history
        with fits.open(path) as hdul:
            assert "DQ_DEF" in hdul
            for hdu in hdul[1:]:
                if hdu.is_image and hdu.data.dtype.kind == "f":
                    assert np.isfinite(hdu.data).all(), hdu.name
    with dm.DarkNirspecModel(files["dark"]) as d:
        assert d.data.shape == (60, 128, 2048) and d.dark_rate.shape == (128, 2048)
        assert d.meta.exposure.ngroups == 60 and d.meta.exposure.nframes == 1
        assert d.meta.exposure.groupgap == 0
    with fits.open(files["dark"]) as hdul:
        assert "GROUPDQ" not in hdul  # not in the DarkNirspecModel schema: nobody reads it
    s = built["stats"]
    print(f"\nbuild: hot {s['n_hot']} (new {s['n_new_hot']}), RC {s['n_rc']}, TELEGRAPH "
          f"{s['n_telegraph']} ({100 * s['telegraph_fraction']:.2f} %), negative rates "
          f"{100 * s['negative_rate_fraction']:.1f} %")


def test_jwst_consumes_our_files(built, sci, tmp_path, no_network):
    """superbias, dark_current and dq_init with our files as overrides, on a held-out
    exposure: the hot pixels' dark is removed, and our DQ reaches the science DQ."""
    from jwst.dark_current import DarkCurrentStep
    from jwst.dq_init import DQInitStep
    from jwst.linearity import LinearityStep
    from jwst.refpix import RefPixStep
    from jwst.saturation import SaturationStep
    from jwst.superbias import SuperBiasStep

    R.configure_crds()
    files, kit = built["files"], R.refkit_files(sci["dir"] / "refkit")
    truth = sci["truth"]
    m = dm.RampModel(str(sci["held_out"]))
    m = DQInitStep.call(m, override_mask=kit["mask"])  # a subarray build writes no MASK
    m = SaturationStep.call(m, override_saturation=kit["saturation"],
                            override_superbias=files["superbias"])
    m = SuperBiasStep.call(m, override_superbias=files["superbias"])
    m = RefPixStep.call(m, override_refpix="N/A", override_sirskernel="N/A")
    m = LinearityStep.call(m, override_linearity=kit["linearity"])
    before = m.data[0].astype(np.float64)
    m = DarkCurrentStep.call(m, override_dark=files["dark"])
    assert m.meta.cal_step.superbias == "COMPLETE" and m.meta.cal_step.dark_sub == "COMPLETE"
    after = m.data[0].astype(np.float64)
    gdq = m.groupdq[0]

    with dm.DarkNirspecModel(files["dark"]) as d:
        dark_dq = d.dq.copy()
    t = (np.arange(60) + 1.0) * m.meta.exposure.frame_time
    # hot pixels are DO_NOT_USE in the mask (for science); here we look at their ramps anyway
    usable = (gdq & (DQ["JUMP_DET"] | DQ["SATURATED"])) == 0
    clean = usable.all(axis=0)
    tc = t - t.mean()

    def slope(cube):
        return np.tensordot(tc, cube - cube.mean(axis=0), axes=(0, 0)) / (tc**2).sum()

    s_before, s_after = slope(before), slope(after)
    hot = truth["hot"] & clean & ~truth["ipc_neighbour"] & (truth["rate"] < 200) \
        & ((dark_dq & DQ["UNRELIABLE_DARK"]) != 0)  # HOT implies UNRELIABLE_DARK
    assert hot.sum() > 200
    rel = np.median(s_after[hot]) / np.median(s_before[hot])
    print(f"\nhot pixels: dark rate before {np.median(s_before[hot]):.3f} DN/s, residual after "
          f"dark subtraction {np.median(s_after[hot]):+.4f} DN/s ({100 * rel:+.2f} %)")
    assert abs(rel) < 0.03
    # residual of the hot pixels consistent with their noise (Poisson + read noise)
    sigma = np.sqrt(12 * 12.7**2 / 2 / (60 * (60**2 - 1)) / 2.8686**2
                    + 6 * (60**2 + 1) / (5 * 60 * (60**2 - 1)) * truth["rate"][hot] / 2.8686)
    pull = s_after[hot] / sigma
    print(f"hot residual pulls: median {np.median(pull):+.3f}, "
          f"robust std {1.4826 * np.median(np.abs(pull - np.median(pull))):.3f}")
    assert abs(np.median(pull)) < 0.5
    quiet = clean & ~truth["hot"] & ~truth["rc"] & ~truth["refpix"] & ~truth["ipc_neighbour"]
    print(f"other pixels: median residual slope {np.median(s_after[quiet]):+.5f} DN/s")
    assert abs(np.median(s_after[quiet])) < 0.02  # within the pedestal noise of one exposure
    # our flags reach the science pixel DQ; new hot pixels (not in the input mask) as
    # UNRELIABLE_DARK, through the DARK
    pdq = m.pixeldq
    for name in ("RC", "TELEGRAPH", "UNRELIABLE_DARK"):
        ours = (dark_dq & DQ[name]) != 0
        assert ours.any(), name
        assert ((pdq & DQ[name]) != 0)[ours].all(), name
    with dm.MaskModel(kit["mask"]) as mk:
        new_hot = truth["hot"] & ((mk.dq & DQ["HOT"]) == 0) & ~truth["refpix"]
    assert new_hot.sum() > 50 and ((pdq & DQ["UNRELIABLE_DARK"]) != 0)[new_hot].mean() > 0.99


def test_cli_build(sci, tmp_path, capsys):
    assert cli.main(["build", "--store", str(sci["store"]), "--outdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "DARK" in out and "SUPERBIAS" in out and "TELEGRAPH" in out
    assert cli.main(["build", "--store", str(tmp_path / "none.zarr"), "--outdir",
                     str(tmp_path)]) == 2
