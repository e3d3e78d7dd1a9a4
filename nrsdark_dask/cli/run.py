"""``nrsdark run CONFIG.toml``: select -> calibrate -> [cull] -> build -> analyze in one
command (`docs/report.md`; issue 14 part 5).

The run is exactly the commands a user would type, one after the other: each stage prints
its command line (``$ nrsdark select ...``, copy-and-paste to repeat one stage), then runs
that subcommand's function (:mod:`nrsdark_dask.cli.commands`, the same code as the command) with
the same ``--config CONFIG.toml`` (so every threshold and ``[run] scheduler`` acts in every
stage), with its own progress. What the
stages take comes from the ``[run]`` section (:class:`nrsdark_dask.config.RunConfig`)::

    [run]
    scheduler = "local:2"
    inputs = ["demo/sim/uncal"]             # files or folders
    telemetry = "demo/sim/telemetry.ecsv"
    exclude = "demo/sim/exclusions.ecsv"    # the exclusion list by eye (optional)
    refkit = "demo/sim/refkit"              # offline reference files ("" = CRDS)
    store = "stores/demo.zarr"
    outdir = "demo/run"                     # manifest, cull table, reffiles/, reffiles/qa/
    cull = true
    mask_in = "demo/sim/refkit/nrsdark_sim_nrs1_allslits_trad_mask.fits"

Relative paths are relative to the folder the command is started in, like the arguments of
every other command. Outputs: ``OUTDIR/manifest.ecsv``, ``OUTDIR/culled.ecsv`` (and its
pictures), ``OUTDIR/reffiles/`` (a new set of files per run: builds never overwrite) and the
QA report ``OUTDIR/reffiles/qa/report.html``. A second run of the same configuration
re-selects, skips the exposures already in the store (calibrate compares content) and builds
again.

:func:`run` raises :class:`~nrsdark_dask.cli.commands.NotDeliverable` when the files are built
but not deliverable (the analyze verdict), :class:`StageFailed` when a stage failed (the
stages before it keep their outputs: the store has every exposure committed so far); the
command maps them to exit statuses 1 and 2 (:mod:`nrsdark_dask.cli.main`). A calibrate with some
failed exposures goes on with the others and says so.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from .. import results
from . import commands
from ..config import Config, ConfigError


class StageFailed(RuntimeError):
    """A stage of the run failed; the earlier stages' outputs are kept."""


def stages(config_path) -> list[tuple[str, list[str]]]:
    """The stages' command lines (``[(stage, argv)]``) for a configuration file."""
    cfg = Config.from_toml(config_path)
    r = cfg.run
    for name in ("inputs", "store", "outdir"):
        if not getattr(r, name):
            raise ConfigError(f"{config_path}: [run] {name} is needed by nrsdark run")
    conf = ["--config", str(config_path)]
    out = Path(r.outdir)
    manifest, culled, reffiles = out / "manifest.ecsv", out / "culled.ecsv", out / "reffiles"
    select = ["select", *r.inputs, "-o", str(manifest), *conf]
    for flag, value in (("--telemetry", r.telemetry), ("--exclude", r.exclude),
                        ("--requested", str(r.requested) if r.requested else "")):
        select += [flag, value] if value else []
    calibrate = ["calibrate", str(manifest), "--store", r.store, *conf]
    calibrate += ["--refkit", r.refkit] if r.refkit else []
    calibrate += ["--group", r.group] if r.group else []
    build = ["build", "--store", r.store, "--outdir", str(reffiles), *conf]
    build += ["--cull", str(culled)] if r.cull else []
    build += ["--mask-in", r.mask_in] if r.mask_in else []
    analyze = ["analyze", str(reffiles), *conf]
    analyze += ["--compare", *r.compare] if r.compare else []
    db = r.db or results.default_url(r.store)  # where the build recorded
    analyze += ["--db", db] if db else []
    stages = [("select", select), ("calibrate", calibrate)]
    if r.cull:
        stages.append(("cull", ["cull", "--store", r.store, "-o", str(culled), *conf]))
    return stages + [("build", build), ("analyze", analyze)]


def run(config_path, stream=None) -> None:
    """Run the stages (module docstring); raise when not deliverable or a stage failed."""
    stream = stream or sys.stdout
    path = Path(config_path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    todo = stages(path)
    outdir = Path(Config.from_toml(path).run.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    parser = commands.build_parser()
    t0 = time.time()
    verdict, t_build = None, t0
    for k, (stage, argv) in enumerate(todo, 1):
        print(f"\n[{k}/{len(todo)}] {stage} ({time.time() - t0:.0f} s)\n$ nrsdark "
              + shlex.join(argv), file=stream, flush=True)
        t_build = time.time() if stage == "build" else t_build
        args = parser.parse_args(argv)
        try:
            args.func(args)
        except commands.SomeFailed:
            print("some exposures failed to calibrate (listed above); going on with the "
                  "others", file=stream)
        except commands.NotDeliverable as exc:
            verdict = exc
        except (ValueError, FileExistsError, FileNotFoundError, RuntimeError, OSError) as exc:
            raise StageFailed(f"stage {stage} failed: {exc}; the earlier stages' outputs are "
                              "kept") from exc
    reffiles = outdir / "reffiles"
    made = sorted(p for p in reffiles.glob("nrsdark_*.fits") if p.stat().st_mtime >= t_build)
    print(f"\nnrsdark run: done in {time.time() - t0:.0f} s; "
          f"{'NOT deliverable' if verdict else 'deliverable'}", file=stream)
    for f in made:
        print(f"  {f}", file=stream)
    print(f"  QA report: {reffiles / 'qa' / 'report.html'}", file=stream)
    if verdict:
        raise verdict
