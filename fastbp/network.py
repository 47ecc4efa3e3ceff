"""``Network``: a multilayer perceptron's regularized loss and gradient for scipy.optimize.

Data flows one way: the user calls :class:`Network` (which validates once), the network calls a
backend kernel (see :mod:`fastbp.backends`), the kernel returns ``(loss, grad)``. The flat weight
layout and the kernel codes are in :mod:`fastbp.layout`.

Second order (``hessp``, ``hess``, ``gauss_newton_product``, ``residuals``,
``residuals_jacobian``) goes through the same kernels' second-order methods (every backend has
them).
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

__all__ = ["Network", "BoundObjective", "MAX_DENSE_BYTES"]

#: ``hess`` and ``residuals_jacobian`` refuse to build a dense result larger than this (2 GiB).
MAX_DENSE_BYTES = 2 * 2**30
#: Directions per block of the dense Hessian when the kernel states no ``max_directions``.
DEFAULT_MAX_DIRECTIONS = 256


def _check_dense_size(what, shape):
    n_bytes = 8 * shape[0] * shape[1]
    if n_bytes > MAX_DENSE_BYTES:
        raise ValueError(
            f"{what}: the dense result would be {shape[0]} x {shape[1]} float64 = "
            f"{n_bytes / 2**30:.1f} GiB, over the 2 GiB limit; use the matrix-free products "
            "(hessp, gauss_newton_product) instead"
        )


def _symmetric_from_upper(H, layer, block=256):
    """H ← the symmetric matrix whose entry (i, j) is H[i, j] where ``layer[i] < layer[j]``,
    H[j, i] where ``layer[i] > layer[j]``, and ½ (H[i, j] + H[j, i]) within a layer: in place,
    block by block (no second n × n array). Rows computed with ``upper=True`` hold only the
    entries of their own layer and above; the others are taken from the rows of lower layers."""
    n = H.shape[0]
    for i in range(0, n, block):
        li = layer[i : i + block, None]
        for j in range(i, n, block):
            lj = layer[None, j : j + block]
            A = H[i : i + block, j : j + block]
            B = H[j : j + block, i : i + block].T
            val = np.where(li < lj, A, np.where(li > lj, B, 0.5 * (A + B)))
            H[i : i + block, j : j + block] = val
            H[j : j + block, i : i + block] = val.T


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
    sample n (the losses and targets of each output: docs/reference.md), ``loss = Σ s_n ℓ_n / Σ s_n + λ Σ W²``.

    Second order, exact, for scipy's Newton, trust-region and least-squares solvers:
    :meth:`hessp`, :meth:`hess`, :meth:`gauss_newton_product`, and for identity outputs
    :meth:`residuals` and :meth:`residuals_jacobian` (the same methods, validated once, on the
    objective :meth:`bind` returns).

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

    def __getstate__(self):
        # Pickling sends the description, never a prepared kernel (compiled code, scratch, locks,
        # thread pools): the unpickled network prepares its kernels again on first use, for the
        # same backend and n_threads, so it gives the very same bits.
        state = self.__dict__.copy()
        state["_kernels"] = {}
        return state

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

    # ------------------------------------------------------------------------------ second order
    def hessp(self, W, V, X, y, sample_weight=None):
        """The Hessian of the loss at ``W`` times ``V``, every argument validated.

        The same as ``self.bind(X, y, sample_weight).hessp(W, V)``: see
        :meth:`BoundObjective.hessp`. Its signature fits ``minimize(net.loss_and_grad, W0,
        args=(X, y), jac=True, hessp=net.hessp, method="trust-krylov")``.
        """
        W = check_weights(W, self.n_params)
        V = check_weights(V, self.n_params, name="V")
        return self.bind(X, y, sample_weight).hessp(W, V)

    def hess(self, W, X, y, sample_weight=None):
        """The dense Hessian of the loss at ``W``, every argument validated (see
        :meth:`BoundObjective.hess`)."""
        W = check_weights(W, self.n_params)
        return self.bind(X, y, sample_weight).hess(W)

    def gauss_newton_product(self, W, V, X, y, sample_weight=None):
        """The Gauss-Newton matrix at ``W`` times ``V``, every argument validated (see
        :meth:`BoundObjective.gauss_newton_product`)."""
        W = check_weights(W, self.n_params)
        V = check_weights(V, self.n_params, name="V")
        return self.bind(X, y, sample_weight).gauss_newton_product(W, V)

    def residuals(self, W, X, y, sample_weight=None):
        """The least-squares residuals at ``W`` (identity outputs only), every argument
        validated (see :meth:`BoundObjective.residuals`)."""
        _require_identity_output(self, "residuals")
        W = check_weights(W, self.n_params)
        return self.bind(X, y, sample_weight).residuals(W)

    def residuals_jacobian(self, W, X, y, sample_weight=None):
        """The Jacobian of :meth:`residuals` at ``W``, every argument validated (see
        :meth:`BoundObjective.residuals_jacobian`)."""
        _require_identity_output(self, "residuals_jacobian")
        W = check_weights(W, self.n_params)
        return self.bind(X, y, sample_weight).residuals_jacobian(W)

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
    """``f(W) -> (loss, grad)`` on data validated once by :meth:`Network.bind`, with the
    curvature of the same loss: :meth:`hessp`, :meth:`hess`, :meth:`gauss_newton_product`,
    :meth:`residuals` and :meth:`residuals_jacobian`.

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
        """The loss and its gradient at ``W`` on the bound data; only ``W`` is checked.

        Returns
        -------
        loss : float
        grad : ndarray of float64, shape (n_params,)
            A new array. Bit-identical for the same ``W``, backend and ``n_threads``.
        """
        W = check_weights(W, self._n_params)
        return self._kernel(W, self.X, self.T, self.sample_weight, self.scale, self._l2)

    # Pickling (multiprocessing, joblib, Dask and scipy's `workers=` send objectives that way)
    # sends the network and the validated data, not the prepared kernel: after unpickling, the
    # kernel is prepared again on first use (__getattr__), so nothing but the first call pays.
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_kernel", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        for arr in (self.X, self.T, self.sample_weight):
            if arr is not None:
                arr.setflags(write=False)  # unpickled arrays come back writeable

    def __getattr__(self, name):  # only for attributes not set: the kernel, after unpickling
        if name == "_kernel" and "network" in self.__dict__:
            kernel = self.__dict__["_kernel"] = self.network._kernel_for(self.n_samples)
            return kernel
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def loss_and_grad(self, W):
        """Same as calling the objective: ``(loss, grad)`` at ``W``."""
        return self(W)

    # ------------------------------------------------------------------------------ second order
    def _second_order(self, method):
        return getattr(self._kernel, method)

    def hessp(self, W, V):
        """The Hessian of the loss at ``W`` times the vector ``V``, exactly.

        Computed by Pearlmutter's R-operator: one forward and one backward pass over the data,
        about twice the work of ``loss_and_grad``, never a finite difference. ``H`` is the
        Hessian of the total loss, so ``H V`` includes ``2 λ V`` on the coefficient entries.
        For ``minimize(f, W0, jac=True, hessp=f.hessp, method=...)`` with "Newton-CG",
        "trust-ncg", "trust-krylov" or "trust-constr".

        Parameters
        ----------
        W, V : array-like of shape (n_params,)
            Weights and direction, both finite; ``V`` is checked as ``W`` is.

        Returns
        -------
        ndarray of float64, shape (n_params,)
            A new array. Deterministic: bit-identical for the same inputs, backend and
            ``n_threads``.
        """
        W = check_weights(W, self._n_params)
        V = check_weights(V, self._n_params, name="V")
        return self._second_order("hessp")(W, V, self.X, self.T, self.sample_weight, self.scale, self._l2)

    def hess(self, W):
        """The dense Hessian of the loss at ``W``, for ``minimize(..., hess=f.hess,
        method="trust-exact")`` on small networks.

        Built from Hessian-vector products on blocks of unit vectors, many directions carried
        through each pass over the data (never one pass per parameter). H is symmetric, so the
        row of a parameter of layer l is computed for layers l and above only (the backward pass
        stops at l), the entries below taken from the rows of the lower layers' parameters, and
        each layer's own block made exactly symmetric as ½ (B + Bᵀ) (the products agree with
        their transposes to round-off).

        Returns
        -------
        ndarray of float64, shape (n_params, n_params)

        Raises
        ------
        ValueError
            If the result would exceed 2 GiB (n_params above 16 384): use :meth:`hessp`.
        """
        W = check_weights(W, self._n_params)
        P = self._n_params
        _check_dense_size("hess", (P, P))
        kernel = self._kernel
        block = max(1, int(getattr(kernel, "max_directions", DEFAULT_MAX_DIRECTIONS)))
        H = np.empty((P, P), dtype=np.float64)
        for start in range(0, P, block):
            k = min(block, P - start)
            E = np.zeros((k, P), dtype=np.float64)
            E[np.arange(k), start + np.arange(k)] = 1.0
            H[start : start + k] = kernel.hessp_block(W, E, self.X, self.T, self.sample_weight, self.scale, self._l2,
                                                      upper=True)
        _symmetric_from_upper(H, self.network.layout.param_layer)
        return H

    def gauss_newton_product(self, W, V):
        """The Gauss-Newton matrix at ``W`` times ``V``: ``G V`` with

        ``G = Σ_n s_n·scale·J_nᵀ Λ_n J_n + 2λ·I_coef``, ``J_n`` the Jacobian of sample n's output
        pre-activations in ``W``, ``Λ_n`` the Hessian of its loss in them (positive
        semi-definite: logistic diag p(1−p); softmax s·(diag p − p pᵀ), s = Σ_k t_k; identity
        I), ``scale = 1 / Σ s_n``. G is positive semi-definite (definite with λ > 0 on
        coefficients), equals H where the network is linear in W (no hidden layer), and is
        what Gauss-Newton and Levenberg-Marquardt methods use in place of H.

        Parameters
        ----------
        W, V : array-like of shape (n_params,)

        Returns
        -------
        ndarray of float64, shape (n_params,)
        """
        W = check_weights(W, self._n_params)
        V = check_weights(V, self._n_params, name="V")
        return self._second_order("gauss_newton_product")(
            W, V, self.X, self.T, self.sample_weight, self.scale, self._l2
        )

    def _row_scale(self):
        """sqrt(scale · s_n) per sample, float64 (n,)."""
        if self.sample_weight is None:
            return np.full(self.n_samples, np.sqrt(self.scale))
        return np.sqrt(self.scale * self.sample_weight)

    def residuals(self, W):
        """The residual vector r(W) of the loss as a sum of squares (identity outputs only), for
        ``scipy.optimize.least_squares(f.residuals, W0, jac=f.residuals_jacobian, method="lm")``.

        ``r`` is ``sqrt(scale·s_n)·(p_nk − t_nk)`` per sample n and output k (C order: sample
        by sample), then ``sqrt(2λ)·W[:n_coef]`` (zeros when λ = 0, present all the same), so
        that ``½ ‖r‖² == loss``.

        Returns
        -------
        ndarray of float64, shape (n_samples · n_outputs + n_coef,)

        Raises
        ------
        ValueError
            On a logistic or softmax network: least squares needs an identity output.
        """
        _require_identity_output(self.network, "residuals")
        W = check_weights(W, self._n_params)
        layout = self.network.layout
        n, m, n_coef = self.n_samples, layout.n_outputs, layout.n_coef
        r = np.empty(n * m + n_coef, dtype=np.float64)
        p = self.network._reference.predict_output(W, self.X)  # identity: a^L, float64
        p -= self.T
        p *= self._row_scale()[:, None]
        r[: n * m] = p.ravel()
        np.multiply(np.sqrt(2.0 * self._l2), W[:n_coef], out=r[n * m :])
        return r

    def residuals_jacobian(self, W):
        """``∂r/∂W`` of :meth:`residuals`, dense (identity outputs only).

        Row ``n·n_outputs + k`` is ``sqrt(scale·s_n)·∂p_nk/∂W`` (one backward pass per output
        unit, kept per sample); the last ``n_coef`` rows are ``sqrt(2λ)`` times the identity on
        the coefficient entries.

        Returns
        -------
        ndarray of float64, shape (n_samples · n_outputs + n_coef, n_params)

        Raises
        ------
        ValueError
            On a logistic or softmax network, or when the result would exceed 2 GiB.
        """
        _require_identity_output(self.network, "residuals_jacobian")
        W = check_weights(W, self._n_params)
        layout = self.network.layout
        n_rows = self.n_samples * layout.n_outputs
        n_coef = layout.n_coef
        _check_dense_size("residuals_jacobian", (n_rows + n_coef, self._n_params))
        J = np.zeros((n_rows + n_coef, self._n_params), dtype=np.float64)
        self._second_order("output_jacobian")(W, self.X, self._row_scale(), J[:n_rows])
        J[n_rows + np.arange(n_coef), np.arange(n_coef)] = np.sqrt(2.0 * self._l2)
        return J

    def __repr__(self):
        return f"<BoundObjective of {self.network!r} on {self.n_samples} samples>"


def _require_identity_output(network, what):
    if network.output != "identity":
        raise ValueError(
            f"{what}: least squares needs an identity output (half squared error); this network's "
            f"output is {network.output!r}. Use minimize with hessp or gauss_newton_product instead"
        )
