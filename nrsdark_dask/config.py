"""Every threshold of the report in one place, loadable from TOML.

``Config()`` gives the report's values; ``Config.from_toml(path)`` overrides any of them::

    # nrsdark.toml
    [run]
    scheduler = "local:2"
    [select]
    dt_full_frame = 0.02
    [dark]
    telegraph_sigma = 5.0
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


class ConfigError(ValueError):
    pass


def _check(section) -> None:
    """Type and range checks of a section's values (run by every section on creation, so a
    bad TOML value, or a bad value given in Python, is a one-line error before any work).
    Each field's allowed range is its ``metadata``: ``min``/``max`` (inclusive), ``above``
    (exclusive), ``choices``."""
    hints = typing.get_type_hints(type(section))
    for f in fields(section):
        v, kind = getattr(section, f.name), hints[f.name]
        where = f"[{section.SECTION}] {f.name}"
        if kind is bool:
            if not isinstance(v, bool):
                raise ConfigError(f"{where} must be true or false, not {v!r}")
        elif kind is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where} must be an integer, not {v!r}")
        elif kind is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{where} must be a number, not {v!r}")
            object.__setattr__(section, f.name, float(v))
        elif kind is str:
            if not isinstance(v, str):
                raise ConfigError(f"{where} must be a string, not {v!r}")
        elif typing.get_origin(kind) is tuple:
            if not isinstance(v, (tuple, list)) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{where} must be a list of strings, not {v!r}")
            object.__setattr__(section, f.name, tuple(v))
        m, v = f.metadata, getattr(section, f.name)
        if "check" in m and v != f.default:
            try:
                m["check"](v)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        if "choices" in m and v not in m["choices"]:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, m['choices']))}, "
                              f"not {v!r}")
        if "min" in m and v < m["min"]:
            raise ConfigError(f"{where} must be >= {m['min']}, not {v!r}")
        if "max" in m and v > m["max"]:
            raise ConfigError(f"{where} must be <= {m['max']}, not {v!r}")
        if "above" in m and not v > m["above"]:
            raise ConfigError(f"{where} must be > {m['above']}, not {v!r}")


_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


MAX_BYTES = 2**50  # 1 PiB: any larger size is a typo


def parse_bytes(text) -> int:
    """``"1GiB"``, ``"512MB"``, ``"2e9"`` -> bytes; a positive, finite size up to 1 PiB, else
    a one-line ValueError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([kKmMgG]i?)?[bB]?\s*", str(text))
        try:
            value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()] if m else None
        except ValueError:
            value = None
        if value is None:
            raise ValueError(f"cannot read {text!r} as a size (e.g. 1GiB, 512MB, 2e9)")
    if not (math.isfinite(value) and 1 <= value <= MAX_BYTES):
        raise ValueError(f"size {text!r} must be at least 1 byte and at most 1 PiB")
    return int(value)


def _num(default: float, **limits):
    return field(default=default, metadata=limits)


POSITIVE = {"above": 0.0}


@dataclass(frozen=True)
class SelectConfig:
    """Pre-filter (report §3)."""

    SECTION: typing.ClassVar[str] = "select"
    dt_full_frame: float = _num(0.02, min=0.0)  # K, reject ASIC Tmax - Tmin above (full frame)
    dt_subarray: float = _num(0.13, min=0.0)  # K, same for subarrays
    telemetry_pad_s: float = _num(600.0, min=0.0)  # s of telemetry before and after the exposure
    reject_gratings: tuple[str, ...] = ("MIRROR",)  # undispersed light leaks
    reject_gratings_full_frame: tuple[str, ...] = ("PRISM",)  # MSA glow
    accept_without_telemetry: bool = False  # an input with no telemetry is flagged, not guessed

    __post_init__ = _check


@dataclass(frozen=True)
class BiasConfig:
    """Superbias (report §4.1.1)."""

    SECTION: typing.ClassVar[str] = "bias"
    unreliable_sigma: float = _num(5.0, **POSITIVE)

    __post_init__ = _check


