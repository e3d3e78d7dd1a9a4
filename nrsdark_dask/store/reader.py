"""Reading the store: :func:`open_dataset` (the lazy xarray Dataset) and the build's own
block reader (:func:`read_block`, :class:`StoreBlock`).

Why a reader of our own beside zarr: ``zarr.open_array(...)[index]`` costs ~2 ms and two
copies per chunk, most of a build's read time.  :func:`read_block` reads this store's own
chunk files (uncompressed or zstd, the default "/" chunk-key encoding, little-endian) straight
into their place in the output; it learns the codecs, chunk grid and key encoding through
zarr's public ``Array.metadata`` and falls back to zarr's own indexing for anything else (other
codecs, encodings, strided slices, remote stores).  Every chunk read, on either path, is
checked against its commit's CRC32C (:mod:`~nrsdark_dask.chunksums`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr
import zarr

from .chunksums import ChunkSums, checked_store
from .metadata import quiet_zarr
from .schema import EXPOSURE_COORDS, StoreError, child, location
from .writer import RampStore


def open_dataset(path, exclude=(), **kwargs) -> xr.Dataset:
    """The store as a lazy xarray Dataset (dask arrays chunked like the store), its exposures
    sorted by date and then identity: the same inputs give the same dataset, and so
    bit-identical products, whatever order they were committed in.  ``exclude``: exposures
    left out (identities ``name@hash``, or plain file names, as in a cull table); naming one
    the store does not hold is an error (a list made for another store).  The store path and the
    exposures' positions in the store are kept in ``ds.encoding`` (``nrsdark_store``,
    ``nrsdark_positions``): the build reads blocks straight from the store
    (:class:`StoreBlock`) while the dataset is unmodified (``nrsdark_names``: each variable's
    dask name); edited, loaded, rechunked or selected, it computes from what the dataset
    holds."""
    path = location(path)
    if not RampStore(path).exists():
        raise FileNotFoundError(f"no store at {path}")
    with quiet_zarr(path):
        ds = xr.open_zarr(checked_store(path), consolidated=True, **kwargs)
    # the per-exposure coordinates are a few values each: numpy, not dask, so that reading
    # them (a file's HISTORY, a grating check) never computes anything; read without dask
    # (chunks=None: xarray's own lazy arrays, decoded), all at once
    with quiet_zarr(path):
        plain = xr.open_zarr(checked_store(path), consolidated=True, chunks=None, **kwargs)
    lazy = [c for c in EXPOSURE_COORDS if c in ds.coords and dask.is_dask_collection(ds[c].data)]
    ds = ds.assign_coords({c: (ds[c].dims, plain[c].values, ds[c].attrs) for c in lazy})
    dates, names = ds.date.values, [str(e) for e in ds.exposure.values]
    order = sorted(range(ds.sizes["exposure"]), key=lambda i: (dates[i], names[i]))
    if exclude:
        exclude = {str(e) for e in exclude}
        known = set(names) | {n.split("@")[0] for n in names}
        if unknown := sorted(exclude - known):
            raise StoreError(f"{len(unknown)} exposure(s) to leave out are not in {path}: "
                             + ", ".join(unknown[:5]))
        order = [i for i in order if names[i] not in exclude
                 and names[i].split("@")[0] not in exclude]
        if not order:
            raise StoreError(f"every exposure of {path} is left out")
    if order != list(range(ds.sizes["exposure"])):
        ds = ds.isel(exposure=order)
    ds.encoding.update(nrsdark_store=str(path), nrsdark_positions=tuple(order),
                       nrsdark_names={v: ds[v].data.name for v in ds.data_vars})
    return ds


def store_differences(a, b) -> list[str]:
    """What differs between two stores (empty when they hold the same exposures with every
    variable and coordinate bit for bit equal, NaN equal to NaN), compared one exposure at a
    time: how calibrating one set two ways is checked (``nrsdark self-check``, the tests, the
    benchmarks).  Memory: one exposure's largest variable, twice."""
    da, db = open_dataset(a), open_dataset(b)
    names_a, names_b = da.exposure.values.tolist(), db.exposure.values.tolist()
    if names_a != names_b:
        return [f"exposures differ: {names_a} against {names_b}"]
    out = [f"variables differ: {sorted(set(da.data_vars) ^ set(db.data_vars))}"] \
        if set(da.data_vars) != set(db.data_vars) else []
    for var in sorted(set(da.data_vars) & set(db.data_vars)):
        for e, name in enumerate(names_a):
            x, y = da[var].isel(exposure=e).values, db[var].isel(exposure=e).values
            if x.dtype != y.dtype or x.shape != y.shape:
                out.append(f"{var} of {name}: {x.dtype}{x.shape} against {y.dtype}{y.shape}")
            elif not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
                same = x == y
                if x.dtype.kind in "fc":
                    same |= np.isnan(x) & np.isnan(y)
                out.append(f"{var} of {name}: {int(same.size - same.sum())} values differ")
    for c in sorted(set(da.coords) | set(db.coords)):
        if c not in da.coords or c not in db.coords:
            out.append(f"coordinate {c} in one store only")
        elif not np.array_equal(da[c].values, db[c].values,
                                equal_nan=da[c].dtype.kind in "fc"):
            out.append(f"coordinate {c} differs")
    return out


@dataclass(frozen=True)
class StoreBlock:
    """A picklable reference to one block of a store variable, read by the task that uses it
    (so a block is read by exactly one task, into one array, and only when it runs).
    ``index`` is a tuple of slices, best aligned with the store's chunks."""

    path: str
    var: str
    index: tuple

    def read(self) -> np.ndarray:
        return read_block(child(self.path, self.var), self.index)


