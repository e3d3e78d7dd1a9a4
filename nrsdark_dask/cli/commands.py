"""The ``nrsdark`` subcommands: the argument parser and one function per subcommand, which
calls its library function and prints what it found.

Subcommands: ``simulate``, ``fetch``, ``select``, ``calibrate``, ``cull``, ``build``, ``analyze``,
``periods``, ``masks``, ``plan``, ``run``, ``monitor``, ``trends``, ``check-science``,
``verify``, ``repair``, ``self-check``.  Each returns nothing and
raises: a :class:`Verdict` when it ran and its answer is no (not deliverable, exposures that
failed to calibrate, too few inputs for a period), any other exception when it failed.  Exit
statuses are :mod:`nrsdark_dask.cli.main`'s alone; :mod:`nrsdark_dask.cli.run` calls these
functions
stage by stage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from .. import instrument as inst


class Verdict(Exception):
    """The command ran, and its answer is no (exit status 1)."""


class NotDeliverable(Verdict):
    pass


class SomeFailed(Verdict):
    """Some exposures failed to calibrate (the others are committed)."""


class MasterOnly(Verdict):
    """Too few inputs for any period: the master dark only."""


def _tile(text: str) -> tuple[int, int]:
    """``--tile YxX``: two positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLUMNS with two positive "
                                         "integers (e.g. 256x256)")
    return int(parts[0]), int(parts[1])


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return v


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (an integer >= 0)")
    return int(text)


def _kelvin(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a temperature difference in K") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a temperature difference is >= 0 K")
    return v


def _date(text: str) -> str:
    from astropy.time import Time

    try:
        Time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (e.g. 2024-03-01)") from None
    return text


def _simulate(args) -> None:
    from ..simulate import SimConfig, parse_gratings, simulate_dataset

    cfg = SimConfig(
        readout=args.readout, detector=args.detector, subarray=args.subarray,
        ngroups=args.ngroups, nexp=args.nexp, seed=args.seed, start=args.start, end=args.end,
        gratings=parse_gratings(args.gratings), artifacts=args.artifacts,
        readpatt=args.readpatt, refkit=not args.no_refkit, hot_growth=args.hot_growth,
        glow_rate=args.glow_rate, snowball_scale=args.snowball_scale,
    )
    t0 = time.time()

    def progress(done, total, name):
        print(f"[{done}/{total}] {name}  ({time.time() - t0:.1f} s)", file=sys.stderr)

    summary = simulate_dataset(args.outdir, cfg, workers=args.workers, progress=progress)
    c = summary["counts"]
    print(f"{args.outdir}: {summary['exposures']} exposures in {summary['seconds']} s; "
          f"hot {c['hot']}, RC {c['rc']}, RTN {c['rtn']}, bad reference {c['badref']}")


def _select(args) -> None:
    from ..config import Config
    from ..stages.select import groups, select_inputs, write_manifest, yield_table

    if args.start and args.end:
        from astropy.time import Time

        if Time(args.start) > Time(args.end):
            raise ValueError(f"--start {args.start} is after --end {args.end}")
    full = Config.from_toml(args.config)
    cfg = full.select
    overrides = {k: v for k, v in (("dt_full_frame", args.dt_full), ("dt_subarray", args.dt_sub))
                 if v is not None}
    if overrides or args.accept_no_telemetry:
        from dataclasses import replace

        cfg = replace(cfg, **overrides,
                      accept_without_telemetry=args.accept_no_telemetry or cfg.accept_without_telemetry)
    telemetry = args.telemetry
    if telemetry == "edb":  # from the engineering database, beside the manifest
        from ..stages.select import edb_telemetry

        telemetry = edb_telemetry(args.inputs, Path(args.output).parent / "telemetry.ecsv",
                                  full.telemetry, cfg.telemetry_pad_s, progress=_err)
        print(f"{telemetry}: ASIC temperatures from the engineering database")
    tab = select_inputs(args.inputs, telemetry=telemetry, exclude=args.exclude, cfg=cfg,
                        start=args.start, end=args.end, cull=args.cull)
    write_manifest(tab, args.output)
    n_acc = int(tab["accepted"].sum())
    print(f"{args.output}: {len(tab)} inputs, {n_acc} accepted, {len(tab) - n_acc} rejected")
    for r in tab[~tab["accepted"]]:
        print(f"  rejected {r['name']}: {r['reason']}")
    gs = groups(tab)
    if len(gs) > 1:
        print(f"inputs split into {len(gs)} groups (one store each; calibrate --group NAME): "
              + ", ".join(gs))
    print()
    yield_table(tab, args.requested, cfg).pprint(max_width=-1, max_lines=-1)


