"""``nrsdark fetch``, ASIC telemetry from the engineering database, and the monitor fed by both
(issue 30), against a local server answering in MAST's and the EDB's real formats
(``tests/mast_service.py``) on 127.0.0.1.  Live tests against the real services are marked
``remote_data`` and skipped unless asked for."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nrsdark_dask import results as R
from nrsdark_dask.cli import main as cli

sys.path.insert(0, str(Path(__file__).parent))
from mast_service import MastService  # noqa: E402

GOOD, EXPIRED = "good-token-123", "expired-token-456"
pytestmark = pytest.mark.xdist_group("fetch")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """SUBS200A1 TRAD, 10 groups, 6 exposures, with telemetry and a reference kit."""
    from nrsdark_dask.simulate import SimConfig, simulate_dataset

    root = tmp_path_factory.mktemp("fetchsim")
    simulate_dataset(root / "sim", SimConfig(subarray="SUBS200A1", ngroups=10, nexp=6, seed=30,
                                             gratings={"G395H": 1}))
    return root / "sim"


@pytest.fixture
def svc(sim):
    s = MastService(sorted((sim / "uncal").glob("*_uncal.fits")),
                    telemetry=Table.read(sim / "telemetry.ecsv"))
    yield s
    s.close()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("MAST_API_TOKEN", GOOD)
    return GOOD


def _config(tmp_path, svc, extra="", **fetch) -> Path:
    program = svc.rows[0]["program"]
    f = {"mast_url": f'"{svc.url}"', "programs": f'["{program}"]', "page_size": "1",
         "timeout_s": "3", **fetch}
    text = "[fetch]\n" + "".join(f"{k} = {v}\n" for k, v in f.items())
    text += (f'[telemetry]\nedb_url = "{svc.url}"\ntimeout_s = 3\n'
             f'[monitor]\nstores = "{tmp_path}/stores"\n' + extra)
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_query_pages_fetch_record_then_nothing_new(svc, token, tmp_path, capsys):
    cfg = _config(tmp_path, svc)
    into = tmp_path / "in"
    code, out, err = _run(capsys, "fetch", cfg, "--into", into)
    assert code == 0, err
    assert "6 uncal file(s) found, 6 fetched, 0 already here" in out
    assert svc.hits["search"] == 6  # one page per result (page_size 1): pagination followed
    names = sorted(p.name for p in into.iterdir())
    assert names == sorted(r["fileSetName"] + "_uncal.fits" for r in svc.rows)
    assert not (into / ".partial").exists()
    for p in into.iterdir():  # the bytes MAST serves, checksums and all
        assert p.read_bytes() == svc.files[f"{p.name.removesuffix('_uncal.fits')}/{p.name}"]
        with fits.open(p, checksum=True) as h:
            assert all(hdu.verify_checksum() == 1 for hdu in h)
    with R.ResultsDB(R.resolve(tmp_path / "stores" / R.DEFAULT_NAME)) as rdb:
        rows = rdb.read_table("fetched")
    assert sorted(r["name"] for r in rows) == names
    assert all(r["source"] == svc.url and '"NRS_DARK"' in r["query"] for r in rows)
    assert all(len(r["sha256"]) == 64 and r["size"] == (into / r["name"]).stat().st_size
               for r in rows)
    # a second run fetches nothing, also once the files are gone (calibrated and removed)
    downloads = svc.hits["download"]
    for p in list(into.iterdir())[:2]:
        p.unlink()
    code, out, err = _run(capsys, "fetch", cfg, "--into", into)
    assert code == 0 and "0 fetched, 6 already here" in out
    assert svc.hits["download"] == downloads


def test_cut_download_resumes_and_corrupt_is_deleted(svc, token, tmp_path, capsys):
    cfg = _config(tmp_path, svc)
    into = tmp_path / "in"
    cut, bad = (r["fileSetName"] + "_uncal.fits" for r in svc.rows[:2])
    svc.faults["download"] = {cut: "cut", bad: "corrupt"}
    code, out, err = _run(capsys, "fetch", cfg, "--into", into)
    assert code == 2
    assert f"{cut}: download cut after" in err and "the next run continues it" in err
    assert f"{bad}: corrupt download (HDU" in err and "fails its FITS checksum" in err
    assert err.strip().splitlines()[-1].startswith("nrsdark fetch: error: 2 file(s) not fetched")
    assert "4 fetched" in out
    assert not (into / cut).exists() and not (into / bad).exists()  # never a final name
    part = into / ".partial" / f"{cut}.part"
    size = len(svc.files[f"{cut.removesuffix('_uncal.fits')}/{cut}"])
    assert 0 < part.stat().st_size < size
    assert not (into / ".partial" / f"{bad}.part").exists()
    svc.faults["download"] = {}
    code, out, err = _run(capsys, "fetch", cfg, "--into", into)
    assert code == 0, err
    assert "2 fetched, 4 already here" in out
    assert (into / cut).read_bytes() == svc.files[f"{cut.removesuffix('_uncal.fits')}/{cut}"]
    assert not (into / ".partial").exists()


def test_token_expired_server_errors_and_timeouts_are_one_line(svc, tmp_path, capsys,
                                                               monkeypatch):
    cfg = _config(tmp_path, svc)
    monkeypatch.setenv("MAST_API_TOKEN", EXPIRED)
    code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
    assert code == 2 and "refused the token in MAST_API_TOKEN" in err
    assert EXPIRED not in out + err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("MAST_API_TOKEN", GOOD)
    for fault, says in ((503, "MAST search failed: HTTPError"),
                        (500, "MAST search failed: InvalidQueryError"),
                        ("hang", "MAST search: no answer within 3 s")):
        svc.faults["search"] = fault
        code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
        assert code == 2 and says in err, err
        assert len(err.strip().splitlines()) == 1 and GOOD not in out + err
    svc.faults["search"] = None
    name = svc.rows[0]["fileSetName"] + "_uncal.fits"
    svc.faults["download"] = {name: 500}
    code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
    assert code == 2 and f"{name}: MAST answered HTTP 500" in err
    assert len(list((tmp_path / "in").glob("*.fits"))) == 5  # the others still came
    svc.faults["download"] = {name: "hang"}
    code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
    assert code == 2 and f"{name}: no data from MAST for 3 s after 0 bytes" in err


def test_exclusive_access_needs_a_token(sim, tmp_path, capsys, monkeypatch):
    files = sorted((sim / "uncal").glob("*_uncal.fits"))
    svc = MastService(files, proprietary={files[0].name})
    try:
        cfg = _config(tmp_path, svc)
        monkeypatch.delenv("MAST_API_TOKEN", raising=False)
        code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
        assert code == 0, err
        assert "5 fetched" in out
        assert f"1 exclusive-access file(s) not fetched (e.g. {files[0].name}): set " \
               "MAST_API_TOKEN" in out
        monkeypatch.setenv("MAST_API_TOKEN", GOOD)
        code, out, err = _run(capsys, "fetch", cfg, "--into", tmp_path / "in")
        assert code == 0 and "1 fetched, 5 already here" in out
    finally:
        svc.close()


def _step_at(mjd0: float, step_k: float):
    """Telemetry at 43.630 K, quantised to 1 mK, with a step of ``step_k`` at ``mjd0``."""
    def temps(det, mjd):
        return np.round(43.630 + np.where(mjd >= mjd0, step_k, 0.0), 3)
    return temps


def test_telemetry_mode_switch_and_cache(sim, svc, token, tmp_path, capsys):
    files = sorted((sim / "uncal").glob("*_uncal.fits"))
    h = fits.getheader(files[1])
    svc.telemetry = _step_at((h["EXPSTART"] + h["EXPEND"]) / 2, 0.109)  # inside exposure 1
    cfg = _config(tmp_path, svc)
    man = tmp_path / "out" / "manifest.ecsv"
    man.parent.mkdir()
    code, out, err = _run(capsys, "select", *files, "--telemetry", "edb", "--config", cfg,
                          "-o", man, "--dt-sub", "0.02")
    assert code == 0, err
    tab = Table.read(man)
    dts = dict(zip(tab["name"], tab["asic_dt"]))
    assert dts[files[1].name] == pytest.approx(0.109, abs=1e-6)
    assert all(dts[f.name] == 0 for f in files if f != files[1])
    assert not tab[tab["name"] == files[1].name]["accepted"][0]
    assert "ASIC dT 0.109 K > 0.02 K" in tab[tab["name"] == files[1].name]["reason"][0]
    tel = Table.read(tmp_path / "out" / "telemetry.ecsv")
    assert set(tel["mnemonic"]) == {"IGDP_NRSD_ALG_A1_TEMP"}
    assert tel.meta["mnemonics"]["NRS2"] == "IGDP_NRSD_ALG_A2_TEMP"
    assert len(tel.meta["windows"]) == 6 and tel.meta["pad_s"] == 600
    # the report's subarray limit (0.13 K) keeps it; and a rerun needs no network (cache)
    edb = svc.hits["edb"]
    svc.faults["edb"] = 500
    code, out, err = _run(capsys, "select", *files, "--telemetry", "edb", "--config", cfg,
                          "-o", man)
    assert code == 0 and svc.hits["edb"] == edb
    assert Table.read(man)["accepted"].all()


def test_telemetry_faults_are_one_line_and_leave_nothing(sim, svc, tmp_path, capsys,
                                                         monkeypatch):
    files = sorted((sim / "uncal").glob("*_uncal.fits"))[:1]
    cfg = _config(tmp_path, svc)
    man = tmp_path / "manifest.ecsv"
    monkeypatch.delenv("MAST_API_TOKEN", raising=False)
    cases = [(None, None, "needs a MAST token: set MAST_API_TOKEN (HTTP 401)"),
             (EXPIRED, None, "refused the MAST token in MAST_API_TOKEN"),
             (GOOD, 500, "answered HTTP 500"),
             (GOOD, "hang", "gave no answer within 3 s")]
    for tok, fault, says in cases:
        if tok:
            monkeypatch.setenv("MAST_API_TOKEN", tok)
        svc.faults["edb"] = fault
        code, out, err = _run(capsys, "select", *files, "--telemetry", "edb", "--config", cfg,
                              "-o", man)
        last = err.strip().splitlines()[-1]  # after the progress lines, one error line
        assert code == 2 and last.startswith("nrsdark select: error: ") and says in last, err
        assert tok is None or tok not in out + err
        assert not man.exists() and not (tmp_path / "telemetry.ecsv").exists()
        assert not list(tmp_path.glob("edb_cache/*"))  # no window cached, not even hidden


def test_edb_temperatures_are_the_tables(sim, svc, token, tmp_path, capsys):
    """The simulator's telemetry served through the EDB gives the manifest the table gives."""
    from nrsdark_dask.stages.select import select_inputs

    cfg = _config(tmp_path, svc)
    code, out, err = _run(capsys, "select", sim / "uncal", "--telemetry", "edb", "--config",
                          cfg, "-o", tmp_path / "manifest.ecsv")
    assert code == 0, err
    direct = select_inputs([sim / "uncal"], telemetry=sim / "telemetry.ecsv")
    via = Table.read(tmp_path / "manifest.ecsv")
    for col in ("name", "asic_nsamples", "asic_tmin", "asic_tmax", "asic_dt", "accepted"):
        assert list(direct[col]) == list(via[col]), col


