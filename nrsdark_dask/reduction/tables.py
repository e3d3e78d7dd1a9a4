"""The product and flag tables: every array a build makes, and every pixel-flag rule, declared
once (the way flox declares each aggregation once).

:data:`PRODUCTS`: ``reduce`` builds one lazy array per row, ``export`` writes the rows that
have a reference-file place.  A row says what a product is (dims, dtype, units, meaning),
what is written where its value is unknown (``fill``) and which DQ bit of its file then marks
the pixel (``fill_flag``), and where it lands (reference-file type and FITS extension;
``None``: QA only).

:data:`FLAGS`: one row per pixel flag, executable.  A row names its rule (kernel, inputs,
statistics, how per-input candidates combine, settings), the DQ bits it sets in the DARK and
the MASK, whether it makes the DARK UNRELIABLE_DARK, and from how many inputs it is reliable.
Everything iterates over it: ``reduce`` evaluates the rules, makes the frame statistics they
declare and assembles the DQ planes, ``export`` writes DQ_DEF, ``analyze`` counts the flags
(read back from the DARK by each flag's first DQ bit, its :attr:`Flag.label`, unique: checked
here on import) and warns, the CLI prints the counts, and the flag table of the docs is
:func:`flags_markdown`, made when the docs are built.  A flag has one name: its (y, x)
product, its statistic ``n_<name>``, its settings ``[dark] <name>_<keyword>``.  Adding a flag
rule end to end is three edits: a kernel (any public function of ``kernels/flags.py`` is
``kernels.<name>``), a row here, and one ``[dark]`` field per setting
(``tests/test_flag_table.py`` makes those three edits to a copy of the package and runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .. import kernels as K


@dataclass(frozen=True)
class Product:
    name: str
    dims: tuple[str, ...]
    dtype: str
    units: str = ""
    long_name: str = ""
    fill: float | int | None = None  # value written where the product is not finite
    fill_flag: str | None = None  # DQ bit of the file's DQ plane that marks a fill
    reftype: str | None = None  # "dark", "superbias", "mask"; None: QA only
    extname: str | None = None
    attr: str | None = None  # the stdatamodels model's attribute for the extension


COMBINE = {
    # how per-input candidates (E, y, x) become the flag (y, x); "pixel": the kernel's own
    # answer is the flag
    "pixel": "the kernel's answer",
    "all": "in every input",
    "more_than_half": "in more than half of the inputs",
    "more_than_one": "in more than one input",
}


@dataclass(frozen=True)
class Rule:
    """How a flag is computed: ``kernel(*inputs, *statistics, **settings, **bits)``.

    ``inputs``: per-exposure images of the store, (E, y, x) (``group1``, ``rc_next``,
    ``neg_jumps``, ``jump_counts``, ``pixeldq``, ``rate``, ...) or images of the build, (y, x)
    (``mean_rate``, ``unc``; with ``scope="reference"``: ``ref_counts``, ``ref_err``, the
    group-averaged average ramp and its error).  ``statistics``: whole-frame statistics of
    the build, per exposure (E,) or scalars: ``g1_mean``, ``g1_std``, ``ngroups``,
    ``n_exposures``, or ``<input>_mean`` / ``<input>_std`` of any input over the active
    pixels, ``<input>_clipped_mean`` / ``_clipped_std`` (3-sigma clipped) of a (y, x) one
    (the build makes whichever a row declares).
    ``settings``: kernel keywords, each the ``[dark] <flag>_<keyword>`` setting.  ``bits``:
    kernel keywords given the sum of the named DQ bits.  ``halo``: pixels of the neighbouring
    tiles the kernel sees.  ``scope``: ``"active"`` (science pixels, tile by tile),
    ``"frame"`` (every pixel, tile by tile) or ``"reference"`` (all reference pixels of the
    frame in one call; inputs and settings only)."""

    name: str
    kernel: Callable
    inputs: tuple[str, ...]
    statistics: tuple[str, ...] = ()
    combine: str = "pixel"
    settings: tuple[str, ...] = ()
    bits: tuple[tuple[str, tuple[str, ...]], ...] = ()
    halo: int = 0
    scope: str = "active"
    description: str = ""

    def __post_init__(self):
        if self.combine not in COMBINE:
            raise ValueError(f"rule {self.name}: combine must be one of {', '.join(COMBINE)}")
        if self.scope not in ("active", "frame", "reference"):
            raise ValueError(f"rule {self.name}: scope must be 'active', 'frame' or "
                             "'reference'")
        if self.scope == "reference" and (self.statistics or self.bits or self.halo
                                          or self.combine != "pixel"):
            # reduction.graph._reference_flag hands the kernel the reference pixels and
            # settings only
            raise ValueError(f"rule {self.name}: a reference-pixel rule takes inputs and "
                             "settings only (no statistics, bits, halo or combine)")


@dataclass(frozen=True)
class Flag:
    """One pixel flag: its rules (the first is the default; with several, ``[dark]
    <name>_rule`` chooses), what it sets, and how far to trust it."""

    name: str  # the one name: (y, x) product, statistic n_<name>, settings <name>_<keyword>
    long_name: str
    rules: tuple[Rule, ...]
    dark_dq: tuple[str, ...] = ()  # bits set in the DARK pixel DQ
    mask_dq: tuple[str, ...] = ()  # bits set in the MASK
    unreliable_dark: bool = True  # also UNRELIABLE_DARK in the DARK (report §4.1.4 (2))
    counted: bool = True  # a statistic n_<name>, printed and analyzed
    excludes: tuple[str, ...] = ()  # flags (earlier rows) whose pixels this one leaves alone
    average_ramp: bool = False  # the pixel's DARK cube is its average ramp, not rate x time
    ipc: bool = False  # so is the cube of its 4-neighbours (inter-pixel capacitance)
    # (N, what was measured): fewer inputs than N draw a warning (analyze)
    reliable_n: tuple[int, str] | None = None

    @property
    def stat(self) -> str | None:
        return f"n_{self.name}" if self.counted else None

    @property
    def label(self) -> str:
        """How a count of it is printed: its first DQ bit's name."""
        return (self.dark_dq or self.mask_dq or (self.name.upper(),))[0]

    def rule(self, dark_config) -> Rule:
        """The rule ``[dark] <name>_rule`` chooses (the first without a setting)."""
        if len(self.rules) == 1:
            return self.rules[0]
        chosen = getattr(dark_config, f"{self.name}_rule")
        for r in self.rules:
            if r.name == chosen:
                return r
        raise ValueError(f"[dark] {self.name}_rule must be one of "
                         f"{', '.join(r.name for r in self.rules)}, not {chosen!r}")

    def settings(self, dark_config, rule: Rule | None = None) -> dict:
        """The rule's kernel keywords from ``[dark]``."""
        rule = rule or self.rule(dark_config)
        return {k: getattr(dark_config, f"{self.name}_{k}") for k in rule.settings}


