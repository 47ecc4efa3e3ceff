"""Drop-in scikit-learn ``MLPClassifier`` and ``MLPRegressor`` trained on fastbp's kernels.

Design
------
Both classes **subclass** :class:`sklearn.neural_network.MLPClassifier` and
:class:`~sklearn.neural_network.MLPRegressor` and replace the two solver steps, ``_fit_lbfgs``
and ``_fit_stochastic``. Everything else is scikit-learn's own code, run unchanged: the parameter
constraints and their error messages, input validation (``validate_data``), label binarizing,
``warm_start``, ``partial_fit`` and its ``classes`` bookkeeping, the random initialisation
(``_initialize`` / ``_init_coef`` from ``random_state``), the early-stopping score and the
no-improvement count (``_update_no_improvement_count``), the check that the solution is finite,
``predict``/``predict_proba``/``score``, tags and the fitted attributes. So a model behaves as
scikit-learn's does wherever fastbp does not deliberately differ, and it starts from
bit-identical weights for a given ``random_state``.

Both steps build a :class:`fastbp.Network` with the same layer sizes, hidden activation and
output (``out_activation_``; scikit-learn's ``"exp"`` is fastbp's ``"exponential"``), and work on
one flat weight vector in scikit-learn's packing, so ``coefs_`` and ``intercepts_`` are views of
it, never reordered.

* ``solver="lbfgs"``: ``l2 = alpha / (2 Σ sample_weight)`` (``n_samples`` unweighted), so that
  fastbp's loss equals scikit-learn's; the data are bound once (:meth:`fastbp.Network.bind`) and
  ``minimize(objective, W0, jac=True, method="L-BFGS-B")`` runs with the options scikit-learn's
  ``_fit_lbfgs`` passes (``maxfun=max_fun``, ``maxiter=max_iter``, ``gtol=tol``, ``iprint``
  where scipy still takes it).
* ``solver="sgd"`` / ``"adam"``: scikit-learn's ``_fit_stochastic`` control flow, step for step:
  the optimizer (:mod:`fastbp.optimizers`: scikit-learn's optimizer classes with their state in
  flat arrays), the early-stopping split (``train_test_split`` with ``self._random_state``,
  stratified for single-output classifiers), one ``shuffle`` of the sample order per epoch from
  the same random state, ``gen_batches``' batches, ``loss_`` as Σ batch size × batch loss / n,
  the no-improvement count, ``iteration_ends``, ``trigger_stopping``, the
  ``ConvergenceWarning`` and the best-weights restore. Only the work of an epoch's minibatches
  (per batch: the loss and gradient with ``scale = 1 / Σ batch weights`` and
  ``l2 = alpha / (2 Σ batch weights)``, then the optimizer's step) is fastbp's:
  :func:`fastbp.backends.stochastic.run_epoch`, one call per epoch. For a given
  ``random_state`` the fit therefore visits the same batches with the same updates as
  scikit-learn's, and ``loss_curve_`` agrees to round-off (tests/test_stochastic_parity.py).

A call that raises leaves the estimator as it was before the call (its attributes are restored),
whatever step failed.

Differences from scikit-learn
-----------------------------
* Added parameters: ``backend``, ``dtype`` and ``n_threads``, passed to :class:`fastbp.Network`.
  ``dtype`` (None: follow ``X``, as scikit-learn does) also sets the dtype of the stochastic
  solvers' ``coefs_`` / ``intercepts_``.
* ``loss_curve_`` is recorded under lbfgs too: the loss after each L-BFGS iteration
  (``len(loss_curve_) == n_iter_`` after a fresh fit; ``warm_start`` fits append to it).
* ``verbose=True`` under lbfgs draws a progress bar (iteration, loss, gradient ∞-norm) on
  stderr; under sgd/adam it prints scikit-learn's lines.
* Multi-output squared-error regression: ``loss_`` (and ``loss_curve_``, ``best_loss_``) is the
  contract's half squared error **summed** over the outputs, whose gradient is the one
  scikit-learn uses; scikit-learn reports the mean over the outputs instead (scikit-learn issue
  #8349). fastbp's loss and gradient agree, scikit-learn's do not: under lbfgs, whose line search
  reads the loss, the two fits take different paths; under sgd/adam they take the same steps, but
  ``tol`` is compared with the summed loss, so ``n_iter_no_change`` can end them at different
  epochs. With one output, and for ``loss="poisson"`` (which scikit-learn sums too), everything
  is equal.
* Cross-entropies are computed from the pre-activations, without scikit-learn's clipping of
  probabilities to ``[eps, 1 - eps]``; the two agree wherever that clipping does not bite.
* Sparse ``X`` (CSR/CSC) is accepted and **densified once per fit** (the kernels are dense);
  prediction uses scikit-learn's sparse-aware forward pass, so it is never densified there.
* With a compiled backend and no layer of 2048 or more coefficients, BLAS is held to one thread
  during the fit (scipy's L-BFGS-B and the early-stopping score call BLAS on small arrays, where
  threads only cost; on a busy machine they made fits 10× slower). Wider networks and the numpy
  backend keep BLAS's threads.
* ``sample_weight`` must be non-negative and not all zero (scikit-learn divides by zero there);
  under sgd/adam a minibatch whose weights are all zero is skipped (no step; scikit-learn divides
  by zero and ends with non-finite weights).
* ``loss="poisson"`` with a negative target raises a ValueError (scikit-learn computes NaN).
"""

