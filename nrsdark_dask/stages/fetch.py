"""``nrsdark fetch``: the calibration programs' dark exposures from MAST (report §3, §9; Tables
1, 2 and 5), into the folder the monitor watches.

* **Query** through astroquery's MAST Search API client for JWST,
  :class:`astroquery.mast.MastMissionsClass` (``mission="jwst"``): file-level datasets
  (``fileSetName``) with ``program`` in ``[fetch] programs``, ``exp_type`` NRS_DARK,
  ``instrume`` NIRSPEC and, where given, ``detector``, ``readpatt`` and ``subarray``; the
  date range is applied to each result's ``date_obs``.  Results come a page at a time
  (``limit``/``offset``, ``page_size`` each) until ``totalResults`` are read.  Their products
  (``get_product_list``) are narrowed to ``*_uncal.fits``.  astroquery sets no time limit on
  its requests, so each call runs under one of ours (``timeout_s``).
* **Download** from the same API's ``retrieve_product`` endpoint, by our own streaming
  client rather than astroquery's ``download_file`` (which has no time limit and reports a
  failure as a log warning): into ``<into>/.partial/<name>.part``, continued with an HTTP
  ``Range`` request when a run was cut, never under its final name until complete.  Then
  the size is checked against the product list's ``size`` and MAST's own checksums, the
  FITS ``CHECKSUM``/``DATASUM`` cards of every HDU, are verified; a file that fails is
  deleted and reported.  Only then is it renamed to ``<into>/<name>``, and recorded in the
  results database (table ``fetched``: name, URI, size, SHA-256, time, service, query).
* **What is new**: a file already recorded as fetched, or already in ``into`` with the
  product's size, is not fetched again (a file deleted after calibration stays fetched).
* **Names are data**: a product name that is not a plain ``*_uncal.fits`` file name is
  refused (one line), never used as a path.
* **The MAST token** comes from ``MAST_API_TOKEN`` only; it is sent to MAST (astroquery's
  login, ``Authorization: token`` on downloads), never written to a file, a log or the
  database, and masked (``***``) in every message.  Without it, exclusive-access files
  (``access`` other than PUBLIC) are skipped with one line; the public ones still come.
  An expired or invalid token is one line before any download.
* **Faults**, one line each (:class:`FetchError`): no answer within ``timeout_s``, a server
  error, a refused token, a short or corrupt file.  A failed download does not stop the
  others; the command ends with exit 2 naming the first failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path

import numpy as np

from .. import results
from ..config import FetchConfig
from ..paths import name_problem
from ..store import file_sha256
from ..telemetry import mask, mast_token, unreachable

DARK_EXP_TYPE = "NRS_DARK"
UNCAL = "_uncal.fits"
PARTIAL = ".partial"  # inside ``into``: downloads under way
DEFAULT_MAST = "https://mast.stsci.edu"
CHUNK = 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*_uncal\.fits")


class FetchError(RuntimeError):
    pass


class NoAccess(FetchError):
    """MAST refused a file (HTTP 401/403): exclusive access."""


def _deadline(fn, seconds: float, what: str, token):
    """``fn()`` under a time limit: astroquery's requests have none.  A call that does not
    return in time is left in a daemon thread (it cannot hold the process) and reported."""
    box = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=call, daemon=True, name=f"mast-{what}")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise FetchError(f"MAST {what}: no answer within {seconds:g} s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, (KeyboardInterrupt, SystemExit, FetchError)):
            raise exc
        if why := unreachable(exc):
            raise FetchError(f"MAST {what}: unreachable: {why}") from None
        raise FetchError(mask(f"MAST {what} failed: {_first_line(exc)}", token)) from None
    return box["value"]


def _first_line(exc) -> str:
    text = " ".join(str(exc).split(". ")[0].split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


class Mast:
    """The MAST JWST search and download service at ``cfg.mast_url`` (``token``: the MAST
    token or None)."""

    def __init__(self, cfg: FetchConfig, token: str | None = None):
        self.cfg, self.token = cfg, token
        self.base = cfg.mast_url.rstrip("/")
        self._client = None

    # -- query -----------------------------------------------------------------------------
    def client(self):
        """astroquery's JWST mission client, logged in with the token when there is one.
        astroquery fixes its service addresses when it is imported; another ``mast_url`` (a
        mirror, the tests' server) is applied to this client's service connection."""
        if self._client is None:
            from astroquery.exceptions import LoginError
            from astroquery.mast import MastMissionsClass, conf

            def make():
                with conf.set_temp("server", self.base):
                    m = MastMissionsClass(mission="jwst", mast_token=self.token)
                    if self.base != DEFAULT_MAST:
                        api = m._service_api_connection
                        api.SERVICE_URL = self.base
                        api.MISSIONS_DOWNLOAD_URL = self.base + "/search/"
                        api.MAST_DOWNLOAD_URL = self.base + "/api/v0.1/Download/file"
                        m.mission = "jwst"  # the request address, from the service address
                    return m

            try:
                self._client = _deadline(make, self.cfg.timeout_s, "login", self.token)
            except FetchError as exc:
                if LoginError.__name__ in str(exc):
                    raise FetchError(
                        f"MAST at {self.base} refused the token in MAST_API_TOKEN (expired or "
                        "invalid): make a new one at https://auth.mast.stsci.edu/token"
                    ) from None
                raise
        return self._client

    def criteria(self) -> dict:
        """The search conditions (MAST JWST column names)."""
        c = {"program": list(self.cfg.programs), "exp_type": DARK_EXP_TYPE,
             "instrume": "NIRSPEC"}
        for key, values in (("detector", self.cfg.detectors), ("readpatt", self.cfg.readpatts),
                            ("subarray", self.cfg.subarrays)):
            if values:
                c[key] = list(values)
        return c

    def search(self, progress=None) -> list[dict]:
        """Every matching dataset (dicts of the service's columns), page by page, within the
        date range."""
        from astroquery.mast import conf

        m, crit = self.client(), self.criteria()
        rows, offset, total = [], 0, None
        while total is None or offset < total:
            def page(offset=offset):
                with conf.set_temp("server", self.base):
                    return m.query_criteria_async(limit=self.cfg.page_size, offset=offset,
                                                  **crit).json()
            got = _deadline(page, self.cfg.timeout_s, "search", self.token)
            batch = got.get("results") or []
            total = int(got.get("totalResults", len(batch)))
            rows += batch
            offset += len(batch)
            if progress:
                progress(f"MAST search: {len(rows)} of {total} dataset(s)")
            if not batch:
                break
        return [r for r in rows if self._in_dates(r)]

    def _in_dates(self, row: dict) -> bool:
        if not (self.cfg.start or self.cfg.end):
            return True
        day = str(row.get("date_obs") or "")[:10]
        if not day:
            raise FetchError(f"MAST result {row.get('fileSetName')!r} has no date_obs: cannot "
                             "apply [fetch] start/end")
        return (not self.cfg.start or day >= self.cfg.start) and \
            (not self.cfg.end or day <= self.cfg.end)

    def products(self, datasets: list[str]) -> list[dict]:
        """The ``*_uncal.fits`` products of ``datasets``."""
        if not datasets:
            return []
        m = self.client()

        def listing():
            return m.get_product_list(sorted(set(datasets)))
        tab = _deadline(listing, self.cfg.timeout_s, "product list", self.token)
        out, seen = [], set()
        for r in tab:
            name = str(r["filename"])
            if name.endswith(UNCAL) and name not in seen:
                seen.add(name)
                rec = {k: (None if np.ma.is_masked(v) else v.item() if hasattr(v, "item")
                           else v) for k, v in zip(tab.colnames, r)}
                size = rec.get("size")  # bytes, or None where MAST lists none
                rec["size"] = int(size) if size not in (None, "") else None
                out.append(rec)
        return out

    # -- download --------------------------------------------------------------------------
    def download(self, product: dict, into: Path) -> Path:
        """One product into ``into`` (module docstring): resumable, checked, renamed."""
        import requests

        name = product["filename"]
        part_dir = into / PARTIAL
        part_dir.mkdir(parents=True, exist_ok=True)
        part, final = part_dir / f"{name}.part", into / name
        url = f"{self.base}/search/jwst/api/v0.1/retrieve_product"
        headers = {"Authorization": f"token {self.token}"} if self.token else {}
        have = part.stat().st_size if part.exists() else 0
        if have:
            headers["Range"] = f"bytes={have}-"
        t = self.cfg.timeout_s
        try:
            with requests.get(url, params={"product_name": product["uri"]}, headers=headers,
                              stream=True, timeout=(t, t)) as r:
                if r.status_code == 416:  # the part is longer than the file: start again
                    part.unlink()
                    return self.download(product, into)
                if r.status_code in (401, 403):
                    raise NoAccess(f"{name}: MAST refused it (HTTP {r.status_code}, exclusive "
                                   "access" + ("; does the token have access to the program?"
                                               if self.token else "; set MAST_API_TOKEN") + ")")
                if r.status_code >= 400:
                    raise FetchError(f"{name}: MAST answered HTTP {r.status_code}")
                mode = "ab" if r.status_code == 206 else "wb"  # 200: the server sent it whole
                with open(part, mode) as f:
                    for block in r.iter_content(CHUNK):
                        f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
        except requests.RequestException as exc:
            kept = part.stat().st_size if part.exists() else 0
            why = (f"no data from MAST for {t:g} s" if isinstance(exc, requests.Timeout)
                   else f"MAST unreachable ({reason})" if (reason := unreachable(exc))
                   else "download cut")
            raise FetchError(mask(f"{name}: {why} after {kept} bytes ({type(exc).__name__}); "
                                  "the next run continues it", self.token)) from None
        self._check(part, product)
        os.replace(part, final)
        return final

    def _check(self, part: Path, product: dict) -> None:
        """Size against the product list, then the FITS checksums; a bad file is deleted."""
        from astropy.io import fits

        size, want = part.stat().st_size, product["size"]
        problem = ""
        if want is not None and want != size:
            if size < want:
                raise FetchError(f"{product['filename']}: {size} of {want} bytes so far; "
                                 "the next run continues it")
            problem = f"{size} bytes, MAST lists {want}"
        else:
            try:
                with fits.open(part, checksum=False, memmap=False) as hdul:
                    for i, hdu in enumerate(hdul):
                        if "CHECKSUM" in hdu.header and hdu.verify_checksum() == 0 or \
                                "DATASUM" in hdu.header and hdu.verify_datasum() == 0:
                            problem = f"HDU {i} ({hdu.name}) fails its FITS checksum"
                            break
            except Exception as exc:  # noqa: BLE001 - not a FITS file at all
                problem = f"not a readable FITS file ({type(exc).__name__})"
        if problem:
            part.unlink()
            raise FetchError(f"{product['filename']}: corrupt download ({problem}); deleted, "
                             "the next run fetches it again")


def default_db(cfg) -> str:
    """The results database ``fetch`` records into: the monitor's (``[monitor] db``, else
    ``<[monitor] stores>/nrsdark_results.sqlite``), so both keep one history."""
    if cfg.monitor.db:
        return results.resolve(cfg.monitor.db)
    Path(cfg.monitor.stores).mkdir(parents=True, exist_ok=True)
    return results.resolve(Path(cfg.monitor.stores) / results.DEFAULT_NAME)


def fetch(cfg, into=None, db=None, dry_run: bool = False, progress=None) -> dict:
    """One fetch (module docstring).  ``cfg``: a :class:`~nrsdark_dask.config.Config` (its
    ``[fetch]``); ``into``: the folder (default ``[fetch] into``, else the first ``[monitor]
    inputs``); ``db``: the results database URL (default :func:`default_db`).  Returns
    ``{"found", "fetched": [paths], "have", "exclusive": [names], "failed": [lines],
    "db"}``; ``failed`` lines never hold the token."""
    fc: FetchConfig = cfg.fetch
    into = Path(into or fc.into or (cfg.monitor.inputs[0] if cfg.monitor.inputs else ""))
    if not str(into) or str(into) == ".":
        raise FetchError("where to put the files? give --into, [fetch] into or [monitor] inputs")
    token = mast_token()
    mast = Mast(fc, token)
    datasets = mast.search(progress)
    kwd = "fileSetName"
    products = mast.products([str(r[kwd]) for r in datasets if r.get(kwd)])
    out = {"found": len(products), "fetched": [], "have": 0, "exclusive": [], "failed": [],
           "db": None}
    url = db or default_db(cfg)
    query = {"service": mast.base, **mast.criteria(), "start": fc.start, "end": fc.end}
    with results.ResultsDB(url) as rdb:
        done = rdb.fetched_names()
        todo = []
        for p in products:
            name = p["filename"]
            if not NAME.fullmatch(name) or name_problem(name):
                out["failed"].append(f"{name!r}: not a plain *_uncal.fits file name; refused")
                continue
            final = into / name
            if name in done or (final.exists() and final.stat().st_size == p["size"]):
                out["have"] += 1
            elif str(p.get("access", "PUBLIC")).upper() != "PUBLIC" and not token:
                out["exclusive"].append(name)
            else:
                todo.append(p)
        if dry_run:
            out["todo"] = [p["filename"] for p in todo]
            return out
        into.mkdir(parents=True, exist_ok=True)
        for i, p in enumerate(todo, 1):
            if progress:
                progress(f"[{i}/{len(todo)}] fetching {p['filename']}")
            try:
                path = mast.download(p, into)
            except NoAccess as exc:
                out["exclusive"].append(p["filename"])
                if token:
                    out["failed"].append(mask(str(exc), token))
                continue
            except FetchError as exc:
                out["failed"].append(mask(str(exc), token))
                continue
            rdb.record_fetch(p["filename"], str(p["uri"]), p["size"], file_sha256(path), path,
                             mast.base, query)
            out["fetched"].append(path)
        out["db"] = rdb.safe_url
    with contextlib.suppress(OSError):  # nothing under way: no empty folder left behind
        (into / PARTIAL).rmdir()
    return out


def summary_lines(out: dict) -> list[str]:
    """What a fetch did, for the command line and the monitor."""
    lines = [f"MAST: {out['found']} uncal file(s) found, {len(out['fetched'])} fetched, "
             f"{out['have']} already here"]
    if out["exclusive"]:
        lines.append(f"{len(out['exclusive'])} exclusive-access file(s) not fetched "
                     f"(e.g. {out['exclusive'][0]}): set MAST_API_TOKEN to a token with "
                     "access to the program")
    return lines


