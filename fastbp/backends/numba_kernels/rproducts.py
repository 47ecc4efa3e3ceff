"""Tile products of the R-operator on unit-major tiles: two-term products and the σ'' term.

The R-passes (:mod:`.roperator`) add a second product to each layer's: forward
R{a^{l+1}} = W_lᵀ R{z^l} + V_lᵀ z^l + Vb_l, backward W_l R{δ^{l+1}} + V_l δ^{l+1}.
:func:`mm2_flat` computes such a sum in the register blocks of :func:`.tile_products.mm_flat`
(8 outputs x 16 samples, leftovers 2 x 32 and 1 x 32), both terms summed in the same registers
and finished at one store (σ'(a) ⊙ ·, :func:`.tile_products._fin`). The one-term products are
:func:`.tile_products.mm_flat` itself. :func:`split_backward` turns a hidden layer's W δ into δ
and the factor of the σ'' term; :func:`add_product` adds that term. Sums run in an order fixed by
the code alone.
"""

from numba import njit

from .jit import _JIT
from .tile_products import _fin
from .vec8 import ld, vadd, vfma, vld, vmul, vmuladd, vsplat, vst, vsub


@njit(**_JIT)
def mm2_flat(M1, M2, B, bo, Z, z1, z2, A, ao, ts, mode, Zd, zdo):
    """A[j, :] = fin(b_j + Σ_i M1[j, i] Z1[i, :] + Σ_i M2[j, i] Z2[i, :]) on flat unit-major tiles.

    ``M1`` and ``M2`` have the same shape (n_out, n_in) and layout (F: forward, the transposed
    W_l and V_l; C: backward); rows of Z1 start at ``Z[z1]``, of Z2 at ``Z[z2]``, of A
    at ``A[ao]``, each ``ts`` long (a multiple of 16). b_j = B[bo + j] (``bo`` < 0: no
    bias). ``mode``, ``Zd``, ``zdo``: the finish of :func:`.tile_products._fin`. Each sum runs
    from the bias through M1's inputs 0, 1, ..., then M2's, in FMA steps.
    """
    n_out, n_in = M1.shape
    zero = M1[0, 0] - M1[0, 0]
    j = 0
    while j + 8 <= n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        b1 = ld(B, bo + j + 1) if bo >= 0 else zero
        b2 = ld(B, bo + j + 2) if bo >= 0 else zero
        b3 = ld(B, bo + j + 3) if bo >= 0 else zero
        b4 = ld(B, bo + j + 4) if bo >= 0 else zero
        b5 = ld(B, bo + j + 5) if bo >= 0 else zero
        b6 = ld(B, bo + j + 6) if bo >= 0 else zero
        b7 = ld(B, bo + j + 7) if bo >= 0 else zero
        for s in range(0, ts, 16):
            a0 = vsplat(b0)
            a1 = vsplat(b1)
            a2 = vsplat(b2)
            a3 = vsplat(b3)
            a4 = vsplat(b4)
            a5 = vsplat(b5)
            a6 = vsplat(b6)
            a7 = vsplat(b7)
            c0, c1, c2, c3, c4, c5, c6, c7 = a0, a1, a2, a3, a4, a5, a6, a7
            for term in range(2):
                M = M1 if term == 0 else M2
                zb = z1 if term == 0 else z2
                for i in range(n_in):
                    k = zb + i * ts + s
                    z = vld(Z, k)
                    y = vld(Z, k + 8)
                    m = M[j, i]
                    a0 = vfma(z, m, a0)
                    c0 = vfma(y, m, c0)
                    m = M[j + 1, i]
                    a1 = vfma(z, m, a1)
                    c1 = vfma(y, m, c1)
                    m = M[j + 2, i]
                    a2 = vfma(z, m, a2)
                    c2 = vfma(y, m, c2)
                    m = M[j + 3, i]
                    a3 = vfma(z, m, a3)
                    c3 = vfma(y, m, c3)
                    m = M[j + 4, i]
                    a4 = vfma(z, m, a4)
                    c4 = vfma(y, m, c4)
                    m = M[j + 5, i]
                    a5 = vfma(z, m, a5)
                    c5 = vfma(y, m, c5)
                    m = M[j + 6, i]
                    a6 = vfma(z, m, a6)
                    c6 = vfma(y, m, c6)
                    m = M[j + 7, i]
                    a7 = vfma(z, m, a7)
                    c7 = vfma(y, m, c7)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a1, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c1, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a2, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c2, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a3, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c3, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a4, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c4, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a5, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c5, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a6, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c6, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a7, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c7, Zd, zdo + o + 8))
        j += 8
    while j + 2 <= n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        b1 = ld(B, bo + j + 1) if bo >= 0 else zero
        for s in range(0, ts, 32):
            w = 32 if s + 32 <= ts else 16
            a0 = vsplat(b0)
            a1 = vsplat(b1)
            c0 = a0
            c1 = a1
            e0 = a0
            e1 = a1
            f0 = a0
            f1 = a1
            for term in range(2):
                M = M1 if term == 0 else M2
                zb = z1 if term == 0 else z2
                if w == 32:
                    for i in range(n_in):
                        k = zb + i * ts + s
                        z = vld(Z, k)
                        y = vld(Z, k + 8)
                        x = vld(Z, k + 16)
                        u = vld(Z, k + 24)
                        m0 = M[j, i]
                        m1 = M[j + 1, i]
                        a0 = vfma(z, m0, a0)
                        c0 = vfma(y, m0, c0)
                        e0 = vfma(x, m0, e0)
                        f0 = vfma(u, m0, f0)
                        a1 = vfma(z, m1, a1)
                        c1 = vfma(y, m1, c1)
                        e1 = vfma(x, m1, e1)
                        f1 = vfma(u, m1, f1)
                else:
                    for i in range(n_in):
                        k = zb + i * ts + s
                        z = vld(Z, k)
                        y = vld(Z, k + 8)
                        m0 = M[j, i]
                        m1 = M[j + 1, i]
                        a0 = vfma(z, m0, a0)
                        c0 = vfma(y, m0, c0)
                        a1 = vfma(z, m1, a1)
                        c1 = vfma(y, m1, c1)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            vst(A, ao + o + ts, _fin(mode, a1, Zd, zdo + o + ts))
            vst(A, ao + o + ts + 8, _fin(mode, c1, Zd, zdo + o + ts + 8))
            if w == 32:
                vst(A, ao + o + 16, _fin(mode, e0, Zd, zdo + o + 16))
                vst(A, ao + o + 24, _fin(mode, f0, Zd, zdo + o + 24))
                vst(A, ao + o + ts + 16, _fin(mode, e1, Zd, zdo + o + ts + 16))
                vst(A, ao + o + ts + 24, _fin(mode, f1, Zd, zdo + o + ts + 24))
        j += 2
    if j < n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        for s in range(0, ts, 32):
            w = 32 if s + 32 <= ts else 16
            a0 = vsplat(b0)
            c0 = a0
            e0 = a0
            f0 = a0
            for term in range(2):
                M = M1 if term == 0 else M2
                zb = z1 if term == 0 else z2
                if w == 32:
                    for i in range(n_in):
                        k = zb + i * ts + s
                        m0 = M[j, i]
                        a0 = vfma(vld(Z, k), m0, a0)
                        c0 = vfma(vld(Z, k + 8), m0, c0)
                        e0 = vfma(vld(Z, k + 16), m0, e0)
                        f0 = vfma(vld(Z, k + 24), m0, f0)
                else:
                    for i in range(n_in):
                        k = zb + i * ts + s
                        m0 = M[j, i]
                        a0 = vfma(vld(Z, k), m0, a0)
                        c0 = vfma(vld(Z, k + 8), m0, c0)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            if w == 32:
                vst(A, ao + o + 16, _fin(mode, e0, Zd, zdo + o + 16))
                vst(A, ao + o + 24, _fin(mode, f0, Zd, zdo + o + 24))


