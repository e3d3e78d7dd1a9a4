"""The pieces of one exposure's jwst detector1: each runs jwst's own steps on a row slab or a
block of groups, reading and writing scratch cubes (:mod:`.scratch`).  No dask here: the graph
that orders them is :mod:`nrsdark_dask.calibration.graph`.

The recipe is :mod:`nrsdark_dask.calibration.recipe`'s (same steps, parameters and reference
files);
what is cut where, and why each cut gives stock's bits:

=====================  ===================  ======================================================
piece                  holds                runs (jwst/stcal, unchanged)
=====================  ===================  ======================================================
``early_slab`` TRAD    rows + 2n halo,      group_scale, dq_init, saturation, superbias: pixel-
                       all groups           local; saturation grows flags n_pix_grow_sat pixels
                                            and its backward pass grows once more: 2n rows of
                                            halo make the kept rows exact
``early_block`` IRS2   groups, whole        the same steps; jwst's IRS2 saturation needs the
                       3200-row frame       whole raw frame.  Saturation carries forward: a
                                            block's last-group SATURATED plane is ORed into
                                            every later block (``refpix_block``); its group-2
                                            check (on groups 1-3) runs in the first block only,
                                            which always holds 3 groups or more
``refpix_block``       groups, whole frame  refpix: TRAD per group (per-amplifier statistics of
                                            one frame); IRS2 with the whole-ramp bad-reference
                                            flags (``refpix_flags``) and ``b_offset``
                                            (``refpix_offset``) handed in (:mod:`.hooks`)
``jump_slab``          rows + 1 halo,       linearity (pixel-local), jump's two-point detection
                       all groups           (pixel-local; its neighbour flags reach one row) with
                                            the whole frame's all-DO_NOT_USE group count and gain
                                            median (:mod:`.hooks`); snowballs are left out here
``snowballs``          all GROUPDQ (uint8)  stcal ``flag_large_events``: connected regions over
                                            the whole frame; stcal measures only those that
                                            can become snowballs (:mod:`.regions`)
``store_rows``         one tile row,        ramp_fit (pixel-local, OLS_C) in sub-slabs; the
(:mod:`.stage`)        sub-slabs            ingest summaries; writes the row's store chunks
``store_ramp``         one tile row, one    the calibrated ramp's chunks of the row, as soon as
(:mod:`.stage`)        group chunk          its jump slabs are done
``bias_piece``         groups 1-2           the §4.1.1 bias inputs (``calibration.recipe.bias_groups``)
=====================  ===================  ======================================================

A slab is given to jwst as a subarray (SUBSTRT2/SUBSIZE2 of its rows), so jwst cuts every
reference file to it itself.  Every piece returns a small result (flags per group, a sample,
chunk checksums) and writes its arrays to a new cube, never into its own input: a piece that
runs twice gives the same bytes.

Peak memory of each kind of piece is measured in ``benchmarks/bench_tiled.py`` and modelled in
:mod:`~nrsdark_dask.calibration.budget` (bytes per pixel-group held);
:func:`~nrsdark_dask.calibration.budget.plan_pieces` sizes pieces to fit a per-task budget.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import instrument as inst
from ..kernels.ramps import cds_sample
from . import recipe as recipe
from . import hooks, versions
from .scratch import Cube

DNU = int(inst.DQ["DO_NOT_USE"])
SATURATED = int(inst.DQ["SATURATED"])
JUMP = int(inst.DQ["JUMP_DET"])


@dataclass(frozen=True)
class Exposure:
    """What every piece of one exposure needs (small, picklable): where things are, the
    geometry, the steps' arguments and the whole-frame quantities found by :func:`prepare`."""

    name: str
    uncal: str
    work: str  # scratch folder
    staging: str  # the exposure's staging group in the store
    family: str
    detector: str
    ngroups: int
    ny: int  # science rows
    nx: int
    ny_raw: int
    ystart: int  # 1-based, science frame
    step_args: dict
    gain_median: object = None  # np.float32, jump's after-jump thresholds
    sat_halo: int = 2
    quiet: bool = True
    row: dict = field(default_factory=dict)  # the manifest row (coordinates at commit)
    provenance: dict = field(default_factory=dict)
    started: float = 0.0  # when prepare ran (the exposure's wall time at finish)
    versions: dict = field(default_factory=dict)  # the driver's jwst and stcal

    def cube(self, name: str) -> Cube:
        shapes = {
            "early": (self.ngroups, self.ny_raw, self.nx, "float32"),
            "early_gdq": (self.ngroups, self.ny_raw, self.nx, "uint8"),
            "early_pdq": (1, self.ny_raw, self.nx, "uint32"),
            "refpix": (self.ngroups, self.ny, self.nx, "float32"),
            "refpix_gdq": (self.ngroups, self.ny, self.nx, "uint8"),
            "refpix_pdq": (1, self.ny, self.nx, "uint32"),
            "ramp": (self.ngroups, self.ny, self.nx, "float32"),
            "jump_gdq": (self.ngroups, self.ny, self.nx, "uint8"),
            "jump_pdq": (1, self.ny, self.nx, "uint32"),
            "gdq": (self.ngroups, self.ny, self.nx, "uint8"),
        }
        *shape, dtype = shapes[name]
        return Cube(str(Path(self.work) / f"{name}.{dtype}"), tuple(shape), dtype)

    def cubes(self) -> list[Cube]:
        names = ["early", "early_gdq", "early_pdq", "refpix", "ramp", "jump_gdq", "jump_pdq",
                 "gdq"]
        if self.family == "IRS2":
            names += ["refpix_gdq", "refpix_pdq"]
        return [self.cube(n) for n in names]

    def gdq_before_jump(self) -> tuple[Cube, Cube]:
        """GROUPDQ and PIXELDQ entering linearity and jump (IRS2 refpix strips them)."""
        if self.family == "IRS2":
            return self.cube("refpix_gdq"), self.cube("refpix_pdq")
        return self.cube("early_gdq"), self.cube("early_pdq")


