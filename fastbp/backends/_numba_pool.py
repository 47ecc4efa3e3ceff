"""The numba backend's threads: a small spin-then-sleep pool of Python threads running compiled code.

Why not Numba's ``prange``: its OpenMP layer's workers spin after each region, and so do the
OpenBLAS threads scipy's L-BFGS-B wakes between two objective calls; on two cores the three spin
against the caller, and a 200-iteration fit of the lab's 4-layer network took 1.8 s instead of
13 ms. Its workqueue layer sleeps instead, but a region then costs ~75 µs. Here:

* The samples are cut into ``K`` fixed blocks (see :func:`block_start`); block ``b`` sums into its
  own float64 row ``gbuf[b]`` and the rows are reduced in block order, so the result depends on
  ``K`` only, never on which thread ran which block.
* The calling thread publishes a job and claims blocks itself, one compare-and-swap on one word
  (generation | T | K | next block) at a time; it waits only for blocks another thread has
  claimed, and therefore is running. A worker that does not come in time finds no block left.
* Workers are daemon Python threads that spend their life in :func:`run` (as ``_serve``), compiled with
  ``nogil``: after a job a worker spins for about half a millisecond (an optimizer's next call
  finds it awake), calling ``sched_yield`` every few microseconds so that a thread sharing its core
  is not starved; then it returns to Python and sleeps on a condition variable until a call
  wakes it.
* A job names its arrays by address in a small int64 table (:data:`JOB_LEN` slots), so the
  workers, started once, serve any network of their dtype. Every thread rebuilds the arrays from
  that table, so the kernels are compiled once per dtype, whoever runs them.

The pool is the same algorithm as the Cython backend's ``src_kernels/fb_pool.h``, written with
Numba's compiled code and llvmlite atomics; it needs ``sched_yield`` (POSIX) and uses x86's
``pause`` where there is one.
"""

from __future__ import annotations

import os
import platform
import threading

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _numba_kernels as K

_JIT = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")

# ------------------------------------------------------------------------------- control words
# ctl: one pool's int64 control array; the words written by different threads sit on their own
# 64-byte lines. state = gen << 32 | T << 24 | K << 12 | next; worker blocks counts the blocks
# that threads other than the caller ran (the tests read it).
C_STATE, C_DONE, C_JOB, C_STOP, C_WORKER_BLOCKS = 0, 8, 16, 24, 32
CTL_LEN = 40
MAX_SLOTS = 255
MAX_BLOCKS = 4095
#: A worker spins about this many TSC cycles after its last job before sleeping (~0.5 ms).
SPIN_CYCLES = 1 << 21
#: Spinning threads call sched_yield every YIELD_MASK + 1 pauses.
YIELD_MASK = 1023

# job table: addresses and shapes of one call's arrays
(J_WC, J_NW, J_X, J_N, J_NIN, J_T, J_M, J_SW, J_NSW, J_META, J_NMETA,
 J_ZD, J_NZD, J_WS, J_NWS, J_G, J_NG, J_K) = range(18)
JOB_LEN = 24

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


# ----------------------------------------------------------------------------------- intrinsics
def _element_ptr(context, builder, aty, arr, k):
    a = context.make_array(aty)(context, builder, arr)
    return builder.gep(a.data, [k])


@intrinsic
def _load_acquire(typingctx, a, k):
    """``a[k]`` of an int64 array, an atomic load with acquire order."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load_atomic(_element_ptr(context, builder, sig.args[0], args[0], k), "acquire", 8)

    return types.int64(a, k), codegen


@intrinsic
def _store_release(typingctx, a, k, v):
    """``a[k] = v`` on an int64 array, an atomic store with release order."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, _element_ptr(context, builder, sig.args[0], args[0], k), "release", 8)
        return context.get_dummy_value()

    return types.none(a, k, v), codegen


