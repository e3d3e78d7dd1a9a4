"""Trend pages (issue 22 item 2): a short history of builds recorded in the results database,
the site written from it, rendered in headless Chromium: every plot draws, and the numbers on
the page are the database's."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nrsdark_dask import results as R
from nrsdark_dask.analyze import analyze
from nrsdark_dask.build import build
from nrsdark_dask.store import open_dataset
from nrsdark_dask.trends import TrendsError, collect, hot_growth, trends

pytestmark = pytest.mark.xdist_group("results")


@pytest.fixture(scope="module")
def history(cal_store, tmp_path_factory):
    """Three builds from date-ordered pairs of the store's exposures, each analysed against
    the previous one, recorded in one SQLite database."""
    root = tmp_path_factory.mktemp("trends")
    db = root / "r.sqlite"
    ds = open_dataset(cal_store["path"])
    ids = [str(e) for _, e in sorted(zip(ds.date.values, ds.exposure.values))]
    prev = None
    for k in range(len(ids) - 1):
        keep = set(ids[k:k + 2])
        out = root / f"b{k}"
        build(cal_store["path"], out, exclude=[e for e in ids if e not in keep], db=db)
        analyze(out, compare=prev, db=db)
        prev = [out]
    return {"root": root, "db": db, "n": len(ids) - 1}


def test_the_points_are_the_database(history):
    with R.ResultsDB(R.resolve(history["db"])) as rdb:
        pages = collect(rdb)
        analyses = rdb.read_table("analyses")
    (points,) = pages.values()
    assert len(points) == history["n"] == len(analyses)
    assert [p["date"] for p in points] == sorted(p["date"] for p in points)
    assert sorted(p["snr"] for p in points) == sorted(a["snr"] for a in analyses)
    assert points[0]["n_new_hot"] is None and all(p["n_new_hot"] is not None
                                                   for p in points[1:])
    assert all(p["used"] == 2 and p["culled"] == p["observed"] - 2 for p in points)
    months = [(p["date"] - points[0]["date"]).days / 30.44 for p in points]
    slope = (points[-1]["n_hot"] - points[0]["n_hot"]) / months[-1]
    growth = hot_growth(points)  # least squares; with 3 points near the end-to-end slope
    assert growth is not None and abs(growth[0] - slope) <= 3 * growth[1] + 1e-9


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (make "
                    "test installs Debian's chromium where it runs as root)")
def test_the_site_renders_every_plot_with_the_database_numbers(history, tmp_path, capsys):
    from nrsdark_dask import cli

    site = tmp_path / "site"
    assert cli.main(["trends", "--db", str(history["db"]), "-o", str(site)]) == 0
    assert "1 page(s)" in capsys.readouterr().out
    (page,) = [p for p in site.glob("*.html") if p.name != "index.html"]
    assert page.name in (site / "index.html").read_text()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--virtual-time-budget=10000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'id="render-check">rendered (\d+) of (\d+) in \d+ ms<', dom)
    assert found, dom[-2000:]
    assert int(found[1]) == int(found[2]) >= 6
    # the table on the page, cell by cell, against the database
    cells = re.findall(r'<td data-key="(\w+)">([^<]*)</td>', dom)
    with R.ResultsDB(R.resolve(history["db"])) as rdb:
        (points,) = collect(rdb).values()
    keys = [k for k, _ in cells[:len(cells) // len(points)]]
    for i, p in enumerate(points):
        row = dict(cells[i * len(keys):(i + 1) * len(keys)])
        assert float(row["snr"]) == pytest.approx(p["snr"], rel=1e-5)
        assert int(row["n_hot"]) == p["n_hot"] and int(row["used"]) == p["used"]
        assert float(row["median_rate"]) == pytest.approx(p["median_rate"], rel=1e-5)
        assert row["date"] == p["date"].strftime("%Y-%m-%d")
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, "--window-size=1100,2400", f"--screenshot={shot}",
                    f"file://{page}"], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_trends_refuses_what_it_cannot_show(tmp_path):
    with pytest.raises(TrendsError, match="does not exist"):
        trends(tmp_path / "none.sqlite", tmp_path / "site")
    R.ResultsDB(R.resolve(tmp_path / "empty.sqlite")).close()
    with pytest.raises(TrendsError, match="holds no analysed DARK"):
        trends(tmp_path / "empty.sqlite", tmp_path / "site")
