"""Names are data, never paths (issue 19).

An exposure's name comes from a manifest (a file anyone can edit) or from a store, and becomes
one path component of what the commands write: ``_staging/<name>``, the cull pictures
``<name>.png``.  :func:`check_name` refuses, in one line, any name that is not a plain file
name; :func:`inside` checks that a path a command writes or deletes lies inside the folder it
owns (the store, the outdir), whatever symlinks or ``..`` it holds.  Odd but legal characters
(spaces, ``;``, ``$()``, quotes, non-ASCII) are fine: no name ever reaches a shell.
"""

from __future__ import annotations

import os
from pathlib import Path


def name_problem(name) -> str | None:
    """Why ``name`` cannot be one path component, or None."""
    if not isinstance(name, str) or not name:
        return "empty"
    if name in (".", ".."):
        return "a relative folder reference"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name):
        return "it holds a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it holds a control character"
    if len(name.encode("utf-8", "surrogateescape")) > 200:
        return "longer than 200 bytes"
    return None


def check_name(name, where: str = "") -> str:
    """``name`` if it is a plain file name; else a ValueError in one line."""
    if why := name_problem(name):
        raise ValueError(f"{where}exposure name {name!r} is not a plain file name ({why}); "
                         "names are data, never paths")
    return name


def inside(path, root) -> Path:
    """``path`` (made absolute, links resolved) if it lies strictly inside ``root``; else a
    ValueError naming both."""
    real, base = Path(path).resolve(), Path(root).resolve()
    if real == base or base not in real.parents:
        raise ValueError(f"refusing to write {path}: it is not inside {root}")
    return Path(path)
