"""The calibrated-ramp store: a Zarr v3 group opened as an xarray Dataset (``docs/store.md``).

Five modules, one job each, each importing only those above it:

* :mod:`.schema`: what the store holds (variables, coordinates, :class:`StoreLayout`,
  chunking, codecs, exposure identity and input-file checks, locations, :class:`StoreError`);
* :mod:`.metadata`: the metadata files: read through :func:`~.metadata.quiet_zarr` (a damaged
  file named in one line), checked, backed up; the committed exposures;
* :mod:`.chunksums`: chunk checksums, computed for a commit's manifest and checked on every
  read;
* :mod:`.writer`: how exposures get in (staging, the commit protocol, the lock, the log,
  :class:`RampStore`, verification against the manifests, ``repair`` under the lock);
* :mod:`.reader`: how they come out (:func:`open_dataset`, the build's block reader
  :func:`read_block`).

The names below are the package's public interface; import them from here.
"""

from .reader import StoreBlock, open_dataset, read_block, store_differences
from .schema import (CODECS, DEFAULT_TILE, DQ_NAMES, EXPOSURE_COORDS, GROUP_CHUNK_BYTES, NO_JUMP,
                     READABLE_SCHEMAS, SCHEMA_VERSION, VARIABLES, StoreError, StoreLayout,
                     check_chunking, child, date_seconds, default_group_chunk, exposure_id,
                     file_sha256, location, truncation)
from .chunksums import chunk_checksums, staged_checksums
from .writer import (LOCK, LOG, STAGING, RampStore, create_staging, disk_full, seal_staging,
                     staging_path, write_staging)

__all__ = [
    "CODECS", "DEFAULT_TILE", "DQ_NAMES", "EXPOSURE_COORDS", "GROUP_CHUNK_BYTES", "LOCK", "LOG",
    "NO_JUMP", "READABLE_SCHEMAS", "SCHEMA_VERSION", "STAGING", "VARIABLES", "RampStore",
    "StoreBlock", "StoreError", "StoreLayout", "check_chunking", "child", "chunk_checksums",
    "create_staging", "date_seconds", "default_group_chunk", "disk_full", "exposure_id",
    "file_sha256", "location", "open_dataset", "read_block", "seal_staging",
    "staged_checksums", "staging_path", "store_differences", "truncation", "write_staging",
]