from __future__ import annotations

import contextlib
import warnings
from numbers import Integral

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn import get_config
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _SkMLPClassifier
from sklearn.neural_network import MLPRegressor as _SkMLPRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import validate_data

try:  # scikit-learn's own switch for scipy's deprecated iprint; the same rule where it is missing
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover

    def _get_additional_lbfgs_options_dict(key, value):
        from scipy import __version__
        from sklearn.externals._packaging.version import parse

        return {} if parse(__version__) >= parse("1.15") else {key: value}


from . import backends
from ._progress import LBFGSProgress
from ._validation import _cast_finite, check_sample_weight, check_targets
from .backends.stochastic import epoch_runner
from .layout import DTYPES
from .network import Network
from .optimizers import AdamOptimizer, SGDOptimizer, as_flat

__all__ = ["MLPClassifier", "MLPRegressor"]

_FASTBP_CONSTRAINTS = {
    "backend": [StrOptions(set(backends.backend_names()))],
    "dtype": "no_validation",  # checked when the fit starts, with a clear message
    "n_threads": [None, Interval(Integral, 1, None, closed="left")],
}

#: scikit-learn's output activation names -> fastbp's output names
_OUTPUTS = {"identity": "identity", "logistic": "logistic", "softmax": "softmax", "exp": "exponential"}

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


def _shuffle_in_place(sample_idx, random_state):
    """``sample_idx[:] = sklearn.utils.shuffle(sample_idx, random_state=random_state)``, cheaply.

    scikit-learn's shuffle draws one ``random_state.shuffle`` of ``arange(n)`` and indexes by it.
    That shuffle's swaps (Fisher-Yates, the draw for position i depends on i alone) do not
    depend on the values moved, so shuffling ``sample_idx`` itself gives the same array from
    the same draws, without the input checks, the ``arange`` and the gather (a few µs an epoch,
    which the lab's one-batch epochs notice)."""
    random_state.shuffle(sample_idx)


def _plain_finite_matrix(X, n_samples):
    """Whether scikit-learn's ``validate_data`` (``dtype=(float64, float32)``) would take ``X``
    as it is, with ``n_samples`` targets of a 1-D integer ``y``: a plain 2-D float64 or float32
    ndarray of ``n_samples`` rows (at least one) and at least one column, finite unless
    scikit-learn's ``assume_finite`` is set. Its checks cost a tenth of a millisecond a fit (more
    than the lab's fit spends in several epochs); any other X goes through them."""
    return (type(X) is np.ndarray and X.ndim == 2 and X.dtype in _PLAIN_FLOATS and X.shape[0] == n_samples
            and n_samples >= 1 and X.shape[1] >= 1 and (get_config()["assume_finite"] or np.isfinite(X).all()))


