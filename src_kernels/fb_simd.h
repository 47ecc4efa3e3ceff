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
 * Transcendentals: exp by range reduction (x = k ln2 + r, |r| <= ln2/2) and a degree-13 Taylor
 * polynomial, tanh by the same reduction and a [6/6] Pade approximant; log1p on [0, 1] by
 * 2 atanh(e / (2 + e)). All are branch free (ternaries become blends), accurate to a few units in
 * the last place, and keep NaN and infinity semantics: no -ffast-math anywhere.
 *
 * Every function comes in a double (_d) and a float (_f) version from one macro body. float
 * computes its transcendentals in double and rounds once, and accumulates gradients in double.
 *
 * Portability: the run-time dispatch (target_clones, resolved by the dynamic loader's ifunc) and
 * the AVX-512 blocks are used with GCC on x86-64 Linux only; everywhere else (Clang, macOS,
 * aarch64, Windows) the same loops are compiled once for the target's baseline vector unit (SSE2,
 * NEON...), with the same sums in the same order (the bits may differ where a compiler fuses a
 * multiply and an add into one rounding). FB_NO_DISPATCH forces that portable path.
 */
#ifndef FB_SIMD_H
#define FB_SIMD_H

/* The loops need GCC's vector extensions (GCC, Clang, clang-cl; not MSVC's cl). Without them the
 * build stops here and setup.py installs fastbp without the extension, saying why (numba and
 * numpy remain). FB_NO_VECTOR_EXTENSIONS pretends to be such a compiler, to test that path. */
#if !(defined(__GNUC__) || defined(__clang__)) || defined(FB_NO_VECTOR_EXTENSIONS)
#error "fastbp's Cython kernel needs GCC or Clang vector extensions, which this C compiler lacks"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FB_NO_DISPATCH)
/* one clone per instruction set, chosen once by the dynamic loader (ifunc) */
#define FB_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
/* the wide register blocks (16 lanes x 4 rows: 8 vector accumulators) need AVX-512's 32
 * registers; compiled for it alone and picked at run time by fb_wide_ok() */
#define FB_WIDE 1
#define FB_V4 __attribute__((target("arch=x86-64-v4")))
static inline int fb_wide_ok(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4");
}
#else
#define FB_DISPATCH
#define FB_WIDE 0
#define FB_V4
static inline int fb_wide_ok(void) { return 0; }
#endif

/* Every helper taking or returning a vector is forced inline: each target_clones clone then
 * compiles it for its own instruction set, and no vector crosses a call (whose ABI differs
 * between clones). */
#if defined(__GNUC__)
#define FB_INLINE static inline __attribute__((always_inline))
#else
#define FB_INLINE static inline
#endif

#define FB_LANES 8 /* tiles are padded to a multiple of this many lanes */

typedef ptrdiff_t fb_idx;

/* ---------------------------------------------------------------------------------- 8-lane vectors
 * GCC/Clang vector extensions: one fb_vd is 8 doubles (two AVX2 registers, one AVX-512 register,
 * four SSE2 registers: each target_clones clone maps it to its own instruction set). */
typedef double fb_vd __attribute__((vector_size(64)));
typedef float fb_vf __attribute__((vector_size(32)));
typedef long long fb_vl __attribute__((vector_size(64)));

