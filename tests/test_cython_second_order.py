"""The Cython kernel's second order (``src_kernels/_rop.pxi``, ``fb_rop.h``) on its own paths.

``tests/test_second_order.py`` holds every backend to the naive reference on tiny problems (one
tile, one thread). Here, against the NumPy reference at 1e-12 (float64) and 1e-5 (float32), on
enough samples for several tiles (n not a multiple of the tile) and several blocks on 1, 2 and 3
threads: the loop layers (lane sums and sample-major accumulation, the AVX-512 blocks and the
portable ones), BLAS layers and a mix of both; blocks of k directions (split over samples or
over directions, with the shortcuts for directions that are zero on some layers) against k single
products; bit-identical repeats; flush-to-zero on the new entry points; concurrent calls.
"""

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp
from fastbp.layout import ACTIVATIONS, OUTPUTS

CYTHON_MISSING = unavailable_reason("cython")
pytestmark = pytest.mark.skipif(CYTHON_MISSING is not None, reason=str(CYTHON_MISSING))

RTOL64, RTOL32 = 1e-12, 1e-5
N = 301  # several tiles of the plans below, and not a multiple of any of them
#: 9 outputs: lane sums, AVX-512 blocks of 8 + 1; 33: sample-major accumulation (>= 32, with the
#: R{z} δᵀ term: not layer 0) and 4 blocks of 8 + 1; then 3 outputs
SIZES = (5, 9, 33, 3)
#: BLAS_MIN_WEIGHTS: the kernel's own loops, every layer through BLAS (layer 0 reading X in
#: place), and BLAS for the middle layer only (45, 297, 99 weights)
PATHS = {"loops": None, "blas": 1, "mixed": 200}


def rel_err(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def targets(output, m, n, rng):
    if output == "softmax":
        return rng.integers(0, m, n)
    if output == "logistic":
        return rng.integers(0, 2, (n, m))
    if output == "exponential":
        return rng.poisson(1.5, (n, m)).astype(float)
    return rng.standard_normal((n, m))


def bound(sizes, activation, output, backend, n=N, seed=0, dtype=np.float64, n_threads=None, l2=0.02):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]))
    y = targets(output, sizes[-1], n, rng)
    sw = rng.uniform(0.1, 2.0, n)
    sw[5] = 0.0
    net = fastbp.Network(sizes, activation=activation, output=output, l2=l2, backend=backend,
                         dtype=dtype, n_threads=n_threads)
    W = net.init_weights(random_state=seed) * (0.5 if output == "exponential" else 1.0)
    return net.bind(X, y, sw), W


@pytest.fixture(params=list(PATHS))
def path(request, monkeypatch):
    """The kernel path the networks of the test take (BLAS forced through the constant)."""
    from fastbp.backends import cython_backend

    if PATHS[request.param] is not None:
        monkeypatch.setattr(cython_backend, "BLAS_MIN_WEIGHTS", PATHS[request.param])
    return request.param


def expected_blas_layers(path, sizes):
    weights = [a * b for a, b in zip(sizes, sizes[1:])]
    limit = PATHS[path]
    return () if limit is None else tuple(i for i, w in enumerate(weights) if w >= limit)


CASES = [(SIZES, a, o) for a in ACTIVATIONS for o in OUTPUTS] + [((4, 3), "tanh", o) for o in OUTPUTS]


@pytest.mark.parametrize("sizes,activation,output", CASES)
def test_products_match_numpy_on_tiles_blocks_and_threads(path, sizes, activation, output):
    ref, W = bound(sizes, activation, output, "numpy")
    V = np.random.default_rng(7).standard_normal(W.size)
    want = {"hessp": ref.hessp(W, V), "gauss_newton_product": ref.gauss_newton_product(W, V)}
    if output == "identity":
        want["residuals_jacobian"] = ref.residuals_jacobian(W)
    for n_threads in (1, 2, 3):
        f, _ = bound(sizes, activation, output, "cython", n_threads=n_threads)
        assert getattr(f._kernel, "blas_layers", ()) == expected_blas_layers(path, sizes)
        for method, value in want.items():
            args = (W,) if method == "residuals_jacobian" else (W, V)
            got = getattr(f, method)(*args)
            assert rel_err(got, value) < RTOL64, (method, n_threads, rel_err(got, value))
            np.testing.assert_array_equal(getattr(f, method)(*args), got)  # bit-identical repeat


def directions(layout, rng):
    """Dense directions, unit vectors on a coefficient and on an intercept of every layer, a zero
    row, and one that is zero below the last layer but its intercepts: every shortcut of the
    kernel for directions that are zero on some layers."""
    P = layout.n_params
    rows = [rng.standard_normal(P), rng.standard_normal(P), np.zeros(P)]
    for i in range(len(layout.coef_shapes)):
        rows.append(np.eye(P)[layout.coef_offsets[i] + 1])
        rows.append(np.eye(P)[layout.intercept_offsets[i]])
    last = np.zeros(P)
    last[layout.intercept_offsets[-2] :] = rng.standard_normal(P - layout.intercept_offsets[-2])
    rows.append(last)
    sparse = rng.standard_normal(P)
    sparse[: layout.coef_offsets[1]] = 0.0  # nothing on layer 0's coefficients
    rows.append(sparse)
    return np.array(rows)


