"""``nrsdark trends``: the monitor over time, from the results database (issue 22 item 2).

A self-contained site (``index.html`` and one page per detector x readout pattern x subarray)
that opens from disk with no server and no network: Bokeh plots with BokehJS inlined, hover
giving each point's file and date, and under the plots the same numbers as a table (what the
plots show, to read or copy).  Each page shows, over time (the median date of each DARK's
inputs):

* HOT pixels, and new HOT pixels per month against the previous file, with the fitted growth
  (a straight line through the HOT counts: pixels per month);
* the median dark rate and the bias level per output amplifier;
* the SNR of each file against its requirement;
* the inputs: observed (in the store), left out (culled or excluded) and used (report
  Table 5; the requested count is not recorded);
* the negative-rate and TELEGRAPH fractions.

Aggregation: one point per reference file (the latest analysis of each DARK), never a
pixel: ten years of monthly builds are 120 points a series, and each page stays one file of
about the size of BokehJS itself (~1 MB).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from markupsafe import Markup

from ..pages import PLOTS_CHECK, render, safe_name, write_page
from ..results import ResultsDB, resolve

SERIES = ("n_hot", "n_new_hot", "snr", "snr_required", "median_rate", "negative_rate_fraction",
          "telegraph_fraction", "bias_level", "n_inputs")


class TrendsError(ValueError):
    pass


def collect(rdb: ResultsDB) -> dict:
    """The points of every page: ``{(detector, readpatt, subarray): [point, ...]}``, a point
    per DARK with an analysis (its latest), in date order; a point holds the file, its date,
    the statistics of ``SERIES``, per-amplifier ``median_rate``/``bias_level``
    (``{amp: value}``), and the inputs observed / culled / used."""
    files = {r["id"]: r for r in rdb.read_table("reffiles")}
    latest = {}
    for a in rdb.read_table("analyses"):
        latest[a["reffile_id"]] = a  # ids ascend: the last one wins
    stats: dict = {}
    for s in rdb.read_table("statistics"):
        stats.setdefault(s["reffile_id"], []).append(s)
    inputs: dict = {}
    for r in rdb.read_table("inputs"):
        inputs.setdefault(r["reffile_id"], []).append(r)
    pages: dict = {}
    for rid, a in latest.items():
        f = files[rid]
        own = stats.get(rid, [])
        whole = {s["name"]: s["value"] for s in own if s["amp"] is None
                 and s["source"] == "analyze"}
        amps = {}
        for s in own:
            if s["amp"] is not None and s["source"] == "analyze":
                amps.setdefault(s["name"], {})[int(s["amp"])] = s["value"]
        ins = inputs.get(rid, [])
        dates = sorted(_aware(r["date"]) for r in ins if r["date"] is not None and r["used"])
        date = dates[len(dates) // 2] if dates else _useafter(f["useafter"])
        point = {"file": Path(f["path"]).name, "path": f["path"], "date": date,
                 **{k: whole.get(k) for k in SERIES},
                 "n_new_hot": a["n_new_hot"], "snr": a["snr"], "snr_required": a["snr_required"],
                 "deliverable": a["deliverable"],
                 "observed": len(ins) or None, "culled": sum(not r["used"] for r in ins),
                 "used": sum(bool(r["used"]) for r in ins) or whole.get("n_inputs"),
                 "amp_median_rate": amps.get("median_rate", {}),
                 "amp_bias_level": amps.get("bias_level", {})}
        rep = _json_object(a["report"])  # the DARK's READPATT is ANY: the analysis knows
        key = tuple(str(rep.get(k) or f[k] or "?") for k in ("detector", "readpatt",
                                                              "subarray"))
        pages.setdefault(key, []).append(point)
    for points in pages.values():
        points.sort(key=lambda p: p["date"])
        _new_hot_per_month(points)
    return pages


def _json_object(text) -> dict:
    """A database's JSON column as a dict ({} when it is not one: rows are untrusted)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _aware(d):
    return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)


