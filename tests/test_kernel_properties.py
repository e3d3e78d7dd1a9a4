"""Property tests (hypothesis, as flox does): the kernels against numpy and astropy on data
hypothesis chooses: shapes, input counts, outlier and NaN fractions, seeds."""

import numpy as np
from astropy.stats import sigma_clip, sigma_clipped_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from nrsdark_dask import kernels as K

SETTINGS = settings(max_examples=40, deadline=None)


def _data(seed, n_exp, n_pix, outliers, nans):
    rng = np.random.default_rng(seed)
    data = rng.normal(100, 10, (n_exp, n_pix)).astype(np.float32)
    data[rng.random(data.shape) < outliers] += rng.choice([-400.0, 600.0])
    data[rng.random(data.shape) < nans] = np.nan
    valid = rng.random(data.shape) > 0.1
    return data, valid


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 24), st.integers(1, 64),
       st.floats(0, 0.3), st.floats(0, 0.3))
def test_clipping_across_inputs_equals_astropy(seed, n_exp, n_pix, outliers, nans):
    data, valid = _data(seed, n_exp, n_pix, outliers, nans)
    mean, std, count = K.clipped_mean_std(data, valid)
    d = np.ma.MaskedArray(data.astype(np.float64), mask=~valid | ~np.isfinite(data))
    c = sigma_clip(d, sigma=3, maxiters=5, axis=0, cenfunc="median", stdfunc="std")
    np.testing.assert_array_equal(count, c.count(axis=0))
    np.testing.assert_allclose(mean, c.mean(axis=0).filled(np.nan), rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(std, c.std(axis=0).filled(np.nan), rtol=1e-4, atol=1e-4,
                               equal_nan=True)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(1, 2000), st.floats(0, 0.3),
       st.floats(0, 0.3))
def test_whole_frame_statistics_equal_astropy(seed, n, outliers, nans):
    data, valid = _data(seed, 1, n, outliers, nans)
    x, valid = data[0].astype(np.float64), valid[0]
    v = x[valid & np.isfinite(x)]
    got = K.mean_clipped_mean_std(x, valid)
    med = K.median_clipped_median(x, valid)
    about_median = K.median_clipped_mean_std(x, valid)  # the ingest's group-1 statistics
    if v.size == 0:
        assert np.isnan(got).all() and np.isnan(med).all() and np.isnan(about_median).all()
        return
    mean, _, std = sigma_clipped_stats(v, sigma=3, maxiters=5, cenfunc="mean", stdfunc="std")
    m_mean, median, m_std = sigma_clipped_stats(v, sigma=3, maxiters=5, cenfunc="median",
                                                stdfunc="std")
    np.testing.assert_allclose(got, [mean, std], rtol=1e-10)
    np.testing.assert_allclose(med, [median], rtol=1e-10)
    np.testing.assert_allclose(about_median, [m_mean, m_std], rtol=1e-10, atol=1e-300)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.floats(-5, 5), st.floats(0.01, 2.0))
def test_hot_and_the_bias_combination_equal_numpy(seed, threshold, weight):
    rng = np.random.default_rng(seed)
    rate = rng.normal(0, 3, (17, 23))
    rate[rng.random(rate.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(K.hot_pixels(rate, threshold),
                                  np.nan_to_num(rate, nan=-np.inf) > threshold)
    g1, g2 = rng.normal(12000, 20, (2, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(K.bias_combination(g1, g2, weight),
                                  (1 + weight) * g1 - weight * g2)
