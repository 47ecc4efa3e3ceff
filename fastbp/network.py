"""``Network``: a multilayer perceptron's regularized loss and gradient for scipy.optimize.

Data flows one way: the user calls :class:`Network` (which validates once), the network calls a
backend kernel (see :mod:`fastbp.backends`), the kernel returns ``(loss, grad)``. The flat weight
layout and the kernel codes are in :mod:`fastbp.layout`.
"""

from __future__ import annotations

import numpy as np

from . import backends
from ._validation import (
    check_l2,
    check_n_threads,
    check_sample_weight,
    check_targets,
    check_weights,
    check_X,
    rescale_sample_weight,
)
from .backends.numpy_backend import NumpyKernel
from .layout import Layout

__all__ = ["Network", "BoundObjective"]


class Network:
    """A fully connected network whose loss and gradient feed ``scipy.optimize.minimize``.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer: inputs, hidden layers..., outputs. Two entries mean no hidden layer.
    activation : {"logistic", "sigmoid", "tanh", "relu", "identity"}, default="logistic"
        Hidden activation ("sigmoid" is an alias of "logistic").
    output : {"logistic", "softmax", "identity", "exponential"} or None, default=None
        Output layer and loss. None infers "logistic" (binary cross-entropy) for one output unit
        and "softmax" (categorical cross-entropy) for more. "identity" is half squared error.
        "exponential" is p = e^a with half the Poisson deviance
        Σ_k [t_k log(t_k / p_k) − t_k + p_k] (scikit-learn's ``loss="poisson"``); its targets are
        non-negative reals. Where e^a overflows the compute dtype (a > 709.78 in float64,
        a > 88.72 in float32) the loss and gradient are not finite, as in scikit-learn; nothing
        is raised. Several logistic outputs are multi-label; several identity or exponential
        outputs are multi-output.
    l2 : float, default=0.0
        λ of the lab: ``loss += λ Σ W²`` over coefficients, never intercepts. scikit-learn's
        ``alpha`` is ``l2 = alpha / (2 Σ sample_weight)``.
    backend : {"auto", "numpy", "numba", "cython"}, default="auto"
        Kernel that computes loss and gradient. "auto" takes the fastest available for the call's
        size (see :func:`fastbp.backends.choose`).
    dtype : np.float64 or np.float32, default=np.float64
        Compute dtype. float32 computes in float32 and accumulates in float64; the loss and
        gradient are always returned in float64.
    n_threads : int or None, default=None
        Threads for the compiled kernels; None uses every core. Results are bit-identical for a
        given ``n_threads``.

    Notes
    -----
    With ``t`` the targets, ``s_n`` the sample weights (1 when none) and ℓ_n the data term of
    sample n (see README), ``loss = Σ s_n ℓ_n / Σ s_n + λ Σ W²``.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> from scipy.optimize import minimize
    >>> X = np.array([[0., 0], [0, 1], [1, 0], [1, 1]]); y = np.array([0, 1, 1, 0])
    >>> net = fastbp.Network([2, 4, 1], activation="tanh")
    >>> res = minimize(net.bind(X, y), net.init_weights(random_state=0), jac=True, method="L-BFGS-B")
    >>> net.predict(res.x, X).tolist()
    [0, 1, 1, 0]
    """

    def __init__(
        self,
        layer_sizes,
        activation="logistic",
        output=None,
        l2=0.0,
        backend="auto",
        dtype=np.float64,
        n_threads=None,
    ):
        self._layout = Layout(layer_sizes, activation, output, dtype)
        self._l2 = check_l2(l2)
        if backend != "auto":
            backends.get_backend(backend)  # unknown or unavailable: a clear error now
        elif not isinstance(backend, str):
            raise TypeError(f"backend must be a string, got {backend!r}")
        self._backend = backend
        self._n_threads = check_n_threads(n_threads)
        self._kernels = {}
        self._reference = NumpyKernel(self._layout)

    # read-only: the precomputed layout and kernels depend on these
    layout = property(lambda self: self._layout, doc="The :class:`fastbp.layout.Layout`.")
    layer_sizes = property(lambda self: self._layout.layer_sizes, doc="Units per layer.")
    activation = property(lambda self: self._layout.activation, doc="Hidden activation.")
    output = property(lambda self: self._layout.output, doc="Output layer.")
    dtype = property(lambda self: self._layout.dtype, doc="Compute dtype.")
    l2 = property(lambda self: self._l2, doc="λ, the L2 penalty on coefficients.")
    backend = property(lambda self: self._backend, doc="Requested backend name.")
    n_threads = property(lambda self: self._n_threads, doc="Threads for compiled kernels.")
    n_params = property(lambda self: self._layout.n_params, doc="Length of the flat W.")

    def __repr__(self):
        return (
            f"Network({list(self.layer_sizes)}, activation={self.activation!r}, "
            f"output={self.output!r}, l2={self.l2!r}, backend={self.backend!r}, "
            f"dtype=np.{self.dtype.name}, n_threads={self.n_threads})"
        )

    # ----------------------------------------------------------------------------------- layout
    def unpack(self, W):
        """Views of the flat ``W`` as ``(coefs, intercepts)``.

        ``coefs[l]`` has shape ``(layer_sizes[l], layer_sizes[l+1])`` and ``intercepts[l]`` shape
        ``(layer_sizes[l+1],)``, exactly as scikit-learn's ``coefs_`` and ``intercepts_``.
        """
        W = np.asarray(W)
        if W.ndim != 1 or W.shape[0] != self.n_params:
            raise ValueError(f"W must be 1-D with n_params = {self.n_params} entries, got shape {W.shape}")
        return self._layout.unpack(W)

    def pack(self, coefs, intercepts):
        """The flat float64 ``W`` from per-layer ``coefs`` and ``intercepts`` (scikit-learn's
        ``coefs_`` and ``intercepts_`` are taken as they are)."""
        return self._layout.pack(coefs, intercepts)

    def init_weights(self, random_state=None):
        """Weights drawn as the lab says: layer l uniform in [−ε_l, ε_l],
        ε_l = sqrt(2 / (fan_in + fan_out)), intercepts included.

        Parameters
        ----------
        random_state : None, int or numpy.random.Generator / RandomState
        """
        if isinstance(random_state, np.random.RandomState):
            uniform = random_state.uniform
        else:
            uniform = np.random.default_rng(random_state).uniform
        coefs, intercepts = [], []
        for fan_in, fan_out in self._layout.coef_shapes:
            eps = np.sqrt(2.0 / (fan_in + fan_out))
            coefs.append(uniform(-eps, eps, (fan_in, fan_out)))
            intercepts.append(uniform(-eps, eps, fan_out))
        return self.pack(coefs, intercepts)

    # ------------------------------------------------------------------------ loss and gradient
    def _kernel_for(self, n_samples):
        name = self._backend
        if name == "auto":
            name = backends.choose(self._layout, n_samples)
        kernel = self._kernels.get(name)
        if kernel is None:
            kernel = backends.get_backend(name).prepare(self._layout, self._n_threads)
            self._kernels[name] = kernel
        return kernel

    def _validate(self, X, y, sample_weight):
        X = check_X(X, self._layout)
        T = check_targets(y, self._layout, X.shape[0])
        sw = check_sample_weight(sample_weight, X.shape[0])
        if sw is not None:
            sw = rescale_sample_weight(sw)
        scale = 1.0 / (X.shape[0] if sw is None else float(sw.sum()))
        return X, T, sw, scale

    def bind(self, X, y, sample_weight=None):
        """Validate ``X``, ``y`` and ``sample_weight`` once and return ``f(W) -> (loss, grad)``.

        The fast path for optimizers: ``minimize(net.bind(X, y), W0, jac=True)``. Only ``W`` is
        checked per call. ``X`` is copied only where a conversion is needed (to C order or to
        the compute dtype); where it is not, the objective reads the caller's array, so change
        that array after binding only if you mean the objective to see it.
        """
        X, T, sw, scale = self._validate(X, y, sample_weight)
        return BoundObjective(self, X, T, sw, scale)

    def loss_and_grad(self, W, X, y, sample_weight=None):
        """The loss and its gradient at ``W`` on ``(X, y)``, every argument validated.

        Returns
        -------
        loss : float
        grad : ndarray of float64, shape (n_params,)
        """
        W = check_weights(W, self.n_params)
        X, T, sw, scale = self._validate(X, y, sample_weight)
        return self._kernel_for(X.shape[0])(W, X, T, sw, scale, self._l2)

    # ------------------------------------------------------------------------------ prediction
    def predict_proba(self, W, X):
        """Output probabilities (logistic, softmax) or values (identity; e^a for exponential),
        shape (n, n_outputs).

        For a single logistic output the shape is ``(n, 1)``: the probability of class 1.
        """
        W = check_weights(W, self.n_params)
        X = check_X(X, self._layout)
        return self._reference.predict_output(W, X)

    def predict(self, W, X):
        """Predicted labels: class indices for softmax, 0/1 per output for logistic (shape (n,)
        for one output), the values for identity and exponential outputs (shape (n,) for one
        output)."""
        P = self.predict_proba(W, X)
        if self.output == "softmax":
            return P.argmax(axis=1)
        if self.output == "logistic":
            P = (P > 0.5).astype(np.int64)
        return P[:, 0] if P.shape[1] == 1 else P


