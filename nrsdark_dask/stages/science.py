"""``nrsdark check-science``: the report's §8 science check as a command.

One science exposure (an uncal file) is calibrated through jwst detector1 twice, with the
dark and the superbias (:data:`~nrsdark_dask.calibration.recipe.SCIENCE_STEPS`), once with each of
two reference sets, "new" and "old": the files of two builds, or a build and what CRDS
serves.  The two rate images are then compared (:func:`nrsdark_dask.kernels.compare
.rate_difference`): the difference image, its median and scatter against both DARKs' UNC and
against the science noise, its median column (the report's Figures 16-20), the hot-pixel
residuals under each set, and the pixels newly DO_NOT_USE or UNRELIABLE_DARK.

What is written (only into ``outdir``): ``check_science.html`` (self-contained, figures
inline), ``check_science.json`` (every number, the reference files used), and the two rate
files ``<exposure>_rate_new.fits`` / ``_rate_old.fits``, as jwst writes them, for a closer
look.  With ``db`` the check is recorded in the results database (table ``science_checks``).

A reference set is a folder (the newest file of each REFTYPE in it, as ``analyze`` picks
them) or a list of files; it must hold a DARK; SUPERBIAS and MASK are taken from it when it
has them, else from ``refkit`` (a subarray build writes no MASK).  ``"crds"`` is the set CRDS
selects for the exposure, where a CRDS server is configured (``CRDS_SERVER_URL``); offline it is
refused.  The other types (saturation, linearity, gain, readnoise; refpix for IRS2) come from
``refkit``, or from CRDS when there is a server.

Decisions (the issue was silent):

* The science exposure runs whole, through jwst's own steps, as a science user's pipeline
  runs it: peak memory is jwst's (:func:`~nrsdark_dask.calibration.recipe.science_memory`: 20-21
  bytes per raw pixel per group + the DARK cube; a TRAD full frame of 88 groups ~12.6 GB, an
  IRS2 full frame of 200 groups ~32 GB).  It is checked against the memory available before
  any work and refused with both numbers when it does not fit.  The two runs are one after
  the other, so the peak is one run's.
* The background (the report's "empty area of the science frame") is every active pixel
  unless ``background`` ("y0:y1,x0:x1", 0-based, end excluded, in the exposure's own pixels)
  names a box; hot pixels are left out of it.
* "Hot" is hot by either set's DARK (its HOT rule, ``[dark]``).  A MASK's HOT pixels are
  DO_NOT_USE in the science DQ, so they are out of every statistic anyway.
* No verdict and no exit status 1: the report judges the differences by eye against the
  science noise; the numbers say how many sigma they are.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import __version__
from .. import instrument as inst
from ..config import Config
from ..instrument import DQ
from ..paths import atomic_write

SET_TYPES = ("superbias", "dark", "mask")  # the types a reference set brings


def _box(text: str | None, shape: tuple[int, int]) -> np.ndarray:
    """``"y0:y1,x0:x1"`` (0-based, end excluded) as a boolean image; everything if ``None``."""
    out = np.zeros(shape, bool)
    if not text:
        out[:] = True
        return out
    try:
        (y0, y1), (x0, x1) = [[int(v) for v in part.split(":")] for part in text.split(",")]
    except ValueError:
        raise ValueError(f"background {text!r}: give y0:y1,x0:x1 (0-based, end excluded)")
    if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
        raise ValueError(f"background {text!r} is not inside the exposure's {shape[0]} x "
                         f"{shape[1]} pixels")
    out[y0:y1, x0:x1] = True
    return out


def reference_set(where, uncal) -> dict[str, str]:
    """``{reftype: path}`` of a set (see the module docstring): a folder or files, or
    ``"crds"`` (what CRDS selects for ``uncal``)."""
    from ..calibration import recipe as R
    from .analyze import find_files

    if isinstance(where, (list, tuple)) and len(where) == 1:
        where = where[0]
    if str(where).lower() == "crds":
        if not R.crds_reachable():
            raise RuntimeError("reference set 'crds' needs a CRDS server (set CRDS_SERVER_URL);"
                               " none is configured here: give a folder of reference files")
        R.configure_crds()
        from stdatamodels.jwst import datamodels as dm

        with dm.open(str(uncal)) as m:
            return R.reference_files(m, {}, R.readout_family(m), SET_TYPES)
    return {k: str(v) for k, v in find_files(where).items() if k in SET_TYPES}


def _rate_arrays(rate) -> dict:
    return {"sci": np.array(rate.data, np.float64), "dq": np.array(rate.dq, np.uint32),
            "err": np.array(rate.err, np.float64)}


def _dark_images(path: str, geo: inst.Subarray, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """A DARK's UNC (NaN where the file has none: not one of ours) and its hot pixels."""
    from .analyze import hot_pixels_of

    shape = (geo.ysize, geo.xsize)
    with fits.open(path, memmap=False) as h:
        names = {x.name for x in h}
        unc = np.array(h["UNC"].data, np.float64) if "UNC" in names else np.full(shape, np.nan)
    hot = hot_pixels_of(path, geo, cfg) if "DRK" in names else None
    return unc, (hot if hot is not None else np.zeros(shape, bool))


