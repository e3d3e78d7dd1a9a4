"""Tiled calibration: one exposure's jwst ``calwebb_detector1`` (the report's §4.1.2 recipe of
:mod:`nrsdark_dask.jwst_recipe`) cut into pieces that run as Dask tasks in bounded memory, and
give the store bit for bit what jwst's whole-exposure run gives.

===============  ===============================================================================
:mod:`.pieces`   the pieces: jwst's own steps on a row slab or a block of groups
:mod:`.hooks`    the whole-exposure quantities handed to jwst/stcal inside a piece
:mod:`.stage`    prepare (checks, references, scratch), store rows, finish (staged for commit)
:mod:`.graph`    one exposure's task graph, and exposures run on any scheduler
:mod:`.plan`     piece sizes from a per-task memory budget (measured costs)
:mod:`.scratch`  the raw scratch cubes between stages
===============  ===============================================================================

``calibrate --pieces tiled`` (the default) uses it; ``--pieces whole`` keeps jwst's own call.
"""