@intrinsic
def _cas(typingctx, a, k, old, new):
    """Compare-and-swap ``a[k]`` from ``old`` to ``new`` (acq_rel); 1 when it swapped."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_ptr(context, builder, sig.args[0], args[0], k)
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(ptr, old, new, "acq_rel", "acquire")
        return builder.zext(builder.extract_value(res, 1), ir.IntType(64))

    return types.int64(a, k, old, new), codegen


@intrinsic
def _fetch_add(typingctx, a, k, v):
    """``a[k] += v`` atomically (acq_rel); returns the old value."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _element_ptr(context, builder, sig.args[0], args[0], k), v, "acq_rel")

    return types.int64(a, k, v), codegen


@intrinsic
def _relax(typingctx):
    """x86 ``pause`` in a spin loop (nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _sched_yield(typingctx):
    """POSIX ``sched_yield()``: let a thread waiting for this core run."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _cycles(typingctx):
    """A cycle counter (x86's TSC): only differences are used, to time the spin."""

    def codegen(context, builder, sig, args):
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])

    return types.int64(), codegen


@intrinsic
def _address(typingctx, a):
    """The data address of an array, as an int64."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(arr.data, ir.IntType(64))

    return types.int64(a), codegen


@intrinsic
def _pointer(typingctx, i):
    """The int64 address ``i`` as a pointer (for ``numba.carray``)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(i), codegen


# ---------------------------------------------------------------------------------- the blocks
# Everything below `run` is inlined into it at Numba IR level (``inline="always"``): one compiled
# entry point per dtype for the caller and the workers alike. Every extra compiled layer around
# the kernels would cost LLVM another optimization of all of them (~2 s each, cold cache).
_INLINE = dict(_JIT, inline="always")


@njit(**_INLINE)
def block_start(b, n, n_blocks):
    """First sample of block ``b`` of ``n_blocks``: ``b n / K`` rounded up to a multiple of the
    tile padding (no block pads more than one partial tile, and the short block is the last,
    which a worker arriving late takes), and ``n`` from ``b = K`` on."""
    s = (b * n // n_blocks + K.PAD - 1) // K.PAD * K.PAD
    return min(s, n)


@njit(**_INLINE)
def _run_block(job, b, slot, marker):
    """Block ``b`` of the job described by ``job`` with thread ``slot``'s scratch.

    The arrays are rebuilt from their addresses (views without an owner: nothing is counted or
    freed); ``marker`` is an empty array of the compute dtype.
    """
    dt = marker.dtype
    Wc = carray(_pointer(job[J_WC]), (job[J_NW],), dt)
    X = carray(_pointer(job[J_X]), (job[J_N], job[J_NIN]), dt)
    T = carray(_pointer(job[J_T]), (job[J_N], job[J_M]), dt)
    sw = carray(_pointer(job[J_SW]), (job[J_NSW],), np.float64)
    meta = carray(_pointer(job[J_META]), (job[J_NMETA],), np.int64)
    zd = carray(_pointer(job[J_ZD] + slot * job[J_NZD] * marker.itemsize), (job[J_NZD],), dt)
    ws = carray(_pointer(job[J_WS] + slot * job[J_NWS] * 8), (job[J_NWS],), np.float64)
    g = carray(_pointer(job[J_G] + b * job[J_NG] * 8), (job[J_NG],), np.float64)
    n, n_blocks = job[J_N], job[J_K]
    g[:] = 0.0
    K.chunk(Wc, X, T, sw, meta, block_start(b, n, n_blocks), block_start(b + 1, n, n_blocks), zd, ws, g)


@njit(**_INLINE)
def _claim(ctl, gen, slot, marker):
    """As thread ``slot``, claim and run blocks of job ``gen`` until none is left."""
    st = _load_acquire(ctl, C_STATE)
    while (st >> 32) == gen:
        n_slots = (st >> 24) & 0xFF
        n_blocks = (st >> 12) & 0xFFF
        nxt = st & 0xFFF
        if nxt >= n_blocks or slot >= n_slots:
            break
        if _cas(ctl, C_STATE, st, st + 1):
            # the job cannot end while this block is unfinished: its table is still valid
            job = carray(_pointer(_load_acquire(ctl, C_JOB)), (JOB_LEN,), np.int64)
            _run_block(job, nxt, slot, marker)
            if slot > 0:
                _fetch_add(ctl, C_WORKER_BLOCKS, 1)  # a statistic: blocks the workers ran
            _fetch_add(ctl, C_DONE, 1)
        st = _load_acquire(ctl, C_STATE)


@njit(**_INLINE)
def _serve(ctl, slot, marker, spin_cycles):
    """A worker's life between two sleeps: run the jobs it finds, spinning between them; return
    the last generation seen once none came for ``spin_cycles``, or -1 when asked to stop."""
    seen = _load_acquire(ctl, C_STATE) >> 32
    _claim(ctl, seen, slot, marker)  # a job published while this thread was waking is claimable
    while True:
        t0 = _cycles()
        spins = 0
        gen = seen
        while gen == seen:
            if _load_acquire(ctl, C_STOP):
                return -1
            _relax()
            spins += 1
            if spins & YIELD_MASK == 0:
                _sched_yield()  # a thread that shares this core runs first
                if _cycles() - t0 > spin_cycles:
                    return seen
            gen = _load_acquire(ctl, C_STATE) >> 32
        seen = gen
        _claim(ctl, gen, slot, marker)


@njit(**_INLINE)
def _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks):
    job[J_WC] = _address(Wc)
    job[J_NW] = Wc.shape[0]
    job[J_X] = _address(X)
    job[J_N] = X.shape[0]
    job[J_NIN] = X.shape[1]
    job[J_T] = _address(T)
    job[J_M] = T.shape[1]
    job[J_SW] = _address(sw)
    job[J_NSW] = sw.shape[0]
    job[J_META] = _address(meta)
    job[J_NMETA] = meta.shape[0]
    job[J_ZD] = _address(zd)
    job[J_NZD] = zd.shape[1]
    job[J_WS] = _address(ws)
    job[J_NWS] = ws.shape[1]
    job[J_G] = _address(gbuf)
    job[J_NG] = gbuf.shape[1]
    job[J_K] = n_blocks


