"""The Numba backend: tiled, multithreaded backpropagation compiled once per dtype.

``prepare`` packs the layout into one int64 array, chooses the tile size, the layers whose tile
products go to BLAS, and allocates every scratch buffer (sized per tile and per thread, never per
sample). A call then copies nothing but ``W`` and runs one compiled function; the kernels are the
package :mod:`fastbp.backends.numba_kernels`.

Threads: the samples are cut into ``n_blocks`` fixed blocks, ``n_blocks`` depending only on the
number of samples, the layout and ``n_threads``; each block sums into its own float64 buffer and
the buffers are added in block order. The same inputs and ``n_threads`` therefore give
bit-identical results, however many threads actually ran. The blocks run on the calling thread
and the workers of :mod:`fastbp.backends.numba_kernels.pool_threads` (why not ``prange``: see
there). Networks with a BLAS layer do the same, each thread calling BLAS held to one thread
(:mod:`fastbp.backends.blas_threads`): BLAS's own threads would not flush subnormals, and would
oversubscribe the cores the kernel's threads use.

Subnormal numbers are flushed to zero on every thread of a call, and the caller's mode is put
back after (:mod:`fastbp.backends.numba_kernels.fpenv`).

The first call of a kind of network (unit-major or BLAS) and dtype compiles the kernels (several
seconds) unless Numba's disk cache already holds them: it then says so, once per process, with a
:class:`NumbaCompileWarning`, before the wait.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from . import NumbaCompileWarning, blas_threads
from .numba_kernels import pool_threads as P
from .numba_kernels.driver import run
from .numba_kernels.meta import OUT_BLOCK, PAD, make_meta
from .numba_kernels.pool import JOB_LEN, MAX_BLOCKS, MAX_SLOTS

#: A layer's tile products go to BLAS when it has at least this many coefficients.
BLAS_MIN_COEFS = 128 * 128
#: Least work (≈ multiply-adds: coefficients + 4 per hidden unit, per sample) of a call worth a
#: second thread, least samples a block, and the work from which each thread gets
#: ``BLOCKS_PER_THREAD`` blocks instead of one (a thread slowed by a competitor for its core then
#: just runs fewer of them; below that, each extra block costs a tile's fixed overhead).
MIN_PARALLEL_WORK = 40_000
MIN_BLOCK_SAMPLES = 32
#: Least samples a block of a BLAS network: its gemms keep BLAS speed (as the Cython kernel's).
MIN_BLAS_BLOCK_SAMPLES = 128
MANY_BLOCKS_WORK = 2_000_000
BLOCKS_PER_THREAD = 4
#: Tile bounds (samples). Small networks get tiles that keep every layer's z and δ in L2 cache.
TILE_MIN, TILE_MAX = 16, 256
_TILE_BUDGET = 32768  # Σ layer_sizes · tile ≤ this (2 · 8 bytes each: 512 KiB of z and δ)
#: Sample-major BLAS tiles: as many rows as fit ``_ROWS_BUDGET`` values of z and δ (each, all
#: threads together), at most ``TILE_ROWS`` rows: big enough that every gemm runs at BLAS speed,
#: bounded memory.
TILE_ROWS = 4096
_ROWS_BUDGET = 1 << 21

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.setflags(write=False)
_CTL_NONE = P.SERIAL_CTL  # a serial call's control array (only read)
_ROWS = P._ROWS


#: About how long a cold compile of one dtype and kind takes, in seconds (said in the warning).
COLD_COMPILE_S = 10
_ANNOUNCED = set()  # (dtype, blas) this process has looked up


def _announce_compile(dtype, blas):
    """Warn, before the wait, that this call compiles: the first of its dtype and kind in this
    process, when the disk cache does not hold the compiled entry point."""
    key = (np.dtype(dtype).str, bool(blas))
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    from .numba_kernels import is_cached

    if is_cached(dtype, blas=blas):
        return
    kind = "BLAS " if blas else ""
    warnings.warn(
        f"fastbp: compiling the numba kernels for {np.dtype(dtype).name} {kind}networks once "
        f"(~{COLD_COMPILE_S} s); cached after",
        NumbaCompileWarning,
        stacklevel=4,  # towards the user's call
    )


def _aligned_zeros(shape, dtype, align=64):
    """Zeros whose data starts on an ``align``-byte boundary (NumPy guarantees 16): the kernels'
    8-lane loads then never straddle two cache lines."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.zeros(n * dtype.itemsize + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + n * dtype.itemsize].view(dtype).reshape(shape)


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
        self.n_threads = max(1, min(int(n_threads), MAX_SLOTS))
        sizes = np.asarray(layout.layer_sizes, dtype=np.int64)
        blas = [int(a * b >= BLAS_MIN_COEFS) for a, b in layout.coef_shapes]
        self.uses_blas = any(blas)
        if self.uses_blas:
            per_row = int(sizes[1:].sum())
            tile = max(OUT_BLOCK, min(TILE_ROWS, _ROWS_BUDGET // (per_row * self.n_threads)))
            tile -= tile % PAD
        else:
            tile = _TILE_BUDGET // int(sizes.sum())
            tile = max(TILE_MIN, min(TILE_MAX, tile - tile % PAD))
        self.tile = tile
        if self.uses_blas:
            blas = [1] * len(blas)  # sample-major: every layer is a gemm
        self.meta, self._csize, self._wsize = make_meta(
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
        self._max_blocks = 1 if self.n_threads == 1 else BLOCKS_PER_THREAD * self.n_threads
        self._min_block = MIN_BLAS_BLOCK_SAMPLES if self.uses_blas else MIN_BLOCK_SAMPLES
        self._work_per_sample = layout.n_coef + 4 * sum(layout.layer_sizes[1:-1])
        self._lock = threading.Lock()
        self._scratch = self._allocate()
        self._n_blocks_of = {}
        self._rows = _ROWS if self.uses_blas else None  # selects the sample-major block kernel
        kind = P.BlasPool if self.uses_blas else P.Pool
        self._pool = P.get_pool(layout.dtype, kind) if self._max_blocks > 1 else None
        self._announce = True  # the first call checks whether it compiles

    def _allocate(self):
        """Scratch: per thread z and δ tiles (+ BLAS gradient tile) and float64 work; per block a
        gradient row; W in the compute dtype; the job table."""
        t, dt = self.n_threads, self.layout.dtype
        # rows padded to 64 bytes, so every thread's row starts aligned too
        zd = _aligned_zeros((t, -(-self._csize * dt.itemsize // 64) * 64 // dt.itemsize), dt)
        ws = _aligned_zeros((t, -(-self._wsize // 8) * 8), np.float64)
        gbuf = np.zeros((self._max_blocks, self.layout.n_params + 1), dtype=np.float64)
        wc = np.zeros(self.layout.n_params, dtype=dt)
        job = np.zeros(JOB_LEN, dtype=np.int64)
        return zd, ws, gbuf, wc, job

    def n_blocks(self, n_samples):
        """Blocks the samples are split into: a function of n_samples, the layout, n_threads."""
        work = n_samples * self._work_per_sample
        if self._max_blocks == 1 or work < MIN_PARALLEL_WORK:
            return 1
        per_thread = BLOCKS_PER_THREAD if work >= MANY_BLOCKS_WORK else 1
        return max(1, min(per_thread * self.n_threads, n_samples // self._min_block, MAX_BLOCKS))

    def __call__(self, W, X, T, sample_weight, scale, l2):
        n_blocks = self._n_blocks_of.get(X.shape[0])
        if n_blocks is None:
            n_blocks = self._n_blocks_of[X.shape[0]] = self.n_blocks(X.shape[0])
        if X.flags.writeable:
            X = _readonly(X)
        if T.flags.writeable:
            T = _readonly(T)
        sw = _EMPTY if sample_weight is None else _readonly(sample_weight)
        if not W.flags.writeable:
            W = W.copy()
        if self._announce:
            self._announce = False
            _announce_compile(self.layout.dtype, self.uses_blas)
        # Scratch is reused between calls; a concurrent call on the same kernel gets its own.
        locked = self._lock.acquire(blocking=False)
        if self.uses_blas:
            blas_threads.hold()  # every gemm on the kernel's threads, in its flush mode
        try:
            zd, ws, gbuf, wc, job = self._scratch if locked else self._allocate()
            n_slots = min(self.n_threads, n_blocks)
            pool = None
            if n_slots > 1:
                pool = self._pool
                if not pool.acquire(n_slots):  # another thread's job has the pool: run serially
                    pool, n_slots = None, 1
            try:
                loss, grad = run(W, X, T, sw, self.meta, zd, ws, gbuf, wc, float(scale), float(l2),
                                 n_blocks, n_slots, _CTL_NONE if pool is None else pool.ctl, job, 0, self._rows)
            finally:
                if pool is not None:
                    pool.release()
        finally:
            if self.uses_blas:
                blas_threads.release()
            if locked:
                self._lock.release()
        return float(loss), grad


class NumbaBackend:
    """Registry entry: ``prepare(layout, n_threads)`` returns a :class:`NumbaKernel`."""

    name = "numba"

    def prepare(self, layout, n_threads):
        return NumbaKernel(layout, n_threads)


BACKEND = NumbaBackend()
