"""The pipeline's stages, one module per command, in pipeline order: each may import the
stages before it, never one after (``tests/test_layout.py``).

==================  =============================================================================
:mod:`.fetch`       ``nrsdark fetch``: dark exposures from MAST
:mod:`.select`      ``nrsdark select``: the pre-filter (report §3), manifest and yield table
:mod:`.calibrate`   ``nrsdark calibrate``: jwst detector1 per exposure into the store
:mod:`.selfcheck`   ``nrsdark self-check``: tiled calibration against jwst's own run
:mod:`.cull`        ``nrsdark cull``: per-exposure artifact scores and the cull table
:mod:`.build`       ``nrsdark build``: store to SUPERBIAS, DARK and MASK (one computation)
:mod:`.analyze`     ``nrsdark analyze``: statistics, SNR verdict, QA report
:mod:`.science`     ``nrsdark check-science``: the report's §8 on a science exposure
:mod:`.trends`      ``nrsdark trends``: the trend site from the results database
:mod:`.plan`        ``nrsdark plan``: files to request per epoch
:mod:`.periods`     ``nrsdark periods``: temporal period darks and the master
:mod:`.monitor`     ``nrsdark monitor``: new darks taken in as they arrive
:mod:`.hotmasks`    ``nrsdark masks``: hot-pixel masks per month or per N inputs
==================  =============================================================================
"""
