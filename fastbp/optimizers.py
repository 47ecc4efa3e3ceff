"""scikit-learn's stochastic optimizers (SGD with momentum, Adam) with their state in flat arrays.

``fastbp.MLPClassifier`` / ``MLPRegressor`` keep one flat weight vector ``W`` (the layout of
:mod:`fastbp.layout`: every coefficient matrix, then every intercept) and step it in place. The
optimizers here hold their state the same way, one array of ``W``'s length and dtype, so that a
whole epoch can run on ``W`` and that state (see :func:`fastbp.backends.stochastic.run_epoch`),
while they remain scikit-learn's optimizer objects for everything scikit-learn's code and users
touch: they subclass ``sklearn.neural_network._stochastic_optimizers.SGDOptimizer`` and
``AdamOptimizer``, so ``learning_rate``, ``iteration_ends`` (the invscaling schedule),
``trigger_stopping`` (the adaptive schedule's division by 5), ``update_params`` and the per-layer
``velocities`` / ``ms`` / ``vs`` (views of the flat state) behave as scikit-learn's; and they
pickle.

:meth:`step` is the reference update on the flat arrays, written as scikit-learn writes it
(``_stochastic_optimizers.py``), operation for operation, so that a float64 fit follows
scikit-learn's rounding:

* SGD: ``u = μ v − η g``, ``v ← u``, then (Nesterov) ``u = μ v − η g``; ``W ← W + u``. ``η`` is
  ``learning_rate``, constant within an epoch (``iteration_ends`` sets it from the number of
  samples seen for "invscaling"; ``trigger_stopping`` divides it by 5 for "adaptive").
* Adam: ``t ← t + 1``, ``m ← β₁ m + (1 − β₁) g``, ``v ← β₂ v + (1 − β₂) g²``,
  ``η_t = η₀ √(1 − β₂ᵗ) / (1 − β₁ᵗ)`` (kept as ``learning_rate``), ``W ← W + (−η_t m) / (√v + ε)``.

The gradient is first rounded to the state's dtype (float32 fits step in float32, as
scikit-learn's do).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer as _SkAdam
from sklearn.neural_network._stochastic_optimizers import BaseOptimizer as _SkBase
from sklearn.neural_network._stochastic_optimizers import SGDOptimizer as _SkSGD

__all__ = ["SGDOptimizer", "AdamOptimizer", "as_flat"]


def _shapes_and_dtype(params):
    params = [np.asarray(p) for p in params]
    if not params:
        raise ValueError("params must hold at least one array")
    dtype = params[0].dtype if params[0].dtype in (np.float32, np.float64) else np.dtype(np.float64)
    return [p.shape for p in params], dtype


class _FlatState:
    """Per-layer views of flat state arrays (scikit-learn's lists), for reading and assigning."""

    def _views(self, flat):
        out, start = [], 0
        for shape in self._shapes:
            size = math.prod(shape)
            out.append(flat[start : start + size].reshape(shape))
            start += size
        return out

    def _assign(self, flat, arrays):
        arrays = list(arrays)
        if len(arrays) != len(self._shapes):
            raise ValueError(f"expected {len(self._shapes)} arrays, got {len(arrays)}")
        for view, a in zip(self._views(flat), arrays):
            view[...] = a

    @property
    def n_params(self):
        """Length of the flat state (and of the weight vector it steps)."""
        return sum(math.prod(s) for s in self._shapes)

    @property
    def dtype(self):
        """dtype of the state (and of the weights it steps)."""
        return self._state_arrays()[0].dtype


class SGDOptimizer(_FlatState, _SkSGD):
    """scikit-learn's SGD with momentum (and Nesterov's), its velocity one flat array.

    Parameters
    ----------
    params : list of ndarray
        ``coefs_ + intercepts_`` (only their shapes and the first one's dtype are used).
    learning_rate_init, lr_schedule, momentum, nesterov, power_t
        As in scikit-learn's ``SGDOptimizer``.

    Attributes
    ----------
    velocity : ndarray, shape (n_params,)
        The momentum term, in the weights' dtype; ``velocities`` gives per-layer views.
    learning_rate : float
        The step size η of the current epoch.
    """

    kind = "sgd"

    def __init__(self, params, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9, nesterov=True,
                 power_t=0.5):
        _SkBase.__init__(self, learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.power_t = power_t
        self._shapes, dtype = _shapes_and_dtype(params)
        self.velocity = np.zeros(self.n_params, dtype=dtype)

    def _state_arrays(self):
        return (self.velocity,)

    @property
    def velocities(self):
        """Per-layer views of :attr:`velocity` (scikit-learn's list)."""
        return self._views(self.velocity)

    @velocities.setter
    def velocities(self, arrays):
        self._assign(self.velocity, arrays)

    def step(self, W, grad):
        """One update of ``W`` (flat, in place) and of the velocity with the gradient ``grad``."""
        g = np.asarray(grad).astype(W.dtype, copy=False)
        lr, mu = self.learning_rate, self.momentum
        v = self.velocity
        lg = lr * g
        v *= mu
        v -= lg  # μ v − η g
        if self.nesterov:
            W += mu * v - lg
        else:
            W += v


class AdamOptimizer(_FlatState, _SkAdam):
    """scikit-learn's Adam, its moments two flat arrays.

    Parameters
    ----------
    params : list of ndarray
        ``coefs_ + intercepts_`` (only their shapes and the first one's dtype are used).
    learning_rate_init, beta_1, beta_2, epsilon
        As in scikit-learn's ``AdamOptimizer``.

    Attributes
    ----------
    m, v : ndarray, shape (n_params,)
        First and second moment estimates in the weights' dtype; ``ms`` and ``vs`` give
        per-layer views.
    t : int
        Steps taken.
    learning_rate : float
        The bias-corrected step size of the last step (``learning_rate_init`` before any).
    """

    kind = "adam"

    def __init__(self, params, learning_rate_init=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        _SkBase.__init__(self, learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self._shapes, dtype = _shapes_and_dtype(params)
        self.m = np.zeros(self.n_params, dtype=dtype)
        self.v = np.zeros(self.n_params, dtype=dtype)

    def _state_arrays(self):
        return (self.m, self.v)

    @property
    def ms(self):
        """Per-layer views of :attr:`m` (scikit-learn's list)."""
        return self._views(self.m)

    @ms.setter
    def ms(self, arrays):
        self._assign(self.m, arrays)

    @property
    def vs(self):
        """Per-layer views of :attr:`v` (scikit-learn's list)."""
        return self._views(self.v)

    @vs.setter
    def vs(self, arrays):
        self._assign(self.v, arrays)

    def step(self, W, grad):
        """One update of ``W`` (flat, in place) and of the moments with the gradient ``grad``."""
        g = np.asarray(grad).astype(W.dtype, copy=False)
        b1, b2 = self.beta_1, self.beta_2
        self.t += 1
        m, v = self.m, self.v
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g**2)
        self.learning_rate = self.learning_rate_init * np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        W += -self.learning_rate * m / (np.sqrt(v) + self.epsilon)


def as_flat(optimizer, params):
    """A fresh copy of ``optimizer`` as this module's flat optimizer over ``params``' shapes and
    dtype: scikit-learn's own optimizer objects (lists of arrays) are converted, ours copied, so
    that stepping the result never changes ``optimizer``."""
    shapes, dtype = _shapes_and_dtype(params)
    if isinstance(optimizer, _SkAdam):
        new = AdamOptimizer(params, optimizer.learning_rate_init, optimizer.beta_1, optimizer.beta_2,
                            optimizer.epsilon)
        new.t = optimizer.t
        new.ms, new.vs = optimizer.ms, optimizer.vs
    elif isinstance(optimizer, _SkSGD):
        new = SGDOptimizer(params, optimizer.learning_rate_init, optimizer.lr_schedule, optimizer.momentum,
                           optimizer.nesterov, optimizer.power_t)
        new.velocities = optimizer.velocities
    else:
        raise TypeError(f"cannot continue from an optimizer of type {type(optimizer).__name__}")
    new.learning_rate = optimizer.learning_rate
    if new._shapes != shapes:  # pragma: no cover - guarded by the estimator's layer checks
        raise ValueError("the optimizer's state does not match the network's shapes")
    return new