class BoundObjective:
    """``f(W) -> (loss, grad)`` on data validated once by :meth:`Network.bind`.

    Attributes
    ----------
    network : Network
    n_samples : int
    X, T : ndarray
        The validated inputs and the encoded targets (read-only views).
    sample_weight : ndarray or None
        The validated weights times a power of two that puts the largest in [0.5, 1) (the
        weighted-mean loss does not change; see ``fastbp._validation.rescale_sample_weight``).
    """

    def __init__(self, network, X, T, sample_weight, scale):
        self.network = network
        X, T, sample_weight = (None if a is None else a.view() for a in (X, T, sample_weight))
        for arr in (X, T, sample_weight):
            if arr is not None:
                arr.setflags(write=False)  # read-only views: the objective never writes its data
        self.X, self.T, self.sample_weight, self.scale = X, T, sample_weight, scale
        self.n_samples = X.shape[0]
        self._n_params = network.n_params
        self._l2 = network.l2
        self._kernel = network._kernel_for(X.shape[0])

    def __call__(self, W):
        W = check_weights(W, self._n_params)
        return self._kernel(W, self.X, self.T, self.sample_weight, self.scale, self._l2)

    def loss_and_grad(self, W):
        """Same as calling the objective: ``(loss, grad)`` at ``W``."""
        return self(W)

    def __repr__(self):
        return f"<BoundObjective of {self.network!r} on {self.n_samples} samples>"
