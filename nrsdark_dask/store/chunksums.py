"""Chunk checksums: every chunk a command reads is checked against the CRC32C its commit
recorded (issue 19).

Each commit writes ``nrsdark_chunks/<index>.json``: ``{variable: {path below
<var>/c/<index>/: [size, CRC32C]}, "_exposure": name}`` for every chunk file of the exposure
(``store.writer``).  Readers check the bytes of each chunk file they read against it, in the task
that reads the chunk, before decoding:

* :class:`ChunkSums` holds one store's manifests (loaded once per process and exposure; a
  local manifest is re-read when its file changes, as after a repair) and checks one chunk;
* :class:`CheckedStore` wraps the zarr store that xarray and zarr read through (``open_dataset``,
  zarr's generic path of ``read_block``), so every chunk zarr fetches is checked;
* ``store.read_block``'s fast path checks the bytes it read itself.

A mismatch raises :class:`CorruptChunk`: one line naming the store, the variable, the exposure
and the chunk file, pointing to ``nrsdark verify``.  A chunk file the manifest lists but that
is missing is damage too (a chunk not listed and absent is an all-fill chunk, never written).
Exposures without a manifest (stores of schema 2) are not checked (the build warns).

Cost: one CRC32C pass over the raw bytes (google-crc32c, SSE4.2: several GB/s on one core)
per chunk read; measured in ``make bench`` (docs/benchmarks.md), which compares builds with and without
the checks: ``NRSDARK_CHUNK_CHECKS=0`` turns them off, for that measurement only.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

from zarr.storage import WrapperStore

from .metadata import committed
from .schema import CHUNKS, VARIABLES, child, filesystem


class CorruptChunk(RuntimeError):
    """A chunk file whose bytes do not match its commit's checksum (or that is gone)."""


def crc32c(data) -> int:
    """CRC32C of a bytes-like object (no copy for buffers)."""
    import google_crc32c

    return int(google_crc32c.value(data))