@pytest.mark.parametrize("activation,output", [("tanh", "softmax"), ("logistic", "exponential"), ("relu", "identity")])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocks_of_directions_match_single_products(path, activation, output, dtype):
    f0, W = bound(SIZES, activation, output, "numpy")
    V = directions(f0.network.layout, np.random.default_rng(3))
    k_all = V.shape[0]
    ref = {m: f0._kernel.__getattribute__(m) for m in ("hessp_block", "gauss_newton_block")}
    want = {m: fn(W, V, f0.X, f0.T, f0.sample_weight, f0.scale, f0.network.l2) for m, fn in ref.items()}
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    for n_threads in (1, 2, 3):
        f, _ = bound(SIZES, activation, output, "cython", dtype=dtype, n_threads=n_threads)
        kernel, args = f._kernel, (f.X, f.T, f.sample_weight, f.scale, f.network.l2)
        # k = 1, k = 3 (< 2 per thread: blocks of samples), all (many per thread: groups of directions)
        for k in (1, 3, k_all):
            for block, single in (("hessp_block", "hessp"), ("gauss_newton_block", "gauss_newton_product")):
                got = getattr(kernel, block)(W, V[:k], *args)
                assert got.shape == (k, W.size) and got.dtype == np.float64
                assert rel_err(got, want[block][:k]) < rtol, (block, k, n_threads)
                one_by_one = np.array([getattr(kernel, single)(W, v, *args) for v in V[:k]])
                assert rel_err(got, one_by_one) < rtol, (block, k, n_threads)
                np.testing.assert_array_equal(getattr(kernel, block)(W, V[:k], *args), got)
        assert not np.any(kernel.hessp_block(W, V, *args)[2])  # the zero direction


@pytest.mark.parametrize("activation,output", [("logistic", "softmax"), ("tanh", "identity"), ("relu", "exponential")])
def test_float32_matches_float64(path, activation, output):
    ref, W = bound(SIZES, activation, output, "numpy")
    f, _ = bound(SIZES, activation, output, "cython", dtype=np.float32, n_threads=2)
    V = np.random.default_rng(5).standard_normal(W.size)
    for method in ("hessp", "gauss_newton_product"):
        got = getattr(f, method)(W, V)
        assert got.dtype == np.float64
        assert rel_err(got, getattr(ref, method)(W, V)) < RTOL32, method
        np.testing.assert_array_equal(getattr(f, method)(W, V), got)
    assert rel_err(f.hess(W), ref.hess(W)) < RTOL32
    if output == "identity":
        assert rel_err(f.residuals_jacobian(W), ref.residuals_jacobian(W)) < RTOL32


@pytest.mark.parametrize("activation", ["tanh", "logistic", "relu"])
@pytest.mark.parametrize("sizes,tile", [((7, 45, 36, 2), 72), ((2, 10, 10, 10, 10, 1), None)])
def test_avx512_blocks_and_portable_blocks_give_the_same_bits(sizes, tile, activation):
    """fb_rmm's and fb_rgrad's AVX-512 register blocks (with their 8-lane and few-output
    leftovers: 45 = 5 x 8 + 4 + 1 outputs, 36 = 4 x 8 + 4, 10 = 8 + 2; 72 lanes = 4 x 16 + 8) sum
    in the order of the portable blocks, and the σ'' term is added alike on both paths."""
    from fastbp.backends import _cython_kernels as ck
    from fastbp.backends.cython_backend import plan_for

    output = "softmax" if sizes[-1] > 1 else "logistic"
    f, W = bound(sizes, activation, output, "numpy")
    V = np.random.default_rng(2).standard_normal((4, W.size))
    L = f.network.layout
    got = {}
    for wide in (True, False):
        args = plan_for(L, 2)
        args.update(blas_min=10**9, **({"tile": tile} if tile else {}))
        kernel = ck.make_kernel(L.layer_sizes, L.activation_code, L.output_code, False, 2, wide=wide, **args)
        data = (f.X, f.T, f.sample_weight, f.scale, 0.0)
        got[wide] = [kernel.hessp_block(W, V, *data), kernel.hessp(W, V[0], *data),
                     kernel.gauss_newton_product(W, V[0], *data)]
    for a, b in zip(got[True], got[False]):
        np.testing.assert_array_equal(a, b)
    assert rel_err(got[True][0], f._kernel.hessp_block(W, V, f.X, f.T, f.sample_weight, f.scale, 0.0)) < RTOL64


