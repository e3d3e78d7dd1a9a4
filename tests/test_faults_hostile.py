"""Hostile inputs and faults (issue 29): headers that disagree with their data, file names
no manifest can hold, SIGTERM, a store two processes create at once, outputs written
atomically, results databases that fail.  Each gives one line, the right exit status and
nothing lost."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from nrsdark_dask import results as R
from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.select import read_manifest, select_inputs
from nrsdark_dask.store import RampStore, open_dataset

NRSDARK = [sys.executable, "-m", "nrsdark_dask.cli.main"]


def _uncal(sim_cal):
    return sorted((sim_cal["dir"] / "uncal").glob("*_uncal.fits"))


def _edit(path, cut_groups=None, **cards):
    with fits.open(path, mode="update") as h:
        h[0].header.update(cards)
        if cut_groups:
            h["SCI"].data = np.ascontiguousarray(h["SCI"].data[:, :cut_groups])


@pytest.mark.parametrize("cards, cut, reason", [
    ({"NGROUPS": 20}, None, "NGROUPS=20 but the SCI cube holds 10 groups"),
    ({"NGROUPS": 4}, None, "NGROUPS=4 but the SCI cube holds 10 groups"),
    ({}, 6, "NGROUPS=10 but the SCI cube holds 6 groups"),
    ({"NINTS": 2}, None, "NINTS=2 but the SCI cube holds 1 integrations"),
    ({"DETECTOR": "NRS3"}, None, "unknown DETECTOR 'NRS3' (known: NRS1, NRS2)"),
    ({"DETECTOR": "../../../../tmp/x/PWNED"}, None, "unknown DETECTOR '../../../../tmp/x/PWNED'"),
    ({"SUBARRAY": '"><img src=x onerror=alert(7)>'}, None,
     "unknown SUBARRAY '\"><img src=x onerror=alert(7)>'"),
    ({"SUBSIZE1": 1024}, None, "SUBSIZE1=1024 but SUBARRAY SUBS200A1 is 2048 pixels"),
    ({"SUBARRAY": "SUB2048"}, None, "SCI frames are 64 x 2048 but SUB2048 frames are 32 x 2048"),
    ({"READPATT": "NRSFAST"}, None, "unknown READPATT 'NRSFAST'"),
])
def test_headers_that_disagree_with_their_data_are_refused_by_select(
        sim_cal, tmp_path, cards, cut, reason):
    """The file is rejected with its reason (and no group, so nothing downstream meets it);
    the others are accepted, with telemetry accepted as given (the ``--accept-no-telemetry``
    path included)."""
    from nrsdark_dask.config import SelectConfig

    src = _uncal(sim_cal)[:2]
    for f in src:
        shutil.copy(f, tmp_path)
    bad = tmp_path / src[0].name
    _edit(bad, cut, **cards)
    for cfg in (SelectConfig(), SelectConfig(accept_without_telemetry=True)):
        tab = select_inputs([tmp_path], telemetry=sim_cal["dir"] / "telemetry.ecsv", cfg=cfg)
        row = tab[tab["name"] == bad.name][0]
        assert not row["accepted"] and reason in row["reason"] and row["group"] == ""
        assert tab[tab["name"] == src[1].name][0]["accepted"]


def test_a_subarray_this_release_does_not_list_is_taken_from_its_keywords(sim_cal, tmp_path):
    """A plain name with SUBSTRT/SUBSIZE that match the data is accepted (real NIRSpec has
    subarrays the simulator does not); the same name with sizes the data do not have is not."""
    src = _uncal(sim_cal)[:2]
    for f in src:
        shutil.copy(f, tmp_path)
    _edit(tmp_path / src[0].name, SUBARRAY="SUBS200B1")
    _edit(tmp_path / src[1].name, SUBARRAY="SUBS200B1", SUBSIZE2=32)
    tab = select_inputs([tmp_path], telemetry=sim_cal["dir"] / "telemetry.ecsv")
    ok, bad = (tab[tab["name"] == f.name][0] for f in src)
    assert ok["accepted"] and ok["group"].startswith("NRS1_TRAD_SUBS200B1_")
    assert not bad["accepted"] and "SCI frames are 64 x 2048 but SUBS200B1 frames are 32 x " \
        "2048" in bad["reason"]


def test_file_names_the_filesystem_allows(sim_cal, tmp_path, capsys):
    """A name that is not UTF-8 is refused by select, named with repr, and the others go on
    (before: the whole folder refused with a codec error, a 0-byte temp file left).  A
    non-ASCII name works end to end: the build's HISTORY carries an ASCII form of it."""
    src = _uncal(sim_cal)[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(src[0], folder / "jwé☃_nrs1_uncal.fits")
    shutil.copy(src[1], folder / "jw ünï_nrs1_uncal.fits")
    shutil.copy(src[2], os.path.join(os.fsencode(folder), b"jw\xff\xfe_nrs1_uncal.fits"))
    manifest = tmp_path / "m.ecsv"
    assert cli.main(["select", str(folder), "--telemetry", str(sim_cal["dir"] / "telemetry.ecsv"),
                     "--output", str(manifest)]) == 0
    capsys.readouterr()
    tab = read_manifest(manifest)
    assert sorted(tab["accepted"]) == [False, True, True]
    bad = tab[~tab["accepted"]][0]
    assert r"b'jw\xff\xfe_nrs1_uncal.fits' is not UTF-8: rename it" in bad["reason"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    store, out = tmp_path / "s.zarr", tmp_path / "out"
    assert cli.main(["calibrate", str(manifest), "--store", str(store), "--refkit",
                     str(sim_cal["dir"] / "refkit"), "--scheduler", "sync"]) == 0
    assert cli.main(["build", "--store", str(store), "--outdir", str(out), "--db", "none",
                     "--author", "Zoë Ünïcode", "--scheduler", "sync"]) in (0, 1)
    capsys.readouterr()
    dark = next(out.glob("*dark*.fits"))
    head = fits.getheader(dark)
    assert any(r"jw\xe9\u2603_nrs1_uncal.fits" in str(c) for c in head["HISTORY"])
    assert head["AUTHOR"] == r"Zo\xeb \xdcn\xefcode"


def _wait_for(predicate, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".work")) or ".tmp-" in
            p.name]


