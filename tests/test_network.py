"""The Network API: what callers and optimizers rely on, for every backend.

Types and shapes of the results, determinism, no aliasing between calls, ``bind`` ≡
``loss_and_grad``, the ε rule of ``init_weights``, ``pack``/``unpack`` (scikit-learn's layout,
views, inverse), prediction conventions, and ``minimize`` separating XOR.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import fastbp


def data(n=25, n_in=3, m=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    y = rng.integers(0, m, n) if m > 1 else rng.integers(0, 2, n)
    sw = rng.uniform(0.1, 2.0, n)
    return X, y, sw


# ------------------------------------------------------------------------ results and calls


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_result_types(backend, dtype):
    X, y, sw = data()
    net = fastbp.Network([3, 5, 4, 3], activation="relu", l2=0.01, backend=backend, dtype=dtype)
    W = net.init_weights(random_state=0)
    for loss, grad in (net.loss_and_grad(W, X, y), net.loss_and_grad(W, X, y, sw), net.bind(X, y)(W)):
        assert type(loss) is float
        assert type(grad) is np.ndarray
        assert grad.dtype == np.float64 and grad.shape == (net.n_params,)
        assert grad.flags.c_contiguous and grad.flags.writeable


def test_bind_agrees_with_loss_and_grad(backend):
    X, y, sw = data()
    net = fastbp.Network([3, 5, 3], activation="tanh", l2=0.1, backend=backend)
    W = net.init_weights(random_state=1)
    for s in (None, sw):
        f = net.bind(X, y, sample_weight=s)
        direct = net.loss_and_grad(W, X, y, sample_weight=s)
        for loss, grad in (f(W), f.loss_and_grad(W)):
            assert loss == direct[0]
            np.testing.assert_array_equal(grad, direct[1])


@pytest.mark.parametrize("n_threads", [None, 1, 2])
def test_repeated_calls_are_bit_identical(backend, n_threads):
    X, y, sw = data(n=3000, n_in=5)  # big enough for a threaded kernel to split the samples
    net = fastbp.Network([5, 7, 3], activation="logistic", l2=0.01, backend=backend, n_threads=n_threads)
    twin = fastbp.Network([5, 7, 3], activation="logistic", l2=0.01, backend=backend, n_threads=n_threads)
    W = net.init_weights(random_state=2)
    f = net.bind(X, y, sample_weight=sw)
    first = f(W)
    for loss, grad in [f(W) for _ in range(3)] + [net.loss_and_grad(W, X, y, sw), twin.bind(X, y, sw)(W)]:
        assert loss == first[0]
        np.testing.assert_array_equal(grad, first[1])


def test_thread_counts_agree_to_round_off(backend):
    X, y, sw = data(n=3000, n_in=5)
    W = fastbp.Network([5, 7, 3]).init_weights(random_state=3)
    results = [
        fastbp.Network([5, 7, 3], backend=backend, n_threads=k).loss_and_grad(W, X, y, sw) for k in (1, 2, 3)
    ]
    for loss, grad in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], rtol=1e-12)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-10, atol=1e-14)


def test_grad_is_a_new_array_every_call(backend):
    X, y, _ = data()
    net = fastbp.Network([3, 5, 3], backend=backend)
    W = net.init_weights(random_state=0)
    f = net.bind(X, y)
    _, g1 = f(W)
    kept = g1.copy()
    _, g2 = f(W)
    _, g3 = net.loss_and_grad(W, X, y)
    assert not np.shares_memory(g1, g2) and not np.shares_memory(g2, g3)
    assert not np.shares_memory(g1, W)
    g1[:] = 1e9  # an optimizer may keep and change what it was given
    _, g4 = f(W)
    np.testing.assert_array_equal(g2, kept)
    np.testing.assert_array_equal(g4, kept)


def test_W_forms_agree(backend):
    X, y, _ = data()
    net = fastbp.Network([3, 4, 3], backend=backend)
    W = np.round(net.init_weights(random_state=0) * 8) / 8  # exactly representable in float32
    ref = net.loss_and_grad(W, X, y)
    big = np.zeros(2 * W.size)
    big[::2] = W
    for w in (W.tolist(), W.astype(np.float32), big[::2], tuple(W)):
        loss, grad = net.loss_and_grad(w, X, y)
        assert loss == ref[0]
        np.testing.assert_array_equal(grad, ref[1])


def test_auto_backend_agrees_with_numpy():
    X, y, sw = data()
    W = fastbp.Network([3, 5, 3]).init_weights(random_state=0)
    auto = fastbp.Network([3, 5, 3], l2=0.1).loss_and_grad(W, X, y, sw)
    ref = fastbp.Network([3, 5, 3], l2=0.1, backend="numpy").loss_and_grad(W, X, y, sw)
    np.testing.assert_allclose(auto[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(auto[1], ref[1], rtol=1e-10, atol=1e-15)


def test_sigmoid_is_an_alias_of_logistic(backend):
    X, y, _ = data()
    a = fastbp.Network([3, 4, 3], activation="sigmoid", backend=backend)
    b = fastbp.Network([3, 4, 3], activation="logistic", backend=backend)
    assert a.activation == "logistic"
    W = a.init_weights(random_state=0)
    (loss_a, grad_a), (loss_b, grad_b) = a.loss_and_grad(W, X, y), b.loss_and_grad(W, X, y)
    assert loss_a == loss_b
    np.testing.assert_array_equal(grad_a, grad_b)  # σ' too, not only σ


def test_output_inferred_from_units():
    assert fastbp.Network([2, 3, 1]).output == "logistic"
    assert fastbp.Network([2, 3, 2]).output == "softmax"
    assert fastbp.Network([2, 3, 5], output="logistic").output == "logistic"
    assert fastbp.Network([2, 1], output="identity").output == "identity"


def test_configuration_is_read_only():
    net = fastbp.Network([2, 3, 1], l2=0.5)
    for attr, value in (("l2", 0.0), ("layer_sizes", (2, 1)), ("activation", "relu"), ("n_params", 3)):
        with pytest.raises(AttributeError):
            setattr(net, attr, value)
    assert net.l2 == 0.5 and net.layer_sizes == (2, 3, 1)


# ---------------------------------------------------------------------------- init_weights


def test_init_weights_follow_the_epsilon_rule():
    sizes = [40, 30, 20, 5]
    net = fastbp.Network(sizes)
    W = net.init_weights(random_state=0)
    assert W.dtype == np.float64 and W.shape == (net.n_params,)
    coefs, intercepts = net.unpack(W)
    for fan_in, fan_out, c, b in zip(sizes[:-1], sizes[1:], coefs, intercepts):
        eps = np.sqrt(2.0 / (fan_in + fan_out))
        for block in (c, b):
            assert np.abs(block).max() <= eps
        # uniform over the whole interval: reaches near both ends, mean near 0
        assert c.max() > 0.9 * eps and c.min() < -0.9 * eps
        assert abs(c.mean()) < 0.1 * eps
        assert np.abs(b).max() > 0.3 * eps  # intercepts are drawn too (not zeros)


def test_init_weights_are_reproducible():
    net = fastbp.Network([3, 6, 2])
    a, b = net.init_weights(random_state=42), net.init_weights(random_state=42)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, net.init_weights(random_state=43))
    np.testing.assert_array_equal(
        net.init_weights(random_state=np.random.default_rng(7)), net.init_weights(random_state=np.random.default_rng(7))
    )
    np.testing.assert_array_equal(
        net.init_weights(random_state=np.random.RandomState(7)), net.init_weights(random_state=np.random.RandomState(7))
    )
    assert not np.array_equal(net.init_weights(), net.init_weights())  # None: fresh entropy


# --------------------------------------------------------------------------- pack / unpack


def test_layout_is_scikit_learns():
    net = fastbp.Network([3, 4, 2])
    W = np.arange(net.n_params, dtype=np.float64)
    coefs, intercepts = net.unpack(W)
    assert [c.shape for c in coefs] == [(3, 4), (4, 2)]
    assert [b.shape for b in intercepts] == [(4,), (2,)]
    np.testing.assert_array_equal(coefs[0], np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(coefs[1], 12 + np.arange(8).reshape(4, 2))
    np.testing.assert_array_equal(intercepts[0], 20 + np.arange(4))
    np.testing.assert_array_equal(intercepts[1], 24 + np.arange(2))
    assert net.n_params == 26


def test_unpack_returns_views():
    net = fastbp.Network([3, 4, 2])
    W = np.zeros(net.n_params)
    coefs, intercepts = net.unpack(W)
    for block in coefs + intercepts:
        assert np.shares_memory(block, W)
    W[:] = 1.0
    assert all((block == 1).all() for block in coefs + intercepts)
    coefs[1][2, 1] = 5.0  # writes through to W at its C-order place
    assert W[12 + 2 * 2 + 1] == 5.0


def test_pack_makes_a_new_array_and_checks_shapes():
    net = fastbp.Network([3, 4, 2])
    W = net.init_weights(random_state=0)
    coefs, intercepts = net.unpack(W)
    W2 = net.pack(coefs, intercepts)
    np.testing.assert_array_equal(W2, W)
    assert not np.shares_memory(W2, W)
    with pytest.raises(ValueError, match="coefs"):
        net.pack([coefs[0].T, coefs[1]], intercepts)
    with pytest.raises(ValueError, match="intercepts"):
        net.pack(coefs, [intercepts[0][:-1], intercepts[1]])
    with pytest.raises(ValueError):
        net.pack(coefs[:1], intercepts[:1])
    with pytest.raises(ValueError, match="W"):
        net.unpack(W[:-1])


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=2, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_are_inverse_over_random_architectures(sizes, seed):
    net = fastbp.Network(sizes, output="identity")
    assert net.n_params == sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    W = np.random.default_rng(seed).standard_normal(net.n_params)
    coefs, intercepts = net.unpack(W)
    assert [c.shape for c in coefs] == list(zip(sizes[:-1], sizes[1:]))
    assert [b.shape for b in intercepts] == [(s,) for s in sizes[1:]]
    # scikit-learn's order: every coef in C order, then every intercept
    np.testing.assert_array_equal(np.concatenate([c.ravel() for c in coefs] + intercepts), W)
    np.testing.assert_array_equal(net.pack(coefs, intercepts), W)
    again_c, again_b = net.unpack(net.pack(coefs, intercepts))
    for x, y in zip(again_c + again_b, coefs + intercepts):
        np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------------------ prediction


def _forward(net, W, X):
    """An independent forward pass in NumPy for the prediction checks."""
    coefs, intercepts = net.unpack(W)
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0), "logistic": lambda a: 1 / (1 + np.exp(-a)),
           "identity": lambda a: a}[net.activation]
    z = X
    for i, (c, b) in enumerate(zip(coefs, intercepts)):
        z = z @ c + b
        if i < len(coefs) - 1:
            z = act(z)
    return z


@pytest.mark.parametrize(
    "sizes,output", [((3, 5, 1), "logistic"), ((3, 5, 4), "logistic"), ((3, 5, 4), "softmax"),
                     ((3, 5, 1), "identity"), ((3, 5, 2), "identity")],
)
def test_predict_conventions(sizes, output):
    X, _, _ = data()
    net = fastbp.Network(sizes, activation="tanh", output=output)
    W = net.init_weights(random_state=0) * 3
    a = _forward(net, W, X)
    P = net.predict_proba(W, X)
    pred = net.predict(W, X)
    assert P.shape == (len(X), sizes[-1]) and P.dtype == np.float64
    if output == "logistic":
        np.testing.assert_allclose(P, 1 / (1 + np.exp(-a)), rtol=1e-12)
        expected = (a > 0).astype(int)
    elif output == "softmax":
        e = np.exp(a - a.max(axis=1, keepdims=True))
        np.testing.assert_allclose(P, e / e.sum(axis=1, keepdims=True), rtol=1e-12)
        expected = a.argmax(axis=1)
    else:
        np.testing.assert_allclose(P, a, rtol=1e-12)
        expected = a
    if sizes[-1] == 1:
        expected = expected[:, 0]
    assert pred.shape == expected.shape
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


# --------------------------------------------------------------------------------- minimize

XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "sizes,activation",
    [([2, 4, 1], "tanh"), ([2, 10, 10, 10, 10, 1], "tanh"), ([2, 6, 2], "relu")],
    ids=["tanh-2-4-1", "lab-4-layer-tanh", "relu-softmax"],
)
def test_minimize_separates_xor(backend, sizes, activation):
    net = fastbp.Network(sizes, activation=activation, backend=backend)
    W0 = net.init_weights(random_state=0)
    res = minimize(net.bind(XOR_X, XOR_Y), W0, jac=True, method="L-BFGS-B")
    np.testing.assert_array_equal(net.predict(res.x, XOR_X), XOR_Y)
    assert res.fun < 0.1
    # also through loss_and_grad with args, as the contract shows
    res2 = minimize(net.loss_and_grad, W0, args=(XOR_X, XOR_Y), jac=True, method="L-BFGS-B")
    np.testing.assert_array_equal(net.predict(res2.x, XOR_X), XOR_Y)


def test_minimize_separates_xor_cloud_with_the_lab_network(backend):
    """The lab's 4-layer logistic network on a cloud of XOR points. (On the four corners alone it
    reaches the plateau at loss log 2 within 3 iterations, where the gradient is below L-BFGS-B's
    default gtol, and stops there; with gtol=1e-12 it does separate them.)"""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    net = fastbp.Network([2, 10, 10, 10, 10, 1], activation="logistic", backend=backend)
    res = minimize(net.bind(X, y), net.init_weights(random_state=0), jac=True, method="L-BFGS-B")
    np.testing.assert_array_equal(net.predict(res.x, X), y)
