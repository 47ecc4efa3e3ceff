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
  workers, started once, serve any network of their dtype. Every thread rebuilds the arrays from
  that table, so the kernels are compiled once per dtype, whoever runs them.
* A worker lives in the compiled code of one entry point, running that entry point's block
  kernel; so each entry point that runs jobs on threads has its own pool (:func:`get_pool`'s
  ``serve``): the gradient's :func:`.driver.run` and second order's
  :func:`.second_order.run_curvature`. Keeping them apart keeps the gradient's compiled code as
  it is; the price is that after a switch from one kind of call to the other the first pool's
  workers spin (yielding) for their half millisecond while the second's work.

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
from .pool import CTL_LEN, JOB_LEN, MAX_SLOTS, SPIN_CYCLES


# ------------------------------------------------------------------------ the pool in Python
class Pool:
    """The worker threads serving one compute dtype and one entry point (see the module docstring).

    Use :func:`get_pool`; a call goes ``pool.acquire(n_slots)`` → the entry point → ``pool.release()``.
    ``serve(dtype, ctl, slot, spin_cycles)`` runs the entry point as worker ``slot`` of the pool
    whose control array is ``ctl`` and returns the last generation it saw (default: the gradient's
    :func:`run`, through :func:`serve_gradient`).
    """

    def __init__(self, dtype, serve=None, name="fastbp-numba"):
        self.dtype = np.dtype(dtype)
        self.ctl = np.zeros(CTL_LEN, dtype=np.int64)
        self._serve_entry = serve_gradient if serve is None else serve
        self.name = name
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
        return self._serve_entry(self.dtype, self.ctl, slot, spin_cycles)

    def _start(self, n_workers):
        # compile (or load) the workers' code here, not in a worker: a daemon thread still
        # compiling when the interpreter exits takes LLVM down with it. Slot MAX_SLOTS claims
        # nothing, and a zero spin returns at once.
        self._serve_once(MAX_SLOTS, 0)
        while self.n_workers < min(n_workers, MAX_SLOTS - 1):
            self.n_workers += 1
            t = threading.Thread(target=self._serve, args=(self.n_workers,), name=f"{self.name}-{self.n_workers}")
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


_PLACEHOLDERS = {}


def serve_gradient(dtype, ctl, slot, spin_cycles):
    """Worker ``slot`` of the pool ``ctl`` in the gradient's entry point :func:`run`."""
    args = _PLACEHOLDERS.get(dtype.str)
    if args is None:
        args = _PLACEHOLDERS.setdefault(dtype.str, placeholders(dtype))
    W, X, T, sw, meta, zd, ws, gbuf, Wc, job = args
    return run(W, X, T, sw, meta, zd, ws, gbuf, Wc, 0.0, 0.0, spin_cycles, 0, ctl, job, slot, None)[0]


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


def get_pool(dtype, serve=None, name="fastbp-numba"):
    """The process's pool for ``dtype`` and the entry point that ``serve`` runs (default: the
    gradient's), created on first use. An entry point's workers live in its compiled code, so
    every entry point that runs jobs on threads has its own pool."""
    key = (np.dtype(dtype).str, serve)
    pool = _POOLS.get(key)
    if pool is None:
        with _POOLS_LOCK:
            pool = _POOLS.setdefault(key, Pool(dtype, serve, name))
    return pool


def _after_fork_in_child():
    # the child has none of the parent's threads: its pools start empty
    for pool in _POOLS.values():
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