def test_monitor_end_to_end_from_an_empty_folder(sim, svc, token, tmp_path, capsys):
    """Fetch, filter by ASIC dT (a mode switch of 0.2 K in one exposure), calibrate, cull,
    build, record; then a second run that fetches nothing and asks the EDB nothing."""
    files = sorted((sim / "uncal").glob("*_uncal.fits"))
    h = fits.getheader(files[2])
    svc.telemetry = _step_at((h["EXPSTART"] + h["EXPEND"]) / 2, 0.2)
    extra = (f'inputs = ["{tmp_path}/arrivals"]\nsource = "mast"\ntelemetry = "edb"\n'
             f'refkit = "{sim}/refkit"\noutdir = "{tmp_path}/out"\ncull = true\n'
             "[cull]\nmin_exposures = 3\n[delivery]\nsnr_trad = 0.05\n")
    cfg = _config(tmp_path, svc, extra=extra, page_size="2")
    code, out, err = _run(capsys, "monitor", cfg)
    assert code == 0, err
    assert "6 uncal file(s) found, 6 fetched" in err and " T0: " in out
    man = Table.read(tmp_path / "out" / "manifest.ecsv")
    rejected = man[~man["accepted"]]
    assert list(rejected["name"]) == [files[2].name]
    assert "ASIC dT 0.200 K > 0.13 K" in rejected["reason"][0]
    group = man["group"][0]
    assert (tmp_path / "out" / group / "culled.ecsv").exists()
    db = tmp_path / "stores" / R.DEFAULT_NAME
    with R.ResultsDB(R.resolve(db)) as rdb:
        assert len(rdb.read_table("fetched")) == 6
        assert len(rdb.read_table("monitor_windows")) >= 1
        assert rdb.read_table("monitor_groups")[0]["n_inputs"] <= 5
    hits = dict(svc.hits)
    code, out, err = _run(capsys, "monitor", cfg)
    assert code == 0 and "nothing new" in out
    assert svc.hits["download"] == hits["download"] and svc.hits["edb"] == hits["edb"]
    # the token is nowhere: no file, no message
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert GOOD.encode() not in p.read_bytes(), p
    assert GOOD not in out + err


