"""fastbp.distributed.DaskObjective against the local bound objective, on a loopback LocalCluster.

The reference for every value is ``net.bind(X, y, sample_weight)(W)`` on the same data in one
process; the distributed objective must agree to 1e-12 relative in float64, raise the same
contract errors before any call, and survive a worker killed mid-fit with the same result.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
from scipy.optimize import minimize

import fastbp
from fastbp.cases import CASES, make_case_data

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from fastbp.distributed import DaskObjective, DistributedObjectiveError  # noqa: E402

RTOL = 1e-12


def _cluster():
    # dashboard_address=None still serves HTTP on the default port 8787 (and warns when another
    # cluster on the machine has it); ":0" takes a free port
    return distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )


@pytest.fixture(scope="module")
def client():
    with _cluster() as cluster, distributed.Client(cluster) as c:
        yield c


def assert_same(got, want, rtol=RTOL):
    """Loss to ``rtol`` relative; gradient to ``rtol`` relative to its largest entry."""
    (loss, grad), (loss_ref, grad_ref) = got, want
    assert isinstance(loss, float)
    assert grad.dtype == np.float64 and grad.shape == grad_ref.shape
    assert abs(loss - loss_ref) <= rtol * abs(loss_ref)
    np.testing.assert_allclose(grad, grad_ref, rtol=rtol, atol=rtol * np.abs(grad_ref).max())


def _problem(kind, n=500, seed=0):
    """(net, X, y, sample_weight) with several outputs, weights and an L2 term."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    sw = rng.uniform(0, 3, n)
    if kind == "softmax":
        net = fastbp.Network([5, 8, 3], activation="relu", l2=1e-3)
        y = rng.integers(0, 3, n)
    elif kind == "multilabel":
        net = fastbp.Network([5, 8, 6, 2], activation="tanh", output="logistic", l2=1e-3)
        y = rng.integers(0, 2, (n, 2))
    else:  # multi-output regression
        net = fastbp.Network([5, 7, 3], activation="logistic", output="identity", l2=1e-3)
        y = rng.standard_normal((n, 3))
    return net, X, y, sw


# ------------------------------------------------------------------------------ equality
@pytest.mark.parametrize("kind", ["softmax", "multilabel", "identity"])
@pytest.mark.parametrize("n_partitions", [None, 1, 3, 7])
def test_numpy_input_equals_bound_objective(client, kind, n_partitions):
    net, X, y, sw = _problem(kind)
    obj = DaskObjective(client, net, X, y, sw, n_partitions=n_partitions)
    try:
        assert obj.n_samples == 500 and sum(obj.partition_sizes) == 500
        assert obj.n_partitions == (n_partitions or 2)
        for seed in (0, 1):
            W = net.init_weights(random_state=seed)
            assert_same(obj(W), net.bind(X, y, sw)(W))
    finally:
        obj.close()


@pytest.mark.parametrize("kind", ["softmax", "multilabel", "identity"])
def test_dask_input_equals_bound_objective(client, kind):
    net, X, y, sw = _problem(kind)
    sw[100:200] = 0  # a whole chunk of zero weights is fine; only all zero is an error
    dX = da.from_array(X, chunks=((100, 100, 37, 263), (2, 3)))  # uneven rows, split columns
    dy = da.from_array(y, chunks=250)  # chunks unlike X's: re-chunked to X's rows
    dsw = da.from_array(sw, chunks=125)
    W = net.init_weights(random_state=3)
    with DaskObjective(client, net, dX, dy, dsw) as obj:
        assert obj.partition_sizes == (100, 100, 37, 263)
        assert_same(obj(W), net.bind(X, y, sw)(W))
    # numpy y and weights with a dask X, and a re-chunk into n_partitions
    with DaskObjective(client, net, dX, y, n_partitions=3) as obj:
        assert obj.n_partitions == 3
        assert_same(obj.loss_and_grad(W), net.bind(X, y)(W))


def test_unweighted_medium_case_and_float32(client):
    case = CASES["medium"]
    X, y = make_case_data(case, n_samples=3000)
    net = case.network()
    W = net.init_weights(random_state=0)
    with DaskObjective(client, net, X, y) as obj:
        assert obj.weight_sum == 3000
        assert_same(obj(W), net.bind(X, y)(W))
    net32 = case.network(dtype=np.float32)
    with DaskObjective(client, net32, da.from_array(X, chunks=1000), y) as obj:
        loss, grad = obj(W)
        assert grad.dtype == np.float64
        assert_same((loss, grad), net32.bind(X, y)(W), rtol=1e-5)


