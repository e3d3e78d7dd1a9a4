"""The ``nrsdark`` command.  Argument parsing only: each subcommand calls one library function.

Subcommands so far: ``simulate``.  Planned (see README): select, calibrate, build, analyze,
periods, plan, run, demo.
"""

from __future__ import annotations

import argparse
import sys
import time

from . import __version__
from . import instrument as inst


def _simulate(args) -> int:
    from .simulate import SimConfig, parse_gratings, simulate_dataset

    cfg = SimConfig(
        readout=args.readout, detector=args.detector, subarray=args.subarray,
        ngroups=args.ngroups, nexp=args.nexp, seed=args.seed, start=args.start, end=args.end,
        gratings=parse_gratings(args.gratings), artifacts=args.artifacts,
        readpatt=args.readpatt, refkit=not args.no_refkit,
    )
    t0 = time.time()

    def progress(done, total, name):
        print(f"[{done}/{total}] {name}  ({time.time() - t0:.1f} s)", file=sys.stderr)

    summary = simulate_dataset(args.outdir, cfg, workers=args.workers, progress=progress)
    c = summary["counts"]
    print(f"{args.outdir}: {summary['exposures']} exposures in {summary['seconds']} s; "
          f"hot {c['hot']}, RC {c['rc']}, RTN {c['rtn']}, bad reference {c['badref']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nrsdark", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"nrsdark_dask {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="write a simulated data set of uncal darks with truth",
                       description="Write N simulated NIRSpec uncal darks, their truth, ASIC "
                       "telemetry and an offline reference kit into OUTDIR (must not exist).")
    s.add_argument("outdir")
    s.add_argument("--readout", choices=["trad", "irs2"], default="trad")
    s.add_argument("--readpatt", choices=list(inst.READ_PATTERNS), default=None,
                   help="default: NRSRAPID (trad) or NRSIRS2RAPID (irs2)")
    s.add_argument("--detector", type=str.upper, choices=list(inst.DETECTORS), default="NRS1")
    s.add_argument("--subarray", type=str.upper, choices=list(inst.SUBARRAYS), default="FULL")
    s.add_argument("--ngroups", type=int, default=None, help="default: 88 trad, 200 irs2")
    s.add_argument("--nexp", type=int, default=4)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--start", default="2023-07-01", help="first date (ISO)")
    s.add_argument("--end", default="2024-06-30", help="last date (ISO)")
    s.add_argument("--gratings", default="G140H,G395H",
                   help="mix with weights, e.g. 'G140H:3,G395H,PRISM,MIRROR'")
    s.add_argument("--artifacts", action="store_true",
                   help="inject report §3 failure cases: mode-switch bias residuals, MSA glow "
                   "on PRISM, persistence")
    s.add_argument("--workers", type=int, default=1, help="processes (one exposure each)")
    s.add_argument("--no-refkit", action="store_true", help="skip the reference kit")
    s.set_defaults(func=_simulate)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as exc:
        print(f"nrsdark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nrsdark {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
