"""Read noise in readout (time) order: white, 1/f common to all outputs, 1/f per output,
alternating column noise (ACN).

The detector is read in detector orientation, one row of every output in parallel, pixel by
pixel; correlated noise is a function of *time*, so each pixel is mapped to its sample time and
a noise stream is sampled there.  Time layout (pixel times of 10 us):

* TRAD full frame: 4 outputs x 512 columns, rows of 512 + 12 overhead; outputs 1 and 3 read in
  the reverse column direction (as in jwst's IRS2 code, sectors 2 and 4).
* TRAD subarray: one output, rows of ``n_fast + 12``.
* IRS2: 5 outputs (reference output first) x 640 samples in rows of 712 pixel times, the
  normal/reference samples at the positions jwst uses (``hnorm1``/``href1`` in
  ``irs2_subtract_reference.subtract_reference``); outputs 0, 2 and 4 reversed.

The 1/f streams are generated on a coarse grid (one value per ``COARSE`` pixel times, 0.64 ms):
above ~1 kHz the 1/f power is far below the white noise, so nothing measurable is lost and a
frame costs a few ms instead of ~0.5 s of full-rate FFTs.  The IRS2 reference output carries the
common-mode stream, which the reference kit's IRS2 table (alpha = 1 below the coarse-grid
Nyquist frequency, 0 above; beta = 0) lets jwst subtract: the per-output and ACN parts are what a
real alpha/beta correction leaves behind, hence the lower IRS2 amplitudes in ``model.py``.
"""

from __future__ import annotations

import numpy as np

from .. import instrument as inst
from .model import NoiseParams

COARSE = 64


def _one_over_f(rng, n_streams: int, n: int, rms: float) -> np.ndarray:
    """``n_streams`` real 1/f-noise series of length ``n`` with the given rms (float32)."""
    if rms == 0 or n_streams == 0:
        return np.zeros((n_streams, n), np.float32)
    nf = n // 2 + 1
    f = np.arange(nf, dtype=np.float64)
    amp = np.zeros(nf)
    amp[1:] = f[1:] ** -0.5
    spec = amp * (rng.standard_normal((n_streams, nf)) + 1j * rng.standard_normal((n_streams, nf)))
    x = np.fft.irfft(spec, n=n, axis=1)
    x *= rms / np.sqrt(np.mean(x**2, axis=1, keepdims=True))
    return x.astype(np.float32)


class ReadNoise:
    """Generates one frame of read noise in DMS orientation for a readout geometry.

    Parameters: detector, subarray, family ("TRAD"/"IRS2"), noise amplitudes.
    The raw frame shape is (3200, 2048) for IRS2, else the subarray shape.
    Memory: two int32 index maps of the raw frame size (~50 MB for IRS2) plus one float32 frame.
    """

    def __init__(self, detector: str, sub: inst.Subarray, family: str, params: NoiseParams):
        self.params = params
        self.detector = detector
        if family == "IRS2":
            n_rows, n_out, per_out = inst.FULL_SIZE, 5, inst.IRS2_RAW_SIZE // 5
            row_time = inst.IRS2_ROW_TIME
            pos = self._irs2_positions(per_out)
            reversed_out = {0, 2, 4}
        else:
            n_out = sub.n_outputs
            n_rows = sub.xsize  # detector rows = DMS x
            per_out = sub.ysize // n_out  # detector columns = DMS y
            row_time = per_out + inst.ROW_OVERHEAD_TRAD
            pos = np.arange(per_out)
            reversed_out = {1, 3} if n_out == 4 else set()
        self.n_out = n_out
        self.n_coarse = -(-n_rows * row_time // COARSE)
        cols = np.arange(n_out * per_out)
        out = cols // per_out
        local = cols % per_out
        local = np.where(np.isin(out, list(reversed_out)), per_out - 1 - local, local)
        t_in_row = pos[local]
        t = np.arange(n_rows)[:, None] * row_time + t_in_row[None, :]  # (rows, cols) detector
        parity = (cols % 2)[None, :]
        # flat index into streams of shape (n_out, 2 parities, n_coarse)
        idx_det = (out[None, :] * 2 + parity) * self.n_coarse + t // COARSE
        self.index = np.ascontiguousarray(inst.detector_to_dms(idx_det, detector)).astype(np.int32)
        self.is_ref_output = None
        if family == "IRS2":
            ref_out = np.broadcast_to((out == 0)[None, :], idx_det.shape)
            self.is_ref_output = np.ascontiguousarray(inst.detector_to_dms(ref_out, detector))
        self.shape = self.index.shape

    @staticmethod
    def _irs2_positions(per_out: int) -> np.ndarray:
        """Time position within a 712-sample row of each of the 640 samples of one output."""
        n, r = inst.IRS2_NORMAL, inst.IRS2_REFERENCE
        normal = inst.irs2_normal_rows("NRS1")[per_out : 2 * per_out]
        ind_n = np.arange(512)
        ind_r = np.arange(512 // n * r)
        hnorm1 = ind_n + (r + 2) * ((ind_n + n // 2) // n)
        href1 = ind_r + (n + 2) * (ind_r // r) + n // 2 + 1
        pos = np.empty(per_out, np.int64)
        pos[normal] = hnorm1
        pos[~normal] = href1
        return pos

    def frame(self, rng, nframes: int = 1) -> np.ndarray:
        """One group's read noise (DN, float32, DMS raw shape); averaging ``nframes`` frames
        divides every component by sqrt(nframes) (frames treated as independent)."""
        p = self.params
        common = _one_over_f(rng, 1, self.n_coarse, p.common_1f)
        per_amp = _one_over_f(rng, self.n_out, self.n_coarse, p.amp_1f)
        acn = _one_over_f(rng, self.n_out, self.n_coarse, p.acn)
        streams = np.empty((self.n_out, 2, self.n_coarse), np.float32)
        streams[:, 0] = common + per_amp - acn
        streams[:, 1] = common + per_amp + acn
        if self.is_ref_output is not None:  # reference output: common mode only
            streams[0, :] = common
        noise = streams.ravel()[self.index]
        noise += rng.standard_normal(self.shape, dtype=np.float32) * np.float32(p.white)
        if nframes > 1:
            noise *= np.float32(1.0 / np.sqrt(nframes))
        return noise
