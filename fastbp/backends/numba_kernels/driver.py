"""The entry point, :func:`run`: loss and gradient of every sample, on the calling thread and the pool.

It fills the job table, runs the blocks (on the pool's threads when there are several), and
reduces them; a worker thread lives in it too (``slot > 0``), so the caller and the workers run
one compiled function per dtype, everything below it inlined or linked in.
"""

import numpy as np
from numba import njit

from .backprop import _chunk_rows, _chunk_units, _epilogue
from .jit import _JIT
from .pool import (
    C_DONE,
    C_JOB,
    C_MAINCPU,
    C_STATE,
    _address,
    _claim,
    _fill_job,
    _getcpu,
    _load_acquire,
    _relax,
    _run_block,
    _sched_yield,
    _serve,
    _store_release,
)


@njit(**_JIT)
def run(W, X, T, sw, meta, zd, ws, gbuf, Wc, scale, l2, n_blocks, n_slots, ctl, job, slot, rows):
    """Loss and gradient of every sample (``slot = 0``), or the life of worker ``slot`` (> 0).

    ``rows``: None for unit-major networks, an (empty) array for sample-major BLAS networks
    (which run one block and let BLAS use the cores). Numba prunes the branches of ``rows is
    None`` before typing when ``rows`` is None, so a lab-sized network's first call does not
    wait for the BLAS path's compilation. (It does not prune them for an array: a BLAS
    network's specialization compiles both kernels.)

    ``slot = 0``: the blocks run on up to ``n_slots`` threads of the pool whose control array is
    ``ctl`` (``n_slots = 1``: all on the calling thread, ``ctl`` untouched). ``job`` is this
    call's table (scratch of the caller); ``zd``/``ws`` hold one row per slot, ``gbuf`` one per
    block (each block zeroes its own row). Returns ``(loss, grad)``.

    ``slot > 0`` (``rows`` None): serve jobs of the pool ``ctl`` as :func:`.pool._serve` does, spinning
    ``n_blocks`` cycles at most between two jobs; returns ``(the last generation seen, an empty
    array)``. The other arguments are placeholders of the caller's types, so the
    workers run the very specialization the caller compiled.
    """
    marker = Wc[:0]
    if rows is None:
        if slot > 0:
            return float(_serve(ctl, slot, marker, n_blocks, _chunk_units)), np.empty(0, dtype=np.float64)
    for p in range(W.shape[0]):
        Wc[p] = W[p]
    _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks)
    if rows is None:
        if n_slots > 1 and n_blocks > 1:
            ctl[C_DONE] = 0
            ctl[C_JOB] = _address(job)
            gen = ((_load_acquire(ctl, C_STATE) >> 32) + 1) & 0x7FFFFFFF
            ctl[C_MAINCPU] = _getcpu()
            _store_release(ctl, C_STATE, (gen << 32) | (n_slots << 24) | (n_blocks << 12))
            _claim(ctl, gen, 0, marker, _chunk_units)  # jobs on threads are unit-major
            # every block is claimed; wait for those other threads are running
            spins = 0
            while _load_acquire(ctl, C_DONE) < n_blocks:
                _relax()
                spins += 1
                if spins & 63 == 0:
                    _sched_yield()
        else:
            for b in range(n_blocks):
                _run_block(job, b, 0, marker, _chunk_units)
    else:
        for b in range(n_blocks):
            _run_block(job, b, 0, marker, _chunk_rows)
    return _epilogue(W, gbuf, n_blocks, meta, scale, l2)
