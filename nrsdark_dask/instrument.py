"""NIRSpec detector facts: readout patterns, subarray geometry, frame times, IRS2 layout, DQ bits.

Everything here is a plain fact with its source; no IO, no dask.

Orientation
-----------
All arrays in this project are in DMS ("science") orientation, shape ``(..., y, x)``, as jwst
uses them.  The detector is read in *detector* orientation, which for NIRSpec is the transpose
of DMS (NRS2 additionally flipped in both axes), see ``jwst.refpix.irs2_subtract_reference``
(``correct_model``).  In detector orientation the four 512-column output amplifiers are read in
parallel, pixel by pixel along a detector row (the *fast* direction), rows one after the other.
In DMS orientation the amplifier boundaries therefore run along y: four strips of 512 rows.
:func:`dms_to_detector` / :func:`detector_to_dms` convert.

Sources
-------
* [JDox-RP] JDox "NIRSpec Detector Readout Modes and Patterns" (NRS, NRSRAPID, NRSIRS2,
  NRSIRS2RAPID; frames per group).
* [JDox-SUB] JDox "NIRSpec Detector Subarrays" (subarray names and sizes; single output;
  TRAD readout only).
* [JWST-TEST] jwst 3.0 test data: ``jwst/extract_2d/tests/test_nirspec.py`` (SUBSTRT2 of
  SUB2048 = 946, SUBS200A1 = 1041), ``jwst/refpix/tests/test_refpix.py`` (SUB512 32 x 512,
  SUBS200A1 64 x 2048).
* [JWST-IRS2] ``jwst/refpix/irs2_subtract_reference.py`` (``make_irs2_mask``; 14.5889 s IRS2
  frame time; 712 pixel times per IRS2 row).
* Frame time, SIDECAR ASIC timing with 10 us per pixel: ``tframe = (n_fast/n_out + 12) *
  (n_slow + 1) * 10 us``, which gives JDox's 10.737 s full frame
  (0.90156 s for SUB2048, 5.49132 s for ALLSLITS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- DQ bits: taken from stdatamodels, never re-typed ------------------------------------------
# ``DQ`` (stdatamodels' pixel flags), ``GROUP_UNUSABLE`` (group flags that make a count
# unusable: jwst's saturation step sets only SATURATED in GROUPDQ, and ramp fitting ignores such
# groups, so do the average ramp and the RC rule) and ``RC_NEXT_FLAGS`` (report §4.1.3: an RC
# candidate's next two groups are flagged with one of these) are made on first use (PEP 562):
# importing stdatamodels' datamodels takes ~0.5 s, which commands that need no DQ bits (``nrsdark
# --help``, ``plan``) do not pay.
_DQ_NAMES = ("DQ", "GROUP_UNUSABLE", "RC_NEXT_FLAGS")


def __getattr__(name):
    if name not in _DQ_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from stdatamodels.jwst.datamodels.dqflags import pixel

    unusable = pixel["DO_NOT_USE"] | pixel["SATURATED"]
    globals().update(DQ=pixel, GROUP_UNUSABLE=unusable,
                     RC_NEXT_FLAGS=pixel["JUMP_DET"] | unusable)
    return globals()[name]

FULL_SIZE = 2048
"""Pixels per side of a NIRSpec H2RG (science orientation, reference pixels included)."""
N_REF = 4
"""Reference pixel border width of a full frame (outer 4 rows and columns)."""
N_AMP = 4
"""Output amplifiers used in full-frame readout."""
PIXEL_TIME = 10e-6
"""Seconds per pixel sample (SIDECAR ASIC, 100 kHz)."""
ROW_OVERHEAD_TRAD = 12
"""New-row overhead in pixel times, traditional readout."""
IRS2_NORMAL = 16
"""IRS2: normal samples between reference-sample blocks (NRS_NORM) [JWST-IRS2]."""
IRS2_REFERENCE = 4
"""IRS2: interleaved reference samples per block (NRS_REF) [JWST-IRS2]."""
IRS2_ROW_TIME = 712
"""IRS2: pixel times per detector row, overheads included [JWST-IRS2]."""
IRS2_FRAME_TIME = 14.5889
"""IRS2 full-frame frame time in s [JWST-IRS2]."""
IRS2_RAW_SIZE = 3200
"""IRS2 raw DMS y size: 5 outputs x 640 samples (reference output first for NRS1)."""


@dataclass(frozen=True)
class ReadPattern:
    """One NIRSpec readout pattern [JDox-RP]."""

    name: str
    family: str  # "TRAD" or "IRS2"
    nframes: int
    groupgap: int


READ_PATTERNS: dict[str, ReadPattern] = {
    p.name: p
    for p in (
        ReadPattern("NRSRAPID", "TRAD", 1, 0),
        ReadPattern("NRS", "TRAD", 4, 1),
        ReadPattern("NRSIRS2RAPID", "IRS2", 1, 0),
        ReadPattern("NRSIRS2", "IRS2", 5, 0),
    )
}

READOUT_FAMILIES = ("TRAD", "IRS2")
DETECTORS = ("NRS1", "NRS2")


@dataclass(frozen=True)
class Subarray:
    """Geometry of a readout subarray in 1-indexed DMS pixels (SUBSTRT/SUBSIZE keywords).

    ``xstart, ystart`` are SUBSTRT1/2, ``xsize, ysize`` SUBSIZE1/2.  Real NIRSpec subarrays move
    in y with the grating/filter so that the slit spectra fall inside [JDox-SUB]; the simulator
    uses the nominal positions below (jwst test data where it has them [JWST-TEST], else placed
    inside ALLSLITS), and the pipeline always reads the actual keywords of its inputs.
    """

    name: str
    xstart: int
    ystart: int
    xsize: int
    ysize: int

    @property
    def n_outputs(self) -> int:
        return N_AMP if self.name == "FULL" else 1

    @property
    def slices(self) -> tuple[slice, slice]:
        """0-indexed (y, x) slices into a full frame."""
        return (
            slice(self.ystart - 1, self.ystart - 1 + self.ysize),
            slice(self.xstart - 1, self.xstart - 1 + self.xsize),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ysize, self.xsize)

    def frame_time(self, family: str = "TRAD") -> float:
        """Frame time in seconds (see module docstring for the formula and its source)."""
        if family == "IRS2":
            if self.name != "FULL":
                raise ValueError("IRS2 readout exists only for FULL frame")
            return IRS2_FRAME_TIME
        # fast direction = DMS y (detector columns), slow = DMS x (detector rows)
        n_fast, n_slow = self.ysize, self.xsize
        return round((n_fast / self.n_outputs + ROW_OVERHEAD_TRAD) * (n_slow + 1) * PIXEL_TIME, 5)


SUBARRAYS: dict[str, Subarray] = {
    s.name: s
    for s in (
        Subarray("FULL", 1, 1, 2048, 2048),
        Subarray("SUB2048", 1, 946, 2048, 32),  # ystart [JWST-TEST]
        Subarray("SUB512", 1, 946, 512, 32),
        Subarray("SUB512S", 1, 946, 512, 16),
        Subarray("SUB1024A", 1, 946, 1024, 32),
        Subarray("SUB1024B", 1025, 946, 1024, 32),
        Subarray("ALLSLITS", 1, 897, 2048, 256),
        Subarray("SUBS200A1", 1, 1041, 2048, 64),  # ystart [JWST-TEST]
        Subarray("SUBS200A2", 1, 1009, 2048, 64),
        Subarray("SUBS400A1", 1, 977, 2048, 128),
    )
}


def get_subarray(name: str) -> Subarray:
    try:
        return SUBARRAYS[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown subarray {name!r}; known: {', '.join(SUBARRAYS)}"
        ) from None


def get_read_pattern(name: str) -> ReadPattern:
    try:
        return READ_PATTERNS[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown readout pattern {name!r}; known: {', '.join(READ_PATTERNS)}"
        ) from None


def check_detector(name: str) -> str:
    if name.upper() not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}")
    return name.upper()


def group_time(pattern: ReadPattern, tframe: float) -> float:
    """TGROUP = (NFRAMES + GROUPGAP) * TFRAME."""
    return (pattern.nframes + pattern.groupgap) * tframe


def group_times(pattern: ReadPattern, tframe: float, ngroups: int) -> np.ndarray:
    """Effective time of each group since reset (mean of its frames), seconds.

    Frame k (0-based) ends at ``(k + 1) * tframe``; group g averages frames
    ``g*(nframes+groupgap) ... + nframes - 1``.  This is the time convention of the jwst
    dark step (``dark[g]`` is the dark at group g) and of ramp fitting.
    """
    g = np.arange(ngroups)
    first = g * (pattern.nframes + pattern.groupgap)
    return ((first + (pattern.nframes + 1) / 2.0) * tframe).astype(np.float64)


NIRSPEC_EXP_TYPES = ("NRS_AUTOFLAT", "NRS_AUTOWAVE", "NRS_BRIGHTOBJ", "NRS_CONFIRM", "NRS_DARK",
                     "NRS_FIXEDSLIT", "NRS_FOCUS", "NRS_IFU", "NRS_IMAGE", "NRS_LAMP",
                     "NRS_MIMF", "NRS_MSASPEC", "NRS_MSATA", "NRS_TACONFIRM", "NRS_TACQ",
                     "NRS_TASLIT", "NRS_VERIFY", "NRS_WATA")
"""Every NIRSpec exposure type: all run calwebb_detector1, with superbias and dark_current, so
bias and dark reference files apply to all of them (P_EXP_TY).  The ``NRS_*`` values of
stdatamodels' EXP_TYPE enum and of CRDS's ``nirspec_all.tpn`` (tested equal to the schema)."""


def family_patterns(family: str) -> tuple[str, ...]:
    """The readout patterns a bias or dark of a readout family serves (P_READPA): TRAD darks
    apply to NRS and NRSRAPID, IRS2 darks to NRSIRS2 and NRSIRS2RAPID (report §2, Table 1)."""
    return tuple(p.name for p in READ_PATTERNS.values() if p.family == family)


_MOST = ("G140M", "G140H", "G235M", "G235H", "G395H", "PRISM", "MIRROR")
DISPERSER_GROUPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "SUB2048": (("G140M", "PRISM"), ("G140H", "G235M"), ("G235H",), ("G395M",), ("G395H",)),
    "SUBS200A1": (_MOST, ("G395M",)),
    "SUBS200A2": (_MOST, ("G395M",)),
    "SUBS400A1": (_MOST, ("G395M",)),
    "SUB512": (("G140M", "PRISM"),),
    "SUB512S": (("G140M", "PRISM"),),
}
"""Subarray darks per disperser group (report §6, Table 5): the subarray sits elsewhere on the
detector for each group of gratings, so a subarray dark serves one group (P_GRATIN).  Full
frames, ALLSLITS (which encloses the other subarrays) and SUB1024A/B (no delivery since
Commissioning) serve every grating."""


def disperser_group(subarray: str, grating: str) -> tuple[str, ...] | None:
    """The gratings a dark of ``subarray`` taken with ``grating`` serves; None: all of them.
    A grating outside the subarray's listed groups is a group of its own."""
    groups = DISPERSER_GROUPS.get(subarray)
    if groups is None:
        return None
    return next((g for g in groups if grating in g), (grating,))


