"""Snowball flagging alone (issue 28): stcal's ``flag_large_events`` on one exposure's GROUPDQ
after two-point jump detection, stock (every region of every plane measured) against
``hooks.snowball_filter`` (only the regions that can become snowballs), in one process, the
same input, outputs compared bit for bit.  Counts work as well as time: the regions
scikit-image measures (``regionprops`` items), the planes labelled, the snowballs found.

    python benchmarks/bench_snowballs.py            # TRAD FULL 88 groups (bench_tiled's set)
    python benchmarks/bench_snowballs.py --case irs2_25

The GROUPDQ comes from running the tiled graph of the exposure up to its jump slabs (cached
in ``data/tiled/snowballs-<case>/``).  Writes ``results/snowballs-<case>.json``.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import metric, print_metrics, write_result  # noqa: E402
from bench_tiled import CASES, TILED, simulate  # noqa: E402


def jump_gdq(sim: Path, cache: Path):
    """(GROUPDQ after two-point detection, stcal JumpData with JumpStep's settings) of the
    set's first exposure, cached."""
    import numpy as np

    if (cache / "jump_data.pkl").exists():
        gdq = np.load(cache / "jump_gdq.npy", mmap_mode="r")
        return np.array(gdq), pickle.loads((cache / "jump_data.pkl").read_bytes())
    import dask

    from nrsdark_dask.calibration import ingest
    from nrsdark_dask.calibration import recipe as recipe
    from nrsdark_dask.stages.calibrate import _identify, _rows_for
    from nrsdark_dask.stages.select import read_manifest
    from nrsdark_dask.calibration import pieces
    from nrsdark_dask.calibration.graph import exposure_graph
    from nrsdark_dask.calibration.budget import plan_pieces

    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    _, rows = _rows_for(read_manifest(sim / "manifest.ecsv"), None)
    _identify(rows[:1])
    layout = ingest.layout_of(rows[0], (256, 256), "none", None)
    plan = plan_pieces(layout, threads=2)
    dsk, _ = exposure_graph(rows[0], str(cache / "s.zarr"), layout,
                            recipe.refkit_files(sim / "refkit"), plan, 3.0)
    prep = next(k for k in dsk if isinstance(k, str) and k.startswith("prepare-"))
    jumps = [k for k in dsk if isinstance(k, tuple) and k[0].startswith("jump-slab")]
    print(f"running {len(dsk)}-task graph up to its {len(jumps)} jump slabs", flush=True)
    exp, *_ = dask.threaded.get(dsk, [prep, *jumps], num_workers=2)
    gdq = exp.cube("jump_gdq").read()
    _, jd = pieces._jump_settings(exp)
    np.save(cache / "jump_gdq.npy", gdq)
    (cache / "jump_data.pkl").write_bytes(pickle.dumps(jd))
    shutil.rmtree(cache / "s.zarr", ignore_errors=True)
    return gdq, jd


class Counter:
    """Wraps stcal's find_ellipses (its time and calls) and scikit-image's regionprops (the
    regions it measures)."""

    def __init__(self):
        import skimage.measure
        from stcal.jump import jump

        self.jump, self.skm = jump, skimage.measure
        self.calls = self.regions = 0
        self.seconds = 0.0

    def __enter__(self):
        inner_find, inner_props = self.jump.find_ellipses, self.skm.regionprops
        self._saved = inner_find, inner_props

        def find(*a, **k):
            t = time.process_time()
            try:
                return inner_find(*a, **k)
            finally:
                self.calls += 1
                self.seconds += time.process_time() - t

        def props(*a, **k):
            out = inner_props(*a, **k)
            self.regions += len(out)
            return out

        self.jump.find_ellipses, self.skm.regionprops = find, props
        return self

    def __exit__(self, *exc):
        self.jump.find_ellipses, self.skm.regionprops = self._saved


def run(gdq, jd, filtered: bool) -> dict:
    from stcal.jump.jump import flag_large_events

    from nrsdark_dask.calibration import hooks

    hooks.install()
    work = gdq.copy()[None]
    with Counter() as c:
        t0, w0 = time.process_time(), time.perf_counter()
        if filtered:
            with hooks.snowball_filter(jd, work) as seen:
                out, total = flag_large_events(work, jd.fl_jump, jd.fl_sat, jd)
        else:
            out, total = flag_large_events(work, jd.fl_jump, jd.fl_sat, jd)
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    r = {"cpu_s": cpu, "wall_s": wall, "find_ellipses_cpu_s": c.seconds,
         "find_ellipses_calls": c.calls, "regions_measured": c.regions, "snowballs": int(total)}
    if filtered:
        r.update(regions_seen=seen.count.regions, kept=seen.count.kept,
                 by_plane=seen.count.by_plane)
    return r, out


def main(argv=None) -> int:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", default="trad88", choices=list(CASES))
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; the fastest is kept")
    args = ap.parse_args(argv)
    sim = simulate(args.case, *CASES[args.case])
    gdq, jd = jump_gdq(sim, TILED / f"snowballs-{args.case}")
    print(f"GROUPDQ {gdq.shape}, {gdq.nbytes / 1e6:.0f} MB", flush=True)
    stock = filt = None
    for _ in range(args.repeat):
        s, out_s = run(gdq, jd, False)
        f, out_f = run(gdq, jd, True)
        equal = bool(np.array_equal(out_s, out_f)) and s["snowballs"] == f["snowballs"]
        if not equal:
            print("the filtered flags differ from stock", file=sys.stderr)
            break
        stock = s if stock is None or s["cpu_s"] < stock["cpu_s"] else stock
        filt = f if filt is None or f["cpu_s"] < filt["cpu_s"] else filt
    print(f"stock:    {stock}\nfiltered: {filt}")
    metrics = [
        metric("stock flag_large_events, CPU", stock["cpu_s"], "s", fmt="{:.1f}"),
        metric("  of which find_ellipses", stock["find_ellipses_cpu_s"], "s", fmt="{:.1f}"),
        metric("  regions measured (regionprops)", stock["regions_measured"], "", fmt="{:.0f}"),
        metric("filtered flag_large_events, CPU", filt["cpu_s"], "s", fmt="{:.2f}"),
        metric("  of which find_ellipses", filt["find_ellipses_cpu_s"], "s", fmt="{:.2f}"),
        metric("  regions measured (regionprops)", filt["regions_measured"], "", fmt="{:.0f}"),
        metric("  regions in the planes asked about / kept for stcal", filt["regions_seen"],
               "", fmt="{:.0f}", note=f"kept {filt['kept']}"),
        metric("snowball-region CPU, stock / filtered (find_ellipses)",
               stock["find_ellipses_cpu_s"] / filt["find_ellipses_cpu_s"], "x", 10.0, ">=",
               "{:.1f}"),
        metric("snowball flagging CPU, stock / filtered", stock["cpu_s"] / filt["cpu_s"], "x",
               fmt="{:.1f}"),
        metric("snowballs", filt["snowballs"], "", fmt="{:.0f}"),
        metric("flags bit-identical", equal, "", True, "=="),
    ]
    print_metrics(metrics)
    write_result("snowballs", args.case, f"Snowball flagging of one {args.case} exposure, stock "
                 "vs only the regions that can matter", metrics,
                 {"stock": stock, "filtered": filt})
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