def test_kernel_methods_check_their_arrays():
    f, W = bound((3, 4, 2), "tanh", "identity", "cython")
    kernel, args = f._kernel, (f.X, f.T, f.sample_weight, f.scale, 0.0)
    P = W.size
    with pytest.raises(ValueError, match="V must be"):
        kernel.hessp(W, np.zeros(P - 1), *args)
    with pytest.raises(ValueError, match="V must be"):
        kernel.hessp(W, np.zeros((1, P)), *args)
    with pytest.raises(ValueError, match=r"V must be a C-contiguous float64 \(k, "):
        kernel.hessp_block(W, np.zeros(P), *args)
    with pytest.raises(ValueError, match="V must be"):
        kernel.gauss_newton_block(W, np.zeros((0, P)), *args)
    with pytest.raises(ValueError, match="V must be"):
        kernel.gauss_newton_block(W, np.zeros((2, 2 * P))[:, ::2], *args)
    with pytest.raises(ValueError, match="out must be"):
        kernel.output_jacobian(W, f.X, np.ones(N), np.zeros((N * 2, P + 1)))
    with pytest.raises(ValueError, match="row_scale must be"):
        kernel.output_jacobian(W, f.X, np.ones(N - 1), np.zeros((N * 2, P)))
    assert kernel.max_directions >= 1


def test_concurrent_calls_on_one_kernel():
    """The second order's scratch is kept like the gradient's; calls from several Python threads
    at once (one takes it, the others allocate their own) give the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    f, W = bound(SIZES, "tanh", "softmax", "cython", n=2000, n_threads=2)
    Vs = list(np.random.default_rng(4).standard_normal((4, W.size)))
    want = [f.hessp(W, V) for V in Vs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda V: f.hessp(W, V), Vs * 6))
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g, want[i % 4])


# ------------------------------------------------------------------------------ flush to zero
SUBNORMAL = 1e-310


@pytest.fixture
def ck():
    from fastbp.backends import _cython_kernels

    if not _cython_kernels.FLUSHES_SUBNORMALS:
        pytest.skip("no flush-to-zero mode on this platform")
    previous = _cython_kernels.set_flush_subnormals(True)
    yield _cython_kernels
    _cython_kernels.set_flush_subnormals(previous)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_second_order_flushes_subnormals_on_every_thread(ck, n_threads):
    """Identity output a = x w + b with subnormal x on several blocks: the products along the
    intercept direction and the Jacobian's x column are mean x and x, read as 0 in a call."""
    n = 4096
    X, y, W = np.full((n, 1), SUBNORMAL), np.zeros(n), np.array([1.0, 0.0])
    e_b = np.array([0.0, 1.0])
    net = fastbp.Network([1, 1], output="identity", backend="cython", n_threads=n_threads)
    f = net.bind(X, y)

    def products():  # each (H e_b)[0] or its equivalent: mean x, exactly (sums of 2^j x)
        J = f.residuals_jacobian(W)[:n, 0]  # x sqrt(1/n) = x / 64
        block = f._kernel.gauss_newton_block(W, np.array([e_b, e_b]), f.X, f.T, None, f.scale, 0.0)
        return [f.hessp(W, e_b)[0], f.gauss_newton_product(W, e_b)[0], f.hess(W)[1, 0], block[1, 0], *set(J)]

    assert products() == [0.0] * 5  # x read as 0 on every thread of each call
    assert not ck.flushing_now()  # and the caller's mode put back
    ck.set_flush_subnormals(False)
    assert products() == [SUBNORMAL] * 4 + [SUBNORMAL / 64]  # IEEE 754 arithmetic when switched off


def test_blas_networks_hold_blas_to_one_thread_in_every_second_order_method(monkeypatch):
    """A network with BLAS layers runs each second-order method, like the gradient, with the BLAS
    libraries held to one thread and puts their setting back (SerialBlasKernel)."""
    from fastbp.backends import blas_threads, cython_backend

    if not cython_backend.BACKEND.have_threads:
        pytest.skip("single-threaded build: BLAS keeps its own threads")

    class Controller:  # stands for threadpoolctl's, recording what the kernel sets
        num_threads = 4

        def __init__(self):
            self.calls = []

        def set_num_threads(self, n):
            self.calls.append(n)

    monkeypatch.setattr(cython_backend, "BLAS_MIN_WEIGHTS", 1)
    f, W = bound((3, 4, 2), "tanh", "identity", "cython", n_threads=2)
    assert isinstance(f._kernel, cython_backend.SerialBlasKernel)
    controller = Controller()
    monkeypatch.setattr(blas_threads, "_controllers", (controller,))  # what hold() limits
    V = np.ones(W.size)
    for call in (lambda: f.hessp(W, V), lambda: f.gauss_newton_product(W, V), lambda: f.hess(W),
                 lambda: f.residuals_jacobian(W),
                 lambda: f._kernel.gauss_newton_block(W, V[None], f.X, f.T, None, f.scale, 0.0)):
        controller.calls.clear()
        call()
        assert controller.calls == [1, 4]
