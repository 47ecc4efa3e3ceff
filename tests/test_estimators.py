"""fastbp.MLPClassifier / MLPRegressor: scikit-learn's estimator checks, parity with scikit-learn's
own lbfgs fits (the outside oracle), and the few features beyond it. The stochastic solvers' parity
with scikit-learn is in test_stochastic_parity.py, scikit-learn's own suite in
test_sklearn_mlp_suite.py."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp import MLPClassifier, MLPRegressor

ACTIVATIONS = ["logistic", "tanh", "relu", "identity"]
PARITY_RTOL = 1e-6  # the bar on loss_ after tens of iterations


# README's claim, exactly: scikit-learn's check_estimator passes with the default constructor
# (solver adam, max_iter=200) and with solver="lbfgs" at max_iter=100, the setting under which
# scikit-learn's own suite checks its MLPs (sklearn/utils/_test_common/instance_generator.py).
README_CHECKED = [
    MLPClassifier(),
    MLPRegressor(),
    MLPClassifier(solver="lbfgs", max_iter=100),
    MLPRegressor(solver="lbfgs", max_iter=100),
]


@parametrize_with_checks(README_CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.mark.parametrize("cls", [SkMLPClassifier, MLPClassifier])
def test_lbfgs_at_200_iterations_fails_a_check_as_scikit_learns_own(cls):
    """README's exception, exactly: with solver="lbfgs" at the default max_iter=200, the check of
    multi-label probabilities fails, for scikit-learn's MLPClassifier as for ours (they saturate
    to exactly 1.0, which the check does not allow). Should that change, README must change."""
    from sklearn.utils.estimator_checks import check_classifiers_multilabel_output_format_predict_proba

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(AssertionError, match="probabilities of the positive class"):
            check_classifiers_multilabel_output_format_predict_proba(cls.__name__, cls(solver="lbfgs"))


# --------------------------------------------------------------------------------- fixtures
def _blobs(n=120, n_features=3, n_classes=2, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    w = rng.standard_normal((n_features, n_classes))
    y = (np.tanh(X) @ w + noise * rng.standard_normal((n, n_classes))).argmax(axis=1)
    return X, y


def _fit_pair(fast_cls, sk_cls, X, y, sample_weight=None, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = sk_cls(solver="lbfgs", **params).fit(X, y, sample_weight=sample_weight)
        fb = fast_cls(solver="lbfgs", **params).fit(X, y, sample_weight=sample_weight)
    return fb, sk


def _fit_pair_backend(X, y, activation, backend, sample_weight=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        params = dict(hidden_layer_sizes=(8, 6), activation=activation, alpha=1e-2, max_iter=30, random_state=7)
        sk = SkMLPClassifier(solver="lbfgs", **params).fit(X, y, sample_weight=sample_weight)
        fb = MLPClassifier(solver="lbfgs", backend=backend, **params).fit(X, y, sample_weight=sample_weight)
    return fb, sk


def _rel(a, b):
    return abs(a - b) / abs(b)


def _assert_no_clipping(sk, X):
    """scikit-learn clips probabilities to [eps, 1 - eps] in its loss, fastbp computes the exact
    cross-entropy; the two part ways once a probability saturates, so a parity check is only
    meaningful where none does."""
    eps = np.finfo(np.float64).eps
    P = sk.predict_proba(X)
    assert P.min() > eps and P.max() < 1 - eps, "probabilities saturate: pick a case without clipping"


# ---------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_classifier_follows_sklearn(activation, n_classes, backend):
    X, y = _blobs(n_classes=n_classes, seed=n_classes, noise=1.0)  # overlapping: no saturation
    fb, sk = _fit_pair_backend(X, y, activation, backend)
    assert fb.n_iter_ == sk.n_iter_ >= (5 if activation == "identity" else 10)  # identity: a linear model
    _assert_no_clipping(sk, X)
    assert _rel(fb.loss_, sk.loss_) < PARITY_RTOL
    assert fb.out_activation_ == sk.out_activation_
    for a, b in zip(fb.coefs_ + fb.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fb.predict_proba(X), sk.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(fb.classes_, sk.classes_)
    assert fb.backend_ == backend


@pytest.mark.parametrize("activation", ["logistic", "relu"])
def test_classifier_sample_weight_follows_sklearn(activation):
    X, y = _blobs(n_classes=3, seed=11)
    sw = np.random.default_rng(1).uniform(0.2, 3.0, len(y))
    fb, sk = _fit_pair_backend(X, y, activation, "auto", sample_weight=sw)
    assert fb.n_iter_ == sk.n_iter_
    assert _rel(fb.loss_, sk.loss_) < PARITY_RTOL
    # and the weights really matter: the unweighted fit ends elsewhere
    unweighted, _ = _fit_pair_backend(X, y, activation, "auto")
    assert _rel(unweighted.loss_, fb.loss_) > 1e-3


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_multilabel_follows_sklearn(activation):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 4))
    Y = (X[:, :3] + 0.5 * rng.standard_normal((100, 3)) > 0).astype(int)
    fb, sk = _fit_pair(
        MLPClassifier, SkMLPClassifier, X, Y, hidden_layer_sizes=(10,), activation=activation,
        max_iter=30, random_state=0,
    )
    assert fb.out_activation_ == "logistic" and fb.n_outputs_ == 3
    assert fb.n_iter_ == sk.n_iter_
    assert _rel(fb.loss_, sk.loss_) < PARITY_RTOL
    assert fb.predict(X).shape == Y.shape
    np.testing.assert_array_equal(fb.predict(X), sk.predict(X))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_regressor_follows_sklearn(activation):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 3))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    fb, sk = _fit_pair(
        MLPRegressor, SkMLPRegressor, X, y, hidden_layer_sizes=(12,), activation=activation,
        max_iter=30, random_state=2,
    )
    assert fb.n_iter_ == sk.n_iter_ >= (5 if activation == "identity" else 10)
    assert _rel(fb.loss_, sk.loss_) < PARITY_RTOL
    np.testing.assert_allclose(fb.predict(X), sk.predict(X), rtol=1e-4, atol=1e-6)


def test_multioutput_regression_loss_sums_over_outputs():
    # the one deliberate difference: fastbp's loss is the half squared error summed over the
    # outputs (the function whose gradient scikit-learn uses); scikit-learn reports the mean over
    # outputs (its issue #8349). As L-BFGS-B's line search reads the loss too, the two fits take
    # different paths; both fit the data.
    rng = np.random.default_rng(8)
    X = rng.standard_normal((80, 2))
    Y = np.column_stack((X[:, 0] ** 2, np.sin(X[:, 1]), X[:, 0] - X[:, 1]))
    fb, sk = _fit_pair(
        MLPRegressor, SkMLPRegressor, X, Y, hidden_layer_sizes=(10,), activation="tanh",
        max_iter=200, random_state=4,
    )
    assert fb.n_outputs_ == 3
    pred = fb.predict(X)
    penalty = 1e-4 / (2 * len(X)) * sum((c**2).sum() for c in fb.coefs_)
    summed = 0.5 * ((pred - Y) ** 2).sum(axis=1).mean() + penalty
    averaged = 0.5 * ((pred - Y) ** 2).mean() + penalty
    assert _rel(fb.loss_, summed) < 1e-9
    assert _rel(fb.loss_, averaged) > 0.5
    assert fb.score(X, Y) > 0.95 and sk.score(X, Y) > 0.95


@pytest.mark.parametrize("solver", ["lbfgs", "adam", "sgd"])
def test_sparse_input_is_densified_per_fit(solver):
    X, y = _blobs(n=80, n_classes=3, seed=4)
    X[np.abs(X) < 0.7] = 0.0
    params = dict(hidden_layer_sizes=(6,), max_iter=30, random_state=0, solver=solver, early_stopping=solver == "sgd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = MLPClassifier(**params).fit(X, y)
        for fmt in (sp.csr_matrix, sp.csc_matrix):
            sparse = MLPClassifier(**params).fit(fmt(X), y)
            assert sparse.loss_ == dense.loss_
            np.testing.assert_allclose(sparse.predict_proba(fmt(X)), dense.predict_proba(X), rtol=1e-12)


def test_float32_input_computes_in_float32():
    X, y = _blobs(n=100, seed=6)
    params = dict(hidden_layer_sizes=(8,), activation="tanh", max_iter=15, random_state=0, solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f64 = MLPClassifier(**params).fit(X, y)
        f32 = MLPClassifier(**params).fit(X.astype(np.float32), y)
        forced = MLPClassifier(dtype=np.float32, **params).fit(X, y)
    assert f32.loss_ != f64.loss_  # really computed in float32
    assert _rel(f32.loss_, f64.loss_) < 1e-3
    # forced float32 on float64 X: float32 arithmetic from float64 initial weights (float32 X
    # also rounds the initial weights, as scikit-learn's _init_coef does)
    assert forced.loss_ != f64.loss_ and _rel(forced.loss_, f64.loss_) < 1e-3
    # under lbfgs the weights are scipy's float64, as in scikit-learn
    assert all(c.dtype == np.float64 for c in f32.coefs_ + forced.coefs_)
    for solver in ("lbfgs", "adam"):
        with pytest.raises(ValueError, match="dtype"):
            MLPClassifier(dtype=np.float16, max_iter=2, solver=solver).fit(X, y)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_stochastic_float32_as_sklearn(solver):
    """Under sgd/adam scikit-learn keeps float32 weights, optimizer state and regression
    predictions for float32 X; so does fastbp (and ``dtype=`` overrides X's dtype)."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((120, 3))
    y = np.sin(X[:, 0]) + X[:, 1]
    params = dict(hidden_layer_sizes=(8,), activation="tanh", max_iter=10, random_state=0, solver=solver,
                  learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f64 = MLPRegressor(**params).fit(X, y)
        f32 = MLPRegressor(**params).fit(X.astype(np.float32), y)
        sk32 = SkMLPRegressor(**params).fit(X.astype(np.float32), y)
        forced32 = MLPRegressor(dtype=np.float32, **params).fit(X, y)
        forced64 = MLPRegressor(dtype=np.float64, **params).fit(X.astype(np.float32), y)
    for est in (f32, forced32, sk32):
        assert all(a.dtype == np.float32 for a in est.coefs_ + est.intercepts_)
    state = f32._optimizer.velocities if solver == "sgd" else f32._optimizer.ms
    assert all(a.dtype == np.float32 for a in state)
    assert f32.predict(X.astype(np.float32)).dtype == np.float32
    assert all(a.dtype == np.float64 for a in f64.coefs_ + forced64.coefs_)
    assert f32.loss_ != f64.loss_ and _rel(f32.loss_, f64.loss_) < 1e-4  # really float32, and close
    assert _rel(f32.loss_, sk32.loss_) < 1e-4


# ------------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("cls, sk_cls", [(MLPClassifier, SkMLPClassifier), (MLPRegressor, SkMLPRegressor)])
def test_every_solver_and_adam_by_default(cls, sk_cls):
    X, y = _blobs(n=60)
    assert cls().solver == sk_cls().solver == "adam"
    for solver in ("adam", "sgd", "lbfgs"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = cls(hidden_layer_sizes=(5,), solver=solver, max_iter=5, random_state=0).fit(X, y)
        assert est.n_iter_ == 5 and len(est.loss_curve_) == 5 and np.isfinite(est.loss_)
        assert hasattr(est, "partial_fit") == (solver != "lbfgs" or cls is MLPRegressor)  # scikit-learn's rule
    with pytest.raises(InvalidParameterError, match="solver"):
        cls(solver="newton").fit(X, y)


def test_poisson_regression():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (150, 2))
    y = rng.poisson(np.exp(1 + X[:, 0] - X[:, 1]))
    for solver in ("lbfgs", "adam"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MLPRegressor(loss="poisson", hidden_layer_sizes=(5,), solver=solver, learning_rate_init=0.01,
                               max_iter=200, random_state=0).fit(X, y)
        assert est.out_activation_ == "exp"
        pred = est.predict(X)
        assert pred.min() > 0  # e^a
        # better than the best constant (the mean) in Poisson deviance
        def deviance(mu):
            return np.mean(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - y + mu)
        assert deviance(pred) < 0.6 * deviance(np.full_like(pred, y.mean()))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"backend": "tensorflow"}, "backend"),
        ({"n_threads": 0}, "n_threads"),
        ({"alpha": -1.0}, "alpha"),
        ({"hidden_layer_sizes": (0,)}, "hidden_layer_sizes"),
    ],
)
def test_bad_parameters(params, match):
    X, y = _blobs(n=20)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X, y)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda e: e.set_params(alpha=-1.0), "alpha"),
        (lambda e: setattr(e, "solver", "newton"), "solver"),
        (lambda e: setattr(e, "n_threads", 1.5), "n_threads"),
        (lambda e: e.hidden_layer_sizes.__setitem__(0, 0), "hidden_layer_sizes"),
        (lambda e: setattr(e, "batch_size", np.array([3])), "batch_size"),
    ],
)
def test_a_parameter_changed_after_a_fit_is_checked_again(change, match):
    # the check of every parameter is skipped when none changed since it last passed (a tenth of
    # a lab fit): a change of value, type or contents must still be refused, with a fit's error
    X, y = _blobs(n=20)
    est = MLPClassifier(hidden_layer_sizes=[4, 3], max_iter=5).fit(X, y)
    change(est)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    ours = ["backend", "dtype", "n_threads"]
    assert MLPClassifier._get_param_names() == sorted(SkMLPClassifier._get_param_names() + ours)


