"""Shared set-up for the benchmarks: case data, the reference result and the peer objectives.

Peers compute the same loss and gradient as fastbp (``fastbp.cases``: cross-entropy with the L2
penalty λ = alpha / (2 n) on coefficients) so that their times compare like with like:

* ``sklearn``: ``MLPClassifier._loss_grad_lbfgs`` at the same weights (always available);
* ``torch``: PyTorch CPU autograd, float64 (skipped unless torch imports);
* ``jax``: ``jax.jit(jax.value_and_grad(loss))``, float64 (skipped unless jax imports); its
  loss function (``jax_loss``) also gives the second-order peers of ``bench_second_order.py``.

Every benchmark first checks its objective against the NumPy backend at the same weights, so a
peer that computed something else would fail rather than look fast.

Option ``--bench-cases=seed4layer,medium`` keeps only those cases (any test parametrized over
``case_name``).

Performance tracking (``benchmarks/tracking.py``; README, "Tracking performance")
-------------------------------------------------------------------------------------
Absolute times do not travel between machines; a speed-up over a peer measured in the same run
does. A benchmark gets such ratios by naming its role, with one line::

    benchmark.group = "fit: medium"          # the benchmarks it is compared with share its group
    benchmark.extra_info.update(impl="cython", ratio_to=["sklearn", "numpy", "jax"])

* ``impl``: what this benchmark runs (a fastbp backend, ``"sklearn"``, ``"jax"``, ...). Within a
  group, one benchmark per ``impl`` (and ``variant``) is a peer the others can be compared to; if
  two could be, the ratio to that peer is left out and the session's end says so.
* ``ratio_to``: the ``impl`` names to compare with. When the run is saved (``--benchmark-json``,
  ``--benchmark-autosave``), ``extra_info["ratio"][peer]`` = median of the peer / median of this
  benchmark (above 1: faster). A peer that did not run (``-k``, not installed) is left out of
  ``ratio``, never guessed; the ratios are computed at the end of the session, so test order and
  selection do not matter.
* ``variant`` (optional): a setting that tells apart benchmarks of the same ``impl`` in a group
  (``"float32"``, ``"blas-1"``). The peer with the same variant is used if there is one, else the
  peer without a variant (float32 kernels are compared with float64 scikit-learn).

The saved run's ``machine_info["summary"]`` describes the machine (``tracking.machine_summary``).
Neither hook runs under ``--benchmark-disable`` (nothing is saved), so CI writes no files.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import fastbp
from fastbp.cases import CASES, make_case_data

sys.path.insert(0, os.path.dirname(__file__))  # benchmarks/tracking.py, whatever pytest's import mode
import tracking  # noqa: E402

PEERS = ("sklearn", "torch", "jax")


def pytest_addoption(parser):
    parser.addoption(
        "--bench-cases",
        default=None,
        help=f"comma-separated benchmark cases to run (default: all of {', '.join(CASES)})",
    )


def pytest_collection_modifyitems(config, items):
    wanted = config.getoption("--bench-cases")
    if not wanted:
        return
    wanted = {c.strip() for c in wanted.split(",") if c.strip()}
    unknown = wanted - set(CASES)
    if unknown:
        raise pytest.UsageError(f"--bench-cases: unknown case(s) {sorted(unknown)}; choose from {list(CASES)}")
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = params.get("case_name")
        (drop if case is not None and case not in wanted else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# ------------------------------------------------------------------------------- tracking


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add the machine summary (CPU, vector extensions, BLAS kernel and threads, versions, commit)."""
    machine_info["summary"] = tracking.machine_summary()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Fill ``extra_info["ratio"]`` from the medians of the run being saved (see the top of this file)."""
    for problem in tracking.add_ratios(output_json["benchmarks"]):
        _say(config, f"benchmark ratios: {problem}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_benchmark_compare_machine_info(config, benchmarksession, machine_info, compared_benchmark):
    """Say in plain words when ``--benchmark-compare`` compares runs of different machines.

    pytest-benchmark itself warns, dumping both dicts, whenever the machine_info differs at all;
    the summary's commit and load average differ by design (the point is to compare commits), so
    they are copied into the loaded run's summary (in memory) before that check runs.
    """
    saved = (compared_benchmark.get("machine_info") or {}).get("summary")
    current = machine_info.get("summary")
    same, why = tracking.same_machine(saved, current)
    if not same:
        _say(config, f"--benchmark-compare: not the same machine ({why}); absolute times do not compare, "
                     "the ratios do: python benchmarks/report.py --compare OLD NEW")
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in tracking.PER_RUN_FIELDS:
            saved[key] = current.get(key)
    yield


def _say(config, text):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fastbp: {text}", yellow=True)
    else:
        print(f"fastbp: {text}", file=sys.stderr)


# ------------------------------------------------------------------------------- case data


@functools.cache
def case_data(case_name):
    """``(case, X, y, W0)``: the case's deterministic data and fastbp's initial weights."""
    case = CASES[case_name]
    X, y = make_case_data(case)
    W0 = case.network(backend="numpy").init_weights(random_state=0)
    for a in (X, y, W0):
        a.setflags(write=False)
    return case, X, y, W0


@functools.cache
def reference(case_name):
    """The NumPy backend's (loss, grad) at W0: what every other objective must reproduce."""
    case, X, y, W0 = case_data(case_name)
    return case.network(backend="numpy").loss_and_grad(W0, X, y)


