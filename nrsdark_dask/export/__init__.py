"""Export: the products into CRDS-format FITS reference files (:mod:`.fits`: pre-sized
``.part`` files with their headers and DQ_DEF, validation, no-clobber publishing).  It computes
nothing."""
