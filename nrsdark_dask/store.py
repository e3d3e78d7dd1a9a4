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
    bias_groups (exposure, bias_group, y_raw, x) float32 uncalibrated groups 1 and 2 after the
                                                       reference-pixel correction, the group-1
                                                       mean level added back (SPEC §3); absent
                                                       for stores of already-calibrated inputs
    coords: exposure (input file name), date, grating, asic_dt, g1_mean, g1_std (clipped
            frame statistics of calibrated group 1), diff_sigma (CDS scatter), bias_level
            (median of 2 g1 - g2), detector, readpatt, subarray, ngroups,
            input_kind, input_file, jwst_version, crds_context, references (per exposure);
            group (1-based), group_time (s since reset); y, x (0-based full-frame
            DMS pixel indices, so subarrays sit where they are on the detector); y_raw (raw
            rows: 3200 for IRS2, else = y)
    attrs: the store's layout (detector, readout family, readpatt, subarray, ngroups, frame and
           group times, chunking, codecs), provenance (software versions, step list and
           parameters), DQ bit meanings on the DQ variables (CF flag_masks/flag_meanings).

Chunking: ``(1, ngroups, tile_y, tile_x)`` for ramps, ``(1, tile_y, tile_x)`` for images.  One
chunk holds one exposure's whole ramp on one tile: the reductions read all exposures of a tile
(E chunks) and never more; appending an exposure touches only its own chunks.  Default tile
256 x 256 (23 MB per ramp chunk for 88 groups); a reduction task over E exposures then holds
E x ngroups x 256 x 256 x 4 bytes of ramp (460 MB for 20 full-frame TRAD inputs).

Per-exposure summaries made at ingest, while the exposure is in memory anyway: the negative-
jump counts and the clipped group-1 frame statistics.  They are what the reductions' whole-
frame thresholds need (RTN, RC), so building the reference files never needs an extra pass
over the ramps for them.

Codecs (measured by ``benchmarks/bench_store_chunks.py``, README): float32 ramps of noise
compress by only 8-9 % (zstd or blosc-lz4 + bitshuffle) while reading slows by 25-55 %, so
ramps, rates and bias groups are stored uncompressed by default (``codec="none"``); the DQ
arrays, almost all zeros, always use zstd (about 100 x smaller).

Commit protocol (nothing half-written is ever visible):

1. a worker writes its exposure into ``_staging/<name>/`` (same arrays, exposure length 1);
2. the driver (one process, holding ``.nrsdark.lock``) resizes the main arrays to n + 1,
   moves the staged chunk directories ``<var>/c/0`` to ``<var>/c/<n>`` (one rename each),
   writes the per-exposure coordinates, and then
3. rewrites the consolidated metadata (root ``zarr.json``, an atomic file replace).  That
   rewrite is the commit: readers (xarray uses the consolidated metadata) see n + 1 exposures
   only from then on.  A run killed anywhere leaves a store that opens with whole exposures;
   :meth:`RampStore.open_for_writing` trims any uncommitted tail and clears the staging area.

Only local-filesystem stores are supported for writing (the chunk move is a rename); reading
works wherever zarr reads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from . import __version__
from . import instrument as inst

SCHEMA_VERSION = 1
STAGING = "_staging"
LOCK = ".nrsdark.lock"
LOG = "nrsdark_log.jsonl"
DEFAULT_TILE = 256
CODECS = ("none", "zstd", "blosc-lz4")