def refuse_mismatches(science: Path, head, geo: inst.Subarray, common: dict, sets: dict) -> None:
    """Before any work: the science file's header must agree with its data
    (:func:`select.header_problems`), and every reference file of each set (and of the kit)
    must be one jwst would select for it: its detector, readout pattern, and a region that
    holds the science subarray (:func:`calibration.recipe.reference_mismatches`).  A ValueError
    names each difference; a set of another detector would otherwise calibrate without a
    word and give a full report of wrong numbers."""
    from types import SimpleNamespace

    from ..calibration import recipe as R
    from .select import header_problems

    missing = [k for k in ("DETECTOR", "READPATT", "SUBARRAY", "NGROUPS") if k not in head]
    if missing:
        raise ValueError(f"{science.name} lacks keyword(s) {', '.join(missing)}")
    problems = [f"{science.name}: {p}" for p in header_problems(science, head, "uncal")]
    if problems:
        raise ValueError("the science exposure's header disagrees with it: "
                         + "; ".join(problems))
    want = SimpleNamespace(detector=str(head["DETECTOR"]).upper(),
                           readpatt=str(head["READPATT"]).upper(), subarray=geo.name,
                           xstart=geo.xstart, ystart=geo.ystart, nx=geo.xsize, ny=geo.ysize)
    problems = [f"{name} set: {m}" for name, s in (("kit", common), *sets.items())
                for reftype, path in sorted(s.items())
                for m in R.reference_mismatches(path, reftype, want)]
    if problems:
        raise ValueError(f"the reference files do not fit {science.name} ({want.detector} "
                         f"{want.readpatt} {want.subarray}):\n  " + "\n  ".join(problems))