FB_INLINE fb_vd fb_ld_d(const double *p) { fb_vd v; memcpy(&v, p, sizeof v); return v; }
FB_INLINE void fb_st_d(double *p, fb_vd v) { memcpy(p, &v, sizeof v); }
FB_INLINE fb_vf fb_ld_f(const float *p) { fb_vf v; memcpy(&v, p, sizeof v); return v; }
FB_INLINE void fb_st_f(float *p, fb_vf v) { memcpy(p, &v, sizeof v); }
/* lanes to double and back (identity for double) */
FB_INLINE fb_vd fb_wide_d(fb_vd v) { return v; }
FB_INLINE fb_vd fb_wide_f(fb_vf v)
{
    return (fb_vd){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}
FB_INLINE fb_vd fb_narrow_d(fb_vd v) { return v; }
FB_INLINE fb_vf fb_narrow_f(fb_vd v)
{
    return (fb_vf){(float)v[0], (float)v[1], (float)v[2], (float)v[3],
                   (float)v[4], (float)v[5], (float)v[6], (float)v[7]};
}
FB_INLINE fb_vd fb_bc(double x) { return (fb_vd){x, x, x, x, x, x, x, x}; }
/* m ? x : y lane by lane, m a comparison result (all ones or all zeros per lane) */
FB_INLINE fb_vd fb_sel(fb_vl m, fb_vd x, fb_vd y) { return (fb_vd)((m & (fb_vl)x) | (~m & (fb_vl)y)); }
/* the fixed-order sum of the 8 lanes */
FB_INLINE double fb_hsum(fb_vd v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* ------------------------------------------------------------------- transcendental functions */
#define FB_LN2_HI 6.93147180369123816490e-01 /* ln2 with trailing zero bits: k * LN2_HI is exact */
#define FB_LN2_LO 1.90821492927058770002e-10
#define FB_LOG2E 1.44269504088896338700e+00
#define FB_SHIFTER 6755399441055744.0 /* 0x1.8p52: x + it - it rounds x to an integer */

/* 2^k for integral k in [-1022, 1023], built from the exponent bits: adding the shifter puts k
 * in the low mantissa bits, subtracting the shifter's bits recovers it as an integer */
FB_INLINE fb_vd fb_pow2i(fb_vd k)
{
    fb_vl ki = (fb_vl)(k + FB_SHIFTER) - (fb_vl)fb_bc(FB_SHIFTER);
    return (fb_vd)((ki + 1023) << 52);
}

/* exp(r) - 1 for |r| <= ln2/2: r + r^2 (1/2! + r/3! + ... + r^11/13!), truncation < 1e-17 */
FB_INLINE fb_vd fb_expm1_small(fb_vd r)
{
    fb_vd p = fb_bc(1.0 / 6227020800.0);
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return r + (r * r) * p;
}

/* exp(x) = 2^k1 2^k2 exp(r), x = k ln2 + r, k = k1 + k2: the split reaches overflow (inf above
 * 709.78) and gradual underflow (subnormals, then 0) with normal 2^k1, 2^k2. NaN stays NaN. */
FB_INLINE fb_vd fb_vexp(fb_vd x)
{
    fb_vd xc = fb_sel(x > 710.0, fb_bc(710.0), x);
    xc = fb_sel(xc < -746.0, fb_bc(-746.0), xc);
    fb_vd k = (xc * FB_LOG2E + FB_SHIFTER) - FB_SHIFTER;
    fb_vd r = (xc - k * FB_LN2_HI) - k * FB_LN2_LO;
    fb_vd k1 = (k * 0.5 + FB_SHIFTER) - FB_SHIFTER;
    return ((1.0 + fb_expm1_small(r)) * fb_pow2i(k1)) * fb_pow2i(k - k1);
}

/* tanh(x) = sign(x) (1 - e^y) / (1 + e^y), y = -2|x| (clamped at -60) = k ln2 + r, |r| <= ln2/2,
 * e^y = s (E + O) / (E - O), s = 2^k, with the [6/6] Pade approximant of e^r (E, O its even and
 * odd parts, relative error < 2e-19): tanh|x| = (E (1 - s) - O (1 + s)) / (E (1 + s) - O (1 - s)).
 * 1 - s is exact and O carries the factor r: exact relative accuracy near 0 (k = 0, tanh = -2O /
 * 2E); fewer multiply-adds than a Taylor series of expm1 and the same one division. */
FB_INLINE fb_vd fb_vtanh(fb_vd x)
{
    fb_vl sign = (fb_vl)x & (fb_vl)fb_bc(-0.0);
    fb_vd a = (fb_vd)((fb_vl)x & ~(fb_vl)fb_bc(-0.0)); /* |x| */
    fb_vd y = -2.0 * a;
    y = fb_sel(y < -60.0, fb_bc(-60.0), y);
    fb_vd k = (y * FB_LOG2E + FB_SHIFTER) - FB_SHIFTER;
    fb_vd r = (y - k * FB_LN2_HI) - k * FB_LN2_LO;
    fb_vd s = fb_pow2i(k);
    fb_vd r2 = r * r;
    fb_vd e = 1.0 + r2 * (5.0 / 44.0 + r2 * (1.0 / 792.0 + r2 * (1.0 / 665280.0)));
    fb_vd o = r * (0.5 + r2 * (1.0 / 66.0 + r2 * (1.0 / 15840.0)));
    fb_vd t = (e * (1.0 - s) - o * (1.0 + s)) / (e * (1.0 + s) - o * (1.0 - s));
    return (fb_vd)((fb_vl)t | sign);
}

/* sigma(x) = 1 / (1 + e^-x), relative accuracy on both tails, with one division: e^-|x| = s P / Q,
 * y = -|x| (clamped at -746) = k ln2 + r, s = 2^k (as 2^k1 2^k2: subnormal results underflow
 * gradually), P = E + O, Q = E - O the [6/6] Pade approximant of e^r as in fb_vtanh; then
 * sigma(|x|) = Q / (Q + s P) and sigma(-|x|) = s P / (Q + s P). Against 1 / (1 + exp(-x)) with
 * exp's degree-13 series: half the multiply-adds and one division instead of two (the lab's
 * sigmoid network spends half its time here). NaN stays NaN. */
FB_INLINE fb_vd fb_vlogistic(fb_vd x)
{
    fb_vd y = -(fb_vd)((fb_vl)x & ~(fb_vl)fb_bc(-0.0)); /* -|x| */
    y = fb_sel(y < -746.0, fb_bc(-746.0), y);
    fb_vd k = (y * FB_LOG2E + FB_SHIFTER) - FB_SHIFTER;
    fb_vd r = (y - k * FB_LN2_HI) - k * FB_LN2_LO;
    fb_vd r2 = r * r;
    fb_vd e = 1.0 + r2 * (5.0 / 44.0 + r2 * (1.0 / 792.0 + r2 * (1.0 / 665280.0)));
    fb_vd o = r * (0.5 + r2 * (1.0 / 66.0 + r2 * (1.0 / 15840.0)));
    fb_vd k1 = (k * 0.5 + FB_SHIFTER) - FB_SHIFTER;
    fb_vd sp = ((e + o) * fb_pow2i(k1)) * fb_pow2i(k - k1);
    fb_vd q = e - o;
    return fb_sel(x < 0.0, sp, q) / (q + sp);
}

/* log1p(e) for e in [0, 1]: 2 atanh(f), f = e / (2 + e) in [0, 1/3]; 18 odd terms, < 1e-17 */
FB_INLINE fb_vd fb_vlog1p_unit(fb_vd e)
{
    fb_vd f = e / (2.0 + e);
    fb_vd f2 = f * f;
    fb_vd p = fb_bc(1.0 / 35.0);
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

/* log(x) for x >= 1 (the softmax's sum of exponentials): x = 2^e m, m in [1, 2), log x =
 * e ln2 + log1p(m - 1), both terms >= 0 (no cancellation); e ln2 split as in fb_vexp */
FB_INLINE fb_vd fb_vlog_ge1(fb_vd x)
{
    fb_vl b = (fb_vl)x;
    fb_vd e = __builtin_convertvector((b >> 52) - 1023, fb_vd);
    fb_vd m = (fb_vd)((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    return e * FB_LN2_HI + (e * FB_LN2_LO + fb_vlog1p_unit(m - 1.0));
}

/* scalar entry points (tests): lane 0 of the vector functions */
static inline double fb_exp(double x) { return fb_vexp(fb_bc(x))[0]; }
static inline double fb_tanh(double x) { return fb_vtanh(fb_bc(x))[0]; }
static inline double fb_logistic(double x) { return fb_vlogistic(fb_bc(x))[0]; }
static inline double fb_log1p_unit(double x) { return fb_vlog1p_unit(fb_bc(x))[0]; }
static inline double fb_log_ge1(double x) { return fb_vlog_ge1(fb_bc(x))[0]; }

/* Hidden activation codes, as fastbp.layout.ACTIVATIONS orders them */
enum { FB_IDENTITY = 0, FB_LOGISTIC = 1, FB_TANH = 2, FB_RELU = 3 };
/* Output codes, as fastbp.layout.OUTPUTS orders them */
enum { FB_OUT_IDENTITY = 0, FB_OUT_LOGISTIC = 1, FB_OUT_SOFTMAX = 2, FB_OUT_EXPONENTIAL = 3 };

/* ------------------------------------------------------------------ the per-tile loops, per dtype
 * T the element type, VT its 8-lane vector, SFX the name suffix. */
#define FB_DEFINE(T, VT, SFX)                                                                     \
                                                                                                  \
/* Store 8 lanes of a product at Aout[off], finished in registers (the same arithmetic, so the   \
 * same bits, as a separate pass over the stored tile): without Zd, z = sigma(a) (fb_activate);  \
 * with Zd, delta = a sigma'(a) written from z = Zd[off] (fb_dactivate). FB_IDENTITY: a as is. */ \
FB_INLINE void fb_fin_st_##SFX(int act, const T *Zd, T *Aout, fb_idx off, VT a)                   \
{                                                                                                 \
    if (act != FB_IDENTITY) {                                                                     \
        if (Zd) {                                                                                 \
            VT z = fb_ld_##SFX(Zd + off);                                                         \
            if (act == FB_LOGISTIC)                                                               \
                a *= z * ((T)1 - z);                                                              \
            else if (act == FB_TANH)                                                              \
                a *= (T)1 - z * z;                                                                \
            else                                                                                  \
                a = fb_narrow_##SFX(fb_sel(fb_wide_##SFX(z) > 0.0, fb_wide_##SFX(a), fb_bc(0.0)));\
        } else if (act == FB_RELU) {                                                              \
            a = fb_narrow_##SFX(fb_sel(fb_wide_##SFX(a) > 0.0, fb_wide_##SFX(a), fb_bc(0.0)));    \
        } else {                                                                                  \
            fb_vd x = fb_wide_##SFX(a);                                                           \
            a = fb_narrow_##SFX(act == FB_LOGISTIC ? fb_vlogistic(x) : fb_vtanh(x));              \
        }                                                                                         \
    }                                                                                             \
    fb_st_##SFX(Aout + off, a);                                                                   \
}                                                                                                 \
                                                                                                  \
/* Aout[o, s] = bias[o] + sum_c M[o*so + c*si] Zin[c, s], o < n_out, s < nsp.                     \
 * Forward (a^{l+1} = W_l^T z^l + b_l): so = 1, si = n_out. Backward (W_l delta^{l+1}):           \
 * so = n_out, si = 1, bias NULL. Register blocked: 4 outputs x 8 lanes accumulate over c. */     \
FB_DISPATCH static void fb_matmul_tile_##SFX(const T *M, fb_idx so, fb_idx si, const T *bias,     \
                                             const T *Zin, fb_idx n_in, T *Aout, fb_idx n_out,    \
                                             fb_idx nsp, fb_idx ld, int act, const T *Zd)         \
{                                                                                                 \
    fb_idx o = 0;                                                                                 \
    for (; o + 4 <= n_out; o += 4) {                                                              \
        T b0 = bias ? bias[o] : 0, b1 = bias ? bias[o + 1] : 0;                                   \
        T b2 = bias ? bias[o + 2] : 0, b3 = bias ? bias[o + 3] : 0;                               \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            const T *m = M + o * so;                                                              \
            for (fb_idx c = 0; c < n_in; c++, m += si) {                                          \
                VT z = fb_ld_##SFX(Zin + c * ld + s);                                             \
                a0 += m[0] * z;                                                                   \
                a1 += m[so] * z;                                                                  \
                a2 += m[2 * so] * z;                                                              \
                a3 += m[3 * so] * z;                                                              \
            }                                                                                     \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s, a1);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s, a2);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s, a3);                                 \
        }                                                                                         \
    }                                                                                             \
    for (; o < n_out; o++) {                                                                      \
        T b0 = bias ? bias[o] : 0;                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT a0 = (VT){0} + b0;                                                                 \
            const T *m = M + o * so;                                                              \
            for (fb_idx c = 0; c < n_in; c++, m += si) a0 += m[0] * fb_ld_##SFX(Zin + c * ld + s);\
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* db[j] += sum_s D[j, s] over nsp lanes, in double */                                            \
FB_DISPATCH static void fb_bias_grad_tile_##SFX(const T *D, fb_idx n_out, double *db, fb_idx nsp, \
                                                fb_idx ld)                                        \
{                                                                                                 \
    for (fb_idx j = 0; j < n_out; j++) {                                                          \
        fb_vd a = {0};                                                                            \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) a += fb_wide_##SFX(fb_ld_##SFX(D + j * ld + s));\
        db[j] += fb_hsum(a);                                                                      \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* dW[i*n_out + j] += sum_s Z[i, s] D[j, s] (dL/dw_ij = delta_j z_i over the tile) and the bias   \
 * part, in double: 8 lane accumulators per weight, 4 weights at a time, summed in fixed order. */\
FB_DISPATCH static void fb_grad_tile_##SFX(const T *Z, fb_idx n_in, const T *D, fb_idx n_out,     \
                                           double *dW, double *db, fb_idx nsp, fb_idx ld)         \
{                                                                                                 \
    for (fb_idx i = 0; i < n_in; i++) {                                                           \
        const T *z = Z + i * ld;                                                                  \
        double *g = dW + i * n_out;                                                               \
        fb_idx j = 0;                                                                             \
        for (; j + 4 <= n_out; j += 4) {                                                          \
            const T *d = D + j * ld;                                                              \
            fb_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                         \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd zs = fb_wide_##SFX(fb_ld_##SFX(z + s));                                     \
                a0 += zs * fb_wide_##SFX(fb_ld_##SFX(d + s));                                     \
                a1 += zs * fb_wide_##SFX(fb_ld_##SFX(d + ld + s));                                \
                a2 += zs * fb_wide_##SFX(fb_ld_##SFX(d + 2 * ld + s));                            \
                a3 += zs * fb_wide_##SFX(fb_ld_##SFX(d + 3 * ld + s));                            \
            }                                                                                     \
            g[j] += fb_hsum(a0);                                                                  \
            g[j + 1] += fb_hsum(a1);                                                              \
            g[j + 2] += fb_hsum(a2);                                                              \
            g[j + 3] += fb_hsum(a3);                                                              \
        }                                                                                         \
        for (; j < n_out; j++) {                                                                  \
            fb_vd a0 = {0};                                                                       \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                a0 += fb_wide_##SFX(fb_ld_##SFX(z + s)) * fb_wide_##SFX(fb_ld_##SFX(D + j * ld + s));\
            g[j] += fb_hsum(a0);                                                                  \
        }                                                                                         \
    }                                                                                             \
    fb_bias_grad_tile_##SFX(D, n_out, db, nsp, ld);                                               \
}                                                                                                 \
                                                                                                  \
