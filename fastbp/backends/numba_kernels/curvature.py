"""The output layer of the R-operator: δ^L and the loss's curvature Λ in the output pre-activations.

For the second-order passes (:mod:`.roperator`) the output layer gives, per tile, δ^L = s_n ∂ℓ/∂a^L
(what the backward pass of the exact Hessian carries) and R{δ^L} = s_n Λ R{a^L} for each
direction, Λ = ∂²ℓ/∂a² the Hessian of the per-sample loss in the pre-activations. Every output
pairs with its canonical loss, so δ^L = s_n (p − t) and Λ = ∂p/∂a:

===========  ================================  ==========================================
output       p                                 Λ
===========  ================================  ==========================================
identity     a                                 I
logistic     σ(a)                              diag σ(1 − σ) = diag e/(1 + e)², e = e^−|a|
softmax      Σ_j t_j · softmax(a)              s (diag π − π πᵀ), π = softmax(a), s = Σ_j t_j
exponential  e^a                               diag e^a
===========  ================================  ==========================================

:func:`prepare_output` computes once per tile what Λ needs (float64, in the scratch ``lam`` and
``f``) and δ^L; :func:`apply_curvature` then gives R{δ^L} of one direction. Both take 2-D arrays
indexed ``[unit, sample]``: the unit-major tiles as they are, the sample-major ones as transposed
views. Padding samples (columns ``ts`` on) and samples of weight 0 get Λ = 0 and δ^L = 0, so they
add exact zeros to every sum. Values are computed in float64 from the compute dtype's a, as the
gradient's output layer does (:mod:`.output_layer`).
"""

import numpy as np
from numba import njit

from .jit import _MATH
from .output_layer import exp_overflowing
from .transcendental import exp1


@njit(**_MATH)
def prepare_output(code, A, T, t0, ts, sw, D, need_delta, lam, f):
    """Λ's ingredients of a tile and (when ``need_delta``) δ^L into ``D``.

    ``A``, ``D``: (m, tsp) output pre-activations and deltas (compute dtype), the first ``ts``
    columns samples (rows ``t0``... of the whole targets ``T`` and weights ``sw``, empty when
    unweighted), the rest padding. ``lam``: float64 (m, tsp), receives s_n Λ's diagonal (identity,
    logistic, exponential) or π = softmax(a) (softmax); ``f``: float64 (tsp,), receives the
    softmax's per-sample factor s_n Σ_j t_j (unused otherwise).
    """
    m, tsp = A.shape
    has_sw = sw.shape[0] > 0
    if code == 2:
        for s in range(tsp):
            if s >= ts:
                f[s] = 0.0
                for k in range(m):
                    lam[k, s] = 0.0
                    if need_delta:
                        D[k, s] = 0
                continue
            w = sw[t0 + s] if has_sw else 1.0
            amax = np.float64(A[0, s])
            for k in range(1, m):
                amax = max(amax, np.float64(A[k, s]))
            sum_e = 0.0
            tsum = 0.0
            for k in range(m):
                e = exp1(np.float64(A[k, s]) - amax)
                lam[k, s] = e
                sum_e += e
                tsum += np.float64(T[t0 + s, k])
            for k in range(m):
                lam[k, s] = lam[k, s] / sum_e
            f[s] = w * tsum
            if need_delta:
                for k in range(m):
                    D[k, s] = f[s] * lam[k, s] - w * np.float64(T[t0 + s, k])
        return
    for k in range(m):
        for s in range(tsp):
            w = 0.0
            if s < ts:
                w = sw[t0 + s] if has_sw else 1.0
            a = np.float64(A[k, s])
            t = np.float64(T[t0 + s, k]) if s < ts else 0.0
            if code == 1:
                e = exp1(-abs(a))
                p = (1.0 if a >= 0 else e) / (1.0 + e)
                q = 1.0 + e
                lam[k, s] = w * (e / (q * q))
            elif code == 3:
                p = exp_overflowing(a)
                lam[k, s] = w * p if w > 0.0 else 0.0  # not 0 · inf
            else:
                p = a
                lam[k, s] = w
            if need_delta:
                D[k, s] = w * (p - t) if w > 0.0 else 0.0


@njit(**_MATH)
def apply_curvature(code, RA, lam, f, q, RD):
    """R{δ^L} = s_n Λ R{a^L} of one direction: ``RA`` (m, tsp) in, ``RD`` (m, tsp) out (compute
    dtype), from :func:`prepare_output`'s ``lam`` and ``f``; ``q``: float64 (tsp,) scratch."""
    m, tsp = RA.shape
    if code == 2:
        # s (π ⊙ r − π (πᵀ r))
        for s in range(tsp):
            q[s] = 0.0
        for k in range(m):
            for s in range(tsp):
                q[s] += lam[k, s] * np.float64(RA[k, s])
        for k in range(m):
            for s in range(tsp):
                RD[k, s] = f[s] * (lam[k, s] * (np.float64(RA[k, s]) - q[s]))
        return
    for k in range(m):
        for s in range(tsp):
            RD[k, s] = lam[k, s] * np.float64(RA[k, s])
