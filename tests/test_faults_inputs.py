"""Nothing lost, nothing silently wrong (issue 11), input side: exposure identity by content,
reference kits checked against the data, schedulers checked before a store exists, and
failure reasons that say which file and what is wrong (disk full on a real small tmpfs)."""

import shutil
import socket
import subprocess

import dask
import distributed  # noqa: F401 - its config defaults exist before the config.set below
import pytest
from astropy.io import fits

from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.calibrate import calibrate
from nrsdark_dask.stages.select import read_manifest, select_inputs, write_manifest
from nrsdark_dask.store import RampStore, open_dataset


def _manifest(tmp_path, *folders, telemetry):
    path = tmp_path / "m.ecsv"
    write_manifest(select_inputs(list(folders), telemetry=telemetry), path)
    return path


def test_same_file_names_from_two_folders_are_two_exposures(sim_cal, tmp_path, capsys):
    """Folders A and B hold different exposures under the same two file names (two simulated
    sets, two downloads); C holds a copy of one of A's: all four different ones land, the copy
    is rejected as a duplicate, and a rerun finds all four there (before: 2 silently lost)."""
    src = sorted((sim_cal["dir"] / "uncal").glob("*.fits"))
    names = [src[0].name, src[1].name]
    for folder, files in (("A", src[:2]), ("B", src[2:4])):
        (tmp_path / folder).mkdir()
        for name, f in zip(names, files):
            shutil.copy(f, tmp_path / folder / name)
    (tmp_path / "C").mkdir()
    shutil.copy(src[0], tmp_path / "C" / "copy_of_a0_uncal.fits")
    tel = sim_cal["dir"] / "telemetry.ecsv"
    manifest = _manifest(tmp_path, tmp_path / "A", tmp_path / "B", tmp_path / "C",
                         telemetry=tel)
    tab = read_manifest(manifest)
    assert tab["accepted"].sum() == 4
    dup = tab[tab["name"] == "copy_of_a0_uncal.fits"][0]
    assert not dup["accepted"] and "same content as" in dup["reason"] and "A/" in dup["reason"]
    store = tmp_path / "s.zarr"
    args = ["calibrate", str(manifest), "--store", str(store), "--refkit",
            str(sim_cal["dir"] / "refkit"), "--scheduler", "sync"]
    assert cli.main(args) == 0
    assert "4 committed, 0 already there, 0 failed" in capsys.readouterr().out
    ds = open_dataset(store)
    assert ds.sizes["exposure"] == 4 and len(set(ds.exposure.values)) == 4
    assert sorted({str(e).split("@")[0] for e in ds.exposure.values}) == sorted(names)
    assert cli.main(args) == 0
    assert "0 committed, 4 already there, 0 failed" in capsys.readouterr().out


def test_a_manifest_with_the_same_exposure_twice_is_refused(sim_cal, tmp_path):
    src = sorted((sim_cal["dir"] / "uncal").glob("*.fits"))[0]
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / src.name)
    manifest = _manifest(tmp_path, tmp_path / "A", tmp_path / "B",
                         telemetry=sim_cal["dir"] / "telemetry.ecsv")
    tab = read_manifest(manifest)
    tab["accepted"] = True  # edited by hand
    tab.write(manifest, format="ascii.ecsv", overwrite=True)
    with pytest.raises(RuntimeError, match="the same exposure twice"):
        calibrate(manifest, tmp_path / "s.zarr", refkit=sim_cal["dir"] / "refkit",
                  scheduler="sync")
    assert not (tmp_path / "s.zarr").exists()


def _kit_copy(sim_cal, tmp_path):
    kit = tmp_path / "kit"
    shutil.copytree(sim_cal["dir"] / "refkit", kit)
    return kit


def _set(path, **cards):
    with fits.open(path, mode="update") as h:
        for k, v in cards.items():
            h[0].header[k] = v


@pytest.mark.parametrize("fault, expected", [
    ("detector", "DETECTOR NRS2, the data are NRS1"),
    ("readpatt", "READPATT NRS, the data are NRSRAPID"),
    ("region", "covers x 1-2048, y 1-32 (SUB2048), not the data's x 1-2048, y 1041-1104"),
    ("reftype", "REFTYPE MASK, expected SUPERBIAS"),
])
def test_a_reference_kit_that_does_not_fit_is_refused(sim_cal, cal_manifest, tmp_path, capsys,
                                                      fault, expected):
    kit = _kit_copy(sim_cal, tmp_path)
    superbias = next(kit.glob("*_superbias.fits"))
    if fault == "detector":
        _set(superbias, DETECTOR="NRS2")
    elif fault == "readpatt":
        _set(superbias, READPATT="NRS")
    elif fault == "region":
        _set(superbias, SUBARRAY="SUB2048", SUBSTRT2=1, SUBSIZE2=32)
    else:
        shutil.copy(next(kit.glob("*_mask.fits")), superbias)
    code = cli.main(["calibrate", str(cal_manifest), "--store", str(tmp_path / "s.zarr"),
                     "--refkit", str(kit), "--scheduler", "sync"])
    err = capsys.readouterr().err
    assert code == 2 and "the reference kit does not fit the data" in err
    assert superbias.name in err and expected in err, err
    assert not (tmp_path / "s.zarr").exists()


