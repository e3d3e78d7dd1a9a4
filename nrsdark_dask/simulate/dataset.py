"""A simulated data set: N uncal darks of one detector / readout / subarray, their truth,
ASIC telemetry, an exclusion list "made by eye", and an offline reference kit.

Layout of ``OUTDIR`` (created atomically: built as ``.OUTDIR.tmp-PID`` beside it and renamed
when complete, so a directory with the final name is always a complete data set)::

    uncal/jw90001..._nrs1_uncal.fits   the exposures
    refkit/nrsdark_sim_*.fits          reference files for jwst detector1 (offline)
    truth.fits                         static truth maps + EXPOSURES and EVENTS tables
    telemetry.ecsv                     ASIC temperature samples
    exclusions.ecsv                    exposures a scientist would cull by eye (persistence)
    simulation.json                    the configuration, counts, versions
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from .. import __version__
from .. import instrument as inst
from . import telemetry as tel
from .exposure import ExposurePlan, timing, write_uncal
from .model import DETECTOR_PARAMS, DetectorTruth, add_hot_growth, make_truth
from .refkit import write_refkit

GRATINGS = ("G140M", "G140H", "G235M", "G235H", "G395M", "G395H", "PRISM", "MIRROR")
DEFAULT_GROUPS = {"TRAD": 88, "IRS2": 200}
DEFAULT_READPATT = {"TRAD": "NRSRAPID", "IRS2": "NRSIRS2RAPID"}


@dataclass
class SimConfig:
    """What to simulate.  ``gratings`` maps grating name to relative weight."""

    readout: str = "trad"  # "trad" or "irs2" (readout family)
    detector: str = "NRS1"
    subarray: str = "FULL"
    ngroups: int | None = None  # default: 88 TRAD, 200 IRS2 (the monitor darks)
    nexp: int = 4
    seed: int = 1
    start: str = "2023-07-01"
    end: str = "2024-06-30"
    gratings: dict[str, float] = field(default_factory=lambda: {"G140H": 1.0, "G395H": 1.0})
    artifacts: bool = False
    mode_switch_fraction: float = 0.25  # with artifacts: exposures after a mode switch (>= 1)
    persistence_fraction: float = 0.15  # with artifacts: exposures with persistence (>= 1)
    # artifact sizes (for detection-limit studies): 0 keeps the report's random range
    switch_dt: float = 0.0  # K, ASIC excursion of every mode-switch exposure
    glow_rate: float = 0.006  # DN/s, MSA-glow stripe crest
    persistence_scale: float = 1.0  # x the report-like 0.05-0.5 DN/s persistence rates
    hot_growth: float = 0.0  # new hot pixels per month in the region (report §7.1: ~100 FULL)
    snowball_scale: float = 1.0  # x the snowball rate (dense cases for snowball flagging)
    readpatt: str | None = None  # default: NRSRAPID / NRSIRS2RAPID
    refkit: bool = True

    def validated(self) -> SimConfig:
        """Return a normalised copy or raise ValueError with a one-line reason."""
        c = SimConfig(**asdict(self))
        fam = c.readout.upper()
        if fam not in inst.READOUT_FAMILIES:
            raise ValueError(f"unknown readout {c.readout!r}; use 'trad' or 'irs2'")
        c.readout = fam.lower()
        c.detector = inst.check_detector(c.detector)
        sub = inst.get_subarray(c.subarray)
        c.subarray = sub.name
        if fam == "IRS2" and sub.name != "FULL":
            raise ValueError(f"IRS2 readout exists only for FULL frame, not {sub.name}")
        c.readpatt = (c.readpatt or DEFAULT_READPATT[fam]).upper()
        if inst.get_read_pattern(c.readpatt).family != fam:
            raise ValueError(f"readout pattern {c.readpatt} is not a {fam} pattern")
        c.ngroups = DEFAULT_GROUPS[fam] if c.ngroups is None else int(c.ngroups)
        if not 2 <= c.ngroups <= 1000:
            raise ValueError(f"ngroups must be between 2 and 1000, got {c.ngroups}")
        for name in ("switch_dt", "glow_rate", "persistence_scale", "hot_growth",
                     "snowball_scale"):
            if not getattr(c, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(c, name)}")
        if not 1 <= c.nexp <= 10000:
            raise ValueError(f"nexp must be between 1 and 10000, got {c.nexp}")
        bad = [g for g in c.gratings if g.upper() not in GRATINGS]
        if bad or not c.gratings or any(w <= 0 for w in c.gratings.values()):
            raise ValueError(f"bad grating mix {c.gratings}; gratings: {', '.join(GRATINGS)}")
        c.gratings = {g.upper(): float(w) for g, w in c.gratings.items()}
        t0, t1 = Time(c.start), Time(c.end)
        if t1 <= t0:
            raise ValueError(f"end date {c.end} is not after start date {c.start}")
        return c

    @property
    def family(self) -> str:
        return self.readout.upper()


def parse_gratings(text: str) -> dict[str, float]:
    """``"G140H,G395H:2,PRISM:0.5"`` -> {"G140H": 1, "G395H": 2, "PRISM": 0.5}."""
    out = {}
    for item in text.split(","):
        name, _, weight = item.strip().partition(":")
        try:
            out[name.strip().upper()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad grating weight in {item!r}") from None
    return out


def plan_exposures(cfg: SimConfig) -> list[ExposurePlan]:
    """Decide dates, gratings, temperature excursions and artifacts of every exposure."""
    rng = np.random.default_rng([cfg.seed, 11])
    t0, t1 = Time(cfg.start).mjd, Time(cfg.end).mjd
    mjd = np.sort(rng.uniform(t0, t1, cfg.nexp))
    names = list(cfg.gratings)
    w = np.array([cfg.gratings[n] for n in names])
    gratings = rng.choice(names, cfg.nexp, p=w / w.sum())
    switch = np.zeros(cfg.nexp, bool)
    persist = np.zeros(cfg.nexp, bool)
    if cfg.artifacts:  # exact numbers (at least one each), random exposures
        for flags, frac in ((switch, cfg.mode_switch_fraction), (persist, cfg.persistence_fraction)):
            n = min(cfg.nexp, max(1, round(frac * cfg.nexp))) if frac > 0 else 0
            flags[rng.choice(cfg.nexp, n, replace=False)] = True
    full = cfg.subarray == "FULL"
    plans = []
    for i in range(cfg.nexp):
        if switch[i]:  # report Table 2: 0.10-0.14 K after a switch; subarrays range wider
            d_temp = float(rng.uniform(0.05, 0.14) if full else rng.uniform(0.08, 0.20))
        else:
            d_temp = float(rng.choice([0.01, 0.02]))
        if switch[i] and cfg.switch_dt > 0:
            d_temp = cfg.switch_dt
        start = Time(mjd[i], format="mjd", scale="utc").isot
        det = cfg.detector.lower()
        fname = f"jw90001{i // 10 + 1:03d}001_02101_{i % 10 + 1:05d}_{det}_uncal.fits"
        plans.append(ExposurePlan(
            index=i, filename=fname, start=start, grating=str(gratings[i]),
            readpatt=cfg.readpatt, ngroups=cfg.ngroups, d_temp=round(d_temp, 3),
            mode_switch=bool(switch[i]),
            glow=bool(cfg.artifacts and gratings[i] == "PRISM"),
            persistence=bool(persist[i]), seed=cfg.seed,
            glow_rate=cfg.glow_rate if cfg.artifacts and gratings[i] == "PRISM" else 0.0,
            persistence_scale=cfg.persistence_scale if persist[i] else 1.0,
            snowball_scale=cfg.snowball_scale))
    return plans


# --- worker side (one process may simulate several exposures) ---------------------------
_TRUTH: dict = {}


def _truth_for(cfg: SimConfig) -> DetectorTruth:
    key = (cfg.detector, cfg.subarray, cfg.family, cfg.seed, cfg.hot_growth, cfg.start, cfg.end)
    if key not in _TRUTH:
        _TRUTH.clear()
        truth = make_truth(cfg.detector, inst.get_subarray(cfg.subarray), cfg.family, cfg.seed)
        if cfg.hot_growth > 0:
            add_hot_growth(truth, cfg.hot_growth, Time(cfg.start).mjd, Time(cfg.end).mjd,
                           cfg.seed)
        _TRUTH[key] = truth
    return _TRUTH[key]


def _simulate_one(cfg: SimConfig, plan: ExposurePlan, path: str) -> ExposurePlan:
    return write_uncal(path, _truth_for(cfg), plan)


def simulate_dataset(outdir, cfg: SimConfig, workers: int = 1, progress=None) -> dict:
    """Simulate a complete data set into ``outdir`` (must not exist); return its summary.

    ``workers`` > 1 simulates exposures in that many processes (each holds one truth copy:
    ~0.3 GB for a full frame).  ``progress(done, total, name)`` is called after each file.
    Raises ``FileExistsError`` / ``ValueError`` before writing anything on bad input.
    """
    cfg = cfg.validated()
    outdir = Path(outdir)
    if outdir.exists():
        raise FileExistsError(f"output folder {outdir} already exists; choose a new name")
    if not outdir.parent.exists():
        raise FileNotFoundError(f"parent folder {outdir.parent} does not exist")
    tmp = outdir.parent / f".{outdir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    t_start = time.time()
    try:
        (tmp / "uncal").mkdir(parents=True)
        truth = _truth_for(cfg)
        plans = plan_exposures(cfg)
        done = []
        paths = [str(tmp / "uncal" / p.filename) for p in plans]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                futures = [pool.submit(_simulate_one, cfg, p, path) for p, path in zip(plans, paths)]
                for f in futures:
                    done.append(f.result())
                    if progress:
                        progress(len(done), len(plans), done[-1].filename)
        else:
            for p, path in zip(plans, paths):
                done.append(_simulate_one(cfg, p, path))
                if progress:
                    progress(len(done), len(plans), p.filename)
        plans = done
        _write_telemetry(tmp / "telemetry.ecsv", truth, plans)
        _write_exclusions(tmp / "exclusions.ecsv", plans)
        _write_truth(tmp / "truth.fits", truth, plans)
        kit = write_refkit(truth, tmp / "refkit") if cfg.refkit else {}
        summary = {
            "config": asdict(cfg),
            "counts": truth.counts(),
            "exposures": len(plans),
            "refkit": kit,
            "seconds": round(time.time() - t_start, 1),
            "versions": _versions(),
        }
        (tmp / "simulation.json").write_text(json.dumps(summary, indent=2))
        os.rename(tmp, outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _versions() -> dict:
    import astropy
    import stdatamodels

    return {"nrsdark_dask": __version__, "numpy": np.__version__,
            "astropy": astropy.__version__, "stdatamodels": stdatamodels.__version__,
            "python": sys.version.split()[0]}


def _write_telemetry(path, truth: DetectorTruth, plans: list[ExposurePlan]):
    rng = np.random.default_rng([plans[0].seed, 13])
    t0 = DETECTOR_PARAMS[truth.detector].asic_temp
    samples = []
    for p in plans:
        duration = timing(truth, p)["duration"]
        samples.append(tel.exposure_samples(rng, p.start, duration, t0, p.d_temp, p.mode_switch))
    tel.telemetry_table(samples, truth.detector).write(path, format="ascii.ecsv")


def _write_exclusions(path, plans: list[ExposurePlan]):
    rows = [(p.filename, "persistence seen by eye in the rate image")
            for p in plans if p.persistence]
    tab = Table(rows=rows or None, names=("file", "reason"), dtype=(str, str))
    tab.meta["description"] = "Exposures culled by eye (simulated scientist's list)"
    tab.write(path, format="ascii.ecsv")


TRUTH_IMAGES = ("bias", "rate", "rc_amp", "rc_tau", "rtn_amp", "rtn_p", "badref_noise",
                "badref_drift", "gain", "full_well", "nonlin_k", "saturation")
TRUTH_MASKS = ("hot", "warm", "rc", "rtn", "badref", "ipc_neighbour", "refpix", "known_hot")
TRUTH_GROWTH = ("onset_mjd", "onset_rate")  # with hot_growth: when (MJD, inf never) and how hot


def _write_truth(path, truth: DetectorTruth, plans: list[ExposurePlan]):
    """truth.fits: one image HDU per map (EXTNAME = upper-case name), EXPOSURES, EVENTS."""
    sub = truth.subarray
    h = fits.Header()
    h["DETECTOR"], h["SUBARRAY"], h["READOUT"] = truth.detector, sub.name, truth.family
    h["SUBSTRT1"], h["SUBSTRT2"] = sub.xstart, sub.ystart
    h["COMMENT"] = "nrsdark_dask simulation truth; BIAS is in the raw layout (3200 rows IRS2)"
    hdus = [fits.PrimaryHDU(header=h)]
    for name in TRUTH_IMAGES:
        hdus.append(fits.ImageHDU(truth.arrays[name], name=name.upper()))
    for name in TRUTH_MASKS:
        hdus.append(fits.ImageHDU(truth.arrays[name].astype(np.uint8), name=name.upper()))
    for name in TRUTH_GROWTH:
        if name in truth.arrays:
            hdus.append(fits.ImageHDU(truth.arrays[name], name=name.upper()))
    hdus.append(fits.table_to_hdu(Table(rows=[p.row() for p in plans])))
    hdus[-1].name = "EXPOSURES"
    ev_rows = [dict(exposure=p.index, **e) for p in plans for e in p.events]
    if ev_rows:
        ev = Table(rows=ev_rows)
    else:
        ev = Table(names=("exposure", "kind", "y", "x", "group", "time", "npix", "total_dn"),
                   dtype=(int, str, int, int, int, float, int, float))
    hdus.append(fits.table_to_hdu(ev))
    hdus[-1].name = "EVENTS"
    fits.HDUList(hdus).writeto(path)


def read_truth(path) -> dict:
    """Read truth.fits back: maps as arrays (masks as bool), tables as astropy Tables."""
    out = {}
    with fits.open(path) as hdul:
        out["header"] = dict(hdul[0].header)
        for name in TRUTH_IMAGES:
            out[name] = hdul[name.upper()].data.astype(np.float32)
        for name in TRUTH_MASKS:
            out[name] = hdul[name.upper()].data.astype(bool)
        for name in TRUTH_GROWTH:
            if name.upper() in hdul:
                out[name] = hdul[name.upper()].data
        out["exposures"] = Table(hdul["EXPOSURES"].data)
        out["events"] = Table(hdul["EVENTS"].data)
    return out
