"""The simulated detector: parameters with their sources, and the static per-pixel truth.

Everything that does not change between exposures lives in :class:`DetectorTruth`, made once
per data set from its seed on the full 2048 x 2048 frame (so every subarray of one detector sees
the same pixels) and then cut to the data set's geometry.  The numbers below are order-of-
magnitude realistic, chosen from the sources cited; they are parameters, not measurements.

Sources
-------
* [R09226] JWST-STScI-009226 (this project's report): median dark rates 0.0083-0.0086 DN/s NRS1,
  0.0049-0.0051 DN/s NRS2 (TRAD, Table 4); ~9000-10000 hot pixels (> 1 DN/s) NRS1 and
  ~4200-5600 NRS2 per full frame; ~0.6 % RTN pixels; ASIC temperatures 43.3-43.6 K (Table 2).
* [Rauscher14] Rauscher et al. 2014, PASP 126, 739 (NIRSpec detector noise: white read noise,
  correlated 1/f noise common to the outputs, alternating column noise, reset/kTC noise).
* [Rauscher17] Rauscher et al. 2017, PASP 129, 105003 (IRS2: correlated noise nearly removed).
* [Rauscher07] Rauscher et al. 2007 (random telegraph noise in H2RGs, < 1 % of pixels).
* [JDox-CR] JDox "Cosmic rays": ~5 events cm^-2 s^-1 at L2; snowballs a few per detector per
  1000 s.  18 um NIRSpec pixels.
* [Schlawin20] Schlawin et al. 2020 (RC pixels: exponential, saturating ramps).
* IPC ~ 0.5-1 % per nearest neighbour for HgCdTe H2RGs (typical published values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import instrument as inst


@dataclass(frozen=True)
class NoiseParams:
    """Per-frame noise amplitudes in DN (rms).  The IRS2 values describe the raw data whose
    common-mode part our reference kit's IRS2 table removes (see ``noise.py``)."""

    white: float = 9.0  # uncorrelated read noise per frame [Rauscher14]
    common_1f: float = 6.0  # 1/f noise common to all outputs (and IRS2 reference output)
    amp_1f: float = 2.0  # independent 1/f per output
    acn: float = 1.5  # alternating column noise (even/odd detector columns) per output
    reset: float = 15.0  # per-pixel kTC reset offset, new each exposure
    amp_offset: float = 40.0  # per-output offset, new each exposure


TRAD_NOISE = NoiseParams()
IRS2_NOISE = NoiseParams(amp_1f=0.7, acn=0.4, amp_offset=5.0)


@dataclass(frozen=True)
class DetectorParams:
    """Populations and levels for one detector; counts are per *full frame*."""

    median_rate: float  # DN/s, normal pixels [R09226 Table 4]
    rate_sigma_ln: float = 0.35  # lognormal width of normal-pixel rates
    n_hot: int = 9000  # true rate > 1 DN/s [R09226 Table 4]
    hot_gap: tuple[float, float] = (0.8, 1.25)  # no true rate inside: scoring measures the code
    hot_pareto_index: float = 1.1  # long tail above 1 DN/s
    hot_max_rate: float = 3000.0
    warm_fraction: float = 0.005  # 0.05-0.8 DN/s
    rc_fraction: float = 1e-4  # RC pixels [Schlawin20]; ~420 per full frame
    rtn_fraction: float = 0.005  # [Rauscher07], report sees 0.61 %
    badref_fraction: float = 0.005  # of the reference pixels
    known_hot_fraction: float = 0.7  # hot pixels already in the input MASK reference file
    gain: float = 1.0  # e-/DN
    bias_levels: tuple[float, float, float, float] = (12500.0, 13800.0, 12900.0, 14100.0)
    bias_pixel_sigma: float = 350.0
    full_well: float = 45000.0  # DN of true signal at hard saturation
    nonlin_k: float = 2.2e-6  # measured = S - k S^2: ~10 % low at full well
    ipc_alpha: float = 0.007  # fraction of a pixel's charge seen by each 4-neighbour
    asic_temp: float = 43.63  # K, quiet ASIC [R09226 Table 2]


