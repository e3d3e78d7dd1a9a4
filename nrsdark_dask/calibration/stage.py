"""The first and last pieces of one exposure's tiled calibration: :func:`prepare` (checks,
references, whole-frame quantities, scratch and staging), :func:`store_rows` (ramp fitting,
ingest summaries and the store chunks of one tile row) and :func:`finish` (the bias inputs,
frame statistics and the chunk manifest: the exposure is then staged whole, ready for the
driver's commit, exactly as ``calibrate --pieces whole`` stages it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..kernels.ramps import sample_scatter
from ..results import peak_rss
from ..store import StoreLayout, create_staging, seal_staging, staged_checksums, staging_path
from . import ingest
from . import recipe as recipe
from . import pieces, versions
from .pieces import Exposure

WORK_SUFFIX = ".work"


def work_path(store_path, name: str) -> Path:
    """The exposure's scratch folder, inside the store's staging area (cleared by the next
    writer of the store if a run dies)."""
    return staging_path(store_path, name + WORK_SUFFIX)


def refusals(step_args: dict, family: str) -> list[str]:
    """Step settings the tiled path cannot run exactly as stock (one line each); empty when
    all can.  The recipe's own settings (``calibration.recipe.STEP_PARAMETERS``) pass."""
    from jwst.jump import JumpStep
    from jwst.refpix import RefPixStep

    jump = JumpStep(**step_args["jump"])
    out = []
    if jump.find_showers:
        out.append("jump find_showers (MIRI shower flagging needs the whole frame's data)")
    if str(jump.maximum_cores) not in ("1", "none"):
        out.append(f"jump maximum_cores={jump.maximum_cores} (stcal's own row slices differ "
                   "from stock; tiled calibration gives the work to Dask instead)")
    if family == "IRS2" and RefPixStep(**step_args["refpix"]).irs2_mean_subtraction:
        out.append("refpix irs2_mean_subtraction")
    return out


def prepare(row: dict, store_path: str, layout: StoreLayout, refs: dict | None,
            quiet: bool = True, driver_versions: dict | None = None) -> Exposure:
    """Everything the pieces of one exposure share, computed once: the input checked
    (:func:`ingest.check_input`), every reference file resolved (the kit's, else CRDS's, asked
    with the exposure's own metadata), the cleared mask, the steps' arguments, the gain
    median of the whole frame, the scratch cubes and the empty staged exposure.
    Idempotent (a retried task reuses what is there).  Memory: one frame of the gain."""
    from jwst.lib import reffile_utils
    from jwst.saturation import SaturationStep
    from stdatamodels.jwst import datamodels as dm

    versions.check_worker(driver_versions or {})
    ingest.check_input(row, layout)
    env = recipe.configure_crds()
    refs = dict(refs or {})
    recipe.check_references(env, refs, layout.family)
    template = pieces._template(row["file"])
    if template.meta.exposure.zero_frame:
        raise ValueError("the exposure has a ZEROFRAME, which the tiled calibration does not "
                         "carry; use calibrate --pieces whole")
    name = row["exposure"]
    work = work_path(store_path, name)
    work.mkdir(parents=True, exist_ok=True)
    shaped = dm.RampModel(data=np.zeros((1, 1, layout.ny_raw, layout.nx), np.float32))
    shaped.update(template)
    refs = recipe.reference_files(shaped, refs, layout.family)
    mask = recipe.cleared_mask(refs["mask"], work)
    args = recipe.step_arguments(refs, layout.family, mask)
    bad = refusals(args, layout.family)
    if bad:
        raise ValueError("tiled calibration cannot honour: " + "; ".join(bad)
                         + " (use calibrate --pieces whole)")
    from jwst.refpix import RefPixStep

    refpix = RefPixStep(**args["refpix"])
    args["refpix_irs2"] = {"ovr_corr_mitigation_ftr": refpix.ovr_corr_mitigation_ftr,
                           "preserve_irs2_refpix": refpix.preserve_irs2_refpix}
    with dm.GainModel(refs["gain"]) as gain:
        shaped.data = np.zeros((1, 1, layout.ny, layout.nx), np.float32)
        if not reffile_utils.ref_matches_sci(shaped, gain):
            gain = reffile_utils.get_subarray_model(shaped, gain)
        gain_median = np.nanmedian(gain.data)  # np.float32, as stcal's after-jump thresholds
    grow = SaturationStep(**args["saturation"]).n_pix_grow_sat
    exp = Exposure(name=name, uncal=row["file"], work=str(work),
                   staging=str(staging_path(store_path, name)), family=layout.family,
                   detector=layout.detector, ngroups=layout.ngroups, ny=layout.ny, nx=layout.nx,
                   ny_raw=layout.ny_raw, ystart=layout.ystart, step_args=args,
                   gain_median=gain_median, sat_halo=2 * grow, quiet=quiet,
                   row=dict(row), provenance=recipe.provenance(env, refs, mask),
                   started=time.time(), versions=dict(driver_versions or {}))
    for cube in exp.cubes():
        cube.create()
    if not (Path(exp.staging) / "zarr.json").exists():
        create_staging(Path(exp.staging), layout)
    return exp


