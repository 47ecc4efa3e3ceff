"""The epoch's entry point, :func:`run_epoch`: a whole epoch of minibatch training in one compiled call.

The protocol is ``run_epoch`` of :mod:`fastbp.backends`; the Python reference it follows is
:func:`fastbp.backends.stochastic.reference_epoch`. Per batch ``b`` (rows ``order[b·bs :
min((b+1)·bs, n)]``, or the next ``bs`` rows when there is no order):

1. its rows of X, T and the sample weights are gathered, in batch order, into the batch buffers
   ``Xb``, ``Tb``, ``swb`` (without an order the batch is a slice of X and T, read in place);
2. its weight ``S_b`` (the sample count, or Σ of its weights summed pairwise as NumPy's ``sum``
   does, so ``1 / S_b`` has the reference's bits); a batch with ``S_b = 0`` is skipped;
3. its loss and gradient sums, by the block kernels of :mod:`.backprop` on the batch, split in
   ``n_blocks`` blocks exactly as a kernel call on that batch would split them (the caller passes
   the counts for a full batch and for the last one), run on the calling thread and the workers
   of the epoch's pool, each block into its own float64 row of ``gbuf``;
4. the rows reduced in block order, scaled by ``1 / S_b``, the L2 term ``alpha / (2 S_b)``
   added, and the optimizer's step (:mod:`.optimizers`), in place on W and the state.

Threads (as the Cython epoch's, ``src_kernels/fb_epoch.pxi``): a full batch that would run on
several threads runs on them while they pay. On a machine that gives the second core to
something else from time to time, a worker that loses its core while holding a block makes the
caller wait, or shares the caller's core (such batches took 1.15x the time of the same blocks run
by the caller alone, where the threads otherwise take 0.65x). So the kernel keeps, in ``choice``,
a full batch's mean time (rows, kernel call, step) both ways (cycles; each epoch's mean replaces
the last), runs an epoch's full batches the faster way (alone only when the threads are clearly
slower), and every ``PROBE_EVERY`` epochs runs a few batches the other way. An epoch's first
batch is not timed. The blocks, and so the bits, are the same either way; two epochs running at
once on one kernel may race on ``choice``, which only steers the choice.

So a batch is computed with the same blocks, the same sums in the same order and the same
rounding as the reference's kernel call and NumPy step: a float64 epoch equals the reference's to
the bit (float32 too, but for the subnormals NumPy's step would make: see :mod:`.optimizers`;
a batch's gradient is computed with subnormals flushed to zero, as a kernel call does, and its
step in the caller's mode, as NumPy's: :mod:`.fpenv`), and it is bit-identical between runs for a given ``n_threads``.

Threads: the workers of the epoch's pool (:class:`.pool_threads.EpochPool`) live in this very
function (``slot > 0``), as the gradient's workers live in :func:`.driver.run`: a fit by epochs
compiles this one entry point per dtype and nothing else. Between two batches the caller steps the
weights alone (a few microseconds); the workers spin meanwhile, so the next batch finds them
awake. Memory: the kernel's scratch (per thread tiles, per block gradient rows) and one batch of
gathered rows, nothing per sample.
"""

import numpy as np
from numba import njit

from .backprop import _chunk_units
from .driver import _block_kernel
from .fpenv import flush_begin, flush_end
from .jit import _JIT
from .optimizers import ADAM, adam_rate, adam_step, batch_gradient, sgd_step
from .pool import C_NOFLUSH, _clock, _fill_job, _run_block, _run_job, _serve

#: numpy's pairwise summation: blocks of this many values are summed with 8 accumulators
_PW_BLOCK = 128
#: The choice of threads (see the top): epochs between two timings of the way not taken, and the
#: batches of a probing epoch that take it
PROBE_EVERY = 8
PROBE_FIRST, PROBE_BATCHES = 2, 3
#: ``choice``: a full batch's mean time alone and on the threads (0: not yet timed), and the
#: epochs that chose
CH_ALONE, CH_THREADS, CH_EPOCHS = 0, 1, 2