DETECTOR_PARAMS = {
    "NRS1": DetectorParams(median_rate=0.0083, n_hot=9000),
    "NRS2": DetectorParams(
        median_rate=0.0050,
        n_hot=4500,
        gain=1.1,
        bias_levels=(11800.0, 13100.0, 12400.0, 13600.0),
        asic_temp=43.38,
    ),
}

CR_RATE = 5.0  # events cm^-2 s^-1 [JDox-CR]
PIXEL_CM = 18e-4
SNOWBALL_RATE = 3e-3  # per second per full frame [JDox-CR], order of magnitude
DAYS_PER_MONTH = 30.44
HOT_GROWTH_MAX_RATE = 100.0  # DN/s, cap of the pixels that become hot (add_hot_growth)


@dataclass
class DetectorTruth:
    """Static truth on a geometry (science layout, DMS orientation, shape (ny, nx)).

    Arrays: ``bias`` (DN, raw layout: 3200 rows for IRS2), ``rate`` (DN/s, mean dark current
    including IPC from hot neighbours; 0 on reference pixels; base rate on RC pixels),
    ``rc_amp``/``rc_tau`` (DN, s), ``rtn_amp`` (DN), ``rtn_p`` (toggle probability per group),
    boolean masks ``hot, warm, rc, rtn, badref, ipc_neighbour, refpix, known_hot``,
    ``badref_noise`` (extra white noise, DN) and ``badref_drift`` (DN/s), ``gain``,
    ``full_well`` (DN), ``nonlin_k`` (1/DN), ``saturation`` (raw DN threshold for the kit).
    """

    detector: str
    subarray: inst.Subarray
    family: str
    params: DetectorParams
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __getattr__(self, name):
        try:
            return self.__dict__["arrays"][name]
        except KeyError:
            raise AttributeError(name) from None

    def counts(self) -> dict[str, int]:
        out = {k: int(self.arrays[k].sum()) for k in ("hot", "warm", "rc", "rtn", "badref")}
        if "onset_mjd" in self.arrays:
            out["new_hot"] = int(np.isfinite(self.arrays["onset_mjd"]).sum())
        return out

    def summary(self) -> dict:
        return {"detector": self.detector, "subarray": self.subarray.name,
                "family": self.family, "params": asdict(self.params), "counts": self.counts()}


def _choose(rng, candidates: np.ndarray, n: int) -> np.ndarray:
    return rng.choice(candidates, size=min(n, candidates.size), replace=False)


