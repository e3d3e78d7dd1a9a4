"""The calibrated-ramp store: a Zarr v3 group opened as an xarray Dataset (SPEC §5).

Schema (``xr.open_zarr(path)`` shows exactly this)::

    dims:  exposure (one per committed input), group, y, x, bias_group (2), y_raw
    ramp        (exposure, group, y, x)       float32  calibrated counts, DN (jwst detector1
                                                       through jump: superbias, refpix,
                                                       linearity applied)
    groupdq     (exposure, group, y, x)       uint8    jwst GROUPDQ (JUMP_DET, SATURATED...)
    pixeldq     (exposure, y, x)              uint32   jwst PIXELDQ
    rate        (exposure, y, x)              float32  ramp_fit slope, DN/s
    rate_err    (exposure, y, x)              float32  its uncertainty, DN/s
    neg_jumps   (exposure, y, x)              int16    negative jumps per pixel (RTN input): JUMP_DET
                                                       groups dropping by > 3 x diff_sigma
    group1      (exposure, y, x)              float32  calibrated group 1 (RC input)
    rc_next     (exposure, y, x)              uint8    bits 0/1: group 2/3 JUMP_DET, DO_NOT_USE
                                                       or SATURATED; bit 2: linear until it
                                                       saturates, a very hot pixel (RC input)
    first_jump  (exposure, y, x)              int16    index of the first JUMP_DET group (32767:
                                                       none)
    jump_counts (exposure, y, x)              int16    JUMP_DET groups per pixel (the ESA RTN
                                                       rule's input)
    bias_groups (exposure, bias_group, y_raw, x) float32 uncalibrated groups 1 and 2 after the
                                                       reference-pixel correction, the group-1
                                                       mean level added back (SPEC §3); absent
                                                       for stores of already-calibrated inputs
    coords: exposure (input file name), date, grating, asic_dt, g1_mean, g1_std (clipped
            frame statistics of calibrated group 1), diff_sigma (CDS scatter), bias_level
            (median of the superbias combination of groups 1-2), detector, readpatt, subarray, ngroups,
            input_kind, input_file, jwst_version, crds_context, references (per exposure);
            group (1-based), group_time (s since reset); y, x (0-based full-frame
            DMS pixel indices, so subarrays sit where they are on the detector); y_raw (raw
            rows: 3200 for IRS2, else = y)
    attrs: the store's layout (detector, readout family, readpatt, subarray, ngroups, frame and
           group times, chunking, codecs), provenance (software versions, step list and
           parameters), DQ bit meanings on the DQ variables (CF flag_masks/flag_meanings).

Chunking: ``(1, group_chunk, tile_y, tile_x)`` for ramps and group DQ, ``(1, tile_y, tile_x)``
for images.  A chunk holds one exposure's groups ``[k g_c, (k+1) g_c)`` on one tile, g_c chosen
so a ramp chunk is near 8 MiB (:func:`default_group_chunk`: 30 of 88 groups, 29 of 200 on
256 x 256 tiles).  A reduction reads a group block of all exposures of a tile (E chunks per
group chunk) and never more, so its memory is set by a budget, not by E x ngroups
(``reduce.plan_blocks``); appending an exposure touches only its own chunks.  Schema-1 stores
(one chunk per exposure and tile, all groups, no ingest summaries) still open; a build
refuses them (``reduce.check_store``).

Per-exposure summaries made at ingest, while the exposure is in memory anyway: the negative-
jump counts, the clipped group-1 frame statistics, the group-1 image with the group 2-3 flags
(the RC rule's whole input) and the first-jump index.  They are what the reductions' whole-
frame thresholds and neighbour rules need (RTN, RC), so a build reads every ramp chunk exactly
once: the RC and IPC flags are known before the one pass over the ramps starts.

Codecs (measured by ``benchmarks/bench_store_chunks.py``, README): float32 ramps of noise
compress by only 8-9 % (zstd or blosc-lz4 + bitshuffle) while reading slows by 25-55 %, so
ramps, rates and bias groups are stored uncompressed by default (``codec="none"``); the DQ
arrays, almost all zeros, always use zstd (about 100 x smaller).

Exposure identity: ``<input file name>@<first 12 hex digits of its SHA-256>``
(:func:`exposure_id`; the full hash is the ``input_sha256`` coordinate), so two different
files of one name are two exposures and the same file twice is one.

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
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import dask
import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from . import __version__
from . import instrument as inst
from . import metadata
from .chunksums import CHUNKS, ChunkSums, checked_store, crc32c
from .paths import check_name, inside

SCHEMA_VERSION = 4
READABLE_SCHEMAS = (1, 2, 3, 4)  # 1: no group chunking, no group1/rc_next/first_jump;
# 2: exposures named by file name, no chunk manifests; 3: no jump_counts, rc_next without the
# very-hot bit (all read, 2-4 built, none but 4 appended to)
STAGING = "_staging"
LOCK = ".nrsdark.lock"
LOG = "nrsdark_log.jsonl"
DEFAULT_TILE = 256
GROUP_CHUNK_BYTES = 8 * 2**20  # target size of one ramp chunk (one exposure, tile, groups)
NO_JUMP = np.iinfo(np.int16).max  # first_jump of a pixel with no JUMP_DET group
CODECS = ("none", "zstd", "blosc-lz4")


@contextmanager
def _quiet_zarr(root=None):
    """zarr warns about our non-zarr entries (lock, log, staging) and about consolidated
    metadata not being in the v3 spec; both are expected here.  With the store's ``root``,
    a failure that a damaged metadata file explains becomes a one-line StoreError naming
    the file (:func:`metadata.damage`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently.*")
        try:
            yield
        except Exception as exc:
            if root is not None and not isinstance(exc, StoreError) \
                    and (named := metadata.damage(location(root), exc)) is not None:
                raise named from None
            raise


def _consolidate(path):
    """The commit: the consolidated metadata rewritten (one atomic file replace), then its
    backup (:mod:`.metadata`)."""
    with _quiet_zarr(path):
        zarr.consolidate_metadata(path)
    metadata.write_backup(Path(path))


def _codec(name: str):
    if name == "none":
        return None
    if name == "zstd":
        return ZstdCodec(level=1)
    if name == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
    raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")


def _flag_attrs(names) -> dict:
    return {"flag_masks": [int(inst.DQ[n]) for n in names], "flag_meanings": " ".join(names)}


DQ_NAMES = ("DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT", "HOT", "WARM", "RC", "TELEGRAPH",
            "BAD_REF_PIXEL", "NO_LIN_CORR", "NO_SAT_CHECK", "REFERENCE_PIXEL")

# name: (dims, dtype, fill value, attrs)
VARIABLES = {
    "ramp": (("exposure", "group", "y", "x"), "float32", np.nan,
             {"units": "DN", "long_name": "calibrated dark ramp (jwst detector1 through jump)"}),
    "groupdq": (("exposure", "group", "y", "x"), "uint8", 0,
                {"long_name": "jwst group data quality", **_flag_attrs(
                    ("DO_NOT_USE", "SATURATED", "JUMP_DET", "DROPOUT"))}),
    "pixeldq": (("exposure", "y", "x"), "uint32", 0,
                {"long_name": "jwst pixel data quality", **_flag_attrs(DQ_NAMES)}),
    "rate": (("exposure", "y", "x"), "float32", np.nan,
             {"units": "DN/s", "long_name": "dark rate (jwst ramp_fit)"}),
    "rate_err": (("exposure", "y", "x"), "float32", np.nan,
                 {"units": "DN/s", "long_name": "dark rate uncertainty (jwst ramp_fit ERR)"}),
    "neg_jumps": (("exposure", "y", "x"), "int16", 0,
                  {"long_name": "number of negative jumps (JUMP_DET groups lower than the "
                   "previous group) in the exposure's ramp; RTN input, report §4.1.3"}),
    "group1": (("exposure", "y", "x"), "float32", np.nan,
               {"units": "DN", "long_name": "calibrated group 1 (RC input, report §4.1.3)"}),
    "rc_next": (("exposure", "y", "x"), "uint8", 0,
                {"long_name": "bit 0: group 2, bit 1: group 3 flagged JUMP_DET, DO_NOT_USE or "
                 "SATURATED; bit 2: groups 1-2 on a line from time 0 and no jump before "
                 "saturation, a very hot pixel, not RC (RC input, report §4.1.3)"}),
    "first_jump": (("exposure", "y", "x"), "int16", NO_JUMP,
                   {"long_name": "0-based index of the first JUMP_DET group (32767: none); "
                    "lets a group block of the average ramp start past group 1"}),
    "jump_counts": (("exposure", "y", "x"), "int16", 0,
                    {"long_name": "number of JUMP_DET groups (ESA RTN rule, report §4.1.3)"}),
    "bias_groups": (("exposure", "bias_group", "y_raw", "x"), "float32", np.nan,
                    {"units": "DN", "long_name": "uncalibrated groups 1-2, reference-pixel "
                     "corrected, group-1 mean level kept (bias input, SPEC §3)"}),
}

# per-exposure coordinates: name: (dtype, attrs)
EXPOSURE_COORDS = {
    "exposure": (str, {"long_name": "exposure identity: input file name @ the first 12 hex "
                            "digits of its SHA-256"}),
    "date": ("float64", {"units": "seconds since 1970-01-01T00:00:00",
                         "calendar": "proleptic_gregorian", "long_name": "exposure start (UTC)"}),
    "grating": (str, {}),
    "asic_dt": ("float64", {"units": "K", "long_name": "ASIC Tmax - Tmin around the exposure"}),
    "g1_mean": ("float64", {"units": "DN", "long_name": "3-sigma clipped mean of calibrated "
                            "group 1 over the exposure's non-reference pixels (RC threshold)"}),
    "g1_std": ("float64", {"units": "DN", "long_name": "3-sigma clipped standard deviation of "
                           "calibrated group 1 (RC threshold)"}),
    "bias_level": ("float64", {"units": "DN", "long_name": "median of (1 + a) g1 - a g2 (the "
                               "superbias combination, a = t1 / (t2 - t1)) over the "
                               "science pixels (the exposure's bias level; NaN without bias "
                               "inputs)"}),
    "diff_sigma": ("float64", {"units": "DN", "long_name": "robust sigma of group-to-group "
                               "differences (CDS noise); negative jumps drop by > 3 x this"}),
    "detector": (str, {}),
    "readpatt": (str, {}),
    "subarray": (str, {}),
    "ngroups": ("int32", {}),
    "input_kind": (str, {"long_name": "uncal (calibrated here) or ramp (calibrated elsewhere)"}),
    "input_file": (str, {}),
    "input_sha256": (str, {"long_name": "SHA-256 of the input file"}),
    "jwst_version": (str, {}),
    "crds_context": (str, {}),
    "references": (str, {"long_name": "reference files used (JSON)"}),
}


@dataclass(frozen=True)
class StoreLayout:
    """What every exposure of a store shares; stored in the root attributes."""

    detector: str
    family: str
    readpatt: str
    subarray: str
    ngroups: int
    ny: int
    nx: int
    ny_raw: int
    ystart: int
    xstart: int
    tframe: float
    tgroup: float
    has_bias: bool
    tile_y: int = DEFAULT_TILE
    tile_x: int = DEFAULT_TILE
    codec: str = "none"
    group_chunk: int = 0  # groups per ramp chunk; 0 = all (schema-1 stores)
    schema: int = 1  # layouts without this key come from schema-1 stores

    KEY = ("detector", "family", "readpatt", "subarray", "ngroups", "ny", "nx", "ystart",
           "xstart")

    @classmethod
    def from_header(cls, h, has_bias: bool, tile=(DEFAULT_TILE, DEFAULT_TILE),
                    codec: str = "none", group_chunk: int | None = None) -> StoreLayout:
        """From a jwst primary header (uncal or calibrated: SUBSIZE is the science size).
        ``group_chunk``: groups per ramp chunk (default :func:`default_group_chunk`)."""
        pattern = inst.get_read_pattern(h["READPATT"])
        ny, nx = int(h["SUBSIZE2"]), int(h["SUBSIZE1"])
        _codec(codec)
        check_chunking(tile, group_chunk)
        return cls(
            detector=h["DETECTOR"], family=pattern.family, readpatt=pattern.name,
            subarray=h["SUBARRAY"], ngroups=int(h["NGROUPS"]), ny=ny, nx=nx,
            ny_raw=inst.IRS2_RAW_SIZE if pattern.family == "IRS2" else ny,
            ystart=int(h["SUBSTRT2"]), xstart=int(h["SUBSTRT1"]), tframe=float(h["TFRAME"]),
            tgroup=float(h["TGROUP"]), has_bias=has_bias,
            tile_y=min(tile[0], ny), tile_x=min(tile[1], nx), codec=codec,
            group_chunk=min(int(h["NGROUPS"]), group_chunk) if group_chunk else
            default_group_chunk(int(h["NGROUPS"]), min(tile[0], ny) * min(tile[1], nx)),
            schema=SCHEMA_VERSION)

    def mismatches(self, other: StoreLayout) -> list[str]:
        """Human-readable differences that forbid putting ``other`` into this store."""
        out = [f"{k} {getattr(other, k)} != store's {getattr(self, k)}" for k in self.KEY
               if getattr(self, k) != getattr(other, k)]
        if other.has_bias != self.has_bias:
            out.append("bias inputs " + ("present" if other.has_bias else "absent")
                       + " but the store was made " + ("with" if self.has_bias else "without")
                       + " them (uncal and already-calibrated inputs cannot share a store)")
        return out

    def variables(self) -> list[str]:
        since = {"group1": 2, "rc_next": 2, "first_jump": 2, "jump_counts": 4}
        return [v for v in VARIABLES if (v != "bias_groups" or self.has_bias)
                and self.schema >= since.get(v, 1)]

    @property
    def groups_per_chunk(self) -> int:
        return self.group_chunk or self.ngroups

    def shape(self, var: str, n_exp: int) -> tuple:
        sizes = {"exposure": n_exp, "group": self.ngroups, "y": self.ny, "x": self.nx,
                 "bias_group": 2, "y_raw": self.ny_raw}
        return tuple(sizes[d] for d in VARIABLES[var][0])

    def chunks(self, var: str) -> tuple:
        sizes = {"exposure": 1, "group": self.groups_per_chunk, "y": self.tile_y,
                 "x": self.tile_x, "bias_group": 2, "y_raw": self.tile_y}
        return tuple(sizes[d] for d in VARIABLES[var][0])

    def geometry(self) -> inst.Subarray:
        """The science-layout region of the detector the store covers."""
        return inst.Subarray(self.subarray, self.xstart, self.ystart, self.nx, self.ny)

    def raw_science_rows(self) -> np.ndarray:
        """Which raw rows (``y_raw``) hold science pixels: all but IRS2's reference samples."""
        if self.family == "IRS2":
            return inst.irs2_normal_rows(self.detector)
        return np.ones(self.ny_raw, bool)

    def science_rows(self, raw: np.ndarray) -> np.ndarray:
        """An image in the raw layout (``y_raw`` rows, e.g. a MASK) cut to the science rows;
        one already in the science layout is returned as it is."""
        return raw[self.raw_science_rows()] if raw.shape[0] != self.ny else raw

    def group_times(self) -> np.ndarray:
        return inst.group_times(inst.get_read_pattern(self.readpatt), self.tframe, self.ngroups)


def exposure_id(name: str, sha256: str) -> str:
    """An exposure's identity in a store: the input file name and its content hash, so two
    different files of one name are two exposures and the same file twice is one."""
    return f"{name}@{sha256[:12]}"


def file_sha256(path, block: int = 8 << 20) -> str:
    """SHA-256 of a file, read in 8 MiB blocks (~1.5 GB/s here; hashlib releases the GIL)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        buf = bytearray(block)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def location(path) -> Path | str:
    """Where a store is: a local ``Path`` (plain paths and ``file://`` URLs) or an fsspec URL
    string (``s3://bucket/x.zarr``, ...; credentials and endpoints from the usual fsspec /
    AWS configuration, e.g. ``AWS_ENDPOINT_URL``)."""
    text = str(path)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        return text.rstrip("/")
    return Path(path)


def child(base, *parts) -> Path | str:
    """``base/parts...`` for a local path or a URL."""
    base = location(base)
    return base.joinpath(*parts) if isinstance(base, Path) else "/".join([base, *parts])


def _filesystem(path):
    import fsspec

    return fsspec.core.url_to_fs(str(location(path)))


def _chunk_files(array_dir, index: int) -> dict[str, tuple[str, int]]:
    """The chunk files of exposure ``index`` of one array: ``{path below c/<index>/: (full
    path, size)}`` (local or remote, through fsspec)."""
    fs, root = _filesystem(child(array_dir, "c", str(index)))
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {p[len(root) + 1:]: (p, int(i["size"])) for p, i in found.items()
            if i["type"] == "file"}


def check_chunking(tile, group_chunk=None) -> None:
    """A tile is two positive integers (rows, columns); a group chunk a positive integer."""
    if (not isinstance(tile, (tuple, list)) or len(tile) != 2
            or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t > 0
                       for t in tile)):
        raise ValueError(f"a tile is two positive integers (rows x columns), not {tile!r}")
    if group_chunk is not None and (not isinstance(group_chunk, (int, np.integer))
                                    or isinstance(group_chunk, bool) or group_chunk < 1):
        raise ValueError(f"groups per chunk must be a positive integer, not {group_chunk!r}")


def default_group_chunk(ngroups: int, tile_pixels: int) -> int:
    """Groups per ramp chunk: as even a split of the ramp as keeps a chunk near 8 MiB (30 of
    88 groups on 256 x 256 tiles), so a build can hold a group block of every exposure of a
    tile without reading any chunk twice (see ``reduce.plan_blocks``)."""
    per = max(1, GROUP_CHUNK_BYTES // (4 * tile_pixels))
    nblocks = -(-ngroups // per)
    return -(-ngroups // nblocks)


def _create_variable(group, layout: StoreLayout, var: str, n_exp: int, coords_attr: str):
    dims, dtype, fill, attrs = VARIABLES[var]
    codec = _codec(layout.codec if var in ("ramp", "rate", "rate_err", "bias_groups")
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
    a lazy array-like with ``shape`` and basic-slice ``__getitem__`` (``jwst_recipe.MappedArray``:
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


def chunk_checksums(root: Path, var: str, index: int, row_chunk: int | None = None) -> dict:
    """``{chunk file below <var>/c/<index>/: [size, CRC32C]}`` of exposure ``index`` of the
    store (or staged exposure) at ``root``: a commit's manifest entry; with ``row_chunk``, only
    the chunks of that tile row (what one tiled-calibration piece wrote)."""
    row_axis = list(VARIABLES[var][0]).index("y_raw" if var == "bias_groups" else "y") - 1
    out = {}
    for rel, (f, size) in _chunk_files(root / var, index).items():
        if row_chunk is None or int(rel.split("/")[row_axis]) == row_chunk:
            out[rel] = [size, crc32c(Path(f).read_bytes())]
    return out


def staged_checksums(path: Path, var: str, row_chunk: int | None = None) -> dict:
    """:func:`chunk_checksums` of a staged exposure (``path``: ``_staging/<exposure>``)."""
    return chunk_checksums(path, var, 0, row_chunk)


def seal_staging(path: Path, chunks: dict) -> None:
    """Write the staged exposure's chunk manifest (``CHUNKS.json``, with the exposure's name,
    ``path``'s) and mark it complete."""
    (path / "CHUNKS.json").write_text(json.dumps({**chunks, "_exposure": path.name}))
    (path / "COMPLETE").write_text("ok\n")


class StoreError(RuntimeError):
    pass


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
        fs, root = _filesystem(child(self.path, "zarr.json"))
        return fs.exists(root)

    def layout(self) -> StoreLayout:
        with _quiet_zarr(self.path):
            attrs = zarr.open_group(str(self.path), mode="r", use_consolidated=True).attrs
        if attrs.get("nrsdark_schema") not in READABLE_SCHEMAS:
            raise StoreError(f"{self.path} is not an nrsdark store (schema "
                             f"{attrs.get('nrsdark_schema')!r})")
        return StoreLayout(**attrs["layout"])

    def provenance(self) -> dict:
        with _quiet_zarr(self.path):
            return dict(zarr.open_group(str(self.path), mode="r",
                                        use_consolidated=True).attrs.get("provenance", {}))

    def committed(self) -> list[str]:
        with _quiet_zarr(self.path):
            g = zarr.open_group(str(self.path), mode="r", use_consolidated=True)
            return [str(s) for s in g["exposure"][:]]

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
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
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
        does not hold on entry (``trim``; :func:`metadata.repair` trims after mending the
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
                self._repair()
            yield self
        finally:
            shutil.rmtree(self.path / STAGING, ignore_errors=True)
            lock.unlink(missing_ok=True)  # while still holding it: see the inode check above
            os.close(fd)

    def _repair(self):
        """Trim arrays to the committed length and drop staged exposures (after a kill)."""
        n = len(self.committed())
        with _quiet_zarr(self.path):
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
        with _quiet_zarr(self.path):
            schema = zarr.open_group(self.path, mode="r", use_consolidated=True).attrs.get(
                "nrsdark_schema")
        if schema != SCHEMA_VERSION:
            raise StoreError(f"{self.path} was made by an older nrsdark_dask (store schema "
                             f"{schema}, now {SCHEMA_VERSION}); it can still be built, but new "
                             "exposures go into a new store")

    def committed_hashes(self) -> dict[str, str]:
        """``{input SHA-256: exposure}`` of the committed exposures."""
        with _quiet_zarr(self.path):
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
        fs, _ = _filesystem(self.path)
        out = []
        for i in range(len(names)) if exposures is None else exposures:
            listed = self._manifest(i)
            if listed is None:  # see unverifiable()
                continue
            for var in layout.variables():
                on_disk = _chunk_files(child(self.path, var), i)
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
        with _quiet_zarr(self.path):
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
    with _quiet_zarr(path):
        ds = xr.open_zarr(checked_store(path), consolidated=True, **kwargs)
    # the per-exposure coordinates are a few values each: numpy, not dask, so that reading
    # them (a file's HISTORY, a grating check) never computes anything; read without dask
    # (chunks=None: xarray's own lazy arrays, decoded), all at once
    with _quiet_zarr(path):
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
    with _quiet_zarr(root):
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


def date_seconds(iso: str) -> float:
    """ISO UTC date -> seconds since 1970 (the encoding of the ``date`` coordinate)."""
    t = dt.datetime.fromisoformat(iso.replace("Z", "")).replace(tzinfo=dt.timezone.utc)
    return t.timestamp()
