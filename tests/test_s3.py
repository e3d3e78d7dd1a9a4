"""Stores at URLs: build and verify read a store from a real S3-compatible server
(``moto_server`` on 127.0.0.1, started and stopped here), a cluster build writes its products
there, and writing a store at a URL is a clear refusal (the commit renames chunk directories,
the lock is an OS lock)."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nrsdark_dask.cli import main as cli
from nrsdark_dask.stages.build import build

from test_cluster import assert_same_files

BUCKET = "nrsdark-test"


@pytest.fixture(scope="module")
def s3(cal_store):
    """moto_server on a free port, the AWS variables pointing at it, cal_store uploaded."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3")
    fs.mkdir(BUCKET)
    fs.put(str(cal_store["path"]), f"{BUCKET}/cal.zarr", recursive=True)
    try:
        yield {"fs": fs, "store": f"s3://{BUCKET}/cal.zarr"}
    finally:
        proc.kill()
        proc.wait()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def threaded(cal_store, tmp_path_factory):
    return build(cal_store["path"], tmp_path_factory.mktemp("threads"), scheduler="threads")


def test_build_and_verify_read_a_store_at_an_s3_url(s3, threaded, tmp_path, capsys):
    assert cli.main(["verify", "--store", s3["store"]]) == 0
    assert "4 exposures, every chunk present with its sizes and checksums" in \
        capsys.readouterr().out
    files = build(s3["store"], tmp_path / "out", scheduler="threads")["files"]
    assert_same_files(files, threaded["files"])


def test_a_cluster_build_writes_its_products_to_s3(s3, threaded, tmp_path):
    products = f"s3://{BUCKET}/products/p1.zarr"
    files = build(s3["store"], tmp_path / "out", scheduler="local:2", products=products,
                  keep_products=True)["files"]
    assert_same_files(files, threaded["files"])
    import xarray as xr

    kept = xr.open_zarr(products, consolidated=False)
    assert set(kept.data_vars) == {"dark_cube", "dark_err", "dark_dq", "dark_rate", "dark_rate_unc",
                                   "superbias", "superbias_err", "superbias_dq"}
    # not kept: removed after the export (the scheduler does not matter for that)
    build(s3["store"], tmp_path / "out2", scheduler="threads",
          products=f"s3://{BUCKET}/products/p2.zarr")
    assert not s3["fs"].exists(f"{BUCKET}/products/p2.zarr")


def test_a_damaged_s3_store_is_refused(s3, tmp_path, capsys):
    fs = s3["fs"]
    fs.copy(f"{BUCKET}/cal.zarr", f"{BUCKET}/damaged.zarr", recursive=True)
    victim = sorted(fs.find(f"{BUCKET}/damaged.zarr/ramp/c/1"))[0]
    fs.rm(victim)
    code = cli.main(["build", "--store", f"s3://{BUCKET}/damaged.zarr", "--outdir",
                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "the store is damaged" in err and "is missing" in err


def test_writing_a_store_at_a_url_is_a_clear_refusal(s3, cal_manifest, capsys):
    code = cli.main(["calibrate", str(cal_manifest), "--store", f"s3://{BUCKET}/new.zarr",
                     "--scheduler", "sync"])
    err = capsys.readouterr().err
    assert code == 2 and "needs a store on a local or shared POSIX filesystem" in err
    assert not s3["fs"].exists(f"{BUCKET}/new.zarr")
