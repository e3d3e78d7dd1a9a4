"""The parts of tiled calibration on their own: scratch cubes, the plan from a budget, and the
hooks that hand whole-exposure quantities to stcal's own code (each shown to change stcal's
answer on a slab, and to change nothing outside its block)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nrsdark_dask.calibration import hooks
from nrsdark_dask.calibration.budget import plan_pieces, whole_frame_need
from nrsdark_dask.calibration.scratch import Cube
from nrsdark_dask.store import StoreLayout

DNU, SAT, JUMP = 1, 2, 4


def test_cube_reads_back_rows_planes_and_views(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 40, 16)).astype(np.float32)
    cube = Cube(str(tmp_path / "c.f32"), a.shape, "float32").create()
    cube.write(a[:, :25], row0=0)
    cube.write(a[:, 25:], row0=25)
    np.testing.assert_array_equal(cube.read(), a)
    np.testing.assert_array_equal(cube.read(slice(1, 3)), a[1:3])
    np.testing.assert_array_equal(cube.read(rows=slice(7, 19)), a[:, 7:19])
    buf = np.empty((5, 41, 16), np.float32)  # a view with planes apart, as CubeArray reads
    np.testing.assert_array_equal(cube.read(rows=slice(0, 40), out=buf[:, :40]), a)
    rows = cube.rows(3, 9)
    assert rows.shape == (5, 6, 16)
    np.testing.assert_array_equal(rows[2], a[2, 3:9])
    np.testing.assert_array_equal(rows[(4,)], a[4, 3:9])
    np.testing.assert_array_equal(rows.block(1, 4), a[1:4, 3:9])
    with pytest.raises(ValueError, match="cannot write"):
        cube.write(a[:, :5], row0=38)


def _layout(family="TRAD", ngroups=88, subarray="FULL", ny=2048):
    return StoreLayout(detector="NRS1", family=family, subarray=subarray, ngroups=ngroups,
                       readpatt="NRSIRS2RAPID" if family == "IRS2" else "NRSRAPID", ny=ny,
                       nx=2048, ny_raw=3200 if family == "IRS2" else ny, ystart=1, xstart=1,
                       tframe=10.7, tgroup=10.7, has_bias=True)


@pytest.mark.parametrize("family,ngroups", [("TRAD", 88), ("IRS2", 200), ("TRAD", 20)])
def test_plan_fits_the_budget_and_covers_the_exposure(family, ngroups):
    lay = _layout(family, ngroups)
    plan = plan_pieces(lay, "1.5GiB", threads=2)
    assert max(plan.peaks.values()) <= plan.budget
    slabs = plan.slabs(lay.ny)
    assert slabs[0][0] == 0 and slabs[-1][1] == lay.ny and len(slabs) >= 2
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:]))
    blocks = plan.blocks(ngroups, first_at_least=3)
    assert blocks[0][0] == 0 and blocks[-1][1] == ngroups and blocks[0][1] >= 3
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    bigger = plan_pieces(lay, "4GiB", threads=2)
    assert bigger.slab_rows >= plan.slab_rows and bigger.group_block >= plan.group_block


def test_small_exposures_are_one_piece_and_a_tiny_budget_is_refused():
    small = plan_pieces(_layout(ngroups=10, subarray="SUBS200A1", ny=64), threads=8)
    assert small.slabs(64) == [(0, 64)]  # too small to be worth cutting
    with pytest.raises(ValueError, match=r"0.40 GiB is too small for 200-group FULL IRS2 .* "
                                         r"need ~1\.4\d GiB"):
        plan_pieces(_layout("IRS2", 200), int(0.4 * 2**30))
    # the default budget grows to what the whole-frame pieces need (the snowball step holds
    # all of a 200-group IRS2 exposure's GROUPDQ); a given one is never raised
    big = _layout("IRS2", 400)
    assert plan_pieces(big).budget == whole_frame_need(big) > 1.5 * 2**30


def _twopoint_params(ngroups):
    from stcal.jump.jump_class import JumpData
    from stcal.jump.twopoint_difference_class import TwoPointParams

    jd = JumpData()
    jd.fl_dnu, jd.fl_sat, jd.fl_jump, jd.fl_ngv, jd.fl_good, jd.fl_ref = DNU, SAT, JUMP, 0, 0, 0
    jd.nframes = 1
    jd.dt_group = np.ones(1)
    jd.n_reads_groupdiff = np.ones(1) * 2
    jd.after_jump_flag_e1 = jd.after_jump_flag_e2 = 0.0
    for k in ("minimum_groups", "minimum_sigclip_groups", "only_use_ints",
              "min_diffs_single_pass"):
        setattr(jd, k, {"minimum_groups": 3, "minimum_sigclip_groups": 100,
                        "only_use_ints": True, "min_diffs_single_pass": 10}[k])
    return TwoPointParams(jd)


def test_whole_frame_dnu_groups_reach_stcal_jump_detection():
    """A slab whose first two groups are all DO_NOT_USE (say, reference rows only): alone,
    stcal skips it as too short; told the whole frame's count (none), it runs."""
    from stcal.jump import twopoint_difference as twopt

    rng = np.random.default_rng(1)
    data = rng.normal(100, 1, (1, 4, 3, 5)).astype(np.float32)
    data[0, 3, 1, 2] += 200  # a jump
    gdq = np.zeros(data.shape, np.uint8)
    gdq[0, :2] = DNU
    params = _twopoint_params(4)
    rn = np.ones((3, 5), np.float32)
    assert twopt.find_crs(data.copy(), gdq.copy(), rn, params)[3] == -99  # skipped
    with hooks.dnu_groups(np.zeros(4, bool), DNU):
        assert twopt.groups_all_set_dnu(1, 4, gdq, params)[0] == 4
        assert twopt.find_crs(data.copy(), gdq.copy(), rn, params)[3] >= 0
    assert twopt.groups_all_set_dnu(1, 4, gdq, params)[0] == 2  # stock outside the block