def test_sigterm_cleans_up_like_ctrl_c(cal_store, cal_manifest, sim_cal, tmp_path):
    """SIGTERM (a batch system's stop) to build and to calibrate in the middle of their work:
    exit 143, one line, no ``.part`` / ``.work`` / temporary files left (before: exit 143
    with no message, 5.8 MB of ``.part`` and 33 MB of ``_staging/*.work`` left)."""
    out = tmp_path / "out"
    p = subprocess.Popen([*NRSDARK, "build", "--store", str(cal_store["path"]), "--outdir",
                          str(out), "--db", "none", "--scheduler", "sync"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: out.exists() and any(out.glob("*.part"))), p.communicate()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("nrsdark build: terminated (SIGTERM)")
    assert _leftovers(out) == [] and list(out.glob("*.fits")) == []
    store = tmp_path / "s.zarr"
    p = subprocess.Popen([*NRSDARK, "calibrate", str(cal_manifest), "--store", str(store),
                          "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "sync",
                          "--pieces", "whole"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any(store.glob("_staging/**/*.work"))
                     or any(store.glob("_staging/*"))), p.communicate()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143 and "nrsdark calibrate: terminated (SIGTERM)" in err, err
    assert _leftovers(store) == []


def test_sigterm_stops_a_tiled_run_and_its_workers(cal_manifest, sim_cal, tmp_path):
    """Tiled on a LocalCluster: TERM while pieces run writes nothing after the clean-up (the
    workers are stopped first), leaves no scratch cube and no worker process."""
    import psutil

    store = tmp_path / "s.zarr"
    p = subprocess.Popen([*NRSDARK, "calibrate", str(cal_manifest), "--store", str(store),
                          "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "local:2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: any(store.glob("_staging/*.work/*"))), p.communicate()
    children = psutil.Process(p.pid).children(recursive=True)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 143 and "nrsdark calibrate: terminated (SIGTERM)" in err, err
    time.sleep(2)  # anything still running would write now
    assert not (store / "_staging").exists() and _leftovers(store) == []
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_two_processes_creating_one_store(cal_manifest, sim_cal, tmp_path, monkeypatch):
    """Another process creates the store between our check and our rename (before: ``[Errno
    39] Directory not empty``): calibrate takes the store it made and goes on."""
    from nrsdark_dask.stages.calibrate import calibrate

    store = tmp_path / "s.zarr"
    real = RampStore._create

    def create_then_lose_the_race(path, layout, provenance):
        real(path, layout, provenance)
        code = ("import sys, json; from nrsdark_dask.store import RampStore, StoreLayout; "
                "RampStore.create(sys.argv[1], StoreLayout(**json.loads(sys.argv[2])), "
                "json.loads(sys.argv[3]))")
        import dataclasses
        import json

        subprocess.run([sys.executable, "-c", code, str(store),
                        json.dumps(dataclasses.asdict(layout)), json.dumps(provenance,
                                                                         default=str)],
                       check=True)

    monkeypatch.setattr(RampStore, "_create", staticmethod(create_then_lose_the_race))
    out = calibrate(cal_manifest, store, refkit=sim_cal["dir"] / "refkit", scheduler="sync")
    assert len(out["committed"]) == 4 and open_dataset(store).sizes["exposure"] == 4
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _built(cal_store, tmp_path) -> Path:
    out = tmp_path / "out"
    assert cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(out), "--db",
                     "none", "--scheduler", "sync"]) in (0, 1)
    return out


def test_an_analysis_on_a_full_disk_keeps_the_previous_report(cal_store, tmp_path, capsys,
                                                              small_mount):
    """The report is replaced whole or not at all; the error names the file."""
    out, mnt = _built(cal_store, tmp_path), small_mount(size="2m")
    assert cli.main(["analyze", str(out), "--report", str(mnt)]) in (0, 1)
    good = (mnt / "report.html").read_bytes()
    assert good.rstrip().endswith(b"</html>")
    with open(mnt / "filler", "wb") as f:  # fill the disk but for a few kB
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    capsys.readouterr()
    assert cli.main(["analyze", str(out), "--report", str(mnt)]) == 2
    err = capsys.readouterr().err
    assert "could not write" in err and str(mnt) in err and "unchanged" in err
    assert (mnt / "report.html").read_bytes() == good
    assert [p.name for p in mnt.iterdir() if p.name.startswith(".")] == []


# ---- results databases that fail ------------------------------------------------------------
def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("nrsdark ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_database_faults_are_one_line(cal_store, tmp_path, capsys):
    """Refused connection (password masked), a file of random bytes, a lock held past the
    time limit: one line naming the database and what to do, exit 2."""
    out = _built(cal_store, tmp_path)
    capsys.readouterr()
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(np.random.default_rng(0).bytes(8192))
    for db, words in (("postgresql+psycopg://nrs:s3cret@127.0.0.1:9/db", "server running"),
                      (str(junk), "not an nrsdark results database")):
        assert cli.main(["analyze", str(out), "--db", db]) == 2
        line = _one_line(capsys.readouterr().err)
        assert words in line and "s3cret" not in line, line
    locked = tmp_path / "locked.sqlite"
    R.ResultsDB(R.resolve(locked)).close()
    holder = sqlite3.connect(locked)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.time()
        assert cli.main(["analyze", str(out), "--db", str(locked)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert "another process held a lock" in line and time.time() - t0 < 60
    finally:
        holder.rollback()
        holder.close()


def test_a_build_that_cannot_record_keeps_its_files_and_records_them_later(cal_store, tmp_path,
                                                                         capsys):
    """The files are written before the database is reached: when recording fails they are
    listed, the build exits 3 and ``nrsdark record`` records them later."""
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database" * 1000)
    out = tmp_path / "out"
    assert cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(out), "--db",
                     str(junk), "--scheduler", "sync"]) == 3
    std = capsys.readouterr()
    files = sorted(out.glob("*.fits"))
    assert len(files) >= 2 and all(str(f) in std.out for f in files)
    assert "nrsdark record" in _one_line(std.err) and (out / R.PENDING).is_file()
    good = tmp_path / "good.sqlite"
    shutil.copy(files[0], tmp_path / "kept.fits")
    with fits.open(files[0], mode="update") as h:  # changed since the build: refused
        h[0].header["AUTHOR"] = "someone else"
    assert cli.main(["record", str(out), "--db", str(good)]) == 2
    assert "changed since its build wrote it" in _one_line(capsys.readouterr().err)
    shutil.copy(tmp_path / "kept.fits", files[0])
    assert cli.main(["record", str(out), "--db", str(good)]) == 0
    assert "DARK (id " in capsys.readouterr().out and not (out / R.PENDING).exists()
    with R.ResultsDB(R.resolve(good)) as rdb:
        rows = rdb.read_table("reffiles")
        assert sorted(Path(r["path"]).name for r in rows) == [f.name for f in files]
        assert len(rdb.read_table("inputs")) == len(files) * open_dataset(cal_store["path"]).sizes[
            "exposure"]
    assert cli.main(["record", str(out), "--db", str(good)]) == 2
    assert "nothing waits to be recorded" in capsys.readouterr().err


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals need the main thread")
def test_cli_restores_the_previous_sigterm_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    cli.main(["trends", "--db", str(tmp_path / "none.sqlite"), "-o", str(tmp_path / "s")])
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_read_only_folder_for_the_database_is_one_line(cal_store, tmp_path, capsys,
                                                         small_mount):
    """The default database's folder cannot be written (a read-only mount: root ignores file
    modes): one line saying so, exit 2."""
    out, ro = _built(cal_store, tmp_path), small_mount(readonly=True)
    capsys.readouterr()
    assert cli.main(["analyze", str(out), "--db", str(ro / "r.sqlite")]) == 2
    assert "give --db a file in a writable folder" in _one_line(capsys.readouterr().err)


def test_a_sigterm_inside_a_finalizer_is_not_lost(tmp_path):
    """Python drops an exception raised in ``__del__``: a SIGTERM landing there (it happened
    in an astropy finalizer during a build) is raised a moment later, not lost."""
    script = tmp_path / "finalizer.py"
    script.write_text('''
import argparse, os, signal, sys, time
from nrsdark_dask.cli import main as cli

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs here, inside __del__

def work(args):
    Finalized()
    time.sleep(20)
    print("not stopped")

def parser():
    p = argparse.ArgumentParser()
    p.add_subparsers(dest="command").add_parser("x").set_defaults(func=work)
    return p

cli.build_parser = parser
sys.exit(cli.main(["x"]))
''')
    t0 = time.time()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 143 and "terminated (SIGTERM)" in r.stderr, r.stderr
    assert "not stopped" not in r.stdout and time.time() - t0 < 15
