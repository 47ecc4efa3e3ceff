"""The entry points of second order: :func:`run_curvature` (H V and G V for a block of directions) and
:func:`output_jacobian` (the per-sample Jacobian of the output pre-activations).

Each is its own compiled function, separate from the gradient's :func:`.driver.run`: a process that
only fits by the gradient never compiles them, and compiling them does not slow the gradient's
first call. They compile on their first call (per dtype; cached to disk like the rest of the
package).

Threads: :func:`run_curvature` splits the samples into blocks and runs them on the calling thread
and the workers of its own pool (:func:`curvature_pool`): a worker of a pool lives in the compiled
code of one entry point (:func:`.pool._serve` with that entry point's block kernel), so the
gradient's workers cannot run the R-operator's blocks without compiling it into the gradient's
entry point. Each pool's workers sleep after about half a millisecond without a job, so an
optimizer alternating gradients and Hessian-vector products has the other pool's workers spinning
only for that long after a switch (they call ``sched_yield`` as they spin). Networks with a BLAS
layer run one block and let BLAS use the cores. Subnormals are flushed to zero on every thread of a
call, as in the gradient's (:mod:`.fpenv`). Results depend on the number of blocks only (each block
sums into its own float64 row; rows reduced in block order): bit-identical for given inputs and
thread count.

:func:`output_jacobian` runs on the calling thread: its output (n · n_outputs rows of n_params) is
written once, and is what costs.
"""

import numpy as np
from numba import njit

from .backprop import forward_units
from .fpenv import flush_begin, flush_end
from .jit import _JIT
from .meta import H_ACT, H_L, H_NCOEF, H_NPARAMS, H_TILE, H_ZSIZE, PAD, layer_arrays
from .pool import C_NOFLUSH, JOB_LEN, _address, _fill_job, _run_block, _run_job, _serve
from .pool_threads import Pool, get_pool
from .roperator import (
    DENSE,
    R_FLAGS,
    R_GBUF,
    R_GN,
    R_K,
    R_SPLIT,
    SPARSE,
    SPARSE_RATIO,
    ZERO,
    _rchunk_rows,
    _rchunk_units,
    rbase,
)
from .tile_products import mm_flat


@njit(**_JIT)
def _direction_flags(V, meta, rmeta):
    """The call's part of meta (see :mod:`.roperator`): per direction what it is on each layer
    (coefficients and intercepts together: ZERO, DENSE or SPARSE), then its first nonzero layer."""
    L = meta[H_L]
    n1 = L + 1
    SZ, _, CO, IO = layer_arrays(L)
    FL = rbase(L) + R_FLAGS
    k = V.shape[0]
    for d in range(k):
        first = L
        for layer in range(L - 1, -1, -1):
            nnz = 0
            for p in range(meta[CO + layer], meta[CO + layer + 1]):
                if V[d, p] != 0.0:
                    nnz += 1
            for p in range(meta[IO + layer], meta[IO + layer + 1]):
                if V[d, p] != 0.0:
                    nnz += 1
            kind = ZERO
            if nnz > 0:
                first = layer
                dense = nnz * SPARSE_RATIO > meta[SZ + layer] * meta[SZ + layer + 1]
                kind = DENSE if dense else SPARSE
            rmeta[FL + d * n1 + layer] = kind
        rmeta[FL + d * n1 + L] = first


