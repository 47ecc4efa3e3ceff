"""Compiled epochs (``kernel.run_epoch`` of the numba and cython backends) against the reference.

:func:`fastbp.backends.stochastic.reference_epoch` runs an epoch in Python, one kernel call and one
NumPy optimizer step per batch; a compiled ``run_epoch`` runs the same epoch in one call and must
give the same weights, optimizer state, step count, learning rate and summed loss: float64 to 1e-13
relative, float32 to its own precision (the weights and state in fact agree to the bit on x86-64,
since both take the same blocks and the same roundings; the tolerance leaves room for a compiler
that fuses a multiply-add, and the loss's L2 sum is added in another order). Each case runs two
epochs on the same kernel object (the same ``n_threads``), from the same start, on tiny networks:
every kernel path (unit-major, and the sample-major / BLAS paths forced by their constants), both
dtypes, SGD (plain, momentum, Nesterov) and Adam, every output, weighted, with batches whose
weights are all zero, with and without an order, batch sizes 1, 7 (an odd tail), n and more than n;
then threads, the estimators' use of the compiled path, and bad input.
"""

import os
import time

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp
from fastbp.backends import stochastic
from fastbp.optimizers import AdamOptimizer, SGDOptimizer

RTOL = {np.float64: 1e-13, np.float32: 2e-6}

OUTPUTS = {  # output -> (layer sizes, target kind of make_problem)
    "identity": ((3, 5, 4, 2), "values"),
    "logistic": ((3, 5, 4, 2), "labels"),
    "softmax": ((3, 5, 4, 3), "labels"),
    "exponential": ((3, 5, 4, 1), "counts"),
}
OPTIMIZERS = {
    "adam": lambda p: AdamOptimizer(p, 0.02, 0.8, 0.99, 1e-7),
    "sgd-nesterov": lambda p: SGDOptimizer(p, 0.05, "constant", 0.9, True),
    "sgd-momentum": lambda p: SGDOptimizer(p, 0.05, "constant", 0.7, False),
    "sgd-plain": lambda p: SGDOptimizer(p, 0.05, "constant", 0.0, True),
}


def _require(name):
    why = unavailable_reason(name)
    if why:
        pytest.skip(why)


def _setup(make_problem, backend, output="logistic", dtype=np.float64, n=23, weights=None, n_threads=1, seed=0):
    """A network of ``output``, its kernel, the encoded data in ``dtype`` and starting weights."""
    sizes, target = OUTPUTS[output]
    pb = make_problem(sizes, output, target=target, n=n, seed=seed)
    net = fastbp.Network(list(sizes), activation="tanh", output=output, backend=backend, dtype=dtype,
                         n_threads=n_threads)
    kernel = net._kernel_for(n)
    X = np.ascontiguousarray(pb.X, dtype=dtype)
    T = np.ascontiguousarray(pb.T, dtype=dtype)
    sw = None
    if weights is not None:
        sw = np.random.default_rng(seed + 1).uniform(0.2, 3.0, n)
        if weights == "zero-batch":  # samples 7-13 weigh nothing: an unshuffled batch of 7 is skipped
            sw[7:14] = 0.0
            sw[20] = 0.0
    W = (0.5 * pb.W).astype(dtype)
    return net, kernel, X, T, sw, W


def _params(net, W):
    coefs, intercepts = net.unpack(W.astype(np.float64))
    return [c.astype(W.dtype) for c in coefs] + [b.astype(W.dtype) for b in intercepts]


def _state(opt):
    arrays = (opt.m, opt.v) if opt.kind == "adam" else (opt.velocity,)
    return [a.copy() for a in arrays], getattr(opt, "t", None), float(opt.learning_rate)


def _epochs(epoch, kernel, W0, X, T, sw, orders, batch_size, alpha, opt):
    W = W0.copy()
    totals = [epoch(kernel, W, X, T, sw, order, batch_size, alpha, opt) for order in orders]
    return W, totals, _state(opt)


def _compiled(kernel, *args):
    return kernel.run_epoch(*args)


def _assert_close(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-300) if b.size else 1.0
    assert a.shape == b.shape
    assert float(np.max(np.abs(a - b))) <= rtol * scale, float(np.max(np.abs(a - b))) / scale


