"""Every backend against the naive per-sample reference and against central finite differences.

The grid: every hidden activation × every output form (logistic with one output and with several
= multi-label, with 0/1 labels and with probabilities; softmax with integer labels and with
probability rows; identity and exponential (Poisson) with one and with several outputs) × depths
0 to 4 with odd widths ×
with and without sample weights, at l2 > 0. Problems are tiny (n = 7, widths ≤ 5) because the
reference is plain Python. The comparisons with the reference (float64 and float32) also run the
compiled backends' BLAS paths (``kernel_path``: Numba's sample-major kernel, Cython's BLAS
layers), which these small networks reach only when forced.
"""

import numpy as np
import pytest
from naive import naive_loss_and_grad

import fastbp

ACTIVATIONS = ("logistic", "tanh", "relu", "identity")

#: hidden widths per depth (number of hidden layers); all odd, width 1 included
HIDDEN = {0: (), 1: (5,), 2: (3, 5), 3: (5, 1, 3), 4: (3, 5, 3, 5)}
N_INPUTS = 3

#: id -> (output, n_outputs, target form)
OUTPUTS = {
    "logistic1-labels": ("logistic", 1, "labels"),
    "logistic1-proba": ("logistic", 1, "proba"),
    "logistic3-multilabel": ("logistic", 3, "labels"),
    "logistic3-proba": ("logistic", 3, "proba"),
    "softmax3-labels": ("softmax", 3, "labels"),
    "softmax3-proba": ("softmax", 3, "proba"),
    "identity1": ("identity", 1, "values"),
    "identity3": ("identity", 3, "values"),
    "exponential1": ("exponential", 1, "counts"),
    "exponential3": ("exponential", 3, "counts"),
}

L2 = 0.05
RTOL_F64 = 1e-12  # vs the naive reference, float64: round-off only
RTOL_F32 = 1e-5  # float32 compute vs the float64 result
FD_STEP = 1e-6
FD_TOL = 1e-7

grid = pytest.mark.parametrize(
    "activation,out_id,depth,weighted",
    [
        (act, out_id, depth, weighted)
        for act in ACTIVATIONS
        for out_id in OUTPUTS
        for depth in HIDDEN
        for weighted in (False, True)
    ],
    ids=lambda v: {True: "weighted", False: "unweighted"}.get(v, str(v)) if isinstance(v, bool) else str(v),
)


def setup(problem, backend, activation, out_id, depth, weighted, l2=L2, dtype=np.float64, seed=0):
    output, m, target = OUTPUTS[out_id]
    sizes = (N_INPUTS, *HIDDEN[depth], m)
    p = problem(sizes, output, target, n=7, seed=seed + 97 * depth, weighted=weighted)
    net = fastbp.Network(sizes, activation=activation, output=output, l2=l2, backend=backend, dtype=dtype)
    return net, p


def naive(p, activation, l2=L2):
    return naive_loss_and_grad(p.layer_sizes, activation, p.output, l2, p.W, p.X, p.T, p.sw)


@grid
def test_matches_naive_reference(problem, relerr, kernel_path, activation, out_id, depth, weighted):
    net, p = setup(problem, kernel_path, activation, out_id, depth, weighted)
    loss, grad = net.loss_and_grad(p.W, p.X, p.y, sample_weight=p.sw)
    ref_loss, ref_grad = naive(p, activation)
    assert grad.shape == ref_grad.shape
    assert relerr(loss, ref_loss) < RTOL_F64, (loss, ref_loss)
    assert relerr(grad, ref_grad) < RTOL_F64, np.c_[grad, ref_grad]


@grid
def test_matches_central_differences(problem, backend, activation, out_id, depth, weighted):
    net, p = setup(problem, backend, activation, out_id, depth, weighted)
    f = net.bind(p.X, p.y, sample_weight=p.sw)
    _, grad = f(p.W)
    fd = np.empty_like(grad)
    for i in range(p.W.size):
        e = np.zeros_like(p.W)
        e[i] = FD_STEP
        fd[i] = (f(p.W + e)[0] - f(p.W - e)[0]) / (2 * FD_STEP)
    err = np.linalg.norm(fd - grad) / max(1.0, np.linalg.norm(grad))
    assert err < FD_TOL, np.c_[grad, fd]


@grid
def test_float32_close_to_float64_reference(problem, relerr, kernel_path, activation, out_id, depth, weighted):
    net32, p = setup(problem, kernel_path, activation, out_id, depth, weighted, dtype=np.float32)
    ref_loss, ref_grad = naive(p, activation)
    # the float64 inputs, and their float32 copies, give the same float32 computation
    for X in (p.X, p.X.astype(np.float32)):
        loss, grad = net32.loss_and_grad(p.W, X, p.y, sample_weight=p.sw)
        assert type(loss) is float
        assert grad.dtype == np.float64 and grad.shape == ref_grad.shape
        assert relerr(loss, ref_loss) < RTOL_F32, (loss, ref_loss)
        assert relerr(grad, ref_grad) < RTOL_F32, np.c_[grad, ref_grad]


