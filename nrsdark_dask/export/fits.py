"""CRDS-format reference files: SUPERBIAS, DARK, MASK, written tile by tile.

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
import errno
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from stdatamodels.jwst import datamodels as dm

from .. import __version__
from .. import instrument as inst
from ..paths import human_bytes
from ..reduction.result import Products
from ..reduction.tables import (REFERENCE_FILES, ReferenceFile, dq_def_names, file_products,
                                reference_file)

DQ = inst.DQ
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
        del mm  # no flush: the page cache is coherent; the file is validated, then renamed


def _dq_def():
    names = sorted(dq_def_names(), key=lambda n: DQ[n])
    return [(int(np.log2(DQ[n])), DQ[n], n, n.replace("_", " ").lower()) for n in names]


def _meta(model, p: Products, ref: ReferenceFile, author: str, history: list[str]):
    """The file's header keywords (CRDS format), through the model's schema: :func:`_region_meta`
    and, for subarray darks and biases, the disperser group (P_GRATIN, report Table 5).  A
    DARK is written one frame per plane (NFRAMES = 1, GROUPGAP = 0, NGROUPS = its planes):
    stcal's dark_sub averages its frames for any science readout (stcal#120)."""
    _region_meta(model, p.layout, p.dates.values, ref.reftype.upper(), ref.description, author,
                 history)
    m = model.meta
    gratings = _gratings(p)
    if ref.frame_keywords:
        m.exposure.type = "ANY"
        m.exposure.ngroups = int(p[file_products(ref.reftype)[0].name].shape[0])
        m.exposure.nframes, m.exposure.groupgap = 1, 0
    if ref.grating_any:
        m.instrument.grating = "ANY"
        if gratings:
            m.instrument.p_grating = "|".join(gratings) + "|"


def file_tag(layout) -> str:
    """``<detector>_<readpatt>_<subarray>`` of the files' names, lower case, from the store's
    layout (values that came from headers): mapped by :func:`pages.safe_name`, so a store
    whose metadata was edited can never name a file outside the outdir."""
    from ..pages import safe_name

    return safe_name(f"{layout.detector}_{layout.readpatt}_{layout.subarray}".lower())


