/*
 * fb_rop.h: the per-tile loops of the Cython kernel's second order (Pearlmutter's R-operator).
 *
 * The Cython side (_rop.pxi) drives the passes; these are the tile loops the first-order
 * kernel (fb_simd.h) does not already have. Tiles are as there: unit-major, `ld` lanes per
 * unit, `nsp` (a multiple of 8) lanes computed, padding lanes finite and carrying zero deltas.
 * R{x} is the derivative of x along the direction V; in the lab's notation (a^{l+1} = W_l^T z^l
 * + b_l, z = σ(a), δ = ∂ℓ/∂a):
 *
 *   forward   R{a^{l+1}} = W_l^T R{z^l} + V_l^T z^l + Vb_l,     R{z^l} = σ'(a^l) R{a^l}
 *   output    R{δ^L} = s_n Λ R{a^L}                              (fb_rop_lambda, fb_rop_curv)
 *   backward  R{δ^l} = σ'(a^l) (W_l R{δ^{l+1}} + V_l δ^{l+1}) + σ''(a^l) R{a^l} (W_l δ^{l+1})
 *   gradient  R{∂ℓ/∂W_l} = z^l R{δ^{l+1}}^T + R{z^l} δ^{l+1}^T,  R{∂ℓ/∂b_l} = Σ_s R{δ^{l+1}}
 *
 * σ'' is written from z like σ': σ''(a) = σ'(a) g(z) with g = 1 − 2z (logistic), −2z (tanh),
 * 0 (relu, identity), so σ''(a) R{a} (W δ) = t R{z} with t = g(z) (W δ): the kernel keeps R{z}
 * (never R{a}) and t (once per tile, shared by every direction).
 *
 * Every function comes in a double (_d) and a float (_f) version; float computes the output's
 * curvature in double and rounds once, and accumulates sums over samples in double. The AVX-512
 * block of fb_rmm gives the same sums, in the same order, as the portable one.
 */
#ifndef FB_ROP_H
#define FB_ROP_H

#include "fb_simd.h"

#define FB_DEFINE_ROP(T, VT, SFX)                                                                 \
                                                                                                  \
/* a σ'(a), written from z = σ(a) (the arithmetic of fb_fin_st's) */                              \
FB_INLINE VT fb_rdact_##SFX(int act, VT z, VT a)                                                  \
{                                                                                                 \
    if (act == FB_LOGISTIC) return a * (z * ((T)1 - z));                                          \
    if (act == FB_TANH) return a * ((T)1 - z * z);                                                \
    if (act == FB_RELU)                                                                           \
        return fb_narrow_##SFX(fb_sel(fb_wide_##SFX(z) > 0.0, fb_wide_##SFX(a), fb_bc(0.0)));     \
    return a;                                                                                     \
}                                                                                                 \
                                                                                                  \
/* store 8 lanes at Out[off]: a, times σ' from Zd (when given) */                               \
FB_INLINE void fb_rfin_st_##SFX(int act, const T *Zd, T *Out, fb_idx off, VT a)                   \
{                                                                                                 \
    if (Zd) a = fb_rdact_##SFX(act, fb_ld_##SFX(Zd + off), a);                                    \
    fb_st_##SFX(Out + off, a);                                                                    \
}                                                                                                 \
                                                                                                  \
/* Two products of one tile in one pass, for o < n_out, s < nsp:                                 \
 *   Out[o, s] = fin(bias[o] + sum_c (M[o so + c si] R[c, s] + Vm[o so + c si] Z[c, s]))          \
 * (per c: the M term, then the Vm term). Forward (R{a^{l+1}}): M = W_l, Vm = V_l, so = 1,         \
 * si = n_out, R = R{z^l}, Z = z^l, fin = times σ' from Zd = z^{l+1}. Backward (R{δ^l} but its     \
 * σ'' term, fb_rop_addmul's): so = n_out, si = 1, R = R{δ^{l+1}}, Z = δ^{l+1}, bias NULL, fin =    \
 * times σ' from Zd = z^l. Zd and bias may be NULL. 4 outputs x 8 lanes per block. */             \
