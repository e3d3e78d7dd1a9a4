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
one-line :class:`~nrsdark_dask.store.StoreError` naming the file; :func:`repair`
(``nrsdark repair``) rebuilds what the store itself keeps:

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
from pathlib import Path

from ..paths import atomic_write
from .chunksums import CHUNKS

BACKUP = "nrsdark_meta_backup.json"


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None, "is missing"
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, "is not a JSON object"
    return data, None


def _root_problem(data: dict | None, why: str | None) -> str | None:
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
    data, why = _read_json(root / "zarr.json")
    backup, bwhy = _read_json(root / BACKUP)
    why, bwhy = _root_problem(data, why), _root_problem(backup, bwhy)
    if why:
        out.append(f"{root / 'zarr.json'} {why}")
        data = None if bwhy else backup  # the arrays are still checked against the backup
    if bwhy and bwhy != "is missing":
        out.append(f"{root / BACKUP} {bwhy}")
    arrays = sorted(data["consolidated_metadata"]["metadata"]) if data else sorted(
        p.parent.name for p in root.glob("*/zarr.json"))
    for name in arrays:
        _, why = _read_json(root / name / "zarr.json")
        if why:
            out.append(f"{root / name / 'zarr.json'} {why}")
    for f in sorted((root / CHUNKS).glob("*.json"), key=lambda p: p.stem):
        m, why = _read_json(f)
        if why is None and not all(isinstance(v, dict) for k, v in m.items() if k != "_exposure"):
            why = "is not a chunk manifest"
        if why:
            out.append(f"{f} {why}")
    return out


def damage(root, exc: BaseException):
    """The :class:`StoreError` to raise instead of ``exc`` (a failed zarr open of the store at
    ``root``) when a metadata file is damaged; None when none is (``exc`` is something else)."""
    from .schema import StoreError

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


def repair(store) -> tuple[list[str], list[str]]:
    """Rebuild the damaged metadata of ``store`` (a :class:`~nrsdark_dask.store.RampStore`,
    local) under its lock; returns ``(repaired, lost)``, one line each.  What cannot be
    rebuilt is left as it is and named in ``lost``."""
    from .schema import StoreLayout
    from .writer import chunk_checksums

    root = store.local_path("repairing a store")
    fixed, lost = [], []
    with store.writer(trim=False):
        data, why = _read_json(root / "zarr.json")
        backup, bwhy = _read_json(root / BACKUP)
        if _root_problem(data, why):
            if _root_problem(backup, bwhy):
                lost.append(f"{root / 'zarr.json'} and its backup are both damaged: the "
                            "layout, provenance and commit are lost (calibrate into a new "
                            "store)")
                return fixed, lost
            atomic_write(root / "zarr.json", json.dumps(backup, indent=2))
            data = backup
            n_backup = data["consolidated_metadata"]["metadata"]["exposure"]["shape"][0]
            later = [f for f in (root / CHUNKS).glob("*.json")
                     if f.stem.isdigit() and int(f.stem) >= n_backup]
            fixed.append(f"{root / 'zarr.json'} restored from {BACKUP} ({n_backup} exposures)")
            if later:
                lost.append(f"{len(later)} exposure(s) committed after the backup: their "
                            "chunks are dropped; calibrate them again")
        meta = data["consolidated_metadata"]["metadata"]
        for name, entry in sorted(meta.items()):
            _, why = _read_json(root / name / "zarr.json")
            if why:
                (root / name).mkdir(exist_ok=True)
                atomic_write(root / name / "zarr.json", json.dumps(entry, indent=2))
                fixed.append(f"{root / name / 'zarr.json'} rewritten from the root's "
                             "consolidated metadata")
        names = store.committed()
        variables = StoreLayout(**data["attributes"]["layout"]).variables()
        for i, name in enumerate(names):
            path = root / CHUNKS / f"{i}.json"
            _, why = _read_json(path)
            if why in (None, "is missing"):  # missing: committed before manifests, no rebuild
                continue
            listed = {"_exposure": name}
            listed.update({var: chunk_checksums(root, var, i) for var in variables})
            atomic_write(path, json.dumps(listed))
            fixed.append(f"{path} rebuilt from the chunk files as they are now")
            lost.append(f"{name}: damage to its chunks before this repair can no longer be "
                        "told (its checksums were recomputed)")
        if backup != data:  # damaged, stale or missing (a store made before backups: silently)
            write_backup(root)
            if bwhy != "is missing":
                fixed.append(f"{root / BACKUP} rewritten")
        store._repair()  # trim what the commit does not hold
    return fixed, lost
