"""The pre-filter (report §3 and §9.2): one manifest row per input, never a silent drop.

Rules, each giving a human-readable reason (all that apply are joined with "; "):

* unreadable file, missing keywords, not a NIRSpec dark (INSTRUME / EXP_TYPE) -> rejected;
* GRATING = MIRROR -> rejected (undispersed light leaks);
* GRATING = PRISM on a full frame -> rejected (MSA glow);
* ASIC temperature: dT = Tmax - Tmin of the telemetry samples from ``telemetry_pad_s`` (10 min)
  before the exposure start to the same after its end ("before, during and after", report §3);
  rejected above 0.02 K (full frame) or 0.13 K (subarray); no sample in that window ->
  rejected as "no ASIC telemetry" (flagged, not guessed; ``accept_without_telemetry`` changes
  that);
* listed in the user's exclusion file -> rejected with the reason given there;
* marked ``culled`` in a cull table of ``nrsdark cull`` (``cull=``) -> rejected as "culled
  automatically" with the cull's reason (a scientist overrules the cull by editing its
  ``culled`` column, and adds to it with the exclusion file);
* outside the ``start``/``end`` date window -> rejected;
* already-calibrated inputs (``*_ramp.fits`` / ``*_jump.fits``) need their ``*_rate.fits``;
* a file shorter than its headers say -> rejected (truncated);
* the same content as an earlier input (SHA-256, column ``sha256``) -> rejected as a
  duplicate: an exposure's identity is its file name and content hash
  (:func:`nrsdark_dask.store.exposure_id`), so two different files of one name are both
  kept and the same file found twice is taken once.

Every readable input gets a ``group`` (:func:`group_key`):
``DETECTOR_FAMILY_SUBARRAY_READPATT_G<ngroups>``, for subarrays with their placement and
disperser group.  One store (and one reference file) takes one group; inputs that differ in
any of these are split, never merged.

Yield table (report §9 Table 5): requested (user-given), observed (readable darks of the group),
T-filtered (observed with telemetry and dT within the threshold) as % of requested, GOOD
(accepted) as % of observed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from .. import __version__
from .. import instrument as inst
from ..config import SelectConfig
from ..paths import check_name, write_table
from ..store import file_sha256, truncation

UNCAL_SUFFIX = "_uncal.fits"
CALIBRATED_SUFFIXES = ("_jump.fits", "_ramp.fits")
DARK_EXP_TYPES = ("NRS_DARK",)

COLUMNS = [
    ("name", str), ("file", str), ("kind", str), ("rate_file", str), ("detector", str),
    ("readpatt", str), ("family", str), ("subarray", str), ("grating", str),
    ("date", str), ("date_end", str), ("ngroups", int), ("asic_tmin", float),
    ("asic_tmax", float), ("asic_dt", float), ("asic_nsamples", int), ("group", str),
    ("accepted", bool), ("reason", str), ("sha256", str),
]
OPTIONAL_COLUMNS = ("sha256",)  # manifests written before content identity lack it


def discover(inputs) -> list[Path]:
    """Files named on the command line, plus ``*_uncal/_ramp/_jump.fits`` inside folders."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for suffix in (UNCAL_SUFFIX,) + CALIBRATED_SUFFIXES:
                out.extend(sorted(p.glob(f"*{suffix}")))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        raise ValueError("no input files found")
    return unique


def read_exclusions(path) -> dict[str, str]:
    """``{file name: reason}`` from an ECSV/CSV table with ``file`` (and ``reason``) columns, or
    a text file with one file name per line, optionally followed by a reason."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exclusion list {path} does not exist")
    if path.suffix in (".ecsv", ".csv"):
        tab = Table.read(path, format="ascii.ecsv" if path.suffix == ".ecsv" else "ascii.csv")
        if "file" not in tab.colnames:
            raise ValueError(f"exclusion list {path} has no 'file' column")
        reasons = tab["reason"] if "reason" in tab.colnames else ["listed"] * len(tab)
        return {Path(str(f)).name: str(r) for f, r in zip(tab["file"], reasons)}
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, reason = line.partition(" ")
            out[Path(name.rstrip(",")).name] = reason.strip(" ,") or "listed"
    return out


def read_culled(path) -> dict[str, str]:
    """``{exposure: reason}`` of the exposures (``name@hash`` or plain file names) marked
    ``culled`` in a cull table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cull table {path} does not exist")
    try:
        tab = Table.read(path, format="ascii.ecsv")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise ValueError(f"{path} is not a cull table (ECSV): {exc}") from None
    missing = {"exposure", "culled"} - set(tab.colnames)
    if missing:
        raise ValueError(f"{path} is not a cull table: no {', '.join(sorted(missing))} column")
    culled = [str(v).strip().lower() in ("true", "1", "yes") for v in tab["culled"]]
    reasons = tab["reason"] if "reason" in tab.colnames else ["culled"] * len(tab)
    return {str(e): str(r) for e, c, r in zip(tab["exposure"], culled, reasons) if c}


