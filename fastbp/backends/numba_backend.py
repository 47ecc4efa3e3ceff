"""The Numba backend: tiled, multithreaded backpropagation compiled once per dtype.

``prepare`` packs the layout into one int64 array, chooses the tile size, the layers whose tile
products go to BLAS, and allocates every scratch buffer (sized per tile and per thread, never per
sample). A call then copies nothing but ``W`` and runs one compiled function; the kernels are in
:mod:`fastbp.backends._numba_kernels`.

Threads: the samples are cut into ``n_chunks`` fixed blocks, ``n_chunks`` depending only on the
number of samples, the layout and ``n_threads``; each block sums into its own float64 buffer and
the buffers are added in block order. The same inputs and ``n_threads`` therefore give
bit-identical results, however many threads Numba actually runs. Networks with a BLAS layer run
one block and let BLAS use the cores.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import _numba_kernels as K

#: A layer's tile products go to BLAS when it has at least this many coefficients.
BLAS_MIN_COEFS = 128 * 128
#: Least work (≈ multiply-adds: coefficients + 4 per hidden unit, per sample) worth a thread of
#: its own, and least samples a block. Numba's OpenMP layer forks and joins two threads in a few
#: microseconds, and alone two blocks ran the lab's calls faster (seed4layer 18.7 -> 15.3 us,
#: multiclass 25.9 -> 18.3 us at 20k). But inside an optimizer they lose badly: between calls
#: the OpenMP workers spin while L-BFGS-B's own BLAS threads spin too, and a 200-iteration fit of
#: seed4layer took 450 ms instead of 7 ms on 2 cores. The threaded driver also adds ~8 s to the
#: cold-cache first call. So lab-sized calls stay on one thread; threads start at 2M per block.
WORK_PER_CHUNK = 2_000_000
MIN_CHUNK_SAMPLES = 32
#: Tile bounds (samples). Small networks get tiles that keep every layer's z and δ in L2 cache.
TILE_MIN, TILE_MAX = 16, 256
_TILE_BUDGET = 32768  # Σ layer_sizes · tile ≤ this (2 · 8 bytes each: 512 KiB of z and δ)
#: Sample-major BLAS tiles: as many rows as fit ``_ROWS_BUDGET`` values of z and δ (each), at
#: most ``TILE_ROWS`` rows: big enough that every gemm runs at BLAS speed, bounded memory.
TILE_ROWS = 4096
_ROWS_BUDGET = 1 << 21

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.setflags(write=False)


def _readonly(a):
    """A read-only view (no copy), so the compiled code sees one array type whatever the caller's
    flags: Numba specializes on writability."""
    if a.flags.writeable:
        a = a.view()
        a.setflags(write=False)
    return a


class NumbaKernel:
    """The bound Numba kernel of one layout (see :mod:`fastbp.backends` for the protocol).

    Parameters
    ----------
    layout : fastbp.layout.Layout
    n_threads : int
        Most blocks the samples are split into (and threads used).
    """

    def __init__(self, layout, n_threads):
        self.layout = layout
        self.n_threads = max(1, int(n_threads))
        sizes = np.asarray(layout.layer_sizes, dtype=np.int64)
        blas = [int(a * b >= BLAS_MIN_COEFS) for a, b in layout.coef_shapes]
        self.uses_blas = any(blas)
        if self.uses_blas:
            per_row = int(sizes[1:].sum())
            tile = max(K.OUT_BLOCK, min(TILE_ROWS, _ROWS_BUDGET // per_row))
            tile -= tile % K.PAD
        else:
            tile = _TILE_BUDGET // int(sizes.sum())
            tile = max(TILE_MIN, min(TILE_MAX, tile - tile % K.PAD))
        self.tile = tile
        if self.uses_blas:
            blas = [1] * len(blas)  # sample-major: every layer is a gemm
        self.meta, self._csize, self._wsize = K.make_meta(
            sizes,
            layout.coef_offsets,
            layout.intercept_offsets,
            layout.activation_code,
            layout.output_code,
            tile,
            blas,
            rows=self.uses_blas,
        )
        self.meta.setflags(write=False)
        self._max_chunks = 1 if self.uses_blas else self.n_threads
        self._work_per_sample = layout.n_coef + 4 * sum(layout.layer_sizes[1:-1])
        self._lock = threading.Lock()
        self._scratch = self._allocate()

    def _allocate(self):
        """Per-block scratch: z and δ tiles (+ BLAS gradient tile), float64 work, gradient rows."""
        c, dt = self._max_chunks, self.layout.dtype
        zd = np.zeros((c, self._csize), dtype=dt)
        ws = np.zeros((c, self._wsize), dtype=np.float64)
        gbuf = np.zeros((c, self.layout.n_params + 1), dtype=np.float64)
        wc = np.zeros(self.layout.n_params, dtype=dt)
        return zd, ws, gbuf, wc

    def n_chunks(self, n_samples):
        """Blocks the samples are split into: a function of n_samples, the layout, n_threads."""
        by_work = n_samples * self._work_per_sample // WORK_PER_CHUNK
        return max(1, min(self._max_chunks, by_work, n_samples // MIN_CHUNK_SAMPLES))

    def __call__(self, W, X, T, sample_weight, scale, l2):
        n_chunks = self.n_chunks(X.shape[0])
        X = _readonly(X)
        T = _readonly(T)
        sw = _EMPTY if sample_weight is None else _readonly(sample_weight)
        if not W.flags.writeable:
            W = W.copy()
        # Scratch is reused between calls; a concurrent call on the same kernel gets its own.
        locked = self._lock.acquire(blocking=False)
        try:
            zd, ws, gbuf, wc = self._scratch if locked else self._allocate()
            args = (W, X, T, sw, self.meta, zd, ws, gbuf, wc, float(scale), float(l2), n_chunks)
            if n_chunks == 1:
                loss, grad = K.run_serial(*args)
            else:
                threads = min(n_chunks, numba.config.NUMBA_NUM_THREADS)
                previous = numba.get_num_threads()
                if previous != threads:
                    numba.set_num_threads(threads)
                try:
                    loss, grad = K.run_parallel(*args)
                finally:
                    if previous != threads:
                        numba.set_num_threads(previous)
        finally:
            if locked:
                self._lock.release()
        return float(loss), grad


class NumbaBackend:
    """Registry entry: ``prepare(layout, n_threads)`` returns a :class:`NumbaKernel`."""

    name = "numba"

    def prepare(self, layout, n_threads):
        return NumbaKernel(layout, n_threads)


BACKEND = NumbaBackend()
