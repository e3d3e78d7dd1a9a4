"""Where Dask work runs: one ``--scheduler`` string, meaning the same for every command.

=======================  =====================================================================
``sync``                 this process, one task after the other (debugging)
``threads[:N]``          this process, a pool of N threads (default: one per core): dask's
                         threaded scheduler for graphs (``build``), a thread pool for
                         per-exposure tasks (``calibrate``; as many at once as the machine's
                         memory holds); no cluster, no dashboard (unit tests, notebooks)
``local[:N]``            a ``distributed.LocalCluster`` of N single-threaded worker processes
                         (default: one per core); each gets an equal share of the machine's
                         memory and declares it as the resource ``MEMORY`` (bytes)
``tcp://HOST:PORT``      an existing ``distributed`` scheduler (``dask scheduler`` +
                         ``dask worker``); workers should declare ``--resources MEMORY=<bytes>``
                         so memory-hungry tasks are never oversubscribed
=======================  =====================================================================

The same string can come from the TOML configuration (``[run] scheduler``).  For ``local`` and
``tcp://`` the dashboard link is printed when the client connects.  A ``local`` cluster's
scheduler, workers and dashboard listen on 127.0.0.1 only (the dashboard elsewhere only if
``$NRSDARK_DASHBOARD_ADDRESS`` says so), and its workers' scratch space is a temporary
folder removed with the cluster.  Progress: dask's bar on a
terminal, a plain line every 10 s in logs (:func:`local_progress` for the local schedulers,
:func:`futures_progress` for a cluster).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .config import parse_scheduler  # the --scheduler grammar is configuration ([run])

MEMORY = "MEMORY"
DASHBOARD_ENV = "NRSDARK_DASHBOARD_ADDRESS"


def dashboard_address() -> str:
    """Where a ``local[:N]`` cluster's dashboard listens: 127.0.0.1 on a free port, unless
    ``$NRSDARK_DASHBOARD_ADDRESS`` asks otherwise (e.g. ``0.0.0.0:8787`` to reach it from
    another host: it has no authentication, so only on a trusted network)."""
    return os.environ.get(DASHBOARD_ENV) or "127.0.0.1:0"


def total_memory() -> int:
    """This machine's memory in bytes."""
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def stop_local_workers(client) -> None:
    """Stop a ``local[:N]`` cluster's worker processes now (an interrupted run: before its
    staging is removed, so no piece still running writes after the clean-up).  Workers of a
    cluster we did not start are left alone; their running pieces' leftovers are removed by
    the store's next writer."""
    cluster = getattr(client, "cluster", None)
    if cluster is not None:
        client.close()
        cluster.close()