chunk_read_hook = None
"""If set, called with the path of every chunk file :func:`read_block` reads (tests count
reads per chunk with it)."""


def read_block(array_path, index: tuple) -> np.ndarray:
    """``zarr.open_array(array_path)[index]``, fast for this store's own local arrays: each
    chunk file is read once straight into its place in the output (uncompressed chunks with
    ``readinto``, no intermediate copy; zstd chunks decoded into place).  Zarr's generic path
    costs ~2 ms and two copies per chunk, which is most of a build's read time.  Any other
    codec, chunk encoding or store goes through zarr.

    ``index``: slices, except that the first (exposure) entry may be a sequence of positions,
    read in that order (a build's exposures sorted by date, or a subset).  A chunk file shorter
    or longer than its chunk is an error naming the file, never a silent fill; so is a chunk
    whose bytes do not match its commit's CRC32C (:mod:`~nrsdark_dask.chunksums`: every chunk
    read, on either path, is checked)."""
    array_path = location(array_path)
    if isinstance(array_path, Path):
        root, var = array_path.parent, array_path.name
    else:
        root, var = array_path.rsplit("/", 1)
    store = checked_store(root)
    with quiet_zarr(root):
        arr = zarr.open_array(store, path=var, mode="r")
    first, rest = index[0], tuple(index[1:])
    positions = None if isinstance(first, slice) else [int(i) for i in first]
    steps = [sl.step for sl in rest + ((first,) if positions is None else ())]
    if isinstance(array_path, str) or not _fast(arr) or any(st not in (None, 1) for st in steps):
        return arr[index] if positions is None else arr.oindex[(positions,) + rest]
    if positions is None:
        out = np.empty([len(range(*sl.indices(n))) for sl, n in zip(index, arr.shape)],
                       arr.dtype)
        _read_into(arr, array_path, out, index, store.sums)
        return out
    shape = [len(range(*sl.indices(n))) for sl, n in zip(rest, arr.shape[1:])]
    out = np.empty([len(positions)] + shape, arr.dtype)
    for k, i in enumerate(positions):
        _read_into(arr, array_path, out[k:k + 1], (slice(i, i + 1),) + rest, store.sums)
    return out


def _fast(arr) -> bool:
    meta = arr.metadata
    codecs = [type(c).__name__ for c in meta.codecs]
    return (codecs in (["BytesCodec"], ["BytesCodec", "ZstdCodec"])
            and type(meta.chunk_key_encoding).__name__ == "DefaultChunkKeyEncoding"
            and meta.chunk_key_encoding.separator == "/"
            and np.dtype(arr.dtype).byteorder in ("=", "|", "<"))


def _read_into(arr, array_path: Path, out: np.ndarray, index: tuple, sums: ChunkSums) -> None:
    meta = arr.metadata
    cs = meta.chunk_grid.chunk_shape
    zstd = type(meta.codecs[-1]).__name__ == "ZstdCodec"
    starts, stops = zip(*[sl.indices(n)[:2] for sl, n in zip(index, arr.shape)])
    ranges = [range(a // c, -(-b // c)) for a, b, c in zip(starts, stops, cs)]
    chunk_bytes = int(np.prod(cs)) * arr.dtype.itemsize
    for coords in np.ndindex(*[len(r) for r in ranges]):
        cc = [r[i] for r, i in zip(ranges, coords)]
        lo = [max(a, c * n) for a, c, n in zip(starts, cc, cs)]
        hi = [min(b, (c + 1) * n) for b, c, n in zip(stops, cc, cs)]
        dest = out[tuple(slice(l - a, h - a) for l, h, a in zip(lo, hi, starts))]
        src = tuple(slice(l - c * n, h - c * n) for l, h, c, n in zip(lo, hi, cc, cs))
        file = array_path.joinpath("c", *map(str, cc))
        if chunk_read_hook is not None:
            chunk_read_hook(file)
        rel = "/".join(map(str, cc[1:]))
        try:
            f = open(file, "rb")
        except FileNotFoundError:  # never written: all fill value (the manifest says which)
            sums.check(array_path.name, cc[0], rel, None)
            dest[...] = arr.fill_value
            continue
        with f:
            whole = all(sl.start == 0 and sl.stop == n for sl, n in zip(src, cs))
            if not zstd and whole and dest.flags.c_contiguous:
                got = f.readinto(memoryview(dest).cast("B"))
            else:
                raw = f.read()
                got = len(raw)
            if not zstd and (got != chunk_bytes or f.read(1)):
                raise StoreError(f"chunk file {file} is {file.stat().st_size} bytes, "
                                 f"expected {chunk_bytes} (truncated or damaged; `nrsdark "
                                 "verify` lists the damaged chunks)")
            if not zstd and whole and dest.flags.c_contiguous:
                sums.check(array_path.name, cc[0], rel, dest)
                continue
        sums.check(array_path.name, cc[0], rel, raw)
        try:
            if zstd:
                from numcodecs import Zstd

                raw = Zstd().decode(raw)
            dest[...] = np.frombuffer(raw, arr.dtype).reshape(cs)[src]
        except (ValueError, RuntimeError) as exc:
            raise StoreError(f"chunk file {file} cannot be decoded ({exc}; truncated or "
                             "damaged; `nrsdark verify` lists the damaged chunks)") from None
