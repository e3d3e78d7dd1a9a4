"""The results database (issue 22 item 1): build and analyze record every file, its inputs,
statistics and verdict; the schema is versioned; a record is one transaction; the same code
on SQLite (embedded) and on a real PostgreSQL server started on 127.0.0.1 by the test."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

from nrsdark_dask import results as R
from nrsdark_dask.stages.analyze import analyze
from nrsdark_dask.stages.build import build
from nrsdark_dask.store import file_sha256, open_dataset

pytestmark = pytest.mark.xdist_group("results")


@pytest.fixture(scope="module")
def built(cal_store, tmp_path_factory):
    """One build of the test store, recorded in an SQLite file, and its analysis."""
    root = tmp_path_factory.mktemp("results")
    db = root / "r.sqlite"
    res = build(cal_store["path"], root / "out", db=db)
    rep = analyze(root / "out", db=db)
    return {"root": root, "db": db, "res": res, "rep": rep, "store": cal_store["path"]}


def _check_recorded(rdb: R.ResultsDB, built: dict) -> None:
    res, rep = built["res"], built["rep"]
    files = {r["reftype"]: r for r in rdb.read_table("reffiles")}
    assert set(files) == {k.upper() for k in res["files"]}
    for reftype, path in res["files"].items():
        row = files[reftype.upper()]
        assert row["sha256"] == file_sha256(path) and row["detector"] == "NRS1"
        assert row["useafter"] and row["pedigree"].startswith("INFLIGHT")
    ds = open_dataset(built["store"])
    dark = files["DARK"]["id"]
    inputs = [r for r in rdb.read_table("inputs") if r["reffile_id"] == dark]
    assert sorted(r["exposure"] for r in inputs) == sorted(map(str, ds.exposure.values))
    assert all(r["used"] for r in inputs) and all(r["date"] is not None for r in inputs)
    stats = [r for r in rdb.read_table("statistics") if r["reffile_id"] == dark]
    built_stats = {r["name"]: r["value"] for r in stats if r["source"] == "build"}
    assert built_stats["n_hot"] == res["stats"]["n_hot"]
    assert built_stats["snr"] == pytest.approx(res["stats"]["snr"])
    per_amp = {(r["name"], r["amp"]): r["value"] for r in stats if r["amp"] is not None}
    amps = {a for _, a in per_amp}
    assert amps and amps <= {0, 1, 2, 3}
    assert all(("median_rate", a) in per_amp and ("unc_median", a) in per_amp for a in amps)
    (analysis,) = rdb.read_table("analyses")
    assert analysis["reffile_id"] == dark and analysis["snr"] == pytest.approx(rep["snr"])
    assert analysis["deliverable"] == rep["deliverable"]
    runs = rdb.read_table("runs")
    assert [r["command"] for r in runs] == ["build", "analyze"]
    assert all(r["wall_s"] > 0 and r["peak_rss_bytes"] > 10 * 2**20 for r in runs)


def test_build_and_analyze_record_in_sqlite(built):
    assert built["res"]["db"].startswith("sqlite:///") and built["rep"]["db"]
    with R.ResultsDB(R.resolve(built["db"])) as rdb:
        _check_recorded(rdb, built)
    # the per-amplifier median rates, by hand from the DARK's rows (SUBSTRT2: first row)
    from astropy.io import fits

    with fits.open(built["res"]["files"]["dark"]) as h:
        drk, unc = h["DRK"].data.astype(np.float64), h["UNC"].data
        y0, x0 = h[0].header["SUBSTRT2"] - 1, h[0].header["SUBSTRT1"] - 1
    y = np.arange(drk.shape[0]) + y0
    x = np.arange(drk.shape[1]) + x0
    ref = ((y < 4) | (y >= 2044))[:, None] | ((x < 4) | (x >= 2044))[None, :]
    ref |= (drk == 0) & (unc == 0)  # no rate
    amp = y // 512
    with R.ResultsDB(R.resolve(built["db"])) as rdb:
        got = {r["amp"]: r["value"] for r in rdb.read_table("statistics")
               if r["name"] == "median_rate" and r["amp"] is not None}
    for a, v in got.items():
        rows = (amp == a)[:, None] & ~ref & (drk != 0)
        assert v == pytest.approx(np.median(drk[rows]), rel=1e-6)


def test_a_newer_schema_is_refused_and_an_older_one_upgraded(tmp_path):
    import sqlalchemy as sa

    url = R.resolve(tmp_path / "v.sqlite")
    R.ResultsDB(url).close()
    eng = sa.create_engine(url)

    def version(v=None):
        with eng.begin() as conn:
            if v is not None:
                conn.execute(sa.text(f"UPDATE nrsdark_meta SET value = '{v}'"))
            return conn.execute(sa.text("SELECT value FROM nrsdark_meta")).scalar_one()

    version(99)
    with pytest.raises(R.ResultsError, match=f"schema 99, newer than this nrsdark_dask's "
                                             f"{R.SCHEMA_VERSION}"):
        R.ResultsDB(url)
    # a schema-1 database (before the monitor's, the science check's and fetch's tables) is
    # upgraded when opened, through every step
    version(1)
    with eng.begin() as conn:
        for table in ("monitor_windows", "monitor_groups", "science_checks", "fetched"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
    with R.ResultsDB(url) as rdb:
        assert rdb.read_table("monitor_windows") == rdb.read_table("science_checks") == []
        assert rdb.read_table("fetched") == []
    assert version() == str(R.SCHEMA_VERSION) == "4"
    eng.dispose()


def test_a_failed_record_leaves_no_row(built, tmp_path, monkeypatch):
    """A build killed while recording (here: the third file's header cannot be read) leaves
    no run, file, input or statistic behind."""
    url = R.resolve(tmp_path / "t.sqlite")
    real = R.ResultsDB._reffile
    calls = []

    def failing(self, conn, run, path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("killed")
        return real(self, conn, run, path, *a, **k)

    monkeypatch.setattr(R.ResultsDB, "_reffile", failing)
    with R.ResultsDB(url) as rdb:
        with pytest.raises(OSError, match="killed"):
            rdb.record_build(built["res"], built["store"], [
                {"exposure": "x", "date": None, "used": True}])
        for table in ("runs", "reffiles", "inputs", "statistics", "cull_decisions"):
            assert rdb.read_table(table) == [], table


def test_the_command_line_records_beside_the_store_by_default(built, tmp_path, capsys):
    from nrsdark_dask.cli import main as cli

    store = tmp_path / "stores" / "s.zarr"
    store.parent.mkdir()
    os.symlink(built["store"], store)
    beside = store.parent / R.DEFAULT_NAME
    assert R.default_url(store) == f"sqlite:///{beside}"
    assert R.resolve("none", store) is None and R.resolve(None, store) is None
    assert R.resolve("default", "s3://bucket/s.zarr") is None  # nothing beside a URL
    # a database in a folder that does not exist: one line, exit 2, before any work
    out = tmp_path / "o-bad"
    assert cli.main(["build", "--store", str(store), "--outdir", str(out),
                     "--db", str(tmp_path / "nowhere" / "r.sqlite")]) == 2
    assert "nowhere of the results database does not exist" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "o"),
                     "--scheduler", "threads"]) == 0
    assert f"recorded in sqlite:///{beside}" in capsys.readouterr().out
    with R.ResultsDB(R.default_url(store)) as rdb:
        assert [r["command"] for r in rdb.read_table("runs")] == ["build"]


# ---- PostgreSQL ---------------------------------------------------------------------------------
def _initdb() -> str | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob(
        "/usr/lib/postgresql/*/bin/initdb"))), None)
    return found


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A PostgreSQL server on 127.0.0.1 (a free port), in a temporary folder, stopped at the
    end.  As root it runs as the ``postgres`` user (PostgreSQL refuses root)."""
    pytest.importorskip("psycopg", reason="psycopg (the postgresql extra) is not installed")
    initdb = _initdb()
    if not initdb:
        pytest.skip("PostgreSQL (Debian's postgresql: initdb, pg_ctl) is not installed")
    bindir = os.path.dirname(os.path.realpath(initdb))
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        os.chmod(root, 0o755)
        for parent in root.parents:  # postgres must reach its folder
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(prefix + [f"{bindir}/initdb", "-D", str(data), "-U", "nrsdark",
                             "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(prefix + [f"{bindir}/pg_ctl", "-D", str(data), "-l", str(root / "log"),
                             "-o", f"-h 127.0.0.1 -p {port} -k {root}", "-w", "start"],
                   check=True, capture_output=True)
    try:
        url = f"postgresql+psycopg://nrsdark@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(prefix + [f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True)


def test_the_same_records_on_a_postgresql_server(built, postgres):
    """The records of the SQLite test, made again (same files, same timings) on the server."""
    with R.ResultsDB(R.resolve(built["db"])) as lite:
        walls = [r["wall_s"] for r in lite.read_table("runs")]
    ds = open_dataset(built["store"])
    with R.ResultsDB(postgres) as rdb:
        rdb.record_build(built["res"], built["store"], [
            {"exposure": str(e), "date": R.from_seconds(d), "used": True}
            for e, d in zip(ds.exposure.values, ds.date.values)], wall_s=walls[0])
        from nrsdark_dask.stages.analyze import find_files, per_amplifier, read_dark

        rdb.record_analysis(built["rep"], per_amplifier(read_dark(find_files(
            built["root"] / "out"))), wall_s=walls[1])
        _check_recorded(rdb, built)
        assert "127.0.0.1" in rdb.safe_url


def test_a_table_lock_held_on_the_server_is_one_line_not_a_hang(built, postgres):
    """Another session holds an exclusive lock on ``reffiles`` (before: ``build`` waited
    forever, silently): the record gives up after ``lock_timeout`` with one line naming the
    database and the cause, and nothing is half-recorded."""
    import time

    import psycopg

    R.ResultsDB(postgres).close()  # the tables exist
    holder = psycopg.connect(postgres.replace("+psycopg", ""))
    try:
        holder.execute("LOCK TABLE reffiles IN ACCESS EXCLUSIVE MODE")
        t0 = time.time()
        with R.ResultsDB(postgres) as rdb, pytest.raises(R.ResultsError) as err:
            rdb.record_build(built["res"], built["store"], [])
        assert time.time() - t0 < R.TIMEOUT_S + 20
        text = str(err.value)
        assert "\n" not in text and "lock" in text and "127.0.0.1" in text, text
    finally:
        holder.rollback()
        holder.close()
