"""Second order, every backend: Hessian-vector and Gauss-Newton products, the dense Hessian, the
least-squares residuals and their Jacobian.

Held to the independent per-sample reference of ``tests/naive.py`` (H V as forward-mode dual
numbers over the naive gradient; G V, r and ∂r/∂W from per-sample Jacobians), to central
differences of the gradient and of the residuals, to each other (hess against hessp, G against
JᵀJ and against H where the network is linear in W), across backends, and to scipy's solvers.
The grids are tiny (n = 7, widths ≤ 5) because the reference is plain Python.
"""

import functools

import numpy as np
import pytest
from naive import (
    naive_gauss_newton_product,
    naive_hessp,
    naive_residuals,
    naive_residuals_jacobian,
)
from scipy.optimize import least_squares, minimize

import fastbp
from fastbp.backends import numpy_rop
from fastbp.backends.numpy_backend import NumpyKernel
from fastbp.layout import OUTPUTS as LAYOUT_OUTPUTS

ACTIVATIONS = ("logistic", "tanh", "relu", "identity")
#: hidden widths per depth (number of hidden layers), as in test_parity
HIDDEN = {0: (), 1: (5,), 2: (3, 5), 4: (3, 5, 3, 5)}
N_INPUTS = 3

#: id -> (output, n_outputs, target form)
OUTPUTS = {
    "logistic1-labels": ("logistic", 1, "labels"),
    "logistic3-proba": ("logistic", 3, "proba"),
    "softmax3-labels": ("softmax", 3, "labels"),
    "softmax3-proba": ("softmax", 3, "proba"),
    "identity1": ("identity", 1, "values"),
    "identity3": ("identity", 3, "values"),
}
if "exponential" in LAYOUT_OUTPUTS:  # the Poisson output, once the layout has it
    OUTPUTS["exponential1"] = ("exponential", 1, "counts")
    OUTPUTS["exponential3"] = ("exponential", 3, "counts")

L2 = 0.05
RTOL_F64 = 1e-12  # vs the naive reference and across backends, float64: round-off only
# float32 computes every layer in float32 (unit round-off 6e-8) and sums in float64; the worst seen
# on these problems is 3e-7, the gradient's own float32 tests use the same 1e-5
RTOL_F32 = 1e-5
FD_STEP = 1e-5
FD_TOL = 1e-7


def make(problem, out_id, depth, weighted, seed=0, n=7):
    output, m, target = OUTPUTS[out_id]
    sizes = (N_INPUTS, *HIDDEN[depth], m)
    if target == "counts":  # non-negative counts for the exponential (Poisson) output
        p = problem(sizes, "identity", "values", n=n, seed=seed + 97 * depth, weighted=weighted)
        p.T = np.floor(3 * np.abs(p.T))
        p.y = p.T[:, 0] if m == 1 else p.T
        p.output = output
        p.W = p.W * 0.5  # keep exp(a) moderate
        return p
    return problem(sizes, output, target, n=n, seed=seed + 97 * depth, weighted=weighted)


def network(p, activation, backend, l2=L2, dtype=np.float64, **kw):
    return fastbp.Network(p.layer_sizes, activation=activation, output=p.output, l2=l2, backend=backend,
                          dtype=dtype, **kw)


def direction(n_params, seed=1):
    return np.random.default_rng(seed).standard_normal(n_params)


def hess_columns(product, n_params):
    """The dense matrix of a matrix-vector ``product``, one unit vector at a time."""
    return np.column_stack([product(e) for e in np.eye(n_params)])


@functools.cache
def naive_products(problem, activation, out_id, depth, weighted, gauss_newton):
    """The reference's H V (or G V) of a grid point, computed once for every backend."""
    p = make(problem, out_id, depth, weighted)
    V = direction(p.W.size)
    fn = naive_gauss_newton_product if gauss_newton else naive_hessp
    return fn(p.layer_sizes, activation, p.output, L2, p.W, V, p.X, p.T, p.sw)


