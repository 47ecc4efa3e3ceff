"""The output layer: loss Σ_n s_n ℓ_n of a tile and δ^L = s_n ∂ℓ_n/∂a^L, for every output.

Codes follow :data:`fastbp.layout.OUTPUTS`: 0 identity (ℓ = ½ Σ_k (a_k − t_k)²), 1 logistic
(cross-entropy of σ(a)), 2 softmax (cross-entropy of softmax(a)), 3 exponential (half Poisson
deviance of p = e^a); each pairs with its canonical loss, so δ^L = s_n (y − t). The loss is
computed in float64 from a, never from y (no log of a rounded probability). :func:`output_tile`
works on unit-major tiles in 8-lane vectors; :func:`output_loss_delta` on the sub-tiles of the
sample-major kernel.
"""

import numpy as np
from numba import njit

from .jit import _FAST, _JIT, _MATH
from .transcendental import exp1, log1, log1p_unit, vexp_neg_pade, vexp_parts, vlog, vlog1p_unit
from .vec8 import vabs, vadd, vdiv, vhsum, vldd, vmul, vmuladd, vsplat, vstc, vsub, vwhere, vwhere_gt

_EXP_SPLIT = 708.0  # exp_parts clamps at 709: above this, e^a = (e^(a/2))², which overflows to inf
_TINY = 2.2250738585072014e-308  # the least positive normal float64 (log1 and vlog need normals)


@njit(**_MATH)
def exp_overflowing(a):
    """e^a for float64 a, +inf past float64's range (a > 709.78), unlike :func:`exp1`."""
    if a <= _EXP_SPLIT:
        return exp1(a)
    h = exp1(0.5 * a)
    return h * h


@njit(**_FAST)
def _sum(v):
    """Σ v in float64 (a fixed-order vectorized reduction: the compiled order does not vary)."""
    acc = 0.0
    for q in range(v.shape[0]):
        acc += v[q]
    return acc


