"""The same build on every scheduler (issue 10): ``threads``, ``local:2`` and a real
``dask scheduler`` with two ``dask worker`` processes, on one store.

    .venv/bin/python benchmarks/bench_schedulers.py [--store benchmarks/data/allslits20.zarr]

Each run is ``nrsdark build --scheduler X`` in a fresh process (wall time of the whole
command: start-up, cluster start for ``local:2``, the computation, and for the clusters the
products group written by the workers and streamed into the files), the page cache warm
(an untimed build first).  The two-worker cluster is started before its run (not timed),
single-threaded workers without a nanny, ``MEMORY=3e9`` each.  The files of every run are
compared with the threaded run's (bit for bit).  Default store: the 503 MB ALLSLITS store of
``bench_build.py`` (``bench_build.py --only data`` makes it).  Writes
``results/schedulers.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util as U  # noqa: E402
from _util import metric, print_metrics, run_monitored, write_result  # noqa: E402

sys.path.insert(0, str(U.ROOT / "tests"))
from conftest import DaskProcesses  # noqa: E402  (the test suite's real scheduler + workers)


def same_files(a: Path, b: Path) -> bool:
    import numpy as np
    from astropy.io import fits

    fa, fb = sorted(a.glob("*.fits")), sorted(b.glob("*.fits"))
    if len(fa) != len(fb) or not fa:
        return False
    for x, y in zip(fa, fb):
        with fits.open(x) as hx, fits.open(y) as hy:
            for u, v in zip(hx[1:], hy[1:]):
                if u.is_image and not np.array_equal(u.data, v.data):
                    return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=U.DATA / "allslits20.zarr")
    a = ap.parse_args()
    if not (a.store / "zarr.json").exists():
        sys.exit(f"no store at {a.store}; run benchmarks/bench_build.py --only data first")
    nrsdark = Path(sys.executable).parent / "nrsdark"
    out = U.DATA / "out" / "schedulers"
    import shutil

    shutil.rmtree(out, ignore_errors=True)

    def run(label, scheduler):
        res = run_monitored([nrsdark, "build", "--store", a.store, "--outdir", out / label,
                             "--scheduler", scheduler], f"schedulers-{label}")
        U.check_ok(res, label)
        print(f"  {label:28s} {res['wall_s']:6.1f} s")
        return res

    run("warm-up", "threads")
    results = {"threads": run("threads", "threads"), "local:2": run("local-2", "local:2")}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = DaskProcesses(Path(tmp), n_workers=2)
        try:
            results["dask scheduler + 2 workers"] = run("dask-workers", cluster.address)
        finally:
            cluster.close()
    metrics = [metric(f"build wall, {k}", r["wall_s"], "s", fmt="{:.1f}")
               for k, r in results.items()]
    same = all(same_files(out / "threads", out / d) for d in ("local-2", "dask-workers"))
    metrics.append(metric("files equal the threaded run's (bit for bit)", "yes" if same else
                          "no", "", "yes", "==", "{}"))
    print_metrics(metrics)
    write_result("schedulers", "", f"one build on every scheduler ({a.store.name})", metrics,
                 {k: {"wall_s": r["wall_s"], "peak_rss": r["peak_rss"]} for k, r in
                  results.items()})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
