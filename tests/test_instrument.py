import numpy as np
import pytest
from jwst.refpix.irs2_subtract_reference import make_irs2_mask

from nrsdark_dask import instrument as inst


@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
def test_irs2_layout_matches_jwst(detector):
    jwst_mask = make_irs2_mask(3200, 2048, 16, 4)
    if detector == "NRS2":  # jwst strip_ref_pixels reverses the mask for NRS2
        jwst_mask = jwst_mask[::-1]
    ours = inst.irs2_normal_rows(detector)
    assert ours.sum() == 2048
    np.testing.assert_array_equal(ours, jwst_mask)


def test_frame_times_match_spec_and_jdox():
    assert inst.SUBARRAYS["FULL"].frame_time() == pytest.approx(10.737, abs=1e-3)
    assert inst.SUBARRAYS["FULL"].frame_time("IRS2") == pytest.approx(14.589, abs=1e-3)
    assert inst.SUBARRAYS["SUB2048"].frame_time() == pytest.approx(0.90156)
    assert inst.SUBARRAYS["ALLSLITS"].frame_time() == pytest.approx(5.49132)
    with pytest.raises(ValueError, match="IRS2"):
        inst.SUBARRAYS["SUB2048"].frame_time("IRS2")


def test_subarrays_inside_full_frame_and_allslits_encloses_slits():
    allslits = inst.SUBARRAYS["ALLSLITS"]
    for s in inst.SUBARRAYS.values():
        ys, xs = s.slices
        assert 0 <= ys.start < ys.stop <= 2048 and 0 <= xs.start < xs.stop <= 2048
        if s.name.startswith("SUBS") or s.name == "SUB2048":
            assert allslits.ystart <= s.ystart and s.ystart + s.ysize <= allslits.ystart + 256


@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
def test_orientation_round_trip_and_jwst_convention(detector):
    a = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    det = inst.dms_to_detector(a, detector)
    np.testing.assert_array_equal(inst.detector_to_dms(det, detector), a)
    expect = np.swapaxes(a, 1, 2) if detector == "NRS1" else np.swapaxes(a, 1, 2)[:, ::-1, ::-1]
    np.testing.assert_array_equal(det, expect)  # as in jwst irs2 correct_model


def test_group_times_follow_frames_and_gaps():
    p = inst.READ_PATTERNS["NRS"]  # 4 frames averaged, 1 dropped
    t = inst.group_times(p, 1.0, 3)
    np.testing.assert_allclose(t, [2.5, 7.5, 12.5])
    assert inst.group_time(p, 1.0) == 5.0


@pytest.mark.parametrize("fn,arg", [(inst.get_subarray, "SUB999"),
                                    (inst.get_read_pattern, "NRSFAST"),
                                    (inst.check_detector, "NRS3")])
def test_unknown_names_are_clear_errors(fn, arg):
    with pytest.raises(ValueError, match="unknown .*known:"):
        fn(arg)


def test_dq_bits_come_from_stdatamodels():
    assert inst.DQ["HOT"] == 2048 and inst.DQ["TELEGRAPH"] == 32768