_PLAIN_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _frozen(value):
    """A comparable snapshot of a parameter's value: scalars, strings and types as they are,
    sequences and arrays element by element, other objects by identity; the type always."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return (type(value), tuple(_frozen(v) for v in value))
    if value is None or isinstance(value, (bool, int, float, str, type, np.generic, np.dtype)):
        return (type(value), value)
    return (type(value), id(value))


def _readonly(a):
    """A read-only view of ``a`` (``a`` itself if it is read-only already)."""
    if not a.flags.writeable:
        return a
    a = a.view()
    a.setflags(write=False)
    return a


class _FastbpMixin:
    """The solver steps on fastbp's kernels; placed before scikit-learn's class in the MRO."""

    # ------------------------------------------------------------------------- bookkeeping
    @contextlib.contextmanager
    def _unchanged_on_error(self):
        """Restore every attribute if the body raises: a failed call changes nothing."""
        saved = {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    # ------------------------------------------------------------------ parameter validation
    @classmethod
    def _get_param_names(cls):
        # The constructor's parameter names, read from its signature once per class: scikit-learn
        # inspects the signature on every get_params (45 us of each fit).
        names = cls.__dict__.get("_fastbp_param_names")
        if names is None:
            names = tuple(super()._get_param_names())
            cls._fastbp_param_names = names
        return list(names)

    def _validate_params(self):
        # scikit-learn's check of every parameter against its constraints (0.1 ms), skipped when
        # no parameter changed since the last check passed: any change, in value or type (or in
        # place, for sequences), is checked again, with scikit-learn's errors.
        snapshot = tuple((name, _frozen(getattr(self, name))) for name in self._get_param_names())
        if snapshot == self.__dict__.get("_fastbp_params_checked"):
            return
        super()._validate_params()
        self._fastbp_params_checked = snapshot

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns __dict__ itself
        state.pop("_fastbp_network", None)  # a cache of compiled kernels: rebuilt on demand
        state.pop("_fastbp_params_checked", None)  # (identities mean nothing in another process)
        return state

    def _checked_dtype(self):
        """``self.dtype`` as a numpy dtype, or a ValueError naming the parameter."""
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as exc:
            raise ValueError(f"dtype must be np.float64, np.float32 or None, got {self.dtype!r}") from exc
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be np.float64, np.float32 or None, got {self.dtype!r}")
        return dtype

    def _network(self, layer_units, dtype, l2=0.0):
        """The fastbp Network of this fit (its kernels kept between partial_fit calls)."""
        key = (tuple(layer_units), self.activation, self.out_activation_, self.backend, np.dtype(dtype),
               self.n_threads, float(l2))
        cached = getattr(self, "_fastbp_network", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        net = Network(
            layer_units,
            activation=self.activation,
            output=_OUTPUTS[self.out_activation_],
            l2=l2,
            backend=self.backend,
            dtype=dtype,
            n_threads=self.n_threads,
        )
        self._fastbp_network = (key, net)
        return net

    def _blas_limit(self, net):
        small = max(a * b for a, b in net.layout.coef_shapes) < _BLAS_FREE_LAYER
        return _one_blas_thread() if small and self.backend_ != "numpy" else contextlib.nullcontext()

    def _set_indptr(self, layout):
        # scikit-learn's _fit_lbfgs leaves these; its _unpack and _loss_grad_lbfgs read them
        self._coef_indptr = [
            (int(layout.coef_offsets[i]), int(layout.coef_offsets[i + 1]), shape)
            for i, shape in enumerate(layout.coef_shapes)
        ]
        self._intercept_indptr = [
            (int(layout.intercept_offsets[i]), int(layout.intercept_offsets[i + 1]))
            for i in range(len(layout.intercept_shapes))
        ]

    # ---------------------------------------------------------------------------- entry points
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` with the chosen solver on fastbp's kernels.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data. Sparse matrices are densified once for the fit.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification; a label-indicator matrix for multi-label) or real
            targets (regression; non-negative for ``loss="poisson"``).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights, not all zero.

        Returns
        -------
        self : object
            The fitted estimator. If the call raises, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            return super().fit(X, y, sample_weight=sample_weight)

    def _initialize(self, y, layer_units, dtype):
        super()._initialize(y, layer_units, dtype if self.dtype is None else self._checked_dtype())
        self.loss_curve_ = []  # a fresh fit; warm_start fits append

    # ----------------------------------------------------------------------------------- lbfgs
    def _fit_lbfgs(
        self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads, layer_units
    ):
        # Called by scikit-learn's _fit with X, y validated (y binarized for classifiers), the
        # weights initialised (or kept for warm_start) and sample_weight checked.
        if sp.issparse(X):
            X = X.toarray()
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        sw_sum = X.shape[0] if sample_weight is None else float(sample_weight.sum())
        dtype = X.dtype if self.dtype is None else self._checked_dtype()
        net = self._network(layer_units, dtype, l2=self.alpha / (2.0 * sw_sum))  # alpha/2 ΣW²/Σs = λ ΣW²
        objective = net.bind(X, y, sample_weight)
        self.backend_ = (
            backends.choose(net.layout, X.shape[0]) if self.backend == "auto" else self.backend
        )
        self._set_indptr(net.layout)
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
        try:
            with self._blas_limit(net):
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

    # ------------------------------------------------------------------------------ sgd, adam
    def _new_optimizer(self, params):
        if self.solver == "sgd":
            return SGDOptimizer(params, self.learning_rate_init, self.learning_rate, self.momentum,
                                self.nesterovs_momentum, self.power_t)
        return AdamOptimizer(params, self.learning_rate_init, self.beta_1, self.beta_2, self.epsilon)

    def _ensure_stochastic_state(self):
        """The attributes scikit-learn's _initialize sets for sgd/adam, where a warm start from
        another solver's fit (or hand-set weights) lacks them."""
        if getattr(self, "loss_curve_", None) is None:
            self.loss_curve_ = []
        if not hasattr(self, "_no_improvement_count"):
            self._no_improvement_count = 0
        if not hasattr(self, "t_"):
            self.t_ = 0
        if self.early_stopping and getattr(self, "validation_scores_", None) is None:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        elif not self.early_stopping and getattr(self, "best_loss_", None) is None:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
        if not hasattr(self, "_best_coefs"):
            self._best_coefs = [c.copy() for c in self.coefs_]
            self._best_intercepts = [i.copy() for i in self.intercepts_]

    def _fit_stochastic(
        self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads, layer_units, incremental
    ):
        # scikit-learn's _fit_stochastic, with the minibatch loop of an epoch replaced by one
        # run_epoch call on the flat weights (see the module docstring).
        if sp.issparse(X):
            X = X.toarray()
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        if self.dtype is not None:
            dtype = self._checked_dtype()
        else:  # the weights' dtype (X's at initialisation, as scikit-learn's _init_coef casts)
            dtype = np.dtype(self.coefs_[0].dtype)
            dtype = dtype if dtype in DTYPES else np.dtype(np.float64)
        net = self._network(layer_units, dtype)
        W = net.pack(self.coefs_, self.intercepts_).astype(dtype)
        coefs, intercepts = net.unpack(W)
        self.coefs_, self.intercepts_ = list(coefs), list(intercepts)  # views: stepped in place
        params = self.coefs_ + self.intercepts_
        self._set_indptr(net.layout)
        self._ensure_stochastic_state()

        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._new_optimizer(params)
        else:  # continue from a copy: the previous state stays intact should this call fail
            self._optimizer = as_flat(self._optimizer, params)
        optimizer = self._optimizer

        # early_stopping in partial_fit doesn't make sense (scikit-learn's words)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # don't stratify in multilabel classification
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify
                )
                sw_train = sw_val = None
            else:
                X_train, X_val, y_train, y_val, sw_train, sw_val = train_test_split(
                    X, y, sample_weight, random_state=self._random_state, test_size=self.validation_fraction,
                    stratify=stratify,
                )
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            X_val = y_val = sw_val = None

        layout = net.layout
        # read-only views, made once: a kernel that wants them so (numba) need not make them per epoch
        # X was validated by scikit-learn's _validate_input (dense here, finite, float, as wide as
        # the first layer): what is left is the compute dtype and C order (check_X would validate
        # it again, a tenth of a millisecond per fit)
        X_fit = _readonly(_cast_finite(X_train, layout.dtype, "X"))
        T_fit = _readonly(check_targets(y_train, layout, X_fit.shape[0]))
        sw_train = None if sw_train is None else _readonly(sw_train)
        n_samples = X_fit.shape[0]
        sample_idx = np.arange(n_samples, dtype=np.int64)  # shuffled in place each epoch

        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                    stacklevel=3,
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        kernel = net._kernel_for(batch_size)
        self.backend_ = backends.choose(layout, batch_size) if self.backend == "auto" else self.backend
        order = sample_idx if self.shuffle else None
        # the kernel's compiled epoch where it has one, its arguments checked once for the fit
        run_epoch = epoch_runner(kernel, W, X_fit, T_fit, sw_train, order, batch_size, float(self.alpha), optimizer)

        try:
            with self._blas_limit(net):
                self.n_iter_ = 0
                for _ in range(self.max_iter):
                    if order is not None:
                        _shuffle_in_place(order, self._random_state)
                    accumulated_loss = run_epoch()
                    self.n_iter_ += 1
                    self.loss_ = accumulated_loss / n_samples
                    self.t_ += n_samples
                    self.loss_curve_.append(self.loss_)
                    if self.verbose:
                        print(f"Iteration {self.n_iter_:d}, loss = {self.loss_:.8f}")

                    # update no_improvement_count from the training loss or the validation score
                    self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
                    # for a learning rate that is updated at the end of an epoch
                    optimizer.iteration_ends(self.t_)

                    if self._no_improvement_count > self.n_iter_no_change:
                        if early_stopping:
                            msg = (
                                f"Validation score did not improve more than tol={self.tol:f} for "
                                f"{self.n_iter_no_change:d} consecutive epochs."
                            )
                        else:
                            msg = (
                                f"Training loss did not improve more than tol={self.tol:f} for "
                                f"{self.n_iter_no_change:d} consecutive epochs."
                            )
                        if optimizer.trigger_stopping(msg, self.verbose):
                            break
                        self._no_improvement_count = 0

                    if incremental:
                        break
                    if self.n_iter_ == self.max_iter:
                        warnings.warn(
                            f"Stochastic Optimizer: Maximum iterations ({self.max_iter:d}) reached and the "
                            "optimization hasn't converged yet.",
                            ConvergenceWarning,
                            stacklevel=3,
                        )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)

        if early_stopping:  # restore the best weights
            self.coefs_ = self._best_coefs
            self.intercepts_ = self._best_intercepts


