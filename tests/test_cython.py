"""The Cython backend against the NumPy reference, the naive per-sample backprop and Numba.

Covers every activation x output, depths 0-4, odd widths, sample weights, float32, tile
boundaries, the BLAS and loop paths, threads and bit-reproducibility, large |a|, the kernel's own
transcendental functions, and the error when the compiled extension is missing.
"""

import importlib
import sys

import numpy as np
import pytest
from availability import unavailable_reason
from naive import naive_loss_and_grad
from scipy.special import expit

import fastbp
from fastbp import backends
from fastbp.cases import CASES
from fastbp.layout import ACTIVATIONS, OUTPUTS

CYTHON_MISSING = unavailable_reason("cython")  # None, or why the extension does not load
pytestmark = pytest.mark.skipif(CYTHON_MISSING is not None, reason=str(CYTHON_MISSING))

RTOL64, RTOL32 = 1e-12, 1e-5


def make_problem(sizes, output, n, rng, weighted=False):
    X = rng.standard_normal((n, sizes[0]))
    m = sizes[-1]
    if output == "softmax":
        y = rng.integers(0, m, n)
        T = np.eye(m)[y]
    elif output == "logistic":
        T = rng.integers(0, 2, (n, m)).astype(np.float64)
        y = T[:, 0] if m == 1 else T
    elif output == "exponential":  # non-negative counts, zeros included
        T = rng.poisson(1.5, (n, m)).astype(np.float64)
        y = T[:, 0] if m == 1 else T
    else:
        T = rng.standard_normal((n, m))
        y = T[:, 0] if m == 1 else T
    sw = rng.uniform(0.1, 3.0, n) if weighted else None
    return X, y, T, sw


def assert_close(got, want, rtol):
    """loss relative to itself, gradient relative to its largest entry (normwise)."""
    (l1, g1), (l2, g2) = got, want
    assert isinstance(l1, float) and g1.dtype == np.float64 and g1.shape == g2.shape
    assert abs(l1 - l2) <= rtol * max(abs(l2), 1e-300), (l1, l2)
    scale = max(np.abs(g2).max(), 1e-300)
    err = np.abs(g1 - g2).max() / scale
    assert err <= rtol, err


ARCHS = [[3, 2], [5, 7, 2], [4, 9, 3, 3], [2, 10, 10, 10, 1], [3, 5, 11, 6, 13, 2]]  # depth 0-4


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: "x".join(map(str, s)))
def test_matches_numpy_every_activation_output_depth(activation, output, sizes):
    if output == "softmax" and sizes[-1] < 2:
        sizes = [*sizes[:-1], 2]
    rng = np.random.default_rng(len(sizes) * 7 + ACTIVATIONS.index(activation))
    for weighted in (False, True):
        X, y, _, sw = make_problem(sizes, output, 45, rng, weighted)
        kw = dict(activation=activation, output=output, l2=0.03)
        W = fastbp.Network(sizes, **kw).init_weights(rng) * 2
        ref = fastbp.Network(sizes, backend="numpy", **kw).loss_and_grad(W, X, y, sw)
        cy = fastbp.Network(sizes, backend="cython", **kw).loss_and_grad(W, X, y, sw)
        assert_close(cy, ref, RTOL64)
        cy32 = fastbp.Network(sizes, backend="cython", dtype=np.float32, **kw).loss_and_grad(W, X, y, sw)
        assert_close(cy32, ref, RTOL32)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_matches_naive_backprop(activation, output):
    rng = np.random.default_rng(3)
    sizes = [3, 5, 4, 3] if output != "logistic" else [3, 5, 4, 1]
    for weighted in (False, True):
        X, y, T, sw = make_problem(sizes, output, 13, rng, weighted)
        net = fastbp.Network(sizes, activation, output, l2=0.1, backend="cython")
        W = net.init_weights(rng)
        want = naive_loss_and_grad(sizes, activation, output, 0.1, W, X, T, sw)
        assert_close(net.loss_and_grad(W, X, y, sw), want, RTOL64)
        net32 = fastbp.Network(sizes, activation, output, l2=0.1, backend="cython", dtype=np.float32)
        assert_close(net32.loss_and_grad(W, X, y, sw), want, RTOL32)


def kernel_result(net, X, y, sw, **plan):
    """The cython kernel of ``net`` built with ``plan`` overriding plan_for's, and the bound data."""
    from fastbp.backends import _cython_kernels as ck
    from fastbp.backends.cython_backend import plan_for

    L = net.layout
    args = plan_for(L, plan.get("n_threads", 1))
    args.update({k: v for k, v in plan.items() if k not in ("n_threads", "wide")})
    k = ck.make_kernel(L.layer_sizes, L.activation_code, L.output_code, L.dtype.itemsize == 4,
                       plan.get("n_threads", 1), wide=plan.get("wide"), **args)
    return k, net.bind(X, y, sw)


