"""The results database (issue 22): what every build and analysis made, kept across runs.

One row per reference file (path, REFTYPE, selection keywords, PEDIGREE/USEAFTER, SHA-256),
with its inputs (exposure identity and date, used or culled), the cull decisions and their
scores, every statistic of the build and of ``report.json`` (per amplifier where it has
meaning: median rate, bias level, noise), the SNR and the verdict, the new hot pixels against
the previous file, and the run that made it (software versions, wall time, peak memory).

* **Where**: any SQLAlchemy URL (``postgresql+psycopg://user@host/db`` for a shared service);
  the command line's default is SQLite, one embedded file beside the stores
  (:func:`default_url`).  The library functions record only when given a URL.
* **Versioned**: table ``nrsdark_meta`` holds ``schema_version``.  A database of an older
  version is upgraded in place, in the transaction that opens it, by the steps of
  ``MIGRATIONS`` (1 -> 2: the monitor's tables; 2 -> 3: ``science_checks``; 3 -> 4:
  ``fetched``, what ``nrsdark fetch`` took from MAST); one newer than
  this release is refused with the two versions named.
* **Transactional**: each record (a build, an analysis) is one transaction; a run killed
  half-way leaves no partial row.
* **Faults in one line, with time limits**: SQLite waits at most ``TIMEOUT_S`` for a lock;
  PostgreSQL gets ``connect_timeout``, ``lock_timeout`` (``TIMEOUT_S``) and
  ``statement_timeout`` (``STATEMENT_TIMEOUT_S``).  Any database error (refused connection,
  wrong password, a file that is not a database, a lock held too long, a read-only folder)
  is a :class:`ResultsError` naming the database (password hidden) and what to do.  A build
  whose files are written but cannot be recorded keeps them, lists them and exits 3; it
  leaves ``record-pending.json`` in its outdir, and ``nrsdark record OUTDIR`` records them
  later (:func:`record_pending`).

SQLAlchemy Core only (tables, no ORM): the rows are plain records, read back with
:func:`read_table` as lists of dicts, or by any SQL client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import resource
import socket
from pathlib import Path

SCHEMA_VERSION = 4
DEFAULT_NAME = "nrsdark_results.sqlite"
TIMEOUT_S = 10  # connecting, and waiting for another writer's lock
STATEMENT_TIMEOUT_S = 600  # PostgreSQL: one statement (a build's record is a few thousand rows)
PENDING = "record-pending.json"


class ResultsError(RuntimeError):
    pass


class RecordFailed(ResultsError):
    """A build's files are written but recording them failed (``files``: ``{reftype:
    path}``; ``pending``: the file ``nrsdark record`` reads to record them later)."""

    def __init__(self, message: str, files: dict, pending: Path):
        super().__init__(message)
        self.files, self.pending = files, pending


def hide_password(url: str) -> str:
    """``url`` without its password (for messages, even when SQLAlchemy cannot parse it)."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any unparsable URL: mask by pattern
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


HINTS = (  # (pattern in the driver's message, what to do)
    (r"database is locked|lock timeout|could not obtain lock",
     f"another process held a lock for over {TIMEOUT_S} s; try again when it is done"),
    (r"not a database|malformed|file is encrypted",
     "the file is not an nrsdark results database (SQLite): give another --db"),
    (r"readonly|read-only|unable to open database|permission denied",
     "cannot write there: give --db a file in a writable folder"),
    (r"password authentication failed|authentication failed|no password supplied",
     "check the user name and password"),
    (r"connection refused|could not connect|timeout expired|could not translate host|"
     r"connection to server", "is the database server running and reachable from here?"),
    (r"statement timeout", f"a statement ran over {STATEMENT_TIMEOUT_S} s"),
)