grid = pytest.mark.parametrize(
    "activation,out_id,depth,weighted",
    [(a, o, d, w) for a in ACTIVATIONS for o in OUTPUTS for d in HIDDEN for w in (False, True)],
)


# ----------------------------------------------------------------------------- vs the reference
@grid
def test_hessp_matches_naive(problem, relerr, backend, activation, out_id, depth, weighted):
    p = make(problem, out_id, depth, weighted)
    net = network(p, activation, backend)
    hv = net.hessp(p.W, direction(p.W.size), p.X, p.y, sample_weight=p.sw)
    ref = naive_products(problem, activation, out_id, depth, weighted, False)
    assert hv.dtype == np.float64 and hv.shape == ref.shape
    assert relerr(hv, ref) < RTOL_F64, np.c_[hv, ref]


@pytest.mark.parametrize(
    "activation,out_id,depth,weighted",
    [(a, o, d, w) for a in ACTIVATIONS for o in OUTPUTS for d in (0, 2) for w in (False, True)],
)
def test_gauss_newton_product_matches_naive(problem, relerr, backend, activation, out_id, depth, weighted):
    p = make(problem, out_id, depth, weighted)
    net = network(p, activation, backend)
    gv = net.gauss_newton_product(p.W, direction(p.W.size), p.X, p.y, sample_weight=p.sw)
    ref = naive_products(problem, activation, out_id, depth, weighted, True)
    assert relerr(gv, ref) < RTOL_F64, np.c_[gv, ref]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_hessp_matches_central_differences_of_the_gradient(problem, backend, activation, out_id):
    p = make(problem, out_id, 2, True)
    f = network(p, activation, backend).bind(p.X, p.y, sample_weight=p.sw)
    V = direction(p.W.size)
    hv = f.hessp(p.W, V)
    fd = (f(p.W + FD_STEP * V)[1] - f(p.W - FD_STEP * V)[1]) / (2 * FD_STEP)
    assert np.linalg.norm(hv - fd) / max(1.0, np.linalg.norm(fd)) < FD_TOL, np.c_[hv, fd]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("out_id", [o for o in OUTPUTS if OUTPUTS[o][0] == "identity"])
@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_residuals_and_jacobian(problem, relerr, backend, activation, out_id, depth, weighted):
    p = make(problem, out_id, depth, weighted)
    f = network(p, activation, backend).bind(p.X, p.y, sample_weight=p.sw)
    r, J = f.residuals(p.W), f.residuals_jacobian(p.W)
    n_rows = p.X.shape[0] * p.layer_sizes[-1] + f.network.layout.n_coef
    assert r.shape == (n_rows,) and J.shape == (n_rows, p.W.size)
    assert relerr(r, naive_residuals(p.layer_sizes, activation, L2, p.W, p.X, p.T, p.sw)) < RTOL_F64
    assert relerr(J, naive_residuals_jacobian(p.layer_sizes, activation, L2, p.W, p.X, p.sw)) < RTOL_F64
    # ½‖r‖² is the loss
    assert relerr(0.5 * r @ r, f(p.W)[0]) < RTOL_F64
    # the Jacobian is the derivative of the residuals
    fd = np.column_stack([
        (f.residuals(p.W + FD_STEP * e) - f.residuals(p.W - FD_STEP * e)) / (2 * FD_STEP) for e in np.eye(p.W.size)
    ])
    assert np.abs(fd - J).max() < FD_TOL * max(1.0, np.abs(J).max())
    # and the Gauss-Newton matrix of half squared error is JᵀJ
    G = hess_columns(lambda v: f.gauss_newton_product(p.W, v), p.W.size)
    assert relerr(G, J.T @ J) < RTOL_F64


