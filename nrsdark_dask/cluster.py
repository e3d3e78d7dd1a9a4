"""Where Dask work runs: one ``--scheduler`` string for every command.

=====================  =======================================================================
``threads``            in-process ``distributed.LocalCluster`` (threads; unit tests, notebooks)
``local`` / ``local:N``  ``LocalCluster`` of N single-threaded worker processes (default: one
                       per core); each worker gets an equal share of the machine's memory and
                       declares it as the resource ``MEMORY`` (bytes)
``tcp://HOST:PORT``    an existing scheduler (``dask scheduler`` + ``dask worker``); workers
                       should be started with ``--resources MEMORY=<bytes>`` so memory-hungry
                       tasks are never oversubscribed
``sync``               no cluster: tasks run one after the other in this process (debugging)
=====================  =======================================================================

The dashboard link is printed when a cluster starts.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

MEMORY = "MEMORY"


def _total_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil comes with distributed
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_scheduler(scheduler: str) -> tuple[str, int | str | None]:
    """Check a ``--scheduler`` string before any work: ``("threads"|"sync", None)``,
    ``("local", N)`` or ``("address", "tcp://HOST:PORT")``; a clear ValueError otherwise."""
    text = str(scheduler).strip()
    if text in ("threads", "sync"):
        return text, None
    if text == "local" or text.startswith("local:"):
        n = text.partition(":")[2] or str(os.cpu_count() or 1)
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"bad scheduler {scheduler!r}: local:N needs a worker count N >= 1")
        return "local", int(n)
    if text.startswith(("tcp://", "tls://", "ucx://")):
        host, _, port = text.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad scheduler address {scheduler!r}: use tcp://HOST:PORT")
        return "address", text
    raise ValueError(f"unknown scheduler {scheduler!r}; use threads, local[:N], "
                     "tcp://HOST:PORT or sync")


@contextmanager
def dask_client(scheduler: str = "local", quiet: bool = False, timeout: float = 20.0):
    """Yield a ``distributed.Client`` (or ``None`` for ``sync``).  An address that does not
    answer within ``timeout`` seconds is a clear OSError."""
    kind, arg = parse_scheduler(scheduler)
    if kind == "sync":
        yield None
        return
    from distributed import Client, LocalCluster

    if kind == "address":
        try:
            client = Client(arg, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"cannot reach the Dask scheduler at {arg} ({type(exc).__name__}: "
                          f"{exc})") from None
        cluster = None
    elif kind == "threads":
        cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=os.cpu_count(),
                               dashboard_address=":0", resources={MEMORY: _total_memory()})
        client = Client(cluster)
    else:
        n = arg
        per_worker = int(0.9 * _total_memory() / n)
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               memory_limit=per_worker, dashboard_address=":0",
                               resources={MEMORY: per_worker})
        client = Client(cluster)
    if not quiet:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


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
