"""What a build reads: the refusals of datasets the reductions cannot use
(:func:`check_store`, :func:`check_groups`), and the source policy (:func:`build_source`): a
dataset that is the store as opened (:func:`is_pristine`) is read straight from the store's
chunks (:func:`store_stack`), any other is computed from what it holds."""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from ..store import VARIABLES, StoreLayout, child, read_block


class BuildError(ValueError):
    pass


def _layout(ds) -> StoreLayout:
    return StoreLayout(**ds.attrs["layout"])


MIN_GROUPS = 3


def check_groups(ngroups: int) -> None:
    """The flag rules need at least :data:`MIN_GROUPS` groups: RC reads groups 1-3 (report
    §4.1.3), and jump detection (telegraph, RTN) needs two group differences."""
    if ngroups < MIN_GROUPS:
        raise BuildError(f"inputs of {ngroups} group(s): the flag rules need at least "
                         f"{MIN_GROUPS} (RC reads groups 1-3; jump detection, two differences)")


NEEDED = ("ramp", "groupdq", "rate", "pixeldq", "neg_jumps", "group1", "rc_next")


def check_store(ds) -> StoreLayout:
    """Clear errors for datasets the reductions cannot use: too few groups or exposures, a
    store made before the ingest summaries (schema 1: recalibrate), a variable missing or
    not on the store's dimensions, a selection of rows, columns or groups (a build makes
    whole-frame reference files: select exposures only)."""
    layout = _layout(ds)
    check_groups(layout.ngroups)
    if missing := [v for v in NEEDED + (("bias_groups",) if layout.has_bias else ())
                   if v not in ds.data_vars]:
        old = {"group1", "rc_next"} & set(missing)
        raise BuildError(f"the dataset lacks {', '.join(missing)}" + (
            " (a store made before the ingest summaries, schema 1: calibrate its inputs into "
            "a new store)" if old else ""))
    for v in ds.data_vars:
        if v in VARIABLES and ds[v].dims != VARIABLES[v][0]:
            raise BuildError(f"variable {v} has dimensions {ds[v].dims}, the store's are "
                             f"{VARIABLES[v][0]} (assign a whole array, e.g. "
                             f"ds['{v}'] = ds.{v} * 0 + 5)")
    for dim, size in (("group", layout.ngroups), ("y", layout.ny), ("x", layout.nx),
                      ("y_raw", layout.ny_raw)):
        if dim in ds.sizes and ds.sizes[dim] != size:
            raise BuildError(f"the dataset holds {ds.sizes[dim]} of the store's {size} {dim}: "
                             "a build makes whole-frame reference files from every group; "
                             "select exposures only (isel/sel on exposure, or build --cull / "
                             "open_dataset(exclude=...))")
    if layout.schema < 5:
        warnings.warn(f"this store (schema {layout.schema}) was made before the ingest "
                      "recorded saturation in group 1 (rc_next bit 3): RC pixels saturated "
                      "in group 1 are missed, as before issue 21; recalibrate into a new store",
                      stacklevel=3)
    n = ds.sizes.get("exposure", 0)
    if n == 0:
        raise BuildError("the store holds no exposure; run nrsdark calibrate first")
    if n < 2:
        raise BuildError(f"the store holds {n} exposure; the report's statistics are across "
                         "inputs (clipped mean, standard error): at least 2 are needed")
    return layout


def store_stack(ds: xr.Dataset, var: str, chunks2) -> da.Array:
    """A store variable (exposure, [other,] y, x) as a dask array with every exposure of a
    tile in one block, each block read by one task straight from the store (``read-VAR``
    tasks): one task and no concatenation per tile, instead of E reads and a rechunk."""
    v = ds[var]
    path = child(ds.encoding["nrsdark_store"], var)
    name = f"read-{var.replace('_', '-')}-{dask.base.tokenize(v.data.name, chunks2)}"
    ys, xs = np.cumsum((0,) + tuple(chunks2[0])), np.cumsum((0,) + tuple(chunks2[1]))
    middle = (ds.encoding["nrsdark_positions"],) + (slice(None),) * (v.ndim - 3)
    zeros = (0,) * (v.ndim - 2)
    dsk = {(name,) + zeros + (i, j): (read_block, path, middle + (
        slice(int(ys[i]), int(ys[i + 1])), slice(int(xs[j]), int(xs[j + 1]))))
        for i in range(len(chunks2[0])) for j in range(len(chunks2[1]))}
    chunks = tuple((n,) for n in v.shape[:-2]) + tuple(tuple(c) for c in chunks2)
    return da.Array(HighLevelGraph.from_collections(name, dsk, dependencies=[]), name,
                    chunks=chunks, dtype=v.dtype)


def is_pristine(ds: xr.Dataset) -> bool:
    """The dataset is the store as opened: every variable :func:`store.open_dataset` made is
    there as the very dask array it made (not edited, loaded, rechunked or selected), so the
    build may read the store's chunks itself.  Otherwise it computes from what the dataset
    holds (:func:`build_source`)."""
    names = ds.encoding.get("nrsdark_names")
    return bool(names) and "nrsdark_store" in ds.encoding and all(
        v in ds.data_vars and getattr(ds[v].data, "name", None) == n for v, n in names.items())


def build_source(ds: xr.Dataset) -> tuple[xr.Dataset, StoreLayout]:
    """The dataset a build computes from, and its layout: :func:`check_store`'s refusals,
    then, unless it is pristine, every variable as a dask array chunked like the store (a
    loaded or assigned numpy array is wrapped, not re-read from the store)."""
    layout = check_store(ds)
    if is_pristine(ds):
        return ds, layout
    ds = ds.copy()
    ds.encoding = {}  # nothing of the store's is used for what the dataset holds
    ty, tx = layout.tile_y, layout.tile_x
    chunk = {"exposure": 1, "group": layout.group_chunk or layout.ngroups, "y": ty, "x": tx,
             "bias_group": 2, "y_raw": ty}
    for v in ds.data_vars:
        if not dask.is_dask_collection(ds[v].data):
            ds[v] = ds[v].chunk({d: chunk.get(d, -1) for d in ds[v].dims})
    return ds, layout