@njit(**_JIT)
def split_backward(code, Z, zo, B, bo, D, do, n):
    """From b = W δ^{l+1} of a hidden layer (``B[bo : bo + n]``), δ^l = σ'(a) ⊙ b into
    ``D[do:]`` and, in place of b, the factor c(z) ⊙ b of the σ'' term (σ''(a) R{a} =
    c(z) R{z}: logistic c = 1 − 2z, tanh c = −2z); σ' and c written from z = ``Z[zo:]``.
    For activations without σ'' (relu, identity) b is left as it is. Flat (1-D) arrays, eight lanes
    at a time, the last ``n % 8`` elements one by one."""
    n8 = n // 8 * 8
    for q in range(0, n8, 8):
        z = vld(Z, zo + q)
        b = vld(B, bo + q)
        if code == 1:
            vst(D, do + q, vmul(b, vmul(z, vsub(1.0, z))))
            vst(B, bo + q, vmul(b, vsub(1.0, vmul(z, 2.0))))
        elif code == 2:
            vst(D, do + q, vmul(b, vsub(1.0, vmul(z, z))))
            vst(B, bo + q, vmul(b, vmul(z, -2.0)))
        else:
            vst(D, do + q, _fin(10 + code if code == 3 else 0, b, Z, zo + q))
    for q in range(n8, n):
        z = Z[zo + q]
        b = B[bo + q]
        if code == 1:
            D[do + q] = b * (z * (1 - z))
            B[bo + q] = b * (1 - z * 2)
        elif code == 2:
            D[do + q] = b * (1 - z * z)
            B[bo + q] = b * (z * -2)
        elif code == 3:
            D[do + q] = b if z > 0 else 0
        else:
            D[do + q] = b


