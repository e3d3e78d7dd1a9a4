"""CRDS-format reference files (SPEC §9): SUPERBIAS, DARK, MASK, written tile by tile.

Headers come from stdatamodels (a model with the right ``meta`` and tiny arrays is saved once
to learn the keywords its schema writes); the data are then streamed: each FITS file is
pre-sized on disk (headers written, data areas allocated), and ``dask.array.store`` writes every
tile straight into its place through a memory map, so no worker ever holds a whole cube.
Afterwards each file is opened with its stdatamodels model and validated, and checked for
non-finite values (CRDS expects numbers: unknowns are filled and flagged upstream).

Memory: one tile of each output array per task (e.g. ngroups x 256 x 256 x 4 bytes of cube).
Files have no ASDF extension; stdatamodels and jwst read FITS keywords directly.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
from astropy.io import fits
from astropy.time import Time
from stdatamodels.jwst import datamodels as dm

from . import __version__
from . import instrument as inst
from .reduce import Products

DQ = inst.DQ
DQ_DEF_NAMES = ("DO_NOT_USE", "SATURATED", "JUMP_DET", "HOT", "WARM", "RC", "TELEGRAPH",
                "BAD_REF_PIXEL", "REFERENCE_PIXEL", "UNRELIABLE_BIAS", "UNRELIABLE_DARK")
NIRSPEC_EXP_TYPES = "NRS_BRIGHTOBJ|NRS_DARK|NRS_FIXEDSLIT|NRS_IFU|NRS_MSASPEC|"
ON_DISK = {np.dtype("float32"): (-32, ">f4", 0), np.dtype("uint32"): (32, ">i4", 2**31),
           np.dtype("uint8"): (8, "u1", 0)}


@dataclass(frozen=True)
class FitsRegion:
    """A picklable ``__setitem__`` target: one HDU's data area of a pre-sized FITS file."""

    path: str
    offset: int
    shape: tuple
    dtype: str
    bzero: int

    def __setitem__(self, key, value):
        mm = np.memmap(self.path, dtype=self.dtype, mode="r+", offset=self.offset,
                       shape=self.shape)
        value = np.asarray(value)
        if self.bzero:
            value = (value.astype(np.int64) - self.bzero)
        mm[key] = value.astype(self.dtype)
        mm.flush()
        del mm


def _dq_def():
    names = sorted(DQ_DEF_NAMES, key=lambda n: DQ[n])
    return [(int(np.log2(DQ[n])), DQ[n], n, n.replace("_", " ").lower()) for n in names]


def _meta(model, p: Products, reftype: str, descrip: str, author: str, history: list[str]):
    lay = p.layout
    dates = sorted(np.asarray(p.dates.values).astype("datetime64[s]").tolist())
    first, last = Time(dates[0]), Time(dates[-1])
    mid = Time((first.mjd + last.mjd) / 2, format="mjd")
    m = model.meta
    m.reftype = reftype
    m.description = descrip
    m.author = author
    m.pedigree = f"INFLIGHT {first.isot[:10]} {last.isot[:10]}"
    m.useafter = mid.isot[:10] + "T00:00:00"
    m.telescope = "JWST"
    m.instrument.name = "NIRSPEC"
    m.instrument.detector = lay.detector
    m.subarray.name = lay.subarray
    m.subarray.xstart, m.subarray.ystart = lay.xstart, lay.ystart
    m.subarray.xsize, m.subarray.ysize = lay.nx, lay.ny
    m.subarray.fastaxis, m.subarray.slowaxis = inst.fast_slow_axes(lay.detector)
    m.exposure.type = "NRS_DARK"
    m.exposure.readpatt = lay.readpatt
    m.exposure.p_readpatt = f"{lay.readpatt}|"
    pattern = inst.get_read_pattern(lay.readpatt)
    m.exposure.ngroups = lay.ngroups
    m.exposure.nframes = pattern.nframes
    m.exposure.groupgap = pattern.groupgap
    for line in history:
        model.add_history_entry(line)