def _compare(kernel, net, W0, X, T, sw, orders, batch_size, optimizer, dtype, alpha=0.3):
    make = OPTIMIZERS[optimizer]
    opt_ref, opt_run = make(_params(net, W0)), make(_params(net, W0))
    W_ref, tot_ref, (state_ref, t_ref, lr_ref) = _epochs(
        stochastic.reference_epoch, kernel, W0, X, T, sw, orders, batch_size, alpha, opt_ref)
    W_run, tot_run, (state_run, t_run, lr_run) = _epochs(
        _compiled, kernel, W0, X, T, sw, orders, batch_size, alpha, opt_run)
    rtol = RTOL[dtype]
    assert W_run.dtype == dtype
    assert not np.array_equal(W_run, W0)  # steps were taken
    _assert_close(W_run, W_ref, rtol)
    for a, b in zip(state_run, state_ref):
        assert a.dtype == dtype
        _assert_close(a, b, rtol)
    _assert_close(tot_run, tot_ref, rtol)
    assert all(type(t) is float for t in tot_run)
    assert t_run == t_ref
    _assert_close([lr_run], [lr_ref], 1e-15)
    return W_run


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epoch_equals_reference(problem, compiled_kernel_path, dtype, output, optimizer):
    """Two epochs over 23 samples in batches of 7 (an odd tail of 2), shuffled, weighted."""
    net, kernel, X, T, sw, W0 = _setup(problem, compiled_kernel_path, output, dtype, weights="uniform")
    rng = np.random.default_rng(3)
    orders = [rng.permutation(23), rng.permutation(23)]
    _compare(kernel, net, W0, X, T, sw, orders, 7, optimizer, dtype)


@pytest.mark.parametrize("batch_size", [1, 7, 23, 40])
@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
@pytest.mark.parametrize("weights", [None, "zero-batch"])
def test_epoch_batches(problem, compiled_kernel_path, batch_size, shuffled, weights):
    """Batch sizes 1, 7 (odd tail), n and more than n, with and without an order, unweighted and
    with batches whose weights are all zero (skipped: no step, no loss)."""
    net, kernel, X, T, sw, W0 = _setup(problem, compiled_kernel_path, "softmax", weights=weights)
    rng = np.random.default_rng(4)
    orders = [rng.permutation(23), rng.permutation(23)] if shuffled else [None, None]
    for optimizer in ("adam", "sgd-nesterov"):
        _compare(kernel, net, W0, X, T, sw, orders, batch_size, optimizer, np.float64)


def test_zero_weight_batches_take_no_step(problem, compiled_kernel_path):
    """In order, in batches of 7: batch [7, 14) weighs nothing, so two epochs take 3 + 3 Adam
    steps, not 4 + 4; an epoch whose every weight is zero takes none and keeps the last rate."""
    net, kernel, X, T, sw, W0 = _setup(problem, compiled_kernel_path, "identity", weights="zero-batch")
    opt = OPTIMIZERS["adam"](_params(net, W0))
    W = W0.copy()
    for _ in range(2):
        kernel.run_epoch(W, X, T, sw, None, 7, 0.1, opt)
    assert opt.t == 6
    rate, W_before = opt.learning_rate, W.copy()
    assert kernel.run_epoch(W, X, T, np.zeros(23), None, 7, 0.1, opt) == 0.0
    assert opt.t == 6 and opt.learning_rate == rate
    np.testing.assert_array_equal(W, W_before)


def _threaded_setup(make_problem, backend, n_threads):
    """A batch of 256 samples on a 64-unit network: enough work for the kernels to split it."""
    sizes = (4, 64, 64, 1)
    pb = make_problem(sizes, "logistic", n=600, seed=5)
    net = fastbp.Network(list(sizes), activation="tanh", output="logistic", backend=backend, n_threads=n_threads)
    return net, net._kernel_for(256), pb.X, pb.T, 0.3 * pb.W


def test_threads_bit_identical_and_equal_to_reference(problem, compiled_backend):
    """With 2 threads the batches are split in blocks, as a kernel call on them is: the epoch
    equals the reference, and repeats to the bit; with 1 thread too."""
    backend = compiled_backend
    order = np.random.default_rng(6).permutation(600)
    results = {}
    for n_threads in (1, 2):
        net, kernel, X, T, W0 = _threaded_setup(problem, backend, n_threads)
        # the batches really are split (but in a single-threaded cython build: one block, and the
        # rest of the test still holds)
        threaded = backend == "numba" or fastbp.backends.get_backend("cython").have_threads
        if n_threads == 2 and threaded:
            blocks = kernel.n_blocks(256) if backend == "numba" else kernel._n_blocks(256)
            assert blocks > 1
        runs = []
        for _ in range(2):
            W = W0.copy()
            opt = AdamOptimizer(_params(net, W), 0.01)
            total = kernel.run_epoch(W, X, T, None, order, 256, 1e-3, opt)
            runs.append((W, opt.m.copy(), opt.v.copy(), total))
        for a, b in zip(runs[0], runs[1]):
            np.testing.assert_array_equal(a, b)
        _compare(kernel, net, W0, X, T, None, [order], 256, "adam", np.float64)
        results[n_threads] = runs[0][0]
    _assert_close(results[2], results[1], 1e-12)  # another split: the same to round-off


