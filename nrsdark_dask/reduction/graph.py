"""Lazy graph builders: the report's §4.1.1 and §4.1.3-§4.1.4 over (y, x) tiles.

``build_products(ds)`` returns one dask-backed ``xarray.DataArray`` per row of the product
table (:mod:`nrsdark_dask.reduction.tables`) and the statistics, all lazy: building computes
nothing
(tested with a scheduler that raises).  ``nrsdark build`` computes the file writes and the
statistics in one ``dask.compute``, so nothing is computed twice.

The graph has three stages; only the second touches the ramps, and it reads each ramp and
group-DQ chunk of the store exactly once (tested by counting chunk reads and kernel calls):

1. **Small images** (per-exposure (E, y, x) arrays made at ingest: rate, rate_err, pixeldq,
   neg_jumps, group1, rc_next, first_jump, bias_groups): mean rate DRK and UNC, HOT, RC (with a
   1-pixel halo), TELEGRAPH, the IPC neighbours, which pixels take the average ramp in the
   cube, and the whole-frame statistics (RC and RTN thresholds, frame rate, UNC statistics,
   bias).  Memory per task: E x ty x tx x 4 bytes per input (6.5 MB for 25 inputs on
   256 x 256 tiles).
2. **The ramp pass**, one task per (group block, tile) (task names ``ramp-pass``): reads the
   block of every exposure (:class:`~nrsdark_dask.store.StoreBlock`: the task reads its own
   chunks, so no chunk sits in memory waiting for a consumer), runs the fused kernel
   :func:`~nrsdark_dask.kernels.clipped_ramp` (group mask + 3-sigma clip, one call per block)
   and returns the block's clipped mean and std, plus per-pixel sums for the bad-reference
   statistics.  The block shape comes from a memory budget (:func:`plan_blocks`): peak per
   task ~ Gb x ty x tx x (5 E + 23) bytes, whatever the number of exposures or groups of the
   store.  Then one ``synthesize-dark`` task per tile makes the DARK's cube and ERR (one frame
   per plane) from the tile's blocks: 8 bytes per group and pixel in, 8 per frame and pixel
   out (~95 MB for 88 groups on a 256 x 256 tile).
3. **Reference pixels and DQ**: bad reference pixels (median and robust sigma over all
   reference pixels of the group-averaged average ramp and error: 16 bytes per reference
   pixel, 0.5 MB for a full frame) and the DQ planes, assembled from the flag table (a few
   (ty, tx) planes per task).

Whole-frame statistics (clipped frame rate, UNC and bias-ERR statistics, bias level, median
rate) are one task each on the gathered image: 16-32 MB for a full frame (IRS2 raw: 26 MB),
whatever the number of inputs.  Measured peaks of whole builds: ``benchmarks/results``.

Decisions (where the report is silent or ambiguous, written down here):

* the average ramp uses groups before the first JUMP_DET of each input, without DO_NOT_USE or
  SATURATED (jwst marks saturated groups SATURATED only); on reference pixels JUMP_DET does
  not cut it (they collect no charge: jwst's jump flags there come from their own noise or
  from a noisy neighbour, and cutting them biased the bad-reference statistics of the
  neighbours of noisy reference pixels, issue 21);
* a negative jump is a JUMP_DET group whose count drops by more than 3 x the exposure's CDS
  scatter (jwst's neighbour flags around large jumps are not the pixel's own jumps);
* DRK is the plain mean of the input rates (report: "averages the individual ... rate
  images"), UNC its standard error (ddof = 1); ERR is the per-group standard deviation of the
  surviving counts (report), not the error of their mean;
* RC needs groups 2 and 3: with fewer than 3 groups no pixel is flagged RC;
* a neighbour lit only by IPC (< 2 % of the candidate's excess) does not veto an RC candidate;
* a bad reference pixel's error is tested as its 2/3 power (``bad_reference_rule``): a std
  of N inputs is chi-distributed and skewed, its 2/3 power nearly normal;
* an RC candidate with a negative jump in that exposure is a telegraph pixel toggling low
  after group 1, not RC (``rc_telegraph_veto``; an RC ramp only rises);
* RC: one of groups 2-3 JUMP_DET or unusable suffices (``rc_next_groups="any"``; "all" is the
  stricter reading, see ``kernels.flags.rc_candidates``);
* the average dark ramp, not the rate, fills the cube (report §4.1.4) for DO_NOT_USE pixels -
  RC pixels, reference pixels (the bad ones are DO_NOT_USE; all of them take it, so the cube
  never waits for the reference statistics, and they have no dark current), and pixels
  DO_NOT_USE in the PIXELDQ of every input (dead or otherwise bad in the input mask) - and
  for the 4-neighbours of HOT and RC pixels (IPC);
* the DARK is written one frame per plane (NFRAMES = 1, GROUPGAP = 0, the jwst convention,
  stcal#120), ``[dark] frames`` planes (default: the frames the inputs span): rate x frame
  time for most pixels, the average ramp resampled at the frame times for the pixels above
  (linear between groups, past the last group with the slope of its last quarter);
* the superbias projects groups 1 and 2 to time 0 with their mean frame times,
  ``(1 + a) g1 - a g2``, a = t1 / (t2 - t1): the report's ``2 g1 - g2`` for one frame per
  group, 1.5 g1 - 0.5 g2 for NRS (4 frames averaged, 1 skipped), 1.6 g1 - 0.6 g2 for NRSIRS2,
  so bias and cube agree at every frame whatever readout the inputs used;
* "flagged in the pixel DQ of every input" ignores REFERENCE_PIXEL (always set by the mask);
* pixels whose DRK or UNC is unknown get UNRELIABLE_DARK (and 0 in the file): the product
  table's fill policy;
* no GROUPDQ extension in the DARK (jwst's DarkNirspecModel has none, so no consumer reads it,
  and at one byte per frame and pixel it is the size of the cube): the inputs surviving the
  clip per group are the QA product ``average_ramp_count``; and no HOT bit in the DARK's DQ
  (the MASK carries it; jwst ORs both into the science PIXELDQ): hot pixels are
  UNRELIABLE_DARK there, as the report lists.
"""

