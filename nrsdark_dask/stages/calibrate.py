"""``nrsdark calibrate``: every accepted manifest row through jwst detector1 into the
calibrated-ramp store, committed exposure by exposure (report §4.1.2; the store: ``docs/store.md``).

Two ways to run jwst (``--pieces``), with the same recipe and bit-identical stores:

* ``tiled`` (default): each exposure's detector1 cut into Dask tasks
  (:mod:`nrsdark_dask.calibration`:
  row slabs, group blocks, one tile row of the store each) that each fit a per-task memory
  budget (``--task-memory``, default 1.5 GiB); a few exposures in flight keep every worker
  busy.  TRAD FULL 88 groups: 3.2 GiB for the whole process tree on 2 workers, against
  7.7 GiB for jwst's own run (``benchmarks/results/calibrate-tiled-trad88.json``).
* ``whole``: jwst's own whole-exposure run, one task per exposure (:func:`calibrate_exposure`);
  a task needs jwst's peak for one exposure, estimated by :func:`whole_task_memory` from the
  measured cost (``calibration.recipe.MEMORY_MODEL``, ``bench_tiled.py whole-memory``: TRAD FULL 88
  groups 8.2 GB, IRS2 FULL 200 groups ~27 GB extrapolated).

Already-calibrated inputs (jwst ``*_jump``/``*_rate`` files) are read, not calibrated, and
stream from memory-mapped files either way.

* Idempotent and resumable: an exposure is its file name and content hash
  (``store.exposure_id``); exposures whose content is already in the store are skipped; a run
  killed at any point leaves a store holding only whole exposures (see ``store.writer``), and the
  next run completes it.  A worker lost mid-piece is replaced by dask re-running the piece.
* A failing input (corrupt, truncated, vanished, changed since select, wrong instrument...)
  fails only its own exposure; the reason goes to the store log (``nrsdark_log.jsonl``) and to
  the summary; the others still land.
* Refused before any work, and before a new store is created: a bad scheduler or one that does
  not answer, inputs that disagree with each other or with the store (detector, readout,
  subarray, ngroups, geometry, or uncal vs already-calibrated), the same content twice, chunking
  options that differ from an existing store's, a reference kit that does not fit the data
  (``calibration.recipe.check_reference_kit``), a task budget too small for the exposure's smallest
  pieces, a store disk without room for one exposure's scratch cubes, a cluster whose largest
  worker declares less ``MEMORY`` than a task asks for.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

from ..calibration import ingest
from ..calibration import recipe as recipe
from ..calibration import versions
from ..calibration.budget import DEFAULT_TASK_MEMORY, plan_pieces, scratch_bytes
from ..calibration.graph import exposures_in_flight, run_exposures
from ..calibration.stage import refusals, work_path
from ..cluster import (check_task_fits, dask_client, failure_reason, map_unordered,
                       parse_scheduler, stop_local_workers)
from ..config import Config, DarkConfig, ingest_settings, parse_bytes, store_ingest
from ..kernels import difference_scatter
from ..paths import atomic_write, human_bytes
from ..reduction.source import check_groups
from ..results import peak_rss
from ..store import (DEFAULT_TILE, STAGING, RampStore, StoreError, StoreLayout, exposure_id,
                     file_sha256, staging_path, write_staging)
from .select import read_manifest

PIECES = ("tiled", "whole")

# A whole-exposure task peaks at jwst's whole-exposure run (calibration.recipe.MEMORY_MODEL, measured
# with the staging included), never below ~1.8 GB; declared with a 5 % margin.
MEMORY_FLOOR_BYTES = 1.8e9
MEMORY_MARGIN = 1.05
NEG_JUMP_SIGMA = DarkConfig().neg_jump_sigma  # the default; a store records the one it used


def whole_task_memory(layout: StoreLayout) -> int:
    """Bytes of worker memory one exposure's whole-exposure calibration needs (jwst's measured
    peak, :data:`calibration.recipe.MEMORY_MODEL`, with a 5 % margin): 8.6 GB for TRAD FULL 88
    groups, 28 GB for IRS2 FULL 200 groups.
    Already-calibrated inputs (no bias inputs) are streamed from memory-mapped files: measured
    0.52-0.61 GB for full frames of 20 and 88 groups (benchmarks/results/
    calibrate_calibrated.md), declared as the 1.8 GB floor."""
    if not layout.has_bias:
        return int(MEMORY_MARGIN * MEMORY_FLOOR_BYTES)
    peak = recipe.detector1_memory(layout.family, layout.ngroups * layout.ny_raw * layout.nx)
    return int(MEMORY_MARGIN * max(MEMORY_FLOOR_BYTES, peak))


def whole_workers(scheduler: str, layout: StoreLayout) -> str:
    """``--pieces whole`` on ``local:N``: as many workers as the machine's memory holds
    exposures at once, saying so when that is fewer than N; an exposure too large for the whole
    machine is refused (use tiled).  Each local worker gets 90 % of the memory over N, and
    dask stops a worker at 95 % of that: one exposure needs :func:`whole_task_memory` within it."""
    from ..cluster import total_memory

    kind, n = parse_scheduler(scheduler)
    if kind != "local":
        return scheduler
    need, have = whole_task_memory(layout), int(0.95 * 0.9 * total_memory())
    fit = have // need
    if fit < 1:
        raise ValueError(f"--pieces whole: one {layout.ngroups}-group {layout.subarray} "
                         f"{layout.family} exposure needs ~{need / 1e9:.1f} GB, this machine "
                         f"has {have / 1e9:.1f} GB for workers: use --pieces tiled")
    n = n or 1
    if fit < n:
        print(f"calibrate: --pieces whole: one exposure needs ~{need / 1e9:.1f} GB, "
              f"{have / 1e9:.1f} GB hold {fit}: local:{fit} instead of local:{n}",
              file=sys.stderr)
        return f"local:{fit}"
    return scheduler



def software_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("nrsdark_dask", "jwst", "stcal", "stdatamodels", "stpipe", "crds", "numpy",
                "dask", "distributed", "zarr", "xarray", "astropy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def calibrate_exposure(row: dict, store_path: str, layout: StoreLayout, refs: dict | None,
                       workdir: str, verbose: bool = False,
                       neg_jump_sigma: float = NEG_JUMP_SIGMA) -> dict:
    """The Dask task for one exposure: calibrate (or read) it and stage it in the store.

    Never raises: returns ``{"status": "ok", "name", "coords", "seconds", "peak_rss_gb"}`` or
    ``{"status": "failed", "name", "reason"}``.  jwst logs only warnings unless ``verbose``.
    Memory: jwst's peak for one exposure (:func:`whole_task_memory`); an already-calibrated input
    needs far less: its files are memory-mapped and read group block by group block, the
    summaries are made plane by plane (benchmarks/results/calibrate_calibrated.md).
    """
    if not verbose:
        for logger in recipe.JWST_LOGGERS:
            logging.getLogger(logger).setLevel(logging.WARNING)
    name = row["exposure"]
    t0 = time.time()
    res = None
    try:
        ingest.check_input(row, layout)
        if row["kind"] == "uncal":
            res = recipe.run_detector1(row["file"], refs, workdir=workdir, with_bias=True,
                                       quiet=not verbose)
        else:
            res = recipe.read_calibrated(row["file"], row["rate_file"])
        # (G, y, x) ramp and group DQ: in-memory arrays after jwst, or for already-calibrated
        # inputs read-only memory-mapped views that read one plane or block per index
        # (recipe.MappedArray).  Everything below works plane by plane or block by block, so the
        # task never holds a second copy of the exposure (write_staging streams it to Zarr).
        ramp, gdq = res.exposure_arrays()
        diff_sigma = difference_scatter(ramp)
        data = {"ramp": ramp, "groupdq": gdq,
                "pixeldq": res.ramp.pixeldq, "rate": res.rate.data, "rate_err": res.rate.err,
                **ingest.pixel_summaries(ramp, gdq, diff_sigma, layout.group_times(),
                                         neg_jump_sigma)}
        g1_mean, g1_std = ingest.group1_statistics(data["group1"], layout)
        bias_level = float("nan")
        if layout.has_bias:
            data["bias_groups"] = res.bias_groups
            bias_level = ingest.bias_level(res.bias_groups, layout)
        write_staging(store_path, name, layout, data)
        p = res.provenance
        coords = ingest.exposure_coords(row, p, diff_sigma, g1_mean, g1_std, bias_level)
        return {"status": "ok", "name": name, "coords": coords, "provenance": p,
                "seconds": round(time.time() - t0, 1),
                "peak_rss_gb": round(peak_rss(children=False) / 1e9, 2)}
    except Exception as exc:  # noqa: BLE001 - one bad input must not stop the others
        return {"status": "failed", "name": name, "reason": failure_reason(exc)}
    finally:
        if res is not None:
            res.close()


def _rows_for(manifest, group: str | None) -> tuple[str, list[dict]]:
    acc = manifest[manifest["accepted"]]
    if len(acc) == 0:
        raise ValueError("the manifest accepts no input")
    groups = sorted(set(acc["group"]))
    if group is None:
        if len(groups) > 1:
            raise ValueError(f"the manifest has {len(groups)} groups ({', '.join(groups)}); "
                             "choose one with --group")
        group = groups[0]
    elif group not in groups:
        raise ValueError(f"group {group!r} not in the manifest's accepted groups: "
                         f"{', '.join(groups)}")
    rows = [{c: (v.item() if hasattr(v, "item") else v) for c, v in zip(acc.colnames, r)}
            for r in acc[acc["group"] == group]]
    return group, rows


def _identify(rows: list[dict], workers: int = 2) -> None:
    """Give every row its exposure identity (``exposure``: file name @ SHA-256 prefix): the
    manifest's ``sha256`` where ``select`` wrote it, else the file's, hashed here (two
    threads; hashlib releases the GIL).  A row whose file has gone keeps its file name: its
    task fails alone."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [r for r in rows if not r.get("sha256") and Path(r["file"]).exists()]
    with ThreadPoolExecutor(workers) as pool:
        for r, h in zip(todo, pool.map(lambda r: file_sha256(r["file"]), todo)):
            r["sha256"] = h
    for r in rows:
        r["exposure"] = exposure_id(r["name"], r["sha256"]) if r.get("sha256") else r["name"]