@dataclass(frozen=True)
class DarkConfig:
    """Average dark and flags (report §4.1.3-4)."""

    SECTION: typing.ClassVar[str] = "dark"
    # the flags' settings are "<flag>_<keyword>" (reduction.tables.FLAGS); the old names still read
    RENAMED: typing.ClassVar[dict] = {"rtn_sigma": "telegraph_sigma",
                                      "rtn_rule": "telegraph_rule",
                                      "badref_sigma": "bad_reference_sigma",
                                      "unreliable_err_sigma": "high_unc_sigma"}
    clip_sigma: float = _num(3.0, **POSITIVE)
    rc_group1_sigma: float = _num(10.0, **POSITIVE)
    # "any" or "all" of groups 2-3 JUMP_DET/unusable (see kernels.flags.rc_candidates)
    rc_next_groups: str = field(default="any", metadata={"choices": ("any", "all")})
    # a neighbour below this fraction of the candidate's excess is IPC, not a shared CR
    rc_ipc_fraction: float = _num(0.02, min=0.0, max=1.0)
    # a candidate whose ramp drops (a negative jump) is a telegraph pixel, not RC
    rc_telegraph_veto: bool = True
    telegraph_sigma: float = _num(5.0, **POSITIVE)
    neg_jump_sigma: float = _num(3.0, **POSITIVE)  # a negative jump drops by > this x CDS (ingest)
    # "st" (report) or "esa" (N > (1-0.9973)*(Ngroups-1)*4)
    telegraph_rule: str = field(default="st", metadata={"choices": ("st", "esa")})
    bad_reference_sigma: float = _num(4.0, **POSITIVE)
    # "normalized": the error tested as its 2/3 power (kernels.bad_reference_pixels_normalized);
    # "report": as it is
    bad_reference_rule: str = field(default="normalized",
                                    metadata={"choices": ("normalized", "report")})
    hot_rate: float = _num(1.0, **POSITIVE)  # DN/s
    # "significant": (DRK - hot_rate) / UNC > Student's t of hot_sigma for N - 1 degrees of
    # freedom (kernels.hot_pixels_significant); "report": DRK > hot_rate
    hot_rule: str = field(default="significant", metadata={"choices": ("significant", "report")})
    hot_sigma: float = _num(3.0, **POSITIVE)
    high_unc_sigma: float = _num(3.0, **POSITIVE)
    # planes of the DARK (one frame each, NFRAMES = 1); 0: as many frames as the inputs span.
    # At most 10000: 2 x 134 GB of SCI and ERR for a full frame (the longest NIRSpec darks
    # span ~1000 frames)
    frames: int = _num(0, min=0, max=10000)

    __post_init__ = _check


@dataclass(frozen=True)
class DeliveryConfig:
    """Delivery criterion (report §4.2)."""

    SECTION: typing.ClassVar[str] = "delivery"
    snr_trad: float = _num(2.5, **POSITIVE)
    snr_irs2: float = _num(5.0, **POSITIVE)
    snr_clip_sigma: float = _num(3.0, **POSITIVE)

    __post_init__ = _check

    def required(self, family: str) -> float:
        """The SNR a file of readout ``family`` ("TRAD" or "IRS2") must reach."""
        return self.snr_irs2 if family == "IRS2" else self.snr_trad


@dataclass(frozen=True)
class CullConfig:
    """Automatic artifact culling (``nrsdark cull``; report §3, :mod:`nrsdark_dask.stages.cull`).
    Scores are in units of the noise; the limits were set on simulated sets so that at most
    2 % of clean exposures are culled (docs/commands/cull.md)."""

    SECTION: typing.ClassVar[str] = "cull"
    mode_switch_sigma: float = _num(8.0, **POSITIVE)  # mean-frame large-scale structure
    glow_sigma: float = _num(9.0, **POSITIVE)  # diagonal-stripe matched-filter SNR
    persistence_sigma: float = _num(12.0, **POSITIVE)  # SNR of an extended positive region
    frame_scale_px: float = _num(60.0, **POSITIVE)  # e-folding of the picture frame
    persistence_min_area: int = _num(40, min=1)  # pixels of a persistence region
    # a pixel with fewer usable groups (a snowball's core) is left out of the rate images
    min_good_groups: int = _num(5, min=2)
    min_exposures: int = _num(5, min=3)  # fewer: nothing to compare with, no verdict

    __post_init__ = _check


