"""One call of the objective, ``f(W) -> (loss, grad)``, on the four named cases.

For every available fastbp backend (the bound objective of ``Network.bind``, float64, and float32
on ``large``) and the peers: scikit-learn's ``_loss_grad_lbfgs`` at the same weights, PyTorch CPU
autograd and JAX ``jit(value_and_grad)`` when they import. One group per case, so the ratios read
off directly: ``pytest benchmarks/bench_objective.py --benchmark-only``; a saved run holds each
one's speed-up over scikit-learn, the NumPy backend and JAX in ``extra_info["ratio"]`` (float32:
over the float32 NumPy backend and float64 scikit-learn and JAX).
"""

import time

import numpy as np
import pytest

import fastbp
from fastbp.cases import CASES

IMPLS = (*fastbp.available_backends(), "sklearn", "torch", "jax")
RATIO_TO = ["sklearn", "numpy", "jax"]  # extra_info["ratio"] in saved runs: see benchmarks/conftest.py


SETTLE_S = 0.3
WARMUP_S = 0.2


def run_checked(benchmark, bench, f, W0, case_name, rtol):
    """Time ``f(W0)`` after checking that it computes the reference loss and gradient.

    Measuring, a first untimed call warms up (JIT, thread pools) and is the one checked; then a
    pause of ``SETTLE_S`` lets the thread pools of the benchmark before (OpenBLAS's spin for about
    0.1 s after a threaded call, OpenMP's and XLA's a little) go to sleep, so they do not hold a
    core while this one is timed, and ``WARMUP_S`` of untimed calls let this one's threads settle
    (Linux first runs a thread woken by the caller on the caller's core; after another library's
    threads had run, the kernels' workers were seen to need tens of milliseconds to get a core of
    their own). What is timed is the steady state an optimizer's hundreds of calls see. Under
    ``--benchmark-disable`` (CI) the single call the fixture makes is the one checked.
    """
    if benchmark.disabled:
        loss, grad = benchmark(f, W0)
    else:
        loss, grad = f(W0)
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        while time.perf_counter() - start < WARMUP_S:
            f(W0)
        benchmark(f, W0)
    bench.check_same(case_name, loss, np.asarray(grad), rtol=rtol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case_name", list(CASES))
def test_objective(benchmark, bench, case_name, impl):
    case, X, y, W0 = bench.case_data(case_name)
    f = bench.objective(impl, case_name)
    benchmark.group = case_name
    benchmark.extra_info.update(impl=impl, ratio_to=RATIO_TO, dtype="float64", case=case_name, n_samples=X.shape[0],
                                layer_sizes=list(case.layer_sizes))
    run_checked(benchmark, bench, f, W0, case_name, rtol=1e-8)


@pytest.mark.parametrize("impl", fastbp.available_backends())
@pytest.mark.parametrize("case_name", ["large"])
def test_objective_float32(benchmark, bench, case_name, impl):
    case, X, y, W0 = bench.case_data(case_name)
    f = bench.objective(impl, case_name, dtype=np.float32)
    benchmark.group = case_name
    benchmark.extra_info.update(impl=impl, variant="float32", ratio_to=RATIO_TO, dtype="float32", case=case_name,
                                n_samples=X.shape[0], layer_sizes=list(case.layer_sizes))
    run_checked(benchmark, bench, f, W0, case_name, rtol=1e-4)  # float32 compute, float64 accumulation
