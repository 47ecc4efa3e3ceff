"""Products on unit-major tiles: a = W^T z + b forward, W δ backward, and the gradient sums.

Tiles are flat, one contiguous row of ``ts`` samples per unit. :func:`mm_flat` computes the
layer products in register blocks (8 outputs x 16 samples), finishing each block at its store
(relu forward, δ σ'(a) backward: :func:`_fin`); :func:`grad_acc` adds Σ_s z_i δ_j and Σ_s δ_j over
the tile into the float64 gradient in 4 x 4 blocks. Every sum runs in an order fixed by the code
alone, so results are bit-identical from run to run.
"""

import numpy as np
from numba import njit

from .jit import _FAST, _JIT
from .vec8 import ld, vadd, vadd_to, vfma, vhsum, vhsum8, vlane, vld, vldd, vmul, vmuladd, vsplat, vst, vsub, vwhere_gt

GRAD_JC = 16  # grad_acc runs every block of input rows over this many output rows (in L1) at a time


@njit(**_JIT)
def _fin(mode, v, Zd, k):
    """A register of tile products finished before its store: ``mode`` 3 relu (forward), 11–13
    δ σ'(a) with σ' written from z = Zd.flat[k : k + 8] (logistic, tanh, relu), else as is."""
    if mode == 3:
        return vwhere_gt(v, 0.0, v, 0.0)
    if mode == 11:
        z = vld(Zd, k)
        return vmul(v, vmul(z, vsub(1.0, z)))
    if mode == 12:
        z = vld(Zd, k)
        return vmul(v, vsub(1.0, vmul(z, z)))
    if mode == 13:
        return vwhere_gt(vld(Zd, k), 0.0, v, 0.0)
    return v


@njit(**_JIT)
def mm_flat(W, wo, sj, si, n_out, n_in, bo, Z, zi, A, ao, ts, mode, Zd, zdo):
    """A[j, :] = b_j + Σ_i M[j, i] Z[i, :] on flat unit-major tiles of ``ts`` columns (a multiple
    of 16), for j < ``n_out``, i < ``n_in``, with M[j, i] = W.flat[wo + j sj + i si] and
    b_j = W.flat[bo + j] (``bo`` < 0: no bias); rows of Z from ``Z.flat[zi]``, of A from
    ``A.flat[ao]``. Forward, M is W_l^T: ``(sj, si) = (1, n_out of W_l)``; backward (W δ), M is
    W_l: ``(n_out of W_l, 1)``. Both directions are one compiled specialization: pass the
    integers as variables, never as literal constants (Numba compiles a function anew for each
    literal it is called with). Each register block is finished by :func:`_fin` (``mode``, z rows
    of ``Zd`` from ``zdo``) before its one store.

    Register blocks of 8 outputs x 16 samples (16 accumulators: two FMA pipes of 4 cycles' latency
    stay busy, and each input row is loaded once per 8 outputs); leftover outputs go 2 x 32 (as
    many loads per multiply-add as 4 x 16, less code) and a last one 1 x 32, so even a lone output
    keeps 4 sums in flight. Every sum runs from the bias through inputs 0, 1, ... in FMA steps.
    """
    zero = ld(W, wo) - ld(W, wo)
    j = 0
    while j + 8 <= n_out:
        b0 = ld(W, bo + j) if bo >= 0 else zero
        b1 = ld(W, bo + j + 1) if bo >= 0 else zero
        b2 = ld(W, bo + j + 2) if bo >= 0 else zero
        b3 = ld(W, bo + j + 3) if bo >= 0 else zero
        b4 = ld(W, bo + j + 4) if bo >= 0 else zero
        b5 = ld(W, bo + j + 5) if bo >= 0 else zero
        b6 = ld(W, bo + j + 6) if bo >= 0 else zero
        b7 = ld(W, bo + j + 7) if bo >= 0 else zero
        w0 = wo + j * sj
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
            for i in range(n_in):
                k = zi + i * ts + s
                z = vld(Z, k)
                y = vld(Z, k + 8)
                q = w0 + i * si
                m = ld(W, q)
                a0 = vfma(z, m, a0)
                c0 = vfma(y, m, c0)
                m = ld(W, q + sj)
                a1 = vfma(z, m, a1)
                c1 = vfma(y, m, c1)
                m = ld(W, q + 2 * sj)
                a2 = vfma(z, m, a2)
                c2 = vfma(y, m, c2)
                m = ld(W, q + 3 * sj)
                a3 = vfma(z, m, a3)
                c3 = vfma(y, m, c3)
                m = ld(W, q + 4 * sj)
                a4 = vfma(z, m, a4)
                c4 = vfma(y, m, c4)
                m = ld(W, q + 5 * sj)
                a5 = vfma(z, m, a5)
                c5 = vfma(y, m, c5)
                m = ld(W, q + 6 * sj)
                a6 = vfma(z, m, a6)
                c6 = vfma(y, m, c6)
                m = ld(W, q + 7 * sj)
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
        b0 = ld(W, bo + j) if bo >= 0 else zero
        b1 = ld(W, bo + j + 1) if bo >= 0 else zero
        w0 = wo + j * sj
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
            if w == 32:
                for i in range(n_in):
                    k = zi + i * ts + s
                    z = vld(Z, k)
                    y = vld(Z, k + 8)
                    x = vld(Z, k + 16)
                    u = vld(Z, k + 24)
                    q = w0 + i * si
                    m0 = ld(W, q)
                    m1 = ld(W, q + sj)
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
                    k = zi + i * ts + s
                    z = vld(Z, k)
                    y = vld(Z, k + 8)
                    q = w0 + i * si
                    m0 = ld(W, q)
                    m1 = ld(W, q + sj)
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
        b0 = ld(W, bo + j) if bo >= 0 else zero
        w0 = wo + j * sj
        for s in range(0, ts, 32):
            w = 32 if s + 32 <= ts else 16
            a0 = vsplat(b0)
            c0 = a0
            e0 = a0
            f0 = a0
            if w == 32:
                for i in range(n_in):
                    k = zi + i * ts + s
                    m0 = ld(W, w0 + i * si)
                    a0 = vfma(vld(Z, k), m0, a0)
                    c0 = vfma(vld(Z, k + 8), m0, c0)
                    e0 = vfma(vld(Z, k + 16), m0, e0)
                    f0 = vfma(vld(Z, k + 24), m0, f0)
            else:
                for i in range(n_in):
                    k = zi + i * ts + s
                    m0 = ld(W, w0 + i * si)
                    a0 = vfma(vld(Z, k), m0, a0)
                    c0 = vfma(vld(Z, k + 8), m0, c0)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            if w == 32:
                vst(A, ao + o + 16, _fin(mode, e0, Zd, zdo + o + 16))
                vst(A, ao + o + 24, _fin(mode, f0, Zd, zdo + o + 24))


