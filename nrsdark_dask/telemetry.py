"""ASIC temperatures from the JWST engineering database (report §3, the pre-filter's first rule).

For each exposure, the ASIC temperature samples from ``pad`` before its start to ``pad`` after
its end (``[select] telemetry_pad_s``, 10 min: "before, during and after"), through jwst's own
client of the engineering database (EDB) at MAST, :class:`jwst.lib.engdb_mast.EngdbMast`.
The result is the ``telemetry.ecsv`` that ``select`` reads (columns ``time``, ``asic_temp``,
``detector``, ``mnemonic``), with the mnemonics, the windows and the service in its metadata;
``select`` then takes Tmin, Tmax and dT over each exposure's window.

* **Mnemonics** (``[telemetry] mnemonic_nrs1`` / ``mnemonic_nrs2``): ``IGDP_NRSD_ALG_A1_TEMP``
  and ``IGDP_NRSD_ALG_A2_TEMP``, "NIRSpec converted ASIC #1 (#2) Temperature (K) (derived
  ground data point)" in MAST's EDB mnemonic list (``/viz/api/v0.1/info/mnemonics``), the
  ones jwql's NIRSpec dashboard plots beside the FPA temperature.  ASIC #1 reads SCA 491
  (NRS1) and #2 SCA 492 (NRS2); this pairing is our decision, recorded in every output and
  changeable in the configuration.
* **Cache**: each (mnemonic, window) is kept in the folder ``<cache>/<MNEMONIC>-<start>-<end>/``
  as jwst's own cache file (:meth:`EngdbMast.cache`: ``<MNEMONIC>.ecsv``, the service's
  records ``theTime, MJD, euvalue, sqldataType``, bracketing samples included).  The window's
  name is the EDB's own request name (``%Y%m%dT%H%M%S``, whole seconds, rounded outwards).  A
  rerun, or a test, reads the cache and needs no network; a window is written to a hidden
  folder and renamed, so a cut query leaves nothing a later run would trust.
* **Faults** are one line each (:class:`TelemetryError`), the MAST token never in it:
  unreachable service, token missing, refused or expired (HTTP 401/403), a server error, no
  answer within ``timeout_s``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack
from astropy.time import Time, TimeDelta

TIME_FORMAT = "%Y%m%dT%H%M%S"  # the EDB request's window format (jwst.lib.engdb_mast)


class TelemetryError(RuntimeError):
    pass


def mask(text: str, token: str | None) -> str:
    """``text`` with the MAST token replaced by ``***`` (every message goes through this)."""
    text = str(text)
    return text.replace(token, "***") if token else text


def mast_token() -> str | None:
    """The MAST token from ``MAST_API_TOKEN`` (never from a file, never written anywhere)."""
    return os.environ.get("MAST_API_TOKEN") or None


def edb_time(text: str) -> Time:
    """A window end in the EDB's request format (:data:`TIME_FORMAT`) as a UTC Time."""
    return Time(dt.datetime.strptime(text, TIME_FORMAT), scale="utc")


def window(start: Time, end: Time, pad_s: float) -> tuple[str, str]:
    """An exposure's telemetry window in the EDB's format, rounded outwards to whole seconds."""
    pad = TimeDelta(pad_s, format="sec")
    t0 = (start - pad).to_datetime().replace(microsecond=0)
    t1 = (end + pad).to_datetime()
    if t1.microsecond:
        t1 = t1.replace(microsecond=0) + dt.timedelta(seconds=1)
    return t0.strftime(TIME_FORMAT), t1.strftime(TIME_FORMAT)


UNREACHABLE = (  # (pattern in a connection error's text, what it means)
    (r"NameResolutionError|Failed to resolve|Name or service not known|nodename nor servname",
     "its host name does not resolve (no network here, or a wrong URL?)"),
    (r"Connection refused", "connection refused (is the URL right?)"),
    (r"Connection reset|RemoteDisconnected|Connection aborted", "the connection was dropped"),
)


def unreachable(exc) -> str | None:
    """Why a service could not be reached, in a few words, from a connection error's long
    text (urllib3 nests the cause several levels deep); None when it is something else."""
    import re

    text = str(exc)
    return next((why for pat, why in UNREACHABLE if re.search(pat, text)), None)


def _http_status(exc) -> int | None:
    resp = getattr(exc, "response", None)
    return getattr(resp, "status_code", None)


def _describe(exc, url: str, timeout_s: float, token: str | None) -> str:
    """One line for a failed EDB request."""
    import requests

    status = _http_status(exc)
    if status in (401, 403):
        why = ("needs a MAST token: set MAST_API_TOKEN" if not token else
               "refused the MAST token in MAST_API_TOKEN (expired, or without EDB access): make "
               "a new one at https://auth.mast.stsci.edu/token")
        return f"engineering database at {url} {why} (HTTP {status})"
    if status is not None:
        return f"engineering database at {url} answered HTTP {status}; try again later"
    if isinstance(exc, requests.Timeout):
        return f"engineering database at {url} gave no answer within {timeout_s:g} s"
    if why := unreachable(exc):
        return f"engineering database at {url} unreachable: {why}"
    if isinstance(exc, requests.exceptions.RetryError):
        return f"engineering database at {url}: gave up after retries ({exc})"
    return f"engineering database at {url}: {type(exc).__name__}: {exc}"