def test_constructor_matches_sklearn():
    import inspect

    for ours, theirs in ((MLPClassifier, SkMLPClassifier), (MLPRegressor, SkMLPRegressor)):
        p_ours = inspect.signature(ours).parameters
        p_theirs = inspect.signature(theirs).parameters
        assert list(p_ours)[: len(p_theirs)] == list(p_theirs)
        assert list(p_ours)[len(p_theirs) :] == ["backend", "dtype", "n_threads"]
        for name, p in p_theirs.items():
            assert p_ours[name].default == p.default, name
            assert p_ours[name].kind == p.kind, name


def test_loss_curve_recorded_under_lbfgs():
    X, y = _blobs(n=100, n_classes=3, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((8,), solver="lbfgs", max_iter=25, random_state=0, warm_start=True).fit(X, y)
        curve = list(clf.loss_curve_)
        assert len(curve) == clf.n_iter_ == 25
        assert curve[-1] == clf.loss_
        assert np.all(np.diff(curve) <= 0)  # every L-BFGS-B iteration lowers the loss
        clf.fit(X, y)  # warm start: continues, the curve grows
        assert clf.loss_curve_[:25] == curve and len(clf.loss_curve_) == 25 + clf.n_iter_
        assert clf.loss_ < curve[-1]
        clf.set_params(warm_start=False).fit(X, y)  # a fresh fit starts the curve again
    assert clf.loss_curve_ == curve


def test_warm_start_continues_like_sklearn():
    X, y = _blobs(n=100, n_classes=3, seed=9)
    params = dict(hidden_layer_sizes=(8,), max_iter=10, random_state=0, warm_start=True, solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb = MLPClassifier(**params).fit(X, y).fit(X, y)
        sk = SkMLPClassifier(**params).fit(X, y).fit(X, y)
    assert _rel(fb.loss_, sk.loss_) < PARITY_RTOL
    with pytest.raises(ValueError, match="warm_start"):
        fb.fit(X, np.where(y == 2, 5, y))


def test_verbose_draws_a_progress_bar(capsys):
    X, y = _blobs(n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((5,), solver="lbfgs", max_iter=12, random_state=0, verbose=True).fit(X, y)
    err = capsys.readouterr().err
    last = err.rstrip("\n").split("\n")[-2].split("\r")[-1]  # the final redraw of the bar
    assert f"iter {clf.n_iter_}/12" in last
    assert f"loss {clf.loss_:.6g}" in last
    assert "|grad|_inf" in last
    assert "L-BFGS stopped" in err
    quiet = MLPClassifier((5,), solver="lbfgs", max_iter=50, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        quiet.fit(X, y)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("limit", [{"max_iter": 3}, {"max_fun": 4}])
def test_convergence_warning(limit):
    X, y = _blobs(n=60)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier((5,), solver="lbfgs", random_state=0, **limit).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="Stochastic Optimizer: Maximum iterations \\(3\\) reached"):
        MLPClassifier((5,), solver="sgd", random_state=0, max_iter=3).fit(X, y)


def test_verbose_stochastic_prints_sklearns_lines(capsys):
    X, y = _blobs(n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((5,), solver="adam", max_iter=3, random_state=0, verbose=True).fit(X, y)
    out = capsys.readouterr().out.splitlines()
    assert out == [f"Iteration {i + 1}, loss = {loss:.8f}" for i, loss in enumerate(clf.loss_curve_)]


# (adam normalizes its steps: there scikit-learn's weights, and fastbp's, stay finite)
@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_non_finite_weights_raise(solver):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)) * 1e300  # finite, but overflows the first layer
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # scikit-learn's lbfgs survives here on its clipped probabilities; its sgd does not
        for cls in (MLPClassifier, *([SkMLPClassifier] if solver == "sgd" else [])):
            with pytest.raises(ValueError, match="non-finite parameter weights"):
                cls((5,), solver=solver, max_iter=20, random_state=0).fit(X, y)


def test_works_inside_model_selection():
    X, y = _blobs(n=90, n_classes=3, seed=12)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((6,), solver="lbfgs", max_iter=50, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1.0]}, cv=3).fit(X, y)
    assert scores.shape == (3,) and np.all(scores > 0.5)  # chance is 1/3
    assert search.best_params_["mlpclassifier__alpha"] in (1e-4, 1.0)
    assert isinstance(search.best_estimator_[-1], fastbp.MLPClassifier)


