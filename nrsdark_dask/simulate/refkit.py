"""Offline reference kit: the reference files jwst ``calwebb_detector1`` needs for a simulated
data set, written through stdatamodels and consistent with the simulator's truth.

Files are made on the data set's own geometry (a subarray kit for subarray data, 3200-row
MASK and SUPERBIAS for IRS2 as jwst applies them before ``refpix``), so jwst never has to cut
them.  Dark current is not part of the kit: the dark pipeline does not subtract a dark
(report §4.1.2), it makes one.

=================  ===========================  ==========================================
reftype            model                        content
=================  ===========================  ==========================================
mask               MaskModel                    known hot pixels: HOT|DO_NOT_USE (70 % of the
                                                true hot pixels); reference pixels
                                                REFERENCE_PIXEL
saturation         SaturationModel              raw DN, bias + 97 % of the measured full well
superbias          SuperBiasModel               the true static bias
linearity          LinearityModel               per-pixel inverse of the simulated response
readnoise          ReadnoiseModel               CDS read noise (DN) = sqrt(2) x per-frame,
                                                all components (stcal's convention)
gain               GainModel                    the simulated gain (e-/DN)
refpix (IRS2)      IRS2Model                    alpha = 1 below the simulator's coarse-grid
                                                Nyquist frequency, beta = 0 (see ``noise.py``)
=================  ===========================  ==========================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from stdatamodels.jwst import datamodels as dm

from .. import instrument as inst
from .model import IRS2_NOISE, TRAD_NOISE, DetectorTruth, linearity_coefficients
from .noise import COARSE

DQ = inst.DQ


def _meta(model, truth: DetectorTruth, reftype: str, descrip: str, shape):
    sub = truth.subarray
    m = model.meta
    m.reftype = reftype.upper()
    m.description = descrip
    m.author = "nrsdark_dask simulator"
    m.pedigree = "DUMMY"
    m.useafter = "2022-01-01T00:00:00"
    m.telescope = "JWST"
    m.instrument.name = "NIRSPEC"
    m.instrument.detector = truth.detector
    m.exposure.type = "NRS_DARK"
    if shape is not None:  # the IRS2 table has no subarray keywords
        # SUBSIZE2 stays 2048 on 3200-row IRS2 files: jwst's reffile_utils allows exactly that
        m.subarray.name = sub.name
        m.subarray.xstart, m.subarray.ystart = sub.xstart, sub.ystart
        m.subarray.xsize, m.subarray.ysize = sub.xsize, sub.ysize
        m.subarray.fastaxis, m.subarray.slowaxis = inst.fast_slow_axes(truth.detector)
    model.add_history_entry(f"Simulated by nrsdark_dask for {truth.detector} {sub.name} "
                         f"{truth.family}; consistent with the simulation truth.")


def _dq_def():
    names = ["DO_NOT_USE", "SATURATED", "HOT", "WARM", "RC", "TELEGRAPH", "BAD_REF_PIXEL",
             "NO_LIN_CORR", "NO_SAT_CHECK", "UNRELIABLE_BIAS", "REFERENCE_PIXEL"]
    # BIT is the bit number, log2(VALUE) (the DQ_DEF convention), not the row number
    return [(int(DQ[n]).bit_length() - 1, DQ[n], n, n.replace("_", " ").lower())
            for n in sorted(names, key=lambda n: DQ[n])]


def write_refkit(truth: DetectorTruth, outdir: Path) -> dict[str, str]:
    """Write the kit into ``outdir``; return ``{reftype: filename}`` (also for the recipe)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    a = truth.arrays
    tag = f"{truth.detector.lower()}_{truth.subarray.name.lower()}_{truth.family.lower()}"
    files: dict[str, str] = {}

    def save(model, reftype):
        name = f"nrsdark_sim_{tag}_{reftype}.fits"
        model.save(outdir / name)
        model.close()
        files[reftype] = name

    sci_shape = a["rate"].shape
    pix = np.zeros(sci_shape, np.uint32)
    pix[a["known_hot"]] |= DQ["HOT"] | DQ["DO_NOT_USE"]
    pix[a["refpix"]] |= DQ["REFERENCE_PIXEL"]
    if truth.family == "IRS2":
        normal = inst.irs2_normal_rows(truth.detector)
        raw = np.full(a["bias"].shape, DQ["REFERENCE_PIXEL"], np.uint32)
        raw[normal] = pix
        mask_dq = raw
    else:
        mask_dq = pix
    m = dm.MaskModel(dq=mask_dq, dq_def=_dq_def())
    _meta(m, truth, "mask", "Simulated bad pixel mask", mask_dq.shape)
    save(m, "mask")

    m = dm.SaturationModel(data=a["saturation"], dq=np.zeros(sci_shape, np.uint32),
                           dq_def=_dq_def())
    _meta(m, truth, "saturation", "Simulated saturation levels (raw DN)", sci_shape)
    save(m, "saturation")

    bias = a["bias"]
    m = dm.SuperBiasModel(data=bias, err=np.zeros_like(bias),
                          dq=np.zeros(bias.shape, np.uint32), dq_def=_dq_def())
    _meta(m, truth, "superbias", "Simulated superbias (true static bias)", bias.shape)
    save(m, "superbias")

    coeffs = linearity_coefficients(a["nonlin_k"])
    m = dm.LinearityModel(coeffs=coeffs, dq=np.zeros(sci_shape, np.uint32), dq_def=_dq_def())
    _meta(m, truth, "linearity", "Simulated linearity (inverse of R = S - k S^2)", sci_shape)
    save(m, "linearity")

    noise = IRS2_NOISE if truth.family == "IRS2" else TRAD_NOISE
    total = np.sqrt(noise.white**2 + noise.amp_1f**2 + noise.acn**2
                    + (0 if truth.family == "IRS2" else noise.common_1f**2))
    # CDS noise: stcal reads the file that way (ramp_fit: readnoise * gain / sqrt(2 nframes))
    rn = np.full(sci_shape, np.sqrt(2.0) * total, np.float32)
    m = dm.ReadnoiseModel(data=rn)
    _meta(m, truth, "readnoise", "Simulated CDS read noise (DN)", sci_shape)
    save(m, "readnoise")

    m = dm.GainModel(data=a["gain"])
    _meta(m, truth, "gain", "Simulated gain (e-/DN)", sci_shape)
    save(m, "gain")

    if truth.family == "IRS2":
        save(irs2_refpix_model(truth), "refpix")
    return files


