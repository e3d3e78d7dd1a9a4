"""nrsdark_dask: NIRSpec bias, dark and bad-pixel-mask reference files on Dask, Zarr and xarray.

Module map (one pixel's way from uncal file to FITS):

* :mod:`nrsdark_dask.instrument` - NIRSpec facts (readout patterns, subarrays, IRS2 layout, DQ)
* :mod:`nrsdark_dask.simulate` - simulated uncal darks with ground truth and a reference kit
* :mod:`nrsdark_dask.jwst_recipe` - running jwst ``calwebb_detector1`` offline or with CRDS
* :mod:`nrsdark_dask.cli` - the ``nrsdark`` command
"""

__version__ = "0.1.0"