# -------------------------------------------------------------------------- structure of H, G
@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_hess_is_symmetric_and_equals_hessp_on_unit_vectors(problem, relerr, backend, out_id):
    p = make(problem, out_id, 2, True)
    f = network(p, "tanh", backend).bind(p.X, p.y, sample_weight=p.sw)
    H = f.hess(p.W)
    assert H.dtype == np.float64 and H.shape == (p.W.size, p.W.size)
    np.testing.assert_array_equal(H, H.T)
    assert relerr(H, hess_columns(lambda v: f.hessp(p.W, v), p.W.size)) < RTOL_F64
    # and H V by the dense matrix is the reference's H V
    assert relerr(H @ direction(p.W.size), naive_products(problem, "tanh", out_id, 2, True, False)) < RTOL_F64


@pytest.mark.parametrize("depth", [0, 2])
def test_upper_rows_hold_their_layers_and_above(problem, relerr, backend, depth):
    """hessp_block(..., upper=True), what Network.hess asks for: each row agrees with the whole
    row of H on the entries of its own layer and above (those Network.hess reads); the compiled
    kernels stop the backward pass there and leave exact zeros below, the reference may not."""
    p = make(problem, "softmax3-proba", depth, True)
    f = network(p, "tanh", backend).bind(p.X, p.y, sample_weight=p.sw)
    P = p.W.size
    E = np.eye(P)
    rows = f._kernel.hessp_block(p.W, E, f.X, f.T, f.sample_weight, f.scale, f._l2, upper=True)
    full = f._kernel.hessp_block(p.W, E, f.X, f.T, f.sample_weight, f.scale, f._l2)
    layer = f.network.layout.param_layer
    assert layer.shape == (P,) and set(layer) == set(range(depth + 1))
    needed = layer[None, :] >= layer[:, None]
    assert relerr(np.where(needed, rows, 0.0), np.where(needed, full, 0.0)) < RTOL_F64
    if backend != "numpy":
        assert not rows[~needed].any()
    if depth:  # rows that were whole would fail the line above
        assert np.count_nonzero(full[~needed]) > 0


def test_hess_in_blocks_equals_hess_in_one_block(problem, relerr, monkeypatch):
    """The dense Hessian assembled from many small blocks of directions (with a short last one)
    is the one of a single block."""
    p = make(problem, "softmax3-proba", 2, True)
    f = network(p, "logistic", "numpy").bind(p.X, p.y, sample_weight=p.sw)
    whole = f.hess(p.W)
    assert p.W.size == 50
    monkeypatch.setattr(NumpyKernel, "max_directions", 7)  # 7 blocks of 7 and one of 1
    blocks = f.hess(p.W)
    assert relerr(blocks, whole) < RTOL_F64
    monkeypatch.setattr(NumpyKernel, "max_directions", 50)  # exactly one block
    assert relerr(f.hess(p.W), whole) < RTOL_F64


@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_gauss_newton_is_positive_semidefinite(problem, backend, out_id):
    p = make(problem, out_id, 2, True)
    for l2 in (0.0, L2):
        f = network(p, "tanh", backend, l2=l2).bind(p.X, p.y, sample_weight=p.sw)
        G = hess_columns(lambda v, f=f: f.gauss_newton_product(p.W, v), p.W.size)
        np.testing.assert_allclose(G, G.T, rtol=0, atol=1e-14 * np.abs(G).max())
        eig = np.linalg.eigvalsh(0.5 * (G + G.T))
        assert eig.min() > -1e-12 * eig.max(), eig
    # while the Hessian itself is indefinite here (so the test could tell them apart)
    H = f.hess(p.W)
    assert np.linalg.eigvalsh(H).min() < 0


@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_gauss_newton_equals_hessian_without_hidden_layer(problem, relerr, backend, out_id):
    """With no hidden layer a^L is linear in W, so the only curvature is the loss's: G = H."""
    p = make(problem, out_id, 0, True)
    f = network(p, "logistic", backend).bind(p.X, p.y, sample_weight=p.sw)
    G = hess_columns(lambda v: f.gauss_newton_product(p.W, v), p.W.size)
    assert relerr(G, f.hess(p.W)) < RTOL_F64


