"""The NumPy backend: full-batch forward and backward passes with BLAS matrix products.

It is the reference the compiled kernels are tested against and the baseline they are measured
against. Every layer's ``z`` is kept (memory grows with n); no Python loop runs over samples.
Cross-entropies are computed from the output pre-activations ``a``, so large ``|a|`` stays finite:

* logistic: ℓ = softplus(a) − t a, with softplus(a) = max(a, 0) + log1p(exp(−|a|))
* softmax:  ℓ = s · logsumexp(a) − Σ_k t_k a_k, with s = Σ_k t_k (1 for one-hot rows)
* identity: ℓ = ½ Σ_k (a_k − t_k)²
* exponential: ℓ = Σ_k [t_k log t_k − t_k a_k + (p_k − t_k)], p = e^a (half the Poisson
  deviance, t log t = 0 at t = 0), computed from a rather than from log p

and the output delta δ = ∂ℓ/∂a is σ(a) − t, s · softmax(a) − t, a − t and e^a − t respectively.

The exponential output's p = e^a is evaluated in the compute dtype, so it overflows to inf where
e^a exceeds that dtype's range (a > 709.78 in float64, a > 88.72 in float32): the loss and the
gradient are then not finite, as in scikit-learn, and nothing is raised (a line search may step
back). A sample of weight zero never counts, even there.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, xlogy

from ..layout import ACTIVATIONS


def _logistic(a):
    return expit(a, out=a)


def _tanh(a):
    return np.tanh(a, out=a)


def _relu(a):
    return np.maximum(a, 0, out=a)


def _identity(a):
    return a


# σ applied in place to a, and σ'(a) written from z = σ(a) into delta (in place: delta *= σ'(a))
_FORWARD = {"logistic": _logistic, "tanh": _tanh, "relu": _relu, "identity": _identity}


def _dlogistic(z, delta):
    delta *= z * (1 - z)


def _dtanh(z, delta):
    delta *= 1 - z * z


def _drelu(z, delta):
    delta[z <= 0] = 0


def _didentity(z, delta):
    pass


_BACKWARD = {"logistic": _dlogistic, "tanh": _dtanh, "relu": _drelu, "identity": _didentity}
assert set(_FORWARD) == set(ACTIVATIONS) == set(_BACKWARD)


def output_loss_and_delta(output, a, t):
    """Per-sample data terms ℓ (float64, shape (n,)) and δ = ∂ℓ/∂a (a's dtype) from ``a``."""
    if output == "logistic":
        softplus = np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))
        loss = (softplus - t * a).sum(axis=1, dtype=np.float64)
        delta = expit(a) - t
    elif output == "softmax":
        amax = a.max(axis=1, keepdims=True)
        e = np.exp(a - amax)
        sum_e = e.sum(axis=1, keepdims=True)
        lse = amax + np.log(sum_e)
        s = t.sum(axis=1, keepdims=True)
        loss = (s * lse)[:, 0].astype(np.float64) - (t * a).sum(axis=1, dtype=np.float64)
        delta = s * (e / sum_e) - t
    elif output == "exponential":
        with np.errstate(over="ignore"):
            p = np.exp(a)  # in the compute dtype: inf past its range
        delta = p - t
        t64 = t.astype(np.float64, copy=False)
        loss = ((xlogy(t64, t64) - t64 * a) + (p.astype(np.float64) - t64)).sum(axis=1)
    else:  # identity
        delta = a - t
        loss = 0.5 * (delta * delta).sum(axis=1, dtype=np.float64)
    return loss, delta