@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_no_penalty_matches_naive(problem, relerr, backend, out_id):
    """l2 = 0 exactly: the data term alone (and no penalty leaks into the gradient)."""
    net, p = setup(problem, backend, "tanh", out_id, 2, True, l2=0.0)
    loss, grad = net.loss_and_grad(p.W, p.X, p.y, sample_weight=p.sw)
    ref_loss, ref_grad = naive(p, "tanh", l2=0.0)
    assert relerr(loss, ref_loss) < RTOL_F64
    assert relerr(grad, ref_grad) < RTOL_F64


def test_penalty_is_lambda_sum_of_squared_coefficients(problem, backend):
    """The difference between l2 = λ and l2 = 0 is λ Σ coef² and 2 λ coef, intercepts untouched."""
    sizes = (3, 5, 3, 2)
    p = problem(sizes, "softmax", "labels", n=7, seed=5)
    lam = 0.3
    base = fastbp.Network(sizes, activation="relu", backend=backend)
    pen = fastbp.Network(sizes, activation="relu", l2=lam, backend=backend)
    l0, g0 = base.loss_and_grad(p.W, p.X, p.y)
    l1, g1 = pen.loss_and_grad(p.W, p.X, p.y)
    n_coef = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    coef = p.W[:n_coef]
    np.testing.assert_allclose(l1 - l0, lam * np.sum(coef**2), rtol=1e-12)
    np.testing.assert_allclose(g1[:n_coef] - g0[:n_coef], 2 * lam * coef, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(g1[n_coef:], g0[n_coef:])


def test_sample_weights_equal_repeated_samples(problem, relerr, backend):
    """Integer sample weights are the same as repeating the samples (an independent check of the
    weighted mean, not via the reference)."""
    sizes = (3, 5, 3, 3)
    p = problem(sizes, "softmax", "labels", n=7, seed=11)
    counts = np.array([1, 3, 0, 2, 1, 4, 1])
    net = fastbp.Network(sizes, activation="logistic", l2=0.01, backend=backend)
    lw, gw = net.loss_and_grad(p.W, p.X, p.y, sample_weight=counts)
    lr, gr = net.loss_and_grad(p.W, np.repeat(p.X, counts, axis=0), np.repeat(p.y, counts))
    assert relerr(lw, lr) < 1e-12
    assert relerr(gw, gr) < 1e-12


def test_closed_form_linear_regression(relerr, backend):
    """Zero hidden layers with an identity output is linear least squares: check loss and
    gradient against the closed form ½ mean ‖XA + b − T‖² + λ ‖A‖²."""
    rng = np.random.default_rng(3)
    X, T = rng.standard_normal((9, 4)), rng.standard_normal((9, 2))
    A, b = rng.standard_normal((4, 2)), rng.standard_normal(2)
    lam = 0.2
    net = fastbp.Network([4, 2], output="identity", l2=lam, backend=backend)
    W = np.concatenate([A.ravel(), b])
    loss, grad = net.loss_and_grad(W, X, T)
    R = X @ A + b - T
    assert relerr(loss, 0.5 * np.sum(R**2) / 9 + lam * np.sum(A**2)) < 1e-13
    assert relerr(grad, np.concatenate([(X.T @ R / 9 + 2 * lam * A).ravel(), R.mean(axis=0)])) < 1e-13


@pytest.mark.parametrize("output,m", [("logistic", 1), ("logistic", 3), ("softmax", 3)])
def test_extreme_preactivations_stay_finite(backend, output, m):
    """Cross-entropies are computed from a (log-sum-exp), so |a| ~ 1e3 gives finite results and the
    exact limits: loss ≈ |a| for a confidently wrong sample, gradient ±1 per unit of weight."""
    X = np.array([[1.0], [1.0]])
    y = np.zeros((2, m)) if output == "logistic" else np.array([0, 0])
    if m == 1:
        y = y[:, 0]
    net = fastbp.Network([1, m], output=output, backend=backend)
    big = 1000.0
    coefs = np.full((1, m), big)
    if output == "softmax":
        coefs = np.array([[0.0, big, 0.0]])  # class 1 far ahead, the target is class 0
    W = net.pack([coefs], [np.zeros(m)])
    loss, grad = net.loss_and_grad(W, X, y)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    expected = big * (m if output == "logistic" else 1)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    # δ = y − t with y exactly 1 (logistic) or one-hot on class 1 (softmax), x = 1: ∂/∂coef and
    # ∂/∂intercept are δ itself (tests/test_extreme_preactivations.py has the general case)
    delta = np.ones(m) if output == "logistic" else np.array([-1.0, 1.0, 0.0])
    np.testing.assert_allclose(grad, np.concatenate([delta, delta]), rtol=1e-12, atol=1e-300)