def ascii_card(text) -> str:
    """``text`` as a FITS card may hold it (printable ASCII): any other character as its
    Python escape (``jw\\xe9_nrs1`` for ``jwé_nrs1``), so a non-ASCII input name or author
    still names itself in HISTORY and never stops a build."""
    return "".join(c if 32 <= ord(c) < 127 else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def _region_meta(model, lay, dates, reftype: str, descrip: str, author: str,
                 history: list[str]):
    """Keywords every file of ours carries: PEDIGREE and USEAFTER from the inputs' ``dates``
    (first to last; USEAFTER their middle), the detector and region, and both readout
    patterns of the family (READPATT = ANY, P_READPA: TRAD serves NRS and NRSRAPID); every
    NIRSpec exposure type (P_EXP_TY) is written by :func:`_presize` / :func:`write_mask`."""
    dates = sorted(np.asarray(dates).astype("datetime64[s]").tolist())
    first, last = Time(dates[0]), Time(dates[-1])
    mid = Time((first.mjd + last.mjd) / 2, format="mjd")
    m = model.meta
    m.reftype = reftype
    m.description = ascii_card(descrip)
    m.author = ascii_card(author)
    m.pedigree = f"INFLIGHT {first.isot[:10]} {last.isot[:10]}"
    m.useafter = mid.isot[:10] + "T00:00:00"
    m.telescope = "JWST"
    m.instrument.name = "NIRSPEC"
    m.instrument.detector = lay.detector
    m.subarray.name = lay.subarray
    m.subarray.xstart, m.subarray.ystart = lay.xstart, lay.ystart
    m.subarray.xsize, m.subarray.ysize = lay.nx, lay.ny
    m.subarray.fastaxis, m.subarray.slowaxis = inst.fast_slow_axes(lay.detector)
    m.exposure.readpatt = "ANY"
    m.exposure.p_readpatt = "|".join(sorted(inst.family_patterns(lay.family))) + "|"
    for line in history:
        model.add_history_entry(ascii_card(line))


def write_mask(dq: np.ndarray, outdir, layout, dates, label: str, descrip: str,
               author: str = "nrsdark_dask", history=()) -> Path:
    """One MASK file from an in-memory DQ plane (raw layout; 16 MB for a full frame):
    ``nrsdark_<det>_<readpatt>_<subarray>_mask_<label>.fits`` in ``outdir``, written as a
    ``.part``, validated, then given its name (never replacing a file: ``_2``, ``_3``...)."""
    outdir = check_writable(outdir)
    tag = file_tag(layout)
    part = outdir / f"nrsdark_{tag}_mask_{label}.fits.{socket.gethostname()}-{os.getpid()}.part"
    try:
        ref = reference_file("mask")
        with getattr(dm, ref.model)(dq=np.asarray(dq, np.uint32), dq_def=_dq_def()) as mask, \
                tempfile.TemporaryDirectory(dir=outdir) as tmp:
            _region_meta(mask, layout, dates, ref.reftype.upper(), descrip, author, list(history))
            mask.save(str(Path(tmp) / "mask.fits"))  # the model wants a .fits name
            os.rename(Path(tmp) / "mask.fits", part)
        with fits.open(part, mode="update") as hdul:
            hdul[0].header.setdefault("EXP_TYPE", "ANY")
            hdul[0].header["P_EXP_TY"] = "|".join(inst.NIRSPEC_EXP_TYPES) + "|"
        validate(part, "mask")
        return _publish({"mask": part}, lambda k: {
            "mask": outdir / f"nrsdark_{tag}_mask_{label}{'' if k == 1 else f'_{k}'}.fits"})["mask"]
    finally:
        part.unlink(missing_ok=True)


def _gratings(p: Products) -> tuple[str, ...] | None:
    """The disperser group a subarray build serves (None: every grating)."""
    groups = {inst.disperser_group(p.layout.subarray, g) for g in p.gratings}
    if len(groups) > 1:
        raise ValueError(f"the inputs' gratings ({', '.join(sorted(set(p.gratings)))}) span "
                         f"several {p.layout.subarray} disperser groups: select splits them")
    return groups.pop() if groups else None


def _history(p: Products, versions: dict, notes=()) -> list[str]:
    out = [f"Made by nrsdark_dask {__version__} from {len(p.exposures)} calibrated dark "
           f"exposures ({p.layout.detector} {p.layout.readpatt} {p.layout.subarray}), following "
           "JWST-STScI-009226 (nrs_bias_dark)."]
    out += [f"Input: {name}" for name in p.exposures]
    out += list(notes)
    out += ["Software: " + ", ".join(f"{k} {v}" for k, v in versions.items())]
    return out


def check_writable(outdir) -> Path:
    """Create ``outdir`` if needed and prove it takes a file, before any computing; remove
    ``.part`` files that builds on this host left when they were killed (their process is
    gone)."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / f".nrsdark-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write reference files into {outdir} ({exc.strerror or exc})") \
            from None
    host = socket.gethostname()
    for part in outdir.glob(f"nrsdark_*.fits.{host}-*.part"):
        pid = part.name.rsplit("-", 1)[-1].removesuffix(".part")
        if pid.isdigit() and not process_alive(int(pid)):
            part.unlink(missing_ok=True)
    return outdir


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (its leftovers are not ours to remove)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _publish(parts: dict[str, Path], names) -> dict[str, Path]:
    """Rename the validated ``.part`` files to the first free set of final names (``names(k)``
    for k = 1, 2, ...: the build's stamp, then ``_2``, ``_3``... when a build of the same
    second got there first), never replacing a file: each is hard-linked to its name (which
    fails if the name exists), then the ``.part`` is removed."""
    for k in range(1, 1000):
        final = names(k)
        done = {}
        try:
            for reftype, part in parts.items():
                _link_new(part, final[reftype])
                done[reftype] = final[reftype]
        except FileExistsError:
            for path in done.values():
                path.unlink()
            continue
        for part in parts.values():
            part.unlink()
        return final
    raise FileExistsError(f"no free file name for {next(iter(names(1).values()))}")


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
        # CRDS selection keywords the reference-file schemas do not carry: every NIRSpec
        # exposure type (a long string: astropy writes CONTINUE cards)
        h.setdefault("EXP_TYPE", "ANY")
        h["P_EXP_TY"] = "|".join(inst.NIRSPEC_EXP_TYPES) + "|"
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
        f.flush()
        try:  # the disk space now, not a SIGBUS in a memory-mapped write later
            os.posix_fallocate(f.fileno(), 0, f.tell())
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"not enough disk space for {path.name} in "
                          f"{path.parent}: it needs {human_bytes(f.tell())}, "
                          f"{human_bytes(free)} are free") from None
    if tables:  # DQ_DEF: astropy appends after the (still empty) data areas
        with fits.open(path, mode="append") as hdul:
            for t in tables:
                hdul.append(t)
    return regions


def delivered(ref: ReferenceFile, p: Products) -> bool:
    """Whether a build delivers this reference file (:data:`reduction.tables.REFERENCE_FILES`)."""
    return (not ref.full_frame_only or p.layout.subarray == "FULL") and \
        (ref.needs is None or ref.needs in p.arrays)


def _models(p: Products, author: str, history: list[str]) -> dict:
    """Empty stdatamodels models with the right ``meta``, for each file the build delivers:
    their headers and DQ_DEF tables."""
    models = {}
    for ref in REFERENCE_FILES:
        if delivered(ref, p):
            arrays = {q.attr: np.zeros((1,) * len(q.dims), q.dtype)
                      for q in file_products(ref.reftype)}
            model = getattr(dm, ref.model)(**arrays, dq_def=_dq_def())
            _meta(model, p, ref, author, history)
            models[ref.reftype] = model
    return models


def _stamp() -> str:
    """The UTC second of the build, in the file names."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")


