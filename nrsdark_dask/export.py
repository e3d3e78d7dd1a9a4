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
import errno
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from astropy.io import fits
from astropy.time import Time
from stdatamodels.jwst import datamodels as dm

from . import __version__
from . import instrument as inst
from .products import dq_def_names, file_products
from .reduce import Products

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


def _meta(model, p: Products, reftype: str, descrip: str, author: str, history: list[str]):
    """The file's header keywords (SPEC §9), through the model's schema: :func:`_region_meta`
    and, for subarray darks and biases, the disperser group (P_GRATIN, report Table 5).  A
    DARK is written one frame per plane (NFRAMES = 1, GROUPGAP = 0, NGROUPS = its planes):
    stcal's dark_sub averages its frames for any science readout (stcal#120)."""
    _region_meta(model, p.layout, p.dates.values, reftype, descrip, author, history)
    m = model.meta
    gratings = _gratings(p)
    if reftype == "DARK":
        m.exposure.type = "ANY"
        m.exposure.ngroups = int(p["dark_cube"].shape[0])
        m.exposure.nframes, m.exposure.groupgap = 1, 0
    if reftype in ("DARK", "SUPERBIAS"):
        m.instrument.grating = "ANY"
        if gratings:
            m.instrument.p_grating = "|".join(gratings) + "|"


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
    m.exposure.readpatt = "ANY"
    m.exposure.p_readpatt = "|".join(sorted(inst.family_patterns(lay.family))) + "|"
    for line in history:
        model.add_history_entry(line)


def write_mask(dq: np.ndarray, outdir, layout, dates, label: str, descrip: str,
               author: str = "nrsdark_dask", history=()) -> Path:
    """One MASK file from an in-memory DQ plane (raw layout; 16 MB for a full frame):
    ``nrsdark_<det>_<readpatt>_<subarray>_mask_<label>.fits`` in ``outdir``, written as a
    ``.part``, validated, then given its name (never replacing a file: ``_2``, ``_3``...)."""
    outdir = check_writable(outdir)
    tag = f"{layout.detector.lower()}_{layout.readpatt.lower()}_{layout.subarray.lower()}"
    part = outdir / f"nrsdark_{tag}_mask_{label}.fits.{socket.gethostname()}-{os.getpid()}.part"
    try:
        with dm.MaskModel(dq=np.asarray(dq, np.uint32), dq_def=_dq_def()) as mask, \
                tempfile.TemporaryDirectory(dir=outdir) as tmp:
            _region_meta(mask, layout, dates, "MASK", descrip, author, list(history))
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


def writes_mask(layout) -> bool:
    """Full frames deliver a MASK; subarrays do not (report §6: one dark and one bias per
    subarray; the full-frame mask serves subarray science, cut by jwst): new hot pixels of a
    subarray build are UNRELIABLE_DARK in its DARK, and counted."""
    return layout.subarray == "FULL"


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
        if pid.isdigit() and not _alive(int(pid)):
            part.unlink(missing_ok=True)
    return outdir


def _alive(pid: int) -> bool:
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
                          f"{path.parent}: it needs {f.tell() / 1e9:.2f} GB, "
                          f"{free / 1e9:.2f} GB are free") from None
    if tables:  # DQ_DEF: astropy appends after the (still empty) data areas
        with fits.open(path, mode="append") as hdul:
            for t in tables:
                hdul.append(t)
    return regions


def _models(p: Products, author: str, history: list[str]) -> dict:
    """Empty stdatamodels models with the right ``meta``: their headers and DQ_DEF tables."""
    dark = dm.DarkNirspecModel(data=np.zeros((1, 1, 1), np.float32),
                               err=np.zeros((1, 1, 1), np.float32),
                               dq=np.zeros((1, 1), np.uint32),
                               dark_rate=np.zeros((1, 1), np.float32),
                               dark_rate_unc=np.zeros((1, 1), np.float32), dq_def=_dq_def())
    _meta(dark, p, "DARK", "NIRSpec dark: synthesized cube, JWST-STScI-009226", author, history)
    models = {"dark": dark}
    if writes_mask(p.layout):
        mask = dm.MaskModel(dq=np.zeros((1, 1), np.uint32), dq_def=_dq_def())
        _meta(mask, p, "MASK", "NIRSpec bad pixel mask with new hot pixels", author, history)
        models["mask"] = mask
    if "superbias" in p.arrays:
        sb = dm.SuperBiasModel(data=np.zeros((1, 1), np.float32),
                               err=np.zeros((1, 1), np.float32),
                               dq=np.zeros((1, 1), np.uint32), dq_def=_dq_def())
        _meta(sb, p, "SUPERBIAS", "NIRSpec superbias: groups 1-2 projected to t = 0, "
              "JWST-STScI-009226", author, history)
        models["superbias"] = sb
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


def products_location(store, stamp: str) -> str:
    """Default home of a cluster build's products: ``<store without .zarr>.products/
    <stamp>-<host>-<pid>.zarr`` beside the store (the one place every worker can write)."""
    base = str(store).rstrip("/")
    base = base[:-5] if base.endswith(".zarr") else base
    return f"{base}.products/{stamp}-{socket.gethostname()}-{os.getpid()}.zarr"


def clean_dead_products(store) -> list[Path]:
    """Remove the products groups that cluster builds on this host left beside a local
    ``store`` when they were killed (:func:`products_location`; their process is gone), as
    :func:`check_writable` removes their ``.part`` files.  Returns what was removed."""
    base = str(store).rstrip("/")
    if "://" in base:
        return []
    folder = Path((base[:-5] if base.endswith(".zarr") else base) + ".products")
    host, out = socket.gethostname(), []
    for group in folder.glob(f"*-{host}-*.zarr") if folder.is_dir() else ():
        owner, _, pid = group.name[:-5].rpartition("-")
        if owner.partition("-")[2] == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(group, ignore_errors=True)
            out.append(group)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return out