def test_after_jump_thresholds_use_the_whole_frame_gain():
    from stcal.jump.jump_class import JumpData

    whole = np.float32(2.5)
    jd = hooks.whole_frame_jump_data(JumpData(), whole)
    jd.after_jump_flag_dn1, jd.after_jump_flag_dn2 = 10.0, 4.0
    jd.after_jump_flag_e1 = 999.0  # what detect_jumps_data sets from the slab's gain
    assert jd.after_jump_flag_e1 == 10.0 * whole and jd.after_jump_flag_e2 == 4.0 * whole
    assert type(jd.after_jump_flag_e1) is type(10.0 * np.nanmedian(np.full(3, whole)))
    assert isinstance(jd, JumpData)


def _snowball_gdq():
    """Two groups with a saturated core (radius 4) ringed by jump flags, the second core large
    enough that stcal extends it into the next group, overwriting that group's jump flags;
    small events (regions but not snowballs) away from the cores and on the frame edge."""
    g, n = 6, 96
    gdq = np.zeros((g, n, n), np.uint8)
    yy, xx = np.mgrid[:n, :n]
    for grp, (cy, cx, r) in {2: (30, 30, 4.5), 3: (60, 60, 6.0)}.items():
        d = np.hypot(yy - cy, xx - cx)
        gdq[grp:, d <= r] |= SAT
        gdq[grp, (d > r) & (d <= 2 * r)] |= JUMP
    gdq[4, 55:66, 55:66] |= JUMP  # jump flags that group 3's extended core will overwrite
    gdq[2:, np.hypot(yy - 80, xx - 16) <= 5] |= SAT  # a core without jumps: extended too
    for grp in (1, 2, 4, 5):
        gdq[grp, 40:43, 70:73] |= JUMP  # a small event: a region but not a snowball
        gdq[grp, 1:4, 50:53] |= JUMP  # near the edge: a snowball without saturation
    return gdq


def _jump_data(edge_size=25, min_jump_area=5.0):
    from stcal.jump.jump_class import JumpData

    jd = JumpData()
    jd.fl_sat, jd.fl_jump, jd.fl_dnu = SAT, JUMP, DNU
    jd.set_snowball_info(True, min_jump_area, 1.0, 2.0, True, 2.5, 4, edge_size)
    jd.max_extended_radius = 400
    jd.mask_persist_grps_next_int, jd.persist_grps_flagged = False, 0
    return jd


def _stock_and_filtered(gdq, jd):
    from stcal.jump import jump as J

    hooks.install()
    stock, n_stock = J.flag_large_events(gdq.copy()[None], JUMP, SAT, jd)
    cube = gdq.copy()[None]
    with hooks.snowball_filter(jd, cube) as seen:
        ours, n = J.flag_large_events(cube, JUMP, SAT, jd)
    assert seen.calls == 3 * (len(gdq) - 1)
    return (stock, n_stock), (ours, n), seen


