"""``nrsdark analyze``: the delivery decision from the reference files (report §4.2).

Reads the newest SUPERBIAS, DARK and MASK of a build folder (FITS only: a set delivered by
someone else is analyzed the same way) and gives

* the statistics of report §4.2, each computed as the build computes it (so ``analyze`` of a
  build's files repeats the build's printed numbers; tested): 3-sigma clipped bias level,
  mean and median DRK, SNR = 3-sigma clipped median of DRK / UNC over the active pixels with
  UNC > 0, counts of HOT (the ``hot`` row on DRK and UNC: by default significantly above
  ``[dark] hot_rate``, with where the threshold cannot be tested), RC, TELEGRAPH and bad
  reference pixels (their DQ bits in the DARK), the negative-rate fraction, and with a
  comparison set the new hot pixels (HOT now, not HOT in the comparison MASK, or not HOT by
  the same row on its DARK) and the DRK difference;
* the verdict: SNR >= ``[delivery] snr_trad`` (TRAD and subarrays, 2.5) or ``snr_irs2``
  (IRS2, 5.0); the exit status of the command says it (0 deliverable, 1 not, 2 error);
* the figures people look at (PNG, block-median thumbnails of at most 1024 px a side):
  superbias, DRK image and histogram, UNC, the last plane of the cube, the flag map, and
  against a comparison set the DRK difference image with its median-column and median-row
  profiles and the 1-sigma band (report Figures 6-13);
* ``report.html`` (one self-contained file, the images embedded) and ``report.json`` (every
  number).

Memory: the 2-D planes of one file at a time, the cube's last plane only (an HDU section);
an IRS2 full-frame DARK of 200 planes is never read whole.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import __version__
from .. import instrument as inst
from .. import kernels as K
from ..config import Config
from ..instrument import DQ
from ..kernels import artifacts as art
from ..paths import atomic_write
from ..reduction import tables as P

REFTYPES = tuple(r.reftype for r in P.REFERENCE_FILES)


class AnalyzeError(ValueError):
    pass


def find_files(where) -> dict[str, Path]:
    """``{reftype: path}``: the newest file of each reference type in a folder (by the
    build's time stamp in the name, then modification time), or the files given."""
    paths = [Path(p) for p in (where if isinstance(where, (list, tuple)) else [where])]
    out: dict[str, Path] = {}
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        files = sorted(p.glob("*.fits")) if p.is_dir() else [p]
        for f in sorted(files, key=lambda f: (f.name.rsplit("_", 1)[-1], f.stat().st_mtime)):
            try:
                reftype = str(fits.getval(f, "REFTYPE")).strip().lower()
            except (KeyError, OSError):
                continue
            if reftype in REFTYPES:
                out[reftype] = f
    if "dark" not in out:
        raise AnalyzeError(f"no DARK reference file in {', '.join(map(str, paths))}")
    return out


def geometry_of(header) -> inst.Subarray:
    """The subarray a FITS primary header describes (SUBARRAY, SUBSTRT*, SUBSIZE*)."""
    name = str(header.get("SUBARRAY", "FULL")).strip()
    return inst.Subarray(name, int(header.get("SUBSTRT1", 1)), int(header.get("SUBSTRT2", 1)),
                         int(header.get("SUBSIZE1", 2048)), int(header.get("SUBSIZE2", 2048)))


def _readpatt(header) -> str:
    """The readout the file is for: READPATT, or (``ANY``) the first pattern of P_READPA."""
    value = str(header.get("READPATT", "")).strip()
    if value in inst.READ_PATTERNS:
        return value
    for p in str(header.get("P_READPA", "")).split("|"):
        if p.strip() in inst.READ_PATTERNS:
            return p.strip()
    return value


def _inputs(header) -> list[str]:
    return [str(h)[len("Input: "):] for h in header.get("HISTORY", []) if
            str(h).startswith("Input: ")]


def read_dark(files: dict) -> dict:
    """What the report needs of a set (:func:`find_files`), read once: the DARK's header,
    DRK, UNC, DQ, last cube plane and plane count, and the SUPERBIAS's SCI (``bias``, float32,
    ``None`` without a SUPERBIAS)."""
    with fits.open(files["dark"], memmap=False) as h:
        head = h[0].header
        out = {"header": head, "drk": np.array(h["DRK"].data, np.float64),
               "unc": np.array(h["UNC"].data, np.float64),
               "dq": np.array(h["DQ"].data).astype(np.uint32),
               "last_plane": np.array(h["SCI"].section[-1], np.float32),
               "nplanes": int(h["SCI"].shape[0]), "bias": None}
    if "superbias" in files:
        with fits.open(files["superbias"], memmap=False) as h:
            out["bias"] = np.array(h["SCI"].data, np.float32)
    return out


def hot_pixels_of(path, geometry, cfg: Config) -> np.ndarray | None:
    """HOT pixels of a comparison: the MASK's HOT bit, else its DARK's DRK over the limit."""
    with fits.open(path, memmap=False) as h:
        reftype = str(h[0].header.get("REFTYPE", "")).strip().lower()
        if reftype == "mask":
            dq = np.array(h["DQ"].data).astype(np.uint32)
            if dq.shape != (geometry.ysize, geometry.xsize):
                y0, x0 = geometry.ystart - int(h[0].header.get("SUBSTRT2", 1)), \
                    geometry.xstart - int(h[0].header.get("SUBSTRT1", 1))
                dq = dq[y0:y0 + geometry.ysize, x0:x0 + geometry.xsize]
            return (dq & np.uint32(DQ["HOT"])) != 0
        if reftype == "dark":
            images = {"mean_rate": np.array(h["DRK"].data, np.float64),
                      "unc": np.array(h["UNC"].data, np.float64)}
            return flag_pixels(P.flag("hot"), None, images, cfg,
                               ~inst.reference_pixel_mask(geometry),
                               {"n_exposures": len(_inputs(h[0].header))})
    return None


def flag_pixels(flag, dq: np.ndarray | None, images: dict, cfg: Config,
                active: np.ndarray, stats: dict | None = None) -> np.ndarray | None:
    """A flag's pixels in a written DARK: its first DARK DQ bit; for a flag the DARK carries
    in no bit of its own (HOT: the MASK does) its rule on the DARK's own images (DRK as
    ``mean_rate``, UNC as ``unc``) and ``stats`` (``n_exposures``: the inputs its HISTORY
    lists), the build's code (``reduction.graph.flag_from_images``); None when neither tells (the
    flag is not counted)."""
    if flag.dark_dq and dq is not None:
        return (dq & np.uint32(DQ[flag.dark_dq[0]])) != 0
    rule = flag.rule(cfg.dark)
    stats = stats or {}
    if not (set(rule.inputs) <= set(images) and set(rule.statistics) <= set(stats)):
        return None
    from ..reduction.graph import flag_from_images

    return np.asarray(flag_from_images(flag.name, images, cfg, active, stats))


def statistics(files: dict, cfg: Config | None = None, compare: dict | None = None,
               dark: dict | None = None) -> dict:
    """Every number of the report (see module docstring); ``compare``: the comparison set's
    files (:func:`find_files`); ``dark``: the set already read (:func:`read_dark`)."""
    cfg = cfg or Config()
    d = dark or read_dark(files)
    head = d["header"]
    geo = geometry_of(head)
    readpatt = _readpatt(head)
    family = inst.get_read_pattern(readpatt).family if readpatt in inst.READ_PATTERNS \
        else "TRAD"
    drk, unc, dq = d["drk"], d["unc"], d["dq"]
    # the build writes 0 where a pixel had no finite rate (with UNRELIABLE_DARK): not a value
    known = ~((drk == 0) & (unc == 0))
    active = ~inst.reference_pixel_mask(geo)
    n_active = int(active.sum())
    images = {"mean_rate": drk, "unc": unc}
    given = {"n_exposures": len(_inputs(head))}
    pixels = {f.name: p for f in P.FLAGS if f.counted
              and (p := flag_pixels(f, dq, images, cfg, active, given)) is not None}
    hot = pixels["hot"]
    s = {
        "dark_file": str(files["dark"]), "detector": str(head.get("DETECTOR", "")).strip(),
        "readpatt": readpatt if str(head.get("READPATT", "")).strip() == readpatt else
        str(head.get("P_READPA", readpatt)).strip("| "), "subarray": geo.name, "family": family,
        "pedigree": str(head.get("PEDIGREE", "")).strip(),
        "useafter": str(head.get("USEAFTER", "")).strip(), "n_inputs": len(_inputs(head)),
        "dark_planes": d["nplanes"], "n_active": n_active,
        **{f"n_{name}": int(p.sum()) for name, p in pixels.items()},
        "n_unreliable_dark": int(((dq & np.uint32(DQ["UNRELIABLE_DARK"])) != 0).sum()),
    }
    s["telegraph_fraction"] = s["n_telegraph"] / n_active
    s["negative_rate_fraction"] = int(((drk < 0) & active).sum()) / n_active
    s["median_rate"] = float(np.median(drk[active & known]))
    s.update(hot_testability(drk, unc, active & known, cfg, s["n_inputs"]))
    s["frame_rate"] = float(K.mean_clipped_mean_std(drk, active & known & ~hot, 3.0, 5)[0])
    s["mean_rate"] = float(np.mean(drk[active & known & ~hot]))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = drk / unc
    s["snr"] = float(K.median_clipped_median(ratio, active & (unc > 0),
                                             cfg.delivery.snr_clip_sigma)[0])
    s["snr_required"] = cfg.delivery.required(family)
    s["deliverable"] = bool(s["snr"] >= s["snr_required"])
    if d["bias"] is not None:
        bias = d["bias"].astype(np.float64)
        rows = inst.irs2_normal_rows(s["detector"]) if bias.shape[0] == 3200 else \
            np.ones(bias.shape[0], bool)
        s["bias_level"] = float(K.mean_clipped_mean_std(bias, np.broadcast_to(
            rows[:, None], bias.shape), 3.0, 5)[0])
        s["superbias_file"] = str(files["superbias"])
    if "mask" in files:
        s["mask_file"] = str(files["mask"])
    if compare:
        prev = compare.get("mask") or compare.get("dark")
        known = hot_pixels_of(prev, geo, cfg)
        if known is not None and known.shape == hot.shape:
            s["n_new_hot"] = int((hot & ~known).sum())
            s["compare_hot_from"] = str(prev)
        if "dark" in compare:
            with fits.open(compare["dark"], memmap=False) as h:
                old = np.array(h["DRK"].data, np.float64)
                old_unc = np.array(h["UNC"].data, np.float64)
            if old.shape == drk.shape:
                diff = np.where(active, drk - old, np.nan)
                s["compare_dark_file"] = str(compare["dark"])
                s["difference_median"] = float(np.nanmedian(diff))
                s["difference_sigma"] = art.robust_sigma(diff)
                s["difference_expected_sigma"] = float(np.nanmedian(np.hypot(unc, old_unc)[
                    active]))
                s["_difference"] = diff
    s["warnings"] = warnings_for(s)
    return s


def hot_testability(drk, unc, where, cfg: Config, n_inputs: int) -> dict:
    """Whether the inputs can test the HOT threshold (issue 21): ``hot_limit``, the rate
    above which a pixel of median UNC is found HOT under the significance rule
    (``hot_rate`` + :func:`~nrsdark_dask.kernels.significance_factor` x median UNC;
    ``hot_rate`` under the report's rule), and ``n_hot_plain``, the pixels the plain rule
    DRK > ``hot_rate`` flags."""
    d = cfg.dark
    med = float(np.median(unc[where])) if where.any() else float("nan")
    significant = P.flag("hot").rule(d).name == "significant"
    k = K.significance_factor(d.hot_sigma, n_inputs) if significant else 0.0
    return {"hot_rate": d.hot_rate, "hot_rule": d.hot_rule, "unc_median": med,
            "hot_limit": d.hot_rate + k * med,
            "n_hot_plain": int((K.hot_pixels(drk, d.hot_rate) & where).sum())}


def warnings_for(s: dict) -> list[str]:
    """Warnings for the report: a flag with fewer inputs than its row's ``reliable_n`` (the
    N from which it reached 0.9 on simulation truth; :data:`~nrsdark_dask.reduction.tables.FLAGS`),
    with what was measured; HOT flags when UNC is too large to test its threshold
    (:func:`hot_testability`);
    and, when not deliverable, the inputs sqrt(N) says would reach the SNR."""
    out = []
    n = s["n_inputs"]
    for f in P.FLAGS:
        if f.reliable_n and n and n < f.reliable_n[0]:
            out.append(f"only {n} inputs: the {f.label} flags need {f.reliable_n[0]} to be "
                       f"reliable ({f.reliable_n[1]}, measured on simulated sets against "
                       "their truth)")
    if "hot_limit" in s and s["hot_rule"] == "significant" and \
            s["hot_limit"] > 2 * s["hot_rate"]:
        out.append(f"UNC (median {s['unc_median']:.3g} DN/s) is too large to test the HOT "
                   f"threshold of {s['hot_rate']:g} DN/s: a pixel is found HOT only above about "
                   f"{s['hot_limit']:.2f} DN/s; the {s['n_hot']} HOT flags are significant, "
                   f"{max(s['n_hot_plain'] - s['n_hot'], 0)} more pixels have DRK > "
                   f"{s['hot_rate']:g} but not significantly (the report's plain rule would "
                   "flag them: [dark] hot_rule = \"report\")")
    elif "hot_limit" in s and s["hot_rule"] == "report" and s["unc_median"] > s["hot_rate"] / 6:
        out.append(f"UNC (median {s['unc_median']:.3g} DN/s) is large against the HOT "
                   f"threshold of {s['hot_rate']:g} DN/s: under the report's plain rule many of "
                   f"the {s['n_hot']} HOT flags may be noise ([dark] hot_rule = "
                   "\"significant\" keeps only the significant ones)")
    if not s["deliverable"]:
        out.append(f"SNR {s['snr']:.2f} is under the required {s['snr_required']:g}; by "
                   f"sqrt(N) about {int(np.ceil(n * (s['snr_required'] / s['snr'])**2)) if n and s['snr'] > 0 else '?'} "
                   "inputs would reach it")
    return out


# ---- figures -------------------------------------------------------------------------------
def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (80 dpi), the figure closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def image_panel(ax, img, title, unit, geo, symmetric=False):
    """Draw ``img`` (a preview of at most 1024 px a side) on ``ax`` in DMS pixel coordinates of
    ``geo``, 1-99 % stretch, or a red-blue scale of +-4 robust sigma when ``symmetric``."""
    thumb = art.preview(img, 1024)
    finite = thumb[np.isfinite(thumb)]
    if symmetric:
        lim = 4 * art.robust_sigma(finite) if finite.size else 1.0
        lo, hi, cmap = -lim, lim, "RdBu_r"
    else:
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
        cmap = "viridis"
    extent = (geo.xstart - 1.5, geo.xstart - 1.5 + img.shape[1],
              geo.ystart - 1.5, geo.ystart - 1.5 + img.shape[0])
    im = ax.imshow(thumb, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect="auto",
                   interpolation="nearest", extent=extent)
    ax.set_title(f"{title} ({unit})", fontsize=9)
    ax.set_xlabel("x (DMS column)", fontsize=8)
    ax.set_ylabel("y (DMS row)", fontsize=8)
    ax.figure.colorbar(im, ax=ax, fraction=0.04, pad=0.01)


def figures(files: dict, s: dict, cfg: Config | None = None,
            dark: dict | None = None) -> dict[str, bytes]:
    """``{name: PNG bytes}`` of the report's figures (HOT as ``cfg`` defines it, as in the
    statistics); ``dark``: the DARK already read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = cfg or Config()
    d = dark or read_dark(files)
    geo = geometry_of(d["header"])
    aspect = d["drk"].shape[0] / d["drk"].shape[1]
    h_img = max(2.5, 9 * aspect)
    out = {}

    def one(name, img, title, unit, symmetric=False):
        fig, ax = plt.subplots(figsize=(10, h_img + 0.8))
        image_panel(ax, img, title, unit, geo, symmetric)
        fig.tight_layout()
        out[name] = png_bytes(fig)

    if d["bias"] is not None:
        bias = d["bias"]
        if bias.shape[0] == 3200:
            bias = bias[inst.irs2_normal_rows(s["detector"])]
        one("superbias", bias, f"superbias, clipped level {s['bias_level']:.1f} DN", "DN")
    one("drk", d["drk"], f"DRK, median {s['median_rate']:.4f} DN/s", "DN/s")
    fig, ax = plt.subplots(figsize=(10, 3.5))
    active = ~inst.reference_pixel_mask(geo)
    v = d["drk"][active]
    lo, hi = np.percentile(v, [0.5, 99.5])
    ax.hist(v, bins=200, range=(lo, hi), color="C0")
    ax.axvline(s["median_rate"], color="C3", lw=1, label=f"median {s['median_rate']:.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("DRK (DN/s)")
    ax.set_ylabel("pixels")
    ax.legend(fontsize=8)
    ax.set_title(f"DRK histogram ({100 * s['negative_rate_fraction']:.1f} % negative)",
                 fontsize=9)
    fig.tight_layout()
    out["drk_histogram"] = png_bytes(fig)
    one("unc", d["unc"], f"UNC, SNR {s['snr']:.2f}", "DN/s")
    one("cube_last_plane", d["last_plane"], f"DARK cube, plane {d['nplanes']}", "DN")
    images = {"mean_rate": d["drk"], "unc": d["unc"]}
    given = {"n_exposures": s["n_inputs"]}
    shown = [(f.label, p) for f in P.FLAGS if f.counted
             and (p := flag_pixels(f, d["dq"], images, cfg, active, given)) is not None]
    fig, ax = plt.subplots(figsize=(10, h_img + 0.8))
    for i, (label, p) in enumerate(shown):  # later rows drawn over earlier ones
        ys, xs = np.nonzero(p)
        ax.scatter(xs + geo.xstart - 1, ys + geo.ystart - 1, s=1, color=f"C{i}",
                   label=f"{label} ({ys.size})")
    ax.set_xlim(geo.xstart - 1, geo.xstart - 1 + d["dq"].shape[1])
    ax.set_ylim(geo.ystart - 1, geo.ystart - 1 + d["dq"].shape[0])
    ax.legend(fontsize=7, markerscale=6, loc="upper right")
    ax.set_title("flagged pixels", fontsize=9)
    fig.tight_layout()
    out["flags"] = png_bytes(fig)
    if "_difference" in s:
        diff = s["_difference"]
        one("difference", diff, "DRK minus the comparison DRK", "DN/s", symmetric=True)
        band = s["difference_expected_sigma"]
        fig, axes = plt.subplots(2, 1, figsize=(10, 5.5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for ax, prof, n, what in ((axes[0], np.nanmedian(diff, axis=0), diff.shape[0],
                                       "median column (over y) vs x"),
                                      (axes[1], np.nanmedian(diff, axis=1), diff.shape[1],
                                       "median row (over x) vs y")):
                sig = 1.2533 * band / np.sqrt(n)  # 1 sigma of a median of n pixels
                ax.plot(prof, lw=0.7)
                ax.axhspan(-sig, sig, color="0.8", label="1 sigma expected")
                ax.axhline(0, color="k", lw=0.5)
                ax.set_title(f"difference profile: {what}", fontsize=9)
                ax.legend(fontsize=8)
        fig.tight_layout()
        out["difference_profiles"] = png_bytes(fig)
    return out


# ---- report ----------------------------------------------------------------------------------
def data_uris(figs: dict[str, bytes]) -> list[tuple[str, str]]:
    """``(name, data:image/png;base64,...)`` of each figure: pages embed their images."""
    return [(n, "data:image/png;base64," + base64.b64encode(b).decode()) for n, b in figs.items()]


def write_report(folder, s: dict, figs: dict[str, bytes]) -> tuple[Path, Path]:
    """``report.html`` (self-contained; :mod:`nrsdark_dask.pages`: every value escaped, only
    its render check runs) and ``report.json`` in ``folder``, each written atomically."""
    from .. import pages

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    numbers = {k: v for k, v in s.items() if not k.startswith("_")}
    numbers["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    numbers["software"] = f"nrsdark_dask {__version__}"
    js = atomic_write(folder / "report.json", json.dumps(numbers, indent=2, default=float))
    page = pages.render("report.html", scripts=[pages.IMAGES_CHECK], s=s,
                        dark_name=Path(s["dark_file"]).name, figures=data_uris(figs),
                        rows=[(k, format_value(v)) for k, v in numbers.items()
                              if k != "warnings"])
    return pages.write_page(folder, "report.html", page), js


def format_value(v) -> str:
    """A number of a report's table: floats to 6 significant digits."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def per_amplifier(dark: dict) -> dict:
    """Statistics per output amplifier (four strips of 512 full-frame rows in DMS
    orientation; a subarray has those it crosses) of a set read by :func:`read_dark`:
    ``median_rate`` (DRK), ``unc_median`` (UNC) over the active pixels the build gave a rate,
    and ``bias_level`` (SUPERBIAS median) when there is one.  Returns
    ``{name: {amp: value}}``."""
    geo = geometry_of(dark["header"])
    drk, unc = dark["drk"], dark["unc"]
    rows = np.arange(drk.shape[0]) + geo.ystart - 1
    amp = np.broadcast_to((rows // (inst.FULL_SIZE // inst.N_AMP))[:, None], drk.shape)
    ok = ~inst.reference_pixel_mask(geo) & ~((drk == 0) & (unc == 0))
    out = {"median_rate": {}, "unc_median": {}}
    for a in np.unique(amp):
        sel = ok & (amp == a)
        if sel.any():
            out["median_rate"][int(a)] = float(np.median(drk[sel]))
            out["unc_median"][int(a)] = float(np.median(unc[sel]))
    if dark["bias"] is not None and dark["bias"].shape == drk.shape:
        bias = dark["bias"].astype(np.float64)
        out["bias_level"] = {int(a): float(np.nanmedian(bias[amp == a])) for a in np.unique(amp)}
    return out


def analyze(where, compare=None, config=None, report_dir=None, db=None) -> dict:
    """Statistics, figures and the report of the newest reference files in ``where`` (a
    folder or files); ``compare``: a previous set (folder or files).  Returns the numbers
    plus ``html`` and ``json`` paths.  ``db``: record the analysis in that results database
    (:mod:`nrsdark_dask.results`: a URL or an SQLite path; ``None``: nothing recorded)."""
    import time

    from .. import results

    t0, started = time.perf_counter(), results.now()
    url = results.resolve(db)  # a bad database is refused before any work
    cfg = Config.from_toml(config)
    files = find_files(where)
    prev = find_files(compare) if compare else None
    dark = read_dark(files)
    s = statistics(files, cfg, prev, dark)
    figs = figures(files, s, cfg, dark)
    folder = Path(report_dir) if report_dir else Path(files["dark"]).parent / "qa"
    page, js = write_report(folder, s, figs)
    out = {k: v for k, v in s.items() if not k.startswith("_")}
    out.update(html=str(page), json=str(js), figures=list(figs))
    if url:
        with results.ResultsDB(url) as rdb:
            rdb.record_analysis(out, per_amplifier(dark), prev.get("dark") if prev else None,
                                started, time.perf_counter() - t0, results.software_versions())
            out["db"] = rdb.safe_url
    return out