from __future__ import annotations

import functools
import operator

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from .. import instrument as inst
from .. import kernels as K
from ..config import Config
from ..store import StoreBlock, StoreLayout
from . import tables as P
from .budget import BlockPlan, plan_blocks
from .delivery import delivery, frame_clipped_stats, rate_images
from .result import Products
from .source import BuildError, build_source, is_pristine, store_stack
from .tables import BY_NAME, Flag, Product, Rule

DQ = inst.DQ


# ---- block plan ---------------------------------------------------------------------------


# ---- helpers ------------------------------------------------------------------------------
def _fill(arr: da.Array, product: Product) -> da.Array:
    """The product table's fill policy: non-finite values become ``product.fill``."""
    out = arr if product.fill is None else da.where(da.isfinite(arr), arr, product.fill)
    return out.astype(product.dtype)


def _per_exposure(values: da.Array) -> da.Array:
    return da.asarray(values).reshape((-1, 1, 1)).rechunk(-1)


# ---- stage 1: small images ----------------------------------------------------------------
def _images(ds: xr.Dataset, layout: StoreLayout, cfg: Config, chunks2,
            given: dict | None = None) -> dict:
    """Mean rate, UNC, the flags of the table's active-pixel rows, the IPC neighbours, which
    pixels take the average ramp in the cube, and the whole-frame statistics they need (all
    lazy; only (E, y, x) images are read).  ``given``: statistics already computed (numbers)
    replace the lazy ones."""
    ref = inst.reference_pixel_mask(layout.geometry())
    refpix = da.from_array(ref, chunks=chunks2)
    active = ~refpix
    pristine = is_pristine(ds)

    @functools.cache
    def stack(var):  # (E, y, x), every exposure of a tile in one block
        if var not in ds:
            raise BuildError(f"this store has no {var} (made before it was recorded at "
                             "ingest): recalibrate it for this flag rule")
        if pristine:
            return store_stack(ds, var, chunks2)
        return getattr(ds, var).data.rechunk({0: -1, 1: chunks2[0], 2: chunks2[1]})

    images = rate_images(stack("rate"))
    mean_rate, unc = images["mean_rate"], images["unc"]
    S = _statistics(ds, stack, images, active, layout, cfg)
    S.update(given or {})
    flags = {}
    for f in P.FLAGS:
        rule = f.rule(cfg.dark)
        if rule.scope != "reference":
            flags[f.name] = evaluate(f, rule, lambda v: images[v] if v in images else stack(v),
                                     S, cfg, active, flags)
    if "frame_rate" not in S:
        S["frame_rate"], _ = frame_clipped_stats(mean_rate, active & ~flags["hot"])
    own = functools.reduce(operator.or_, [flags[f.name] for f in P.FLAGS if f.average_ramp
                                          and f.name in flags], refpix)
    lit = [flags[f.name] for f in P.FLAGS if f.ipc and f.name in flags]
    ipc = da.map_overlap(K.neighbours, functools.reduce(operator.or_, lit), depth=1,
                         boundary="none", dtype=bool) if lit else False
    pix = stack("pixeldq")
    dnu = ((pix & np.uint32(DQ["DO_NOT_USE"])) != 0).all(axis=0)
    return {
        "ref": ref, "refpix": refpix, "active": active, "mean_rate": mean_rate, "unc": unc,
        "flags": flags, "use_ramp": own | dnu | ipc,
        "first_jump": stack("first_jump") if "first_jump" in ds else None,
        "stats": S,
    }


