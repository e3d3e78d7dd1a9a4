"""``nrsdark monitor CONFIG.toml``: new darks taken in as they arrive (issue 22 item 3).

Each run, from the ``[monitor]`` section (:class:`nrsdark_dask.config.MonitorConfig`):

0. with ``source = "mast"``, **fetch** from MAST what is new (``[fetch]``,
   :mod:`nrsdark_dask.stages.fetch`) into the first ``inputs`` folder; with ``telemetry = "edb"``,
   the ASIC temperatures of every input from the engineering database (``[telemetry]``,
   :mod:`nrsdark_dask.telemetry`; cached) into ``<outdir>/telemetry.ecsv``.  A file that
   could not be fetched is reported and the run goes on with the others; it then ends with
   an error naming it (the next run tries it again, continuing a cut download);
1. **select** every input under ``inputs`` (the pre-filter, ``select``); each input group
   (detector / readout / subarray placement / disperser group, ``select.group_key``) goes to
   its own store, ``<stores>/<group>.zarr``: no ``--group`` by hand;
2. **calibrate** what a store lacks (the exposures it already holds are skipped);
3. **cull** (with ``cull = true``) the store's exposures: ``<outdir>/<group>/culled.ecsv``;
4. **periods**: the store's usable exposures in date order, after those the windows already
   built hold (the ``monitor_windows`` table of the results database), are taken into the
   next window one by one until the window's own SNR (its rate images, as ``periods``
   confirms) reaches the requirement; such a window is built (``<outdir>/<group>/T<k>/``),
   analysed against the group's previous DARK, recorded, and the next one starts after it.
   What is left is *held*: the database (``monitor_groups``) says how many inputs it holds
   and how many more the sqrt(N) law (``periods``, ``plan``) says a window needs;
5. **trends**: the site ``<outdir>/trends/`` is written again when something was built.

**One run at a time** (cron-safe): a run holds an exclusive lock on
``<stores>/.nrsdark-monitor.lock`` (``flock``, released by the kernel when the process ends,
however it ends); a second run while one holds it is refused in one line.

Windows are data-determined (the smallest run of consecutive inputs that reaches the SNR,
counted from the end of the previous window), so darks arriving in date order give the same
windows, files and records whether they come in one batch or many.  A window is recorded
only once built and analysed: a run killed anywhere leaves no window half-recorded, and the
next run goes on (calibrate resumes, an unrecorded window is built again into a clean
folder).  A run with nothing new does nothing and says so.  Not batch-invariant: culling
compares each exposure with the others in its store, so a borderline cull can change as a
store grows; and darks arriving out of date order go after the windows already built.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from pathlib import Path

from ..config import Config
from .select import discover, groups, select_inputs, write_manifest


class MonitorError(ValueError):
    pass


def _say(progress, text: str) -> None:
    if progress:
        progress(text)


def monitor(config, scheduler: str | None = None, progress=None) -> dict:
    """One monitor run (module docstring).  ``config``: the TOML path (or a Config).  Returns
    ``{"new": n new inputs calibrated, "built": [(group, label, dark path)], "held":
    {group: (n held, n more needed)}, "db": url, "trends": index path or None}``."""
    cfg = Config.from_toml(config)
    m = cfg.monitor
    if not m.inputs or not m.outdir:
        raise MonitorError(f"{config}: [monitor] inputs and outdir are needed")
    stores = Path(m.stores)
    stores.mkdir(parents=True, exist_ok=True)
    with _one_run(stores / LOCK):
        return _monitor(cfg, config, scheduler, progress)


LOCK = ".nrsdark-monitor.lock"


@contextlib.contextmanager
def _one_run(path: Path):
    """An exclusive ``flock`` on ``path`` for the run (module docstring)."""
    import fcntl

    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            raise MonitorError(f"another nrsdark monitor run (pid {pid}) is using {path.parent};"
                               " this run is refused (one run at a time)") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()


def _monitor(cfg: Config, config, scheduler, progress) -> dict:
    from .. import results
    from .calibrate import calibrate
    from ..store import RampStore, exposure_id

    m = cfg.monitor
    scheduler = scheduler or cfg.run.scheduler or "threads"
    stores, outdir = Path(m.stores), Path(m.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    url = results.resolve(m.db or stores / results.DEFAULT_NAME)
    failed = []
    if m.source == "mast":
        from .fetch import fetch, summary_lines

        Path(m.inputs[0]).mkdir(parents=True, exist_ok=True)
        got = fetch(cfg, into=m.inputs[0], db=url, progress=progress)
        for line in summary_lines(got) + [f"not fetched: {f}" for f in got["failed"]]:
            _say(progress, line)
        failed = got["failed"]
    out = {"new": 0, "built": [], "held": {}, "db": url, "trends": None}
    try:
        discover(m.inputs)
    except ValueError:  # no input file yet (a missing folder is an error, FileNotFoundError)
        _say(progress, f"no input under {', '.join(m.inputs)} yet")
        _fetch_failures(failed)
        return out
    telemetry = m.telemetry or None
    if telemetry == "edb":
        from .select import edb_telemetry

        telemetry = edb_telemetry(m.inputs, outdir / "telemetry.ecsv", cfg.telemetry,
                                  cfg.select.telemetry_pad_s, progress=progress)
    manifest = select_inputs(m.inputs, telemetry=telemetry,
                             exclude=m.exclude or None, cfg=cfg.select)
    manifest_path = outdir / "manifest.ecsv"
    write_manifest(manifest, manifest_path)
    for group in map(str, groups(manifest)):
        rows = manifest[(manifest["group"] == group) & manifest["accepted"]]
        store = stores / f"{group}.zarr"
        have = set(RampStore(store).committed()) if store.exists() else set()
        new = [e for e in (exposure_id(r["name"], r["sha256"]) for r in rows) if e not in have]
        if new:
            _say(progress, f"{group}: calibrating {len(new)} new input(s) into {store}")
            summary = calibrate(manifest_path, store, refkit=m.refkit or None,
                                scheduler=scheduler, group=group, config=cfg)
            if summary["failed"]:
                raise MonitorError(f"{group}: {len(summary['failed'])} input(s) failed to "
                                   f"calibrate: {summary['failed'][0]}")
            out["new"] += len(new)
        if not store.exists():
            continue
        built, held = _periods(group, store, outdir / group, cfg, url, scheduler, progress)
        out["built"] += built
        out["held"][group] = held
    if out["built"]:
        from .trends import trends

        out["trends"] = trends(url, outdir / "trends")["index"]
    _fetch_failures(failed)
    return out


def _fetch_failures(failed: list[str]) -> None:
    """The run ends with an error when a file could not be fetched (the others were taken
    in; the next run tries it again)."""
    if failed:
        raise MonitorError(f"{len(failed)} file(s) could not be fetched from MAST (the rest "
                           f"was taken in; the next run tries again); first: {failed[0]}")


def _periods(group: str, store: Path, folder: Path, cfg: Config, url: str, scheduler,
             progress) -> tuple[list, tuple[int, int]]:
    """Build the group's windows that can reach the SNR now; record what is held."""
    import sqlalchemy as sa

    from .. import results
    from .analyze import analyze
    from .build import build
    from .cull import cull
    from ..paths import write_table
    from .periods import window_snr
    from ..store import open_dataset

    folder.mkdir(parents=True, exist_ok=True)
    every_ds = open_dataset(store)
    every = [str(e) for e in every_ds.exposure.values]
    culled_path = None
    if cfg.monitor.cull and len(every) >= cfg.cull.min_exposures:
        tab, _ = cull(store, cfg=cfg, scheduler=scheduler)
        culled_path = write_table(tab, folder / "culled.ecsv")
    culled = set()
    if culled_path:
        from .select import read_culled

        culled = set(read_culled(culled_path))
    order = sorted(zip(every_ds.date.values, every), key=lambda d: (d[0], d[1]))
    ids = [e for _, e in order if e not in culled]
    required = cfg.delivery.required(every_ds.attrs["layout"]["family"])
    with results.ResultsDB(url) as rdb:
        w, files = rdb.t["monitor_windows"], rdb.t["reffiles"]
        with rdb.connect() as conn:
            done = [dict(r._mapping) for r in conn.execute(
                sa.select(w).where(w.c.input_group == group).order_by(w.c.id))]
            previous = conn.execute(sa.select(files.c.path).where(
                files.c.id == done[-1]["reffile_id"])).scalar_one_or_none() if done else None
        start = 0
        if done:  # after the last window's last input, culled since or not
            dated = [e for _, e in order]
            last = dated.index(done[-1]["last_exposure"]) \
                if done[-1]["last_exposure"] in dated else len(dated)
            start = sum(1 for e in dated[:last + 1] if e not in culled)
        built = []
        k = len(done)
        while True:
            rest = ids[start:]
            found = None
            for n in range(2, len(rest) + 1):
                snr = window_snr(store, rest[:n], cfg, every)
                if snr >= required:
                    found = (n, snr)
                    break
            if found is None:
                break
            n, snr = found
            label = f"T{k}"
            keep = set(rest[:n])
            target = folder / label
            if target.exists():  # a window built by a run killed before it was recorded
                shutil.rmtree(target)
            _say(progress, f"{group}: {label} from {n} inputs reaches SNR {snr:.2f} "
                           f"(required {required:g}): building")
            res = build(store, target, scheduler=scheduler, config=cfg, cull=culled_path,
                        exclude=[e for e in every if e not in keep], db=url,
                        notes=[f"Monitor period {label} of {group}: {n} inputs"])
            analyze(target, compare=[previous] if previous else None, config=cfg, db=url)
            with rdb.begin() as conn:
                conn.execute(w.insert().values(
                    input_group=group, label=label, first_exposure=rest[0],
                    last_exposure=rest[n - 1], n_inputs=n, snr=snr,
                    reffile_id=res["reffile_ids"]["dark"]))
            built.append((group, label, res["files"]["dark"]))
            previous = res["files"]["dark"]
            start += n
            k += 1
        held = len(ids) - start
        per_file = window_snr(store, ids, cfg, every) / math.sqrt(len(ids)) \
            if len(ids) >= 2 else 0.0
        needed = math.ceil((required / per_file) ** 2) if per_file > 0 else 0
        more = max(needed - held, 1) if held or not built else 0
        with rdb.begin() as conn:
            g = rdb.t["monitor_groups"]
            conn.execute(g.delete().where(g.c.input_group == group))
            conn.execute(g.insert().values(
                input_group=group, store=str(store), n_inputs=len(ids), n_held=held,
                n_more_needed=more, per_file_snr=per_file, snr_required=required,
                updated=results.now()))
    _say(progress, f"{group}: {len(ids)} usable input(s), {k} window(s) built; holding {held},"
                   f" about {more} more needed for the next (per-file SNR {per_file:.3f})")
    return built, (held, more)