def total_frames(pattern: ReadPattern, ngroups: int) -> int:
    """Frames a ramp spans: ``ngroups x nframes + (ngroups - 1) x groupgap`` (stcal
    ``dark_sub``'s count, stcal#120)."""
    return ngroups * pattern.nframes + (ngroups - 1) * pattern.groupgap


def exposure_duration(pattern: ReadPattern, tframe: float, ngroups: int) -> float:
    """Seconds from the reset to the end of the last frame of the last group (one reset
    frame, then the groups' frames and gaps)."""
    return (total_frames(pattern, ngroups) + 1) * tframe


def frame_times(tframe: float, nframes: int) -> np.ndarray:
    """Time of each frame since reset: frame k (0-based) at ``(k + 1) x tframe``.  A DARK
    reference file is one frame per group (NFRAMES = 1, GROUPGAP = 0, stcal#120): plane k is
    the dark at frame k, and stcal ``dark_sub`` averages planes to match the science
    readout."""
    return ((np.arange(nframes) + 1.0) * tframe).astype(np.float64)


def bias_weight(pattern: ReadPattern, tframe: float) -> float:
    """``a`` of the superbias ``(1 + a) g1 - a g2``: groups 1 and 2 projected linearly back
    to time 0 (report §4.1.1), ``a = t1 / (t2 - t1)`` with the groups' mean frame times.  One
    frame per group (NRSRAPID, NRSIRS2RAPID): a = 1, the report's ``2 g1 - g2``; NRS (4 frames
    averaged, 1 skipped): 0.5; NRSIRS2 (5 averaged): 0.6."""
    t1, t2 = group_times(pattern, tframe, 2)
    return float(t1 / (t2 - t1))