def _refuse_duplicates(rows: list[dict]) -> None:
    seen, dup = {}, []
    for r in rows:
        if r.get("sha256") in seen:
            dup.append(f"{r['file']} has the same content as {seen[r['sha256']]}")
        elif r.get("sha256"):
            seen[r["sha256"]] = r["file"]
    if dup:
        raise StoreError("the manifest accepts the same exposure twice (`nrsdark select` "
                         "rejects such duplicates):\n  " + "\n  ".join(dup))


def _store_options(store: RampStore, tile, codec, group_chunk) -> None:
    """Chunking options given for an existing store must be the store's own (as a new store
    would clamp them: a tile no larger than the frame, a group chunk no longer than the
    ramp)."""
    lay = store.layout()
    bad = []
    if tile is not None and (min(tile[0], lay.ny), min(tile[1], lay.nx)) != (lay.tile_y,
                                                                            lay.tile_x):
        bad.append(f"--tile {tile[0]}x{tile[1]} (the store has {lay.tile_y}x{lay.tile_x})")
    if codec is not None and codec != lay.codec:
        bad.append(f"--codec {codec} (the store has {lay.codec})")
    if group_chunk is not None and min(group_chunk, lay.ngroups) != lay.groups_per_chunk:
        bad.append(f"--group-chunk {group_chunk} (the store has {lay.groups_per_chunk})")
    if bad:
        raise StoreError(f"{store.path} exists with other chunking: {', '.join(bad)}; "
                         "chunking is chosen when a store is created (omit the option or use a "
                         "new store)")