def test_snowball_filter_gives_stocks_flags_measuring_fewer_regions():
    (stock, n_stock), (ours, n), seen = _stock_and_filtered(_snowball_gdq(), _jump_data(10))
    np.testing.assert_array_equal(ours, stock)
    assert n == n_stock >= 4  # the two cores and the edge events
    assert seen.count.planes == 15
    # the small events away from the cores and the edge are never measured
    jump_seen, jump_kept = seen.count.by_plane["jump"]
    assert 0 < jump_kept < jump_seen


def test_snowball_filter_refuses_calls_it_was_not_proved_for():
    """A call that does not come as stcal's group loop makes it (the next group's new
    saturation, this group's, then this group's jump plane) fails loudly."""
    from stcal.jump import jump as J

    gdq = _snowball_gdq()
    hooks.install()
    cube = gdq.copy()[None]
    with hooks.snowball_filter(_jump_data(), cube):
        with pytest.raises(hooks.SnowballError, match="not for saturation"):
            J.find_ellipses(cube[0, 1], JUMP, 5.0)
    with hooks.snowball_filter(_jump_data(), cube):
        with pytest.raises(hooks.SnowballError, match="next group's new saturation"):
            J.find_ellipses(cube[0, 1] & SAT, SAT, 1.0)
    assert len(J.find_ellipses(cube[0, 1], JUMP, 5.0)) == 2  # stock outside the block


def test_a_jump_ellipse_can_reach_beyond_its_box_and_is_kept():
    """A dumbbell (two blobs joined by a line) has a moment ellipse far longer than the region
    is wide: stcal finds a saturation centre 57 rows outside the region's bounding box (0.7 of
    its diagonal) inside it (stcal's ellipse of this horizontal region even stands upright).  A filter on the
    bounding box alone would drop this snowball, and the saturation region that holds the
    centre; the reach bound keeps both."""
    from stcal.jump import jump as J

    from nrsdark_dask.calibration import regions as R

    plane = np.zeros((400, 200), bool)
    plane[97:104, 60:67] = plane[97:104, 134:141] = True
    plane[100, 60:141] = True
    (ellipse,) = J.find_ellipses(plane.astype(np.uint8) * JUMP, JUMP, 5.0)
    centre = (100.0, 100.0 + ellipse[1][1] / 2 - 1)  # (column, row): the region's rows are
    assert J.point_inside_ellipse(centre, ellipse)  # 97-103, the centre 57 rows below them
    jumps = R.find_regions(plane)
    near, far = np.zeros_like(plane), np.zeros_like(plane)
    near[int(centre[1]), 100] = far[390, 100] = True  # a saturated pixel at each point
    assert R.jump_candidates(jumps, [R.find_regions(near)], 5.0, 25, 400).tolist() == [True]
    assert np.array_equal(jumps.plane([True]), plane[:104, :141])
    assert R.jump_candidates(jumps, [R.find_regions(far)], 5.0, 25, 400).tolist() == [False]
    assert not J.point_inside_ellipse((100.0, 390.0), ellipse)  # indeed out of reach
    both = R.find_regions(near | far)
    assert R.saturation_candidates(both, [ellipse]).tolist() == [True, False]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), density=st.sampled_from([0.001, 0.05, 0.3, 0.6]))