def _statistics(ds, stack, images, active, layout: StoreLayout, cfg: Config) -> dict:
    """The whole-frame statistics the flag rules take (lazy 0-d or (E,) arrays), by the names
    the rows declare (``Rule.statistics``):

    ============================  ========================================================
    g1_mean, g1_std (E,)          clipped group-1 mean and std of each exposure (ingest)
    ngroups, n_exposures          groups and number of the inputs
    <image>_mean, <image>_std     mean and std of any input image over the active pixels
                                  where it is finite: (E,) for a per-exposure image of the
                                  store (``neg_jumps_mean``), a number for an image of the
                                  build (``unc_std``, ``mean_rate_mean``)
    <image>_clipped_mean, _std    the same, 3-sigma clipped (5 rounds), of an image of the
                                  build (``mean_rate_clipped_std``)
    ============================  ========================================================

    ``neg_jumps_*`` and ``unc_*`` are always made (the build records them); any other a row
    declares is made when its rule is chosen.  ``frame_rate`` (3-sigma clipped mean of DRK
    over active, non-hot pixels) is added once HOT is known."""
    S = {"g1_mean": ds.g1_mean.data, "g1_std": ds.g1_std.data, "ngroups": layout.ngroups,
         "n_exposures": ds.sizes["exposure"]}

    def image(name):
        return images[name] if name in images else stack(name)

    wanted = ["neg_jumps_mean", "neg_jumps_std", "unc_mean", "unc_std"]
    wanted += [n for f in P.FLAGS for n in f.rule(cfg.dark).statistics]
    for name in dict.fromkeys(wanted):
        if name not in S:
            S[name] = _image_statistic(name, image, active)
    return S


def _image_statistic(name: str, image, active) -> da.Array:
    """``<image>[_clipped]_mean`` / ``_std`` (:func:`_statistics`), lazily."""
    base, _, how = name.rpartition("_")
    clipped = base.endswith("_clipped")
    base = base.removesuffix("_clipped")
    if how not in ("mean", "std") or not base:
        raise BuildError(f"a flag rule asks for the statistic {name!r}: not one of g1_mean, "
                         "g1_std, ngroups, n_exposures or <image>[_clipped]_mean / _std")
    x = image(base)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    keep = (active[None] if x.ndim == 3 else active) & da.isfinite(x)
    if clipped:
        if x.ndim != 2:
            raise BuildError(f"a flag rule asks for {name!r}: clipped statistics are of "
                             "(y, x) images of the build")
        return frame_clipped_stats(x, keep)[0 if how == "mean" else 1]
    x = da.where(keep, x, np.nan)
    axis = (1, 2) if x.ndim == 3 else None
    return da.nanmean(x, axis=axis) if how == "mean" else da.nanstd(x, axis=axis)


def _kernel_call(rule: Rule, settings: dict, n_inputs: int, per_exposure: tuple):
    """The block function of a rule: the kernel on the block's inputs, its per-exposure
    statistics as (E,) and scalar ones as numbers, and its settings."""

    def call(*blocks):
        args, stats = blocks[:n_inputs], blocks[n_inputs:]
        stats = [np.asarray(v).ravel() if e else np.asarray(v).ravel()[0]
                 for v, e in zip(stats, per_exposure)]
        return rule.kernel(*args, *stats, **settings)

    return call


def evaluate(flag: Flag, rule: Rule, image, S: dict, cfg: Config, active,
             done: dict | None = None) -> da.Array:
    """One flag of the table, lazily, on active pixels (every pixel for ``scope="frame"``):
    ``rule.kernel`` mapped over the tiles of its inputs (``image(name)``: a dask array
    (E, y, x) or (y, x)) with the statistics ``S`` names, per-input candidates combined as the
    row says, and the pixels of the flags it ``excludes`` (``done``) left out."""
    settings = {**flag.settings(cfg.dark, rule),
                **{k: sum(DQ[b] for b in bits) for k, bits in rule.bits}}
    arrays = [image(v) for v in rule.inputs]
    nd = arrays[0].ndim
    per_input = nd == 3
    stats, per_exposure = [], []
    for name in rule.statistics:
        v = S[name]
        e = np.ndim(v) == 1
        stats.append(_per_exposure(v) if e else da.asarray(v).reshape((1,) * nd))
        per_exposure.append(e)
    fn = _kernel_call(rule, settings, len(arrays), tuple(per_exposure))
    depth = {**({0: 0} if nd == 3 else {}), nd - 2: rule.halo, nd - 1: rule.halo} \
        if rule.halo else None
    if depth:
        arrays = [da.overlap.overlap(a, depth=depth, boundary="none") for a in arrays]
    drop = [0] if per_input and rule.combine == "pixel" else []
    out = da.map_blocks(fn, *arrays, *stats, dtype=bool, drop_axis=drop,
                        token=f"{flag.name.replace('_', '-')}-candidates")
    if depth:
        out = da.overlap.trim_internal(out, depth, boundary="none")
    if rule.combine == "all":
        out = out.all(axis=0)
    elif rule.combine == "more_than_half":
        out = out.sum(axis=0) > out.shape[0] / 2
    elif rule.combine == "more_than_one":
        out = out.sum(axis=0) > 1
    if rule.scope == "active":
        out = out & active
    for other in flag.excludes:
        out = out & ~done[other]
    return out


