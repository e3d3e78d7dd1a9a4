"""Peak memory of each kind of tiled-calibration piece (``bench_tiled.py pieces``).

    python benchmarks/_piece_memory.py SIM WORK

Runs SIM's first exposure's tiled graph (threads) up to snowball flagging in a store under WORK,
keeping the scratch cubes; then runs one piece of each kind alone in a fresh process
(``--one KIND A B``), at two sizes, and reads that process's peak RSS (``VmHWM``, imports
and reference files included).  A line fitted through the two points gives the kind's fixed
part and bytes per pixel-group held: the constants of ``nrsdark_dask.calibration.budget.COSTS``.
Prints one JSON line: ``{kind: {"fixed": bytes, "slope": bytes, "points": [...]}}``.
"""

from __future__ import annotations

import json
import pickle
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def keep(sim: Path, work: Path) -> Path:
    import dask

    from nrsdark_dask.calibration import ingest
    from nrsdark_dask.calibration import recipe as R
    from nrsdark_dask.stages.calibrate import _identify, _rows_for
    from nrsdark_dask.stages.select import read_manifest
    from nrsdark_dask.store import RampStore
    from nrsdark_dask.calibration.graph import exposure_graph
    from nrsdark_dask.calibration.budget import plan_pieces

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _, rows = _rows_for(read_manifest(sim / "manifest.ecsv"), None)
    _identify(rows)
    layout = ingest.layout_of(rows[:1][0], (256, 256), "none")
    RampStore.create(work / "s.zarr", layout, provenance={})
    plan = plan_pieces(layout, threads=2)
    dsk, _ = exposure_graph(rows[0], work / "s.zarr", layout, R.refkit_files(sim / "refkit"),
                            plan, 3.0)
    names = {str(k[0] if isinstance(k, tuple) else k).rsplit("-", 1)[0]: k for k in dsk}
    prep = names["prepare"]
    out = dask.threaded.get(dsk, [names["snowballs"], prep] + (
        [names["refpix-flags"], names["refpix-offset"]] if layout.family == "IRS2" else []),
        num_workers=2)
    exp = out[1]
    extra = {}
    if layout.family == "IRS2":
        import numpy as np

        np.save(work / "flags.npy", out[2])
        # the last link of the offset chain is the whole-ramp sum
        last = max((k for k in dsk if isinstance(k, tuple) and k[0].startswith("refpix-offset")),
                   key=lambda k: k[1])
        np.save(work / "acc.npy", dask.threaded.get(dsk, last))
        extra = {"flags": str(work / "flags.npy"), "acc": str(work / "acc.npy")}
    pkl = work / "exp.pkl"
    pkl.write_bytes(pickle.dumps({"exp": exp, **extra}))
    return pkl


def one(pkl: str, kind: str, a: int, b: int) -> None:
    import numpy as np

    from nrsdark_dask.calibration import pieces as P

    d = pickle.loads(Path(pkl).read_bytes())
    exp = d["exp"]
    P.warm_up()
    P._template(exp.uncal)
    t = time.time()
    if kind == "early":
        (P.early_slab if exp.family == "TRAD" else P.early_block)(exp, a, b)
    elif kind == "refpix":
        if exp.family == "TRAD":
            P.refpix_block(exp, a, b)
        else:
            P.refpix_block(exp, a, b, np.load(d["flags"]), np.load(d["acc"]), [])
    elif kind == "offset":
        P.refpix_offset(exp, a, b, np.load(d["flags"]))
    elif kind == "jump":
        P.jump_slab(exp, a, b, np.zeros(exp.ngroups, bool))
    elif kind == "snowballs":
        P.snowballs(exp)
    elif kind == "fit":
        P.ramp_fit(exp, a, b)
    elif kind == "bias":
        P.bias_piece(exp)
    print(json.dumps({"peak": _vm_hwm(), "s": time.time() - t}))


def _vm_hwm() -> int:
    """This process's peak RSS (VmHWM, bytes): unlike ``ru_maxrss``, which Linux carries over
    ``execve`` from the forking parent (the parent here ran a whole graph), it starts anew
    with the new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    if sys.argv[1] == "--one":
        one(*sys.argv[2:4], int(sys.argv[4]), int(sys.argv[5]))
        return 0
    sim, work = Path(sys.argv[1]), Path(sys.argv[2])
    pkl = keep(sim, work)
    exp = pickle.loads(pkl.read_bytes())["exp"]
    g, nx, ny, raw = exp.ngroups, exp.nx, exp.ny, exp.ny_raw
    irs2 = exp.family == "IRS2"
    # kind: (two (a, b) sizes, pixel-groups held for a piece (a, b))
    kinds = {
        "early": ([(0, 3), (0, 8)], lambda a, b: (b - a) * raw * nx) if irs2 else
        ([(0, 128), (0, 256)], lambda a, b: (min(ny, b + 2) - max(0, a - 2)) * nx * g),
        "refpix": ([(0, 3), (0, 8)], lambda a, b: (b - a) * raw * nx) if irs2 else
        ([(0, 4), (8, 16)], lambda a, b: (b - a + (a > 0)) * ny * nx),
        "jump": ([(0, 128), (256, 512)], lambda a, b: (min(ny, b + 1) - max(0, a - 1)) * nx * g),
        "fit": ([(0, 128), (256, 512)], lambda a, b: (b - a) * nx * g),
    }
    if irs2:
        kinds["offset"] = ([(0, 3), (0, 8)], lambda a, b: (b - a) * raw * nx)
    out = {}
    for kind, (sizes, held) in kinds.items():
        points = []
        for a, b in sizes:
            r = subprocess.run([sys.executable, __file__, "--one", str(pkl), kind, str(a),
                                str(b)], capture_output=True, text=True, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            points.append({"a": a, "b": b, "pixel_groups": held(a, b), **m})
        (p0, p1) = points
        slope = (p1["peak"] - p0["peak"]) / (p1["pixel_groups"] - p0["pixel_groups"])
        out[kind] = {"fixed": p0["peak"] - slope * p0["pixel_groups"], "slope": slope,
                     "points": points}
    for kind in ("snowballs", "bias"):
        r = subprocess.run([sys.executable, __file__, "--one", str(pkl), kind, "0", "0"],
                           capture_output=True, text=True, check=True)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        held = g * ny * nx if kind == "snowballs" else 0  # one size only: the whole exposure
        out[kind] = {"peak": m["peak"], "points": [{"pixel_groups": held, **m}]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