def check_per(text: str) -> None:
    if text != "month" and not (text.isdigit() and int(text) >= 1):
        raise ValueError(f'must be "month" or a number of inputs such as "10", not {text!r}')


@dataclass(frozen=True)
class MasksConfig:
    """Hot-pixel masks per month or per N inputs (``nrsdark masks``, report §7.1,
    :mod:`nrsdark_dask.stages.hotmasks`); HOT itself is ``[dark] hot_rate`` (and ``hot_sigma``),
    under the rule ``[masks] hot_rule`` chooses."""

    SECTION: typing.ClassVar[str] = "masks"
    per: str = field(default="month", metadata={"check": check_per})  # "month" or "N" inputs
    min_inputs: int = _num(2, min=1)  # a bin with fewer joins the next one
    # the [dark] hot rule the masks use: "report" (DRK > hot_rate), because a bin's 2-3 rates
    # cannot test significance (Student's t with 1-2 degrees of freedom) while each monitor
    # exposure's own rate is already good to well under hot_rate; "significant" available
    hot_rule: str = field(default="report", metadata={"choices": ("significant", "report")})

    __post_init__ = _check


def _not_an_option(value) -> None:
    """[run] values become command-line arguments: one that starts with "-" would be read as
    an option."""
    for v in (value,) if isinstance(value, str) else value:
        if v.startswith("-"):
            raise ValueError(f"{v!r} starts with '-' and would be read as an option (write "
                             f"./{v} for a file of that name)")


NOT_AN_OPTION = {"check": _not_an_option}


def parse_scheduler(scheduler: str) -> tuple[str, int | str | None]:
    """Check a ``--scheduler`` string before any work: ``("sync", None)``, ``("threads", N)``,
    ``("local", N)`` or ``("address", "tcp://HOST:PORT")``; a clear ValueError otherwise."""
    text = str(scheduler).strip()
    if text == "sync":
        return text, None
    for kind, unit in (("threads", "thread"), ("local", "worker")):
        if text == kind or text.startswith(kind + ":"):
            n = text.partition(":")[2] or str(os.cpu_count() or 1)
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"bad scheduler {scheduler!r}: {kind}:N needs a {unit} count "
                                 "N >= 1")
            return kind, int(n)
    if text.startswith(("tcp://", "tls://", "ucx://")):
        host, _, port = text.split("://", 1)[1].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad scheduler address {scheduler!r}: use tcp://HOST:PORT")
        return "address", text
    raise ValueError(f"unknown scheduler {scheduler!r}; use threads[:N], local[:N], "
                     "tcp://HOST:PORT or sync")


