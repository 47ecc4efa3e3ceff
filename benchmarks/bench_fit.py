"""End-to-end fit: 50 L-BFGS-B iterations from the same W0, fastbp against scikit-learn.

fastbp: ``minimize(net.bind(X, y), W0, jac=True, method="L-BFGS-B")`` (binding, i.e. validation,
included in the time). scikit-learn: ``MLPClassifier(solver="lbfgs", max_iter=50)`` with the same
architecture, activation, alpha and tol (0: a fixed number of iterations), started from the
same W0 (``warm_start`` with ``coefs_`` and ``intercepts_`` set to W0 before every round), so both
run the same optimizer on the same function from the same point. Groups ``fit: <case>``;
extra_info holds the iterations made, the final loss and, in a saved run, the speed-up over the
scikit-learn and NumPy-backend fits under the same BLAS setting (``ratio``).

Each fit runs twice: with the default BLAS thread pool, and with OpenBLAS limited to one thread
(``threadpool_limits(1, "blas")`` around the whole fit, for fastbp and scikit-learn alike). On a
2-core machine L-BFGS-B's own small BLAS calls wake the idle OpenBLAS thread at every iteration,
which costs milliseconds per function evaluation and swamps lab-sized fits (seed4layer: about
0.57 s with the default pool against 0.013 s with one thread, measured while planning).
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

import fastbp

MAXITER = 50
TOL = 0.0  # scikit-learn passes tol to L-BFGS-B as gtol; 0 runs the full 50 iterations (the seed4layer
# case otherwise stops at its log 2 plateau after 2 iterations, where |grad| < scikit-learn's 1e-4)
MAXFUN = 15_000  # scikit-learn's default max_fun
CASES = ("seed4layer", "multiclass", "medium")


@pytest.mark.parametrize("blas_threads", [None, 1], ids=["blas-default", "blas-1"])
@pytest.mark.parametrize("impl", (*fastbp.available_backends(), "sklearn"))
@pytest.mark.parametrize("case_name", CASES)
def test_fit(benchmark, bench, case_name, impl, blas_threads):
    with threadpool_limits(blas_threads, user_api="blas"):
        _test_fit(benchmark, bench, case_name, impl)
    # variant: the ratios compare fits under the same BLAS setting (benchmarks/conftest.py)
    benchmark.extra_info.update(blas_threads=blas_threads or "default", variant=f"blas-{blas_threads or 'default'}")


def _test_fit(benchmark, bench, case_name, impl):
    case, X, y, W0 = bench.case_data(case_name)
    benchmark.group = f"fit: {case_name}"

    if impl == "sklearn":
        est = bench.sklearn_estimator(case, X, y, tol=TOL, max_fun=MAXFUN)
        est.set_params(warm_start=True, max_iter=MAXITER)
        net = case.network(backend="numpy")

        def setup():
            coefs, intercepts = net.unpack(W0.copy())
            est.coefs_, est.intercepts_ = list(coefs), list(intercepts)
            return (), {}

        def fit():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y)
            return est.n_iter_, est.loss_

        rounds = 1 if benchmark.disabled else 3
        n_iter, final_loss = benchmark.pedantic(fit, setup=setup, rounds=rounds, iterations=1)
    else:
        net = case.network(backend=impl)
        net.bind(X[:10], y[:10])(W0)  # warm-up (JIT), outside the time

        def fit():
            res = minimize(net.bind(X, y), W0, jac=True, method="L-BFGS-B",
                           options={"maxiter": MAXITER, "gtol": TOL, "maxfun": MAXFUN})
            return res.nit, res.fun

        n_iter, final_loss = benchmark.pedantic(fit, rounds=1 if benchmark.disabled else 3, iterations=1)

    initial_loss = bench.reference(case_name)[0]
    benchmark.extra_info.update(impl=impl, ratio_to=["sklearn", "numpy"], case=case_name, n_iter=int(n_iter),
                                final_loss=float(final_loss), initial_loss=initial_loss)
    assert 0 < n_iter <= MAXITER
    assert final_loss < initial_loss
    assert np.isfinite(final_loss)