G3, F3, YX, RAW = ("group", "y", "x"), ("frame", "y", "x"), ("y", "x"), ("y_raw", "x")

PRODUCTS: tuple[Product, ...] = (
    # DARK (DarkNirspecModel), report §4.1.3-§4.1.4
    Product("dark_cube", F3, "float32", "DN", "synthesized dark cube, one frame per plane",
            0.0, None, "dark", "SCI", "data"),
    Product("dark_err", F3, "float32", "DN", "per-group std of the surviving counts, at the "
            "frame times", 0.0, None, "dark", "ERR", "err"),
    Product("dark_dq", YX, "uint32", "", "dark pixel DQ", None, None, "dark", "DQ", "dq"),
    Product("dark_rate", YX, "float32", "DN/s", "mean dark rate (DRK)", 0.0, "UNRELIABLE_DARK",
            "dark", "DRK", "dark_rate"),
    Product("dark_rate_unc", YX, "float32", "DN/s", "standard error of DRK (UNC)", 0.0,
            "UNRELIABLE_DARK", "dark", "UNC", "dark_rate_unc"),
    # MASK
    Product("mask", RAW, "uint32", "", "input mask OR HOT|DO_NOT_USE on hot pixels", None, None,
            "mask", "DQ", "dq"),
    # SUPERBIAS, report §4.1.1 (only for stores with bias inputs)
    Product("superbias", RAW, "float32", "DN", "2 <g1> - <g2>", 0.0, "UNRELIABLE_BIAS",
            "superbias", "SCI", "data"),
    Product("superbias_err", RAW, "float32", "DN", "standard error of the superbias", 0.0,
            "UNRELIABLE_BIAS", "superbias", "ERR", "err"),
    Product("superbias_dq", RAW, "uint32", "", "superbias DQ", None, None, "superbias", "DQ",
            "dq"),
    # QA only
    Product("average_ramp", G3, "float32", "DN", "3-sigma clipped average dark ramp"),
    Product("average_ramp_count", G3, "int16", "", "inputs surviving the clip, per group "
            "(below 2: no std)"),
)