@contextmanager
def dask_client(scheduler: str = "local", quiet: bool = False, timeout: float | None = None,
                malloc_trim: bool = True):
    """Yield a ``distributed.Client`` for ``local[:N]`` and addresses, ``None`` for ``sync``
    and ``threads`` (this process).  An address that does not answer within ``timeout``
    seconds (default: dask's ``distributed.comm.timeouts.connect``, 30 s) is a clear
    OSError.

    ``malloc_trim=False``: ``local[:N]`` workers start without distributed's
    ``MALLOC_TRIM_THRESHOLD_=65536`` (which makes glibc hand every freed block over 128 kB back
    to the OS).  jwst's steps allocate and free large temporaries all the time: with it, a
    tiled-calibration piece ran 1.8-2x slower (jump slab 2.2 -> 4.0 s) at the same peak RSS.
    Calibrate asks for this; on your own cluster start workers without a nanny, or with
    ``DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None``."""
    kind, arg = parse_scheduler(scheduler)
    if kind in ("sync", "threads"):
        yield None
        return
    from distributed import Client, LocalCluster

    if kind == "address":
        if timeout is None:
            import dask
            from dask.utils import parse_timedelta

            timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
        try:
            client = Client(arg, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach the Dask scheduler at {arg} ({type(exc).__name__}: "
                          f"{exc})") from None
        cluster = None
    else:
        import dask

        n = arg
        per_worker = int(0.9 * total_memory() / n)
        env = {} if malloc_trim else {
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        scratch = tempfile.mkdtemp(prefix="nrsdark-dask-")
        try:
            with dask.config.set(env, temporary_directory=scratch):
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       memory_limit=per_worker, host="127.0.0.1",
                                       dashboard_address=dashboard_address(),
                                       local_directory=scratch,
                                       resources={MEMORY: per_worker})
            client = Client(cluster)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    if not quiet:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
            shutil.rmtree(scratch, ignore_errors=True)


def map_unordered(fn, items: list, args: tuple, scheduler: str, client=None,
                  task_bytes: int | None = None, key=None):
    """``fn(item, *args)`` for every item, yielding results as they finish: one after the
    other (``sync``), on a thread pool of this process (``threads[:N]``: as many at once as
    the threads and, with ``task_bytes``, the machine's memory allow), or as one task each on
    the ``client``'s cluster (tasks named ``key(item)``; with ``task_bytes`` each asks for that
    much of the workers' ``MEMORY`` resource; the caller refuses a cluster too small for one
    before any work, :func:`check_task_fits`).  The caller handles each result before the
    next is waited for."""
    kind, n = parse_scheduler(scheduler)
    if client is None and kind == "sync":
        for item in items:
            yield fn(item, *args)
        return
    if client is None:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        if task_bytes:
            n = max(1, min(n, int(total_memory() // task_bytes)))
        with ThreadPoolExecutor(n) as pool:
            for fut in as_completed([pool.submit(fn, item, *args) for item in items]):
                yield fut.result()
        return
    from distributed import as_completed

    resources = {MEMORY: task_bytes} if task_bytes and worker_memory(client) else None
    futures = [client.submit(fn, item, *args, key=key(item) if key else None,
                             resources=resources, pure=False) for item in items]
    for fut in as_completed(futures):
        yield fut.result()
        fut.release()


def futures_progress(futures, label: str, stream=None, every_s: float = 10.0) -> None:
    """Wait for a cluster computation's futures with progress on stderr, counted over every
    task they depend on (distributed's progress plugin): a bar on a terminal; in logs a plain
    line every ``every_s`` seconds, ``label: done/total tasks (pct %), elapsed``."""
    from distributed.diagnostics.progressbar import TextProgressBar

    stream = stream or sys.stderr
    tty = stream.isatty()

    class _Progress(TextProgressBar):
        last = None

        def _draw_bar(self, remaining, all, **kwargs):
            if tty:
                frac = (1 - remaining / all) if all else 1.0
                stream.write(f"\r{label}: [{'#' * int(30 * frac):<30}] {100 * frac:3.0f} % "
                             f"{self.elapsed:.0f} s")
                stream.flush()
            elif remaining and (self.last is None or self.elapsed - self.last >= every_s):
                self.last = self.elapsed
                print(f"{label}: {all - remaining}/{all} tasks "
                      f"({100 * (all - remaining) / max(all, 1):.0f} %), {self.elapsed:.0f} s",
                      file=stream, flush=True)

        def _draw_stop(self, **kwargs):
            if tty:
                stream.write("\n")
                stream.flush()

    client = futures[0].client
    _Progress(futures, scheduler=client.scheduler.address, interval="200ms", loop=client.loop)


def check_task_fits(client, task_bytes: int | None, what: str = "one task") -> None:
    """Refuse a cluster whose largest worker declares less ``MEMORY`` than a task needs."""
    mem = worker_memory(client)
    if task_bytes and mem and task_bytes > max(mem):
        raise RuntimeError(f"{what} needs ~{task_bytes / 1e9:.1f} GB but the largest worker "
                           f"has {max(mem) / 1e9:.1f} GB; use fewer, larger workers")


def worker_memory(client) -> list[int]:
    """The MEMORY resource each worker declares (empty if none declares it)."""
    if client is None:
        return []
    info = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) \
        else client.scheduler_info()["workers"]
    return [int(w.get("resources", {}).get(MEMORY, 0)) for w in info.values()
            if w.get("resources", {}).get(MEMORY)]


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


@contextmanager
def local_progress(label: str, stream=None, every_s: float = 10.0, min_s: float = 2.0):
    """Progress of a computation on dask's local (threads/sync) schedulers: dask's
    ``ProgressBar`` on a terminal; in logs (not a terminal) a plain line every ``every_s``
    seconds, ``label: done/total tasks (pct %), elapsed``.  Nothing for runs under ``min_s``."""
    import time

    from dask.callbacks import Callback
    from dask.diagnostics import ProgressBar

    stream = stream or sys.stderr
    if stream.isatty():
        with ProgressBar(minimum=min_s, out=stream):
            yield
        return

    class _Lines(Callback):
        def _start_state(self, dsk, state):
            self.t0 = self.last = time.time()
            self.total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))

        def _posttask(self, key, result, dsk, state, worker_id):
            now = time.time()
            if now - self.last >= every_s and now - self.t0 >= min_s:
                self.last = now
                done = len(state["finished"])
                print(f"{label}: {done}/{self.total} tasks ({100 * done / max(self.total, 1):.0f} %)"
                      f", {now - self.t0:.0f} s", file=stream, flush=True)

    with _Lines():
        yield


def failure_reason(exc: BaseException) -> str:
    """One line for an exposure that failed: the exception and where it was raised (the
    innermost frame, file name and line), so that a failure deep inside jwst can be found
    from the summary alone."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
