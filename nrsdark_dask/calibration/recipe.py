"""Running jwst ``calwebb_detector1`` on NIRSpec darks: offline from local reference files, or
with CRDS when a server is reachable.

The recipe (report §4.1.2)
-----------------------------------
Steps, in order: ``group_scale, dq_init, saturation, superbias, refpix, linearity, jump (with
snowball flagging: expand_large_events=True), ramp_fit``.  They are called one by one (not
through ``Detector1Pipeline``) so that the calibrated ramp *after jump* - the input of the
average dark - is kept in memory next to the rate, and no reference file of a step we do not
run (ipc, rscd, reset, dark, persistence...) is ever looked up.  ``dq_init`` gets a copy of the
mask with HOT and WARM cleared (and their DO_NOT_USE, where nothing else set it), so that hot
pixels get ramps fit (report §4.1.2).

Reference files, per type, come from (first match wins):

1. ``refs`` passed by the caller (a ``{reftype: path}`` dict, e.g. :func:`refkit_files`);
2. CRDS, when ``CRDS_SERVER_URL`` is set (or a populated ``CRDS_PATH`` cache exists).

For TRAD data the IRS2 ``refpix`` and ``sirskernel`` types are ``N/A``.

Offline environment (measured facts: ``docs/jwst-offline.md``)
--------------------------------------------------------------
:func:`configure_crds` makes jwst run with no network:

* ``CRDS_PATH`` -> a local cache (default ``~/.cache/nrsdark_dask/crds``) holding a minimal
  ``config/jwst/server_config`` (the five keys crds needs), because every step's
  ``finalize_result`` asks crds for the context in use and crds ``sys.exit``\\ s without it;
* ``CRDS_SERVER_URL`` left unset: crds 14 then makes no network attempt;
* ``STPIPE_DISABLE_CRDS_STEPPARS=true`` (``1`` is silently ignored): no pars-* look-up.

With ``CRDS_SERVER_URL`` set, :func:`configure_crds` only sets the step-pars switch and leaves
CRDS alone, so the same code uses CRDS for whatever ``refs`` does not give.  Call it before
the first jwst step runs (it is idempotent; :func:`run_detector1` calls it).

Cost per exposure (one core): TRAD SUB2048 10 groups ~3 s and 0.4 GB; TRAD FULL 88 groups
~155 s and 8.2 GB (peak in jump); IRS2 FULL 50 groups ~240 s and 7.4 GB (peak in refpix), 200
groups ~27 GB extrapolated.  Peak memory is jwst's: :data:`MEMORY_MODEL`, 20-21 bytes per raw
pixel per group (5 float32 copies of the raw ramp).
"""

from __future__ import annotations

import json
import mmap
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import instrument as inst

DETECTOR1_STEPS = ("group_scale", "dq_init", "saturation", "superbias", "refpix", "linearity",
                   "jump", "ramp_fit")
DEFAULT_CRDS_PATH = Path.home() / ".cache" / "nrsdark_dask" / "crds"
OFFLINE_CONTEXT = "jwst_offline.pmap"
STEP_PARAMETERS = {"jump": {"expand_large_events": True}}
JWST_LOGGERS = ("stpipe", "jwst", "stcal", "CRDS", "stdatamodels")
STEP_CLASSES = {
    "group_scale": "jwst.group_scale.GroupScaleStep", "dq_init": "jwst.dq_init.DQInitStep",
    "saturation": "jwst.saturation.SaturationStep", "superbias": "jwst.superbias.SuperBiasStep",
    "refpix": "jwst.refpix.RefPixStep", "linearity": "jwst.linearity.LinearityStep",
    "dark_current": "jwst.dark_current.DarkCurrentStep", "jump": "jwst.jump.JumpStep",
    "ramp_fit": "jwst.ramp_fitting.RampFitStep"}
"""jwst's step class of each step name (imported when asked: importing jwst takes seconds)."""
REFTYPE_STEP = {"mask": "dq_init", "saturation": "saturation", "superbias": "superbias",
                "linearity": "linearity", "gain": "jump", "readnoise": "jump",
                "refpix": "refpix", "dark": "dark_current"}
"""The step that asks CRDS for each reference type."""


