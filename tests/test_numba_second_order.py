"""The Numba backend's second order (numba_kernels/roperator.py, curvature.py, rproducts.py,
second_order.py) on what the small grids of test_second_order.py do not reach.

* many tiles and several blocks: n = 1501 (no multiple of a tile), sample weights with zeros at
  tile and block edges and a run of zeros longer than a tile, 1, 2 and 3 threads, both kernel
  paths (unit-major tiles; sample-major gemm tiles, forced by ``BLAS_MIN_COEFS = 1``), every
  output, both dtypes; against the NumPy reference (1e-12 in float64) and bit-identical on repeat;
* blocks of k directions (dense, unit, sparse on one layer, zero) against k single products, bit
  for bit on one thread; blocks of 8 or more directions split the directions among the threads
  and give the same bits on any number of threads;
* the thread pool of the second-order entry point: its workers take blocks, concurrent callers
  get the same bits, and the workers run the caller's compiled specialization;
* a gradient-only process compiles none of it.
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from fastbp.backends import numba_backend  # noqa: E402
from fastbp.backends.numba_kernels import pool as K  # noqa: E402
from fastbp.backends.numba_kernels import second_order as S  # noqa: E402

N = 1501
SIZES = (3, 5, 4)  # input and hidden widths; the output width is the case's
L2 = 0.01
RTOL64 = 1e-12
RTOL32 = 1e-5

#: case -> (output, n_outputs, hidden activation)
CASES = {
    "logistic1-tanh": ("logistic", 1, "tanh"),
    "logistic3-logistic": ("logistic", 3, "logistic"),
    "identity2-relu": ("identity", 2, "relu"),
    "softmax3-tanh": ("softmax", 3, "tanh"),
    "exponential2-identity": ("exponential", 2, "identity"),
}

#: path -> constants of numba_backend set for it
PATHS = {
    "unit-major": {"R_TILE_BUDGET": 2048},  # tiles of 128 samples
    "sample-major": {"BLAS_MIN_COEFS": 1, "TILE_ROWS": 512},  # every product a gemm, tiles of 512
}


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(numba_backend, name, value)  # raises if renamed: update PATHS
    return request.param


def problem(case, n=N, seed=0):
    output, m, activation = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case) + 10 * seed)
    X = rng.standard_normal((n, SIZES[0]))
    if output == "softmax":
        y = rng.integers(0, m, n)
    elif output == "logistic":
        y = rng.integers(0, 2, (n, m))
    elif output == "exponential":
        y = rng.poisson(1.5, (n, m)).astype(float)
    else:
        y = rng.standard_normal((n, m))
    if m == 1:
        y = y[:, 0]
    sw = rng.uniform(0.2, 3.0, n)
    # zeros at the first and last sample, at tile edges (128, 256, 512), at the edges of 2 and 3
    # equal blocks, and a run longer than a tile
    for edge in (128, 256, 512, 500, 501, 750, 751, 1000, 1001):
        sw[edge - 1 : edge + 1] = 0.0
    sw[[0, n - 1]] = 0.0
    sw[1100:1400] = 0.0
    sizes = (*SIZES, m)
    W = rng.uniform(-1, 1, sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])))
    if output == "exponential":
        W *= 0.5  # keep e^a moderate
    V = rng.standard_normal(W.size)
    return sizes, activation, output, X, y, sw, W, V


def networks(case, backend, **kw):
    sizes, activation, output = problem(case, n=1)[:3]
    return fastbp.Network(sizes, activation, output, l2=L2, backend=backend, **kw)


_REFERENCE = {}


def reference(case):
    """NumPy's hessp, Gauss-Newton product, dense Hessian and (identity outputs) residual
    Jacobian, weighted, and hessp unweighted (computed once per case)."""
    if case not in _REFERENCE:
        _, _, output, X, y, sw, W, V = problem(case)
        f = networks(case, "numpy").bind(X, y, sw)
        jac = f.residuals_jacobian(W) if output == "identity" else None
        unweighted = networks(case, "numpy").bind(X, y).hessp(W, V)
        _REFERENCE[case] = f.hessp(W, V), f.gauss_newton_product(W, V), f.hess(W), jac, unweighted
    return _REFERENCE[case]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_many_tiles_and_blocks_match_numpy(relerr, path, case, n_threads):
    _, _, output, X, y, sw, W, V = problem(case)
    f = networks(case, "numba", n_threads=n_threads).bind(X, y, sw)
    kernel = f._kernel
    assert kernel.uses_blas == (path == "sample-major")
    hv = f.hessp(W, V)  # prepares the second-order state
    second = kernel._second
    assert N > 2 * second.tile and N % second.tile != 0, (second.tile, "several tiles, the last one partial")
    if path == "unit-major":  # (the sample-major path runs one block and lets BLAS thread)
        assert second.plan(N, 1) == (n_threads, 0)  # blocks of samples
        n_params = W.size
        if n_threads > 1:  # the dense Hessian's blocks of directions, about 4 a thread
            split = -(-n_params // (4 * n_threads))
            assert second.plan(N, n_params) == (-(-n_params // split), split)
    hv_ref, gv_ref, H_ref, J_ref, hv_unweighted = reference(case)
    assert relerr(hv, hv_ref) < RTOL64
    # unweighted: the first and last samples (weight 0 above) count too
    assert relerr(f.network.bind(X, y).hessp(W, V), hv_unweighted) < RTOL64
    gv = f.gauss_newton_product(W, V)
    assert relerr(gv, gv_ref) < RTOL64
    H = f.hess(W)  # unit directions: the sparse V terms, several directions per pass
    assert relerr(H, H_ref) < RTOL64
    # bit-identical on repeat
    np.testing.assert_array_equal(f.hessp(W, V), hv)
    np.testing.assert_array_equal(f.gauss_newton_product(W, V), gv)
    np.testing.assert_array_equal(f.hess(W), H)
    if output == "identity":
        J = f.residuals_jacobian(W)
        assert relerr(J, J_ref) < RTOL64
        np.testing.assert_array_equal(f.residuals_jacobian(W), J)


@pytest.mark.parametrize("case", ["softmax3-tanh", "identity2-relu", "exponential2-identity"])
def test_float32_many_tiles(relerr, path, case):
    """float32 computes the layers in float32 and sums in float64: close to float64's result."""
    _, _, output, X, y, sw, W, V = problem(case)
    f = networks(case, "numba", n_threads=2, dtype=np.float32).bind(X, y, sw)
    hv_ref, gv_ref, H_ref, J_ref, _ = reference(case)
    hv = f.hessp(W, V)
    assert N > 2 * f._kernel._second.tile
    assert relerr(hv, hv_ref) < RTOL32
    assert relerr(f.gauss_newton_product(W, V), gv_ref) < RTOL32
    assert relerr(f.hess(W), H_ref) < RTOL32
    np.testing.assert_array_equal(f.hessp(W, V), hv)
    if output == "identity":
        assert relerr(f.residuals_jacobian(W), J_ref) < RTOL32


