"""Graph builders: lazy, tile-independent, right at the edges, and right against truth."""

import dask
import dask.array as da
import numpy as np
import pytest

from nrsdark_dask import kernels as K
from nrsdark_dask.config import Config, DarkConfig
from nrsdark_dask.reduction import delivery, source
from nrsdark_dask.reduction import graph as R
from nrsdark_dask.store import open_dataset

from conftest import raise_if_dask_computes


def test_building_the_graph_computes_nothing(sci):
    ds = open_dataset(sci["store"])
    with raise_if_dask_computes():
        stats = R.frame_statistics(ds)
        products = R.build_products(ds)
        products = R.build_products(ds, stats=stats)
        delivery.rate_snr(ds)
    assert isinstance(products["dark_cube"].data, da.Array)
    with pytest.raises(RuntimeError, match="too many dask computes"):
        with raise_if_dask_computes():
            np.asarray(products["hot"].data[:2, :2])


def test_small_tiles_give_the_same_flags_as_one_tile(sci):
    """Halo handling: RC and IPC rules computed on 32 x 64 tiles equal one whole-frame tile."""
    ds = open_dataset(sci["store"])
    stats = R.compute_frame_statistics(ds)
    small = R.build_products(ds.chunk({"y": 32, "x": 64}), stats=stats)
    whole = R.build_products(ds.chunk({"y": -1, "x": -1}), stats=stats)
    names = ("rc", "hot", "dark_dq", "dark_cube", "mask")
    got = dask.compute(*(p[n].data for p in (small, whole) for n in names))  # one pass each
    for name, a, b in zip(names, got[:len(names)], got[len(names):]):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_average_ramp_equals_the_kernel_on_plain_numpy(sci):
    ds = open_dataset(sci["store"]).isel(y=slice(40, 72), x=slice(1000, 1064))
    ramp, gdq = ds.ramp.values, ds.groupdq.values
    from nrsdark_dask.instrument import DQ
    good = K.good_groups(gdq, DQ["JUMP_DET"], DQ["DO_NOT_USE"] | DQ["SATURATED"])
    mean, std, count = K.clipped_mean_std(ramp, good)
    p = R.build_products(open_dataset(sci["store"]), stats=R.compute_frame_statistics(
        open_dataset(sci["store"])))
    got = p["average_ramp"].isel(y=slice(40, 72), x=slice(1000, 1064)).values
    np.testing.assert_array_equal(got, mean)


def _score(flag, truth, population):
    f, t = flag & population, truth & population
    tp = (f & t).sum()
    return tp / max(t.sum(), 1), tp / max(f.sum(), 1), int(t.sum()), int(f.sum())


def test_science_against_truth(sci):
    """The report's rules recover what the simulator injected (numbers printed)."""
    ds = open_dataset(sci["store"])
    truth = sci["truth"]
    p = R.build_products(ds, stats=R.compute_frame_statistics(ds))
    keys = ("hot", "rc", "telegraph", "bad_reference", "dark_rate", "dark_rate_unc",
            "superbias", "superbias_err")
    values = dask.compute(*[p[k].data for k in keys], p.stats)
    arr = dict(zip(keys, values[:-1]))
    stats = values[-1]
    active = ~truth["refpix"]
    lines = []

    # HOT: true dark rate > 1 DN/s, scored away from RC pixels (their IPC neighbours really
    # exceed 1 DN/s, and jwst's snowball expansion around a saturated RC core leaves pixels up
    # to 2 px away with rates too noisy to classify: they are UNRELIABLE_DARK) and RTN pixels
    # (toggles bias a slope), and outside the truth's 0.8-1.25 DN/s gap
    from scipy.ndimage import binary_dilation

    lo, hi = 0.8, 1.25
    plain = active & ~binary_dilation(truth["rc"], iterations=2) & ~truth["rtn"]
    plain &= ~truth["ipc_neighbour"] & ~((truth["rate"] > lo) & (truth["rate"] < hi))
    r, pr, nt, nf = _score(arr["hot"], truth["rate"] > 1.0, plain)
    lines.append(f"hot: recall {r:.4f} precision {pr:.4f} (truth {nt}, flagged {nf})")
    assert r >= 0.99 and pr >= 0.99
    r, pr, nt, nf = _score(arr["rc"], truth["rc"], active)
    lines.append(f"RC: recall {r:.3f} precision {pr:.3f} (truth {nt}, flagged {nf})")
    assert r >= 0.9 and pr >= 0.9
    r, pr, nt, nf = _score(arr["telegraph"], truth["rtn"], active & ~truth["hot"])
    false_frac = (arr["telegraph"] & ~truth["rtn"] & active).sum() / active.sum()
    lines.append(f"RTN: recall {r:.3f} precision {pr:.3f} false flags {false_frac:.5f} of pixels")
    assert r >= 0.7 and false_frac <= 0.002
    r, pr, nt, nf = _score(arr["bad_reference"], truth["badref"], truth["refpix"])
    lines.append(f"bad reference: recall {r:.3f} precision {pr:.3f} (truth {nt}, flagged {nf})")
    assert r == 1.0 and pr >= 0.8  # 5 of 5, one extra (issue 21 aims at 0.95)

    # mean rate: pulls of DRK against truth with UNC, after the exposure-averaged pedestal
    # offset common to all pixels (reported, and checked against its own uncertainty)
    quiet = active & ~truth["hot"] & ~truth["rc"] & ~truth["ipc_neighbour"] & ~truth["warm"] \
        & ~truth["rtn"]
    quiet &= arr["dark_rate_unc"] > 0  # 0 = unknown (filled), and UNRELIABLE_DARK
    resid = (arr["dark_rate"] - truth["rate"])[quiet]
    offset = np.median(resid)
    pull = (resid - offset) / arr["dark_rate_unc"][quiet]
    lines.append(f"DRK pulls: mean {pull.mean():.3f} std {pull.std():.3f} "
                 f"(common offset {offset:+.5f} DN/s)")
    assert abs(pull.mean()) < 0.2 and 0.8 < pull.std() < 1.2
    per_exp = ds.rate.where(quiet).median(dim=("y", "x")).values - np.median(truth["rate"][quiet])
    offset_unc = per_exp.std(ddof=1) / np.sqrt(per_exp.size)
    lines.append(f"  common offset / its uncertainty from the per-exposure medians: "
                 f"{offset / offset_unc:+.2f}")
    assert abs(offset) < 4 * offset_unc

    # superbias: pulls after the even/odd-row offsets that jwst refpix removes (and the method
    # therefore never sees)
    rows = np.arange(truth["bias"].shape[0]) % 2
    b = arr["superbias"] - truth["bias"]
    good = active & ~truth["hot"] & ~truth["rc"] & ~truth["ipc_neighbour"]
    for par in (0, 1):
        sel = good & (rows == par)[:, None]
        b[rows == par] -= np.median(b[sel])
    bp = (b / arr["superbias_err"])[good]
    bp = bp[np.isfinite(bp)]
    lines.append(f"superbias pulls: mean {bp.mean():.3f} std {bp.std():.3f}")
    assert abs(bp.mean()) < 0.2 and 0.8 < bp.std() < 1.2

    lines.append(f"report fractions: RTN-flagged {float(stats['telegraph_fraction']):.4f}, "
                 f"negative-rate {float(stats['negative_rate_fraction']):.4f}, "
                 f"hot {int(stats['n_hot'])}, RC {int(stats['n_rc'])}")
    print("\n" + "\n".join(lines))