@njit(**_JIT)
def grad_acc(Zin, Dout, G, gb):
    """G[i, j] += Σ_s z_i δ_j and gb[j] += Σ_s δ_j over the tile, summed in float64.

    Explicit 8-lane sums over the samples: blocks of four input rows by four output rows share
    their loads (sixteen accumulators, eight loads per sixteen multiply-adds), the sixteen lane
    sums reduced together by :func:`vhsum8` at the end. The output rows are taken in groups of
    ``GRAD_JC``, every input block running over one group before the next: the group's δ rows
    stay in L1 while the z rows stream. The first input block also sums the bias rows from its
    loads (a pass over δ less). Leftover outputs go 8 input rows at a time, leftover inputs 8
    outputs at a time. Each sum's order is fixed by the code alone.
    """
    n_in, ts = Zin.shape
    n_out = Dout.shape[0]
    n_in4 = n_in // 4 * 4
    n_out4 = n_out // 4 * 4
    # 4 x 4 blocks; the first block of inputs also sums the bias rows, from the same loads
    for jc in range(0, n_out4, GRAD_JC):
        je = min(n_out4, jc + GRAD_JC)
        for i in range(0, n_in4, 4):
            zi = i * ts
            for j in range(jc, je, 4):
                dj = j * ts
                a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = vsplat(0.0)
                c0 = c1 = c2 = c3 = f0 = f1 = f2 = f3 = h0 = h1 = h2 = h3 = a0
                for s in range(0, ts, 8):
                    x = vldd(Zin, zi + s)
                    y = vldd(Zin, zi + ts + s)
                    u = vldd(Zin, zi + 2 * ts + s)
                    v = vldd(Zin, zi + 3 * ts + s)
                    e0 = vldd(Dout, dj + s)
                    e1 = vldd(Dout, dj + ts + s)
                    e2 = vldd(Dout, dj + 2 * ts + s)
                    e3 = vldd(Dout, dj + 3 * ts + s)
                    if i == 0:
                        h0 = vadd(h0, e0)
                        h1 = vadd(h1, e1)
                        h2 = vadd(h2, e2)
                        h3 = vadd(h3, e3)
                    a0 = vmuladd(x, e0, a0)
                    a1 = vmuladd(x, e1, a1)
                    a2 = vmuladd(x, e2, a2)
                    a3 = vmuladd(x, e3, a3)
                    b0 = vmuladd(y, e0, b0)
                    b1 = vmuladd(y, e1, b1)
                    b2 = vmuladd(y, e2, b2)
                    b3 = vmuladd(y, e3, b3)
                    c0 = vmuladd(u, e0, c0)
                    c1 = vmuladd(u, e1, c1)
                    c2 = vmuladd(u, e2, c2)
                    c3 = vmuladd(u, e3, c3)
                    f0 = vmuladd(v, e0, f0)
                    f1 = vmuladd(v, e1, f1)
                    f2 = vmuladd(v, e2, f2)
                    f3 = vmuladd(v, e3, f3)
                r = i * n_out + j
                vadd_to(G, r, r + n_out, vhsum8(a0, a1, a2, a3, b0, b1, b2, b3))
                vadd_to(G, r + 2 * n_out, r + 3 * n_out, vhsum8(c0, c1, c2, c3, f0, f1, f2, f3))
                if i == 0:
                    gb[j] += vhsum(h0)
                    gb[j + 1] += vhsum(h1)
                    gb[j + 2] += vhsum(h2)
                    gb[j + 3] += vhsum(h3)
    # bias of the outputs no block summed
    for j in range(n_out4 if n_in4 > 0 else 0, n_out):
        a0 = vsplat(0.0)
        for s in range(0, ts, 8):
            a0 = vadd(a0, vldd(Dout, j * ts + s))
        gb[j] += vhsum(a0)
    # leftover input rows (n_in % 4 of them) by the outputs of the blocks, eight at a time
    for i in range(n_in4, n_in):
        zi = i * ts
        j = 0
        while j + 8 <= n_out4:
            dj = j * ts
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vsplat(0.0)
            for s in range(0, ts, 8):
                x = vldd(Zin, zi + s)
                a0 = vmuladd(x, vldd(Dout, dj + s), a0)
                a1 = vmuladd(x, vldd(Dout, dj + ts + s), a1)
                a2 = vmuladd(x, vldd(Dout, dj + 2 * ts + s), a2)
                a3 = vmuladd(x, vldd(Dout, dj + 3 * ts + s), a3)
                a4 = vmuladd(x, vldd(Dout, dj + 4 * ts + s), a4)
                a5 = vmuladd(x, vldd(Dout, dj + 5 * ts + s), a5)
                a6 = vmuladd(x, vldd(Dout, dj + 6 * ts + s), a6)
                a7 = vmuladd(x, vldd(Dout, dj + 7 * ts + s), a7)
            r = i * n_out + j
            vadd_to(G, r, r + 4, vhsum8(a0, a1, a2, a3, a4, a5, a6, a7))
            j += 8
        while j < n_out4:
            a0 = vsplat(0.0)
            for s in range(0, ts, 8):
                a0 = vmuladd(vldd(Zin, zi + s), vldd(Dout, j * ts + s), a0)
            G[i, j] += vhsum(a0)
            j += 1
    # leftover output rows (n_out % 4 of them) by all inputs, eight at a time
    for j in range(n_out4, n_out):
        dj = j * ts
        i = 0
        while i + 8 <= n_in:
            zi = i * ts
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vsplat(0.0)
            for s in range(0, ts, 8):
                e = vldd(Dout, dj + s)
                a0 = vmuladd(vldd(Zin, zi + s), e, a0)
                a1 = vmuladd(vldd(Zin, zi + ts + s), e, a1)
                a2 = vmuladd(vldd(Zin, zi + 2 * ts + s), e, a2)
                a3 = vmuladd(vldd(Zin, zi + 3 * ts + s), e, a3)
                a4 = vmuladd(vldd(Zin, zi + 4 * ts + s), e, a4)
                a5 = vmuladd(vldd(Zin, zi + 5 * ts + s), e, a5)
                a6 = vmuladd(vldd(Zin, zi + 6 * ts + s), e, a6)
                a7 = vmuladd(vldd(Zin, zi + 7 * ts + s), e, a7)
            h = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
            for r in range(8):
                G[i + r, j] += vlane(h, r)
            i += 8
        while i < n_in:
            a0 = vsplat(0.0)
            for s in range(0, ts, 8):
                a0 = vmuladd(vldd(Zin, i * ts + s), vldd(Dout, dj + s), a0)
            G[i, j] += vhsum(a0)
            i += 1


@njit(**_FAST)
def _add_f64(G, tmp):
    """G += tmp elementwise (2-D, same shape; tmp in the compute dtype)."""
    n, m = G.shape
    for i in range(n):
        for j in range(m):
            G[i, j] += np.float64(tmp[i, j])