def _choice(kernel, state=None):
    """The epochs' choice of threads of a compiled kernel: (time alone, time on the threads,
    epochs that chose); with ``state``, set it first."""
    if hasattr(kernel, "_epoch_choice"):  # numba
        if state is not None:
            kernel._epoch_choice[:] = state
        return tuple(float(v) for v in kernel._epoch_choice)
    kernel = getattr(kernel, "kernel", kernel)
    if state is not None:
        kernel.epoch_timing = state
    return tuple(float(v) for v in kernel.epoch_timing)


def test_epochs_run_threads_or_the_caller_alone_whichever_was_faster(problem, compiled_backend):
    """A full batch that would run on several threads runs on them, or on the calling thread
    alone when the kernel timed the threads clearly slower (a machine that takes the second core
    away now and then); every few epochs a few batches go the other way to time it again. The
    blocks are the same either way, so are the bits; the timings are kept across epochs."""
    backend = compiled_backend
    if backend == "cython" and not fastbp.backends.get_backend("cython").have_threads:
        pytest.skip("a single-threaded cython build has no threads to choose")
    from fastbp.backends.numba_kernels import pool as K
    from fastbp.backends.numba_kernels import pool_threads as P

    net, kernel, X, T, W0 = _threaded_setup(problem, backend, 2)
    order = np.random.default_rng(8).permutation(600)
    worker_blocks = P.get_pool(np.float64, P.EpochPool).ctl if backend == "numba" else None

    def epoch(state):
        _choice(kernel, state)
        before = None if worker_blocks is None else int(worker_blocks[K.C_WORKER_BLOCKS])
        W = W0.copy()
        opt = AdamOptimizer(_params(net, W), 0.01)
        total = kernel.run_epoch(W, X, T, None, order, 100, 1e-3, opt)  # 6 full batches
        ran = None if worker_blocks is None else int(worker_blocks[K.C_WORKER_BLOCKS]) - before
        return (W, opt.m, opt.v, total), _choice(kernel), ran

    # no timings yet: the threads, and (a probing epoch) batches 2-4 alone: both ways timed
    on_threads, state, _ = epoch((0.0, 0.0, 0))
    assert state[0] > 0 and state[1] > 0 and state[2] == 1
    # the threads timed clearly slower, not a probing epoch: every batch alone, no worker's block
    alone, state, ran = epoch((1.0, 1e15, 1))
    assert state[1] == 1e15 and 0 < state[0] < 1e15 and state[2] == 2
    assert ran in (None, 0)
    # a probing epoch while alone is preferred: batches 2-4 on the threads are timed
    _, state, _ = epoch((1.0, 1e15, 8))
    assert state[1] < 1e15 and state[2] == 9
    for a, b in zip(alone, on_threads):
        np.testing.assert_array_equal(a, b)
    _compare(kernel, net, W0, X, T, None, [order], 100, "adam", np.float64)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else os.cpu_count() < 2,
                    reason="a worker needs a second core to take blocks in time")
def test_numba_epoch_workers_run_blocks(problem):
    """The epoch's blocks run on the workers of the epoch's own pool too (which counts them)."""
    _require("numba")
    from fastbp.backends.numba_kernels import pool as K
    from fastbp.backends.numba_kernels import pool_threads as P

    net, kernel, X, T, W0 = _threaded_setup(problem, "numba", 2)
    pool = P.get_pool(np.float64, P.EpochPool)
    before = int(pool.ctl[K.C_WORKER_BLOCKS])
    order = np.random.default_rng(7).permutation(600)
    opt = AdamOptimizer(_params(net, W0), 0.01)
    W = W0.copy()
    deadline = time.monotonic() + 20  # a worker that starts late finds no block: epochs until one does
    while int(pool.ctl[K.C_WORKER_BLOCKS]) == before and time.monotonic() < deadline:
        kernel.run_epoch(W, X, T, None, order, 256, 1e-3, opt)
    assert int(pool.ctl[K.C_WORKER_BLOCKS]) > before


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else os.cpu_count() < 2,
                    reason="a worker needs a second core to take blocks in time")