def _calibrate(args) -> None:
    from ..stages.calibrate import calibrate

    t0 = time.time()

    def progress(ev):
        what = "committed" if ev["status"] == "ok" else f"FAILED ({ev['reason']})"
        extra = f" in {ev['seconds']} s" if ev["status"] == "ok" else ""
        print(f"[{ev['done']}/{ev['total']}] {ev['name']} {what}{extra} "
              f"({time.time() - t0:.0f} s)", file=sys.stderr)

    summary = calibrate(args.manifest, args.store, refkit=args.refkit, scheduler=args.scheduler,
                        config=args.config,
                        group=args.group, workdir=args.workdir, tile=args.tile, codec=args.codec,
                        group_chunk=args.group_chunk, pieces=args.pieces,
                        task_memory=args.task_memory, record_tasks=args.record_tasks,
                        progress=progress, verbose=args.verbose)
    print(f"{args.store}: {len(summary['committed'])} committed, {len(summary['skipped'])} "
          f"already there, {len(summary['failed'])} failed")
    for name, reason in summary["failed"]:
        print(f"  failed {name}: {reason}")
    if summary["failed"]:
        raise SomeFailed(f"{len(summary['failed'])} exposure(s) failed to calibrate")


def _flag_counts(s: dict) -> str:
    """``HOT 12, RC 3, ...; new HOT 2``: the counted flags of the table, by their DQ bit."""
    from ..reduction.tables import FLAGS

    counted = [f for f in FLAGS if f.stat and f.stat in s]
    new = [f"new {f.label} {s[f'n_new_{f.name}']}" for f in counted if f"n_new_{f.name}" in s]
    return ", ".join([f"{f.label} {s[f.stat]}" for f in counted] + new)


def _build(args) -> None:
    from ..stages.build import build
    from ..config import Config

    t0 = time.time()
    summary = build(args.store, args.outdir, mask_in=args.mask_in, scheduler=args.scheduler,
                    config=args.config, author=args.author, workers=args.workers,
                    task_memory=args.task_memory, progress=True, products=args.products,
                    keep_products=args.keep_products, cull=args.cull,
                    db=args.db or Config.from_toml(args.config).run.db or "default")
    for reftype, path in summary["files"].items():
        print(f"{reftype.upper():9s} {path}")
    if "db" in summary:
        print(f"recorded in {summary['db']}")
    s = summary["stats"]
    print(f"{summary['plan']}; {time.time() - t0:.1f} s")
    print(f"inputs {s['n_exposures']}; {_flag_counts(s)}; TELEGRAPH fraction {100 * s['telegraph_fraction']:.2f} %; negative rates "
          f"{100 * s['negative_rate_fraction']:.2f} %; frame rate {s['frame_rate']:.5f} DN/s; "
          f"median rate {s['median_rate']:.5f} DN/s" +
          (f"; bias level {s['bias_level']:.1f} DN" if "bias_level" in s else ""))
    verdict = "deliverable" if s["deliverable"] else "NOT deliverable"
    print(f"SNR {s['snr']:.2f} (required {s['snr_required']}): {verdict}")


def _cull(args) -> None:
    from ..stages.cull import cull, pictures
    from ..paths import write_table

    store = Path(args.store)
    output = Path(args.output or store.with_name(store.name.removesuffix(".zarr")
                                                 + "_culled.ecsv"))
    if output.suffix != ".ecsv":
        raise ValueError(f"--output {output} must end in .ecsv")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"folder {output.parent} of --output does not exist")
    tab, previews = cull(args.store, cfg=args.config, scheduler=args.scheduler, progress=True,
                         scratch=args.scratch)
    write_table(tab, output)
    folder = Path(args.pictures or output.with_name(output.stem + "_png"))
    pngs = pictures(tab, previews, folder, only_culled=not args.all_pictures)
    n = int(tab["culled"].sum())
    print(f"{output}: {len(tab)} exposures, {n} culled" +
          (f"; pictures in {folder}" if pngs else ""))
    for row in tab[tab["culled"]]:
        print(f"  culled {row['exposure']}: {row['reason']}")


def _analyze(args) -> None:
    from ..stages.analyze import analyze
    from ..config import Config

    s = analyze(args.outdir, compare=args.compare, config=args.config, report_dir=args.report,
                db=args.db or Config.from_toml(args.config).run.db or None)
    print(f"{s['html']}  ({s['json']})" + (f"; recorded in {s['db']}" if "db" in s else ""))
    print(f"{s['detector']} {s['readpatt']} {s['subarray']}: {s['n_inputs']} inputs; "
          f"{_flag_counts(s)}; median rate {s['median_rate']:.5f} DN/s; negative {100 * s['negative_rate_fraction']:.2f} %"
          + (f"; bias level {s['bias_level']:.1f} DN" if "bias_level" in s else ""))
    for w in s["warnings"]:
        print(f"  warning: {w}")
    verdict = "deliverable" if s["deliverable"] else "NOT deliverable"
    print(f"SNR {s['snr']:.2f} (required {s['snr_required']:g}): {verdict}")
    if not s["deliverable"]:
        raise NotDeliverable(f"SNR {s['snr']:.2f} is under the required {s['snr_required']:g}")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _fetch(args) -> None:
    from ..config import Config
    from ..stages.fetch import FetchError, fetch, summary_lines

    cfg = Config.from_toml(args.config)
    out = fetch(cfg, into=args.into, db=args.db, dry_run=args.dry_run, progress=_err)
    for path in out["fetched"]:
        print(path)
    for name in out.get("todo", []):
        print(f"would fetch {name}")
    for line in summary_lines(out):
        print(line)
    for line in out["failed"]:
        print(f"  failed: {line}", file=sys.stderr)
    if out["failed"]:
        raise FetchError(f"{len(out['failed'])} file(s) not fetched; first: {out['failed'][0]}")


