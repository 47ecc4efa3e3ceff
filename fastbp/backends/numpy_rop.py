"""Second order in NumPy: Pearlmutter's R-operator, the reference the compiled kernels are held to.

For a direction ``V`` (a vector in the flat layout of ``W``), R{x} = d/dε x(W + εV) at ε = 0 is
the directional derivative of any quantity x of the forward or backward pass. Applying R{·} to
every line of backpropagation (the lab's notation: a^{l+1} = z^l W_l + b_l, z = σ(a), δ^L = ∂ℓ/∂a^L,
δ^l = σ'(a^l) ⊙ δ^{l+1} W_lᵀ, ∂loss/∂W_l = z^lᵀ δ^{l+1}) gives the Hessian-vector product
``H V = R{∂loss/∂W}`` exactly, at about twice the cost of the gradient (Pearlmutter 1994):

forward, with R{z^0} = R{x} = 0::

    R{a^{l+1}} = R{z^l} W_l + z^l V_l + Vb_l
    R{z^l}     = σ'(a^l) R{a^l}

at the output, with Λ the Hessian of the per-sample loss ℓ in the output pre-activations a^L::

    R{δ^L} = Λ R{a^L}                          (times the sample weight, like δ^L)

backward::

    R{∂loss/∂W_l} = R{z^l}ᵀ δ^{l+1} + z^lᵀ R{δ^{l+1}}        R{∂loss/∂b_l} = Σ_n R{δ^{l+1}}
    R{δ^l}        = σ''(a^l) R{a^l} ⊙ (δ^{l+1} W_lᵀ) + σ'(a^l) ⊙ (R{δ^{l+1}} W_lᵀ + δ^{l+1} V_lᵀ)

and the penalty λ Σ W² adds 2λV on the coefficient entries. The Gauss-Newton product
``G V = Σ_n s_n J_nᵀ Λ_n J_n V`` (J_n = ∂a^L_n/∂W) is the same forward R-pass (R{a^L} = J_n V)
followed by an *ordinary* backward pass of u^L = Λ R{a^L}: u^l = σ'(a^l) ⊙ u^{l+1} W_lᵀ,
accumulating z^lᵀ u^{l+1}; it never needs δ or σ''.

Every function here takes a block of k directions, ``V`` of shape (k, n_params), and carries
them through one pass over the samples as arrays of shape (samples, k, units): the products of a
layer become matrix products over the whole block. The samples are processed in chunks whose
size bounds the memory of the (samples, k, units) arrays (:data:`CHUNK_VALUES`), so memory does
not grow with n. Compute is in the layout's dtype, sums over samples in float64 (as the
gradient); the chunk size depends only on n, k and the layout, so results are deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax

from .numpy_backend import _FORWARD, output_loss_and_delta

#: Most values of one (samples, k, units) array summed over the layers of a chunk: the samples
#: are processed in chunks of about CHUNK_VALUES / (k · Σ units) (2 MiB per array in float64).
CHUNK_VALUES = 1 << 18


# ------------------------------------------------------------------------ hidden activations
# σ'(a) and σ''(a), both written from z = σ(a) (what the forward pass keeps). σ'' is None where
# it is zero everywhere (relu almost everywhere, identity), so that term is skipped.
def _d1(activation, z):
    if activation == "logistic":
        return z * (1 - z)
    if activation == "tanh":
        return 1 - z * z
    if activation == "relu":
        return (z > 0).astype(z.dtype)  # as the gradient: σ'(0) = 0
    return None  # identity: σ' = 1


def _d2(activation, z, d1):
    if activation == "logistic":
        return d1 * (1 - 2 * z)  # σ'' = σ'(1 − 2σ)
    if activation == "tanh":
        return -2 * z * d1  # tanh'' = −2 z (1 − z²)
    return None


# ------------------------------------------------------------------------------ output layers
# output name -> Λ R: the Hessian of the per-sample loss ℓ in the output pre-activations a
# (shape (samples, m)), applied to R{a} of shape (samples, k, m); t are the targets. Λ is
# positive semi-definite for every output. Adding an output is one entry here.
def _curvature_identity(a, t, ra):  # ℓ = ½ Σ (a − t)²: Λ = I
    return ra


def _curvature_logistic(a, t, ra):  # Λ = diag p(1 − p), p = σ(a)
    p = expit(a)
    return (p * (1 - p))[:, None, :] * ra


def _curvature_softmax(a, t, ra):  # Λ = s (diag p − p pᵀ), p = softmax(a), s = Σ_k t_k
    p = softmax(a, axis=1)[:, None, :]
    s = t.sum(axis=1)[:, None, None]
    pr = p * ra
    return s * (pr - p * pr.sum(axis=2, keepdims=True))


def _curvature_exponential(a, t, ra):  # half Poisson deviance, p = exp(a): Λ = diag p
    return np.exp(a)[:, None, :] * ra


CURVATURE = {
    "identity": _curvature_identity,
    "logistic": _curvature_logistic,
    "softmax": _curvature_softmax,
    "exponential": _curvature_exponential,
}


# ----------------------------------------------------------------------------------- helpers
def chunk_size(layout, n_samples, k):
    """Samples per chunk for a block of ``k`` directions: a function of n, k and the layout only."""
    units = sum(layout.layer_sizes[1:])
    return max(1, min(n_samples, CHUNK_VALUES // (k * units)))


def _block_views(layout, V):
    """Per layer: the directions' coefficients as (k, n_in, n_out) and intercepts as (k, n_out)."""
    k = V.shape[0]
    v_coefs = [
        V[:, layout.coef_offsets[i] : layout.coef_offsets[i + 1]].reshape(k, *shape)
        for i, shape in enumerate(layout.coef_shapes)
    ]
    v_ints = [
        V[:, layout.intercept_offsets[i] : layout.intercept_offsets[i + 1]]
        for i in range(len(layout.intercept_shapes))
    ]
    return v_coefs, v_ints