@njit(**_JIT)
def _pairwise_leaf(a, start, n):
    """A leaf of NumPy's pairwise summation (n ≤ 128): in order below 8 values, else 8
    accumulators over the multiples of 8, combined as a tree, and the rest added in order."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    while i < n - n % 8:
        j = start + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(**_JIT)
def pairwise_sum(a, start, n):
    """Σ a[start : start + n] as NumPy's ``a.sum()`` adds float64 values, bit for bit: its pairwise
    summation, leaves of at most 128 values (:func:`_pairwise_leaf`), larger ranges split at half
    (rounded down to a multiple of 8) and the halves' sums added. The recursion is run on an
    explicit stack (a cached function that calls itself crashed when loaded from Numba's cache)."""
    if n <= _PW_BLOCK:
        return _pairwise_leaf(a, start, n)
    # frames (start, n, expanded); values of finished subtrees. Depth ≤ 64: 2 · 64 + 1 frames
    fs = np.empty(160, dtype=np.int64)
    fn = np.empty(160, dtype=np.int64)
    fx = np.zeros(160, dtype=np.int64)
    vals = np.empty(80, dtype=np.float64)
    top, nv = 1, 0
    fs[0], fn[0], fx[0] = start, n, 0
    while top > 0:
        top -= 1
        s, m, expanded = fs[top], fn[top], fx[top]
        if m <= _PW_BLOCK:
            vals[nv] = _pairwise_leaf(a, s, m)
            nv += 1
        elif expanded:
            nv -= 1
            vals[nv - 1] = vals[nv - 1] + vals[nv]
        else:
            m2 = m // 2
            m2 -= m2 % 8
            fs[top], fn[top], fx[top] = s, m, 1  # combine after both halves
            fs[top + 1], fn[top + 1], fx[top + 1] = s + m2, m - m2, 0  # right half, second
            fs[top + 2], fn[top + 2], fx[top + 2] = s, m2, 0  # left half, first
            top += 3
    return vals[0]


@njit(**_JIT)
def _alone(choice, batch):
    """Whether full batch number ``batch`` runs on the calling thread alone (see the top)."""
    prefer_alone = choice[CH_ALONE] > 0.0 and choice[CH_THREADS] > 1.1 * choice[CH_ALONE]
    if int(choice[CH_EPOCHS]) % PROBE_EVERY == 0 and PROBE_FIRST <= batch < PROBE_FIRST + PROBE_BATCHES:
        return not prefer_alone
    return prefer_alone


@njit(**_JIT)
def run_epoch(W, X, T, sw, order, batch_size, alpha, kind, lr, momentum, nesterov, beta_1, beta_2,
              epsilon, t, S1, S2, meta, zd, ws, gbuf, Xb, Tb, swb, blocks_full, blocks_last, n_slots,
              ctl, job, slot, choice, rows):
    """One epoch (``slot = 0``), or the life of the epoch pool's worker ``slot`` (> 0).

    ``W`` (flat weights, compute dtype) and the optimizer's state ``S1``, ``S2`` are updated in
    place. ``sw``: the sample weights or an empty array; ``order``: the epoch's permutation or an
    empty array (samples in order). ``kind``: :data:`.optimizers.SGD` (``lr``, ``momentum``,
    ``nesterov``; ``S1`` the velocity) or :data:`.optimizers.ADAM` (``lr`` is η₀; ``beta_1``,
    ``beta_2``, ``epsilon``; ``t`` the steps taken; ``S1``, ``S2`` the moments). ``Xb``, ``Tb``,
    ``swb``: batch buffers of ``batch_size`` rows (``swb`` empty without weights). Batches of
    ``batch_size`` samples run in ``blocks_full`` blocks, a shorter last one in ``blocks_last``,
    on up to ``n_slots`` threads of the pool ``ctl`` (or the calling thread alone: ``choice``, a
    float64 array of 3 the kernel keeps, updated in place; see the top). ``rows``: None
    (unit-major) or an empty array (sample-major BLAS networks: every block on the calling thread), as for
    :func:`.driver.run`. A batch's gradient is computed with subnormals flushed to zero unless
    ``ctl[C_NOFLUSH]`` is set; its step in the caller's floating-point mode.

    Returns ``(Σ_b |b| loss_b, steps taken t, last rate)``: the rate is Adam's η_t of the last
    step (``lr`` if none was taken), SGD's ``lr``. A worker returns ``(the last generation seen,
    0, 0.0)``; the other arguments are then placeholders of the caller's types (``blocks_full``
    is its spin), so it runs the caller's specialization.
    """
    marker = W[:0]
    kernel = _block_kernel(rows)
    if rows is None:
        if slot > 0:
            return float(_serve(ctl, slot, marker, blocks_full, _chunk_units)), 0, 0.0
    n = X.shape[0]
    shuffled = order.shape[0] > 0
    weighted = sw.shape[0] > 0
    for i in range(order.shape[0]):
        if order[i] < 0 or order[i] >= n:
            raise ValueError("order holds an index outside [0, n)")
    flush = ctl[C_NOFLUSH] == 0
    total = 0.0
    rate = lr
    time_way = np.zeros(2)  # timed full batches' time (cycles): threads, alone
    n_way = np.zeros(2, dtype=np.int64)
    batch = -1
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        nb = stop - start
        batch += 1
        n_blocks = blocks_full if nb == batch_size else blocks_last
        threads = min(n_slots, n_blocks)
        choose = rows is None and nb == batch_size and threads > 1
        alone = choose and _alone(choice, batch)
        timed = choose and batch > 0  # (an epoch's first batch meets cold caches)
        t0 = _clock(0)  # (timed to the step's end: spinning workers on a shared core slow it too)
        # the batch's rows, in batch order, and its weight S_b
        if shuffled:
            for i in range(nb):
                r = order[start + i]
                for j in range(X.shape[1]):
                    Xb[i, j] = X[r, j]
                for k in range(T.shape[1]):
                    Tb[i, k] = T[r, k]
                if weighted:
                    swb[i] = sw[r]
            weight = pairwise_sum(swb, 0, nb) if weighted else np.float64(nb)
            _fill_job(job, Xb[:nb], Tb[:nb], swb[:nb], meta, zd, ws, gbuf, W, n_blocks)
        else:
            weight = pairwise_sum(sw, start, nb) if weighted else np.float64(nb)
            _fill_job(job, X[start:stop], T[start:stop], sw[start:stop] if weighted else sw, meta, zd, ws,
                      gbuf, W, n_blocks)
        if not weight > 0.0:  # every sample of the batch has weight zero: not a batch at all
            continue
        scale = 1.0 / weight
        l2 = alpha / (2.0 * weight)
        # the batch's loss and gradient sums, block by block (the pool's workers run unit-major
        # blocks only: a BLAS network's blocks run here, BLAS held to this thread), with
        # subnormals flushed as in a kernel call (:mod:`.fpenv`); the step in the caller's mode,
        # as NumPy's step of the reference runs
        saved = flush_begin(flush)
        if rows is None and threads > 1 and not alone:
            _run_job(ctl, job, threads, n_blocks, marker, kernel)
        else:
            for b in range(n_blocks):
                _run_block(job, b, 0, marker, kernel)
        total += flush_end(saved, batch_gradient(W, gbuf, n_blocks, meta, scale, l2)) * nb
        # the step, in place
        g = gbuf[0]
        if kind == ADAM:
            t += 1
            rate = adam_rate(lr, beta_1, beta_2, t)
            adam_step(W, g, rate, beta_1, beta_2, epsilon, S1, S2)
        else:
            sgd_step(W, g, lr, momentum, nesterov, S1)
        if timed:
            time_way[1 if alone else 0] += _clock(0) - t0
            n_way[1 if alone else 0] += 1
    if n_way[0] + n_way[1] > 0:  # this epoch's means replace the last ones (see the top)
        if n_way[0] > 0 and time_way[0] > 0.0:
            choice[CH_THREADS] = time_way[0] / n_way[0]
        if n_way[1] > 0 and time_way[1] > 0.0:
            choice[CH_ALONE] = time_way[1] / n_way[1]
        choice[CH_EPOCHS] += 1
    return total, t, rate