@njit(**_JIT)
def add_product(A, ao, B, bo, C, co, n):
    """``A[ao : ao + n] += B[bo:] ⊙ C[co:]`` on flat (1-D) arrays: eight lanes at a time with one
    rounding (FMA), the last ``n % 8`` elements one by one."""
    n8 = n // 8 * 8
    for q in range(0, n8, 8):
        vst(A, ao + q, vmuladd(vld(B, bo + q), vld(C, co + q), vld(A, ao + q)))
    for q in range(n8, n):
        A[ao + q] += B[bo + q] * C[co + q]


@njit(**_JIT)
def finish_rows(mode, A, ao, Zd, zdo, n):
    """``A[ao : ao + n]`` finished in place by :func:`.tile_products._fin` (``mode`` 11–13: times
    σ'(a) written from z = ``Zd[zdo:]``); ``n`` a multiple of 8."""
    for q in range(0, n, 8):
        vst(A, ao + q, _fin(mode, vld(A, ao + q), Zd, zdo + q))


@njit(**_JIT)
def sparse_forward(Wc, vc, vb, n_in, n_out, Z, zi, A, ao, ts):
    """A[j, :] += Σ_i V[i, j] Z[i, :] + Vb[j] over the nonzero entries of a sparse V (the layer's
    coefficients at ``Wc[vc:]``, (n_in, n_out) row-major, intercepts at ``Wc[vb:]``): a unit
    direction of the dense Hessian costs one row instead of a product. Rows of ``ts``."""
    for i in range(n_in):
        for j in range(n_out):
            v = Wc[vc + i * n_out + j]
            if v != 0:
                zrow = zi + i * ts
                arow = ao + j * ts
                for s in range(0, ts, 8):
                    vst(A, arow + s, vfma(vld(Z, zrow + s), v, vld(A, arow + s)))
    for j in range(n_out):
        v = Wc[vb + j]
        if v != 0:
            arow = ao + j * ts
            for s in range(0, ts, 8):
                vst(A, arow + s, vadd(vld(A, arow + s), v))


@njit(**_JIT)
def sparse_backward(Wc, vc, n_in, n_out, D, do, A, ao, ts):
    """A[i, :] += Σ_j V[i, j] D[j, :] over the nonzero entries of a sparse V (the layer's
    coefficients at ``Wc[vc:]``, (n_in, n_out) row-major). Rows of ``ts``."""
    for i in range(n_in):
        for j in range(n_out):
            v = Wc[vc + i * n_out + j]
            if v != 0:
                drow = do + j * ts
                arow = ao + i * ts
                for s in range(0, ts, 8):
                    vst(A, arow + s, vfma(vld(D, drow + s), v, vld(A, arow + s)))