def test_lazy_exports():
    assert fastbp.MLPClassifier is MLPClassifier and fastbp.MLPRegressor is MLPRegressor


@pytest.mark.parametrize(
    "backend, hidden, expect_one",
    [("auto", (10, 10), True), ("numpy", (10, 10), False), ("auto", (64, 64), False)],
)
def test_blas_single_thread_during_small_compiled_fits(backend, hidden, expect_one, monkeypatch):
    import scipy.optimize
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    if not blas or all(i["num_threads"] == 1 for i in blas):
        pytest.skip("BLAS runs one thread here already: nothing to tell apart")
    if backend == "auto" and fastbp.available_backends() == ("numpy",):
        pytest.skip("no compiled backend here")
    seen = []
    real = scipy.optimize.minimize

    def spy(*args, **kwargs):
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    X, y = _blobs(n=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(hidden, solver="lbfgs", backend=backend, max_iter=2, random_state=0).fit(X, y)
    assert (seen == [1]) == expect_one, seen
    assert max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas") > 1  # restored


@pytest.mark.parametrize(("dtype", "n_classes"), [(d, k) for d in (np.int64, np.int32, np.uint8) for k in (1, 2, 3, 5)]
                         + [(np.bool_, 1), (np.bool_, 2)])
def test_direct_label_binarizing_equals_scikit_learns(dtype, n_classes):
    """The classifier binarizes 1-D integer and bool labels itself (a fit's fixed cost): the same
    targets, classes_ and fitted LabelBinarizer as scikit-learn's _validate_input, which the
    estimator's predictions and probabilities go through."""
    rng = np.random.default_rng(n_classes)
    X = rng.standard_normal((60, 3))
    labels = np.arange(n_classes) * (1 if dtype is np.bool_ else 3) - (0 if dtype in (np.uint8, np.bool_) else 2)
    y = labels[rng.permutation(np.resize(np.arange(n_classes), 60))].astype(dtype)
    ours, theirs = MLPClassifier((4,)), MLPClassifier((4,))
    X1, Y1 = ours._validate_input(X, y, False, True)
    X2, Y2 = SkMLPClassifier._validate_input(theirs, X, y, False, True)
    np.testing.assert_array_equal(X1, X2)
    assert Y1.dtype == Y2.dtype == bool and Y1.shape == Y2.shape
    np.testing.assert_array_equal(Y1, Y2)
    assert ours.classes_.dtype == theirs.classes_.dtype
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    a, b = vars(ours._label_binarizer), vars(theirs._label_binarizer)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_array_equal(ours._label_binarizer.inverse_transform(Y1.astype(float)), y)


@pytest.mark.parametrize("case", ["plain", "float32", "fortran", "view", "nan", "inf", "assume-finite-nan",
                                  "list", "float16", "1-d", "short-y", "no-columns", "refit-after-names"])
def test_the_plain_input_shortcut_equals_scikit_learns_validation(case, monkeypatch):
    """The classifier takes a plain finite float64/float32 matrix as scikit-learn's validate_data
    would (a fit's fixed cost) and sends everything else through it: the same X, n_features_in_,
    feature_names_in_ and errors as scikit-learn's _validate_input, case by case; the shortcut is
    taken exactly for the plain cases."""
    import sklearn

    from fastbp import estimators

    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 4))
    y = np.arange(30) % 3
    plain = case in ("plain", "float32", "fortran", "view", "refit-after-names", "assume-finite-nan")
    if case == "float32":
        X = X.astype(np.float32)
    elif case == "fortran":
        X = np.asfortranarray(X)
    elif case == "view":
        X = np.vstack([X, X])[::2]
    elif case in ("nan", "assume-finite-nan"):
        X[3, 1] = np.nan
    elif case == "inf":
        X[0, 0] = np.inf
    elif case == "list":
        X = X.tolist()
    elif case == "float16":
        X = X.astype(np.float16)
    elif case == "1-d":
        X = X[:, 0]
    elif case == "short-y":
        y = y[:-1]
    elif case == "no-columns":
        X = X[:, :0]
    ours, theirs = MLPClassifier((4,)), MLPClassifier((4,))
    if case == "refit-after-names":  # a name recorded by an earlier validation is forgotten
        ours.feature_names_in_ = theirs.feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)
    called = []
    real = estimators.validate_data
    monkeypatch.setattr(estimators, "validate_data", lambda *a, **k: called.append(1) or real(*a, **k))
    with sklearn.config_context(assume_finite=case == "assume-finite-nan"):
        try:
            X2, Y2 = SkMLPClassifier._validate_input(theirs, X, y, False, True)
        except ValueError as e:
            with pytest.raises(ValueError, match=re.escape(str(e))):
                ours._validate_input(X, y, False, True)
            assert called == [1]
            return
        X1, Y1 = ours._validate_input(X, y, False, True)
    assert called == ([] if plain else [1])
    assert (X1 is X) == (X2 is X)
    assert X1.dtype == X2.dtype and X1.flags.c_contiguous == X2.flags.c_contiguous
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(Y1, Y2)
    assert ours.n_features_in_ == theirs.n_features_in_
    assert hasattr(ours, "feature_names_in_") == hasattr(theirs, "feature_names_in_")
