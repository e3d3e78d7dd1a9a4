"""Memory is bounded by the frame, not by the number of groups; full frames (slow)."""

import tracemalloc

import numpy as np
import pytest

from nrsdark_dask import instrument as inst
from nrsdark_dask.calibration import recipe as R
from nrsdark_dask.simulate import SimConfig, read_truth, simulate_dataset
from nrsdark_dask.simulate.exposure import ExposurePlan, write_uncal
from nrsdark_dask.simulate.model import make_truth


def _peak_bytes(truth, ngroups, path):
    plan = ExposurePlan(index=0, filename=path.name, start="2024-01-01T00:00:00",
                        grating="G140H", readpatt="NRSRAPID", ngroups=ngroups, d_temp=0.01)
    tracemalloc.start()
    write_uncal(path, truth, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_peak_memory_does_not_grow_with_groups(tmp_path):
    truth = make_truth("NRS1", inst.SUBARRAYS["ALLSLITS"], "TRAD", seed=1)
    frame = 256 * 2048 * 4  # one float32 frame
    small = _peak_bytes(truth, 4, tmp_path / "a.fits")
    big = _peak_bytes(truth, 40, tmp_path / "b.fits")
    print(f"peak traced memory: 4 groups {small / frame:.1f} frames, 40 groups {big / frame:.1f}")
    assert big < 1.2 * small  # a 40-group cube would be 10x more
    assert big < 30 * frame


@pytest.mark.slow
def test_full_frame_trad_through_detector1(tmp_path):
    """TRAD FULL, 20 groups: simulate and calibrate offline (~40 s, ~2.5 GB)."""
    out = tmp_path / "ff"
    simulate_dataset(out, SimConfig(subarray="FULL", ngroups=20, nexp=1, seed=8))
    truth = read_truth(out / "truth.fits")
    res = R.run_detector1(next((out / "uncal").glob("*.fits")), R.refkit_files(out / "refkit"),
                          workdir=tmp_path)
    try:
        rate, err = res.rate.data, res.rate.err
        good = truth["hot"] & ~truth["ipc_neighbour"] & np.isfinite(rate)
        pull = ((rate - truth["rate"]) / err)[good]
        med = np.median(pull)
        rstd = 1.4826 * np.median(np.abs(pull - med))
        print(f"FULL TRAD 20 groups hot pulls: n={pull.size} median {med:.3f} robust std {rstd:.3f}")
        assert abs(med) < 0.2 and 0.8 < rstd < 1.3
    finally:
        res.close()