def test_monitor_with_nothing_at_mast_yet(svc, token, tmp_path, capsys):
    extra = (f'inputs = ["{tmp_path}/arrivals"]\nsource = "mast"\ntelemetry = "edb"\n'
             f'outdir = "{tmp_path}/out"\n')
    cfg = _config(tmp_path, svc, extra=extra, programs='["99999"]')
    code, out, err = _run(capsys, "monitor", cfg)
    assert code == 0, err
    assert "0 uncal file(s) found" in err and "no input under" in err
    assert "nothing new" in out and "edb" not in svc.hits


def test_monitor_runs_one_at_a_time(svc, tmp_path, capsys):
    extra = f'inputs = ["{tmp_path}/arrivals"]\nsource = "mast"\noutdir = "{tmp_path}/out"\n'
    cfg = _config(tmp_path, svc, extra=extra)
    (tmp_path / "stores").mkdir()
    with open(tmp_path / "stores" / ".nrsdark-monitor.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, out, err = _run(capsys, "monitor", cfg)
    assert code == 2 and "this run is refused (one run at a time)" in err
    assert "search" not in svc.hits


# ---- the real services (never in CI: -m remote_data, with MAST_API_TOKEN) -----------------
@pytest.mark.remote_data
def test_live_mast_query():
    from nrsdark_dask.config import FetchConfig
    from nrsdark_dask.stages.fetch import FetchError, Mast

    try:
        rows = Mast(FetchConfig(programs=("1130",), page_size=5, timeout_s=60),
                    os.environ.get("MAST_API_TOKEN")).search()
    except FetchError as exc:
        pytest.skip(f"MAST unreachable from here: {exc}")
    assert rows and all(r["exp_type"] == "NRS_DARK" for r in rows)


@pytest.mark.remote_data
def test_live_edb_asic_temperature(tmp_path):
    from astropy.time import Time

    from nrsdark_dask.telemetry import Edb, TelemetryError, asic_samples

    if not os.environ.get("MAST_API_TOKEN"):
        pytest.skip("MAST_API_TOKEN is not set")
    edb = Edb("https://mast.stsci.edu", tmp_path, token=os.environ["MAST_API_TOKEN"],
              timeout_s=60)
    t = Time("2023-01-10T12:00:00")
    try:
        tab = asic_samples([("NRS1", t, t)], edb, {"NRS1": "IGDP_NRSD_ALG_A1_TEMP"}, 120)
    except TelemetryError as exc:
        pytest.skip(f"engineering database unreachable from here: {exc}")
    assert len(tab) and 30 < np.median(tab["asic_temp"]) < 60
