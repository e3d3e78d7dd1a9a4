"""The executable flag table (issue 20 item 1): a new flag rule end to end is a kernel, a row
and a ``[dark]`` field.  A throwaway rule goes through the build (DARK DQ, DQ_DEF, the
statistic), ``analyze`` (count, warning), the CLI's line and the documented table, and is checked
against plain numpy on the store's own images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import cli
from nrsdark_dask import instrument as inst
from nrsdark_dask import products as P
from nrsdark_dask.config import Config, DarkConfig


def low_pedestal(group1, mean, std, sigma=1.0):
    """Throwaway kernel: group 1 more than ``sigma`` std under the frame's group-1 mean."""
    return group1 < (mean - sigma * std)[:, None, None]


ROW = P.Flag("low_pedestal", "group 1 low (a throwaway rule of the test)",
             (P.Rule("report", low_pedestal, ("group1",), ("g1_mean", "g1_std"),
                     "more_than_half", ("sigma",)),),
             dark_dq=("OTHER_BAD_PIXEL",), unreliable_dark=False,
             reliable_n=(50, "a test's made-up number"))


def test_the_documented_flag_table_is_the_table():
    page = (Path(__file__).parents[1] / "docs" / "commands" / "build.md").read_text()
    assert P.flags_markdown() in page, \
        "docs/commands/build.md's flag table differs: paste flags_markdown()"


def test_every_flag_has_one_name_and_its_settings_exist():
    names = [f.name for f in P.FLAGS]
    assert len(set(names)) == len(names)
    dark = {f.name for f in dataclasses.fields(DarkConfig)}
    for f in P.FLAGS:
        for r in f.rules:
            assert {f"{f.name}_{k}" for k in r.settings} <= dark, f.name
        if len(f.rules) > 1:
            field = DarkConfig.__dataclass_fields__[f"{f.name}_rule"]
            assert field.metadata["choices"] == tuple(r.name for r in f.rules)
    assert not set(DarkConfig.RENAMED.values()) - dark


def test_a_throwaway_rule_end_to_end(cal_store, tmp_path, monkeypatch, capsys):
    from nrsdark_dask.analyze import analyze
    from nrsdark_dask.build import build
    from nrsdark_dask.store import StoreLayout, open_dataset

    monkeypatch.setattr(P, "FLAGS", P.FLAGS + (ROW,))
    Dark = dataclasses.make_dataclass(
        "DarkConfig", [("low_pedestal_sigma", float,
                        dataclasses.field(default=1.0, metadata={"above": 0.0}))],
        bases=(DarkConfig,), frozen=True)
    cfg = Config(dark=Dark(low_pedestal_sigma=0.5))
    out = tmp_path / "ref"
    res = build(cal_store["path"], out, scheduler="sync", config=cfg)

    ds = open_dataset(cal_store["path"])  # the truth: plain numpy on the store's images
    g1 = ds.group1.values.astype(np.float64)
    thr = (ds.g1_mean.values - 0.5 * ds.g1_std.values)[:, None, None]
    active = ~inst.reference_pixel_mask(StoreLayout(**ds.attrs["layout"]).geometry())
    want = ((g1 < thr).sum(axis=0) > g1.shape[0] / 2) & active
    assert 0 < want.sum() < active.sum() / 2
    assert res["stats"]["n_low_pedestal"] == want.sum()

    with fits.open(res["files"]["dark"]) as h:
        dq = h["DQ"].data.astype(np.uint32)
        np.testing.assert_array_equal((dq & inst.DQ["OTHER_BAD_PIXEL"]) != 0, want)
        assert "OTHER_BAD_PIXEL" in list(h["DQ_DEF"].data["NAME"])
        history = "".join(str(c) for c in h[0].header["HISTORY"]).replace(" ", "")
        assert "low_pedestal_sigma=0.5" in history  # the settings line wraps over cards

    s = analyze(out)
    assert s["n_low_pedestal"] == want.sum()
    assert any("the OTHER_BAD_PIXEL flags need 50" in w for w in s["warnings"])
    capsys.readouterr()
    cli.main(["analyze", str(out)])
    assert f"OTHER_BAD_PIXEL {want.sum()}" in capsys.readouterr().out
    assert "`low_pedestal`" in P.flags_markdown() and "`low_pedestal_sigma`" in P.flags_markdown()