def flag_from_images(name: str, images: dict, cfg: Config, active,
                     stats: dict | None = None) -> da.Array:
    """A flag whose rule reads only build images (``mean_rate``, ``unc``) and the given
    statistics (``n_exposures``), on images made elsewhere (the HOT of ``nrsdark masks`` and
    of ``analyze``): the same row, the same code as the build."""
    f = P.flag(name)
    rule = f.rule(cfg.dark)
    stats = stats or {}
    if not (set(rule.inputs) <= set(images) and set(rule.statistics) <= set(stats)):
        raise BuildError(f"the {name} rule needs {', '.join(rule.inputs + rule.statistics)}")
    return evaluate(f, rule, lambda v: da.asarray(images[v]), stats, cfg, active)


# ---- stage 2: the ramp pass ---------------------------------------------------------------
RAMP_OUTPUTS = ("mean", "std", "ref_sums")
QA_OUTPUTS = ("average_ramp", "average_ramp_count")


def _ramp_block(ramp, gdq, first_jump, *dark_inputs, g0, sigma, maxiters, outputs, dark=None,
                ref=None):
    """One ramp-pass task: read (if given store blocks) and clip one group block of every
    exposure of a tile.  Returns a dict of the block's ``outputs``: :data:`RAMP_OUTPUTS` (the
    clipped mean and std, and ``ref_sums`` (1, 4, ty, tx), the sums behind the bad-reference
    rule), or :data:`QA_OUTPUTS` (the average ramp and the surviving inputs per group).  With
    ``dark`` (a :func:`_dark_tile`; the block is the whole ramp) the task also makes the
    tile's DARK from ``dark_inputs`` and returns its cube and ERR instead of mean and std, so
    no block waits in memory for another task.  ``ref``: the tile's reference pixels (None:
    it has none), whose JUMP_DET flags do not cut their average ramp."""
    if isinstance(ramp, StoreBlock):
        ramp, gdq = ramp.read(), gdq.read()
    jumped = None if g0 == 0 or first_jump is None else first_jump <= g0 - 1
    if ref is not None:
        gdq = np.where(ref, gdq & np.uint8(0xFF ^ DQ["JUMP_DET"]), gdq)
        jumped = None if jumped is None else jumped & ~ref
    mean, std, count = K.clipped_ramp(ramp, gdq, jump_bit=DQ["JUMP_DET"],
                                      unusable_bits=inst.GROUP_UNUSABLE, jumped_before=jumped,
                                      sigma=sigma, maxiters=maxiters)
    del ramp, gdq
    if outputs == QA_OUTPUTS:
        return {"average_ramp": mean, "average_ramp_count": count}
    ok_m, ok_s = np.isfinite(mean), np.isfinite(std)
    sums = np.stack([np.where(ok_m, mean, 0).sum(axis=0, dtype=np.float64), ok_m.sum(axis=0),
                     np.where(ok_s, std, 0).sum(axis=0, dtype=np.float64), ok_s.sum(axis=0)])
    if dark is not None:
        return {**dark([mean], [std], *dark_inputs), "ref_sums": sums[None]}
    return {"mean": mean, "std": std, "ref_sums": sums[None]}


def _dark_tile(means, stds, mean_rate, use_ramp, frame_rate, *, group_times, frame_times):
    """One tile of the DARK (``synthesize-dark`` tasks): the cube and ERR in the one-frame-per-group
    form of DARK files, from the tile's clipped mean and std of every group block
    (report §4.1.4; :func:`~nrsdark_dask.kernels.synthesize_dark_cube`).  ERR is the per-group
    std resampled at the frame times, held past the last group."""
    mean, std = np.concatenate(means, axis=0), np.concatenate(stds, axis=0)
    fr = float(np.asarray(frame_rate).ravel()[0])
    cube = K.synthesize_dark_cube(mean_rate, mean, group_times, frame_times, fr, use_ramp)
    err = K.resample_ramp(std, group_times, frame_times, extend="hold").astype(np.float32)
    return {"dark_cube": cube, "dark_err": err}


