"""Calibration: jwst's ``calwebb_detector1`` on each exposure (report §4.1.2), whole or in
pieces, and what the store keeps of it.

* :mod:`~nrsdark_dask.calibration.recipe`: the recipe (jwst's steps, parameters and reference
  files, offline or with CRDS), the bias inputs, already-calibrated inputs, the memory model;
* :mod:`~nrsdark_dask.calibration.ingest`: what is kept beside the ramps per exposure
  (summaries, group-1 statistics, bias level, layout, input checks);
* :mod:`~nrsdark_dask.calibration.pieces`: tiled calibration's pieces, jwst's own steps on a
  row slab or a block of groups;
* :mod:`~nrsdark_dask.calibration.hooks`: the whole-exposure quantities handed to jwst and
  stcal inside a piece; :mod:`~nrsdark_dask.calibration.regions`: snowball flagging that
  measures only what can change it;
* :mod:`~nrsdark_dask.calibration.stage`: prepare (checks, references, scratch), store rows,
  finish (staged for the commit); :mod:`~nrsdark_dask.calibration.scratch`: the raw cubes
  between pieces;
* :mod:`~nrsdark_dask.calibration.graph`: one exposure's task graph, and exposures run on any
  scheduler; :mod:`~nrsdark_dask.calibration.budget`: piece sizes from a per-task memory
  budget (measured costs); :mod:`~nrsdark_dask.calibration.versions`: the jwst and stcal
  releases the tiled path is proven on.

Tiled calibration (``calibrate --pieces tiled``, the default) cuts an exposure into pieces that
run as Dask tasks in bounded memory and give the store bit for bit what jwst's whole-exposure
run gives; ``--pieces whole`` keeps jwst's own call.  The driver, ``nrsdark calibrate``, is
:mod:`nrsdark_dask.stages.calibrate`.
"""