@contextmanager
def _quiet_zarr():
    """zarr warns about our non-zarr entries (lock, log, staging) and about consolidated
    metadata not being in the v3 spec; both are expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently.*")
        yield


def _consolidate(path):
    with _quiet_zarr():
        zarr.consolidate_metadata(path)


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
    "bias_groups": (("exposure", "bias_group", "y_raw", "x"), "float32", np.nan,
                    {"units": "DN", "long_name": "uncalibrated groups 1-2, reference-pixel "
                     "corrected, group-1 mean level kept (bias input, SPEC §3)"}),
}

# per-exposure coordinates: name: (dtype, attrs)
EXPOSURE_COORDS = {
    "exposure": (str, {"long_name": "input file name"}),
    "date": ("float64", {"units": "seconds since 1970-01-01T00:00:00",
                         "calendar": "proleptic_gregorian", "long_name": "exposure start (UTC)"}),
    "grating": (str, {}),
    "asic_dt": ("float64", {"units": "K", "long_name": "ASIC Tmax - Tmin around the exposure"}),
    "g1_mean": ("float64", {"units": "DN", "long_name": "3-sigma clipped mean of calibrated "
                            "group 1 over the exposure's non-reference pixels (RC threshold)"}),
    "g1_std": ("float64", {"units": "DN", "long_name": "3-sigma clipped standard deviation of "
                           "calibrated group 1 (RC threshold)"}),
    "bias_level": ("float64", {"units": "DN", "long_name": "median of 2 g1 - g2 over the "
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
    "jwst_version": (str, {}),
    "crds_context": (str, {}),
    "references": (str, {"long_name": "reference files used (JSON)"}),
}
STATIC_COORDS = ("group", "group_time", "y", "x", "bias_group", "y_raw")


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

    KEY = ("detector", "family", "readpatt", "subarray", "ngroups", "ny", "nx", "ystart",
           "xstart")

    @classmethod
    def from_header(cls, h, has_bias: bool, tile=(DEFAULT_TILE, DEFAULT_TILE),
                    codec: str = "none") -> StoreLayout:
        """From a jwst primary header (uncal or calibrated: SUBSIZE is the science size)."""
        pattern = inst.get_read_pattern(h["READPATT"])
        ny, nx = int(h["SUBSIZE2"]), int(h["SUBSIZE1"])
        _codec(codec)
        return cls(
            detector=h["DETECTOR"], family=pattern.family, readpatt=pattern.name,
            subarray=h["SUBARRAY"], ngroups=int(h["NGROUPS"]), ny=ny, nx=nx,
            ny_raw=inst.IRS2_RAW_SIZE if pattern.family == "IRS2" else ny,
            ystart=int(h["SUBSTRT2"]), xstart=int(h["SUBSTRT1"]), tframe=float(h["TFRAME"]),
            tgroup=float(h["TGROUP"]), has_bias=has_bias,
            tile_y=min(tile[0], ny), tile_x=min(tile[1], nx), codec=codec)

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
        return [v for v in VARIABLES if v != "bias_groups" or self.has_bias]

    def shape(self, var: str, n_exp: int) -> tuple:
        sizes = {"exposure": n_exp, "group": self.ngroups, "y": self.ny, "x": self.nx,
                 "bias_group": 2, "y_raw": self.ny_raw}
        return tuple(sizes[d] for d in VARIABLES[var][0])

    def chunks(self, var: str) -> tuple:
        sizes = {"exposure": 1, "group": self.ngroups, "y": self.tile_y, "x": self.tile_x,
                 "bias_group": 2, "y_raw": self.tile_y}
        return tuple(sizes[d] for d in VARIABLES[var][0])

    def geometry(self) -> inst.Subarray:
        """The science-layout region of the detector the store covers."""
        return inst.Subarray(self.subarray, self.xstart, self.ystart, self.nx, self.ny)

    def group_times(self) -> np.ndarray:
        return inst.group_times(inst.get_read_pattern(self.readpatt), self.tframe, self.ngroups)


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
    removed, i.e. shapes as in one exposure) into ``_staging/<name>/``; return that path."""
    path = Path(store_path) / STAGING / name
    if path.exists():
        shutil.rmtree(path)
    g = zarr.open_group(path, mode="w", zarr_format=3)
    for var in layout.variables():
        arr = _create_variable(g, layout, var, 1, "")
        value = np.asarray(data[var])
        expected = layout.shape(var, 1)[1:]
        if value.shape != expected:
            raise ValueError(f"{name}: {var} has shape {value.shape}, store expects {expected}")
        arr[0] = value.astype(arr.dtype, copy=False)
    (path / "COMPLETE").write_text("ok\n")
    return path