# Reliable-N: where each rule became reliable, measured on simulation truth by
# benchmarks/flag_reliability.py (results/flag_reliability.md): NRS1 TRAD NRSRAPID, 3 ALLSLITS
# sets of 88 groups and 1 FULL set of 20 groups, 20 clean exposures each, builds from subsets
# of N = 3..20; the N from which precision and recall reached 0.9, the larger of the two
# cases (bad reference: FULL alone).
FLAGS: tuple[Flag, ...] = (
    # HOT reaches science through the MASK (jwst ORs the DARK's DQ into PIXELDQ too, so a HOT
    # bit in the DARK would only repeat it); the report's DARK marks hot pixels UNRELIABLE_DARK
    # "significant" (default): short, noisy inputs flag noise as HOT under the report's plain
    # rule (issue 21: 10.8 % of a 6 x 10-group SUB2048 build); at deliverable SNR the two agree
    # but within a few UNC of hot_rate
    Flag("hot", "mean dark rate significantly above [dark] hot_rate (report §4.1.4)",
         (Rule("significant", K.hot_pixels_significant, ("mean_rate", "unc"),
               ("n_exposures",), settings=("rate", "sigma"),
               description="(DRK - hot_rate) / UNC > Student's t of hot_sigma for N - 1 "
                           "degrees of freedom (where UNC is unknown: DRK > hot_rate)"),
          Rule("report", K.hot_pixels, ("mean_rate",), settings=("rate",),
               description="DRK > hot_rate (the report's rule)")),
         mask_dq=("HOT", "DO_NOT_USE"), ipc=True,
         # significance rule: precision 1.000 at every N; recall 0.61 (20 groups) / 0.77 (88)
         # at N = 3, 0.87 / 0.97 at 4, >= 0.96 from 5 (the report's rule: 1.000 from 3)
         reliable_n=(5, "recall 0.61-0.77 at 3 inputs, 0.87-0.97 at 4, >= 0.96 from 5: the "
                        "significance test needs inputs; precision 1.000 at any N")),
    Flag("rc", "RC pixel (report §4.1.3)",
         (Rule("report", K.rc_candidates, ("group1", "rc_next", "neg_jumps"),
               ("g1_mean", "g1_std"), "more_than_half",
               ("group1_sigma", "ipc_fraction", "next_groups", "telegraph_veto"), halo=1,
               description="group 1 > its clipped mean + rc_group1_sigma std, no 4-neighbour "
                           "above it (IPC aside), groups 2-3 flagged, no negative jump"),),
         dark_dq=("RC", "DO_NOT_USE"), average_ramp=True, ipc=True,
         # since issue 21 (group-1 SATURATED candidates kept, the telegraph veto): precision
         # >= 0.98 and recall >= 0.97 at every N from 3; FULL 20 groups: P 0.995 (2 very hot
         # pixels), R 1.000; ALLSLITS 88: P 1.000, R 0.977 (slow RC flagged HOT).  Before:
         # precision 0.54-0.58 at 3 inputs (fast telegraph pixels), recall 0.79-0.89
         reliable_n=(3, "precision >= 0.98, recall >= 0.97 from 3 inputs")),
    Flag("telegraph", "random telegraph pixel, not hot (report §4.1.3)",
         (Rule("st", K.telegraph_candidates_st, ("neg_jumps",),
               ("neg_jumps_mean", "neg_jumps_std"), "more_than_one", ("sigma",),
               description="negative jumps > their frame mean + telegraph_sigma std"),
          Rule("esa", K.telegraph_candidates_esa, ("jump_counts",), ("ngroups",),
               description="mean jumps > (1 - 0.9973) (Ngroups - 1) 4")),
         dark_dq=("TELEGRAPH",), unreliable_dark=False, excludes=("hot",),
         # recall >= 0.9 from N = 3 (88 groups) / 4 (20 groups: 0.86 at 3); precision >= 0.99
         reliable_n=(4, "recall 0.86 at 3 inputs of 20 groups, >= 0.93 from 4")),
    Flag("bad_reference", "bad reference pixel (report §4.1.3)",
         (Rule("normalized", K.bad_reference_pixels_normalized, ("ref_counts", "ref_err"), (),
               "pixel", ("sigma",), scope="reference",
               description="group-averaged count, or error to the power 2/3 (Wilson-Hilferty: "
                           "nearly normal), > bad_reference_sigma robust sigmas from the "
                           "reference pixels' median"),
          Rule("report", K.bad_reference_pixels, ("ref_counts", "ref_err"), (), "pixel",
               ("sigma",), scope="reference",
               description="group-averaged count or error > bad_reference_sigma robust "
                           "sigmas from the reference pixels' median")),
         dark_dq=("BAD_REF_PIXEL", "DO_NOT_USE"),
         # FULL (164 true pixels; ALLSLITS has ~9 a set): recall 0.98 at N = 3, >= 0.99 from
         # 4; precision 0.86 at 3, 0.93-0.94 from 4 to 8, 0.95-0.96 from 10 (the 2/3-power
         # error test, issue 21; before: 0.55 at 3, 0.89 at 10, 0.94 at 20)
         reliable_n=(4, "precision 0.84-0.86 at 3 inputs, 0.91-0.97 from 4, 0.95-0.96 from "
                        "10; recall >= 0.96 from 3")),
    Flag("flagged_everywhere", "flagged in the pixel DQ of every input (REFERENCE_PIXEL "
         "ignored)",
         (Rule("report", K.flagged, ("pixeldq",), (), "all",
               bits=(("ignore", ("REFERENCE_PIXEL",)),), scope="frame",
               description="any DQ bit but REFERENCE_PIXEL"),),
         counted=False),
    Flag("high_unc", "rate uncertainty above the frame mean + high_unc_sigma std",
         (Rule("report", K.high_uncertainty, ("unc",), ("unc_mean", "unc_std"),
               settings=("sigma",), scope="frame",
               description="UNC > its frame mean + high_unc_sigma std"),),
         counted=False),
)