def test_a_rule_is_chosen_by_its_setting():
    tele = P.flag("telegraph")
    assert tele.rule(DarkConfig()).name == "st"
    assert tele.rule(DarkConfig(telegraph_rule="esa")).kernel.__name__ == \
        "telegraph_candidates_esa"
    with pytest.raises(KeyError, match="no flag 'badref'"):
        P.flag("badref")


def test_hot_significance_kernel_against_numpy():
    rng = np.random.default_rng(4)
    drk, unc = rng.normal(1.0, 1.0, 500), rng.uniform(0, 0.5, 500)
    unc[:20], unc[20:40] = np.nan, 0.0  # unknown UNC: the plain rule decides
    from nrsdark_dask import kernels as K

    from scipy import stats

    for n in (3, 12, 0):
        got = K.hot_pixels_significant(drk, unc, n, rate=1.0, sigma=3.0)
        k = stats.t.ppf(stats.norm.cdf(3.0), n - 1) if n else 3.0  # unknown N: normal
        want = np.where(np.isfinite(unc) & (unc > 0), (drk - 1.0) > k * unc, drk > 1.0)
        np.testing.assert_array_equal(got, want)
        assert got[40:].sum() < (drk[40:] > 1.0).sum()  # fewer than the plain rule
    assert K.significance_factor(3.0, 12) == pytest.approx(3.85, abs=0.01)


def test_hot_rules_on_short_noisy_inputs_and_the_warning(cal_store, tmp_path):
    """On 4 short inputs the significant HOT pixels are a subset of the plain rule's, and
    analyze says how many plain-rule pixels are not significant when UNC is too large."""
    from nrsdark_dask.analyze import analyze, warnings_for
    from nrsdark_dask.build import build

    counts = {}
    for rule in ("report", "significant"):
        out = tmp_path / rule
        res = build(cal_store["path"], out, scheduler="sync",
                    config=Config(dark=DarkConfig(hot_rule=rule)))
        (out / "c.toml").write_text(f'[dark]\nhot_rule = "{rule}"\n')
        s = analyze(out, config=out / "c.toml")
        assert s["n_hot"] == res["stats"]["n_hot"]
        counts[rule] = s
    sig, plain = counts["significant"], counts["report"]
    assert sig["n_hot"] <= plain["n_hot"] == sig["n_hot_plain"]
    print(f"\nHOT on 4 short inputs: plain {plain['n_hot']}, significant {sig['n_hot']}, UNC "
          f"median {sig['unc_median']:.3g} DN/s, found above {sig['hot_limit']:.2f} DN/s")
    w = warnings_for({**sig, "hot_limit": 5.0, "unc_median": 1.3, "n_hot_plain": 70,
                      "n_hot": 2})
    assert any("too large to test the HOT threshold" in x and "68 more pixels" in x for x in w)
    assert not any("HOT threshold" in x for x in warnings_for({**sig, "hot_limit": 1.1}))


def test_a_reference_pixel_rule_refuses_what_it_would_ignore():
    """The reference-pixel path hands its kernel inputs and settings only: a row asking
    statistics or a combine there is refused when declared, not silently ignored."""
    with pytest.raises(ValueError, match="reference-pixel rule takes inputs and settings only"):
        P.Rule("x", low_pedestal, ("ref_counts",), ("g1_mean",), scope="reference")
    with pytest.raises(ValueError, match="reference-pixel rule"):
        P.Rule("x", low_pedestal, ("ref_counts",), combine="all", scope="reference")
