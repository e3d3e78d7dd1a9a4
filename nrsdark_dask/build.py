"""``nrsdark build``: store -> SUPERBIAS, DARK, MASK (report §4.1.1, §4.1.3-§4.1.4).

Two phases: the whole-frame statistics (small images only) are computed first, then the tile
graph streams every reference-file array into its FITS file (see ``reduce`` and ``export``).

Schedulers: ``threads`` (default; dask's local threaded scheduler: the numba kernels release
the GIL) and ``sync``.  Known limitation: on a ``distributed`` client the FITS-writing graph
currently fails ("lost dependencies"); running ``build`` on a cluster comes with the cluster
issue, which must fix that first.
"""

from __future__ import annotations

import warnings

import dask
import numpy as np

from .config import Config
from .export import write_reference_files
from .reduce import build_products, compute_frame_statistics
from .store import open_dataset

SCHEDULERS = ("threads", "sync")


def build(store, outdir, mask_in=None, scheduler: str = "threads", config=None,
          author: str = "nrsdark_dask") -> dict:
    """Write the reference files; return ``{"files": {reftype: path}, "stats": {...}}``."""
    from stdatamodels.jwst import datamodels as dm

    if scheduler not in SCHEDULERS:
        raise ValueError(f"build runs on {' or '.join(SCHEDULERS)} for now (see nrsdark_dask."
                         "build); got {scheduler!r}")
    cfg = Config.from_toml(config)
    ds = open_dataset(store)
    mask = None
    if mask_in:
        with dm.MaskModel(str(mask_in)) as m:
            mask = np.asarray(m.dq, np.uint32).copy()
    versions = ds.attrs.get("provenance", {}).get("versions", {})
    with dask.config.set(scheduler=scheduler), warnings.catch_warnings():
        # all-NaN pixels (fully masked) are expected: they are filled and flagged
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message=".*(invalid value|Mean of empty|Degrees of freedom).*")
        stats = compute_frame_statistics(ds, cfg)
        products = build_products(ds, cfg, stats=stats, mask_in=mask)
        files = write_reference_files(products, outdir, author=author, versions=versions)
        (summary,) = dask.compute(products.stats)
    out = {k: (v.item() if hasattr(v, "item") else v) for k, v in summary.items()}
    return {"files": {k: str(v) for k, v in files.items()}, "stats": out}