def run_kernel(k, f, W, l2):
    return k(W, f.X, f.T, f.sample_weight, f.scale, l2)


# Every path of the kernel, forced through make_kernel: layer products through BLAS (layer 0
# reading X in place, tiles of one sample to 2048), run on one thread with BLAS threading itself
# ("serial_blas") or on 1-3 threads; gradients lane-summed or accumulated sample-major (gacc);
# AVX-512 register blocks or the narrower ones.
@pytest.mark.parametrize(
    "sizes", [[20, 64, 64, 3], [70, 40, 2], [300, 100, 5], [5, 33, 17, 40, 3]],
    ids=["blas-hidden", "blas-first", "wide-first", "odd-widths"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_kernel_path_matches_numpy(sizes, dtype):
    rng = np.random.default_rng(5)
    X, y, _, sw = make_problem(sizes, "softmax", 301, rng, weighted=True)
    W = fastbp.Network(sizes).init_weights(rng)
    ref = fastbp.Network(sizes, "tanh", backend="numpy", l2=0.01).loss_and_grad(W, X, y, sw)
    net = fastbp.Network(sizes, "tanh", backend="cython", dtype=dtype, l2=0.01)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    by_wide = {}
    for plan in (
        dict(blas_min=2048, tile=64),
        dict(blas_min=2048, tile=2048, serial_blas=True),
        dict(blas_min=2048, tile=100, n_threads=3),
        dict(blas_min=10**9, tile=8, gacc_min_out=1),
        dict(blas_min=10**9, tile=64, gacc_min_out=10**9, n_threads=2),
    ):
        for wide in (True, False):
            k, f = kernel_result(net, X, y, sw, wide=wide, **plan)
            if plan["blas_min"] == 2048:
                assert k.blas_layers == tuple(i for i, (a, b) in enumerate(net.layout.coef_shapes) if a * b >= 2048)
            got = run_kernel(k, f, W, net.l2)
            assert_close(got, ref, rtol)
            by_wide[wide] = got
        # the AVX-512 blocks change no sum's order: the same bits as the narrower blocks
        assert by_wide[True][0] == by_wide[False][0]
        assert np.array_equal(by_wide[True][1], by_wide[False][1])


def test_large_plan_uses_blas_on_threads_with_blas_held_to_one_thread():
    from threadpoolctl import threadpool_info

    from fastbp.backends.cython_backend import BLAS_MIN_WEIGHTS, SerialBlasKernel

    sizes = [784, 256, 256, 10]
    rng = np.random.default_rng(1)
    X, y, _, _ = make_problem(sizes, "softmax", 600, rng)
    W = fastbp.Network(sizes).init_weights(0)
    f = fastbp.Network(sizes, "relu", backend="cython", n_threads=2).bind(X, y)
    if not fastbp.backends.get_backend("cython").have_threads:
        pytest.skip("single-threaded build")
    # layers 0 and 1; the 256 x 10 output layer too where there are no AVX-512 blocks (WIDE)
    wide = tuple(l for l, (a, b) in enumerate(zip(sizes, sizes[1:])) if a * b >= BLAS_MIN_WEIGHTS)
    assert wide == ((0, 1) if fastbp.backends.cython_backend.WIDE else (0, 1, 2))
    assert isinstance(f._kernel, SerialBlasKernel) and f._kernel.blas_layers == wide
    assert f._kernel._n_blocks(600) == 2  # fewer samples than a tile: still both threads
    before = [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]
    got = f(W)
    after = [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]
    assert before == after  # the limit is restored
    assert got[0] == f(W)[0]
    assert_close(got, fastbp.Network(sizes, "relu", backend="numpy").loss_and_grad(W, X, y), RTOL64)


def tile_of(sizes):
    from fastbp.backends.cython_backend import plan_for

    return plan_for(fastbp.Network(sizes).layout, 1)["tile"]


@pytest.mark.parametrize("sizes", [[2, 10, 10, 1], [20, 64, 64, 1]])
def test_tile_boundaries(sizes):
    tile = tile_of(sizes)
    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 8, 9, tile - 1, tile, tile + 1, 2 * tile + 3, 5 * tile - 5):
        X, y, _, _ = make_problem(sizes, "logistic", n, rng)
        W = fastbp.Network(sizes).init_weights(n)
        ref = fastbp.Network(sizes, "tanh", backend="numpy").loss_and_grad(W, X, y)
        for n_threads in (1, 2, 3):
            cy = fastbp.Network(sizes, "tanh", backend="cython", n_threads=n_threads).loss_and_grad(W, X, y)
            assert_close(cy, ref, RTOL64)


def test_bit_identical_repeats_and_per_thread_count():
    sizes = [4, 17, 9, 3]
    rng = np.random.default_rng(2)
    X, y, _, sw = make_problem(sizes, "softmax", 5003, rng, weighted=True)
    W = fastbp.Network(sizes).init_weights(0)
    results = {}
    for n_threads in (1, 2, 4):
        f = fastbp.Network(sizes, "logistic", backend="cython", n_threads=n_threads).bind(X, y, sw)
        # enough work: every thread is used (a build without threads has one)
        assert f._kernel._n_blocks(5003) == (n_threads if backends.get_backend("cython").have_threads else 1)
        first = f(W)
        for _ in range(5):
            loss, grad = f(W)
            assert loss == first[0] and np.array_equal(grad, first[1])
        # a fresh network with the same thread count gives the same bits
        again = fastbp.Network(sizes, "logistic", backend="cython", n_threads=n_threads).bind(X, y, sw)(W)
        assert again[0] == first[0] and np.array_equal(again[1], first[1])
        results[n_threads] = first
    ref = fastbp.Network(sizes, "logistic", backend="numpy").loss_and_grad(W, X, y, sw)
    for got in results.values():  # different thread counts: the same to round-off
        assert_close(got, ref, RTOL64)


def test_inputs_untouched_and_grad_is_new():
    sizes = [3, 6, 2]
    rng = np.random.default_rng(4)
    X, y, _, sw = make_problem(sizes, "softmax", 50, rng, weighted=True)
    net = fastbp.Network(sizes, backend="cython", l2=0.5)
    W = net.init_weights(1)
    copies = [a.copy() for a in (W, X, y, sw)]
    _, g1 = net.loss_and_grad(W, X, y, sw)
    _, g2 = net.loss_and_grad(W, X, y, sw)
    assert g1 is not g2 and not np.shares_memory(g1, g2)
    for a, b in zip((W, X, y, sw), copies):
        assert np.array_equal(a, b)


# the exponential output overflows there by design (tests/test_exponential_output.py)
@pytest.mark.parametrize("output", [o for o in OUTPUTS if o != "exponential"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_large_activations_stay_finite(output, dtype):
    sizes = [2, 3, 2]
    X = np.array([[1.0, -1.0], [-2.0, 3.0], [0.5, 0.5]])
    y = np.array([[1, 0], [0, 1], [1, 1]], dtype=float) if output != "softmax" else np.array([0, 1, 1])
    net = fastbp.Network(sizes, "identity", output, backend="cython", dtype=dtype)
    ref = fastbp.Network(sizes, "identity", output, backend="numpy")
    W = net.init_weights(0) * 400  # |a| in the hundreds to thousands: exp overflows naively
    loss, grad = net.loss_and_grad(W, X, y)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert_close((loss, grad), ref.loss_and_grad(W, X, y), RTOL64 if dtype == np.float64 else RTOL32)


def test_saturated_hidden_units():
    sizes = [2, 5, 1]
    rng = np.random.default_rng(8)
    X = rng.standard_normal((30, 2)) * 300
    y = rng.integers(0, 2, 30)
    for act in ("logistic", "tanh"):
        W = fastbp.Network(sizes).init_weights(1) * 3
        got = fastbp.Network(sizes, act, backend="cython").loss_and_grad(W, X, y)
        assert np.isfinite(got[0]) and np.isfinite(got[1]).all()
        assert_close(got, fastbp.Network(sizes, act, backend="numpy").loss_and_grad(W, X, y), RTOL64)


def test_vector_math_accuracy():
    from fastbp.backends import _cython_kernels as ck

    x = np.concatenate([np.linspace(-40, 40, 20001), [-1e-300, 0.0, 1e-12, -1e-7, 3e-4]])
    for name, ref in (("exp", np.exp), ("tanh", np.tanh), ("logistic", expit)):
        got = ck.vector_math(name, x)
        rel = np.abs(got - ref(x)) / np.maximum(np.abs(ref(x)), 1e-300)
        assert rel.max() < 4e-16 * 8, (name, rel.max())
    e = np.linspace(0, 1, 10001)
    got = ck.vector_math("log1p_unit", e)
    assert (np.abs(got - np.log1p(e)) <= 8 * 2.2e-16 * np.log1p(e)).all()
    v = np.concatenate([np.linspace(1, 3, 10001), np.geomspace(1, 1e300, 2001), [2.0**k for k in range(60)]])
    got = ck.vector_math("log_ge1", v)  # log of the softmax's sum of exponentials
    assert (np.abs(got - np.log(v)) <= 4 * 2.2e-16 * np.log(v)).all()
    edges = np.array([-1000.0, -746.0, -745.0, -720.0, -708.5, 709.7, 709.8, 1000.0])
    with np.errstate(over="ignore"):
        want = np.exp(edges)
    got = ck.vector_math("exp", edges)
    assert np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want) & (want > 1e-300)
    assert np.allclose(got[fin], want[fin], rtol=1e-15, atol=0)
    assert np.all(np.abs(got[~fin & ~np.isinf(want)]) < 1e-300)
    assert np.isnan(ck.vector_math("exp", np.array([np.nan]))).all()
    assert np.isnan(ck.vector_math("tanh", np.array([np.nan]))).all()


def test_agrees_with_numba():
    if "numba" not in fastbp.available_backends():
        pytest.skip("numba backend not importable here")
    rng = np.random.default_rng(9)
    for sizes, act, out in [
        ([2, 10, 10, 10, 10, 1], "logistic", "logistic"),
        ([2, 20, 20, 4], "relu", "softmax"),
        ([20, 64, 64, 1], "tanh", "logistic"),
        ([6, 9, 3], "identity", "identity"),
    ]:
        X, y, _, sw = make_problem(sizes, out, 700, rng, weighted=True)
        W = fastbp.Network(sizes).init_weights(rng)
        a = fastbp.Network(sizes, act, out, l2=1e-3, backend="cython").loss_and_grad(W, X, y, sw)
        b = fastbp.Network(sizes, act, out, l2=1e-3, backend="numba").loss_and_grad(W, X, y, sw)
        assert_close(a, b, RTOL64)


def test_missing_extension_gives_a_reason(monkeypatch):
    """Simulate an unbuilt extension: the backend is absent and asking for it says why."""
    name = "fastbp.backends._cython_kernels"
    for mod in (name, "fastbp.backends.cython_backend"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setitem(sys.modules, name, None)  # makes `import` of it raise ImportError
    monkeypatch.delattr(backends, "_cython_kernels", raising=False)  # `from . import` looks here first
    monkeypatch.setattr(backends, "_LOADED", {k: v for k, v in backends._LOADED.items() if k != "cython"})
    monkeypatch.setattr(backends, "_REASONS", {})
    with pytest.raises(ImportError, match="was not built"):
        importlib.import_module("fastbp.backends.cython_backend")
    monkeypatch.delitem(sys.modules, "fastbp.backends.cython_backend", raising=False)
    assert "cython" not in fastbp.available_backends()
    with pytest.raises(ValueError, match=r"'cython' is not available.*was not built.*pip install"):
        fastbp.Network([2, 3, 1], backend="cython")
    assert backends.choose(fastbp.Network([2, 3, 1], backend="numpy").layout, 100) != "cython"
    # monkeypatch restores sys.modules and the registry's caches after the test


def test_auto_rule_names_an_available_backend():
    for case in CASES.values():
        for n in (10, case.n_samples, 100_000):
            assert backends.choose(case.network().layout, n) in fastbp.available_backends()


def test_concurrent_calls_on_one_kernel():
    """The kernel keeps its scratch between calls; calls from several Python threads at once
    (one takes the cached scratch, the others allocate their own) give the same bits."""
    from concurrent.futures import ThreadPoolExecutor

    sizes = [5, 16, 16, 3]
    rng = np.random.default_rng(12)
    X, y, _, sw = make_problem(sizes, "softmax", 2000, rng, weighted=True)
    f = fastbp.Network(sizes, "tanh", backend="cython", n_threads=2).bind(X, y, sw)
    Ws = [fastbp.Network(sizes).init_weights(i) for i in range(4)]
    want = [f(W) for W in Ws]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(f, Ws * 8))
    for i, (loss, grad) in enumerate(got):
        assert loss == want[i % 4][0] and np.array_equal(grad, want[i % 4][1])


def _loss_in_child(args):
    sizes, X, y, W = args
    return fastbp.Network(sizes, "tanh", backend="cython", n_threads=2).bind(X, y)(W)[0]


def test_threads_survive_fork():
    """The pool's workers do not exist in a forked child: its calls must still complete (the
    calling thread runs every block) and give the same bits."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    if not backends.get_backend("cython").have_threads:
        pytest.skip("single-threaded build")
    sizes = [6, 40, 40, 2]
    rng = np.random.default_rng(13)
    X, y, _, _ = make_problem(sizes, "softmax", 3000, rng)
    W = fastbp.Network(sizes).init_weights(0)
    f = fastbp.Network(sizes, "tanh", backend="cython", n_threads=2).bind(X, y)
    assert f._kernel._n_blocks(3000) == 2
    want = f(W)[0]  # starts the pool's worker in this process
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.map(_loss_in_child, [(sizes, X, y, W)] * 2, chunksize=1)
    assert got == [want, want]