def _useafter(text):
    try:
        return _aware(dt.datetime.fromisoformat(str(text)))
    except ValueError:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _new_hot_per_month(points: list) -> None:
    """New HOT pixels per month: each file's new HOT (against the file analyze compared it
    with) over the months since the previous point."""
    for prev, p in zip([None] + points[:-1], points):
        months = (p["date"] - prev["date"]).days / 30.44 if prev else None
        p["new_hot_per_month"] = (p["n_new_hot"] / months if p["n_new_hot"] is not None
                                  and months else None)


def hot_growth(points: list) -> tuple[float, float] | None:
    """Least-squares growth of the HOT count, pixels per month, and its standard error
    (None with fewer than 3 points)."""
    t = np.array([p["date"].timestamp() / (30.44 * 86400) for p in points if p["n_hot"]
                  is not None])
    n = np.array([p["n_hot"] for p in points if p["n_hot"] is not None], np.float64)
    if t.size < 3 or np.ptp(t) == 0:
        return None
    coef, cov = np.polyfit(t, n, 1, cov=True)
    return float(coef[0]), float(np.sqrt(cov[0, 0]))


def page_names(keys) -> dict:
    """``{key: file name}`` of the pages: each (detector, readout, subarray) key, values from
    headers and databases, mapped by :func:`pages.safe_name` to a plain name inside the site
    (``nrs1_nrsrapid_full.html``; any other character replaced and a hash added), unique."""
    names: dict = {}
    for key in sorted(keys):
        name = safe_name("_".join(str(k).lower().replace("|", "-").replace(" ", "")
                                  for k in key))
        if name == "index" or name in names.values():  # the index's own name, a clash
            name = safe_name("\x00".join(map(str, key)) + "|" + name)
        names[key] = name + ".html"
    return names


def trends(db, site) -> dict:
    """Write the site into folder ``site`` (created; its pages replaced) from results
    database ``db`` (a URL or SQLite path).  Returns ``{"index": path, "pages": [paths],
    "points": n}``."""
    url = resolve(db)
    if url is None:
        raise TrendsError("a results database is needed (--db URL or SQLite file)")
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise TrendsError(f"results database {url[len('sqlite:///'):]} does not exist")
    with ResultsDB(url) as rdb:
        pages = collect(rdb)
        where = rdb.safe_url
    if not pages:
        raise TrendsError(f"{where} holds no analysed DARK yet (nrsdark analyze --db ...)")
    site = Path(site)
    site.mkdir(parents=True, exist_ok=True)
    names = page_names(pages)
    written = [write_page(site, names[key], _page(key, points, where))
               for key, points in sorted(pages.items())]
    index = write_page(site, "index.html", _index(pages, names, where))
    return {"index": index, "pages": written, "points": sum(map(len, pages.values()))}