def _directions(W, rng):
    """Dense, unit (coefficient and intercept), sparse on two layers, zero, and dense again."""
    P = W.size
    E = np.eye(P)
    sparse = np.zeros(P)
    sparse[[1, P - 2]] = [0.5, -2.0]
    return np.array([rng.standard_normal(P), E[0], E[P - 1], E[P // 2], sparse, np.zeros(P),
                     rng.standard_normal(P)])


@pytest.mark.parametrize("case", ["logistic3-logistic", "softmax3-tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_of_directions_equal_single_products(relerr, path, case, dtype):
    """Row d of a block is direction d's product: bit for bit on one thread (one block of samples
    whatever k), to round-off on three (the number of blocks depends on k)."""
    _, _, _, X, y, sw, W, _ = problem(case)
    Vs = _directions(W, np.random.default_rng(5))
    for n_threads in (1, 3):
        f = networks(case, "numba", n_threads=n_threads, dtype=dtype).bind(X, y, sw)
        kernel = f._kernel
        tol = 1e-13 if dtype == np.float64 else 1e-6
        for block, single in ((kernel.hessp_block, f.hessp), (kernel.gauss_newton_block, f.gauss_newton_product)):
            rows = block(W, Vs, f.X, f.T, f.sample_weight, f.scale, L2)
            assert rows.shape == Vs.shape and rows.dtype == np.float64
            for d, v in enumerate(Vs):
                if n_threads == 1:
                    np.testing.assert_array_equal(rows[d], single(W, v))
                else:
                    assert relerr(rows[d], single(W, v)) < tol
            np.testing.assert_array_equal(rows[5], 0.0)  # the zero direction


@pytest.mark.parametrize("case", ["logistic3-logistic", "exponential2-identity"])
def test_blocks_of_directions_give_the_same_bits_on_any_number_of_threads(case):
    """Blocks of directions run each direction over every sample in one order: the dense Hessian
    (and any block of 8 or more directions) is bit-identical on 1, 2 and 3 threads."""
    _, _, _, X, y, sw, W, V = problem(case)
    Vs = np.vstack([_directions(W, np.random.default_rng(3)), np.eye(W.size)[3:9]])
    results = []
    for n_threads in (1, 2, 3):
        f = networks(case, "numba", n_threads=n_threads).bind(X, y, sw)
        k = f._kernel
        assert f.hessp(W, V) is not None and k._second.plan(N, len(Vs))[1] == (0 if n_threads == 1 else 2)
        results.append([f.hess(W), k.hessp_block(W, Vs, f.X, f.T, f.sample_weight, f.scale, L2),
                        k.gauss_newton_block(W, Vs, f.X, f.T, f.sample_weight, f.scale, L2)])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_array_equal(a, b)


def test_workers_take_blocks_and_callers_on_threads_get_the_same_bits():
    case = "softmax3-tanh"
    _, _, _, X, y, sw, W, V = problem(case)
    f = networks(case, "numba", n_threads=2).bind(X, y, sw)
    first = f.hessp(W, V)
    pool = S.curvature_pool(np.float64)
    assert f._kernel._second.pool is pool
    before = int(pool.ctl[K.C_WORKER_BLOCKS])
    for _ in range(2000):
        np.testing.assert_array_equal(f.hessp(W, V), first)
        if int(pool.ctl[K.C_WORKER_BLOCKS]) > before:
            break
    assert int(pool.ctl[K.C_WORKER_BLOCKS]) > before, "no block ran on a worker thread"
    # callers on other threads find the scratch or the pool busy and run on their own
    errors = []

    def hammer():
        for _ in range(50):
            if not np.array_equal(f.hessp(W, V), first):
                errors.append(1)
                return

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # the workers run the specialization the caller compiled (one per dtype and kind of network)
    unit_major = [sig for sig in S.run_curvature.signatures if str(sig[-1]) == "none"]
    assert len([sig for sig in unit_major if str(sig[2].dtype) == "float64"]) == 1, unit_major


_GRADIENT_ONLY = r"""
import numpy as np
import fastbp
from fastbp.backends.numba_kernels import second_order
net = fastbp.Network([3, 5, 1], "tanh", backend="numba", n_threads=2)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((5000, 3)), rng.integers(0, 2, 5000)
net.bind(X, y)(net.init_weights(0))
print(len(second_order.run_curvature.signatures), len(second_order.output_jacobian.signatures))
"""


def test_a_gradient_only_process_compiles_no_second_order():
    """The second-order entry points compile on their first call, not with the gradient's."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(fastbp.__file__)),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _GRADIENT_ONLY], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["0", "0"], proc.stdout


def test_max_directions_bounds_the_blocks_rows():
    net = fastbp.Network([2, 3, 1], backend="numba", n_threads=3)
    kernel = net._kernel_for(10)
    assert kernel.max_directions == numba_backend.MAX_DIRECTIONS
    wide = fastbp.Network([2, 40000, 1], backend="numba", n_threads=3)._kernel_for(10)
    values = wide.max_directions * wide.layout.n_params
    assert 1 <= wide.max_directions < numba_backend.MAX_DIRECTIONS and values <= numba_backend.R_BLOCK_VALUES
