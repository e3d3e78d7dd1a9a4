"""Pure array kernels: numpy in, numpy out; no dask, no xarray, no IO.

Each function works on one (y, x) tile with every exposure in it, so the graph builders of
:mod:`nrsdark_dask.reduction.graph` can map it over tiles; anything that needs the whole frame (a
threshold, a frame average) is an argument, computed beforehand by its own small reduction.
Each names the report section it implements.  DQ bit values are arguments (stcal's style), so
importing the kernels does not load stdatamodels.
"""

import inspect

from . import clip, flags, frame, products, ramps

MODULES = (clip, flags, frame, products, ramps)


def _public(module) -> list[str]:
    """The kernels a module defines: its public functions (numba's included)."""
    return sorted(n for n, v in vars(module).items()
                  if not n.startswith("_") and callable(v) and not inspect.isclass(v)
                  and getattr(v, "__module__", None) == module.__name__)


# every kernel of these modules is ``kernels.<name>``: a new kernel needs no edit here
for _m in MODULES:
    globals().update({_n: getattr(_m, _n) for _n in _public(_m)})
__all__ = sorted(n for m in MODULES for n in _public(m))