def _ramp_pass(ds: xr.Dataset, layout: StoreLayout, plan: BlockPlan, img: dict,
               cfg: Config, outputs=RAMP_OUTPUTS, frame_times=None) -> dict:
    """One task per (group block, tile): see the module docstring.  Returns a lazy array per
    name of ``outputs`` ((group, y, x) blocks; ``ref_sums`` is (group blocks, 4, y, x)); when
    the whole ramp is one block and ``frame_times`` are given, the tasks make the DARK
    themselves and return ``dark_cube`` and ``dark_err`` (frames, y, x) instead of the mean and
    std.  The QA outputs (the average ramp) are a graph of their own, run only if asked for:
    the build's tasks never hold them."""
    ramp = ds.ramp.data
    G = layout.ngroups
    ych, xch = ramp.chunks[2], ramp.chunks[3]
    gb = plan.group_block
    gch = tuple(min(gb, G - g) for g in range(0, G, gb))
    g_starts = np.cumsum((0,) + gch)[:-1]
    y_starts, x_starts = np.cumsum((0,) + ych)[:-1], np.cumsum((0,) + xch)[:-1]
    token = dask.base.tokenize(ramp.name, ds.groupdq.data.name, plan, cfg.dark, outputs,
                               ds.encoding.get("nrsdark_positions"))
    name = f"ramp-pass-{token}"
    deps = []
    fj = img["first_jump"]
    if fj is not None and gb < G:
        fj = fj.rechunk({1: ych, 2: xch})
        deps.append(fj)
    else:
        fj = None
    pristine = is_pristine(ds)
    if not pristine:
        r = ramp.rechunk({0: -1, 1: gch})
        q = ds.groupdq.data.rechunk({0: -1, 1: gch})
        deps += [r, q]
    dark = None
    if outputs == RAMP_OUTPUTS and len(gch) == 1 and frame_times is not None:
        inputs = _dark_inputs(img, ych, xch)
        deps += inputs
        dark = functools.partial(_dark_tile, group_times=layout.group_times(),
                                 frame_times=frame_times)
    path = ds.encoding.get("nrsdark_store")
    ref = img["ref"]
    dsk = {}
    for gi, g0 in enumerate(g_starts):
        g1 = int(g0 + gch[gi])
        fn = functools.partial(_ramp_block, g0=int(g0), sigma=cfg.dark.clip_sigma, maxiters=5,
                               outputs=outputs, dark=dark)
        for yi, y0 in enumerate(y_starts):
            for xi, x0 in enumerate(x_starts):
                if pristine:
                    # the dataset's exposures, in its order (by date), never one a
                    # concurrent calibrate is adding
                    idx = (ds.encoding["nrsdark_positions"], slice(int(g0), g1),
                           slice(int(y0), int(y0 + ych[yi])), slice(int(x0), int(x0 + xch[xi])))
                    rk, qk = StoreBlock(path, "ramp", idx), StoreBlock(path, "groupdq", idx)
                else:
                    rk, qk = (r.name, 0, gi, yi, xi), (q.name, 0, gi, yi, xi)
                fk = (fj.name, 0, yi, xi) if fj is not None else None
                extra = () if dark is None else ((inputs[0].name, yi, xi),
                                                 (inputs[1].name, yi, xi), (inputs[2].name, 0))
                rt = ref[y0:y0 + ych[yi], x0:x0 + xch[xi]]
                f = functools.partial(fn, ref=rt.copy()) if rt.any() else fn
                dsk[(name, gi, yi, xi)] = (f, rk, qk, fk, *extra)
    hlg = HighLevelGraph.from_collections(name, dsk, dependencies=deps)
    dtypes = {"mean": "float32", "std": "float32", "average_ramp": "float32",
              "average_ramp_count": "int16"}
    specs = {k: ((gch, ych, xch), dtypes[k]) for k in outputs if k != "ref_sums"}
    if dark is not None:
        frames = ((len(frame_times),), ych, xch)
        specs = {"dark_cube": (frames, "float32"), "dark_err": (frames, "float32")}
    if "ref_sums" in outputs:
        specs["ref_sums"] = (((1,) * len(gch), (4,), ych, xch), "float64")
    return _getitems(hlg, name, dsk, specs, token, extra_axis="ref_sums")


def _getitems(hlg, name, dsk, specs: dict, token: str, extra_axis=None) -> dict:
    """One dask array per key of the dicts the tasks ``dsk`` of layer ``name`` return."""
    out = {}
    for key, (chunks, dtype) in specs.items():
        oname = f"{key.replace('_', '-')}-{token}"
        layer = {(oname,) + k[1:2] + ((0,) if key == extra_axis else ()) + k[2:]:
                 (operator.getitem, k, key) for k in dsk}
        g = HighLevelGraph({**hlg.layers, oname: layer}, {**hlg.dependencies, oname: {name}})
        out[key] = da.Array(g, oname, chunks=chunks, dtype=dtype)
    return out


def _dark_inputs(img: dict, ych, xch) -> list:
    """What a tile's DARK needs besides its clipped ramp: the mean rate, the use-the-ramp
    mask (on the ramps' tiles) and the frame rate."""
    return [img["mean_rate"].rechunk((ych, xch)), img["use_ramp"].rechunk((ych, xch)),
            da.asarray(img["stats"]["frame_rate"]).reshape(1)]