def step_classes(names) -> list[tuple[str, type]]:
    """``[(name, jwst step class)]`` for step names of :data:`STEP_CLASSES`, in order."""
    import importlib

    out = []
    for name in names:
        module, _, cls = STEP_CLASSES[name].rpartition(".")
        out.append((name, getattr(importlib.import_module(module), cls)))
    return out


_PARENT = None


def call_step(cls, model, **kwargs):
    """Run jwst step ``cls`` on ``model`` as jwst's own ``Detector1Pipeline`` runs its steps:
    configured as ``cls.call(model, **kwargs)`` configures it, but as a member of a pipeline,
    which jwst lets change its input model in place instead of first copying it whole
    (``JwstStep.prepare_output``: "all copies are skipped if this step has a parent"): a
    step called alone copies the ramp it is given, a whole exposure's ramp at every step.
    The caller must use ``model`` only through the result from then on (``ramp_fit`` changes
    the GROUPDQ of its input: call it with ``cls.call`` where that GROUPDQ is kept).  With
    ``configure_log=True`` (stpipe's own log handlers, ``--verbose``) it is ``cls.call``."""
    global _PARENT
    if kwargs.pop("configure_log", True):
        return cls.call(model, **kwargs)
    if _PARENT is None:
        from jwst.stpipe import Pipeline

        _PARENT = Pipeline()
    config, config_file = cls.build_config(None, **kwargs)
    config.pop("class", None)
    step = cls.from_config_section(config, parent=_PARENT, name=config.get("name"),
                                   config_file=config_file)
    return step.run(model)


def crds_reachable() -> bool:
    """True when the user configured a CRDS server (we never probe the network ourselves)."""
    return bool(os.environ.get("CRDS_SERVER_URL"))


def configure_crds(crds_path: str | os.PathLike | None = None) -> dict:
    """Prepare the environment for jwst; return a description of the mode used.

    Offline (no ``CRDS_SERVER_URL``): point ``CRDS_PATH`` at a cache with a minimal
    server_config (creating it if missing).  Online: leave CRDS settings untouched.
    """
    os.environ["STPIPE_DISABLE_CRDS_STEPPARS"] = "true"
    if crds_reachable():
        return {"mode": "crds", "server": os.environ["CRDS_SERVER_URL"],
                "crds_path": os.environ.get("CRDS_PATH", "")}
    path = Path(crds_path or os.environ.get("CRDS_PATH") or DEFAULT_CRDS_PATH)
    cfg = path / "config" / "jwst" / "server_config"
    if not cfg.exists():
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(repr({
            "observatory": "jwst", "operational_context": OFFLINE_CONTEXT,
            "force_remote_mode": False, "bad_files_list": [],
            "last_synced": "2000-01-01 00:00:00",
        }) + "\n")
    os.environ["CRDS_PATH"] = str(path)
    os.environ.pop("CRDS_SERVER_URL", None)
    return {"mode": "offline", "crds_path": str(path)}


def refkit_files(refkit_dir) -> dict[str, str]:
    """``{reftype: absolute path}`` of a reference kit folder (the simulator's ``refkit/`` or
    any folder of files named ``*_<reftype>.fits``)."""
    refkit_dir = Path(refkit_dir)
    if not refkit_dir.is_dir():
        raise FileNotFoundError(f"reference kit folder {refkit_dir} not found")
    out = {}
    for f in sorted(refkit_dir.glob("*.fits")):
        reftype = f.stem.rsplit("_", 1)[-1].lower()
        out[reftype] = str(f.resolve())
    return out


REQUIRED_TYPES = ("mask", "saturation", "superbias", "linearity", "gain", "readnoise")
"""Reference types the recipe needs offline (IRS2 also ``refpix``)."""
ANY_VALUES = ("", "ANY", "N/A", "GENERIC")


