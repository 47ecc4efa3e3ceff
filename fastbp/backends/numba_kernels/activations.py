"""The hidden layers' activations: z = σ(a) in place on a tile, and δ ← σ'(a) δ.

Codes follow :data:`fastbp.layout.ACTIVATIONS`: 0 identity, 1 logistic, 2 tanh, 3 relu. σ is
evaluated in float64 whatever the compute dtype, whole 16-sample groups in 8-lane vectors; σ'
is written from z = σ(a), so the backward pass needs no a.
"""

import numpy as np
from numba import njit

from .jit import _JIT
from .transcendental import exp1, expm1_1, vlogistic, vtanh
from .vec8 import vld, vldd, vst, vstc, vwhere_gt


@njit(**_JIT)
def _activate_scalar(code, a, q0):
    """:func:`activate` on ``a[q0:]`` one element at a time (the tail after the vectors)."""
    m = a.shape[0]
    if code == 1:
        # σ(a) = 1 / (1 + e^−a) for a ≥ 0 and e^a / (1 + e^a) below: e = e^−|a| never overflows
        for q in range(q0, m):
            x = np.float64(a[q])
            e = exp1(-abs(x))
            a[q] = (1.0 if x >= 0 else e) / (1.0 + e)
    elif code == 2:
        # tanh|a| = −u / (2 + u) with u = expm1(−2|a|): no cancellation for small |a|
        for q in range(q0, m):
            x = np.float64(a[q])
            u = expm1_1(-2.0 * abs(x))
            t = -u / (2.0 + u)
            a[q] = t if x >= 0 else -t
    elif code == 3:
        for q in range(q0, m):
            a[q] = a[q] if a[q] > 0 else 0


@njit(**_JIT)
def activate_rows(code, a, k0, m):
    """z = σ(a) in place on ``a.flat[k0 : k0 + m]``, m a multiple of 16, in 8-lane vectors
    (two independent evaluations a step); evaluated in float64."""
    if code == 1:
        for k in range(k0, k0 + m, 16):
            x = vlogistic(vldd(a, k))
            y = vlogistic(vldd(a, k + 8))
            vstc(a, k, x)
            vstc(a, k + 8, y)
    elif code == 2:
        for k in range(k0, k0 + m, 16):
            x = vtanh(vldd(a, k))
            y = vtanh(vldd(a, k + 8))
            vstc(a, k, x)
            vstc(a, k + 8, y)
    elif code == 3:
        for k in range(k0, k0 + m, 8):
            x = vld(a, k)
            vst(a, k, vwhere_gt(x, 0.0, x, 0.0))


@njit(**_JIT)
def activate(code, a):
    """z = σ(a) in place on the flat tile ``a`` (compute dtype; evaluated in float64).

    Codes follow :data:`fastbp.layout.ACTIVATIONS`: 0 identity, 1 logistic, 2 tanh, 3 relu.
    Whole 16-element groups go through the vector forms, the rest element by element.
    """
    m16 = a.shape[0] // 16 * 16
    if code != 0:
        activate_rows(code, a, np.int64(0), m16)  # (not a literal 0: one specialization for all callers)
        _activate_scalar(code, a, m16)


@njit(**_JIT)
def activation_derivative(code, z, d):
    """δ *= σ'(a) in place, σ' written from z = σ(a) (flat tiles of equal length)."""
    m = z.shape[0]
    if code == 1:
        for q in range(m):
            d[q] *= z[q] * (1 - z[q])
    elif code == 2:
        for q in range(m):
            d[q] *= 1 - z[q] * z[q]
    elif code == 3:
        for q in range(m):
            d[q] = d[q] if z[q] > 0 else 0