def _dark(rp: dict, img: dict, layout: StoreLayout, frame_times: np.ndarray) -> dict:
    """The DARK's cube and ERR, (frames, y, x): one ``synthesize-dark`` task per tile on the ramp
    pass's clipped mean and std of that tile (all its group blocks)."""
    mean, std = rp["mean"], rp["std"]
    ych, xch = mean.chunks[1], mean.chunks[2]
    mean_rate, use_ramp, frame_rate = _dark_inputs(img, ych, xch)
    token = dask.base.tokenize(mean.name, std.name, mean_rate.name, use_ramp.name,
                               frame_rate.name, frame_times)
    name = f"synthesize-dark-{token}"
    fn = functools.partial(_dark_tile, group_times=layout.group_times(),
                           frame_times=frame_times)
    nb = len(mean.chunks[0])
    dsk = {(name, 0, yi, xi): (fn, [(mean.name, gi, yi, xi) for gi in range(nb)],
                               [(std.name, gi, yi, xi) for gi in range(nb)],
                               (mean_rate.name, yi, xi), (use_ramp.name, yi, xi),
                               (frame_rate.name, 0))
           for yi in range(len(ych)) for xi in range(len(xch))}
    hlg = HighLevelGraph.from_collections(name, dsk,
                                          dependencies=[mean, std, mean_rate, use_ramp,
                                                        frame_rate])
    chunks = ((len(frame_times),), ych, xch)
    return _getitems(hlg, name, dsk, {"dark_cube": (chunks, "float32"),
                                      "dark_err": (chunks, "float32")}, token)


# ---- stage 3: reference pixels, DQ --------------------------------------------------------
def _reference_flag(flag: Flag, rule: Rule, ref_sums: da.Array, img: dict,
                    cfg: Config) -> da.Array:
    """A flag of the reference pixels (``scope="reference"``; the bad reference pixels, report
    §4.1.3): the kernel sees the group-averaged average ramp (``ref_counts``) and its error
    (``ref_err``) of every reference pixel of the frame at once.

    Works on the reference pixels only (their positions are known when the graph is built):
    it depends on the ramp pass of the tiles that hold reference pixels, never waits on the
    others, and every tile's flag image is a cheap scatter of one small 1-D result."""
    s = ref_sums.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        images = {"ref_counts": s[0] / s[1], "ref_err": s[2] / s[3]}
    ref = img["ref"]
    shape_like = images["ref_counts"]
    if not ref.any():
        return da.zeros(shape_like.shape, dtype=bool, chunks=shape_like.chunks)
    where = np.nonzero(ref)
    index = np.full(ref.shape, -1, np.int32)
    index[where] = np.arange(where[0].size)
    fn = functools.partial(rule.kernel, **flag.settings(cfg.dark, rule))
    points = da.map_blocks(fn, *[images[v].vindex[where].rechunk(-1) for v in rule.inputs],
                           dtype=bool, token=flag.name.replace("_", "-"))

    def scatter(idx, pts):
        out = idx >= 0
        out[out] = pts[idx[out]]
        return out

    return da.blockwise(scatter, "yx", da.from_array(index, chunks=shape_like.chunks), "yx",
                        points, "n", concatenate=True, dtype=bool)


def _fill_flags(values: dict, file: str) -> list[tuple[da.Array, int]]:
    """(flag plane, bit) for every product of ``file`` whose fill is flagged."""
    return [(~da.isfinite(values[p.name]), DQ[p.fill_flag]) for p in BY_NAME.values()
            if p.reftype == file and p.fill_flag and p.name in values]


def _dark_dq(flags: dict, fills: list) -> da.Array:
    """DARK pixel DQ from the flag table (report §4.1.4)."""
    planes, bits = [], []
    for f in P.FLAGS:
        bit = sum(DQ[b] for b in f.dark_dq) | (DQ["UNRELIABLE_DARK"] if f.unreliable_dark else 0)
        if not bit:
            continue
        planes.append(flags[f.name])
        bits.append(bit)
    for plane, bit in fills:
        planes.append(plane)
        bits.append(bit)
    chunks = planes[0].chunks
    planes = [p.rechunk(chunks) for p in planes]
    return da.map_blocks(lambda *ps: K.dq_from_flags(ps, bits), *planes, dtype=np.uint32,
                         token="dark-dq")


