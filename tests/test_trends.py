"""Trend pages (issue 22 item 2): a short history of builds recorded in the results database,
the site written from it, rendered in headless Chromium: every plot draws, and the numbers on
the page are the database's."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nrsdark_dask import results as R
from nrsdark_dask.stages.analyze import analyze
from nrsdark_dask.stages.build import build
from nrsdark_dask.stages.trends import TrendsError, collect, hot_growth, trends
from nrsdark_dask.store import open_dataset

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
    from nrsdark_dask.cli import main as cli

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


# ---- hostile values (issue 29): every value from a file or a database is untrusted ----------
HOSTILE = ["../../../../PWNED", '"><img src=x onerror="document.title=\'xss-ran\'">',
           'X"TABINDEX="1"AUTOFOCUS="1"ONFOCUS="document.title=\'xss-ran\'"X="',
           "</script><script>document.title='xss-ran'</script>",
           "javascript:document.title='xss-ran'", "{{ 7*7 }}<!--", "index"]


def _poison(src, dst, keys, path=None):
    """A copy of results database ``src`` whose analysed DARKs carry ``keys`` (detector,
    readout, subarray) in their rows and in their analyses' reports, and file ``path``."""
    import json
    import sqlite3

    shutil.copy(src, dst)
    con = sqlite3.connect(dst)
    ids = [r[0] for r in con.execute("select distinct reffile_id from analyses order by 1")]
    for rid, key in zip(ids, keys):
        con.execute("update reffiles set detector=?, readpatt=?, subarray=?, path=? where id=?",
                    (*key, path or f"/data/{key[0]}_dark.fits", rid))
        for aid, rep in con.execute("select id, report from analyses where reffile_id=?",
                                    (rid,)).fetchall():
            rep = {**json.loads(rep or "{}"), "detector": key[0], "readpatt": key[1],
                   "subarray": key[2]}
            con.execute("update analyses set report=? where id=?", (json.dumps(rep), aid))
    con.commit()
    con.close()
    return dst, ids


def check_page_markup(page, title):
    """What a page may hold whatever the data: no event-handler attribute, no javascript:
    link, only scripts the page's Content-Security-Policy lists by hash (or JSON data), a
    ``<title>`` that is exactly ``title``."""
    import base64
    import hashlib
    from html.parser import HTMLParser

    class Parse(HTMLParser):
        def __init__(self):
            super().__init__()
            self.attrs, self.scripts, self.csp, self.title, self._in = [], [], None, "", None

        def handle_starttag(self, tag, attrs):
            self.attrs += [(tag, k, v) for k, v in attrs]
            if tag == "meta" and dict(attrs).get("http-equiv") == "Content-Security-Policy":
                self.csp = dict(attrs)["content"]
            self._in = (tag, dict(attrs))
            if tag == "script":
                self.scripts.append([dict(attrs).get("type"), ""])

        def handle_endtag(self, tag):
            self._in = None

        def handle_data(self, data):
            if self._in and self._in[0] == "script":
                self.scripts[-1][1] += data
            if self._in and self._in[0] == "title":
                self.title += data

    p = Parse()
    p.feed(page.read_text(encoding="utf-8"))
    assert p.csp and "'unsafe-inline'" not in p.csp.split("script-src")[1].split(";")[0]
    assert not [a for a in p.attrs if a[1].lower().startswith("on")], page
    assert not [a for a in p.attrs if a[1] in ("href", "src") and a[2] and
                a[2].strip().lower().startswith("javascript:")]
    for kind, body in p.scripts:
        if kind != "application/json":
            digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in p.csp
    assert p.title == title


def _files(root):
    return {p for p in root.rglob("*")}


def test_hostile_database_values_stay_text_inside_the_site(history, tmp_path):
    """Fuzzed: any string in the fields that reach the trend pages (detector, readout,
    subarray, file name) gives pages named inside the site, that show the value as text."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from nrsdark_dask.pages import safe_name

    text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(text, text, text), min_size=3, max_size=3), text)
    def run(keys, name):
        work = tmp_path / safe_name(repr(keys) + name) / "a" / "b"
        work.mkdir(parents=True)
        db, _ = _poison(history["db"], work / "p.sqlite", keys, f"/x/{name}")
        site = work / "site"
        before = _files(tmp_path)
        out = trends(db, site)
        new = _files(tmp_path) - before
        assert all(p.parent == site or p == site for p in new), new
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.html", p.name) for p in site.iterdir())
        assert len(out["pages"]) == len(set(keys))
        for page, key in zip(out["pages"], sorted(set(keys))):
            check_page_markup(page, "nrsdark trends: " + " ".join(key))
        check_page_markup(out["index"], "nrsdark trends")
        shutil.rmtree(work)

    run()


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium is not installed (make "
                    "test installs Debian's chromium where it runs as root)")
def test_hostile_values_run_no_script_in_chromium(history, tmp_path):
    """The reported attacks (a path in DETECTOR, markup and handlers in SUBARRAY, a script
    end tag, a javascript: link) in headless Chromium: nothing they carry runs, every plot
    still draws (the policy lets BokehJS run), nothing is written outside the site."""
    keys = [(HOSTILE[0], HOSTILE[4], HOSTILE[1]), (HOSTILE[6], HOSTILE[5], HOSTILE[2]),
            (HOSTILE[3], "NRSRAPID", HOSTILE[1])]
    db, _ = _poison(history["db"], tmp_path / "p.sqlite", keys, "/d/" + HOSTILE[3])
    site = tmp_path / "a" / "b" / "site"
    before = _files(tmp_path)
    out = trends(db, site)
    assert all(p == site or site in p.parents or p in site.parents
               for p in _files(tmp_path) - before)
    assert len(out["pages"]) == 3 and "index.html" not in [p.name for p in out["pages"]]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--no-first-run", "--virtual-time-budget=10000",
             f"--user-data-dir={tmp_path / 'profile'}"]
    for page in [out["index"], *out["pages"]]:
        dom = subprocess.run([_chromium(), *flags, "--dump-dom", f"file://{page}"],
                             capture_output=True, text=True, timeout=120).stdout
        assert "<title>nrsdark trends" in dom and "<title>xss-ran" not in dom, page.name
        assert not re.search(r"<[^>]+\son\w+=", dom, re.I), page.name
        if page != out["index"]:
            found = re.search(r'id="render-check">rendered (\d+) of (\d+) in \d+ ms<', dom)
            assert found and int(found[1]) == int(found[2]) >= 6, dom[-1500:]
