"""The store's schema: its variables, coordinates, layout and chunking (``docs/store.md``).

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
                                                       saturates, a very hot pixel; bit 3:
                                                       group 1 SATURATED (RC input)
    first_jump  (exposure, y, x)              int16    index of the first JUMP_DET group (32767:
                                                       none)
    jump_counts (exposure, y, x)              int16    JUMP_DET groups per pixel (the ESA RTN
                                                       rule's input)
    bias_groups (exposure, bias_group, y_raw, x) float32 uncalibrated groups 1 and 2 after the
                                                       reference-pixel correction, the group-1
                                                       mean level added back (report
                                                       §4.1.1); absent for stores of
                                                       already-calibrated inputs
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
(``reduction.budget.plan_blocks``); appending an exposure touches only its own chunks.  Schema-1 stores
(one chunk per exposure and tile, all groups, no ingest summaries) still open; a build
refuses them (``reduction.source.check_store``).

Per-exposure summaries made at ingest, while the exposure is in memory anyway: the negative-
jump counts, the clipped group-1 frame statistics, the group-1 image with the group 2-3 flags
(the RC rule's whole input) and the first-jump index.  They are what the reductions' whole-
frame thresholds and neighbour rules need (RTN, RC), so a build reads every ramp chunk exactly
once: the RC and IPC flags are known before the one pass over the ramps starts.

Codecs (measured by ``benchmarks/bench_store_chunks.py``, docs/benchmarks.md): float32 ramps of noise
compress by only 8-9 % (zstd or blosc-lz4 + bitshuffle) while reading slows by 25-55 %, so
ramps, rates and bias groups are stored uncompressed by default (``codec="none"``); the DQ
arrays, almost all zeros, always use zstd (about 100 x smaller).

Exposure identity: ``<input file name>@<first 12 hex digits of its SHA-256>``
(:func:`exposure_id`; the full hash is the ``input_sha256`` coordinate), so two different
files of one name are two exposures and the same file twice is one.
"""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from zarr.codecs import BloscCodec, ZstdCodec

from .. import instrument as inst

SCHEMA_VERSION = 5

# the chunk manifests of the commits: <store>/nrsdark_chunks/<exposure index>.json
CHUNKS = "nrsdark_chunks"


# 1: no group chunking, no group1/rc_next/first_jump; 2: exposures named by file name, no
# chunk manifests; 3: no jump_counts, rc_next without the very-hot bit; 4: rc_next without
# bit 3, group 1 SATURATED (issue 21).  All read, 2-5 built (4 with a warning), none but 5
# appended to
READABLE_SCHEMAS = (1, 2, 3, 4, 5)


DEFAULT_TILE = 256


GROUP_CHUNK_BYTES = 8 * 2**20  # target size of one ramp chunk (one exposure, tile, groups)


NO_JUMP = np.iinfo(np.int16).max  # first_jump of a pixel with no JUMP_DET group


CODECS = ("none", "zstd", "blosc-lz4")


def make_codec(name: str):
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
                 "saturation, a very hot pixel, not RC; bit 3: group 1 SATURATED (since issue "
                 "21) (RC input, report §4.1.3)"}),
    "first_jump": (("exposure", "y", "x"), "int16", NO_JUMP,
                   {"long_name": "0-based index of the first JUMP_DET group (32767: none); "
                    "lets a group block of the average ramp start past group 1"}),
    "jump_counts": (("exposure", "y", "x"), "int16", 0,
                    {"long_name": "number of JUMP_DET groups (ESA RTN rule, report §4.1.3)"}),
    "bias_groups": (("exposure", "bias_group", "y_raw", "x"), "float32", np.nan,
                    {"units": "DN", "long_name": "uncalibrated groups 1-2, reference-pixel "
                     "corrected, group-1 mean level kept (bias input, report §4.1.1)"}),
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
        make_codec(codec)
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


def truncation(path) -> str:
    """Why a FITS file is shorter than its headers say ("" when it is whole): each HDU's data
    must end inside the file (the FITS size rule, BITPIX x GCOUNT x (PCOUNT + NAXIS1 x ...);
    missing end padding alone is tolerated)."""
    from astropy.io import fits

    size = Path(path).stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy's own "may have been truncated"
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            for i, hdu in enumerate(hdul):
                h = hdu.header
                naxis = h.get("NAXIS", 0)
                n = int(np.prod([h.get(f"NAXIS{k}", 0) for k in range(1, naxis + 1)]))
                nbytes = abs(h["BITPIX"]) // 8 * h.get("GCOUNT", 1) * (h.get("PCOUNT", 0) + n)
                end = hdul.fileinfo(i)["datLoc"] + (nbytes if naxis else 0)
                if end > size:
                    return (f"truncated file: {hdu.name or f'HDU {i}'} data end at byte {end}, "
                            f"the file has {size}")
    return ""


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


def filesystem(path):
    import fsspec

    return fsspec.core.url_to_fs(str(location(path)))


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
    tile without reading any chunk twice (see ``reduction.budget.plan_blocks``)."""
    per = max(1, GROUP_CHUNK_BYTES // (4 * tile_pixels))
    nblocks = -(-ngroups // per)
    return -(-ngroups // nblocks)


class StoreError(RuntimeError):
    pass


def date_seconds(iso: str) -> float:
    """ISO UTC date -> seconds since 1970 (the encoding of the ``date`` coordinate)."""
    t = dt.datetime.fromisoformat(iso.replace("Z", "")).replace(tzinfo=dt.timezone.utc)
    return t.timestamp()
