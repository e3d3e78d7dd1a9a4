"""Scratch cubes: the out-of-core medium between the pieces of one exposure's calibration.

A :class:`Cube` is one raw C-ordered array file, shape ``(planes, rows, columns)``, in the
exposure's scratch folder (``<store>/_staging/<exposure>.work/``: the staging area, removed by
the next writer when a run dies).  Pieces read and write it with ``pread``/``pwrite`` straight
into and out of numpy buffers: a row slab of every plane is ``planes`` reads of contiguous
rows, a block of planes one contiguous read, and nothing is memory-mapped, so a task's RSS is
the buffers it asked for, never the file's pages.  Each stage writes a new cube and never
rewrites its input, so a piece that runs twice (a worker killed mid-piece and the task
retried elsewhere) writes the same bytes to the same places.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Cube:
    """A raw array file of ``shape`` (planes, rows, columns) and ``dtype`` at ``path``."""

    path: str
    shape: tuple
    dtype: str

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.itemsize

    def create(self) -> Cube:
        """Make the file (sparse, zero-filled) if it does not exist yet."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != self.nbytes:
                os.ftruncate(fd, self.nbytes)
        finally:
            os.close(fd)
        return self

    def _span(self, plane: int, row: int) -> int:
        return (plane * self.shape[1] + row) * self.shape[2] * self.itemsize

    def read(self, planes=None, rows=None, out: np.ndarray | None = None) -> np.ndarray:
        """Planes ``planes`` (a slice) of rows ``rows`` (a slice), all columns."""
        p0, p1, _ = (planes or slice(None)).indices(self.shape[0])
        r0, r1, _ = (rows or slice(None)).indices(self.shape[1])
        shape = (p1 - p0, r1 - r0, self.shape[2])
        out = np.empty(shape, self.dtype) if out is None else out
        if out.size == 0:
            return out
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if r0 == 0 and r1 == self.shape[1] and out.flags.c_contiguous:
                _pread_all(fd, memoryview(out).cast("B"), self._span(p0, 0))
            else:
                for k, p in enumerate(range(p0, p1)):
                    _pread_all(fd, memoryview(out[k]).cast("B"), self._span(p, r0))
        finally:
            os.close(fd)
        return out

    def write(self, array: np.ndarray, plane0: int = 0, row0: int = 0) -> None:
        """Write ``array`` (planes, rows, all columns) at plane ``plane0``, row ``row0``."""
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.ndim != 3 or array.shape[2] != self.shape[2] \
                or plane0 + array.shape[0] > self.shape[0] or row0 + array.shape[1] > self.shape[1]:
            raise ValueError(f"{self.path}: cannot write {array.shape} at ({plane0}, {row0}) "
                             f"into {self.shape}")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            if row0 == 0 and array.shape[1] == self.shape[1]:
                _pwrite_all(fd, memoryview(array).cast("B"), self._span(plane0, 0))
            else:
                for k in range(array.shape[0]):
                    _pwrite_all(fd, memoryview(array[k]).cast("B"), self._span(plane0 + k, row0))
        finally:
            os.close(fd)

    def rows(self, y0: int, y1: int) -> CubeRows:
        """Rows [y0, y1) of every plane as a lazy (planes, rows, columns) array-like."""
        return CubeRows(self, y0, y1)


class CubeRows:
    """Rows of a cube, read when indexed: ``a[g]`` (or ``a[(g,)]``) is one plane's rows,
    :meth:`block` a run of planes; what the ingest kernels need (they read plane by plane),
    so a tile row of a 200-group ramp is never in memory at once."""

    def __init__(self, cube: Cube, y0: int, y1: int):
        self.cube, self.y0, self.y1 = cube, y0, y1
        self.shape = (cube.shape[0], y1 - y0, cube.shape[2])
        self.ndim = 3
        self.dtype = np.dtype(cube.dtype)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if not isinstance(key, (int, np.integer)):
            raise IndexError(f"CubeRows takes one plane index, not {key!r}")
        g = int(key) % self.shape[0]
        return self.block(g, g + 1)[0]

    def block(self, g0: int, g1: int) -> np.ndarray:
        return self.cube.read(slice(g0, g1), slice(self.y0, self.y1))


def _pread_all(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        n = os.preadv(fd, [buf], offset)
        if n == 0:
            raise OSError(f"unexpected end of scratch file (fd {fd}) at byte {offset}")
        buf, offset = buf[n:], offset + n


def _pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    while len(buf):
        n = os.pwritev(fd, [buf], offset)
        buf, offset = buf[n:], offset + n
