"""The numba backend's thread pool (fastbp/backends/numba_kernels/pool.py and pool_threads.py).

Which thread runs a block must never change a bit of the result; the workers must really take
blocks (else the "threads" would be a stub); and the pool must survive what users do to
processes: calls from several threads at once, sleeping between calls, fork.
"""

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from fastbp.backends.numba_backend import _EMPTY  # noqa: E402
from fastbp.backends.numba_kernels import pool as K  # noqa: E402
from fastbp.backends.numba_kernels import pool_threads as P  # noqa: E402
from fastbp.backends.numba_kernels.driver import run  # noqa: E402
from fastbp.backends.numba_kernels.meta import PAD  # noqa: E402

SIZES = [5, 16, 12, 3]


def _problem(n=6000, seed=0, dtype=np.float64, n_threads=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0]))
    y = rng.integers(0, SIZES[-1], n)
    net = fastbp.Network(SIZES, "tanh", "softmax", l2=1e-3, backend="numba", n_threads=n_threads, dtype=dtype)
    return net, net.bind(X, y), net.init_weights(seed)


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _serial(f, W):
    """The same blocks as f's kernel, all run on the calling thread (n_slots = 1)."""
    k = f._kernel
    zd, ws, gbuf, wc, job = k._allocate()
    n_blocks = k.n_blocks(f.n_samples)
    ctl = np.zeros(K.CTL_LEN, dtype=np.int64)
    return run(W, f.X, f.T, _EMPTY, k.meta, zd, ws, gbuf, wc, f.scale, f._l2, n_blocks, 1, ctl, job, 0, None)


def _worker_blocks(dtype=np.float64):
    return int(P.get_pool(dtype).ctl[K.C_WORKER_BLOCKS])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_any_thread_any_block_same_bits(dtype):
    net, f, W = _problem(dtype=dtype)
    assert f._kernel.n_blocks(f.n_samples) > 2
    loss, grad = _serial(f, W)
    for _ in range(50):
        got = f(W)
        assert got[0] == loss
        assert np.array_equal(got[1], grad)


@pytest.mark.skipif(_cpus() < 2, reason="a worker needs a second core to take blocks in time")
def test_workers_take_blocks_and_wake_after_sleeping():
    net, f, W = _problem(n=20000)
    f(W)
    for _ in range(2):
        before = _worker_blocks()
        deadline = time.monotonic() + 20
        while _worker_blocks() == before and time.monotonic() < deadline:
            f(W)
        assert _worker_blocks() > before, "no block ran on a worker thread"
        # past the spin (~1 ms) the worker sleeps, and the next calls must wake it
        deadline = time.monotonic() + 10
        while P.get_pool(np.float64).sleepers < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert P.get_pool(np.float64).sleepers >= 1


def test_one_thread_uses_no_pool():
    net, f, W = _problem(n_threads=1)
    assert f._kernel.n_blocks(f.n_samples) == 1
    before = _worker_blocks()
    f(W)
    assert _worker_blocks() == before


def test_concurrent_callers_share_the_pool_correctly():
    """Callers on other threads find the pool busy and run their blocks themselves: same bits."""
    problems = [_problem(n=1500 + 100 * i, seed=i) for i in range(4)]
    expected = [_serial(f, W) for _, f, W in problems]
    errors = []

    def hammer(i):
        _, f, W = problems[i]
        for _ in range(100):
            loss, grad = f(W)
            if loss != expected[i][0] or not np.array_equal(grad, expected[i][1]):
                errors.append(i)
                return

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _child(conn):
    try:
        net, f, W = _problem(seed=3)
        loss, grad = f(W)
        conn.send((loss, grad, P.get_pool(np.float64).n_workers))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        conn.send(repr(exc))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_fork_child_gets_a_fresh_pool():
    net, f, W = _problem(seed=3)
    expected = f(W)  # the parent's pool has a worker now
    assert P.get_pool(np.float64).n_workers >= 1
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child,))
    p.start()
    assert parent.poll(120), "the child did not answer"
    got = parent.recv()
    p.join(30)
    assert not isinstance(got, str), got
    loss, grad, n_workers = got
    assert loss == expected[0] and np.array_equal(grad, expected[1])
    assert n_workers >= 1  # the child started its own worker


def test_block_starts_cover_the_samples_in_order():
    for n in (1, 31, 32, 100, 200, 1000, 4097):
        for k in (1, 2, 3, 8):
            starts = [K.block_start(b, n, k) for b in range(k + 1)]
            assert starts[0] == 0 and starts[-1] == n
            assert all(a <= b for a, b in zip(starts, starts[1:]))
            assert all(s % PAD == 0 or s == n for s in starts)
            # balanced: no block longer than its share by more than a padding
            assert all(b - a <= n / k + PAD for a, b in zip(starts, starts[1:]))


def test_scratch_is_aligned_for_every_thread():
    net, f, W = _problem(n_threads=3, dtype=np.float32)
    zd, ws, *_ = f._kernel._scratch
    for rows in (zd, ws):
        assert all(rows[i].ctypes.data % 64 == 0 for i in range(rows.shape[0]))


_PORTABLE_SCRIPT = r"""
import sys
import numpy as np
import fastbp.backends.numba_kernels.pool as K
K._X86 = False    # as on ARM: spins timed by counting, no pause
K._POSIX = False  # as on Windows: no sched_yield
import fastbp
rng = np.random.default_rng(0)
X = rng.standard_normal((6000, 5))
y = rng.integers(0, 3, 6000)
net = fastbp.Network([5, 16, 12, 3], "tanh", "softmax", l2=1e-3, backend="numba", n_threads=2)
W = net.init_weights(0)
f = net.bind(X, y)
first = f(W)
for _ in range(200):
    again = f(W)
    assert again[0] == first[0] and np.array_equal(again[1], first[1])
ref = fastbp.Network([5, 16, 12, 3], "tanh", "softmax", l2=1e-3, backend="numpy").bind(X, y)(W)
assert abs(first[0] - ref[0]) <= 1e-12 * abs(ref[0])
assert np.abs(first[1] - ref[1]).max() <= 1e-12 * np.abs(ref[1]).max()
print("ok")
"""


def test_pool_without_tsc_or_sched_yield(tmp_path):
    """The code paths for machines without x86's cycle counter and without POSIX sched_yield
    compile and give the same results (compiled afresh in a subprocess with its own cache)."""
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
