"""Integrity and security (issue 19): no build from corrupted bytes, names that are data and
never paths, servers on loopback, damaged metadata named and repaired, nothing left behind,
bad values refused."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from nrsdark_dask.cli import main as cli
from nrsdark_dask.store import RampStore, open_dataset, read_block
from nrsdark_dask.store.chunksums import CorruptChunk


def _flip(chunk, n=100):
    """XOR ``n`` bytes in the middle of a chunk file: same size, other bytes."""
    data = bytearray(chunk.read_bytes())
    mid = len(data) // 2
    for k in range(mid, mid + n):
        data[k] ^= 0x5A
    chunk.write_bytes(bytes(data))


def _one_chunk(store, var, exposure=1):
    return sorted(p for p in (store / var / "c" / str(exposure)).rglob("*") if p.is_file())[0]


@pytest.mark.parametrize("var", ["rate", "ramp", "groupdq"])
def test_a_corrupt_chunk_fails_the_build_in_one_line(damaged_copy, tmp_path, capsys, var):
    store = damaged_copy()
    chunk = _one_chunk(store, var)
    name = RampStore(store).committed()[1]
    _flip(chunk)
    assert RampStore(store).verify() == []  # sizes alone cannot tell
    out = tmp_path / "out"
    capsys.readouterr()
    code = cli.main(["build", "--store", str(store), "--outdir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for part in (f"store {store}", f"{var} of exposure {name}", str(chunk),
                 "does not match its CRC32C", "nrsdark verify"):
        assert part in err, (part, err)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def test_every_reader_checks_what_it_reads(damaged_copy, monkeypatch):
    """xarray (the notebook's path), read_block's fast path, zarr's path (a step), and a
    chunk the manifest lists that is gone."""
    store = damaged_copy()
    chunk = _one_chunk(store, "rate")
    _flip(chunk, 4)
    ds = open_dataset(store)
    name = RampStore(store).committed()[1]
    with pytest.raises(CorruptChunk, match=f"rate of exposure {name}: chunk file {chunk} "):
        ds.rate.values
    pos = 1  # the store index of the damaged chunk's exposure
    with pytest.raises(CorruptChunk, match=str(chunk)):
        read_block(store / "rate", (slice(pos, pos + 1), slice(None), slice(None)))
    with pytest.raises(CorruptChunk, match=str(chunk)):
        read_block(store / "rate", (slice(pos, pos + 1), slice(None, None, 2), slice(None)))
    monkeypatch.setenv("NRSDARK_CHUNK_CHECKS", "0")  # checks off: the damage reads silently
    read_block(store / "rate", (slice(pos, pos + 1), slice(None), slice(None)))
    monkeypatch.delenv("NRSDARK_CHUNK_CHECKS")
    np.testing.assert_array_equal(  # another exposure stays readable, on both paths
        read_block(store / "rate", ([0], slice(None), slice(None)))[0],
        open_dataset(store).rate.sel(exposure=RampStore(store).committed()[0]).values)
    gone = _one_chunk(store, "pixeldq", 2)
    gone.unlink()
    with pytest.raises(CorruptChunk, match="is missing"):
        read_block(store / "pixeldq", (slice(2, 3), slice(None), slice(None)))


def test_unphysical_statistics_publish_nothing(cal_store, tmp_path, monkeypatch, capsys):
    from nrsdark_dask.stages import build as B

    assert B.insane_statistics({"frame_rate": -1.0852e19, "bias_level": 12000.0}) == [
        "frame_rate -1.0852e+19 (expected -100 to 100)"]
    assert B.insane_statistics({"frame_rate": np.nan})[0].startswith("frame_rate nan")
    monkeypatch.setitem(B.SANE, "frame_rate", (50.0, 100.0))  # the real rate (~0.01) is "absurd"
    code = cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "not physical, nothing was published: frame_rate" in err
    assert list(tmp_path.iterdir()) == []


# ---- names are data, never paths ------------------------------------------------------------

def _crafted_manifest(cal_manifest, tmp_path, name):
    from astropy.table import Table

    tab = Table.read(cal_manifest, format="ascii.ecsv")  # read_manifest would refuse it
    tab["name"] = tab["name"].astype(object)
    tab["name"][0] = name
    tab["name"] = tab["name"].astype(str)
    out = tmp_path / "crafted.ecsv"
    tab.write(out, format="ascii.ecsv")
    return out


@pytest.mark.parametrize("name", ["../../escape_nrs1_uncal.fits", "/tmp/abs_nrs1_uncal.fits",
                                  "a/b_nrs1_uncal.fits", "..", "bell\x07_nrs1_uncal.fits"])
def test_a_crafted_manifest_name_is_refused_before_anything_is_written(
        cal_manifest, sim_cal, tmp_path, capsys, name):
    manifest = _crafted_manifest(cal_manifest, tmp_path, name)
    (tmp_path / "stores").mkdir()
    before = sorted(p for p in tmp_path.rglob("*"))
    code = cli.main(["calibrate", str(manifest), "--store", str(tmp_path / "stores" / "s.zarr"),
                     "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "threads"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"row 1: exposure name {name!r} is not a plain file name" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no store, nothing beside it


def test_names_and_containment():
    from nrsdark_dask.paths import check_name

    for ok in ["dark 1;$(touch pwned)'x\"_nrs1_uncal.fits", "ümlaut_nrs1_uncal.fits",
               "a..b_uncal.fits"]:
        assert check_name(ok) == ok
    for bad in ["", ".", "..", "x/y", "x\\y", "x\ny", "x\x00y", "a" * 201]:
        with pytest.raises(ValueError, match="is not a plain file name"):
            check_name(bad)


def test_paths_stay_inside_what_a_command_owns(tmp_path):
    from nrsdark_dask.paths import inside
    from nrsdark_dask.store import staging_path

    root = tmp_path / "s.zarr"
    (root / "_staging").mkdir(parents=True)
    assert inside(root / "_staging" / "x", root)
    for bad in [root / ".." / "x", tmp_path / "elsewhere", root]:
        with pytest.raises(ValueError, match="is not inside"):
            inside(bad, root)
    (root / "_staging" / "link").symlink_to(tmp_path)  # a link out of the store
    with pytest.raises(ValueError, match="is not inside"):
        inside(root / "_staging" / "link" / "x", root)
    with pytest.raises(ValueError, match="not a plain file name"):
        staging_path(root, "../x")


def test_odd_but_legal_names_and_a_symlinked_outdir_work(sim_cal, tmp_path, monkeypatch,
                                                         capsys):
    """Spaces, ;, $() and quotes in a file name go through select, calibrate, cull (pictures)
    and build; nothing runs them; a symlinked outdir receives the files."""
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    odd = "dark 1;$(touch pwned)'q'_nrs1_uncal.fits"
    srcs = sorted((sim_cal["dir"] / "uncal").glob("*_uncal.fits"))
    shutil.copy(srcs[0], inputs / odd)
    for s in srcs[1:3]:
        shutil.copy(s, inputs / s.name)
    d = sim_cal["dir"]
    assert cli.main(["select", str(inputs), "--telemetry", str(d / "telemetry.ecsv"),
                     "-o", str(tmp_path / "m.ecsv")]) in (0, 1)
    store = tmp_path / "odd.zarr"
    assert cli.main(["calibrate", str(tmp_path / "m.ecsv"), "--store", str(store),
                     "--refkit", str(d / "refkit"), "--scheduler", "threads"]) == 0
    names = RampStore(store).committed()
    assert any(n.startswith(odd + "@") for n in names), names
    (tmp_path / "c.toml").write_text("[cull]\nmin_exposures = 3\n")
    assert cli.main(["cull", "--store", str(store), "--all-pictures", "--config",
                     str(tmp_path / "c.toml")]) in (0, 1)
    pngs = list((tmp_path / "odd_culled_png").glob("*.png"))
    assert any(p.name.startswith(odd.removesuffix(".fits")) for p in pngs), pngs
    target = tmp_path / "real_out"
    target.mkdir()
    (tmp_path / "out").symlink_to(target)
    assert cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "out")]) in (0, 1)
    assert {p.name.split("_")[4] for p in target.glob("*.fits")} >= {"dark", "superbias"}
    assert not list(tmp_path.rglob("pwned")) and not (tmp_path.parent / "pwned").exists()


# ---- servers on loopback, nothing left behind ------------------------------------------------

def test_a_local_cluster_listens_on_loopback_only_and_leaves_no_scratch(tmp_path, monkeypatch):
    import tempfile

    import psutil

    from nrsdark_dask.cluster import dask_client

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        with dask_client("local:2", quiet=True) as client:
            me = psutil.Process()
            tree = [me] + me.children(recursive=True)
            listening = [c.laddr for p in tree for c in p.net_connections("inet")
                         if c.status == psutil.CONN_LISTEN]
            dirs = list(client.run(lambda dask_worker: dask_worker.local_directory).values())
            link = client.dashboard_link
        port = int(link.split(":")[2].split("/")[0])
        assert link.startswith("http://127.0.0.1:")
        assert port in {a.port for a in listening}
        assert len(listening) >= 4  # scheduler, dashboard, 2 workers (+ nannies)
        assert {a.ip for a in listening} <= {"127.0.0.1", "::1"}, listening
        assert all(str(d).startswith(str(tmp_path)) for d in dirs), dirs
        assert list(tmp_path.iterdir()) == []  # the workers' scratch went with the cluster
    finally:
        tempfile.tempdir = None


def test_products_of_a_killed_cluster_build_are_removed_by_the_next(tmp_path):
    import os
    import socket
    import subprocess

    from nrsdark_dask.stages.build import clean_dead_products, products_location

    dead = subprocess.Popen(["true"])
    dead.wait()
    store = tmp_path / "s.zarr"
    host = socket.gethostname()
    mine = Path(products_location(store, "20261204T000000"))
    killed = mine.with_name(f"20261204T000001-{host}-{dead.pid}.zarr")
    other = mine.with_name(f"20261204T000002-otherhost-{dead.pid}.zarr")
    for g in (mine, killed, other):
        (g / "dark").mkdir(parents=True)
        (g / "dark" / "zarr.json").write_text("{}")
    assert mine.name.endswith(f"-{host}-{os.getpid()}.zarr")
    assert clean_dead_products(store) == [killed]
    assert mine.exists() and other.exists() and not killed.exists()


def test_no_command_leaves_a_temporary_folder(cal_manifest, sim_cal, tmp_path, monkeypatch,
                                              capsys):
    import tempfile

    from nrsdark_dask.calibration import recipe as jwst_recipe

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    tempfile.tempdir = None
    kit = str(sim_cal["dir"] / "refkit")
    try:
        for pieces in ("tiled", "whole"):  # successful
            assert cli.main(["calibrate", str(cal_manifest), "--store",
                             str(tmp_path / f"{pieces}.zarr"), "--refkit", kit,
                             "--scheduler", "threads", "--pieces", pieces]) == 0
        # refused after the early checks: a task budget too small for any piece
        assert cli.main(["calibrate", str(cal_manifest), "--store", str(tmp_path / "r.zarr"),
                         "--refkit", kit, "--scheduler", "threads",
                         "--task-memory", "10MB"]) == 2
        assert cli.main(["build", "--store", str(tmp_path / "tiled.zarr"), "--outdir",
                         str(tmp_path / "out")]) in (0, 1)
        uncal = sorted((sim_cal["dir"] / "uncal").glob("*_uncal.fits"))[0]
        refs = jwst_recipe.refkit_files(sim_cal["dir"] / "refkit")
        jwst_recipe.run_detector1(uncal, refs, quiet=True)  # the API with no workdir
        assert sorted(tmp.iterdir()) == []
    finally:
        tempfile.tempdir = None
    assert "error" in capsys.readouterr().err


# ---- refuse what cannot work -----------------------------------------------------------------

def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_fewer_groups_than_the_rules_need_are_refused(tmp_path, capsys):
    from nrsdark_dask.stages.select import select_inputs, write_manifest
    from nrsdark_dask.simulate import SimConfig, simulate_dataset

    d = tmp_path / "sim"
    simulate_dataset(d, SimConfig(subarray="SUBS200A1", ngroups=2, nexp=2, seed=2,
                                  gratings={"G395H": 1}))
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"),
                   tmp_path / "m.ecsv")
    code = cli.main(["calibrate", str(tmp_path / "m.ecsv"), "--store", str(tmp_path / "s.zarr"),
                     "--refkit", str(d / "refkit"), "--scheduler", "threads"])
    assert code == 2 and "2 group(s): the flag rules need at least 3" in _err(capsys)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("size", ["0", "1e400", "-5GB", "lots"])
def test_bad_sizes_are_one_line_errors(cal_store, cal_manifest, tmp_path, capsys, size):
    code = cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path / "o"),
                     f"--task-memory={size}"])
    assert code == 2 and "size" in _err(capsys)
    code = cli.main(["calibrate", str(cal_manifest), "--store", str(tmp_path / "s.zarr"),
                     f"--task-memory={size}", "--scheduler", "threads"])
    assert code == 2 and "size" in _err(capsys)
    (tmp_path / "c.toml").write_text(f'[run]\ntask_memory = "{size}"\n')
    code = cli.main(["build", "--store", str(cal_store["path"]), "--outdir", str(tmp_path / "o"),
                     "--config", str(tmp_path / "c.toml")])
    assert code == 2 and "[run] task_memory" in _err(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("toml, message", [
    ("[dark]\nframes = 100000000\n", "[dark] frames must be <= 10000"),
    ('[run]\ninputs = ["inA", "--accept-no-telemetry"]\nstore = "s.zarr"\noutdir = "o"\n',
     "[run] inputs: '--accept-no-telemetry' starts with '-'"),
    ('[run]\ninputs = ["inA"]\nstore = "-s.zarr"\noutdir = "o"\n', "[run] store: '-s.zarr'"),
])
def test_settings_out_of_range_or_read_as_options_are_refused(tmp_path, capsys, monkeypatch,
                                                              toml, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(toml)
    assert cli.main(["run", "c.toml"]) == 2
    assert message in _err(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_periods_with_too_few_inputs_build_the_master_only(cal_store, tmp_path, capsys):
    code = cli.main(["periods", "--store", str(cal_store["path"]), "--outdir",
                     str(tmp_path / "p")])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "fewer than the" in captured.err and "the master only" in captured.err
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["master", "periods.ecsv"]


# ---- damaged metadata is named and repaired --------------------------------------------------

def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("what", ["root", "array", "manifest"])
def test_truncated_metadata_is_named_refused_and_repaired(damaged_copy, cal_manifest, sim_cal,
                                                          tmp_path, capsys, what):
    store = damaged_copy()
    names = RampStore(store).committed()
    before = open_dataset(store).rate.values
    file = {"root": store / "zarr.json", "array": store / "ramp" / "zarr.json",
            "manifest": store / "nrsdark_chunks" / "1.json"}[what]
    _truncate(file)
    capsys.readouterr()
    assert cli.main(["verify", "--store", str(store), "--quick"]) == 2
    out = capsys.readouterr()
    assert f"{file} is not valid JSON" in out.out
    # build names the file in one line, and so does an appending calibrate
    assert cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "o")]) == 2
    err = _err(capsys)
    assert str(file) in err and "nrsdark repair" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
    assert cli.main(["calibrate", str(cal_manifest), "--store", str(store), "--refkit",
                     str(sim_cal["dir"] / "refkit"), "--scheduler", "threads"]) == 2
    err = _err(capsys)
    assert str(file) in err
    # repaired: says what, and the store is whole again
    assert cli.main(["repair", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert f"repaired: {file}" in out
    if what == "manifest":
        assert f"lost: {names[1]}: damage to its chunks before this repair" in out
    assert cli.main(["verify", "--store", str(store)]) == 0
    assert RampStore(store).committed() == names
    np.testing.assert_array_equal(open_dataset(store).rate.values, before)
    assert cli.main(["repair", "--store", str(store)]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def test_a_root_and_its_backup_both_damaged_is_named_as_lost(damaged_copy, capsys):
    store = damaged_copy()
    _truncate(store / "zarr.json")
    _truncate(store / "nrsdark_meta_backup.json")
    assert cli.main(["repair", "--store", str(store)]) == 2
    out = capsys.readouterr()
    assert "lost:" in out.out and "both damaged" in out.out


def test_a_damaged_log_line_is_skipped(damaged_copy):
    store = damaged_copy()
    n = len(RampStore(store).read_log())
    with open(store / "nrsdark_log.jsonl", "a") as f:
        f.write('{"event": "comm')
    assert len(RampStore(store).read_log()) == n
