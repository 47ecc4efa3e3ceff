"""Per-call cost of fastbp.distributed.DaskObjective against the local bound objective.

Run: ``python -m pytest benchmarks/bench_distributed.py --benchmark-group-by=group``.

Groups: ``overhead-medium`` and ``overhead-largen`` time one call of the local objective
(``net.bind``) and of the distributed one on a 2-worker loopback LocalCluster; the difference is
the per-call overhead (task submission, W out, one gradient per partition back).
``scaling-largen`` times the distributed call with 1 and 2 worker processes. On a 2-core machine
the 2-worker figure can at best halve the kernel time and also competes with the client and the
scheduler for the same cores, so it shows the mechanism, not a cluster's speed-up.
"""

import numpy as np
import pytest

from fastbp.cases import CASES, make_case_data

distributed = pytest.importorskip("distributed")
from fastbp.distributed import DaskObjective  # noqa: E402

#: the medium network on 100 000 samples: large n, where a cluster could pay off
LARGE_N = 100_000


def _cluster(n_workers):
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )


def _data(n):
    case = CASES["medium"]
    X, y = make_case_data(case, n_samples=n)
    net = case.network(n_threads=1)
    return net, X, y, net.init_weights(random_state=0)


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
            loss, grad = benchmark(obj, W)
        np.testing.assert_allclose(loss, net.bind(X, y)(W)[0], rtol=1e-12)


@pytest.mark.parametrize("n_workers", [1, 2])
def test_scaling(benchmark, n_workers):
    benchmark.group = "scaling-largen"
    net, X, y, W = _data(LARGE_N)
    with _cluster(n_workers) as cluster, distributed.Client(cluster) as client:
        with DaskObjective(client, net, X, y) as obj:
            assert obj.n_partitions == n_workers
            benchmark(obj, W)