FB_DISPATCH static void fb_rmm_tile_##SFX(const T *M, const T *Vm, fb_idx so, fb_idx si,          \
                                          const T *bias, const T *R, const T *Z, fb_idx n_in,      \
                                          T *Out, fb_idx n_out, fb_idx nsp, fb_idx ld, int act,    \
                                          const T *Zd)                                             \
{                                                                                                 \
    fb_idx o = 0;                                                                                 \
    for (; o + 4 <= n_out; o += 4) {                                                              \
        T b0 = bias ? bias[o] : 0, b1 = bias ? bias[o + 1] : 0;                                   \
        T b2 = bias ? bias[o + 2] : 0, b3 = bias ? bias[o + 3] : 0;                               \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            const T *m = M + o * so, *v = Vm + o * so;                                            \
            const T *r = R + s, *z = Z + s;                                                       \
            for (fb_idx c = 0; c < n_in; c++, m += si, v += si, r += ld, z += ld) {               \
                VT rc = fb_ld_##SFX(r), zc = fb_ld_##SFX(z);                                      \
                a0 += m[0] * rc; a0 += v[0] * zc;                                                 \
                a1 += m[so] * rc; a1 += v[so] * zc;                                               \
                a2 += m[2 * so] * rc; a2 += v[2 * so] * zc;                                       \
                a3 += m[3 * so] * rc; a3 += v[3 * so] * zc;                                       \
            }                                                                                     \
            fb_rfin_st_##SFX(act, Zd, Out, o * ld + s, a0);                               \
            fb_rfin_st_##SFX(act, Zd, Out, (o + 1) * ld + s, a1);                         \
            fb_rfin_st_##SFX(act, Zd, Out, (o + 2) * ld + s, a2);                         \
            fb_rfin_st_##SFX(act, Zd, Out, (o + 3) * ld + s, a3);                         \
        }                                                                                         \
    }                                                                                             \
    for (; o < n_out; o++) {                                                                      \
        T b0 = bias ? bias[o] : 0;                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT a0 = (VT){0} + b0;                                                                 \
            const T *m = M + o * so, *v = Vm + o * so;                                            \
            for (fb_idx c = 0; c < n_in; c++, m += si, v += si) {                                 \
                a0 += m[0] * fb_ld_##SFX(R + c * ld + s);                                         \
                a0 += v[0] * fb_ld_##SFX(Z + c * ld + s);                                         \
            }                                                                                     \
            fb_rfin_st_##SFX(act, Zd, Out, o * ld + s, a0);                               \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* dW[i*n_out + j] += sum_s Z[i, s] RD[j, s] + RZ[i, s] D[j, s] over the tile (R{∂ℓ/∂W}, both    \
 * terms in the same lane accumulators, in double, then the lanes' fixed-order sum); RZ NULL: the  \
 * first term alone (and D unused). 1 row x 4 columns per register block. */                     \
FB_DISPATCH static void fb_rgrad_rows_##SFX(const T *Z, const T *RZ, fb_idx n_in, const T *RD,    \
                                            const T *D, fb_idx n_out, double *dW, fb_idx nsp,      \
                                            fb_idx ld)                                             \
{                                                                                                 \
    for (fb_idx i = 0; i < n_in; i++) {                                                           \
        const T *z = Z + i * ld, *rz = RZ ? RZ + i * ld : Z;                                      \
        double *g = dW + i * n_out;                                                               \
        fb_idx j = 0;                                                                             \
        for (; j + 4 <= n_out; j += 4) {                                                          \
            const T *rd = RD + j * ld, *d = RZ ? D + j * ld : RD;                                 \
            fb_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                         \
            if (RZ)                                                                               \
                for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                      \
                    fb_vd zs = fb_wide_##SFX(fb_ld_##SFX(z + s));                                 \
                    fb_vd rzs = fb_wide_##SFX(fb_ld_##SFX(rz + s));                               \
                    a0 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + s));                                \
                    a0 += rzs * fb_wide_##SFX(fb_ld_##SFX(d + s));                                \
                    a1 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + ld + s));                           \
                    a1 += rzs * fb_wide_##SFX(fb_ld_##SFX(d + ld + s));                           \
                    a2 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + 2 * ld + s));                       \
                    a2 += rzs * fb_wide_##SFX(fb_ld_##SFX(d + 2 * ld + s));                       \
                    a3 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + 3 * ld + s));                       \
                    a3 += rzs * fb_wide_##SFX(fb_ld_##SFX(d + 3 * ld + s));                       \
                }                                                                                 \
            else                                                                                  \
                for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                      \
                    fb_vd zs = fb_wide_##SFX(fb_ld_##SFX(z + s));                                 \
                    a0 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + s));                                \
                    a1 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + ld + s));                           \
                    a2 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + 2 * ld + s));                       \
                    a3 += zs * fb_wide_##SFX(fb_ld_##SFX(rd + 3 * ld + s));                       \
                }                                                                                 \
            g[j] += fb_hsum(a0);                                                                  \
            g[j + 1] += fb_hsum(a1);                                                              \
            g[j + 2] += fb_hsum(a2);                                                              \
            g[j + 3] += fb_hsum(a3);                                                              \
        }                                                                                         \
        for (; j < n_out; j++) {                                                                  \
            const T *rd = RD + j * ld, *d = RZ ? D + j * ld : RD;                                 \
            fb_vd a0 = {0};                                                                       \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                a0 += fb_wide_##SFX(fb_ld_##SFX(z + s)) * fb_wide_##SFX(fb_ld_##SFX(rd + s));     \
                if (RZ) a0 += fb_wide_##SFX(fb_ld_##SFX(rz + s)) * fb_wide_##SFX(fb_ld_##SFX(d + s));\
            }                                                                                     \
            g[j] += fb_hsum(a0);                                                                  \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* The output's curvature on one tile, for every direction to come: from a^L (A, m units), the  \
 * targets (row-major (ns, m) at Tt) and the sample weights (sw, or NULL: 1), lam[k*ld + s] and,  \
 * for softmax, P[k*ld + s] such that R{δ^L} = lam R{a^L} (identity, logistic, exponential) or    \
 * lam (R{a^L} − Σ_k P_k R{a^L}_k) (softmax): Λ = diag p(1 − p), diag e^a, I, S (diag p − p pᵀ)    \
 * (S = Σ_k t_k), times the sample weight. 0 on padding lanes and, for the exponential output,    \
 * on samples of weight 0 (as its δ: not 0 · inf). In double; w holds ld doubles of scratch. */    \
FB_DISPATCH static void fb_rop_lambda_##SFX(int out, const T *A, fb_idx m, const T *Tt,           \
                                            const double *sw, double *lam, double *P, fb_idx ns,   \
                                            fb_idx nsp, fb_idx ld, double *w)                      \
{                                                                                                 \
    for (fb_idx s = 0; s < ns; s++) w[s] = sw ? sw[s] : 1.0;                                      \
    for (fb_idx s = ns; s < nsp; s++) w[s] = 0.0;                                                 \
    if (out == FB_OUT_SOFTMAX) {                                                                  \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            fb_vd mx = fb_wide_##SFX(fb_ld_##SFX(A + s));                                         \
            for (fb_idx k = 1; k < m; k++) {                                                      \
                fb_vd x = fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s));                             \
                mx = fb_sel(x > mx, x, mx);                                                       \
            }                                                                                     \
            fb_vd sum = {0};                                                                      \
            for (fb_idx k = 0; k < m; k++) {                                                      \
                fb_vd e = fb_vexp(fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s)) - mx);               \
                fb_st_d(P + k * ld + s, e);                                                       \
                sum += e;                                                                         \
            }                                                                                     \
            for (fb_idx k = 0; k < m; k++) fb_st_d(P + k * ld + s, fb_ld_d(P + k * ld + s) / sum);\
        }                                                                                         \
        for (fb_idx s = 0; s < ns; s++) {                                                         \
            double S = 0.0;                                                                       \
            for (fb_idx k = 0; k < m; k++) S += (double)Tt[s * m + k];                            \
            w[s] *= S;                                                                            \
        }                                                                                         \
        for (fb_idx k = 0; k < m; k++)                                                            \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                fb_st_d(lam + k * ld + s, fb_ld_d(w + s) * fb_ld_d(P + k * ld + s));              \
        return;                                                                                   \
    }                                                                                             \
    for (fb_idx k = 0; k < m; k++)                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            fb_vd x = fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s)), ws = fb_ld_d(w + s), l;         \
            if (out == FB_OUT_LOGISTIC) { /* p (1 − p) = e / (1 + e)², e = exp(−|a|) */           \
                fb_vd e = fb_vexp(-(fb_vd)((fb_vl)x & ~(fb_vl)fb_bc(-0.0)));                      \
                l = ws * (e / ((1.0 + e) * (1.0 + e)));                                           \
            } else if (out == FB_OUT_EXPONENTIAL) { /* p = e^a, rounded to T as the δ's */        \
                fb_vd p = fb_vexp(x);                                                             \
                if (sizeof(T) == sizeof(float))                                                   \
                    p = fb_sel(p >= 0x1.ffffffp+127, fb_bc(__builtin_inf()), p);                  \
                p = fb_wide_##SFX(fb_narrow_##SFX(p));                                            \
                l = fb_sel(ws > 0.0, ws * p, fb_bc(0.0));                                         \
            } else {                                                                              \
                l = ws;                                                                           \
            }                                                                                     \
            fb_st_d(lam + k * ld + s, l);                                                         \
        }                                                                                         \
}                                                                                                 \
                                                                                                  \
