"""Stochastic fits: ``fastbp.MLPClassifier(solver="adam"/"sgd")`` against scikit-learn's.

The same arguments for both: scikit-learn's defaults (``learning_rate_init=0.001``, ``tol=1e-4``,
``n_iter_no_change=10``, ``alpha=1e-4``, ``shuffle=True``, momentum 0.9 with Nesterov's for sgd)
with the case's hidden layers and activation, ``random_state=0``, ``batch_size`` 200 or 32, and
``max_iter`` scikit-learn's 200 on the lab's networks (``seed4layer``, ``multiclass`` of
:mod:`fastbp.cases`), capped on the two larger problems (``medium``: [20, 64, 64, 1], n = 10 000;
scikit-learn's ``load_digits``, shipped with it, scaled to [0, 1], ``hidden_layer_sizes=(100,)``,
relu) so that a scikit-learn fit takes seconds, not minutes. Both stop by the same rule at the
same epoch: each fastbp fit is first checked to follow scikit-learn's path (the same ``n_iter_``,
``loss_curve_`` to 1e-6), so a fast fit that computed something else fails instead. One thread
for both (``n_threads=1``; BLAS limited to one thread). Everything a user pays for is timed:
validation, label binarizing, initialisation and the epochs.

Issue 11's targets: ≥ 10x scikit-learn on the lab's networks (batch 200 and 32), ≥ 3x on medium
and digits. Each epoch is one compiled call (``kernel.run_epoch``) in the numba and cython
backends.

Groups ``estimator fit <solver> b<batch>: <case>``, one benchmark per compiled backend and one for
scikit-learn (``impl``), the backends' ``ratio_to=["sklearn"]`` (the speed-up, in a saved run; see
``benchmarks/conftest.py``); ``extra_info`` holds ``n_iter`` and ``loss``. Under
``--benchmark-disable`` (CI) each runs two epochs once, to keep the code working.

``python benchmarks/bench_stochastic.py`` prints the table (interleaved fits, medians and the
median of the per-round ratios); ``--quick`` fewer rounds; ``--cases seed4layer,digits`` some cases;
``--default-threads`` each library with its default threads instead of one (fastbp's
``n_threads=None``: every core; scikit-learn's BLAS as installed), scikit-learn also timed held to
one BLAS thread and each speed-up taken against the faster of the two (its BLAS threads slow
scikit-learn's small products down on some problems); ``--batch-bound`` the time of
one 200-sample batch of ``medium`` and ``digits`` (see :func:`batch_bound`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import warnings

import numpy as np
import pytest
from bench_estimators import _median_time
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from threadpoolctl import threadpool_limits

import fastbp
from fastbp.cases import CASES, make_case_data

BENCH_CASES = ("seed4layer", "multiclass", "medium", "digits")
SOLVERS = ("adam", "sgd")
BATCH_SIZES = (200, 32)
#: max_iter per case: scikit-learn's default on the lab's networks, capped on the larger problems
MAX_ITER = {"seed4layer": 200, "multiclass": 200, "medium": 10, "digits": 30}
#: seconds of sleep before each timed fit of the table: threads a previous fit woke (OpenBLAS's,
#: which spin after a call when not held to one thread; the kernels' pools) go back to sleep
SETTLE_S = 0.3
#: the compiled backends timed (each epoch one call)
BACKENDS = tuple(b for b in ("cython", "numba") if b in fastbp.available_backends())


def case_data(name):
    """``(X, y, hidden_layer_sizes, activation)`` of a benchmark case."""
    if name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        return X / 16.0, y, (100,), "relu"
    case = CASES[name]
    X, y = make_case_data(case)
    return X, y, case.layer_sizes[1:-1], case.activation


def make_estimator(impl, name, solver, batch_size, max_iter=None, n_threads=1):
    """scikit-learn's estimator (``impl="sklearn"``) or fastbp's on backend ``impl`` (with
    ``n_threads``; None: every core), with the shared arguments (scikit-learn's defaults but for
    those that define the case)."""
    _, _, hidden, activation = case_data(name)
    params = dict(hidden_layer_sizes=hidden, activation=activation, solver=solver, batch_size=batch_size,
                  max_iter=MAX_ITER[name] if max_iter is None else max_iter, random_state=0)
    if impl == "sklearn":
        return SkMLPClassifier(**params)
    return fastbp.MLPClassifier(backend=impl, n_threads=n_threads, **params)


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def check_same_path(fb, sk):
    """fastbp's fit took scikit-learn's path: the same epochs and loss curve (to 1e-6)."""
    assert fb.n_iter_ == sk.n_iter_, (fb.n_iter_, sk.n_iter_)
    rel = np.abs(np.array(fb.loss_curve_) - sk.loss_curve_) / np.abs(sk.loss_curve_)
    assert rel.max() < 1e-6, rel.max()


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.mark.parametrize("impl", [*BACKENDS, "sklearn"])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case_name", BENCH_CASES)
def test_stochastic_fit(benchmark, case_name, solver, batch_size, impl):
    X, y, *_ = case_data(case_name)
    max_iter = 2 if benchmark.disabled else None  # CI: the code runs, briefly
    est = make_estimator(impl, case_name, solver, batch_size, max_iter)
    if impl != "sklearn":  # the same path as scikit-learn's, checked once outside the timing
        sk = make_estimator("sklearn", case_name, solver, batch_size, max_iter)
        check_same_path(_fit(est, X, y), _fit(sk, X, y))
    benchmark.group = f"estimator fit {solver} b{batch_size}: {case_name}"
    benchmark.pedantic(_fit, args=(est, X, y), rounds=1 if benchmark.disabled else 3, iterations=1)
    assert est.n_iter_ <= est.max_iter and np.isfinite(est.loss_)
    benchmark.extra_info.update(impl=impl, ratio_to=[] if impl == "sklearn" else ["sklearn"], n_iter=int(est.n_iter_),
                                loss=float(est.loss_))


def test_batch_bound(benchmark):
    """The per-batch comparison runs (its timings are for ``--batch-bound``, not asserted)."""
    benchmark.group = "batch bound"
    times = benchmark.pedantic(batch_bound, args=("digits",), kwargs={"repeat": 5}, rounds=1, iterations=1)
    assert set(times) == {*(f"fastbp {b} call" for b in BACKENDS), "NumPy products alone",
                          *(f"scikit-learn {s}, per batch" for s in SOLVERS)}
    assert all(t > 0 for t in times.values())


#: scikit-learn held to one BLAS thread, timed beside its default in ``--default-threads`` runs
SKLEARN_ONE = "sklearn, 1 BLAS thread"


def test_default_threads_profile_takes_the_faster_scikit_learn(benchmark):
    """``--default-threads`` times scikit-learn twice a round (its default BLAS threads, and one)
    and takes each backend's speed-up against the faster of the two (one round here: the ratio
    is that of the round's times)."""
    benchmark.group = "default threads profile"
    epochs, t, r = benchmark.pedantic(profile, args=("seed4layer", "adam", 200, 1), kwargs={"sklearn_one_thread": True},
                                      rounds=1, iterations=1)
    assert set(t) == {"sklearn", SKLEARN_ONE, *BACKENDS} and set(r) == set(BACKENDS) and epochs > 0
    for b in BACKENDS:
        assert r[b] == min(t["sklearn"], t[SKLEARN_ONE]) / t[b]


