"""The store's metadata files: checked, named when damaged, backed up and repaired (issue 19).

A store's data are its chunks; what makes them readable is a few JSON files:

==============================  ===============================================================
``zarr.json`` (root)            the layout, provenance and schema (attributes), and the
                                consolidated metadata of every array: the commit
``<array>/zarr.json``           each array's shape, chunking and codecs
``nrsdark_chunks/<n>.json``     exposure n's chunk files with sizes and CRC32C
``nrsdark_meta_backup.json``    a copy of the root ``zarr.json``, rewritten after every commit
==============================  ===============================================================

:func:`problems` parses every one of them (what ``nrsdark verify`` reports first, what a build
and an appending ``calibrate`` refuse on); :func:`damage` turns a failed zarr open into a
one-line :class:`~nrsdark_dask.store.StoreError` naming the file (:func:`quiet_zarr`, around
every zarr open); :meth:`RampStore.repair <nrsdark_dask.store.RampStore.repair>`
(``nrsdark repair``, under the store's write lock) rebuilds what the store itself keeps:

* the root ``zarr.json`` from the backup (exposures committed after the backup was written,
  if any, are lost: the backup is rewritten right after each commit, so only a kill between
  the two loses one);
* an array's ``zarr.json`` from the root's consolidated metadata (which is the committed
  state);
* a chunk manifest from the chunk files as they are now (their checksums then certify today's
  bytes: damage done before the repair can no longer be told, and the repair says so);
* the backup from the root.

The log (``nrsdark_log.jsonl``) is a record, not metadata: a damaged line is skipped.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..paths import atomic_write
from .schema import CHUNKS, StoreError, location

BACKUP = "nrsdark_meta_backup.json"


def read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "is missing"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    return data, None


def root_problem(data: dict | None, why: str | None) -> str | None:
    if why:
        return why
    attrs = data.get("attributes", {})
    if "nrsdark_schema" not in attrs or "layout" not in attrs:
        return "lacks the store's schema and layout"
    if not isinstance(data.get("consolidated_metadata", {}).get("metadata"), dict):
        return "lacks the consolidated metadata (the commit)"
    return None


def problems(root) -> list[str]:
    """Every metadata file of the local store ``root`` that cannot be read, one line each
    (an empty list: all readable).  URLs are not checked here (read-only; zarr names the
    failure)."""
    if not isinstance(root, Path):
        return []
    out = []
    data, why = read_json(root / "zarr.json")
    backup, bwhy = read_json(root / BACKUP)
    why, bwhy = root_problem(data, why), root_problem(backup, bwhy)
    if why:
        out.append(f"{root / 'zarr.json'} {why}")
        data = None if bwhy else backup  # the arrays are still checked against the backup
    if bwhy and bwhy != "is missing":
        out.append(f"{root / BACKUP} {bwhy}")
    arrays = sorted(data["consolidated_metadata"]["metadata"]) if data else sorted(
        p.parent.name for p in root.glob("*/zarr.json"))
    for name in arrays:
        _, why = read_json(root / name / "zarr.json")
        if why:
            out.append(f"{root / name / 'zarr.json'} {why}")
    for f in sorted((root / CHUNKS).glob("*.json"), key=lambda p: p.stem):
        m, why = read_json(f)
        if why is None and not all(isinstance(v, dict) for k, v in m.items() if k != "_exposure"):
            why = "is not a chunk manifest"
        if why:
            out.append(f"{f} {why}")
    return out


def damage(root, exc: BaseException):
    """The :class:`StoreError` to raise instead of ``exc`` (a failed zarr open of the store at
    ``root``) when a metadata file is damaged; None when none is (``exc`` is something else)."""
    found = problems(root)
    if not found:
        return None
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return StoreError(f"the store's metadata is damaged: {found[0]}{more}; `nrsdark verify "
                      f"--store {root}` lists it all, `nrsdark repair --store {root}` rebuilds "
                      "what the store keeps")


def write_backup(root: Path) -> None:
    """Copy the root ``zarr.json`` (just consolidated: the commit) to the backup."""
    atomic_write(root / BACKUP, (root / "zarr.json").read_text())


@contextmanager
def quiet_zarr(root=None):
    """zarr warns about our non-zarr entries (lock, log, staging) and about consolidated
    metadata not being in the v3 spec; both are expected here.  With the store's ``root``,
    a failure that a damaged metadata file explains becomes a one-line StoreError naming
    the file (:func:`damage`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        warnings.filterwarnings("ignore", message=".*Consolidated metadata is currently.*")
        try:
            yield
        except Exception as exc:
            if root is not None and not isinstance(exc, StoreError) \
                    and (named := damage(location(root), exc)) is not None:
                raise named from None
            raise


def committed(path) -> list[str]:
    """The names of the committed exposures (the exposure coordinate of the last commit)."""
    import zarr

    with quiet_zarr(path):
        g = zarr.open_group(str(path), mode="r", use_consolidated=True)
        return [str(s) for s in g["exposure"][:]]