def _bias(ds: xr.Dataset, layout: StoreLayout, cfg: Config, given: dict) -> dict:
    """SUPERBIAS (report §4.1.1) from the ingest's bias groups, with its DQ and level."""
    bg = (store_stack(ds, "bias_groups", ds.bias_groups.data.chunks[2:]) if is_pristine(ds)
          else ds.bias_groups.data.rechunk({0: -1}))
    levels = da.asarray(ds.bias_level.data).rechunk(-1).reshape((-1, 1, 1, 1))

    a = inst.bias_weight(inst.get_read_pattern(layout.readpatt), layout.tframe)

    def block(b, lv):
        bias, err, n = K.bias_from_groups(b[:, 0], b[:, 1], lv.ravel(), weight=a)
        return np.stack([bias, err, n.astype(np.float32)])

    stack = da.map_blocks(block, bg, levels, dtype=np.float32, chunks=((3,),) + bg.chunks[2:],
                          drop_axis=1, token="superbias")
    bias, err = stack[0], stack[1]
    m, sd = frame_clipped_stats(err, np.ones((), bool))
    m, sd = given.get("bias_err_mean", m), given.get("bias_err_std", sd)

    def dq_block(e, m, sd):
        return K.unreliable_bias(e, float(m), float(sd), cfg.bias.unreliable_sigma)

    unreliable = da.map_blocks(dq_block, err, m, sd, dtype=bool)
    values = {"superbias": bias, "superbias_err": err}
    planes = [(unreliable, DQ["UNRELIABLE_BIAS"])] + _fill_flags(values, "superbias")
    dq = da.map_blocks(lambda *ps: K.dq_from_flags(ps, [b for _, b in planes]),
                       *[p for p, _ in planes], dtype=np.uint32, token="superbias-dq")
    raw_rows = layout.raw_science_rows()
    science = da.broadcast_to(da.from_array(raw_rows[:, None], chunks=(bias.chunks[0], 1)),
                              bias.shape).rechunk(bias.chunks)
    level, _ = frame_clipped_stats(bias, science)
    return {"superbias": bias, "superbias_err": err, "superbias_dq": dq,
            "stats": {"bias_level": level, "n_unreliable_bias": (dq != 0).sum(),
                      "bias_err_mean": m, "bias_err_std": sd}}


# ---- the whole build ----------------------------------------------------------------------
def build_products(ds: xr.Dataset, cfg: Config | None = None, stats: dict | None = None,
                   mask_in: np.ndarray | None = None,
                   task_memory: int | None = None) -> Products:
    """Every product of the table, lazily, and the statistics (see the module docstring).

    ``stats``: whole-frame statistics already computed (:func:`compute_frame_statistics`);
    default: lazy, in the same graph.  ``mask_in``: the input MASK's DQ (raw layout: 3200 rows
    for IRS2) or None.  ``task_memory``: the ramp pass's per-task budget in bytes (1 GiB).
    """
    cfg = cfg or Config()
    ds, layout = build_source(ds)
    n_exp = ds.sizes["exposure"]
    ramp = ds.ramp.data
    chunks2 = ramp.chunks[2:]
    plan = plan_blocks(layout, n_exp, (max(chunks2[0]), max(chunks2[1])), task_memory)
    given = dict(stats or {})
    img = _images(ds, layout, cfg, chunks2, given)
    S = img["stats"]
    times = dark_frame_times(layout, cfg)
    rp = _ramp_pass(ds, layout, plan, img, cfg, frame_times=times)
    flags = dict(img["flags"])
    for f in P.FLAGS:
        rule = f.rule(cfg.dark)
        if rule.scope == "reference":
            flags[f.name] = _reference_flag(f, rule, rp["ref_sums"], img, cfg)
    values = {"dark_rate": img["mean_rate"], "dark_rate_unc": img["unc"]}
    lazy = {
        **({k: rp[k] for k in ("dark_cube", "dark_err")} if "dark_cube" in rp
           else _dark(rp, img, layout, times)),
        **_ramp_pass(ds, layout, plan, img, cfg, QA_OUTPUTS),
        "dark_dq": _dark_dq(flags, _fill_flags(values, "dark")), **values,
        "mask": output_mask(flags, mask_in, layout),
    }
    if layout.has_bias:
        bias = _bias(ds, layout, cfg, given)
        S.update(bias.pop("stats"))
        lazy.update(bias)

    frame = xr.DataArray(np.arange(1, times.size + 1, dtype="int32"), dims="frame")
    dims = {"group": ds.group, "frame": frame, "y": ds.y, "x": ds.x, "y_raw": ds.y_raw}
    A = {}
    for name, arr in lazy.items():
        p = BY_NAME[name]
        coords = {d: dims[d] for d in p.dims}
        if "group" in p.dims:
            coords["group_time"] = ds.group_time
        if "frame" in p.dims:
            coords["frame_time"] = ("frame", times, {"units": "s"})
        A[name] = xr.DataArray(_fill(arr, p), dims=p.dims, coords=coords,
                               attrs={"units": p.units, "long_name": p.long_name})
    for name, arr in flags.items():
        A[name] = xr.DataArray(arr, dims=("y", "x"), coords={"y": ds.y, "x": ds.x})

    active, mean_rate = img["active"], img["mean_rate"]
    S.update({f.stat: flags[f.name].sum() for f in P.FLAGS if f.stat})
    S["n_exposures"] = n_exp
    S["n_active"] = active.sum()
    S["telegraph_fraction"] = S["n_telegraph"] / S["n_active"]
    S["negative_rate_fraction"] = ((mean_rate < 0) & active).sum() / S["n_active"]
    S["median_rate"] = da.nanmedian(da.where(active, mean_rate, np.nan).ravel().rechunk(-1),
                                    axis=0)
    if mask_in is not None:  # pixels a MASK flag finds that the input MASK did not have
        for f in P.FLAGS:
            if f.mask_dq and f.counted:
                known = da.from_array((layout.science_rows(mask_in) & DQ[f.mask_dq[0]]) != 0,
                                      chunks=chunks2)
                S[f"n_new_{f.name}"] = (flags[f.name] & ~known).sum()
    S.update(delivery(img["mean_rate"], img["unc"], img["active"], layout, cfg))
    return Products(layout=layout, plan=plan, exposures=np.asarray(ds.exposure.values).tolist(),
                    dates=ds.date, arrays=A, stats=S, store=ds.encoding.get("nrsdark_store", ""),
                    gratings=tuple(str(g) for g in ds.grating.values))


