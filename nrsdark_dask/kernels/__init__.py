"""Pure array kernels: numpy in, numpy out; no dask, no xarray, no IO.

Each function works on one (y, x) tile with every exposure in it, so the graph builders of
:mod:`nrsdark_dask.reduce` can map it over tiles; anything that needs the whole frame (a
threshold, a frame average) is an argument, computed beforehand by its own small reduction.
Each names the report section it implements.
"""

from .clip import clipped_mean_std
from .flags import (bad_reference_pixels, hot_pixels, neighbours, rc_candidates,
                    rtn_candidates_esa, rtn_candidates_st)
from .products import assemble_dark_dq, bias_from_groups, synthesize_dark_cube, unreliable_bias
from .ramps import difference_scatter, good_groups, negative_jump_counts

__all__ = [
    "assemble_dark_dq", "bad_reference_pixels", "bias_from_groups", "clipped_mean_std",
    "difference_scatter",
    "good_groups", "hot_pixels", "negative_jump_counts", "neighbours", "rc_candidates",
    "rtn_candidates_esa", "rtn_candidates_st", "synthesize_dark_cube", "unreliable_bias",
]