BY_NAME = {p.name: p for p in PRODUCTS}


def check_flags(flags) -> None:
    """One name per flag, and one DQ bit per counted flag (its label: what ``analyze`` reads
    it back by from the DARK); a ValueError naming the clash otherwise."""
    for what, key in (("name", lambda f: f.name), ("first DQ bit", lambda f: f.label)):
        seen = {}
        for f in flags:
            if what == "name" or f.counted:
                k = key(f)
                if k in seen:
                    raise ValueError(f"flags {seen[k]!r} and {f.name!r} share the {what} {k}")
                seen[k] = f.name


check_flags(FLAGS)


@dataclass(frozen=True)
class ReferenceFile:
    """What a reference-file type is, in one place: its stdatamodels model, its DESCRIP, when
    a build delivers it, and the keywords only it carries (its extensions are the product
    rows with its ``reftype``)."""

    reftype: str  # lower case, as in the file names; REFTYPE is its upper case
    model: str  # stdatamodels.jwst.datamodels class
    description: str
    needs: str | None = None  # a product the build must have made (superbias: bias inputs)
    full_frame_only: bool = False  # subarray builds deliver none
    grating_any: bool = False  # GRATING = ANY, P_GRATIN the disperser group (subarrays)
    frame_keywords: bool = False  # NGROUPS = its planes, NFRAMES = 1, GROUPGAP = 0, EXP_TYPE ANY