def test_closed_form_linear_least_squares(relerr, backend):
    """No hidden layer, identity output: H = G = [XᵀX/n + 2λI, Xᵀ1/n; 1ᵀX/n, 1] per output, and
    the residual Jacobian is the design matrix."""
    rng = np.random.default_rng(4)
    X, T = rng.standard_normal((9, 3)), rng.standard_normal((9, 1))
    lam = 0.2
    net = fastbp.Network([3, 1], output="identity", l2=lam, backend=backend)
    W = rng.standard_normal(net.n_params)
    A = np.c_[X, np.ones(9)]
    expected = A.T @ A / 9 + np.diag([2 * lam] * 3 + [0])
    assert relerr(net.hess(W, X, T), expected) < 1e-13
    J = net.residuals_jacobian(W, X, T)
    assert relerr(J[:9], A / 3) < 1e-13
    assert relerr(J[9:], np.c_[np.sqrt(2 * lam) * np.eye(3), np.zeros(3)]) < 1e-13


def test_sample_weights_equal_repeated_samples(problem, relerr, backend):
    p = make(problem, "softmax3-labels", 2, False)
    counts = np.array([1, 3, 0, 2, 1, 4, 1])
    net = network(p, "tanh", backend)
    V = direction(p.W.size)
    Xr, yr = np.repeat(p.X, counts, axis=0), np.repeat(p.y, counts)
    for method in ("hessp", "gauss_newton_product"):
        w = getattr(net, method)(p.W, V, p.X, p.y, sample_weight=counts)
        assert relerr(w, getattr(net, method)(p.W, V, Xr, yr)) < 1e-12


#: δ = ∂ℓ/∂a of each output, written from the losses of README (not from fastbp)
OUTPUT_DELTAS = {
    "identity": lambda a, t: a - t,
    "logistic": lambda a, t: 1 / (1 + np.exp(-a)) - t,
    "softmax": lambda a, t: t.sum(axis=1, keepdims=True) * np.exp(a) / np.exp(a).sum(axis=1, keepdims=True) - t,
    "exponential": lambda a, t: np.exp(a) - t,  # half Poisson deviance, p = exp(a)
}