/* z = sigma(a) in place over n units x nsp lanes (rows ld apart) */                              \
FB_DISPATCH static void fb_activate_##SFX(int act, T *A, fb_idx n, fb_idx nsp, fb_idx ld)         \
{                                                                                                 \
    if (act == FB_IDENTITY) return;                                                               \
    for (fb_idx j = 0; j < n; j++)                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            T *p = A + j * ld + s;                                                                \
            VT a = fb_ld_##SFX(p);                                                                \
            if (act == FB_RELU) {                                                                 \
                fb_st_##SFX(p, fb_narrow_##SFX(fb_sel(fb_wide_##SFX(a) > 0.0,                     \
                                                      fb_wide_##SFX(a), fb_bc(0.0))));            \
            } else {                                                                              \
                fb_vd x = fb_wide_##SFX(a);                                                       \
                fb_st_##SFX(p, fb_narrow_##SFX(act == FB_LOGISTIC ? fb_vlogistic(x)               \
                                                                  : fb_vtanh(x)));                \
            }                                                                                     \
        }                                                                                         \
}                                                                                                 \
                                                                                                  \
/* delta *= sigma'(a), written from z = sigma(a), over n units x nsp lanes */                     \
FB_DISPATCH static void fb_dactivate_##SFX(int act, const T *Z, T *D, fb_idx n, fb_idx nsp,       \
                                           fb_idx ld)                                             \
{                                                                                                 \
    if (act == FB_IDENTITY) return;                                                               \
    for (fb_idx j = 0; j < n; j++)                                                                \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            VT z = fb_ld_##SFX(Z + j * ld + s), d = fb_ld_##SFX(D + j * ld + s);                  \
            if (act == FB_LOGISTIC)                                                               \
                d *= z * ((T)1 - z);                                                              \
            else if (act == FB_TANH)                                                              \
                d *= (T)1 - z * z;                                                                \
            else                                                                                  \
                d = fb_narrow_##SFX(fb_sel(fb_wide_##SFX(z) > 0.0, fb_wide_##SFX(d), fb_bc(0.0)));\
            fb_st_##SFX(D + j * ld + s, d);                                                       \
        }                                                                                         \
}                                                                                                 \
                                                                                                  \
/* The output layer of one tile: from a^L (A: m units x ld lanes) and the targets (row-major     \
 * (ns, m) at Tt, ns real lanes) write delta = dl/da times the sample weight into D (0 on the    \
 * padding lanes) and return sum_s w_s l_s in double. Cross-entropies come from a (softplus,     \
 * log-sum-exp), so large |a| stays finite; the exponential output's e^a overflows to inf past   \
 * T's range, as NumPy's does. `work` holds 4 * ld doubles. */                                    \