def irs2_refpix_model(truth: DetectorTruth) -> dm.IRS2Model:
    """IRS2 correction table matching the simulator: subtract the reference output's low
    frequencies (alpha = 1 for abs(f) below the coarse-grid Nyquist), ignore the interleaved
    reference samples (beta = 0).  One DQ row with MASK = 0 (jwst 3.0 needs a table)."""
    n = inst.IRS2_ROW_TIME * inst.FULL_SIZE
    k = np.fft.fftfreq(n) * n
    low = (np.abs(k) < n / (2 * COARSE)).astype(np.float32)
    interleaved = np.zeros(2 * n, np.float32)
    interleaved[0::2] = low  # real parts; imaginary parts stay 0
    zeros = np.zeros(2 * n, np.float32)
    table = np.rec.fromarrays([interleaved] * 4 + [zeros] * 4,
                              names=[f"alpha_{i}" for i in range(4)] + [f"beta_{i}" for i in range(4)])
    dq_table = np.rec.fromarrays([np.array([0], np.uint16), np.array([0], np.uint16),
                                  np.array([0], np.uint32)], names=["OUTPUT", "ODD_EVEN", "MASK"])
    m = dm.IRS2Model(irs2_table=table, dq_table=dq_table)
    _meta(m, truth, "refpix", "Simulated IRS2 table: low-pass reference output", None)
    m.meta.exposure.readpatt = "ANY"  # the table serves both IRS2 patterns
    m.meta.exposure.p_readpatt = "NRSIRS2|NRSIRS2RAPID|"
    return m
