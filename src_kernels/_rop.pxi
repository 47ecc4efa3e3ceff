# Second order in the Cython kernel (included by _cython_kernels.pyx, after CythonKernel):
# Hessian-vector and Gauss-Newton products by Pearlmutter's R-operator, for one direction or a
# block of k, and the per-sample Jacobian of the output pre-activations. The protocol is in
# fastbp.backends (``hessp``, ``hessp_block``, ``gauss_newton_product``, ``gauss_newton_block``,
# ``output_jacobian``, ``max_directions``); the formulas in fb_rop.h and fastbp.backends.numpy_rop.
#
# Per tile of samples (the first-order kernel's tiles and plan: unit-major, BLAS layers, loop
# layers, sample-major accumulation of wide layers):
#
# 1. once, whatever the number of directions: the forward pass (z^l, a^L), the output's
#    curvature Λ (times the sample weight), and for the exact Hessian the ordinary backward pass
#    (δ^l, t^l = g(z^l) W_l δ^{l+1} for σ'', the transposed δ of the sample-major layers);
# 2. for each direction V_d in turn, on the same tile: the forward R-pass (R{z^l}, R{a^L}),
#    R{δ^L} = Λ R{a^L}, and the backward R-pass accumulating R{∂loss/∂W} into row d of the
#    result (Gauss-Newton: no δ, no V_l δ and no σ'' terms: an ordinary backward pass of
#    Λ R{a^L}).
#
# So the tiles of a block of k directions are the base tiles plus one direction's R-tiles, and a
# direction costs the R-pass alone (about 2 gradients; the base pass about 1, shared). Threads:
# a call is cut into jobs run by the pool of fb_pool.h. One direction, or fewer than 2 per
# thread: jobs are blocks of samples, each with its own float64 (k, n_params) accumulator,
# summed in job order (as the gradient: bit-identical for a given n_threads). Blocks of many
# directions (hess): jobs are groups of directions, each over all the samples in the same tiles,
# writing its own rows of the result: no accumulators, nothing to sum, and every direction's row
# the same whichever job computed it. Memory: the threads' tile scratch and at most
# 4 n_threads accumulators, independent of n.

cdef extern from "fb_rop.h" nogil:
    enum: FB_LOGISTIC
    enum: FB_TANH
    void fb_rmm_d(int wide, const double *M, const double *Vm, idx so, idx si, const double *bias,
                  const double *R, const double *Z, idx n_in, double *Out, idx n_out, idx nsp,
                  idx ld, int act, const double *Zd)
    void fb_rmm_f(int wide, const float *M, const float *Vm, idx so, idx si, const float *bias,
                  const float *R, const float *Z, idx n_in, float *Out, idx n_out, idx nsp,
                  idx ld, int act, const float *Zd)
    void fb_rgrad_d(int wide, const double *Z, const double *RZ, idx n_in, const double *RD,
                    const double *D, idx n_out, double *dW, double *db, idx nsp, idx ld)
    void fb_rgrad_f(int wide, const float *Z, const float *RZ, idx n_in, const float *RD,
                    const float *D, idx n_out, double *dW, double *db, idx nsp, idx ld)
    void fb_rop_lambda_d(int out, const double *A, idx m, const double *Tt, const double *sw,
                         double *lam, double *P, idx ns, idx nsp, idx ld, double *w)
    void fb_rop_lambda_f(int out, const float *A, idx m, const float *Tt, const double *sw,
                         double *lam, double *P, idx ns, idx nsp, idx ld, double *w)
    void fb_rop_curv_d(int out, const double *lam, const double *P, idx m, const double *RA,
                       double *RD, idx nsp, idx ld)
    void fb_rop_curv_f(int out, const double *lam, const double *P, idx m, const float *RA,
                       float *RD, idx nsp, idx ld)
    void fb_rop_split_d(int act, const double *Z, double *Dp, double *D, idx n, idx nsp, idx ld)
    void fb_rop_split_f(int act, const float *Z, float *Dp, float *D, idx n, idx nsp, idx ld)
    void fb_rop_addmul_d(double *Out, const double *A, const double *B, idx n, idx nsp, idx ld)
    void fb_rop_addmul_f(float *Out, const float *A, const float *B, idx n, idx nsp, idx ld)
    void fb_rop_jac_d(const double *Z, idx zc, idx zs, idx n_in, const double *D, idx n_out,
                      idx ld, idx ns, double *rows, idx row_stride, idx coef_off, idx int_off,
                      double *dcol)
    void fb_rop_jac_f(const float *Z, idx zc, idx zs, idx n_in, const float *D, idx n_out,
                      idx ld, idx ns, double *rows, idx row_stride, idx coef_off, idx int_off,
                      double *dcol)

cdef enum:
    MAX_DIRECTIONS = 1024        # most directions of one hessp_block call (Network.hess's blocks)
    MAX_DIRECTION_VALUES = 1 << 21  # ... and at most this many entries of V: 16 MiB of float64


cdef struct RopLayout:
    # byte offsets in one thread's scratch
    idx z, d, t, rz, rd          # tiles: z^l (and a^L), δ^l, t^l, R{z^l} (and R{a^L}), R{δ^l}
    idx work, lam, prob, w       # output layer: fb_output_tile's work, Λ's factors, weights
    idx small                    # n_out doubles: ignored bias sums, the Jacobian's column
    idx gtmp, dt, dtd, g         # sgemm scratch, transposed R{δ}, transposed δ per layer, G
    idx dtd_off[MAX_LAYERS]      # elements: layer l's transposed δ^{l+1} in dtd
    idx bytes                    # of one thread's scratch