def _history(p: Products, versions: dict) -> list[str]:
    out = [f"Made by nrsdark_dask {__version__} from {len(p.exposures)} calibrated dark "
           f"exposures ({p.layout.detector} {p.layout.readpatt} {p.layout.subarray}), following "
           "JWST-STScI-009226 (nrs_bias_dark)."]
    out += [f"Input: {name}" for name in p.exposures]
    out += ["Software: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return out


def _template_headers(model, tmpdir) -> tuple[list[fits.Header], list[fits.BinTableHDU]]:
    path = Path(tmpdir) / f"template_{type(model).__name__}.fits"
    model.save(path)
    with fits.open(path) as hdul:
        return [h.header.copy() for h in hdul if h.name != "ASDF"], \
            [h.copy() for h in hdul if isinstance(h, fits.BinTableHDU) and h.name != "ASDF"]


def _presize(path: Path, primary: fits.Header, images: list[tuple[fits.Header, tuple, np.dtype]],
             tables: list[fits.BinTableHDU]) -> dict[str, FitsRegion]:
    """Write headers, allocate data areas (sparse file), append the tables; return where each
    image's data go."""
    regions = {}
    with open(path, "wb") as f:
        h = primary.copy()
        h["SIMPLE"], h["BITPIX"], h["NAXIS"], h["EXTEND"] = True, 8, 0, True
        # CRDS selection keywords the reference-file schemas do not carry
        h.setdefault("EXP_TYPE", "NRS_DARK")
        h["P_EXP_TY"] = (NIRSPEC_EXP_TYPES, "exposure types this file applies to")
        for k in [k for k in h if k.startswith("NAXIS") and k != "NAXIS"]:
            del h[k]
        f.write(fits.PrimaryHDU(header=h).header.tostring().encode("ascii"))
        for hdr, shape, dtype in images:
            bitpix, disk, bzero = ON_DISK[np.dtype(dtype)]
            h = fits.Header()
            h["XTENSION"], h["BITPIX"], h["NAXIS"] = "IMAGE", bitpix, len(shape)
            for i, n in enumerate(reversed(shape)):
                h[f"NAXIS{i + 1}"] = n
            h["PCOUNT"], h["GCOUNT"] = 0, 1
            if bzero:
                h["BZERO"], h["BSCALE"] = bzero, 1
            for card in hdr.cards:
                if card.keyword not in h and not card.keyword.startswith(("NAXIS", "BZERO",
                                                                          "BSCALE", "BITPIX")):
                    h.append(card)
            f.write(h.tostring().encode("ascii"))
            offset = f.tell()
            nbytes = int(np.prod(shape)) * np.dtype(disk).itemsize
            padded = -(-nbytes // 2880) * 2880
            f.seek(offset + padded - 1)
            f.write(b"\0")
            regions[hdr["EXTNAME"]] = FitsRegion(str(path), offset, tuple(shape), disk, bzero)
    if tables:  # DQ_DEF: astropy appends after the (still empty) data areas
        with fits.open(path, mode="append") as hdul:
            for t in tables:
                hdul.append(t)
    return regions


def write_reference_files(p: Products, outdir, *, author: str = "nrsdark_dask",
                          versions: dict | None = None) -> dict[str, Path]:
    """Write SUPERBIAS (if the store has bias inputs), DARK and MASK into ``outdir``.

    Returns ``{reftype: path}``.  Every array is computed and written tile by tile in one
    ``dask.array.store`` call (shared intermediates are computed once).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lay = p.layout
    tag = f"{lay.detector.lower()}_{lay.readpatt.lower()}_{lay.subarray.lower()}"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    history = _history(p, versions or {})
    G, ny, nx, nyr = lay.ngroups, lay.ny, lay.nx, lay.ny_raw
    sources, targets, files, parts = [], [], {}, {}
    with tempfile.TemporaryDirectory() as tmpdir:
        plans = []
        dark = dm.DarkNirspecModel(data=np.zeros((1, 1, 1), np.float32),
                                   err=np.zeros((1, 1, 1), np.float32),
                                   dq=np.zeros((1, 1), np.uint32),
                                   dark_rate=np.zeros((1, 1), np.float32),
                                   dark_rate_unc=np.zeros((1, 1), np.float32), dq_def=_dq_def())
        _meta(dark, p, "DARK", "NIRSpec dark: synthesized cube, JWST-STScI-009226", author,
              history)
        plans.append(("dark", dark, [("SCI", (G, ny, nx), "float32", p["dark_cube"]),
                                     ("ERR", (G, ny, nx), "float32", p["dark_err"]),
                                     ("DQ", (ny, nx), "uint32", p["dark_dq"]),
                                     ("DRK", (ny, nx), "float32", p["dark_rate"]),
                                     ("UNC", (ny, nx), "float32", p["dark_rate_unc"]),
                                     ("GROUPDQ", (G, ny, nx), "uint8", p["dark_groupdq"])]))
        mask = dm.MaskModel(dq=np.zeros((1, 1), np.uint32), dq_def=_dq_def())
        _meta(mask, p, "MASK", "NIRSpec bad pixel mask with new hot pixels", author, history)
        plans.append(("mask", mask, [("DQ", (nyr, nx), "uint32", p["mask"])]))
        if "superbias" in p.arrays:
            sb = dm.SuperBiasModel(data=np.zeros((1, 1), np.float32),
                                   err=np.zeros((1, 1), np.float32),
                                   dq=np.zeros((1, 1), np.uint32), dq_def=_dq_def())
            _meta(sb, p, "SUPERBIAS", "NIRSpec superbias: 2 g1 - g2, JWST-STScI-009226", author,
                  history)
            plans.append(("superbias", sb, [("SCI", (nyr, nx), "float32", p["superbias"]),
                                            ("ERR", (nyr, nx), "float32", p["superbias_err"]),
                                            ("DQ", (nyr, nx), "uint32", p["superbias_dq"])]))
        for reftype, model, arrays in plans:
            headers, tables = _template_headers(model, tmpdir)
            model.close()
            by_name = {h.get("EXTNAME", "PRIMARY"): h for h in headers}
            images = []
            for name, shape, dtype, _ in arrays:
                hdr = by_name.get(name, fits.Header()).copy()
                hdr["EXTNAME"] = name
                images.append((hdr, shape, np.dtype(dtype)))
            path = outdir / f"nrsdark_{tag}_{reftype}_{stamp}.fits"
            part = path.with_name(path.name + ".part")  # renamed when complete and valid
            regions = _presize(part, by_name["PRIMARY"], images, tables)
            for name, shape, dtype, arr in arrays:
                sources.append(arr.data.astype(dtype))
                targets.append(regions[name])
            files[reftype], parts[reftype] = path, part
        da.store(sources, targets, lock=False)  # on the scheduler the caller configured
    for reftype, path in files.items():
        validate(parts[reftype], reftype)
        os.replace(parts[reftype], path)
    return files


MODELS = {"dark": dm.DarkNirspecModel, "superbias": dm.SuperBiasModel, "mask": dm.MaskModel}


def validate(path, reftype: str) -> None:
    """Open with the stdatamodels model, validate, and require finite data everywhere."""
    with MODELS[reftype](str(path)) as m:
        m.validate()
        for attr in ("data", "err", "dark_rate", "dark_rate_unc"):
            arr = getattr(m, attr, None) if attr in m.instance else None
            if arr is not None and not np.isfinite(arr).all():
                raise ValueError(f"{path}: non-finite values in {attr}")