/* R{δ^L} (RD) from R{a^L} (RA) and fb_rop_lambda's lam, P; m units x nsp lanes */                \
FB_DISPATCH static void fb_rop_curv_##SFX(int out, const double *lam, const double *P, fb_idx m,  \
                                          const T *RA, T *RD, fb_idx nsp, fb_idx ld)               \
{                                                                                                 \
    if (out != FB_OUT_SOFTMAX) {                                                                  \
        for (fb_idx k = 0; k < m; k++)                                                            \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                fb_st_##SFX(RD + k * ld + s, fb_narrow_##SFX(fb_ld_d(lam + k * ld + s)            \
                                                             * fb_wide_##SFX(fb_ld_##SFX(RA + k * ld + s))));\
        return;                                                                                   \
    }                                                                                             \
    for (fb_idx s = 0; s < nsp; s += FB_LANES) { /* lam (R{a} - p . R{a}) */                      \
        fb_vd dot = fb_ld_d(P + s) * fb_wide_##SFX(fb_ld_##SFX(RA + s));                          \
        for (fb_idx k = 1; k < m; k++)                                                            \
            dot += fb_ld_d(P + k * ld + s) * fb_wide_##SFX(fb_ld_##SFX(RA + k * ld + s));         \
        for (fb_idx k = 0; k < m; k++)                                                            \
            fb_st_##SFX(RD + k * ld + s,                                                          \
                        fb_narrow_##SFX(fb_ld_d(lam + k * ld + s)                                 \
                                        * (fb_wide_##SFX(fb_ld_##SFX(RA + k * ld + s)) - dot)));  \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* from Dp = W_l δ^{l+1} (n units x nsp lanes): D = σ'(a) Dp and, in place of Dp, t = g(z) Dp    \
 * (logistic and tanh only: the factor of R{z} in σ''(a) R{a} (W δ)) */                           \
FB_DISPATCH static void fb_rop_split_##SFX(int act, const T *Z, T *Dp, T *D, fb_idx n,           \
                                           fb_idx nsp, fb_idx ld)                                  \
{                                                                                                 \
    for (fb_idx j = 0; j < n; j++)                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT z = fb_ld_##SFX(Z + j * ld + s), dp = fb_ld_##SFX(Dp + j * ld + s);                \
            fb_st_##SFX(D + j * ld + s, fb_rdact_##SFX(act, z, dp));                              \
            VT g = act == FB_LOGISTIC ? (T)1 - (T)2 * z : (T)-2 * z;                              \
            fb_st_##SFX(Dp + j * ld + s, g * dp);                                                 \
        }                                                                                         \
}                                                                                                 \
                                                                                                  \
/* Out += A B over n units x nsp lanes: R{δ^l} += t^l R{z^l}, the σ'' term (a pass of its own, so \
 * that every kernel path rounds it alike) */                                                     \
FB_DISPATCH static void fb_rop_addmul_##SFX(T *Out, const T *A, const T *B, fb_idx n, fb_idx nsp, \
                                            fb_idx ld)                                             \
{                                                                                                 \
    for (fb_idx j = 0; j < n; j++)                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES)                                                \
            fb_st_##SFX(Out + j * ld + s, fb_ld_##SFX(Out + j * ld + s)                           \
                                          + fb_ld_##SFX(A + j * ld + s) * fb_ld_##SFX(B + j * ld + s));\
}                                                                                                 \
                                                                                                  \
