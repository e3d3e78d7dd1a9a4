"""The ``nrsdark`` command: parse the arguments, run one subcommand
(:mod:`nrsdark_dask.commands`; ``run``: :mod:`nrsdark_dask.run`) and map what it raised to
the exit status, here and nowhere else:

=====  =================================================================================
0      done (and deliverable, for ``build``-to-``analyze`` and ``run``)
1      a verdict: not deliverable, some exposures failed to calibrate, the master only
2      an error (bad input or arguments, a failed stage); one line on stderr
130    interrupted (Ctrl-C)
=====  =================================================================================
"""

from __future__ import annotations

import sys

from .commands import Verdict, build_parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from .run import run

            run(args.config)
        else:
            args.func(args)
    except Verdict:
        return 1
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"nrsdark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nrsdark {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
