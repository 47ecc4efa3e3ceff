"""fastbp.Perceptron against the lab's exercise-1 loop, written out here from the lab's text."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastbp
from fastbp import Perceptron


def _separable(n=60, seed=0):
    """Two well separated clouds, targets +1 and -1 (the lab's class 1 and class 2)."""
    rng = np.random.default_rng(seed)
    X1 = rng.normal([2.0, 2.0], 0.6, (n // 2, 2))
    X2 = rng.normal([-1.0, -0.5], 0.6, (n - n // 2, 2))
    X = np.vstack((X1, X2))
    t = np.concatenate((np.ones(n // 2), -np.ones(n - n // 2)))
    return X, t


def _lab_perceptron(data, targets, rng, eta=0.1):
    """The lab's code: beta ~ normal(0, 1); while some sign(Xtilde beta) != t, add eta * the sum of
    Xtilde_i t_i over the misclassified."""
    beta = rng.normal(0, 1, (3,))
    Xtilde = np.hstack((np.ones((np.shape(data)[0], 1)), data))
    targets = targets.reshape(-1, 1)
    prediction = np.matmul(Xtilde, beta.reshape(-1, 1))
    mis = np.squeeze(np.argwhere(np.squeeze(np.sign(prediction)) != np.squeeze(targets)))
    steps = 0
    while mis.size > 0:
        beta += np.squeeze(np.sum(np.atleast_2d(eta * Xtilde[mis] * targets[mis]), axis=0))
        steps += 1
        prediction = np.matmul(Xtilde, beta.reshape(-1, 1))
        mis = np.squeeze(np.argwhere(np.squeeze(np.sign(prediction)) != np.squeeze(targets)))
    return beta, steps


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reproduces_the_lab(seed):
    X, t = _separable(seed=seed)
    beta, steps = _lab_perceptron(X, t, np.random.RandomState(seed))
    clf = Perceptron(random_state=seed).fit(X, t)
    assert steps > 0  # the rule really ran
    assert clf.n_iter_ == steps
    np.testing.assert_allclose(clf.intercept_, beta[:1], rtol=1e-12)
    np.testing.assert_allclose(clf.coef_, beta[None, 1:], rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), t)
    np.testing.assert_allclose(clf.decision_function(X), np.hstack((np.ones((len(X), 1)), X)) @ beta)


def test_global_random_state_like_the_lab():
    # the lab seeds NumPy's global generator and calls np.random.normal
    X, t = _separable(seed=5)
    np.random.seed(42)
    beta, _ = _lab_perceptron(X, t, np.random)
    np.random.seed(42)
    clf = Perceptron().fit(X, t)
    np.testing.assert_allclose(clf.coef_[0], beta[1:], rtol=1e-12)


@pytest.mark.parametrize(
    "labels", [(-1, 1), (0, 1), ("blue", "red"), (2.0, 7.0)], ids=["pm1", "01", "str", "float"]
)
def test_any_two_labels_map_to_pm1_and_back(labels):
    X, t = _separable(seed=1)
    lo, hi = labels
    y = np.where(t > 0, hi, lo)  # the larger label is the +1 class
    clf = Perceptron(random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.array([lo, hi]))
    np.testing.assert_array_equal(clf.predict(X), y)
    # the same β as with ±1 targets: the mapping is lower label -> -1
    ref = Perceptron(random_state=0).fit(X, t)
    np.testing.assert_array_equal(clf.coef_, ref.coef_)
    assert (clf.decision_function(X) > 0).tolist() == (y == hi).tolist()


def test_not_separable_warns_and_stops_at_max_iter():
    X = np.array([[0.0, 0], [1, 1], [0, 1], [1, 0]])
    y = np.array([1, 1, -1, -1])  # XOR: no line separates it
    with pytest.warns(ConvergenceWarning, match="not be linearly separable"):
        clf = Perceptron(max_iter=25, random_state=0).fit(X, y)
    assert clf.n_iter_ == 25


def test_already_separated_makes_no_update():
    X, t = _separable(seed=2)
    # find a seed whose initial β already separates this easy data, straight from the lab's draw
    for seed in range(200):
        beta = np.random.RandomState(seed).normal(0, 1, 3)
        if np.all(np.sign(beta[0] + X @ beta[1:]) == t):
            break
    else:
        pytest.fail("no separating initial β among 200 seeds")
    clf = Perceptron(random_state=seed).fit(X, t)
    assert clf.n_iter_ == 0
    np.testing.assert_array_equal(clf.coef_[0], beta[1:])


@pytest.mark.parametrize("y, match", [([0, 0, 0, 0], "2 classes"), ([0, 1, 2, 0], "binary")])
def test_needs_exactly_two_classes(y, match):
    X = np.arange(8.0).reshape(4, 2)
    with pytest.raises(ValueError, match=match):
        Perceptron().fit(X, y)


def test_bad_parameters():
    X, t = _separable()
    with pytest.raises(ValueError, match="eta"):
        Perceptron(eta=0).fit(X, t)
    with pytest.raises(ValueError, match="max_iter"):
        Perceptron(max_iter=-1).fit(X, t)


def test_lazy_export():
    assert fastbp.Perceptron is Perceptron


@parametrize_with_checks([Perceptron(max_iter=50)])
def test_sklearn_estimator_checks(estimator, check):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
