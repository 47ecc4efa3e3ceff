"""Drop-in scikit-learn ``MLPClassifier`` and ``MLPRegressor`` trained on fastbp's kernels.

Design
------
Both classes **subclass** :class:`sklearn.neural_network.MLPClassifier` and
:class:`~sklearn.neural_network.MLPRegressor` and replace one method, ``_fit_lbfgs``: the step
that hands the packed weights to ``scipy.optimize.minimize``. Everything else is scikit-learn's
own code, run unchanged: the parameter constraints and their error messages, input validation
(``validate_data``), label binarizing, ``warm_start``, the random initialisation
(``_initialize`` / ``_init_coef`` from ``random_state``), the check that the solution is finite,
``predict``/``predict_proba``/``score``, tags and the fitted attributes. So a model behaves as
scikit-learn's does wherever fastbp does not deliberately differ, and it starts from bit-identical
weights for a given ``random_state``.

The replaced step builds a :class:`fastbp.Network` with the same layer sizes, hidden activation
and output (``out_activation_``), sets ``l2 = alpha / (2 Σ sample_weight)`` (``n_samples`` when
unweighted), so that fastbp's loss equals scikit-learn's, binds the data once
(:meth:`fastbp.Network.bind`) and calls ``minimize(objective, W0, jac=True, method="L-BFGS-B")``
with exactly the options scikit-learn's ``_fit_lbfgs`` passes (``maxfun=max_fun``,
``maxiter=max_iter``, ``gtol=tol``, and ``iprint`` where scipy still takes it). The flat layouts
are the same, so ``coefs_`` and ``intercepts_`` need no reordering. This relies on the private
hook ``_fit_lbfgs`` of scikit-learn ≥ 1.7 (the first with ``sample_weight`` in ``fit``); the test
suite compares every fit with scikit-learn's, so a change there would show.

Differences from scikit-learn
-----------------------------
* ``solver`` defaults to ``"lbfgs"`` and accepts nothing else (``InvalidParameterError``, a
  ``ValueError``). The SGD/Adam parameters (``batch_size``, ``learning_rate*``, ``momentum``,
  ``early_stopping``...) are accepted and ignored, exactly as scikit-learn ignores them under
  lbfgs. ``MLPRegressor(loss="poisson")`` is refused for now (fastbp has no exp output).
* Added parameters: ``backend``, ``dtype`` and ``n_threads``, passed to :class:`fastbp.Network`.
* ``loss_curve_`` is recorded under lbfgs too: the loss after each L-BFGS iteration
  (``len(loss_curve_) == n_iter_`` after a fresh fit; ``warm_start`` fits append to it).
* ``verbose=True`` draws a progress bar (iteration, loss, gradient ∞-norm) on stderr.
* Multi-output regression: ``loss_`` is the contract's half squared error **summed** over the
  outputs, whose gradient is the one scikit-learn uses; scikit-learn reports the mean over the
  outputs instead (scikit-learn issue #8349). fastbp's loss and gradient agree, scikit-learn's
  do not, and since L-BFGS-B's line search reads the loss too, the two fits then take different
  paths. With one output everything is equal.
* Cross-entropies are computed from the pre-activations, without scikit-learn's clipping of
  probabilities to ``[eps, 1 - eps]``; the two agree wherever that clipping does not bite.
* Sparse ``X`` (CSR/CSC) is accepted and **densified once per fit** (the kernels are dense);
  prediction uses scikit-learn's sparse-aware forward pass, so it is never densified there.
* With a compiled backend and no layer of 2048 or more coefficients, BLAS is held to one thread
  while L-BFGS-B runs (scipy's L-BFGS-B calls BLAS on short vectors, where threads only cost; on
  a busy machine they made fits 10× slower). Wider networks and the numpy backend keep BLAS's
  threads.
* ``sample_weight`` must be non-negative and not all zero (scikit-learn divides by zero there).
"""

from __future__ import annotations

import contextlib
from numbers import Integral

import scipy.optimize
import scipy.sparse as sp
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.optimize import _check_optimize_result

try:  # scikit-learn's own switch for scipy's deprecated iprint; the same rule where it is missing
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover

    def _get_additional_lbfgs_options_dict(key, value):
        from scipy import __version__
        from sklearn.externals._packaging.version import parse

        return {} if parse(__version__) >= parse("1.15") else {key: value}


from . import backends
from ._progress import LBFGSProgress
from ._validation import check_sample_weight
from .network import Network

__all__ = ["MLPClassifier", "MLPRegressor"]

_FASTBP_CONSTRAINTS = {
    "solver": [StrOptions({"lbfgs"})],
    "backend": [StrOptions(set(backends.backend_names()))],
    "dtype": "no_validation",  # checked by fastbp.Network with a clear message
    "n_threads": [None, Interval(Integral, 1, None, closed="left")],
}


