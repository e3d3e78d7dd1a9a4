"""Writing the store: staging, the commit, the lock and the log (one writer at a time).

Commit protocol (nothing half-written is ever visible):

1. a worker writes its exposure into ``_staging/<exposure>/`` (same arrays, exposure length
   1) and a list of its chunk files with their sizes and CRC32C (``CHUNKS.json``);
2. the driver (one process, holding the ``flock`` of ``.nrsdark.lock``) moves that list to
   ``nrsdark_chunks/<n>.json``, resizes the main arrays to n + 1, moves the staged chunk
   directories ``<var>/c/0`` to ``<var>/c/<n>`` (one rename each), writes the per-exposure
   coordinates, and then
3. rewrites the consolidated metadata (root ``zarr.json``, an atomic file replace).  That
   rewrite is the commit: readers (xarray uses the consolidated metadata) see n + 1 exposures
   only from then on.  Then the root is copied to ``nrsdark_meta_backup.json``
   (:mod:`.metadata`: ``nrsdark repair`` restores a damaged root from it).  A run killed
   anywhere leaves a store that opens with whole exposures; :meth:`RampStore.writer` trims
   any uncommitted tail (arrays, chunks, manifests) and clears the staging area.
   :meth:`RampStore.verify` checks committed chunks against the manifests,
   and every chunk read is checked against its CRC32C (:mod:`.chunksums`).

A new store is built as ``.<name>.tmp-<pid>`` beside its final name and renamed when whole.

Only local-filesystem stores are supported for writing (the chunk move is a rename); reading
works wherever zarr reads.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr

from .. import __version__
from ..paths import atomic_write, check_name, inside
from . import metadata
from .metadata import quiet_zarr
from .chunksums import CHUNKS, ChunkSums, chunk_checksums, chunk_files, crc32c, staged_checksums
from .schema import (EXPOSURE_COORDS, READABLE_SCHEMAS, SCHEMA_VERSION, VARIABLES, StoreError,
                     StoreLayout, child, filesystem, location, make_codec)

STAGING = "_staging"


LOCK = ".nrsdark.lock"


LOG = "nrsdark_log.jsonl"


def _consolidate(path):
    """The commit: the consolidated metadata rewritten (one atomic file replace), then its
    backup (:mod:`.metadata`)."""
    with quiet_zarr(path):
        zarr.consolidate_metadata(path)
    metadata.write_backup(Path(path))


def _create_variable(group, layout: StoreLayout, var: str, n_exp: int, coords_attr: str):
    dims, dtype, fill, attrs = VARIABLES[var]
    codec = make_codec(layout.codec if var in ("ramp", "rate", "rate_err", "bias_groups")
                   else "zstd")
    arr = group.create_array(var, shape=layout.shape(var, n_exp), chunks=layout.chunks(var),
                             dtype=dtype, fill_value=fill, dimension_names=dims,
                             compressors=codec)
    arr.attrs.update(attrs)
    arr.attrs["coordinates"] = coords_attr
    return arr


def _coords_attr() -> str:
    return " ".join([c for c in EXPOSURE_COORDS if c != "exposure"] + ["group_time"])


def write_staging(store_path, name: str, layout: StoreLayout, data: dict) -> Path:
    """Worker side: write one exposure's arrays (each with a leading length-1 exposure axis
    removed, i.e. shapes as in one exposure) into ``_staging/<name>/``; return that path.

    Each array is written block by block, a block being one row of whole chunks (all of x; for
    ramps one group chunk x one tile row: <= 8 MiB x nx / tile_x), so no write makes a
    converted copy of a whole cube and Zarr never re-reads a chunk.  A value may be an array or
    a lazy array-like with ``shape`` and basic-slice ``__getitem__`` (``calibration.recipe.MappedArray``:
    only the block being written is then in memory).  A block is converted to the store's dtype
    only when its dtype differs (e.g. big-endian FITS data)."""
    path = staging_path(store_path, name)
    try:
        return _write_staging(path, name, layout, data)
    except OSError as exc:
        full = disk_full(exc, store_path, name)
        if full is not None:
            shutil.rmtree(path, ignore_errors=True)
            raise full from None
        raise


def disk_full(exc: OSError, store_path, name: str) -> OSError | None:
    """If ``exc`` (raised while staging ``name``) means the store's disk is full, the error
    to report instead, naming the disk and what is left (after letting zarr's writes still in
    flight settle, so that what the caller removes stays removed); else None."""
    free = shutil.disk_usage(store_path).free
    if exc.errno != errno.ENOSPC and free >= 64 << 20:
        return None
    _settle_zarr_writes()
    return OSError(errno.ENOSPC, f"no space left on the store's disk ({free / 1e6:.0f} MB "
                   f"free in {store_path}) while writing {name}")


def _settle_zarr_writes(timeout: float = 60.0) -> None:
    """Wait for chunk writes still in flight on zarr's event loop.

    zarr gathers a block's chunk writes with ``asyncio.gather``, which does not cancel the
    siblings of a write that failed: after a full disk raised, those keep running in their
    threads and re-create directories we are about to delete (seen in CI: ``_staging`` left
    behind after a failed exposure).  Waiting on every other task of that loop (other
    exposures' writes included; they only delay this) makes the removal final."""
    import asyncio

    from zarr.core.sync import sync

    async def wait_others():
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        if others:
            await asyncio.wait(others, timeout=timeout)

    sync(wait_others())


def _write_staging(path: Path, name: str, layout: StoreLayout, data: dict) -> Path:
    import itertools

    g = create_staging(path, layout)
    for var in layout.variables():
        arr = g[var]
        value = data[var]
        if not (hasattr(value, "shape") and hasattr(value, "__getitem__")):
            value = np.asarray(value)
        expected = layout.shape(var, 1)[1:]
        if tuple(value.shape) != expected:
            raise ValueError(f"{name}: {var} has shape {tuple(value.shape)}, store expects "
                             f"{expected}")
        chunks = layout.chunks(var)[1:]
        starts = [range(0, n, c) for n, c in zip(expected[:-1], chunks[:-1])]
        for first in itertools.product(*starts):
            block = tuple(slice(i, min(i + c, n)) for i, c, n in zip(first, chunks, expected))
            block += (slice(None),)
            arr[(0,) + block] = np.asarray(value[block]).astype(arr.dtype, copy=False)
    seal_staging(path, {var: staged_checksums(path, var) for var in layout.variables()})
    return path


def staging_path(store_path, name: str) -> Path:
    """``<store>/_staging/<name>``: ``name`` must be a plain file name (:mod:`.paths`), and
    the result lies inside the store whatever links it holds."""
    check_name(name)
    return inside(Path(store_path) / STAGING / name, store_path)


def create_staging(path: Path, layout: StoreLayout):
    """An empty staged exposure at ``path`` (``_staging/<exposure>``: every variable of the
    layout, exposure length 1, no chunk written yet); replaces what was there.  Returns the
    zarr group."""
    if path.exists():
        shutil.rmtree(path)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    for var in layout.variables():
        _create_variable(g, layout, var, 1, "")
    return g


def seal_staging(path: Path, chunks: dict) -> None:
    """Write the staged exposure's chunk manifest (``CHUNKS.json``, with the exposure's name,
    ``path``'s) and mark it complete."""
    (path / "CHUNKS.json").write_text(json.dumps({**chunks, "_exposure": path.name}))
    (path / "COMPLETE").write_text("ok\n")


class RampStore:
    """A calibrated-ramp store.  Reading (:func:`open_dataset`, :meth:`layout`,
    :meth:`committed`, :meth:`verify`) works at any fsspec URL; writing needs a local (or
    shared POSIX) filesystem: the commit renames chunk directories and the lock is ``flock``,
    neither of which an object store has (a clear :class:`StoreError` says so)."""

    def __init__(self, path):
        self.path = location(path)

    def local_path(self, what: str) -> Path:
        """The store's local path; a StoreError naming ``what`` for a URL."""
        if isinstance(self.path, str):
            raise StoreError(
                f"{what} needs a store on a local or shared POSIX filesystem, not {self.path}: "
                "commits rename chunk directories and the lock is an OS lock, which object "
                "stores lack; calibrate into a local store and copy it there (e.g. `aws s3 "
                "sync`): build and verify read it at the URL")
        return self.path

    # ---- reading --------------------------------------------------------------------------
    def exists(self) -> bool:
        fs, root = filesystem(child(self.path, "zarr.json"))
        return fs.exists(root)

    def layout(self) -> StoreLayout:
        with quiet_zarr(self.path):
            attrs = zarr.open_group(str(self.path), mode="r", use_consolidated=True).attrs
        if attrs.get("nrsdark_schema") not in READABLE_SCHEMAS:
            raise StoreError(f"{self.path} is not an nrsdark store (schema "
                             f"{attrs.get('nrsdark_schema')!r})")
        return StoreLayout(**attrs["layout"])

    def provenance(self) -> dict:
        with quiet_zarr(self.path):
            return dict(zarr.open_group(str(self.path), mode="r",
                                        use_consolidated=True).attrs.get("provenance", {}))

    def committed(self) -> list[str]:
        return metadata.committed(self.path)

    # ---- writing --------------------------------------------------------------------------
    @classmethod
    def create(cls, path, layout: StoreLayout, provenance: dict) -> RampStore:
        """Create an empty store (0 exposures) with all static coordinates."""
        path = cls(path).local_path("creating a store")
        if path.exists():
            raise FileExistsError(f"{path} already exists")
        # built beside its final name and renamed when whole: a failure leaves nothing
        final, path = path, path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(path, ignore_errors=True)
        try:
            cls._create(path, layout, provenance)
            os.rename(path, final)
        except BaseException as exc:
            shutil.rmtree(path, ignore_errors=True)
            if isinstance(exc, OSError) and final.exists():  # another process won the race
                raise FileExistsError(f"{final} already exists (another process created it "
                                      "meanwhile)") from None
            raise
        return cls(final)

    @staticmethod
    def _create(path: Path, layout: StoreLayout, provenance: dict) -> None:
        g = zarr.open_group(path, mode="w-", zarr_format=3)
        g.attrs.update({
            "title": "nrsdark_dask calibrated dark ramps",
            "nrsdark_schema": SCHEMA_VERSION,
            "layout": asdict(layout),
            "provenance": provenance,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "software": f"nrsdark_dask {__version__}",
            "conventions": "y, x: 0-based full-frame DMS pixel indices; commit = consolidated "
                           "metadata; see nrsdark_dask.store",
        })
        coords = _coords_attr()
        for var in layout.variables():
            _create_variable(g, layout, var, 0, coords)
        for name, (dtype, attrs) in EXPOSURE_COORDS.items():
            a = g.create_array(name, shape=(0,), chunks=(1,), dtype=dtype,
                               dimension_names=("exposure",),
                               fill_value=np.nan if dtype == "float64" else None)
            a.attrs.update(attrs)
        static = {
            "group": (("group",), np.arange(1, layout.ngroups + 1, dtype="int32"), {}),
            "group_time": (("group",), layout.group_times(),
                           {"units": "s", "long_name": "group time since reset"}),
            "y": (("y",), np.arange(layout.ystart - 1, layout.ystart - 1 + layout.ny,
                                    dtype="int32"), {"long_name": "full-frame DMS row (0-based)"}),
            "x": (("x",), np.arange(layout.xstart - 1, layout.xstart - 1 + layout.nx,
                                    dtype="int32"), {"long_name": "full-frame DMS column"}),
            "bias_group": (("bias_group",), np.array([1, 2], "int32"), {}),
            "y_raw": (("y_raw",), np.arange(layout.ny_raw, dtype="int32")
                      + (0 if layout.family == "IRS2" else layout.ystart - 1),
                      {"long_name": "raw row (IRS2: 3200-row layout)"}),
        }
        for name, (dims, values, attrs) in static.items():
            a = g.create_array(name, shape=values.shape, chunks=values.shape,
                               dtype=values.dtype, dimension_names=dims)
            a[:] = values
            a.attrs.update(attrs)
        _consolidate(path)

    @contextmanager
    def writer(self, trim: bool = True):
        """Exclusive write access for this process: an OS lock (``flock``) on ``.nrsdark.lock``,
        which dies with its process (no stale lock to take over, no race between two takers);
        the file names the holder (pid, host) for the refusal message.  Trims what the commit
        does not hold on entry (``trim``; :meth:`repair` trims after mending the
        metadata).  On NFS, ``flock`` needs NFSv4 (Linux emulates it with byte-range locks)."""
        lock = self.local_path("writing a store") / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    other = json.loads(os.read(fd, 4096) or b"{}")
                except ValueError:
                    other = {}
                os.close(fd)
                raise StoreError(f"{self.path} is being written by {other or 'another process'}"
                                 " (it holds the store's lock)") from None
            try:  # the file we locked must still be the lock (a releaser unlinks it)
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        try:
            if trim:
                self._trim()
            yield self
        finally:
            shutil.rmtree(self.path / STAGING, ignore_errors=True)
            lock.unlink(missing_ok=True)  # while still holding it: see the inode check above
            os.close(fd)

    def _trim(self):
        """Trim arrays to the committed length and drop staged exposures (after a kill)."""
        n = len(self.committed())
        with quiet_zarr(self.path):
            g = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            arrays = list(g.arrays())
        for name, arr in arrays:
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == "exposure" \
                    and arr.shape[0] != n:
                arr.resize((n,) + arr.shape[1:])
                _remove_chunks_from(self.path / name, n)
        for f in (self.path / CHUNKS).glob("*.json"):
            if f.stem.isdigit() and int(f.stem) >= n:
                f.unlink()
        shutil.rmtree(self.path / STAGING, ignore_errors=True)


    def repair(self) -> tuple[list[str], list[str]]:
        """``nrsdark repair``: rebuild the damaged metadata of this (local) store under its
        lock (:mod:`.metadata` says what from); returns ``(repaired, lost)``, one line each.
        What cannot be rebuilt is left as it is and named in ``lost``."""
        from .metadata import BACKUP, read_json, root_problem, write_backup

        root = self.local_path("repairing a store")
        fixed, lost = [], []
        with self.writer(trim=False):
            data, why = read_json(root / "zarr.json")
            backup, bwhy = read_json(root / BACKUP)
            if root_problem(data, why):
                if root_problem(backup, bwhy):
                    lost.append(f"{root / 'zarr.json'} and its backup are both damaged: the "
                                "layout, provenance and commit are lost (calibrate into a new "
                                "store)")
                    return fixed, lost
                atomic_write(root / "zarr.json", json.dumps(backup, indent=2))
                data = backup
                n_backup = data["consolidated_metadata"]["metadata"]["exposure"]["shape"][0]
                later = [f for f in (root / CHUNKS).glob("*.json")
                         if f.stem.isdigit() and int(f.stem) >= n_backup]
                fixed.append(f"{root / 'zarr.json'} restored from {BACKUP} ({n_backup} exposures)")
                if later:
                    lost.append(f"{len(later)} exposure(s) committed after the backup: their "
                                "chunks are dropped; calibrate them again")
            meta = data["consolidated_metadata"]["metadata"]
            for name, entry in sorted(meta.items()):
                _, why = read_json(root / name / "zarr.json")
                if why:
                    (root / name).mkdir(exist_ok=True)
                    atomic_write(root / name / "zarr.json", json.dumps(entry, indent=2))
                    fixed.append(f"{root / name / 'zarr.json'} rewritten from the root's "
                                 "consolidated metadata")
            names = self.committed()
            variables = StoreLayout(**data["attributes"]["layout"]).variables()
            for i, name in enumerate(names):
                path = root / CHUNKS / f"{i}.json"
                _, why = read_json(path)
                if why in (None, "is missing"):  # missing: committed before manifests, no rebuild
                    continue
                listed = {"_exposure": name}
                listed.update({var: chunk_checksums(root, var, i) for var in variables})
                atomic_write(path, json.dumps(listed))
                fixed.append(f"{path} rebuilt from the chunk files as they are now")
                lost.append(f"{name}: damage to its chunks before this repair can no longer be "
                            "told (its checksums were recomputed)")
            if backup != data:  # damaged, stale or missing (a store made before backups: silently)
                write_backup(root)
                if bwhy != "is missing":
                    fixed.append(f"{root / BACKUP} rewritten")
            self._trim()  # trim what the commit does not hold
        return fixed, lost

    def check_appendable(self) -> None:
        """Only stores of this schema take new exposures (older ones name exposures by file
        name alone and have no chunk manifests); they are still read and built.  Nor does a
        store whose metadata or committed chunks are damaged (``verify --quick``: what the
        next commit would build on)."""
        self.local_path("adding exposures to a store")
        if bad := self.verify():
            raise StoreError(f"{self.path} is damaged ({len(bad)} problem(s), first: {bad[0]})"
                             f"; `nrsdark verify --store {self.path}` lists them and `nrsdark "
                             "repair` rebuilds its metadata: nothing is added to a damaged "
                             "store")
        with quiet_zarr(self.path):
            schema = zarr.open_group(self.path, mode="r", use_consolidated=True).attrs.get(
                "nrsdark_schema")
        if schema != SCHEMA_VERSION:
            raise StoreError(f"{self.path} was made by an older nrsdark_dask (store schema "
                             f"{schema}, now {SCHEMA_VERSION}); it can still be built, but new "
                             "exposures go into a new store")

    def committed_hashes(self) -> dict[str, str]:
        """``{input SHA-256: exposure}`` of the committed exposures."""
        with quiet_zarr(self.path):
            g = zarr.open_group(str(self.path), mode="r", use_consolidated=True)
            if "input_sha256" not in g:
                return {}
            return {str(h): str(e) for h, e in zip(g["input_sha256"][:], g["exposure"][:])}

    def _manifest(self, index: int) -> dict | None:
        """Exposure ``index``'s chunk manifest (:meth:`chunksums.ChunkSums.manifest`: read
        once per process, a damaged one named in one line); None before manifests."""
        return ChunkSums(self.path).manifest(index)

    def unverifiable(self, exposures=None) -> list[str]:
        """Committed exposures without a chunk manifest (committed by an older nrsdark_dask):
        :meth:`verify` cannot check them."""
        names = self.committed()
        return [names[i] for i in (range(len(names)) if exposures is None else exposures)
                if self._manifest(i) is None]

    def verify(self, exposures=None, checksums: bool = False) -> list[str]:
        """Problems with the committed exposures' chunks (an empty list: all there): every
        chunk file the exposure's manifest lists must exist with its size (and, with
        ``checksums``, its CRC32C: a full read of the exposure); no other chunk file may sit
        in its place; every metadata file must be readable (:func:`metadata.problems`, which
        alone is reported when there are any).  ``exposures``: store indices (default: all).
        Cost without checksums: one directory walk per exposure and array (local or at a
        URL)."""
        if bad := metadata.problems(self.path):
            return bad
        names = self.committed()
        layout = self.layout()
        fs, _ = filesystem(self.path)
        out = []
        for i in range(len(names)) if exposures is None else exposures:
            listed = self._manifest(i)
            if listed is None:  # see unverifiable()
                continue
            for var in layout.variables():
                on_disk = chunk_files(child(self.path, var), i)
                for rel, (size, crc) in listed.get(var, {}).items():
                    found = on_disk.pop(rel, None)
                    where = f"{names[i]}: {var} chunk {child(self.path, var, 'c', str(i), rel)}"
                    if found is None:
                        out.append(f"{where} is missing")
                    elif found[1] != size:
                        out.append(f"{where} has {found[1]} bytes, {size} when committed "
                                   "(truncated or replaced)")
                    elif checksums and crc32c(fs.cat_file(found[0])) != crc:
                        out.append(f"{where} does not match its checksum (corrupt)")
                out += [f"{names[i]}: {var} chunk {f} was not part of the commit"
                        for f, _ in on_disk.values()]
        return out

    def commit(self, name: str, coords: dict) -> int:
        """Move a staged exposure into the store and publish it; return its index."""
        staged = self.local_path("committing") / STAGING / name
        if not (staged / "COMPLETE").exists():
            raise StoreError(f"exposure {name} is not completely staged")
        committed = self.committed()
        if name in committed:
            raise StoreError(f"exposure {name} is already in the store")
        n = len(committed)
        with quiet_zarr(self.path):
            g = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        layout = self.layout()
        manifest = self.path / CHUNKS / f"{n}.json"
        manifest.parent.mkdir(exist_ok=True)
        os.replace(staged / "CHUNKS.json", manifest)  # trimmed by _repair if we die before
        for var in layout.variables():
            arr = g[var]
            _remove_chunks_from(self.path / var, n)
            arr.resize((n + 1,) + arr.shape[1:])
            src = staged / var / "c" / "0"
            if src.exists():  # all-fill chunks are not written at all
                (self.path / var / "c").mkdir(exist_ok=True)
                os.rename(src, self.path / var / "c" / str(n))
        values = dict(coords, exposure=name)
        for cname, (dtype, _) in EXPOSURE_COORDS.items():
            arr = g[cname]
            arr.resize((n + 1,))
            arr[n] = values.get(cname, np.nan if dtype == "float64" else 0 if dtype == "int32"
                                else "")
        _consolidate(self.path)  # the commit
        shutil.rmtree(staged, ignore_errors=True)
        return n

    def log(self, **event):
        event["time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        with open(self.path / LOG, "a") as f:
            f.write(json.dumps(event) + "\n")

    def read_log(self) -> list[dict]:
        """The log's events; a damaged line (a run killed mid-write) is skipped."""
        p = self.path / LOG
        out = []
        for line in p.read_text(errors="replace").splitlines() if p.exists() else ():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def _remove_chunks_from(array_dir: Path, n: int):
    cdir = array_dir / "c"
    if cdir.is_dir():
        for d in cdir.iterdir():
            if d.name.isdigit() and int(d.name) >= n:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