def _check_existing(store, layout, settings: dict):
    """The layout of an existing ``store``, refusing inputs or settings it does not hold."""
    bad = store.layout().mismatches(layout)
    if bad:
        raise StoreError(f"inputs disagree with the store {store.path}: {'; '.join(bad)}")
    used = store_ingest(store.provenance())
    if used != settings:
        raise StoreError(f"{store.path} was calibrated with {used}, the configuration asks "
                         f"{settings}: a store holds one setting (use a new store)")
    return store.layout()


def _scratch_room(store_path, layout, plan, client, kind, n) -> int:
    """How many exposures a tiled run keeps in flight (:func:`calibration.graph.exposures_in_flight`:
    threads and the disk's room for their scratch cubes); refuses a disk without room for one
    (before any work; a disk that fills later still fails only its exposure)."""
    where = Path(store_path).resolve().parent
    while not where.exists():
        where = where.parent
    free, need = shutil.disk_usage(where).free, scratch_bytes(layout)
    if free < need:
        raise StoreError(f"tiled calibration needs ~{human_bytes(need)} of scratch on the "
                         f"store's disk for each exposure in flight; {human_bytes(free)} free "
                         f"in {where}: free some, or use --pieces whole")
    if kind == "sync":
        return 1
    threads = sum(client.nthreads().values()) if client is not None else (n or 1)
    return exposures_in_flight(threads, len(plan.slabs(layout.ny)), free, need)