def reference_mismatches(path, reftype: str, layout) -> list[str]:
    """Why the reference file ``path`` cannot serve as ``reftype`` for data of ``layout``
    (a :class:`nrsdark_dask.store.StoreLayout`); empty when it can.  jwst's own selection
    rules are the model: REFTYPE must be the type, INSTRUME NIRSPEC, DETECTOR the data's;
    READPATT (or the P_READPA list) ANY or naming the data's pattern; and the file's region
    (SUBSTRT/SUBSIZE, else its array shape as a full frame) must contain the data's, as
    ``reffile_utils`` cuts a larger file to the subarray.  IRS2 files keep SUBSIZE2 = 2048 on
    3200 raw rows."""
    from astropy.io import fits

    name = Path(path).name
    try:
        h = fits.getheader(path, 0)
    except Exception as exc:  # noqa: BLE001 - unreadable is a reason
        return [f"{name}: unreadable ({type(exc).__name__}: {exc})"]
    out = []
    got = str(h.get("REFTYPE", "")).upper()
    if got != reftype.upper():
        out.append(f"{name}: REFTYPE {got or 'missing'}, expected {reftype.upper()}")
    if str(h.get("INSTRUME", "NIRSPEC")).upper() != "NIRSPEC":
        out.append(f"{name}: INSTRUME {h.get('INSTRUME')}, not NIRSPEC")
    det = str(h.get("DETECTOR", "")).upper()
    if det not in ANY_VALUES and det != layout.detector:
        out.append(f"{name}: DETECTOR {det}, the data are {layout.detector}")
    patterns = {p.strip().upper() for p in str(h.get("P_READPA", "")).split("|") if p.strip()}
    patterns |= {str(h.get("READPATT", "")).strip().upper()}
    patterns -= set(ANY_VALUES)
    if patterns and layout.readpatt not in patterns:
        out.append(f"{name}: READPATT {'|'.join(sorted(patterns))}, the data are "
                   f"{layout.readpatt}")
    if "SUBSIZE1" in h and "SUBSIZE2" in h:
        x0, y0 = int(h.get("SUBSTRT1", 1)), int(h.get("SUBSTRT2", 1))
        nx, ny = int(h["SUBSIZE1"]), int(h["SUBSIZE2"])
    else:
        x0 = y0 = 1
        nx = ny = inst.FULL_SIZE
    if not (x0 <= layout.xstart and y0 <= layout.ystart
            and x0 + nx >= layout.xstart + layout.nx and y0 + ny >= layout.ystart + layout.ny):
        out.append(f"{name}: covers x {x0}-{x0 + nx - 1}, y {y0}-{y0 + ny - 1} "
                   f"({h.get('SUBARRAY', '?')}), not the data's x {layout.xstart}-"
                   f"{layout.xstart + layout.nx - 1}, y {layout.ystart}-"
                   f"{layout.ystart + layout.ny - 1} ({layout.subarray})")
    return out


def check_reference_kit(refs: dict[str, str], layout) -> None:
    """Refuse a kit that does not fit the data (see :func:`reference_mismatches`), before any
    exposure is calibrated: a kit of another detector, pattern or region, or a file under
    the wrong type's name."""
    problems = [m for reftype, path in sorted(refs.items()) for m in
                reference_mismatches(path, reftype, layout)]
    if problems:
        raise ValueError("the reference kit does not fit the data:\n  " + "\n  ".join(problems))


def cleared_mask(mask_path: str, workdir) -> str:
    """Copy of a MASK reference with HOT and WARM cleared (report §4.1.2), plus the DO_NOT_USE
    that came only with them; cached in ``workdir`` by the source's name and mtime.  Safe when
    several tasks make it at once (unique temporary name, atomic rename)."""
    from stdatamodels.jwst import datamodels as dm

    src = Path(mask_path)
    out = Path(workdir) / f"{src.stem}_nohot_{int(src.stat().st_mtime)}.fits"
    if out.exists():
        return str(out)
    DQ = inst.DQ
    with dm.MaskModel(str(src)) as m:
        dq = m.dq.astype(np.uint32)
        hotwarm = (dq & (DQ["HOT"] | DQ["WARM"])) != 0
        other = dq & ~np.uint32(DQ["HOT"] | DQ["WARM"] | DQ["DO_NOT_USE"])
        dq[hotwarm] &= ~np.uint32(DQ["HOT"] | DQ["WARM"])
        only_hot = hotwarm & (other == 0)
        dq[only_hot] &= ~np.uint32(DQ["DO_NOT_USE"])
        m.dq = dq
        m.add_history_entry("nrsdark_dask: HOT and WARM cleared for dark processing")
        tmp = out.with_suffix(f".tmp-{uuid.uuid4().hex}.fits")  # unique per process and thread
        m.save(tmp)
    os.replace(tmp, out)
    return str(out)


