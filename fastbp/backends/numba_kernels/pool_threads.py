"""The thread pool's Python half: a small spin-then-sleep pool of Python threads running compiled code.

Why not Numba's ``prange``: its OpenMP layer's workers spin after each region, and so do the
OpenBLAS threads scipy's L-BFGS-B wakes between two objective calls; on two cores the three spin
against the caller, and a 200-iteration fit of the lab's 4-layer network took 1.8 s instead of
13 ms. Its workqueue layer sleeps instead, but a region then costs ~75 µs. Here:

* The samples are cut into ``K`` fixed blocks (see :func:`.pool.block_start`); block ``b`` sums
  into its own float64 row ``gbuf[b]`` and the rows are reduced in block order, so the result
  depends on ``K`` only, never on which thread ran which block.
* The calling thread publishes a job and claims blocks itself, one compare-and-swap on one word
  (generation | T | K | next block) at a time; it waits only for blocks another thread has
  claimed, and therefore is running. A worker that does not come in time finds no block left.
* Workers are daemon Python threads that spend their life in :func:`.driver.run` (as
  ``_serve``), compiled with ``nogil``: after a job a worker spins for about half a millisecond
  of its own CPU time (an optimizer's next call finds it awake), calling ``sched_yield`` every
  few microseconds so that a thread sharing its core is not starved, and moving off the caller's
  core if Linux woke it there; then it returns to Python and sleeps on a condition variable
  until a call wakes it.
* A job names its arrays by address in a small int64 table (:data:`JOB_LEN` slots), so the
  workers, started once, serve any network of their dtype and kind. Every thread rebuilds the
  arrays from that table, so the kernels are compiled once per dtype and kind, whoever runs them.
  The kinds are unit-major networks (:class:`Pool`) and sample-major BLAS networks
  (:class:`BlasPool`): a worker's code holds one block kernel, so each kind has its own pool, as
  has each other entry point that runs jobs on threads (the epoch's :class:`EpochPool`, second
  order's :class:`.second_order.CurvaturePool`). After a switch from one kind of call to another
  the first pool's workers spin (yielding) for their half millisecond while the second's work.
* Every block runs in the caller's floating-point mode (subnormals flushed to zero: see
  :mod:`.fpenv`); :func:`set_flush_subnormals` switches that off, for tests and measurements.

The pool is the same algorithm as the Cython backend's ``src_kernels/fb_pool.h``, written with
Numba's compiled code and llvmlite atomics. The compiled part is :mod:`.pool` (inlined into the
entry point :func:`.driver.run`); this module is the Python side: threads, sleep and wake, fork.
x86's ``pause`` and time-stamp counter, POSIX ``sched_yield`` and Linux's
``sched_getcpu``/affinity are used where they exist.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .driver import run
from .epoch import run_epoch
from .pool import C_NOFLUSH, CTL_LEN, JOB_LEN, MAX_SLOTS, SPIN_CYCLES

_ROWS = np.empty(0, dtype=np.int8)  # the ``rows`` argument of sample-major calls
_flush_off = 0  # set_flush_subnormals(False) sets it


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
        self.ctl[C_NOFLUSH] = _flush_off
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

    #: the ``rows`` argument of the calls this pool's workers serve (None: unit-major)
    rows = None

    def _serve_once(self, slot, spin_cycles):
        W, X, T, sw, meta, zd, ws, gbuf, Wc, job = self._placeholders
        return run(W, X, T, sw, meta, zd, ws, gbuf, Wc, 0.0, 0.0, spin_cycles, 0, self.ctl, job, slot, self.rows)[0]

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
        cond = self._cond
        while True:
            self._serve_once(slot, SPIN_CYCLES)
            with cond:
                self.sleepers += 1
                ticket = self._ticket
                while self._ticket == ticket:
                    cond.wait()
                self.sleepers -= 1


class BlasPool(Pool):
    """The workers of sample-major BLAS networks: they live in the specialization of :func:`run`
    compiled for them (its block kernel calls BLAS, single-threaded inside each worker), which a
    process with only lab-sized networks never compiles. Use :func:`get_pool` with
    ``kind=BlasPool``."""

    rows = _ROWS


class EpochPool(Pool):
    """The workers of :func:`.epoch.run_epoch`: its own pool, whose threads live in that entry
    point's compiled code, so a fit by epochs compiles (or loads) one entry point per dtype, never
    :func:`.driver.run` too. Same algorithm, same control words, its own threads (asleep unless
    epochs run). Use :func:`get_pool` with ``kind=EpochPool``."""

    def __init__(self, dtype):
        super().__init__(dtype)
        self._epoch_placeholders = epoch_placeholders(dtype, self.ctl)

    def _serve_once(self, slot, spin_cycles):
        args = self._epoch_placeholders
        return run_epoch(*args[:24], spin_cycles, *args[25:29], slot, args[30], None)[0]


def epoch_placeholders(dtype, ctl):
    """Arguments of the types a call passes to :func:`.epoch.run_epoch` (the caller's slot 0,
    unit-major), the control array ``ctl`` among them: a worker's call replaces the spin (index
    24) and the slot (29); then the choice of threads (30) and ``rows`` (31)."""
    W, X, T, sw, meta, zd, ws, gbuf, Wc, job = placeholders(dtype)
    order = np.zeros(0, dtype=np.int64)
    return (Wc, X, T, sw, order, 1, 0.0, 0, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0, Wc, Wc, meta, zd, ws, gbuf, zd, zd,
            np.zeros(0), 0, 1, 1, ctl, job, 0, np.zeros(3), None)


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


def get_pool(dtype, kind=Pool):
    """The process's pool of class ``kind`` (:class:`Pool`, :class:`BlasPool`,
    :class:`EpochPool`) for ``dtype``
    (created on first use)."""
    key = (kind, np.dtype(dtype).str)
    pool = _POOLS.get(key)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.setdefault(key, kind(dtype))
    return pool


#: The control array of calls that run on the calling thread alone (only read by them).
SERIAL_CTL = np.zeros(CTL_LEN, dtype=np.int64)


def set_flush_subnormals(on):
    """Whether the numba kernels flush subnormal numbers to zero during a call (default True);
    returns the previous setting.

    A switch for tests and for measuring what flushing saves, not for users: results are
    bit-identical only for a fixed setting. Off, a call computes subnormals in the caller's own
    mode, on every thread of the call.
    """
    global _flush_off
    previous = not _flush_off
    _flush_off = 0 if on else 1
    with _POOLS_LOCK:
        for ctl in [SERIAL_CTL] + [pool.ctl for pool in _POOLS.values()]:
            ctl[C_NOFLUSH] = _flush_off
    return previous


def _after_fork_in_child():
    # the child has none of the parent's threads: its pools start empty
    for pool in _POOLS.values():
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