@pytest.mark.parametrize("output", sorted(numpy_rop.CURVATURE))
def test_output_curvature_table_is_the_derivative_of_delta(output):
    """Each entry of the NumPy reference's table Λ R{a} against central differences of δ(a)
    along R{a}, for a block of 4 directions (the exponential entry is checked here before the
    layout offers that output)."""
    assert set(numpy_rop.CURVATURE) == set(OUTPUT_DELTAS)
    rng = np.random.default_rng(0)
    a, ra = rng.standard_normal((5, 3)), rng.standard_normal((5, 4, 3))
    t = {"softmax": rng.dirichlet(np.ones(3), 5) * 0.7, "logistic": rng.uniform(0, 1, (5, 3)),
         "exponential": rng.poisson(2.0, (5, 3)).astype(float)}.get(output, rng.standard_normal((5, 3)))
    delta = OUTPUT_DELTAS[output]
    lam_r = numpy_rop.CURVATURE[output](a, t, ra)
    for d in range(4):
        fd = (delta(a + 1e-6 * ra[:, d], t) - delta(a - 1e-6 * ra[:, d], t)) / 2e-6
        np.testing.assert_allclose(lam_r[:, d], fd, rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ chunks, dtypes, backends
def test_chunks_of_samples_do_not_change_the_result(problem, relerr, monkeypatch):
    """The NumPy reference processes samples in chunks (memory independent of n): many small
    chunks, with a short last one, give the one-chunk result."""
    p = make(problem, "identity3", 2, True, n=23)
    f = network(p, "logistic", "numpy").bind(p.X, p.y, sample_weight=p.sw)
    V = direction(p.W.size)
    whole = [f.hessp(p.W, V), f.gauss_newton_product(p.W, V), f.hess(p.W), f.residuals_jacobian(p.W)]
    monkeypatch.setattr(numpy_rop, "CHUNK_VALUES", 120)
    assert numpy_rop.chunk_size(f.network.layout, 23, 1) < 23  # it really chunks now
    chunked = [f.hessp(p.W, V), f.gauss_newton_product(p.W, V), f.hess(p.W), f.residuals_jacobian(p.W)]
    for a, b in zip(chunked, whole):
        assert relerr(a, b) < RTOL_F64


@pytest.mark.parametrize("out_id", list(OUTPUTS))
def test_float32_close_to_float64(problem, relerr, backend, out_id):
    p = make(problem, out_id, 2, True)
    net32 = network(p, "tanh", backend, dtype=np.float32)
    net64 = network(p, "tanh", "numpy")
    V = direction(p.W.size)
    for method in ("hessp", "gauss_newton_product"):
        a = getattr(net32, method)(p.W, V, p.X, p.y, p.sw)
        assert a.dtype == np.float64
        assert relerr(a, getattr(net64, method)(p.W, V, p.X, p.y, p.sw)) < RTOL_F32
    assert relerr(net32.hess(p.W, p.X, p.y, p.sw), net64.hess(p.W, p.X, p.y, p.sw)) < RTOL_F32
    if p.output == "identity":
        for method in ("residuals", "residuals_jacobian"):
            a = getattr(net32, method)(p.W, p.X.astype(np.float32), p.y, p.sw)
            assert a.dtype == np.float64
            assert relerr(a, getattr(net64, method)(p.W, p.X, p.y, p.sw)) < RTOL_F32


@pytest.mark.parametrize(
    "sizes,activation,output",
    [((5, 7, 3), "logistic", "softmax"), ((4, 9, 6, 1), "relu", "logistic"), ((6, 8, 2), "tanh", "identity")],
)
@pytest.mark.parametrize("n", [300, 3000])
def test_backends_agree(relerr, backend, sizes, activation, output, n):
    """Every backend against numpy on more samples (enough for the compiled kernels' tiles and
    threads), weighted, and bit-identical from one call to the next."""
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, sizes[0]))
    m = sizes[-1]
    y = {"softmax": rng.integers(0, m, n), "logistic": rng.integers(0, 2, n),
         "identity": rng.standard_normal((n, m))}[output]
    sw = rng.uniform(0.1, 2.0, n)
    ref = fastbp.Network(sizes, activation=activation, output=output, l2=0.01, backend="numpy").bind(X, y, sw)
    f = fastbp.Network(sizes, activation=activation, output=output, l2=0.01, backend=backend).bind(X, y, sw)
    W = ref.network.init_weights(random_state=1)
    V = direction(W.size)
    calls = [lambda g: g.hessp(W, V), lambda g: g.gauss_newton_product(W, V)]
    if n == 300:
        calls.append(lambda g: g.hess(W))
    if output == "identity":
        calls += [lambda g: g.residuals(W), lambda g: g.residuals_jacobian(W)]
    for call in calls:
        result = call(f)
        assert relerr(result, call(ref)) < RTOL_F64
        np.testing.assert_array_equal(call(f), result)  # deterministic


def test_results_are_new_arrays_and_inputs_unchanged(problem, backend):
    p = make(problem, "identity3", 2, True)
    f = network(p, "tanh", backend).bind(p.X, p.y, sample_weight=p.sw)
    W, V = p.W.copy(), direction(p.W.size)
    V0 = V.copy()
    results = [f.hessp(W, V), f.hessp(W, V), f.gauss_newton_product(W, V), f.hess(W), f.residuals(W),
               f.residuals(W), f.residuals_jacobian(W)]
    np.testing.assert_array_equal(W, p.W)
    np.testing.assert_array_equal(V, V0)
    for r in results:
        assert type(r) is np.ndarray and r.dtype == np.float64 and r.flags.c_contiguous and r.flags.writeable
        assert not np.shares_memory(r, W) and not np.shares_memory(r, V)
    assert not np.shares_memory(results[0], results[1]) and not np.shares_memory(results[4], results[5])