def calibrate(manifest_path, store_path, refkit=None, scheduler: str | None = None,
              group: str | None = None, workdir=None, tile=None, codec: str | None = None,
              progress=None, verbose: bool = False, group_chunk: int | None = None,
              config=None, pieces: str | None = None, task_memory=None, plan=None,
              record_tasks=None) -> dict:
    """Calibrate the accepted inputs of one manifest group into ``store_path``.

    ``pieces`` (default ``config``'s ``[run] pieces``, else ``tiled``): ``tiled`` cuts each
    uncal exposure's detector1 into pieces that each fit ``task_memory`` (default
    ``[run] task_memory``, else 1.5 GiB; :mod:`nrsdark_dask.calibration`), bit-identical to
    ``whole``, jwst's own whole-exposure run (one task per exposure, 20-21 bytes per raw
    pixel-group: :func:`whole_task_memory`; ``local:N`` shrinks to the workers whose memory holds
    one exposure each, :func:`whole_workers`).  Already-calibrated inputs are streamed from their files
    either way.  ``plan``: a :class:`calibration.budget.PiecePlan` to use instead of the budget's
    (tests and benchmarks cut exposures finer than a budget would).  ``record_tasks``: a JSON
    file to write (atomically, at the end) with every exposure's task graph and each task's
    start, stop and worker: what ``benchmarks/capacity.py`` replays for other cluster sizes
    (tiled only).

    ``scheduler``: :mod:`nrsdark_dask.cluster` (default: ``config``'s ``[run] scheduler``,
    else ``local``).  ``tile``, ``codec``, ``group_chunk``: the chunking of a new store
    (default 256 x 256, no compression, chunks near 8 MiB; see ``store.schema``); given for an
    existing store they must be its own.  Everything is checked before any work and before
    the store is created: the scheduler (and that its address answers), the chunking, that
    the inputs agree with each other and with the store, that the reference kit fits them,
    that no exposure comes twice.  An exposure is known by its file name and content hash (:func:`store.exposure_id`); one
    whose content the store already holds is skipped.  A row whose file has disappeared fails
    alone.

    Returns a summary: committed, skipped (already there), failed [(exposure, reason)], store.
    ``progress(event: dict)`` is called for every finished exposure.
    """
    cfg = Config.from_toml(config)
    scheduler = scheduler or cfg.run.scheduler or "local"
    parse_scheduler(scheduler)
    asked = pieces or cfg.run.pieces  # None: the default, tiled where the releases allow
    if (asked or "tiled") not in PIECES:
        raise ValueError(f"--pieces must be one of {', '.join(PIECES)}, not {asked!r}")
    budget = task_memory or cfg.run.task_memory or DEFAULT_TASK_MEMORY
    parse_bytes(budget)  # a bad size is refused before any work
    store = RampStore(store_path)
    group, rows, layout, refs, settings = _checked_inputs(
        manifest_path, group, store, refkit, tile, codec, group_chunk, cfg)
    tiled, scheduler = _pieces_for(asked, layout, scheduler)
    kind, n = parse_scheduler(scheduler)
    given = plan
    threads = n if kind in ("threads", "local") else 1  # a cluster's: once it answers
    plan = given or (plan_pieces(layout, budget, threads=threads) if tiled else None)  # refusal
    summary = {"store": str(store_path), "group": group, "committed": [], "skipped": [],
               "failed": [], "pieces": "tiled" if tiled else "whole"}
    with dask_client(scheduler, quiet=progress is None,  # a bad cluster: no store
                     malloc_trim=not tiled) as client:
        if tiled and client is not None and given is None:
            plan = plan_pieces(layout, budget, threads=sum(client.nthreads().values()))
        check_task_fits(client, plan.budget if tiled else whole_task_memory(layout),
                        "one piece" if tiled else "one exposure")  # before a store exists
        flying = _scratch_room(store_path, layout, plan, client, kind, n) if tiled else None
        if not store.exists():
            store, layout = _create_store(store_path, layout, settings, manifest_path, group,
                                          refkit)
        with store.writer():
            there = store.committed_hashes()
            todo = [r for r in rows if r.get("sha256") not in there]
            summary["skipped"] = [there[r["sha256"]] for r in rows if r.get("sha256") in there]
            store.log(event="start", group=group, todo=len(todo),
                      skipped=len(summary["skipped"]), scheduler=scheduler,
                      pieces=summary["pieces"],
                      **({"task_memory": plan.budget, "in_flight": flying} if tiled else {}))
            record = [] if record_tasks and tiled else None
            started = time.time()
            try:
                _calibrate_into(store, store_path, todo, summary, layout, refs, plan, scheduler,
                                client, settings, tiled, verbose, progress, flying, record,
                                workdir)
            except BaseException:  # Ctrl-C, SIGTERM: no worker writes after the clean-up
                stop_local_workers(client)
                raise
            store.log(event="end", committed=len(summary["committed"]),
                      failed=len(summary["failed"]))
        if record is not None:
            _write_record(record_tasks, record, started, scheduler, client, layout, plan)
    return summary



