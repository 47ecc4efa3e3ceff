"""Tests specific to the Numba backend: parity with the naive reference and NumPy, determinism
across repeats and thread counts, tiling edge cases, the vectorized transcendental functions, and
that a new architecture reuses the compiled code."""

import numpy as np
import pytest
from availability import unavailable_reason
from numba import njit
from scipy.special import expit

import fastbp
from fastbp.layout import ACTIVATIONS

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from naive import naive_loss_and_grad  # noqa: E402

from fastbp.backends import numba_backend  # noqa: E402
from fastbp.backends.numba_kernels import activations, backprop, driver, transcendental  # noqa: E402

RTOL64 = 1e-12
RTOL32 = 1e-5


def _targets(output, n, m, rng, probabilities=False):
    """Targets y in a form Network accepts, and the encoded (n, m) T the naive reference takes."""
    if output == "softmax":
        if probabilities:
            T = rng.dirichlet(np.ones(m), size=n)
            return T, T
        y = rng.integers(0, m, n)
        return y, np.eye(m)[y]
    if output == "logistic":
        T = rng.random((n, m)) if probabilities else rng.integers(0, 2, (n, m)).astype(float)
        return (T[:, 0] if m == 1 else T), T
    T = rng.standard_normal((n, m))
    return (T[:, 0] if m == 1 else T), T


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def _check(net, W, X, y, T, sw=None, rtol=RTOL64):
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    assert isinstance(loss, float)
    assert grad.dtype == np.float64 and grad.shape == (net.n_params,)
    ref_loss, ref_grad = naive_loss_and_grad(
        net.layer_sizes, net.activation, net.output, net.l2, W, X, T, sample_weight=sw
    )
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    assert _rel(grad, ref_grad) <= rtol
    numpy_net = fastbp.Network(
        net.layer_sizes, net.activation, net.output, net.l2, backend="numpy", dtype=net.dtype
    )
    np_loss, np_grad = numpy_net.loss_and_grad(W, X, y, sample_weight=sw)
    assert abs(loss - np_loss) <= rtol * abs(np_loss)
    assert _rel(grad, np_grad) <= rtol


# every activation × output, depths 0–4 (hidden layers), odd widths
ARCHS = [(3, 2), (3, 5, 2), (4, 7, 3, 2), (2, 9, 5, 3, 2), (5, 3, 11, 7, 5, 2)]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["logistic", "softmax", "identity"])
@pytest.mark.parametrize("sizes", ARCHS, ids=lambda s: f"depth{len(s) - 2}")
def test_matches_naive_and_numpy(activation, output, sizes):
    rng = np.random.default_rng(len(sizes) * 31 + ACTIVATIONS.index(activation))
    n = 29
    m = 1 if output == "logistic" and len(sizes) % 2 else sizes[-1]
    sizes = (*sizes[:-1], m)
    net = fastbp.Network(sizes, activation, output, l2=0.01, backend="numba")
    # larger weights than the default reach the curved parts of the activations, yet keep the
    # outputs unsaturated: the naive reference takes log(1 − p), which loses digits as p → 1
    W = net.init_weights(rng) * 2
    X = rng.standard_normal((n, sizes[0]))
    y, T = _targets(output, n, m, rng)
    _check(net, W, X, y, T)
    sw = rng.random(n) * 2
    _check(net, W, X, y, T, sw=sw)


@pytest.mark.parametrize(
    "output, m",
    [("softmax", 4), ("logistic", 3), ("identity", 3)],
    ids=["softmax-probability-rows", "multi-label-logistic", "multi-output-identity"],
)
def test_probability_and_multi_output_targets(output, m):
    rng = np.random.default_rng(7)
    net = fastbp.Network([3, 6, m], "tanh", output, l2=0.003, backend="numba")
    W = net.init_weights(1)
    X = rng.standard_normal((41, 3))
    y, T = _targets(output, 41, m, rng, probabilities=True)
    _check(net, W, X, y, T, sw=rng.random(41))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["logistic", "softmax", "identity"])