# --------------------------------------------------------------------------------- the driver
@njit(**_JIT)
def run(W, X, T, sw, meta, zd, ws, gbuf, Wc, scale, l2, n_blocks, n_slots, ctl, job, slot):
    """Loss and gradient of every sample (``slot = 0``), or the life of worker ``slot`` (> 0).

    ``slot = 0``: the blocks run on up to ``n_slots`` threads of the pool whose control array is
    ``ctl`` (``n_slots = 1``: all on the calling thread, ``ctl`` untouched). ``job`` is this
    call's table (scratch of the caller); ``zd``/``ws`` hold one row per slot, ``gbuf`` one per
    block (each block zeroes its own row). Returns ``(loss, grad)``.

    ``slot > 0``: serve jobs of the pool ``ctl`` as :func:`_serve` does, spinning ``n_blocks``
    cycles at most between two jobs; returns ``(the last generation seen or -1 to stop, an empty
    array)``. The other arguments are placeholders of the caller's types, so the workers run the
    very specialization the caller compiled.
    """
    marker = Wc[:0]
    if slot > 0:
        return float(_serve(ctl, slot, marker, n_blocks)), np.empty(0, dtype=np.float64)
    for p in range(W.shape[0]):
        Wc[p] = W[p]
    _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks)
    if n_slots > 1 and n_blocks > 1:
        ctl[C_DONE] = 0
        ctl[C_JOB] = _address(job)
        gen = ((_load_acquire(ctl, C_STATE) >> 32) + 1) & 0x7FFFFFFF
        _store_release(ctl, C_STATE, (gen << 32) | (n_slots << 24) | (n_blocks << 12))
        _claim(ctl, gen, 0, marker)
        # every block is claimed; wait for those other threads are running
        spins = 0
        while _load_acquire(ctl, C_DONE) < n_blocks:
            _relax()
            spins += 1
            if spins & 63 == 0:
                _sched_yield()
    else:
        for b in range(n_blocks):
            _run_block(job, b, 0, marker)
    return K._epilogue(W, gbuf, n_blocks, meta, scale, l2)