FB_DISPATCH static double fb_output_tile_##SFX(int out, const T *A, fb_idx m, const T *Tt,         \
                                               const double *sw, T *D, fb_idx ns, fb_idx nsp,     \
                                               fb_idx ld, double *work)                           \
{                                                                                                 \
    double *ls = work, *t = work + ld, *u = work + 2 * ld, *v = work + 3 * ld;                    \
    for (fb_idx s = 0; s < nsp; s++) ls[s] = 0.0;                                                 \
    if (out == FB_OUT_SOFTMAX) {                                                                  \
        /* u = max_k a_k, v = sum_k exp(a_k - u); l = S (u + log v) - sum_k t_k a_k, S = sum t */ \
        for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                              \
            fb_vd mx = fb_wide_##SFX(fb_ld_##SFX(A + s));                                         \
            for (fb_idx k = 1; k < m; k++) {                                                      \
                fb_vd x = fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s));                             \
                mx = fb_sel(x > mx, x, mx);                                                       \
            }                                                                                     \
            fb_vd sum = {0};                                                                      \
            for (fb_idx k = 0; k < m; k++)                                                        \
                sum += fb_vexp(fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s)) - mx);                  \
            fb_st_d(u + s, mx);                                                                   \
            fb_st_d(v + s, sum);                                                                  \
            fb_st_d(ls + s, fb_vlog_ge1(sum)); /* log v, vectorized; sum >= 1 */                  \
        }                                                                                         \
        for (fb_idx s = 0; s < ns; s++) {                                                         \
            double S = 0.0, ta = 0.0;                                                             \
            for (fb_idx k = 0; k < m; k++) {                                                      \
                double tk = (double)Tt[s * m + k];                                                \
                S += tk;                                                                          \
                ta += tk * (double)A[k * ld + s];                                                 \
            }                                                                                     \
            ls[s] = S * (u[s] + ls[s]) - ta;                                                      \
            t[s] = S / v[s]; /* delta_k = S softmax(a)_k - t_k = exp(a_k - u) S / v - t_k */      \
        }                                                                                         \
        for (fb_idx s = ns; s < nsp; s++) t[s] = 0.0;                                             \
        for (fb_idx k = 0; k < m; k++) {                                                          \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd e = fb_vexp(fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s)) - fb_ld_d(u + s));   \
                fb_st_##SFX(D + k * ld + s, fb_narrow_##SFX(e * fb_ld_d(t + s)));                  \
            }                                                                                     \
            for (fb_idx s = 0; s < ns; s++) D[k * ld + s] = (T)((double)D[k * ld + s] - (double)Tt[s * m + k]);\
        }                                                                                         \
    } else {                                                                                      \
        if (out == FB_OUT_EXPONENTIAL) /* v: 1 where the sample counts (weight > 0), else 0 */   \
            for (fb_idx s = 0; s < nsp; s++) v[s] = (s < ns && (!sw || sw[s] > 0.0)) ? 1.0 : 0.0;\
        for (fb_idx k = 0; k < m; k++) {                                                          \
            for (fb_idx s = 0; s < ns; s++) t[s] = (double)Tt[s * m + k];                         \
            for (fb_idx s = ns; s < nsp; s++) t[s] = 0.0;                                         \
            if (out == FB_OUT_EXPONENTIAL) /* u = t log t, 0 at t = 0 */                         \
                for (fb_idx s = 0; s < nsp; s++) u[s] = t[s] > 0.0 ? t[s] * log(t[s]) : 0.0;     \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd x = fb_wide_##SFX(fb_ld_##SFX(A + k * ld + s)), tv = fb_ld_d(t + s), d, l;  \
                if (out == FB_OUT_EXPONENTIAL) {                                                  \
                    /* p = e^a rounded to T (inf past T's range); l = t log t - t a + (p - t),   \
                     * half the Poisson deviance; delta = p - t. A sample of weight 0 gets      \
                     * exactly 0 (not 0 * inf) */                                               \
                    fb_vl counts = fb_ld_d(v + s) > 0.0;                                          \
                    fb_vd p = fb_vexp(x);                                                         \
                    if (sizeof(T) == sizeof(float)) /* float: inf from float's rounding boundary \
                        on (explicitly: gcc 12 folds the narrow-widen pair away on AVX-512) */   \
                        p = fb_sel(p >= 0x1.ffffffp+127, fb_bc(__builtin_inf()), p);              \
                    d = fb_wide_##SFX(fb_narrow_##SFX(p)) - tv;                                   \
                    l = fb_sel(counts, (fb_ld_d(u + s) - tv * x) + d, fb_bc(0.0));                \
                    d = fb_sel(counts, d, fb_bc(0.0));                                            \
                } else if (out == FB_OUT_LOGISTIC) {                                              \
                    /* l = softplus(a) - t a, softplus(a) = max(a, 0) + log1p(exp(-|a|)) */       \
                    fb_vd ax = (fb_vd)((fb_vl)x & ~(fb_vl)fb_bc(-0.0));                           \
                    fb_vd e = fb_vexp(-ax);                  /* in (0, 1] */                      \
                    fb_vd p = fb_sel(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e)); /* sigma(a) */    \
                    l = (fb_sel(x > 0.0, x, fb_bc(0.0)) + fb_vlog1p_unit(e)) - tv * x;            \
                    d = p - tv;                                                                   \
                } else { /* identity: delta = a - t, l = 1/2 delta^2 */                           \
                    d = fb_wide_##SFX(fb_narrow_##SFX(x - tv)); /* the difference in T */         \
                    l = 0.5 * (d * d);                                                            \
                }                                                                                 \
                fb_st_d(ls + s, fb_ld_d(ls + s) + l);                                             \
                fb_st_##SFX(D + k * ld + s, fb_narrow_##SFX(d));                                  \
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

FB_DEFINE(double, fb_vd, d)
FB_DEFINE(float, fb_vf, f)


/* ------------------------------------------------------------ sample-major gradient accumulation
 * The weight gradient as a sum of rank-1 updates over the tile's samples, with no horizontal
 * sums: D is first transposed to DT (nsp x npad, npad = n_out rounded up to 8, zero padded), then
 * G[i*npad + j] += sum_s Z[i, s] DT[s, j] with a block of G held in registers over the whole
 * tile. G (double, n_in x npad) accumulates over a block's tiles and is added into the gradient
 * once per block (fb_gacc_flush). Each G entry sums its samples in order, whatever the blocking,
 * so every instruction set gives the same sums. */
/* lanes i0 ... i7 of a and b side by side (a's lanes 0-7, b's 8-15): GCC's and Clang's spellings */
#if defined(__clang__)
#define FB_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#else
#define FB_SHUF8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
    __builtin_shuffle(a, b, (fb_vl){i0, i1, i2, i3, i4, i5, i6, i7})
#endif
/* out[c * os + r] = in[r * is + c], r, c < 8: an 8 x 8 block of doubles transposed in registers;
 * acc[r] += in[r * is + c] over c = 0 ... 7 in order, from the transposed rows (the bias sums) */
FB_INLINE void fb_tr8(const double *in, fb_idx is, double *out, fb_idx os, double *acc)
{
    fb_vd r0 = fb_ld_d(in), r1 = fb_ld_d(in + is), r2 = fb_ld_d(in + 2 * is),
          r3 = fb_ld_d(in + 3 * is), r4 = fb_ld_d(in + 4 * is), r5 = fb_ld_d(in + 5 * is),
          r6 = fb_ld_d(in + 6 * is), r7 = fb_ld_d(in + 7 * is);
    /* pairs of rows interleaved, then pairs of pairs, then halves */
    fb_vd t0 = FB_SHUF8(r0, r1, 0, 8, 2, 10, 4, 12, 6, 14);
    fb_vd t1 = FB_SHUF8(r0, r1, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd t2 = FB_SHUF8(r2, r3, 0, 8, 2, 10, 4, 12, 6, 14);
    fb_vd t3 = FB_SHUF8(r2, r3, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd t4 = FB_SHUF8(r4, r5, 0, 8, 2, 10, 4, 12, 6, 14);
    fb_vd t5 = FB_SHUF8(r4, r5, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd t6 = FB_SHUF8(r6, r7, 0, 8, 2, 10, 4, 12, 6, 14);
    fb_vd t7 = FB_SHUF8(r6, r7, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd u0 = FB_SHUF8(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
    fb_vd u1 = FB_SHUF8(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
    fb_vd u2 = FB_SHUF8(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
    fb_vd u3 = FB_SHUF8(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
    fb_vd u4 = FB_SHUF8(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
    fb_vd u5 = FB_SHUF8(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
    fb_vd u6 = FB_SHUF8(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
    fb_vd u7 = FB_SHUF8(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
    fb_vd o0 = FB_SHUF8(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
    fb_vd o1 = FB_SHUF8(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
    fb_vd o2 = FB_SHUF8(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
    fb_vd o3 = FB_SHUF8(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
    fb_vd o4 = FB_SHUF8(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
    fb_vd o5 = FB_SHUF8(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
    fb_vd o6 = FB_SHUF8(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
    fb_vd o7 = FB_SHUF8(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
    fb_st_d(out, o0);
    fb_st_d(out + os, o1);
    fb_st_d(out + 2 * os, o2);
    fb_st_d(out + 3 * os, o3);
    fb_st_d(out + 4 * os, o4);
    fb_st_d(out + 5 * os, o5);
    fb_st_d(out + 6 * os, o6);
    fb_st_d(out + 7 * os, o7);
    fb_st_d(acc, ((((((((fb_ld_d(acc) + o0) + o1) + o2) + o3) + o4) + o5) + o6) + o7));
}

/* the lane sums of v0 ... v7 as one vector, lane k holding v_k's, each summed as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)): seven shuffle pairs for eight sums */
FB_INLINE fb_vd fb_hsum8(fb_vd v0, fb_vd v1, fb_vd v2, fb_vd v3, fb_vd v4, fb_vd v5, fb_vd v6, fb_vd v7)
{
    /* neighbours added, two vectors interleaved; then pairs of those; then halves */
    fb_vd p01 = FB_SHUF8(v0, v1, 0, 8, 2, 10, 4, 12, 6, 14) + FB_SHUF8(v0, v1, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd p23 = FB_SHUF8(v2, v3, 0, 8, 2, 10, 4, 12, 6, 14) + FB_SHUF8(v2, v3, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd p45 = FB_SHUF8(v4, v5, 0, 8, 2, 10, 4, 12, 6, 14) + FB_SHUF8(v4, v5, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd p67 = FB_SHUF8(v6, v7, 0, 8, 2, 10, 4, 12, 6, 14) + FB_SHUF8(v6, v7, 1, 9, 3, 11, 5, 13, 7, 15);
    fb_vd q0 = FB_SHUF8(p01, p23, 0, 1, 8, 9, 4, 5, 12, 13) + FB_SHUF8(p01, p23, 2, 3, 10, 11, 6, 7, 14, 15);
    fb_vd q4 = FB_SHUF8(p45, p67, 0, 1, 8, 9, 4, 5, 12, 13) + FB_SHUF8(p45, p67, 2, 3, 10, 11, 6, 7, 14, 15);
    return FB_SHUF8(q0, q4, 0, 1, 2, 3, 8, 9, 10, 11) + FB_SHUF8(q0, q4, 4, 5, 6, 7, 12, 13, 14, 15);
}

#define FB_DEFINE_GACC(T, VT, SFX)                                                                \
/* DT[s * npad + j] = D[j * ld + s] (0 for n <= j < npad), and db[j] += D[j * ld + s] in double,  \
 * s = 0, 1, ... in order: the bias gradient from the transpose's own loads */                    \
FB_DISPATCH static void fb_transpose_tile_##SFX(const T *D, fb_idx n, T *DT, fb_idx npad,         \
                                                fb_idx nsp, fb_idx ld, double *db)                \
{                                                                                                 \
    if (sizeof(T) == 8 && n == npad) { /* 8 x 8 blocks through registers (copies: same bits) */   \
        for (fb_idx s = 0; s < nsp; s += 8)                                                       \
            for (fb_idx j = 0; j < n; j += 8) fb_tr8((const double *)D + j * ld + s, ld,          \
                                                     (double *)DT + s * npad + j, npad, db + j);  \
        return;                                                                                   \
    }                                                                                             \
    for (fb_idx s = 0; s < nsp; s++) {                                                            \
        T *r = DT + s * npad;                                                                     \
        for (fb_idx j = 0; j < n; j++) r[j] = D[j * ld + s];                                      \
        for (fb_idx j = n; j < npad; j++) r[j] = (T)0;                                            \
        for (fb_idx j = 0; j < n; j++) db[j] += (double)r[j];                                     \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* 4 rows x 8 columns of G per register block (4 accumulators) */                                 \
FB_DISPATCH static void fb_gacc8_##SFX(const T *Z, fb_idx n_in, const T *DT, fb_idx npad,         \
                                       double *G, fb_idx j0, fb_idx nsp, fb_idx ld)               \
{                                                                                                 \
    for (fb_idx j = j0; j < npad; j += 8) {                                                       \
        fb_idx i = 0;                                                                             \
        for (; i + 4 <= n_in; i += 4) {                                                           \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g), a1 = fb_ld_d(g + npad), a2 = fb_ld_d(g + 2 * npad),            \
                  a3 = fb_ld_d(g + 3 * npad);                                                     \
            const T *z = Z + i * ld;                                                              \
            for (fb_idx s = 0; s < nsp; s++) {                                                    \
                fb_vd d = fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j));                          \
                a0 += (double)z[s] * d;                                                           \
                a1 += (double)z[ld + s] * d;                                                      \
                a2 += (double)z[2 * ld + s] * d;                                                  \
                a3 += (double)z[3 * ld + s] * d;                                                  \
            }                                                                                     \
            fb_st_d(g, a0); fb_st_d(g + npad, a1); fb_st_d(g + 2 * npad, a2);                     \
            fb_st_d(g + 3 * npad, a3);                                                            \
        }                                                                                         \
        for (; i < n_in; i++) {                                                                   \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g);                                                                \
            const T *z = Z + i * ld;                                                              \
            for (fb_idx s = 0; s < nsp; s++)                                                      \
                a0 += (double)z[s] * fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j));               \
            fb_st_d(g, a0);                                                                       \
        }                                                                                         \
    }                                                                                             \
}                                                                                                 \
                                                                                                  \
/* AVX-512: 4 rows x 32, then x 16 columns per register block (16, 8 accumulators), then fb_gacc8 */\
FB_V4 static void fb_gacc16_##SFX(const T *Z, fb_idx n_in, const T *DT, fb_idx npad, double *G,  \
                                  fb_idx nsp, fb_idx ld)                                          \
{                                                                                                 \
    fb_idx j = 0;                                                                                 \
    for (; j + 32 <= npad; j += 32) { /* 4 rows x 32 columns: 16 accumulators */                  \
        fb_idx i = 0;                                                                             \
        for (; i + 4 <= n_in; i += 4) {                                                           \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g + 0 * npad), b0 = fb_ld_d(g + 0 * npad + 8);                     \
            fb_vd c0 = fb_ld_d(g + 0 * npad + 16), e0 = fb_ld_d(g + 0 * npad + 24);               \
            fb_vd a1 = fb_ld_d(g + 1 * npad), b1 = fb_ld_d(g + 1 * npad + 8);                     \
            fb_vd c1 = fb_ld_d(g + 1 * npad + 16), e1 = fb_ld_d(g + 1 * npad + 24);               \
            fb_vd a2 = fb_ld_d(g + 2 * npad), b2 = fb_ld_d(g + 2 * npad + 8);                     \
            fb_vd c2 = fb_ld_d(g + 2 * npad + 16), e2 = fb_ld_d(g + 2 * npad + 24);               \
            fb_vd a3 = fb_ld_d(g + 3 * npad), b3 = fb_ld_d(g + 3 * npad + 8);                     \
            fb_vd c3 = fb_ld_d(g + 3 * npad + 16), e3 = fb_ld_d(g + 3 * npad + 24);               \
            const T *z = Z + i * ld;                                                              \
            const T *dt = DT + j;                                                                 \
            for (fb_idx s = 0; s < nsp; s++, dt += npad) {                                        \
                fb_vd d0 = fb_wide_##SFX(fb_ld_##SFX(dt)), d1 = fb_wide_##SFX(fb_ld_##SFX(dt + 8));\
                fb_vd d2 = fb_wide_##SFX(fb_ld_##SFX(dt + 16)), d3 = fb_wide_##SFX(fb_ld_##SFX(dt + 24));\
                double z0 = (double)z[s], z1 = (double)z[ld + s];                                 \
                double z2 = (double)z[2 * ld + s], z3 = (double)z[3 * ld + s];                    \
                a0 += z0 * d0; b0 += z0 * d1; c0 += z0 * d2; e0 += z0 * d3;                       \
                a1 += z1 * d0; b1 += z1 * d1; c1 += z1 * d2; e1 += z1 * d3;                       \
                a2 += z2 * d0; b2 += z2 * d1; c2 += z2 * d2; e2 += z2 * d3;                       \
                a3 += z3 * d0; b3 += z3 * d1; c3 += z3 * d2; e3 += z3 * d3;                       \
            }                                                                                     \
            fb_st_d(g + 0 * npad, a0); fb_st_d(g + 0 * npad + 8, b0);                             \
            fb_st_d(g + 0 * npad + 16, c0); fb_st_d(g + 0 * npad + 24, e0);                       \
            fb_st_d(g + 1 * npad, a1); fb_st_d(g + 1 * npad + 8, b1);                             \
            fb_st_d(g + 1 * npad + 16, c1); fb_st_d(g + 1 * npad + 24, e1);                       \
            fb_st_d(g + 2 * npad, a2); fb_st_d(g + 2 * npad + 8, b2);                             \
            fb_st_d(g + 2 * npad + 16, c2); fb_st_d(g + 2 * npad + 24, e2);                       \
            fb_st_d(g + 3 * npad, a3); fb_st_d(g + 3 * npad + 8, b3);                             \
            fb_st_d(g + 3 * npad + 16, c3); fb_st_d(g + 3 * npad + 24, e3);                       \
        }                                                                                         \
        for (; i < n_in; i++) {                                                                   \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g), b0 = fb_ld_d(g + 8), c0 = fb_ld_d(g + 16), e0 = fb_ld_d(g + 24);\
            const T *z = Z + i * ld;                                                              \
            const T *dt = DT + j;                                                                 \
            for (fb_idx s = 0; s < nsp; s++, dt += npad) {                                        \
                double z0 = (double)z[s];                                                         \
                a0 += z0 * fb_wide_##SFX(fb_ld_##SFX(dt));                                        \
                b0 += z0 * fb_wide_##SFX(fb_ld_##SFX(dt + 8));                                    \
                c0 += z0 * fb_wide_##SFX(fb_ld_##SFX(dt + 16));                                   \
                e0 += z0 * fb_wide_##SFX(fb_ld_##SFX(dt + 24));                                   \
            }                                                                                     \
            fb_st_d(g, a0); fb_st_d(g + 8, b0); fb_st_d(g + 16, c0); fb_st_d(g + 24, e0);         \
        }                                                                                         \
    }                                                                                             \
    for (; j + 16 <= npad; j += 16) {                                                             \
        fb_idx i = 0;                                                                             \
        for (; i + 4 <= n_in; i += 4) {                                                           \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g), a1 = fb_ld_d(g + npad), a2 = fb_ld_d(g + 2 * npad),            \
                  a3 = fb_ld_d(g + 3 * npad);                                                     \
            fb_vd b0 = fb_ld_d(g + 8), b1 = fb_ld_d(g + npad + 8), b2 = fb_ld_d(g + 2 * npad + 8),\
                  b3 = fb_ld_d(g + 3 * npad + 8);                                                 \
            const T *z = Z + i * ld;                                                              \
            for (fb_idx s = 0; s < nsp; s++) {                                                    \
                fb_vd d = fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j));                          \
                fb_vd e = fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j + 8));                      \
                double z0 = (double)z[s], z1 = (double)z[ld + s];                                 \
                double z2 = (double)z[2 * ld + s], z3 = (double)z[3 * ld + s];                    \
                a0 += z0 * d; b0 += z0 * e;                                                       \
                a1 += z1 * d; b1 += z1 * e;                                                       \
                a2 += z2 * d; b2 += z2 * e;                                                       \
                a3 += z3 * d; b3 += z3 * e;                                                       \
            }                                                                                     \
            fb_st_d(g, a0); fb_st_d(g + npad, a1); fb_st_d(g + 2 * npad, a2);                     \
            fb_st_d(g + 3 * npad, a3);                                                            \
            fb_st_d(g + 8, b0); fb_st_d(g + npad + 8, b1); fb_st_d(g + 2 * npad + 8, b2);         \
            fb_st_d(g + 3 * npad + 8, b3);                                                        \
        }                                                                                         \
        for (; i < n_in; i++) {                                                                   \
            double *g = G + i * npad + j;                                                         \
            fb_vd a0 = fb_ld_d(g), b0 = fb_ld_d(g + 8);                                           \
            const T *z = Z + i * ld;                                                              \
            for (fb_idx s = 0; s < nsp; s++) {                                                    \
                double z0 = (double)z[s];                                                         \
                a0 += z0 * fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j));                         \
                b0 += z0 * fb_wide_##SFX(fb_ld_##SFX(DT + s * npad + j + 8));                     \
            }                                                                                     \
            fb_st_d(g, a0); fb_st_d(g + 8, b0);                                                   \
        }                                                                                         \
    }                                                                                             \
    if (j < npad) fb_gacc8_##SFX(Z, n_in, DT, npad, G, j, nsp, ld);                               \
}                                                                                                 \
                                                                                                  \
static void fb_gacc_##SFX(int wide, const T *Z, fb_idx n_in, const T *DT, fb_idx npad, double *G, \
                          fb_idx nsp, fb_idx ld)                                                  \
{                                                                                                 \
    if (FB_WIDE && wide) fb_gacc16_##SFX(Z, n_in, DT, npad, G, nsp, ld);                          \
    else fb_gacc8_##SFX(Z, n_in, DT, npad, G, 0, nsp, ld);                                        \
}

/* dW[i*n + j] += G[i*npad + j], and G = 0 for the next block */
static void fb_gacc_flush(double *G, fb_idx n_in, fb_idx n, fb_idx npad, double *dW)
{
    for (fb_idx i = 0; i < n_in; i++)
        for (fb_idx j = 0; j < n; j++) dW[i * n + j] += G[i * npad + j];
    memset(G, 0, (size_t)(n_in * npad) * sizeof(double));
}

FB_DEFINE_GACC(double, fb_vd, d)
FB_DEFINE_GACC(float, fb_vf, f)

/* AVX-512 variant of fb_matmul_tile: 8 outputs x 16 lanes per register block (16 accumulators;
 * 4 x 16 gave 8, too few to hide the multiply-add latency), then 4 x 16 for the rest: the same
 * sums in the same order (bias, then inputs c = 0, 1, ...) as fb_matmul_tile */
#define FB_DEFINE_MATMUL_WIDE(T, VT, SFX)                                                         \
FB_V4 static void fb_matmul16_##SFX(const T *M, fb_idx so, fb_idx si, const T *bias,             \
                                    const T *Zin, fb_idx n_in, T *Aout, fb_idx n_out,             \
                                    fb_idx nsp, fb_idx ld, int act, const T *Zd)                  \
{                                                                                                 \
    fb_idx o = 0;                                                                                 \
    for (; o + 8 <= n_out; o += 8) { /* 8 outputs x 16 lanes: 16 accumulators */                  \
        T b0 = bias ? bias[o] : 0, b1 = bias ? bias[o + 1] : 0;                                   \
        T b2 = bias ? bias[o + 2] : 0, b3 = bias ? bias[o + 3] : 0;                               \
        T b4 = bias ? bias[o + 4] : 0, b5 = bias ? bias[o + 5] : 0;                               \
        T b6 = bias ? bias[o + 6] : 0, b7 = bias ? bias[o + 7] : 0;                               \
        const T *mo = M + o * so;                                                                 \
        fb_idx s = 0;                                                                             \
        for (; s + 2 * FB_LANES <= nsp; s += 2 * FB_LANES) {                                      \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            VT a4 = (VT){0} + b4, a5 = (VT){0} + b5, a6 = (VT){0} + b6, a7 = (VT){0} + b7;        \
            VT c0 = a0, c1 = a1, c2 = a2, c3 = a3, c4 = a4, c5 = a5, c6 = a6, c7 = a7;            \
            const T *m = mo, *zc = Zin + s;                                                       \
            for (fb_idx c = 0; c < n_in; c++, m += si, zc += ld) {                                \
                VT z = fb_ld_##SFX(zc), y = fb_ld_##SFX(zc + FB_LANES);                           \
                T m0 = m[0], m1 = m[so], m2 = m[2 * so], m3 = m[3 * so];                          \
                T m4 = m[4 * so], m5 = m[5 * so], m6 = m[6 * so], m7 = m[7 * so];                 \
                a0 += m0 * z; c0 += m0 * y;                                                       \
                a1 += m1 * z; c1 += m1 * y;                                                       \
                a2 += m2 * z; c2 += m2 * y;                                                       \
                a3 += m3 * z; c3 += m3 * y;                                                       \
                a4 += m4 * z; c4 += m4 * y;                                                       \
                a5 += m5 * z; c5 += m5 * y;                                                       \
                a6 += m6 * z; c6 += m6 * y;                                                       \
                a7 += m7 * z; c7 += m7 * y;                                                       \
            }                                                                                     \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s, a1);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s, a2);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s, a3);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 4) * ld + s, a4);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 5) * ld + s, a5);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 6) * ld + s, a6);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 7) * ld + s, a7);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s + FB_LANES, c0);                            \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s + FB_LANES, c1);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s + FB_LANES, c2);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s + FB_LANES, c3);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 4) * ld + s + FB_LANES, c4);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 5) * ld + s + FB_LANES, c5);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 6) * ld + s + FB_LANES, c6);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 7) * ld + s + FB_LANES, c7);                      \
        }                                                                                         \
        for (; s < nsp; s += FB_LANES) {                                                          \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            VT a4 = (VT){0} + b4, a5 = (VT){0} + b5, a6 = (VT){0} + b6, a7 = (VT){0} + b7;        \
            const T *m = mo, *zc = Zin + s;                                                       \
            for (fb_idx c = 0; c < n_in; c++, m += si, zc += ld) {                                \
                VT z = fb_ld_##SFX(zc);                                                           \
                a0 += m[0] * z; a1 += m[so] * z; a2 += m[2 * so] * z; a3 += m[3 * so] * z;        \
                a4 += m[4 * so] * z; a5 += m[5 * so] * z; a6 += m[6 * so] * z; a7 += m[7 * so] * z;\
            }                                                                                     \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s, a1);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s, a2);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s, a3);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 4) * ld + s, a4);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 5) * ld + s, a5);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 6) * ld + s, a6);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 7) * ld + s, a7);                                 \
        }                                                                                         \
    }                                                                                             \
    for (; o + 4 <= n_out; o += 4) {                                                              \
        T b0 = bias ? bias[o] : 0, b1 = bias ? bias[o + 1] : 0;                                   \
        T b2 = bias ? bias[o + 2] : 0, b3 = bias ? bias[o + 3] : 0;                               \
        fb_idx s = 0;                                                                             \
        for (; s + 2 * FB_LANES <= nsp; s += 2 * FB_LANES) {                                      \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            VT c0 = a0, c1 = a1, c2 = a2, c3 = a3;                                                \
            const T *m = M + o * so;                                                              \
            for (fb_idx c = 0; c < n_in; c++, m += si) {                                          \
                VT z = fb_ld_##SFX(Zin + c * ld + s), y = fb_ld_##SFX(Zin + c * ld + s + FB_LANES);\
                T m0 = m[0], m1 = m[so], m2 = m[2 * so], m3 = m[3 * so];                          \
                a0 += m0 * z; c0 += m0 * y;                                                       \
                a1 += m1 * z; c1 += m1 * y;                                                       \
                a2 += m2 * z; c2 += m2 * y;                                                       \
                a3 += m3 * z; c3 += m3 * y;                                                       \
            }                                                                                     \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s, a1);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s, a2);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s, a3);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s + FB_LANES, c0);                            \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s + FB_LANES, c1);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s + FB_LANES, c2);                      \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s + FB_LANES, c3);                      \
        }                                                                                         \
        for (; s < nsp; s += FB_LANES) {                                                          \
            VT a0 = (VT){0} + b0, a1 = (VT){0} + b1, a2 = (VT){0} + b2, a3 = (VT){0} + b3;        \
            const T *m = M + o * so;                                                              \
            for (fb_idx c = 0; c < n_in; c++, m += si) {                                          \
                VT z = fb_ld_##SFX(Zin + c * ld + s);                                             \
                a0 += m[0] * z;                                                                   \
                a1 += m[so] * z;                                                                  \
                a2 += m[2 * so] * z;                                                              \
                a3 += m[3 * so] * z;                                                              \
            }                                                                                     \
            fb_fin_st_##SFX(act, Zd, Aout, o * ld + s, a0);                                       \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 1) * ld + s, a1);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 2) * ld + s, a2);                                 \
            fb_fin_st_##SFX(act, Zd, Aout, (o + 3) * ld + s, a3);                                 \
        }                                                                                         \
    }                                                                                             \
    if (o < n_out)                                                                                \
        fb_matmul_tile_##SFX(M + o * so, so, si, bias ? bias + o : bias, Zin, n_in,               \
                             Aout + o * ld, n_out - o, nsp, ld, act, Zd ? Zd + o * ld : Zd);      \
}                                                                                                 \
                                                                                                  \