def test_esa_rtn_rule_is_offered(sci):
    """The ESA rule against truth, as the ST rule is scored in test_science_against_truth.
    Measured (docs/commands/build.md): ESA 5923 pixels, recall 0.998, precision 0.224; ST 1314.  On these
    60-group ramps the ESA limit, (1 - 0.9973) x 59 x 4 = 0.64 jumps an input, is reached by
    cosmic-ray jumps alone, so it flags far more than the ST rule."""
    ds = open_dataset(sci["store"])
    truth = sci["truth"]
    cfg = Config(dark=DarkConfig(telegraph_rule="esa"))
    p = R.build_products(ds, cfg=cfg, stats=R.compute_frame_statistics(ds, cfg))
    tele, esa = dask.compute(p["telegraph"].data, p.stats["n_telegraph"])
    st = int(R.build_products(ds, stats=R.compute_frame_statistics(ds)).stats["n_telegraph"]
             .compute())
    active = ~truth["refpix"]
    r, pr, nt, nf = _score(tele, truth["rtn"], active & ~truth["hot"])
    false_frac = (tele & ~truth["rtn"] & active).sum() / active.sum()
    print(f"\nTELEGRAPH pixels: ST rule {st}, ESA rule {int(esa)}; ESA recall {r:.3f} "
          f"precision {pr:.3f}, false flags {false_frac:.5f} of pixels")
    assert r >= 0.99 and 0.15 <= pr <= 0.35 and false_frac <= 0.025
    assert 1200 <= st <= 1450 and esa > 3 * st


def test_stores_the_reductions_cannot_use(cal_store, tmp_path):
    from nrsdark_dask.store import RampStore, StoreLayout

    ds = open_dataset(cal_store["path"])
    with pytest.raises(source.BuildError, match="at least 2"):
        R.build_products(ds.isel(exposure=slice(0, 1)))
    empty = RampStore.create(tmp_path / "e.zarr", StoreLayout(**ds.attrs["layout"]), {})
    with pytest.raises(source.BuildError, match="no exposure"):
        R.build_products(open_dataset(empty.path))


def test_fully_masked_tile_is_filled_and_flagged(cal_store):
    """A tile where every input is NaN / DO_NOT_USE: numbers, not NaN, and flags."""
    ds = open_dataset(cal_store["path"]).load()
    ds["ramp"][:, :, :, 256:512] = np.nan
    ds["rate"][:, :, 256:512] = np.nan
    ds["rate_err"][:, :, 256:512] = np.nan
    ds["bias_groups"][:, :, :, 256:512] = np.nan
    ds["pixeldq"][:, :, 256:512] |= np.uint32(1)
    ds = ds.chunk({"y": 64, "x": 256})
    p = R.build_products(ds, stats=R.compute_frame_statistics(ds))
    cube, err, dq, drk, unc, bias, bdq = dask.compute(
        p["dark_cube"].data, p["dark_err"].data, p["dark_dq"].data, p["dark_rate"].data,
        p["dark_rate_unc"].data, p["superbias"].data, p["superbias_dq"].data)
    for a in (cube, err, drk, unc, bias):
        assert np.isfinite(a).all()
    from nrsdark_dask.instrument import DQ
    tile = np.s_[:, 256:512]
    assert (dq[tile] & DQ["UNRELIABLE_DARK"]).all()
    assert (bdq[tile] & DQ["UNRELIABLE_BIAS"]).all()
    assert (p["average_ramp_count"].values[:, :, 256:512] == 0).all()  # no input survives
