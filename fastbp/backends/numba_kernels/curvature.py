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
def prepare_output(code, A, T, t0, ts, sw, D, need_delta, lam, f, u, v):
    """Λ's ingredients of a tile and (when ``need_delta``) δ^L into ``D``.

    ``A``, ``D``: (m, tsp) output pre-activations and deltas (compute dtype), the first ``ts``
    columns samples (rows ``t0``... of the whole targets ``T`` and weights ``sw``, empty when
    unweighted), the rest padding. ``lam``: float64 (m, tsp), receives s_n Λ's diagonal (identity,
    logistic, exponential) or π = softmax(a) (softmax); ``f``: float64 (tsp,), receives the
    softmax's per-sample factor s_n Σ_j t_j (unused otherwise); ``u``, ``v``: float64 (tsp,)
    scratch. Every loop runs over the samples of one unit, without branches, so that it
    vectorizes with e^x inlined.
    """
    m, tsp = A.shape
    w = u  # the samples' weights, 0 for padding
    if sw.shape[0] > 0:
        for s in range(ts):
            w[s] = sw[t0 + s]
    else:
        for s in range(ts):
            w[s] = 1.0
    for s in range(ts, tsp):
        w[s] = 0.0
    if code == 2:
        amax = f
        total = v
        for s in range(tsp):
            amax[s] = np.float64(A[0, s])
        for k in range(1, m):
            for s in range(tsp):
                amax[s] = max(amax[s], np.float64(A[k, s]))
        for s in range(tsp):
            total[s] = 0.0
        for k in range(m):
            for s in range(tsp):
                e = exp1(np.float64(A[k, s]) - amax[s])
                lam[k, s] = e
                total[s] += e
        for k in range(m):
            for s in range(tsp):
                lam[k, s] = lam[k, s] / total[s]
        # f = s_n Σ_j t_j (amax is no longer needed)
        for s in range(tsp):
            f[s] = 0.0
        for k in range(m):
            for s in range(ts):
                f[s] += np.float64(T[t0 + s, k])
        for s in range(tsp):
            f[s] *= w[s]
        if need_delta:
            for k in range(m):
                for s in range(ts):
                    D[k, s] = f[s] * lam[k, s] - w[s] * np.float64(T[t0 + s, k])
                for s in range(ts, tsp):
                    D[k, s] = 0
        return
    for k in range(m):
        if code == 1:
            for s in range(tsp):
                a = np.float64(A[k, s])
                e = exp1(-abs(a))
                q = 1.0 + e
                lam[k, s] = w[s] * (e / (q * q))
                v[s] = (1.0 if a >= 0 else e) / q
        elif code == 3:
            for s in range(tsp):
                p = exp_overflowing(np.float64(A[k, s]))
                lam[k, s] = w[s] * p if w[s] > 0.0 else 0.0  # not 0 · inf
                v[s] = p
        else:
            for s in range(tsp):
                lam[k, s] = w[s]
                v[s] = np.float64(A[k, s])
        if need_delta:
            for s in range(ts):
                D[k, s] = w[s] * (v[s] - np.float64(T[t0 + s, k])) if w[s] > 0.0 else 0.0
            for s in range(ts, tsp):
                D[k, s] = 0


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