def _fastbp_params_doc(kind, loss_doc=""):
    return f"""
    Parameters
    ----------{loss_doc}
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Units per hidden layer.
    activation : {{"identity", "logistic", "tanh", "relu"}}, default="relu"
        Hidden activation.
    solver : {{"adam", "sgd", "lbfgs"}}, default="adam"
        "adam" and "sgd" run scikit-learn's minibatch loop with fastbp computing each batch;
        "lbfgs" is ``scipy.optimize.minimize(method="L-BFGS-B")`` on the full batch.
    alpha : float, default=0.0001
        L2 penalty, scikit-learn's convention: ``alpha / (2 Σ sample_weight) · Σ W²`` (per
        minibatch under sgd/adam, with the batch's weights).
    batch_size : int or "auto", default="auto"
        Minibatch size of sgd/adam; "auto" is ``min(200, n_samples)``.
    learning_rate : {{"constant", "invscaling", "adaptive"}}, default="constant"
        sgd's schedule: ``learning_rate_init``; ``learning_rate_init / (t + 1) ** power_t`` after
        each epoch (t samples seen); divided by 5 whenever ``n_iter_no_change`` epochs fail to
        improve by ``tol``.
    learning_rate_init : float, default=0.001
        Step size of sgd and adam.
    power_t : float, default=0.5
        Exponent of the "invscaling" schedule.
    max_iter : int, default=200
        Epochs (sgd, adam) or L-BFGS iterations (lbfgs).
    shuffle : bool, default=True
        Shuffle the samples before each epoch (sgd, adam).
    random_state : int, RandomState instance or None, default=None
        Draws the initial weights, the early-stopping split and the shuffles exactly as
        scikit-learn does.
    tol : float, default=1e-4
        sgd/adam: the improvement of the loss (or validation score) that counts as one;
        lbfgs: scipy's ``gtol``.
    verbose : bool, default=False
        lbfgs: a progress bar on stderr; sgd/adam: scikit-learn's lines on stdout.
    warm_start : bool, default=False
        Start from the previous fit's weights.
    momentum : float, default=0.9
        sgd's momentum.
    nesterovs_momentum : bool, default=True
        Nesterov's momentum (sgd, momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified for single-output
        classification) and stop when its score has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, keeping the best weights (sgd, adam).
    validation_fraction : float, default=0.1
        The held-out share for early stopping.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's moment decay rates and its stabilizer.
    n_iter_no_change : int, default=10
        Epochs without improvement that end the fit (sgd, adam).
    max_fun : int, default=15000
        Maximum loss evaluations of lbfgs (scipy's ``maxfun``).
    backend : {{"auto", "numpy", "numba", "cython"}}, default="auto"
        fastbp kernel; "auto" takes the fastest available.
    dtype : np.float64, np.float32 or None, default=None
        Compute dtype of the kernel; None follows ``X`` (float32 stays float32, as in
        scikit-learn). Under sgd/adam the weights (``coefs_``, ``intercepts_``) and the
        optimizer's state are in this dtype; under lbfgs they are float64 (scipy's).
    n_threads : int or None, default=None
        Threads of the compiled kernels; None uses every core.

    Attributes
    ----------
    loss_ : float
        The loss at the end of the fit (data term + penalty){kind}.
    loss_curve_ : list of float
        The loss of each epoch (sgd, adam: Σ batch size × batch loss / n) or L-BFGS iteration.
    best_loss_, validation_scores_, best_validation_score_
        As in scikit-learn (sgd, adam).
    t_ : int
        Training samples seen.
    coefs_, intercepts_ : list of ndarray
        Weights per layer, scikit-learn's shapes.
    n_iter_ : int
        Epochs or L-BFGS iterations run.
    n_layers_, n_outputs_, out_activation_, n_features_in_, feature_names_in_
        As in scikit-learn.
    backend_ : str
        The fastbp backend that ran the fit.
    """


