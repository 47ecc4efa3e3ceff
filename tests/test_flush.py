"""Subnormal numbers flushed to zero during a Cython kernel call, and only then.

The kernel sets flush-to-zero and denormals-are-zero on every thread of a call (the caller, the
pool's workers) and puts the caller's mode back after (``src_kernels/fb_fpenv.h``): saturated
networks then cost no more than others on cores that slow down on subnormal operands. These tests
check the mode on each thread, that it does not leak into the caller, what it changes in the
results (values below the smallest normal number only) and what it does not.
"""

import numpy as np
import pytest
from flush_checks import check_flush_changes_only_below_tiny

import fastbp

pytestmark = pytest.mark.skipif(
    "cython" not in fastbp.available_backends(), reason="the cython extension is not built here"
)

SUBNORMAL = 1e-310  # below float64's smallest normal number, 2.2e-308


@pytest.fixture
def ck():
    from fastbp.backends import _cython_kernels

    if not _cython_kernels.FLUSHES_SUBNORMALS:
        pytest.skip("no flush-to-zero mode on this platform")
    previous = _cython_kernels.set_flush_subnormals(True)
    yield _cython_kernels
    _cython_kernels.set_flush_subnormals(previous)


def subnormal_survives():
    """Whether this thread computes subnormal results (its mode is IEEE 754's own)."""
    return np.float64(SUBNORMAL) * np.float64(1.0) != 0.0


def test_every_thread_of_a_call_flushes_and_the_caller_is_restored(ck):
    assert subnormal_survives() and not ck.flushing_now()
    modes = ck.thread_flush_modes(2)
    assert all(flushing for _, flushing in modes), modes
    if ck.HAVE_THREADS:
        assert {slot for slot, _ in modes} == {0, 1}, modes  # the worker ran one of the blocks
    assert subnormal_survives() and not ck.flushing_now()


def test_switched_off_no_thread_flushes(ck):
    ck.thread_flush_modes(2)  # workers exist and last ran flushing
    ck.set_flush_subnormals(False)
    modes = ck.thread_flush_modes(2)
    assert not any(flushing for _, flushing in modes), modes  # the workers follow the caller


def subnormal_problem(n):
    """Identity output a = x w + b with subnormal x: ∂loss/∂b = Σ (a − t) / n = mean x."""
    X = np.full((n, 1), SUBNORMAL)
    return X, np.zeros(n), np.array([1.0, 0.0])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_subnormal_inputs_are_zero_in_a_call(ck, n_threads):
    X, y, W = subnormal_problem(4096)  # several blocks on two threads
    net = fastbp.Network([1, 1], output="identity", backend="cython", n_threads=n_threads)
    loss, grad = net.loss_and_grad(W, X, y)
    assert loss == 0.0 and np.all(grad == 0.0), grad  # x read as 0 on every thread
    ck.set_flush_subnormals(False)
    loss, grad = net.loss_and_grad(W, X, y)
    ref = fastbp.Network([1, 1], output="identity", backend="numpy").loss_and_grad(W, X, y)
    assert grad[1] == ref[1][1] == SUBNORMAL  # IEEE 754 arithmetic when switched off
    assert subnormal_survives()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case_name", ["seed4layer", "multiclass", "medium"])
def test_flushing_changes_only_what_lies_below_the_smallest_normal(ck, case_name, dtype):
    check_flush_changes_only_below_tiny("cython", ck.set_flush_subnormals, case_name, dtype)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_blas_products_run_flushed_too(ck, n_threads):
    """A network with a BLAS layer on few samples: every gemm runs on a kernel thread in the
    call's mode (BLAS's own threads would not flush: scipy's OpenBLAS does not pass its caller's
    mode on to them), so the subnormal products of its weight gradient are zero as well."""
    from fastbp.backends.cython_backend import BLAS_MIN_WEIGHTS, SerialBlasKernel

    if not ck.HAVE_THREADS:
        pytest.skip("a build without threads leaves the parallelism to BLAS's threads (unflushed)")
    sizes = [256, 256, 1]
    assert 256 * 256 >= BLAS_MIN_WEIGHTS
    net = fastbp.Network(sizes, activation="identity", output="identity", backend="cython", n_threads=n_threads)
    n = 600  # one BLAS tile: OpenBLAS would thread its gemms if left to itself
    X = np.full((n, 256), 1e-312)  # subnormal inputs...
    W = np.concatenate([np.ones(256 * 256 + 256), np.zeros(257)])
    f = net.bind(X, np.ones(n))  # ... and deltas of -1: ∂loss/∂coef_0 = mean(x δ) = -1e-312
    assert isinstance(f._kernel, SerialBlasKernel) and f._kernel.blas_layers == (0,)
    assert f._kernel._n_blocks(n) == n_threads  # the kernel's threads, not BLAS's, split the call
    loss, grad = f(W)
    n_coef0 = 256 * 256
    assert loss == 0.5 and not grad[:n_coef0].any(), np.flatnonzero(grad[:n_coef0])[:10]
    assert np.all(grad[-257:] == -1.0)  # the intercepts' gradients: normal numbers, unchanged
    ck.set_flush_subnormals(False)
    assert np.all(f(W)[1][:n_coef0] == -1e-312)  # what IEEE 754 arithmetic gives
