"""Reduction: from the store's calibrated ramps to the products, lazily, tile by tile (report
§4.1.1, §4.1.3-§4.1.4).

* :mod:`~nrsdark_dask.reduction.tables`: every product, every pixel-flag rule and every reference-file type, declared
  once (the rows the rest iterates over);
* :mod:`~nrsdark_dask.reduction.graph`: the Dask graphs of :mod:`nrsdark_dask.kernels` over tiles that make them, the
  frame statistics, the block plan from the memory budget, the delivery SNR.
"""