def _link_new(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` unless ``dst`` exists (FileExistsError): a hard link, or
    where the filesystem has none, an exclusive reservation of ``dst`` replaced by ``src``."""
    try:
        os.link(src, dst)
        return
    except FileExistsError:
        raise
    except OSError:
        pass
    os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    shutil.copyfile(src, dst)


@dataclass
class PendingFiles:
    """Reference files pre-sized on disk as ``.part`` files (:func:`pending_files`), waiting
    for their arrays: ``sources`` (dask arrays, in file and extension order) go into
    ``targets`` (memory-mapped FITS regions).  ``names``/``dims``: the products' names and
    dims, for a caller that stages them elsewhere first (a cluster's products group)."""

    outdir: Path
    tag: str
    stamp: str
    parts: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    names: list = field(default_factory=list)
    dims: list = field(default_factory=list)

    def publish(self) -> dict[str, Path]:
        """Validate every file and give it its name (never replacing one); returns
        ``{reftype: path}``."""
        for reftype, part in self.parts.items():
            validate(part, reftype)
        return _publish(self.parts, lambda k: {
            r: self.outdir / f"nrsdark_{self.tag}_{r}_{self.stamp}{'' if k == 1 else f'_{k}'}.fits"
            for r in self.parts})


@contextmanager
def pending_files(p: Products, outdir, *, author: str = "nrsdark_dask",
                  versions: dict | None = None, notes=()):
    """SUPERBIAS (if the store has bias inputs), DARK and MASK pre-sized in ``outdir`` as
    ``<name>.<host>-<pid>.part`` files, each holding the products the product table places in
    it, in table order, with their headers (CRDS format) and DQ_DEF: yields a
    :class:`PendingFiles` whose ``targets`` the caller fills (``nrsdark_dask.stages.build``
    computes) and then publishes.  Names are
    ``nrsdark_<det>_<readpatt>_<subarray>_<reftype>_<UTC stamp>[_k].fits``; an existing file
    is never replaced.  On any failure (or Ctrl-C) inside the block the ``.part`` files are
    removed, and a later build removes those of a killed one (:func:`check_writable`).
    ``notes``: extra HISTORY lines."""
    outdir = check_writable(outdir)
    lay = p.layout
    pending = PendingFiles(outdir, file_tag(lay), _stamp())
    owner = f"{socket.gethostname()}-{os.getpid()}"
    history = _history(p, versions or {}, notes)
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            for reftype, model in _models(p, author, history).items():
                headers, tables = _template_headers(model, tmpdir)
                model.close()
                by_name = {h.get("EXTNAME", "PRIMARY"): h for h in headers}
                used = [q for q in file_products(reftype) if q.name in p.arrays]
                arrays = [(q.extname, p[q.name].data.astype(q.dtype)) for q in used]
                pending.names += [q.name for q in used]
                pending.dims += [q.dims for q in used]
                images = []
                for name, arr in arrays:
                    hdr = by_name.get(name, fits.Header()).copy()
                    hdr["EXTNAME"] = name
                    images.append((hdr, arr.shape, arr.dtype))
                part = outdir / f"nrsdark_{pending.tag}_{reftype}_{pending.stamp}.fits.{owner}.part"
                pending.parts[reftype] = part
                regions = _presize(part, by_name["PRIMARY"], images, tables)
                for name, arr in arrays:
                    pending.sources.append(arr)
                    pending.targets.append(regions[name])
        yield pending
    finally:
        for part in pending.parts.values():
            part.unlink(missing_ok=True)  # published files are links: their names stay


def validate(path, reftype: str) -> None:
    """Open with the stdatamodels model and validate it; require finite data everywhere.

    Memory: a few image planes, whatever the size of the cube.  The model is built on a
    memory-mapped HDU list (the scaled uint32 DQ planes, which astropy cannot map, are read
    alone), so validation touches the headers, not the data; the finite check then reads the
    float images plane by plane through ``section`` (no mapping: read pages are not kept)."""
    path = str(path)
    with fits.open(path, memmap=True) as hdul:
        for i, hdu in enumerate(hdul):
            if hdu.is_image and "BZERO" in hdu.header:
                hdu.data = fits.getdata(path, ext=i, memmap=False)
        with getattr(dm, reference_file(reftype).model)(hdul) as m:
            m.validate()
    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul[1:]:
            if not (hdu.is_image and hdu.header.get("BITPIX") == -32 and hdu.header["NAXIS"]):
                continue
            planes = hdu.shape[0] if len(hdu.shape) == 3 else 1
            for i in range(planes):
                plane = hdu.section[i] if len(hdu.shape) == 3 else hdu.section[:, :]
                if not np.isfinite(plane).all():
                    raise ValueError(f"{path}: non-finite values in {hdu.name}")