cdef void _rop_layout(const Plan *p, idx isz, RopLayout *r) noexcept nogil:
    cdef idx off = 0, m = p.sizes[p.n_layers], dtd_len = 0, widest = 8
    cdef int l
    for l in range(p.n_layers):
        widest = max(widest, p.npad[l])
        r.dtd_off[l] = dtd_len
        if p.gacc[l]:
            dtd_len += p.ld * p.npad[l]
    r.z = off
    off += _round64(p.zbuf_len * isz)
    r.d = off
    off += _round64(p.dbuf_len * isz)
    r.t = off
    off += _round64(p.dbuf_len * isz)
    r.rz = off
    off += _round64(p.dbuf_len * isz)
    r.rd = off
    off += _round64(p.dbuf_len * isz)
    r.work = off
    off += _round64(4 * p.ld * sizeof(double))
    r.lam = off
    off += _round64(m * p.ld * sizeof(double))
    r.prob = off
    off += _round64(m * p.ld * sizeof(double))
    r.w = off
    off += _round64(p.ld * sizeof(double))
    r.small = off
    off += _round64(widest * sizeof(double))
    r.gtmp = off
    off += _round64(p.gtmp_len * sizeof(float))
    r.dt = off
    off += _round64(p.dt_len * isz)
    r.dtd = off
    off += _round64(dtd_len * isz)
    r.g = off
    off += _round64(p.gacc_len * sizeof(double))
    r.bytes = off


