"""The ``nrsdark`` command: parse the arguments, run one subcommand
(:mod:`nrsdark_dask.cli.commands`; ``run``: :mod:`nrsdark_dask.cli.run`) and map what it
raised to
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
the clean-up is ignored (a batch system follows with SIGKILL when it will not wait).  A signal
that lands inside a finalizer (where Python would drop the exception) is raised 50 ms later,
and one that comes too late to stop anything still ends the command with 143.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from ..results import RecordFailed
from .commands import Verdict, build_parser


class Terminated(KeyboardInterrupt):
    """SIGTERM received: unwinds like Ctrl-C (module docstring)."""


_MAIN_PID, _TERMINATED = os.getpid(), False  # set again by main(); read by the handler


def _in_finalizer(frame) -> bool:
    """Whether ``frame`` runs inside a finalizer (``__del__``, a weakref callback), where
    Python prints an exception and drops it."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__del__" or code.co_filename.endswith("weakref.py"):
            return True
        frame = frame.f_back
    return False


def _on_sigterm(signum, frame):
    global _TERMINATED
    if os.getpid() != _MAIN_PID:  # a forked child (a process pool's worker): die as usual
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _TERMINATED = True
    if _in_finalizer(frame):  # raised here it would be dropped: raise it a moment later
        signal.signal(signal.SIGALRM, _on_sigterm)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    global _MAIN_PID, _TERMINATED
    _MAIN_PID, _TERMINATED = os.getpid(), False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    alarm = signal.getsignal(signal.SIGALRM) if main_thread else None
    try:
        if args.command == "run":
            from .run import run

            run(args.config)
        else:
            args.func(args)
        if _TERMINATED:  # a SIGTERM that came too late to stop the work, which completed
            raise Terminated()
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
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGALRM, alarm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