def _checked_inputs(manifest_path, group, store: RampStore, refkit, tile, codec, group_chunk,
                    cfg: Config) -> tuple:
    """The manifest group's rows and their layout, everything checked before any work: one
    kind of input, files present, the chunking (an existing store's own), the inputs agreeing
    with each other and with the store, the reference kit fitting them, no exposure twice.
    Returns ``(group, rows, layout, refs, ingest settings)``."""
    group, rows = _rows_for(read_manifest(manifest_path), group)
    if len({r["kind"] for r in rows}) > 1:
        raise ValueError("the group mixes uncal and already-calibrated inputs; a store holds one "
                         "kind (bias inputs exist only for uncal)")
    present = [r for r in rows if Path(r["file"]).exists()]
    if not present:
        raise FileNotFoundError(f"none of the {len(rows)} accepted input files exists "
                                f"(first: {rows[0]['file']})")
    store.local_path("calibrate")
    if store.exists():
        store.check_appendable()
        _store_options(store, tile, codec, group_chunk)
        lay = store.layout()
        tile, codec, group_chunk = (lay.tile_y, lay.tile_x), lay.codec, lay.group_chunk
    tile, codec = tile or (DEFAULT_TILE, DEFAULT_TILE), codec or "none"
    layout = ingest.layout_of(present[0], tile, codec, group_chunk)
    check_groups(layout.ngroups)
    refused = [f"{r['name']}: {'; '.join(bad)}" for r in present[1:]
               if (bad := layout.mismatches(ingest.layout_of(r, tile, codec)))]
    if refused:
        raise StoreError("inputs disagree with each other:\n  " + "\n  ".join(refused))
    settings = ingest_settings(cfg)
    if store.exists():
        layout = _check_existing(store, layout, settings)
    refs = recipe.refkit_files(refkit) if refkit else None
    if refs and layout.has_bias:
        recipe.check_reference_kit(refs, layout)
    _identify(rows)
    _refuse_duplicates(rows)
    return group, rows, layout, refs, settings