class MLPClassifier(_FastbpMixin, _SkMLPClassifier):
    __doc__ = (
        """Multi-layer perceptron classifier: scikit-learn's, trained on fastbp's kernels.

    Same constructor, attributes and methods as
    :class:`sklearn.neural_network.MLPClassifier` (see :mod:`fastbp.estimators` for the few
    deliberate differences): the adam, sgd and lbfgs solvers, ``partial_fit``, early stopping,
    binary, multiclass (softmax) and multi-label (logistic outputs) classification,
    ``sample_weight``, ``warm_start``, sparse input (densified per fit).
    """
        + _fastbp_params_doc("")
        + """
    classes_ : ndarray
        Class labels.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> X = np.array([[0., 0], [0, 1], [1, 0], [1, 1]]); y = [0, 1, 1, 0]
    >>> clf = fastbp.MLPClassifier((8,), activation="tanh", solver="lbfgs", random_state=1).fit(X, y)
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
        solver="adam",
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

    def _validate_input(self, X, y, incremental, reset):
        """scikit-learn's, with the label binarizing of the common case done directly: y a
        non-empty 1-D array of integers or bools, at a call that defines ``classes_`` afresh.
        The same ``classes_``, fitted ``LabelBinarizer`` and boolean targets, without the target
        type inspections that cost about 0.9 ms a fit (a tenth of a lab-sized adam fit)."""
        defines = (not hasattr(self, "classes_")) or (not self.warm_start and not incremental)
        if not (defines and isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind in "biu" and y.size):
            return super()._validate_input(X, y, incremental, reset)
        if not (reset and _plain_finite_matrix(X, y.shape[0])):
            X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                                 dtype=(np.float64, np.float32), reset=reset)
        else:  # what validate_data does for such X and y: X itself, its width recorded, no names
            self.__dict__.pop("feature_names_in_", None)
            self.n_features_in_ = X.shape[1]
        classes = np.unique(y)  # sorted, y's dtype: unique_labels' result for such y
        binarizer = LabelBinarizer()
        binarizer.y_type_ = "binary" if classes.size <= 2 else "multiclass"
        binarizer.sparse_input_ = False
        binarizer.classes_ = classes
        self._label_binarizer = binarizer
        self.classes_ = classes
        if classes.size > 2:  # one column per class
            return X, y[:, None] == classes
        if classes.size == 2:  # one column: the second class
            return X, (y == classes[1])[:, None]
        return X, np.zeros((y.shape[0], 1), dtype=bool)  # one class: LabelBinarizer's zero column

    @available_if(_SkMLPClassifier.__dict__["partial_fit"].check)  # sgd and adam only, as scikit-learn
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch of the stochastic solver over ``X`` and ``y`` (sgd and adam only).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            The target labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.
        classes : array of shape (n_classes,), default=None
            Every class of all calls; required at the first call (not after ``fit``). Later
            calls raise a ValueError for a label outside them.

        Returns
        -------
        self : object
            The updated estimator. If the call raises, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            return super().partial_fit(X, y, sample_weight=sample_weight, classes=classes)


class MLPRegressor(_FastbpMixin, _SkMLPRegressor):
    __doc__ = (
        """Multi-layer perceptron regressor: scikit-learn's, trained on fastbp's kernels.

    Same constructor, attributes and methods as :class:`sklearn.neural_network.MLPRegressor`
    (see :mod:`fastbp.estimators` for the few deliberate differences): the adam, sgd and lbfgs
    solvers, ``partial_fit``, early stopping, half squared error with identity outputs or the
    Poisson loss with exponential ones, one or several outputs, ``sample_weight``,
    ``warm_start``, sparse input (densified per fit).
    """
        + _fastbp_params_doc(
            "; for several squared-error outputs the half squared error is summed over them, where "
            "scikit-learn reports its mean (scikit-learn issue #8349)",
            loss_doc="""
    loss : {"squared_error", "poisson"}, default="squared_error"
        Half squared error with identity outputs (summed over outputs), or half the Poisson
        deviance with exponential outputs, ``p = exp(a)`` (``y`` must be non-negative).""",
        )
    )

    _parameter_constraints: dict = {**_SkMLPRegressor._parameter_constraints, **_FASTBP_CONSTRAINTS}

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
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

    def _validate_input(self, X, y, incremental, reset):
        X, y = super()._validate_input(X, y, incremental, reset)
        if self.loss == "poisson" and np.any(y < 0):
            # the words of scikit-learn's other Poisson estimators (its MLP computes NaN instead)
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return X, y

    # scikit-learn's own availability rule for the regressor (its check is always true)
    @available_if(_SkMLPRegressor.__dict__["partial_fit"].check)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of the stochastic solver over ``X`` and ``y``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets (non-negative for ``loss="poisson"``).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative sample weights.

        Returns
        -------
        self : object
            The updated estimator. If the call raises, the estimator is left as it was.
        """
        with self._unchanged_on_error():
            return super().partial_fit(X, y, sample_weight=sample_weight)
