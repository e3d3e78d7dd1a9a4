"""``nrsdark self-check``: tiled calibration against jwst's own whole-exposure run on the
installed jwst and stcal, on a small simulated set made to hit every cut (the evidence
``nrsdark_dask.calibration.versions`` asks for before a release is trusted).

The case (:func:`make_case`): ALLSLITS (256 x 2048) TRAD darks of 10 groups with 1000x the
natural snowball rate (about 20 snowballs an exposure besides ~500 cosmic rays), and in the
first exposure events placed where pieces meet: a snowball whose saturated core straddles the
row-slab edge at 96, cosmic rays on the rows either side of the edges at 32 and 64, and large
snowballs on the frame's edges (stcal's edge rule).  It is calibrated twice into two stores,
``--pieces whole`` and ``--pieces tiled`` cut into 32-row slabs and 3-group blocks
(:data:`EDGE_PLAN`), and the stores are compared bit for bit
(:func:`nrsdark_dask.store.store_differences`).  About a minute on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..calibration.budget import PiecePlan
from ..calibration.versions import OVERRIDE, installed

SLAB = 32  # rows of the case's slabs: edges at 32, 64, 96, ...
EDGE_PLAN = PiecePlan(slab_rows=SLAB, group_block=3, fit_rows=24, budget=int(1.5 * 2**30))
TILE = (64, 512)
# the first exposure's placed events: snowballs (y, x, group, radius), cosmic rays (y, x,
# group, DN)
SNOWBALLS = [(96, 1000, 4, 9.0), (2, 300, 3, 8.0), (253, 1500, 5, 10.0), (128, 6, 6, 7.0),
             (130, 2041, 2, 11.0)]
COSMIC_RAYS = [(31, 500, 6, 900), (32, 700, 3, 1500), (63, 1200, 5, 800), (64, 1201, 5, 800),
               (95, 300, 2, 2000)]


def make_case(directory, nexp: int = 2, seed: int = 11) -> Path:
    """Simulate the case into ``directory`` (must not exist) and return its manifest."""
    from .select import select_inputs, write_manifest
    from ..simulate import SimConfig, add_charge, simulate_dataset

    d = Path(directory)
    simulate_dataset(d, SimConfig(subarray="ALLSLITS", ngroups=10, nexp=nexp, seed=seed,
                                  snowball_scale=1000.0))
    first = sorted((d / "uncal").glob("*.fits"))[0]
    add_charge(first, snowballs=SNOWBALLS, cosmic_rays=COSMIC_RAYS)
    manifest = d / "manifest.ecsv"
    write_manifest(select_inputs([d / "uncal"], telemetry=d / "telemetry.ecsv"), manifest)
    return manifest


@contextmanager
def _untested_allowed():
    before = os.environ.get(OVERRIDE)
    os.environ[OVERRIDE] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(OVERRIDE, None)
        else:
            os.environ[OVERRIDE] = before


def self_check(workdir=None, scheduler: str = "threads:2", keep: bool = False,
               say=print) -> dict:
    """Run the case whole and tiled on the installed releases; return ``{"equal", "versions",
    "differences", "snowballs", "seconds", "workdir"}``.  ``workdir`` (default: a new
    temporary folder) must not exist; it is removed afterwards unless ``keep``."""
    from .calibrate import calibrate
    from ..store import RampStore, store_differences

    t0 = time.time()
    if workdir is not None and Path(workdir).exists():
        raise FileExistsError(f"{workdir} exists: the self-check writes a new folder")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nrsdark-self-check-"))
    root.mkdir(parents=True, exist_ok=workdir is None)
    try:
        say(f"self-check: simulating the case in {root}")
        manifest = make_case(root / "data")
        refkit = root / "data" / "refkit"
        say("self-check: jwst's whole-exposure run")
        calibrate(manifest, root / "whole.zarr", refkit=refkit, scheduler=scheduler,
                  pieces="whole", tile=TILE)
        say("self-check: tiled")
        with _untested_allowed():
            calibrate(manifest, root / "tiled.zarr", refkit=refkit, scheduler=scheduler,
                      pieces="tiled", plan=EDGE_PLAN, tile=TILE)
        diffs = store_differences(root / "whole.zarr", root / "tiled.zarr")
        snow = [e.get("snowballs", {}) for e in RampStore(root / "tiled.zarr").read_log()
                if e["event"] == "committed"]
        return {"equal": not diffs, "versions": installed(), "differences": diffs,
                "snowballs": snow, "seconds": round(time.time() - t0, 1),
                "workdir": str(root) if keep else None}
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