def _matrices(m):
    """(samples, k, units) as a (samples · k, units) matrix (a view)."""
    return m.reshape(-1, m.shape[-1])


# ------------------------------------------------------------------------------- the R-passes
# Blocks of directions are kept sample-major, shape (samples, k, units): then every product of
# a layer over the whole block is one matrix product on a view, with no transposed copies.
def curvature_block(layout, W, V, X, T, sample_weight, scale, l2, gauss_newton=False):
    """``H V[d]`` (or ``G V[d]`` when ``gauss_newton``) for every row d of ``V``.

    Arguments as the kernel protocol of :mod:`fastbp.backends`: ``V`` float64 (k, n_params).
    Returns a new float64 array of shape (k, n_params).
    """
    dt = layout.dtype
    k = V.shape[0]
    coefs, intercepts = layout.unpack(W.astype(dt, copy=False))
    v_coefs, v_ints = _block_views(layout, V.astype(dt, copy=False))
    # once per call: V_l as (n_in, k · n_out) for z V_l, and as (n_out, k · n_in) for δ V_lᵀ
    v_fwd = [v.transpose(1, 0, 2).reshape(v.shape[1], -1) for v in v_coefs]
    v_bwd = [v.transpose(2, 0, 1).reshape(v.shape[2], -1) for v in v_coefs]
    out = np.zeros((k, layout.n_params), dtype=np.float64)
    o_coefs, o_ints = _block_views(layout, out)
    curvature = CURVATURE[layout.output]
    activation = layout.activation
    sigma = _FORWARD[activation]
    f64 = np.float64
    L = len(coefs)
    n = X.shape[0]
    step = chunk_size(layout, n, k)
    for start in range(0, n, step):
        x, t = X[start : start + step], T[start : start + step]
        nc = x.shape[0]
        sw = None if sample_weight is None else sample_weight[start : start + step].astype(dt)

        # forward: z, σ' (None: identity), R{a} and R{z} per layer (R{z^0} = 0: None)
        zs, d1s, ras, rzs = [x], [None], [None], [None]
        for i in range(L):
            n_out = coefs[i].shape[1]
            a = zs[i] @ coefs[i]
            a += intercepts[i]
            ra = (zs[i] @ v_fwd[i]).reshape(nc, k, n_out)  # z^l V_l
            ra += v_ints[i]  # + Vb_l
            if rzs[i] is not None:
                ra += (_matrices(rzs[i]) @ coefs[i]).reshape(nc, k, n_out)  # + R{z^l} W_l
            ras.append(ra)
            if i == L - 1:
                zs.append(a)
                break
            z = sigma(a)  # in place: a is not needed again
            d1 = _d1(activation, z)
            zs.append(z)
            d1s.append(d1)
            rzs.append(ra if d1 is None else d1[:, None, :] * ra)

        # output: R{δ^L} = Λ R{a^L}, and δ^L itself for the exact Hessian
        a_out = zs[L]
        r_delta = curvature(a_out, t, ras[L])
        delta = None
        if not gauss_newton:
            _, delta = output_loss_and_delta(layout.output, a_out, t)
        if sw is not None:
            r_delta = r_delta * sw[:, None, None]
            if delta is not None:
                delta = delta * sw[:, None]

        # backward
        for i in range(L - 1, -1, -1):
            n_in, n_out = coefs[i].shape
            # R{∂loss/∂W_l} += z^lᵀ R{δ^{l+1}} (+ R{z^l}ᵀ δ^{l+1}), summed over samples in float64
            zr = zs[i].T.astype(f64, copy=False) @ r_delta.reshape(nc, k * n_out).astype(f64, copy=False)
            o_coefs[i] += zr.reshape(n_in, k, n_out).transpose(1, 0, 2)
            if delta is not None and rzs[i] is not None:
                rz = rzs[i].reshape(nc, k * n_in).T.astype(f64, copy=False) @ delta.astype(f64, copy=False)
                o_coefs[i] += rz.reshape(k, n_in, n_out)
            o_ints[i] += r_delta.sum(axis=0, dtype=f64)
            if i == 0:
                break
            d1 = d1s[i]
            r_back = (_matrices(r_delta) @ coefs[i].T).reshape(nc, k, n_in)  # R{δ^{l+1}} W_lᵀ
            if delta is None:  # Gauss-Newton: an ordinary backward pass of Λ R{a^L}
                r_delta = r_back if d1 is None else d1[:, None, :] * r_back
                continue
            back = delta @ coefs[i].T  # δ^{l+1} W_lᵀ
            r_back += (delta @ v_bwd[i]).reshape(nc, k, n_in)  # + δ^{l+1} V_lᵀ
            if d1 is None:
                r_delta, delta = r_back, back
                continue
            r_new = d1[:, None, :] * r_back
            d2 = _d2(activation, zs[i], d1)
            if d2 is not None:
                r_new += (d2 * back)[:, None, :] * ras[i]
            r_delta, delta = r_new, d1 * back

    out *= scale
    if l2:
        n_coef = layout.n_coef
        out[:, :n_coef] += (2.0 * l2) * V[:, :n_coef]
    return out