cdef inline idx _tile_samples(const Plan *p, idx n, idx n_blocks) noexcept nogil:
    """Samples per tile for n samples in n_blocks blocks (as the gradient's _run)."""
    cdef idx per_block = (n + n_blocks - 1) // n_blocks
    cdef idx tiles_per_block = (per_block + p.ld - 1) // p.ld
    cdef idx ts = (n + n_blocks * tiles_per_block - 1) // (n_blocks * tiles_per_block)
    return max(<idx>FB_LANES, min(p.ld, (ts + FB_LANES - 1) // FB_LANES * FB_LANES))


cdef void _rop_forward(const Plan *p, const floating *W, const floating *Xt, idx ns, idx nsp,
                       floating *buf) noexcept nogil:
    """The forward pass of one tile, as the gradient's: z^0 (unless layer 0 reads X in place
    through BLAS), z^1 ... z^{L-1}, then a^L, into buf at the plan's buf_off."""
    cdef int L = p.n_layers, l
    cdef idx ld = p.ld, n_in, n_out, j
    cdef floating *Z
    cdef floating *A
    cdef const floating *Wl
    cdef floating zero = 0
    cdef char cN = b'N', cT = b'T'
    if not p.blas[0]:
        if floating is double:
            fb_load_tile_d(Xt, p.sizes[0], buf, ns, nsp, ld)
        else:
            fb_load_tile_f(Xt, p.sizes[0], buf, ns, nsp, ld)
    for l in range(L):
        n_in = p.sizes[l]
        n_out = p.sizes[l + 1]
        Wl = W + p.coef_off[l]
        Z = buf + p.buf_off[l]
        A = buf + p.buf_off[l + 1]
        if p.blas[l]:
            if l == 0:
                _gemm(cT, cT, <int>ns, <int>n_out, <int>n_in, <floating *>Xt, <int>n_in,
                      <floating *>Wl, <int>n_out, zero, A, <int>ld)
                if nsp > ns:
                    for j in range(n_out):
                        memset(A + j * ld + ns, 0, (nsp - ns) * sizeof(floating))
            else:
                _gemm(cN, cT, <int>nsp, <int>n_out, <int>n_in, Z, <int>ld, <floating *>Wl,
                      <int>n_out, zero, A, <int>ld)
            if floating is double:
                fb_add_bias_d(A, W + p.int_off[l], n_out, nsp, ld)
                if l < L - 1:
                    fb_activate_d(p.act, A, n_out, nsp, ld)
            else:
                fb_add_bias_f(A, W + p.int_off[l], n_out, nsp, ld)
                if l < L - 1:
                    fb_activate_f(p.act, A, n_out, nsp, ld)
        elif floating is double:
            fb_matmul_d(p.wide, Wl, 1, n_out, W + p.int_off[l], Z, n_in, A, n_out, nsp, ld,
                        p.act if l < L - 1 else FB_IDENTITY, NULL)
        else:
            fb_matmul_f(p.wide, Wl, 1, n_out, W + p.int_off[l], Z, n_in, A, n_out, nsp, ld,
                        p.act if l < L - 1 else FB_IDENTITY, NULL)


cdef void _rblock(const Plan *p, const RopLayout *r, const floating *W, const floating *V,
                  idx k, const floating *X, const floating *T, const double *sw, idx s_begin,
                  idx s_end, idx ts, double *acc, bint gn, bint upper, const unsigned char *vflags,
                  char *scratch) noexcept nogil:
    """Add R{∂loss/∂W} (unscaled, no penalty) of samples [s_begin, s_end) along the k
    directions V[d] (rows of n_params) into the rows acc[d] (Gauss-Newton products when gn).
    vflags[d L + l]: 1 when V[d]'s coefficients of layer l are not all zero, + 2 for its
    intercepts."""
    cdef int L = p.n_layers, l, act = p.act, fin_act
    cdef idx ld = p.ld, P = p.n_params, m = p.sizes[L], s0, ns, nsp, n_in, n_out, d, i
    cdef bint x_direct = p.blas[0], last, cross, rz_on, v_on
    cdef int lo
    cdef const unsigned char *fl
    cdef bint has_d2 = (not gn) and (act == FB_LOGISTIC or act == FB_TANH)
    cdef bint flush_each = k > 1  # else G sums the whole block, flushed once (as the gradient)
    cdef floating *zb = <floating *>(scratch + r.z)
    cdef floating *dl = <floating *>(scratch + r.d)
    cdef floating *tb = <floating *>(scratch + r.t)
    cdef floating *rz = <floating *>(scratch + r.rz)
    cdef floating *rd = <floating *>(scratch + r.rd)
    cdef double *work = <double *>(scratch + r.work)
    cdef double *lam = <double *>(scratch + r.lam)
    cdef double *prob = <double *>(scratch + r.prob)
    cdef double *wv = <double *>(scratch + r.w)
    cdef double *small = <double *>(scratch + r.small)
    cdef float *gtmp = <float *>(scratch + r.gtmp)
    cdef floating *DT = <floating *>(scratch + r.dt)
    cdef floating *dtd = <floating *>(scratch + r.dtd)
    cdef double *G = <double *>(scratch + r.g)
    cdef const floating *Xt
    cdef const floating *Wl
    cdef const floating *Vd
    cdef const floating *Vl
    cdef const floating *Vb
    cdef floating *Z
    cdef floating *Zn
    cdef floating *D
    cdef floating *Dp
    cdef floating *Tl
    cdef floating *RD
    cdef floating *RZ
    cdef floating *Out
    cdef double *ad
    cdef double *gW
    cdef double *gb
    cdef floating zero = 0, one = 1
    cdef char cN = b'N', cT = b'T'
    memset(G, 0, p.gacc_len * sizeof(double))
    s0 = s_begin
    while s0 < s_end:
        ns = min(ts, s_end - s0)
        nsp = (ns + FB_LANES - 1) // FB_LANES * FB_LANES
        Xt = X + s0 * p.sizes[0]

        # ---- once per tile: forward, the output's Λ (and δ^L), the ordinary backward pass
        _rop_forward(p, W, Xt, ns, nsp, zb)
        Out = zb + p.buf_off[L]  # a^L
        if floating is double:
            if not gn and L > 1:
                fb_output_tile_d(p.out, Out, m, T + s0 * m, sw + s0 if sw != NULL else NULL,
                                 dl + p.dbuf_off[L], ns, nsp, ld, work)
            fb_rop_lambda_d(p.out, Out, m, T + s0 * m, sw + s0 if sw != NULL else NULL, lam,
                            prob, ns, nsp, ld, wv)
        else:
            if not gn and L > 1:
                fb_output_tile_f(p.out, Out, m, T + s0 * m, sw + s0 if sw != NULL else NULL,
                                 dl + p.dbuf_off[L], ns, nsp, ld, work)
            fb_rop_lambda_f(p.out, Out, m, T + s0 * m, sw + s0 if sw != NULL else NULL, lam,
                            prob, ns, nsp, ld, wv)
        if not gn:
            for l in range(L - 1, 0, -1):
                n_in = p.sizes[l]
                n_out = p.sizes[l + 1]
                Wl = W + p.coef_off[l]
                Z = zb + p.buf_off[l]
                D = dl + p.dbuf_off[l + 1]
                Dp = dl + p.dbuf_off[l]
                Tl = tb + p.dbuf_off[l]
                if has_d2:  # W δ into t's place, then δ = σ' (W δ) and t = g(z) (W δ)
                    if p.blas[l]:
                        _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, D, <int>ld,
                              <floating *>Wl, <int>n_out, zero, Tl, <int>ld)
                    elif floating is double:
                        fb_matmul_d(p.wide, Wl, n_out, 1, NULL, D, n_out, Tl, n_in, nsp, ld,
                                    FB_IDENTITY, NULL)
                    else:
                        fb_matmul_f(p.wide, Wl, n_out, 1, NULL, D, n_out, Tl, n_in, nsp, ld,
                                    FB_IDENTITY, NULL)
                    if floating is double:
                        fb_rop_split_d(act, Z, Tl, Dp, n_in, nsp, ld)
                    else:
                        fb_rop_split_f(act, Z, Tl, Dp, n_in, nsp, ld)
                elif p.blas[l]:
                    _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, D, <int>ld, <floating *>Wl,
                          <int>n_out, zero, Dp, <int>ld)
                    if floating is double:
                        fb_dactivate_d(act, Z, Dp, n_in, nsp, ld)
                    else:
                        fb_dactivate_f(act, Z, Dp, n_in, nsp, ld)
                elif floating is double:
                    fb_matmul_d(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld, act, Z)
                else:
                    fb_matmul_f(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld, act, Z)
                if p.gacc[l]:  # δ^{l+1} sample-major, for R{z^l} δ^{l+1}ᵀ (its sums unused)
                    if floating is double:
                        fb_transpose_tile_d(D, n_out, dtd + r.dtd_off[l], p.npad[l], nsp, ld,
                                            small)
                    else:
                        fb_transpose_tile_f(D, n_out, dtd + r.dtd_off[l], p.npad[l], nsp, ld,
                                            small)

        # ---- per direction: the R-passes on this tile. V[d] is zero below layer lo (so are
        # R{a^l} and R{z^l} for l <= lo) and the terms of V_l are skipped where V_l is zero:
        # the unit vectors of Network.hess touch one layer each
        for d in range(k):
            Vd = V + d * P
            ad = acc + d * P
            fl = vflags + d * L
            lo = 0
            while lo < L and fl[lo] == 0:
                lo += 1
            if lo == L:  # V[d] = 0
                continue
            # forward: R{a^{l+1}} = W_l^T R{z^l} + V_l^T z^l + Vb_l, R{z^{l+1}} = σ' R{a^{l+1}}
            for l in range(lo, L):
                n_in = p.sizes[l]
                n_out = p.sizes[l + 1]
                Wl = W + p.coef_off[l]
                Vl = Vd + p.coef_off[l]
                Vb = Vd + p.int_off[l]
                Z = zb + p.buf_off[l]
                RZ = rz + p.dbuf_off[l]
                Out = rz + p.dbuf_off[l + 1]
                last = l == L - 1
                fin_act = FB_IDENTITY if last else act
                Zn = NULL if last else zb + p.buf_off[l + 1]
                rz_on = l > lo  # R{z^l} != 0
                v_on = fl[l] & 1  # V_l != 0
                if p.blas[l]:
                    if v_on and l == 0 and x_direct:
                        _gemm(cT, cT, <int>ns, <int>n_out, <int>n_in, <floating *>Xt, <int>n_in,
                              <floating *>Vl, <int>n_out, zero, Out, <int>ld)
                        if nsp > ns:
                            for i in range(n_out):
                                memset(Out + i * ld + ns, 0, (nsp - ns) * sizeof(floating))
                    elif v_on:
                        _gemm(cN, cT, <int>nsp, <int>n_out, <int>n_in, Z, <int>ld,
                              <floating *>Vl, <int>n_out, zero, Out, <int>ld)
                    if rz_on:
                        _gemm(cN, cT, <int>nsp, <int>n_out, <int>n_in, RZ, <int>ld,
                              <floating *>Wl, <int>n_out, one if v_on else zero, Out, <int>ld)
                    elif not v_on:
                        for i in range(n_out):
                            memset(Out + i * ld, 0, nsp * sizeof(floating))
                    if floating is double:
                        fb_add_bias_d(Out, Vb, n_out, nsp, ld)
                        if not last:
                            fb_dactivate_d(act, Zn, Out, n_out, nsp, ld)
                    else:
                        fb_add_bias_f(Out, Vb, n_out, nsp, ld)
                        if not last:
                            fb_dactivate_f(act, Zn, Out, n_out, nsp, ld)
                elif rz_on and v_on:
                    if floating is double:
                        fb_rmm_d(p.wide, Wl, Vl, 1, n_out, Vb, RZ, Z, n_in, Out, n_out, nsp, ld,
                                 fin_act, Zn)
                    else:
                        fb_rmm_f(p.wide, Wl, Vl, 1, n_out, Vb, RZ, Z, n_in, Out, n_out, nsp, ld,
                                 fin_act, Zn)
                elif rz_on:  # W_l^T R{z^l} + Vb_l
                    if floating is double:
                        fb_matmul_d(p.wide, Wl, 1, n_out, Vb, RZ, n_in, Out, n_out, nsp, ld,
                                    fin_act, Zn)
                    else:
                        fb_matmul_f(p.wide, Wl, 1, n_out, Vb, RZ, n_in, Out, n_out, nsp, ld,
                                    fin_act, Zn)
                else:  # V_l^T z^l + Vb_l (Vb_l alone: no inputs)
                    if floating is double:
                        fb_matmul_d(p.wide, Vl, 1, n_out, Vb, Z, n_in if v_on else 0, Out, n_out,
                                    nsp, ld, fin_act, Zn)
                    else:
                        fb_matmul_f(p.wide, Vl, 1, n_out, Vb, Z, n_in if v_on else 0, Out, n_out,
                                    nsp, ld, fin_act, Zn)

            # output: R{δ^L} = Λ R{a^L}
            if floating is double:
                fb_rop_curv_d(p.out, lam, prob, m, rz + p.dbuf_off[L], rd + p.dbuf_off[L], nsp,
                              ld)
            else:
                fb_rop_curv_f(p.out, lam, prob, m, rz + p.dbuf_off[L], rd + p.dbuf_off[L], nsp,
                              ld)

            # backward: R{∂W_l} += z^l R{δ^{l+1}}ᵀ + R{z^l} δ^{l+1}ᵀ; then R{δ^l}
            for l in range(L - 1, -1, -1):
                n_in = p.sizes[l]
                n_out = p.sizes[l + 1]
                Wl = W + p.coef_off[l]
                Vl = Vd + p.coef_off[l]
                Z = zb + p.buf_off[l]
                RD = rd + p.dbuf_off[l + 1]
                D = dl + p.dbuf_off[l + 1]
                RZ = rz + p.dbuf_off[l]
                gW = ad + p.coef_off[l]
                gb = ad + p.int_off[l]
                rz_on = l > lo
                cross = rz_on and not gn
                v_on = (fl[l] & 1) and not gn
                if p.blas[l]:
                    if floating is double:
                        if l == 0 and x_direct:
                            _gemm(cT, cT, <int>n_out, <int>n_in, <int>ns, RD, <int>ld, Xt,
                                  <int>n_in, 1.0, gW, <int>n_out)
                        else:
                            _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, RD, <int>ld, Z,
                                  <int>ld, 1.0, gW, <int>n_out)
                        if cross:
                            _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, D, <int>ld, RZ,
                                  <int>ld, 1.0, gW, <int>n_out)
                        fb_bias_grad_tile_d(RD, n_out, gb, nsp, ld)
                    else:  # the tile's products in float32, added into acc in float64
                        if l == 0 and x_direct:
                            _gemm(cT, cT, <int>n_out, <int>n_in, <int>ns, RD, <int>ld,
                                  <float *>Xt, <int>n_in, zero, gtmp, <int>n_out)
                        else:
                            _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, RD, <int>ld, Z,
                                  <int>ld, zero, gtmp, <int>n_out)
                        if cross:
                            _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, D, <int>ld, RZ,
                                  <int>ld, one, gtmp, <int>n_out)
                        for i in range(n_in * n_out):
                            gW[i] += gtmp[i]
                        fb_bias_grad_tile_f(RD, n_out, gb, nsp, ld)
                elif p.gacc[l]:  # both terms into G, sample-major (the bias from the transpose)
                    if floating is double:
                        fb_transpose_tile_d(RD, n_out, DT, p.npad[l], nsp, ld, gb)
                        fb_gacc_d(p.wide, Z, n_in, DT, p.npad[l], G + p.gacc_off[l], nsp, ld)
                        if cross:
                            fb_gacc_d(p.wide, RZ, n_in, dtd + r.dtd_off[l], p.npad[l],
                                      G + p.gacc_off[l], nsp, ld)
                    else:
                        fb_transpose_tile_f(RD, n_out, DT, p.npad[l], nsp, ld, gb)
                        fb_gacc_f(p.wide, Z, n_in, DT, p.npad[l], G + p.gacc_off[l], nsp, ld)
                        if cross:
                            fb_gacc_f(p.wide, RZ, n_in, dtd + r.dtd_off[l], p.npad[l],
                                      G + p.gacc_off[l], nsp, ld)
                    if flush_each:
                        fb_gacc_flush(G + p.gacc_off[l], n_in, n_out, p.npad[l], gW)
                elif floating is double:  # lane sums (R{z^0} = 0: RZ NULL, the first term)
                    fb_rgrad_d(p.wide, Z, RZ if cross else NULL, n_in, RD, D, n_out, gW, gb, nsp,
                               ld)
                else:
                    fb_rgrad_f(p.wide, Z, RZ if cross else NULL, n_in, RD, D, n_out, gW, gb, nsp,
                               ld)
                if l == 0 or (upper and l == lo):  # upper: no layer below V[d]'s first
                    break
                # R{δ^l} = σ'(a^l) (W_l R{δ^{l+1}} + V_l δ^{l+1}) + t^l R{z^l}
                Dp = rd + p.dbuf_off[l]
                Tl = tb + p.dbuf_off[l] if (has_d2 and rz_on) else NULL
                if p.blas[l]:
                    _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, RD, <int>ld, <floating *>Wl,
                          <int>n_out, zero, Dp, <int>ld)
                    if v_on:
                        _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, D, <int>ld,
                              <floating *>Vl, <int>n_out, one, Dp, <int>ld)
                    if floating is double:
                        fb_dactivate_d(act, Z, Dp, n_in, nsp, ld)
                        if Tl != NULL:
                            fb_rop_addmul_d(Dp, Tl, RZ, n_in, nsp, ld)
                    else:
                        fb_dactivate_f(act, Z, Dp, n_in, nsp, ld)
                        if Tl != NULL:
                            fb_rop_addmul_f(Dp, Tl, RZ, n_in, nsp, ld)
                elif v_on:
                    if floating is double:
                        fb_rmm_d(p.wide, Wl, Vl, n_out, 1, NULL, RD, D, n_out, Dp, n_in, nsp, ld,
                                 act, Z)
                    else:
                        fb_rmm_f(p.wide, Wl, Vl, n_out, 1, NULL, RD, D, n_out, Dp, n_in, nsp, ld,
                                 act, Z)
                elif floating is double:  # no V_l term (Gauss-Newton: an ordinary backward pass)
                    fb_matmul_d(p.wide, Wl, n_out, 1, NULL, RD, n_out, Dp, n_in, nsp, ld, act, Z)
                else:
                    fb_matmul_f(p.wide, Wl, n_out, 1, NULL, RD, n_out, Dp, n_in, nsp, ld, act, Z)
                if Tl != NULL and not p.blas[l]:
                    if floating is double:
                        fb_rop_addmul_d(Dp, Tl, RZ, n_in, nsp, ld)
                    else:
                        fb_rop_addmul_f(Dp, Tl, RZ, n_in, nsp, ld)
        s0 += ns
    if not flush_each:
        for l in range(L):
            if p.gacc[l]:
                fb_gacc_flush(G + p.gacc_off[l], p.sizes[l], p.sizes[l + 1], p.npad[l],
                              acc + p.coef_off[l])


