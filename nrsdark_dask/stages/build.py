"""``nrsdark build``: store -> SUPERBIAS, DARK, MASK (report §4.1.1, §4.1.3-§4.1.4).

One graph, one ``dask.compute``: the product graph of :mod:`nrsdark_dask.reduction.graph` (small
images, then one pass over the ramps that reads every chunk once, then the DQ planes) is
streamed tile by tile into the pre-sized FITS files of :mod:`nrsdark_dask.export.fits`, and the
statistics printed at the end come from the same computation.

Memory: the ramp pass's tasks are shaped by ``task_memory`` (default 1 GiB, see
``reduction.budget.plan_blocks``); at most ``workers`` of them run at once, next to the small images
(a few full-frame float planes).  Measured peaks are in ``benchmarks/results/SUMMARY.md``.

Schedulers (:mod:`nrsdark_dask.cluster`): ``sync`` and ``threads[:N]`` compute in this
process straight into the pre-sized files; ``local[:N]`` and ``tcp://HOST:PORT`` compute on a
``distributed`` cluster whose workers share only the store: they write the products into a
Zarr group beside it, which this process streams into the files.  Execution lives here;
:mod:`nrsdark_dask.export.fits` pre-sizes, validates and publishes the files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from .. import results
from ..calibration.recipe import reference_mismatches
from ..cluster import dask_client, local_progress, parse_scheduler
from ..config import Config, ingest_settings, parse_bytes, settings_history, store_ingest
from ..export.fits import pending_files, process_alive
from ..reduction.budget import DEFAULT_TASK_MEMORY
from ..reduction.graph import build_products
from ..reduction.source import BuildError, check_store
from ..store import RampStore, file_sha256, open_dataset
from .select import cull_note, read_culled


def cut_to_store(plane: np.ndarray, ystart: int, xstart: int, layout) -> np.ndarray:
    """The store's region of a reference plane that covers it (a full-frame MASK for a
    subarray build, as jwst's ``reffile_utils`` cuts reference files for subarray data);
    ``ystart``/``xstart``: the plane's own 1-based SUBSTRT.  IRS2 planes keep their 3200 raw
    rows (full frame only)."""
    if plane.shape == (layout.ny_raw, layout.nx):
        return plane.copy()
    y0, x0 = layout.ystart - ystart, layout.xstart - xstart
    if y0 < 0 or x0 < 0 or y0 + layout.ny > plane.shape[0] or x0 + layout.nx > plane.shape[1]:
        raise BuildError(f"the reference plane ({plane.shape[0]} x {plane.shape[1]} from row "
                         f"{ystart}, column {xstart}) does not contain the store's region")
    return plane[y0:y0 + layout.ny, x0:x0 + layout.nx].copy()


def read_mask_in(mask_in, layout) -> np.ndarray:
    """The DQ plane of a MASK reference file, checked against the store (REFTYPE, DETECTOR,
    readout family, region) and cut to the store's region."""
    from stdatamodels.jwst import datamodels as dm

    bad = reference_mismatches(mask_in, "mask", layout)
    if bad:
        raise BuildError("--mask-in does not fit the store: " + "; ".join(bad))
    with dm.MaskModel(str(mask_in)) as m:
        return cut_to_store(np.asarray(m.dq, np.uint32), m.meta.subarray.ystart or 1,
                            m.meta.subarray.xstart or 1, layout)


# Statistics a build prints, and the range outside which they are not physics but damage
# (corrupt inputs, a wrong unit): a build whose statistics fall outside refuses to publish.
# Dark rates of the NIRSpec detectors are ~0.005-0.05 DN/s (report Table 2); the raw counts
# are 16-bit (0..65535 DN).
SANE = {"frame_rate": (-100.0, 100.0), "median_rate": (-100.0, 100.0),
        "bias_level": (-1000.0, 70000.0), "unc_mean": (0.0, 100.0)}


def insane_statistics(stats: dict) -> list[str]:
    """The statistics of ``stats`` that are not finite or outside :data:`SANE`."""
    out = []
    for key, (lo, hi) in SANE.items():
        if key in stats:
            v = float(np.asarray(stats[key]).ravel()[0])
            if not (np.isfinite(v) and lo <= v <= hi):
                out.append(f"{key} {v:.6g} (expected {lo:g} to {hi:g})")
    return out