def _pieces_for(asked: str | None, layout, scheduler: str) -> tuple[bool, str]:
    """Tiled or whole, and the scheduler to use: tiled (the default) where the installed jwst
    and stcal releases are proven and the recipe's parameters allow (an explicit ``tiled``
    that cannot be is refused; the default falls back to whole, saying why); whole runs on
    as many local workers as the machine's memory holds exposures (:func:`whole_workers`)."""
    tiled = (asked or "tiled") == "tiled" and layout.has_bias
    if tiled and (why := versions.tiled_refusal()):
        if asked:
            raise ValueError(why)
        print(f"calibrate: --pieces whole: {why}", file=sys.stderr)
        tiled = False
    if tiled and (bad := refusals(recipe.step_arguments({}, layout.family, None),
                                  layout.family)):
        raise ValueError("tiled calibration cannot honour: " + "; ".join(bad)
                         + " (use --pieces whole)")
    if not tiled and layout.has_bias:
        scheduler = whole_workers(scheduler, layout)
    return tiled, scheduler


def _create_store(store_path, layout, settings: dict, manifest_path, group, refkit):
    """A new store with the run's provenance (manifest and group, recipe, parameters,
    references, versions, ingest settings); one that another calibrate created meanwhile is
    taken as it is, once checked.  Returns ``(store, layout)``."""
    Path(store_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return RampStore.create(store_path, layout, provenance={
            "manifest": str(Path(manifest_path).resolve()), "group": group,
            "steps": list(recipe.DETECTOR1_STEPS), "step_parameters": recipe.STEP_PARAMETERS,
            "refkit": str(Path(refkit).resolve()) if refkit else "CRDS",
            "versions": software_versions(), "ingest": settings}), layout
    except FileExistsError:  # two calibrates at once: the other one created it
        store = RampStore(store_path)
        if not store.exists():
            raise
        return store, _check_existing(store, layout, settings)


def _calibrate_into(store, store_path, todo, summary, layout, refs, plan, scheduler, client,
                    settings, tiled, verbose, progress, flying, record, workdir) -> None:
    """Calibrate ``todo`` into ``store`` (held by this process), committing each exposure as
    it lands; ``summary`` gets each outcome."""
    if tiled:
        results = run_exposures(todo, store_path, layout, refs, plan, scheduler,
                                client=client, neg_jump_sigma=settings["neg_jump_sigma"],
                                quiet=not verbose,
                                progress=progress is not None, flying=flying, record=record)
    else:
        work = str(workdir or Path(store_path) / STAGING / "_work")
        args = (str(store_path), layout, refs, work, verbose, settings["neg_jump_sigma"])
        results = map_unordered(calibrate_exposure, todo, args, scheduler, client,
                                task_bytes=whole_task_memory(layout),
                                key=lambda r: f"calibrate-{r['exposure']}")
    for result in results:
        if result["status"] == "ok":
            index = store.commit(result["name"], result["coords"])
            store.log(event="committed", name=result["name"], index=index,
                      seconds=result["seconds"], peak_rss_gb=result["peak_rss_gb"],
                      **{k: result[k] for k in ("snowballs",) if k in result})
            summary["committed"].append(result["name"])
        else:
            store.log(event="failed", name=result["name"], reason=result["reason"])
            summary["failed"].append((result["name"], result["reason"]))
            shutil.rmtree(staging_path(store_path, result["name"]), ignore_errors=True)
        shutil.rmtree(work_path(store_path, result["name"]), ignore_errors=True)
        if progress:
            progress(dict(result, done=len(summary["committed"]) + len(summary["failed"]),
                          total=len(todo)))


def _write_record(path, record: list, started: float, scheduler: str, client, layout,
                  plan) -> None:
    """The ``record_tasks`` file: the run (when, where, how cut) and each exposure's graph and
    task runs (:func:`calibration.graph.run_exposures`)."""
    import json
    from dataclasses import asdict

    workers = dict(client.nthreads()) if client is not None else None
    doc = {"started": started, "ended": time.time(), "scheduler": scheduler,
           "workers": workers, "layout": asdict(layout),
           "plan": {k: v for k, v in asdict(plan).items() if k != "peaks"},
           "versions": software_versions(), "exposures": record}
    atomic_write(path, json.dumps(doc, default=str))