@dataclass(frozen=True)
class RunConfig:
    """Where heavy commands run (``--scheduler``, ``--task-memory`` override; empty: each
    command's default), and what ``nrsdark run CONFIG.toml`` does (:mod:`nrsdark_dask.cli.run`;
    paths relative to the folder ``nrsdark run`` is started in, as for every command; empty:
    not given)."""

    SECTION: typing.ClassVar[str] = "run"
    scheduler: str = field(default="", metadata={"check": parse_scheduler})
    task_memory: str = field(default="", metadata={"check": parse_bytes})
    pieces: str = field(default="", metadata={"choices": ("", "tiled", "whole")})  # calibrate
    # uncal/ramp/jump files or folders (select)
    inputs: tuple[str, ...] = field(default=(), metadata=NOT_AN_OPTION)
    telemetry: str = field(default="", metadata=NOT_AN_OPTION)  # ASIC temperature table (select)
    exclude: str = field(default="", metadata=NOT_AN_OPTION)  # exclusion list by eye (select)
    requested: int = _num(0, min=0)  # darks requested, for the yield table (0: not shown)
    # the manifest group to calibrate when select splits the inputs
    group: str = field(default="", metadata=NOT_AN_OPTION)
    # local reference files for detector1 (empty: CRDS)
    refkit: str = field(default="", metadata=NOT_AN_OPTION)
    # the Zarr store of calibrated ramps (appended to)
    store: str = field(default="", metadata=NOT_AN_OPTION)
    # the run's folder: manifest, cull table, reffiles/, reffiles/qa/
    outdir: str = field(default="", metadata=NOT_AN_OPTION)
    cull: bool = False  # score and cull artifacts (nrsdark cull) before the build
    mask_in: str = field(default="", metadata=NOT_AN_OPTION)  # input MASK (build)
    # previous reference files (analyze --compare)
    compare: tuple[str, ...] = field(default=(), metadata=NOT_AN_OPTION)
    # the results database (nrsdark_dask.results): an SQLAlchemy URL or an SQLite path;
    # empty: build and run record into SQLite beside the store; "none": nothing recorded
    db: str = field(default="", metadata=NOT_AN_OPTION)

    __post_init__ = _check


def _iso_date(text: str) -> None:
    import datetime as dt

    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date (YYYY-MM-DD)") from None


def _http_url(text: str) -> None:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise ValueError(f"{text!r} is not an http(s) URL")


@dataclass(frozen=True)
class FetchConfig:
    """``nrsdark fetch`` and the monitor's ``source = "mast"``
    (:mod:`nrsdark_dask.stages.fetch`): the
    NIRSpec dark exposures (EXP_TYPE NRS_DARK) of these programs at MAST, ``uncal`` products."""

    SECTION: typing.ClassVar[str] = "fetch"
    # the calibration programs of the report (§3, Tables 1-2) and their successors
    programs: tuple[str, ...] = ("1121", "1130", "1484", "1495")
    detectors: tuple[str, ...] = ()  # NRS1, NRS2 (empty: both)
    readpatts: tuple[str, ...] = ()  # e.g. NRSRAPID, NRSIRS2RAPID (empty: all)
    subarrays: tuple[str, ...] = ()  # e.g. FULL, SUBS200A1 (empty: all)
    start: str = field(default="", metadata={"check": _iso_date})  # first date (YYYY-MM-DD)
    end: str = field(default="", metadata={"check": _iso_date})  # last date, inclusive
    # where the files go (the monitor: its first [monitor] inputs folder)
    into: str = field(default="", metadata=NOT_AN_OPTION)
    mast_url: str = field(default="https://mast.stsci.edu", metadata={"check": _http_url})
    page_size: int = _num(500, min=1, max=5000)  # search results per request
    timeout_s: float = _num(120.0, **POSITIVE)  # no answer (or no byte) for this long: error

    __post_init__ = _check


@dataclass(frozen=True)
class TelemetryConfig:
    """ASIC temperatures from the engineering database (:mod:`nrsdark_dask.telemetry`;
    ``select --telemetry edb``, ``[monitor] telemetry = "edb"``)."""

    SECTION: typing.ClassVar[str] = "telemetry"
    edb_url: str = field(default="https://mast.stsci.edu", metadata={"check": _http_url})
    mnemonic_nrs1: str = "IGDP_NRSD_ALG_A1_TEMP"  # NIRSpec converted ASIC #1 temperature (K)
    mnemonic_nrs2: str = "IGDP_NRSD_ALG_A2_TEMP"  # NIRSpec converted ASIC #2 temperature (K)
    # jwst's EDB cache (empty: beside the telemetry table, edb_cache/)
    cache: str = field(default="", metadata=NOT_AN_OPTION)
    timeout_s: float = _num(120.0, **POSITIVE)
    retries: int = _num(2, min=0, max=10)  # jwst's client retries server errors (https)

    __post_init__ = _check

    def mnemonics(self) -> dict:
        return {"NRS1": self.mnemonic_nrs1, "NRS2": self.mnemonic_nrs2}


