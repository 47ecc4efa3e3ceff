"""Loss, gradient and predictions at pre-activations of thousands, against closed forms.

When every output pre-activation is far from the others (|a| ≥ 1000 for a logistic output, a lead
of ≥ 1000 for a softmax), the output y(x) is exactly 0 or 1 in float arithmetic, so the lab's
δ = y − t and the loss have limits that need no exp or log at all:

* logistic: y = [a > 0], ℓ = Σ_k max(a_k, 0) − t_k a_k, δ = s (y − t);
* softmax:  y = one-hot(argmax a), ℓ = s_t max(a) − Σ_k t_k a_k (s_t = Σ_k t_k), δ = s (s_t y − t);

and the gradient is ∂/∂coef = Xᵀ δ / Σ s + 2 λ coef, ∂/∂intercept = Σ_n δ_n / Σ s. Every kernel
path (each backend, and the compiled backends' BLAS paths) is held to these formulas, not only to
one another, so a wrong value they all shared would still fail. With hidden units saturated
instead (tanh = ±1, logistic = 0 or 1 exactly) σ'(a) is 0 and the lower layers' gradient is the
L2 term alone.

Predictions (``predict_proba``/``predict``) at |a| ~ 1e3–1e4 are checked against a softmax
written without the max-shift identity, for the Network and the scikit-learn estimators.
"""

import math

import numpy as np
import pytest

import fastbp

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 1e-6}  # float32: the probability targets are rounded
BIG = 2000.0
L2 = 2.0**-13  # small enough that 2 λ coef (0.5 for BIG) does not drown the data term's ±1s


def saturated_problem(output, m, target, seed=0):
    """A depth-0 network [2, m] and data whose every pre-activation is ≥ 1000 from saturation.

    The first input is ±1, ±2 or ±3 and meets coefficients of ±BIG: it decides every sign (and
    for softmax the leading class: class 0 for x0 > 0, class 1 for x0 < 0, by ≥ 2 BIG); the
    second input and the intercepts add at most a few tens. Every value is a small integer or
    half-integer times BIG, so a is exact in float32 too.
    """
    rng = np.random.default_rng(seed)
    n = 11
    x0 = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], n)
    X = np.c_[x0, rng.integers(-4, 5, n) / 2]
    if output == "logistic":
        coef = np.array([BIG * rng.choice([-1.0, 1.0], m), rng.integers(-8, 9, m).astype(float)])
        intercept = rng.integers(-5, 6, m).astype(float)
        T = rng.integers(0, 2, (n, m)).astype(float) if target == "labels" else rng.uniform(0, 1, (n, m))
        y = T.astype(np.int64) if target == "labels" else T
    else:
        coef = np.zeros((2, m))
        coef[0, :2] = [BIG, -BIG]
        coef[1] = rng.integers(-8, 9, m)
        intercept = rng.integers(-5, 6, m).astype(float)
        if target == "labels":
            y = rng.integers(0, m, n)
            T = np.eye(m)[y]
        else:
            T = y = rng.dirichlet(np.ones(m), n)
    if m == 1:
        y = y[:, 0]
    sw = rng.uniform(0.5, 2.0, n)
    sw[3] = 0.0  # a zero weight: that sample must not count at all
    return X, y, T, sw, coef, intercept


def closed_form(output, X, T, sw, coef, intercept, l2):
    """Loss and gradient (scikit-learn layout) of the saturated depth-0 network, in the limits
    above: no exp, no log."""
    A = X @ coef + intercept
    if output == "logistic":
        assert np.abs(A).min() >= 1000  # saturated: σ(a) is exactly 0 or 1
        Y = (A > 0).astype(float)
        loss_n = (np.maximum(A, 0) - T * A).sum(axis=1)
        delta = Y - T
    else:
        lead = np.sort(A, axis=1)
        assert (lead[:, -1] - lead[:, -2]).min() >= 1000  # the leader's softmax is exactly 1
        s_t = T.sum(axis=1)
        Y = np.eye(A.shape[1])[A.argmax(axis=1)]
        loss_n = s_t * A.max(axis=1) - (T * A).sum(axis=1)
        delta = s_t[:, None] * Y - T
    delta = delta * sw[:, None]
    total = sw.sum()
    loss = loss_n @ sw / total + l2 * np.sum(coef**2)
    grad = np.concatenate([(X.T @ delta / total + 2 * l2 * coef).ravel(), delta.sum(axis=0) / total])
    return loss, grad


