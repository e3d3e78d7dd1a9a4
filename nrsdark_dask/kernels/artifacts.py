"""Artifact diagnostics of one exposure against the others (issue 13, report §3): pure numpy.

The report's authors culled by eye what passes the telemetry limits: bias structure after a
readout-mode switch ("picture frame" rising towards the detector edges, "tree rings"), MSA-glow
stripes at 45 degrees, and persistence (slit traces, MOS patches).  Here each becomes a number
in units of the noise, measured on *residual images*: an exposure minus the median of the
other exposures, pixel by pixel, which removes everything the detector does in every exposure
(bias, hot pixels, the dark itself) and leaves what is particular to this one.

Two residual images per exposure, because the artifacts live in different places:

* the **rate** residual (DN/s): glow and persistence add charge at a rate, so they show in the
  slope; the mode-switch structure decays (tau ~ 600 s) and shows there only as its small
  derivative.
* the **mean-frame** residual (DN, the mean of the calibrated groups): the mode-switch bias
  offset shows at its full size (12 DN per 0.1 K) while the per-group 1/f column noise is
  averaged down by the number of groups.  Measured on the demo set (ALLSLITS, 20 groups, dT =
  0.109 K): the picture-frame amplitude is 19 sigma in the mean frame, 0.9 sigma in the rate,
  1.3 sigma in calibrated group 1 (one frame of 1/f noise, the kTC reset).

Tiles: :func:`residuals` is per pixel (one tile of every exposure at a time).  The scores are
per exposure over its whole frame (one residual image, a few frame-sized temporaries).
"""

from __future__ import annotations

import numpy as np

from .clip import median_robust_sigma

FULL = 2048  # detector size, pixels
REF = 4  # reference pixels at each full-frame edge


def leave_one_out_median(stack: np.ndarray) -> np.ndarray:
    """``out[e]`` = NaN-median over the *other* exposures of ``stack`` (E, ...), per pixel.

    Computed from one sort along the exposure axis (NaN last): the median of the others is
    read off the sorted values with the exposure's own rank skipped, so the cost is one sort,
    not E medians.  Pixels with fewer than one other finite value give NaN."""
    s = np.asarray(stack, np.float64)
    n_exp = s.shape[0]
    order = np.argsort(s, axis=0, kind="stable")  # NaN sorts last
    srt = np.take_along_axis(s, order, 0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_exp).reshape((-1,) + (1,) * (s.ndim - 1)), 0)
    finite = np.isfinite(s)
    n_fin = finite.sum(0)
    out = np.full(s.shape, np.nan)
    for e in range(n_exp):
        mine = finite[e]
        m = n_fin - mine  # finite values among the others
        r = np.where(mine, rank[e], n_exp)  # own rank among the finite ones (or beyond them)
        lo, hi = (m - 1) // 2, m // 2  # median positions among the others
        lo_i = np.where(lo < r, lo, lo + 1)  # skip the own rank
        hi_i = np.where(hi < r, hi, hi + 1)
        ok = m > 0
        lo_i, hi_i = np.clip(lo_i, 0, n_exp - 1), np.clip(hi_i, 0, n_exp - 1)
        v = 0.5 * (np.take_along_axis(srt, lo_i[None], 0)[0]
                   + np.take_along_axis(srt, hi_i[None], 0)[0])
        out[e] = np.where(ok, v, np.nan)
    return out


def residuals(stack: np.ndarray, usable: np.ndarray, reference=None) -> np.ndarray:
    """``stack`` (E, ...) minus the median of the other exposures, float32; NaN where a pixel
    is not ``usable`` (DO_NOT_USE, not finite) in this exposure.  ``reference`` (E bools):
    only these exposures make the medians (the clipped median: exposures already found to
    carry an artifact would print it, inverted, into everyone's residual).  Peak memory: ~5
    float64 copies of the block."""
    s = np.where(usable & np.isfinite(stack), stack, np.nan).astype(np.float64)
    ref = s if reference is None else np.where(
        np.asarray(reference, bool).reshape((-1,) + (1,) * (s.ndim - 1)), s, np.nan)
    return (s - leave_one_out_median(ref)).astype(np.float32)


def robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation of the finite values, in float64 (NaN if none)."""
    return float(median_robust_sigma(np.asarray(values, np.float64))[1])


def edge_distance(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distance (pixels) of each pixel of the grid ``y`` x ``x`` (0-based full-frame indices)
    to the nearest full-frame edge."""
    y = np.asarray(y)[:, None]
    x = np.asarray(x)[None, :]
    return np.minimum(np.minimum(y, FULL - 1 - y), np.minimum(x, FULL - 1 - x))