@dataclass(frozen=True)
class MonitorConfig:
    """``nrsdark monitor CONFIG.toml`` (:mod:`nrsdark_dask.stages.monitor`; paths relative to the
    folder it is started in).  Where it computes: ``[run] scheduler``."""

    SECTION: typing.ClassVar[str] = "monitor"
    # uncal darks: folders (or files) looked at on every run; what is new is taken in
    inputs: tuple[str, ...] = field(default=(), metadata=NOT_AN_OPTION)
    # "mast": each run first fetches what is new at MAST ([fetch]) into inputs[0]
    source: str = field(default="", metadata={"choices": ("", "mast")})
    # ASIC temperature table, or "edb": from the engineering database ([telemetry]) into
    # <outdir>/telemetry.ecsv
    telemetry: str = field(default="", metadata=NOT_AN_OPTION)
    exclude: str = field(default="", metadata=NOT_AN_OPTION)  # exclusion list by eye
    refkit: str = field(default="", metadata=NOT_AN_OPTION)  # local references (empty: CRDS)
    stores: str = field(default="stores", metadata=NOT_AN_OPTION)  # <stores>/<group>.zarr
    # <outdir>/manifest.ecsv, <outdir>/<group>/T<k>/ (reference files), <outdir>/trends/
    outdir: str = field(default="", metadata=NOT_AN_OPTION)
    cull: bool = False  # score and cull artifacts in each store before its periods
    # results database (URL or SQLite path); empty: <stores>/nrsdark_results.sqlite
    db: str = field(default="", metadata=NOT_AN_OPTION)

    __post_init__ = _check


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    dark: DarkConfig = field(default_factory=DarkConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    cull: CullConfig = field(default_factory=CullConfig)
    masks: MasksConfig = field(default_factory=MasksConfig)

    @classmethod
    def from_toml(cls, path: str | Path | Config | None) -> Config:
        if path is None:
            return cls()
        if isinstance(path, Config):  # already read
            return path
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        cfg = cls()
        sections = {f.name: f for f in fields(cls)}
        for name, values in data.items():
            if name not in sections:
                raise ConfigError(f"{path}: unknown section [{name}]; known: {', '.join(sections)}")
            sub = getattr(cfg, name)
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: [{name}] must be a table of key = value")
            known = {f.name: f for f in fields(sub)}
            renamed = getattr(sub, "RENAMED", {})
            for key in set(values) & set(renamed):
                warnings.warn(f"{path}: [{name}] {key} is now {renamed[key]}", FutureWarning,
                              stacklevel=2)
                values[renamed[key]] = values.pop(key)
            bad = set(values) - set(known)
            if bad:
                raise ConfigError(f"{path}: unknown keys in [{name}]: {', '.join(sorted(bad))}")
            try:
                cfg = replace(cfg, **{name: replace(sub, **values)})
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cfg

    def as_dict(self) -> dict:
        return asdict(self)


def ingest_settings(cfg: Config) -> dict:
    """The settings ``calibrate`` applies at ingest (the negative-jump counts of the RTN rule
    are made there), recorded in a store's provenance (``ingest``): a build of that store
    cannot change them."""
    return {"neg_jump_sigma": cfg.dark.neg_jump_sigma}


def store_ingest(provenance: dict) -> dict:
    """A store's ingest settings (stores from before the record used the defaults)."""
    return dict(provenance.get("ingest") or ingest_settings(Config()))


def settings_history(cfg: Config) -> list[str]:
    """One HISTORY line per science section: every threshold the build used."""
    out = []
    for section in (cfg.bias, cfg.dark, cfg.delivery):
        values = ", ".join(f"{f.name}={getattr(section, f.name)}" for f in fields(section))
        out.append(f"Settings [{section.SECTION}]: {values}")
    return out
