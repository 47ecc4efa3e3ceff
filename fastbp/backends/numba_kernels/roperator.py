"""Block kernels of the R-operator: Hessian- and Gauss-Newton-vector products over the tiles of a block.

For a direction V (in the flat layout of W), R{x} = d/dε x(W + εV) at ε = 0. Applied to every line
of backpropagation (Pearlmutter 1994; the NumPy reference :mod:`fastbp.backends.numpy_rop` has the
formulas), with R{z^0} = 0::

    forward   R{a^{l+1}} = W_lᵀ R{z^l} + V_lᵀ z^l + Vb_l,      R{z^l} = σ'(a^l) ⊙ R{a^l}
    output    R{δ^L} = s_n Λ R{a^L}                               (:mod:`.curvature`)
    backward  R{δ^l} = σ'(a^l) ⊙ (W_l R{δ^{l+1}} + V_l δ^{l+1}) + σ''(a^l) ⊙ R{a^l} ⊙ (W_l δ^{l+1})
              R{∂/∂W_l} += z^l R{δ^{l+1}}ᵀ + R{z^l} δ^{l+1}ᵀ,     R{∂/∂b_l} += Σ_s R{δ^{l+1}}

and the Gauss-Newton product is the same forward R-pass followed by the ordinary backward pass of
R{δ^L} (no δ, no V, no σ'' term). σ''(a) R{a} is written from R{z}: c(z) ⊙ R{z} with c = 1 − 2z
(logistic) or −2z (tanh), 0 for relu and identity.

Two kernels with the signature of the gradient's (:mod:`.backprop`)::

    f(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g)

so that the pool (:mod:`.pool`) runs them as it runs the gradient's, with this job's data:

* ``Wc``: W and then the k directions V_0, ..., V_{k-1}, each in the flat layout, in the compute
  dtype: ``Wc[(d + 1) P : (d + 2) P]`` is V_d (P = n_params).
* ``meta``: the layout (:mod:`.meta`, with the tile of these kernels) followed, from
  :func:`rbase`, by the call's part: k, the Gauss-Newton flag, and per direction d ``L + 1``
  entries: for each layer l whether V_d is nonzero on W_l or b_l, then the first such layer
  (``L`` for a zero direction). Below its first layer a direction has R{a} = R{z} = 0, and a
  layer where V_d is zero has no V term: both are skipped (exactly: the terms are zeros). For
  the dense Hessian (directions = unit vectors) this removes most of the forward R-pass and all
  but one layer's V products.
* ``g``: the block's float64 row of k · P: direction d's sums at ``g[d P : (d + 1) P]``.

Each tile runs the forward pass, the output layer's δ^L and Λ, and (exact Hessian) the backward
δ pass once, shared by the directions; then the k directions one after another over the tile's
z and δ, which stay in cache: the block's products over the k directions are the matrix
products (n_out × n_in) · (n_in × k·ts) of the layer, taken a direction (ts columns) at a time.
So memory is a few tiles whatever k and n, and the k directions cost one pass over the samples.

:func:`_rchunk_units` works on unit-major tiles (narrow networks; products in register blocks:
:func:`.tile_products.mm_flat`, :func:`.rproducts.mm2_flat`, :func:`.tile_products.grad_acc`),
:func:`_rchunk_rows` on sample-major tiles (a wide layer: every product a BLAS gemm).

Scratch (per thread; Z the tile layout of :mod:`.meta` with this kernel's tile): in the compute
dtype five arrays of ``meta[H_ZSIZE]``: z, δ, C (c(z) ⊙ W δ), R{z} (R{a} at the output), R{δ};
sample-major adds a gemm product of ``meta[H_GSIZE]`` and one layer of a tile (the V terms);
in float64 Λ's ingredients (m + 3 rows of a tile) and a throw-away bias row.
"""

import numpy as np
from numba import njit

from .activations import activate, activation_derivative
from .backprop import _bias_rows, _grad_rows, forward_units
from .curvature import apply_curvature, prepare_output
from .jit import _JIT
from .meta import H_ACT, H_GSIZE, H_L, H_NPARAMS, H_OUT, H_TILE, H_ZSIZE, HEADER, PAD, layer_arrays
from .pool import _address
from .rproducts import add_product, finish_rows, mm2_flat, sparse_backward, sparse_forward, split_backward
from .tile_products import grad_acc, mm_flat

