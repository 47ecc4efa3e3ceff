/*
 * fb_simd.h: the vector loops of fastbp's Cython kernel, written so that gcc -O3 vectorizes them.
 *
 * The Cython module (_cython_kernels.pyx) drives the algorithm: tiles of samples, threads,
 * BLAS calls, the order of the layers. The loops below are the per-tile arithmetic. They live in
 * C so that they can be compiled several times for different instruction sets and picked at
 * run time (gcc's target_clones): the wheel assumes nothing about the build machine's CPU.
 *
 * Storage: a tile holds `ld` lanes (samples) per unit, unit-major ("feature-major"): the value
 * of unit j for lane s is P[j * ld + s], so every inner loop runs over contiguous samples.
 * `nsp` (a multiple of 8) lanes are computed; the lanes past the real samples carry zero deltas,
 * so they add exactly nothing to any gradient.
 *
 * Transcendentals: exp and expm1 by range reduction (x = k ln2 + r, |r| <= ln2/2) and a
 * degree-13 Taylor polynomial; log1p on [0, 1] by 2 atanh(e / (2 + e)). All are branch free
 * (ternaries become blends), accurate to a few units in the last place, and keep NaN and
 * infinity semantics: no -ffast-math anywhere.
 *
 * Every function comes in a double (_d) and a float (_f) version from one macro body. float
 * computes its transcendentals in double and rounds once, and accumulates gradients in double.
 */
#ifndef FB_SIMD_H
#define FB_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FB_NO_DISPATCH)
/* one clone per instruction set, chosen once by the dynamic loader (ifunc) */
#define FB_DISPATCH __attribute__((target_clones("arch=x86-64-v3", "fma", "default")))
#else
#define FB_DISPATCH
#endif

#define FB_LANES 8 /* tiles are padded to a multiple of this many lanes */

typedef ptrdiff_t fb_idx;

/* ------------------------------------------------------------------------ scalar building blocks */

static inline double fb_as_double(int64_t i) { double d; memcpy(&d, &i, 8); return d; }
static inline int64_t fb_as_int(double d) { int64_t i; memcpy(&i, &d, 8); return i; }

/* 2^k for an integral double k in [-1022, 1023], built from the exponent bits. Adding
 * 0x1.8p52 puts k in the low mantissa bits; subtracting the shifter's bits recovers it as int64. */
static inline double fb_pow2i(double k)
{
    const double shifter = 6755399441055744.0; /* 0x1.8p52 */
    int64_t ki = fb_as_int(k + shifter) - fb_as_int(shifter);
    return fb_as_double((ki + 1023) << 52);
}

/* exp(r) - 1 for |r| <= ln2/2: r + r^2 (1/2! + r/3! + ... + r^11/13!), truncation < 1e-17 */
static inline double fb_expm1_small(double r)
{
    double p = 1.0 / 6227020800.0;     /* 1/13! */
    p = p * r + 1.0 / 479001600.0;     /* 1/12! */
    p = p * r + 1.0 / 39916800.0;      /* 1/11! */
    p = p * r + 1.0 / 3628800.0;       /* 1/10! */
    p = p * r + 1.0 / 362880.0;        /* 1/9! */
    p = p * r + 1.0 / 40320.0;         /* 1/8! */
    p = p * r + 1.0 / 5040.0;          /* 1/7! */
    p = p * r + 1.0 / 720.0;           /* 1/6! */
    p = p * r + 1.0 / 120.0;           /* 1/5! */
    p = p * r + 1.0 / 24.0;            /* 1/4! */
    p = p * r + 1.0 / 6.0;             /* 1/3! */
    p = p * r + 0.5;                   /* 1/2! */
    return r + (r * r) * p;
}

/* Range reduction x = k ln2 + r. k is split in two halves k1 + k2 so that 2^k1 2^k2 reaches
 * both overflow (x > 709.78 gives inf) and gradual underflow (subnormals, then 0). */
#define FB_LN2_HI 6.93147180369123816490e-01 /* ln2 with trailing zero bits: k * LN2_HI is exact */
#define FB_LN2_LO 1.90821492927058770002e-10
#define FB_LOG2E 1.44269504088896338700e+00