cdef void _jblock(const Plan *p, const RopLayout *r, const floating *W, const floating *X,
                  const double *rs, idx s_begin, idx s_end, idx ts, double *out,
                  char *scratch) noexcept nogil:
    """Rows of the output Jacobian of samples [s_begin, s_end): for each output unit j, a
    backward pass from δ^L = rs e_j, each layer's rows written per sample (fb_rop_jac)."""
    cdef int L = p.n_layers, l
    cdef idx ld = p.ld, P = p.n_params, m = p.sizes[L], s0, ns, nsp, n_in, n_out, j, o, s
    cdef bint x_direct = p.blas[0]
    cdef floating *zb = <floating *>(scratch + r.z)
    cdef floating *dl = <floating *>(scratch + r.d)
    cdef double *dcol = <double *>(scratch + r.small)
    cdef const floating *Xt
    cdef const floating *Wl
    cdef floating *Z
    cdef floating *D
    cdef floating *Dp
    cdef double *rows
    cdef floating zero = 0
    cdef char cN = b'N'
    s0 = s_begin
    while s0 < s_end:
        ns = min(ts, s_end - s0)
        nsp = (ns + FB_LANES - 1) // FB_LANES * FB_LANES
        Xt = X + s0 * p.sizes[0]
        _rop_forward(p, W, Xt, ns, nsp, zb)
        for j in range(m):
            D = dl + p.dbuf_off[L]
            for o in range(m):
                for s in range(nsp):
                    D[o * ld + s] = <floating>rs[s0 + s] if (o == j and s < ns) else 0
            rows = out + (s0 * m + j) * P
            for l in range(L - 1, -1, -1):
                n_in = p.sizes[l]
                n_out = p.sizes[l + 1]
                Z = zb + p.buf_off[l]
                if floating is double:
                    if l == 0 and x_direct:
                        fb_rop_jac_d(Xt, 1, n_in, n_in, D, n_out, ld, ns, rows, m * P,
                                     p.coef_off[l], p.int_off[l], dcol)
                    else:
                        fb_rop_jac_d(Z, ld, 1, n_in, D, n_out, ld, ns, rows, m * P,
                                     p.coef_off[l], p.int_off[l], dcol)
                else:
                    if l == 0 and x_direct:
                        fb_rop_jac_f(Xt, 1, n_in, n_in, D, n_out, ld, ns, rows, m * P,
                                     p.coef_off[l], p.int_off[l], dcol)
                    else:
                        fb_rop_jac_f(Z, ld, 1, n_in, D, n_out, ld, ns, rows, m * P,
                                     p.coef_off[l], p.int_off[l], dcol)
                if l == 0:
                    break
                Wl = W + p.coef_off[l]
                Dp = dl + p.dbuf_off[l]
                if p.blas[l]:
                    _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, D, <int>ld, <floating *>Wl,
                          <int>n_out, zero, Dp, <int>ld)
                    if floating is double:
                        fb_dactivate_d(p.act, Z, Dp, n_in, nsp, ld)
                    else:
                        fb_dactivate_f(p.act, Z, Dp, n_in, nsp, ld)
                elif floating is double:
                    fb_matmul_d(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld, p.act, Z)
                else:
                    fb_matmul_f(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld, p.act, Z)
                D = Dp
        s0 += ns


