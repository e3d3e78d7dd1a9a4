"""Realistic NIRSpec dark simulator with ground truth (see ``dataset.py`` for the layout).

Public API::

    from nrsdark_dask.simulate import SimConfig, simulate_dataset, read_truth
    simulate_dataset("sim/", SimConfig(subarray="SUB2048", ngroups=10, nexp=4))

Modules: ``model`` (parameters with sources, static truth), ``noise`` (read noise in time
order), ``events`` (cosmic rays, snowballs, report-§3 artifacts), ``exposure`` (ramps and the
uncal writer), ``telemetry`` (ASIC temperatures), ``refkit`` (offline reference files).
This package never imports the pipeline's own modules: the truth stays independent.
"""

from .dataset import SimConfig, parse_gratings, plan_exposures, read_truth, simulate_dataset
from .exposure import add_charge

__all__ = ["SimConfig", "add_charge", "parse_gratings", "plan_exposures", "read_truth",
           "simulate_dataset"]