def fast_slow_axes(detector: str) -> tuple[int, int]:
    """FASTAXIS, SLOWAXIS keywords (DMS): NRS1 reads along +y then +x; NRS2 along -y, -x."""
    return (2, 1) if detector == "NRS1" else (-2, -1)


def reference_pixel_mask(sub: Subarray) -> np.ndarray:
    """Boolean (ysize, xsize) mask of the reference pixels a subarray contains."""
    full = np.zeros((FULL_SIZE, FULL_SIZE), dtype=bool)
    full[:N_REF, :] = full[-N_REF:, :] = True
    full[:, :N_REF] = full[:, -N_REF:] = True
    return full[sub.slices]


def amplifier_index(sub: Subarray) -> np.ndarray:
    """Output amplifier (0-3) of each DMS row of a subarray; subarrays use one output."""
    y = np.arange(sub.ystart - 1, sub.ystart - 1 + sub.ysize)
    if sub.n_outputs == 1:
        return np.zeros(sub.ysize, dtype=np.int8)
    return (y // (FULL_SIZE // N_AMP)).astype(np.int8)


# --- IRS2 raw layout -----------------------------------------------------------------------
def irs2_normal_rows(detector: str) -> np.ndarray:
    """Boolean mask over the 3200 raw DMS rows of an IRS2 frame: True where a normal pixel is.

    Layout in detector (time) order, per 640-sample output: 8 normal samples, then 31 times
    (4 reference + 16 normal), then 4 reference and 8 normal: 512 normal + 128 reference.  The
    first 640 samples are the reference output.  Our own implementation of the layout; a test
    checks it against ``jwst.refpix.irs2_subtract_reference.make_irs2_mask``.  For NRS2 the
    DMS order is reversed (reference output last), as ``strip_ref_pixels`` does.
    """
    per_out = IRS2_RAW_SIZE // 5
    block = IRS2_NORMAL + IRS2_REFERENCE
    section = np.ones(per_out, dtype=bool)
    for start in range(IRS2_NORMAL // 2, per_out, block):
        section[start : start + IRS2_REFERENCE] = False
    mask = np.concatenate([np.zeros(per_out, dtype=bool)] + [section] * N_AMP)
    return mask if detector == "NRS1" else mask[::-1].copy()


def dms_to_detector(a: np.ndarray, detector: str) -> np.ndarray:
    """View of a (..., y, x) DMS array in detector orientation (rows = slow, cols = fast)."""
    t = np.swapaxes(a, -1, -2)
    return t if detector == "NRS1" else t[..., ::-1, ::-1]


def detector_to_dms(a: np.ndarray, detector: str) -> np.ndarray:
    """Inverse of :func:`dms_to_detector`."""
    if detector != "NRS1":
        a = a[..., ::-1, ::-1]
    return np.swapaxes(a, -1, -2)
