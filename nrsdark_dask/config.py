"""Every threshold of the report in one place (SPEC.md), loadable from TOML.

``Config()`` gives the report's values; ``Config.from_toml(path)`` overrides any of them::

    # nrsdark.toml
    [select]
    dt_full_frame = 0.02
    [dark]
    rtn_sigma = 5.0
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class SelectConfig:
    """Pre-filter (SPEC §2, report §3)."""

    dt_full_frame: float = 0.02  # K, reject ASIC Tmax - Tmin above this (full frame)
    dt_subarray: float = 0.13  # K, same for subarrays
    telemetry_pad_s: float = 600.0  # s of telemetry before and after the exposure in the window
    reject_gratings: tuple[str, ...] = ("MIRROR",)  # undispersed light leaks
    reject_gratings_full_frame: tuple[str, ...] = ("PRISM",)  # MSA glow
    accept_without_telemetry: bool = False  # an input with no telemetry is flagged, not guessed


@dataclass(frozen=True)
class BiasConfig:
    """Superbias (SPEC §3, report §4.1.1)."""

    unreliable_sigma: float = 5.0


@dataclass(frozen=True)
class DarkConfig:
    """Average dark and flags (SPEC §6-§7, report §4.1.3-4)."""

    clip_sigma: float = 3.0
    rc_group1_sigma: float = 10.0
    rc_next_groups: str = "any"  # "any" or "all" of groups 2-3 JUMP_DET/unusable (see kernels)
    rc_ipc_fraction: float = 0.02  # a neighbour below this fraction is IPC, not a shared CR
    rtn_sigma: float = 5.0
    neg_jump_sigma: float = 3.0  # a negative jump drops by > this x the CDS scatter (ingest)
    rtn_rule: str = "st"  # "st" (report) or "esa" (N > (1-0.9973)*(Ngroups-1)*4)
    badref_sigma: float = 4.0
    hot_rate: float = 1.0  # DN/s
    unreliable_err_sigma: float = 3.0


@dataclass(frozen=True)
class DeliveryConfig:
    """Delivery criterion (SPEC §8, report §4.2)."""

    snr_trad: float = 2.5
    snr_irs2: float = 5.0
    snr_clip_sigma: float = 3.0


@dataclass(frozen=True)
class Config:
    select: SelectConfig = field(default_factory=SelectConfig)
    bias: BiasConfig = field(default_factory=BiasConfig)
    dark: DarkConfig = field(default_factory=DarkConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @classmethod
    def from_toml(cls, path: str | Path | None) -> Config:
        if path is None:
            return cls()
        data = tomllib.loads(Path(path).read_text())
        cfg = cls()
        sections = {f.name: f for f in fields(cls)}
        for name, values in data.items():
            if name not in sections:
                raise ValueError(f"{path}: unknown section [{name}]; known: {', '.join(sections)}")
            sub = getattr(cfg, name)
            known = {f.name: f for f in fields(sub)}
            bad = set(values) - set(known)
            if bad:
                raise ValueError(f"{path}: unknown keys in [{name}]: {', '.join(sorted(bad))}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            cfg = replace(cfg, **{name: replace(sub, **values)})
        return cfg

    def as_dict(self) -> dict:
        return asdict(self)