def _compute(p, pending, client, products, keep_products: bool, progress: bool, outdir):
    """The build's one computation: every array of the pending files (tile by tile) and the
    statistics together, so shared pieces are computed once; without ``client`` on the local
    scheduler the caller configured, straight into the files; with a ``distributed`` client
    through a Zarr group of the products (:func:`_compute_on_cluster`).  The statistics are
    checked (:func:`_refuse_insane`) before the files are published.  Returns the files and
    the computed statistics."""
    if client is None:
        stored = da.store(pending.sources, pending.targets, lock=False, compute=False)
        _, computed = dask.compute(stored, p.stats)  # on the scheduler the caller configured
    else:
        if products is None and p.store:
            clean_dead_products(p.store)
        # beside the store; products computed from an edited dataset (no store): in outdir
        default = products_location(p.store or Path(outdir) / "nrsdark", pending.stamp)
        computed = _compute_on_cluster(client, pending, p.stats, products or default,
                                       keep_products, progress)
    _refuse_insane(computed)
    return pending.publish(), computed


def _products_folder(store) -> str:
    """``<store without .zarr>.products``: where cluster builds put their products groups."""
    base = str(store).rstrip("/")
    return (base[:-5] if base.endswith(".zarr") else base) + ".products"


def products_location(store, stamp: str) -> str:
    """Default home of a cluster build's products: ``<store without .zarr>.products/
    <stamp>-<host>-<pid>.zarr`` beside the store (the one place every worker can write)."""
    return f"{_products_folder(store)}/{stamp}-{socket.gethostname()}-{os.getpid()}.zarr"


def clean_dead_products(store) -> list[Path]:
    """Remove the products groups that cluster builds on this host left beside a local
    ``store`` when they were killed (:func:`products_location`; their process is gone), as
    :func:`export.check_writable` removes their ``.part`` files.  Returns what was removed."""
    if "://" in str(store):
        return []
    folder = Path(_products_folder(store))
    host, out = socket.gethostname(), []
    for group in folder.glob(f"*-{host}-*.zarr") if folder.is_dir() else ():
        owner, _, pid = group.name[:-5].rpartition("-")
        if owner.partition("-")[2] == host and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(group, ignore_errors=True)
            out.append(group)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return out


def _compute_on_cluster(client, pending, also, products: str, keep: bool, progress: bool):
    """The cluster path: workers compute every array into a Zarr group ``products`` (each
    dask block one Zarr chunk, so concurrent writes never share a chunk; xarray opens it:
    dimension names are set), with ``also`` in the same computation; then this process
    streams the group into the pending files' ``targets``, one chunk per thread at a time.
    The group is removed afterwards unless ``keep``."""
    import fsspec
    import zarr
    from zarr.codecs import ZstdCodec

    from ..cluster import futures_progress

    group = zarr.open_group(products, mode="w", zarr_format=3)
    arrays = []
    sources, targets = pending.sources, pending.targets
    for name, src, dim in zip(pending.names, sources, pending.dims):
        arrays.append(group.create_array(
            name, shape=src.shape, chunks=tuple(int(c[0]) for c in src.chunks),
            dtype=src.dtype, fill_value=0, dimension_names=dim,
            compressors=ZstdCodec(level=1) if src.dtype.kind in "ub" else None))
    try:
        stored = da.store(sources, arrays, lock=False, compute=False)
        futures = client.compute([stored, also])
        if progress:
            futures_progress(futures, "build")
        _, computed = client.gather(futures)
        da.store([da.from_zarr(a) for a in arrays], targets, lock=False, scheduler="threads")
    finally:
        if not keep:
            fs, root = fsspec.core.url_to_fs(products)
            fs.rm(root, recursive=True)
            parent = Path(root).parent
            if "file" in fs.protocol and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()  # the local products folder, once empty (never a bucket)
    return computed



def _refuse_insane(stats: dict) -> None:
    if bad := insane_statistics(stats):
        raise BuildError("the build's statistics are not physical, nothing was published: "
                         + "; ".join(bad) + " (corrupt or wrongly calibrated inputs? `nrsdark "
                         "verify --store` checks every chunk)")