def make_truth(detector: str, subarray: inst.Subarray, family: str, seed: int) -> DetectorTruth:
    """Build the static truth on the full frame from ``seed``, then cut it to ``subarray``.

    Population sizes on a subarray are therefore the full-frame densities times its area,
    and the same pixel is hot in every subarray that contains it.
    Peak memory: ~20 full-frame float32/bool maps, about 250 MB.
    """
    p = DETECTOR_PARAMS[detector]
    rng = np.random.default_rng([seed, 0 if detector == "NRS1" else 1])
    n = inst.FULL_SIZE
    full = inst.SUBARRAYS["FULL"]
    refpix = inst.reference_pixel_mask(full)
    active = np.flatnonzero(~refpix.ravel())
    shape = (n, n)

    rate = rng.lognormal(np.log(p.median_rate), p.rate_sigma_ln, n * n).astype(np.float32)
    masks = {k: np.zeros(n * n, bool) for k in ("hot", "warm", "rc", "rtn", "badref", "known_hot")}

    # exclusive populations among active pixels: hot, warm, RC
    n_rc = round(p.rc_fraction * active.size)
    n_warm = round(p.warm_fraction * active.size)
    special = _choose(rng, active, p.n_hot + n_rc + n_warm)
    hot_i, rc_i, warm_i = np.split(special, [p.n_hot, p.n_hot + n_rc])
    masks["hot"][hot_i] = masks["rc"][rc_i] = masks["warm"][warm_i] = True
    # Pareto tail above the gap's upper edge
    u = rng.random(hot_i.size)
    rate[hot_i] = np.minimum(p.hot_gap[1] * u ** (-1.0 / p.hot_pareto_index), p.hot_max_rate)
    rate[warm_i] = np.exp(rng.uniform(np.log(0.05), np.log(p.hot_gap[0]), warm_i.size))
    masks["known_hot"][_choose(rng, hot_i, round(p.known_hot_fraction * hot_i.size))] = True

    rc_amp = np.zeros(n * n, np.float32)
    rc_tau = np.zeros(n * n, np.float32)
    # high, non-linear rates that saturate within seconds to about a minute, so jwst flags
    # their first groups as jumps or saturated (report §4.1.3)
    rc_amp[rc_i] = np.exp(rng.uniform(np.log(4e4), np.log(4e5), rc_i.size))
    rc_tau[rc_i] = rng.uniform(5.0, 30.0, rc_i.size)

    # RTN: any active non-hot, non-RC pixel
    rtn_cand = np.setdiff1d(active, np.concatenate([hot_i, rc_i]), assume_unique=True)
    rtn_i = _choose(rng, rtn_cand, round(p.rtn_fraction * active.size))
    masks["rtn"][rtn_i] = True
    rtn_amp = np.zeros(n * n, np.float32)
    rtn_p = np.zeros(n * n, np.float32)
    rtn_amp[rtn_i] = np.exp(rng.uniform(np.log(60.0), np.log(250.0), rtn_i.size))
    rtn_p[rtn_i] = rng.uniform(0.05, 0.3, rtn_i.size)

    # bad reference pixels: half noisy, half drifting
    ref_i = np.flatnonzero(refpix.ravel())
    bad_i = _choose(rng, ref_i, round(p.badref_fraction * ref_i.size))
    masks["badref"][bad_i] = True
    badref_noise = np.zeros(n * n, np.float32)
    badref_drift = np.zeros(n * n, np.float32)
    noisy = bad_i[: bad_i.size // 2]
    drift = bad_i[bad_i.size // 2 :]
    badref_noise[noisy] = rng.uniform(5, 10, noisy.size) * TRAD_NOISE.white
    badref_drift[drift] = rng.choice([-1, 1], drift.size) * rng.uniform(0.3, 2.0, drift.size)
    rate[ref_i] = 0.0

    rate = rate.reshape(shape)
    # IPC: neighbours of hot and RC pixels see ipc_alpha of their charge
    bright = (masks["hot"] | masks["rc"]).reshape(shape)
    ipc_nb = _neighbours(bright) & ~bright & ~refpix
    hot_rate = np.where(masks["hot"].reshape(shape), rate, 0.0)
    rate = rate + p.ipc_alpha * _neighbour_sum(hot_rate) * ~refpix

    # bias: per-amp level, smooth gradient, pixel pattern, static even/odd detector columns
    amp = inst.amplifier_index(full)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    bias = (
        np.asarray(p.bias_levels, np.float32)[amp][:, None]
        + 300.0 * (xx - 0.5) + 150.0 * (yy - 0.5) ** 2
        + rng.normal(0, p.bias_pixel_sigma, shape).astype(np.float32)
        + np.where(np.arange(n) % 2, 15.0, -15.0)[:, None]
    ).astype(np.float32)
    full_well = (p.full_well * rng.normal(1, 0.03, shape)).astype(np.float32)
    nonlin_k = (p.nonlin_k * rng.normal(1, 0.05, shape)).astype(np.float32)
    gain = (p.gain * rng.normal(1, 0.02, shape)).astype(np.float32)
    measured_fw = full_well - nonlin_k * full_well**2
    saturation = (bias + 0.97 * measured_fw).astype(np.float32)

    arrays = dict(
        bias=bias, rate=rate.astype(np.float32), rc_amp=rc_amp.reshape(shape),
        rc_tau=rc_tau.reshape(shape), rtn_amp=rtn_amp.reshape(shape), rtn_p=rtn_p.reshape(shape),
        badref_noise=badref_noise.reshape(shape), badref_drift=badref_drift.reshape(shape),
        ipc_neighbour=ipc_nb, refpix=refpix, gain=gain, full_well=full_well,
        nonlin_k=nonlin_k, saturation=saturation,
        **{k: v.reshape(shape) for k, v in masks.items()},
    )
    ys, xs = subarray.slices
    cut = {k: np.ascontiguousarray(v[ys, xs]) for k, v in arrays.items()}
    if family == "IRS2":
        cut["bias"] = _irs2_raw_bias(cut["bias"], detector, rng, p)
    return DetectorTruth(detector, subarray, family, p, cut)


def add_hot_growth(truth: DetectorTruth, per_month: float, start_mjd: float, end_mjd: float,
                   seed: int) -> int:
    """Pixels that become hot during the simulated dates (report §7.1: about 100 new hot
    pixels a month on a full frame; report §7.1).  ``per_month``: expected new hot pixels per
    30.44-day month *in the simulated region*; the number is Poisson, each onset date uniform
    over ``[start_mjd, end_mjd]``, each rate from the hot population's Pareto tail capped at
    ``HOT_GROWTH_MAX_RATE`` DN/s.  They are drawn among quiet active pixels (not hot, warm, RC,
    RTN, IPC neighbours or reference pixels) and get no IPC of their own (so their neighbours
    stay quiet: only the onset pixel changes).  Adds the maps ``onset_mjd`` (float64, +inf
    where never) and ``onset_rate`` (DN/s added from the onset on); returns the number."""
    p = truth.params
    rng = np.random.default_rng([seed, 17])
    a = truth.arrays
    quiet = ~(a["hot"] | a["warm"] | a["rc"] | a["rtn"] | a["ipc_neighbour"] | a["refpix"])
    months = (end_mjd - start_mjd) / DAYS_PER_MONTH
    idx = _choose(rng, np.flatnonzero(quiet.ravel()), int(rng.poisson(per_month * months)))
    onset = np.full(quiet.shape, np.inf)
    onset.ravel()[idx] = rng.uniform(start_mjd, end_mjd, idx.size)
    rate = np.zeros(quiet.shape, np.float32)
    u = rng.random(idx.size)
    rate.ravel()[idx] = np.minimum(p.hot_gap[1] * u ** (-1.0 / p.hot_pareto_index),
                                   HOT_GROWTH_MAX_RATE)
    a["onset_mjd"], a["onset_rate"] = onset, rate
    return int(idx.size)


def rate_at(truth: DetectorTruth, mjd: float) -> np.ndarray:
    """The true mean dark rate (DN/s) at date ``mjd``: the static rate plus the pixels that
    have become hot by then (:func:`add_hot_growth`)."""
    a = truth.arrays
    if "onset_mjd" not in a:
        return a["rate"]
    return a["rate"] + np.where(a["onset_mjd"] <= mjd, a["onset_rate"], np.float32(0))


def _irs2_raw_bias(bias: np.ndarray, detector: str, rng, p: DetectorParams) -> np.ndarray:
    """Bias in the 3200-row IRS2 raw layout: science rows where jwst expects normal pixels,
    reference samples and the reference output with their own (lower-contrast) pattern."""
    normal = inst.irs2_normal_rows(detector)
    raw = np.empty((inst.IRS2_RAW_SIZE, bias.shape[1]), np.float32)
    raw[normal] = bias
    n_ref = (~normal).sum()
    raw[~normal] = np.float32(np.mean(p.bias_levels)) + rng.normal(
        0, 0.3 * p.bias_pixel_sigma, (n_ref, bias.shape[1])
    ).astype(np.float32)
    return raw


def _neighbours(mask: np.ndarray) -> np.ndarray:
    out = np.zeros_like(mask)
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _neighbour_sum(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    out[1:] += a[:-1]
    out[:-1] += a[1:]
    out[:, 1:] += a[:, :-1]
    out[:, :-1] += a[:, 1:]
    return out


def linearity_coefficients(k: np.ndarray, order: int = 5) -> np.ndarray:
    """Coefficients c_0..c_order (per pixel) with ``S = sum c_i R^i`` inverting ``R = S - k S^2``.

    The inverse is ``S = (1 - sqrt(1 - 4kR)) / 2k = sum_i Cat(i-1) k^(i-1) R^i`` (Catalan
    numbers); truncated at R^5 it is exact to < 10 DN at full well.  This is the jwst
    linearity convention (``corrected = sum c_i raw^i`` on bias-subtracted DN).
    """
    catalan = [1, 1, 2, 5, 14, 42]
    coeffs = np.zeros((order + 1,) + k.shape, np.float32)
    for i in range(1, order + 1):
        coeffs[i] = catalan[i - 1] * k.astype(np.float64) ** (i - 1)
    return coeffs
