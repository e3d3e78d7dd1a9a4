"""nrsdark check-science (report §8): a held-out exposure calibrated through jwst detector1
with two reference sets, compared against what the sets differ in by construction."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import results
from nrsdark_dask.calibration import recipe as R
from nrsdark_dask.cli import main as cli
from nrsdark_dask.instrument import DQ
from nrsdark_dask.kernels.compare import rate_difference
from nrsdark_dask.stages.build import build
from nrsdark_dask.stages.science import check_science
from nrsdark_dask.store import file_sha256


@pytest.fixture(scope="module")
def two_sets(sci, tmp_path_factory):
    """"new": the build of the 10 clean exposures.  "old": the same files, except that the
    DARK does not know 80 of the truth's hot pixels (their cube and DRK are zero, their HOT and
    UNRELIABLE_DARK bits cleared): pixels the kit's MASK does not flag either, so only the
    DARK tells them apart."""
    root = tmp_path_factory.mktemp("science_sets")
    kit = R.refkit_files(sci["dir"] / "refkit")
    new = build(sci["store"], root / "new", mask_in=kit["mask"], db=None)
    old = root / "old"
    old.mkdir()
    for f in new["files"].values():
        shutil.copy(f, old)
    truth = sci["truth"]
    with fits.open(kit["mask"]) as m:
        in_mask = m["DQ"].data != 0
    with fits.open(new["files"]["dark"]) as d:
        dq = d["DQ"].data.astype(np.uint32)
    hot = (truth["hot"] & ~truth["ipc_neighbour"] & ~truth["refpix"] & ~truth["rc"]
           & ~in_mask & (truth["rate"] < 50) & ((dq & DQ["UNRELIABLE_DARK"]) != 0)
           & ((dq & DQ["DO_NOT_USE"]) == 0))
    ys, xs = np.nonzero(hot)
    pick = np.random.default_rng(3).choice(ys.size, 80, replace=False)
    chosen = np.zeros_like(hot)
    chosen[ys[pick], xs[pick]] = True
    dark_old = old / Path(new["files"]["dark"]).name
    with fits.open(dark_old, mode="update") as d:
        d["SCI"].data[:, chosen] = 0
        d["DRK"].data[chosen] = 0
        d["DQ"].data[chosen] &= ~np.uint32(DQ["HOT"] | DQ["UNRELIABLE_DARK"])
    return {"new": root / "new", "old": old, "chosen": chosen, "kit": sci["dir"] / "refkit"}


def test_the_difference_is_what_the_sets_differ_in(sci, two_sets, tmp_path, no_network):
    """Only the 80 pixels the old DARK does not know change: under the old set they keep
    their dark (the truth's rate, to 3 %), under the new one ~0 is left; they are the newly
    UNRELIABLE_DARK pixels, exactly; every other pixel's rate is bit-identical.  The check is
    recorded in the results database."""
    db = tmp_path / "r.sqlite"
    out = check_science(sci["held_out"], two_sets["new"], two_sets["old"], tmp_path / "cs",
                        refkit=two_sets["kit"], db=db)
    chosen, truth = two_sets["chosen"], sci["truth"]
    with fits.open(out["rate_new"]) as a, fits.open(out["rate_old"]) as b:
        new, old = a["SCI"].data.astype(np.float64), b["SCI"].data.astype(np.float64)
        dq_new, dq_old = a["DQ"].data, b["DQ"].data
        used = a[0].header["R_DARK"], b[0].header["R_DARK"]
    assert used == (out["new"]["dark"], out["old"]["dark"])
    changed = ~((new == old) | (np.isnan(new) & np.isnan(old)))  # NaN: DO_NOT_USE both times
    print(f"\npixels changed: {changed.sum()} (chosen {chosen.sum()}); outside the chosen: "
          f"{(changed & ~chosen).sum()}")
    assert not (changed & ~chosen).any()
    removed = old[chosen] - new[chosen]
    ratio = np.median(removed / truth["rate"][chosen])
    print(f"dark removed at the chosen pixels / truth rate: median {ratio:.4f}; residual with "
          f"the new set {out['hot_residual_new']:+.4f}, old {out['hot_residual_old']:+.4f} DN/s")
    assert abs(ratio - 1) < 0.03
    assert out["new_unreliable_dark"] == chosen.sum() and out["gone_unreliable_dark"] == 0
    ud_new = (dq_new & DQ["UNRELIABLE_DARK"]) != 0
    ud_old = (dq_old & DQ["UNRELIABLE_DARK"]) != 0
    assert np.array_equal(ud_new & ~ud_old, chosen)
    assert out["new_do_not_use"] == out["gone_do_not_use"] == 0
    # the statistics, against plain numpy over the usable pixels
    usable = ((dq_new | dq_old) & DQ["DO_NOT_USE"]) == 0
    d = (new - old)[usable]
    assert out["n_usable"] == usable.sum()
    assert out["diff_median"] == np.median(d)
    assert out["diff_sigma"] == pytest.approx(1.4826 * np.median(np.abs(d - np.median(d))),
                                              rel=1e-6, abs=1e-12)
    assert out["hot_residual_old"] > 0.1 and abs(out["hot_residual_new"]) < 0.1 * \
        out["hot_residual_old"]
    assert out["background_sigma"] > 0 and out["diff_sigma_over_background"] < 1e-3
    with results.ResultsDB(results.resolve(db)) as rdb:
        (row,) = rdb.read_table("science_checks")
        files = {r["id"]: r for r in rdb.read_table("reffiles")}
    assert row["new_unreliable_dark"] == chosen.sum()
    assert files[row["new_dark_id"]]["sha256"] == file_sha256(out["new"]["dark"])
    assert files[row["old_dark_id"]]["sha256"] == file_sha256(out["old"]["dark"])
    assert {f["reftype"] for f in files.values()} == {"DARK", "SUPERBIAS"}
    assert sorted(out["figures"]) == ["column", "difference", "difference_over_unc", "flags",
                                      "rate_new"]


def test_the_statistics_against_numpy_by_hand():
    """rate_difference on known images: DO_NOT_USE under either set is left out, the flag
    counts go both ways, the expected scatter is sqrt(UNC_new^2 + UNC_old^2)."""
    rng = np.random.default_rng(0)
    shape = (40, 50)
    old = rng.normal(0.01, 0.05, shape)
    new = old + rng.normal(0.002, 0.01, shape)
    dq_new, dq_old = np.zeros(shape, np.uint32), np.zeros(shape, np.uint32)
    dq_new[0, :5] = DQ["DO_NOT_USE"]
    dq_old[1, :3] = DQ["DO_NOT_USE"]
    dq_new[2, :7] = DQ["UNRELIABLE_DARK"]
    unc_new, unc_old = np.full(shape, 0.006), np.full(shape, 0.008)
    hot = np.zeros(shape, bool)
    hot[10, 10] = True
    new[10, 10] += 2.0
    r = rate_difference(new, old, dq_new, dq_old, unc_new, unc_old, hot, np.ones(shape, bool),
                        DQ["DO_NOT_USE"], DQ["UNRELIABLE_DARK"])
    usable = np.ones(shape, bool)
    usable[0, :5] = usable[1, :3] = False
    d = (new - old)[usable]
    assert r["n_usable"] == usable.sum() == 2000 - 8
    assert r["diff_median"] == pytest.approx(np.median(d), rel=1e-12)
    assert np.isnan(r["difference"][~usable]).all()
    assert r["expected_sigma"] == pytest.approx(0.01)
    assert (r["new_do_not_use"], r["gone_do_not_use"], r["new_unreliable_dark"],
            r["gone_unreliable_dark"]) == (5, 3, 7, 0)
    bg = usable & ~hot
    assert r["n_background"] == bg.sum()
    b = new[bg]
    assert r["background_sigma"] == pytest.approx(1.4826 * np.median(np.abs(b - np.median(b))))
    assert r["hot_residual_new"] == pytest.approx(new[10, 10] - np.median(new[usable]))


def test_bad_sets_and_boxes_are_refused_before_any_work(sci, two_sets, tmp_path, capsys,
                                                        monkeypatch):
    args = ["check-science", str(sci["held_out"]), "--new", str(two_sets["new"]), "--refkit",
            str(two_sets["kit"]), "-o", str(tmp_path / "cs")]
    assert cli.main([*args, "--old", "crds"]) == 2
    assert "needs a CRDS server (set CRDS_SERVER_URL)" in capsys.readouterr().err
    assert cli.main([*args, "--old", str(two_sets["kit"])]) == 2  # a kit: no DARK
    assert "no DARK reference file" in capsys.readouterr().err
    assert cli.main([*args, "--old", str(two_sets["old"]), "--background", "0:10,0:9999"]) == 2
    assert "is not inside the exposure's 128 x 2048 pixels" in capsys.readouterr().err
    assert cli.main([*args, "--old", str(two_sets["old"]), "--db",
                     str(tmp_path / "missing" / "r.sqlite")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # an exposure whose whole-exposure run does not fit in the memory available
    import psutil
    from collections import namedtuple

    need = R.science_memory((1, 60, 128, 2048))
    free = namedtuple("svmem", "available")(need - 1)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    assert cli.main([*args, "--old", str(two_sets["old"])]) == 2
    err = capsys.readouterr().err
    assert f"needs ~{need / 2**30:.1f} GiB (jwst detector1, 1 x 60 x 128 x 2048 raw)" in err
    assert not (tmp_path / "cs").exists()


@pytest.mark.parametrize("fault, expected", [
    ("dark_detector", "new set: {dark}: DETECTOR NRS2, the data are NRS1"),
    ("bias_region", "old set: {bias}: covers x 1-2048, y 946-977 (SUB2048), not the data's"),
    ("science_ngroups", "NGROUPS=20 but the SCI cube holds 60 groups"),
    ("science_detector", "unknown DETECTOR 'NRS3'"),
])
def test_mismatched_sets_are_refused_before_any_work(sci, two_sets, tmp_path, capsys, fault,
                                                     expected):
    """A set of another detector or region, or a science header that disagrees with its data,
    is named and refused before detector1 runs (before: NRS1 files on an NRS2 exposure gave a
    full report of wrong numbers, exit 0)."""
    science = tmp_path / Path(sci["held_out"]).name
    shutil.copy(sci["held_out"], science)
    sets = {}
    for name in ("new", "old"):
        sets[name] = tmp_path / name
        shutil.copytree(two_sets[name], sets[name])
    dark = next(sets["new"].glob("*dark*.fits")).name
    bias = next(sets["old"].glob("*superbias*.fits")).name
    cards = {"dark_detector": (sets["new"] / dark, {"DETECTOR": "NRS2"}),
             "bias_region": (sets["old"] / bias, {"SUBARRAY": "SUB2048", "SUBSTRT2": 946,
                                                  "SUBSIZE2": 32}),
             "science_ngroups": (science, {"NGROUPS": 20}),
             "science_detector": (science, {"DETECTOR": "NRS3"})}
    path, values = cards[fault]
    with fits.open(path, mode="update") as h:
        h[0].header.update(values)
    code = cli.main(["check-science", str(science), "--new", str(sets["new"]), "--old",
                     str(sets["old"]), "--refkit", str(two_sets["kit"]), "-o",
                     str(tmp_path / "cs")])
    err = capsys.readouterr().err
    assert code == 2 and expected.format(dark=dark, bias=bias) in err, err
    assert not (tmp_path / "cs").exists()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (make "
                    "test installs Debian's chromium where it runs as root)")
def test_the_command_prints_and_its_page_renders(sci, two_sets, tmp_path, capsys):
    out = tmp_path / "cs"
    assert cli.main(["check-science", str(sci["held_out"]), "--new", str(two_sets["new"]),
                     "--old", str(two_sets["old"]), "--refkit", str(two_sets["kit"]), "-o",
                     str(out), "--background", "8:120,8:2040"]) == 0
    text = capsys.readouterr().out
    assert "newly DO_NOT_USE 0 (no longer 0); newly UNRELIABLE_DARK 80 (no longer 0)" in text
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    page = out / "check_science.html"
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'id="render-check">rendered (\d+) of (\d+)<', dom)
    assert found and int(found[1]) == int(found[2]) == 5, dom[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, "--window-size=1100,3400", f"--screenshot={shot}",
                    f"file://{page}"], capture_output=True, timeout=120)
    assert shot.stat().st_size > 50_000


def test_the_page_shows_hostile_values_as_text(tmp_path):
    """File names and header values on the check-science page are text whatever they hold
    (the page's markup checked for fuzzed values: no handler, only its own hashed script)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nrsdark_dask.stages.science import write_page
    from test_trends import check_page_markup

    name = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
                   min_size=1, max_size=40).filter(lambda t: t not in (".", ".."))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name, name, name, name)
    def run(science, dark, detector, subarray):
        numbers = {"science": f"/d/{science}", "detector": detector, "subarray": subarray,
                   "new": {"dark": f"/n/{dark}"}, "old": {"dark": f"/o/{dark}"},
                   **{k: 0.5 for k in ("diff_median", "diff_sigma", "background_sigma",
                                       "diff_sigma_over_background",
                                       "diff_sigma_over_expected")}}
        page, _ = write_page(tmp_path, numbers, {})
        check_page_markup(page, f"nrsdark check-science: {science}")

    run()
