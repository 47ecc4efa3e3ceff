"""Per-call cost of fastbp.distributed.DaskObjective against the local bound objective.

Run: ``python -m pytest benchmarks/bench_distributed.py --benchmark-group-by=group``.

Groups: ``overhead-medium`` and ``overhead-largen`` time one call of the local objective
(``net.bind``) and of the distributed one on a 2-worker loopback LocalCluster; the difference is
the per-call overhead (task submission, W out, one gradient per partition back).
``scaling-largen`` times the distributed call with 1 and 2 worker processes. On a 2-core machine
the 2-worker figure can at best halve the kernel time and also competes with the client and the
scheduler for the same cores, so it shows the mechanism, not a cluster's speed-up.

Every distributed result timed is checked against the local objective on the same data: loss to
1e-12 relative, gradient to 1e-12 relative to its largest entry (the partitions' float64 sums are
added in another order, nothing more), so a fast wrong answer fails.
"""

import functools

import numpy as np
import pytest

from fastbp.cases import CASES, make_case_data

distributed = pytest.importorskip("distributed")
from fastbp.distributed import DaskObjective  # noqa: E402

#: the medium network on 100 000 samples: large n, where a cluster could pay off
LARGE_N = 100_000


def _cluster(n_workers):
    # ":0": a free port for the HTTP server (None still takes 8787, and warns when it is in use)
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    )


def _data(n):
    case = CASES["medium"]
    X, y = make_case_data(case, n_samples=n)
    net = case.network(n_threads=1)
    return net, X, y, net.init_weights(random_state=0)


@functools.cache
def _local(n):
    """The local bound objective's (loss, grad) at the benchmark's weights: the reference."""
    net, X, y, W = _data(n)
    return net.bind(X, y)(W)


def _check_equals_local(n, result, rtol=1e-12):
    (loss, grad), (ref_loss, ref_grad) = result, _local(n)
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss), (loss, ref_loss)
    np.testing.assert_allclose(grad, ref_grad, rtol=rtol, atol=rtol * np.abs(ref_grad).max())


@pytest.fixture(scope="module")
def client2():
    with _cluster(2) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("where", ["local", "dask-2-workers"])
@pytest.mark.parametrize("n", [10_000, LARGE_N], ids=["medium", "largen"])
def test_overhead(benchmark, client2, where, n):
    benchmark.group = f"overhead-{'medium' if n == 10_000 else 'largen'}"
    net, X, y, W = _data(n)
    if where == "local":
        benchmark(net.bind(X, y), W)
    else:
        with DaskObjective(client2, net, X, y) as obj:
            result = benchmark(obj, W)
        _check_equals_local(n, result)


@pytest.mark.parametrize("n_workers", [1, 2])
def test_scaling(benchmark, n_workers):
    benchmark.group = "scaling-largen"
    net, X, y, W = _data(LARGE_N)
    with _cluster(n_workers) as cluster, distributed.Client(cluster) as client:
        with DaskObjective(client, net, X, y) as obj:
            assert obj.n_partitions == n_workers
            result = benchmark(obj, W)
    _check_equals_local(LARGE_N, result)
