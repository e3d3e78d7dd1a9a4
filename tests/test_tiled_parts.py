"""The parts of tiled calibration on their own: scratch cubes, the plan from a budget, and the
hooks that hand whole-exposure quantities to stcal's own code (each shown to change stcal's
answer on a slab, and to change nothing outside its block)."""

import numpy as np
import pytest

from nrsdark_dask.store import StoreLayout
from nrsdark_dask.tiled import hooks
from nrsdark_dask.tiled.plan import plan_pieces, whole_frame_need
from nrsdark_dask.tiled.scratch import Cube

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
    enough that stcal extends it into the next group, overwriting that group's jump flags."""
    g, n = 6, 96
    gdq = np.zeros((g, n, n), np.uint8)
    yy, xx = np.mgrid[:n, :n]
    for grp, (cy, cx, r) in {2: (30, 30, 4.5), 3: (60, 60, 6.0)}.items():
        d = np.hypot(yy - cy, xx - cx)
        gdq[grp:, d <= r] |= SAT
        gdq[grp, (d > r) & (d <= 2 * r)] |= JUMP
    gdq[4, 55:66, 55:66] |= JUMP  # jump flags that group 3's extended core will overwrite
    for grp in (1, 5):
        gdq[grp, 10:13, 70:73] |= JUMP  # a small event: a region but not a snowball
    return gdq


def test_known_snowball_regions_give_stocks_flags():
    from stcal.jump import jump as J
    from stcal.jump.jump_class import JumpData

    jd = JumpData()
    jd.fl_sat, jd.fl_jump, jd.fl_dnu = SAT, JUMP, DNU
    jd.set_snowball_info(True, 5.0, 1.0, 2.0, True, 2.5, 4, 25)
    jd.max_extended_radius = 400
    jd.mask_persist_grps_next_int, jd.persist_grps_flagged = False, 0
    gdq = _snowball_gdq()
    stock, n_stock = J.flag_large_events(gdq.copy()[None], JUMP, SAT, jd)
    found = hooks.find_regions(gdq, jd, J.find_ellipses)
    assert len(found) == 2 * (len(gdq) - 1)
    ours = gdq.copy()
    with hooks.known_regions(found) as known:
        out, n = J.flag_large_events(ours[None], JUMP, SAT, jd)
    np.testing.assert_array_equal(out, stock)
    assert n == n_stock >= 2
    # group 4's jump flags were overwritten by group 3's extended core: stcal found them again
    assert 0 < known.used < known.asked
    wrong = [(k, b, []) for k, b, _ in found]  # answers are only given for the exact flags
    with hooks.known_regions(wrong) as known:
        J.find_ellipses(gdq[2] | JUMP, JUMP, jd.min_jump_area)
    assert known.used == 0
