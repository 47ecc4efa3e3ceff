"""Estimator fit: ``fastbp.MLPClassifier`` against ``sklearn.neural_network.MLPClassifier(solver="lbfgs")``.

Identical settings on the lab-sized cases of :mod:`fastbp.cases` (same hidden layers, activation,
alpha, tol, max_iter, max_fun and random_state, so the same initial weights and, where
scikit-learn's probability clipping does not bite, the same L-BFGS path). Everything a user pays
for is timed: validation, label binarizing, initialisation and the L-BFGS-B run. One thread for
both (``n_threads=1``; BLAS limited to one thread with threadpoolctl): lab-sized networks gain
nothing from threads, and a shared machine makes threaded timings noise.

Groups ``estimator fit: <case>``; ``extra_info`` holds ``n_iter_``, ``loss_`` and, in a saved run, the
speed-up over scikit-learn (``ratio``, see ``benchmarks/conftest.py``). Standalone: needs
no ``conftest.py``. ``python benchmarks/bench_estimators.py`` prints the speed-up table and where a
fastbp fit spends its time (kernel, scipy's L-BFGS-B, estimator overhead).
"""

from __future__ import annotations

import time
import warnings
from unittest import mock

import numpy as np
import pytest
from scipy.optimize import minimize as _minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from threadpoolctl import threadpool_limits

import fastbp
from fastbp.cases import CASES, make_case_data

BENCH_CASES = ("seed4layer", "multiclass")
MAX_ITER = 200  # scikit-learn's default
RANDOM_STATE = 0


def _params(case):
    return dict(
        solver="lbfgs",  # sgd and adam: bench_stochastic.py
        hidden_layer_sizes=case.layer_sizes[1:-1],
        activation=case.activation,
        alpha=case.alpha,
        max_iter=MAX_ITER,
        random_state=RANDOM_STATE,
    )


def make_estimator(impl, case_name, backend="auto"):
    """The estimator ``impl`` ("fastbp" or "sklearn") for a case, with the shared settings."""
    case = CASES[case_name]
    if impl == "sklearn":
        return SkMLPClassifier(**_params(case))
    return fastbp.MLPClassifier(backend=backend, n_threads=1, **_params(case))


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    # set once, outside the timings: threadpool_limits itself costs milliseconds per call
    with threadpool_limits(1):
        yield


@pytest.mark.parametrize("impl", ["fastbp", "sklearn"])
@pytest.mark.parametrize("case_name", BENCH_CASES)
def test_estimator_fit(benchmark, case_name, impl):
    X, y = make_case_data(case_name)
    est = make_estimator(impl, case_name)
    _fit(est, X, y)  # warm-up: JIT compilation, imports
    benchmark.group = f"estimator fit: {case_name}"
    benchmark.pedantic(_fit, args=(est, X, y), rounds=5, iterations=1)
    assert est.n_iter_ > 0 and np.isfinite(est.loss_)
    # the same work: as many iterations as scikit-learn. The losses are not compared: after 200
    # iterations the paths part (scikit-learn's probability clipping, round-off of a different
    # kernel); tests/test_estimators.py holds the fits equal where they are comparable.
    ref = _fit(make_estimator("sklearn", case_name), X, y) if impl == "fastbp" else est
    assert est.n_iter_ == ref.n_iter_
    if impl == "fastbp":
        assert est.loss_ < 0.5 * est.loss_curve_[0]  # it did descend
    benchmark.extra_info.update(impl=impl, ratio_to=["sklearn"], n_iter=int(est.n_iter_), loss=float(est.loss_))


