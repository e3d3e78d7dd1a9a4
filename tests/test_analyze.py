"""``nrsdark analyze`` (issue 14 part 1): the build's numbers from its files, both verdicts,
the comparison, and the report rendered by a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask.cli import main as cli


@pytest.fixture(scope="module")
def built(cal_store, tmp_path_factory):
    from nrsdark_dask.stages.build import build

    out = tmp_path_factory.mktemp("analyze") / "ref"
    res = build(cal_store["path"], out, scheduler="sync")
    return {"dir": out, "stats": res["stats"], "files": res["files"]}


def test_analyze_repeats_the_builds_numbers_from_the_files(built, capsys):
    from nrsdark_dask.stages.analyze import analyze

    s = analyze(built["dir"])
    b = built["stats"]
    for key in ("n_rc", "n_telegraph", "n_bad_reference", "n_hot"):
        assert s[key] == b[key], key
    for key in ("snr", "median_rate", "negative_rate_fraction", "telegraph_fraction",
                "bias_level", "frame_rate"):
        assert s[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert s["deliverable"] == b["deliverable"] and s["snr_required"] == b["snr_required"]
    assert s["n_inputs"] == b["n_exposures"] and s["family"] == "TRAD"
    assert "NRSRAPID" in s["readpatt"].split("|")  # the DARK serves NRS and NRSRAPID
    numbers = json.loads(open(s["json"]).read())
    assert numbers["snr"] == pytest.approx(b["snr"]) and "warnings" in numbers
    assert set(s["figures"]) >= {"superbias", "drk", "drk_histogram", "unc",
                                 "cube_last_plane", "flags"}


def test_the_exit_status_is_the_verdict(built, tmp_path, capsys):
    snr = built["stats"]["snr"]
    for required, code, word in ((snr / 2, 0, "DELIVERABLE"), (snr * 2, 1, "NOT DELIVERABLE")):
        cfg = tmp_path / f"c{code}.toml"
        cfg.write_text(f"[delivery]\nsnr_trad = {required}\n")
        report = tmp_path / f"qa{code}"
        assert cli.main(["analyze", str(built["dir"]), "--config", str(cfg),
                         "--report", str(report)]) == code
        printed = capsys.readouterr().out
        assert ("NOT deliverable" in printed) == bool(code)
        page = (report / "report.html").read_text()
        assert f">{word}: SNR" in page
    assert cli.main(["analyze", str(tmp_path)]) == 2  # no DARK there
    assert "no DARK reference file" in capsys.readouterr().err


def test_comparison_counts_new_hot_pixels_and_the_difference(built, tmp_path):
    from nrsdark_dask.stages.analyze import analyze

    same = analyze(built["dir"], compare=[built["dir"]], report_dir=tmp_path / "a")
    assert same["n_new_hot"] == 0 and same["difference_median"] == 0.0
    assert {"difference", "difference_profiles"} <= set(same["figures"])
    # a previous DARK in which every pixel was below the HOT limit: all HOT pixels are new
    prev = tmp_path / "prev"
    prev.mkdir()
    dark = prev / "old_dark.fits"
    shutil.copy(built["files"]["dark"], dark)
    with fits.open(dark, mode="update") as h:
        h["DRK"].data[:] = np.minimum(h["DRK"].data, 0.5)
    new = analyze(built["dir"], compare=[dark], report_dir=tmp_path / "b")
    assert new["n_new_hot"] == built["stats"]["n_hot"] > 0
    assert new["difference_median"] >= 0


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (make "
                    "test installs Debian's chromium where it runs as root)")
def test_the_report_renders_every_image_in_headless_chromium(built, tmp_path):
    from nrsdark_dask.stages.analyze import analyze

    s = analyze(built["dir"], compare=[built["dir"]], report_dir=tmp_path / "qa")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{s['html']}"],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'id="render-check">rendered (\d+) of (\d+)<', dom)
    assert found, dom[-2000:]
    assert int(found[1]) == int(found[2]) == len(s["figures"]) >= 8
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, "--window-size=1100,3000", f"--screenshot={shot}",
                    f"file://{s['html']}"], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_flag_rule_warnings_follow_the_measured_reliability():
    """Each flag row's ``reliable_n`` is what benchmarks/flag_reliability.py measured (the
    larger N of its two cases, precision and recall; bad reference from the FULL case alone,
    164 true pixels against ~9 per ALLSLITS set), and a
    report warns for exactly the flags whose inputs are fewer."""
    from pathlib import Path

    from nrsdark_dask.stages.analyze import warnings_for
    from nrsdark_dask.reduction.tables import FLAGS, flag

    res = json.loads((Path(__file__).parents[1] / "benchmarks" / "results"
                      / "flag_reliability.json").read_text())["details"]["thresholds"]
    measured = {"hot": ("n", res), "telegraph": ("n", res), "rc": ("n", res),
                "bad_reference": ("n", {"full20": res["full20"]})}
    assert set(measured) == {f.name for f in FLAGS if f.reliable_n}
    for name, (kind, cases) in measured.items():
        assert flag(name).reliable_n[0] == max(case[name][kind] for case in cases.values())

    def rules(n, deliverable=True):
        w = warnings_for({"n_inputs": n, "deliverable": deliverable, "snr": 1.0,
                          "snr_required": 2.5})
        return {f.label for f in FLAGS if any(f"the {f.label} flags" in x for x in w)}, w

    assert rules(2)[0] == {"HOT", "TELEGRAPH", "RC", "BAD_REF_PIXEL"}
    assert rules(3)[0] == {"HOT", "TELEGRAPH", "BAD_REF_PIXEL"}
    assert rules(4)[0] == {"HOT"}
    assert rules(5) == (set(), [])
    assert rules(12) == (set(), [])
    found, w = rules(12, deliverable=False)
    assert found == set() and len(w) == 1 and "about 75 inputs" in w[0]


def test_hostile_header_values_are_text_in_the_report(built, tmp_path):
    """Header values a file's author chose (markup, handlers, a script end tag, a path) reach
    the QA report only as text: checked in the markup for fuzzed values, and in headless
    Chromium for the known attacks (no handler runs)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nrsdark_dask.stages.analyze import analyze, write_report
    from test_trends import HOSTILE, check_page_markup

    base = json.loads(Path(analyze(built["dir"], report_dir=tmp_path / "qa0")["json"]).read_text())
    text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text, text, text, text, st.lists(text, max_size=3))
    def run(det, patt, sub, pedigree, warns):
        s = {**base, "detector": det, "readpatt": patt, "subarray": sub, "pedigree": pedigree,
             "warnings": warns, "dark_file": f"/x/{det}.fits"}
        page, _ = write_report(tmp_path / "fuzz", s, {})
        check_page_markup(page, f"nrsdark QA: {det} {patt} {sub}")

    run()
    out = tmp_path / "hostile"
    shutil.copytree(built["dir"], out)
    with fits.open(next(out.glob("*dark*.fits")), mode="update") as h:
        h[0].header.update(SUBARRAY=HOSTILE[2][:68], PEDIGREE=HOSTILE[1][:68],
                           DESCRIP=HOSTILE[3][:68])
    if _chromium() is None:
        return
    s = analyze(out, report_dir=tmp_path / "qa")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--virtual-time-budget=5000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{s['html']}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<title>nrsdark QA" in dom and "<title>xss-ran" not in dom  # no handler retitled it
    assert not re.search(r"<[^>]+\son\w+=", dom, re.I)
    found = re.search(r'id="render-check">rendered (\d+) of (\d+)<', dom)
    assert found and int(found[1]) == int(found[2]) > 0
