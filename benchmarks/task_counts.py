"""Task counts of a build's graph at default chunking (issue 10: thousands, not millions).

    .venv/bin/python benchmarks/task_counts.py

Each case is a store of metadata only (``RampStore.create`` with the layout ``calibrate``
would choose, the exposure arrays resized to E and the coordinates filled; no chunk is
written), opened with ``store.open_dataset`` and given to ``reduce.build_products``; the count
is ``reduce.task_count`` (the files' arrays and the statistics after dask's optimization), the
number the dashboard shows.  Also the block plan.  Writes ``results/task_counts.json``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import metric, print_metrics, write_result  # noqa: E402

from nrsdark_dask.reduction import graph as R  # noqa: E402
from nrsdark_dask.store import EXPOSURE_COORDS, RampStore, StoreLayout, open_dataset  # noqa: E402
from nrsdark_dask.store.writer import _consolidate  # noqa: E402

CASES = [  # label, readpatt, ngroups, exposures, frame time
    ("TRAD FULL 88 groups x 20 exposures", "NRSRAPID", 88, 20, 10.73676),
    ("TRAD FULL 88 groups x 25 exposures (the report's monitor)", "NRSRAPID", 88, 25, 10.73676),
    ("IRS2 FULL 200 groups x 20 exposures", "NRSIRS2RAPID", 200, 20, 14.5889),
]


def metadata_store(path: Path, readpatt: str, ngroups: int, n_exp: int, tframe: float):
    h = {"READPATT": readpatt, "SUBSIZE2": 2048, "SUBSIZE1": 2048, "DETECTOR": "NRS1",
         "SUBARRAY": "FULL", "NGROUPS": ngroups, "SUBSTRT2": 1, "SUBSTRT1": 1,
         "TFRAME": tframe, "TGROUP": tframe}
    layout = StoreLayout.from_header(h, has_bias=True)
    RampStore.create(path, layout, provenance={})
    g = zarr.open_group(path, mode="r+")
    for var in layout.variables():
        g[var].resize((n_exp,) + g[var].shape[1:])
    for name, (dtype, _) in EXPOSURE_COORDS.items():
        g[name].resize((n_exp,))
        g[name][:] = ([f"e{i}" for i in range(n_exp)] if dtype is str
                      else np.arange(n_exp, dtype=dtype) + (1.7e9 if name == "date" else 0))
    _consolidate(path)
    return layout


def main() -> int:
    metrics, details = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, readpatt, ngroups, n_exp, tframe in CASES:
            path = Path(tmp) / f"{readpatt}-{ngroups}-{n_exp}.zarr"
            metadata_store(path, readpatt, ngroups, n_exp, tframe)
            p = R.build_products(open_dataset(path))
            n = R.task_count(p)
            metrics.append(metric(label, n, "tasks", 100_000, "<=", "{:.0f}",
                                  note=p.plan.describe()))
            details[label] = {"tasks": n, "plan": p.plan.describe()}
            print(f"{label}: {n} tasks; {p.plan.describe()}")
    print_metrics(metrics)
    write_result("task_counts", "", "build graph size at default chunking", metrics, details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