def profile(name, solver, batch_size, repeat, impls=BACKENDS, n_threads=1, sklearn_one_thread=False):
    """Interleaved whole fits (scikit-learn, then each backend with ``n_threads``, ``repeat``
    rounds). With ``sklearn_one_thread`` scikit-learn is also timed held to one BLAS thread
    (``SKLEARN_ONE``), and each round's speed-ups are taken against the faster of its two fits.

    Returns ``(epochs, {impl: median seconds}, {backend: median of the per-round ratios})``.
    """
    X, y, *_ = case_data(name)
    ests = {impl: make_estimator(impl, name, solver, batch_size, n_threads=n_threads) for impl in ("sklearn", *impls)}
    if sklearn_one_thread:
        ests[SKLEARN_ONE] = make_estimator("sklearn", name, solver, batch_size)
    sk = _fit(ests["sklearn"], X, y)
    for impl in impls:
        check_same_path(_fit(ests[impl], X, y), sk)
    times = {impl: [] for impl in ests}
    for _ in range(repeat):
        for impl, est in ests.items():
            with threadpool_limits(1) if impl == SKLEARN_ONE else contextlib.nullcontext():
                time.sleep(SETTLE_S)  # the previous fit's BLAS or pool threads stop spinning first
                times[impl].append(_time_fit(est, X, y))
    sk_t = np.array(times["sklearn"])
    if sklearn_one_thread:
        sk_t = np.minimum(sk_t, times[SKLEARN_ONE])
    ratios = {impl: float(np.median(sk_t / np.array(times[impl]))) for impl in impls}
    return sk.n_iter_, {impl: float(np.median(t)) for impl, t in times.items()}, ratios