REFERENCE_FILES: tuple[ReferenceFile, ...] = (
    ReferenceFile("superbias", "SuperBiasModel", "NIRSpec superbias: groups 1-2 projected to "
                  "t = 0, JWST-STScI-009226", needs="superbias", grating_any=True),
    ReferenceFile("dark", "DarkNirspecModel", "NIRSpec dark: synthesized cube, "
                  "JWST-STScI-009226", grating_any=True, frame_keywords=True),
    # report §6: one dark and one bias per subarray; the full-frame mask serves subarray
    # science (jwst cuts it): new hot pixels of a subarray build are UNRELIABLE_DARK in its
    # DARK, and counted
    ReferenceFile("mask", "MaskModel", "NIRSpec bad pixel mask with new hot pixels",
                  full_frame_only=True),
)


def reference_file(reftype: str) -> ReferenceFile:
    return next(r for r in REFERENCE_FILES if r.reftype == reftype.lower())


def file_products(reftype: str) -> list[Product]:
    """The products a reference file holds, in extension order."""
    return [p for p in PRODUCTS if p.reftype == reftype]


def dq_def_names() -> tuple[str, ...]:
    """DQ bits our files can carry (for the DQ_DEF tables)."""
    names = {"DO_NOT_USE", "SATURATED", "JUMP_DET", "HOT", "WARM", "REFERENCE_PIXEL",
             "UNRELIABLE_DARK"}
    names |= {b for f in FLAGS for b in f.dark_dq + f.mask_dq}
    names |= {p.fill_flag for p in PRODUCTS if p.fill_flag}
    return tuple(sorted(names))


def flag(name: str) -> Flag:
    for f in FLAGS:
        if f.name == name:
            return f
    raise KeyError(f"no flag {name!r}; flags: {', '.join(f.name for f in FLAGS)}")


def flags_markdown() -> str:
    """The flag table of docs/commands/build.md, made from :data:`FLAGS` when the docs are
    built (the ``nrsdark-flags`` directive of ``docs/_ext``)."""
    rows = ["| flag | rule (kernel: inputs; statistics) | a pixel is flagged | DARK DQ | MASK DQ "
            "| settings `[dark]` | reliable from N |", "|---|---|---|---|---|---|---|"]
    for f in FLAGS:
        bits = list(f.dark_dq) + (["UNRELIABLE_DARK"] if f.unreliable_dark else [])
        for r in f.rules:
            name = f"`{f.name}`" + (f' (`{f.name}_rule = "{r.name}"`)' if len(f.rules) > 1
                                    else "")
            stats = f"; {', '.join(r.statistics)}" if r.statistics else ""
            how = COMBINE[r.combine] if r.combine != "pixel" else "where the kernel says"
            if r.description:
                how = f"{r.description}; {how}" if r.combine != "pixel" else r.description
            if f.excludes:
                how += f"; not {', '.join(f.excludes)}"
            settings = ", ".join(f"`{f.name}_{k}`" for k in r.settings) or "-"
            rows.append(f"| {name} | `{r.kernel.__name__}`: {', '.join(r.inputs)}{stats} "
                        f"| {how} | {' '.join(bits) or '-'} | {' '.join(f.mask_dq) or '-'} "
                        f"| {settings} | {f.reliable_n[0] if f.reliable_n else '-'} |")
    return "\n".join(rows) + "\n"
