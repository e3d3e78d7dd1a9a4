"""Build (and calibrate) on a real multi-process Dask cluster: ``dask scheduler`` and two
``dask worker`` processes on 127.0.0.1, the same files as the threaded run bit for bit, and a
worker killed (SIGKILL) in the middle of a build."""

import time

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits

from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.build import build
from nrsdark_dask.stages.calibrate import calibrate
from nrsdark_dask.store import open_dataset

from conftest import DaskProcesses, kill_worker_running


def assert_same_files(a: dict, b: dict):
    assert set(a) == set(b)
    for reftype in a:
        with fits.open(a[reftype]) as x, fits.open(b[reftype]) as y:
            assert [h.name for h in x] == [h.name for h in y]
            for hx, hy in zip(x[1:], y[1:]):
                if hx.is_image:
                    np.testing.assert_array_equal(hx.data, hy.data,
                                                  err_msg=f"{reftype} {hx.name}")


@pytest.fixture(scope="module")
def threaded(cal_store, tmp_path_factory):
    return build(cal_store["path"], tmp_path_factory.mktemp("threads"), scheduler="threads")


@pytest.fixture
def cluster(tmp_path):
    c = DaskProcesses(tmp_path)
    yield c
    c.close()


def test_calibrate_and_build_through_a_scheduler_address(cluster, cal_manifest, cal_store,
                                                         sim_cal, threaded, tmp_path, capsys):
    store = tmp_path / "c.zarr"
    summary = calibrate(cal_manifest, store, refkit=sim_cal["dir"] / "refkit",
                        scheduler=cluster.address)
    assert len(summary["committed"]) == 4 and not summary["failed"]
    for var in ("ramp", "groupdq", "rate", "bias_groups"):  # the same store as threads made
        np.testing.assert_array_equal(open_dataset(store)[var].values,
                                      open_dataset(cal_store["path"])[var].values)
    products = tmp_path / "products.zarr"
    code = cli.main(["build", "--store", str(store), "--outdir", str(tmp_path / "out"),
                     "--scheduler", cluster.address, "--products", str(products),
                     "--keep-products"])
    err = capsys.readouterr().err
    assert code == 0 and "dask dashboard: http://127.0.0.1:" in err
    files = {p.name.split("_")[4]: p for p in (tmp_path / "out").glob("*.fits")}
    assert_same_files(files, threaded["files"])
    kept = xr.open_zarr(products, consolidated=False)  # the products, as xarray
    assert kept.dark_cube.dims == ("frame", "y", "x") and kept.dark_cube.shape == (10, 64, 2048)
    with fits.open(files["dark"]) as h:
        np.testing.assert_array_equal(kept.dark_cube.values, h["SCI"].data)


def test_a_killed_worker_does_not_change_the_files(cluster, cal_store, threaded, tmp_path):
    result, error = {}, []

    def run():
        try:
            result.update(build(cal_store["path"], tmp_path / "out",
                                scheduler=cluster.address))
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    # a worker in the middle of the pass over the ramps
    victim = kill_worker_running(cluster.address, run, "ramp-pass", timeout=120, join=300)
    assert victim is not None, "the build finished before a worker could be killed"
    assert "ramp-pass" in str(victim[1])
    print(f"\nkilled worker pid {victim[0]} while it ran {victim[1]}")
    assert not error, error
    assert [w.poll() for w in cluster.workers].count(None) == 1  # one worker really gone
    assert_same_files(result["files"], threaded["files"])


def test_cluster_progress_lines_in_logs():
    """On a cluster, not a terminal: plain lines counted over every task of the graph."""
    import io

    import dask.array as da
    from distributed import Client, LocalCluster

    from nrsdark_dask.cluster import futures_progress

    def slow(x):
        time.sleep(0.2)
        return x

    out = io.StringIO()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address="127.0.0.1:0") as lc, Client(lc) as client:
        futures = client.compute([da.ones(8, chunks=1).map_blocks(slow).sum()])
        futures_progress(futures, "build", stream=out, every_s=0.3)
        assert futures[0].result() == 8
    lines = out.getvalue().splitlines()
    assert lines and all(line.startswith("build: ") and "tasks (" in line for line in lines)
    done, total = lines[-1].split()[1].split("/")
    assert int(total) >= 9 and 0 <= int(done) <= int(total)