static void fb_matmul_##SFX(int wide, const T *M, fb_idx so, fb_idx si, const T *bias,           \
                            const T *Zin, fb_idx n_in, T *Aout, fb_idx n_out, fb_idx nsp,         \
                            fb_idx ld, int act, const T *Zd)                                      \
{                                                                                                 \
    if (FB_WIDE && wide)                                                                          \
        fb_matmul16_##SFX(M, so, si, bias, Zin, n_in, Aout, n_out, nsp, ld, act, Zd);             \
    else fb_matmul_tile_##SFX(M, so, si, bias, Zin, n_in, Aout, n_out, nsp, ld, act, Zd);         \
}

FB_DEFINE_MATMUL_WIDE(double, fb_vd, d)
FB_DEFINE_MATMUL_WIDE(float, fb_vf, f)

/* AVX-512 variant of fb_grad_tile (the lane-sum gradient of narrow layers): blocks of 4 inputs x
 * 4 outputs (16 accumulators, 8 loads per 16 multiply-adds, where fb_grad_tile's 1 x 4 blocks
 * load 5 per 4), their 16 lane sums reduced two fb_hsum8 at a time; the outputs in groups of 4,
 * each group's delta rows kept in L1 while the inputs stream. Leftover inputs go 1 x 4, leftover
 * outputs one at a time, as fb_grad_tile. Each sum's order is fixed by the code. */
