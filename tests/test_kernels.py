"""Kernels against slow, obvious references (astropy sigma_clip, plain loops)."""

import numpy as np
import pytest
from astropy.stats import sigma_clip

from nrsdark_dask import kernels as K
from nrsdark_dask.instrument import DQ

JUMP, DNU = DQ["JUMP_DET"], DQ["DO_NOT_USE"]


def _astropy_clip(data, valid):
    d = np.ma.MaskedArray(data.astype(np.float64), mask=~valid | ~np.isfinite(data))
    c = sigma_clip(d, sigma=3, maxiters=5, axis=0, cenfunc="median", stdfunc="std")
    return c.mean(axis=0).filled(np.nan), c.std(axis=0).filled(np.nan), c.count(axis=0)


@pytest.mark.parametrize("n_exp", [1, 2, 5, 17])
def test_clipped_mean_std_equals_astropy(n_exp):
    rng = np.random.default_rng(n_exp)
    data = rng.normal(100, 10, (n_exp, 6, 30, 40)).astype(np.float32)
    data[rng.random(data.shape) < 0.05] += 500  # cosmic-ray-like outliers
    data[rng.random(data.shape) < 0.02] = np.nan
    valid = rng.random(data.shape) > 0.1
    valid[:, :, 0, 0] = False  # an all-masked pixel
    mean, std, count = K.clipped_mean_std(data, valid)
    ref_mean, ref_std, ref_count = _astropy_clip(data, valid)
    np.testing.assert_array_equal(count, ref_count)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(std, ref_std, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isnan(mean[:, 0, 0]).all() and (count[:, 0, 0] == 0).all()
    if n_exp == 1:
        ok = valid[0] & np.isfinite(data[0])
        np.testing.assert_array_equal(mean[ok], data[0][ok])
        assert (std[ok] == 0).all()


def test_clipped_mean_rejects_an_outlier_like_astropy_with_maxiters():
    x = np.array([10, 11, 9, 10, 12, 8, 10, 11, 9, 10, 300.0], np.float32)[:, None]
    mean, std, count = K.clipped_mean_std(x)
    assert count[0] == 10 and mean[0] == pytest.approx(10.0)


def test_good_groups_masks_at_and_after_first_jump_and_do_not_use():
    gdq = np.zeros((2, 6, 3, 3), np.uint8)
    gdq[0, 3, 1, 1] = JUMP
    gdq[1, 1, 0, 0] = DNU | DQ["SATURATED"]
    gdq[1, 4, 2, 2] = JUMP
    good = K.good_groups(gdq, JUMP, DNU | DQ["SATURATED"])
    ref = np.ones_like(good)
    for e in range(2):
        for y in range(3):
            for x in range(3):
                seen = False
                for g in range(6):
                    seen |= bool(gdq[e, g, y, x] & JUMP)
                    ref[e, g, y, x] = not seen and not (gdq[e, g, y, x] & DNU)
    np.testing.assert_array_equal(good, ref)


def test_saturated_groups_are_unusable_and_small_drops_are_not_negative_jumps():
    gdq = np.zeros((1, 4, 1, 1), np.uint8)
    gdq[0, 2, 0, 0] = DQ["SATURATED"]  # jwst's saturation step sets only this bit
    assert K.good_groups(gdq, JUMP, DNU | DQ["SATURATED"])[0, :, 0, 0].tolist() == [True, True, False, True]
    ramp = np.array([0.0, -5.0, 10.0, -40.0], np.float32).reshape(1, 4, 1, 1)
    jumps = np.full((1, 4, 1, 1), JUMP, np.uint8)
    assert K.negative_jump_counts(ramp, jumps, jump_bit=JUMP)[0, 0, 0] == 2
    assert K.negative_jump_counts(ramp, jumps, min_drop=10.0, jump_bit=JUMP)[0, 0, 0] == 1  # only -50
    rng = np.random.default_rng(1)
    white = rng.normal(0, 10, (1, 30, 64, 64)).astype(np.float32)
    assert K.difference_scatter(white) == pytest.approx(10 * np.sqrt(2), rel=0.05)


def test_negative_jump_counts_against_a_loop():
    rng = np.random.default_rng(3)
    ramp = rng.normal(0, 50, (2, 8, 5, 5)).astype(np.float32)
    gdq = np.where(rng.random(ramp.shape) < 0.3, JUMP, 0).astype(np.uint8)
    got = K.negative_jump_counts(ramp, gdq, jump_bit=JUMP)
    ref = np.zeros((2, 5, 5), int)
    for e, g, y, x in np.ndindex(2, 8, 5, 5):
        if g and gdq[e, g, y, x] & JUMP and ramp[e, g, y, x] < ramp[e, g - 1, y, x]:
            ref[e, y, x] += 1
    np.testing.assert_array_equal(got, ref)


def test_rc_candidates_rules():
    g1 = np.zeros((1, 7, 7), np.float32)
    nxt = np.zeros((1, 7, 7), np.uint8)  # bit 0: group 2 flagged, bit 1: group 3
    g1[0, 1, 1] = 1000  # RC: next two groups jump-flagged
    nxt[0, 1, 1] = 3
    g1[0, 1, 2] = 5  # its IPC neighbour: faint, not enough to drop it
    g1[0, 4, 4] = 1000  # cosmic ray shared with a neighbour
    g1[0, 4, 5] = 300
    nxt[0, 4, 4] = 3
    g1[0, 5, 1] = 1000  # bright but next groups clean -> ramp will be fit, not RC
    g1[0, 1, 5] = 1000  # group 2 last before saturation (not testable), group 3 SATURATED
    nxt[0, 1, 5] = 2
    cand = K.rc_candidates(g1, nxt, None, mean=np.array([0.0]), std=np.array([10.0]))  # 100 DN
    assert cand[0, 1, 1] and not cand[0, 4, 4] and not cand[0, 5, 1] and cand[0, 1, 5]
    assert cand.sum() == 2
    strict = K.rc_candidates(g1, nxt, None, np.array([0.0]), np.array([10.0]), next_groups="all")
    assert strict[0, 1, 1] and not strict[0, 1, 5]
    # a very bright RC lights its neighbour above threshold through IPC (1.5 %): kept, unless
    # the report's rule is applied literally
    g1[0, 1, 1], g1[0, 1, 2] = 10000, 150
    thr = (None, np.array([0.0]), np.array([10.0]))
    assert K.rc_candidates(g1, nxt, *thr)[0, 1, 1]
    assert not K.rc_candidates(g1, nxt, *thr, ipc_fraction=0.0)[0, 1, 1]
    g1[0, 1, 2] = 600  # 6 %: charge shared by a cosmic ray
    assert not K.rc_candidates(g1, nxt, *thr)[0, 1, 1]


def test_rc_candidate_whose_ramp_drops_is_a_telegraph_pixel():
    """Issue 21: a fast telegraph pixel high at group 1 that toggles low in group 2 or 3
    passes the report's RC test; its negative jump tells it apart (an RC ramp only rises)."""
    g1 = np.zeros((2, 5, 5), np.float32)
    nxt = np.zeros((2, 5, 5), np.uint8)
    neg = np.zeros((2, 5, 5), np.int16)
    g1[:, 1, 1] = g1[:, 3, 3] = 1000
    nxt[:, 1, 1] = nxt[:, 3, 3] = 3
    neg[0, 3, 3] = 1  # exposure 0: pixel (3, 3) drops back; exposure 1 it does not
    thr = (np.zeros(2), np.full(2, 10.0))
    cand = K.rc_candidates(g1, nxt, neg, *thr)
    assert cand[:, 1, 1].all() and cand[:, 3, 3].tolist() == [False, True]
    assert K.rc_candidates(g1, nxt, neg, *thr, telegraph_veto=False)[:, 3, 3].all()
    assert (K.rc_candidates(g1, nxt, None, *thr) == cand | (neg > 0)).all()


def test_rc_saturated_in_group_1_is_not_vetoed_by_its_ipc():
    """Issue 21: an RC pixel saturated in group 1 (rc_next bit 3) shows a capped excess while
    its neighbours' IPC keeps growing (2.4-3.7 % of the cap measured); jwst grows SATURATED
    onto its 8 neighbours.  The pixel stays a candidate; its brighter-lit neighbours do not
    become candidates; without bit 3 the old veto applies."""
    g1 = np.zeros((1, 5, 5), np.float32)
    nxt = np.zeros((1, 5, 5), np.uint8)
    g1[0, 2, 2] = 40000  # capped by saturation
    for y, x in ((1, 2), (3, 2), (2, 1), (2, 3)):
        g1[0, y, x] = 1200  # 3 % IPC of the true charge
    nxt[0, 1:4, 1:4] = 3 | 8  # groups 1-3 SATURATED on the pixel and its 8 neighbours
    thr = (None, np.array([0.0]), np.array([20.0]))  # threshold 200 DN
    cand = K.rc_candidates(g1, nxt, *thr)
    assert cand[0, 2, 2] and cand.sum() == 1
    assert not K.rc_candidates(g1, nxt & 7, *thr).any()  # before: vetoed by its IPC
    g1[0, 2, 3] = 40000  # a neighbour as bright: a shared cosmic ray, not RC
    assert not K.rc_candidates(g1, nxt, *thr)[0, 2, 2]


def test_telegraph_rules():
    counts = np.zeros((3, 4, 4), np.int16)
    counts[:, 0, 0] = [3, 0, 4]
    counts[0, 1, 1] = 5
    cand = K.telegraph_candidates_st(counts, np.full(3, 0.5), np.full(3, 0.2))  # 1.5
    assert (cand.sum(axis=0) > 1)[0, 0] and not (cand.sum(axis=0) > 1)[1, 1]
    esa = K.telegraph_candidates_esa(counts, ngroups=88)  # limit (1-0.9973)*87*4 = 0.94
    assert esa[0, 0] and esa[1, 1] and not esa[2, 2]


def test_bad_reference_pixels_and_hot():
    rng = np.random.default_rng(2)
    counts, err = rng.normal(0, 1, 200), rng.normal(1, 1, 200)  # every reference pixel
    counts[:2], err[2:4] = 10, 9
    bad = K.bad_reference_pixels(counts, err)
    assert bad[:4].all() and bad.sum() == 4  # 4 robust sigma, not one of the 196 normal ones
    (cm, cs), (em, es) = K.median_robust_sigma(counts), K.median_robust_sigma(err)
    np.testing.assert_array_equal(bad, (np.abs(counts - cm) > 4 * cs) | (np.abs(err - em) > 4 * es))
    rate = np.array([[0.5, 1.0, 1.01, np.nan]])
    np.testing.assert_array_equal(K.hot_pixels(rate), [[False, False, True, False]])


@pytest.mark.parametrize("n_inputs", [3, 5, 10, 20])
def test_bad_reference_error_test_keeps_its_gaussian_meaning(n_inputs):
    """Issue 21: quiet reference pixels whose error is the std of N inputs (chi-distributed)
    pass the normalized rule at about Gaussian's 4-sigma rate; the report's rule flags the
    skewed tail at small N.  Noisy pixels (3x the noise) are found from N = 5."""
    rng = np.random.default_rng(n_inputs)
    n_pix = 40000
    err = rng.normal(0, 1, (n_inputs, n_pix)).std(axis=0, ddof=1)
    err[:20] *= 3.0  # noisy reference pixels
    counts = rng.normal(0, 1, n_pix)
    new = K.bad_reference_pixels_normalized(counts, err)
    old = K.bad_reference_pixels(counts, err)
    false_new, false_old = new[20:].sum(), old[20:].sum()
    assert false_new <= 2 * 2 * 6.3e-5 * n_pix + 3  # two Gaussian 4-sigma tests, Poisson room
    if n_inputs <= 5:  # measured: 29 -> 3 at N = 3, 9 -> 1 at 5; 6 -> 4 at 10, 4 -> 5 at 20
        assert false_old >= 3 * false_new + 5
    if n_inputs >= 5:
        assert new[:20].mean() >= 0.7 and new[:20].sum() >= old[:20].sum() - 2
    print(f"N={n_inputs}: false flags {false_old} (report) -> {false_new} (normalized) of "
          f"{n_pix - 20}; noisy found {old[:20].sum()} / {new[:20].sum()} of 20")


def test_bias_combination_and_uncertainty():
    rng = np.random.default_rng(5)
    g1 = rng.normal(1000, 10, (12, 4, 4))
    g2 = g1 + rng.normal(5, 3, (12, 4, 4))
    bias, err, n = K.bias_from_groups(g1, g2)
    x = 2 * g1 - g2
    np.testing.assert_allclose(bias, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(err, x.std(axis=0, ddof=1) / np.sqrt(12), rtol=1e-5)
    assert (n == 12).all()
    # a level common to each input's frame is not a pixel uncertainty
    lv = rng.normal(0, 50, 12)
    b2, e2, _ = K.bias_from_groups(g1 + lv[:, None, None], g2 + lv[:, None, None], lv)
    np.testing.assert_allclose(b2, bias + lv.mean(), rtol=1e-6)
    np.testing.assert_allclose(e2, err, rtol=1e-4)
    # groups of several frames: g1, g2 at t1, t2 project to time 0 with a = t1 / (t2 - t1)
    b3, e3, _ = K.bias_from_groups(g1, g2, weight=0.5)
    x3 = 1.5 * g1 - 0.5 * g2
    np.testing.assert_allclose(b3, x3.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(e3, x3.std(axis=0, ddof=1) / np.sqrt(12), rtol=1e-5)
    single = K.bias_from_groups(g1[:1], g2[:1])
    assert np.isnan(single[1]).all()  # no spread from one input: unknown, flagged
    assert K.unreliable_bias(single[1], 1.0, 0.1).all()
    assert K.unreliable_bias(np.array([1.0, 10.0]), 1.0, 1.0).tolist() == [False, True]


def test_dark_cube_synthesis_rules():
    t = np.array([10.0, 20.0, 30.0])
    rate = np.array([[0.01, -0.02, 5.0, np.nan]])
    ramp = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    use_ramp = np.array([[False, False, True, False]])
    cube = K.synthesize_dark_cube(rate, ramp, t, t, frame_rate=0.008, use_ramp=use_ramp)
    np.testing.assert_allclose(cube[:, 0, 0], 0.01 * t)
    np.testing.assert_allclose(cube[:, 0, 1], 0.008 * t)  # negative -> frame rate
    np.testing.assert_allclose(cube[:, 0, 2], ramp[:, 0, 2])  # average ramp
    np.testing.assert_allclose(cube[:, 0, 3], 0.008 * t)  # unknown -> frame rate
    # multi-frame inputs (groups at 2.5, 7.5, 12.5 frame times), written one frame per plane
    # for 16 frames: rates project exactly, the average ramp is resampled
    tg, tf = np.array([2.5, 7.5, 12.5]), np.arange(1.0, 17.0)
    line = (3.0 + 2.0 * tg)[:, None, None] * np.ones((3, 1, 4))
    cube = K.synthesize_dark_cube(rate, line, tg, tf, frame_rate=0.008, use_ramp=use_ramp)
    assert cube.shape == (16, 1, 4)
    np.testing.assert_allclose(cube[:, 0, 0], 0.01 * tf, rtol=1e-6)
    np.testing.assert_allclose(cube[:, 0, 2], 3.0 + 2.0 * tf, rtol=1e-6)  # a line stays one


def test_resampling_a_ramp_against_numpy_interp():
    rng = np.random.default_rng(3)
    tg = np.array([2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 32.5, 37.5])
    y = np.cumsum(rng.normal(1, 0.3, (8, 5)), axis=0)
    tf = np.arange(1.0, 60.0)
    got = K.resample_ramp(y, tg, tf)
    inside = tf <= tg[-1]
    for p in range(5):
        want = np.interp(tf[inside], tg, y[:, p])
        before = tf[inside] < tg[0]  # np.interp holds; we continue the first segment
        slope0 = (y[1, p] - y[0, p]) / (tg[1] - tg[0])
        want[before] = y[0, p] + slope0 * (tf[inside][before] - tg[0])
        np.testing.assert_allclose(got[inside, p], want, rtol=1e-12)
        a, b = np.polyfit(tg[-2:], y[-2:, p], 1)  # 25 % of 8 groups = the last 2
        np.testing.assert_allclose(got[~inside, p], y[-1, p] + a * (tf[~inside] - tg[-1]))
    np.testing.assert_array_equal(K.resample_ramp(y, tg, tg), y)
    held = K.resample_ramp(y, tg, tf, extend="hold")
    np.testing.assert_array_equal(held[~inside], np.broadcast_to(y[-1], held[~inside].shape))
    y[3, 0] = np.nan
    assert np.isnan(K.resample_ramp(y, tg, tf)[(tf > tg[2]) & (tf < tg[4]), 0]).all()


def test_dark_dq_from_the_flag_table():
    """The DARK DQ is assembled from the product table's flag rows (report §4.1.4)."""
    import dask.array as da

    from nrsdark_dask.reduction import graph as R
    from nrsdark_dask.reduction.tables import FLAGS

    names = [f.name for f in FLAGS]
    planes = {n: np.zeros((1, len(names)), bool) for n in names}
    for i, n in enumerate(names):
        planes[n][0, i] = True
    dq = R._dark_dq({n: da.from_array(p) for n, p in planes.items()}, []).compute()
    U = DQ["UNRELIABLE_DARK"]
    want = {f.name: sum(DQ[b] for b in f.dark_dq) | (U if f.unreliable_dark else 0)
            for f in FLAGS}  # every row, a new one included
    assert {n: int(dq[0, i]) for i, n in enumerate(names)} == want
    report = {"rc": DQ["RC"] | DNU | U, "telegraph": DQ["TELEGRAPH"],  # the report's, by hand
              "bad_reference": DQ["BAD_REF_PIXEL"] | DNU | U, "hot": U}  # HOT: the MASK's
    assert {n: want[n] for n in report} == report
    assert K.dq_from_flags([planes["rc"], planes["rc"]], [1, 4])[0, names.index("rc")] == 5


def test_clipped_ramp_masks_jumps_like_the_slow_reference():
    """The fused kernel's jump mask equals good_groups + clipped_mean_std, also for a
    block that starts past group 1 (jumps before it come in as ``jumped_before``)."""
    rng = np.random.default_rng(7)
    ramp = rng.normal(50, 5, (9, 12, 16, 16)).astype(np.float32)
    gdq = np.zeros(ramp.shape, np.uint8)
    gdq[rng.random(ramp.shape) < 0.03] = JUMP
    gdq[rng.random(ramp.shape) < 0.02] |= DQ["SATURATED"]
    gdq[rng.random(ramp.shape) < 0.02] |= DNU
    unusable = DNU | DQ["SATURATED"]
    ref = K.clipped_mean_std(ramp, K.good_groups(gdq, JUMP, unusable))
    got = K.clipped_ramp(ramp, gdq, jump_bit=JUMP, unusable_bits=unusable)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    first = np.stack([K.first_jump_index(q, JUMP, 32767) for q in gdq])  # (E, y, x)
    late = K.clipped_ramp(ramp[:, 5:], gdq[:, 5:], jump_bit=JUMP, unusable_bits=unusable,
                          jumped_before=first < 5)
    for a, b in zip(late, ref):
        np.testing.assert_array_equal(a, b[5:])


def test_ingest_summaries():
    gdq = np.zeros((5, 2, 3), np.uint8)
    gdq[3, 0, 0] = gdq[4, 0, 0] = JUMP
    gdq[1, 0, 1] = DQ["SATURATED"]
    gdq[2, 0, 1] = DNU
    gdq[2, 1, 2] = JUMP
    assert K.first_jump_index(gdq, JUMP, 99).tolist() == [[3, 99, 99], [99, 99, 2]]
    assert K.rc_next_flags(gdq, JUMP | DNU | DQ["SATURATED"]).tolist() == [[0, 3, 0], [0, 0, 2]]


def test_importing_kernels_does_not_load_stdatamodels():
    import subprocess
    import sys

    code = "import sys, nrsdark_dask.kernels; print('stdatamodels' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_neighbours():
    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    nb = K.neighbours(m)
    assert nb.sum() == 4 and not nb[1, 1] and nb[0, 1] and nb[1, 2]


def test_sorting_network_sorts_any_count():
    from nrsdark_dask.kernels.clip import sorting_network

    rng = np.random.default_rng(2)
    for n in range(1, 41):
        pairs = sorting_network(n)
        for _ in range(20):
            x = rng.integers(0, 4, n).astype(float)  # ties included
            for i, j in pairs:
                if x[i] > x[j]:
                    x[i], x[j] = x[j], x[i]
            assert (np.diff(x) >= 0).all(), n


def test_whole_frame_clipped_statistics_equal_astropy():
    """The frame rate (mean centre) and the SNR (median centre) of the build: astropy's
    sigma_clipped_stats on the same values."""
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(9)
    x = rng.normal(2.0, 1.0, (64, 64))
    x[rng.random(x.shape) < 0.03] += 40
    x[0, :5] = np.nan
    valid = rng.random(x.shape) > 0.1
    v = x[valid & np.isfinite(x)]
    mean, _, std = sigma_clipped_stats(v, sigma=3, maxiters=5, cenfunc="mean", stdfunc="std")
    np.testing.assert_allclose(K.mean_clipped_mean_std(x, valid, 3.0, 5), [mean, std],
                               rtol=1e-12)
    _, median, _ = sigma_clipped_stats(v, sigma=3, maxiters=5, cenfunc="median", stdfunc="std")
    np.testing.assert_allclose(K.median_clipped_median(x, valid, 3.0), [median], rtol=1e-12)