# ----------------------------------------------------------------------------- the report
def _median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def profile_fit(case_name, repeat=9, backend="auto"):
    """Medians (seconds) of the whole fits and of the parts of a fastbp fit.

    * ``sklearn``, ``fastbp``: whole ``fit`` calls; ``ratio``: median of sklearn/fastbp over
      interleaved pairs.
    * ``minimize``: the ``scipy.optimize.minimize`` call inside fastbp's fit.
    * ``kernel``: the time inside the objective calls of that run (the check of W included).
    * ``lbfgs`` = minimize − kernel: scipy's L-BFGS-B (Fortran + its Python driver).
    * ``overhead`` = fastbp − minimize: validation, label binarizing, init, Network set-up.
    """
    X, y = make_case_data(case_name)
    sk = make_estimator("sklearn", case_name)
    fb = make_estimator("fastbp", case_name, backend)
    _fit(sk, X, y), _fit(fb, X, y)
    # interleaved, so that a busy machine's drift hits both alike; the ratio is the median of
    # the per-pair ratios
    t_sk, t_fb = [], []
    for _ in range(repeat):
        t_sk.append(_median_time(lambda: _fit(sk, X, y), 1))
        t_fb.append(_median_time(lambda: _fit(fb, X, y), 1))
    out = {
        "sklearn": float(np.median(t_sk)),
        "fastbp": float(np.median(t_fb)),
        "ratio": float(np.median(np.array(t_sk) / np.array(t_fb))),
        "n_iter_sklearn": sk.n_iter_,
        "n_iter_fastbp": fb.n_iter_,
        "backend": fb.backend_,
    }

    # the real fits again, with scipy.optimize.minimize (which the estimator calls) timed, and
    # the objective it is handed timed inside it
    parts = []

    def timed_minimize(fun, x0, **kwargs):
        inside = [0.0, 0]

        def timed(W):
            t0 = time.perf_counter()
            r = fun(W)
            inside[0] += time.perf_counter() - t0
            inside[1] += 1
            return r

        t0 = time.perf_counter()
        res = _minimize(timed, x0, **kwargs)
        parts.append((time.perf_counter() - t0, inside[0], inside[1], res.nit))
        return res

    with mock.patch("scipy.optimize.minimize", timed_minimize):
        for _ in range(repeat):
            _fit(fb, X, y)
    total, kernel, nfev, nit = (float(np.median(c)) for c in zip(*parts))
    out.update(minimize=total, kernel=kernel, lbfgs=total - kernel, overhead=out["fastbp"] - total,
               nfev=nfev, nit=nit)
    return out


def main():
    print(f"fastbp backends: {fastbp.available_backends()}; one thread each; medians of 9 interleaved fits\n")
    rows = []
    with threadpool_limits(1):
        for name in BENCH_CASES:
            for backend in ("auto", *fastbp.available_backends()):
                p = profile_fit(name, backend=backend)
                p["label"] = f"auto ({p['backend']})" if backend == "auto" else backend
                rows.append((name, p))
    print("| case | backend | sklearn fit | fastbp fit | speed-up | n_iter (sk/fb) |")
    print("|---|---|---|---|---|---|")
    for name, p in rows:
        print(f"| {name} | {p['label']} | "
              f"{p['sklearn'] * 1e3:.1f} ms | {p['fastbp'] * 1e3:.1f} ms | {p['ratio']:.2f}x | "
              f"{p['n_iter_sklearn']}/{p['n_iter_fastbp']} |")
    print("\nWhere a fastbp fit's time goes (µs per L-BFGS iteration):\n")
    print("| case | backend | sklearn fit | fastbp fit | kernel (objective calls) | scipy L-BFGS-B driver | "
          "estimator overhead | f evals/iter |")
    print("|---|---|---|---|---|---|---|---|")
    for name, p in rows:
        it = p["nit"]
        print(f"| {name} | {p['label']} | {p['sklearn'] / p['n_iter_sklearn'] * 1e6:.0f} | "
              f"{p['fastbp'] / p['n_iter_fastbp'] * 1e6:.0f} | {p['kernel'] / it * 1e6:.0f} | "
              f"{p['lbfgs'] / it * 1e6:.0f} | {p['overhead'] / it * 1e6:.0f} | {p['nfev'] / it:.2f} |")

    print("\nAs shipped, without any thread limit (BLAS and kernel threads at their defaults):\n")
    print("| case | sklearn fit | fastbp fit (auto) | speed-up |")
    print("|---|---|---|---|")
    for name in BENCH_CASES:
        X, y = make_case_data(name)
        case = CASES[name]
        sk = SkMLPClassifier(**_params(case))
        fb = fastbp.MLPClassifier(**_params(case))
        _fit(sk, X, y), _fit(fb, X, y)
        t_sk, t_fb = [], []
        for _ in range(9):
            t_sk.append(_median_time(lambda: _fit(sk, X, y), 1))  # noqa: B023 (used at once)
            t_fb.append(_median_time(lambda: _fit(fb, X, y), 1))  # noqa: B023
        ratio = np.median(np.array(t_sk) / np.array(t_fb))
        print(f"| {name} | {np.median(t_sk) * 1e3:.1f} ms | {np.median(t_fb) * 1e3:.1f} ms | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