def cds_scatter(samples: list[np.ndarray]) -> float:
    """The exposure's CDS scatter (``kernels.difference_scatter``) from the jump slabs'
    samples: the same pixels (``kernels.cds_sample``), so the same median."""
    return sample_scatter(np.concatenate(samples, axis=1))


def _write_groups(exp: Exposure, layout: StoreLayout, var: str, cube, y0: int, y1: int):
    """A tile row of a (group, y, x) variable into the staged exposure, one group chunk at a
    time (whole chunks: zarr never reads one back)."""
    import zarr

    arr = zarr.open_group(exp.staging, mode="r+")[var]
    gc = layout.groups_per_chunk
    for g0 in range(0, exp.ngroups, gc):
        g1 = min(exp.ngroups, g0 + gc)
        arr[0, g0:g1, y0:y1] = cube.block(g0, g1)


def store_ramp(exp: Exposure, layout: StoreLayout, y0: int, y1: int) -> dict:
    """The calibrated ramp's chunks of one tile row [y0, y1), written as soon as the jump
    slabs that hold those rows are done (snowball flagging changes only GROUPDQ), so this
    I/O fills the time the serial snowball step leaves free.  Returns
    ``{"chunks": {"ramp": {file: [size, crc]}}}``.  Memory: one group chunk of the row."""
    _write_groups(exp, layout, "ramp", exp.cube("ramp").rows(y0, y1), y0, y1)
    return {"chunks": {"ramp": staged_checksums(Path(exp.staging), "ramp", y0 // layout.tile_y)}}


def store_rows(exp: Exposure, layout: StoreLayout, y0: int, y1: int, diff_sigma: float,
               fit_rows: int, neg_jump_sigma: float) -> dict:
    """One tile row [y0, y1) of the store after snowball flagging: ``RampFitStep`` in
    sub-slabs of ``fit_rows`` rows, the ingest summaries, and the chunks of this row of every
    per-pixel variable but the ramp (:func:`store_ramp`) written into the staged exposure,
    each checksummed.  Returns ``{"chunks": {var: {file: [size, crc]}}, "group1": rows}``.
    Memory: one ramp-fit sub-slab (:mod:`~nrsdark_dask.calibration.budget`) or one group chunk of
    the row, plus a few
    plane-sized arrays."""
    import zarr

    rate = np.empty((y1 - y0, exp.nx), np.float32)
    err = np.empty_like(rate)
    for s0 in range(y0, y1, fit_rows):
        s1 = min(y1, s0 + fit_rows)
        rate[s0 - y0:s1 - y0], err[s0 - y0:s1 - y0] = pieces.ramp_fit(exp, s0, s1)
    ramp = exp.cube("ramp").rows(y0, y1)
    gdq = exp.cube("gdq").rows(y0, y1)
    data = {"pixeldq": exp.cube("jump_pdq").read(rows=slice(y0, y1))[0], "rate": rate,
            "rate_err": err,
            **ingest.pixel_summaries(ramp, gdq, diff_sigma, layout.group_times(),
                                     neg_jump_sigma)}
    _write_groups(exp, layout, "groupdq", gdq, y0, y1)
    group = zarr.open_group(exp.staging, mode="r+")
    for var, value in data.items():
        group[var][0, y0:y1] = value
    row_chunk = y0 // layout.tile_y
    chunks = {var: staged_checksums(Path(exp.staging), var, row_chunk)
              for var in ("groupdq", *data)}
    return {"chunks": chunks, "group1": data["group1"], "peak_rss_gb": _peak_rss_gb()}


def finish(exp: Exposure, layout: StoreLayout, bias: np.ndarray | None, rows: list[dict],
           diff_sigma: float, snowballs: dict | None = None) -> dict:
    """Stage the exposure whole: the bias inputs written, the frame statistics, the chunk
    manifest of every variable; returns what ``calibrate`` commits (as
    ``calibrate.calibrate_exposure`` does), with what snowball flagging found and measured
    (:func:`pieces.snowballs`).  Memory: the group-1 frame and the bias inputs."""
    import zarr

    path = Path(exp.staging)
    chunks: dict = {}
    for r in rows:  # store_rows and store_ramp results
        for var, files in r["chunks"].items():
            chunks.setdefault(var, {}).update(files)
    bias_level = float("nan")
    if layout.has_bias:
        zarr.open_group(exp.staging, mode="r+")["bias_groups"][0] = bias
        chunks["bias_groups"] = staged_checksums(path, "bias_groups")
        bias_level = ingest.bias_level(bias, layout)
    g1_mean, g1_std = ingest.group1_statistics(
        np.concatenate([r["group1"] for r in rows if "group1" in r]), layout)
    seal_staging(path, chunks)
    coords = ingest.exposure_coords(exp.row, exp.provenance, diff_sigma, g1_mean, g1_std,
                                    bias_level)
    return {"status": "ok", "name": exp.name, "coords": coords, "provenance": exp.provenance,
            "seconds": round(time.time() - exp.started, 1), "snowballs": snowballs or {},
            "peak_rss_gb": max([_peak_rss_gb()] + [r.get("peak_rss_gb", 0) for r in rows])}


def _peak_rss_gb() -> float:
    """This worker process's peak RSS so far (GB): an upper bound of its pieces' peaks."""
    return round(peak_rss(children=False) / 1e9, 2)

