"""The jwst and stcal releases tiled calibration is known to be exact on, checked at run time.

Tiled calibration hands whole-exposure quantities to jwst's and stcal's own code at places
inside them (:mod:`.hooks`: IRS2 ``b_offset``, the all-DO_NOT_USE group count, the after-jump
thresholds, the order of snowball flagging's calls).  A release that moves one of those places
could give a store that differs from jwst's own run without any error.  So ``--pieces tiled``
runs only on the releases in :data:`TESTED`, the ones the equality tests
(``tests/test_tiled.py``: every store bit for bit equal to stock ``run_detector1``) passed on;
on any other it falls back to ``--pieces whole`` (jwst's own run) and says so, or, when the
user asked for ``tiled`` by name, refuses in one line.

``nrsdark self-check`` runs the small equality case on the installed releases.  When it passes,
a user can run tiled on them with ``NRSDARK_TILED_UNTESTED=1`` (at their own judgement), and
the releases can be added here with that evidence.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# package: (lowest, below): the release series the equality tests passed on
TESTED = {"jwst": ("3.0.0", "3.1"), "stcal": ("1.20.0", "1.21")}
OVERRIDE = "NRSDARK_TILED_UNTESTED"


def _key(v: str) -> tuple:
    from packaging.version import Version

    return Version(v).release


def installed() -> dict[str, str]:
    out = {}
    for pkg in TESTED:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def untested() -> list[str]:
    """The installed releases outside :data:`TESTED` (``"stcal 1.21.0"``); empty when all are
    tested."""
    out = []
    for pkg, have in installed().items():
        lo, below = TESTED[pkg]
        try:
            ok = _key(lo) <= _key(have) < _key(below)
        except Exception:  # noqa: BLE001 - "not installed" or an unparsable version
            ok = False
        if not ok:
            out.append(f"{pkg} {have}")
    return out


def tested_text() -> str:
    return ", ".join(f"{p} >={lo},<{below}" for p, (lo, below) in TESTED.items())


def tiled_refusal() -> str | None:
    """Why tiled calibration should not run on the installed releases (one line), or None.
    ``NRSDARK_TILED_UNTESTED=1`` (after ``nrsdark self-check`` passed) lifts it."""
    bad = untested()
    if not bad or os.environ.get(OVERRIDE, "").strip().lower() in ("1", "true", "yes"):
        return None
    return (f"tiled calibration is tested on {tested_text()}; installed: {', '.join(bad)} "
            f"(run `nrsdark self-check`; if it passes, {OVERRIDE}=1 allows tiled)")


def check_worker(expected: dict) -> None:
    """Refuse to run a piece in a process whose jwst or stcal is not the driver's
    (``expected``, :func:`installed` where ``calibrate`` checked it): a worker of a remote
    cluster may have other releases than the machine that decided to run tiled."""
    have = installed()
    if expected and have != expected:
        diff = ", ".join(f"{p} {have[p]} (the driver has {expected.get(p)})" for p in have
                         if have[p] != expected.get(p))
        raise ValueError(f"this worker has {diff}: tiled calibration needs the same jwst and "
                         "stcal on every worker")