def picture_frame(resid: np.ndarray, y: np.ndarray, x: np.ndarray, scale: float = 60.0):
    """Amplitude (DN) of a "picture frame" ``a exp(-d / scale)`` in a mean-frame residual,
    ``d`` the distance to the nearest full-frame edge; and its formal error from the scatter
    about the fit.

    The residual is reduced to one median per integer distance (the rings of equal ``d``; the
    interior beyond ``6 scale`` is one bin), and ``a exp(-d/scale) + b`` is fitted to those
    medians weighted by their pixel counts, so hot pixels and cosmic rays do not pull it.
    Returns ``(nan, nan)`` when no pixel lies within ``3 scale`` of an edge (a subarray far
    from every edge) or when the interior is missing.  Reference pixels (d < 4) are left out.
    """
    d = edge_distance(y, x)
    cap = int(6 * scale)
    ring = np.minimum(d, cap)
    ok = np.isfinite(resid) & (d >= REF)
    if not (ok & (d < 3 * scale)).any() or not (ok & (d >= 3 * scale)).any():
        return float("nan"), float("nan")
    r, v = ring[ok].ravel(), resid[ok].ravel().astype(np.float64)
    order = np.argsort(r, kind="stable")
    r, v = r[order], v[order]
    bins, start, counts = np.unique(r, return_index=True, return_counts=True)
    med = np.array([np.median(v[s:s + c]) for s, c in zip(start, counts)])
    t = np.exp(-bins / scale)
    w = np.sqrt(counts.astype(np.float64))
    design = np.stack([t, np.ones_like(t)], 1) * w[:, None]
    coef, *_ = np.linalg.lstsq(design, med * w, rcond=None)
    fit = np.stack([t, np.ones_like(t)], 1) @ coef
    dof = max(len(bins) - 2, 1)
    chi = float(np.sum(counts * (med - fit) ** 2) / dof)  # per-pixel variance of a bin median
    cov = np.linalg.pinv(design.T @ design) * chi
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def less_column_medians(resid: np.ndarray) -> np.ndarray:
    """``resid`` in float64 less each column's median: the per-group 1/f read noise,
    averaged over the groups, is a column pattern (a DMS column is one detector row)."""
    img = np.asarray(resid, np.float64)
    return img - np.nanmedian(img, axis=0, keepdims=True)


def line_index(shape: tuple[int, int], angle: float) -> np.ndarray:
    """Index (from 0) of the straight line at ``angle`` degrees through each pixel of an
    image of ``shape``: ``x cos a + y sin a`` rounded to whole pixels."""
    yy, xx = np.ogrid[0:shape[0], 0:shape[1]]
    t = np.radians(angle)
    s = np.rint(xx * np.cos(t) + yy * np.sin(t)).astype(np.int64)
    return s - s.min()


