"""Pickling: networks, bound objectives, fitted estimators and the Dask objective's parts.

multiprocessing, joblib, Dask and scipy's ``workers=`` send objectives by pickle. What is sent is
the description and the validated data, never a prepared kernel (compiled code, scratch buffers,
locks, thread pools): the unpickled object prepares its kernel again on first use, for the same
backend and ``n_threads``, so it gives the very same bits as the original.
"""

import multiprocessing
import operator
import pickle
import warnings

import numpy as np
import pytest
from scipy.optimize import differential_evolution

import fastbp

BACKENDS = fastbp.available_backends()


def problem(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int)
    sw = rng.uniform(0.5, 2.0, n)
    return X, y, sw


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


def same(a, b):
    """Bit-identical (loss, grad) pairs."""
    return a[0] == b[0] and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_used_or_not_and_bound_objective(backend, dtype):
    X, y, sw = problem()
    net = fastbp.Network([3, 8, 5, 1], activation="tanh", l2=1e-3, backend=backend, dtype=dtype, n_threads=2)
    W = net.init_weights(random_state=1)
    fresh = roundtrip(net)  # never used: nothing prepared yet
    f = net.bind(X, y, sw)
    want = f(W)
    used = roundtrip(net)
    g = roundtrip(f)
    assert used._kernels == {} and "_kernel" not in g.__dict__  # nothing prepared was sent
    assert repr(used) == repr(net) and g.n_samples == f.n_samples and g.scale == f.scale
    assert same(g(W), want) and same(g.loss_and_grad(W), want)
    assert g._kernel is not f._kernel and g._kernel is g.network._kernels[g.network.backend]
    assert not (g.X.flags.writeable or g.T.flags.writeable or g.sample_weight.flags.writeable)
    for n2 in (fresh, used):
        assert same(n2.loss_and_grad(W, X, y, sw), net.loss_and_grad(W, X, y, sw))
        assert same(n2.bind(X, y, sw)(W), want)
    assert same(roundtrip(g)(W), want)  # an unpickled objective pickles again


def test_an_objective_pickled_mid_fit_continues_identically(backend):
    from scipy.optimize import minimize

    X, y, _ = problem()
    f = fastbp.Network([3, 6, 1], backend=backend).bind(X, y)
    W0 = f.network.init_weights(random_state=0)
    a = minimize(f, W0, jac=True, method="L-BFGS-B", options={"maxiter": 15})
    b = minimize(roundtrip(f), W0, jac=True, method="L-BFGS-B", options={"maxiter": 15})
    assert a.fun == b.fun and np.array_equal(a.x, b.x)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_fitted_estimators(backend, kind):
    X, y, sw = problem()
    if kind == "classifier":
        est = fastbp.MLPClassifier(hidden_layer_sizes=(6,), backend=backend, random_state=0, max_iter=30)
    else:
        est = fastbp.MLPRegressor(hidden_layer_sizes=(6,), backend=backend, random_state=0, max_iter=30)
        y = X[:, 0] - X[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 30 iterations: not the point here
        est.fit(X, y, sample_weight=sw)
    clone = roundtrip(est)
    assert clone.get_params() == est.get_params() and clone.loss_ == est.loss_
    assert np.array_equal(clone.predict(X), est.predict(X))
    if kind == "classifier":
        assert np.array_equal(clone.predict_proba(X), est.predict_proba(X))
    for e in (est, clone):  # both go on fitting from where they were, to the same weights
        e.set_params(warm_start=True, max_iter=5)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e.fit(X, y, sample_weight=sw)
    for a, b in zip(est.coefs_ + est.intercepts_, clone.coefs_ + clone.intercepts_):
        assert np.array_equal(a, b)


def test_dask_objective_parts():
    """What DaskObjective sends to its workers: the kernel spec and validated partitions; a
    worker process prepares its own kernel for the spec (its cache is never sent)."""
    pytest.importorskip("distributed")
    from fastbp import distributed as fd

    X, y, sw = problem()
    net = fastbp.Network([3, 8, 1], l2=1e-3)
    Xv, T, swv, _ = net._validate(X, y, sw)
    W = net.init_weights(random_state=0)
    for backend in BACKENDS:
        spec = fd._Spec(net.layer_sizes, net.activation, net.output, net.dtype.str, backend, 2)
        part = fd._Partition(Xv[:120], T[:120], swv[:120])
        want = fd._partition_sums(part, spec, W)
        spec2, part2 = roundtrip((spec, part))
        assert spec2 == spec and hash(spec2) == hash(spec)  # the same kernel cache entry
        assert same(fd._partition_sums(part2, spec2, W), want)
    assert all(isinstance(k, fd._Spec) for k in fd._KERNELS)  # held per process, by spec


# --------------------------------------------------------------------- other processes
def evaluate(f, W):
    """Runs in a child process: the objective as it arrived there."""
    return f(W)


# what a child process runs: operator.call (3.11+) needs no import of this test module there
CALL = getattr(operator, "call", evaluate)


def first_loss(W, f):
    return f(W)[0]


@pytest.fixture(scope="module")
def spawn_pool():
    """Two fresh interpreters (spawn: nothing inherited, everything pickled)."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def objectives():
    """One bound objective per backend (float64 and float32), its weights and its result here."""
    X, y, sw = problem()
    out = []
    for backend in BACKENDS:
        for dtype in (np.float64, np.float32):
            net = fastbp.Network([3, 8, 5, 1], activation="relu", backend=backend, dtype=dtype, n_threads=2)
            f = net.bind(X, y, sw)
            W = f.network.init_weights(random_state=2)
            out.append((f, W, f(W)))
    return out


def test_through_multiprocessing_spawn(spawn_pool, objectives):
    results = spawn_pool.starmap(CALL, [(f, W) for f, W, _ in objectives])
    for (f, _, want), got in zip(objectives, results):
        assert same(got, want), f


def test_through_joblib(objectives):
    joblib = pytest.importorskip("joblib")
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(CALL)(f, W) for f, W, _ in objectives)
    for (f, _, want), got in zip(objectives, results):
        assert same(got, want), f


def test_differential_evolution_workers(spawn_pool):
    """scipy sends the objective to its workers by pickle: the same search as in one process."""
    X, y, _ = problem(n=60)
    f = fastbp.Network([3, 2, 1], backend=BACKENDS[-1]).bind(X, y)
    kwargs = dict(bounds=[(-3, 3)] * f.network.n_params, args=(f,), maxiter=3, popsize=4, seed=0,
                  polish=False, updating="deferred")
    serial = differential_evolution(first_loss, workers=1, **kwargs)
    parallel = differential_evolution(first_loss, workers=spawn_pool.map, **kwargs)
    assert serial.fun == parallel.fun and np.array_equal(serial.x, parallel.x)