_warm = False


def warm_up() -> None:
    """Once per process (a piece may be the first thing a fresh worker runs): set up CRDS
    for jwst (:func:`calibration.recipe.configure_crds`: offline unless the user's
    ``CRDS_SERVER_URL`` says otherwise), import jwst's steps, put the hooks in place, and move
    everything alive now (modules, schemas: hundreds of thousands of objects) out of the
    garbage collector's sight (``gc.freeze``).  stpipe runs a full ``gc.collect()`` at every
    step, and a piece runs several steps on a small piece of data: walking those objects each
    time was up to 40 % of a small piece's time (measured: an early slab 3.0 -> 1.8 s).  The
    objects frozen are never collected: on a worker shared with other work, garbage that was
    alive at that moment stays (modules and schemas are most of it)."""
    global _warm
    if _warm:
        return
    import gc

    recipe.configure_crds()

    import jwst.dq_init  # noqa: F401
    import jwst.group_scale  # noqa: F401
    import jwst.jump  # noqa: F401
    import jwst.linearity  # noqa: F401
    import jwst.ramp_fitting  # noqa: F401
    import jwst.refpix  # noqa: F401
    import jwst.saturation  # noqa: F401
    import jwst.superbias  # noqa: F401

    hooks.install()
    gc.collect()
    gc.freeze()
    _warm = True


_checked: set = set()


def _quiet(exp: Exposure) -> dict:
    warm_up()
    key = tuple(sorted(exp.versions.items()))
    if key not in _checked:  # once per process: this worker runs the driver's jwst and stcal
        versions.check_worker(exp.versions)
        _checked.add(key)
    if exp.quiet:
        for name in recipe.JWST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return {"configure_log": not exp.quiet}


@functools.lru_cache(maxsize=4)
def _template(uncal: str):
    """The exposure's metadata as a data-less RampModel (read from the primary header only:
    opening the uncal as a RampModel would read every group)."""
    from astropy.io import fits
    from stdatamodels.jwst import datamodels as dm

    with fits.open(uncal, memmap=False) as h:
        small = fits.HDUList([fits.PrimaryHDU(header=h[0].header.copy())])
        bunit = h["SCI"].header.get("BUNIT")
    model = dm.RampModel(small)
    if bunit:
        model.meta.bunit_data = bunit
    return model