def test_float32_matches_float64_reference(activation, output):
    rng = np.random.default_rng(3)
    m = 3
    sizes = (4, 9, 6, m)
    net = fastbp.Network(sizes, activation, output, l2=0.01, backend="numba", dtype=np.float32)
    W = net.init_weights(2)
    X = rng.standard_normal((300, 4))
    y, T = _targets(output, 300, m, rng)
    _check(net, W, X, y, T, sw=rng.random(300), rtol=RTOL32)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["logistic", "softmax", "identity"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_major_blas_kernel(monkeypatch, activation, output, dtype):
    """The sample-major kernel (wide layers: every product a gemm) on small layers: several tiles,
    several output sub-tiles per tile, a short last tile, sample weights."""
    monkeypatch.setattr(numba_backend, "BLAS_MIN_COEFS", 1)
    monkeypatch.setattr(numba_backend, "TILE_ROWS", 512)
    rng = np.random.default_rng(ACTIVATIONS.index(activation))
    n = 1300
    m = 1 if output == "logistic" else 3
    sizes = (5, 9, 7, m)
    net = fastbp.Network(sizes, activation, output, l2=0.01, backend="numba", dtype=dtype)
    kernel = numba_backend.BACKEND.prepare(net.layout, 1)
    assert kernel.uses_blas and kernel.tile == 512
    W = net.init_weights(rng) * 2
    X = rng.standard_normal((n, sizes[0]))
    y, T = _targets(output, n, m, rng)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    _check(net, W, X, y, T, rtol=rtol)
    _check(net, W, X, y, T, sw=rng.random(n) * 2, rtol=rtol)
    for depth0 in [(5, m)]:  # no hidden layer: X straight into the output gemm
        net0 = fastbp.Network(depth0, activation, output, l2=0.01, backend="numba", dtype=dtype)
        _check(net0, net0.init_weights(1), X, y, T, rtol=rtol)


@pytest.mark.parametrize("n", [1, 5, 64, 191, 257, 1000])
def test_tile_edges(n):
    """n = 1, n below a tile, a multiple of it and not: every tile and block boundary."""
    rng = np.random.default_rng(n)
    net = fastbp.Network([6, 10, 7, 3], "logistic", l2=0.02, backend="numba", n_threads=3)
    W = net.init_weights(0)
    X = rng.standard_normal((n, 6))
    y, T = _targets("softmax", n, 3, rng)
    _check(net, W, X, y, T)


def test_bit_identical_repeats_and_thread_counts():
    rng = np.random.default_rng(11)
    n = 8000
    X = rng.standard_normal((n, 5))
    y = rng.integers(0, 2, n)
    sizes = [5, 33, 17, 1]
    results = {}
    for n_threads in (1, 2, 3):
        net = fastbp.Network(sizes, "tanh", backend="numba", n_threads=n_threads, l2=1e-3)
        f = net.bind(X, y)
        assert f._kernel.n_blocks(n) == (1 if n_threads == 1 else numba_backend.BLOCKS_PER_THREAD * n_threads)
        W = net.init_weights(0)
        first = f(W)
        for _ in range(3):
            again = f(W)
            assert again[0] == first[0]
            assert np.array_equal(again[1], first[1])
        # a fresh network with the same n_threads gives the same bits
        other = fastbp.Network(sizes, "tanh", backend="numba", n_threads=n_threads, l2=1e-3)
        assert other.bind(X, y)(W)[0] == first[0]
        results[n_threads] = first
    for n_threads in (2, 3):
        assert abs(results[n_threads][0] - results[1][0]) <= 1e-13 * abs(results[1][0])
        assert _rel(results[n_threads][1], results[1][1]) <= 1e-12


def test_threads_split_the_samples():
    """The split is a function of n and n_threads only, so the test above covers real splits."""
    layout = fastbp.Network([5, 33, 17, 1], "tanh").layout
    kernel = numba_backend.BACKEND.prepare(layout, 3)
    assert kernel.n_blocks(10**6) == 3 * numba_backend.BLOCKS_PER_THREAD
    assert kernel.n_blocks(1) == 1
    assert numba_backend.BACKEND.prepare(layout, 1).n_blocks(10**6) == 1


def test_large_preactivations_stay_finite():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((50, 3)) * 1e3
    for activation in ACTIVATIONS:
        for output, y in [("logistic", rng.integers(0, 2, 50)), ("softmax", rng.integers(0, 3, 50))]:
            m = 1 if output == "logistic" else 3
            net = fastbp.Network([3, 8, m], activation, output, backend="numba")
            W = net.init_weights(0) * 50
            loss, grad = net.loss_and_grad(W, X, y)
            assert np.isfinite(loss) and np.all(np.isfinite(grad))
            ref_loss, ref_grad = fastbp.Network([3, 8, m], activation, output, backend="numpy").loss_and_grad(
                W, X, y
            )
            assert abs(loss - ref_loss) <= 1e-10 * abs(ref_loss)
            assert _rel(grad, ref_grad) <= 1e-10


def test_inputs_not_modified_and_grad_is_new():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 4))
    y = rng.integers(0, 2, 100)
    sw = rng.random(100)
    net = fastbp.Network([4, 6, 1], backend="numba")
    W = net.init_weights(0)
    copies = [a.copy() for a in (W, X, y, sw)]
    f = net.bind(X, y, sample_weight=sw)
    _, g1 = f(W)
    _, g2 = f(W)
    assert g1 is not g2 and not np.shares_memory(g1, g2)
    for a, c in zip((W, X, y, sw), copies):
        assert np.array_equal(a, c)