def test_calls_are_deterministic_and_move_no_data(client):
    net, X, y, sw = _problem("softmax", n=2000)
    with DaskObjective(client, net, X, y, sw, n_partitions=4) as obj:
        placed = client.who_has(obj._parts)
        W = net.init_weights(random_state=0)
        first = obj(W)
        for _ in range(5):
            loss, grad = obj(W)
            assert loss == first[0] and np.array_equal(grad, first[1])  # bit-identical
        # the partitions stayed where they were (one copy each), and the calls' results are
        # released: in the end the workers hold the partitions and nothing else
        assert client.who_has(obj._parts) == placed
        assert all(len(where) == 1 for where in placed.values())
        assert _keys_settle(client, {p.key for p in obj._parts})
        assert np.array_equal(W, net.init_weights(random_state=0))  # W untouched


def _keys_on_workers(client):
    return {key for keys in client.has_what().values() for key in keys}


def _keys_settle(client, expected, seconds=5.0, subset=False):
    """True once the workers hold exactly ``expected`` (or a subset: keys of earlier tests may
    still be on their way out); releases are asynchronous."""

    def settled():
        keys = _keys_on_workers(client)
        return keys <= expected if subset else keys == expected

    deadline = time.monotonic() + seconds
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    return settled()


def test_kernels_prepared_once_per_worker(client):
    net, X, y, sw = _problem("identity")

    def prepared():
        from fastbp.distributed import _KERNELS

        return sorted(spec.layer_sizes for spec in _KERNELS)

    with DaskObjective(client, net, X, y, sw) as obj:
        for s in range(3):
            obj(net.init_weights(random_state=s))
        caches = client.run(prepared)
    # each worker holds its partition's kernel, warmed at construction and reused by the calls
    for sizes in caches.values():
        assert sizes.count((5, 7, 3)) == 1


def test_minimize_on_cluster_matches_local_fit(client):
    net, X, y, sw = _problem("softmax", n=400)
    W0 = net.init_weights(random_state=0)
    local = minimize(net.bind(X, y, sw), W0, jac=True, method="L-BFGS-B", options={"maxiter": 15})
    with DaskObjective(client, net, X, y, sw, n_partitions=3) as obj:
        res = minimize(obj, W0, jac=True, method="L-BFGS-B", options={"maxiter": 15})
    assert res.fun < net.bind(X, y, sw)(W0)[0]
    assert abs(res.fun - local.fun) <= 1e-8 * abs(local.fun)


# ------------------------------------------------------------------------------ bad input
BAD_NUMPY = {
    "X 1-D": lambda X, y, sw: (X[:, 0], y, sw),
    "X wrong columns": lambda X, y, sw: (X[:, :4], y, sw),
    "X empty": lambda X, y, sw: (X[:0], y[:0], None),
    "X NaN": lambda X, y, sw: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), y, sw),
    "y short": lambda X, y, sw: (X, y[:-1], sw),
    "y label out of range": lambda X, y, sw: (X, np.where(np.arange(len(y)) == 3, 3, y), sw),
    "y negative": lambda X, y, sw: (X, -y - 1, sw),
    "sw negative": lambda X, y, sw: (X, y, -sw),
    "sw all zero": lambda X, y, sw: (X, y, np.zeros_like(sw)),
    "sw short": lambda X, y, sw: (X, y, sw[:-2]),
    "sw inf": lambda X, y, sw: (X, y, np.where(np.arange(len(sw)) == 9, np.inf, sw)),
    "y strings": lambda X, y, sw: (X, y.astype(str), sw),
}


@pytest.mark.parametrize("case", sorted(BAD_NUMPY))
def test_numpy_bad_input_raises_what_bind_raises(client, case):
    net, X, y, sw = _problem("softmax", n=60)
    args = BAD_NUMPY[case](X, y, sw)
    with pytest.raises((ValueError, TypeError)) as expected:
        net.bind(*args)
    before = _keys_on_workers(client)
    with pytest.raises(expected.type) as got:
        DaskObjective(client, net, *args)
    assert str(got.value) == str(expected.value)
    assert _keys_settle(client, before, subset=True)  # nothing new left on the cluster


BAD_DASK = {
    # name: (transform of (X, y, sw) as numpy, pattern of the error)
    "X NaN in one chunk": (lambda X, y, sw: (np.where(np.arange(X.size).reshape(X.shape) == 333, np.nan, X), y, sw),
                           "NaN"),
    "X wrong columns": (lambda X, y, sw: (X[:, :4], y, sw), "columns"),
    "y short": (lambda X, y, sw: (X, y[:-1], sw), "samples"),
    "y label out of range": (lambda X, y, sw: (X, np.where(np.arange(len(y)) == 150, 5, y), sw), r"\[0, 3\)"),
    "sw negative in one chunk": (lambda X, y, sw: (X, y, np.where(np.arange(len(sw)) == 170, -1.0, sw)),
                                 "non-negative"),
    "sw all zero": (lambda X, y, sw: (X, y, np.zeros_like(sw)), "all zero"),
    "sw 2-D": (lambda X, y, sw: (X, y, sw[:, None]), "1-D"),
}


