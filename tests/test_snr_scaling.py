"""The report's Table 4 relation SNR ~ sqrt(N) for the build's delivery SNR (the 3-sigma
clipped median of DRK / UNC), measured on builds of the first 4, 8 and 12 inputs of one store.

What keeps the SNR from following sqrt(N) on short subarray ramps (tests/test_periods.py:
SNR / sqrt(N) = 0.098, 0.201, 0.140 on 10-group SUBS200A1 NRSRAPID) is the pedestal: the
reference-pixel correction leaves each exposure a slope offset common to all its pixels, with
sigma ~ 5-6 DN x sqrt(12 / ngroups^3) / tgroup per exposure (NRSRAPID; NRS groups average 4
frames: half of it).  DRK's median is the true median rate plus the mean of the N offsets, so
the SNR follows sqrt(N) only when the mean of 4 offsets is small against the dark rate
(0.0084 DN/s on NRS1): there the per-exposure offsets have sigma 0.36 DN/s, 43 x the rate.

The configuration here is the cheapest found that brings the offset down to ~0.07 x the rate
(measured 0.054-0.065 x over seeds 1-3): SUB1024A (32 x 1024; the edgeless SUB512/SUB512S
are out, jwst's refpix uses their outer science rows as reference and takes ~0.005 DN/s of
the dark away), NRS readout (tgroup = 5 frames, half the per-group pedestal, 5 x the exposure
time per group of NRSRAPID), 400 groups (902 s ramps), 12 exposures.  With 300 groups the
offsets were 0.07-0.13 x the rate and seed 3 gave SNR(12) / sqrt(12) 6.2 % under the mean.
It is a ``slow`` test: 208-234 s on 2 shared cores (fixture 167-212 s: simulation and jwst; the
three builds and predictions 22-31 s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

N_INPUTS = (4, 8, 12)
TOLERANCE = 0.10


@pytest.fixture(scope="module")
def long_ramp_store(tmp_path_factory):
    """SUB1024A TRAD NRS, 400 groups (902 s), 12 clean NRS1 exposures, seed 1, calibrated
    into a store on the threads scheduler."""
    from nrsdark_dask.stages.calibrate import calibrate
    from nrsdark_dask.stages.select import select_inputs, write_manifest
    from nrsdark_dask.simulate import SimConfig, simulate_dataset

    root = tmp_path_factory.mktemp("snr_scaling")
    simulate_dataset(root / "sim", SimConfig(subarray="SUB1024A", readpatt="NRS", ngroups=400,
                                             nexp=12, seed=1, gratings={"G395H": 1}),
                     workers=2)
    rows = select_inputs([root / "sim" / "uncal"], telemetry=root / "sim" / "telemetry.ecsv")
    write_manifest(rows, root / "m.ecsv")
    store = root / "s.zarr"
    summary = calibrate(root / "m.ecsv", store, refkit=root / "sim" / "refkit",
                        scheduler="threads")
    assert not summary["failed"]
    return store


def within_of_mean(values: dict, tolerance: float) -> bool:
    """Every value within ``tolerance`` (relative) of the values' mean."""
    mean = float(np.mean(list(values.values())))
    return all(abs(v / mean - 1) < tolerance for v in values.values())


@pytest.mark.slow
def test_snr_grows_as_sqrt_n(long_ramp_store, tmp_path):
    """Builds of the first 4, 8 and all 12 inputs (in date order): SNR / sqrt(N) is one number
    within 10 % (each within 10 % of the three's mean), and the build's SNR is what
    ``reduce.rate_snr`` (the planner's and the periods' prediction) computes from the rate
    images alone.

    Each value within 10 % of the mean, not SNR(8)/SNR(4) and SNR(12)/SNR(4) against sqrt(2)
    and sqrt(3): UNC is the standard deviation of N rates / sqrt(N), and the median of DRK /
    UNC over few inputs comes out high (Student t; with the clipping and the log-normal rates:
    x1.06 at N = 4 and x1.02 at N = 8 relative to N = 12, simulated without pedestal).  That
    bias alone takes 6 of the 10 % of the ratio SNR(12)/SNR(4)/sqrt(3), but only +3.5/-2.5 %
    of the deviations from the mean, which leaves room for the pedestal (here ~0.07 x the rate:
    ~3.5 % on the mean of 4) and the median's scatter (~1 %).
    Measured (seed 1): SNR 5.042, 6.672, 7.934; SNR / sqrt(N) 2.521, 2.359, 2.290 (+5.5, -1.3,
    -4.2 % from their mean); SNR(8)/SNR(4)/sqrt(2) 0.936, SNR(12)/SNR(4)/sqrt(3) 0.909."""
    import dask

    from nrsdark_dask.stages.build import build
    from nrsdark_dask.reduction.delivery import rate_snr
    from nrsdark_dask.store import open_dataset

    ids = [str(e) for e in open_dataset(long_ramp_store).exposure.values]
    assert len(ids) == 12
    snr, predicted = {}, {}
    for n in N_INPUTS:
        res = build(long_ramp_store, tmp_path / f"n{n}", scheduler="threads", exclude=ids[n:])
        assert res["stats"]["n_exposures"] == n
        snr[n] = float(res["stats"]["snr"])
        ds = open_dataset(long_ramp_store, exclude=ids[n:])
        predicted[n] = float(dask.compute(rate_snr(ds)["snr"], scheduler="sync")[0])
    scaled = {n: snr[n] / math.sqrt(n) for n in N_INPUTS}
    mean = float(np.mean(list(scaled.values())))
    report = {n: (round(snr[n], 4), round(scaled[n], 4), f"{scaled[n] / mean - 1:+.3f}")
              for n in N_INPUTS}
    print(f"N: (SNR, SNR/sqrt(N), deviation from mean) {report}")
    assert predicted == pytest.approx(snr, rel=1e-9), (predicted, snr)
    assert within_of_mean(scaled, TOLERANCE), report