def test_regions_are_scikit_images_labels(seed, density):
    """The filter's regions are the ones scikit-image labels for stcal (8-connected), in the
    same order (raster order of first pixels), boxes included: on random planes, the edges
    and corners of the frame included."""
    import skimage.measure

    from nrsdark_dask.calibration import regions as R

    rng = np.random.default_rng(seed)
    plane = rng.random((int(rng.integers(1, 60)), int(rng.integers(1, 60)))) < density
    found = R.find_regions(plane)
    labels = np.zeros(plane.shape, np.int64)
    labels[found.rows, found.cols] = found.region + 1
    np.testing.assert_array_equal(labels, skimage.measure.label(plane.astype(np.uint8)))
    for k, props in enumerate(skimage.measure.regionprops(labels)):
        assert props.bbox == (found.r0[k], found.c0[k], found.r1[k] + 1, found.c1[k] + 1)
    if found.n:
        keep = rng.random(found.n) < 0.5
        keep[0] = True
        kept = found.plane(keep)
        assert kept.shape == (found.r1[keep].max() + 1, found.c1[keep].max() + 1)
        np.testing.assert_array_equal(kept, np.isin(labels, np.flatnonzero(keep) + 1)[
            :kept.shape[0], :kept.shape[1]])


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_bounds_hold_for_stcals_ellipses(seed):
    """The bounds the filter rests on (regions module doc, B), checked on stcal's own ellipses
    of random 8-connected regions: every point stcal finds inside an ellipse lies within the
    region's reach of its box, and the filter's minor axis is stcal's."""
    from stcal.jump import jump as J

    from nrsdark_dask.calibration import regions as R

    rng = np.random.default_rng(seed)
    plane = np.zeros((80, 80), bool)
    y, x = 40, 40
    steps = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    for _ in range(rng.integers(1, 60)):  # a random walk: one 8-connected region
        plane[y, x] = True
        dy, dx = steps[rng.integers(0, 8)]
        y, x = int(np.clip(y + dy, 1, 78)), int(np.clip(x + dx, 1, 78))
    (ellipse,) = J.find_ellipses(plane.astype(np.uint8) * JUMP, JUMP, 1.0)
    region = R.find_regions(plane)
    assert region.n == 1
    assert abs(min(ellipse[1]) - region.minor_axes()[0]) < 1e-6
    reach = region.reach[0] - R.SLACK  # the proved bound, without the slack
    cx, cy = ellipse[0]
    for px, py in rng.uniform(-1, 1, (300, 2)) * (reach + 40) + (cx, cy):
        if J.point_inside_ellipse((px, py), ellipse):
            gap = np.hypot(max(0, region.c0[0] - px, px - region.c1[0]),
                           max(0, region.r0[0] - py, py - region.r1[0]))
            assert gap <= reach + 1e-9


def _random_cube(rng, g, ny, nx):
    """A group-DQ cube with saturating cores that grow and spread over the groups, rings of
    jump flags around some, and jump regions of many shapes (points, plus signs, lines,
    rings, dumbbells, blobs), some on the edges."""
    gdq = np.zeros((g, ny, nx), np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for _ in range(rng.integers(0, 5)):
        cy, cx, r, g0 = rng.uniform(0, ny), rng.uniform(0, nx), rng.uniform(0.5, 5), \
            rng.integers(1, g)
        d = np.hypot(yy - cy, xx - cx)
        gdq[g0:, d <= r] |= SAT
        if rng.random() < 0.7:
            gdq[g0, (d > r) & (d <= rng.uniform(1.5, 3) * r)] |= JUMP
    for _ in range(rng.integers(5, 60)):
        grp, y, x = rng.integers(1, g), rng.integers(0, ny), rng.integers(0, nx)
        kind = rng.integers(0, 5)
        if kind == 0:
            gdq[grp, max(0, y - 1):y + 2, x] |= JUMP
            gdq[grp, y, max(0, x - 1):x + 2] |= JUMP
        elif kind == 1:
            gdq[grp, y, x:x + rng.integers(1, 30)] |= JUMP
        elif kind == 2:
            d = np.hypot(yy - y, xx - x)
            r = rng.uniform(2, 8)
            gdq[grp, (d <= r) & (d > r - 1.2)] |= JUMP
        elif kind == 3:
            L = rng.integers(5, 40)
            gdq[grp, y:y + 5, x:x + 5] |= JUMP
            gdq[grp, y:y + 5, x + L:x + L + 5] |= JUMP
            gdq[grp, min(y + 2, ny - 1), x:x + L + 5] |= JUMP
        else:
            gdq[grp, y:y + rng.integers(1, 6), x:x + rng.integers(1, 6)] |= JUMP
    return gdq


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), edge=st.sampled_from([0, 3, 10, 25]),
       area=st.sampled_from([1.0, 5.0, 9.0]))
def test_snowball_filter_equals_stock_on_random_cubes(seed, edge, area):
    rng = np.random.default_rng(seed)
    gdq = _random_cube(rng, int(rng.integers(3, 7)), int(rng.integers(40, 90)),
                       int(rng.integers(40, 120)))
    (stock, n_stock), (ours, n), seen = _stock_and_filtered(gdq, _jump_data(edge, area))
    np.testing.assert_array_equal(ours, stock)
    assert n == n_stock


def test_a_worker_with_other_releases_is_refused():
    from nrsdark_dask.calibration import versions

    versions.check_worker(versions.installed())  # the same: nothing to say
    other = {**versions.installed(), "stcal": "1.99.0"}
    with pytest.raises(ValueError, match=r"this worker has stcal 1\.\d+\.\d+ \(the driver has "
                                         r"1\.99\.0\): tiled calibration needs the same"):
        versions.check_worker(other)
