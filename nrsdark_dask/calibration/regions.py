"""Which connected regions of snowball flagging's planes can change its result: the filter that
lets stcal measure only those (numpy in, numpy out; no stcal, no IO).

stcal's ``flag_large_events`` (jwst's snowball flagging, ``expand_large_events``) walks the
groups g = 1, 2, ...; for each it asks ``find_ellipses`` for the ellipses of three planes:

* N: the next group's new saturation (SATURATED in g + 1 and not in g),
* S: this group's new saturation (SATURATED in g and not in g - 1),
* J: this group's JUMP_DET flags,

``find_ellipses`` labels the whole plane (scikit-image, 8-connected) and measures every region
whose filled area reaches the minimum (``min_sat_area`` 1, ``min_jump_area`` 5 by default)
in Python, one ``regionprops`` at a time.  ``make_snowballs`` then uses the ellipses only so:

1. a jump ellipse E becomes a snowball if it is near the frame edge (``near_edge``: its
   centre's column or row below ``edge_size`` or above ``nrows - edge_size``; stcal compares
   both coordinates with the row count), or if the centre of an ellipse of S, or of N when g
   is not the last group, lies inside E (``point_inside_ellipse``);
2. ``extend_saturation`` writes SATURATED into the later groups under each ellipse of S whose
   minor axis exceeds ``min_sat_radius_extend``; the other ellipses of S do nothing there.

A dark has thousands of jump regions a plane (cosmic rays and telegraph jumps) and a few
saturation regions (hot pixels reaching saturation): nearly all are measured and then
dropped.  :func:`jump_candidates` and :func:`saturation_candidates` keep the regions that
could matter, and stcal measures only those; :func:`find_regions` finds the regions in time
proportional to the pixels flagged.  Why that gives stcal's answer bit for bit:

**A. A region's ellipse depends only on its own pixels.**  ``regionprops`` measures a region on
``label_image[bbox] == label``: its centroid is the mean of its own absolute pixel
coordinates, its axes and orientation come from its own central moments, its filled area from
its own pixels with holes filled.  A plane that holds only some of the regions (each one whole:
regions are 8-connected components, so no two are adjacent and none merges with another)
gives those regions the same ellipses, in the same relative order (labels follow the raster
order of each region's first pixel).  Cutting away rows below and columns right of every
pixel held (:meth:`Regions.plane`) keeps each pixel's coordinates and that order.  So the
regions can also be measured in several planes, each answer holding its regions' ellipses in
raster order, and the answers joined in that order (:func:`measuring_planes`: one plane per
region where that labels fewer pixels).

**B. The bounds.**  For a region with bounding box H x W (rows x columns):

* its filled area is at most H x W: if H x W is below the minimum it has no ellipse;
* its centroid lies inside its box (a mean of its pixels);
* stcal's full axes are 4 sqrt(l) - 1 for the eigenvalues l1 >= l2 >= 0 of the covariance of
  the region's pixel coordinates (skimage's inertia tensor has the same eigenvalues).
  :meth:`Regions.minor_axes` computes the minor one from the same pixels, and a region is
  taken as possibly extended when it comes within 0.05 pixel of the limit (the two agree to
  1e-9 in the tests);
* ``point_inside_ellipse`` asks xr^2/a^2 + yr^2/b^2 <= 1 of the point's offset from the
  centroid (rotated: its length unchanged), a, b the semi-axes.  That needs a distance of at
  most ``max(abs(a), abs(b)) <= max(2 sqrt(l1) - 1/2, 1/2)``.  l1 is the largest variance of
  the pixel coordinates along any direction, and along any direction they span at most the box's
  diagonal D = sqrt((H-1)^2 + (W-1)^2), so l1 <= D^2 / 4 (Popoviciu's inequality).  So a
  point inside the ellipse lies within ``reach`` = max(D - 1/2, 1/2) of the centroid, hence
  of the box.  (The ellipse does reach beyond the box: a dumbbell's, for one.)

**C. What is left out cannot matter.**  The jump plane J of group g is measured first (its
regions are what the saturation planes are filtered against), and every bound gets one more
pixel of slack (float rounding of centroids and moments).

* A jump region is kept when its box area reaches the minimum and either its box comes within
  the edge bands or a region of S or N comes within its reach.  A centre of S or N lies in its
  region's box, so a jump ellipse left out is neither near the edge nor holds any centre of S
  or N: rule 1 drops it.
* A region of S or N is kept when its box comes within the larger semi-axis of a kept jump
  ellipse's centre, or (S only) its box allows a minor axis above ``min_sat_radius_extend``.
  A centre left out lies inside no kept jump ellipse (the point test needs a distance of at
  most the larger semi-axis) and inside no jump ellipse left out (whose regions have no S or
  N region within reach): rule 1 decides every jump ellipse the same without it, and rule 2
  skips it.
* ``make_snowballs`` decides each jump ellipse on its own (its centre, axes and angle against
  the saturation centres) and keeps the list order; ``extend_ellipses`` draws the kept list in
  order.  The same kept ellipses in the same order give the same flags.

What this relies on in stcal (the three calls per group in that order, the rules above,
``find_ellipses`` a pure function of its plane) is checked twice: at run time, each call is
matched against the planes recomputed from the group DQ (:class:`~.hooks.SnowballFilter`),
and the equality tests compare stores with stock ``run_detector1`` on the stcal releases of
:mod:`nrsdark_dask.calibration.versions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
SLACK = 1.0  # pixels of margin on every bound (float rounding of centroids and moments)
AXIS_SLACK = 0.05  # pixels of margin on a minor axis computed here (module doc, B)


@dataclass
class Regions:
    """The 8-connected regions of a plane's nonzero pixels: each pixel's row, column and
    region (regions numbered in raster order of their first pixel), and each region's
    inclusive bounding box."""

    shape: tuple
    rows: np.ndarray
    cols: np.ndarray
    region: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray

    @property
    def n(self) -> int:
        return len(self.r0)

    @property
    def area(self) -> np.ndarray:
        """Box areas: at least each region's filled area."""
        return (self.r1 - self.r0 + 1) * (self.c1 - self.c0 + 1)

    @property
    def reach(self) -> np.ndarray:
        """How far from its box a point inside a region's ellipse can be (module doc, B)."""
        return np.maximum(np.hypot(self.r1 - self.r0, self.c1 - self.c0) - 0.5, 0.5) + SLACK

    def minor_axes(self) -> np.ndarray:
        """Each region's minor axis as stcal computes it from skimage's moments,
        4 sqrt(l2) - 1 with l2 the smaller eigenvalue of its pixel coordinates' covariance
        (computed here from coordinates relative to the box, in float64)."""
        if not self.n:
            return np.zeros(0)
        y = (self.rows - self.r0[self.region]).astype(np.float64)
        x = (self.cols - self.c0[self.region]).astype(np.float64)
        count = np.bincount(self.region, minlength=self.n)

        def mean(v):
            return np.bincount(self.region, weights=v, minlength=self.n) / count

        my, mx = mean(y), mean(x)
        vy, vx = mean(y * y) - my**2, mean(x * x) - mx**2
        cov = mean(x * y) - mx * my
        l2 = (vy + vx) / 2 - np.sqrt(((vy - vx) / 2) ** 2 + cov**2)
        return 4 * np.sqrt(np.maximum(l2, 0.0)) - 1

    def plane(self, keep: np.ndarray) -> np.ndarray | None:
        """A uint8 plane (0/1) holding the regions ``keep`` whole and nothing else, cut to the
        rows and columns up to the last of their pixels (coordinates unchanged); None when
        ``keep`` holds none."""
        keep = np.asarray(keep, bool)
        if not keep.any():
            return None
        out = np.zeros((int(self.r1[keep].max()) + 1, int(self.c1[keep].max()) + 1), np.uint8)
        mine = keep[self.region]
        out[self.rows[mine], self.cols[mine]] = 1
        return out


