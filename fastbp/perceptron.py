"""The lab's perceptron (exercise 1) as a scikit-learn classifier.

The rule, as the lab writes it: with targets t_i = ±1 and x̃_i = (1, x_i), start from a random β and
repeat the batch update

    β ← β + η Σ_{i misclassified} x̃_i t_i,      misclassified: sign(x̃_i · β) ≠ t_i,

until no sample is misclassified or ``max_iter`` updates have been made. A sample exactly on the
boundary (x̃_i · β = 0, sign 0) counts as misclassified, as in the lab's ``np.sign`` test.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["Perceptron"]


class Perceptron(ClassifierMixin, BaseEstimator):
    """Rosenblatt's perceptron trained with the lab's batch rule (week 5, exercise 1).

    Any two class labels are accepted: ``classes_[0]`` is mapped to t = −1 and ``classes_[1]``
    to t = +1 internally, and back in :meth:`predict`.

    Parameters
    ----------
    eta : float, default=0.1
        Learning rate η (the lab's ``eta = .1``).
    max_iter : int, default=1000
        Maximum number of updates of β. Each update adds the contribution of *every* sample
        misclassified at that point.
    random_state : int, RandomState instance or None, default=None
        Draws the initial β from normal(0, 1), as the lab's ``np.random.normal(0, 1, (d + 1,))``.
        None uses NumPy's global random state, so ``np.random.seed(s)`` followed by ``fit``
        reproduces the lab exactly.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features)
        β without its first entry (the weights of x).
    intercept_ : ndarray of shape (1,)
        β₀, the weight of the constant 1 in x̃.
    n_iter_ : int
        Updates made.
    classes_ : ndarray of shape (2,)
        The two labels, sorted; ``classes_[1]`` is the +1 class.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.

    Warns
    -----
    ConvergenceWarning
        When samples are still misclassified after ``max_iter`` updates (the data are probably
        not linearly separable).

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> X = np.array([[0., 0], [1, 0], [3, 3], [4, 3]]); y = ["red", "red", "blue", "blue"]
    >>> clf = fastbp.Perceptron(random_state=0).fit(X, y)
    >>> clf.predict(X).tolist()
    ['red', 'red', 'blue', 'blue']
    """

    _parameter_constraints: dict = {
        "eta": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, eta=0.1, max_iter=1000, random_state=None):
        self.eta = eta
        self.max_iter = max_iter
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Apply the perceptron rule until every sample is classified correctly or ``max_iter``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Exactly two distinct labels.

        Returns
        -------
        self : Perceptron
        """
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"Perceptron needs samples of 2 classes; y holds 1 class ({self.classes_[0]!r})"
            )
        if len(self.classes_) > 2:
            raise ValueError(
                f"Only binary classification is supported by Perceptron; y holds "
                f"{len(self.classes_)} classes ({self.classes_.tolist()[:10]})"
            )
        t = np.where(y_idx == 1, 1.0, -1.0)
        Xt = np.hstack((np.ones((X.shape[0], 1)), X))  # x̃ = (1, x)
        beta = check_random_state(self.random_state).normal(0, 1, (Xt.shape[1],))

        n_iter = 0
        wrong = np.sign(Xt @ beta) != t
        while wrong.any() and n_iter < self.max_iter:
            beta += self.eta * (t[wrong] @ Xt[wrong])  # η Σ_wrong t_i x̃_i
            n_iter += 1
            wrong = np.sign(Xt @ beta) != t
        if wrong.any():
            warnings.warn(
                f"Perceptron did not converge: {int(wrong.sum())} of {len(t)} samples are still "
                f"misclassified after max_iter={self.max_iter} updates; the data may not be "
                "linearly separable.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.intercept_ = beta[:1].copy()
        self.coef_ = beta[1:].reshape(1, -1).copy()
        self.n_iter_ = n_iter
        return self

    def decision_function(self, X):
        """The signed score x̃ · β; positive means ``classes_[1]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_[0] + self.intercept_[0]

    def predict(self, X):
        """``classes_[1]`` where the score is positive, ``classes_[0]`` elsewhere.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.classes_[(self.decision_function(X) > 0).astype(np.intp)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags
