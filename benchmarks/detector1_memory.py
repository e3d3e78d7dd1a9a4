"""Peak memory and wall time of ONE ``nrsdark_dask.calibration.recipe.run_detector1`` call.

Usage (from the repository root)::

    .venv/bin/python benchmarks/detector1_memory.py --readout trad --ngroups 88
    .venv/bin/python benchmarks/detector1_memory.py --readout irs2 --ngroups 50 --steps

What it does:

1. simulates one FULL-frame NRS1 exposure (``nrsdark simulate ... --nexp 1``) into a temporary
   folder under ``--tmp`` (default ``/tmp``), removed at the end;
2. calibrates it once in a fresh child process run as
   ``prlimit --as=BYTES /usr/bin/time -v python THIS --child ...``, so that a case too big for the
   machine fails with MemoryError (address-space limit ``--limit-gb``, default 21) instead of
   swapping;
3. prints one line: ``readout ngroups raw_shape wall_s peak_rss_GB``, where ``wall_s`` is the
   duration of the ``run_detector1`` call (imports excluded) and ``peak_rss_GB`` is the child's
   "Maximum resident set size" (imports included) in GB (1e9 bytes).

``--steps`` adds two lines: the wall time of each jwst step (from the stpipe "Step X running" /
"Step X done" log records) and the process's peak RSS so far when each step ends (VmHWM), which
shows the step that sets the peak.  Run one case at a time: the big cases use most of a 24 GB
machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def child(uncal: str, refkit: str, workdir: str, out_json: str) -> None:
    """Run run_detector1 once; write the call's wall time and per-step times to ``out_json``."""
    from nrsdark_dask.calibration import recipe as R

    marks: dict[str, list[float]] = {}
    hwm: dict[str, float] = {}  # the process's peak RSS (VmHWM, GB) when each step ends

    class StepTimes(logging.Handler):
        pat = re.compile(r"^Step (\w+) (running|done)")

        def emit(self, record):
            m = self.pat.match(record.getMessage())
            if m:
                marks.setdefault(m.group(1), []).append(record.created)
                if m.group(2) == "done":
                    status = Path("/proc/self/status").read_text()
                    kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
                    hwm[m.group(1)] = round(kb * 1024 / 1e9, 2)

    logging.getLogger().addHandler(StepTimes())
    refs = R.refkit_files(refkit)
    t0 = time.time()
    res = R.run_detector1(uncal, refs, workdir=workdir)
    wall = time.time() - t0
    shape = list(res.ramp.data.shape)
    res.close()
    steps = {k: round(v[-1] - v[0], 1) for k, v in marks.items() if len(v) >= 2}
    Path(out_json).write_text(json.dumps({"wall": wall, "steps": steps, "hwm": hwm,
                                          "ramp_shape": shape}))


def max_rss_gb(time_v_output: str) -> float:
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v_output).group(1))
    return kb * 1024 / 1e9


def measure(readout: str, ngroups: int, limit_gb: float, tmp: str) -> dict:
    """Simulate one exposure, calibrate it in a limited child process; return the numbers."""
    from astropy.io import fits

    base = Path(tempfile.mkdtemp(prefix=f"mem_{readout}{ngroups}_", dir=tmp))
    try:
        sim = base / "sim"
        s = subprocess.run([str(BIN / "nrsdark"), "simulate", str(sim), "--readout", readout,
                            "--ngroups", str(ngroups), "--nexp", "1"],
                           capture_output=True, text=True)
        if s.returncode:
            raise RuntimeError(f"simulate failed: {s.stderr.strip()}")
        uncal = next(iter(sorted((sim / "uncal").glob("*.fits"))))
        hdr = fits.getheader(uncal, "SCI")
        raw_shape = tuple(hdr[f"NAXIS{i}"] for i in range(hdr["NAXIS"], 0, -1))
        out_json = base / "child.json"
        cmd = ["prlimit", f"--as={int(limit_gb * 1e9)}", "/usr/bin/time", "-v", sys.executable,
               __file__, "--child", str(uncal), str(sim / "refkit"), str(base / "work"),
               str(out_json)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        result = {"readout": readout, "ngroups": ngroups, "raw_shape": raw_shape,
                  "peak_gb": max_rss_gb(p.stderr), "ok": p.returncode == 0}
        if p.returncode == 0:
            result.update(json.loads(out_json.read_text()))
        else:
            result.update(wall=float("nan"), steps={}, hwm={},
                          error=p.stderr.strip().splitlines()[-25:])
        return result
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readout", choices=["trad", "irs2"])
    p.add_argument("--ngroups", type=int)
    p.add_argument("--limit-gb", type=float, default=21.0,
                   help="address-space limit of the child, GB (prlimit --as)")
    p.add_argument("--tmp", default="/tmp", help="where the temporary exposure is simulated")
    p.add_argument("--steps", action="store_true", help="also print per-step wall times")
    p.add_argument("--child", nargs=4, metavar=("UNCAL", "REFKIT", "WORKDIR", "OUT_JSON"),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if not (args.readout and args.ngroups):
        p.error("--readout and --ngroups are required")
    r = measure(args.readout, args.ngroups, args.limit_gb, args.tmp)
    shape = "x".join(map(str, r["raw_shape"]))
    status = "" if r["ok"] else "  FAILED (limit reached?)"
    print(f"{r['readout']} {r['ngroups']} {shape} {r['wall']:.1f} {r['peak_gb']:.2f}{status}")
    if args.steps:
        print("steps_s " + json.dumps(r["steps"]))
        print("peak_rss_gb_after_step " + json.dumps(r["hwm"]))
    if not r["ok"]:
        print("\n".join(r["error"]), file=sys.stderr)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
