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


def atomic_write(path, data, mode: str = "w") -> Path:
    """Write ``data`` (str, or bytes with ``mode="wb"``) to ``path`` atomically: into a
    hidden temporary file in the same folder, flushed to disk (fsync), then renamed over
    ``path``.  A reader sees the previous version or the new one, never a part; on any error
    (a full disk, a signal) the temporary file is removed, the previous version stays, and an
    ``OSError`` names ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}; "
                          "its previous version is unchanged") from exc
        raise
    return path


def human_bytes(n: float) -> str:
    """A size for a message: MB below 1 GB, GB above (``0.01 GB`` would hide 5.6 MB)."""
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def write_table(table, path) -> Path:
    """An astropy table as ECSV at ``path``, atomically (:func:`atomic_write`)."""
    import io

    text = io.StringIO()
    table.write(text, format="ascii.ecsv")
    return atomic_write(path, text.getvalue())