CASES = [("logistic", 1, "labels"), ("logistic", 3, "labels"), ("logistic", 3, "proba"),
         ("softmax", 3, "labels"), ("softmax", 4, "proba")]


@pytest.mark.parametrize("output,m,target", CASES, ids=[f"{o}{m}-{t}" for o, m, t in CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_saturated_output_gradient_is_the_closed_form(relerr, kernel_path, output, m, target, dtype):
    """δ is exactly y − t with y ∈ {0, 1}: the gradient is ±(inputs) per sample, the loss |a| of a
    confidently wrong output; every path against the formula."""
    X, y, T, sw, coef, intercept = saturated_problem(output, m, target, seed=m)
    net = fastbp.Network([2, m], output=output, l2=L2, backend=kernel_path, dtype=dtype)
    W = net.pack([coef], [intercept])
    for weights in (sw, None):
        loss, grad = net.loss_and_grad(W, X, y, sample_weight=weights)
        ones = np.ones(len(X))
        want_loss, want_grad = closed_form(output, X, T, ones if weights is None else weights, coef, intercept, L2)
        assert np.isfinite(loss) and np.isfinite(grad).all()
        assert relerr(loss, want_loss) < RTOL[dtype], (loss, want_loss)
        assert relerr(grad, want_grad) < RTOL[dtype], np.c_[grad, want_grad]


@pytest.mark.parametrize("activation", ["tanh", "logistic"])
@pytest.mark.parametrize("output,m", [("softmax", 3), ("logistic", 2), ("identity", 2)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_saturated_hidden_units_pass_no_gradient_down(relerr, kernel_path, activation, output, m, dtype):
    """Hidden pre-activations of ±1000s: z is exactly ±1 (tanh) or 0/1 (logistic) and σ'(a) = 0,
    so the first layer's gradient is its L2 term alone and the output layer is a depth-0 network
    on the inputs z, whose loss and gradient the test computes itself."""
    rng = np.random.default_rng(7)
    n, n_in, h = 13, 2, 3
    X = rng.choice([-2.0, -1.0, 1.0, 2.0], (n, n_in))
    coef1 = np.array([[BIG, -BIG, BIG], [0.5, 0.25, -0.5]])  # |a1| ≥ BIG − 1 ≥ 1000
    b1 = np.array([1.0, -1.0, 0.5])
    coef2 = rng.uniform(-1, 1, (h, m))
    b2 = rng.uniform(-1, 1, m)
    sw = rng.uniform(0.5, 2.0, n)
    sw[5] = 0.0
    if output == "softmax":
        y = rng.integers(0, m, n)
        T = np.eye(m)[y]
    elif output == "logistic":
        T = rng.integers(0, 2, (n, m)).astype(float)
        y = T.astype(np.int64)
    else:
        T = y = rng.standard_normal((n, m))
    l2 = L2
    net = fastbp.Network([n_in, h, m], activation, output, l2=l2, backend=kernel_path, dtype=dtype)
    W = net.pack([coef1, coef2], [b1, b2])

    A1 = X @ coef1 + b1
    assert np.abs(A1).min() >= 1000
    Z = np.sign(A1) if activation == "tanh" else (A1 > 0).astype(float)
    A2 = Z @ coef2 + b2
    if output == "softmax":
        E = np.exp(A2 - A2.max(axis=1, keepdims=True))
        loss_n = np.log(E.sum(axis=1)) + A2.max(axis=1) - (T * A2).sum(axis=1)
        delta = E / E.sum(axis=1, keepdims=True) - T
    elif output == "logistic":
        loss_n = (np.logaddexp(0, A2) - T * A2).sum(axis=1)
        delta = 1 / (1 + np.exp(-A2)) - T
    else:
        loss_n = 0.5 * ((A2 - T) ** 2).sum(axis=1)
        delta = A2 - T
    delta *= sw[:, None]
    total = sw.sum()
    want_loss = loss_n @ sw / total + l2 * (np.sum(coef1**2) + np.sum(coef2**2))
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    assert relerr(loss, want_loss) < RTOL[dtype], (loss, want_loss)
    (g_coef1, g_coef2), (g_b1, g_b2) = net.unpack(grad)
    # σ'(a1) = 0: nothing but the penalty reaches the first layer
    np.testing.assert_allclose(g_coef1, 2 * l2 * coef1, rtol=1e-15, atol=1e-14)
    np.testing.assert_allclose(g_b1, 0.0, atol=1e-14)
    assert relerr(g_coef2, Z.T @ delta / total + 2 * l2 * coef2) < RTOL[dtype] * 10
    assert relerr(g_b2, delta.sum(axis=0) / total) < RTOL[dtype] * 10


# ---------------------------------------------------------------------------------- predictions
def softmax_without_shift(a):
    """p_k = 1 / Σ_j e^(a_j − a_k), each row on its own in Python floats: no max-shift, and a term
    whose exponent overflows makes p_k exactly 0."""
    rows = []
    for row in np.asarray(a, dtype=float):
        p = []
        for ak in row:
            diffs = [aj - ak for aj in row]
            p.append(0.0 if max(diffs) > 700 else 1.0 / math.fsum(math.exp(d) for d in diffs))
        rows.append(p)
    return np.array(rows)


def logistic_without_shift(a):
    """σ(a) = 1 / (1 + e^−a), 0 where e^−a overflows."""
    return np.array([[0.0 if -v > 700 else 1.0 / (1.0 + math.exp(-v)) for v in row] for row in a])


#: pre-activations of the prediction tests: thousands to ten thousand, positive and negative,
#: with close runners-up (differences of 0.5 to 3) so that the probabilities are not just 0 and 1
X_PRED = np.array([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0], [0.0, 1.0], [-2.0, -1.0], [0.5, 0.5]])
COEF_PRED = np.array([[5000.0, 4999.0, -5000.0], [1000.0, 1002.0, 3000.0]])  # exact in float32
INTERCEPT_PRED = np.array([0.5, -1.0, 2.0])


def reference_prediction(output, X, coefs, intercepts, activation="identity"):
    """The network's output computed here: a by matrix products, then the formulas above."""
    z = X
    for i, (c, b) in enumerate(zip(coefs, intercepts)):
        z = z @ c + b
        if i < len(coefs) - 1:
            z = {"identity": z, "relu": np.maximum(z, 0), "tanh": np.tanh(z)}[activation]
    if output == "softmax":
        return z, softmax_without_shift(z)
    if output == "logistic":
        return z, logistic_without_shift(z)
    return z, z


@pytest.mark.parametrize("output,m", [("softmax", 3), ("logistic", 3), ("logistic", 1), ("identity", 3)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_network_predictions_at_large_preactivations(backend, output, m, dtype):
    """predict_proba finite and equal to a softmax without max-shift (and logistic, identity
    alike) where e^a overflows; predict the matching labels or values."""
    coefs = [COEF_PRED[:, :m], np.eye(m)]  # a hidden identity layer: the forward pass is walked
    intercepts = [INTERCEPT_PRED[:m], np.zeros(m)]
    a, want = reference_prediction(output, X_PRED, coefs, intercepts)
    assert np.abs(a).max() >= 5000 and np.abs(a).min() >= 500
    net = fastbp.Network([2, m, m], activation="identity", output=output, backend=backend, dtype=dtype)
    W = net.pack(coefs, intercepts)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # even one that rounds right
        P = net.predict_proba(W, X_PRED)
        labels = net.predict(W, X_PRED)
    assert P.dtype == np.float64 and P.shape == (len(X_PRED), m)
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P, want, rtol=1e-12, atol=1e-300)
    if output == "softmax":
        assert ((want > 0.2) & (want < 0.8)).any()  # a close race is tested, not only 0 and 1
        np.testing.assert_array_equal(labels, want.argmax(axis=1))
    elif output == "logistic":
        expected = (a > 0).astype(np.int64)
        np.testing.assert_array_equal(labels, expected[:, 0] if m == 1 else expected)
    else:
        np.testing.assert_array_equal(labels, a)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 5 iterations
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regressor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_estimator_predictions_at_large_preactivations(backend, kind, dtype):
    """The estimators fitted (briefly) on each backend, then given weights with |a| in the
    thousands: predict_proba and predict as the formulas say, finite."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 2))
    if kind == "multiclass":
        y, m = rng.integers(0, 3, 40), 3
    elif kind == "binary":
        y, m = rng.integers(0, 2, 40), 1
    elif kind == "multilabel":
        y, m = rng.integers(0, 2, (40, 3)), 3
    else:
        y, m = rng.standard_normal((40, 3)), 3
    cls = fastbp.MLPRegressor if kind == "regressor" else fastbp.MLPClassifier
    est = cls(hidden_layer_sizes=(m,), activation="identity", max_iter=5, backend=backend, dtype=dtype)
    est.fit(X, y)
    est.coefs_ = [COEF_PRED[:, :m].astype(est.coefs_[0].dtype), np.eye(m, dtype=est.coefs_[1].dtype)]
    est.intercepts_ = [INTERCEPT_PRED[:m].astype(est.coefs_[0].dtype), np.zeros(m, dtype=est.coefs_[1].dtype)]
    output = {"multiclass": "softmax", "binary": "logistic", "multilabel": "logistic", "regressor": "identity"}[kind]
    a, want = reference_prediction(output, X_PRED, est.coefs_, est.intercepts_)
    with np.errstate(over="raise", invalid="raise"):
        pred = est.predict(X_PRED)
        P = est.predict(X_PRED) if kind == "regressor" else est.predict_proba(X_PRED)
    assert np.isfinite(P).all()
    if kind == "binary":
        np.testing.assert_allclose(P, np.c_[1 - want, want], rtol=1e-12, atol=1e-300)
        np.testing.assert_array_equal(pred, est.classes_[(a[:, 0] > 0).astype(int)])
    elif kind == "multiclass":
        np.testing.assert_allclose(P, want, rtol=1e-12, atol=1e-300)
        np.testing.assert_array_equal(pred, est.classes_[want.argmax(axis=1)])
    elif kind == "multilabel":
        np.testing.assert_allclose(P, want, rtol=1e-12, atol=1e-300)
        np.testing.assert_array_equal(pred, (a > 0).astype(int))
    else:
        np.testing.assert_allclose(P, a, rtol=1e-12)


def test_reference_formulas_are_what_they_say():
    """The test's own formulas at values a float can hold directly (so the cases above compare
    with something right)."""
    np.testing.assert_allclose(softmax_without_shift([[0.0, np.log(3.0)]]), [[0.25, 0.75]], rtol=1e-15)
    np.testing.assert_allclose(softmax_without_shift([[1000.0, 999.0, -1000.0]]),
                               [[1 / (1 + math.e**-1), math.e**-1 / (1 + math.e**-1), 0.0]], rtol=1e-15)
    np.testing.assert_allclose(logistic_without_shift(np.array([[0.0, 2000.0, -2000.0]])), [[0.5, 1.0, 0.0]])