CALL_PIXELS = 50_000  # what one more find_ellipses call costs, in pixels labelled (measured)


def measuring_planes(regions: Regions, keep: np.ndarray) -> list[np.ndarray]:
    """The masks of the planes to measure the regions ``keep`` in, in raster order: all in
    one plane, or one plane each (when the planes cut to each region's last row and column
    hold fewer pixels in all: skimage labels every pixel of a plane); empty when none."""
    idx = np.flatnonzero(keep)
    if not len(idx):
        return []
    one = float((regions.r1[idx].max() + 1) * (regions.c1[idx].max() + 1))
    each = float(((regions.r1[idx] + 1) * (regions.c1[idx] + 1)).sum()) \
        + CALL_PIXELS * (len(idx) - 1)
    if one <= each:
        return [np.asarray(keep, bool)]
    out = []
    for k in idx:
        mask = np.zeros(regions.n, bool)
        mask[k] = True
        out.append(mask)
    return out


def flat_nonzero(plane: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(plane)`` of a uint8 plane, 4-6x faster on a sparse one: the plane read
    as 8-byte words, then only the nonzero words' bytes looked at."""
    flat = np.ascontiguousarray(plane).reshape(-1)
    if flat.dtype.itemsize != 1 or flat.size % 8:
        return np.flatnonzero(flat)
    words = np.flatnonzero(flat.view(np.uint64))
    idx = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    return idx[flat[idx] != 0]


def find_regions(pixels: np.ndarray) -> Regions:
    """The regions of a 2-D plane's nonzero pixels, 8-connected as stcal labels them (its
    pixels joined to their right and three lower neighbours, then scipy's connected
    components): work in proportion to the pixels flagged, not to the plane."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nrows, ncols = pixels.shape
    flat = flat_nonzero(pixels)  # raster order
    rows, cols = np.divmod(flat, ncols)
    n = len(flat)
    src, dst = [np.arange(n)], [np.arange(n)]
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
        ok = (rows + dr < nrows) & (cols + dc >= 0) & (cols + dc < ncols)
        key = flat[ok] + dr * ncols + dc
        pos = np.minimum(np.searchsorted(flat, key), max(n - 1, 0))
        hit = flat[pos] == key if n else np.zeros(0, bool)
        src.append(np.flatnonzero(ok)[hit])
        dst.append(pos[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    k, comp = connected_components(coo_matrix((np.ones(len(src), np.int8), (src, dst)),
                                              shape=(n, n)), directed=False)
    _, first = np.unique(comp, return_index=True)  # number regions by their first pixel
    rank = np.empty(k, np.int64)
    rank[comp[np.sort(first)]] = np.arange(k)
    region = rank[comp]
    r0, c0 = np.full(k, nrows, np.int64), np.full(k, ncols, np.int64)
    r1, c1 = np.full(k, -1, np.int64), np.full(k, -1, np.int64)
    np.minimum.at(r0, region, rows)
    np.maximum.at(r1, region, rows)
    np.minimum.at(c0, region, cols)
    np.maximum.at(c1, region, cols)
    return Regions((nrows, ncols), rows, cols, region, r0, r1, c0, c1)


def _boxes(r: Regions, which=None) -> tuple:
    out = (r.r0, r.r1, r.c0, r.c1)
    return out if which is None else tuple(a[which] for a in out)


def _any_within(a: tuple, b: tuple, reach: np.ndarray, reach_of_a: bool) -> np.ndarray:
    """For each box of ``a`` ((r0, r1, c0, c1) arrays, inclusive; a point is a box of one),
    whether some box of ``b`` lies within ``reach`` of it: the distance between the two boxes
    at most ``reach[i]`` of a's box i (``reach_of_a``), else ``reach[j]`` of b's box j."""
    ar0, ar1, ac0, ac1 = (np.asarray(x, np.float64) for x in a)
    br0, br1, bc0, bc1 = (np.asarray(x, np.float64) for x in b)
    out = np.zeros(len(ar0), bool)
    if not len(ar0) or not len(br0):
        return out
    reach = np.asarray(reach, np.float64)
    step = max(1, 4_000_000 // len(br0))  # bounded temporaries
    for s in range(0, len(ar0), step):
        sl = slice(s, s + step)
        dy = np.maximum(0.0, np.maximum(ar0[sl, None] - br1, br0 - ar1[sl, None]))
        dx = np.maximum(0.0, np.maximum(ac0[sl, None] - bc1, bc0 - ac1[sl, None]))
        limit = reach[sl, None] if reach_of_a else reach[None, :]
        out[sl] = (np.hypot(dx, dy) <= limit).any(axis=1)
    return out


def jump_candidates(jumps: Regions, saturation: list[Regions], min_area: float,
                    edge_size: int, nrows: int) -> np.ndarray:
    """Bool mask of the jump regions whose ellipse could become a snowball (module doc, C):
    box area at least ``min_area`` and (box in the edge bands, or a region of ``saturation``
    (the group's N and S) within its reach)."""
    low, high = edge_size, max(0, nrows - edge_size)
    keep = (jumps.c0 < low + SLACK) | (jumps.r0 < low + SLACK) \
        | (jumps.c1 > high - SLACK) | (jumps.r1 > high - SLACK)
    for sat in saturation:
        keep |= _any_within(_boxes(jumps), _boxes(sat), jumps.reach, reach_of_a=True)
    return keep & (jumps.area >= min_area)


def saturation_candidates(sats: Regions, jump_ellipses: list,
                          extend_above: float | None = None) -> np.ndarray:
    """Bool mask of the saturation regions whose ellipse could matter (module doc, C): a
    region whose box comes within the larger semi-axis of a jump ellipse's centre
    (``jump_ellipses`` as stcal gives them: ``((column, row), (h, w), angle)``), or
    (``extend_above``: the group's own new saturation) whose box allows a minor axis above
    it."""
    keep = np.zeros(sats.n, bool)
    if jump_ellipses:
        centre = np.array([e[0] for e in jump_ellipses], np.float64).reshape(-1, 2)
        radius = np.array([max(abs(e[1][0]), abs(e[1][1])) / 2 for e in jump_ellipses],
                          np.float64) + SLACK
        keep = _any_within(_boxes(sats), (centre[:, 1], centre[:, 1], centre[:, 0],
                                          centre[:, 0]), radius, reach_of_a=False)
    if extend_above is not None:
        keep |= sats.minor_axes() + AXIS_SLACK > extend_above
    return keep


@dataclass
class RegionCount:
    """What the filter saw: regions in the planes, and those stcal measured."""

    planes: int = 0
    regions: int = 0
    kept: int = 0
    by_plane: dict = field(default_factory=dict)

    def add(self, kind: str, seen: int, kept: int) -> None:
        self.planes += 1
        self.regions += seen
        self.kept += kept
        n = self.by_plane.setdefault(kind, [0, 0])
        n[0] += seen
        n[1] += kept
