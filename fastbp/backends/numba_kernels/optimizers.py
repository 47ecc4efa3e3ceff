"""The optimizers' update rules, compiled: one minibatch step of SGD (momentum, Nesterov) or Adam.

What :meth:`fastbp.optimizers.SGDOptimizer.step` and :meth:`~fastbp.optimizers.AdamOptimizer.step`
do with NumPy, element by element and rounding for rounding, fused with the end of the batch's
gradient: the blocks' float64 rows are reduced in block order, scaled, the L2 term added (as
:func:`.backprop._epilogue` does), and the result is rounded to the weights' dtype ``dt`` and
stepped, in place on ``W`` and the optimizer's state (same length and dtype as ``W``):

* SGD (``η`` the learning rate, ``μ`` the momentum, both rounded to ``dt`` as NumPy rounds a
  Python float against a ``dt`` array): ``u = μ v − η g``; ``v ← u``; Nesterov: ``u = μ v − η g``;
  ``W ← W + u``, every operation in ``dt``.
* Adam: ``m ← β₁ m + (1 − β₁) g``, ``v ← β₂ v + (1 − β₂) g²`` in ``dt``; then
  ``W ← W + (−η_t m) / (√v + ε)`` with ``η_t`` a float64 scalar, so (as in NumPy) the quotient is
  computed in float64 and the sum rounded to ``dt``. ``η_t = η₀ √(1 − β₂ᵗ) / (1 − β₁ᵗ)`` comes
  from :func:`adam_rate`, with the powers taken by ``pow`` as Python takes them.

No fast-math here: every product and sum is rounded on its own, as NumPy's are, so a float64
epoch follows the reference epoch (:func:`fastbp.backends.stochastic.reference_epoch`) to the bit
wherever the gradient does. Everything is inlined into the epoch's entry point (:mod:`.epoch`).
"""

import numpy as np
from numba import njit

from .jit import _INLINE
from .meta import H_NCOEF, H_NPARAMS

#: optimizer kinds, as :func:`.epoch.run_epoch` takes them
SGD, ADAM = 0, 1


@njit(**_INLINE)
def adam_rate(lr_init, beta_1, beta_2, t):
    """η_t = η₀ √(1 − β₂ᵗ) / (1 − β₁ᵗ) after ``t`` steps, as Python computes it (``float ** int``
    is C's ``pow``; Numba's own integer power multiplies, which rounds differently)."""
    tf = np.float64(t)
    return lr_init * np.sqrt(1.0 - beta_2**tf) / (1.0 - beta_1**tf)


@njit(**_INLINE)
def penalty8(W, n):
    """Σ_{k < n} W_k² in float64, in 8 interleaved partial sums (lane j: the k ≡ j mod 8),
    combined as ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)): independent chains that
    vectorize, in an order fixed on every machine (the cython epoch's too). It is the reported
    loss's L2 term only, so it equals the kernel call's sequential sum to round-off."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    k = 0
    while k + 8 <= n:
        w0, w1, w2, w3 = np.float64(W[k]), np.float64(W[k + 1]), np.float64(W[k + 2]), np.float64(W[k + 3])
        w4, w5, w6, w7 = np.float64(W[k + 4]), np.float64(W[k + 5]), np.float64(W[k + 6]), np.float64(W[k + 7])
        s0 += w0 * w0
        s1 += w1 * w1
        s2 += w2 * w2
        s3 += w3 * w3
        s4 += w4 * w4
        s5 += w5 * w5
        s6 += w6 * w6
        s7 += w7 * w7
        k += 8
    rest = n - k  # the tail's weights go to lanes 0, 1, ... in order
    if rest > 0:
        w = np.float64(W[k])
        s0 += w * w
    if rest > 1:
        w = np.float64(W[k + 1])
        s1 += w * w
    if rest > 2:
        w = np.float64(W[k + 2])
        s2 += w * w
    if rest > 3:
        w = np.float64(W[k + 3])
        s3 += w * w
    if rest > 4:
        w = np.float64(W[k + 4])
        s4 += w * w
    if rest > 5:
        w = np.float64(W[k + 5])
        s5 += w * w
    if rest > 6:
        w = np.float64(W[k + 6])
        s6 += w * w
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@njit(**_INLINE)
def batch_gradient(W, gbuf, n_blocks, meta, scale, l2):
    """The batch's gradient into ``gbuf[0, :n_params]`` and its loss, returned.

    The blocks' rows are added into row 0 in block order (the sums of
    :func:`.backprop._epilogue`), then ``g = scale · Σ + 2 l2 W`` (coefficients) or
    ``scale · Σ`` (intercepts); the loss is ``scale Σ s_n ℓ_n + l2 Σ_coef W²`` at the weights
    before the step (the L2 sum by :func:`penalty8`). Each loop is a plain pass over the
    parameters (no loop inside), which LLVM can vectorize."""
    n_params = meta[H_NPARAMS]
    n_coef = meta[H_NCOEF]
    g = gbuf[0]
    for c in range(1, n_blocks):
        gc = gbuf[c]
        for p in range(n_params + 1):
            g[p] += gc[p]
    penalty = penalty8(W, n_coef)
    two_l2 = 2.0 * l2
    for p in range(n_coef):
        g[p] = scale * g[p] + two_l2 * np.float64(W[p])
    for p in range(n_coef, n_params):
        g[p] = scale * g[p]
    return scale * g[n_params] + l2 * penalty


@njit(**_INLINE)
def sgd_step(W, g, lr, momentum, nesterov, V):
    """SGD's step on W and the velocity V with the batch's gradient g (float64, rounded to W's
    dtype first)."""
    dt = W.dtype
    eta = dt.type(lr)
    mu = dt.type(momentum)
    for p in range(W.shape[0]):
        gd = dt.type(g[p])
        lg = eta * gd
        v = mu * V[p]
        v = v - lg
        V[p] = v
        if nesterov:
            W[p] = W[p] + (mu * v - lg)
        else:
            W[p] = W[p] + v


@njit(**_INLINE)
def adam_step(W, g, rate, beta_1, beta_2, epsilon, M, V):
    """Adam's step on W and the moments M, V with the batch's gradient g (float64, rounded to W's
    dtype first) and the bias-corrected rate ``rate`` (:func:`adam_rate` of the new step count)."""
    dt = W.dtype
    b1 = dt.type(beta_1)
    b2 = dt.type(beta_2)
    c1 = dt.type(1.0 - beta_1)
    c2 = dt.type(1.0 - beta_2)
    eps = dt.type(epsilon)
    neg_rate = -rate
    for p in range(W.shape[0]):
        gd = dt.type(g[p])
        m = b1 * M[p]
        m = m + c1 * gd
        M[p] = m
        v = b2 * V[p]
        v = v + c2 * (gd * gd)
        V[p] = v
        u = (neg_rate * np.float64(m)) / np.float64(np.sqrt(v) + eps)
        W[p] = dt.type(np.float64(W[p]) + u)
