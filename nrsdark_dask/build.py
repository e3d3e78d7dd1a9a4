"""``nrsdark build``: store -> SUPERBIAS, DARK, MASK (report §4.1.1, §4.1.3-§4.1.4).

One graph, one ``dask.compute``: the product graph of :mod:`nrsdark_dask.reduce` (small
images, then one pass over the ramps that reads every chunk once, then the DQ planes) is
streamed tile by tile into the pre-sized FITS files of :mod:`nrsdark_dask.export`, and the
statistics printed at the end come from the same computation.

Memory: the ramp pass's tasks are shaped by ``task_memory`` (default 1 GiB, see
``reduce.plan_blocks``); at most ``workers`` of them run at once, next to the small images
(a few full-frame float planes).  Measured peaks are in ``benchmarks/results/SUMMARY.md``.

Schedulers: ``threads`` (default; dask's local threaded scheduler with ``workers`` threads:
the numba kernels release the GIL) and ``sync``.  Known limitation: on a ``distributed``
client the FITS-writing graph is not supported yet (the cluster issue).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import dask
import numpy as np

from .cluster import local_progress
from .config import Config
from .export import write_reference_files
from .jwst_recipe import reference_mismatches
from .reduce import BuildError, build_products, check_store
from .store import RampStore, file_sha256, open_dataset

SCHEDULERS = ("threads", "sync")
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_bytes(text) -> int:
    """``"1GiB"``, ``"512MB"``, ``"2e9"`` -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgG]i?)?[bB]?\s*", str(text))
    if not m:
        raise ValueError(f"cannot read {text!r} as a size (e.g. 1GiB, 512MB, 2e9)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def build(store, outdir, mask_in=None, scheduler: str = "threads", config=None,
          author: str = "nrsdark_dask", workers: int | None = None,
          task_memory=None, progress: bool = False) -> dict:
    """Write the reference files; return ``{"files": {reftype: path}, "stats": {...},
    "plan": str}``.  ``progress``: show the computation's progress on stderr
    (:func:`nrsdark_dask.cluster.local_progress`)."""
    from stdatamodels.jwst import datamodels as dm

    if scheduler not in SCHEDULERS:
        raise ValueError(f"build runs on {' or '.join(SCHEDULERS)} for now (see nrsdark_dask."
                         f"build); got {scheduler!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    budget = parse_bytes(task_memory) if task_memory is not None else None
    cfg = Config.from_toml(config)
    ds = open_dataset(store)
    layout = check_store(ds)
    used = ds.encoding["nrsdark_positions"]
    if unchecked := RampStore(store).unverifiable(used):
        warnings.warn(f"{len(unchecked)} exposure(s) of {store} predate chunk manifests; "
                      "their chunks cannot be checked", stacklevel=2)
    if damaged := RampStore(store).verify(used):
        raise BuildError(f"the store is damaged ({len(damaged)} problem(s); `nrsdark verify` "
                         "lists them all):\n  " + "\n  ".join(damaged[:10]))
    mask, notes = None, []
    if mask_in:
        bad = reference_mismatches(mask_in, "mask", layout)
        if bad:
            raise BuildError("--mask-in does not fit the store: " + "; ".join(bad))
        with dm.MaskModel(str(mask_in)) as m:
            mask = np.asarray(m.dq, np.uint32).copy()
        notes.append(f"Input MASK: {Path(mask_in).name} (SHA-256 {file_sha256(mask_in)})")
    versions = ds.attrs.get("provenance", {}).get("versions", {})
    options = {"scheduler": scheduler}
    if workers:
        options["num_workers"] = workers
    with dask.config.set(options), warnings.catch_warnings():
        # all-NaN pixels (fully masked) are expected: they are filled and flagged
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message=".*(invalid value|Mean of empty|Degrees of freedom).*")
        products = build_products(ds, cfg, mask_in=mask, task_memory=budget)
        with local_progress("build") if progress else contextlib.nullcontext():
            files, summary = write_reference_files(products, outdir, author=author,
                                                   versions=versions, also=products.stats,
                                                   notes=notes)
    out = {k: (np.asarray(v).item() if np.ndim(v) == 0 else np.asarray(v).tolist())
           for k, v in summary.items()}
    return {"files": {k: str(v) for k, v in files.items()}, "stats": out,
            "plan": products.plan.describe()}
