"""A local stand-in for MAST on 127.0.0.1, answering in the services' real formats:

* the MAST Search API for JWST as astroquery's ``MastMissionsClass`` calls it
  (``/search/util/api/v0.1/column_list``, ``/search/jwst/api/v0.1/search`` with
  ``limit``/``offset`` paging and ``totalResults``, ``post_list_products``,
  ``retrieve_product`` with HTTP ``Range``), and astroquery's login check ``/whoami``; the
  JSON shapes are those of astroquery's own recorded responses (``mission_results.json``,
  ``mission_products.json``, ``mission_columns.json``);
* the engineering database as jwst's ``EngdbMast`` calls it (``/api/`` ping,
  ``/api/v0.1/Download/file?uri=mast:jwstedb/<MNEMONIC>-<start>-<end>.csv``), answering the
  CSV of jwst's own test (``theTime,MJD,euvalue,sqldataType``, CRLF lines, one bracketing
  sample either side of the window).

Files are the simulator's uncal files, re-written with FITS CHECKSUM/DATASUM cards as MAST's
are.  ``faults`` makes it misbehave: ``{"search": 500 | 503 | "hang", "edb": 500 | "hang",
"download": {name: 500 | "cut" | "corrupt" | "hang"}}`` ("cut": half the file then the
connection closes, once).  ``hits`` counts requests by kind.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

COLUMNS = ["fileSetName", "program", "exp_type", "instrume", "detector", "readpatt",
           "subarray", "date_obs", "access"]
MNEMONICS = {"NRS1": "IGDP_NRSD_ALG_A1_TEMP", "NRS2": "IGDP_NRSD_ALG_A2_TEMP"}


class MastService:
    def __init__(self, uncal_files, telemetry=None, tokens=("good-token-123",),
                 proprietary=()):
        self.files, self.rows = {}, []
        for path in sorted(map(Path, uncal_files)):
            with fits.open(path) as hdul:
                buf = io.BytesIO()
                hdul.writeto(buf, checksum=True)
                h = hdul[0].header
            name = path.name
            ds = name.removesuffix("_uncal.fits")
            self.files[f"{ds}/{name}"] = buf.getvalue()
            self.rows.append({"fileSetName": ds, "program": str(h["PROGRAM"]),
                              "exp_type": h["EXP_TYPE"], "instrume": h["INSTRUME"],
                              "detector": h["DETECTOR"], "readpatt": h["READPATT"],
                              "subarray": h["SUBARRAY"], "date_obs": h["DATE-OBS"],
                              "access": "PROPRIETARY" if name in proprietary else "PUBLIC"})
        self.tokens = set(tokens)
        self.telemetry = telemetry  # Table: time, detector, asic_temp (or a callable)
        self.faults: dict = {"download": {}}
        self.hits: dict = {}
        self.cut_done: set = set()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def count(self, kind):
        self.hits[kind] = self.hits.get(kind, 0) + 1

    # -- answers ---------------------------------------------------------------------------
    def search(self, body: dict) -> dict:
        rows = self.rows
        for cond in body.get("conditions", []):
            for key, value in cond.items():
                allowed = {str(v) for v in str(value).split(",")}
                rows = [r for r in rows if str(r.get(key)) in allowed]
        off, lim = int(body.get("offset", 0)), int(body.get("limit", 5000))
        return {"messages": [], "info": [{"name": c, "type": "VARCHAR"} for c in COLUMNS],
                "search_params": body, "totalResults": len(rows),
                "results": rows[off:off + lim]}

    def products(self, body: dict) -> dict:
        out = []
        for uri, data in self.files.items():
            ds, name = uri.split("/")
            if ds not in body.get("dataset_ids", []):
                continue
            row = next(r for r in self.rows if r["fileSetName"] == ds)
            for fname, size, suffix in ((name, len(data), "UNCAL"),
                                        (f"{ds}_rate.fits", 1234, "RATE")):
                out.append({"product_key": f"{ds}_{fname}", "access": row["access"],
                            "dataset": ds, "instrument_name": "NIRSPEC", "filters": "",
                            "filename": fname, "uri": f"{ds}/{fname}",
                            "authz_primary_identifier": ds, "authz_secondary_identifier": "CAL",
                            "file_suffix": suffix, "category": "UNCALIBRATED" if suffix ==
                            "UNCAL" else "CALIBRATED", "size": size, "type": "science"})
        return {"products": out}

    def edb_csv(self, mnemonic: str, start: str, end: str) -> str:
        det = next(d for d, m in MNEMONICS.items() if m == mnemonic)
        t0 = Time.strptime(start, "%Y%m%dT%H%M%S", scale="utc").mjd
        t1 = Time.strptime(end, "%Y%m%dT%H%M%S", scale="utc").mjd
        if callable(self.telemetry):
            mjd = np.arange(t0 - 60 / 86400, t1 + 120 / 86400, 60 / 86400)
            temp = self.telemetry(det, mjd)
        else:
            tel = self.telemetry[self.telemetry["detector"] == det]
            mjd_all = Time(list(tel["time"]), scale="utc").mjd
            inside = np.flatnonzero((mjd_all >= t0) & (mjd_all <= t1))
            lo = max(inside.min() - 1, 0) if inside.size else 0
            hi = min(inside.max() + 2, len(tel)) if inside.size else 0
            mjd, temp = mjd_all[lo:hi], np.asarray(tel["asic_temp"], float)[lo:hi]
        lines = ["theTime,MJD,euvalue,sqldataType"]
        for m, v in zip(mjd, temp):
            when = Time(m, format="mjd", scale="utc").strftime("%Y-%m-%d %H:%M:%S.%f")
            lines.append(f"{when},{m:.10f},{v:.10f},real")
        return "\r\n".join(lines) + "\r\n"


def _handler(svc: MastService):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, code, body=b"", ctype="application/json", headers=None):
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            elif isinstance(body, str):
                body = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _token(self):
            auth = self.headers.get("Authorization", "")
            cookie = self.headers.get("Cookie", "")
            tok = auth.removeprefix("token ") if auth.startswith("token ") else None
            for part in cookie.split(";"):
                k, _, v = part.strip().partition("=")
                if k == "mast_token":
                    tok = v
            return tok

        def _fault(self, kind):
            f = svc.faults.get(kind)
            if f == "hang":
                time.sleep(30)
                return True
            if isinstance(f, int):
                self._send(f, {"error": "server error"})
                return True
            return False

        def do_GET(self):  # noqa: N802 - http.server's name
            url = urllib.parse.urlparse(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/whoami":
                svc.count("whoami")
                ok = self._token() in svc.tokens
                return self._send(200, {"anon": not ok, "scopes": ["mast:exclusive_access"]
                                        if ok else [], "attrib": {"display_name": "Tester"}
                                        if ok else {}})
            if url.path == "/search/util/api/v0.1/column_list":
                svc.count("columns")
                return self._send(200, [{"field_name": c, "description": c, "column_name": c,
                                         "queryable": "yes", "qual_type": "string",
                                         "default_output": "yes", "indexed": "no",
                                         "datatype": "char"} for c in COLUMNS])
            if url.path == "/search/jwst/api/v0.1/retrieve_product":
                return self._download(q.get("product_name", ""))
            if url.path in ("/api/", "/api"):
                return self._send(200, {"status": "ok"})
            if url.path == "/api/v0.1/Download/file":
                svc.count("edb")
                if self._fault("edb"):
                    return
                if self._token() not in svc.tokens:
                    return self._send(401, {"error": "unauthorized"})
                uri = q.get("uri", "").removeprefix("mast:jwstedb/").removesuffix(".csv")
                mnemonic, start, end = uri.rsplit("-", 2)
                return self._send(200, svc.edb_csv(mnemonic, start, end), "text/csv")
            self._send(404, {"error": "not found"})

        def _download(self, uri):
            svc.count("download")
            name = uri.rsplit("/", 1)[-1]
            fault = svc.faults["download"].get(name)
            if fault == "hang":
                time.sleep(30)
                return
            if isinstance(fault, int):
                return self._send(fault, {"error": "server error"})
            if uri not in svc.files:
                return self._send(404, {"error": "no such product"})
            row = next(r for r in svc.rows if uri.startswith(r["fileSetName"] + "/"))
            if row["access"] != "PUBLIC" and self._token() not in svc.tokens:
                return self._send(401, {"error": "exclusive access"})
            data = svc.files[uri]
            if fault == "corrupt":
                mid = len(data) // 2  # bytes flipped inside the data (not the padding)
                data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]
            start = 0
            rng = self.headers.get("Range", "")
            if rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    return self._send(416)
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Type", "application/fits")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if fault == "cut" and name not in svc.cut_done:
                svc.cut_done.add(name)
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            url = urllib.parse.urlparse(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if url.path == "/search/jwst/api/v0.1/search":
                svc.count("search")
                if self._fault("search"):
                    return
                return self._send(200, svc.search(body))
            if url.path == "/search/jwst/api/v0.1/post_list_products":
                svc.count("products")
                return self._send(200, svc.products(body))
            self._send(404, {"error": "not found"})

    return Handler