class NumpyKernel:
    """The bound NumPy kernel of one layout (see :mod:`fastbp.backends` for the protocol)."""

    def __init__(self, layout):
        self.layout = layout
        self.forward = _FORWARD[layout.activation]
        self.backward = _BACKWARD[layout.activation]

    def forward_pass(self, W, X):
        """Every layer's z (the last entry is the output pre-activation a^L)."""
        return self._forward(*self.layout.unpack(W.astype(self.layout.dtype, copy=False)), X)

    def _forward(self, coefs, intercepts, X):
        zs = [X]
        last = len(coefs) - 1
        for i, (c, b) in enumerate(zip(coefs, intercepts)):
            a = zs[-1] @ c
            a += b
            zs.append(a if i == last else self.forward(a))
        return zs

    def __call__(self, W, X, T, sample_weight, scale, l2):
        layout = self.layout
        coefs, intercepts = layout.unpack(W.astype(layout.dtype, copy=False))
        zs = self._forward(coefs, intercepts, X)
        loss_n, delta = output_loss_and_delta(layout.output, zs[-1], T)
        if sample_weight is None:
            data_loss = loss_n.sum()
        else:
            if layout.output == "exponential":
                # a sample of weight zero never counts, even where e^a overflowed (0 · inf)
                absent = sample_weight == 0
                loss_n[absent] = 0.0
                delta[absent] = 0.0
            data_loss = loss_n @ sample_weight
            delta *= sample_weight.astype(delta.dtype, copy=False)[:, None]

        grad = np.empty(layout.n_params, dtype=np.float64)
        g_coefs, g_intercepts = layout.unpack(grad)
        f64 = np.float64
        for i in range(len(coefs) - 1, -1, -1):
            # ∂loss/∂w_ij = Σ_n δ_j z_i, accumulated in float64 whatever the compute dtype
            np.matmul(zs[i].T.astype(f64, copy=False), delta.astype(f64, copy=False), out=g_coefs[i])
            g_intercepts[i][:] = delta.sum(axis=0, dtype=f64)
            if i > 0:
                # δ_j = σ'(a_j) Σ_k w_kj δ_k
                delta = delta @ coefs[i].T
                self.backward(zs[i], delta)
        grad *= scale
        n_coef = layout.n_coef
        w_coef = W[:n_coef]
        if l2:
            grad[:n_coef] += (2.0 * l2) * w_coef
        loss = scale * float(data_loss) + l2 * float(w_coef @ w_coef)
        return loss, grad

    def predict_output(self, W, X):
        """The output layer's σ(a) (probabilities; values for identity outputs; e^a for
        exponential ones, in float64), float64."""
        a = self.forward_pass(W, X)[-1].astype(np.float64)
        if self.layout.output == "logistic":
            return expit(a)
        if self.layout.output == "exponential":
            with np.errstate(over="ignore"):
                return np.exp(a)
        if self.layout.output == "softmax":
            a -= a.max(axis=1, keepdims=True)
            np.exp(a, out=a)
            a /= a.sum(axis=1, keepdims=True)
        return a

    # ---------------------------------------------------------- second order (see numpy_rop)
    #: Most directions per ``*_block`` call (``Network.hess`` cuts the identity into such blocks);
    #: the samples are then processed in chunks that bound the memory (numpy_rop.CHUNK_VALUES).
    max_directions = 1024

    def hessp(self, W, V, X, T, sample_weight, scale, l2):
        return self.hessp_block(W, V[None, :], X, T, sample_weight, scale, l2)[0]

    def hessp_block(self, W, V, X, T, sample_weight, scale, l2, upper=False):
        from .numpy_rop import curvature_block

        # upper: the whole rows (a superset of what is asked; the reference keeps one pass)
        return curvature_block(self.layout, W, V, X, T, sample_weight, scale, l2)

    def gauss_newton_product(self, W, V, X, T, sample_weight, scale, l2):
        return self.gauss_newton_block(W, V[None, :], X, T, sample_weight, scale, l2)[0]

    def gauss_newton_block(self, W, V, X, T, sample_weight, scale, l2):
        from .numpy_rop import curvature_block

        return curvature_block(self.layout, W, V, X, T, sample_weight, scale, l2, gauss_newton=True)

    def output_jacobian(self, W, X, row_scale, out):
        from .numpy_rop import output_jacobian

        output_jacobian(self.layout, W, X, row_scale, out)


class NumpyBackend:
    name = "numpy"

    def prepare(self, layout, n_threads):
        return NumpyKernel(layout)


BACKEND = NumpyBackend()