/* Rows of the output Jacobian for one layer: for each of the ns samples s, row s (at rows +      \
 * s row_stride) gets z_c δ_o (in double) at coef_off + c n_out + o and δ_o at int_off + o, with   \
 * z_c = Z[c zc + s zs] (a tile: zc = ld, zs = 1; rows of X: zc = 1, zs = n_in) and δ_o = D[o ld   \
 * + s]. dcol: n_out doubles of scratch. */                                                       \
FB_DISPATCH static void fb_rop_jac_##SFX(const T *Z, fb_idx zc, fb_idx zs, fb_idx n_in,           \
                                         const T *D, fb_idx n_out, fb_idx ld, fb_idx ns,           \
                                         double *rows, fb_idx row_stride, fb_idx coef_off,         \
                                         fb_idx int_off, double *dcol)                             \
{                                                                                                 \
    for (fb_idx s = 0; s < ns; s++) {                                                             \
        double *row = rows + s * row_stride;                                                      \
        for (fb_idx o = 0; o < n_out; o++) dcol[o] = (double)D[o * ld + s];                       \
        memcpy(row + int_off, dcol, (size_t)n_out * sizeof(double));                              \
        for (fb_idx c = 0; c < n_in; c++) {                                                       \
            double zv = (double)Z[c * zc + s * zs];                                               \
            double *r = row + coef_off + c * n_out;                                               \
            for (fb_idx o = 0; o < n_out; o++) r[o] = zv * dcol[o];                               \
        }                                                                                         \
    }                                                                                             \
}