# ------------------------------------------------------------------------------- with scipy
def _tiny_classification():
    X = np.array([[0.0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.2], [0.2, 0.7]])
    y = np.array([0, 1, 1, 0, 1, 1])
    return fastbp.Network([2, 3, 1], activation="tanh", l2=1e-3), X, y


@pytest.mark.parametrize("method", ["trust-krylov", "trust-ncg", "Newton-CG", "trust-exact", "trust-constr"])
def test_minimize_second_order_methods_converge(method):
    net, X, y = _tiny_classification()
    f = net.bind(X, y)
    W0 = net.init_weights(random_state=0)
    curvature = {"hess": f.hess} if method == "trust-exact" else {"hessp": f.hessp}
    # (much tighter gtol breaks trust-krylov's Krylov solver down near the minimum, in scipy)
    options = {"gtol": 1e-6} if method != "Newton-CG" else {"xtol": 1e-8}
    res = minimize(f, W0, jac=True, method=method, options={**options, "maxiter": 500}, **curvature)
    grad = f(res.x)[1]
    assert np.linalg.norm(grad) < 1e-5, (res.message, np.linalg.norm(grad))
    # the same minimum L-BFGS-B finds from the same start, to its tolerance
    ref = minimize(f, W0, jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0, "maxiter": 5000})
    assert abs(res.fun - ref.fun) < 1e-6 or res.fun < ref.fun


def test_minimize_with_network_methods_and_args():
    """``args=(X, y)`` reaches ``hessp`` and ``hess`` of the validating Network methods."""
    net, X, y = _tiny_classification()
    W0 = net.init_weights(random_state=0)
    opts = {"gtol": 1e-6}
    a = minimize(net.loss_and_grad, W0, args=(X, y), jac=True, hessp=net.hessp, method="trust-krylov", options=opts)
    b = minimize(net.loss_and_grad, W0, args=(X, y), jac=True, hess=net.hess, method="trust-exact", options=opts)
    assert np.linalg.norm(net.loss_and_grad(a.x, X, y)[1]) < 1e-5
    assert np.linalg.norm(net.loss_and_grad(b.x, X, y)[1]) < 1e-5