class StoreError(RuntimeError):
    pass


class RampStore:
    """A calibrated-ramp store on local disk.  Reading: :func:`open_dataset`."""

    def __init__(self, path):
        self.path = Path(path)

    # ---- reading --------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.path / "zarr.json").exists()

    def layout(self) -> StoreLayout:
        with _quiet_zarr():
            attrs = zarr.open_group(self.path, mode="r", use_consolidated=True).attrs
        if attrs.get("nrsdark_schema") != SCHEMA_VERSION:
            raise StoreError(f"{self.path} is not an nrsdark store (schema "
                             f"{attrs.get('nrsdark_schema')!r})")
        return StoreLayout(**attrs["layout"])

    def committed(self) -> list[str]:
        with _quiet_zarr():
            g = zarr.open_group(self.path, mode="r", use_consolidated=True)
            return [str(s) for s in g["exposure"][:]]

    # ---- writing --------------------------------------------------------------------------
    @classmethod
    def create(cls, path, layout: StoreLayout, provenance: dict) -> RampStore:
        """Create an empty store (0 exposures) with all static coordinates."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} already exists")
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
        return cls(path)

    @contextmanager
    def writer(self):
        """Exclusive write access for this process (a lock file with pid and host); a stale
        lock of a dead process on this host is taken over.  Repairs the store on entry."""
        lock = self.path / LOCK
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, json.dumps(me).encode())
                os.close(fd)
                break
            except FileExistsError:
                try:
                    other = json.loads(lock.read_text())
                except (OSError, ValueError):
                    other = {}
                if other.get("host") == me["host"] and not _pid_alive(other.get("pid", -1)):
                    lock.unlink(missing_ok=True)
                    continue
                raise StoreError(f"{self.path} is being written by {other} (remove {lock} if "
                                 "that process is gone)") from None
        try:
            self._repair()
            yield self
        finally:
            shutil.rmtree(self.path / STAGING, ignore_errors=True)
            lock.unlink(missing_ok=True)

    def _repair(self):
        """Trim arrays to the committed length and drop staged exposures (after a kill)."""
        n = len(self.committed())
        with _quiet_zarr():
            g = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            arrays = list(g.arrays())
        for name, arr in arrays:
            if arr.metadata.dimension_names and arr.metadata.dimension_names[0] == "exposure" \
                    and arr.shape[0] != n:
                arr.resize((n,) + arr.shape[1:])
                _remove_chunks_from(self.path / name, n)
        shutil.rmtree(self.path / STAGING, ignore_errors=True)

    def commit(self, name: str, coords: dict) -> int:
        """Move a staged exposure into the store and publish it; return its index."""
        staged = self.path / STAGING / name
        if not (staged / "COMPLETE").exists():
            raise StoreError(f"exposure {name} is not completely staged")
        committed = self.committed()
        if name in committed:
            raise StoreError(f"exposure {name} is already in the store")
        n = len(committed)
        with _quiet_zarr():
            g = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        layout = self.layout()
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
        p = self.path / LOG
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _remove_chunks_from(array_dir: Path, n: int):
    cdir = array_dir / "c"
    if cdir.is_dir():
        for d in cdir.iterdir():
            if d.name.isdigit() and int(d.name) >= n:
                shutil.rmtree(d) if d.is_dir() else d.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_dataset(path, **kwargs) -> xr.Dataset:
    """The store as a lazy xarray Dataset (dask arrays chunked like the store)."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise FileNotFoundError(f"no store at {path}")
    with _quiet_zarr():
        return xr.open_zarr(path, consolidated=True, **kwargs)


def date_seconds(iso: str) -> float:
    """ISO UTC date -> seconds since 1970 (the encoding of the ``date`` coordinate)."""
    t = dt.datetime.fromisoformat(iso.replace("Z", "")).replace(tzinfo=dt.timezone.utc)
    return t.timestamp()