@njit(**_JIT)
def _curvature_epilogue(V, gbuf, n_blocks, split, meta, scale, l2):
    """The (k, P) result: the blocks' rows reduced in block order (blocks of samples) or laid
    side by side (blocks of ``split`` directions), scaled, plus 2 λ V on the coefficients."""
    k, P = V.shape
    n_coef = meta[H_NCOEF]
    out = np.empty((k, P), dtype=np.float64)
    if split == 0:
        acc = gbuf[0, : k * P].copy()
        for b in range(1, n_blocks):
            row = gbuf[b]
            for c in range(k * P):
                acc[c] += row[c]
        for d in range(k):
            for p in range(P):
                out[d, p] = scale * acc[d * P + p]
    else:
        for d in range(k):
            row = gbuf[d // split]
            o = (d % split) * P
            for p in range(P):
                out[d, p] = scale * row[o + p]
    for d in range(k):
        for p in range(n_coef):
            out[d, p] += 2.0 * l2 * V[d, p]
    return out


@njit(**_JIT)
def run_curvature(W, V, X, T, sw, meta, rmeta, zd, ws, gbuf, Wc, scale, l2, product, n_blocks, split,
                  n_slots, ctl, job, slot, rows):
    """``H V[d]`` (``product`` :data:`.roperator.EXACT`), ``G V[d]`` (``GN``) or the upper part of
    ``H V[d]`` (``UPPER``: the entries of V[d]'s first nonzero layer and above, the rest 0) for
    every row of ``V``, as a new float64 (k, n_params) array (``slot = 0``), or the life of worker
    ``slot`` (> 0) of the pool ``ctl``.

    ``V``: float64 (k, n_params). ``meta``: the layout with the R kernels' tile; ``rmeta``: int64
    scratch of ``rbase(L) + R_FLAGS + k (L + 1)`` entries, which receives the layout and the
    call's part (:mod:`.roperator`). ``Wc``: compute-dtype scratch of (k + 1) n_params, which
    receives W and V. ``split``: 0 when the ``n_blocks`` blocks split the samples, else the
    directions per block (:func:`.roperator.block_directions`). ``gbuf``: float64, one row per
    block: (at least ``n_blocks``, k n_params) for blocks of samples, (n_blocks, split n_params)
    for blocks of directions. ``zd``/``ws``:
    one row per slot (:func:`.roperator.r_scratch_sizes`). ``rows``: None for unit-major networks,
    an (empty) array for sample-major BLAS networks (one block, BLAS's threads); Numba prunes the
    branches of ``rows is None`` when it is None. The rest as :func:`.driver.run`; a worker
    returns ``(the last generation seen, an empty array)``, the caller ``(0.0, result)``. Subnormals
    are flushed to zero throughout unless ``ctl[C_NOFLUSH]`` is set.
    """
    marker = Wc[:0]
    if rows is None:
        if slot > 0:
            return float(_serve(ctl, slot, marker, n_blocks, _rchunk_units)), np.empty((0, 0), dtype=np.float64)
    saved = flush_begin(ctl[C_NOFLUSH] == 0)
    k, P = V.shape
    for p in range(P):
        Wc[p] = W[p]
    for d in range(k):
        for p in range(P):
            Wc[(d + 1) * P + p] = V[d, p]
    RB = rbase(meta[H_L])
    for i in range(RB):
        rmeta[i] = meta[i]
    rmeta[RB + R_K] = k
    rmeta[RB + R_GN] = product
    rmeta[RB + R_SPLIT] = split
    rmeta[RB + R_GBUF] = _address(gbuf)
    _direction_flags(V, meta, rmeta)
    _fill_job(job, X, T, sw, rmeta, zd, ws, gbuf, Wc, n_blocks)
    if rows is None:
        if n_slots > 1 and n_blocks > 1:
            _run_job(ctl, job, n_slots, n_blocks, marker, _rchunk_units)
        else:
            for b in range(n_blocks):
                _run_block(job, b, 0, marker, _rchunk_units)
    else:  # (one kernel per branch: a variable holding either would be a first-class function)
        for b in range(n_blocks):
            _run_block(job, b, 0, marker, _rchunk_rows)
    out = _curvature_epilogue(V, gbuf, n_blocks, split, meta, scale, l2)
    return flush_end(saved, 0.0), out


def curvature_placeholders(dtype):
    """Arrays of the types a call passes to :func:`run_curvature` (W, V, X, T, sw, meta, rmeta, zd,
    ws, gbuf, Wc, job): the backend passes V, X, T, sw and meta read-only, the rest writable."""

    def readonly(a):
        a.setflags(write=False)
        return a

    return (
        np.zeros(0),
        readonly(np.zeros((0, 0))),
        readonly(np.zeros((0, 0), dtype=dtype)),
        readonly(np.zeros((0, 0), dtype=dtype)),
        readonly(np.zeros(0)),
        readonly(np.zeros(0, dtype=np.int64)),
        np.zeros(0, dtype=np.int64),
        np.zeros((0, 0), dtype=dtype),
        np.zeros((0, 0)),
        np.zeros((0, 0)),
        np.zeros(0, dtype=dtype),
        np.zeros(JOB_LEN, dtype=np.int64),
    )


class CurvaturePool(Pool):
    """The workers of :func:`run_curvature`: they live in its compiled code (:func:`_serve` with
    the R-operator's block kernel), so the gradient's workers need not compile it. Use
    :func:`curvature_pool`."""

    def __init__(self, dtype):
        super().__init__(dtype)
        self._curvature_placeholders = curvature_placeholders(self.dtype)

    def _serve_once(self, slot, spin_cycles):
        W, V, X, T, sw, meta, rmeta, zd, ws, gbuf, Wc, job = self._curvature_placeholders
        return run_curvature(W, V, X, T, sw, meta, rmeta, zd, ws, gbuf, Wc, 0.0, 0.0, 0, spin_cycles, 0, 0,
                             self.ctl, job, slot, None)[0]


def curvature_pool(dtype):
    """The process's pool of :func:`run_curvature` workers for ``dtype``."""
    return get_pool(dtype, CurvaturePool)


@njit(**_JIT)
def output_jacobian(W, X, meta, zd, Wc, row_scale, out):
    """Row ``n · m + j`` of ``out`` (float64, (n · m, n_params)) ← ``row_scale[n] · ∂a^L_{n,j}/∂W``.

    Unit-major tiles of ``meta`` (its tile; ``zd``: 2 ``meta[H_ZSIZE]`` of the compute dtype,
    ``Wc``: n_params): the forward pass once per tile, then per output j a backward pass from
    δ^L = row_scale · e_j, whose z^l δ^{l+1}ᵀ and δ^{l+1} are written per sample into the row (a
    coefficient (i, j') of layer l: z^l_i δ^{l+1}_{j'}, its intercept: δ^{l+1}_{j'}; products in
    float64). Every entry of ``out`` is written.
    """
    L = meta[H_L]
    act = meta[H_ACT]
    tile = meta[H_TILE]
    P = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    SZ, ZO, CO, IO = layer_arrays(L)
    DO = zsize
    n, n0 = X.shape
    m = meta[SZ + L]
    zo_L = meta[ZO + L]
    widest = 0
    for layer in range(1, L + 1):
        widest = max(widest, meta[SZ + layer])
    dcol = np.empty(widest, dtype=np.float64)
    sig1 = 10 + act if act != 0 else 0
    nobias = np.int64(-1)  # int64 variables, not literals (see .roperator)
    one = np.int64(1)
    for p in range(P):
        Wc[p] = W[p]
    for t0 in range(0, n, tile):
        tsx = min(tile, n - t0)
        ts = min(tile, (tsx + PAD - 1) // PAD * PAD)
        forward_units(Wc, X, meta, t0, tsx, ts, zd, L - 1)  # the hidden layers' z (a^L is not needed)
        for j in range(m):
            for q in range(m * ts):
                zd[DO + zo_L + q] = 0
            for s in range(tsx):
                zd[DO + zo_L + j * ts + s] = row_scale[t0 + s]
            for layer in range(L - 1, -1, -1):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                co = meta[CO + layer]
                io = meta[IO + layer]
                for s in range(tsx):
                    row = out[(t0 + s) * m + j]
                    for jj in range(n_out):
                        dcol[jj] = np.float64(zd[DO + zo_out + jj * ts + s])
                        row[io + jj] = dcol[jj]
                    for i in range(n_in):
                        zi = np.float64(zd[zo_in + i * ts + s])
                        base = co + i * n_out
                        for jj in range(n_out):
                            row[base + jj] = zi * dcol[jj]
                if layer > 0:
                    mm_flat(Wc, co, n_out, one, n_in, n_out, nobias,
                            zd, DO + zo_out, zd, DO + zo_in, ts, sig1, zd, zo_in)