def _monitor(args) -> None:
    from ..stages.monitor import monitor

    out = monitor(args.config, scheduler=args.scheduler, progress=_err)
    for group, label, dark in out["built"]:
        print(f"{group} {label}: {dark}")
    if not out["new"] and not out["built"]:
        print("nothing new: no input to take in, no period to build")
    for group, (held, more) in out["held"].items():
        if held or more:
            print(f"{group}: holding {held} input(s); about {more} more for the next period")
    print(f"recorded in {out['db']}" + (f"; trends in {out['trends']}" if out["trends"] else ""))


def _trends(args) -> None:
    from ..stages.trends import trends

    out = trends(args.db, args.output)
    print(f"{out['index']}: {len(out['pages'])} page(s), {out['points']} file(s)")
    for page in out["pages"]:
        print(f"  {page}")


def _record(args) -> None:
    from ..results import record_pending

    ids = record_pending(args.outdir, args.db)
    print(f"recorded {', '.join(f'{k.upper()} (id {v})' for k, v in ids.items())}")


def _check_science(args) -> None:
    from ..stages.science import check_science

    s = check_science(args.science, args.new, args.old, args.outdir, refkit=args.refkit,
                      background=args.background, config=args.config, db=args.db,
                      progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(f"{s['html']}  ({s['json']})" + (f"; recorded in {s['db']}" if "db" in s else ""))
    print(f"difference new - old: median {s['diff_median']:+.5f} DN/s, scatter "
          f"{s['diff_sigma']:.5f} DN/s ({s['diff_sigma_over_background']:.3f} of the science "
          f"noise {s['background_sigma']:.4f} DN/s; {s['diff_sigma_over_expected']:.2f} of "
          f"sqrt(UNC_new^2 + UNC_old^2) = {s['expected_sigma']:.5f})")
    if s["hot_n"]:
        print(f"hot pixels ({s['hot_n']}): residual {s['hot_residual_new']:+.4f} DN/s with the "
              f"new set, {s['hot_residual_old']:+.4f} with the old")
    print(f"newly DO_NOT_USE {s['new_do_not_use']} (no longer {s['gone_do_not_use']}); newly "
          f"UNRELIABLE_DARK {s['new_unreliable_dark']} (no longer {s['gone_unreliable_dark']})")


def _periods(args) -> None:
    from ..stages.periods import periods

    tab = periods(args.store, args.outdir, config=args.config, cull=args.cull,
                  mask_in=args.mask_in, scheduler=args.scheduler,
                  progress=lambda text: print(text, file=sys.stderr), db=args.db)
    tab["label", "start", "end", "months", "snr_predicted", "snr", "inputs", "median_rate",
        "new_hot", "deliverable"].pprint(max_width=-1, max_lines=-1)
    print(f"{args.outdir}/periods.ecsv; files in {args.outdir}/<label>/")
    if len(tab) <= 1:
        raise MasterOnly("too few inputs for any period: the master only")


def _masks(args) -> None:
    from ..stages.hotmasks import hot_masks

    tab = hot_masks(args.store, args.outdir, per=args.per, config=args.config, cull=args.cull,
                    mask_in=args.mask_in, scheduler=args.scheduler,
                    progress=lambda text: print(text, file=sys.stderr))
    tab["label", "start", "end", "months", "inputs", "hot", "new_vs_mask", "new",
        "cumulative_new"].pprint(max_width=-1, max_lines=-1)
    m = tab.meta
    print(f"growth {m['growth_per_month']:.1f} +- {m['growth_err']:.1f} new hot pixels a month "
          f"(counting error +- {m['growth_poisson_err']:.1f}); {args.outdir}/hot_growth.ecsv, "
          f"hot_growth.png, {len(tab)} MASK files")


def _per(text: str) -> str:
    from ..config import check_per

    try:
        check_per(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--per {exc}") from None
    return text


def _plan(args) -> None:
    import json

    from ..stages.plan import exposure_seconds, measured_per_file_snr, plan

    measured = {}
    if args.store:
        measured = measured_per_file_snr(args.store, args.config)
    per_file = args.per_file_snr if args.per_file_snr is not None else \
        measured.get("per_file_snr")
    if per_file is None:
        raise ValueError("give --per-file-snr or --store (to measure it)")
    readpatt = args.readpatt or measured.get("readpatt")
    ngroups = args.ngroups or measured.get("ngroups")
    duration = exposure_seconds(readpatt, ngroups, args.subarray or measured.get(
        "subarray", "FULL")) if readpatt and ngroups else None
    out = plan(per_file, args.target_snr, args.usable_fraction, args.epochs, duration,
               args.overhead)
    out.update({k: v for k, v in measured.items() if k != "per_file_snr"})
    if args.json:
        print(json.dumps(out))
        return
    if measured:
        print(f"{args.store}: {measured['store_inputs']} inputs give SNR "
              f"{measured['store_snr']:.2f}, so one file gives {per_file:.3f}")
    print(f"SNR {args.target_snr:g} from files of SNR {per_file:.3f}: {out['clean_per_epoch']} "
          f"clean files an epoch (SNR {out['expected_snr']:.2f})")
    print(f"at {100 * args.usable_fraction:.0f} % usable: request {out['request_per_epoch']} "
          f"an epoch, {out['request_total']} over {args.epochs} epoch(s)")
    if duration:
        print(f"{readpatt} x {ngroups} groups: {duration:.0f} s an exposure; "
              f"{out['science_hours_per_epoch']:.2f} h of science, "
              f"{out['charged_hours_per_epoch']:.2f} h charged an epoch "
              f"({out['charged_hours_total']:.1f} h in all, overhead x{out['overhead']:.3f})")


def _self_check(args) -> None:
    from ..stages.selfcheck import self_check
    from ..calibration.versions import tested_text, untested

    out = self_check(args.workdir, scheduler=args.scheduler, keep=args.keep,
                     say=lambda line: print(line, file=sys.stderr))
    have = ", ".join(f"{k} {v}" for k, v in out["versions"].items())
    for i, counts in enumerate(out["snowballs"]):
        if counts:
            print(f"  exposure {i + 1}: {counts['snowballs']} snowballs; of the "
                  f"{counts['regions']} regions in the planes stcal asked about, "
                  f"{counts['measured']} measured")
    if out["workdir"]:
        print(f"  kept: {out['workdir']}")
    if not out["equal"]:
        for line in out["differences"][:20]:
            print(f"  {line}")
        print(f"self-check FAILED on {have}: tiled calibration differs from jwst's own run; "
              "use --pieces whole")
        raise Verdict("self-check failed")
    note = "" if not untested() else f" (untested by nrsdark_dask: it was tested on " \
        f"{tested_text()})"
    print(f"self-check passed on {have}{note}: tiled equals jwst's own run bit for bit "
          f"({out['seconds']:.0f} s)")


def _verify(args) -> None:
    from ..store import RampStore, StoreError
    from ..store.metadata import problems as metadata_problems

    store = RampStore(args.store)
    if not store.exists():
        raise FileNotFoundError(f"no store at {args.store}")
    if bad := metadata_problems(store.path):
        for line in bad:
            print(f"  {line}")
        raise StoreError(f"{args.store}: {len(bad)} damaged metadata file(s); `nrsdark repair "
                         f"--store {args.store}` rebuilds what the store keeps")
    n = len(store.committed())
    for name in store.unverifiable():
        print(f"  {name}: no chunk manifest (committed by an older nrsdark_dask; not checked)")
    problems = store.verify(checksums=not args.quick)
    for line in problems:
        print(f"  {line}")
    what = "sizes" if args.quick else "sizes and checksums"
    if problems:
        raise StoreError(f"{args.store}: {len(problems)} problem(s) in {n} exposures ({what})")
    print(f"{args.store}: {n} exposures, every chunk present with its {what}")


def _repair(args) -> None:
    from ..store import RampStore, StoreError

    store = RampStore(args.store)
    path = store.local_path("repairing a store")
    if not (path / "zarr.json").exists() and not (path / "nrsdark_chunks").exists():
        raise FileNotFoundError(f"no store at {args.store}")
    fixed, lost = store.repair()
    for line in fixed:
        print(f"  repaired: {line}")
    for line in lost:
        print(f"  lost: {line}")
    if problems := store.verify():
        raise StoreError(f"{args.store}: still damaged after the repair ({problems[0]}; "
                         f"{len(problems)} problem(s))")
    print(f"{args.store}: " + ("nothing to repair; " if not fixed else "")
          + f"{len(store.committed())} exposures, metadata readable, every chunk present")


@dataclass(frozen=True)
class Subcommand:
    """One ``nrsdark`` subcommand: its name, the function that runs it (``None``: ``cli.main``
    runs it), its one-line help, its description and its arguments (:func:`arg`)."""

    name: str
    run: Callable | None
    help: str
    description: str = ""
    args: tuple = ()


def arg(*flags, **options) -> tuple:
    """One ``add_argument`` of a subcommand: its flags and options, as argparse takes them."""
    return flags, options


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("simulate", _simulate, help="write a simulated data set of uncal darks with truth",
               description="Write N simulated NIRSpec uncal darks, their truth, ASIC telemetry "
               "and an offline reference kit into OUTDIR (must not exist).", args=(
        arg("outdir"),
        arg("--readout", choices=["trad", "irs2"], default="trad"),
        arg("--readpatt", choices=list(inst.READ_PATTERNS), default=None, help="default: "
            "NRSRAPID (trad) or NRSIRS2RAPID (irs2)"),
        arg("--detector", type=str.upper, choices=list(inst.DETECTORS), default="NRS1"),
        arg("--subarray", type=str.upper, choices=list(inst.SUBARRAYS), default="FULL"),
        arg("--ngroups", type=int, default=None, help="default: 88 trad, 200 irs2"),
        arg("--nexp", type=_positive_int, default=4),
        arg("--seed", type=int, default=1),
        arg("--start", default="2023-07-01", help="first date (ISO)"),
        arg("--end", default="2024-06-30", help="last date (ISO)"),
        arg("--gratings", default="G140H,G395H", help="mix with weights, e.g. "
            "'G140H:3,G395H,PRISM,MIRROR'"),
        arg("--artifacts", action="store_true", help="inject report §3 failure cases: "
            "mode-switch bias residuals, MSA glow on PRISM, persistence"),
        arg("--glow-rate", type=_positive_float, default=0.006, metavar="DN_PER_S",
            help="MSA-glow stripe crest with --artifacts (default 0.006 DN/s, near the cull's "
            "limit; 0.02 shows to the eye)"),
        arg("--workers", type=_positive_int, default=1, help="processes (one exposure each)"),
        arg("--no-refkit", action="store_true", help="skip the reference kit"),
        arg("--hot-growth", type=float, default=0.0, help="new hot pixels a month in the "
            "simulated region, onsets spread over the dates (report §7.1: ~100 a month on a "
            "full frame)"),
        arg("--snowball-scale", type=_positive_float, default=1.0, metavar="X", help="X times "
            "the natural snowball rate (a few per full frame an hour): dense cases for snowball "
            "flagging"),
    )),
    Subcommand("select", _select, help="pre-filter inputs into a manifest (report §3)",
               description="One manifest row per input with accept/reject and a reason; prints "
               "the yield table (report §9 Table 5).", args=(
        arg("inputs", nargs="+", help="uncal/ramp/jump FITS files or folders"),
        arg("--telemetry", help="ASIC temperature table (ECSV/CSV: time, asic_temp[, "
            "detector]), or 'edb': fetch it from the engineering database ([telemetry] of "
            "--config; needs MAST_API_TOKEN) into telemetry.ecsv beside the manifest; see "
            "docs/telemetry.md"),
        arg("--exclude", help="exclusion list (ECSV/CSV with file[, reason], or text)"),
        arg("--cull", help="cull table of `nrsdark cull` (its culled exposures are rejected, "
            "beside --exclude)"),
        arg("-o", "--output", required=True, help="manifest to write (ECSV)"),
        arg("--requested", type=_count, help="number of darks requested (yield table)"),
        arg("--start", type=_date, help="first date to accept (ISO)"),
        arg("--end", type=_date, help="last date to accept (ISO, inclusive)"),
        arg("--dt-full", type=_kelvin, help="ASIC dT limit for full frames, K (0.02)"),
        arg("--dt-sub", type=_kelvin, help="ASIC dT limit for subarrays, K (0.13)"),
        arg("--accept-no-telemetry", action="store_true", help="accept inputs without telemetry "
            "instead of rejecting them"),
        arg("--config", help="TOML file overriding thresholds ([select] section)"),
    )),
    Subcommand("fetch", _fetch, help="download new NIRSpec dark exposures from MAST",
               description="The uncal files of the [fetch] section's programs (NRS_DARK; "
               "detectors, readout patterns, subarrays, dates) that are not here yet, from MAST "
               "into --into (default [fetch] into, else the first [monitor] inputs). Resumable; "
               "sizes and FITS checksums checked; each file recorded in the results database. "
               "Exclusive-access files need MAST_API_TOKEN. See docs/commands/fetch.md.", args=(
        arg("config", help="TOML file with a [fetch] section"),
        arg("--into", help="folder for the files (e.g. the one the monitor watches)"),
        arg("--db", help="results database (URL or SQLite path; default: the monitor's, "
            "[monitor] db or <[monitor] stores>/nrsdark_results.sqlite)"),
        arg("--dry-run", action="store_true", help="list what would be fetched"),
    )),
    Subcommand("calibrate", _calibrate, help="jwst detector1 on accepted inputs into a Zarr store",
               description="Each exposure's detector1 cut into Dask tasks that fit a memory "
               "budget (--pieces tiled, bit-identical to jwst's own whole-exposure run, --pieces "
               "whole); resumable; failures are logged in the store and do not stop the others.",
               args=(
        arg("manifest"),
        arg("--store", required=True, help="e.g. stores/NAME.zarr"),
        arg("--refkit", help="folder of local reference files (offline); default CRDS"),
        arg("--scheduler", help="threads[:N] | local[:N] | tcp://HOST:PORT | sync (default: "
            "[run] scheduler of --config, else local)"),
        arg("--config", help="TOML file ([run] scheduler)"),
        arg("--group", help="manifest group to calibrate (when there are several)"),
        arg("--pieces", choices=["tiled", "whole"], help="tiled (default): row slabs and group "
            "blocks as Dask tasks, each within --task-memory; whole: one jwst run per exposure "
            "(20-21 bytes per raw pixel-group: 8.2 GB for TRAD FULL 88 groups; local:N shrinks "
            "to the workers whose memory holds one each)"),
        arg("--task-memory", help="memory budget of one tiled task (default [run] task_memory, "
            "else 1.5GiB): sets the piece sizes"),
        arg("--record-tasks", metavar="FILE", help="tiled: write every exposure's task graph "
            "and each task's start, stop and worker to this JSON file (for capacity planning: "
            "docs, cluster)"),
        arg("--workdir", help="scratch folder of --pieces whole (default: inside the store's "
            "staging area)"),
        arg("--tile", type=_tile, help="chunk tile of a new store, YxX (default 256x256)"),
        arg("--group-chunk", type=_positive_int, help="groups per ramp chunk of a new store "
            "(default: chunks near 8 MiB)"),
        arg("--codec", choices=["none", "zstd", "blosc-lz4"], help="compression of a new "
            "store's ramps and rates (default none; DQ is always zstd)"),
        arg("--verbose", action="store_true", help="show jwst's INFO log"),
    )),
    Subcommand("build", _build, help="SUPERBIAS, DARK and MASK reference files from a store",
               description="Lazy tile-by-tile reductions of the report's §4.1, written as "
               "CRDS-format FITS validated with stdatamodels.", args=(
        arg("--store", required=True),
        arg("--outdir", required=True),
        arg("--mask-in", help="input MASK reference file, full frame or covering the store (cut "
            "to it); full-frame builds add the new hot pixels to it, subarray builds count them"),
        arg("--scheduler", help="threads[:N] | local[:N] | tcp://HOST:PORT | sync (default: "
            "[run] scheduler of --config, else threads)"),
        arg("--workers", type=_positive_int, help="threads of --scheduler threads (default: one "
            "per core)"),
        arg("--task-memory", help="memory budget of one ramp-pass task (default 1GiB): sets how "
            "many groups a task holds"),
        arg("--products", help="Zarr group (path or URL every worker can write) for the "
            "products of a cluster build (default: STORE.products/<stamp>.zarr beside the store)"),
        arg("--keep-products", action="store_true", help="keep a cluster build's products group "
            "(xarray opens it)"),
        arg("--db", help="results database to record the files in (SQLAlchemy URL, e.g. "
            "postgresql+psycopg://user@host/db, or an SQLite file; 'none': do not record; "
            "default [run] db, else nrsdark_results.sqlite beside the store)"),
        arg("--cull", help="cull table of `nrsdark cull`: the exposures it marks culled are "
            "left out"),
        arg("--config", help="TOML file overriding thresholds"),
        arg("--author", default="nrsdark_dask"),
    )),
    Subcommand("cull", _cull, help="score every exposure of a store for artifacts (mode switch, "
               "MSA glow, persistence) and list those to leave out", description="Residual "
               "images (an exposure minus the median of the others) scored in units of the "
               "noise; thresholds in [cull] of --config. Writes one row per exposure (exposure, "
               "artifact, score, culled, reason) and a PNG of each culled exposure's residuals.  "
               "Overrule by editing the 'culled' column; build --cull and select --cull read it.",
               args=(
        arg("--store", required=True),
        arg("-o", "--output", help="cull table to write (ECSV; default STORE_culled.ecsv beside "
            "the store)"),
        arg("--pictures", help="folder of the PNGs (default: OUTPUT without .ecsv, plus _png)"),
        arg("--all-pictures", action="store_true", help="a PNG of every exposure, not only the "
            "culled ones"),
        arg("--scheduler", help="threads[:N] | local[:N] | tcp://HOST:PORT | sync"),
        arg("--config", help="TOML file ([cull] thresholds)"),
        arg("--scratch", help="folder for the mean frames between passes, writable by every "
            "worker (default: a temporary folder beside a local store, else the system's "
            "temporary folder; on a multi-machine cluster give a shared one)"),
    )),
    Subcommand("monitor", _monitor, help="take in new darks: calibrate what is new into one "
               "store per input group, build the period darks that reach the SNR, record them, "
               "refresh the trend pages", description="One monitor run from the [monitor] "
               "section of CONFIG (inputs, telemetry, exclude, refkit, stores, outdir, cull, db; "
               "see docs/commands/monitor.md). Safe to run again: it takes in only what is new.",
               args=(
        arg("config", help="TOML file with a [monitor] section"),
        arg("--scheduler", help="threads[:N] (default), sync, local[:N], tcp://HOST:PORT"),
    )),
    Subcommand("trends", _trends, help="the monitor over time: a self-contained site of trend "
               "pages from the results database", args=(
        arg("--db", required=True, help="results database (SQLAlchemy URL or SQLite file)"),
        arg("-o", "--output", required=True, help="folder of the site (index.html, a page per "
            "detector x readout x subarray)"),
    )),
    Subcommand("record", _record, help="record a build whose recording failed (exit 3)",
               description="A build whose files were written but could not be recorded in the "
               "results database (exit 3) leaves OUTDIR/record-pending.json; this records those "
               "files, their inputs and statistics, then removes it.", args=(
        arg("outdir", help="the build's output folder"),
        arg("--db", help="results database (default: the one the build was given, when its URL "
            "holds no password)"),
    )),
    Subcommand("analyze", _analyze, help="QA report and delivery verdict of a build's files",
               description="Statistics of report §4.2, the SNR verdict, figures, one "
               "self-contained HTML report and a JSON of every number (default in OUTDIR/qa).  "
               "Exit status: 0 deliverable, 1 not deliverable, 2 error.", args=(
        arg("outdir", help="folder of reference files (the newest of each type) or files"),
        arg("--compare", nargs="+", help="previous reference files (folder or files): new hot "
            "pixels, DRK difference"),
        arg("--report", help="folder for report.html, report.json (default OUTDIR/qa)"),
        arg("--db", help="record the analysis in this results database (SQLAlchemy URL or "
            "SQLite file; default [run] db, else nothing recorded)"),
        arg("--config", help="TOML file ([delivery], [dark] hot_rate)"),
    )),
    Subcommand("check-science", _check_science, help="the report's §8: one science exposure "
               "calibrated with a new and an old reference set, the rates compared",
               description="Runs jwst detector1 (with superbias and dark_current) on SCIENCE "
               "twice, with the NEW and the OLD reference set, and compares the rates: "
               "difference image, median and scatter against both DARKs' UNC and the science "
               "noise, median column, hot-pixel residuals, pixels newly DO_NOT_USE or "
               "UNRELIABLE_DARK.  Writes check_science.html, check_science.json and both rate "
               "files into OUTDIR.", args=(
        arg("science", help="science exposure (uncal FITS)"),
        arg("--new", required=True, nargs="+", help="new reference set: a folder (the newest "
            "DARK, SUPERBIAS, MASK in it) or files"),
        arg("--old", required=True, nargs="+", help="old reference set: a folder or files, or "
            "'crds' (what CRDS selects; needs CRDS_SERVER_URL)"),
        arg("--refkit", help="folder of the other reference files (saturation, linearity, gain, "
            "readnoise, mask; refpix for IRS2); default CRDS"),
        arg("-o", "--outdir", required=True),
        arg("--background", help="box measuring the science noise: y0:y1,x0:x1 (0-based, end "
            "excluded; default every active pixel)"),
        arg("--config", help="TOML file ([dark] hot_rate, hot_rule)"),
        arg("--db", help="record the check in this results database (SQLAlchemy URL or SQLite "
            "file; default: nothing recorded)"),
    )),
    Subcommand("periods", _periods, help="temporal darks: the shortest date windows that reach "
               "the SNR, each built, plus a master for comparison", description="Predicts the "
               "inputs a period needs from the per-file SNR (SNR ~ sqrt(N)), cuts the dates into "
               "windows, confirms each window's SNR from its rates, builds each into "
               "OUTDIR/<label>/ and a master over all inputs (comparison only); "
               "OUTDIR/periods.ecsv is the table.  Exit status: 0 with at least one period dark, "
               "1 when the store holds too few inputs for any period (the master only), 2 on "
               "error.", args=(
        arg("--store", required=True),
        arg("--outdir", required=True),
        arg("--cull", help="cull table: its culled exposures are in no period"),
        arg("--mask-in", help="comparison MASK (new hot pixels per period)"),
        arg("--scheduler", help="as for build"),
        arg("--config", help="TOML file ([delivery] SNR and the build's settings)"),
        arg("--db", help="record each period's build and analysis in this results database "
            "(SQLAlchemy URL or SQLite file; default: nothing recorded)"),
    )),
    # run: cli.main runs it (nrsdark_dask.cli.run calls these commands)
    Subcommand("run", None, help="select -> calibrate -> [cull] -> build -> analyze from one "
               "TOML file", description="The pipeline in one command: the stages' inputs come "
               "from the [run] section of CONFIG (inputs, telemetry, exclude, refkit, store, "
               "outdir, cull, mask_in, compare; see docs/commands/run.md), every stage gets "
               "--config CONFIG. Each stage prints its command line. Exit 0 deliverable, 1 not "
               "deliverable, 2 a stage failed.", args=(
        arg("config", help="TOML file with a [run] section"),
    )),
    Subcommand("masks", _masks, help="hot-pixel masks per month (or per N inputs) and the growth "
               "of new hot pixels (report §7.1)", description="One MASK per month or per N "
               "inputs from that bin's rate images (HOT = mean rate > [dark] hot_rate), "
               "decoupled from the period darks; the new hot pixels per bin, their growth a "
               "month fitted, hot_growth.ecsv and hot_growth.png in OUTDIR.", args=(
        arg("--store", required=True),
        arg("--outdir", required=True),
        arg("--per", type=_per, help="'month' (calendar months, UTC) or a number of inputs "
            "(default [masks] per: month)"),
        arg("--cull", help="cull table: its culled exposures are left out"),
        arg("--mask-in", help="comparison MASK: the base of every mask, and its HOT pixels are "
            "not new"),
        arg("--scheduler", help="sync | threads[:N] (default threads)"),
        arg("--config", help="TOML file ([masks], [dark] hot_rate)"),
    )),
    Subcommand("plan", _plan, help="dark files to request per epoch for a target SNR",
               description="SNR grows as sqrt(N): clean files for the target SNR, files to "
               "request at the usable fraction, per epoch and in total, and their science and "
               "charged time (report §9.3-9.4).", args=(
        arg("--per-file-snr", type=_positive_float, help="SNR of a dark from one input file (or "
            "measure it with --store)"),
        arg("--target-snr", type=_positive_float, required=True),
        arg("--usable-fraction", type=_positive_float, required=True, help="fraction of "
            "observed files that survive the filters and culls (0-1]"),
        arg("--epochs", type=_positive_int, default=1),
        arg("--store", help="measure the per-file SNR (and the readout) from a store"),
        arg("--readpatt", type=str.upper, choices=list(inst.READ_PATTERNS), help="readout of "
            "the darks, for the time (default: the store's)"),
        arg("--ngroups", type=_positive_int, help="groups per dark (default: the store's)"),
        arg("--subarray", type=str.upper, choices=list(inst.SUBARRAYS)),
        arg("--overhead", type=_positive_float, default=92.0 / 72.1, help="charged / science "
            "time (default 1.276: the report's Cycle 4 program)"),
        arg("--config", help="TOML file ([delivery] SNR clipping, with --store)"),
        arg("--json", action="store_true", help="print one flat JSON object"),
    )),
    Subcommand("verify", _verify, help="check a store's committed chunks against their manifests",
               description="Every metadata file must be readable, and every chunk file each "
               "committed exposure's manifest lists must be there with its size and CRC32C "
               "checksum (reads the whole store; --quick: sizes only, as build and calibrate do "
               "before starting; every chunk a command reads is checked against its checksum as "
               "it is read).  Exit code 2 when anything is missing or damaged.", args=(
        arg("--store", required=True),
        arg("--quick", action="store_true", help="sizes only, no checksums"),
    )),
    Subcommand("repair", _repair, help="rebuild a store's damaged metadata from what it keeps",
               description="Restores the root zarr.json from its backup, an array's zarr.json "
               "from the root's consolidated metadata and a chunk manifest from the chunk files "
               "as they are now; says what was repaired and what was lost; then checks chunk "
               "sizes (`verify` checks the checksums).  Exit status 0 when the store is whole "
               "afterwards, else 2.", args=(
        arg("--store", required=True),
    )),
    Subcommand("self-check", _self_check, help="tiled calibration against jwst's own run on the "
               "installed jwst and stcal", description="Simulates a small set made to hit every "
               "cut of tiled calibration (dense snowballs and cosmic rays on the pieces' edges "
               "and the frame's), calibrates it with jwst's whole-exposure run and tiled, and "
               "compares the two stores bit for bit (about a minute).  Exit status 0 when they "
               "are equal, 1 when not.  Tiled calibration runs by default only on the jwst and "
               "stcal releases it was tested on; on others, a passing self-check is the evidence "
               "to set NRSDARK_TILED_UNTESTED=1.", args=(
        arg("--workdir", help="a new folder for the case and its stores (default: a temporary "
            "one)"),
        arg("--keep", action="store_true", help="keep the workdir afterwards"),
        arg("--scheduler", default="threads:2", help="default threads:2"),
    )),
)


def build_parser() -> argparse.ArgumentParser:
    """The ``nrsdark`` parser, made from :data:`SUBCOMMANDS`."""
    p = argparse.ArgumentParser(prog="nrsdark", description="NIRSpec bias, dark and bad-pixel-"
                                    "mask reference files (JWST-STScI-009226) on Dask, Zarr and "
                                    "xarray; `nrsdark COMMAND --help` for each command.")
    p.add_argument("--version", action="version", version=f"nrsdark_dask {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in SUBCOMMANDS:
        s = sub.add_parser(c.name, help=c.help,
                           **({"description": c.description} if c.description else {}))
        for flags, options in c.args:
            s.add_argument(*flags, **options)
        s.set_defaults(func=c.run)
    return p