def test_numba_small_epochs_stay_on_the_calling_thread(problem):
    """An epoch below MIN_PARALLEL_EPOCH_WORK (the lab's seed4layer: 200 samples, one batch) runs
    its batches' blocks, still two, on the calling thread: waking the workers each epoch cost
    more than they saved. The blocks are those of a kernel call, so the result is unchanged."""
    _require("numba")
    from fastbp.backends import numba_backend
    from fastbp.backends.numba_kernels import pool as K
    from fastbp.backends.numba_kernels import pool_threads as P
    from fastbp.cases import CASES, make_case_data

    case = CASES["seed4layer"]
    X, y = make_case_data(case)
    net = fastbp.Network(list(case.layer_sizes), activation=case.activation, output=case.output,
                         backend="numba", n_threads=2)
    kernel = net._kernel_for(200)
    assert kernel.n_blocks(200) == 2
    assert X.shape[0] * kernel._work_per_sample < numba_backend.MIN_PARALLEL_EPOCH_WORK
    X, T = np.ascontiguousarray(X), (y > 0).astype(np.float64)[:, None]
    pool = P.get_pool(np.float64, P.EpochPool)
    W0 = net.init_weights(random_state=0)
    opt = AdamOptimizer(_params(net, W0), 0.01)
    W = W0.copy()
    before = int(pool.ctl[K.C_WORKER_BLOCKS])
    for _ in range(300):
        kernel.run_epoch(W, X, T, None, None, 200, 1e-3, opt)
    assert int(pool.ctl[K.C_WORKER_BLOCKS]) == before
    _compare(kernel, net, W0, X, T, None, [None, None], 200, "adam", np.float64)


# ------------------------------------------------------------------------------ the estimators
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_estimators_use_the_compiled_epoch(problem, compiled_backend, solver, monkeypatch):
    """A fit on a compiled backend never runs the per-batch reference: it is made to raise."""

    def refuse(*args, **kwargs):
        raise AssertionError("the reference epoch ran")

    monkeypatch.setattr(stochastic, "reference_epoch", refuse)
    X, y = problem((3, 4, 3), "softmax", n=40, seed=8).X, np.arange(40) % 3
    clf = fastbp.MLPClassifier((4,), solver=solver, max_iter=3, batch_size=16, backend=compiled_backend, random_state=0,
                               tol=0.0)
    with pytest.warns(Warning):  # ConvergenceWarning: max_iter reached
        clf.fit(X, y)
    assert clf.n_iter_ == 3 and clf.backend_ == compiled_backend
    clf.partial_fit(X, y)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 4


def test_numpy_backend_uses_the_reference_epoch(problem, monkeypatch):
    """The numpy kernel has no run_epoch: the estimators run the reference, one call per epoch."""
    calls = []
    reference = stochastic.reference_epoch

    def spy(*args, **kwargs):
        calls.append(args[6])  # batch_size
        return reference(*args, **kwargs)

    monkeypatch.setattr(stochastic, "reference_epoch", spy)
    X, y = problem((3, 4, 3), "softmax", n=40, seed=8).X, np.arange(40) % 3
    with pytest.warns(Warning):
        fastbp.MLPClassifier((4,), max_iter=3, batch_size=16, backend="numpy", random_state=0, tol=0.0).fit(X, y)
    assert calls == [16, 16, 16]


