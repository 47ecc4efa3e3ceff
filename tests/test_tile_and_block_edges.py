"""Each compiled kernel path on many tiles and several blocks, every output, against the naive
per-sample reference in float64.

The compiled kernels cut the samples into tiles (padded to a multiple of the vector width) and the
tiles into blocks, one gradient buffer per block. Mistakes there — a padded sample that counts, a
sample at a tile or block edge counted twice or not at all, a weight read from the wrong offset —
are invisible with a softmax output (a padded sample with no target has δ = Σ_k t_k softmax − t
= 0 whatever its weight) or on one tile. So every path runs here with logistic (one output and
multi-label), identity and softmax outputs, n = 1501 (no multiple of any tile), sample weights
with zeros at tile and block edges and a run of zeros longer than a tile, on one thread and on
three, and the test first checks that the call really has several tiles (and, where the path has
them, several blocks):

* ``numba-unit-major``: tiles of 256 samples, blocks of whole padded tiles;
* ``numba-sample-major``: every product a gemm (``BLAS_MIN_COEFS = 1``) on tiles of 512 rows
  (``TILE_ROWS``), each evaluated at the output in sub-tiles of 256, one block;
* ``cython-loops``: the register-blocked loops on tiles of at most 128 samples, up to 12 blocks;
* ``cython-blas``: every layer through BLAS (``BLAS_MIN_WEIGHTS = 1``) on tiles of 256 samples
  (``BLAS_TILE``).
"""

import sys

import numpy as np
import pytest
from availability import unavailable_reason
from naive import naive_loss_and_grad

import fastbp

N = 1501
SIZES = (3, 5, 4)  # input and hidden widths; the output width is the case's
L2 = 0.01
RTOL = 1e-12

#: path -> (backend, {constant of the backend's module: value})
PATHS = {
    "numba-unit-major": ("numba", {}),
    "numba-sample-major": ("numba", {"BLAS_MIN_COEFS": 1, "TILE_ROWS": 512}),
    "cython-loops": ("cython", {}),
    "cython-blas": ("cython", {"BLAS_MIN_WEIGHTS": 1, "BLAS_TILE": 256}),
}

#: case -> (output, n_outputs, hidden activation)
CASES = {
    "logistic1": ("logistic", 1, "tanh"),
    "logistic3-multilabel": ("logistic", 3, "logistic"),
    "identity2": ("identity", 2, "relu"),
    "softmax3": ("softmax", 3, "tanh"),
}


def _path_params():
    """PATHS as params, a path of an unavailable backend skipped with the reason."""
    params = []
    for name, (backend, _) in PATHS.items():
        why = unavailable_reason(backend)
        params.append(pytest.param(name, marks=pytest.mark.skip(reason=why)) if why else name)
    return params


@pytest.fixture(params=_path_params())
def path(request, monkeypatch):
    """The path's backend name, with its constants set for this test."""
    backend, constants = PATHS[request.param]
    module = sys.modules[type(fastbp.backends.get_backend(backend)).__module__]
    for name, value in constants.items():
        monkeypatch.setattr(module, name, value)  # raises if renamed: update PATHS
    return request.param


def tiling(kernel, n):
    """(whether the call goes through BLAS, samples per tile, blocks) of a bound kernel."""
    if hasattr(kernel, "uses_blas"):  # numba
        return kernel.uses_blas, kernel.tile, kernel.n_blocks(n)
    threads = kernel._n_blocks(n)  # cython: threads used; blocks as its __call__ cuts them
    n_tiles = -(-n // kernel.tile)
    return bool(kernel.blas_layers), kernel.tile, 1 if threads == 1 else min(4 * threads, n_tiles)


def problem(case):
    output, m, activation = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    X = rng.standard_normal((N, SIZES[0]))
    if output == "softmax":
        y = rng.integers(0, m, N)
        T = np.eye(m)[y]
    elif output == "logistic":
        T = rng.integers(0, 2, (N, m)).astype(float)
        y = T.astype(np.int64)
    else:
        T = y = rng.standard_normal((N, m))
    if m == 1:
        y = y[:, 0]
    sw = rng.uniform(0.2, 3.0, N)
    # zeros at the first and last sample, at tile edges of 128, 256 and 512, at the edges of 3 and
    # 12 equal blocks, and a run longer than a tile
    for edge in (128, 256, 512, 500, 501, 1000, 1001, 125, 126):
        sw[edge - 1 : edge + 1] = 0.0
    sw[[0, N - 1]] = 0.0
    sw[700:990] = 0.0
    sizes = (*SIZES, m)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    W = rng.uniform(-1, 1, n_params)
    return sizes, activation, output, X, y, T, sw, W


_NAIVE = {}


def naive(case, weighted):
    """The per-sample reference (computed once per case and weighting; it takes ~0.15 s)."""
    if (case, weighted) not in _NAIVE:
        sizes, activation, output, X, _, T, sw, W = problem(case)
        _NAIVE[case, weighted] = naive_loss_and_grad(sizes, activation, output, L2, W, X, T, sw if weighted else None)
    return _NAIVE[case, weighted]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_threads", [1, 3])
def test_many_tiles_and_blocks_match_naive(relerr, path, case, n_threads):
    sizes, activation, output, X, y, _, sw, W = problem(case)
    backend = PATHS[path][0]
    net = fastbp.Network(sizes, activation, output, l2=L2, backend=backend, n_threads=n_threads)
    for weighted in (True, False):
        f = net.bind(X, y, sw if weighted else None)
        wide, tile, n_blocks = tiling(f._kernel, N)
        assert wide == path.endswith(("blas", "sample-major")), path
        assert N > 2 * tile and N % tile != 0, (tile, "the call must have several tiles, the last one partial")
        if n_threads > 1 and path != "numba-sample-major":  # that path runs one block by design
            assert n_blocks > 1, (path, n_blocks)
        loss, grad = f(W)
        want_loss, want_grad = naive(case, weighted)
        assert relerr(loss, want_loss) < RTOL, (loss, want_loss)
        assert relerr(grad, want_grad) < RTOL, np.c_[grad, want_grad]