def build(store, outdir, mask_in=None, scheduler: str | None = None, config=None,
          author: str = "nrsdark_dask", workers: int | None = None,
          task_memory=None, progress: bool = False, products: str | None = None,
          keep_products: bool = False, cull=None, exclude=(), notes=(), db=None) -> dict:
    """Write the reference files; return ``{"files": {reftype: path}, "stats": {...},
    "plan": str}``.

    ``scheduler`` (:mod:`nrsdark_dask.cluster`; default the configuration's ``[run]
    scheduler``, else ``threads``): ``sync`` and ``threads[:N]`` compute in this process,
    straight into the files (``workers`` threads, default N); ``local[:N]`` and
    ``tcp://HOST:PORT`` compute on a ``distributed`` cluster, whose workers write the
    products into a Zarr group ``products`` (default beside the store, see
    ``products_location``; kept with ``keep_products``) that this process then streams
    into the files.  The two paths give bit-identical files.  ``progress``: progress on
    stderr and the dashboard link.  ``cull``: a cull table (``nrsdark cull``); the exposures
    it marks culled are left out (selected from the store, nothing copied) and HISTORY says
    so.  ``exclude``: more exposures to leave out (``periods``); ``notes``: more HISTORY.
    ``db``: record the files in that results database (:mod:`nrsdark_dask.results`: a URL,
    an SQLite path, or "default", SQLite beside the store; the command line's default);
    ``None`` records nothing.  The result then has ``"db"`` (the URL, password hidden) and
    ``"reffile_ids"`` (``{reftype: the file's id in the database}``)."""
    import time

    t0, started = time.perf_counter(), results.now()
    url = results.resolve(db, store)  # a bad database is refused before any work
    cfg = Config.from_toml(config)
    scheduler = scheduler or cfg.run.scheduler or "threads"
    kind, threads = parse_scheduler(scheduler)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    budget = parse_bytes(task_memory or cfg.run.task_memory or DEFAULT_TASK_MEMORY)
    culled = read_culled(cull) if cull else {}
    ds = open_dataset(store, exclude=set(culled) | set(exclude))
    layout = check_store(ds)
    positions, rs = ds.encoding["nrsdark_positions"], RampStore(store)
    if damaged := rs.verify(positions):
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise BuildError(f"the store is damaged: {damaged[0]}{more}; `nrsdark verify --store "
                         f"{store}` lists it all, `nrsdark repair` rebuilds damaged metadata")
    if unchecked := rs.unverifiable(positions):
        warnings.warn(f"{len(unchecked)} exposure(s) of {store} predate chunk manifests; "
                      "their chunks cannot be checked", stacklevel=2)
    used, asked = store_ingest(ds.attrs.get("provenance", {})), ingest_settings(cfg)
    if used != asked:
        raise BuildError(f"the configuration asks {asked}, but {store} was calibrated with "
                         f"{used}: those settings act at ingest (calibrate --config, into a new "
                         "store)")
    mask, notes = None, settings_history(cfg) + list(notes)
    if cull:
        notes.append(cull_note(cull, len(culled)))
    if mask_in:
        mask = read_mask_in(mask_in, layout)
        notes.append(f"Input MASK: {Path(mask_in).name} (SHA-256 {file_sha256(mask_in)})")
    versions = ds.attrs.get("provenance", {}).get("versions", {})
    local = {"scheduler": "sync" if kind == "sync" else "threads",
             "num_workers": workers or threads}
    with dask_client(scheduler, quiet=not progress) as client, \
            dask.config.set(local if client is None else {}), warnings.catch_warnings():
        # all-NaN pixels (fully masked) are expected: they are filled and flagged
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message=".*(invalid value|Mean of empty|Degrees of freedom).*")
        products_ = build_products(ds, cfg, mask_in=mask, task_memory=budget)
        shown = local_progress("build") if progress and client is None \
            else contextlib.nullcontext()
        with shown, pending_files(products_, outdir, author=author, versions=versions,
                                  notes=notes) as pending:
            files, summary = _compute(products_, pending, client, products, keep_products,
                                      progress, outdir)
    out = {k: (np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v).tolist())
           for k, v in summary.items()}
    res = {"files": {k: str(v) for k, v in files.items()}, "stats": out,
           "plan": products_.plan.describe()}
    if url:
        every = open_dataset(store)
        skipped = set(culled) | set(exclude)
        inputs = [{"exposure": str(e), "date": results.from_seconds(d),
                   "used": str(e) not in skipped}
                  for e, d in zip(every.exposure.values, every.date.values)]
        table = None
        if cull:
            from astropy.table import Table

            table = Table.read(cull, format="ascii.ecsv")
        software = {**results.software_versions(), "store": versions}
        wall = time.perf_counter() - t0
        try:
            with results.ResultsDB(url) as rdb:
                res["reffile_ids"] = rdb.record_build(res, store, inputs, table, started,
                                                      wall, software)
                res["db"] = rdb.safe_url
        except results.ResultsError as exc:  # the files stay; recorded later
            pending = results.write_pending(outdir, url, res, store, inputs, cull, started,
                                            wall, software)
            raise results.RecordFailed(f"{exc}; the files are kept, and `nrsdark record "
                                       f"{outdir}` records them later", res["files"],
                                       pending) from None
    return res
