"""Store chunking and compression: write and read throughput, size on disk.

    .venv/bin/python benchmarks/bench_store_chunks.py [--ngroups 20] [--nexp 3] [--tiles 128,256,512]

For each (tile, codec) a full-frame TRAD store is written the way ``calibrate`` writes it (one
exposure staged, then committed) and read the way the reductions read it (all exposures of one
(y, x) tile at a time, tile after tile).  The ramp is float32 noise around a slope, as calibrated
dark ramps are: the low mantissa bits are random, so this is the realistic compressibility.
The page cache is dropped before each read when the process may (root on Linux); otherwise the
read figures include cached data and say so.  Throughputs are of the uncompressed ramp bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from nrsdark_dask.store import RampStore, StoreLayout, write_staging


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _exposure(rng, g, n):
    t = np.arange(1, g + 1, dtype=np.float32)[:, None, None] * 10.737
    ramp = rng.normal(0, 12, (g, n, n)).astype(np.float32) + np.float32(0.008) * t
    gdq = np.zeros((g, n, n), np.uint8)
    gdq[rng.random((g, n, n)) < 1e-3] = 4
    img = rng.normal(0.008, 0.005, (n, n)).astype(np.float32)
    return {"ramp": ramp, "groupdq": gdq, "pixeldq": np.zeros((n, n), np.uint32), "rate": img,
            "rate_err": np.abs(img), "bias_groups": rng.normal(1.3e4, 300, (2, n, n)).astype(np.float32)}


def run(ngroups: int, nexp: int, tiles, codecs, root: Path):
    n = 2048
    rng = np.random.default_rng(0)
    data = [_exposure(rng, ngroups, n) for _ in range(nexp)]
    ramp_mb = ngroups * n * n * 4 / 1e6
    rows = []
    for tile in tiles:
        for codec in codecs:
            layout = StoreLayout(detector="NRS1", family="TRAD", readpatt="NRSRAPID",
                                 subarray="FULL", ngroups=ngroups, ny=n, nx=n, ny_raw=n, ystart=1,
                                 xstart=1, tframe=10.73676, tgroup=10.73676, has_bias=True,
                                 tile_y=tile, tile_x=tile, codec=codec)
            path = root / f"t{tile}_{codec}.zarr"
            store = RampStore.create(path, layout, {})
            t0 = time.perf_counter()
            with store.writer():
                for i, d in enumerate(data):
                    write_staging(path, f"e{i}", layout, d)
                    store.commit(f"e{i}", {})
            write_s = time.perf_counter() - t0
            size = sum(f.stat().st_size for f in (path / "ramp").rglob("*") if f.is_file())
            cold = _drop_caches()
            import zarr

            arr = zarr.open_group(path, mode="r")["ramp"]
            t0 = time.perf_counter()
            for y in range(0, n, tile):
                for x in range(0, n, tile):
                    block = arr[:, :, y : y + tile, x : x + tile]
            read_s = time.perf_counter() - t0
            rows.append((tile, codec, nexp * ramp_mb / write_s, nexp * ramp_mb / read_s,
                         size / (nexp * ramp_mb * 1e6), block.nbytes / 1e6, cold))
            shutil.rmtree(path)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ngroups", type=int, default=20)
    p.add_argument("--nexp", type=int, default=3)
    p.add_argument("--tiles", default="128,256,512")
    p.add_argument("--codecs", default="none,zstd,blosc-lz4")
    p.add_argument("--tmp", default=None, help="scratch folder (default: system temp)")
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nrsdark_bench_", dir=a.tmp))
    try:
        rows = run(a.ngroups, a.nexp, [int(t) for t in a.tiles.split(",")],
                   a.codecs.split(","), root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = {r[0]: r for r in rows if r[1] == "none"}
    print(f"full frame TRAD, {a.ngroups} groups, {a.nexp} exposures "
          f"({a.ngroups * 2048 * 2048 * 4 / 1e6:.0f} MB of ramp each)")
    print(f"{'tile':>5} {'codec':>10} {'write MB/s':>11} {'read MB/s':>10} {'size':>6} "
          f"{'read/none':>9} {'tile task MB':>12} {'cold read':>9}")
    for tile, codec, w, r, ratio, task_mb, cold in rows:
        rel = r / base[tile][3] if tile in base else float("nan")
        print(f"{tile:>5} {codec:>10} {w:>11.0f} {r:>10.0f} {ratio:>6.2f} {rel:>9.2f} "
              f"{task_mb:>12.0f} {'yes' if cold else 'no':>9}")


if __name__ == "__main__":
    main()
