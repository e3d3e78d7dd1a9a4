"""One exposure's detector1 as a Dask graph of pieces, and the loop that runs exposures' graphs
on any scheduler and yields each exposure as it is staged whole.

Per exposure (``TOKEN`` names it; the dashboard groups tasks by the name before it)::

    prepare ─┬─ bias-inputs ───────────────────────────────────────────────────────┐
             │  TRAD: early-slab × S ── refpix-groups × B ─┐                       │
             │  IRS2: early-groups × B ─ refpix-flags ─ refpix-offset (a chain) ─  │
             │                             refpix-groups × B ─┤                    │
             └─ jump-slab × S ─┬─ cds-scatter ────────────────┼─ store-rows × T ── finish
                               ├─ snowballs ────────────────┘                          │
                               └─ store-ramp × T ────────────────────────────────────┘

S row slabs, B group blocks, T tile rows (:mod:`~nrsdark_dask.calibration.budget`).  Stages meet
in the
scratch cubes (:mod:`.scratch`); task results are small (flags per group, samples, chunk
checksums; IRS2's running ``b_offset`` sum, 52 MB).

Schedulers (:mod:`nrsdark_dask.cluster`): ``sync`` and ``threads:N`` run one exposure's graph at
a time with dask's local schedulers; ``local:N`` and ``tcp://`` keep a few exposures in flight
(enough to keep every worker thread busy through an exposure's serial snowball step), each
task asking for the budget's worth of the workers' ``MEMORY`` resource.  A worker lost mid-piece
is replaced by dask re-running the piece: pieces never write into their own inputs, so the
rerun writes the same bytes.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

import numpy as np

from ..cluster import MEMORY, failure_reason, parse_scheduler, worker_memory
from ..store import disk_full
from . import pieces, stage, versions


def _after(fn, _deps, *args):
    """``fn(*args)`` once ``_deps`` (keys dask has computed) are done."""
    return fn(*args)


def _all_dnu(parts: list, how: str):
    return np.logical_and.reduce(parts) if how == "and" else np.concatenate(parts)


def token(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:16]


def exposure_graph(row: dict, store_path: str, layout, refs: dict | None, plan,
                   neg_jump_sigma: float, quiet: bool = True) -> tuple[dict, str]:
    """The task graph of one exposure (a dict in dask's format) and its final key, whose
    value is what :func:`stage.finish` returns."""
    tok = token(row["exposure"])
    prep = f"prepare-{tok}"
    dsk: dict = {prep: (stage.prepare, row, str(store_path), layout, refs, quiet,
                        versions.installed())}
    slabs, tiles = plan.slabs(layout.ny), plan.tile_spans(layout.ny, layout.tile_y)

    def key(kind, i=None):
        return f"{kind}-{tok}" if i is None else (f"{kind}-{tok}", i)

    bias = None
    if layout.has_bias:
        bias = key("bias-inputs")
        dsk[bias] = (pieces.bias_piece, prep)
    if layout.family == "TRAD":
        early = [key("early-slab", i) for i in range(len(slabs))]
        for k, (y0, y1) in zip(early, slabs):
            dsk[k] = (pieces.early_slab, prep, y0, y1)
        dsk[key("all-dnu")] = (_all_dnu, early, "and")
        refpix = []
        for j, (g0, g1) in enumerate(plan.blocks(layout.ngroups)):
            refpix.append(key("refpix-groups", j))
            dsk[refpix[-1]] = (_after, pieces.refpix_block, early, prep, g0, g1)
    else:
        blocks = plan.blocks(layout.ngroups, first_at_least=3)
        early = [key("early-groups", b) for b in range(len(blocks))]
        for k, (g0, g1) in zip(early, blocks):
            dsk[k] = (pieces.early_block, prep, g0, g1)
        flags = key("refpix-flags")
        dsk[flags] = (_after, pieces.refpix_flags, early, prep)
        offset = None
        for b, (g0, g1) in enumerate(blocks):
            k = key("refpix-offset", b)
            dsk[k] = (pieces.refpix_offset, prep, g0, g1, flags, offset)
            offset = k
        refpix = [key("refpix-groups", b) for b in range(len(blocks))]
        for b, (g0, g1) in enumerate(blocks):
            dsk[refpix[b]] = (pieces.refpix_block, prep, g0, g1, flags, offset, early[:b])
        dsk[key("all-dnu")] = (_all_dnu, refpix, "concat")
    jump = [key("jump-slab", i) for i in range(len(slabs))]
    for k, (y0, y1) in zip(jump, slabs):
        dsk[k] = (_after, pieces.jump_slab, refpix, prep, y0, y1, key("all-dnu"))
    dsk[key("cds-scatter")] = (stage.cds_scatter, jump)
    dsk[key("snowballs")] = (_after, pieces.snowballs, jump, prep)
    rows = [key("store-rows", t) for t in range(len(tiles))]
    ramps = [key("store-ramp", t) for t in range(len(tiles))]
    for t, (y0, y1) in enumerate(tiles):
        mine = [k for k, (a, b) in zip(jump, slabs) if a < y1 and b > y0]
        dsk[ramps[t]] = (_after, stage.store_ramp, mine, prep, layout, y0, y1)
        dsk[rows[t]] = (_after, stage.store_rows, [key("snowballs")], prep, layout, y0, y1,
                        key("cds-scatter"), plan.fit_rows, neg_jump_sigma)
    final = key("finish")
    dsk[final] = (stage.finish, prep, layout, bias, rows + ramps, key("cds-scatter"),
                  key("snowballs"))
    return dsk, final


def _failed(row, exc, store_path) -> dict:
    if isinstance(exc, OSError):
        exc = disk_full(exc, store_path, row["exposure"]) or exc
    return {"status": "failed", "name": row["exposure"], "reason": failure_reason(exc)}


def key_name(key) -> str:
    """A task key as text (``jump-slab-<token>[3]``)."""
    return key if isinstance(key, str) else f"{key[0]}[{key[1]}]"


def task_kind(key) -> str:
    """What a task does (``jump-slab``): its key without the exposure token and index."""
    return (key if isinstance(key, str) else key[0]).rsplit("-", 1)[0]


def run_exposures(rows: list[dict], store_path, layout, refs, plan, scheduler: str, *,
                  neg_jump_sigma: float, client=None, quiet: bool = True, progress: bool = False,
                  flying: int = 1, record: list | None = None):
    """Calibrate ``rows`` piecewise, ``flying`` exposures at a time (:func:`exposures_in_flight`);
    yield each exposure's result as it is staged whole (or failed: one exposure's failure, any
    piece's, fails that exposure alone).  ``record``: a list that gets, per exposure, its
    graph (each task's kind and dependencies) and, per task run, its start, stop and worker
    (:func:`nrsdark_dask.stages.calibrate.calibrate`'s ``record_tasks``)."""
    from dask.core import get_dependencies

    kind, n = parse_scheduler(scheduler)
    graphs = [(row, *exposure_graph(row, store_path, layout, refs, plan, neg_jump_sigma, quiet))
              for row in rows]
    runs = None
    if record is not None:
        runs = {}
        for row, dsk, _ in graphs:
            tasks = {key_name(k): {"kind": task_kind(k), "deps": sorted(
                key_name(d) for d in get_dependencies(dsk, k))} for k in dsk}
            record.append({"exposure": row["exposure"], "tasks": tasks,
                           "runs": {name: [] for name in tasks}})
            runs.update(record[-1]["runs"])
    if client is None:
        yield from _run_local(graphs, kind, n, flying, store_path, progress, runs)
    else:
        yield from _run_cluster(graphs, client, plan, flying, store_path, progress, runs)


def _run_local(graphs, kind, n, flying, store_path, progress, runs=None):
    """``sync``: one piece after the other.  ``threads:N``: one pool of N threads shared by a
    few exposures' graphs in flight (dask's threaded scheduler, one ``get`` per exposure)."""
    import dask

    total = sum(len(dsk) for _, dsk, _ in graphs)
    if kind == "sync":
        with _PieceCount(total, progress, runs):
            for row, dsk, final in graphs:
                try:
                    yield dask.get(dsk, final)
                except Exception as exc:  # noqa: BLE001 - fails this exposure only
                    yield _failed(row, exc, store_path)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def one(row, dsk, final):
        try:
            return dask.threaded.get(dsk, final, pool=pool)
        except Exception as exc:  # noqa: BLE001 - fails this exposure only
            return _failed(row, exc, store_path)

    with ThreadPoolExecutor(n) as pool, \
            ThreadPoolExecutor(flying) as drivers, _PieceCount(total, progress, runs):
        yield from (f.result() for f in as_completed([drivers.submit(one, *g) for g in graphs]))


class _PieceCount:
    """Progress of the local schedulers: ``calibrate: done/total pieces`` every 10 s; with
    ``runs`` ({task name: list}), each task's start, stop and thread appended to its list."""

    def __init__(self, total, on: bool, runs=None, every_s: float = 10.0):
        import threading

        from dask.callbacks import Callback

        self.total, self.done, self.last = total, 0, time.time()
        me = self
        started: dict = {}

        class _Count(Callback):
            def _pretask(self, key, dsk, state):
                if runs is not None:
                    started[key] = time.time()

            def _posttask(self, key, result, dsk, state, worker_id):
                me.done += 1
                if runs is not None and key_name(key) in runs:
                    runs[key_name(key)].append({"start": started.pop(key, None),
                                                "stop": time.time(),
                                                "worker": threading.get_ident()})
                if on and time.time() - me.last >= every_s:
                    me.last = time.time()
                    print(f"calibrate: {me.done}/{me.total} pieces", file=sys.stderr,
                          flush=True)

        self.callback = _Count() if on or runs is not None else None

    def __enter__(self):
        if self.callback:
            self.callback.__enter__()
        return self

    def __exit__(self, *exc):
        if self.callback:
            self.callback.__exit__(*exc)
        return False


def exposures_in_flight(threads: int, pieces_per_stage: int, free_disk: int,
                        scratch: int) -> int:
    """Exposures worked on at once: enough pieces for every thread, plus one to fill the gaps
    of an exposure's serial steps (snowballs, IRS2's offset chain); no more than 80 % of the
    free disk holds the scratch of (each exposure in flight has its cubes, :mod:`.scratch`)."""
    want = 1 + math.ceil(threads / max(1, pieces_per_stage))
    return max(1, min(want, int(0.8 * free_disk // max(1, scratch))))


def _warm_workers(client) -> None:
    """Every worker imports jwst and freezes its objects (:func:`pieces.warm_up`) now, beside
    its first task (in the worker's event loop, from a thread of ours), instead of in its
    first piece: ~2 s off the start of every worker that does not run ``prepare``."""
    import threading

    def run():
        try:
            client.run(pieces.warm_up)
        except Exception:  # noqa: BLE001 - only a head start; pieces warm up anyway
            pass

    threading.Thread(target=run, daemon=True, name="nrsdark-warm-up").start()


def _run_cluster(graphs, client, plan, width, store_path, progress, runs=None):
    from contextlib import nullcontext

    from distributed import get_task_stream

    with get_task_stream(client) if runs is not None else nullcontext() as stream:
        yield from _cluster_loop(graphs, client, plan, width, store_path, progress)
    if runs is not None:
        import ast

        for task in stream.data:
            key = task["key"]
            if isinstance(key, str) and key.startswith("("):  # a tuple key, as text
                key = ast.literal_eval(key)
            name = key_name(key)
            if name in runs:
                for s in task.get("startstops", ()):
                    if s.get("action") == "compute":
                        runs[name].append({"start": s["start"], "stop": s["stop"],
                                           "worker": task.get("worker")})


def _cluster_loop(graphs, client, plan, width, store_path, progress):
    from distributed import as_completed

    resources = {MEMORY: plan.budget} if worker_memory(client) else None
    _warm_workers(client)
    pending = list(graphs)
    flying: dict = {}  # finish future key -> (row, futures of its pieces)
    done_pieces = total_pieces = 0
    last = time.time()
    ac = as_completed()

    def submit():
        nonlocal total_pieces
        row, dsk, final = pending.pop(0)
        keys = list(dsk)
        futures = client.get(dsk, keys, sync=False, resources=resources)
        by_key = dict(zip(keys, futures))
        flying[by_key[final].key] = (row, futures)
        total_pieces += len(futures)
        for f in futures:
            ac.add(f)

    while pending and len(flying) < width:
        submit()
    for fut in ac:
        done_pieces += 1
        if fut.key in flying:
            row, futures = flying.pop(fut.key)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - fails this exposure only
                result = _failed(row, exc, store_path)
                client.cancel(futures)
            for f in futures:
                f.release()
            yield result
            while pending and len(flying) < width:
                submit()
        elif fut.status == "finished":
            fut.release()  # dask keeps it while a dependent needs it
        if progress and time.time() - last >= 10:
            last = time.time()
            print(f"calibrate: {done_pieces}/{total_pieces} pieces of {len(graphs)} exposures",
                  file=sys.stderr, flush=True)