#: Below this many coefficients in every layer, no compiled backend hands products to BLAS.
_BLAS_FREE_LAYER = 2048
_BLAS_CONTROLLER = None


def _one_blas_thread():
    """A context limiting BLAS to one thread (a cached threadpoolctl controller: ~10 µs)."""
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


class _FastbpLBFGSMixin:
    """The shared lbfgs path; placed before scikit-learn's class in the MRO."""

    def _check_fastbp_only(self):
        # a friendlier message than the generic constraint error, same type and same first line
        name = type(self).__name__
        if self.solver in ("sgd", "adam"):
            raise InvalidParameterError(
                f"The 'solver' parameter of {name} must be a str among {{'lbfgs'}}. "
                f"Got {self.solver!r} instead. fastbp trains with L-BFGS only; use "
                f"sklearn.neural_network.{name} for the stochastic solvers."
            )
        if getattr(self, "loss", None) == "poisson":
            raise InvalidParameterError(
                f"The 'loss' parameter of {name} must be a str among {{'squared_error'}}. "
                "Got 'poisson' instead. fastbp has no exponential output layer; use "
                f"sklearn.neural_network.{name} for the Poisson loss."
            )

    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` with L-BFGS on fastbp's kernels.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data. Sparse matrices are densified once for the fit.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification; a label-indicator matrix for multi-label) or real
            targets (regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights, not all zero.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        self._check_fastbp_only()
        return super().fit(X, y, sample_weight=sample_weight)

    def _initialize(self, y, layer_units, dtype):
        super()._initialize(y, layer_units, dtype)
        self.loss_curve_ = []  # a fresh fit; warm_start fits append

    def _fit_lbfgs(
        self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads, layer_units
    ):
        # Called by scikit-learn's _fit with X, y validated (y binarized for classifiers), the
        # weights initialised (or kept for warm_start) and sample_weight checked.
        if sp.issparse(X):
            X = X.toarray()
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        sw_sum = X.shape[0] if sample_weight is None else float(sample_weight.sum())
        dtype = X.dtype if self.dtype is None else self.dtype
        net = Network(
            layer_units,
            activation=self.activation,
            output=self.out_activation_,
            l2=self.alpha / (2.0 * sw_sum),  # alpha/2 ΣW² / Σs = λ ΣW²
            backend=self.backend,
            dtype=dtype,
            n_threads=self.n_threads,
        )
        objective = net.bind(X, y, sample_weight)
        self.backend_ = (
            backends.choose(net.layout, X.shape[0]) if self.backend == "auto" else self.backend
        )
        W0 = net.pack(self.coefs_, self.intercepts_)

        if not hasattr(self, "loss_curve_"):
            self.loss_curve_ = []
        losses = self.loss_curve_
        progress = None
        if self.verbose:
            progress = LBFGSProgress(self.max_iter)
            fun = progress.objective(objective)

            def callback(intermediate_result):
                losses.append(float(intermediate_result.fun))
                progress.callback(intermediate_result)

        else:
            fun = objective

            def callback(intermediate_result):
                losses.append(float(intermediate_result.fun))

        iprint = 1 if (self.verbose is True or self.verbose >= 1) else -1
        # scipy's L-BFGS-B works on vectors of n_params entries with BLAS calls, where BLAS
        # threads only cost (on a busy 2-core machine they made whole fits 10x slower). The
        # compiled kernels call BLAS only for wide layers, so for networks without one BLAS is
        # held to one thread during the fit; the numpy backend keeps BLAS threads for its matrix
        # products, as do wide networks.
        small = max(a * b for a, b in net.layout.coef_shapes) < _BLAS_FREE_LAYER
        blas_limit = _one_blas_thread() if small and self.backend_ != "numpy" else contextlib.nullcontext()
        try:
            with blas_limit:
                opt_res = scipy.optimize.minimize(
                    fun,
                    W0,
                    method="L-BFGS-B",
                    jac=True,
                    callback=callback,
                    options={
                        "maxfun": self.max_fun,
                        "maxiter": self.max_iter,
                        "gtol": self.tol,
                        **_get_additional_lbfgs_options_dict("iprint", iprint),
                    },
                )
        except ValueError as exc:
            if progress is not None:
                progress.close()
            # X, y and sample_weight are validated by bind: only a non-finite W is left
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain large "
                "values and need to be preprocessed."
            ) from exc
        if progress is not None:
            progress.close(opt_res.message)

        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        # views of the solution, as scikit-learn's _unpack gives
        coefs, intercepts = net.unpack(opt_res.x)
        self.coefs_, self.intercepts_ = list(coefs), list(intercepts)


def _fastbp_params_doc(kind):
    return f"""
    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Units per hidden layer.
    activation : {{"identity", "logistic", "tanh", "relu"}}, default="relu"
        Hidden activation.
    solver : {{"lbfgs"}}, default="lbfgs"
        Only L-BFGS-B (through ``scipy.optimize.minimize``); anything else raises.
    alpha : float, default=0.0001
        L2 penalty, scikit-learn's convention: ``alpha / (2 Σ sample_weight) · Σ W²``.
    batch_size, learning_rate, learning_rate_init, power_t, shuffle, momentum, \
nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2, epsilon, \
n_iter_no_change
        Accepted for compatibility and ignored, as scikit-learn ignores them under lbfgs.
    max_iter : int, default=200
        Maximum L-BFGS iterations (scipy's ``maxiter``).
    random_state : int, RandomState instance or None, default=None
        Draws the initial weights exactly as scikit-learn does.
    tol : float, default=1e-4
        scipy's ``gtol``: stop when the projected gradient's largest entry is below it.
    verbose : bool, default=False
        Draw a progress bar (iteration, loss, gradient ∞-norm) on stderr during the fit.
    warm_start : bool, default=False
        Start from the previous fit's weights.
    max_fun : int, default=15000
        Maximum loss evaluations (scipy's ``maxfun``).
    backend : {{"auto", "numpy", "numba", "cython"}}, default="auto"
        fastbp kernel; "auto" takes the fastest available.
    dtype : np.float64, np.float32 or None, default=None
        Compute dtype of the kernel; None follows ``X`` (float32 stays float32, as in
        scikit-learn). The loss, gradient and fitted weights are float64 either way.
    n_threads : int or None, default=None
        Threads of the compiled kernels; None uses every core.

    Attributes
    ----------
    loss_ : float
        The loss at the end of the fit (data term + penalty){kind}.
    loss_curve_ : list of float
        The loss after each L-BFGS iteration.
    coefs_, intercepts_ : list of ndarray
        Weights per layer, scikit-learn's shapes.
    n_iter_ : int
        L-BFGS iterations run.
    n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_
        As in scikit-learn.
    backend_ : str
        The fastbp backend that ran the fit.
    """


class MLPClassifier(_FastbpLBFGSMixin, _SkMLPClassifier):
    __doc__ = (
        """Multi-layer perceptron classifier: scikit-learn's, trained by L-BFGS on fastbp's kernels.

    Same constructor, attributes and methods as
    :class:`sklearn.neural_network.MLPClassifier` (see :mod:`fastbp.estimators` for the few
    deliberate differences): binary, multiclass (softmax) and multi-label (logistic outputs)
    classification, ``sample_weight``, ``warm_start``, sparse input (densified per fit).
    """
        + _fastbp_params_doc("")
        + """
    classes_ : ndarray
        Class labels.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> X = np.array([[0., 0], [0, 1], [1, 0], [1, 1]]); y = [0, 1, 1, 0]
    >>> clf = fastbp.MLPClassifier((8,), activation="tanh", random_state=1).fit(X, y)
    >>> clf.predict(X).tolist()
    [0, 1, 1, 0]
    """
    )

    _parameter_constraints: dict = {**_SkMLPClassifier._parameter_constraints, **_FASTBP_CONSTRAINTS}

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="lbfgs",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        dtype=None,
        n_threads=None,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
        )
        self.backend = backend
        self.dtype = dtype
        self.n_threads = n_threads


class MLPRegressor(_FastbpLBFGSMixin, _SkMLPRegressor):
    __doc__ = (
        """Multi-layer perceptron regressor: scikit-learn's, trained by L-BFGS on fastbp's kernels.

    Same constructor, attributes and methods as :class:`sklearn.neural_network.MLPRegressor`
    (see :mod:`fastbp.estimators` for the few deliberate differences): half squared error with
    identity outputs, one or several outputs, ``sample_weight``, ``warm_start``, sparse input
    (densified per fit).

    Parameters
    ----------
    loss : {"squared_error"}, default="squared_error"
        Half squared error, summed over outputs. "poisson" is not supported by fastbp.
    """
        + _fastbp_params_doc(
            "; for several outputs the half squared error is summed over them, where "
            "scikit-learn reports its mean (scikit-learn issue #8349)"
        ).replace("\n    Parameters\n    ----------\n", "\n", 1)
    )

    _parameter_constraints: dict = {**_SkMLPRegressor._parameter_constraints, **_FASTBP_CONSTRAINTS}

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="lbfgs",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        backend="auto",
        dtype=None,
        n_threads=None,
    ):
        super().__init__(
            loss=loss,
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
        )
        self.backend = backend
        self.dtype = dtype
        self.n_threads = n_threads