def _model(exp: Exposure, data, groupdq=None, pixeldq=None, row0: int = 0,
           ngroups: int | None = None):
    """A RampModel of one piece: ``data`` (G, rows, nx) float32 with the exposure's metadata;
    a row slab starting at science row ``row0`` is described as a subarray of those rows, so
    jwst cuts the reference files to it."""
    from stdatamodels.jwst import datamodels as dm

    arrays = {"data": data[None]}
    if groupdq is not None:
        arrays["groupdq"] = groupdq[None]
    if pixeldq is not None:
        arrays["pixeldq"] = pixeldq
    model = dm.RampModel(**arrays)
    model.update(_template(exp.uncal))
    rows = data.shape[1]
    if rows != exp.ny_raw:  # a slab (never IRS2: its pieces hold whole frames)
        model.meta.subarray.ystart = exp.ystart + row0
        model.meta.subarray.ysize = rows
    if ngroups is not None:
        model.meta.exposure.ngroups = ngroups
    return model


def read_raw(uncal: str, groups: slice = slice(None), rows: slice = slice(None)) -> np.ndarray:
    """Raw counts of integration 1 (G, rows, nx) as float32, read through astropy's section
    (only those bytes; the uint16 scaling applied), as jwst's RampModel would give them."""
    from astropy.io import fits

    with fits.open(uncal, memmap=False) as h:
        raw = h["SCI"].section[0, groups, rows, :]
    return np.asarray(raw, dtype=np.float32)


EARLY_STEPS = ("group_scale", "dq_init", "saturation", "superbias")


def early_slab(exp: Exposure, y0: int, y1: int) -> np.ndarray:
    """TRAD rows [y0, y1): group_scale .. superbias on the rows plus ``exp.sat_halo`` rows on
    each side; writes the kept rows to the ``early`` cubes.  Returns, per group, whether every
    kept pixel is DO_NOT_USE (the whole frame's count is the AND over slabs).
    Peak (measured, :data:`.plan.COSTS`): 0.24 GB + 8.7 bytes per pixel-group held
    (TRAD FULL 88 groups, 260 rows: 0.66 GB)."""
    log = _quiet(exp)
    a, b = max(0, y0 - exp.sat_halo), min(exp.ny, y1 + exp.sat_halo)
    model = _model(exp, read_raw(exp.uncal, rows=slice(a, b)), row0=a)
    for name, cls in recipe.step_classes(EARLY_STEPS):
        model = recipe.call_step(cls, model, **exp.step_args[name], **log)
    keep = slice(y0 - a, y1 - a)
    exp.cube("early").write(model.data[0, :, keep], row0=y0)
    gdq = model.groupdq[0, :, keep]
    exp.cube("early_gdq").write(gdq, row0=y0)
    exp.cube("early_pdq").write(model.pixeldq[None, keep], row0=y0)
    all_dnu = ((gdq & DNU) != 0).all(axis=(1, 2))
    model.close()
    return all_dnu


def early_block(exp: Exposure, g0: int, g1: int) -> np.ndarray:
    """IRS2 groups [g0, g1) of the whole 3200-row raw frame: group_scale .. superbias, written
    to the ``early`` cubes.  Saturation's group-2 check (``use_readpatt``) looks at groups 1-3,
    so it runs in the first block only (which holds them).  Returns the block's last group's
    SATURATED plane (uint8, raw layout): what saturation carries into later groups.
    Peak (measured): 0.48 GB + 7.2 bytes per raw pixel-group (8 IRS2 groups: 0.86 GB)."""
    log = _quiet(exp)
    model = _model(exp, read_raw(exp.uncal, groups=slice(g0, g1)), ngroups=g1 - g0)
    for name, cls in recipe.step_classes(EARLY_STEPS):
        args = dict(exp.step_args[name])
        if name == "saturation" and g0 > 0:
            args["use_readpatt"] = False
        model = recipe.call_step(cls, model, **args, **log)
    exp.cube("early").write(model.data[0], plane0=g0)
    exp.cube("early_gdq").write(model.groupdq[0], plane0=g0)
    if g0 == 0:  # the same for every block (reference-file DQ only)
        exp.cube("early_pdq").write(model.pixeldq[None])
    carry = (model.groupdq[0, -1] & SATURATED).astype(np.uint8)
    model.close()
    return carry