@pytest.mark.parametrize("case", sorted(BAD_DASK))
def test_dask_bad_input_raises_at_construction(client, case):
    net, X, y, sw = _problem("softmax", n=200)
    transform, pattern = BAD_DASK[case]
    X, y, sw = transform(X, y, sw)
    with pytest.raises(ValueError, match=pattern):
        net.bind(X, y, sw)  # the local objective rejects it too
    with pytest.raises(ValueError, match=pattern):
        DaskObjective(client, net, da.from_array(X, chunks=(64, -1)), da.from_array(y, chunks=64),
                      da.from_array(sw, chunks=64))


def test_bad_arguments_and_bad_W(client):
    net, X, y, sw = _problem("identity", n=50)
    with pytest.raises(TypeError, match="Network"):
        DaskObjective(client, "net", X, y)
    with pytest.raises(TypeError, match="Client"):
        DaskObjective(object(), net, X, y)
    with pytest.raises(ValueError, match="n_partitions"):
        DaskObjective(client, net, X, y, n_partitions=0)
    with pytest.raises(ValueError, match="timeout"):
        DaskObjective(client, net, X, y, timeout=-1)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        dX = da.from_array(X, chunks=10)
        DaskObjective(client, net, dX[dX[:, 0] > 0], y)
    with DaskObjective(client, net, X, y) as obj:
        with pytest.raises(ValueError, match="n_params"):
            obj(np.zeros(net.n_params + 1))
        W = net.init_weights(random_state=0)
        W[2] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            obj(W)
    with pytest.raises(DistributedObjectiveError, match="closed"):
        obj(net.init_weights(random_state=0))


# ----------------------------------------------------------------------------------- faults
def _fit(obj, W0, on_call=None, maxiter=8):
    """L-BFGS-B with ``obj``; every call's (loss, grad) recorded; ``on_call(i)`` before call i."""
    calls = []

    def f(W):
        if on_call is not None:
            on_call(len(calls))
        out = obj(W)
        calls.append((out[0], out[1].copy()))
        return out

    res = minimize(f, W0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
    return res, calls


def _kill_worker_holding(client, future):
    """SIGKILL the worker process (not its nanny) that holds ``future``'s data."""
    holders = client.who_has(future)[future.key]
    pids = client.run(os.getpid)
    os.kill(pids[holders[0]], signal.SIGKILL)


@pytest.mark.parametrize("source", ["numpy", "dask"])
def test_worker_killed_mid_fit_gives_the_same_fit(source):
    case = CASES["medium"]
    X, y = make_case_data(case, n_samples=6000)
    sw = np.random.default_rng(0).uniform(0.5, 1.5, len(y))
    net = case.network()
    W0 = net.init_weights(random_state=0)
    if source == "dask":
        data = (da.from_array(X, chunks=(1500, -1)), da.from_array(y, chunks=1500), sw)
    else:
        data = (X, y, sw)
    with _cluster() as cluster, distributed.Client(cluster) as client:
        with DaskObjective(client, net, *data, n_partitions=4, timeout=120) as obj:
            ref, ref_calls = _fit(obj, W0)

            def kill(i):
                if i == 2:  # between calls: the partitions of that worker are lost
                    _kill_worker_holding(client, obj._parts[0])
                elif i == 5:  # during the call: kill as soon as its tasks are out
                    threading.Timer(0.005, _kill_worker_holding, (client, obj._parts[-1])).start()

            res, calls = _fit(obj, W0, on_call=kill)
            deadline = time.monotonic() + 60  # the nanny restarts the killed workers
            while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    assert len(calls) == len(ref_calls) > 5
    for (loss, grad), (loss_ref, grad_ref) in zip(calls, ref_calls):
        assert loss == loss_ref and np.array_equal(grad, grad_ref)  # recomputed, bit-identical
    assert np.array_equal(res.x, ref.x)
    assert_same(calls[-1], net.bind(X, y, sw)(res.x))


def test_no_worker_left_raises_a_clear_error():
    net, X, y, sw = _problem("identity", n=100)
    with _cluster() as cluster, distributed.Client(cluster) as client:
        obj = DaskObjective(client, net, X, y, sw, timeout=60)
        W = net.init_weights(random_state=0)
        expected = obj(W)
        obj.timeout = 2
        cluster.scale(0)
        deadline = time.monotonic() + 30
        while client.nthreads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert expected[1].shape == (net.n_params,)
        with pytest.raises(DistributedObjectiveError, match=r"timeout=2 s \(0 workers, 2 of 2 partitions lost"):
            obj(W)
        obj.close()
