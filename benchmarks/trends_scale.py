"""Trend pages at ten years of monthly builds (issue 22): page size and load time.

A synthetic results database (``benchmarks/data/trends/``) of 120 monthly DARK records of one
detector x readout x subarray, each with 20 inputs, a cull table's worth of left-out inputs,
per-amplifier statistics and an analysis (the records a monitor makes; no FITS files: rows
written through the results module's own tables), then ``nrsdark trends`` on it, and the page
opened in headless Chromium: the time until every plot has drawn (the page's own
``render-check`` line, ``performance.now()`` from navigation start) and the wall time of the
browser run.

    python benchmarks/trends_scale.py [--months 120]

Writes ``benchmarks/results/trends_scale.json`` (and SUMMARY.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import DATA, metric, write_result  # noqa: E402

from nrsdark_dask import results as R  # noqa: E402
from nrsdark_dask.stages.trends import trends  # noqa: E402


def synthetic_db(path: Path, months: int, seed: int = 1) -> str:
    """``months`` monthly DARK records in a fresh SQLite database; returns its URL."""
    path.unlink(missing_ok=True)
    url = R.resolve(path)
    rng = np.random.default_rng(seed)
    start = dt.datetime(2023, 1, 15, tzinfo=dt.timezone.utc)
    with R.ResultsDB(url) as rdb, rdb.engine.begin() as conn:
        t = rdb.t
        for m in range(months):
            when = start + dt.timedelta(days=30.44 * m)
            run = conn.execute(t["runs"].insert().values(
                command="build", started=when, wall_s=60.0, peak_rss_bytes=2 << 30,
                host="bench", software="{}")).inserted_primary_key[0]
            rid = conn.execute(t["reffiles"].insert().values(
                run_id=run, sha256=f"{m:064x}", path=f"/data/nrsdark_dark_{m:03d}.fits",
                reftype="DARK", detector="NRS1", readpatt="ANY", subarray="FULL",
                pedigree="INFLIGHT", useafter=when.isoformat(), created=when)
            ).inserted_primary_key[0]
            conn.execute(t["inputs"].insert(), [
                dict(reffile_id=rid, exposure=f"e{m}_{i}.fits@{i:012x}",
                     date=when + dt.timedelta(hours=i), used=i >= 3) for i in range(20)])
            n_hot = int(9000 + 100 * m + rng.normal(0, 30))
            numbers = {"detector": "NRS1", "readpatt": "NRS|NRSRAPID", "subarray": "FULL",
                       "n_inputs": 17, "n_hot": n_hot, "median_rate": 0.006 + 1e-4 * rng.normal(),
                       "negative_rate_fraction": 0.1, "telegraph_fraction": 0.005,
                       "bias_level": 13400.0, "snr": 2.6 + 0.1 * rng.normal(),
                       "snr_required": 2.5}
            conn.execute(t["statistics"].insert(), [
                dict(reffile_id=rid, source="analyze", name=k, amp=None, value=float(v))
                for k, v in numbers.items() if isinstance(v, (int, float))] + [
                dict(reffile_id=rid, source="analyze", name=k, amp=a,
                     value=float(v * (1 + 0.02 * a)))
                for a in range(4) for k, v in (("median_rate", 0.006), ("bias_level", 13400.0),
                                               ("unc_median", 0.002))])
            conn.execute(t["analyses"].insert().values(
                run_id=run, reffile_id=rid, previous_id=rid - 1 if m else None,
                snr=numbers["snr"], snr_required=2.5, deliverable=numbers["snr"] >= 2.5,
                n_new_hot=int(100 + rng.normal(0, 10)) if m else None, warnings="[]",
                report=json.dumps(numbers)))
    return url


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--months", type=int, default=120)
    args = ap.parse_args(argv)
    work = DATA / "trends"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    url = synthetic_db(work / "ten_years.sqlite", args.months)
    t_db = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = trends(url, work / "site")
    t_site = time.perf_counter() - t0
    (page,) = out["pages"]
    size = page.stat().st_size
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    load_ms = wall = None
    if browser:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--virtual-time-budget=30000",
                 f"--user-data-dir={work / 'profile'}"]
        t0 = time.perf_counter()
        dom = subprocess.run([browser, *flags, "--dump-dom", f"file://{page}"],
                             capture_output=True, text=True, timeout=300).stdout
        wall = time.perf_counter() - t0
        found = re.search(r"rendered (\d+) of (\d+) in (\d+) ms", dom)
        if found and found[1] == found[2]:
            load_ms = int(found[3])
    print(f"{args.months} monthly files: database {t_db:.1f} s, site {t_site:.1f} s, page "
          f"{size / 2**20:.2f} MiB, every plot drawn {load_ms} ms after navigation "
          f"(browser run {wall and round(wall, 1)} s)")
    write_result("trends_scale", "", f"trend page, {args.months} monthly builds", [
        metric("site written", t_site, "s"),
        metric("page size", size / 2**20, "MiB", target=5, op="<="),
        metric("every plot drawn after navigation (headless Chromium)", load_ms, "ms",
               target=3000, op="<="),
    ], details={"months": args.months, "db_s": t_db, "browser_wall_s": wall})
    return 0


if __name__ == "__main__":
    sys.exit(main())