@dataclass
class Detector1Result:
    """What one exposure gives: the calibrated ramp after jump (RampModel: data, groupdq,
    pixeldq), the rate (ImageModel: data, err, dq), provenance, and optionally the bias
    inputs (:func:`bias_groups`)."""

    ramp: object
    rate: object
    provenance: dict = field(default_factory=dict)
    bias_groups: np.ndarray | None = None

    def close(self):
        for m in (self.ramp, self.rate):
            if m is not None:
                m.close()

    def exposure_arrays(self):
        """The calibrated ramp and group DQ of integration 1, (G, y, x) each: what the store
        keeps.  Here in-memory arrays (views, no copy); see :class:`CalibratedInput`."""
        return self.ramp.data[0], self.ramp.groupdq[0]


class MappedArray:
    """Read-only, memory-lean access to an array memory-mapped from a FITS file.

    Indexing returns an in-memory copy, in native byte order, of only the part asked for
    (``a[g]``: one group plane; ``a[:, y0:y1]``: a block of rows), then drops the file pages
    that the read mapped into this process (``madvise(MADV_DONTNEED)``; they stay in the page
    cache, outside the process's RSS; the map is read-only, so nothing can be lost).  Reading a
    cube block by block thus holds one block, never the cube, whatever the number of groups.
    ``np.asarray(a)`` reads it all (one copy).  An array that is not memory-mapped (e.g. a
    scaled FITS image, which astropy converts in memory) works the same, minus the release.
    """

    def __init__(self, array: np.ndarray):
        self._a = array
        self._mm = _mmap_of(array)
        self.shape = array.shape
        self.ndim = array.ndim
        self.dtype = array.dtype.newbyteorder("=")
        self.size = array.size
        self.nbytes = array.nbytes

    def __len__(self):
        return len(self._a)

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.array(self._a[key], dtype=self.dtype)
        finally:
            self.release()

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def release(self):
        """Unmap the pages read so far from this process (no-op when not memory-mapped)."""
        if self._mm is not None and not self._mm.closed and _MADV_DONTNEED is not None:
            self._mm.madvise(_MADV_DONTNEED)


_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None) if hasattr(mmap.mmap, "madvise") else None


def _mmap_of(array) -> mmap.mmap | None:
    """The read-only ``mmap`` under a numpy array (astropy's ``mode="denywrite"``), or None."""
    b = array
    while b is not None:
        if isinstance(b, mmap.mmap):
            return None if array.flags.writeable else b
        if isinstance(b, memoryview):
            b = b.obj
            continue
        b = getattr(b, "base", None)
    return None


@dataclass
class CalibratedInput(Detector1Result):
    """:func:`read_calibrated`'s result: the models' arrays are memory-mapped, read-only, from
    the files; :meth:`exposure_arrays` gives :class:`MappedArray` views that read block by
    block.  ``close`` also closes the files."""

    files: list = field(default_factory=list)

    def exposure_arrays(self):
        return MappedArray(self.ramp.data[0]), MappedArray(self.ramp.groupdq[0])

    def close(self):
        try:
            super().close()
        finally:
            for h in self.files:
                h.close()


def step_arguments(refs: dict[str, str], family: str, mask: str | None) -> dict[str, dict]:
    """Keyword arguments of each step's ``call``: reference overrides and parameters."""
    def ov(*types):
        return {f"override_{t}": refs[t] for t in types if t in refs}

    args = {
        "group_scale": {},
        "dq_init": {"override_mask": mask} if mask else {},
        "saturation": ov("saturation", "superbias"),
        "superbias": ov("superbias"),
        "refpix": ov("refpix") if family == "IRS2" else {
            "override_refpix": "N/A", "override_sirskernel": "N/A"},
        "linearity": ov("linearity"),
        "jump": {**ov("gain", "readnoise"), **STEP_PARAMETERS["jump"]},
        "ramp_fit": ov("gain", "readnoise"),
        "dark_current": ov("dark"),  # science only (:func:`run_science`)
    }
    return args