def dark_frame_times(layout: StoreLayout, cfg: Config) -> np.ndarray:
    """Times of the DARK's planes (one frame per plane, report §4.1.4 written in the jwst
    convention NFRAMES = 1, GROUPGAP = 0): ``[dark] frames`` of them, default (0) as many as
    the inputs' ramps span (their groups x frames per group + gaps)."""
    n = cfg.dark.frames or inst.total_frames(inst.get_read_pattern(layout.readpatt),
                                             layout.ngroups)
    return inst.frame_times(layout.tframe, n)


def task_count(p: Products) -> int:
    """Tasks of the build's graph (the files' arrays and the statistics, after dask's graph
    optimization): what the dashboard shows."""
    arrays = [p[q.name].data for r in P.REFERENCE_FILES for q in P.file_products(r.reftype)
              if q.name in p.arrays]
    stats = [v for v in p.stats.values() if dask.is_dask_collection(v)]
    expr = dask.base.collections_to_expr([*arrays, *stats], optimize_graph=True)
    return len(expr.__dask_graph__())


def frame_statistics(ds: xr.Dataset, cfg: Config | None = None) -> dict:
    """The whole-frame statistics alone, lazily: they read only per-exposure images."""
    cfg = cfg or Config()
    ds, layout = build_source(ds)
    chunks2 = ds.rate.data.chunks[1:]
    S = dict(_images(ds, layout, cfg, chunks2)["stats"])
    if layout.has_bias:
        S.update({k: v for k, v in _bias(ds, layout, cfg, {})["stats"].items()
                  if k.startswith("bias_err")})
    return S


def compute_frame_statistics(ds: xr.Dataset, cfg: Config | None = None) -> dict:
    """The same, computed (numpy values)."""
    (values,) = dask.compute(frame_statistics(ds, cfg))
    return {k: np.asarray(v) for k, v in values.items()}


def output_mask(flags: dict, mask_in, layout: StoreLayout) -> da.Array:
    """Output MASK (raw layout): the input mask OR each flag's ``mask_dq`` bits (HOT|
    DO_NOT_USE on the hot pixels); with no input mask, reference pixels (and IRS2 reference
    samples) get REFERENCE_PIXEL.  ``flags``: (y, x) bool dask arrays by flag name."""
    raw_rows = layout.raw_science_rows()
    planes = [(flags[f.name], np.uint32(sum(DQ[b] for b in f.mask_dq))) for f in P.FLAGS
              if f.mask_dq and f.name in flags]
    first = planes[0][0]
    dq = functools.reduce(operator.or_, [da.where(p, b, np.uint32(0)) for p, b in planes])
    if layout.family == "IRS2":  # science row i sits at raw row idx[i]
        idx = np.flatnonzero(raw_rows)
        rows = np.zeros(layout.ny_raw, int)
        rows[idx] = np.arange(idx.size)
        dq = da.where(da.from_array(raw_rows[:, None]), dq[rows], np.uint32(0))
        dq = dq.rechunk((layout.tile_y, first.chunks[1]))
    if mask_in is None:
        ref = inst.reference_pixel_mask(layout.geometry())
        base = np.zeros((layout.ny_raw, layout.nx), np.uint32)
        if layout.family == "IRS2":
            base[~raw_rows] = DQ["REFERENCE_PIXEL"]
            base[raw_rows] |= np.where(ref, DQ["REFERENCE_PIXEL"], 0).astype(np.uint32)
        else:
            base[ref] = DQ["REFERENCE_PIXEL"]
    else:
        base = np.asarray(mask_in, np.uint32)
        if base.shape != (layout.ny_raw, layout.nx):
            raise BuildError(f"input mask has shape {base.shape}, expected "
                             f"{(layout.ny_raw, layout.nx)}")
    return da.from_array(base, chunks=dq.chunks) | dq
