"""The exponential output (p = e^a, half the Poisson deviance): what the parity grid of
test_parity.py does not reach.

Every backend's kernel paths (numba's unit-major and sample-major tiles, several tiles and
blocks), the overflow contract (e^a past the compute dtype's range gives a loss and gradient that
are not finite, no error; a sample of weight zero never counts), the targets' validation and the
prediction e^a.
"""

import numpy as np
import pytest
from naive import naive_loss_and_grad

import fastbp

RTOL64, RTOL32 = 1e-12, 1e-5


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _counts(rng, n, m):
    T = rng.poisson(2.0, (n, m)).astype(np.float64)
    T[: n // 5] = 0.0  # many zeros: t log t = 0 there
    T[-1, 0] = 0.375  # a rate, not a count
    return T


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("n", [1, 17, 300, 1031])  # one sample, a part tile, several tiles and blocks
def test_every_backend_matches_numpy_at_many_sizes(backend, dtype, m, n):
    rng = np.random.default_rng(n + m)
    sizes = (4, 9, 6, m)
    X = rng.standard_normal((n, 4))
    T = _counts(rng, n, m)
    y = T[:, 0] if m == 1 else T
    sw = rng.uniform(0.0, 2.0, n)
    ref_net = fastbp.Network(sizes, "relu", "exponential", l2=0.02, backend="numpy")
    W = ref_net.init_weights(rng) * 1.5
    net = fastbp.Network(sizes, "relu", "exponential", l2=0.02, backend=backend, dtype=dtype)
    for weights in (None, sw):
        loss, grad = net.loss_and_grad(W, X, y, sample_weight=weights)
        ref_loss, ref_grad = ref_net.loss_and_grad(W, X, y, sample_weight=weights)
        rtol = RTOL64 if dtype == np.float64 else RTOL32
        assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
        assert _rel(grad, ref_grad) <= rtol


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_sample_major_kernel(monkeypatch, dtype):
    """numba's sample-major kernel (networks with a wide layer) evaluates the output on unit-major
    sub-tiles through its scalar output function: forced here on a small network."""
    if "numba" not in fastbp.available_backends():
        pytest.skip("numba is not available here")
    from fastbp.backends import numba_backend

    monkeypatch.setattr(numba_backend, "BLAS_MIN_COEFS", 1)
    monkeypatch.setattr(numba_backend, "TILE_ROWS", 512)
    rng = np.random.default_rng(4)
    n, sizes = 1300, (5, 9, 7, 3)
    net = fastbp.Network(sizes, "tanh", "exponential", l2=0.01, backend="numba", dtype=dtype)
    kernel = numba_backend.BACKEND.prepare(net.layout, 1)
    assert kernel.uses_blas and kernel.tile == 512
    X = rng.standard_normal((n, 5))
    T = _counts(rng, n, 3)
    sw = rng.uniform(0.0, 2.0, n)
    sw[::7] = 0.0
    W = net.init_weights(rng) * 2
    f = net.bind(X, T, sw)
    ref = fastbp.Network(sizes, "tanh", "exponential", l2=0.01, backend="numpy").loss_and_grad(W, X, T, sw)
    loss, grad = kernel(W, f.X, f.T, f.sample_weight, f.scale, 0.01)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    assert abs(loss - ref[0]) <= rtol * abs(ref[0])
    assert _rel(grad, ref[1]) <= rtol


def test_naive_reference_is_the_poisson_deviance():
    """The naive reference (the grid's oracle) against the deviance written out for a linear
    model: ℓ = t log(t / p) − t + p, p = e^(x·w + b), gradient (p − t) x."""
    X = np.array([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.0]])
    t = np.array([3.0, 0.0, 1.5])
    w, b = np.array([0.4, -0.2]), 0.1
    p = np.exp(X @ w + b)
    dev = np.where(t > 0, t * np.log(np.where(t > 0, t, 1) / p), 0) - t + p
    loss, grad = naive_loss_and_grad((2, 1), "identity", "exponential", 0.0, np.r_[w, b], X, t[:, None])
    np.testing.assert_allclose(loss, dev.mean(), rtol=1e-14)
    np.testing.assert_allclose(grad, np.r_[X.T @ (p - t), (p - t).sum()] / 3, rtol=1e-14)


