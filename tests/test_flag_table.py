"""The executable flag table (issues 20 and 31): a new flag rule end to end is a kernel, a row
and a ``[dark]`` field.  A "cold pixel" rule added by exactly those three edits to a copy of
the package goes through the build (DARK DQ, DQ_DEF, HISTORY), ``analyze`` (count, warning),
the CLI's lines and the docs' table, checked against plain numpy on the DARK's own DRK."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import instrument as inst
from nrsdark_dask.config import Config, DarkConfig
from nrsdark_dask.reduction import tables as P


def low_pedestal(group1, mean, std, sigma=1.0):
    """Throwaway kernel: group 1 more than ``sigma`` std under the frame's group-1 mean."""
    return group1 < (mean - sigma * std)[:, None, None]


def test_the_docs_flag_table_is_made_from_the_rows():
    page = (Path(__file__).parents[1] / "docs" / "commands" / "build.md").read_text()
    assert "```{nrsdark-flags}" in page and "| flag | rule" not in page  # made, not pasted
    table = P.flags_markdown()
    for f in P.FLAGS:
        for r in f.rules:
            assert f"`{r.kernel.__name__}`" in table and f"`{f.name}" in table


def test_every_flag_has_one_name_one_label_and_its_settings_exist():
    names = [f.name for f in P.FLAGS]
    assert len(set(names)) == len(names)
    labels = [f.label for f in P.FLAGS if f.counted]
    assert len(set(labels)) == len(labels)  # analyze reads a flag back by its label
    assert all(b in inst.DQ for f in P.FLAGS for b in f.dark_dq + f.mask_dq)
    dark = {f.name for f in dataclasses.fields(DarkConfig)}
    for f in P.FLAGS:
        for r in f.rules:
            assert {f"{f.name}_{k}" for k in r.settings} <= dark, f.name
        if len(f.rules) > 1:
            field = DarkConfig.__dataclass_fields__[f"{f.name}_rule"]
            assert field.metadata["choices"] == tuple(r.name for r in f.rules)
    assert not set(DarkConfig.RENAMED.values()) - dark


def test_a_shared_label_is_refused():
    twin = dataclasses.replace(P.flag("telegraph"), name="twin")
    with pytest.raises(ValueError, match="flags 'telegraph' and 'twin' share the first DQ bit "
                                         "TELEGRAPH"):
        P.check_flags(P.FLAGS + (twin,))
    with pytest.raises(ValueError, match="share the name rc"):
        P.check_flags(P.FLAGS + (P.flag("rc"),))


COLD_KERNEL = """

def cold_pixels(mean_rate, mean, std, sigma=3.0):
    \"\"\"DRK more than ``sigma`` std under its frame mean (a new contributor's rule).\"\"\"
    return mean_rate < mean - sigma * std
"""
COLD_ROW = """    Flag("cold", "mean dark rate far below the frame's",
         (Rule("report", K.cold_pixels, ("mean_rate",),
               ("mean_rate_clipped_mean", "mean_rate_clipped_std"), settings=("sigma",),
               description="DRK < its clipped frame mean - cold_sigma clipped std"),),
         dark_dq=("OTHER_BAD_PIXEL",), unreliable_dark=False,
         reliable_n=(50, "a made-up number")),
)

BY_NAME = """
COLD_FIELD = """    cold_sigma: float = _num(2.0, **POSITIVE)  # a new contributor's setting
    hot_rate: float"""


def test_a_new_flag_is_a_kernel_a_row_and_a_setting(cal_store, tmp_path):
    """The "cold pixel" rule added by the three edits a contributor makes (kernel, row,
    ``[dark]`` field) to a copy of the package, run as commands with a real config file: it
    is in the DARK DQ (equal to plain numpy on the DARK's own DRK), DQ_DEF, HISTORY, the
    build's and analyze's lines, analyze's warning and the docs' table."""
    import shutil
    import subprocess
    import sys

    src = Path(P.__file__).parents[1]  # the nrsdark_dask package
    pkg = tmp_path / "copy" / "nrsdark_dask"
    shutil.copytree(src, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    edits = [("kernels/flags.py", None, COLD_KERNEL),
             ("reduction/tables.py", ")\n\nBY_NAME = ", COLD_ROW),
             ("config.py", "    hot_rate: float", COLD_FIELD)]
    for rel, old, new in edits:
        text = (pkg / rel).read_text()
        if old is None:
            text += new
        else:
            assert text.count(old) == 1, (rel, old)
            text = text.replace(old, new)
        (pkg / rel).write_text(text)
    (tmp_path / "c.toml").write_text("[dark]\ncold_sigma = 3.0\n")
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nrsdark_dask.cli.main", *map(str, args)],
                              env=env, capture_output=True, text=True, cwd=tmp_path)

    out = tmp_path / "ref"
    b = run("build", "--store", cal_store["path"], "--outdir", out, "--config",
            tmp_path / "c.toml", "--db", "none", "--scheduler", "sync")
    assert b.returncode in (0, 1), b.stderr  # 1: not deliverable (4 short inputs)
    dark = sorted(out.rglob("*dark*.fits"))
    assert dark, (b.stdout, b.stderr, sorted(out.rglob("*")))
    with fits.open(dark[0]) as h:
        dq = h["DQ"].data.astype(np.uint32)
        drk = h["DRK"].data.astype(np.float64)
        assert "OTHER_BAD_PIXEL" in list(h["DQ_DEF"].data["NAME"])
        history = "".join(str(c) for c in h[0].header["HISTORY"]).replace(" ", "")
        assert "cold_sigma=3.0" in history  # the settings line wraps over cards
    from astropy.stats import sigma_clipped_stats

    from nrsdark_dask.store import StoreLayout, open_dataset

    ds = open_dataset(cal_store["path"])
    active = ~inst.reference_pixel_mask(StoreLayout(**ds.attrs["layout"]).geometry())
    got = (dq & inst.DQ["OTHER_BAD_PIXEL"]) != 0
    mean, _, std = sigma_clipped_stats(drk[active & np.isfinite(drk)], sigma=3, maxiters=5,
                                       cenfunc="mean", stdfunc="std")
    cut = mean - 3.0 * std
    want = active & (drk < cut)
    assert 10 < want.sum() < active.sum() / 10
    edge = np.abs(drk - cut) < 1e-4 * std  # the last float32 digits of the sums aside
    np.testing.assert_array_equal(got[~edge], want[~edge])
    n = int(got.sum())
    assert f"OTHER_BAD_PIXEL {n}" in b.stdout
    a = run("analyze", out, "--config", tmp_path / "c.toml", "--db", "none")
    assert f"OTHER_BAD_PIXEL {n}" in a.stdout, a.stdout + a.stderr
    assert "the OTHER_BAD_PIXEL flags need 50" in (out / "qa" / "report.json").read_text()
    docs = subprocess.run([sys.executable, "-c", "from nrsdark_dask.reduction.tables import "
                           "flags_markdown; print(flags_markdown())"], env=env,
                          capture_output=True, text=True, cwd=tmp_path).stdout
    assert "| `cold` | `cold_pixels`: mean_rate; mean_rate_clipped_mean, mean_rate_clipped_std" \
        in docs
    assert "`cold_sigma`" in docs


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
    from nrsdark_dask.stages.analyze import analyze, warnings_for
    from nrsdark_dask.stages.build import build

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
