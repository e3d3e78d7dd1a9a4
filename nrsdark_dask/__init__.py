"""nrsdark_dask: NIRSpec bias, dark and bad-pixel-mask reference files on Dask, Zarr and xarray.

One pixel's way from uncal file to FITS (the docs' Layout page, docs/layout.md, lists every module):

* :mod:`nrsdark_dask.stages.select` - the pre-filter: a manifest of accepted inputs
* :mod:`nrsdark_dask.stages.calibrate` - jwst detector1 per exposure
  (:mod:`nrsdark_dask.calibration`: in
  pieces as Dask tasks; :mod:`nrsdark_dask.calibration.recipe`: the recipe, offline or with CRDS;
  :mod:`nrsdark_dask.calibration.ingest`: the per-exposure summaries)
* :mod:`nrsdark_dask.store` - the calibrated ramps in a Zarr store, opened as xarray
  (:mod:`nrsdark_dask.store.chunksums` checks every chunk read)
* :mod:`nrsdark_dask.reduction.graph` - lazy graphs of :mod:`nrsdark_dask.kernels` over tiles: the
  products and flag rules of :mod:`nrsdark_dask.reduction.tables`
* :mod:`nrsdark_dask.stages.build` - one computation into the CRDS-format FITS files that
  :mod:`nrsdark_dask.export.fits` pre-sizes, validates and publishes
* :mod:`nrsdark_dask.cli.commands` - the subcommands; :mod:`nrsdark_dask.cli.run` - the stages
  of
  ``nrsdark run``; :mod:`nrsdark_dask.cli.main` - the ``nrsdark`` command and its exit statuses
"""

__version__ = "0.1.0"