static inline double fb_exp(double x)
{
    const double shifter = 6755399441055744.0;
    double xc = x > 710.0 ? 710.0 : (x < -746.0 ? -746.0 : x); /* NaN passes through */
    double k = (xc * FB_LOG2E + shifter) - shifter;             /* round to nearest */
    double r = (xc - k * FB_LN2_HI) - k * FB_LN2_LO;
    double k1 = (k * 0.5 + shifter) - shifter;
    double k2 = k - k1;
    return ((1.0 + fb_expm1_small(r)) * fb_pow2i(k1)) * fb_pow2i(k2);
}

/* expm1(x) for x <= 0 (all the kernel needs: tanh): 2^k expm1(r) + (2^k - 1), exact when k = 0 */
static inline double fb_expm1_neg(double x)
{
    const double shifter = 6755399441055744.0;
    double xc = x < -60.0 ? -60.0 : x; /* expm1(-60) = -1 to double precision */
    double k = (xc * FB_LOG2E + shifter) - shifter;
    double r = (xc - k * FB_LN2_HI) - k * FB_LN2_LO;
    double s = fb_pow2i(k);
    return s * fb_expm1_small(r) + (s - 1.0);
}

/* tanh(x) = sign(x) * (-m) / (2 + m), m = expm1(-2|x|): no cancellation near 0 */
static inline double fb_tanh(double x)
{
    double m = fb_expm1_neg(-2.0 * fabs(x));
    double t = -m / (2.0 + m);
    return x < 0.0 ? -t : t;
}

/* 1 / (1 + exp(-x)): relative accuracy on both tails, 0 and 1 at the extremes */
static inline double fb_logistic(double x) { return 1.0 / (1.0 + fb_exp(-x)); }

/* log1p(e) for e in [0, 1]: 2 atanh(f), f = e / (2 + e) in [0, 1/3]; 18 odd terms, < 1e-17 */
static inline double fb_log1p_unit(double e)
{
    double f = e / (2.0 + e);
    double f2 = f * f;
    double p = 1.0 / 35.0;
    p = p * f2 + 1.0 / 33.0;
    p = p * f2 + 1.0 / 31.0;
    p = p * f2 + 1.0 / 29.0;
    p = p * f2 + 1.0 / 27.0;
    p = p * f2 + 1.0 / 25.0;
    p = p * f2 + 1.0 / 23.0;
    p = p * f2 + 1.0 / 21.0;
    p = p * f2 + 1.0 / 19.0;
    p = p * f2 + 1.0 / 17.0;
    p = p * f2 + 1.0 / 15.0;
    p = p * f2 + 1.0 / 13.0;
    p = p * f2 + 1.0 / 11.0;
    p = p * f2 + 1.0 / 9.0;
    p = p * f2 + 1.0 / 7.0;
    p = p * f2 + 1.0 / 5.0;
    p = p * f2 + 1.0 / 3.0;
    return 2.0 * (f + f * (f2 * p));
}

/* Hidden activation codes, as fastbp.layout.ACTIVATIONS orders them */
enum { FB_IDENTITY = 0, FB_LOGISTIC = 1, FB_TANH = 2, FB_RELU = 3 };
/* Output codes, as fastbp.layout.OUTPUTS orders them */
enum { FB_OUT_IDENTITY = 0, FB_OUT_LOGISTIC = 1, FB_OUT_SOFTMAX = 2 };

/* ------------------------------------------------------------------ the per-tile loops, per dtype */
#define FB_DEFINE(T, SFX)                                                                         \
                                                                                                  \
/* Aout[o, s] = bias[o] + sum_c M[o*so + c*si] * Zin[c, s] for o < n_out, s < nsp.                \
 * Forward (a^{l+1} = W^T z^l + b): so = 1, si = n_out. Backward (W delta): so = n_out, si = 1,  \
 * bias NULL. Register blocked: 4 outputs x 8 lanes of accumulators over the inputs c. */         \