def large_scale_structure(resid: np.ndarray, block: int = 32) -> float:
    """Variance of the ``block`` x ``block`` medians of a mean-frame residual (column medians
    removed first), in units of what white noise of the image's own scatter would give
    (``(1.2533 sigma / block)^2``): ~1 for noise, more for structure on scales above a block
    (tree rings, the picture frame along rows, any extended bias pattern).

    Column medians go first because the per-group 1/f read noise, averaged over the groups,
    is a column pattern (a DMS column is one detector row, read in a few ms) that is in every
    exposure; in subarrays whose only detector edges are columns this removes the picture
    frame too, while the tree rings, curved, stay.  Measured (ALLSLITS, 20 groups): clean
    exposures 0.7-1.4, a mode switch of 0.08 K 4.7-5.0, the demo's 0.109 K 11.6."""
    img = less_column_medians(resid)
    ny, nx = img.shape
    b = max(4, min(block, ny // 2 or 1, nx // 2 or 1))
    by, bx = ny // b, nx // b
    if by * bx < 4:
        return float("nan")
    blocks = img[:by * b, :bx * b].reshape(by, b, bx, b).transpose(0, 2, 1, 3)
    med = np.nanmedian(blocks.reshape(by, bx, -1), axis=-1)
    sigma = robust_sigma(img) * 1.2533 / b
    return float(np.nanvar(med) / sigma**2) if sigma > 0 else float("nan")


GLOW_ANGLES = tuple(range(35, 56)) + tuple(range(125, 146))  # degrees: the two diagonals


def stripe_spectra(resid: np.ndarray, err: np.ndarray, periods=(60.0, 200.0),
                   angles=GLOW_ANGLES, spread: int = 5):
    """Directional periodogram of a rate residual: the power of straight stripes near 45 and
    135 degrees (the MSA glow), for :func:`stripe_scores`.

    ``z = resid / err`` (column medians removed first: 1/f noise makes column stripes; NaN
    and abs(z) > 5 set to 0) is projected along lines at each angle (``x cos a + y sin a``
    rounded to whole pixels), each projected bin divided by the square root of its pixel
    count (unit variance on white noise); the projection's periodogram, summed over
    ``spread`` neighbouring frequency bins (stripes confined to a band of the detector, as
    the glow is within ~500 px of the MSA quadrant edge, spread their power over a few bins),
    is kept over the period band.  Returns ``(power, period_px, angle_deg, profiles)``: three
    1-D arrays over the (angle, frequency) cells, the same cells for every exposure of a
    shape, and ``{angle: mean residual along each line, DN/s}`` (the picture of a glow cull:
    the stripes are a wave in it).
    The band (60-200 px along the stripes' normal) holds the report's Figure 2 stripes (150
    px along a row at 45 degrees: 106 px)."""
    img = less_column_medians(resid)
    z = img / np.where(np.asarray(err) > 0, err, np.nan)
    good = np.isfinite(z) & (np.abs(z) < 5.0)
    z = np.where(good, z, 0.0).ravel()
    w = good.astype(np.float64).ravel()
    flat = np.where(good, img, 0.0).ravel()
    out_p, out_period, out_angle, profiles = [], [], [], {}
    for a in angles:
        s = line_index(img.shape, a).ravel()
        num, cnt = np.bincount(s, z), np.bincount(s, w)
        profiles[float(a)] = (np.bincount(s, flat) / np.maximum(cnt, 1.0)).astype(np.float32)
        q = np.where(cnt > 0, num / np.sqrt(np.maximum(cnt, 1.0)), 0.0)
        q -= q.mean()
        power = np.convolve(np.abs(np.fft.rfft(q)) ** 2, np.ones(spread), mode="same")
        f = np.fft.rfftfreq(q.size)
        band = (f >= 1.0 / periods[1]) & (f <= 1.0 / periods[0])
        out_p.append(power[band])
        out_period.append(1.0 / f[band])
        out_angle.append(np.full(band.sum(), float(a)))
    return (np.concatenate(out_p).astype(np.float32), np.concatenate(out_period),
            np.concatenate(out_angle), profiles)


def _stripe_excess(power, reference, spread):
    from scipy import stats

    p = np.asarray(power, np.float64)
    noise = leave_one_out_median(p if reference is None else np.where(
        np.asarray(reference, bool)[:, None], p, np.nan)) / stats.gamma.median(spread)
    return np.where(noise > 0, p / noise - spread, 0.0)


def stripe_snr(power: np.ndarray, reference=None, spread: int = 5) -> np.ndarray:
    """Matched-filter SNR of every (exposure, cell) of :func:`stripe_spectra` powers (E, cells)
    against the same cell in the other (reference) exposures (:func:`stripe_scores`)."""
    return np.sqrt(2.0 * np.maximum(_stripe_excess(power, reference, spread), 0.0))


def stripe_scores(power: np.ndarray, reference=None, spread: int = 5) -> tuple:
    """Glow scores of E exposures from their :func:`stripe_spectra` powers (E, cells).

    Each cell's noise is the median of that cell's power over the *other* (reference)
    exposures: the noise is the same process in every exposure but not white (the 1/f
    read noise folds into diagonal patterns: a stream read at 268 pixel times per DMS
    column has its 374 Hz component on a 45-degree wave), so a cell is compared with
    itself elsewhere, not with its neighbours.  On noise alone a cell's power over that
    noise follows Gamma(spread); the score ``sqrt(2 (P / noise - spread))`` is then the
    matched-filter SNR ``A sqrt(N/2) / sigma`` of a sinusoid of amplitude A over N pixels.
    Returns ``(score, cell)`` arrays of length E: each exposure's best score and its cell."""
    excess = _stripe_excess(power, reference, spread)
    cell = np.argmax(excess, axis=1)
    return np.sqrt(2.0 * np.maximum(excess[np.arange(excess.shape[0]), cell], 0.0)), cell


def glow_scores(rate_power: np.ndarray, bias_power: np.ndarray, reference=None) -> tuple:
    """Glow or tree rings (issue 21): each exposure's best stripe SNR in its rate residual
    (:func:`stripe_scores`), the SNR of the same cell in its bias residual, and whether the
    stripes are the bias structure's.  Light (glow) adds charge from the reset, so it leaves
    nothing in the bias image (the ramp at t = 0); the tree rings of a mode switch are a bias
    that decays, so the rate sees only their derivative (1/600 s of them) and the bias image
    the whole pattern.  Stripes at least as strong in the bias image are rings.  Returns
    ``(glow, cell, in_bias, rings)``, arrays of length E."""
    glow, cell = stripe_scores(rate_power, reference)
    in_bias = stripe_snr(bias_power, reference)[np.arange(len(cell)), cell]
    return glow, cell, in_bias, in_bias >= glow


def destripe(resid: np.ndarray, angle: float, profile: np.ndarray) -> np.ndarray:
    """``resid`` (column medians removed, as :func:`stripe_spectra` sees it) less its mean
    along the lines at ``angle`` (``profile``, from :func:`stripe_spectra`): what stays
    when a stripe pattern of that angle is taken out (a bright glow's crests are extended
    positive regions too; a slit trace along x, averaged along 45-degree lines, mostly
    stays)."""
    img = less_column_medians(resid)
    return img - np.asarray(profile, np.float64)[line_index(img.shape, angle)]


def extended_positive(resid: np.ndarray, err: np.ndarray, min_area: int = 40,
                      level: float = 2.0, box=(3, 15), region: bool = False):
    """The most significant extended positive region of a rate residual (persistence: slit
    traces, MOS patches), in units of the noise.

    ``z = resid / err`` after column medians are removed (1/f noise) is smoothed over a box
    of 3 rows x 15 columns (times sqrt(45): unit variance on white noise; long in x because
    spectra, and so their persistence, are dispersed along DMS x: a 4-row trace of 0.5 sigma
    per pixel passes); connected regions (8-neighbour) above
    ``level`` with at least ``min_area`` pixels are candidates, and a region's score is the
    SNR of its mean, ``sum(z) / sqrt(n)`` over its pixels.  Returns ``(score, area,
    mean_rate)`` of the best region (``mean_rate``: the 1/err-weighted mean residual, DN/s,
    the quantity the score tests, so of its sign), ``(0, 0, 0)`` when there is none; with
    ``region``, a fourth item: ``(y0, x0, mask)``, the region's bounding box corner and its
    pixels (bool), or ``None``.

    No pixel's error is taken below the residual's own robust sigma.  On darks, jwst's
    ``rate_err`` is too small in about a third of the pixels: stcal takes the Poisson term
    from the median first difference, which on a dark's ~0.01 DN/s is noise and <= 0 there,
    leaving read noise only (3-4x too small at 400 NRS groups, where read noise has averaged
    down and the dark's shot noise has not).  Unfloored, those pixels made regions of clean
    exposures score 12-17 sigma on long ramps (6 of 7 clean exposures culled at 400 groups);
    floored, 3-4 sigma, while a persistence exposure still scores 435."""
    from scipy import ndimage

    img = less_column_medians(resid)
    err = np.asarray(err, np.float64)
    err = np.maximum(err, robust_sigma(img)) if np.isfinite(img).any() else err
    z = img / np.where(err > 0, err, np.nan)
    measured = np.isfinite(z)
    z[~measured] = 0.0
    z = np.clip(z, -20.0, 20.0)  # a single wild pixel does not make a region
    smooth = ndimage.uniform_filter(z, box, mode="constant") * np.sqrt(box[0] * box[1])
    labels, n = ndimage.label(smooth > level, structure=np.ones((3, 3), bool))
    none = (0.0, 0, 0.0) + ((None,) if region else ())
    if n == 0:
        return none
    idx = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(z), labels, idx)
    zsum = ndimage.sum_labels(z, labels, idx)
    # the rate's weights: 1/err where a pixel was measured (NaN pixels add to neither sum)
    weight = ndimage.sum_labels(np.divide(1.0, err, out=np.zeros_like(err), where=measured),
                                labels, idx)
    score = np.where(area >= min_area, zsum / np.sqrt(np.maximum(area, 1)), 0.0)
    best = int(np.argmax(score))
    if score[best] <= 0:
        return none
    out = (float(score[best]), int(area[best]), float(zsum[best] / weight[best]))
    if region:
        sl = ndimage.find_objects(labels, max_label=best + 1)[best]
        out += ((sl[0].start, sl[1].start, labels[sl] == best + 1),)
    return out


def preview(image: np.ndarray, max_side: int = 512) -> np.ndarray:
    """A block-median thumbnail (float32) no longer than ``max_side`` on either axis, for the
    pictures of a cull (NaN-aware; blocks are square)."""
    ny, nx = image.shape
    b = max(1, -(-max(ny, nx) // max_side))
    my, mx = ny // b * b, nx // b * b
    blocks = np.asarray(image[:my, :mx], np.float32).reshape(my // b, b, mx // b, b)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(blocks.transpose(0, 2, 1, 3).reshape(my // b, mx // b, -1), -1)
