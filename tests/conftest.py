"""Shared fixtures: the backend under test and small, deterministic problems.

Every cross-backend test takes the ``backend`` fixture, parametrized over every registered
backend: one that registers and imports here is held to every one of those tests with no new test
code, and one that does not load is skipped with fastbp's reason (never silently dropped).
"""

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastbp

sys.path.insert(0, os.path.dirname(__file__))  # tests/naive.py, tests/availability.py

from availability import REGISTERED, unavailable_reason  # noqa: E402

BACKENDS = fastbp.available_backends()

#: The compiled backends' second kernel path, reached by small test networks when the constant
#: (in the backend's module) from which a layer goes through BLAS is set to 1: Numba's
#: sample-major kernel (every product a gemm on tiles of rows) and Cython's BLAS layers.
WIDE_PATHS = {"numba-sample-major": ("numba", "BLAS_MIN_COEFS"), "cython-blas": ("cython", "BLAS_MIN_WEIGHTS")}


def backend_params(names=REGISTERED):
    """``names`` (backends or :data:`WIDE_PATHS`) as pytest params; one whose backend is
    unavailable here is skipped with the reason."""
    params = []
    for name in names:
        why = unavailable_reason(WIDE_PATHS[name][0] if name in WIDE_PATHS else name)
        params.append(pytest.param(name, marks=pytest.mark.skip(reason=why)) if why else name)
    return params


@pytest.fixture(params=backend_params())
def backend(request):
    """Every registered backend (an unavailable one skipped with its reason); a new backend is
    tested with no new code."""
    return request.param


def force_wide_path(monkeypatch, path):
    """Make the networks this test builds take ``path`` of :data:`WIDE_PATHS`; returns the
    backend name to build them with."""
    name, constant = WIDE_PATHS[path]
    module = sys.modules[type(fastbp.backends.get_backend(name)).__module__]
    monkeypatch.setattr(module, constant, 1)  # raises if the constant was renamed: update it above
    return name


@pytest.fixture(params=backend_params(REGISTERED + tuple(WIDE_PATHS)))
def kernel_path(request, monkeypatch):
    """Every backend's default kernel path and the compiled backends' wide (BLAS) paths; returns
    the backend name to build a Network with (a wide path is forced for this test only)."""
    if request.param in WIDE_PATHS:
        return force_wide_path(monkeypatch, request.param)
    return request.param


#: every backend but the NumPy reference: the compiled ones
COMPILED = tuple(name for name in REGISTERED if name != "numpy")


@pytest.fixture(params=backend_params(COMPILED))
def compiled_backend(request):
    """Every compiled backend (an unavailable one skipped with its reason)."""
    return request.param


@pytest.fixture(params=backend_params(COMPILED + tuple(WIDE_PATHS)))
def compiled_kernel_path(request, monkeypatch):
    """``kernel_path`` without the NumPy reference: each compiled backend's default and wide paths."""
    if request.param in WIDE_PATHS:
        return force_wide_path(monkeypatch, request.param)
    return request.param


def make_problem(layer_sizes, output, target="labels", n=7, seed=0, weighted=False, w_scale=1.0):
    """A small deterministic problem for ``layer_sizes`` with the given ``output``.

    ``target`` chooses the form of y: "labels" (0/1 for logistic, one per output; class ints of
    shape (n,) for softmax), "proba" (probabilities in [0, 1] for logistic; probability rows
    summing to 1 for softmax), "values" (reals, for identity) or "counts" (non-negative, zeros
    included, for exponential). y has shape (n,) for one output.

    Returns a namespace with X (n, n_in), y (as given to fastbp), T (the targets encoded as
    (n, n_out) float64, as the naive reference takes them), sw (None, or weights with one zero),
    and W (uniform in [-w_scale, w_scale], so that hidden units are neither linear nor saturated).
    """
    rng = np.random.default_rng(seed)
    n_in, m = layer_sizes[0], layer_sizes[-1]
    X = rng.standard_normal((n, n_in))
    if output == "softmax" and target == "labels":
        y = rng.integers(0, m, n)
        T = np.eye(m)[y]
    elif output == "softmax" and target == "proba":
        y = rng.dirichlet(np.ones(m), n)
        T = y
    elif output == "logistic" and target == "labels":
        T = rng.integers(0, 2, (n, m)).astype(np.float64)
        y = T.astype(np.int64)
    elif output == "logistic" and target == "proba":
        T = rng.uniform(0, 1, (n, m))
        y = T
    elif output == "identity" and target == "values":
        T = rng.standard_normal((n, m))
        y = T
    elif output == "exponential" and target == "counts":
        # Poisson counts with zeros among them (t log t = 0 there), and one non-integer rate
        T = rng.poisson(1.5, (n, m)).astype(np.float64)
        T[0, :] = 0.0
        T[1, 0] = 0.25
        y = T
    else:
        raise ValueError(f"no {target!r} targets for output {output!r}")
    if m == 1 and output != "softmax":
        y = y[:, 0]
    sw = None
    if weighted:
        sw = rng.uniform(0.2, 3.0, n)
        sw[n // 2] = 0.0  # a zero weight is allowed: that sample must not count at all
    n_params = sum(a * b + b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))
    W = rng.uniform(-w_scale, w_scale, n_params)
    return SimpleNamespace(X=X, y=y, T=T, sw=sw, W=W, layer_sizes=tuple(layer_sizes), output=output)


def rel_err(a, b):
    """‖a − b‖ / ‖b‖ (plain |a − b| / |b| for scalars); b is the reference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


@pytest.fixture(scope="session")
def problem():
    """``make_problem`` as a fixture (session-scoped, so hypothesis tests may use it too)."""
    return make_problem


@pytest.fixture(scope="session")
def relerr():
    """``rel_err`` as a fixture."""
    return rel_err
