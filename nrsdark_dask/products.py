"""The product table: every array a build makes, declared once (the way flox declares each
aggregation once).  ``reduce`` builds one lazy array per row, ``export`` writes the rows that
have a reference-file place, the CLI and the QA read the statistics named here.

A row says what a product is (dims, dtype, units, meaning), what is written where its value is
unknown (``fill``) and which DQ bit of its file then marks the pixel (``fill_flag``), and where
it lands (reference-file type and FITS extension; ``None``: QA only).  Pixel flags are a second
table: the DQ bits each flag sets in the DARK's pixel DQ, whether it also makes the dark
UNRELIABLE_DARK, and the statistic that counts it.

Adding a flag rule is one kernel (``kernels/flags.py``), one graph builder in ``reduce`` and one
row in :data:`FLAGS`; export, DQ assembly, DQ_DEF and the printed summary follow from the row.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Flag:
    name: str  # also the name of its (y, x) bool product
    dq: tuple[str, ...]  # bits set in the DARK pixel DQ
    unreliable_dark: bool  # also UNRELIABLE_DARK (report §4.1.4 (2))
    stat: str | None  # statistic counting it (None: not counted)
    long_name: str

    @property
    def label(self) -> str:
        """How a count of it is printed: its DQ bit name (HOT for the hot pixels)."""
        return self.dq[0] if self.dq else self.name.upper()


G3, F3, YX, RAW = ("group", "y", "x"), ("frame", "y", "x"), ("y", "x"), ("y_raw", "x")

PRODUCTS: tuple[Product, ...] = (
    # DARK (DarkNirspecModel), report §4.1.3-§4.1.4
    Product("dark_cube", F3, "float32", "DN", "synthesized dark cube, one frame per plane",
            0.0, None, "dark", "SCI"),
    Product("dark_err", F3, "float32", "DN", "per-group std of the surviving counts, at the "
            "frame times", 0.0, None, "dark", "ERR"),
    Product("dark_dq", YX, "uint32", "", "dark pixel DQ", None, None, "dark", "DQ"),
    Product("dark_rate", YX, "float32", "DN/s", "mean dark rate (DRK)", 0.0, "UNRELIABLE_DARK",
            "dark", "DRK"),
    Product("dark_rate_unc", YX, "float32", "DN/s", "standard error of DRK (UNC)", 0.0,
            "UNRELIABLE_DARK", "dark", "UNC"),
    # MASK
    Product("mask", RAW, "uint32", "", "input mask OR HOT|DO_NOT_USE on hot pixels", None, None,
            "mask", "DQ"),
    # SUPERBIAS, report §4.1.1 (only for stores with bias inputs)
    Product("superbias", RAW, "float32", "DN", "2 <g1> - <g2>", 0.0, "UNRELIABLE_BIAS",
            "superbias", "SCI"),
    Product("superbias_err", RAW, "float32", "DN", "standard error of the superbias", 0.0,
            "UNRELIABLE_BIAS", "superbias", "ERR"),
    Product("superbias_dq", RAW, "uint32", "", "superbias DQ", None, None, "superbias", "DQ"),
    # QA only
    Product("average_ramp", G3, "float32", "DN", "3-sigma clipped average dark ramp"),
    Product("average_ramp_count", G3, "int16", "", "inputs surviving the clip, per group "
            "(below 2: no std)"),
)

FLAGS: tuple[Flag, ...] = (
    Flag("rc", ("RC", "DO_NOT_USE"), True, "n_rc", "RC pixel (report §4.1.3)"),
    Flag("bad_reference", ("BAD_REF_PIXEL", "DO_NOT_USE"), True, "n_bad_reference",
         "bad reference pixel (report §4.1.3)"),
    Flag("telegraph", ("TELEGRAPH",), False, "n_telegraph",
         "random telegraph pixel, not hot (report §4.1.3)"),
    # HOT reaches science through the MASK (jwst ORs the DARK's DQ into PIXELDQ too, so a HOT
    # bit here would only repeat it); the report's DARK marks hot pixels UNRELIABLE_DARK
    Flag("hot", (), True, "n_hot", "mean dark rate > hot_rate (report §4.1.4)"),
    Flag("flagged_everywhere", (), True, None,
         "flagged in the pixel DQ of every input (REFERENCE_PIXEL ignored)"),
    Flag("high_unc", (), True, None, "rate uncertainty > mean + 3 sigma"),
)

BY_NAME = {p.name: p for p in PRODUCTS}


def file_products(reftype: str) -> list[Product]:
    """The products a reference file holds, in extension order."""
    return [p for p in PRODUCTS if p.reftype == reftype]


def dq_def_names() -> tuple[str, ...]:
    """DQ bits our files can carry (for the DQ_DEF tables)."""
    names = {"DO_NOT_USE", "SATURATED", "JUMP_DET", "HOT", "WARM", "REFERENCE_PIXEL",
             "UNRELIABLE_DARK"}
    names |= {b for f in FLAGS for b in f.dq}
    names |= {p.fill_flag for p in PRODUCTS if p.fill_flag}
    return tuple(sorted(names))