@njit(**_MATH)
def output_loss_delta(code, Ap, T, t0, ts, sw, Dp, ws):
    """Loss Σ_s s_n ℓ_n of the tile (float64) and δ = s_n ∂ℓ/∂a into ``Dp``.

    ``Ap``, ``Dp``: (m, tsp) unit-major output pre-activations and deltas, of which the first
    ``ts`` columns are samples and the rest padding (its δ is set to 0); ``T``: the whole (n, m)
    target array, the tile's rows starting at ``t0``; ``sw``: sample weights or an empty array.
    Codes follow :data:`fastbp.layout.OUTPUTS`: 0 identity, 1 logistic, 2 softmax, 3 exponential.

    Every loop runs over the tile's samples without a loop-carried sum (the per-sample losses go
    to scratch, summed at the end), so each vectorizes with the scalar exp and log inlined.
    """
    m, tsp = Ap.shape
    for k in range(m):
        for s in range(ts, tsp):
            Dp[k, s] = 0
    mts = m * ts
    has_sw = sw.shape[0] > 0
    e = ws[:mts]
    base = mts
    w = ws[base : base + ts]  # per-sample weights of the tile
    lv = ws[base + ts : base + 2 * ts]  # per-sample weighted losses
    if has_sw:
        for s in range(ts):
            w[s] = sw[t0 + s]
    else:
        for s in range(ts):
            w[s] = 1.0
    # rows as 1-D contiguous arrays: unit-stride loops, which vectorize
    if code == 1:
        # ℓ = softplus(a) − t a, softplus(a) = max(a, 0) + log1p(e^−|a|); δ = σ(a) − t
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                a = np.float64(A[s])
                t = np.float64(T[t0 + s, k])
                ea = exp1(-abs(a))
                p = (1.0 if a >= 0 else ea) / (1.0 + ea)
                D[s] = w[s] * (p - t)
                lv[s] += w[s] * ((max(a, 0.0) + log1p_unit(ea)) - t * a)
    elif code == 2:
        # ℓ = Σ_k t_k · lse(a) − Σ_k t_k a_k, lse(a) = max a + log Σ_k e^(a_k − max a);
        # δ_k = Σ_j t_j · softmax(a)_k − t_k
        amax = ws[base + 2 * ts : base + 3 * ts]
        sum_e = ws[base + 3 * ts : base + 4 * ts]
        tsum = ws[base + 4 * ts : base + 5 * ts]
        ta = ws[base + 5 * ts : base + 6 * ts]
        A = Ap[0]
        for s in range(ts):
            amax[s] = A[s]
        for k in range(1, m):
            A = Ap[k]
            for s in range(ts):
                amax[s] = max(amax[s], np.float64(A[s]))
        for s in range(ts):
            sum_e[s] = 0.0
            tsum[s] = 0.0
            ta[s] = 0.0
        for k in range(m):
            A = Ap[k]
            ek = e[k * ts : (k + 1) * ts]
            for s in range(ts):
                x = exp1(np.float64(A[s]) - amax[s])
                ek[s] = x
                sum_e[s] += x
            for s in range(ts):
                t = np.float64(T[t0 + s, k])
                tsum[s] += t
                ta[s] += t * np.float64(A[s])
        for s in range(ts):
            lv[s] = log1(sum_e[s])
        for s in range(ts):
            lv[s] = w[s] * (tsum[s] * (amax[s] + lv[s]) - ta[s])
        for s in range(ts):
            amax[s] = w[s] * tsum[s] / sum_e[s]  # amax is no longer needed: the δ scale
        for k in range(m):
            D = Dp[k]
            ek = e[k * ts : (k + 1) * ts]
            for s in range(ts):
                D[s] = amax[s] * ek[s] - w[s] * np.float64(T[t0 + s, k])
    elif code == 3:
        # p = e^a rounded to the compute dtype (inf past its range, stored in D first);
        # ℓ = t log t − t a + (p − t), half the Poisson deviance; δ = p − t. A sample of weight
        # 0 gets exactly 0 (not 0 · inf).
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                a = np.float64(A[s])
                t = np.float64(T[t0 + s, k])
                D[s] = exp_overflowing(a)
                d = np.float64(D[s]) - t
                tlogt = t * log1(max(t, _TINY)) if t > 0.0 else 0.0
                counts = w[s] > 0.0
                D[s] = w[s] * d if counts else 0.0
                lv[s] += w[s] * ((tlogt - t * a) + d) if counts else 0.0
    else:
        # ℓ = ½ Σ_k (a_k − t_k)², δ = a − t
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                r = np.float64(A[s]) - np.float64(T[t0 + s, k])
                D[s] = w[s] * r
                lv[s] += w[s] * (0.5 * r * r)
    return _sum(lv)


