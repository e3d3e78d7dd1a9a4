"""An explicit data source for builds (issue 20): ``build_products`` computes from what the
Dataset holds, or refuses in one sentence; it never uses the store's bytes for a variable the
user changed."""

import warnings

import dask
import numpy as np
import pytest

from nrsdark_dask import instrument as inst
from nrsdark_dask.reduction import graph as R
from nrsdark_dask.reduction import source
from nrsdark_dask.store import StoreLayout, open_dataset

NAMES = ("dark_cube", "dark_err", "dark_dq", "dark_rate", "mask", "superbias", "superbias_dq")


def _computed(ds, names=NAMES):
    p = R.build_products(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        *arrays, stats = dask.compute(*[p[n].data for n in names], p.stats,
                                      scheduler="threads")
    return dict(zip(names, arrays)), stats


@pytest.fixture(scope="module")
def pristine(cal_store):
    ds = open_dataset(cal_store["path"])
    return ds, _computed(ds)


def _active(ds):
    return ~inst.reference_pixel_mask(StoreLayout(**ds.attrs["layout"]).geometry())


def test_an_edited_rate_is_what_the_build_uses(pristine):
    ds, (_, base) = pristine
    edited = ds.copy()
    edited["rate"] = ds.rate * 0 + 5.0  # 5 DN/s everywhere: every active pixel is HOT
    _, stats = _computed(edited)
    assert base["n_hot"] < int(_active(ds).sum()) // 2
    measured = np.isfinite(ds.rate.values).any(axis=0)  # a pixel never measured stays NaN
    assert stats["n_hot"] == int((_active(ds) & measured).sum())
    assert abs(float(stats["median_rate"]) - 5.0) < 1e-5


def test_edits_to_other_variables_are_used(pristine):
    ds, (base_arrays, base) = pristine
    # a pixel with many negative jumps in every exposure: TELEGRAPH
    y, x = 30, 1000
    nj = ds.neg_jumps.values.copy()
    nj[:, y, x] = 50
    edited = ds.copy()
    edited["neg_jumps"] = (ds.neg_jumps.dims, nj)  # numpy: wrapped, not re-read
    p = R.build_products(edited)
    tele = p["telegraph"].data.compute(scheduler="threads")
    assert tele[y, x] and tele.sum() >= base["n_telegraph"]
    # bias inputs moved by 100 DN: the superbias moves by 100 DN
    edited = ds.copy()
    edited["bias_groups"] = ds.bias_groups + 100.0
    arrays, _ = _computed(edited, ("superbias",))
    diff = arrays["superbias"] - base_arrays["superbias"]
    finite = np.isfinite(diff)
    assert finite.mean() > 0.9 and np.allclose(diff[finite], 100.0, atol=0.01)
    # PIXELDQ DO_NOT_USE on one clean pixel of every exposure: the DARK marks it unreliable
    x = int(np.flatnonzero((base_arrays["dark_dq"][40] == 0) & _active(ds)[40])[100])
    pdq = ds.pixeldq.values.copy()
    pdq[:, 40, x] |= inst.DQ["DO_NOT_USE"]
    edited = ds.copy()
    edited["pixeldq"] = (ds.pixeldq.dims, pdq)
    arrays, _ = _computed(edited, ("dark_dq",))
    assert arrays["dark_dq"][40, x] & inst.DQ["UNRELIABLE_DARK"]


def test_selected_exposures_equal_a_store_opened_without_the_others(pristine, cal_store):
    ds, _ = pristine
    keep = [str(e) for e in ds.exposure.values[1:]]
    a, sa = _computed(ds.sel(exposure=keep))
    b, sb = _computed(open_dataset(cal_store["path"], exclude=[str(ds.exposure.values[0])]))
    for n in NAMES:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)
    assert sa["n_exposures"] == sb["n_exposures"] == 3


@pytest.mark.parametrize("how", ["rechunk", "load"])
def test_rechunked_or_loaded_gives_the_same_files(pristine, how):
    ds, (base_arrays, base) = pristine
    other = ds.chunk({"y": 32, "x": 512}) if how == "rechunk" else ds.load()
    arrays, stats = _computed(other)
    for n in NAMES:
        np.testing.assert_array_equal(arrays[n], base_arrays[n], err_msg=n)
    for k in ("n_hot", "n_rc", "n_telegraph", "snr"):
        np.testing.assert_array_equal(stats[k], base[k], err_msg=k)


@pytest.mark.parametrize("select, message", [
    (dict(y=slice(0, 32)), "holds 32 of the store's 64 y"),
    (dict(x=slice(100, 612)), "holds 512 of the store's 2048 x"),
    (dict(group=slice(0, 5)), "holds 5 of the store's 10 group"),
])
def test_a_region_or_some_groups_are_refused_in_one_sentence(pristine, select, message):
    ds, _ = pristine
    with pytest.raises(source.BuildError, match=message):
        R.build_products(ds.isel(**select))


def test_a_store_without_ingest_summaries_is_refused(pristine):
    ds, _ = pristine
    with pytest.raises(source.BuildError, match="lacks group1, rc_next .*schema 1"):
        R.build_products(ds.drop_vars(["group1", "rc_next"]))
    bad = ds.copy()
    bad["rate"] = 5.0
    with pytest.raises(source.BuildError, match=r"variable rate has dimensions \(\)"):
        R.build_products(bad)