def database_error(exc: BaseException, url: str) -> ResultsError:
    """One line for any database fault: the database (password hidden), the driver's first
    line and a hint (``HINTS``)."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    hint = next((h for pat, h in HINTS if re.search(pat, text, re.I)), "")
    return ResultsError(f"results database {hide_password(url)}: {text[:300]}"
                        + (f" ({hint})" if hint else ""))


def _connect_args(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"timeout": TIMEOUT_S}
    if url.startswith("postgresql"):
        return {"connect_timeout": TIMEOUT_S,
                "options": f"-c lock_timeout={TIMEOUT_S * 1000} "
                           f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
    return {}


def default_url(store) -> str | None:
    """SQLite beside the store: ``<store's folder>/nrsdark_results.sqlite``; ``None`` for a
    store at a URL (``s3://...``: there is no folder beside it to write into, so the default
    records nothing; give ``--db``)."""
    if "://" in str(store):
        return None
    return f"sqlite:///{Path(store).absolute().parent / DEFAULT_NAME}"


def resolve(db, store=None) -> str | None:
    """The URL to record into: ``db`` (a URL or a path to an SQLite file), ``None``/"none" for
    no recording, "default" for :func:`default_url` of ``store``.  An SQLite file whose
    folder does not exist is refused here, before any work."""
    if db is None or str(db).lower() == "none":
        return None
    if str(db) == "default":
        url = default_url(store) if store is not None else None
    else:
        text = str(db)
        url = text if "://" in text else f"sqlite:///{Path(text).resolve()}"
    if url and url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise ResultsError(f"folder {folder} of the results database does not exist")
    return url


def _tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    sa.Table("nrsdark_meta", md, sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
    sa.Table(
        "runs", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("command", sa.String(32), nullable=False),  # build | analyze
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wall_s", sa.Float), sa.Column("peak_rss_bytes", sa.BigInteger),
        sa.Column("host", sa.String(255)), sa.Column("software", sa.Text))  # JSON
    sa.Table(
        "reffiles", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("reftype", sa.String(16), nullable=False),
        sa.Column("detector", sa.String(16)), sa.Column("readpatt", sa.String(32)),
        sa.Column("subarray", sa.String(32)), sa.Column("pedigree", sa.String(64)),
        sa.Column("useafter", sa.String(32)), sa.Column("store", sa.Text),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False))
    sa.Table(
        "inputs", md, sa.Column("reffile_id", sa.Integer, sa.ForeignKey("reffiles.id"),
                                nullable=False, index=True),
        sa.Column("exposure", sa.String(255), nullable=False),
        sa.Column("date", sa.DateTime(timezone=True)),
        sa.Column("used", sa.Boolean, nullable=False))
    sa.Table(
        "cull_decisions", md, sa.Column("reffile_id", sa.Integer,
                                        sa.ForeignKey("reffiles.id"), nullable=False,
                                        index=True),
        sa.Column("exposure", sa.String(255), nullable=False),
        sa.Column("artifact", sa.String(32)), sa.Column("score", sa.Float),
        sa.Column("culled", sa.Boolean, nullable=False), sa.Column("reason", sa.Text),
        sa.Column("scores", sa.Text))  # JSON: every kind's score
    sa.Table(
        "statistics", md, sa.Column("reffile_id", sa.Integer, sa.ForeignKey("reffiles.id"),
                                    nullable=False, index=True),
        sa.Column("source", sa.String(16), nullable=False),  # build | analyze
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("amp", sa.Integer),  # NULL: the whole file; 0-3: an output amplifier
        sa.Column("value", sa.Float))
    sa.Table(
        "analyses", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("reffile_id", sa.Integer, sa.ForeignKey("reffiles.id"), nullable=False,
                  index=True),
        sa.Column("previous_id", sa.Integer, sa.ForeignKey("reffiles.id")),
        sa.Column("snr", sa.Float), sa.Column("snr_required", sa.Float),
        sa.Column("deliverable", sa.Boolean), sa.Column("n_new_hot", sa.Integer),
        sa.Column("warnings", sa.Text), sa.Column("report", sa.Text))  # JSON
    # nrsdark monitor (schema 2): the period windows built per input group, and what each
    # group holds while its next window cannot reach the SNR
    sa.Table(
        "monitor_windows", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("input_group", sa.String(255), nullable=False, index=True),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("first_exposure", sa.String(255), nullable=False),
        sa.Column("last_exposure", sa.String(255), nullable=False),
        sa.Column("n_inputs", sa.Integer, nullable=False), sa.Column("snr", sa.Float),
        sa.Column("reffile_id", sa.Integer, sa.ForeignKey("reffiles.id")),
        sa.UniqueConstraint("input_group", "label"))
    sa.Table(
        "monitor_groups", md, sa.Column("input_group", sa.String(255), primary_key=True),
        sa.Column("store", sa.Text), sa.Column("n_inputs", sa.Integer),
        sa.Column("n_held", sa.Integer), sa.Column("n_more_needed", sa.Integer),
        sa.Column("per_file_snr", sa.Float), sa.Column("snr_required", sa.Float),
        sa.Column("updated", sa.DateTime(timezone=True)))
    # nrsdark check-science (schema 3): a science exposure calibrated with two reference sets
    sa.Table(
        "science_checks", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("science", sa.Text, nullable=False),
        sa.Column("new_dark_id", sa.Integer, sa.ForeignKey("reffiles.id"), nullable=False),
        sa.Column("old_dark_id", sa.Integer, sa.ForeignKey("reffiles.id"), nullable=False),
        sa.Column("diff_median", sa.Float), sa.Column("diff_sigma", sa.Float),
        sa.Column("expected_sigma", sa.Float), sa.Column("background_sigma", sa.Float),
        sa.Column("hot_residual_new", sa.Float), sa.Column("hot_residual_old", sa.Float),
        sa.Column("new_do_not_use", sa.Integer), sa.Column("new_unreliable_dark", sa.Integer),
        sa.Column("report", sa.Text))  # JSON: every number of check_science.json
    # nrsdark fetch (schema 4): each file taken from MAST, when, from where and by which query
    sa.Table(
        "fetched", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("uri", sa.Text, nullable=False), sa.Column("size", sa.BigInteger),
        sa.Column("sha256", sa.String(64)), sa.Column("path", sa.Text),
        sa.Column("fetched", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text), sa.Column("query", sa.Text))  # JSON, never a token
    return md, {t.name: t for t in md.sorted_tables}


def _add_monitor_tables(conn, tables: dict) -> None:
    for name in ("monitor_windows", "monitor_groups"):
        tables[name].create(conn, checkfirst=True)


def _add_science_checks(conn, tables: dict) -> None:
    tables["science_checks"].create(conn, checkfirst=True)


def _add_fetched(conn, tables: dict) -> None:
    tables["fetched"].create(conn, checkfirst=True)


# {from_version: step(connection, tables)}, in order
MIGRATIONS = {1: _add_monitor_tables, 2: _add_science_checks, 3: _add_fetched}


class ResultsDB:
    """An open results database (``url``: any SQLAlchemy URL).  Creates the tables of an
    empty database, upgrades an older one, refuses a newer one."""

    def __init__(self, url: str):
        import sqlalchemy as sa

        self.url = url
        resolve(url)  # refuses an SQLite file in a folder that does not exist
        try:
            self.engine = sa.create_engine(url, future=True, connect_args=_connect_args(url))
        except (sa.exc.SQLAlchemyError, ImportError) as exc:
            raise database_error(exc, url) from None
        self.metadata, self.t = _tables()
        with self.begin() as conn:
            self._open(conn, sa)

    @contextlib.contextmanager
    def begin(self):
        """A transaction (``engine.begin()``) whose database errors are one-line
        :class:`ResultsError` exceptions."""
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise database_error(exc, self.url) from None

    @contextlib.contextmanager
    def connect(self):
        """A connection for reading, errors as in :meth:`begin`."""
        import sqlalchemy as sa

        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise database_error(exc, self.url) from None

    def _open(self, conn, sa) -> None:
        meta = self.t["nrsdark_meta"]
        if not sa.inspect(conn).has_table(meta.name):
            self.metadata.create_all(conn)
            conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        found = int(conn.execute(sa.select(meta.c.value).where(
            meta.c.key == "schema_version")).scalar_one())
        if found > SCHEMA_VERSION:
            raise ResultsError(f"{self.safe_url}: results database of schema {found}, newer "
                               f"than this nrsdark_dask's {SCHEMA_VERSION}; upgrade nrsdark_dask")
        for v in range(found, SCHEMA_VERSION):
            MIGRATIONS[v](conn, self.t)
        if found < SCHEMA_VERSION:
            conn.execute(meta.update().where(meta.c.key == "schema_version").values(
                value=str(SCHEMA_VERSION)))

    @property
    def safe_url(self) -> str:
        """The URL without its password."""
        return hide_password(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- records (each one transaction) ----------------------------------------------------
    def _run(self, conn, command: str, started, wall_s, software) -> int:
        return conn.execute(self.t["runs"].insert().values(
            command=command, started=started, wall_s=wall_s, peak_rss_bytes=peak_rss(),
            host=socket.gethostname(), software=json.dumps(software, default=str))
        ).inserted_primary_key[0]

    def record_build(self, res: dict, store, inputs: list[dict], cull=None,
                     started=None, wall_s=None, software=None) -> dict:
        """Record a build's files (``res`` as :func:`nrsdark_dask.stages.build.build` returns it):
        one ``reffiles`` row per file, its inputs (``[{"exposure", "date", "used"}]``), the
        cull decisions (an astropy table as ``nrsdark cull`` writes it) and the build's
        statistics.  Returns ``{reftype: reffile id}``."""
        from astropy.io import fits

        started = started or now()
        ids = {}
        with self.begin() as conn:
            run = self._run(conn, "build", started, wall_s, software or {})
            for reftype, path in res["files"].items():
                h = fits.getheader(path, 0)
                rid = self._reffile(conn, run, path, reftype, h, store)
                ids[reftype] = rid
                if inputs:
                    conn.execute(self.t["inputs"].insert(), [
                        dict(reffile_id=rid, exposure=r["exposure"], date=r.get("date"),
                             used=bool(r["used"])) for r in inputs])
                if cull is not None and len(cull):
                    conn.execute(self.t["cull_decisions"].insert(), [
                        dict(reffile_id=rid, exposure=str(r["exposure"]),
                             artifact=str(r["artifact"]), score=_num(r["score"]),
                             culled=bool(r["culled"]), reason=str(r["reason"]),
                             scores=json.dumps({c[6:]: _num(r[c]) for c in r.colnames
                                                if c.startswith("score_")}))
                        for r in cull])
                rows = [dict(reffile_id=rid, source="build", name=k, amp=None, value=_num(v))
                        for k, v in res.get("stats", {}).items() if _is_number(v)]
                if rows:
                    conn.execute(self.t["statistics"].insert(), rows)
        return ids

    def _reffile(self, conn, run: int, path, reftype: str, header, store=None) -> int:
        import sqlalchemy as sa

        from .store import file_sha256

        sha = file_sha256(path)
        t = self.t["reffiles"]
        old = conn.execute(sa.select(t.c.id).where(t.c.sha256 == sha)).scalar_one_or_none()
        if old is not None:
            return old
        return conn.execute(t.insert().values(
            run_id=run, sha256=sha, path=str(Path(path).resolve()), reftype=reftype.upper(),
            detector=header.get("DETECTOR"), readpatt=header.get("READPATT"),
            subarray=header.get("SUBARRAY"), pedigree=header.get("PEDIGREE"),
            useafter=header.get("USEAFTER"), store=str(store) if store else None,
            created=now())).inserted_primary_key[0]

    def record_analysis(self, numbers: dict, per_amp: dict | None = None, previous=None,
                        started=None, wall_s=None, software=None) -> int:
        """Record an analysis (``numbers``: ``report.json``'s, with ``dark_file``): its SNR,
        verdict, new hot pixels against ``previous`` (the previous DARK's path, recorded too
        if it is not yet), warnings, every number as a statistic, and ``per_amp``
        (``{name: {amp: value}}``).  Returns the analysis id."""
        from astropy.io import fits

        started = started or now()
        with self.begin() as conn:
            run = self._run(conn, "analyze", started, wall_s, software or {})
            dark = numbers["dark_file"]
            rid = self._reffile(conn, run, dark, "DARK", fits.getheader(dark, 0))
            prev = (self._reffile(conn, run, previous, "DARK", fits.getheader(previous, 0))
                    if previous else None)
            aid = conn.execute(self.t["analyses"].insert().values(
                run_id=run, reffile_id=rid, previous_id=prev, snr=_num(numbers.get("snr")),
                snr_required=_num(numbers.get("snr_required")),
                deliverable=numbers.get("deliverable"),
                n_new_hot=numbers.get("n_new_hot"),
                warnings=json.dumps(numbers.get("warnings", [])),
                report=json.dumps(numbers, default=str))).inserted_primary_key[0]
            rows = [dict(reffile_id=rid, source="analyze", name=k, amp=None, value=_num(v))
                    for k, v in numbers.items() if _is_number(v)]
            rows += [dict(reffile_id=rid, source="analyze", name=k, amp=int(a), value=_num(v))
                     for k, by_amp in (per_amp or {}).items() for a, v in by_amp.items()]
            if rows:
                conn.execute(self.t["statistics"].insert(), rows)
        return aid

    def record_science_check(self, numbers: dict, started=None, wall_s=None,
                             software=None) -> int:
        """Record a science check (``numbers``: ``check_science.json``'s): both sets' DARK
        and SUPERBIAS files (recorded too if they are not yet), the comparison's numbers.
        Returns the check's id."""
        from astropy.io import fits

        started = started or now()
        with self.begin() as conn:
            run = self._run(conn, "check-science", started, wall_s, software or {})
            ids = {}
            for s in ("new", "old"):
                for reftype, path in numbers[s].items():
                    if reftype in ("dark", "superbias"):
                        ids[s, reftype] = self._reffile(conn, run, path, reftype,
                                                        fits.getheader(path, 0))
            keep = ("diff_median", "diff_sigma", "expected_sigma", "background_sigma",
                    "hot_residual_new", "hot_residual_old")
            return conn.execute(self.t["science_checks"].insert().values(
                run_id=run, science=str(numbers["science"]),
                new_dark_id=ids["new", "dark"], old_dark_id=ids["old", "dark"],
                **{k: _num(numbers.get(k)) for k in keep},
                new_do_not_use=numbers["new_do_not_use"],
                new_unreliable_dark=numbers["new_unreliable_dark"],
                report=json.dumps(numbers, default=str))).inserted_primary_key[0]

    def record_fetch(self, name: str, uri: str, size, sha256: str, path, source: str,
                     query: dict) -> None:
        """One file taken from MAST (``query``: the criteria, JSON; the token is never
        among them)."""
        with self.begin() as conn:
            conn.execute(self.t["fetched"].insert().values(
                name=name, uri=uri, size=size, sha256=sha256, path=str(path), fetched=now(),
                source=source, query=json.dumps(query, sort_keys=True)))

    def fetched_names(self) -> set[str]:
        """The names of the files taken from MAST so far."""
        import sqlalchemy as sa

        with self.connect() as conn:
            return set(conn.execute(sa.select(self.t["fetched"].c.name)).scalars())

    def read_table(self, name: str) -> list[dict]:
        """Every row of table ``name`` as dicts (in insertion order where it has an id)."""
        import sqlalchemy as sa

        t = self.t[name]
        q = sa.select(t)
        if "id" in t.c:
            q = q.order_by(t.c.id)
        with self.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


# ---- helpers ----------------------------------------------------------------------------------
def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def from_seconds(t) -> dt.datetime:
    """A date of the store's ``date`` coordinate (seconds since 1970, UTC, or as xarray
    decodes it, a ``datetime64``) as a timezone-aware datetime."""
    import numpy as np

    if isinstance(t, np.datetime64):
        t = (t - np.datetime64(0, "s")) / np.timedelta64(1, "s")
    return dt.datetime.fromtimestamp(float(t), dt.timezone.utc)


def peak_rss(children: bool = True) -> int:
    """Peak resident memory of this process (and, with ``children``, of its waited-for
    children), bytes (Linux: ``ru_maxrss`` is in KiB)."""
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if children else 0
    return int(max(self_, kids) * 1024)


def _is_number(v) -> bool:
    import numbers

    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _num(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def software_versions() -> dict:
    """The versions a record keeps: nrsdark_dask and the libraries that shape its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nrsdark_dask", "jwst", "stcal", "numpy", "dask", "zarr", "astropy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    out["python"] = ".".join(map(str, os.sys.version_info[:3]))
    return out


def write_pending(outdir, url: str, res: dict, store, inputs: list[dict], cull,
                  started, wall_s: float, software: dict) -> Path:
    """What :meth:`ResultsDB.record_build` needs, kept in ``outdir/record-pending.json``
    (atomically) when recording failed: :func:`record_pending` records it later."""
    from .paths import atomic_write
    from .store import file_sha256

    doc = {"db": hide_password(url), "files": res["files"], "stats": res.get("stats", {}),
           "sha256": {k: file_sha256(v) for k, v in res["files"].items()},
           "store": str(store), "inputs": [{**r, "date": r["date"].isoformat()
                                            if r.get("date") else None} for r in inputs],
           "cull": str(Path(cull).resolve()) if cull else None,
           "started": started.isoformat(), "wall_s": wall_s, "software": software}
    return atomic_write(Path(outdir) / PENDING, json.dumps(doc, indent=1, default=str))


def record_pending(outdir, db) -> dict:
    """Record the build whose recording failed (``outdir/record-pending.json``, see
    :func:`write_pending`) into ``db`` (default: the database the build was given, when it
    holds no password), then remove the pending file.  Returns ``{reftype: reffile id}``.
    A file changed since the build is refused (its SHA-256 is what the row keeps)."""
    path = Path(outdir) / PENDING
    if not path.is_file():
        raise FileNotFoundError(f"{outdir} holds no {PENDING}: nothing waits to be recorded")
    doc = json.loads(path.read_text())
    url = resolve(db or doc["db"])
    if url is None or "***" in url:
        raise ResultsError(f"give --db: the build's database ({doc['db']}) needs its password")
    from .store import file_sha256

    for reftype, f in doc["files"].items():
        if not Path(f).is_file():
            raise FileNotFoundError(f"{f} of the pending build no longer exists")
        if file_sha256(f) != doc["sha256"][reftype]:
            raise ResultsError(f"{f} changed since its build wrote it: not recorded")
    table = None
    if doc["cull"]:
        from astropy.table import Table

        table = Table.read(doc["cull"], format="ascii.ecsv")
    inputs = [{**r, "date": dt.datetime.fromisoformat(r["date"]) if r["date"] else None}
              for r in doc["inputs"]]
    with ResultsDB(url) as rdb:
        ids = rdb.record_build({"files": doc["files"], "stats": doc["stats"]}, doc["store"],
                               inputs, table, dt.datetime.fromisoformat(doc["started"]),
                               doc["wall_s"], doc["software"])
    path.unlink()
    return ids
