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

Second order (``hessp``, ``hessp_block``, ``gauss_newton_product``, ``gauss_newton_block``,
``output_jacobian``: the protocol of :mod:`fastbp.backends`) runs the R-operator's kernels
(:mod:`.numba_kernels.roperator`) through their own entry point and pool
(:mod:`.numba_kernels.second_order`), with the same blocks and determinism; what they need (a
layout with their own, smaller tile: five arrays a tile instead of two; per-thread scratch) is
prepared on the first second-order call, so a gradient-only fit neither compiles nor allocates it.
Networks with a BLAS layer run their second-order blocks on the calling thread and let BLAS use
the cores.
"""

from __future__ import annotations

import functools
import threading
import warnings

import numpy as np

from . import NumbaCompileWarning, blas_threads
from .numba_kernels import pool_threads as P
from .numba_kernels.driver import run
from .numba_kernels.epoch import run_epoch as _run_epoch
from .numba_kernels.meta import H_GSIZE, H_ZSIZE, OUT_BLOCK, PAD, make_meta
from .numba_kernels.optimizers import ADAM, SGD
from .numba_kernels.pool import JOB_LEN, MAX_BLOCKS, MAX_SLOTS
from .numba_kernels.roperator import EXACT, GN, R_FLAGS, UPPER, rbase, scratch_sizes
from .numba_kernels.second_order import curvature_pool, output_jacobian, run_curvature

#: A layer's tile products go to BLAS when it has at least this many coefficients.
BLAS_MIN_COEFS = 128 * 128
#: Least work (≈ multiply-adds: coefficients + 4 per hidden unit, per sample) of a call worth a
#: second thread, least samples a block, and the work from which each thread gets
#: ``BLOCKS_PER_THREAD`` blocks instead of one (a thread slowed by a competitor for its core then
#: just runs fewer of them; below that, each extra block costs a tile's fixed overhead).
MIN_PARALLEL_WORK = 40_000
#: Least work of a whole epoch (samples × that per-sample work) run on the epoch pool's threads: a
#: smaller epoch runs its batches' blocks (the same blocks, so the same bits) on the calling
#: thread. Each epoch call wakes the pool's workers, which sleep between epochs; the lab's
#: seed4layer (200 samples, one batch an epoch: ~100 000) took 23 µs an epoch so against 21 on
#: one thread, while multiclass (400 samples, two batches) gains from the second thread.
MIN_PARALLEL_EPOCH_WORK = 200_000
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

#: Second order (:mod:`.numba_kernels.roperator`): a tile holds five arrays (z, δ, the σ'' factor,
#: R{z}, R{δ}) where the gradient's holds two, so the tile budgets are smaller: unit-major
#: Σ layer_sizes · tile ≤ R_TILE_BUDGET, sample-major rows ≤ R_ROWS_BUDGET / Σ units.
R_TILE_BUDGET = 16384
R_ROWS_BUDGET = 1 << 19
#: Most directions of one hessp_block call (Network.hess's blocks), and fewer where their float64
#: results (directions x n_params) would exceed R_BLOCK_VALUES.
MAX_DIRECTIONS = 256
R_BLOCK_VALUES = 1 << 22
#: From this many directions on, a call's blocks split the directions instead of the samples
#: (:func:`.numba_kernels.roperator.block_directions`): every block then runs full tiles.
SPLIT_DIRECTIONS = 8

_EMPTY = np.empty(0, dtype=np.float64)
_EMPTY.setflags(write=False)
_CTL_NONE = P.SERIAL_CTL  # a serial call's control array (only read)
_ROWS = P._ROWS
_NO_ORDER = np.zeros(0, dtype=np.int64)  # an epoch's samples in order
_INT64, _FLOAT64 = np.dtype(np.int64), np.dtype(np.float64)  # (comparing with np.int64 converts it each time)


#: About how long a cold compile of one dtype and kind takes, in seconds (said in the warning), per
#: entry point: the gradient's, the epoch's (sgd/adam fits), second order's.
COLD_COMPILE_S = {"gradient": 10, "epoch": 15, "second_order": 25}
_WHAT = {"gradient": "kernels", "epoch": "epoch kernels", "second_order": "second-order kernels"}
_ANNOUNCED = set()  # (dtype, blas, entry) this process has looked up


def _announce_compile(dtype, blas, entry="gradient"):
    """Warn, before the wait, that this call compiles: the first of its dtype, kind and entry
    point (``"gradient"``, ``"epoch"``, ``"second_order"``) in this process, when the disk cache
    does not hold that entry point compiled."""
    key = (np.dtype(dtype).str, bool(blas), entry)
    if key in _ANNOUNCED:
        return
    _ANNOUNCED.add(key)
    from .numba_kernels import is_cached

    if is_cached(dtype, blas=blas, **({} if entry == "gradient" else {entry: True})):
        return
    kind = "BLAS " if blas else ""
    warnings.warn(
        f"fastbp: compiling the numba {_WHAT[entry]} for {np.dtype(dtype).name} {kind}networks once "
        f"(~{COLD_COMPILE_S[entry]} s); cached after",
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


def _claim(pool, n_slots):
    """``(pool, n_slots, ctl)`` for a call on up to ``n_slots`` threads: the pool (to release after
    the call) with its control array when it could be acquired, else ``None``, one slot and the
    serial control array (a single-slot call, or another thread's job holds the pool: run serially)."""
    if n_slots > 1 and pool.acquire(n_slots):
        return pool, n_slots, pool.ctl
    return None, 1, _CTL_NONE


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
        # the first call of each entry point checks whether it compiles
        self._announce = self._announce_epoch = self._announce_second = True
        self._epoch_pool = P.get_pool(layout.dtype, P.EpochPool) if self._max_blocks > 1 else None
        self._batches = {}  # (n, batch_size, weighted) -> what an epoch needs: see _batch_plan
        self._epoch_choice = np.zeros(3)  # the epochs' choice of threads (numba_kernels/epoch.py)
        self._dtype = layout.dtype
        self._w_shape = (layout.n_params,)
        self._second = None  # second order's state, prepared on its first call
        self._jacobian = None

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
            pool, n_slots, ctl = _claim(self._pool, min(self.n_threads, n_blocks))
            try:
                loss, grad = run(W, X, T, sw, self.meta, zd, ws, gbuf, wc, float(scale), float(l2),
                                 n_blocks, n_slots, ctl, job, 0, self._rows)
            finally:
                if pool is not None:
                    pool.release()
        finally:
            if self.uses_blas:
                blas_threads.release()
            if locked:
                self._lock.release()
        return float(loss), grad

    # ---------------------------------------------------------------------------- second order
    @property
    def max_directions(self):
        """Most directions :meth:`hessp_block` is given at once by ``Network.hess``."""
        return max(1, min(MAX_DIRECTIONS, R_BLOCK_VALUES // self.layout.n_params))

    def hessp(self, W, V, X, T, sample_weight, scale, l2):
        return self._curvature(W, _one_row(V), X, T, sample_weight, scale, l2, EXACT)[0]

    def hessp_block(self, W, V, X, T, sample_weight, scale, l2, upper=False):
        return self._curvature(W, V, X, T, sample_weight, scale, l2, UPPER if upper else EXACT)

    def gauss_newton_product(self, W, V, X, T, sample_weight, scale, l2):
        return self._curvature(W, _one_row(V), X, T, sample_weight, scale, l2, GN)[0]

    def gauss_newton_block(self, W, V, X, T, sample_weight, scale, l2):
        return self._curvature(W, V, X, T, sample_weight, scale, l2, GN)

    def _curvature(self, W, V, X, T, sample_weight, scale, l2, product):
        st = self._second
        if st is None:
            st = self._second = _SecondOrder(self)
        if self._announce_second:
            self._announce_second = False
            _announce_compile(self.layout.dtype, self.uses_blas, "second_order")
        k = V.shape[0]
        n_blocks, split = st.plan(X.shape[0], k)
        if X.flags.writeable:
            X = _readonly(X)
        if T.flags.writeable:
            T = _readonly(T)
        sw = _EMPTY if sample_weight is None else _readonly(sample_weight)
        if V.dtype != np.float64 or not V.flags.c_contiguous:
            V = np.ascontiguousarray(V, dtype=np.float64)
        if V.flags.writeable:
            V = _readonly(V)
        if not W.flags.writeable:
            W = W.copy()
        locked = st.lock.acquire(blocking=False)
        try:
            zd, ws, job = st.scratch if locked else st.allocate()
            Wc, rmeta, gbuf = st.buffers(k, n_blocks, split, reuse=locked)
            pool, n_slots, ctl = _claim(st.pool, 1 if self.uses_blas else min(self.n_threads, n_blocks))
            try:
                out = run_curvature(W, V, X, T, sw, st.meta, rmeta, zd, ws, gbuf, Wc, float(scale), float(l2),
                                    product, n_blocks, split, n_slots, ctl, job, 0, self._rows)[1]
            finally:
                if pool is not None:
                    pool.release()
        finally:
            if locked:
                st.lock.release()
        return out

    def output_jacobian(self, W, X, row_scale, out):
        jac = self._jacobian
        if jac is None:
            jac = self._jacobian = _Jacobian(self)
        if X.flags.writeable:
            X = _readonly(X)
        row_scale = np.ascontiguousarray(row_scale, dtype=np.float64)
        if row_scale.flags.writeable:
            row_scale = _readonly(row_scale)
        if not W.flags.writeable:
            W = W.copy()
        locked = jac.lock.acquire(blocking=False)
        try:
            zd, Wc = jac.scratch if locked else jac.allocate()
            output_jacobian(W, X, jac.meta, zd, Wc, row_scale, out)
        finally:
            if locked:
                jac.lock.release()


    def _batch_plan(self, n, batch_size, weighted):
        """What an epoch over n samples in batches of ``batch_size`` needs besides the data, made
        once per (n, batch size, weighted): the blocks of a full batch and of the last one (as a
        kernel call on such a batch splits it), the batch buffers (Xb, Tb, swb: one batch of
        gathered rows), and the shapes of X, T and a weight or order vector."""
        if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        batch_size = int(batch_size)
        rows = min(batch_size, n)
        last = n % batch_size or rows
        dt, sizes = self.layout.dtype, self.layout.layer_sizes
        plan = (
            self.n_blocks(rows),
            self.n_blocks(last),
            np.zeros((rows, sizes[0]), dtype=dt),
            np.zeros((rows, sizes[-1]), dtype=dt),
            np.zeros(rows if weighted else 0, dtype=np.float64),
            (n, sizes[0]),
            (n, sizes[-1]),
            (n,),
        )
        if len(self._batches) > 8:  # a few batch sizes per kernel, not one per call
            self._batches.clear()
        self._batches[(n, batch_size, weighted)] = plan
        return plan

    def run_epoch(self, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
        """One epoch of minibatch training in one compiled call (:func:`.numba_kernels.epoch.run_epoch`);
        the protocol is in :mod:`fastbp.backends`. The arrays are checked on every call (about
        3 µs): :meth:`epoch_runner` checks them once for all the epochs of a fit."""
        checked = self._epoch_checked(W, X, T, sample_weight, order, batch_size, optimizer)
        return self._epoch(checked, float(alpha), optimizer)

    def epoch_runner(self, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
        """:meth:`run_epoch` on these arguments as ``run() -> float``, the arrays checked once.

        Each ``run()`` is one epoch, as ``run_epoch`` with the same arguments would run it at
        that moment: it reads ``order``'s contents (an estimator shuffles it in place between
        epochs), ``W`` and the optimizer's state, learning rate and step count as they are then.
        The arrays themselves must stay the same objects, unchanged in shape and dtype, for the
        runner's life. A lab network's epoch is about 20 µs, of which the checks were 3.
        """
        checked = self._epoch_checked(W, X, T, sample_weight, order, batch_size, optimizer)
        alpha = float(alpha)
        return functools.partial(self._epoch, checked, alpha, optimizer)

    def _epoch_checked(self, W, X, T, sample_weight, order, batch_size, optimizer):
        """run_epoch's arrays checked (a wrong one would be a wild memory access in compiled
        code) and made read-only where the compiled epoch takes them so, with the batch plan."""
        dt = self._dtype
        n = X.shape[0]
        weighted = sample_weight is not None
        plan = self._batches.get((n, batch_size, weighted))
        if plan is None:
            plan = self._batch_plan(n, batch_size, weighted)
        x_shape, t_shape, n_shape = plan[5:]
        f = W.flags
        if not (W.dtype == dt and W.shape == self._w_shape and f.c_contiguous and f.writeable):
            raise ValueError(f"W must be a writable C-contiguous {dt} vector of length {self._w_shape[0]}")
        if optimizer.kind == "adam":
            kind, S1, S2 = ADAM, optimizer.m, optimizer.v
        else:
            kind, S1 = SGD, optimizer.velocity
            S2 = S1
        for S in (S1, S2):
            f = S.flags
            if not (S.dtype == dt and S.shape == self._w_shape and f.c_contiguous and f.writeable):
                raise ValueError(f"the optimizer's state must be writable C-contiguous {dt} vectors of W's length")
        fx, ft = X.flags, T.flags
        if not (X.dtype == dt and X.shape == x_shape and fx.c_contiguous and T.dtype == dt and T.shape == t_shape
                and ft.c_contiguous):
            raise ValueError(f"X and T must be C-contiguous {dt} arrays of shapes {x_shape}, {t_shape}")
        if fx.writeable:
            X = _readonly(X)
        if ft.writeable:
            T = _readonly(T)
        if weighted:
            f = sample_weight.flags
            if not (sample_weight.dtype == _FLOAT64 and sample_weight.shape == n_shape and f.c_contiguous):
                raise ValueError(f"sample_weight must be None or a C-contiguous float64 array of shape {n_shape}")
            sw = _readonly(sample_weight) if f.writeable else sample_weight
        else:
            sw = _EMPTY
        copy_order = False
        if order is None:
            order = _NO_ORDER
        else:
            f = order.flags
            if not (order.dtype == _INT64 and order.shape == n_shape and f.c_contiguous):
                raise ValueError(f"order must be None or a C-contiguous int64 array of shape {n_shape}")
            copy_order = not f.writeable  # (a writable copy: the compiled epoch's one specialization)
        if self._announce_epoch:
            self._announce_epoch = False
            _announce_compile(dt, self.uses_blas, "epoch")
        serial = n * self._work_per_sample < MIN_PARALLEL_EPOCH_WORK  # (see MIN_PARALLEL_EPOCH_WORK)
        return W, X, T, sw, order, copy_order, int(batch_size), kind, S1, S2, plan, serial

    def _epoch(self, checked, alpha, optimizer):
        """One epoch on checked arguments (see :meth:`_epoch_checked`)."""
        W, X, T, sw, order, copy_order, batch_size, kind, S1, S2, plan, serial = checked
        blocks_full, blocks_last, Xb, Tb, swb = plan[:5]
        if copy_order:
            order = order.copy()
        if kind == ADAM:
            lr, mu, nesterov, t = float(optimizer.learning_rate_init), 0.0, False, int(optimizer.t)
            b1, b2, eps = float(optimizer.beta_1), float(optimizer.beta_2), float(optimizer.epsilon)
        else:
            lr, mu, nesterov, t = float(optimizer.learning_rate), float(optimizer.momentum), bool(optimizer.nesterov), 0
            b1 = b2 = eps = 0.0
        locked = self._lock.acquire(blocking=False)
        if self.uses_blas:
            blas_threads.hold()  # the blocks' gemms on this thread, in the epoch's flush mode
        try:
            zd, ws, gbuf, _, job = self._scratch if locked else self._allocate()
            if not locked:  # a concurrent epoch on this kernel: its own batch buffers too
                Xb, Tb, swb = Xb.copy(), Tb.copy(), swb.copy()
            # (a BLAS network's blocks run on this thread: the epoch pool serves unit-major ones)
            pool, n_slots, ctl = _claim(
                self._epoch_pool, 1 if self.uses_blas or serial else min(self.n_threads, max(blocks_full, blocks_last)))
            try:
                total, t, rate = _run_epoch(
                    W, X, T, sw, order, batch_size, alpha, kind, lr, mu, nesterov, b1, b2, eps, t, S1, S2,
                    self.meta, zd, ws, gbuf, Xb, Tb, swb, blocks_full, blocks_last, n_slots, ctl, job, 0,
                    self._epoch_choice, self._rows)
            finally:
                if pool is not None:
                    pool.release()
        finally:
            if self.uses_blas:
                blas_threads.release()
            if locked:
                self._lock.release()
        if kind == ADAM and t != optimizer.t:  # (no step taken: the last rate stays)
            optimizer.t = t
            optimizer.learning_rate = rate
        return total


def _one_row(V):
    """``V`` (n_params,) as a read-only (1, n_params) view (a new view: the caller's flags stay)."""
    v = V.reshape(1, -1)  # always a new array object (a view, or a copy of a strided V)
    v.setflags(write=False)
    return v


def _r_tile(kernel, sizes, rows):
    """The R kernels' tile: as the gradient's rule, with the R budgets."""
    if rows:
        tile = max(OUT_BLOCK, min(TILE_ROWS, R_ROWS_BUDGET // int(sizes[1:].sum())))
        return tile - tile % PAD
    tile = R_TILE_BUDGET // int(sizes.sum())
    return max(TILE_MIN, min(TILE_MAX, tile - tile % PAD))


class _SecondOrder:
    """What :meth:`NumbaKernel.hessp` and its kin need, prepared on their first call: the layout
    with the R kernels' tile, per-thread scratch, the pool of :func:`run_curvature` workers, and
    the buffers of one direction (the hessp call) kept between calls."""

    def __init__(self, kernel):
        layout = kernel.layout
        self.kernel = kernel
        sizes = np.asarray(layout.layer_sizes, dtype=np.int64)
        rows = kernel.uses_blas
        self.tile = _r_tile(kernel, sizes, rows)
        blas = [1 if rows else 0] * (len(sizes) - 1)
        meta, _, _ = make_meta(sizes, layout.coef_offsets, layout.intercept_offsets, layout.activation_code,
                               layout.output_code, self.tile, blas, rows=rows)
        meta.setflags(write=False)
        self.meta = meta
        self._csize, self._wsize = scratch_sizes(sizes, self.tile, int(meta[H_ZSIZE]), int(meta[H_GSIZE]), rows)
        self._rbase = rbase(len(sizes) - 1)
        self._n_slots = 1 if rows else kernel.n_threads
        self._max_blocks = kernel._max_blocks
        self._work_per_sample = kernel._work_per_sample
        self.lock = threading.Lock()
        self.scratch = self.allocate()
        self._one = None  # (Wc, rmeta, gbuf) of k = 1
        self._plans = {}
        self.pool = curvature_pool(layout.dtype) if self._max_blocks > 1 else None

    def allocate(self):
        dt = self.kernel.layout.dtype
        t = self._n_slots
        zd = _aligned_zeros((t, -(-self._csize * dt.itemsize // 64) * 64 // dt.itemsize), dt)
        ws = _aligned_zeros((t, -(-self._wsize // 8) * 8), np.float64)
        return zd, ws, np.zeros(JOB_LEN, dtype=np.int64)

    def buffers(self, k, n_blocks, split, reuse):
        """W and the directions in the compute dtype, the call's meta, the blocks' rows."""
        if k == 1 and reuse and self._one is not None:
            return self._one
        layout = self.kernel.layout
        P = layout.n_params
        L = len(layout.layer_sizes) - 1
        if split:
            rows = (n_blocks, split * P)
        else:
            rows = (self._max_blocks if k == 1 else n_blocks, k * P)
        bufs = (
            np.zeros((k + 1) * P, dtype=layout.dtype),
            np.zeros(self._rbase + R_FLAGS + k * (L + 1), dtype=np.int64),
            np.zeros(rows, dtype=np.float64),
        )
        if k == 1 and reuse:
            self._one = bufs
        return bufs

    def plan(self, n_samples, k):
        """``(n_blocks, split)`` of a call on ``n_samples`` samples and ``k`` directions: a
        function of n_samples, k, the layout and n_threads. Blocks of samples (``split`` 0) by the
        gradient's rule (:meth:`NumbaKernel.n_blocks`), with the work of the R-passes (about
        1 + 2k gradients); from SPLIT_DIRECTIONS directions on, blocks of ``split`` directions
        each over all the samples: each direction pays a fixed cost per tile (its gradient sums'
        reductions), which blocks of samples multiply (seed4layer's dense Hessian on one thread:
        6.0 ms of CPU in one block of samples, 8.6 in four, 11.8 in eight)."""
        key = (n_samples, k)
        plan = self._plans.get(key)
        if plan is None:
            work = n_samples * self._work_per_sample * (1 + 2 * k)
            threads = self.kernel.n_threads
            if self._max_blocks == 1 or self.kernel.uses_blas or work < MIN_PARALLEL_WORK:
                plan = (1, 0)  # (a BLAS network: one block, BLAS's threads take the cores)
            elif k >= SPLIT_DIRECTIONS:
                split = -(-k // min(k, BLOCKS_PER_THREAD * threads, MAX_BLOCKS))
                plan = (-(-k // split), split)
            else:
                per_thread = BLOCKS_PER_THREAD if work >= MANY_BLOCKS_WORK else 1
                plan = (max(1, min(per_thread * threads, n_samples // MIN_BLOCK_SAMPLES, MAX_BLOCKS,
                                   self._max_blocks)), 0)
            if len(self._plans) < 64:
                self._plans[key] = plan
        return plan


class _Jacobian:
    """Scratch of :meth:`NumbaKernel.output_jacobian`: unit-major tiles whatever the network."""

    def __init__(self, kernel):
        layout = kernel.layout
        self.kernel = kernel
        sizes = np.asarray(layout.layer_sizes, dtype=np.int64)
        tile = _r_tile(kernel, sizes, False)
        meta, _, _ = make_meta(sizes, layout.coef_offsets, layout.intercept_offsets, layout.activation_code,
                               layout.output_code, tile, [0] * (len(sizes) - 1), rows=False)
        meta.setflags(write=False)
        self.meta = meta
        self._zsize = int(sizes.sum()) * tile
        self.lock = threading.Lock()
        self.scratch = self.allocate()

    def allocate(self):
        dt = self.kernel.layout.dtype
        return _aligned_zeros((2 * self._zsize,), dt), np.zeros(self.kernel.layout.n_params, dtype=dt)


class NumbaBackend:
    """Registry entry: ``prepare(layout, n_threads)`` returns a :class:`NumbaKernel`."""

    name = "numba"

    def prepare(self, layout, n_threads):
        return NumbaKernel(layout, n_threads)


BACKEND = NumbaBackend()