def test_a_kit_with_generic_selectors_fits(sim_cal, cal_manifest, tmp_path):
    """READPATT ANY and a P_READPA list naming the pattern are fine (CRDS conventions)."""
    from nrsdark_dask.calibration import recipe as R
    from nrsdark_dask.store import StoreLayout

    kit = _kit_copy(sim_cal, tmp_path)
    files = R.refkit_files(kit)
    _set(files["gain"], READPATT="ANY")
    _set(files["readnoise"], READPATT="ANY", P_READPA="NRS|NRSRAPID|")
    row = read_manifest(cal_manifest)[0]
    layout = StoreLayout.from_header(fits.getheader(row["file"]), has_bias=True)
    R.check_reference_kit(files, layout)


@pytest.mark.parametrize("scheduler, message", [
    ("foo", "unknown scheduler"), ("local:0", "worker count N >= 1"),
    ("local:two", "worker count N >= 1"), ("tcp://127.0.0.1", "tcp://HOST:PORT"),
    ("tcp://127.0.0.1:{port}", "cannot reach the Dask scheduler"),
])
def test_bad_schedulers_fail_before_a_store_exists(cal_manifest, tmp_path, capsys, scheduler,
                                                   message):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # (distributed is imported at the top: imported inside this block, its defaults would be
    # dropped with the block's key on exit, and every later dask compute in this process fail)
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = cli.main(["calibrate", str(cal_manifest), "--store", str(tmp_path / "s.zarr"),
                         "--scheduler", scheduler.format(port=port)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.zarr").exists()


def test_a_vanished_input_fails_alone_and_a_truncated_one_is_not_selected(sim_cal, tmp_path,
                                                                         capsys):
    src = sorted((sim_cal["dir"] / "uncal").glob("*.fits"))[:3]
    for f in src:
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(src[0], tmp_path / "cut_uncal.fits")
    with open(tmp_path / "cut_uncal.fits", "r+b") as f:
        f.truncate(src[0].stat().st_size * 2 // 3)
    manifest = _manifest(tmp_path, tmp_path, telemetry=sim_cal["dir"] / "telemetry.ecsv")
    tab = read_manifest(manifest)
    cut = tab[tab["name"] == "cut_uncal.fits"][0]
    assert not cut["accepted"] and cut["reason"].startswith("truncated file: SCI data end")
    (tmp_path / src[1].name).unlink()  # gone between select and calibrate
    code = cli.main(["calibrate", str(manifest), "--store", str(tmp_path / "s.zarr"),
                     "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "sync"])
    out = capsys.readouterr().out
    assert code == 1 and "2 committed, 0 already there, 1 failed" in out
    assert f"failed {src[1].name}" in out and "no longer exists" in out


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 6 MB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_is_named_as_such(sim_cal, cal_manifest, tiny_disk, capsys):
    """Each exposure needs ~6.3 MB in the store: the first fills the 6 MB disk.  Tiled
    calibration needs more (its scratch cubes) and refuses to start; jwst's whole-exposure run
    starts and fails each exposure, naming the full disk."""
    code = cli.main(["calibrate", str(cal_manifest), "--store", str(tiny_disk / "s.zarr"),
                     "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "sync"])
    out = capsys.readouterr()
    assert code == 2 and "tiled calibration needs ~" in out.err and "MB of scratch" in out.err
    assert "MB free in" in out.err and not (tiny_disk / "s.zarr").exists()
    code = cli.main(["calibrate", str(cal_manifest), "--store", str(tiny_disk / "s.zarr"),
                     "--refkit", str(sim_cal["dir"] / "refkit"), "--scheduler", "sync",
                     "--pieces", "whole"])
    out = capsys.readouterr().out
    assert code == 1 and "0 committed" in out and "4 failed" in out
    assert "no space left on the store's disk" in out and "MB free in" in out
    assert RampStore(tiny_disk / "s.zarr").committed() == []
    assert not (tiny_disk / "s.zarr" / "_staging").exists()  # nothing half-written kept