def test_least_squares_levenberg_marquardt_converges():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (40, 1))
    y = np.sin(2 * X[:, 0]) + 0.05 * rng.standard_normal(40)
    net = fastbp.Network([1, 6, 1], activation="tanh", output="identity", l2=1e-4)
    f = net.bind(X, y)
    W0 = net.init_weights(random_state=0)
    res = least_squares(f.residuals, W0, jac=f.residuals_jacobian, method="lm", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    assert res.status > 0
    loss, grad = f(res.x)
    assert abs(res.cost - loss) <= 1e-12 * loss  # least_squares' cost is ½‖r‖², fastbp's loss
    assert np.linalg.norm(grad) < 1e-7
    assert loss < f(W0)[0] / 10


# ------------------------------------------------------------------------------- bad input
def _bound_identity():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((5, 2)), rng.standard_normal(5)
    net = fastbp.Network([2, 3, 1], activation="tanh", output="identity", l2=0.1)
    return net, X, y, net.init_weights(random_state=0)


@pytest.mark.parametrize(
    "V, error, fragment",
    [
        (np.zeros(12), ValueError, "V must be 1-D with n_params = 13"),
        (np.zeros((13, 1)), ValueError, "V must be 1-D"),
        (np.zeros((2, 13)), ValueError, "V must be 1-D"),
        (np.r_[np.zeros(12), np.nan], ValueError, "V contains NaN"),
        (np.r_[np.zeros(12), np.inf], ValueError, "V contains NaN or infinity"),
        (np.array(["a"] * 13), TypeError, "V must be a 1-D array of real numbers"),
        (np.zeros(13, dtype=complex), TypeError, "V must be a 1-D array of real numbers"),
        (None, TypeError, "V must be a 1-D array of real numbers"),
    ],
)
@pytest.mark.parametrize("method", ["hessp", "gauss_newton_product"])
def test_bad_direction(method, V, error, fragment):
    net, X, y, W = _bound_identity()
    W_before = W.copy()
    f = net.bind(X, y)
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        getattr(f, method)(W, V)
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        getattr(net, method)(W, V, X, y)
    np.testing.assert_array_equal(W, W_before)


@pytest.mark.parametrize("method", ["hessp", "gauss_newton_product", "hess", "residuals", "residuals_jacobian"])
@pytest.mark.parametrize(
    "W, error, fragment",
    [
        (np.zeros(12), ValueError, "W must be 1-D with n_params = 13"),
        (np.r_[np.zeros(12), np.nan], ValueError, "W contains NaN"),
        ("weights", TypeError, "W must be a 1-D array of real numbers"),
    ],
)
def test_bad_weights(method, W, error, fragment):
    net, X, y, _ = _bound_identity()
    V = [np.zeros(13)] if method in ("hessp", "gauss_newton_product") else []
    with pytest.raises(error, match=fragment):
        getattr(net.bind(X, y), method)(W, *V)
    with pytest.raises(error, match=fragment):
        getattr(net, method)(W, *V, X, y)


@pytest.mark.parametrize("method", ["hessp", "gauss_newton_product", "hess", "residuals", "residuals_jacobian"])
@pytest.mark.parametrize(
    "bad, error, fragment",
    [
        ({"X": np.zeros((5, 3))}, ValueError, "X has 3 columns"),
        ({"X": np.full((5, 2), np.nan)}, ValueError, "X"),
        ({"y": np.zeros(4)}, ValueError, "y has 4 samples"),
        ({"sample_weight": -np.ones(5)}, ValueError, "sample_weight must be non-negative"),
        ({"sample_weight": np.zeros(5)}, ValueError, "sample_weight must not be all zero"),
    ],
)
def test_bad_data_on_network_methods(method, bad, error, fragment):
    net, X, y, W = _bound_identity()
    args = {"X": X, "y": y, "sample_weight": None, **bad}
    V = [np.zeros(13)] if method in ("hessp", "gauss_newton_product") else []
    with pytest.raises(error, match=fragment):
        getattr(net, method)(W, *V, args["X"], args["y"], sample_weight=args["sample_weight"])


@pytest.mark.parametrize("output,m,y", [("logistic", 1, [0, 1, 1]), ("softmax", 3, [0, 2, 1])])
@pytest.mark.parametrize("method", ["residuals", "residuals_jacobian"])
def test_least_squares_needs_an_identity_output(output, m, y, method):
    X = np.eye(3)
    net = fastbp.Network([3, 2, m], output=output)
    W = net.init_weights(random_state=0)
    for call in (lambda: getattr(net.bind(X, y), method)(W), lambda: getattr(net, method)(W, X, y)):
        with pytest.raises(ValueError, match="least squares needs an identity output") as info:
            call()
        assert repr(output) in str(info.value)


def test_dense_results_over_2_gib_are_refused():
    """A Hessian of 24 577² float64 (4.5 GiB) and a Jacobian of (2 + 16 384) x 24 577 (3.0 GiB)
    are refused before anything is allocated or computed, with the size in the message."""
    net = fastbp.Network([1, 8192, 1], activation="tanh", output="identity")
    X, y = np.ones((2, 1)), np.ones(2)
    W = np.zeros(net.n_params)
    f = net.bind(X, y)
    with pytest.raises(ValueError, match=r"hess: .*24577 x 24577 float64 = 4\.5 GiB, over the 2 GiB limit"):
        f.hess(W)
    with pytest.raises(ValueError, match=r"residuals_jacobian: .*16386 x 24577 float64 = 3\.0 GiB"):
        f.residuals_jacobian(W)
    with pytest.raises(ValueError, match="2 GiB"):
        net.hess(W, X, y)
    small = fastbp.Network([1, 3, 1], output="identity")  # under the limit: computed
    assert small.hess(np.zeros(small.n_params), X, y).shape == (small.n_params, small.n_params)
