"""Subnormal numbers flushed to zero during a numba kernel call, and only then.

The entry point sets flush-to-zero and denormals-are-zero on the calling thread, the pool's
workers take the caller's mode for every block they run, and the caller's mode is put back
before the call returns (``fastbp/backends/numba_kernels/fpenv.py``); networks with a BLAS layer
run their gemms on the kernel's threads with BLAS held to one thread, so those flush too. These
tests check the mode on every thread through what each block computed, that it does not leak
into the caller, what it changes in the results (values below the smallest normal number only)
and what it does not.
"""

import os
import time

import numpy as np
import pytest
from availability import unavailable_reason
from flush_checks import check_flush_changes_only_below_tiny
from numba import njit

import fastbp

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from fastbp.backends import blas_threads, numba_backend  # noqa: E402
from fastbp.backends.numba_kernels import fpenv  # noqa: E402
from fastbp.backends.numba_kernels import pool as K  # noqa: E402
from fastbp.backends.numba_kernels import pool_threads as P  # noqa: E402

pytestmark = pytest.mark.skipif(not fpenv.FLUSHES, reason="no flush-to-zero mode on this platform")

SUBNORMAL = 1e-310  # below float64's smallest normal number, 2.2e-308


@pytest.fixture
def flush_on():
    previous = P.set_flush_subnormals(True)
    yield
    P.set_flush_subnormals(previous)


@njit
def _thread_word():
    return fpenv.fpenv_get()


@njit
def _set_thread_word(word):
    fpenv.fpenv_set(word)


def subnormal_survives():
    """Whether this thread computes subnormal results (its mode is IEEE 754's own)."""
    return np.float64(SUBNORMAL) * np.float64(0.5) != 0.0


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def subnormal_problem(n, n_threads):
    """[1, 8, 1], identity units, subnormal x, every coefficient 1, intercepts 0, t = 0: a = 8x
    and δ = 8x are subnormal unless flushed, and so are the sums Σ δ of the intercepts' gradient
    rows; Σ z δ underflows to 0 either way."""
    net = fastbp.Network([1, 8, 1], "identity", "identity", backend="numba", n_threads=n_threads)
    f = net.bind(np.full((n, 1), SUBNORMAL), np.zeros(n))
    return f, np.concatenate([np.ones(16), np.zeros(9)])


B_OUT = 24  # the output intercept's entry in the gradient (and in each block's row of sums)


def _blocks_with_a_worker(f, W):
    """Call f until a worker thread ran at least one of its blocks; return the call's result and
    each block's row of gradient sums (the kernel's scratch)."""
    pool = f._kernel._pool
    deadline = time.monotonic() + 30
    while True:
        before = int(pool.ctl[K.C_WORKER_BLOCKS])
        result = f(W)
        if int(pool.ctl[K.C_WORKER_BLOCKS]) > before or time.monotonic() > deadline:
            break
    assert int(pool.ctl[K.C_WORKER_BLOCKS]) > before, "no block ran on a worker thread"
    n_blocks = f._kernel.n_blocks(f.n_samples)
    return result, f._kernel._scratch[2][:n_blocks].copy()


@pytest.mark.skipif(_cpus() < 2, reason="a worker needs a second core to take blocks in time")
def test_every_thread_of_a_call_flushes_and_the_caller_is_restored(flush_on):
    f, W = subnormal_problem(65536, n_threads=2)
    assert f._kernel.n_blocks(65536) > 2
    assert subnormal_survives()
    (loss, grad), rows = _blocks_with_a_worker(f, W)
    assert loss == 0.0 and not grad.any(), grad
    assert not rows.any(), rows  # every block, whichever thread ran it, read x as 0
    assert subnormal_survives()  # the caller's own mode is back


@pytest.mark.skipif(_cpus() < 2, reason="a worker needs a second core to take blocks in time")
def test_workers_follow_the_callers_mode(flush_on):
    """Switched off, a call keeps the caller's mode on every thread: IEEE 754's when the caller
    has it (workers that flushed regardless would zero their blocks' sums), flushing when the
    caller flushes by itself (workers that kept their own mode would not)."""
    f, W = subnormal_problem(65536, n_threads=2)
    _blocks_with_a_worker(f, W)  # workers exist and last ran flushing
    P.set_flush_subnormals(False)
    (loss, grad), rows = _blocks_with_a_worker(f, W)
    assert np.all(rows[:, B_OUT] > 0.0), rows[:, B_OUT]  # Σ δ = Σ 8x of each block, not flushed
    ref = fastbp.Network([1, 8, 1], "identity", "identity", backend="numpy").bind(f.X, np.zeros(65536))(W)
    assert 0.0 < grad[B_OUT] and abs(grad[B_OUT] - ref[1][B_OUT]) <= 1e-12 * ref[1][B_OUT]
    own = _thread_word()
    _set_thread_word(own | fpenv.FLUSH_BITS)  # the caller flushes on its own
    try:
        (loss, grad), rows = _blocks_with_a_worker(f, W)
    finally:
        _set_thread_word(own)
    assert not rows.any() and not grad.any(), rows[:, B_OUT]
    assert subnormal_survives()