def _fs(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


_LOCAL: dict = {}  # (manifest path, mtime_ns, size) -> manifest, shared by every ChunkSums
_LOCAL_LOCK = threading.Lock()


class ChunkSums:
    """The chunk manifests of the store at ``root`` (a local ``Path`` or an fsspec URL)."""

    def __init__(self, root):
        self.root = root
        self._remote: dict = {}  # index -> manifest (URLs: one read per ChunkSums)

    def __getstate__(self):
        return {"root": self.root, "_remote": {}}

    def manifest(self, index: int) -> dict | None:
        """Exposure ``index``'s manifest; None for an exposure committed without one."""
        if isinstance(self.root, Path):
            path = self.root / CHUNKS / f"{index}.json"
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            key = (str(path), st.st_mtime_ns, st.st_size)
            with _LOCAL_LOCK:
                if key in _LOCAL:
                    return _LOCAL[key]
            found = _load(path, path.read_bytes())
            with _LOCAL_LOCK:
                if len(_LOCAL) > 4096:
                    _LOCAL.clear()
                _LOCAL[key] = found
            return found
        if index not in self._remote:
            fs, p = _fs(f"{self.root}/{CHUNKS}/{index}.json")
            try:
                self._remote[index] = _load(p, fs.cat_file(p))
            except FileNotFoundError:
                self._remote[index] = None
        return self._remote[index]

    def check(self, var: str, index: int, rel: str, data) -> None:
        """Check the bytes ``data`` read from chunk file ``<var>/c/<index>/<rel>`` (``data``
        None: the file is absent)."""
        if os.environ.get("NRSDARK_CHUNK_CHECKS") == "0":
            return
        listed = self.manifest(index)
        if listed is None or var not in listed:
            return  # committed before manifests (see module docstring)
        entry = listed[var].get(rel)
        if entry is None and data is None:
            return  # all fill value, never written
        if entry is None:
            why = "is not part of its commit"
        elif data is None:
            why = "is missing"
        elif (size := memoryview(data).nbytes) != entry[0]:
            why = f"has {size} bytes, {entry[0]} when committed (truncated or replaced)"
        elif crc32c(data) != entry[1]:
            why = "does not match its CRC32C checksum (corrupt)"
        else:
            return
        raise CorruptChunk(
            f"store {self.root}: {var} of exposure {self.exposure_name(index)}: chunk file "
            f"{self.root}/{var}/c/{index}/{rel} {why}; `nrsdark verify --store {self.root}` "
            "lists every damaged chunk")

    def exposure_name(self, index: int) -> str:
        """The exposure's name: from its manifest (``_exposure``, written since issue 19), else
        from the store's coordinates (not from inside zarr's own event loop, where a zarr
        read would deadlock), else its index."""
        listed = self.manifest(index) or {}
        if "_exposure" in listed:
            return listed["_exposure"]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            try:
                return committed(self.root)[index]
            except Exception:  # noqa: BLE001 - the damage must still be reported
                pass
        return f"#{index} (store index)"


def _load(where, raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise CorruptChunk(f"chunk manifest {where} cannot be read ({exc}); `nrsdark verify` "
                           "checks it and `nrsdark repair` rebuilds it") from None


def chunk_key(key: str) -> tuple[str, int, str] | None:
    """``"ramp/c/3/0/1/2"`` -> ``("ramp", 3, "0/1/2")``; None for metadata keys."""
    parts = key.split("/")
    if len(parts) >= 4 and parts[1] == "c" and parts[2].isdigit():
        return parts[0], int(parts[2]), "/".join(parts[3:])
    return None


class CheckedStore(WrapperStore):
    """A read-only zarr store whose chunk reads are checked by :class:`ChunkSums`."""

    def __init__(self, store, root=None):
        super().__init__(store)
        self.sums = ChunkSums(root)

    def _with_store(self, store):
        return type(self)(store, self.sums.root)

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        where = chunk_key(key) if byte_range is None else None
        if where is not None:
            self.sums.check(*where, None if buf is None else buf.as_numpy_array())
        return buf

    def __repr__(self):
        return f"CheckedStore({self.sums.root})"


def checked_store(root) -> CheckedStore:
    """A read-only :class:`CheckedStore` on the store at ``root`` (``Path`` or URL)."""
    from zarr.storage import FsspecStore, LocalStore

    plain = LocalStore(root, read_only=True) if isinstance(root, Path) \
        else FsspecStore.from_url(root, read_only=True)
    return CheckedStore(plain, root)


def chunk_files(array_dir, index: int) -> dict[str, tuple[str, int]]:
    """The chunk files of exposure ``index`` of one array: ``{path below c/<index>/: (full
    path, size)}`` (local or remote, through fsspec)."""
    fs, root = filesystem(child(array_dir, "c", str(index)))
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {p[len(root) + 1:]: (p, int(i["size"])) for p, i in found.items()
            if i["type"] == "file"}


def chunk_checksums(root: Path, var: str, index: int, row_chunk: int | None = None) -> dict:
    """``{chunk file below <var>/c/<index>/: [size, CRC32C]}`` of exposure ``index`` of the
    store (or staged exposure) at ``root``: a commit's manifest entry; with ``row_chunk``, only
    the chunks of that tile row (what one tiled-calibration piece wrote)."""
    row_axis = list(VARIABLES[var][0]).index("y_raw" if var == "bias_groups" else "y") - 1
    out = {}
    for rel, (f, size) in chunk_files(root / var, index).items():
        if row_chunk is None or int(rel.split("/")[row_axis]) == row_chunk:
            out[rel] = [size, crc32c(Path(f).read_bytes())]
    return out


def staged_checksums(path: Path, var: str, row_chunk: int | None = None) -> dict:
    """:func:`chunk_checksums` of a staged exposure (``path``: ``_staging/<exposure>``)."""
    return chunk_checksums(path, var, 0, row_chunk)