# ------------------------------------------------------------------------------- the threads
cdef struct RopCtx:
    const Plan *p
    const RopLayout *r
    const void *W
    const void *V
    const void *X
    const void *T
    const double *sw
    const double *rs   # output_jacobian: the row scales
    const unsigned char *vflags  # (k, n_layers): which parts of V[d] are nonzero (_rblock)
    idx n, ts, n_tiles, k, tb, astride
    int n_jobs
    bint gn, upper, by_dirs, jac
    double *out        # the result: (k, n_params), or the Jacobian's rows
    char *accs         # job j's accumulator (blocks of samples, j >= 1) at accs + (j - 1) astride
    char *threads      # thread slot t's scratch at threads + t tb


cdef inline void _rop_job(const RopCtx *c, int j, int slot, const floating *W,
                          const floating *V, const floating *X, const floating *T) noexcept nogil:
    """Job j of c: a group of directions over every sample, or a block of samples for every
    direction (its tiles as the gradient's blocks: [j n_tiles / J, (j + 1) n_tiles / J))."""
    cdef idx P = c.p.n_params, d0 = 0, d1 = c.k, sb = 0, se = c.n
    cdef double *acc = c.out
    if c.by_dirs:
        d0 = j * c.k // c.n_jobs
        d1 = (j + 1) * c.k // c.n_jobs
        acc = c.out + d0 * P
    else:
        sb = min(c.n, (j * c.n_tiles // c.n_jobs) * c.ts)
        se = min(c.n, ((j + 1) * c.n_tiles // c.n_jobs) * c.ts)
        if j > 0 and not c.jac:
            acc = <double *>(c.accs + (j - 1) * c.astride)
            memset(acc, 0, c.k * P * sizeof(double))
    if c.jac:
        _jblock(c.p, c.r, W, X, c.rs, sb, se, c.ts, c.out, c.threads + slot * c.tb)
    else:
        _rblock(c.p, c.r, W, V + d0 * P, d1 - d0, X, T, c.sw, sb, se, c.ts, acc, c.gn, c.upper,
                c.vflags + d0 * c.p.n_layers, c.threads + slot * c.tb)


cdef void _rop_task_d(void *ctx, int j, int slot) noexcept nogil:
    cdef const RopCtx *c = <const RopCtx *>ctx
    _rop_job(c, j, slot, <const double *>c.W, <const double *>c.V, <const double *>c.X,
             <const double *>c.T)


cdef void _rop_task_f(void *ctx, int j, int slot) noexcept nogil:
    cdef const RopCtx *c = <const RopCtx *>ctx
    _rop_job(c, j, slot, <const float *>c.W, <const float *>c.V, <const float *>c.X,
             <const float *>c.T)


cdef int _rop_plan_jobs(CythonKernel self, idx n, idx k, RopCtx *c) noexcept:
    """Threads of a call on n samples and k directions (returned) and its jobs (into c)."""
    # work, in samples of the gradient: the base pass about 1, each direction about 2
    cdef idx work = n * (1 + 2 * k)
    cdef idx nt = max(1, min(<idx>self.n_threads, work // self.min_samples_per_thread))
    c.by_dirs = nt > 1 and k >= 2 * nt
    if c.by_dirs:
        c.n_jobs = <int>min(k, BLOCKS_PER_THREAD * nt)
        c.ts = _tile_samples(&self.plan, n, 1)
    else:
        nt = max(1, min(nt, (n + self.min_block - 1) // self.min_block))
        c.n_jobs = 1 if nt == 1 else <int>max(nt, min(BLOCKS_PER_THREAD * nt,
                                                       (n + self.plan.ld - 1) // self.plan.ld))
        c.ts = _tile_samples(&self.plan, n, c.n_jobs)
    c.n_tiles = (n + c.ts - 1) // c.ts
    return <int>nt


cdef char *_rop_scratch(CythonKernel self, idx nbytes, bint *own, char **raw) noexcept:
    """64-byte aligned scratch of nbytes, NULL when out of memory: the kernel's own (kept between
    calls, grown as needed) when no other call holds it (own), else a new allocation (raw, for
    _rop_release to free)."""
    own[0] = fb_try_acquire(&self.rop_busy)
    raw[0] = NULL
    if own[0]:
        if self.rop_bytes < nbytes:
            free(self.rop_raw)
            self.rop_raw = <char *>malloc(nbytes + 64)
            self.rop_bytes = nbytes if self.rop_raw != NULL else 0
        if self.rop_raw == NULL:
            fb_release(&self.rop_busy)
            own[0] = False
            return NULL
        return _align64(self.rop_raw)
    raw[0] = <char *>malloc(nbytes + 64)
    return _align64(raw[0]) if raw[0] != NULL else NULL


cdef inline void _rop_release(CythonKernel self, bint own, char *raw) noexcept:
    if own:
        fb_release(&self.rop_busy)
    free(raw)


cdef object _rop_call(CythonKernel self, W, V, X, T, sample_weight, double scale, double l2,
                      bint gn, bint block, bint upper=False):
    """hessp / gauss_newton_product (block False: V of shape (P,)) and their _block forms;
    upper: each row only from V[d]'s first nonzero layer up (the rest 0: Network.hess)."""
    cdef const Plan *p = &self.plan
    cdef idx n, k, P = p.n_params, n_coef = p.n_coef, i, isz = 4 if self.float32 else 8
    cdef idx w_bytes, v_bytes, f_bytes, a_bytes, nbytes, d
    cdef int l, L = p.n_layers
    cdef unsigned char *flags
    cdef unsigned char bits
    cdef int typenum = cnp.NPY_FLOAT if self.float32 else cnp.NPY_DOUBLE, n_threads, j
    cdef cnp.npy_intp dims[2]
    cdef const double *w
    cdef const double *v
    cdef double *o
    cdef double *ab
    cdef float *Wf
    cdef float *Vf
    cdef char *base
    cdef char *raw
    cdef bint own
    cdef RopLayout lay
    cdef RopCtx c
    cdef fb_fpenv_t env
    if not (_is_c_array(W, cnp.NPY_DOUBLE, 1) and cnp.PyArray_DIM(<cnp.ndarray>W, 0) == P):
        raise ValueError(f"W must be a C-contiguous float64 vector of length {P}")
    if block:
        if not (_is_c_array(V, cnp.NPY_DOUBLE, 2) and cnp.PyArray_DIM(<cnp.ndarray>V, 1) == P
                and cnp.PyArray_DIM(<cnp.ndarray>V, 0) >= 1):
            raise ValueError(f"V must be a C-contiguous float64 (k, {P}) array, k >= 1")
        k = cnp.PyArray_DIM(<cnp.ndarray>V, 0)
    else:
        if not (_is_c_array(V, cnp.NPY_DOUBLE, 1) and cnp.PyArray_DIM(<cnp.ndarray>V, 0) == P):
            raise ValueError(f"V must be a C-contiguous float64 vector of length {P}")
        k = 1
    if not (_is_c_array(X, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>X, 1) == p.sizes[0]):
        raise ValueError("X must be a C-contiguous 2-D array of the kernel's dtype and width")
    n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
    if not (_is_c_array(T, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>T, 0) == n
            and cnp.PyArray_DIM(<cnp.ndarray>T, 1) == p.sizes[p.n_layers]):
        raise ValueError("T must be a C-contiguous (n, n_outputs) array of the kernel's dtype")
    c.sw = NULL
    if sample_weight is not None:
        if not (_is_c_array(sample_weight, cnp.NPY_DOUBLE, 1)
                and cnp.PyArray_DIM(<cnp.ndarray>sample_weight, 0) == n):
            raise ValueError("sample_weight must be None or a C-contiguous float64 (n,) array")
        c.sw = <const double *>cnp.PyArray_DATA(<cnp.ndarray>sample_weight)
    w = <const double *>cnp.PyArray_DATA(<cnp.ndarray>W)
    v = <const double *>cnp.PyArray_DATA(<cnp.ndarray>V)
    dims[0] = k
    dims[1] = P
    if block:
        result = cnp.PyArray_EMPTY(2, dims, cnp.NPY_DOUBLE, 0)
    else:
        result = cnp.PyArray_EMPTY(1, &dims[1], cnp.NPY_DOUBLE, 0)
    o = <double *>cnp.PyArray_DATA(<cnp.ndarray>result)

    _rop_layout(p, isz, &lay)
    n_threads = _rop_plan_jobs(self, n, k, &c)
    w_bytes = _round64(P * sizeof(float)) if self.float32 else 0
    v_bytes = _round64(k * P * sizeof(float)) if self.float32 else 0
    c.astride = _round64(k * P * sizeof(double))
    a_bytes = 0 if c.by_dirs else (c.n_jobs - 1) * c.astride
    f_bytes = _round64(k * L)
    nbytes = w_bytes + v_bytes + f_bytes + a_bytes + n_threads * lay.bytes
    base = _rop_scratch(self, nbytes, &own, &raw)
    if base == NULL:
        raise MemoryError("the cython kernel could not allocate its second-order scratch")
    c.p = p
    c.r = &lay
    c.X = cnp.PyArray_DATA(<cnp.ndarray>X)
    c.T = cnp.PyArray_DATA(<cnp.ndarray>T)
    c.rs = NULL
    c.n = n
    c.k = k
    c.gn = gn
    c.upper = upper
    c.jac = False
    c.out = o
    flags = <unsigned char *>(base + w_bytes + v_bytes)
    c.vflags = flags
    c.accs = base + w_bytes + v_bytes + f_bytes
    c.threads = c.accs + a_bytes
    c.tb = lay.bytes
    with nogil:
        env = fb_flush_begin()  # subnormals flushed on every thread of the call, then restored
        if self.float32:
            Wf = <float *>base
            Vf = <float *>(base + w_bytes)
            for i in range(P):
                Wf[i] = <float>w[i]  # W and V rounded to the compute dtype
            for i in range(k * P):
                Vf[i] = <float>v[i]
            c.W = Wf
            c.V = Vf
        else:
            c.W = w
            c.V = v
        for d in range(k):  # which layers of V[d] are nonzero (as the dtype rounds them)
            for l in range(L):
                bits = 0
                for i in range(p.coef_off[l], p.coef_off[l] + p.sizes[l] * p.sizes[l + 1]):
                    if (<float>v[d * P + i] if self.float32 else v[d * P + i]) != 0:
                        bits = 1
                        break
                for i in range(p.int_off[l], p.int_off[l] + p.sizes[l + 1]):
                    if (<float>v[d * P + i] if self.float32 else v[d * P + i]) != 0:
                        bits |= 2
                        break
                flags[d * L + l] = bits
        memset(o, 0, k * P * sizeof(double))
        fb_pool_run(c.n_jobs, n_threads, _rop_task_f if self.float32 else _rop_task_d, &c)
        if not c.by_dirs:
            for j in range(1, c.n_jobs):  # in job order: bit-identical for a given n_threads
                ab = <double *>(c.accs + (j - 1) * c.astride)
                for i in range(k * P):
                    o[i] += ab[i]
        fb_flush_end(env)
        # H V = scale Σ s_n ∂²ℓ_n/∂W² V + 2 λ V (coefficients only)
        for i in range(k * P):
            o[i] *= scale
        if l2 != 0.0:
            for j in range(k):
                for i in range(n_coef):
                    o[j * P + i] += (2.0 * l2) * v[j * P + i]
    _rop_release(self, own, raw)
    return result


cdef object _jacobian_call(CythonKernel self, W, X, row_scale, out):
    cdef const Plan *p = &self.plan
    cdef idx n, P = p.n_params, m = p.sizes[p.n_layers], i, isz = 4 if self.float32 else 8
    cdef idx w_bytes, nbytes
    cdef int typenum = cnp.NPY_FLOAT if self.float32 else cnp.NPY_DOUBLE, n_threads
    cdef const double *w
    cdef float *Wf
    cdef char *base
    cdef char *raw
    cdef bint own
    cdef RopLayout lay
    cdef RopCtx c
    cdef fb_fpenv_t env
    if not (_is_c_array(W, cnp.NPY_DOUBLE, 1) and cnp.PyArray_DIM(<cnp.ndarray>W, 0) == P):
        raise ValueError(f"W must be a C-contiguous float64 vector of length {P}")
    if not (_is_c_array(X, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>X, 1) == p.sizes[0]):
        raise ValueError("X must be a C-contiguous 2-D array of the kernel's dtype and width")
    n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
    if not (_is_c_array(row_scale, cnp.NPY_DOUBLE, 1)
            and cnp.PyArray_DIM(<cnp.ndarray>row_scale, 0) == n):
        raise ValueError("row_scale must be a C-contiguous float64 (n,) array")
    if not (_is_c_array(out, cnp.NPY_DOUBLE, 2) and cnp.PyArray_DIM(<cnp.ndarray>out, 0) == n * m
            and cnp.PyArray_DIM(<cnp.ndarray>out, 1) == P
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out)):
        raise ValueError(f"out must be a writeable C-contiguous float64 ({n * m}, {P}) array")
    w = <const double *>cnp.PyArray_DATA(<cnp.ndarray>W)
    _rop_layout(p, isz, &lay)
    n_threads = self._n_blocks(n)
    c.by_dirs = False
    c.n_jobs = n_threads if n_threads == 1 else <int>max(n_threads, min(
        BLOCKS_PER_THREAD * n_threads, (n + p.ld - 1) // p.ld))
    c.ts = _tile_samples(p, n, c.n_jobs)
    c.n_tiles = (n + c.ts - 1) // c.ts
    w_bytes = _round64(P * sizeof(float)) if self.float32 else 0
    nbytes = w_bytes + n_threads * lay.bytes
    base = _rop_scratch(self, nbytes, &own, &raw)
    if base == NULL:
        raise MemoryError("the cython kernel could not allocate its second-order scratch")
    c.p = p
    c.r = &lay
    c.X = cnp.PyArray_DATA(<cnp.ndarray>X)
    c.T = NULL
    c.V = NULL
    c.sw = NULL
    c.rs = <const double *>cnp.PyArray_DATA(<cnp.ndarray>row_scale)
    c.n = n
    c.k = 0
    c.gn = False
    c.upper = False
    c.jac = True
    c.out = <double *>cnp.PyArray_DATA(<cnp.ndarray>out)
    c.accs = NULL
    c.vflags = NULL
    c.threads = base + w_bytes
    c.tb = lay.bytes
    with nogil:
        env = fb_flush_begin()
        if self.float32:
            Wf = <float *>base
            for i in range(P):
                Wf[i] = <float>w[i]
            c.W = Wf
        else:
            c.W = w
        fb_pool_run(c.n_jobs, n_threads, _rop_task_f if self.float32 else _rop_task_d, &c)
        fb_flush_end(env)
    _rop_release(self, own, raw)