def batch_bound(name, batch_size=200, repeat=3000):
    """One thread, one batch of ``batch_size`` samples of case ``name``: each compiled backend's
    kernel call (loss and gradient, activations included) against NumPy's time for the batch's
    matrix products alone (forward ``A W``, backward ``Aᵀ δ`` and ``δ Wᵀ``, on OpenBLAS) and
    scikit-learn's time per batch in a fit (its fit time over the batches it ran).

    Returns ``{label: median seconds}``. What scikit-learn spends besides its products (NumPy
    activations, loss, optimizer steps, Python) is what fastbp can save: a speed-up well above
    sklearn / products would need the batch faster than BLAS multiplies its matrices.
    """
    X, y, hidden, activation = case_data(name)
    Xb, yb = np.ascontiguousarray(X[:batch_size]), y[:batch_size]
    n_out = 1 if np.unique(y).size == 2 else np.unique(y).size
    sizes = [X.shape[1], *hidden, n_out]
    output = "logistic" if n_out == 1 else "softmax"

    def median(f):
        f()  # warm
        return _median_time(f, repeat)

    out = {}
    with threadpool_limits(1):
        for backend in BACKENDS:
            net = fastbp.Network(sizes, activation=activation, output=output, backend=backend, n_threads=1)
            objective, W = net.bind(Xb, yb), net.init_weights(random_state=0)
            out[f"fastbp {backend} call"] = median(functools.partial(objective, W))
        rng = np.random.default_rng(0)
        Ws = [rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]

        def products():  # the forward and backward products of one batch, nothing else
            A = [Xb]
            for Wl in Ws:
                A.append(A[-1] @ Wl)
            D = A[-1]
            for layer in range(len(Ws) - 1, -1, -1):
                A[layer].T @ D
                if layer > 0:
                    D = D @ Ws[layer].T

        out["NumPy products alone"] = median(products)
        for solver in SOLVERS:
            sk = make_estimator("sklearn", name, solver, batch_size)
            t = min(_time_fit(sk, X, y) for _ in range(3))
            out[f"scikit-learn {solver}, per batch"] = t / (sk.n_iter_ * -(-X.shape[0] // batch_size))
    return out


def _time_fit(est, X, y):
    t0 = time.perf_counter()
    _fit(est, X, y)
    return time.perf_counter() - t0


def _ms(t):
    return f"{t * 1e3:.0f} ms" if t >= 0.1 else f"{t * 1e3:.1f} ms"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--batch-bound" in argv:
        for name in ("medium", "digits"):
            for label, t in batch_bound(name).items():
                print(f"{name}: {label}: {t * 1e6:.0f} us")
        return
    repeat = 3 if "--quick" in argv else 7
    cases = BENCH_CASES
    if "--cases" in argv:
        cases = tuple(argv[argv.index("--cases") + 1].split(","))
    # --default-threads: each library as installed (fastbp's n_threads=None, every core;
    # scikit-learn's BLAS with its own thread count); else one thread each
    default_threads = "--default-threads" in argv
    threads = ("default threads (fastbp every core, BLAS its own count)" if default_threads
               else "n_threads=1, BLAS 1 thread")
    print(f"fastbp {fastbp.__version__}, backends {BACKENDS}, {threads}; "
          f"scikit-learn's defaults; medians of {repeat} interleaved fits\n")
    if default_threads:
        print("speed-up: against the faster of scikit-learn's two fits of each round, with its BLAS's\n"
              "default threads and held to one\n")
    head = " | ".join(f"fastbp {b} | speed-up" for b in BACKENDS)
    sk_head = "scikit-learn | scikit-learn, 1 BLAS thread" if default_threads else "scikit-learn"
    print(f"| case | solver | batch | epochs | {sk_head} | {head} |")
    print("|---|---|---:|---:|---:|" + "---:|" * default_threads + "---:|---:|" * len(BACKENDS))
    with contextlib.nullcontext() if default_threads else threadpool_limits(1):
        for name in cases:
            for solver in SOLVERS:
                for batch_size in BATCH_SIZES:
                    epochs, t, r = profile(name, solver, batch_size, repeat, n_threads=None if default_threads else 1,
                                           sklearn_one_thread=default_threads)
                    sk_cells = _ms(t["sklearn"]) + (f" | {_ms(t[SKLEARN_ONE])}" if default_threads else "")
                    cells = " | ".join(f"{_ms(t[b])} | {r[b]:.1f}x" for b in BACKENDS)
                    print(f"| {name} | {solver} | {batch_size} | {epochs} | {sk_cells} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