def output_jacobian(layout, W, X, row_scale, out):
    """Write ``row_scale[n] · ∂a^L_{n,j}/∂W`` into row ``n · n_outputs + j`` of ``out``.

    ``out``: float64, C-contiguous, shape (n · n_outputs, n_params), every entry overwritten.
    One backward pass per output unit from δ^L = e_j, kept per sample instead of summed: the
    row of the coefficient (i, j') of layer l is z^l_i δ^{l+1}_{j'}, of its intercept δ^{l+1}_{j'}.
    """
    dt = layout.dtype
    coefs, intercepts = layout.unpack(W.astype(dt, copy=False))
    L, m, n = len(coefs), layout.n_outputs, X.shape[0]
    step = max(1, min(n, CHUNK_VALUES // layout.n_params))  # bounds the per-sample outer products
    rows = out.reshape(n, m, layout.n_params)
    activation = layout.activation
    sigma = _FORWARD[activation]
    for start in range(0, n, step):
        x = X[start : start + step]
        nc = x.shape[0]
        zs, d1s = [x], [None]
        for i in range(L - 1):
            a = zs[i] @ coefs[i]
            a += intercepts[i]
            z = sigma(a)
            zs.append(z)
            d1s.append(_d1(activation, z))
        r = rows[start : start + nc]
        scale_c = row_scale[start : start + nc].astype(dt)
        for j in range(m):
            delta = np.zeros((nc, m), dtype=dt)
            delta[:, j] = scale_c
            for i in range(L - 1, -1, -1):
                c0, c1 = layout.coef_offsets[i], layout.coef_offsets[i + 1]
                outer = zs[i].astype(np.float64)[:, :, None] * delta.astype(np.float64)[:, None, :]
                r[:, j, c0:c1] = outer.reshape(nc, c1 - c0)
                r[:, j, layout.intercept_offsets[i] : layout.intercept_offsets[i + 1]] = delta
                if i > 0:
                    delta = delta @ coefs[i].T
                    if d1s[i] is not None:
                        delta *= d1s[i]