def cull_note(path, n: int) -> str:
    """The HISTORY line of a build that left out ``n`` culled exposures."""
    return f"Culled: {n} exposure(s) left out by {Path(path).name} (SHA-256 {file_sha256(path)})"


def read_telemetry(path) -> Table | None:
    """ASIC telemetry with columns ``time`` (ISO UTC), ``asic_temp`` (K) and optionally
    ``detector``; sorted by time, with an ``mjd`` column added."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"telemetry file {path} does not exist")
    tab = Table.read(path, format="ascii.ecsv" if path.suffix == ".ecsv" else "ascii.csv")
    missing = {"time", "asic_temp"} - set(tab.colnames)
    if missing:
        raise ValueError(f"telemetry {path} lacks column(s): {', '.join(sorted(missing))}")
    tab["mjd"] = Time(list(tab["time"]), scale="utc").mjd
    tab.sort("mjd")
    return tab


def edb_telemetry(inputs, out, tcfg, pad_s: float, progress=None) -> Path:
    """``--telemetry edb``: the ASIC temperatures around every input's exposure from the
    engineering database (:mod:`nrsdark_dask.telemetry`; ``tcfg``: a ``TelemetryConfig``),
    written atomically to ``out`` as the table :func:`read_telemetry` reads.  Jwst's cache
    of the service's answers goes to ``tcfg.cache`` (empty: ``edb_cache/`` beside ``out``).
    An input without readable DETECTOR/EXPSTART/EXPEND is skipped here; the pre-filter rejects
    it with its reason."""
    from .. import telemetry as T

    mnemonics = tcfg.mnemonics()
    exposures = []
    for path in discover(inputs):
        try:
            h = fits.getheader(path, 0)
            det = h["DETECTOR"]
            start, end = Time(h["EXPSTART"], format="mjd"), Time(h["EXPEND"], format="mjd")
        except Exception:  # noqa: BLE001 - unreadable: select_inputs says why
            continue
        if det in mnemonics and h.get("INSTRUME") == "NIRSPEC":
            exposures.append((det, start, end))
    out = Path(out)
    edb = T.Edb(tcfg.edb_url, tcfg.cache or out.parent / "edb_cache", token=T.mast_token(),
                timeout_s=tcfg.timeout_s, retries=tcfg.retries)
    tab = T.asic_samples(exposures, edb, mnemonics, pad_s, progress=progress)
    return write_table(tab, out)


def _header_row(path: Path) -> tuple[dict, list[str]]:
    """Metadata of one input from its primary header, and the reasons it is unusable."""
    row = {c: (np.nan if t is float else 0 if t is int else False if t is bool else "")
           for c, t in COLUMNS}
    row.update(name=path.name, file=str(path.resolve()), asic_nsamples=0)
    row["kind"] = "uncal" if path.name.endswith(UNCAL_SUFFIX) else "ramp"
    try:
        row["file"].encode("utf-8")
    except UnicodeEncodeError:  # bytes the filesystem allows; no manifest or FITS card can
        row.update(name=os.fsencode(path.name).decode("utf-8", "replace"),
                   file=os.fsencode(row["file"]).decode("utf-8", "replace"))
        return row, [f"file name {os.fsencode(path.name)!r} is not UTF-8: rename it"]
    try:
        h = fits.getheader(path, 0)
        short = truncation(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reason, not a crash
        return row, [f"unreadable FITS file ({type(exc).__name__}: {exc})"]
    if short:
        return row, [short]
    reasons = []
    instrume, exp_type = h.get("INSTRUME", ""), h.get("EXP_TYPE", "")
    if instrume != "NIRSPEC" or exp_type not in DARK_EXP_TYPES:
        return row, [f"not a NIRSpec dark (INSTRUME={instrume or '?'}, EXP_TYPE={exp_type or '?'})"]
    needed = ("DETECTOR", "READPATT", "SUBARRAY", "GRATING", "NGROUPS", "EXPSTART", "EXPEND")
    missing = [k for k in needed if k not in h]
    if missing:
        return row, [f"missing keyword(s) {', '.join(missing)}"]
    problems = header_problems(path, h, row["kind"])
    if problems:  # no group: nothing downstream trusts a header that disagrees with its data
        return row, problems
    row.update(detector=h["DETECTOR"], readpatt=h["READPATT"], subarray=h["SUBARRAY"],
               grating=h["GRATING"], ngroups=int(h["NGROUPS"]))
    row["family"] = inst.get_read_pattern(h["READPATT"]).family
    start, end = Time(h["EXPSTART"], format="mjd"), Time(h["EXPEND"], format="mjd")
    row.update(date=start.isot, date_end=end.isot)
    if row["kind"] == "ramp":
        base = path.name
        for suffix in CALIBRATED_SUFFIXES:
            base = base.removesuffix(suffix)
        rate = path.with_name(base + "_rate.fits")
        if rate.exists():
            row["rate_file"] = str(rate.resolve())
        else:
            reasons.append(f"no matching rate file {rate.name}")
    if row["family"]:
        row["group"] = group_key(row, h)
    return row, reasons


def header_problems(path: Path, h, kind: str) -> list[str]:
    """Where an input's primary header disagrees with its data or with the known values,
    checked before anything trusts it: DETECTOR (NRS1, NRS2), READPATT and SUBARRAY (the
    known names, SUBSIZE1/2 their sizes; a subarray this release does not list needs a plain
    upper-case name and its SUBSTRT/SUBSIZE keywords, which the data must then match),
    NGROUPS and NINTS against the SCI cube's axes and the frame shape against the subarray
    (3200 raw rows for an IRS2 full frame).  Values are quoted with ``repr``: a header is
    data, shown as text."""
    out = []
    if str(h["DETECTOR"]).upper() not in inst.DETECTORS:
        out.append(f"unknown DETECTOR {h['DETECTOR']!r} (known: {', '.join(inst.DETECTORS)})")
    try:
        family = inst.get_read_pattern(str(h["READPATT"])).family
    except ValueError:
        out.append(f"unknown READPATT {h['READPATT']!r}")
        family = None
    name, sub = str(h["SUBARRAY"]), None
    try:
        sub = inst.get_subarray(name)
    except ValueError:
        try:  # one this release does not list: a plain name, and its own keywords
            if re.fullmatch(r"[A-Z0-9]{1,16}", name):
                sub = inst.Subarray(name, *(int(h[k]) for k in ("SUBSTRT1", "SUBSTRT2",
                                                                  "SUBSIZE1", "SUBSIZE2")))
        except (KeyError, TypeError, ValueError):
            pass
        if sub is None:
            out.append(f"unknown SUBARRAY {h['SUBARRAY']!r} (known: {', '.join(inst.SUBARRAYS)};"
                       " another needs a plain upper-case name and SUBSTRT1/2, SUBSIZE1/2)")
    if sub is not None:
        for key, want in (("SUBSIZE1", sub.xsize), ("SUBSIZE2", sub.ysize)):
            if key in h and h[key] != want:
                out.append(f"{key}={h[key]!r} but SUBARRAY {sub.name} is {want} pixels")
    try:
        ngroups, nints = int(h["NGROUPS"]), int(h.get("NINTS", 1))
    except (TypeError, ValueError):
        return out + [f"NGROUPS {h['NGROUPS']!r} or NINTS {h.get('NINTS')!r} is not a count"]
    try:
        sci = fits.getheader(path, "SCI")
    except KeyError:
        return out + ["no SCI extension"]
    axes = [sci.get(f"NAXIS{k}", 0) for k in range(sci.get("NAXIS", 0), 0, -1)]
    if len(axes) != 4:
        return out + [f"SCI has {len(axes)} axes, not 4 (integrations, groups, rows, columns)"]
    if axes[1] != ngroups:
        out.append(f"NGROUPS={ngroups} but the SCI cube holds {axes[1]} groups")
    if axes[0] != nints:
        out.append(f"NINTS={nints} but the SCI cube holds {axes[0]} integrations")
    if sub is not None and family is not None:
        raw = family == "IRS2" and kind == "uncal" and sub.name == "FULL"
        rows = inst.IRS2_RAW_SIZE if raw else sub.ysize
        if tuple(axes[2:]) != (rows, sub.xsize):
            out.append(f"SCI frames are {axes[2]} x {axes[3]} but {sub.name} "
                       f"{'raw ' if rows != sub.ysize else ''}frames are {rows} x {sub.xsize}")
    return out


def group_key(row: dict, header) -> str:
    """``DETECTOR_FAMILY_SUBARRAY_READPATT_G<ngroups>``, and for a subarray its placement and
    disperser group (``_X<substrt1>Y<substrt2>_<gratings>``): a subarray sits elsewhere on the
    detector for each group of gratings and a dark serves one (report §6, Table 5;
    :func:`nrsdark_dask.instrument.disperser_group`), so such inputs are split, not refused."""
    key = (f"{row['detector']}_{row['family']}_{row['subarray']}_{row['readpatt']}_"
           f"G{row['ngroups']}")
    if row["subarray"] != "FULL":
        key += f"_X{header.get('SUBSTRT1', 1)}Y{header.get('SUBSTRT2', 1)}"
        gratings = inst.disperser_group(row["subarray"], row["grating"])
        if gratings:
            key += "_" + "+".join(gratings)
    return key


def select_inputs(inputs, telemetry=None, exclude=None, cfg: SelectConfig | None = None,
                  start: str | None = None, end: str | None = None, cull=None) -> Table:
    """Build the manifest (an astropy Table, one row per input; see module docstring).
    ``cull``: a cull table of ``nrsdark cull``; its culled exposures are rejected like the
    hand-made ``exclude`` list's (matched by file name and, where the table has it, content
    hash), with the cull's reason."""
    cfg = cfg or SelectConfig()
    files = discover(inputs)
    tel = read_telemetry(telemetry)
    excl = read_exclusions(exclude)
    culled = {}
    for ident, why in (read_culled(cull) if cull else {}).items():
        name, _, digest = ident.partition("@")
        culled[Path(name).name] = (digest, why)
    t_start = Time(start).mjd if start else -np.inf
    t_end = Time(end).mjd + 1 if end else np.inf  # an end date includes that whole day
    pad = cfg.telemetry_pad_s / 86400.0
    rows, first_of = [], {}
    for path in files:
        row, reasons = _header_row(path)
        if row["group"]:
            full = row["subarray"] == "FULL"
            if row["grating"] in cfg.reject_gratings:
                reasons.append(f"{row['grating']} grating (undispersed light leaks)")
            if full and row["grating"] in cfg.reject_gratings_full_frame:
                reasons.append(f"{row['grating']} on a full frame (MSA glow)")
            mjd0, mjd1 = Time(row["date"]).mjd, Time(row["date_end"]).mjd
            if not t_start <= mjd0 < t_end:
                reasons.append(f"outside date window {start or '...'} - {end or '...'}")
            limit = dt_limit(cfg, row["subarray"])
            if tel is not None:
                w = (tel["mjd"] >= mjd0 - pad) & (tel["mjd"] <= mjd1 + pad)
                if "detector" in tel.colnames:
                    w &= np.asarray(tel["detector"]) == row["detector"]
                temps = np.asarray(tel["asic_temp"], float)[w]
                row["asic_nsamples"] = int(temps.size)
            if tel is not None and row["asic_nsamples"]:
                row["asic_tmin"], row["asic_tmax"] = float(temps.min()), float(temps.max())
                row["asic_dt"] = round(row["asic_tmax"] - row["asic_tmin"], 6)
                if not within_dt_limit(row["asic_dt"], limit):
                    kind = "full frame" if full else "subarray"
                    reasons.append(f"ASIC dT {row['asic_dt']:.3f} K > {limit} K ({kind}, "
                                   "likely after a readout-mode switch)")
            elif not cfg.accept_without_telemetry:
                reasons.append("no ASIC telemetry for the exposure (flagged, not guessed)")
        if row["name"] in excl:
            reasons.append(f"excluded by user: {excl[row['name']]}")
        if row["group"]:  # readable: its content is its identity (see store.exposure_id)
            row["sha256"] = file_sha256(path)
            digest, why = culled.get(row["name"], (None, ""))
            if digest is not None and row["sha256"].startswith(digest):
                reasons.append(f"culled automatically: {why}")
            if row["sha256"] in first_of:
                reasons.append(f"same content as {first_of[row['sha256']]} (a duplicate; "
                               "taken once)")
            first_of.setdefault(row["sha256"], row["file"])
        row["accepted"] = not reasons
        row["reason"] = "; ".join(reasons)
        rows.append(row)
    tab = Table(rows=[[r[c] for c, _ in COLUMNS] for r in rows],
                names=[c for c, _ in COLUMNS], dtype=[t for _, t in COLUMNS])
    tab["asic_dt"].unit = tab["asic_tmin"].unit = tab["asic_tmax"].unit = "K"
    tab.meta.update(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        software=f"nrsdark_dask {__version__}",
        telemetry=str(telemetry) if telemetry else "",
        exclusions=str(exclude) if exclude else "",
        cull=str(cull) if cull else "",
        date_window=[start or "", end or ""],
        select_config=asdict(cfg),
    )
    return tab


