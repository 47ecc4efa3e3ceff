"""scikit-learn as an outside oracle: the same loss and gradient at the same weights.

With λ = alpha / (2 Σ sample weights), fastbp's loss and gradient equal
``MLPClassifier._loss_grad_lbfgs`` (binary, multiclass, multi-label) and
``MLPRegressor._loss_grad_lbfgs`` (one output). For several identity outputs scikit-learn's
reported loss averages the per-output half squared error over outputs while its gradient sums
(scikit-learn issue #8349); fastbp sums in both, so its gradient equals scikit-learn's and its
data term is n_outputs times scikit-learn's. ``MLPRegressor(loss="poisson")`` sums its half
Poisson deviance over outputs, as fastbp's exponential output does: equal for any number of
outputs.

The estimator is set up the simplest robust way: fitted for one iteration on the same data (which
builds ``coefs_``, ``_coef_indptr``, ``out_activation_``, the label binarizer...), then
``_loss_grad_lbfgs`` is called at our weights with freshly allocated work lists, exactly as
``_fit_lbfgs`` calls it.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

import fastbp

RTOL = 1e-10
HIDDEN = (5, 3)
ALPHA = 0.37


def fit_one_iteration(est, X, y, sample_weight):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y, sample_weight=sample_weight)
    return est


def sklearn_loss_grad(est, W, X, Y, sample_weight):
    """``est._loss_grad_lbfgs`` at the flat weights ``W``; Y as scikit-learn uses it internally."""
    units = [X.shape[1], *est.hidden_layer_sizes, est.n_outputs_]
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(units) - 1)
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]
    loss, grad = est._loss_grad_lbfgs(
        W.copy(), X, Y, sample_weight, activations, deltas, coef_grads, intercept_grads
    )
    return float(loss), np.asarray(grad)


def make_data(kind, n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    if kind == "binary":
        y = rng.integers(0, 2, n)
    elif kind == "multiclass":
        y = rng.integers(0, 4, n)
    elif kind == "multilabel":
        y = rng.integers(0, 2, (n, 3))
    elif kind == "regression":
        y = rng.standard_normal(n)
    else:  # multi-output regression
        y = rng.standard_normal((n, 3))
    return X, y


def weights_for(kind, n, seed=1):
    if kind == "none":
        return None
    rng = np.random.default_rng(seed)
    sw = rng.uniform(0.1, 4.0, n)
    if kind == "integer":
        sw = rng.integers(0, 4, n).astype(np.float64)
        sw[0] = 2.0
    return sw


@pytest.mark.parametrize("sample_weight", ["none", "real", "integer"])
@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
@pytest.mark.parametrize(
    "kind,output",
    [("binary", "logistic"), ("multiclass", "softmax"), ("multilabel", "logistic"), ("regression", "identity")],
)
def test_equals_sklearn_loss_grad_lbfgs(relerr, backend, kind, output, activation, sample_weight):
    X, y = make_data(kind)
    sw = weights_for(sample_weight, len(X))
    Est = MLPRegressor if kind == "regression" else MLPClassifier
    est = fit_one_iteration(
        Est(hidden_layer_sizes=HIDDEN, activation=activation, alpha=ALPHA, solver="lbfgs", max_iter=1, random_state=0),
        X, y, sw,
    )
    assert est.out_activation_ == output  # the oracle really is the loss we claim to compare with
    Y = y.reshape(len(y), -1) if kind == "regression" else est._label_binarizer.transform(y).astype(bool)

    m = Y.shape[1]
    sw_sum = len(X) if sw is None else sw.sum()
    net = fastbp.Network((4, *HIDDEN, m), activation=activation, output=output, l2=ALPHA / (2 * sw_sum),
                         backend=backend)
    W = np.random.default_rng(2).uniform(-1, 1, net.n_params)

    sk_loss, sk_grad = sklearn_loss_grad(est, W, X, Y, sw)
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    assert relerr(loss, sk_loss) < RTOL, (loss, sk_loss)
    assert relerr(grad, sk_grad) < RTOL


@pytest.mark.parametrize("sample_weight", ["none", "real"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_multioutput_regression_gradient_equal_loss_consistent(relerr, backend, activation, sample_weight):
    """Several identity outputs: gradient equal; fastbp's data term = n_outputs × scikit-learn's
    (scikit-learn averages its reported loss over outputs, but not its gradient: issue #8349)."""
    X, y = make_data("multioutput")
    sw = weights_for(sample_weight, len(X))
    est = fit_one_iteration(
        MLPRegressor(hidden_layer_sizes=HIDDEN, activation=activation, alpha=ALPHA, solver="lbfgs", max_iter=1,
                     random_state=0),
        X, y, sw,
    )
    m = y.shape[1]
    sw_sum = len(X) if sw is None else sw.sum()
    lam = ALPHA / (2 * sw_sum)
    net = fastbp.Network((4, *HIDDEN, m), activation=activation, output="identity", l2=lam, backend=backend)
    W = np.random.default_rng(2).uniform(-1, 1, net.n_params)

    sk_loss, sk_grad = sklearn_loss_grad(est, W, X, y, sw)
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    assert relerr(grad, sk_grad) < RTOL
    coef = W[: net.layout.n_coef]
    penalty = lam * coef @ coef  # identical in both: scikit-learn's 0.5 alpha Σ W² / Σ s
    assert relerr(loss - penalty, m * (sk_loss - penalty)) < RTOL
    # and the relation is not vacuous: the two reported losses really differ
    assert abs(loss - sk_loss) > 0.1 * abs(loss)

    # with no penalty the whole loss is exactly n_outputs times scikit-learn's
    est.alpha = 0.0
    net0 = fastbp.Network((4, *HIDDEN, m), activation=activation, output="identity", backend=backend)
    sk_loss0, sk_grad0 = sklearn_loss_grad(est, W, X, y, sw)
    loss0, grad0 = net0.loss_and_grad(W, X, y, sample_weight=sw)
    assert relerr(loss0, m * sk_loss0) < RTOL
    assert relerr(grad0, sk_grad0) < RTOL


@pytest.mark.parametrize("n_classes", [2, 3])
def test_fitted_sklearn_weights_round_trip(relerr, backend, n_classes):
    """A fitted MLPClassifier's coefs_/intercepts_ pack into our layout as they are, unpack back to
    the same arrays, and give scikit-learn's predict_proba, predict and final loss."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] * X[:, 1] > 0).astype(int) if n_classes == 2 else np.digitize(X[:, 0] + X[:, 1], [-0.7, 0.7])
    mlp = MLPClassifier(hidden_layer_sizes=(6, 5), activation="tanh", alpha=1e-3, solver="lbfgs", max_iter=200,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)
    m = 1 if n_classes == 2 else n_classes
    net = fastbp.Network([3, 6, 5, m], activation="tanh", l2=1e-3 / (2 * len(X)), backend=backend)

    W = net.pack(mlp.coefs_, mlp.intercepts_)
    coefs, intercepts = net.unpack(W)
    for mine, theirs in zip(coefs + intercepts, mlp.coefs_ + mlp.intercepts_):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(net.pack(coefs, intercepts), W)

    proba = net.predict_proba(W, X)
    sk_proba = mlp.predict_proba(X)
    if n_classes == 2:
        assert proba.shape == (len(X), 1)
        sk_proba = sk_proba[:, 1:]
    assert relerr(proba, sk_proba) < 1e-12
    np.testing.assert_array_equal(net.predict(W, X), mlp.predict(X))
    # scikit-learn's loss_ is the loss at its final weights: ours agrees there too
    loss, _ = net.loss_and_grad(W, X, y)
    assert relerr(loss, mlp.loss_) < RTOL


@pytest.mark.parametrize("sample_weight", ["none", "real", "integer"])
@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_poisson_equals_sklearn_loss_grad_lbfgs(relerr, backend, activation, n_outputs, sample_weight):
    """``MLPRegressor(loss="poisson")`` is fastbp's exponential output. scikit-learn's
    ``poisson_loss`` is ``np.average(xlogy(t, t / p) − t + p, weights, axis=0).sum()``: the
    weighted mean over samples of each output's half deviance, summed over the outputs, which is
    fastbp's Σ_n s_n Σ_k ℓ_nk / Σ_n s_n. So, unlike the squared error (#8349), loss and gradient
    are both equal for any number of outputs."""
    rng = np.random.default_rng(n_outputs)
    X = rng.standard_normal((40, 4))
    y = rng.poisson(np.exp(0.5 * X[:, :n_outputs]), (40, n_outputs)).astype(np.float64)
    y[:5] = 0.0
    if n_outputs == 1:
        y = y[:, 0]
    sw = weights_for(sample_weight, len(X))
    est = fit_one_iteration(
        MLPRegressor(loss="poisson", hidden_layer_sizes=HIDDEN, activation=activation, alpha=ALPHA, solver="lbfgs",
                     max_iter=1, random_state=0),
        X, y, sw,
    )
    assert est.out_activation_ == "exp"  # scikit-learn's name for the exponential output
    sw_sum = len(X) if sw is None else sw.sum()
    net = fastbp.Network((4, *HIDDEN, n_outputs), activation=activation, output="exponential",
                         l2=ALPHA / (2 * sw_sum), backend=backend)
    W = np.random.default_rng(2).uniform(-0.7, 0.7, net.n_params)
    sk_loss, sk_grad = sklearn_loss_grad(est, W, X, y.reshape(len(y), -1), sw)
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    assert relerr(loss, sk_loss) < RTOL, (loss, sk_loss)
    assert relerr(grad, sk_grad) < RTOL