# ------------------------------------------------------------------------ the pool in Python
class Pool:
    """The worker threads serving one compute dtype (see the module docstring).

    Use :func:`get_pool`; a call goes ``pool.acquire(n_slots)`` → :func:`run` → ``pool.release()``.
    """

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.ctl = np.zeros(CTL_LEN, dtype=np.int64)
        self._placeholders = placeholders(self.dtype)
        self._reset()

    def _reset(self):
        """Fresh locks and no workers (at creation, and in a child after ``fork``)."""
        self.ctl[:] = 0
        self._job_lock = threading.Lock()  # one job at a time
        self._cond = threading.Condition(threading.Lock())
        self._ticket = 0  # bumped to wake sleepers
        self.sleepers = 0
        self.n_workers = 0

    def acquire(self, n_slots):
        """Take the pool for one job on ``n_slots`` threads (the caller is slot 0), starting or
        waking workers as needed. False when another thread's job holds it (run serially)."""
        if not self._job_lock.acquire(blocking=False):
            return False
        if self.n_workers < n_slots - 1:
            self._start(n_slots - 1)
        if self.sleepers:
            with self._cond:
                self._ticket += 1
                self._cond.notify_all()
        return True

    def release(self):
        self._job_lock.release()

    def _serve_once(self, slot, spin_cycles):
        W, X, T, sw, meta, zd, ws, gbuf, Wc, job = self._placeholders
        return run(W, X, T, sw, meta, zd, ws, gbuf, Wc, 0.0, 0.0, spin_cycles, 0, self.ctl, job, slot)[0]

    def _start(self, n_workers):
        # compile (or load) the workers' code here, not in a worker: a daemon thread still
        # compiling when the interpreter exits takes LLVM down with it. Slot MAX_SLOTS claims
        # nothing, and a zero spin returns at once.
        self._serve_once(MAX_SLOTS, 0)
        while self.n_workers < min(n_workers, MAX_SLOTS - 1):
            self.n_workers += 1
            t = threading.Thread(target=self._serve, args=(self.n_workers,), name=f"fastbp-numba-{self.n_workers}")
            t.daemon = True
            t.start()

    def _serve(self, slot):
        ctl, cond = self.ctl, self._cond
        while True:
            if self._serve_once(slot, SPIN_CYCLES) < 0:
                return
            with cond:
                self.sleepers += 1
                ticket = self._ticket
                while self._ticket == ticket and not ctl[C_STOP]:
                    cond.wait()
                self.sleepers -= 1


def placeholders(dtype):
    """Empty arrays of the types a call passes to :func:`run` (W, X, T, sw, meta, zd, ws, gbuf,
    Wc, job): the backend passes X, T, sw and meta read-only and the rest writable."""

    def readonly(a):
        a.setflags(write=False)
        return a

    return (
        np.zeros(0),
        readonly(np.zeros((0, 0), dtype=dtype)),
        readonly(np.zeros((0, 0), dtype=dtype)),
        readonly(np.zeros(0)),
        readonly(np.zeros(0, dtype=np.int64)),
        np.zeros((0, 0), dtype=dtype),
        np.zeros((0, 0)),
        np.zeros((0, 0)),
        np.zeros(0, dtype=dtype),
        np.zeros(JOB_LEN, dtype=np.int64),
    )


_POOLS = {}
_POOLS_LOCK = threading.Lock()


def get_pool(dtype):
    """The process's pool for ``dtype`` (created on first use)."""
    key = np.dtype(dtype).str
    pool = _POOLS.get(key)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.setdefault(key, Pool(dtype))
    return pool


def _after_fork_in_child():
    # the child has none of the parent's threads: its pools start empty
    for pool in _POOLS.values():
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