@njit(**_JIT)
def output_tile(code, Z, ao, D, do, tsp, m, T, t0, ts, sw, ws):
    """:func:`output_loss_delta` on flat unit-major tiles, in 8-lane vectors: ``Z.flat[ao + k tsp + s]``
    is a^L_k of sample s, δ goes to ``D.flat[do + k tsp + s]``; ``tsp`` (a multiple of 8) columns
    of which the first ``ts`` are samples. Returns the tile's Σ_s s_n ℓ_n (float64).

    The targets and weights are first copied unit-major into ``ws`` (padding: weight 0, so its
    δ is 0), then one pass over the samples computes loss and δ of every output in registers.
    """
    tt = 0  # targets, (m, tsp)
    wo = m * tsp  # per-sample weights
    for s in range(ts):
        for k in range(m):
            ws[tt + k * tsp + s] = T[t0 + s, k]
    for k in range(m):
        for s in range(ts, tsp):
            ws[tt + k * tsp + s] = 0.0
    if sw.shape[0] > 0:
        for s in range(ts):
            ws[wo + s] = sw[t0 + s]
    else:
        for s in range(ts):
            ws[wo + s] = 1.0
    for s in range(ts, tsp):
        ws[wo + s] = 0.0
    acc = vsplat(0.0)
    if code == 1:
        # ℓ = softplus(a) − t a, softplus(a) = max(a, 0) + log1p(e^−|a|); δ = σ(a) − t
        for k in range(m):
            for s in range(0, tsp, 8):
                a = vldd(Z, ao + k * tsp + s)
                t = vldd(ws, tt + k * tsp + s)
                w = vldd(ws, wo + s)
                e, o, sc = vexp_neg_pade(vsub(0.0, vabs(a)))
                q = vsub(e, o)
                sp = vmul(sc, vadd(e, o))
                den = vadd(q, sp)
                p = vdiv(vwhere(a, 0.0, q, sp), den)
                ea = vdiv(sp, q)  # e^−|a|
                vstc(D, do + k * tsp + s, vmul(w, vsub(p, t)))
                sp_ = vadd(vwhere_gt(a, 0.0, a, 0.0), vlog1p_unit(ea))
                acc = vmuladd(w, vsub(sp_, vmul(t, a)), acc)
    elif code == 2:
        # ℓ = Σ_k t_k · lse(a) − Σ_k t_k a_k, lse(a) = max a + log Σ_k e^(a_k − max a);
        # δ_k = Σ_j t_j · softmax(a)_k − t_k
        for s in range(0, tsp, 8):
            amax = vldd(Z, ao + s)
            for k in range(1, m):
                x = vldd(Z, ao + k * tsp + s)
                amax = vwhere_gt(x, amax, x, amax)
            sum_e = vsplat(0.0)
            tsum = vsplat(0.0)
            ta = vsplat(0.0)
            for k in range(m):
                a = vldd(Z, ao + k * tsp + s)
                p, sc = vexp_parts(vsub(a, amax))
                x = vmuladd(p, sc, sc)
                vstc(D, do + k * tsp + s, x)  # e_k, until δ_k replaces it
                sum_e = vadd(sum_e, x)
                t = vldd(ws, tt + k * tsp + s)
                tsum = vadd(tsum, t)
                ta = vmuladd(t, a, ta)
            w = vldd(ws, wo + s)
            acc = vmuladd(w, vsub(vmul(tsum, vadd(amax, vlog(sum_e))), ta), acc)
            scale = vdiv(vmul(w, tsum), sum_e)
            for k in range(m):
                t = vldd(ws, tt + k * tsp + s)
                vstc(D, do + k * tsp + s, vsub(vmul(scale, vldd(D, do + k * tsp + s)), vmul(w, t)))
    elif code == 3:
        # p = e^a rounded to the compute dtype (inf past its range; stored in D first);
        # ℓ = t log t − t a + (p − t), half the Poisson deviance; δ = p − t. A sample of weight
        # 0 (and the padding) gets exactly 0 (not 0 · inf).
        for k in range(m):
            for s in range(0, tsp, 8):
                o = do + k * tsp + s
                a = vldd(Z, ao + k * tsp + s)
                t = vldd(ws, tt + k * tsp + s)
                w = vldd(ws, wo + s)
                p, sc = vexp_parts(a)
                ph, sh = vexp_parts(vmul(a, 0.5))
                eh = vmuladd(ph, sh, sh)
                vstc(D, o, vwhere_gt(a, _EXP_SPLIT, vmul(eh, eh), vmuladd(p, sc, sc)))
                d = vsub(vldd(D, o), t)
                tlogt = vwhere_gt(t, 0.0, vmul(t, vlog(vwhere_gt(t, _TINY, t, _TINY))), 0.0)
                vstc(D, o, vwhere_gt(w, 0.0, vmul(w, d), 0.0))
                acc = vadd(acc, vwhere_gt(w, 0.0, vmul(w, vadd(vsub(tlogt, vmul(t, a)), d)), 0.0))
    else:
        # ℓ = ½ Σ_k (a_k − t_k)², δ = a − t
        for k in range(m):
            for s in range(0, tsp, 8):
                r = vsub(vldd(Z, ao + k * tsp + s), vldd(ws, tt + k * tsp + s))
                w = vldd(ws, wo + s)
                vstc(D, do + k * tsp + s, vmul(w, r))
                acc = vmuladd(w, vmul(vmul(r, r), 0.5), acc)
    return vhsum(acc)
