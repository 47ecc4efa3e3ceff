"""BLAS held to one thread while the kernels' own threads call it.

A kernel whose blocks call BLAS (a network with a wide layer) runs those blocks on its own
threads, each calling single-threaded BLAS in the kernel's floating-point mode. Left to itself,
OpenBLAS would thread every large product again: its threads do not inherit the caller's
flush-to-zero mode (measured: half of a two-thread dgemm still came out subnormal, so saturated
calls stayed slow on cores that take an assist on subnormals), and several kernel threads each
starting BLAS threads oversubscribe the cores.

:func:`hold` limits every BLAS library threadpoolctl controls (OpenBLAS, MKL, BLIS: scipy's,
which Numba's ``np.dot`` and ``scipy.linalg.cython_blas`` call, and NumPy's) to one thread;
:func:`release` puts their thread counts back. Holds are counted process-wide, so calls from
several Python threads at once neither restore the counts while another call still runs nor
leave them at one after the last: the first hold saves and limits, the last release restores.
Holding costs a few microseconds (against calls of a millisecond or more).
"""

from __future__ import annotations

import threading

__all__ = ["blas_controllers", "hold", "release"]

_lock = threading.Lock()
_holders = 0
_saved: list[int] = []
_controllers = None


def blas_controllers():
    """threadpoolctl's controllers of every BLAS library loaded, or () without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def hold():
    """Limit BLAS to one thread until the matching :func:`release`."""
    global _holders, _saved, _controllers
    with _lock:
        if _holders == 0:
            if _controllers is None:
                _controllers = blas_controllers()
            _saved = [c.num_threads for c in _controllers]
            for c in _controllers:
                c.set_num_threads(1)
        _holders += 1


def release():
    """End a :func:`hold`; the last one puts BLAS's thread counts back."""
    global _holders
    with _lock:
        _holders -= 1
        if _holders == 0:
            for c, n in zip(_controllers, _saved):
                c.set_num_threads(n)
