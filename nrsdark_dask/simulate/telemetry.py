"""Simulated ASIC temperature telemetry (engineering-database style), as an ECSV table.

One row per sample: ``time`` (UTC ISO), ``detector``, ``asic_temp`` (K).  Samples every 60 s
from 10 min before each exposure to 10 min after it, reported to 0.001 K.  A quiet ASIC sits at
the detector's nominal temperature (43.63 K NRS1, 43.38 K NRS2, report Table 2) with mK noise
scaled so that Tmax - Tmin over that window is the plan's ``d_temp`` (0.01 or 0.02 K).  After a
readout-mode switch the ASIC settles exponentially (tau = 2000 s), again with range ``d_temp``
(0.05-0.2 K) - the same number that sets the amplitude of the injected bias-drift artifact.  The table knows nothing about files: like real telemetry it is matched to
exposures by time and detector.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from astropy.table import Table
from astropy.time import Time

QUIET_NOISE_K = 0.002
SETTLE_TAU_S = 2000.0
PAD_S = 600.0
STEP_S = 60.0


def exposure_samples(rng, start: str, duration: float, t0: float, d_temp: float,
                     mode_switch: bool):
    """Times and temperatures from ``PAD_S`` before to ``PAD_S`` after one exposure; their range
    (Tmax - Tmin over before, during and after, as in report §3) equals ``d_temp``."""
    t = np.arange(-PAD_S, duration + PAD_S + 1e-6, STEP_S)
    if mode_switch:
        # the ASIC was switched 5 min before the window opens and is still settling
        shape = np.exp(-(t + PAD_S + 300.0) / SETTLE_TAU_S)
    else:
        shape = rng.normal(0, QUIET_NOISE_K, t.size)
    temp = t0 + d_temp * (shape - shape.min()) / np.ptp(shape)
    times = Time(start, scale="utc") + t * dt.timedelta(seconds=1)
    return times, np.round(temp, 3)


def telemetry_table(samples: list[tuple], detector: str) -> Table:
    """``samples``: list of (times, temps) per exposure; returns a time-sorted table."""
    times = Time(np.concatenate([s[0].isot for s in samples]), scale="utc")
    temps = np.concatenate([s[1] for s in samples])
    order = np.argsort(times.mjd)
    tab = Table({"time": times[order].isot, "detector": [detector] * temps.size,
                 "asic_temp": temps[order]})
    tab["asic_temp"].unit = "K"
    tab.meta["description"] = "Simulated NIRSpec ASIC temperature telemetry"
    tab.meta["source"] = "nrsdark_dask simulator"
    return tab