def groups(manifest: Table) -> list[str]:
    return sorted({g for g in manifest["group"] if g})


def dt_limit(cfg: SelectConfig, subarray: str) -> float:
    """ASIC dT limit: 0.02 K full frame, 0.13 K subarray (report §3)."""
    return cfg.dt_full_frame if subarray == "FULL" else cfg.dt_subarray


def within_dt_limit(d_temp: float, limit: float) -> bool:
    """dT <= limit, with a tolerance for the 0.001 K quantisation of the telemetry."""
    return bool(d_temp <= limit + 1e-9)


def _passes_temperature(row, cfg: SelectConfig) -> bool:
    if row["asic_nsamples"] == 0:
        return cfg.accept_without_telemetry
    return within_dt_limit(row["asic_dt"], dt_limit(cfg, row["subarray"]))


def yield_table(manifest: Table, requested: int | None = None,
                cfg: SelectConfig | None = None) -> Table:
    """Report §9 Table 5 for each group: requested, observed, T-filtered, GOOD."""
    cfg = cfg or SelectConfig(**{k: tuple(v) if isinstance(v, list) else v
                                 for k, v in manifest.meta.get("select_config", {}).items()})

    def pct(n, d):
        return f"{n} ({100.0 * n / d:.0f}%)" if d else f"{n}"

    rows = []
    for g in groups(manifest):
        sub = manifest[manifest["group"] == g]
        observed = len(sub)
        tfilt = sum(_passes_temperature(r, cfg) for r in sub)
        good = int(np.sum(sub["accepted"]))
        rows.append((g, "n/a" if requested is None else str(requested),
                     pct(observed, requested), pct(tfilt, requested), pct(good, observed)))
    return Table(rows=rows or None, names=("group", "requested", "observed (% of requested)",
                                           "T-filtered (% of requested)", "GOOD (% of observed)"),
                 dtype=(str, str, str, str, str))


def write_manifest(manifest: Table, path) -> None:
    """Write atomically (temporary name, then rename)."""
    write_table(manifest, path)


def read_manifest(path) -> Table:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")
    tab = Table.read(path, format="ascii.ecsv")
    missing = {c for c, _ in COLUMNS} - set(tab.colnames) - set(OPTIONAL_COLUMNS)
    if missing:
        raise ValueError(f"{path} is not an nrsdark manifest (missing {', '.join(sorted(missing))})")
    for i, name in enumerate(tab["name"]):
        check_name(str(name), f"manifest {path} row {i + 1}: ")
    return tab