def _compute_on_cluster(client, sources, targets, names, dims, also, products: str,
                        keep: bool, progress: bool):
    """The cluster path: workers compute every array into a Zarr group ``products`` (each
    dask block one Zarr chunk, so concurrent writes never share a chunk; xarray opens it:
    dimension names are set), with ``also`` in the same computation; then this process
    streams the group into the FITS ``targets``, one chunk per thread at a time.  The group
    is removed afterwards unless ``keep``."""
    import fsspec
    import zarr
    from zarr.codecs import ZstdCodec

    from .cluster import futures_progress

    group = zarr.open_group(products, mode="w", zarr_format=3)
    arrays = []
    for name, src, dim in zip(names, sources, dims):
        arrays.append(group.create_array(
            name, shape=src.shape, chunks=tuple(int(c[0]) for c in src.chunks),
            dtype=src.dtype, fill_value=0, dimension_names=dim,
            compressors=ZstdCodec(level=1) if src.dtype.kind in "ub" else None))
    try:
        stored = da.store(sources, arrays, lock=False, compute=False)
        futures = client.compute([stored, also])
        if progress:
            futures_progress(futures, "build")
        _, computed = client.gather(futures)
        da.store([da.from_zarr(a) for a in arrays], targets, lock=False, scheduler="threads")
    finally:
        if not keep:
            fs, root = fsspec.core.url_to_fs(products)
            fs.rm(root, recursive=True)
            parent = Path(root).parent
            if "file" in fs.protocol and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()  # the local products folder, once empty (never a bucket)
    return computed


def write_reference_files(p: Products, outdir, *, author: str = "nrsdark_dask",
                          versions: dict | None = None, also=None, notes=(), client=None,
                          products: str | None = None, keep_products: bool = False,
                          progress: bool = False, accept=None):
    """Write SUPERBIAS (if the store has bias inputs), DARK and MASK into ``outdir``; each
    file holds the products the product table places in it, in table order.

    Every array is computed and written tile by tile in one computation, together with
    ``also`` (e.g. the statistics), so shared pieces are computed once: without ``client``
    on the local scheduler the caller configured, straight into the files; with a
    ``distributed`` client through a Zarr group of the products at ``products`` (default
    :func:`products_location`) that the workers write and this process then streams into the
    files (:func:`_compute_on_cluster`; the group is kept with ``keep_products``).  Returns
    ``({reftype: path}, computed also)``.  Names are
    ``nrsdark_<det>_<readpatt>_<subarray>_<reftype>_<UTC stamp>[_k].fits``; an existing file
    is never replaced.  Files are written as ``<name>.<host>-<pid>.part`` and renamed once
    complete and valid; on any failure (or Ctrl-C) the ``.part`` files are removed, and a
    later build removes those of a killed one.  ``notes``: extra HISTORY lines.
    ``accept(computed also)``: called before the files get their names; what it raises
    leaves no file (the build's sanity checks on its statistics).
    """
    outdir = check_writable(outdir)
    lay = p.layout
    tag = f"{lay.detector.lower()}_{lay.readpatt.lower()}_{lay.subarray.lower()}"
    stamp = _stamp()
    owner = f"{socket.gethostname()}-{os.getpid()}"
    history = _history(p, versions or {}, notes)
    sources, targets, parts, names, dims = [], [], {}, [], []
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            for reftype, model in _models(p, author, history).items():
                headers, tables = _template_headers(model, tmpdir)
                model.close()
                by_name = {h.get("EXTNAME", "PRIMARY"): h for h in headers}
                used = [q for q in file_products(reftype) if q.name in p.arrays]
                arrays = [(q.extname, p[q.name].data.astype(q.dtype)) for q in used]
                names += [q.name for q in used]
                dims += [q.dims for q in used]
                images = []
                for name, arr in arrays:
                    hdr = by_name.get(name, fits.Header()).copy()
                    hdr["EXTNAME"] = name
                    images.append((hdr, arr.shape, arr.dtype))
                part = outdir / f"nrsdark_{tag}_{reftype}_{stamp}.fits.{owner}.part"
                parts[reftype] = part
                regions = _presize(part, by_name["PRIMARY"], images, tables)
                for name, arr in arrays:
                    sources.append(arr)
                    targets.append(regions[name])
        if client is None:
            stored = da.store(sources, targets, lock=False, compute=False)
            _, computed = dask.compute(stored, also)  # on the scheduler the caller configured
        else:
            if products is None and p.store:
                clean_dead_products(p.store)
            # beside the store; products computed from an edited dataset (no store): in outdir
            default = products_location(p.store or outdir / "nrsdark", stamp)
            computed = _compute_on_cluster(client, sources, targets, names, dims, also,
                                           products or default, keep_products, progress)
        if accept is not None:
            accept(computed)
        for reftype, part in parts.items():
            validate(part, reftype)
        files = _publish(parts, lambda k: {
            r: outdir / f"nrsdark_{tag}_{r}_{stamp}{'' if k == 1 else f'_{k}'}.fits"
            for r in parts})
    except BaseException:
        for part in parts.values():
            part.unlink(missing_ok=True)
        raise
    return files, computed


MODELS = {"dark": dm.DarkNirspecModel, "superbias": dm.SuperBiasModel, "mask": dm.MaskModel}


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
        with MODELS[reftype](hdul) as m:
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