def check_science(science, new, old, outdir, refkit=None, background: str | None = None,
                  config=None, db=None, quiet: bool = True, progress=None) -> dict:
    """Calibrate ``science`` with the ``new`` and the ``old`` reference set and compare the
    rates (module docstring).  Returns the numbers, with ``html``, ``json`` and the rate
    files' paths (and ``db`` when recorded).

    Peak memory: one whole-exposure detector1 run (checked before any work), then the two
    rate images and two DARK images (~10 float64 frames)."""
    import psutil

    from ..calibration import recipe as R
    from .. import results
    from .analyze import geometry_of
    from ..kernels.compare import rate_difference

    t0, started = time.perf_counter(), results.now()
    say = progress or (lambda text: None)
    url = results.resolve(db)  # a bad database is refused before any work
    cfg = Config.from_toml(config)
    science = Path(science)
    if not science.is_file():
        raise FileNotFoundError(f"science exposure {science} not found")
    head = fits.getheader(science, 0)
    sci_head = fits.getheader(science, "SCI")
    shape = tuple(int(sci_head[f"NAXIS{i}"]) for i in range(sci_head["NAXIS"], 0, -1))
    family = "IRS2" if "IRS2" in str(head.get("READPATT", "")).upper() else "TRAD"
    need, have = R.science_memory(shape, family), psutil.virtual_memory().available
    if need > have:
        raise RuntimeError(f"calibrating {science.name} whole needs ~{need / 2**30:.1f} GiB "
                           f"(jwst detector1, {' x '.join(map(str, shape))} raw); "
                           f"{have / 2**30:.1f} GiB is available")
    geo = geometry_of(head)
    box = _box(background, (geo.ysize, geo.xsize))
    common = R.refkit_files(refkit) if refkit else {}
    sets = {"new": reference_set(new, science), "old": reference_set(old, science)}
    for name, s in sets.items():
        if "dark" not in s:
            raise ValueError(f"the {name} reference set has no DARK")
    refuse_mismatches(science, head, geo, common, sets)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rates, files = {}, {}
    stem = science.name.removesuffix(".fits").removesuffix("_uncal")
    for name, s in sets.items():
        refs = {**common, **s}
        say(f"check-science: {science.name} through detector1 with the {name} set "
            f"({Path(s['dark']).name})")
        rate = R.run_science(science, refs, quiet=quiet)
        try:
            files[name] = outdir / f"{stem}_rate_{name}.fits"
            rate.save(files[name])
            rates[name] = _rate_arrays(rate)
        finally:
            rate.close()
        sets[name] = {k: refs[k] for k in SET_TYPES if k in refs}
    images = {name: _dark_images(s["dark"], geo, cfg) for name, s in sets.items()}
    active = ~inst.reference_pixel_mask(geo)
    r = rate_difference(rates["new"]["sci"], rates["old"]["sci"], rates["new"]["dq"],
                        rates["old"]["dq"], images["new"][0], images["old"][0],
                        (images["new"][1] | images["old"][1]) & active, box & active,
                        DQ["DO_NOT_USE"], DQ["UNRELIABLE_DARK"])
    numbers = {"science": str(science.resolve()), "detector": head.get("DETECTOR"),
               "readpatt": head.get("READPATT"), "subarray": head.get("SUBARRAY"),
               "ngroups": shape[-3], "background": background or "every active pixel",
               "new": {k: str(Path(v).resolve()) for k, v in sets["new"].items()},
               "old": {k: str(Path(v).resolve()) for k, v in sets["old"].items()},
               **{k: v for k, v in r.items() if not isinstance(v, np.ndarray)},
               "rate_new": str(files["new"].resolve()), "rate_old": str(files["old"].resolve())}
    figs = figures(rates, r, geo, active)
    page, js = write_page(outdir, numbers, figs)
    out = {**numbers, "html": str(page), "json": str(js), "figures": list(figs)}
    if url:
        with results.ResultsDB(url) as rdb:
            out["check_id"] = rdb.record_science_check(
                numbers, started, time.perf_counter() - t0, results.software_versions())
            out["db"] = rdb.safe_url
    return out