# ------------------------------------------------------------------------------ the runner
@pytest.mark.parametrize("backend", ["numba", "cython", "numpy"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd-nesterov"])
def test_an_epoch_runner_runs_the_epochs_run_epoch_would(problem, backend, optimizer):
    """``stochastic.epoch_runner`` (the numba kernel's own, checking its arrays once; the others'
    run_epoch or the reference on fixed arguments): each call one epoch, to the bit as a
    ``run_epoch`` call at that moment, with the order shuffled in place between epochs (as the
    estimators do), a read-only view of it, and the SGD rate changed between epochs (as
    ``learning_rate="invscaling"`` does)."""
    _require(backend)
    net, kernel, X, T, sw, W0 = _setup(problem, backend, "softmax", weights="uniform")
    epoch = stochastic.epoch_function(kernel)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    for view in (False, True):
        make = OPTIMIZERS[optimizer]
        opt_a, opt_b, opt_r = make(_params(net, W0)), make(_params(net, W0)), make(_params(net, W0))
        W_a, W_b, W_r = W0.copy(), W0.copy(), W0.copy()
        order_a, order_b = np.arange(23, dtype=np.int64), np.arange(23, dtype=np.int64)
        shown = order_b[:]
        if view:
            shown.flags.writeable = False  # the runner must read the base's new contents
        run = stochastic.epoch_runner(kernel, W_b, X, T, sw, shown, 7, 0.1, opt_b)
        for e in range(3):
            rng_a.shuffle(order_a)
            rng_b.shuffle(order_b)
            if optimizer != "adam":
                opt_a.learning_rate = opt_b.learning_rate = opt_r.learning_rate = 0.05 / (e + 1)
            total_a = epoch(W_a, X, T, sw, order_a, 7, 0.1, opt_a)
            total_b = run()
            assert total_b == total_a
            np.testing.assert_array_equal(W_b, W_a)
            stochastic.reference_epoch(kernel, W_r, X, T, sw, order_a, 7, 0.1, opt_r)
            _assert_close(W_b, W_r, RTOL[np.float64])  # (and both are the epochs asked for)
        state_a, state_b = _state(opt_a), _state(opt_b)
        for a, b in zip(state_a[0], state_b[0]):
            np.testing.assert_array_equal(b, a)
        assert state_b[1:] == state_a[1:]
        assert not np.array_equal(W_b, W0)


def test_numba_epoch_runner_checks_its_arrays_once(problem):
    """The numba runner refuses what run_epoch refuses, when it is made."""
    _require("numba")
    net, kernel, X, T, sw, W0 = _setup(problem, "numba", "logistic")
    opt = OPTIMIZERS["adam"](_params(net, W0))
    for args, word in [((W0.astype(np.float32), X, T, None, None, 7, 0.1, opt), "W"),
                       ((W0.copy(), X[:, :2].copy(), T, None, None, 7, 0.1, opt), "X"),
                       ((W0.copy(), X, T, None, np.arange(22), 7, 0.1, opt), "order"),
                       ((W0.copy(), X, T, None, None, 0, 0.1, opt), "batch_size")]:
        with pytest.raises(ValueError, match=word):
            kernel.epoch_runner(*args)
    assert opt.t == 0 and not opt.m.any()


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_and_changes_nothing(problem, compiled_backend):
    net, kernel, X, T, sw, W0 = _setup(problem, compiled_backend, "logistic")
    opt = OPTIMIZERS["adam"](_params(net, W0))
    W = W0.copy()
    bad_order = np.arange(23)
    bad_order[5] = 23
    cases = [
        ((W.astype(np.float32), X, T, None, None, 7, 0.1, opt), "W"),
        ((W[:-1].copy(), X, T, None, None, 7, 0.1, opt), "W"),
        ((W, X[:, :2].copy(), T, None, None, 7, 0.1, opt), "X"),
        ((W, X, T[:5].copy(), None, None, 7, 0.1, opt), "T"),
        ((W, X, T, np.ones(5), None, 7, 0.1, opt), "sample_weight"),
        ((W, X, T, None, np.arange(22), 7, 0.1, opt), "order"),
        ((W, X, T, None, np.arange(23, dtype=np.int32), 7, 0.1, opt), "order"),
        ((W, X, T, None, bad_order, 7, 0.1, opt), "order"),
        ((W, X, T, None, None, 0, 0.1, opt), "batch_size"),
        ((W, X, T, None, None, 7, 0.1, OPTIMIZERS["adam"]([np.zeros(3)])), "state"),
    ]
    for args, word in cases:
        with pytest.raises(ValueError, match=word):
            kernel.run_epoch(*args)
    np.testing.assert_array_equal(W, W0)
    assert opt.t == 0 and not opt.m.any()


def test_cython_epoch_leaves_the_callers_float_mode(problem):
    """The cython epoch flushes subnormals to zero on its threads while a batch's gradient is
    computed, as a kernel call does, and puts the caller's mode back (before each step, which
    rounds as NumPy's does, and at the end): the caller never sees a changed mode."""
    _require("cython")
    from fastbp.backends import _cython_kernels

    net, kernel, X, T, sw, W0 = _setup(problem, "cython", "softmax", weights="uniform")
    opt = OPTIMIZERS["adam"](_params(net, W0))
    assert not _cython_kernels.flushing_now()
    kernel.run_epoch(W0.copy(), X, T, sw, np.random.default_rng(9).permutation(23), 7, 0.1, opt)
    assert not _cython_kernels.flushing_now()