def check_same(case_name, loss, grad, rtol=1e-8):
    """Fail unless (loss, grad) is the reference's to ``rtol`` (relative, gradient by its norm)."""
    ref_loss, ref_grad = reference(case_name)
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss), (loss, ref_loss)
    assert np.linalg.norm(grad - ref_grad) <= rtol * np.linalg.norm(ref_grad)


# ----------------------------------------------------------------------------------- peers


def class_subset(y, n_classes, per_class=5):
    """Indices of a few samples of every class (to initialise an estimator cheaply)."""
    return np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(n_classes)])


def sklearn_estimator(case, X, y, **params):
    """An ``MLPClassifier`` for ``case`` whose fit state (layout, binarizer, out_activation_) is
    set: fitted for one iteration on a few samples of every class."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    est = MLPClassifier(
        hidden_layer_sizes=case.layer_sizes[1:-1],
        activation=case.activation,
        alpha=case.alpha,
        solver="lbfgs",
        max_iter=1,
        random_state=0,
        **params,
    )
    idx = class_subset(y, case.n_classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X[idx], y[idx])
    assert est.out_activation_ == case.output
    return est


def sklearn_objective(case, X, y):
    """``W -> (loss, grad)`` through scikit-learn's own ``_loss_grad_lbfgs``, set up as
    ``_fit_lbfgs`` does (work lists allocated once, labels binarized once)."""
    est = sklearn_estimator(case, X, y)
    Y = est._label_binarizer.transform(y).astype(bool)
    units = list(case.layer_sizes)
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(units) - 1)
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]

    def objective(W):
        return est._loss_grad_lbfgs(W, X, Y, None, activations, deltas, coef_grads, intercept_grads)

    return objective


def _offsets(case):
    net = case.network(backend="numpy")
    layout = net.layout
    return layout.coef_offsets.tolist(), layout.intercept_offsets.tolist(), layout.coef_shapes, layout.n_coef


def torch_objective(case, X, y):
    """PyTorch CPU autograd in float64: the same forward pass, loss and L2 penalty."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    co, io, shapes, n_coef = _offsets(case)
    act = {"logistic": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "identity": lambda a: a}[case.activation]
    Xt = torch.from_numpy(np.array(X))
    n, L, l2 = X.shape[0], len(shapes), case.l2
    if case.output == "logistic":
        Tt = torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    else:
        yt = torch.from_numpy(np.array(y, dtype=np.int64))

    def objective(W):
        Wt = torch.tensor(W, dtype=torch.float64, requires_grad=True)
        z = Xt
        for i in range(L):
            z = torch.addmm(Wt[io[i] : io[i + 1]], z, Wt[co[i] : co[i + 1]].view(shapes[i]))
            if i < L - 1:
                z = act(z)
        if case.output == "logistic":
            data = F.binary_cross_entropy_with_logits(z, Tt, reduction="sum") / n
        else:
            data = F.cross_entropy(z, yt)
        coef = Wt[:n_coef]
        loss = data + l2 * torch.dot(coef, coef)
        loss.backward()
        return loss.item(), Wt.grad.numpy()

    return objective


def jax_loss(case, X, y):
    """``(jax, loss)``: the case's loss and L2 penalty as a JAX function of W, float64 (x64 on);
    skips the test unless jax imports."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    co, io, shapes, n_coef = _offsets(case)
    act = {"logistic": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda a: a}[case.activation]
    n, L, l2 = X.shape[0], len(shapes), case.l2
    Xj = jnp.asarray(X, dtype=jnp.float64)
    if case.output == "logistic":
        T = jnp.asarray(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    else:
        T = jnp.asarray(np.eye(case.layer_sizes[-1])[y])

    def loss_fn(W):
        z = Xj
        for i in range(L):
            z = z @ W[co[i] : co[i + 1]].reshape(shapes[i]) + W[io[i] : io[i + 1]]
            if i < L - 1:
                z = act(z)
        if case.output == "logistic":
            data = jnp.sum(jnp.logaddexp(0.0, z) - T * z) / n
        else:
            data = -jnp.sum(T * jax.nn.log_softmax(z, axis=1)) / n
        coef = W[:n_coef]
        return data + l2 * jnp.dot(coef, coef)

    return jax, loss_fn


def jax_objective(case, X, y):
    """``jax.jit(jax.value_and_grad(loss))`` in float64: the same loss and L2 penalty."""
    jax, loss_fn = jax_loss(case, X, y)
    jnp = jax.numpy
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))

    def objective(W):
        loss, grad = value_and_grad(jnp.asarray(W))
        return float(loss), np.asarray(grad)

    return objective


def objective(impl, case_name, dtype=np.float64):
    """The callable to time for ``impl``: a fastbp backend's bound objective, or a peer."""
    case, X, y, _ = case_data(case_name)
    if impl == "sklearn":
        return sklearn_objective(case, X, y)
    if impl == "torch":
        return torch_objective(case, X, y)
    if impl == "jax":
        return jax_objective(case, X, y)
    return case.network(backend=impl, dtype=dtype).bind(X, y)


@pytest.fixture(scope="session")
def bench():
    """The helpers above, as a fixture (benchmark modules do not import conftest)."""
    return SimpleNamespace(
        case_data=case_data,
        reference=reference,
        check_same=check_same,
        objective=objective,
        sklearn_estimator=sklearn_estimator,
        jax_loss=jax_loss,
        backends=fastbp.available_backends(),
    )
