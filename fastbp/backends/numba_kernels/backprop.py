"""Block kernels of the gradient: the forward pass and δ backpropagation over the tiles of a block.

Per tile, forward a^{l+1} = W_l^T z^l + b_l, z^{l+1} = σ(a^{l+1}); at the output the loss and
δ^L (:mod:`.output_layer`); backward ∂/∂W_l += z^l δ^{l+1}ᵀ, ∂/∂b_l += Σ_s δ^{l+1},
δ^l = σ'(a^l) ⊙ W_l δ^{l+1}. Two kernels, one signature::

    f(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g)

adds the loss and gradient sums of samples [s_begin, s_end) into g (float64): g[:n_params]
receives Σ s_n ∂ℓ_n/∂W and g[n_params] Σ s_n ℓ_n. Wc is W in the compute dtype; zd and ws are
the block's scratch (compute dtype and float64). :func:`_chunk_units` runs unit-major tiles
(narrow networks: the inner loops run over samples, products by :mod:`.tile_products`),
:func:`_chunk_rows` sample-major tiles (a wide layer: every product a BLAS gemm). Which one a
network uses is fixed by its layout (meta[H_ROWS]); :func:`.driver.run` compiles only the one it
is asked for. :func:`_epilogue` then reduces the blocks' rows in block order and adds the L2 term.
"""

import numpy as np
from numba import njit

from .activations import activate, activate_rows, activation_derivative
from .jit import _FAST, _JIT
from .meta import H_ACT, H_GSIZE, H_L, H_NCOEF, H_NPARAMS, H_OUT, H_TILE, H_ZSIZE, OUT_BLOCK, PAD, layer_arrays
from .output_layer import output_loss_delta, output_tile
from .tile_products import _add_f64, grad_acc, mm_flat


@njit(**_FAST)
def _bias_rows(A, b):
    """A[s, :] += b for every row of a sample-major tile."""
    ts, n = A.shape
    for s in range(ts):
        for j in range(n):
            A[s, j] += b[j]


@njit(**_FAST)
def _grad_rows(Zin, Dout, Gt, Gl, gb):
    """Gl += Zin.T @ Dout (one gemm in the compute dtype, added in float64), gb += Σ_s Dout."""
    np.dot(Zin.T, Dout, Gt)
    _add_f64(Gl, Gt)
    ts, n_out = Dout.shape
    for s in range(ts):
        for j in range(n_out):
            gb[j] += np.float64(Dout[s, j])


