"""What the store keeps of one calibrated exposure besides jwst's arrays: the per-pixel
summaries made at ingest and the exposure's frame statistics (``store.schema``, ``docs/store.md``).

One implementation for both ways of calibrating (``calibrate --pieces whole``: the exposure in
memory, or memory-mapped for already-calibrated inputs; ``--pieces tiled``: one tile row at a
time).  Everything works plane by plane on array-likes whose ``[g]`` reads one group plane.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import instrument as inst
from ..kernels import (bias_combination, first_jump_index, jump_counts, median_clipped_mean_std,
                       negative_jump_counts, rc_next_flags)
from ..store import StoreError, StoreLayout, date_seconds, file_sha256, truncation

JUMP = inst.DQ["JUMP_DET"]


def pixel_summaries(ramp, gdq, diff_sigma: float, group_times, neg_jump_sigma: float) -> dict:
    """The per-pixel ingest summaries of (rows of) one exposure: negative-jump and jump counts,
    calibrated group 1 with the RC flags of groups 2-3, the first jump.  ``ramp``/``gdq``
    (G, y, x), read plane by plane; ``diff_sigma`` the whole exposure's CDS scatter."""
    return {
        "neg_jumps": negative_jump_counts(ramp, gdq, neg_jump_sigma * diff_sigma, jump_bit=JUMP),
        "jump_counts": jump_counts(gdq, JUMP),
        "group1": np.asarray(ramp[0]),
        "rc_next": rc_next_flags(gdq, inst.RC_NEXT_FLAGS, ramp, group_times, jump_bit=JUMP,
                                 saturated_bit=inst.DQ["SATURATED"]),
        "first_jump": first_jump_index(gdq, JUMP, np.iinfo(np.int16).max),
    }


def group1_statistics(group1: np.ndarray, layout) -> tuple[float, float]:
    """3-sigma clipped mean and standard deviation of calibrated group 1 over the exposure's
    non-reference pixels (clipped about the median, astropy ``sigma_clipped_stats``'s
    semantics: :func:`~nrsdark_dask.kernels.median_clipped_mean_std`): the frame statistics
    behind the RC rule's "10 sigma above the group-1 mean" (report §4.1.3).  Clipping keeps
    the hot pixels from inflating sigma."""
    ref = inst.reference_pixel_mask(layout.geometry())
    mean, std = median_clipped_mean_std(group1, ~ref, 3.0, 5)
    return float(mean), float(std)


def bias_level(bias_groups: np.ndarray, layout) -> float:
    """Median of the superbias combination ``(1 + a) g1 - a g2`` over the science pixels (the
    exposure's bias level; report §4.1.1)."""
    b = bias_groups
    science = np.isfinite(b[0]) & np.isfinite(b[1]) & layout.raw_science_rows()[:, None]
    a = inst.bias_weight(inst.get_read_pattern(layout.readpatt), layout.tframe)
    return float(np.median(bias_combination(b[0], b[1], a)[science]))


def layout_of(row, tile, codec, group_chunk=None) -> StoreLayout:
    """The store layout an input (a manifest row) asks for."""
    return StoreLayout.from_header(fits.getheader(row["file"], 0), has_bias=row["kind"] == "uncal",
                                   tile=tile, codec=codec, group_chunk=group_chunk)


def check_input(row: dict, layout: StoreLayout) -> None:
    """Refuse an input that cannot go into a store of ``layout`` now: gone, truncated, changed
    since ``select`` hashed it, of another layout, or of several integrations."""
    if not Path(row["file"]).exists():
        raise FileNotFoundError(f"input file {row['file']} no longer exists")
    short = truncation(row["file"])
    if short:
        raise ValueError(f"{row['file']}: {short}")
    if file_sha256(row["file"]) != row["sha256"]:
        raise ValueError(f"{row['file']} changed since it was selected (SHA-256 differs "
                         "from the manifest's); run nrsdark select again")
    bad = layout.mismatches(layout_of(row, (layout.tile_y, layout.tile_x), layout.codec))
    if bad:
        raise StoreError("; ".join(bad))
    if row["kind"] == "uncal":
        nints = fits.getheader(row["file"], 0).get("NINTS", 1)
        if nints != 1:
            raise ValueError(f"NINTS = {nints}; only single-integration darks are supported")


def exposure_coords(row: dict, provenance: dict, diff_sigma: float, g1_mean: float,
                    g1_std: float, bias_level: float) -> dict:
    """The per-exposure coordinates committed with an exposure (``store.EXPOSURE_COORDS``)."""
    p = provenance
    return {
        "date": date_seconds(row["date"]), "grating": row["grating"],
        "asic_dt": float(row["asic_dt"]), "g1_mean": g1_mean, "g1_std": g1_std,
        "diff_sigma": diff_sigma, "bias_level": bias_level,
        "detector": row["detector"],
        "readpatt": row["readpatt"], "subarray": row["subarray"],
        "ngroups": int(row["ngroups"]), "input_kind": row["kind"],
        "input_file": row["file"], "input_sha256": row["sha256"],
        "jwst_version": p.get("jwst", ""),
        "crds_context": p.get("crds_context", ""),
        "references": json.dumps(p.get("references", {})),
    }