#define FB_DEFINE_GRAD_WIDE(T, VT, SFX)                                                           \
FB_V4 static void fb_grad16_##SFX(const T *Z, fb_idx n_in, const T *D, fb_idx n_out, double *dW,  \
                                  double *db, fb_idx nsp, fb_idx ld)                              \
{                                                                                                 \
    const fb_idx n_in4 = n_in / 4 * 4, n_out4 = n_out / 4 * 4;                                    \
    for (fb_idx j = 0; j < n_out4; j += 4) {                                                      \
        const T *d = D + j * ld;                                                                  \
        fb_idx i = 0;                                                                             \
        for (; i < n_in4; i += 4) {                                                               \
            const T *z = Z + i * ld;                                                              \
            fb_vd a00 = {0}, a01 = {0}, a02 = {0}, a03 = {0}, a10 = {0}, a11 = {0}, a12 = {0};    \
            fb_vd a13 = {0}, a20 = {0}, a21 = {0}, a22 = {0}, a23 = {0}, a30 = {0}, a31 = {0};    \
            fb_vd a32 = {0}, a33 = {0};                                                           \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd d0 = fb_wide_##SFX(fb_ld_##SFX(d + s));                                     \
                fb_vd d1 = fb_wide_##SFX(fb_ld_##SFX(d + ld + s));                                \
                fb_vd d2 = fb_wide_##SFX(fb_ld_##SFX(d + 2 * ld + s));                            \
                fb_vd d3 = fb_wide_##SFX(fb_ld_##SFX(d + 3 * ld + s));                            \
                fb_vd z0 = fb_wide_##SFX(fb_ld_##SFX(z + s));                                     \
                fb_vd z1 = fb_wide_##SFX(fb_ld_##SFX(z + ld + s));                                \
                fb_vd z2 = fb_wide_##SFX(fb_ld_##SFX(z + 2 * ld + s));                            \
                fb_vd z3 = fb_wide_##SFX(fb_ld_##SFX(z + 3 * ld + s));                            \
                a00 += z0 * d0; a01 += z0 * d1; a02 += z0 * d2; a03 += z0 * d3;                   \
                a10 += z1 * d0; a11 += z1 * d1; a12 += z1 * d2; a13 += z1 * d3;                   \
                a20 += z2 * d0; a21 += z2 * d1; a22 += z2 * d2; a23 += z2 * d3;                   \
                a30 += z3 * d0; a31 += z3 * d1; a32 += z3 * d2; a33 += z3 * d3;                   \
            }                                                                                     \
            fb_vd r0 = fb_hsum8(a00, a01, a02, a03, a10, a11, a12, a13);                          \
            fb_vd r1 = fb_hsum8(a20, a21, a22, a23, a30, a31, a32, a33);                          \
            double *g = dW + i * n_out + j;                                                       \
            for (int k = 0; k < 4; k++) {                                                         \
                g[k] += r0[k];                                                                    \
                g[n_out + k] += r0[4 + k];                                                        \
                g[2 * n_out + k] += r1[k];                                                        \
                g[3 * n_out + k] += r1[4 + k];                                                    \
            }                                                                                     \
        }                                                                                         \
        for (; i < n_in; i++) {                                                                   \
            const T *z = Z + i * ld;                                                              \
            fb_vd a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                         \
            for (fb_idx s = 0; s < nsp; s += FB_LANES) {                                          \
                fb_vd zs = fb_wide_##SFX(fb_ld_##SFX(z + s));                                     \
                a0 += zs * fb_wide_##SFX(fb_ld_##SFX(d + s));                                     \
                a1 += zs * fb_wide_##SFX(fb_ld_##SFX(d + ld + s));                                \
                a2 += zs * fb_wide_##SFX(fb_ld_##SFX(d + 2 * ld + s));                            \
                a3 += zs * fb_wide_##SFX(fb_ld_##SFX(d + 3 * ld + s));                            \
            }                                                                                     \
            double *g = dW + i * n_out + j;                                                       \
            g[0] += fb_hsum(a0);                                                                  \
            g[1] += fb_hsum(a1);                                                                  \
            g[2] += fb_hsum(a2);                                                                  \
            g[3] += fb_hsum(a3);                                                                  \
        }                                                                                         \
    }                                                                                             \
    for (fb_idx j = n_out4; j < n_out; j++)                                                       \
        for (fb_idx i = 0; i < n_in; i++) {                                                       \
            fb_vd a0 = {0};                                                                       \
            for (fb_idx s = 0; s < nsp; s += FB_LANES)                                            \
                a0 += fb_wide_##SFX(fb_ld_##SFX(Z + i * ld + s)) *                                \
                      fb_wide_##SFX(fb_ld_##SFX(D + j * ld + s));                                 \
            dW[i * n_out + j] += fb_hsum(a0);                                                     \
        }                                                                                         \
    fb_bias_grad_tile_##SFX(D, n_out, db, nsp, ld);                                               \
}                                                                                                 \
                                                                                                  \
static void fb_grad_##SFX(int wide, const T *Z, fb_idx n_in, const T *D, fb_idx n_out, double *dW,\
                          double *db, fb_idx nsp, fb_idx ld)                                      \
{                                                                                                 \
    if (FB_WIDE && wide)                                                                          \
        fb_grad16_##SFX(Z, n_in, D, n_out, dW, db, nsp, ld);                                      \
    else fb_grad_tile_##SFX(Z, n_in, D, n_out, dW, db, nsp, ld);                                  \
}

FB_DEFINE_GRAD_WIDE(double, fb_vd, d)
FB_DEFINE_GRAD_WIDE(float, fb_vf, f)

#endif /* FB_SIMD_H */
