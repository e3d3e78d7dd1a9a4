"""Reduction: from the store's calibrated ramps to the products, lazily, tile by tile (report
§4.1.1, §4.1.3-§4.1.4).

* :mod:`~nrsdark_dask.reduction.tables`: every product, every pixel-flag rule and every
  reference-file type, declared once (the rows the rest iterates over);
* :mod:`~nrsdark_dask.reduction.source`: what a build may read, and from where (the store's
  chunks, or what an edited dataset holds);
* :mod:`~nrsdark_dask.reduction.budget`: the ramp pass's blocks from a per-task memory
  budget;
* :mod:`~nrsdark_dask.reduction.delivery`: DRK and UNC from rate images, the SNR and the
  verdict (report §4.2);
* :mod:`~nrsdark_dask.reduction.graph`: the Dask graphs of :mod:`nrsdark_dask.kernels` over
  tiles that make the products, the frame statistics, the DQ planes and the MASK;
* :mod:`~nrsdark_dask.reduction.result`: :class:`~nrsdark_dask.reduction.result.Products`,
  what a build made (lazy arrays and statistics), for :mod:`nrsdark_dask.export`.
"""
