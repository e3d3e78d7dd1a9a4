"""One simulated exposure: ramp generation group by group, written as a jwst Level-1b uncal file.

Peak memory is about 15 frame-sized float32 arrays (truth maps, signal, noise, the frame being
written; measured with tracemalloc in tests/test_simulate_scale.py), whatever the number of
groups, because each group is streamed to disk as soon as it exists: 0.68 GB peak RSS for a
TRAD full frame, 0.89 GB for IRS2 (3200-row raw frames).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np
from astropy.io import fits
from astropy.time import Time

from .. import __version__
from .. import instrument as inst
from . import events as ev
from .model import IRS2_NOISE, TRAD_NOISE, DetectorTruth, rate_at
from .noise import ReadNoise

FILTER_FOR_DARKS = "OPAQUE"


@dataclass
class ExposurePlan:
    """What one exposure is; decided up front by the data-set planner (``dataset.py``)."""

    index: int
    filename: str
    start: str  # ISO UTC
    grating: str
    readpatt: str
    ngroups: int
    d_temp: float  # ASIC Tmax - Tmin over the exposure, K
    mode_switch: bool = False
    glow: bool = False
    persistence: bool = False
    seed: int = 0
    glow_rate: float = 0.0  # peak MSA-glow rate, DN/s (with glow)
    persistence_scale: float = 1.0  # multiplies the persistence rates (with persistence)
    snowball_scale: float = 1.0  # multiplies the snowball rate
    # filled by the simulation
    n_cosmic_rays: int = 0
    n_snowballs: int = 0
    events: list = field(default_factory=list)

    def row(self) -> dict:
        d = asdict(self)
        d.pop("events")
        return d


def timing(truth: DetectorTruth, plan: ExposurePlan) -> dict:
    pattern = inst.get_read_pattern(plan.readpatt)
    tframe = truth.subarray.frame_time(truth.family)
    tgroup = inst.group_time(pattern, tframe)
    times = inst.group_times(pattern, tframe, plan.ngroups)
    return dict(pattern=pattern, tframe=tframe, tgroup=tgroup, times=times,
                duration=inst.exposure_duration(pattern, tframe, plan.ngroups),
                effinttm=(plan.ngroups - 1) * tgroup)


def primary_header(truth: DetectorTruth, plan: ExposurePlan, t: dict) -> fits.Header:
    """Level-1b primary header for a NIRSpec dark (keywords as in archive uncal files)."""
    sub = truth.subarray
    start = Time(plan.start, scale="utc")
    end = start + dt.timedelta(seconds=t["duration"])
    fast, slow = inst.fast_slow_axes(truth.detector)
    h = fits.Header()
    cards = [
        ("DATE", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "file creation"),
        ("ORIGIN", "nrsdark_dask", "simulated by nrsdark_dask"),
        ("TIMESYS", "UTC", ""),
        ("FILENAME", plan.filename, ""),
        ("FILETYPE", "uncalibrated", ""),
        ("DATAMODL", "Level1bModel", ""),
        ("TELESCOP", "JWST", ""),
        ("INSTRUME", "NIRSPEC", ""),
        ("DETECTOR", truth.detector, ""),
        ("FILTER", FILTER_FOR_DARKS, ""),
        ("GRATING", plan.grating, ""),
        ("PROGRAM", "90001", "simulated program"),
        ("OBSERVTN", f"{plan.index // 10 + 1:03d}", ""),
        ("VISIT", "001", ""),
        ("VISITGRP", "02", ""),
        ("SEQ_ID", "1", ""),
        ("ACT_ID", "01", ""),
        ("EXPOSURE", f"{plan.index % 10 + 1:05d}", ""),
        ("EXP_TYPE", "NRS_DARK", ""),
        ("DATE-OBS", start.isot[:10], ""),
        ("TIME-OBS", start.isot[11:23], ""),
        ("DATE-BEG", start.isot, ""),
        ("DATE-END", end.isot, ""),
        ("EXPSTART", start.mjd, "MJD UTC"),
        ("EXPMID", (start.mjd + end.mjd) / 2, "MJD UTC"),
        ("EXPEND", end.mjd, "MJD UTC"),
        ("READPATT", plan.readpatt, ""),
        ("NINTS", 1, ""),
        ("NGROUPS", plan.ngroups, ""),
        ("NFRAMES", t["pattern"].nframes, ""),
        ("GROUPGAP", t["pattern"].groupgap, ""),
        ("FRMDIVSR", t["pattern"].nframes, ""),
        ("NSAMPLES", 1, ""),
        ("DRPFRMS1", 0, ""),
        ("DRPFRMS3", 0, ""),
        ("TSAMPLE", 10.0, "us"),
        ("TFRAME", t["tframe"], "s"),
        ("TGROUP", t["tgroup"], "s"),
        ("EFFINTTM", t["effinttm"], "s"),
        ("EFFEXPTM", t["effinttm"], "s"),
        ("DURATION", t["duration"], "s"),
        ("ZEROFRAM", False, ""),
        ("SUBARRAY", sub.name, ""),
        ("SUBSTRT1", sub.xstart, ""),
        ("SUBSTRT2", sub.ystart, ""),
        ("SUBSIZE1", sub.xsize, ""),
        ("SUBSIZE2", sub.ysize, ""),
        ("FASTAXIS", fast, ""),
        ("SLOWAXIS", slow, ""),
    ]
    if truth.family == "IRS2":
        cards += [("NRS_NORM", inst.IRS2_NORMAL, ""), ("NRS_REF", inst.IRS2_REFERENCE, "")]
    cards += [("NRDSEED", plan.seed, "nrsdark_dask simulation seed"),
              ("NRDVER", __version__, "nrsdark_dask version")]
    for k, v, c in cards:
        h[k] = (v, c)
    return h


class RampSimulator:
    """Generates the raw groups (uint16, DMS raw layout) of one exposure, one at a time."""

    def __init__(self, truth: DetectorTruth, plan: ExposurePlan):
        self.truth = truth
        self.plan = plan
        self.t = timing(truth, plan)
        self.rng = np.random.default_rng([plan.seed, plan.index, 7])
        self.noise = ReadNoise(truth.detector, truth.subarray, truth.family,
                               IRS2_NOISE if truth.family == "IRS2" else TRAD_NOISE)
        a = truth.arrays
        self.shape = a["rate"].shape
        self.active = ~a["refpix"]
        self.hits = ev.cosmic_rays(self.rng, self.shape, self.t["duration"], self.t["times"],
                                   self.active, plan.snowball_scale)
        plan.events = self.hits.events
        plan.n_cosmic_rays = sum(e["kind"] == "cr" for e in self.hits.events)
        plan.n_snowballs = sum(e["kind"] == "snowball" for e in self.hits.events)
        sub = truth.subarray
        self.glow = ev.msa_glow_rate(sub, self.rng, plan.glow_rate) if plan.glow else None
        self.persist = (ev.persistence_rate0(sub, self.rng) * np.float32(plan.persistence_scale)
                        if plan.persistence else None)
        self.switch = ev.mode_switch_pattern(sub, plan.d_temp) if plan.mode_switch else None

    def groups(self):
        """Yield each group as a uint16 array of the raw shape."""
        a, rng, p = self.truth.arrays, self.rng, self.truth.params
        is_irs2 = self.truth.family == "IRS2"
        rate = rate_at(self.truth, Time(self.plan.start, scale="utc").mjd)
        rate_e = (rate + (self.glow if self.glow is not None else 0.0)) * a["gain"]
        rate_e = rate_e.astype(np.float64)
        signal = np.zeros(self.shape, np.float32)  # true accumulated DN above bias
        rc = np.flatnonzero(a["rc"].ravel())
        rc_amp, rc_tau = a["rc_amp"].ravel()[rc], a["rc_tau"].ravel()[rc]
        rc_prev = np.zeros(rc.size, np.float32)
        ipc_from_rc = _neighbour_index(rc, self.shape)
        rtn = np.flatnonzero(a["rtn"].ravel())
        rtn_state = rng.random(rtn.size) < 0.5
        rtn_amp, rtn_p = a["rtn_amp"].ravel()[rtn], a["rtn_p"].ravel()[rtn]
        bad = a["badref"] & (a["badref_noise"] > 0)
        drift = a["badref_drift"]
        reset = rng.normal(0, self.noise.params.reset, self.shape).astype(np.float32)
        amp = inst.amplifier_index(self.truth.subarray)
        reset += rng.normal(0, self.noise.params.amp_offset, 4).astype(np.float32)[amp][:, None]
        if is_irs2:
            normal = inst.irs2_normal_rows(self.truth.detector)
            raw_ref_reset = rng.normal(0, self.noise.params.reset,
                                       ((~normal).sum(), self.shape[1])).astype(np.float32)
        order = np.argsort(self.hits.group, kind="stable")
        hit_groups = self.hits.group[order]
        t_prev = 0.0
        for g, t in enumerate(self.t["times"]):
            dt_g = t - t_prev
            signal += rng.poisson(rate_e * dt_g).astype(np.float32) / a["gain"]
            # RC pixels: deterministic exponential + shot noise on the increment; IPC to neighbours
            rc_now = rc_amp * (1 - np.exp(-t / rc_tau))
            inc = rc_now - rc_prev
            inc = inc + rng.normal(0, np.sqrt(np.maximum(inc, 0)))
            rc_prev = rc_now
            np.add.at(signal.ravel(), rc, inc.astype(np.float32))
            for nb in ipc_from_rc:
                ok = nb >= 0
                np.add.at(signal.ravel(), nb[ok], (p.ipc_alpha * inc[ok]).astype(np.float32))
            lo, hi = np.searchsorted(hit_groups, [g, g + 1])
            sel = order[lo:hi]
            np.add.at(signal, (self.hits.y[sel], self.hits.x[sel]), self.hits.dn[sel])
            if self.persist is not None:
                tau = ev.PERSISTENCE_TAU
                signal += self.persist * tau * (np.exp(-t_prev / tau) - np.exp(-t / tau))
            signal += drift * dt_g
            np.minimum(signal, a["full_well"], out=signal)
            measured = signal - a["nonlin_k"] * signal * signal
            # random telegraph: toggles between groups
            rtn_state ^= rng.random(rtn.size) < rtn_p
            measured.ravel()[rtn] += rtn_amp * rtn_state
            if self.switch is not None:
                measured += self.switch * np.float32(ev.bias_drift(t))
            sci = reset + measured
            noise = self.noise.frame(rng, self.t["pattern"].nframes)
            if is_irs2:
                frame = a["bias"] + noise
                frame[normal] += sci
                frame[~normal] += raw_ref_reset
                nb_rows = np.flatnonzero(normal)
            else:
                frame = a["bias"] + noise + sci
                nb_rows = None
            if bad.any():
                extra = rng.standard_normal(self.shape, dtype=np.float32) * a["badref_noise"]
                extra *= bad
                if nb_rows is None:
                    frame += extra
                else:
                    frame[nb_rows] += extra
            yield np.clip(np.rint(frame), 0, 65535).astype(np.uint16)
            t_prev = t


def _neighbour_index(flat: np.ndarray, shape) -> list[np.ndarray]:
    """Flat indices of the 4 neighbours of each pixel in ``flat`` (-1 outside the frame)."""
    ny, nx = shape
    y, x = np.divmod(flat, nx)
    out = []
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        yy, xx = y + dy, x + dx
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        out.append(np.where(ok, yy * nx + xx, -1))
    return out


def write_uncal(path, truth: DetectorTruth, plan: ExposurePlan) -> ExposurePlan:
    """Simulate ``plan`` and stream it to ``path`` as a Level-1b uncal FITS file.

    SCI is (1, ngroups, ny, nx) uint16 (stored as int16 with BZERO = 32768), written group by
    group through ``astropy.io.fits.StreamingHDU``; the header alone says everything jwst needs.
    """
    path = str(path)  # StreamingHDU does not recognise pathlib paths as existing files
    sim = RampSimulator(truth, plan)
    fits.PrimaryHDU(header=primary_header(truth, plan, sim.t)).writeto(path)
    ny = inst.IRS2_RAW_SIZE if truth.family == "IRS2" else truth.subarray.ysize
    nx = truth.subarray.xsize
    h = fits.Header()
    h["XTENSION"] = "IMAGE"
    h["BITPIX"] = 16
    h["NAXIS"] = 4
    h["NAXIS1"], h["NAXIS2"], h["NAXIS3"], h["NAXIS4"] = nx, ny, plan.ngroups, 1
    h["PCOUNT"], h["GCOUNT"] = 0, 1
    h["BZERO"], h["BSCALE"] = 32768, 1
    h["EXTNAME"] = "SCI"
    h["BUNIT"] = "DN"
    stream = fits.StreamingHDU(path, h)
    for group in sim.groups():
        stream.write((group.astype(np.int32) - 32768).astype(">i2"))
    stream.close()
    return plan


def add_charge(uncal, snowballs=(), cosmic_rays=()) -> None:
    """Add charge to a written uncal file in place, at chosen places (tests and the
    self-check put events on piece edges and frame edges): snowballs ``(y, x, group, r)``
    (a saturating core of radius r/2 and a halo out to r from ``group`` on, as
    :func:`.events.cosmic_rays` draws them) and cosmic rays ``(y, x, group, dn)``, in
    science-layout rows and columns of a TRAD file (clipped to the frame and to uint16)."""
    with fits.open(uncal, mode="update") as h:
        data = h["SCI"].data.astype(np.int64)  # (1, G, y, x), scaled to uint16 by astropy
        ny, nx = data.shape[-2:]
        for y, x, g, r in snowballs:
            c = int(np.ceil(r))
            dy, dx = np.mgrid[-c:c + 1, -c:c + 1]
            d = np.hypot(dy, dx)
            dn = np.where(d <= r / 2, 6.0e4, 400.0 * (1 - d / r) + 50.0)
            yy, xx = y + dy, x + dx
            inside = (d <= r) & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            after = data[0, g:]
            after[:, yy[inside], xx[inside]] += dn[inside].astype(np.int64)
        for y, x, g, dn in cosmic_rays:
            data[0, g:, y, x] += dn
        h["SCI"].data = np.clip(data, 0, 65535).astype(np.uint16)