# ------------------------------------------------------------------------------------ overflow
LIMITS = {np.float64: 709.782712893384, np.float32: 88.72283935546875}  # log of the largest finite


def _one_unit(backend, dtype, a_values, t=2.0, sw=None):
    """Loss and gradient of Network([1, 1], exponential) where sample i has pre-activation
    a_i = 1000 x_i (small x: the gradient Σ δ x stays finite while e^a nears the limit)."""
    net = fastbp.Network([1, 1], output="exponential", backend=backend, dtype=dtype)
    X = np.asarray(a_values, dtype=np.float64)[:, None] / 1000
    W = np.array([1000.0, 0.0])
    return net.loss_and_grad(W, X, np.full(len(X), t), sample_weight=sw)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_just_below_overflow_is_finite_and_agrees(backend, dtype):
    """Up to the dtype's limit e^a is finite and every backend agrees with NumPy's exp (for
    numba this crosses the range where e^a is evaluated as (e^(a/2))²)."""
    lim = LIMITS[dtype]
    a = [lim - 0.5, lim - 1.2, lim - 30.0]
    loss, grad = _one_unit(backend, dtype, a)
    ref_loss, ref_grad = _one_unit("numpy", dtype, a)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    assert _rel(grad, ref_grad) <= rtol
    if dtype == np.float64:  # and the value is the deviance, ℓ = e^a − t a + t log t − t
        a = np.array(a)
        expected = np.mean(np.exp(a) - 2.0 * a + 2.0 * np.log(2.0) - 2.0)
        assert abs(ref_loss - expected) <= 1e-10 * expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_past_overflow_the_loss_is_inf_and_nothing_raises(backend, dtype):
    lim = LIMITS[dtype]
    for a in ([lim + 0.01], [lim + 1000.0], [0.5, lim + 2.0]):
        loss, grad = _one_unit(backend, dtype, a)
        assert loss == np.inf, (a, loss)
        assert not np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_sample_of_weight_zero_never_counts_even_overflowing(backend, dtype):
    lim = LIMITS[dtype]
    a = [0.3, lim + 5.0, -1.0]
    loss, grad = _one_unit(backend, dtype, a, sw=np.array([1.0, 0.0, 2.0]))
    kept_loss, kept_grad = _one_unit(backend, dtype, [0.3, -1.0], sw=np.array([1.0, 2.0]))
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert abs(loss - kept_loss) <= 1e-14 * abs(kept_loss)
    np.testing.assert_allclose(grad, kept_grad, rtol=1e-14, atol=1e-300)


# ------------------------------------------------------------------------ targets, prediction
@pytest.mark.parametrize("y", [[1.0, -0.5, 2.0], [[1.0, 0.0], [0.0, -3.0], [2.0, 2.0]]])
def test_negative_targets_raise(y):
    y = np.asarray(y)
    m = 1 if y.ndim == 1 else 2
    net = fastbp.Network([2, 3, m], output="exponential")
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="non-negative"):
        net.loss_and_grad(net.init_weights(0), X, y)
    with pytest.raises(ValueError, match="non-negative"):
        net.bind(X, y)


def test_zero_and_fractional_targets_accepted():
    net = fastbp.Network([2, 1], output="exponential")
    loss, _ = net.loss_and_grad(np.zeros(3), np.zeros((3, 2)), np.array([0.0, 0.5, 7.0]))
    # a = 0, p = 1: ℓ = t log t − t + 1 per sample
    t = np.array([0.0, 0.5, 7.0])
    np.testing.assert_allclose(loss, np.mean(np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0) - t + 1))


def test_predict_is_exp_of_the_preactivation():
    net = fastbp.Network([2, 4, 2], activation="tanh", output="exponential")
    W = net.init_weights(3)
    X = np.random.default_rng(0).standard_normal((6, 2))
    coefs, intercepts = net.unpack(W)
    a = np.tanh(X @ coefs[0] + intercepts[0]) @ coefs[1] + intercepts[1]
    np.testing.assert_allclose(net.predict_proba(W, X), np.exp(a), rtol=1e-14)
    np.testing.assert_allclose(net.predict(W, X), np.exp(a), rtol=1e-14)
    one = fastbp.Network([2, 1], output="exponential")
    assert one.predict(np.zeros(3), X).shape == (6,)
