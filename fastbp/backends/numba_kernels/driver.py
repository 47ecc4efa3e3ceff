"""The entry point, :func:`run`: loss and gradient of every sample, on the calling thread and the pool.

It fills the job table, runs the blocks (on the pool's threads when there are several), and
reduces them; a worker thread lives in it too (``slot > 0``), so the caller and the workers run
one compiled function per dtype and kind of network, everything below it inlined or linked in.
The call flushes subnormal numbers to zero on every thread that runs a block of it, and leaves
the caller's mode as it found it (:mod:`.fpenv`).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .backprop import _chunk_rows, _chunk_units, _epilogue
from .fpenv import flush_begin, flush_end
from .jit import _JIT
from .pool import C_NOFLUSH, _fill_job, _run_block, _run_job, _serve


def _block_kernel(rows):
    """The block kernel of a call: :func:`.backprop._chunk_units` when ``rows`` is None,
    :func:`.backprop._chunk_rows` for an array. Chosen by type while compiling, so each
    specialization of :func:`run` compiles its own kernel only."""


@overload(_block_kernel)
def _block_kernel_of(rows):
    if isinstance(rows, types.NoneType):
        return lambda rows: _chunk_units
    if isinstance(rows, types.Array):
        return lambda rows: _chunk_rows
    return None


@njit(**_JIT)
def run(W, X, T, sw, meta, zd, ws, gbuf, Wc, scale, l2, n_blocks, n_slots, ctl, job, slot, rows):
    """Loss and gradient of every sample (``slot = 0``), or the life of worker ``slot`` (> 0).

    ``rows``: None for unit-major networks, an (empty) array for sample-major BLAS networks:
    the type selects the block kernel (:func:`_block_kernel`), so a lab-sized network's first
    call does not wait for the BLAS kernel's compilation, nor a BLAS network's for the other.

    ``slot = 0``: the blocks run on up to ``n_slots`` threads of the pool whose control array is
    ``ctl`` (``n_slots = 1``: all on the calling thread; ``ctl`` is only read). ``job`` is this
    call's table (scratch of the caller); ``zd``/``ws`` hold one row per slot, ``gbuf`` one per
    block (each block zeroes its own row). Returns ``(loss, grad)``. Subnormals are flushed to
    zero throughout unless ``ctl[C_NOFLUSH]`` is set.

    ``slot > 0``: serve jobs of the pool ``ctl`` as :func:`.pool._serve` does, spinning
    ``n_blocks`` cycles at most between two jobs; returns ``(the last generation seen, an empty
    array)``. The other arguments are placeholders of the caller's types, so the
    workers run the very specialization the caller compiled.
    """
    marker = Wc[:0]
    kernel = _block_kernel(rows)
    if slot > 0:
        return float(_serve(ctl, slot, marker, n_blocks, kernel)), np.empty(0, dtype=np.float64)
    saved = flush_begin(ctl[C_NOFLUSH] == 0)
    for p in range(W.shape[0]):
        Wc[p] = W[p]
    _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks)
    if n_slots > 1 and n_blocks > 1:
        _run_job(ctl, job, n_slots, n_blocks, marker, kernel)
    else:
        for b in range(n_blocks):
            _run_block(job, b, 0, marker, kernel)
    loss, grad = _epilogue(W, gbuf, n_blocks, meta, scale, l2)
    return flush_end(saved, loss), grad
