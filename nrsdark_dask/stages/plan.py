"""``nrsdark plan``: how many dark files to request (report §9.3-9.4).

The SNR of a dark grows as the square root of its number of inputs (report Table 4), so a
target SNR ``Y`` from files of per-file SNR ``X`` needs ``N = (Y / X)^2`` clean files per
epoch; with a usable fraction ``F`` (what survives the telemetry limits and the culls) an
epoch must request ``N / F`` files.  Both are whole files, rounded up, with a tenth of a file
of slack: the report plans 12 clean files for SNR ~6 and, at 63 % usable, 19 a epoch (12 /
0.63 = 19.05), 76 over 4 epochs; its "12 files" is itself (6 / 1.73)^2 = 12.03.

Time: an exposure lasts from its reset to its last frame (``instrument.exposure_duration``:
an IRS2 full frame of 200 NRSIRS2RAPID groups, 2932 s); the charged time multiplies the
science time by the program's overhead factor, by default the report's draft Cycle 4 APT
program's, 92 h charged for 72.1 h of science (1.276).  For the report's IRS2 epoch of 19
files this gives 15.5 h of science and 19.7 h charged; the report quotes 19.26 h an epoch.

With a store, the per-file SNR is measured from it: the delivery SNR of its rate images
(:func:`nrsdark_dask.reduction.delivery.rate_snr`, what a build of all of them would reach) divided by
the square root of their number.
"""

from __future__ import annotations

import math
import warnings

from .. import instrument as inst

SLACK = 0.1  # files: 19.05 needed -> 19 requested, as the report does
REPORT_OVERHEAD = 92.0 / 72.1  # charged / science hours, report §9.4


def whole_files(x: float) -> int:
    """Files needed for a (fractional) count: up, unless within ``SLACK`` of the integer below."""
    return max(1, math.ceil(x - SLACK))


def plan(per_file_snr: float, target_snr: float, usable_fraction: float, epochs: int = 1,
         duration_s: float | None = None, overhead: float = REPORT_OVERHEAD) -> dict:
    """The plan as one flat dict (the keys of ``nrsdark plan --json``)."""
    for name, v in (("per-file SNR", per_file_snr), ("target SNR", target_snr),
                    ("overhead", overhead)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, not {v!r}")
    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable fraction must be in (0, 1], not {usable_fraction!r}")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive whole number, not {epochs!r}")
    clean = whole_files((target_snr / per_file_snr) ** 2)
    request = whole_files(clean / usable_fraction)
    out = {
        "per_file_snr": per_file_snr, "target_snr": target_snr,
        "usable_fraction": usable_fraction, "epochs": int(epochs),
        "clean_per_epoch": clean, "expected_snr": round(per_file_snr * math.sqrt(clean), 3),
        "request_per_epoch": request, "request_total": request * int(epochs),
        "expected_clean_per_epoch": round(request * usable_fraction, 2),
    }
    if duration_s:
        science = request * duration_s / 3600.0
        out.update(exposure_s=round(duration_s, 1), overhead=round(overhead, 4),
                   science_hours_per_epoch=round(science, 2),
                   charged_hours_per_epoch=round(science * overhead, 2),
                   science_hours_total=round(science * epochs, 2),
                   charged_hours_total=round(science * overhead * epochs, 2))
    return out


def exposure_seconds(readpatt: str, ngroups: int, subarray: str = "FULL") -> float:
    """Duration of one exposure of the given readout."""
    pattern = inst.get_read_pattern(readpatt)
    tframe = inst.get_subarray(subarray).frame_time(pattern.family)
    return inst.exposure_duration(pattern, tframe, ngroups)


def measured_per_file_snr(store, config=None) -> dict:
    """Per-file SNR of a store: the delivery SNR of all its rate images over sqrt(N); with the
    store's readout (for the time)."""
    import dask

    from ..config import Config
    from ..reduction.delivery import rate_snr
    from ..store import open_dataset

    ds = open_dataset(store)
    cfg = Config.from_toml(config)
    if ds.sizes["exposure"] < 2:
        raise ValueError(f"{store} holds {ds.sizes['exposure']} exposure(s): a per-file SNR "
                         "needs at least 2 (UNC is their scatter)")
    with warnings.catch_warnings():  # fully masked pixels divide by zero; they are left out
        warnings.simplefilter("ignore", RuntimeWarning)
        snr = float(dask.compute(rate_snr(ds, cfg)["snr"], scheduler="threads")[0])
    lay = ds.attrs["layout"]
    return {"store_snr": round(snr, 3), "store_inputs": ds.sizes["exposure"],
            "per_file_snr": snr / math.sqrt(ds.sizes["exposure"]),
            "readpatt": lay["readpatt"], "ngroups": lay["ngroups"], "subarray": lay["subarray"]}