def test_new_architecture_does_not_recompile():
    rng = np.random.default_rng(0)

    def call(sizes, dtype=np.float64, sw=None):
        net = fastbp.Network(sizes, "relu", backend="numba", dtype=dtype)
        X = rng.standard_normal((20, sizes[0]))
        net.loss_and_grad(net.init_weights(0), X, rng.integers(0, 2, 20), sample_weight=sw)
        net.bind(X, rng.integers(0, 2, 20))(net.init_weights(0))

    call([3, 4, 1])
    call([3, 4, 1], sw=np.ones(20))
    before = len(driver.run.signatures), len(backprop._chunk_units.signatures)
    for sizes in ([7, 1], [2, 30, 3, 5, 1], [9, 2, 2, 2, 2, 2, 1]):
        call(sizes)
        call(sizes, sw=rng.random(20))
    assert (len(driver.run.signatures), len(backprop._chunk_units.signatures)) == before
    call([3, 4, 1], dtype=np.float32)  # a new dtype is the only new specialization
    assert len(driver.run.signatures) <= before[0] + 1
    assert len(backprop._chunk_units.signatures) <= before[1] + 1


def test_concurrent_calls_are_correct():
    """Calls on the same kernel from several threads (e.g. a dask worker) use their own scratch."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(9)
    X = rng.standard_normal((3000, 4))
    y = rng.integers(0, 2, 3000)
    net = fastbp.Network([4, 16, 1], "tanh", backend="numba", n_threads=2)
    f = net.bind(X, y)
    Ws = [net.init_weights(i) for i in range(8)]
    expected = [f(W) for W in Ws]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(f, Ws))
    for (l1, g1), (l2, g2) in zip(expected, got):
        assert l1 == l2 and np.array_equal(g1, g2)


# ------------------------------------------------------------- vectorized transcendental functions
def _ulp_error(got, want):
    return np.max(np.abs(got - want) / np.spacing(np.abs(want)))


def _elementwise(scalar_fn):
    """The kernels' scalar function applied over a float64 array (compiled, as in the kernels)."""

    @njit
    def apply(x, out):
        for q in range(x.shape[0]):
            out[q] = scalar_fn(x[q])

    return apply


vexp, vexpm1, vlog, vlog1p_unit = map(_elementwise, (
    transcendental.exp1, transcendental.expm1_1, transcendental.log1, transcendental.log1p_unit
))


def test_vexp_and_vexpm1_accurate():
    x = np.concatenate([np.linspace(-708, 709, 20001), np.linspace(-1e-6, 1e-6, 101), np.linspace(-2, 2, 4001)])
    out = np.empty_like(x)
    vexp(x, out)
    assert _ulp_error(out, np.exp(x)) <= 4
    vexpm1(x, out)
    assert _ulp_error(out, np.expm1(x)) <= 4


def test_vlog_and_vlog1p_accurate():
    x = np.concatenate([np.geomspace(1e-300, 1e300, 20001), np.linspace(0.5, 3, 4001)])
    out = np.empty_like(x)
    vlog(x, out)
    assert _ulp_error(out[np.abs(np.log(x)) > 0], np.log(x)[np.abs(np.log(x)) > 0]) <= 4
    e = np.concatenate([np.linspace(0, 1, 10001), np.geomspace(1e-300, 1, 2001)])
    out = np.empty_like(e)
    vlog1p_unit(e, out)
    assert _ulp_error(out[e > 0], np.log1p(e[e > 0])) <= 4
    assert out[0] == 0.0


def test_activations_accurate():
    a = np.concatenate([np.linspace(-40, 40, 8001), np.linspace(-1e-5, 1e-5, 201), [-800.0, 800.0]])
    z = a.copy()
    activations.activate(2, z)
    assert _ulp_error(z[a != 0], np.tanh(a[a != 0])) <= 4
    z = a.copy()
    activations.activate(1, z)
    inside = np.abs(a) < 700  # beyond, e^−|a| is clamped at e^−708: σ is 0 or 1 to round-off anyway
    assert _ulp_error(z[inside], expit(a[inside])) <= 4
    assert np.all((z >= 0) & (z <= 1))