@njit(**_JIT)
def _chunk_rows(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The block kernel on sample-major tiles: every product is a gemm on C-contiguous blocks.

    ``Z_l`` is ``(ts, n_units)``; z^0 is the tile's rows of X, read in place. Per tile and layer:
    ``A = Z @ W`` forward, ``G += Z.T @ δ`` and ``δ_prev = δ @ W.T`` backward, each one BLAS call
    (which runs its own threads). The output layer is evaluated on sub-tiles transposed to the
    unit-major form of :func:`output_loss_delta`.
    """
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    n_params = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    gsize = meta[H_GSIZE]
    SZ, ZO, CO, IO = layer_arrays(L)
    m = meta[SZ + L]
    ob = min(tile, OUT_BLOCK)
    Z = zd[:zsize]
    D = zd[zsize : 2 * zsize]
    GT = zd[2 * zsize : 2 * zsize + gsize]
    o = 2 * zsize + gsize
    AUf = zd[o : o + m * ob]
    DUf = zd[o + m * ob : o + 2 * m * ob]
    loss = 0.0
    for t0 in range(s_begin, s_end, tile):
        ts = min(tile, s_end - t0)
        X0 = X[t0 : t0 + ts]
        # forward: A^{l+1} = Z^l @ W_l + b_l, Z^{l+1} = σ(A^{l+1})
        for layer in range(L):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_out = meta[ZO + layer + 1]
            Aout = Z[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
            Wl = Wc[meta[CO + layer] : meta[CO + layer + 1]].reshape((n_in, n_out))
            b = Wc[meta[IO + layer] : meta[IO + layer + 1]]
            if layer == 0:
                np.dot(X0, Wl, Aout)
            else:
                zo_in = meta[ZO + layer]
                np.dot(Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in)), Wl, Aout)
            _bias_rows(Aout, b)
            if layer < L - 1:
                activate(act, Aout.reshape(ts * n_out))
        # output: loss and δ^L, on unit-major sub-tiles
        zo = meta[ZO + L]
        AL = Z[zo : zo + ts * m].reshape((ts, m))
        DL = D[zo : zo + ts * m].reshape((ts, m))
        for u0 in range(0, ts, ob):
            us = min(ob, ts - u0)
            AU = AUf[: m * us].reshape((m, us))
            DU = DUf[: m * us].reshape((m, us))
            for s in range(us):
                for k in range(m):
                    AU[k, s] = AL[u0 + s, k]
            loss += output_loss_delta(out, AU, T, t0 + u0, us, sw, DU, ws)
            for s in range(us):
                for k in range(m):
                    DL[u0 + s, k] = DU[k, s]
        # backward: G_l += Z^l.T @ δ^{l+1}, δ^l = σ'(a^l) (δ^{l+1} @ W_l.T)
        for layer in range(L - 1, -1, -1):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_out = meta[ZO + layer + 1]
            Dout = D[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
            co = meta[CO + layer]
            Gl = g[co : co + n_in * n_out].reshape((n_in, n_out))
            gb = g[meta[IO + layer] : meta[IO + layer + 1]]
            Gt = GT[: n_in * n_out].reshape((n_in, n_out))
            if layer == 0:
                _grad_rows(X0, Dout, Gt, Gl, gb)
            else:
                zo_in = meta[ZO + layer]
                Zin = Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                _grad_rows(Zin, Dout, Gt, Gl, gb)
                Din = D[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
                np.dot(Dout, Wl.T, Din)
                activation_derivative(act, Zin.reshape(ts * n_in), Din.reshape(ts * n_in))
    g[n_params] += loss


@njit(**_JIT)
def forward_units(Wc, X, meta, t0, tsx, ts, Z, n_layers):
    """The forward pass of a unit-major tile, into ``Z`` (from its start: z of every layer at
    ``meta``'s offsets, z^0 = x; a^L at the output, not activated).

    z^0 is the tile of X (rows ``t0 .. t0 + tsx``) transposed to unit-major and padded with zero
    samples to ``ts`` (a multiple of PAD: the vector loops over samples then run no scalar
    remainder; padding gets δ = 0, so it adds exact zeros to the sums); then for the first
    ``n_layers`` layers a^{l+1}_j = Σ_i w_ij z^l_i + b_j, z^{l+1} = σ(a^{l+1}) (relu at the
    store). Shared by the gradient's, the R-operator's and the output Jacobian's kernels."""
    L = meta[H_L]
    act = meta[H_ACT]
    SZ, ZO, CO, IO = layer_arrays(L)
    n0 = meta[SZ]
    one = np.int64(1)  # (an int64 variable, not a literal: see mm_flat)
    for s in range(tsx):
        for i in range(n0):
            Z[i * ts + s] = X[t0 + s, i]
    for i in range(n0):
        for s in range(tsx, ts):
            Z[i * ts + s] = 0
    for layer in range(n_layers):
        n_in = meta[SZ + layer]
        n_out = meta[SZ + layer + 1]
        zo_in = meta[ZO + layer]
        zo_out = meta[ZO + layer + 1]
        hidden = layer < L - 1
        fin = 3 if hidden and act == 3 else 0
        # M = W_l^T: M[j, i] = Wc[co + i n_out + j] (no z to finish with: Zd is not read)
        mm_flat(Wc, meta[CO + layer], one, n_out, n_out, n_in, meta[IO + layer], Z, zo_in, Z, zo_out, ts, fin,
                Z, zo_out)
        if hidden and fin == 0:
            activate_rows(act, Z, zo_out, n_out * ts)


@njit(**_JIT)
def _chunk_units(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The block kernel on unit-major tiles (narrow networks: the inner loops run over samples).

    Every product goes through :func:`.tile_products.mm_flat` and :func:`.tile_products.grad_acc`:
    a network with a layer wide enough for BLAS runs :func:`_chunk_rows` instead (its BLAS flags
    in ``meta`` are not read here)."""
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    n_params = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    SZ, ZO, CO, IO = layer_arrays(L)
    Z = zd[:zsize]  # z of every layer (z^0 = x, the last holds a^L)
    D = zd[zsize : 2 * zsize]  # δ of every layer
    one = np.int64(1)  # (an int64 variable, not a literal: see mm_flat)
    loss = 0.0
    for t0 in range(s_begin, s_end, tile):
        tsx = min(tile, s_end - t0)
        ts = min(tile, (tsx + PAD - 1) // PAD * PAD)  # padded with zero samples: forward_units
        forward_units(Wc, X, meta, t0, tsx, ts, Z, L)
        # output: loss and δ^L = s_n (y − t)
        m = meta[SZ + L]
        zo = meta[ZO + L]
        loss += output_tile(out, Z, zo, D, zo, ts, m, T, t0, tsx, sw, ws)
        # backward: ∂/∂w_ij += z_i δ_j, ∂/∂b_j += δ_j, then δ_i = σ'(a_i) Σ_j w_ij δ_j
        for layer in range(L - 1, -1, -1):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_in = meta[ZO + layer]
            zo_out = meta[ZO + layer + 1]
            Zin = Z[zo_in : zo_in + n_in * ts].reshape((n_in, ts))
            Dout = D[zo_out : zo_out + n_out * ts].reshape((n_out, ts))
            co = meta[CO + layer]
            Gl = g[co : co + n_in * n_out].reshape((n_in, n_out))
            gb = g[meta[IO + layer] : meta[IO + layer + 1]]
            grad_acc(Zin, Dout, Gl, gb)
            if layer > 0:
                fin = 10 + act if act != 0 else 0
                # M = W_l: M[j, i] = Wc[co + j n_out + i]
                mm_flat(Wc, co, n_out, one, n_in, n_out, -one, D, zo_out, D, zo_in, ts, fin, Z, zo_in)
    g[n_params] += loss


@njit(**_JIT)
def _epilogue(W, gbuf, n_blocks, meta, scale, l2):
    """Reduce the blocks' rows in fixed order, scale, and add the L2 term on coefficients."""
    n_params = meta[H_NPARAMS]
    n_coef = meta[H_NCOEF]
    grad = np.empty(n_params, dtype=np.float64)
    for p in range(n_params + 1):
        acc = gbuf[0, p]
        for c in range(1, n_blocks):
            acc += gbuf[c, p]
        if p < n_params:
            grad[p] = scale * acc
    data = gbuf[0, n_params]
    for c in range(1, n_blocks):
        data += gbuf[c, n_params]
    penalty = 0.0
    for p in range(n_coef):
        penalty += W[p] * W[p]
        grad[p] += 2.0 * l2 * W[p]
    return scale * data + l2 * penalty, grad