FB_DEFINE_ROP(double, fb_vd, d)
FB_DEFINE_ROP(float, fb_vf, f)

/* AVX-512 variant of fb_rmm_tile: register blocks of 8 outputs x 16 lanes (16 accumulators), their
 * 8-lane tails as 8 x 8, then 4 x 16 and 4 x 8, then single outputs over 32 and 8 lanes; the same
 * sums in the same order as fb_rmm_tile, so the same bits. FB_RMM_BLOCK(NO, NL): NO outputs from
 * o, NL vectors of lanes from s (the loops over q and u are unrolled by the compiler). */
#define FB_RMM_BLOCK(T, VT, SFX, NO, NL)                                                          \
    do {                                                                                          \
        VT acc[NO][NL];                                                                           \
        for (int q = 0; q < NO; q++)                                                              \
            for (int u = 0; u < NL; u++) acc[q][u] = (VT){0} + (bias ? bias[o + q] : (T)0);       \
        const T *m = M + o * so, *v = Vm + o * so, *r = R + s, *z = Z + s;                        \
        for (fb_idx c = 0; c < n_in; c++, m += si, v += si, r += ld, z += ld) {                   \
            VT rv[NL], zv[NL];                                                                    \
            for (int u = 0; u < NL; u++) {                                                        \
                rv[u] = fb_ld_##SFX(r + u * FB_LANES);                                            \
                zv[u] = fb_ld_##SFX(z + u * FB_LANES);                                            \
            }                                                                                     \
            for (int q = 0; q < NO; q++) {                                                        \
                T mq = m[q * so], vq = v[q * so];                                                 \
                for (int u = 0; u < NL; u++) {                                                    \
                    acc[q][u] += mq * rv[u];                                                      \
                    acc[q][u] += vq * zv[u];                                                      \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
        for (int q = 0; q < NO; q++)                                                              \
            for (int u = 0; u < NL; u++)                                                          \
                fb_rfin_st_##SFX(act, Zd, Out, (o + q) * ld + s + u * FB_LANES, acc[q][u]);\
    } while (0)

#define FB_DEFINE_RMM_WIDE(T, VT, SFX)                                                            \
FB_V4 static void fb_rmm16_##SFX(const T *M, const T *Vm, fb_idx so, fb_idx si, const T *bias,   \
                                 const T *R, const T *Z, fb_idx n_in, T *Out, fb_idx n_out,        \
                                 fb_idx nsp, fb_idx ld, int act, const T *Zd)                      \
{                                                                                                 \
    fb_idx o = 0, s;                                                                              \
    for (; o + 8 <= n_out; o += 8) {                                                              \
        for (s = 0; s + 2 * FB_LANES <= nsp; s += 2 * FB_LANES) FB_RMM_BLOCK(T, VT, SFX, 8, 2);  \
        if (s < nsp) FB_RMM_BLOCK(T, VT, SFX, 8, 1);                                              \
    }                                                                                             \
    for (; o + 4 <= n_out; o += 4) {                                                              \
        for (s = 0; s + 2 * FB_LANES <= nsp; s += 2 * FB_LANES) FB_RMM_BLOCK(T, VT, SFX, 4, 2);  \
        if (s < nsp) FB_RMM_BLOCK(T, VT, SFX, 4, 1);                                              \
    }                                                                                             \
    for (; o < n_out; o++) {                                                                      \
        for (s = 0; s + 4 * FB_LANES <= nsp; s += 4 * FB_LANES) FB_RMM_BLOCK(T, VT, SFX, 1, 4);  \
        for (; s < nsp; s += FB_LANES) FB_RMM_BLOCK(T, VT, SFX, 1, 1);                            \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
static void fb_rmm_##SFX(int wide, const T *M, const T *Vm, fb_idx so, fb_idx si, const T *bias,  \
                         const T *R, const T *Z, fb_idx n_in, T *Out, fb_idx n_out, fb_idx nsp,    \
                         fb_idx ld, int act, const T *Zd)                                          \
{                                                                                                 \
    if (FB_WIDE && wide)                                                                          \
        fb_rmm16_##SFX(M, Vm, so, si, bias, R, Z, n_in, Out, n_out, nsp, ld, act, Zd);            \
    else fb_rmm_tile_##SFX(M, Vm, so, si, bias, R, Z, n_in, Out, n_out, nsp, ld, act, Zd);        \
}

FB_DEFINE_RMM_WIDE(double, fb_vd, d)
FB_DEFINE_RMM_WIDE(float, fb_vf, f)

/* AVX-512 variant of fb_rgrad_rows: 2 rows x 4 columns per register block (8 accumulators, so
 * the multiply-adds of one accumulator do not wait on each other), then 2 x 1, then the last
 * row by fb_rgrad_rows: the same sums per weight in the same order */
#define FB_DEFINE_RGRAD_WIDE(T, VT, SFX)                                                          \
FB_V4 static void fb_rgrad16_##SFX(const T *Z, const T *RZ, fb_idx n_in, const T *RD,            \
                                   const T *D, fb_idx n_out, double *dW, fb_idx nsp, fb_idx ld)   \
{                                                                                                 \
    fb_idx i = 0;                                                                                 \
    for (; i + 2 <= n_in; i += 2) {                                                               \
        const T *z0 = Z + i * ld, *z1 = z0 + ld;                                                  \
        const T *r0 = RZ ? RZ + i * ld : Z, *r1 = r0 + ld;                                        \
        double *g0 = dW + i * n_out, *g1 = g0 + n_out;                                            \
        fb_idx j = 0;                                                                             \
        for (; j + 4 <= n_out; j += 4) {                                                          \
            const T *rd = RD + j * ld, *d = RZ ? D + j * ld : RD;                                 \
            fb_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};   \
            if (RZ)                                                                               \
                for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                      \
                    fb_vd x0 = fb_wide_##SFX(fb_ld_##SFX(z0 + s));                                \
                    fb_vd x1 = fb_wide_##SFX(fb_ld_##SFX(z1 + s));                                \
                    fb_vd y0 = fb_wide_##SFX(fb_ld_##SFX(r0 + s));                                \
                    fb_vd y1 = fb_wide_##SFX(fb_ld_##SFX(r1 + s));                                \
                    fb_vd e0 = fb_wide_##SFX(fb_ld_##SFX(rd + s));                                \
                    fb_vd e1 = fb_wide_##SFX(fb_ld_##SFX(rd + ld + s));                           \
                    fb_vd e2 = fb_wide_##SFX(fb_ld_##SFX(rd + 2 * ld + s));                       \
                    fb_vd e3 = fb_wide_##SFX(fb_ld_##SFX(rd + 3 * ld + s));                       \
                    fb_vd f0 = fb_wide_##SFX(fb_ld_##SFX(d + s));                                 \
                    fb_vd f1 = fb_wide_##SFX(fb_ld_##SFX(d + ld + s));                            \
                    fb_vd f2 = fb_wide_##SFX(fb_ld_##SFX(d + 2 * ld + s));                        \
                    fb_vd f3 = fb_wide_##SFX(fb_ld_##SFX(d + 3 * ld + s));                        \
                    a0 += x0 * e0; a0 += y0 * f0; b0 += x1 * e0; b0 += y1 * f0;                   \
                    a1 += x0 * e1; a1 += y0 * f1; b1 += x1 * e1; b1 += y1 * f1;                   \
                    a2 += x0 * e2; a2 += y0 * f2; b2 += x1 * e2; b2 += y1 * f2;                   \
                    a3 += x0 * e3; a3 += y0 * f3; b3 += x1 * e3; b3 += y1 * f3;                   \
                }                                                                                 \
            else                                                                                  \
                for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                      \
                    fb_vd x0 = fb_wide_##SFX(fb_ld_##SFX(z0 + s));                                \
                    fb_vd x1 = fb_wide_##SFX(fb_ld_##SFX(z1 + s));                                \
                    fb_vd e0 = fb_wide_##SFX(fb_ld_##SFX(rd + s));                                \
                    fb_vd e1 = fb_wide_##SFX(fb_ld_##SFX(rd + ld + s));                           \
                    fb_vd e2 = fb_wide_##SFX(fb_ld_##SFX(rd + 2 * ld + s));                       \
                    fb_vd e3 = fb_wide_##SFX(fb_ld_##SFX(rd + 3 * ld + s));                       \
                    a0 += x0 * e0; b0 += x1 * e0;                                                 \
                    a1 += x0 * e1; b1 += x1 * e1;                                                 \
                    a2 += x0 * e2; b2 += x1 * e2;                                                 \
                    a3 += x0 * e3; b3 += x1 * e3;                                                 \
                }                                                                                 \
            g0[j] += fb_hsum(a0); g0[j + 1] += fb_hsum(a1);                                       \
            g0[j + 2] += fb_hsum(a2); g0[j + 3] += fb_hsum(a3);                                   \
            g1[j] += fb_hsum(b0); g1[j + 1] += fb_hsum(b1);                                       \
            g1[j + 2] += fb_hsum(b2); g1[j + 3] += fb_hsum(b3);                                   \
        }                                                                                         \
        for (; j < n_out; j++) {                                                                  \
            const T *rd = RD + j * ld, *d = RZ ? D + j * ld : RD;                                 \
            fb_vd a0 = {0}, b0 = {0};                                                             \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd e0 = fb_wide_##SFX(fb_ld_##SFX(rd + s));                                    \
                a0 += fb_wide_##SFX(fb_ld_##SFX(z0 + s)) * e0;                                    \
                if (RZ) a0 += fb_wide_##SFX(fb_ld_##SFX(r0 + s)) * fb_wide_##SFX(fb_ld_##SFX(d + s));\
                b0 += fb_wide_##SFX(fb_ld_##SFX(z1 + s)) * e0;                                    \
                if (RZ) b0 += fb_wide_##SFX(fb_ld_##SFX(r1 + s)) * fb_wide_##SFX(fb_ld_##SFX(d + s));\
            }                                                                                     \
            g0[j] += fb_hsum(a0);                                                                 \
            g1[j] += fb_hsum(b0);                                                                 \
        }                                                                                         \
    }                                                                                             \
    if (i < n_in)                                                                                 \
        fb_rgrad_rows_##SFX(Z + i * ld, RZ ? RZ + i * ld : RZ, n_in - i, RD, D, n_out,            \
                            dW + i * n_out, nsp, ld);                                             \
}                                                                                                 \
                                                                                                  \
/* R{∂ℓ/∂W_l} of one tile (fb_rgrad_rows) and R{∂ℓ/∂b_l} += sum_s RD[j, s] */                     \
static void fb_rgrad_##SFX(int wide, const T *Z, const T *RZ, fb_idx n_in, const T *RD,           \
                           const T *D, fb_idx n_out, double *dW, double *db, fb_idx nsp,          \
                           fb_idx ld)                                                             \
{                                                                                                 \
    if (FB_WIDE && wide) fb_rgrad16_##SFX(Z, RZ, n_in, RD, D, n_out, dW, nsp, ld);                \
    else fb_rgrad_rows_##SFX(Z, RZ, n_in, RD, D, n_out, dW, nsp, ld);                             \
    fb_bias_grad_tile_##SFX(RD, n_out, db, nsp, ld);                                              \
}

FB_DEFINE_RGRAD_WIDE(double, fb_vd, d)
FB_DEFINE_RGRAD_WIDE(float, fb_vf, f)

#endif /* FB_ROP_H */
