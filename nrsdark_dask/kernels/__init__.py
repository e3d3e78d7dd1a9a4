"""Pure array kernels: numpy in, numpy out; no dask, no xarray, no IO.

Each function works on one (y, x) tile with every exposure in it, so the graph builders of
:mod:`nrsdark_dask.reduce` can map it over tiles; anything that needs the whole frame (a
threshold, a frame average) is an argument, computed beforehand by its own small reduction.
Each names the report section it implements.  DQ bit values are arguments (stcal's style), so
importing the kernels does not load stdatamodels.
"""

from .clip import clipped_mean_std, clipped_ramp, median_robust_sigma
from .flags import (bad_reference_pixels, bad_reference_pixels_normalized, flagged,
                    high_uncertainty, hot_pixels, hot_pixels_significant, neighbours,
                    rc_candidates, significance_factor,
                    telegraph_candidates_esa, telegraph_candidates_st)
from .frame import mean_clipped_mean_std, median_clipped_mean_std, median_clipped_median
from .products import (bias_combination, bias_from_groups, dq_from_flags, resample_ramp,
                       synthesize_dark_cube, unreliable_bias)
from .ramps import (difference_scatter, first_jump_index, good_groups, jump_counts,
                    negative_jump_counts, rc_next_flags)

__all__ = [
    "bad_reference_pixels", "bad_reference_pixels_normalized", "bias_combination",
    "bias_from_groups", "clipped_mean_std", "clipped_ramp", "difference_scatter", "dq_from_flags",
    "first_jump_index", "flagged", "good_groups", "high_uncertainty", "hot_pixels",
    "hot_pixels_significant", "jump_counts", "mean_clipped_mean_std", "median_clipped_mean_std",
    "median_clipped_median", "median_robust_sigma", "negative_jump_counts", "neighbours",
    "rc_candidates", "rc_next_flags", "resample_ramp", "significance_factor",
    "synthesize_dark_cube", "telegraph_candidates_esa", "telegraph_candidates_st",
    "unreliable_bias",
]