def readout_family(model) -> str:
    return inst.get_read_pattern(model.meta.exposure.readpatt).family


def run_steps(model, names, args: dict, quiet: bool, after=None):
    """jwst's steps ``names`` (the last is ``ramp_fit``) on ``model`` with the keyword
    arguments ``args[name]`` (:func:`step_arguments`); ``after(name, model)`` is called after
    each step before the ramp fit.  Returns ``(the ramp as ramp_fit got it, the rate)``;
    the per-integration rate is closed."""
    log = {"configure_log": not quiet}
    *steps, (_, ramp_fit) = step_classes(names)
    for name, cls in steps:
        model = call_step(cls, model, **args[name], **log)
        if after is not None:
            after(name, model)
    # ramp_fit sets DO_NOT_USE in the GROUPDQ it is given: on a copy, as stock, so the ramp
    # returned (what the store keeps) is the jump step's
    rate, rateints = ramp_fit.call(model, **args["ramp_fit"], **log)
    if rateints is not None:
        rateints.close()
    return model, rate


def run_detector1(uncal, refs: dict[str, str] | None = None, workdir=None,
                  crds_path=None, with_bias: bool = False, quiet: bool = False) -> Detector1Result:
    """Calibrate one uncal exposure with the report's §4.1.2 recipe; everything stays in memory.

    ``refs``: ``{reftype: path}`` overrides (offline needs mask, saturation, superbias,
    linearity, gain, readnoise, and refpix for IRS2).  ``workdir`` holds the cleared mask
    (default: a temporary folder, removed on return).  ``with_bias``: also compute the bias
    inputs of report §4.1.1 (:func:`bias_groups`) into ``result.bias_groups``.  ``quiet``: jwst
    logs warnings only (stpipe's own INFO handlers are not installed: ``configure_log=False``).
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="nrsdark_") as tmp:
            return run_detector1(uncal, refs, tmp, crds_path, with_bias, quiet)
    env = configure_crds(crds_path)
    from stdatamodels.jwst import datamodels as dm

    refs = dict(refs or {})
    check_references(env, refs)  # before reading the exposure
    model = dm.RampModel(str(uncal)) if not isinstance(uncal, dm.RampModel) else uncal
    family = readout_family(model)
    check_references(env, refs, family)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mask = cleared_mask(reference_files(model, refs, family, ("mask",))["mask"], workdir)
    args = step_arguments(refs, family, mask)
    bias = None

    def after(name, m):  # the report's §4.1.1 bias inputs, right after dq_init
        nonlocal bias
        if name == "dq_init" and with_bias:
            bias = bias_groups(m, {**args["refpix"], "configure_log": not quiet}, family)

    model, rate = run_steps(model, DETECTOR1_STEPS, args, quiet, after)
    prov = provenance(env, refs, mask)
    return Detector1Result(model, rate, prov, bias)


SCIENCE_STEPS = ("group_scale", "dq_init", "saturation", "superbias", "refpix", "linearity",
                 "dark_current", "jump", "ramp_fit")
"""A science exposure's detector1 (``nrsdark check-science``, report §8): the recipe's steps
with ``dark_current``, in ``Detector1Pipeline``'s order.  Not run: ``persistence`` (no NIRSpec
reference in CRDS), ``charge_migration`` and ``clean_flicker_noise`` (off in jwst's defaults),
the MIRI and NIRCam-only steps.  The jump step keeps the recipe's snowball flagging."""


def run_science(uncal, refs: dict[str, str] | None = None, crds_path=None,
                quiet: bool = False):
    """Calibrate one science exposure through detector1 *with* the dark (:data:`SCIENCE_STEPS`)
    and return its rate (an ImageModel: data, err, dq, var_poisson, var_rnoise).

    Unlike :func:`run_detector1` (darks), the MASK is used as given: hot pixels stay
    DO_NOT_USE, as a science user's pipeline has them.  ``refs``: ``{reftype: path}``
    overrides, ``dark`` included; offline every type of the recipe and ``dark`` must be given.
    Peak memory is jwst's whole-exposure run (see the module docstring) plus the DARK's
    cube: :func:`science_memory`.
    """
    env = configure_crds(crds_path)
    from stdatamodels.jwst import datamodels as dm

    refs = dict(refs or {})
    check_references(env, refs)
    if env["mode"] == "offline" and "dark" not in refs:
        raise RuntimeError("offline (no CRDS_SERVER_URL) and no DARK reference file given")
    model = dm.RampModel(str(uncal))
    family = readout_family(model)
    check_references(env, refs, family)
    args = step_arguments(refs, family, refs.get("mask"))
    model, rate = run_steps(model, SCIENCE_STEPS, args, quiet)
    model.close()
    return rate


MEMORY_MODEL = {"TRAD": (0.41e9, 21.0), "IRS2": (0.80e9, 20.0)}
"""Peak RSS of one whole-exposure detector1 run, (fixed bytes, bytes per raw pixel-group) by
readout family: measured on this project's simulated full-frame darks (jwst 3.0, stcal 1.20,
steps run as jwst's pipeline runs them, :func:`call_step`), the process's peak with the
staging into the store included (``benchmarks/bench_tiled.py whole-memory``): TRAD 44 groups
4.28 GB, 88 groups 8.16 GB (peak in jump: float64 first differences); IRS2 25 groups 4.07 GB,
50 groups 7.35 GB (peak in refpix)."""


def detector1_memory(family: str, pixel_groups: int) -> int:
    """Bytes one whole-exposure detector1 run of ``pixel_groups`` raw pixel-groups peaks at
    (:data:`MEMORY_MODEL`, no margin)."""
    fixed, per = MEMORY_MODEL[family]
    return int(fixed + per * pixel_groups)


def science_memory(shape: tuple[int, ...], family: str = "TRAD") -> int:
    """Bytes :func:`run_science` needs for a raw ramp of ``shape`` (nints, ngroups, ny, nx):
    jwst's whole-exposure peak (:func:`detector1_memory`), plus the DARK's cube (float32 SCI
    and ERR, uint32 DQ planes: 12 bytes per pixel per group)."""
    return detector1_memory(family, int(np.prod(shape))) + 12 * int(np.prod(shape[1:]))


def check_references(env: dict, refs: dict, family: str | None = None) -> None:
    """Offline, every reference type of the recipe must be given (IRS2 also ``refpix``;
    checked when ``family`` is given)."""
    if env["mode"] != "offline":
        return
    missing = set(REQUIRED_TYPES) - set(refs)
    if missing:
        raise RuntimeError(
            f"offline (no CRDS_SERVER_URL) and no local reference file for: "
            f"{', '.join(sorted(missing))}; pass --refkit DIR or set CRDS_SERVER_URL")
    if family == "IRS2" and "refpix" not in refs:
        raise RuntimeError("offline IRS2 calibration needs an IRS2 'refpix' reference file")


def reference_files(model, refs: dict, family: str, types=None) -> dict[str, str]:
    """Every reference file the recipe uses for ``model``'s exposure (or those of ``types``):
    ``refs`` where given, else what jwst itself selects (CRDS), asked by each type's own
    step (:data:`REFTYPE_STEP`)."""
    types = types or REQUIRED_TYPES + (("refpix",) if family == "IRS2" else ())
    out = dict(refs)
    for reftype in types:
        if reftype not in out:
            (_, cls), = step_classes((REFTYPE_STEP[reftype],))
            out[reftype] = cls().get_reference_file(model, reftype)
    return out


def provenance(env: dict, refs: dict, mask: str) -> dict:
    """How an exposure was calibrated: jwst version, CRDS mode and context, the reference
    files (by name), the mask actually used, the steps and their parameters."""
    import jwst

    return {
        "jwst": jwst.__version__,
        "crds_mode": env["mode"],
        "crds_context": _context(),
        "references": {k: os.path.basename(v) for k, v in refs.items()},
        "mask_used": os.path.basename(mask),
        "steps": list(DETECTOR1_STEPS),
        "step_parameters": json.dumps(STEP_PARAMETERS),
    }


def bias_groups(model, refpix_args: dict, family: str) -> np.ndarray:
    """Report §4.1.1 bias inputs of one exposure: its uncalibrated groups 1 and 2,
    reference-pixel corrected by jwst ``refpix``, with the mean level that the correction took
    out of group 1 added back to both (so ``2 g1 - g2`` keeps the bias level).

    ``model``: the RampModel after ``dq_init`` (raw DN, reference-pixel DQ set).  Returns
    float32 (2, ny_raw, nx); IRS2 keeps its 3200-row raw layout (``preserve_irs2_refpix``), the
    layout of IRS2 SUPERBIAS files.  jwst's IRS2 correction removes each pixel's mean over the
    groups and restores it only on normal pixels and the reference output; on the interleaved
    reference samples we restore it too, so the bias matches the raw bias on all 3200 rows, and
    the "level removed" is averaged over the normal pixels only.
    Memory: two raw frames plus jwst's refpix working copies.
    """
    from jwst.refpix import RefPixStep
    from stdatamodels.jwst import datamodels as dm

    two = dm.RampModel(data=model.data[:1, :2].astype(np.float32),
                       pixeldq=model.pixeldq.copy(), groupdq=model.groupdq[:1, :2].copy())
    two.update(model)
    two.meta.exposure.ngroups = 2
    raw = two.data[0].astype(np.float64)
    kwargs = dict(refpix_args)
    science = np.ones(raw.shape[1], bool)
    if family == "IRS2":
        kwargs["preserve_irs2_refpix"] = True
        science = inst.irs2_normal_rows(model.meta.instrument.detector)
    out = call_step(RefPixStep, two, **kwargs)
    after = out.data[0, :2].astype(np.float64)
    if family == "IRS2":
        per_out = inst.IRS2_RAW_SIZE // 5
        interleaved = ~science
        refout = slice(0, per_out) if science[per_out] else slice(-per_out, None)
        interleaved[refout] = False
        after[:, interleaved] += raw[:, interleaved].mean(axis=0)
    level = np.nanmean(raw[0, science] - after[0, science])
    out.close()
    two.close()
    return (after + level).astype(np.float32)


def read_calibrated(ramp_file, rate_file) -> CalibratedInput:
    """An exposure calibrated elsewhere: a jwst ``*_ramp.fits``/``*_jump.fits`` (RampModel with
    GROUPDQ, after jump) and its ``*_rate.fits``.  No bias inputs (they need the raw groups).

    Memory: nothing big is read here.  Both files are opened memory-mapped and read-only
    (astropy ``mode="denywrite"``; stdatamodels would otherwise read every extension into
    memory), so the models' SCI/GROUPDQ (and rate) arrays are views of the files; read them
    through :meth:`CalibratedInput.exposure_arrays`, block by block (``calibrate`` holds about
    one group block at a time, not the exposure).  Scaled extensions (PIXELDQ: uint32 with
    BZERO) are converted in memory by astropy, as before.  Close the result when done."""
    from astropy.io import fits
    from stdatamodels.jwst import datamodels as dm

    files = []
    try:
        files.append(fits.open(ramp_file, mode="denywrite"))
        ramp = dm.RampModel(files[-1])
        if ramp.meta.cal_step.jump != "COMPLETE":
            ramp.close()
            raise ValueError(f"{ramp_file} has not been through jump (S_JUMP != COMPLETE)")
        files.append(fits.open(rate_file, mode="denywrite"))
        rate = dm.ImageModel(files[-1])
    except BaseException:
        for h in files:
            h.close()
        raise
    prov = {
        "jwst": str(ramp.meta.calibration_software_version or "unknown"),
        "crds_mode": "external",
        "crds_context": str(getattr(ramp.meta.ref_file.crds, "context_used", None) or "unknown"),
        "references": {},
        "steps": [s for s in DETECTOR1_STEPS
                  if getattr(ramp.meta.cal_step, s, None) == "COMPLETE"] + ["ramp_fit"],
    }
    return CalibratedInput(ramp, rate, prov, files=files)


def _context() -> str:
    try:
        from stpipe import crds_client

        return str(crds_client.get_context_used("jwst"))
    except Exception:  # noqa: BLE001 - provenance only
        return "unknown"