class Edb:
    """jwst's EDB client, opened once (``url``: the MAST base URL; ``token``: the MAST token),
    with our time limit and retries, and the cache of module docstring."""

    def __init__(self, url: str, cache, token: str | None = None, timeout_s: float = 60.0,
                 retries: int = 2):
        self.url, self.cache, self.token = url.rstrip("/") + "/", Path(cache), token
        self.timeout_s, self.retries = timeout_s, retries
        self._engdb = None

    def _client(self):
        """EngdbMast, after a ping of our own with our time limit (jwst's constructor pings
        with its 10-minute default)."""
        if self._engdb is None:
            import requests
            from jwst.lib.engdb_mast import EngdbMast

            try:
                requests.get(self.url + "api/", timeout=self.timeout_s).raise_for_status()
                engdb = EngdbMast(base_url=self.url, token=self.token)
            except (requests.RequestException, RuntimeError) as exc:
                raise TelemetryError(mask(_describe(exc, self.url, self.timeout_s, self.token),
                                          self.token)) from None
            engdb.timeout, engdb.retries = self.timeout_s, self.retries
            engdb.set_session()
            self._engdb = engdb
        return self._engdb

    def records(self, mnemonic: str, start: str, end: str) -> Table:
        """The EDB records of ``mnemonic`` from ``start`` to ``end`` (EDB format), from the
        cache or, when it lacks them, from the service (then cached)."""
        folder = self.cache / f"{mnemonic}-{start}-{end}"
        path = folder / f"{mnemonic}.ecsv"
        if not path.exists():
            import requests

            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = self.cache / f".{folder.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self._client().cache([mnemonic], edb_time(start), edb_time(end), tmp)
                os.replace(tmp, folder)
            except requests.RequestException as exc:
                raise TelemetryError(mask(_describe(exc, self.url, self.timeout_s, self.token),
                                          self.token) + f" ({mnemonic} {start}-{end})") from None
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return Table.read(path, format="ascii.ecsv")


def asic_samples(exposures, edb: Edb, mnemonics: dict, pad_s: float, progress=None) -> Table:
    """``exposures``: ``(detector, start Time, end Time)`` per exposure.  Returns the samples
    inside each exposure's window (one row per detector and time, sorted), as the table
    ``select`` reads, with the windows and mnemonics in its metadata."""
    parts, windows = [], []
    wanted = sorted({(d, *window(s, e, pad_s)) for d, s, e in exposures})
    for i, (det, start, end) in enumerate(wanted, 1):
        if det not in mnemonics:
            raise TelemetryError(f"no ASIC temperature mnemonic for detector {det!r}; "
                                 f"known: {', '.join(sorted(mnemonics))}")
        mnemonic = mnemonics[det]
        if progress:
            progress(f"[{i}/{len(wanted)}] ASIC telemetry {det} {mnemonic} {start}-{end}")
        rec = edb.records(mnemonic, start, end)
        t0, t1 = edb_time(start).mjd, edb_time(end).mjd
        mjd = np.asarray(rec["MJD"], float) if len(rec) else np.zeros(0)
        keep = (mjd >= t0) & (mjd <= t1)
        temps = np.asarray(rec["euvalue"], float)[keep] if len(rec) else np.zeros(0)
        bad = ~np.isfinite(temps)
        if bad.any():
            raise TelemetryError(f"{mnemonic} {start}-{end}: {int(bad.sum())} value(s) are "
                                 "not numbers")
        windows.append({"detector": det, "mnemonic": mnemonic, "start": start, "end": end,
                        "samples": int(keep.sum())})
        if keep.any():
            times = Time(mjd[keep], format="mjd", scale="utc").isot
            parts.append(Table({"time": times, "asic_temp": temps, "detector": [det] * len(temps),
                                "mnemonic": [mnemonic] * len(temps)}))
    tab = vstack(parts) if parts else Table(names=("time", "asic_temp", "detector", "mnemonic"),
                                            dtype=(str, float, str, str))
    if len(tab):
        tab["mjd_"] = Time(list(tab["time"]), scale="utc").mjd
        tab.sort(["detector", "mjd_"])
        tab.remove_column("mjd_")
        _, first = np.unique([f"{d} {t}" for d, t in zip(tab["detector"], tab["time"])],
                             return_index=True)
        tab = tab[np.sort(first)]
    tab["asic_temp"].unit = "K"
    tab.meta.update(
        description="NIRSpec ASIC temperatures from the JWST engineering database (jwst's "
                    "EngdbMast)", service=edb.url, mnemonics=dict(mnemonics), pad_s=pad_s,
        windows=windows,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return tab
