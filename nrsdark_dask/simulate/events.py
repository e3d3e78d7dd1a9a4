"""Transient signals of one exposure: cosmic rays, snowballs, and the report's §3 artifacts
(mode-switch bias drift with "picture frame" and "tree rings", MSA glow, persistence).

All functions are pure: numpy in, numpy out, a ``numpy.random.Generator`` for randomness.
Coordinates are science-layout DMS pixels of the data set's geometry; patterns that belong to
the detector (tree rings, glow, slits) are evaluated in full-frame coordinates and cut, so that
a subarray sees the same structure as the full frame at that place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import instrument as inst
from .model import CR_RATE, PIXEL_CM, SNOWBALL_RATE


@dataclass
class Hits:
    """Charge deposits: one entry per affected pixel; ``group`` is the first group that sees it."""

    y: np.ndarray
    x: np.ndarray
    group: np.ndarray
    dn: np.ndarray
    events: list[dict]  # one dict per event, for the truth table


def cosmic_rays(rng, shape, exposure_time: float, group_times: np.ndarray,
                active: np.ndarray, snowball_scale: float = 1.0) -> Hits:
    """Cosmic rays at ``CR_RATE`` and snowballs at ``snowball_scale`` x ``SNOWBALL_RATE``
    (scaled by area).

    A cosmic ray deposits a log-normal charge (median 500 DN) in 1-4 pixels; a snowball a
    saturating core of radius R/2 and a halo out to R (R = 4-12 px).  Arrival times are uniform
    over the exposure; events after the last group are not seen.  Reference pixels
    (``~active``) are not photosensitive and get nothing.
    """
    ny, nx = shape
    area = ny * nx * PIXEL_CM**2
    t_last = group_times[-1]
    ys, xs, gs, dns, events = [], [], [], [], []

    def place(kind, cy, cx, t, dy, dx, dn):
        g = int(np.searchsorted(group_times, t))
        yy, xx = cy + dy, cx + dx
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        yy, xx, dn = yy[ok], xx[ok], dn[ok]
        ok = active[yy, xx]
        yy, xx, dn = yy[ok], xx[ok], dn[ok]
        if yy.size == 0:
            return
        ys.append(yy), xs.append(xx), gs.append(np.full(yy.size, g)), dns.append(dn)
        events.append(dict(kind=kind, y=int(cy), x=int(cx), group=g, time=float(t),
                           npix=int(yy.size), total_dn=float(dn.sum())))

    n_cr = rng.poisson(CR_RATE * area * exposure_time)
    cy = rng.integers(0, ny, n_cr)
    cx = rng.integers(0, nx, n_cr)
    t = rng.uniform(0, exposure_time, n_cr)
    total = rng.lognormal(np.log(500.0), 1.0, n_cr)
    npix = rng.choice([1, 2, 3, 4], n_cr, p=[0.5, 0.25, 0.15, 0.1])
    steps = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
    for i in np.flatnonzero(t < t_last):
        k = npix[i]
        off = np.vstack([[0, 0], steps[rng.integers(0, 4, k - 1)]]).cumsum(axis=0)
        frac = np.array([1.0] + [0.3] * (k - 1))
        place("cr", cy[i], cx[i], t[i], off[:, 0], off[:, 1], total[i] * frac / frac.sum())

    full_area = (inst.FULL_SIZE * PIXEL_CM) ** 2
    n_sb = rng.poisson(snowball_scale * SNOWBALL_RATE * exposure_time * area / full_area)
    for _ in range(n_sb):
        r = rng.uniform(4, 12)
        c = int(np.ceil(r))
        dy, dx = np.mgrid[-c : c + 1, -c : c + 1]
        d = np.hypot(dy, dx)
        inside = d <= r
        dn = np.where(d <= r / 2, 6.0e4, 400.0 * (1 - d / r) + 50.0)[inside]
        place("snowball", rng.integers(0, ny), rng.integers(0, nx),
              rng.uniform(0, t_last), dy[inside], dx[inside], dn)

    if not ys:
        empty = np.zeros(0, np.int64)
        return Hits(empty, empty, empty, np.zeros(0, np.float32), events)
    return Hits(np.concatenate(ys), np.concatenate(xs), np.concatenate(gs),
                np.concatenate(dns).astype(np.float32), events)


def _full_frame_coords(sub: inst.Subarray):
    ys, xs = sub.slices
    y = np.arange(ys.start, ys.stop, dtype=np.float32)[:, None]
    x = np.arange(xs.start, xs.stop, dtype=np.float32)[None, :]
    return y, x


def mode_switch_pattern(sub: inst.Subarray, d_temp: float) -> np.ndarray:
    """Residual bias structure after a readout-mode switch (report §3, Figure 1), in DN.

    "Picture frame": an offset rising towards the detector edges (e-folding 60 px); "tree
    rings": concentric rings (period 90 px) around an off-centre point.  The amplitude scales
    with the ASIC temperature excursion, 12 DN per 0.1 K.  The structure decays during the
    exposure (``bias_drift``), which is what makes it visible in rate images.
    """
    y, x = _full_frame_coords(sub)
    n = inst.FULL_SIZE - 1
    edge = np.minimum(np.minimum(y, n - y), np.minimum(x, n - x))
    frame = np.exp(-edge / 60.0)
    r = np.hypot(y - 1400.0, x - 700.0)
    rings = 0.5 * np.cos(2 * np.pi * r / 90.0) * np.exp(-r / 1500.0)
    return (12.0 * d_temp / 0.1 * (frame + rings)).astype(np.float32)


def bias_drift(t: np.ndarray | float, tau: float = 600.0):
    """Time profile of the mode-switch structure: ``exp(-t/tau)``."""
    return np.exp(-np.asarray(t) / tau)


def msa_glow_rate(sub: inst.Subarray, rng, peak: float = 0.006) -> np.ndarray:
    """MSA-glow / light-leak diagonal stripes (report §3, Figure 2), DN/s.

    Stripes of period 150 px at 45 degrees, ``peak`` DN/s at the crest (default 0.006:
    comparable to the dark rate),
    confined to a band along one MSA quadrant edge (x within 500 px of 1024).
    """
    y, x = _full_frame_coords(sub)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 * (1 + np.sin(2 * np.pi * (x + y) / 150.0 + phase))
    band = np.exp(-(((x - 1024.0) / 500.0) ** 2))
    return (peak * stripes * band).astype(np.float32)


def persistence_rate0(sub: inst.Subarray, rng) -> np.ndarray:
    """Initial rate (DN/s at t=0) of persistence from an earlier bright exposure (report §3):
    the fixed-slit rows and a few MOS-like patches, 0.05-0.5 DN/s, decaying with tau 1000 s."""
    y, x = _full_frame_coords(sub)
    out = np.zeros(np.broadcast_shapes(y.shape, x.shape), np.float32)
    for y0 in (960.0, 1010.0, 1060.0):  # slit-like traces along x
        out += rng.uniform(0.05, 0.5) * np.exp(-(((y - y0) / 2.0) ** 2))
    for _ in range(12):
        cy, cx = rng.uniform(0, inst.FULL_SIZE, 2)
        out += rng.uniform(0.05, 0.5) * ((np.abs(y - cy) < 3) & (np.abs(x - cx) < 40))
    return out


PERSISTENCE_TAU = 1000.0