#: What a direction is on a layer (its entry in the call's part of meta): zero there, dense, or
#: sparse (at most 1/SPARSE_RATIO of the layer's coefficients nonzero: a unit direction of the
#: dense Hessian), whose V terms the unit-major kernel adds entry by entry instead of by products.
ZERO, DENSE, SPARSE = 0, 1, 2
SPARSE_RATIO = 4


#: The call's part of meta, from :func:`rbase`: k; the product (R_GN: EXACT, GN or UPPER); q, the
#: directions per block when the blocks split the directions (0: they split the samples); the
#: address of the blocks' rows; then per direction the flags.
R_K, R_GN, R_SPLIT, R_GBUF, R_FLAGS = 0, 1, 2, 3, 4
#: The products: H V; G V; and H V on the parameters of V's first nonzero layer and above only
#: (the rest of the row left 0): the backward R-pass stops at that layer. ``Network.hess`` takes
#: the rows of unit vectors that way and the missing blocks from the symmetry of H, which skips
#: the backward pass below each direction's layer (about a fifth of a dense Hessian's work).
EXACT, GN, UPPER = 0, 1, 2


@njit(**_JIT)
def rbase(L):
    """Offset in meta of the call's part (after the layout's HEADER + 5 (L + 1) entries)."""
    return HEADER + 5 * (L + 1)


@njit(**_JIT)
def block_directions(meta, RB, s_begin, s_end, n, g):
    """``(d0, d1, s_begin, s_end)``: the directions and samples of the block whose row is ``g``.

    Blocks split the samples (every direction, samples [s_begin, s_end) as the pool gives them)
    or, for many directions, the directions: block b takes directions [b q, (b + 1) q) over all
    n samples, its row holding theirs only. The pool's block kernels are not told b; it is the
    row's place among the blocks' rows, whose address the call's meta holds. Each direction's
    sums then run over every sample in the same order whatever the number of blocks: no tile is
    cut short by a block edge and no reduction follows."""
    k = meta[RB + R_K]
    q = meta[RB + R_SPLIT]
    if q == 0:
        return 0, k, s_begin, s_end
    d0 = (_address(g) - meta[RB + R_GBUF]) // (8 * g.shape[0]) * q
    return d0, min(k, d0 + q), 0, n


def scratch_sizes(sizes, tile, zsize, gsize, rows):
    """Per-thread scratch lengths ``(compute dtype, float64)`` of the R kernels for a layout of
    layer ``sizes`` whose meta (tile ``tile``) has ``H_ZSIZE = zsize`` and ``H_GSIZE = gsize``."""
    widest = max(int(s) for s in sizes[1:])
    m = int(sizes[-1])
    csize = 5 * zsize + ((gsize + tile * widest) if rows else 0)
    return csize, m * tile + 3 * tile + max(widest, int(sizes[0])) + 8