# ---- pages ------------------------------------------------------------------------------------
STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:"
         "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         "th{background:#eee}.bad{color:#b00}")


def _figures(points: list):
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.palettes import Category10
    from bokeh.plotting import figure

    dates = [p["date"].replace(tzinfo=None) for p in points]

    def col(name):
        return [np.nan if p.get(name) is None else float(p[name]) for p in points]

    base = {"date": dates, "file": [p["file"] for p in points],
            "when": [p["date"].strftime("%Y-%m-%d") for p in points]}
    hover = [("file", "@file"), ("date", "@when")]
    figs = []

    span = max(dates) - min(dates)
    pad = dt.timedelta(days=30) if span < dt.timedelta(days=60) else span * 0.03

    def fig(title, y_label):
        # a month either side when the points span little (one build: not microseconds)
        f = figure(title=title, x_axis_type="datetime", height=260, width=1000,
                   tools="pan,wheel_zoom,box_zoom,reset,save",
                   x_range=(min(dates) - pad, max(dates) + pad))
        f.yaxis.axis_label = y_label
        return f

    def series(f, name, label, color, source=None, marker=True):
        src = source or ColumnDataSource({**base, "y": col(name)})
        f.line("date", "y", source=src, color=color, legend_label=label)
        r = f.scatter("date", "y", source=src, color=color, size=7, legend_label=label) \
            if marker else None
        f.add_tools(HoverTool(renderers=[r] if r else [], tooltips=hover + [(label, "@y")]))
        return src

    growth = hot_growth(points)
    f = fig("HOT pixels" + (f": growth {growth[0]:+.1f} +- {growth[1]:.1f} per month"
                            if growth else ""), "pixels")
    series(f, "n_hot", "HOT", Category10[10][3])
    if growth:
        t = np.array([p["date"].timestamp() / (30.44 * 86400) for p in points])
        n = np.array(col("n_hot"))
        ok = np.isfinite(n)
        c = np.polyfit(t[ok], n[ok], 1)
        f.line(dates, np.polyval(c, t), color="grey", line_dash="dashed", legend_label="fit")
    figs.append(f)
    f = fig("new HOT pixels per month (against the file each analysis compared with)",
            "pixels / month")
    series(f, "new_hot_per_month", "new HOT / month", Category10[10][1])
    figs.append(f)
    for name, label, unit in (("amp_median_rate", "median dark rate", "DN/s"),
                              ("amp_bias_level", "bias level", "DN")):
        f = fig(f"{label} per output amplifier", unit)
        amps = sorted({a for p in points for a in p[name]})
        for a in amps:
            src = ColumnDataSource({**base, "y": [p[name].get(a, np.nan) for p in points]})
            series(f, None, f"amp {a}", Category10[10][a % 10], src)
        if amps:
            figs.append(f)
    f = fig("SNR against the requirement", "SNR")
    series(f, "snr", "SNR", Category10[10][0])
    # the requirement as data (not a Span), so the y range always shows it
    f.line("date", "y", source=ColumnDataSource({**base, "y": col("snr_required")}),
           line_dash="dashed", color="red", legend_label="required")
    figs.append(f)
    f = fig("inputs (report Table 5)", "exposures")
    for name, label, k in (("observed", "observed (in the store)", 0),
                           ("culled", "left out (culled or excluded)", 3), ("used", "used", 2)):
        series(f, name, label, Category10[10][k])
    figs.append(f)
    f = fig("negative-rate and TELEGRAPH fractions", "fraction of active pixels")
    series(f, "negative_rate_fraction", "negative rate", Category10[10][4])
    series(f, "telegraph_fraction", "TELEGRAPH", Category10[10][5])
    figs.append(f)
    for f in figs:
        f.legend.location = "top_left"
        f.legend.click_policy = "hide"
    return figs


COLUMNS = (("date", "date"), ("file", "file"), ("n_inputs", "inputs"), ("observed", "observed"),
           ("culled", "left out"), ("used", "used"), ("n_hot", "HOT"), ("n_new_hot", "new HOT"),
           ("median_rate", "median rate"), ("bias_level", "bias level"), ("snr", "SNR"),
           ("snr_required", "required"), ("negative_rate_fraction", "negative"),
           ("telegraph_fraction", "TELEGRAPH"))


def _cell(p, key) -> str:
    """A table cell's text (escaped by the template)."""
    v = p.get(key)
    if key == "date":
        return p["date"].strftime("%Y-%m-%d")
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _page(key, points, where) -> str:
    from bokeh.embed import components
    from bokeh.resources import Resources

    script, divs = components(_figures(points), wrap_script=False)
    return render("trend_page.html", head_scripts=Resources(mode="inline",
                                                           components=["bokeh"]).js_raw,
                  scripts=[script, PLOTS_CHECK], title=" ".join(key), where=where,
                  points=points, style=STYLE, columns=COLUMNS, divs=[Markup(d) for d in divs],
                  rows=[({k: _cell(p, k) for k, _ in COLUMNS}, p["deliverable"])
                        for p in points])


def _index(pages, names, where) -> str:
    rows = [{"href": names[key], "title": " ".join(key), "files": len(points),
             "first": _cell(points[0], "date"), "last": _cell(points[-1], "date"),
             "hot": _cell(points[-1], "n_hot"), "snr": _cell(points[-1], "snr"),
             "deliverable": "yes" if points[-1]["deliverable"] else "no"}
            for key, points in sorted(pages.items())]
    return render("trend_index.html", where=where, rows=rows, style=STYLE,
                  written=f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}")
