"""The ``nrsdark`` command: parse the arguments, run one subcommand
(:mod:`nrsdark_dask.commands`; ``run``: :mod:`nrsdark_dask.run`) and map what it raised to
the exit status, here and nowhere else:

=====  =================================================================================
0      done (and deliverable, for ``build``-to-``analyze`` and ``run``)
1      a verdict: not deliverable, some exposures failed to calibrate, the master only
2      an error (bad input or arguments, a failed stage); one line on stderr
3      ``build``: the files were written but recording them in the results database
       failed; they are listed, and ``nrsdark record OUTDIR --db ...`` records them later
130    interrupted (Ctrl-C, SIGINT)
143    terminated (SIGTERM: what a batch system or Kubernetes sends to stop a job)
=====  =================================================================================

SIGTERM unwinds exactly as Ctrl-C does (:class:`Terminated` is a ``KeyboardInterrupt``): every
command's clean-up runs (``.part`` files, ``_staging`` work files, scratch cubes, temporary
folders, a tiled run's worker processes), then one line and exit 143.  A second SIGTERM during
the clean-up is ignored (a batch system follows with SIGKILL when it will not wait).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from .commands import Verdict, build_parser
from .results import RecordFailed


class Terminated(KeyboardInterrupt):
    """SIGTERM received: unwinds like Ctrl-C (module docstring)."""


_MAIN_PID = os.getpid()


def _on_sigterm(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked child (a process pool's worker): die as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        if args.command == "run":
            from .run import run

            run(args.config)
        else:
            args.func(args)
    except Verdict:
        return 1
    except RecordFailed as exc:
        for reftype, path in exc.files.items():
            print(f"{reftype.upper():9s} {path}")
        print(f"nrsdark {args.command}: error: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"nrsdark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"nrsdark {args.command}: terminated (SIGTERM); nothing half-written was kept",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"nrsdark {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