def figures(rates: dict, r: dict, geo: inst.Subarray, active: np.ndarray) -> dict[str, bytes]:
    """``{name: PNG bytes}``: the science rate (new set), the difference image, its median
    column against the science noise (the report's third panel), the difference in units of
    the expected scatter, and where the flags changed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .analyze import image_panel, png_bytes

    h_img = max(2.5, 9 * geo.ysize / geo.xsize)
    out = {}
    for name, img, title, sym in (
            ("rate_new", np.where(active, rates["new"]["sci"], np.nan),
             "science rate, new set", False),
            ("difference", r["difference"], "rate difference, new - old set", True)):
        fig, ax = plt.subplots(figsize=(10, h_img + 0.8))
        image_panel(ax, img, title, "DN/s", geo, symmetric=sym)
        fig.tight_layout()
        out[name] = png_bytes(fig)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    x = np.arange(r["column_median"].size) + geo.xstart
    sig = r["background_sigma"]
    ax.axhspan(-sig, sig, color="0.85", label=f"1 sigma of the science ({sig:.4f} DN/s)")
    ax.plot(x, r["column_median"], lw=0.7, color="C0", label="median column of the difference")
    ax.axhline(r["diff_median"], color="C3", lw=1, label=f"median {r['diff_median']:+.5f}")
    ax.set_xlabel("x (DMS column)")
    ax.set_ylabel("DN/s")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("difference: median over rows, against the science noise", fontsize=9)
    fig.tight_layout()
    out["column"] = png_bytes(fig)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    z = (r["difference"] - r["diff_median"]) / r["expected_sigma"]
    z = z[np.isfinite(z)]
    if z.size and np.isfinite(r["expected_sigma"]):
        ax.hist(np.clip(z, -6, 6), bins=240, range=(-6, 6), density=True, color="C0",
                label=f"{z.size} pixels, robust sigma {r['diff_sigma_over_expected']:.2f}")
        g = np.linspace(-6, 6, 400)
        ax.plot(g, np.exp(-g**2 / 2) / np.sqrt(2 * np.pi), color="k", lw=0.8,
                label="unit Gaussian")
        ax.legend(fontsize=8)
    ax.set_xlabel("(difference - median) / sqrt(UNC_new^2 + UNC_old^2)")
    ax.set_title("difference against both DARKs' uncertainty", fontsize=9)
    fig.tight_layout()
    out["difference_over_unc"] = png_bytes(fig)
    fig, ax = plt.subplots(figsize=(10, h_img + 0.8))
    dnu, ud = DQ["DO_NOT_USE"], DQ["UNRELIABLE_DARK"]
    new, old = rates["new"]["dq"], rates["old"]["dq"]
    for i, (label, p) in enumerate((
            ("newly DO_NOT_USE", ((new & dnu) != 0) & ((old & dnu) == 0)),
            ("no longer DO_NOT_USE", ((old & dnu) != 0) & ((new & dnu) == 0)),
            ("newly UNRELIABLE_DARK", ((new & ud) != 0) & ((old & ud) == 0)),
            ("no longer UNRELIABLE_DARK", ((old & ud) != 0) & ((new & ud) == 0)))):
        ys, xs = np.nonzero(p)
        ax.scatter(xs + geo.xstart - 1, ys + geo.ystart - 1, s=2, color=f"C{i}",
                   label=f"{label} ({ys.size})")
    ax.set_xlim(geo.xstart - 1, geo.xstart - 1 + geo.xsize)
    ax.set_ylim(geo.ystart - 1, geo.ystart - 1 + geo.ysize)
    ax.legend(fontsize=7, markerscale=4, loc="upper right")
    ax.set_title("science DQ: pixels whose flags changed", fontsize=9)
    fig.tight_layout()
    out["flags"] = png_bytes(fig)
    return out


def write_page(folder: Path, numbers: dict, figs: dict[str, bytes]) -> tuple[Path, Path]:
    """``check_science.html`` (self-contained; :mod:`nrsdark_dask.pages`) and
    ``check_science.json`` in ``folder``, each written atomically."""
    from .. import pages
    from .analyze import data_uris, format_value

    numbers = {**numbers, "created": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), "software": f"nrsdark_dask {__version__}"}
    js = atomic_write(folder / "check_science.json",
                      json.dumps(numbers, indent=2, default=float))
    flat = {k: v for k, v in numbers.items() if not isinstance(v, dict)}
    for s in ("new", "old"):
        flat.update({f"{s} {k}": Path(v).name for k, v in numbers[s].items()})
    summary = (f"difference new - old: median {numbers['diff_median']:+.5f} DN/s, scatter "
               f"{numbers['diff_sigma']:.5f} DN/s = {numbers['diff_sigma_over_background']:.3f}"
               f" of the science noise ({numbers['background_sigma']:.4f} DN/s) and "
               f"{numbers['diff_sigma_over_expected']:.2f} of sqrt(UNC_new^2 + UNC_old^2)")
    page = pages.render("check_science.html", scripts=[pages.IMAGES_CHECK],
                        science=Path(numbers["science"]).name,
                        new=Path(numbers["new"]["dark"]).name,
                        old=Path(numbers["old"]["dark"]).name, summary=summary,
                        rows=[(k, format_value(v)) for k, v in flat.items()],
                        figures=data_uris(figs))
    return pages.write_page(folder, "check_science.html", page), js