@njit(**_JIT)
def _rchunk_units(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The R-operator's block kernel on unit-major tiles (see the module docstring)."""
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    P = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    n1 = L + 1
    SZ, ZO, CO, IO = layer_arrays(L)
    RB = rbase(L)
    exact = meta[RB + R_GN] != GN  # H V (EXACT or UPPER), else G V
    upper = meta[RB + R_GN] == UPPER
    FL = RB + R_FLAGS
    d0, d1, s_begin, s_end = block_directions(meta, RB, s_begin, s_end, X.shape[0], g)
    # offsets of the five tile arrays in zd: z, δ, C, R{z}, R{δ}
    DO = zsize
    CB = 2 * zsize
    RZ = 3 * zsize
    RD = 4 * zsize
    m = meta[SZ + L]
    zo_L = meta[ZO + L]
    junk = ws[m * tile + 3 * tile :]
    sig1 = 10 + act if act != 0 else 0  # finish: · σ'(a), from z
    # int64 variables, not literals: Numba compiles a callee anew for each literal argument
    nobias = np.int64(-1)
    zero = np.int64(0)
    one = np.int64(1)
    for t0 in range(s_begin, s_end, tile):
        tsx = min(tile, s_end - t0)
        ts = min(tile, (tsx + PAD - 1) // PAD * PAD)
        forward_units(Wc, X, meta, t0, tsx, ts, zd, L)  # z of every layer (a^L at the output)
        # output: Λ's ingredients, and δ^L for the exact Hessian
        AL = zd[zo_L : zo_L + m * ts].reshape((m, ts))
        DL = zd[DO + zo_L : DO + zo_L + m * ts].reshape((m, ts))
        lam = ws[: m * ts].reshape((m, ts))
        f = ws[m * tile : m * tile + ts]
        q = ws[m * tile + tile : m * tile + tile + ts]
        u = ws[m * tile + 2 * tile : m * tile + 2 * tile + ts]
        prepare_output(out, AL, T, t0, tsx, sw, DL, exact, lam, f, q, u)
        if exact:
            # δ^l = σ'(a^l) ⊙ W_l δ^{l+1}, shared by the directions, and (logistic, tanh) the σ''
            # term's factor C^l = c(z^l) ⊙ W_l δ^{l+1}
            for layer in range(L - 1, 0, -1):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                co = meta[CO + layer]
                if act == 1 or act == 2:
                    mm_flat(Wc, co, n_out, one, n_in, n_out, nobias,
                            zd, DO + meta[ZO + layer + 1], zd, CB + zo_in, ts, zero, zd, zero)
                    split_backward(act, zd, zo_in, zd, CB + zo_in, zd, DO + zo_in, n_in * ts)
                else:
                    mm_flat(Wc, co, n_out, one, n_in, n_out, nobias,
                            zd, DO + meta[ZO + layer + 1], zd, DO + zo_in, ts, sig1, zd, zo_in)
        for d in range(d0, d1):
            flags = FL + d * n1
            first = meta[flags + L]
            if first >= L:
                continue  # a zero direction: H V_d = 0 (+ 2 λ V_d = 0)
            vo = (d + 1) * P
            G = g[(d - d0) * P : (d - d0 + 1) * P]
            # forward R-pass from the first layer where V_d is nonzero: R{z} (R{a} at the output)
            for layer in range(first, L):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                fin = sig1 if layer < L - 1 else 0
                co = meta[CO + layer]
                vb = vo + meta[IO + layer]
                kind = meta[flags + layer]
                Wt = Wc[co : co + n_in * n_out].reshape((n_in, n_out)).T
                Vt = Wc[vo + co : vo + co + n_in * n_out].reshape((n_in, n_out)).T
                if kind == DENSE:
                    if layer == first:  # R{z^l} = 0
                        mm_flat(Wc, vo + co, one, n_out, n_out, n_in, vb,
                                zd, zo_in, zd, RZ + zo_out, ts, fin, zd, zo_out)
                    else:
                        mm2_flat(Wt, Vt, Wc, vb, zd, RZ + zo_in, zo_in, zd, RZ + zo_out, ts, fin, zd, zo_out)
                elif kind == SPARSE:
                    if layer == first:
                        for e in range(n_out * ts):
                            zd[RZ + zo_out + e] = 0
                    else:
                        mm_flat(Wc, co, one, n_out, n_out, n_in, nobias,
                                zd, RZ + zo_in, zd, RZ + zo_out, ts, zero, zd, zero)
                    sparse_forward(Wc, vo + co, vb, n_in, n_out, zd, zo_in, zd, RZ + zo_out, ts)
                    if fin != 0:
                        finish_rows(fin, zd, RZ + zo_out, zd, zo_out, n_out * ts)
                else:
                    mm_flat(Wc, co, one, n_out, n_out, n_in, nobias,
                            zd, RZ + zo_in, zd, RZ + zo_out, ts, fin, zd, zo_out)
            # output: R{δ^L} = s_n Λ R{a^L}
            RA = zd[RZ + zo_L : RZ + zo_L + m * ts].reshape((m, ts))
            RDL = zd[RD + zo_L : RD + zo_L + m * ts].reshape((m, ts))
            apply_curvature(out, RA, lam, f, q, RDL)
            # backward R-pass
            for layer in range(L - 1, -1, -1):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                co = meta[CO + layer]
                io = meta[IO + layer]
                Gl = G[co : co + n_in * n_out].reshape((n_in, n_out))
                Zin = zd[zo_in : zo_in + n_in * ts].reshape((n_in, ts))
                RDout = zd[RD + zo_out : RD + zo_out + n_out * ts].reshape((n_out, ts))
                grad_acc(Zin, RDout, Gl, G[io : io + n_out])
                rz = exact and layer > first  # R{z^l} ≠ 0
                if rz:
                    RZin = zd[RZ + zo_in : RZ + zo_in + n_in * ts].reshape((n_in, ts))
                    Dout = zd[DO + zo_out : DO + zo_out + n_out * ts].reshape((n_out, ts))
                    grad_acc(RZin, Dout, Gl, junk)
                if layer == 0 or (upper and layer == first):  # UPPER: no layer below V_d's first
                    break
                Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
                kind = meta[flags + layer] if exact else ZERO
                if kind == DENSE:
                    Vl = Wc[vo + co : vo + co + n_in * n_out].reshape((n_in, n_out))
                    mm2_flat(Wl, Vl, Wc, nobias, zd, RD + zo_out, DO + zo_out, zd, RD + zo_in, ts, sig1, zd, zo_in)
                elif kind == SPARSE:
                    mm_flat(Wc, co, n_out, one, n_in, n_out, nobias,
                            zd, RD + zo_out, zd, RD + zo_in, ts, zero, zd, zero)
                    sparse_backward(Wc, vo + co, n_in, n_out, zd, DO + zo_out, zd, RD + zo_in, ts)
                    if sig1 != 0:
                        finish_rows(sig1, zd, RD + zo_in, zd, zo_in, n_in * ts)
                else:
                    mm_flat(Wc, co, n_out, one, n_in, n_out, nobias,
                            zd, RD + zo_out, zd, RD + zo_in, ts, sig1, zd, zo_in)
                if rz and (act == 1 or act == 2):
                    add_product(zd, RD + zo_in, zd, CB + zo_in, zd, RZ + zo_in, n_in * ts)


@njit(**_JIT)
def _rchunk_rows(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The R-operator's block kernel on sample-major tiles: every product a gemm (``np.dot``).

    Tiles are ``(ts, n_units)``; z^0 is the tile's rows of X, read in place. The V terms go
    through a scratch layer (``np.dot`` writes, it does not add), the gradient products through
    a compute-dtype matrix added in float64 (as :func:`.backprop._chunk_rows`).
    """
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    P = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    gsize = meta[H_GSIZE]
    n1 = L + 1
    SZ, ZO, CO, IO = layer_arrays(L)
    RB = rbase(L)
    exact = meta[RB + R_GN] != GN  # H V (EXACT or UPPER), else G V
    upper = meta[RB + R_GN] == UPPER
    FL = RB + R_FLAGS
    d0, d1, s_begin, s_end = block_directions(meta, RB, s_begin, s_end, X.shape[0], g)
    Z = zd[:zsize]
    D = zd[zsize : 2 * zsize]
    C = zd[2 * zsize : 3 * zsize]
    RZ = zd[3 * zsize : 4 * zsize]
    RD = zd[4 * zsize : 5 * zsize]
    GT = zd[5 * zsize : 5 * zsize + gsize]
    TMP = zd[5 * zsize + gsize :]
    m = meta[SZ + L]
    zo_L = meta[ZO + L]
    junk = ws[m * tile + 3 * tile :]
    for t0 in range(s_begin, s_end, tile):
        ts = min(tile, s_end - t0)
        X0 = X[t0 : t0 + ts]
        # forward, as the gradient's
        for layer in range(L):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_out = meta[ZO + layer + 1]
            Aout = Z[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
            Wl = Wc[meta[CO + layer] : meta[CO + layer + 1]].reshape((n_in, n_out))
            if layer == 0:
                np.dot(X0, Wl, Aout)
            else:
                zo_in = meta[ZO + layer]
                np.dot(Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in)), Wl, Aout)
            _bias_rows(Aout, Wc[meta[IO + layer] : meta[IO + layer + 1]])
            if layer < L - 1:
                activate(act, Aout.reshape(ts * n_out))
        # output: Λ's ingredients and δ^L, on the transposed (unit, sample) views
        AL = Z[zo_L : zo_L + ts * m].reshape((ts, m))
        DL = D[zo_L : zo_L + ts * m].reshape((ts, m))
        lam = ws[: m * ts].reshape((m, ts))
        f = ws[m * tile : m * tile + ts]
        q = ws[m * tile + tile : m * tile + tile + ts]
        u = ws[m * tile + 2 * tile : m * tile + 2 * tile + ts]
        prepare_output(out, AL.T, T, t0, ts, sw, DL.T, exact, lam, f, q, u)
        if exact:
            for layer in range(L - 1, 0, -1):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                Wl = Wc[meta[CO + layer] : meta[CO + layer + 1]].reshape((n_in, n_out))
                np.dot(D[zo_out : zo_out + ts * n_out].reshape((ts, n_out)), Wl.T,
                       C[zo_in : zo_in + ts * n_in].reshape((ts, n_in)))
                split_backward(act, Z, zo_in, C, zo_in, D, zo_in, ts * n_in)
        for d in range(d0, d1):
            flags = FL + d * n1
            first = meta[flags + L]
            if first >= L:
                continue
            vo = (d + 1) * P
            G = g[(d - d0) * P : (d - d0 + 1) * P]
            for layer in range(first, L):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                co = meta[CO + layer]
                io = meta[IO + layer]
                Zin = X0 if layer == 0 else Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                RAout = RZ[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
                Vl = Wc[vo + co : vo + co + n_in * n_out].reshape((n_in, n_out))
                if layer == first:
                    np.dot(Zin, Vl, RAout)
                else:
                    Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
                    np.dot(RZ[zo_in : zo_in + ts * n_in].reshape((ts, n_in)), Wl, RAout)
                    if meta[flags + layer]:
                        Tm = TMP[: ts * n_out].reshape((ts, n_out))
                        np.dot(Zin, Vl, Tm)
                        for s in range(ts):
                            for j in range(n_out):
                                RAout[s, j] += Tm[s, j]
                if layer == first or meta[flags + layer]:
                    _bias_rows(RAout, Wc[vo + io : vo + io + n_out])
                if layer < L - 1:
                    activation_derivative(act, Z[zo_out : zo_out + ts * n_out], RZ[zo_out : zo_out + ts * n_out])
            RA = RZ[zo_L : zo_L + ts * m].reshape((ts, m))
            RDL = RD[zo_L : zo_L + ts * m].reshape((ts, m))
            apply_curvature(out, RA.T, lam, f, q, RDL.T)
            for layer in range(L - 1, -1, -1):
                n_in = meta[SZ + layer]
                n_out = meta[SZ + layer + 1]
                zo_in = meta[ZO + layer]
                zo_out = meta[ZO + layer + 1]
                co = meta[CO + layer]
                io = meta[IO + layer]
                Gl = G[co : co + n_in * n_out].reshape((n_in, n_out))
                Gt = GT[: n_in * n_out].reshape((n_in, n_out))
                Zin = X0 if layer == 0 else Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                RDout = RD[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
                _grad_rows(Zin, RDout, Gt, Gl, G[io : io + n_out])
                rz = exact and layer > first
                if rz:
                    Dout = D[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
                    _grad_rows(RZ[zo_in : zo_in + ts * n_in].reshape((ts, n_in)), Dout, Gt, Gl, junk)
                if layer == 0 or (upper and layer == first):  # UPPER: no layer below V_d's first
                    break
                Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
                RDin = RD[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                np.dot(RDout, Wl.T, RDin)
                if exact and meta[flags + layer]:
                    Vl = Wc[vo + co : vo + co + n_in * n_out].reshape((n_in, n_out))
                    Tm = TMP[: ts * n_in].reshape((ts, n_in))
                    np.dot(D[zo_out : zo_out + ts * n_out].reshape((ts, n_out)), Vl.T, Tm)
                    for s in range(ts):
                        for i in range(n_in):
                            RDin[s, i] += Tm[s, i]
                activation_derivative(act, Z[zo_in : zo_in + ts * n_in], RD[zo_in : zo_in + ts * n_in])
                if rz and (act == 1 or act == 2):
                    add_product(RD, zo_in, C, zo_in, RZ, zo_in, ts * n_in)