@pytest.mark.parametrize("n_threads", [1, 2])
def test_subnormal_inputs_are_zero_in_a_call(flush_on, n_threads):
    f, W = subnormal_problem(65536, n_threads)
    assert (f._kernel.n_blocks(65536) > 1) == (n_threads > 1)
    loss, grad = f(W)
    assert loss == 0.0 and np.all(grad == 0.0), grad  # x read as 0 on every thread
    P.set_flush_subnormals(False)
    loss, grad = f(W)
    ref = fastbp.Network([1, 8, 1], "identity", "identity", backend="numpy").bind(f.X, np.zeros(65536))(W)
    assert 0.0 < grad[B_OUT] and abs(grad[B_OUT] - ref[1][B_OUT]) <= 1e-12 * ref[1][B_OUT]
    assert np.all(grad[16:] > 0.0)  # IEEE 754 arithmetic when switched off
    assert subnormal_survives()


def test_a_scalar_result_is_computed_before_the_mode_is_put_back(flush_on):
    """LLVM assumes the default mode and moved a multiplication after the restore (its result was
    then not flushed); flush_end pins the value it is given before the restore."""

    @njit
    def half(x):
        saved = fpenv.flush_begin(True)
        y = x * 0.5
        return fpenv.flush_end(saved, y), fpenv.flushing()

    assert half(SUBNORMAL) == (0.0, 0)
    assert half(np.float32(1e-40)) == (0.0, 0)
    assert half(1.0) == (0.5, 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case_name", ["seed4layer", "multiclass", "medium"])
def test_flushing_changes_only_what_lies_below_the_smallest_normal(flush_on, case_name, dtype):
    check_flush_changes_only_below_tiny("numba", P.set_flush_subnormals, case_name, dtype)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_blas_products_run_flushed_too(flush_on, n_threads):
    """A network with a BLAS layer: its gemms run on the kernel's threads with BLAS held to one
    thread (OpenBLAS's own threads do not take the caller's mode: they would compute part of
    each product with subnormals), so the products themselves come out 0, as the gradient does."""
    from fastbp.backends.numba_kernels.meta import H_GSIZE, H_ZSIZE

    net = fastbp.Network([256, 256, 1], activation="identity", output="identity", backend="numba",
                         n_threads=n_threads)
    n = 600  # OpenBLAS would thread these gemms if left to itself
    X = np.full((n, 256), 1e-312)  # subnormal inputs...
    W = np.concatenate([np.ones(256 * 256 + 256), np.zeros(257)])
    f = net.bind(X, np.ones(n))  # ... and deltas of -1: ∂loss/∂coef_0 = mean(x δ) = -1e-312
    kernel = f._kernel
    assert kernel.uses_blas
    assert (kernel.n_blocks(n) > 1) == (n_threads > 1)  # the kernel's threads split the call
    zd = kernel._scratch[0]
    z, g = kernel.meta[H_ZSIZE], kernel.meta[H_GSIZE]
    products = zd[:, 2 * z : 2 * z + g]  # each thread's last gemm product X.T δ of coef_0's gradient
    n_coef0 = 256 * 256
    for _ in range(3):
        loss, grad = f(W)
        assert not products.any(), np.count_nonzero(products)
        assert loss == 0.5 and not grad[:n_coef0].any(), np.flatnonzero(grad[:n_coef0])[:10]
        assert np.all(grad[-257:] == -1.0)  # the intercepts' gradients: normal numbers, unchanged
    assert blas_threads._holders == 0  # BLAS's thread counts are back
    P.set_flush_subnormals(False)
    off = f(W)[1][:n_coef0]
    assert np.all(products[0] < 0.0)  # what IEEE 754 arithmetic gives
    assert np.all(off < 0.0) and np.all(np.abs(off + 1e-312) <= 1e-320)


def test_blas_is_held_to_one_thread_until_the_last_release():
    """Holds from concurrent calls are counted: the thread counts come back after the last."""
    controllers = blas_threads.blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl sees no BLAS library")
    before = [c.num_threads for c in controllers]
    blas_threads.hold()
    blas_threads.hold()
    assert all(c.num_threads == 1 for c in controllers)
    blas_threads.release()
    assert all(c.num_threads == 1 for c in controllers)  # another call still runs
    blas_threads.release()
    assert [c.num_threads for c in controllers] == before


@pytest.mark.skipif(_cpus() < 2, reason="a worker needs a second core to take blocks in time")
def test_a_worker_runs_only_jobs_of_its_own_block_kernel(monkeypatch):
    """A pool's workers hold one block kernel in their code: a job of another kernel published on
    their pool (here a BLAS network's, on the unit-major pool) is left to the caller, which runs
    every block itself, with the bits the BLAS network's own pool gives. (Run by the unit-major
    kernel, its blocks would be garbage.)"""
    from fastbp.backends.numba_kernels.driver import run

    monkeypatch.setattr(numba_backend, "BLAS_MIN_COEFS", 1)
    rng = np.random.default_rng(0)
    net = fastbp.Network([5, 16, 3], "tanh", "softmax", backend="numba", n_threads=2)
    X, y = rng.standard_normal((6000, 5)), rng.integers(0, 3, 6000)
    f = net.bind(X, y)
    W = net.init_weights(0)
    wide = f._kernel
    assert wide.uses_blas and isinstance(wide._pool, P.BlasPool)
    expected = f(W)
    n_blocks = wide.n_blocks(6000)
    assert n_blocks > 1

    monkeypatch.setattr(numba_backend, "BLAS_MIN_COEFS", 1 << 30)
    narrow_net = fastbp.Network([5, 16, 3], "tanh", "softmax", backend="numba", n_threads=2)
    narrow = narrow_net.bind(X, y)
    unit_pool = narrow._kernel._pool
    assert not narrow._kernel.uses_blas and unit_pool is P.get_pool(np.float64, P.Pool)

    zd, ws, gbuf, wc, job = wide._allocate()
    taken_by_workers = foreign_taken = 0
    for _ in range(20):
        before = int(unit_pool.ctl[K.C_WORKER_BLOCKS])
        narrow(W)  # a job of the workers' own kernel: they wake and take blocks of it
        taken_by_workers += int(unit_pool.ctl[K.C_WORKER_BLOCKS]) - before
        assert unit_pool.acquire(2)
        try:
            before = int(unit_pool.ctl[K.C_WORKER_BLOCKS])
            got = run(W, f.X, f.T, numba_backend._EMPTY, wide.meta, zd, ws, gbuf, wc, f.scale, f._l2, n_blocks, 2,
                      unit_pool.ctl, job, 0, numba_backend._ROWS)
            foreign_taken += int(unit_pool.ctl[K.C_WORKER_BLOCKS]) - before
        finally:
            unit_pool.release()
        assert got[0] == expected[0] and np.array_equal(got[1], expected[1])
    assert foreign_taken == 0
    # the workers were there to take blocks, and left these alone (on a loaded machine a worker
    # may come late to a few jobs: up to 20 s more of them, as the pool's own tests wait)
    deadline = time.monotonic() + 20
    while taken_by_workers == 0 and time.monotonic() < deadline:
        before = int(unit_pool.ctl[K.C_WORKER_BLOCKS])
        narrow(W)
        taken_by_workers += int(unit_pool.ctl[K.C_WORKER_BLOCKS]) - before
    assert taken_by_workers > 0


@pytest.mark.parametrize("n_threads", [1, 2])
def test_an_epoch_flushes_its_gradients_and_steps_in_the_callers_mode(flush_on, n_threads):
    """The epoch's entry point computes each batch's gradient flushed, as a kernel call does: on
    the subnormal problem that gradient is 0, so plain SGD leaves W as it was; switched off, the
    output intercept's gradient Σ 8x / n is subnormal and the step moves it. The caller's mode is
    its own afterwards."""
    from fastbp.optimizers import SGDOptimizer

    f, W0 = subnormal_problem(4096, n_threads)
    kernel = f._kernel
    X, T = np.ascontiguousarray(f.X), np.ascontiguousarray(f.T)

    def epoch():
        W = W0.copy()
        opt = SGDOptimizer([W], learning_rate_init=1.0, momentum=0.0, nesterov=False)
        kernel.run_epoch(W, X, T, None, None, 4096, 0.0, opt)  # one batch, one step
        return W

    np.testing.assert_array_equal(epoch(), W0)
    assert subnormal_survives()
    P.set_flush_subnormals(False)
    W = epoch()
    assert W[B_OUT] == -8e-310  # moved by the subnormal gradient 8x (a sum of 4096 times 8x, / n)
    assert subnormal_survives()