class CubeArray:
    """A cube as a read-only (1, planes, rows, columns) array-like, for jwst functions that
    index a whole-ramp model's data but read only a few rows of it (IRS2 ``flag_bad_refpix``
    reads the interleaved reference rows of every group): each index reads just those bytes."""

    def __init__(self, cube: Cube):
        self.cube = cube
        self.shape = (1,) + tuple(cube.shape)
        self.ndim = 4
        self.dtype = np.dtype(cube.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (4 - len(key))
        integ, planes, rows, cols = key
        if integ != 0:
            raise IndexError("one integration")
        planes = planes if isinstance(planes, slice) else slice(planes, planes + 1)
        squeeze_rows = not isinstance(rows, slice)
        rows = rows if not squeeze_rows else slice(rows, rows + 1)
        p0, p1, _ = planes.indices(self.shape[1])
        r0, r1, _ = rows.indices(self.shape[2])
        # read into a buffer one row taller than asked and hand out a view: planes are then
        # not contiguous with each other, as in the whole-ramp array jwst indexes in stock,
        # so numpy's reductions over it group their additions as in stock (bit-identical)
        buf = np.empty((p1 - p0, r1 - r0 + 1, self.shape[3]), self.dtype)
        out = self.cube.read(planes, rows, out=buf[:, : r1 - r0])
        if squeeze_rows:
            out = out[:, 0]
        out = out[..., cols]
        return out if isinstance(key[1], slice) else out[0]


def _irs2_model():
    from stdatamodels.jwst import datamodels as dm

    return dm.IRS2Model


@functools.lru_cache(maxsize=2)
def _irs2_reference(path: str):
    return _irs2_model()(path)


def refpix_flags(exp: Exposure) -> np.ndarray:
    """IRS2: jwst's whole-ramp bad-reference-pixel flagging (``flag_bad_refpix``, flag only,
    as ``RefPixStep`` runs it first) over every group of the ``early`` cube, reading only the
    interleaved reference rows.  Returns PIXELDQ (raw layout) with BAD_REF_PIXEL and
    DO_NOT_USE added.  Peak: PIXELDQ plus two reference rows of every group (measured
    0.37 GB for 25 groups)."""
    from jwst.refpix import irs2_subtract_reference as irs2

    _quiet(exp)
    pdq = exp.cube("early_pdq").read()[0]
    stand_in = SimpleNamespace(data=CubeArray(exp.cube("early")), pixeldq=pdq,
                               meta=_template(exp.uncal).meta)
    irs2.flag_bad_refpix(stand_in, n_sigma=exp.step_args["refpix_irs2"]["ovr_corr_mitigation_ftr"],
                         flag_only=True)
    return stand_in.pixeldq


def _irs2_block_model(exp: Exposure, g0: int, g1: int, pixeldq, carry=None):
    from jwst.refpix import irs2_subtract_reference as irs2

    data = exp.cube("early").read(slice(g0, g1))
    gdq = exp.cube("early_gdq").read(slice(g0, g1))
    if carry is not None:
        gdq |= carry
    model = _model(exp, data, gdq, pixeldq.copy(), ngroups=g1 - g0)
    irs2.flag_bad_refpix(model, replace_only=True)  # RefPixStep's second call, per group
    return model


def refpix_offset(exp: Exposure, g0: int, g1: int, pixeldq, ramp_sum=None) -> np.ndarray:
    """IRS2: one link of the whole-ramp ``b_offset`` sum.  jwst's ``correct_model`` runs on
    groups [g0, g1) up to where ``subtract_reference`` starts, and that block's data (bad
    reference pixels replaced and clobbered by jwst) is added group after group to the sum so
    far (:func:`hooks.irs2_capture`); returns the new sum (float64 (2048, 3200), detector
    orientation).  Links run in group order, so the additions are stock's.
    Peak (measured): 0.49 GB + 7.6 bytes per raw pixel-group of the block."""
    from jwst.refpix import irs2_subtract_reference as irs2

    _quiet(exp)
    model = _irs2_block_model(exp, g0, g1, pixeldq)
    acc = np.zeros((inst.FULL_SIZE, exp.ny_raw), np.float64) if ramp_sum is None \
        else ramp_sum.copy()
    with hooks.irs2_capture(acc):
        irs2.correct_model(model, _irs2_reference(exp.step_args["refpix"]["override_refpix"]))
    model.close()
    return acc


def refpix_block(exp: Exposure, g0: int, g1: int, pixeldq=None, ramp_sum=None,
                 carries=()) -> np.ndarray | None:
    """Refpix on groups [g0, g1) of the whole frame, written to the ``refpix`` cube.

    TRAD: ``RefPixStep`` as is (each group's correction uses that frame only).  IRS2: the steps
    of ``RefPixStep``'s IRS2 branch with the whole-ramp results handed in: ``pixeldq`` from
    :func:`refpix_flags`, the saturation carried from earlier blocks (``carries``: their
    :func:`early_block` planes), then jwst's replacement of bad reference pixels and
    ``correct_model`` with the whole-ramp ``b_offset`` (``ramp_sum`` from
    :func:`refpix_offset`); the stripped GROUPDQ/PIXELDQ go to the ``refpix_gdq``/``_pdq``
    cubes, and the result is, per group, whether every pixel is DO_NOT_USE.
    Peak (measured): TRAD 0.36 GB + 5.0 bytes per pixel-group of the block and its warm-up
    group; IRS2 0.65 GB + 19.2 bytes per raw pixel-group (jwst's FFT working arrays: 8 groups
    1.66 GB)."""
    log = _quiet(exp)
    if exp.family == "TRAD":
        from jwst.refpix import RefPixStep

        # jwst's TRAD correction keeps its working frame from one group to the next, and
        # the frame's memory layout after a group (a transposed view) changes how numpy sums
        # the next group's reference pixels: a block that starts cold differs from stock by
        # one float32 ulp in its first group.  So a block runs the group before it first and
        # drops that group's result: each kept group then starts warm, as in stock.
        warm = 1 if g0 > 0 else 0
        data = exp.cube("early").read(slice(g0 - warm, g1))
        pdq = exp.cube("early_pdq").read()[0]
        model = recipe.call_step(RefPixStep, _model(exp, data, pixeldq=pdq),
                                 **exp.step_args["refpix"], **log)
        exp.cube("refpix").write(model.data[0, warm:], plane0=g0)
        model.close()
        return None
    from jwst.refpix import irs2_subtract_reference as irs2

    carry = None
    for c in carries:
        carry = c.copy() if carry is None else carry | c
    model = _irs2_block_model(exp, g0, g1, pixeldq, carry)
    with hooks.irs2_offset(ramp_sum, exp.ngroups):
        model = irs2.correct_model(
            model, _irs2_reference(exp.step_args["refpix"]["override_refpix"]),
            preserve_refpix=exp.step_args["refpix_irs2"]["preserve_irs2_refpix"])
    exp.cube("refpix").write(model.data[0], plane0=g0)
    gdq = model.groupdq[0]
    exp.cube("refpix_gdq").write(gdq, plane0=g0)
    if g0 == 0:
        exp.cube("refpix_pdq").write(model.pixeldq[None])
    all_dnu = ((gdq & DNU) != 0).all(axis=(1, 2))
    model.close()
    return all_dnu


def jump_slab(exp: Exposure, y0: int, y1: int, all_dnu) -> np.ndarray:
    """Rows [y0, y1) plus one halo row each side: linearity, then jump's two-point detection
    (stcal ``detect_jumps_data`` with ``JumpStep``'s own settings, snowballs off) with the whole
    frame's all-DO_NOT_USE groups (``all_dnu``) and gain median.  Writes the kept rows of the
    calibrated ramp and its DQ to the ``ramp``, ``jump_gdq`` and ``jump_pdq`` cubes; returns
    the rows' CDS sample (``kernels.cds_sample``: the pixels ``kernels.difference_scatter``
    takes of a whole frame).
    Peak (measured): 0.21 GB + 21-24 bytes per pixel-group of the slab and halo (float64
    first differences; TRAD FULL 88 groups, 256 rows: 1.2 GB)."""
    from jwst.jump import JumpStep
    from stcal.jump.jump import detect_jumps_data

    log = _quiet(exp)
    a, b = max(0, y0 - 1), min(exp.ny, y1 + 1)
    gdq_cube, pdq_cube = exp.gdq_before_jump()
    model = _model(exp, exp.cube("refpix").read(rows=slice(a, b)),
                   gdq_cube.read(rows=slice(a, b)), pdq_cube.read(rows=slice(a, b))[0], row0=a)
    (_, lin), = recipe.step_classes(("linearity",))
    model = recipe.call_step(lin, model, **exp.step_args["linearity"], **log)
    step = JumpStep(**{**exp.step_args["jump"], "expand_large_events": False})
    jump_data = hooks.whole_frame_jump_data(step._setup_jump_data(model), exp.gain_median)
    with hooks.dnu_groups(all_dnu, DNU):
        gdq, pdq, _, _ = detect_jumps_data(jump_data)
    keep = slice(y0 - a, y1 - a)
    exp.cube("ramp").write(model.data[0, :, keep], row0=y0)
    exp.cube("jump_gdq").write(gdq[0, :, keep], row0=y0)
    exp.cube("jump_pdq").write(pdq[None, keep], row0=y0)
    sample = cds_sample(model.data[0, :, keep], row0=y0)
    model.close()
    return sample


def _jump_settings(exp: Exposure):
    """stcal's JumpData as ``JumpStep`` sets it up for this exposure (its settings only: made
    on a one-row slab)."""
    from jwst.jump import JumpStep

    step = JumpStep(**exp.step_args["jump"])
    one = _model(exp, exp.cube("ramp").read(rows=slice(0, 1)),
                 exp.cube("jump_gdq").read(rows=slice(0, 1)),
                 exp.cube("jump_pdq").read(rows=slice(0, 1))[0])
    jump_data = step._setup_jump_data(one)
    one.close()
    jump_data.data = jump_data.gdq = jump_data.pdq = None
    return step, jump_data


def snowballs(exp: Exposure) -> dict:
    """jwst's snowball flagging (stcal ``flag_large_events`` with ``JumpStep``'s settings) on
    the whole GROUPDQ after two-point detection, stcal measuring only the jump regions that
    can change the result (:func:`hooks.snowball_filter`); writes the ``gdq`` cube.  Returns
    ``{"snowballs", "regions", "measured"}``: the snowballs, the regions of the planes stcal
    asked about and those it measured.
    Peak (measured): 0.31 GB + 1.2 bytes per pixel-group of the exposure (all of GROUPDQ:
    TRAD FULL 88 groups 0.73 GB; IRS2 200 groups ~1.3 GB, what sets the smallest budget)."""
    from stcal.jump.jump import flag_large_events

    _quiet(exp)
    gdq = exp.cube("jump_gdq").read()
    step, jump_data = _jump_settings(exp)
    if not step.expand_large_events:
        exp.cube("gdq").write(gdq)
        return {"snowballs": 0}
    if jump_data.sat_required_snowball:
        cube = gdq[None]
        with hooks.snowball_filter(jump_data, cube) as seen:
            out, total = flag_large_events(cube, jump_data.fl_jump, jump_data.fl_sat,
                                           jump_data)
        counts = {"regions": seen.count.regions, "measured": seen.count.kept}
    else:  # every jump ellipse is a snowball: nothing to leave out
        out, total = flag_large_events(gdq[None], jump_data.fl_jump, jump_data.fl_sat,
                                       jump_data)
        counts = {}
    exp.cube("gdq").write(out[0])
    return {"snowballs": int(total), **counts}


def ramp_fit(exp: Exposure, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
    """``RampFitStep`` on rows [y0, y1) of the ``ramp``/``gdq`` cubes: (rate, err) rows.
    Peak (measured): 0.21 GB + 7.3 bytes per pixel-group (ramp_fit's copy of ramp and
    GROUPDQ and its working arrays)."""
    from jwst.ramp_fitting import RampFitStep

    log = _quiet(exp)
    model = _model(exp, exp.cube("ramp").read(rows=slice(y0, y1)),
                   exp.cube("gdq").read(rows=slice(y0, y1)),
                   exp.cube("jump_pdq").read(rows=slice(y0, y1))[0], row0=y0)
    rate, rateints = recipe.call_step(RampFitStep, model, **exp.step_args["ramp_fit"], **log)
    out = (np.array(rate.data, np.float32), np.array(rate.err, np.float32))
    for m in (rate, rateints, model):
        if m is not None:
            m.close()
    return out


def bias_piece(exp: Exposure) -> np.ndarray:
    """The report's §4.1.1 bias inputs (``calibration.recipe.bias_groups``) from raw groups 1-2 after
    group_scale and dq_init, as the whole-exposure recipe computes them.
    Peak (measured): TRAD FULL 0.55 GB, IRS2 0.99 GB (its refpix reference table)."""
    log = _quiet(exp)
    model = _model(exp, read_raw(exp.uncal, groups=slice(0, 2)), ngroups=2)
    for name, cls in recipe.step_classes(("group_scale", "dq_init")):
        model = recipe.call_step(cls, model, **exp.step_args[name], **log)
    out = recipe.bias_groups(model, {**exp.step_args["refpix"], **log}, exp.family)
    model.close()
    return out