FB_DISPATCH static void fb_matmul_tile_##SFX(const T *M, fb_idx so, fb_idx si, const T *bias,     \
                                             const T *Zin, fb_idx n_in, T *Aout, fb_idx n_out,    \
                                             fb_idx nsp, fb_idx ld)                               \
{                                                                                                 \
    for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                                  \
        fb_idx o = 0;                                                                             \
        for (; o + 4 <= n_out; o += 4) {                                                          \
            T acc[4][FB_LANES];                                                                   \
            for (int q = 0; q < 4; q++)                                                           \
                for (int k = 0; k < FB_LANES; k++) acc[q][k] = bias ? bias[o + q] : (T)0;         \
            for (fb_idx c = 0; c < n_in; c++) {                                                   \
                const T *z = Zin + c * ld + s;                                                    \
                const T *m = M + o * so + c * si;                                                 \
                T w0 = m[0], w1 = m[so], w2 = m[2 * so], w3 = m[3 * so];                          \
                for (int k = 0; k < FB_LANES; k++) {                                              \
                    acc[0][k] += w0 * z[k];                                                       \
                    acc[1][k] += w1 * z[k];                                                       \
                    acc[2][k] += w2 * z[k];                                                       \
                    acc[3][k] += w3 * z[k];                                                       \
                }                                                                                 \
            }                                                                                     \
            for (int q = 0; q < 4; q++)                                                           \
                for (int k = 0; k < FB_LANES; k++) Aout[(o + q) * ld + s + k] = acc[q][k];        \
        }                                                                                         \
        for (; o < n_out; o++) {                                                                  \
            T acc[FB_LANES];                                                                      \
            for (int k = 0; k < FB_LANES; k++) acc[k] = bias ? bias[o] : (T)0;                    \
            for (fb_idx c = 0; c < n_in; c++) {                                                   \
                const T *z = Zin + c * ld + s;                                                    \
                T w = M[o * so + c * si];                                                         \
                for (int k = 0; k < FB_LANES; k++) acc[k] += w * z[k];                            \
            }                                                                                     \
            for (int k = 0; k < FB_LANES; k++) Aout[o * ld + s + k] = acc[k];                     \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* dW[i*n_out + j] += sum_s Z[i, s] D[j, s] and db[j] += sum_s D[j, s] over nsp lanes, in double:  \
 * dL/dw_ij = delta_j z_i summed over the tile. 8 lane accumulators, summed in a fixed order. */   \
FB_DISPATCH static void fb_grad_tile_##SFX(const T *Z, fb_idx n_in, const T *D, fb_idx n_out,     \
                                           double *dW, double *db, fb_idx nsp, fb_idx ld)         \
{                                                                                                 \
    for (fb_idx i = 0; i < n_in; i++) {                                                           \
        const T *z = Z + i * ld;                                                                  \
        fb_idx j = 0;                                                                             \
        for (; j + 2 <= n_out; j += 2) {                                                          \
            const T *d0 = D + j * ld, *d1 = d0 + ld;                                              \
            double a0[FB_LANES] = {0}, a1[FB_LANES] = {0};                                        \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                for (int k = 0; k < FB_LANES; k++) {                                              \
                    double zk = (double)z[s + k];                                                 \
                    a0[k] += zk * (double)d0[s + k];                                              \
                    a1[k] += zk * (double)d1[s + k];                                              \
                }                                                                                 \
            dW[i * n_out + j] += ((a0[0] + a0[1]) + (a0[2] + a0[3])) +                            \
                                 ((a0[4] + a0[5]) + (a0[6] + a0[7]));                             \
            dW[i * n_out + j + 1] += ((a1[0] + a1[1]) + (a1[2] + a1[3])) +                        \
                                     ((a1[4] + a1[5]) + (a1[6] + a1[7]));                         \
        }                                                                                         \
        for (; j < n_out; j++) {                                                                  \
            const T *d0 = D + j * ld;                                                             \
            double a0[FB_LANES] = {0};                                                            \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                for (int k = 0; k < FB_LANES; k++) a0[k] += (double)z[s + k] * (double)d0[s + k]; \
            dW[i * n_out + j] += ((a0[0] + a0[1]) + (a0[2] + a0[3])) +                            \
                                 ((a0[4] + a0[5]) + (a0[6] + a0[7]));                             \
        }                                                                                         \
    }                                                                                             \
    fb_bias_grad_tile_##SFX(D, n_out, db, nsp, ld);                                               \
}                                                                                                 \
                                                                                                  \
/* the bias part alone (used after BLAS computed the weight part) */                              \
FB_DISPATCH static void fb_bias_grad_tile_##SFX(const T *D, fb_idx n_out, double *db, fb_idx nsp, \
                                                fb_idx ld)                                        \
{                                                                                                 \
    for (fb_idx j = 0; j < n_out; j++) {                                                          \
        const T *d0 = D + j * ld;                                                                 \
        double a0[FB_LANES] = {0};                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES)                                                \
            for (int k = 0; k < FB_LANES; k++) a0[k] += (double)d0[s + k];                        \
        db[j] += ((a0[0] + a0[1]) + (a0[2] + a0[3])) + ((a0[4] + a0[5]) + (a0[6] + a0[7]));        \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* z = sigma(a) in place over n units x nsp lanes (rows ld apart) */                              \
FB_DISPATCH static void fb_activate_##SFX(int act, T *A, fb_idx n, fb_idx nsp, fb_idx ld)         \
{                                                                                                 \
    for (fb_idx j = 0; j < n; j++) {                                                              \
        T *a = A + j * ld;                                                                        \
        if (act == FB_LOGISTIC)                                                                   \
            for (fb_idx s = 0; s < nsp; s++) a[s] = (T)fb_logistic((double)a[s]);                 \
        else if (act == FB_TANH)                                                                  \
            for (fb_idx s = 0; s < nsp; s++) a[s] = (T)fb_tanh((double)a[s]);                     \
        else if (act == FB_RELU)                                                                  \
            for (fb_idx s = 0; s < nsp; s++) a[s] = a[s] > (T)0 ? a[s] : (T)0;                    \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* delta *= sigma'(a), written from z = sigma(a), over n units x nsp lanes */                     \
FB_DISPATCH static void fb_dactivate_##SFX(int act, const T *Z, T *D, fb_idx n, fb_idx nsp,       \
                                           fb_idx ld)                                             \
{                                                                                                 \
    for (fb_idx j = 0; j < n; j++) {                                                              \
        const T *z = Z + j * ld;                                                                  \
        T *d = D + j * ld;                                                                        \
        if (act == FB_LOGISTIC)                                                                   \
            for (fb_idx s = 0; s < nsp; s++) d[s] *= z[s] * ((T)1 - z[s]);                        \
        else if (act == FB_TANH)                                                                  \
            for (fb_idx s = 0; s < nsp; s++) d[s] *= (T)1 - z[s] * z[s];                          \
        else if (act == FB_RELU)                                                                  \
            for (fb_idx s = 0; s < nsp; s++) d[s] = z[s] > (T)0 ? d[s] : (T)0;                    \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* The output layer of one tile: from a^L (A, m units x ld lanes) and the targets (row-major     \
 * (ns, m) at Tt, ns real lanes) write delta = dl/da (times the sample weight) into D, zero on   \
 * the padding lanes, and return sum_s w_s l_s in double. `work` holds 3 * ld doubles. Cross-   \
 * entropies come from a (softplus, log-sum-exp), so large |a| stays finite. */                   \
FB_DISPATCH static double fb_output_tile_##SFX(int out, const T *A, fb_idx m, const T *Tt,         \
                                               const double *sw, T *D, fb_idx ns, fb_idx nsp,     \
                                               fb_idx ld, double *work)                           \
{                                                                                                 \
    double *ls = work, *u = work + ld, *v = work + 2 * ld;                                        \
    for (fb_idx s = 0; s < nsp; s++) ls[s] = 0.0;                                                 \
    if (out == FB_OUT_LOGISTIC) {                                                                 \
        for (fb_idx k = 0; k < m; k++) {                                                          \
            const T *a = A + k * ld;                                                              \
            T *d = D + k * ld;                                                                    \
            for (fb_idx s = 0; s < ns; s++) {                                                     \
                double x = (double)a[s], t = (double)Tt[s * m + k];                               \
                double e = fb_exp(-fabs(x));          /* in (0, 1] */                             \
                double p = x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e); /* sigma(a) */             \
                /* l = softplus(a) - t a, softplus(a) = max(a, 0) + log1p(exp(-|a|)) */           \
                ls[s] += ((x > 0.0 ? x : 0.0) + fb_log1p_unit(e)) - t * x;                        \
                d[s] = (T)(p - t);                                                                \
            }                                                                                     \
        }                                                                                         \
    } else if (out == FB_OUT_SOFTMAX) {                                                           \
        /* u = max_k a_k, v = sum_k exp(a_k - u), l = S log-sum-exp - sum_k t_k a_k, S = sum t */ \
        for (fb_idx s = 0; s < ns; s++) u[s] = (double)A[s];                                      \
        for (fb_idx k = 1; k < m; k++)                                                            \
            for (fb_idx s = 0; s < ns; s++) {                                                     \
                double x = (double)A[k * ld + s];                                                 \
                u[s] = x > u[s] ? x : u[s];                                                       \
            }                                                                                     \
        for (fb_idx s = 0; s < ns; s++) v[s] = 0.0;                                               \
        for (fb_idx k = 0; k < m; k++)                                                            \
            for (fb_idx s = 0; s < ns; s++) {                                                     \
                double e = fb_exp((double)A[k * ld + s] - u[s]);                                  \
                D[k * ld + s] = (T)e; /* exp kept in the delta row until v is known */            \
                v[s] += e;                                                                        \
            }                                                                                     \
        for (fb_idx s = 0; s < ns; s++) {                                                         \
            double S = 0.0, ta = 0.0;                                                             \
            for (fb_idx k = 0; k < m; k++) {                                                      \
                double t = (double)Tt[s * m + k];                                                 \
                S += t;                                                                           \
                ta += t * (double)A[k * ld + s];                                                  \
            }                                                                                     \
            ls[s] = S * (u[s] + log(v[s])) - ta;                                                  \
            double inv = S / v[s];                                                                \
            for (fb_idx k = 0; k < m; k++) {                                                      \
                /* S softmax(a)_k - t_k; the exp was kept in D in T, so recompute it in double */ \
                double e = fb_exp((double)A[k * ld + s] - u[s]);                                  \
                D[k * ld + s] = (T)(e * inv - (double)Tt[s * m + k]);                             \
            }                                                                                     \
        }                                                                                         \
    } else { /* identity: delta = a - t, l = 1/2 sum_k delta_k^2 */                               \
        for (fb_idx k = 0; k < m; k++) {                                                          \
            const T *a = A + k * ld;                                                              \
            T *d = D + k * ld;                                                                    \
            for (fb_idx s = 0; s < ns; s++) {                                                     \
                T dk = a[s] - Tt[s * m + k];                                                      \
                d[s] = dk;                                                                        \
                ls[s] += 0.5 * (double)dk * (double)dk;                                           \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    for (fb_idx k = 0; k < m; k++) /* padding lanes: zero delta, so they add nothing */          \
        for (fb_idx s = ns; s < nsp; s++) D[k * ld + s] = (T)0;                                   \
    double loss = 0.0;                                                                            \
    if (sw) {                                                                                     \
        for (fb_idx k = 0; k < m; k++)                                                            \
            for (fb_idx s = 0; s < ns; s++) D[k * ld + s] = (T)((double)D[k * ld + s] * sw[s]);    \
        for (fb_idx s = 0; s < ns; s++) loss += sw[s] * ls[s];                                    \
    } else {                                                                                      \
        for (fb_idx s = 0; s < ns; s++) loss += ls[s];                                            \
    }                                                                                             \
    return loss;                                                                                  \
}                                                                                                 \
                                                                                                  \
/* Z[i, s] = X[s, i] for s < ns, 0 on the padding lanes: a tile of X, transposed */               \
static void fb_load_tile_##SFX(const T *X, fb_idx n_in, T *Z, fb_idx ns, fb_idx nsp, fb_idx ld)   \
{                                                                                                 \
    for (fb_idx i = 0; i < n_in; i++) {                                                           \
        T *z = Z + i * ld;                                                                        \
        for (fb_idx s = 0; s < ns; s++) z[s] = X[s * n_in + i];                                   \
        for (fb_idx s = ns; s < nsp; s++) z[s] = (T)0;                                            \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* A[j, s] += b[j] over nsp lanes (after a BLAS product) */                                       \
static void fb_add_bias_##SFX(T *A, const T *b, fb_idx n, fb_idx nsp, fb_idx ld)                  \
{                                                                                                 \
    for (fb_idx j = 0; j < n; j++)                                                                \
        for (fb_idx s = 0; s < nsp; s++) A[j * ld + s] += b[j];                                   \
}

/* bias grad first: fb_grad_tile calls it */
#define FB_DECLARE(T, SFX)                                                                        \
    FB_DISPATCH static void fb_bias_grad_tile_##SFX(const T *D, fb_idx n_out, double *db,         \
                                                    fb_idx nsp, fb_idx ld);
FB_DECLARE(double, d)
FB_DECLARE(float, f)
FB_DEFINE(double, d)
FB_DEFINE(float, f)

#endif /* FB_SIMD_H */
