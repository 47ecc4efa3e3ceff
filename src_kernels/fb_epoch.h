/*
 * fb_epoch.h: the per-batch arithmetic of a minibatch epoch (fb_epoch.pxi) outside the kernel:
 * NumPy's pairwise sum of the batch weights, the L2 term of the batch's loss, and the
 * optimizers' steps (scikit-learn's SGD with momentum / Nesterov and Adam, as fastbp.optimizers
 * writes them in NumPy), on the flat weights and the optimizer's state, in place.
 *
 * The steps follow NumPy's rounding operation for operation: every product and sum rounded on
 * its own in the state's dtype, Adam's quotient in double (its rate is a float64 scalar to
 * NumPy). So no multiply and add may be fused into one FMA here (GCC fuses by default wherever
 * the target has FMA, as the x86-64-v3/v4 clones do): FB_NO_CONTRACT turns that off for these
 * functions (GCC: an optimize attribute; Clang: a pragma in the function's body). With it a
 * float64 epoch's weights and state equal the reference epoch's to the bit; without it (another
 * compiler) to round-off. The loops are dispatched like the kernel's (FB_DISPATCH, fb_simd.h),
 * so the AVX-512 clone steps 8 doubles at a time (Adam's square root vectorizes only without
 * errno: setup.py compiles with -fno-math-errno): on a network of thousands of weights and a
 * batch of 32 samples the step is a good part of a batch.
 *
 * The L2 term Σ_coef W² (for the reported loss only; the gradient's 2 l2 W is per weight) is
 * summed in 8 interleaved partial sums, lane j holding the weights k ≡ j (mod 8), combined as
 * ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)): an order that vectorizes, the same on
 * every machine, and equal to the kernel call's sequential sum to round-off.
 */
#ifndef FB_EPOCH_H
#define FB_EPOCH_H

#include <math.h>

#include "fb_simd.h"

/* FB_NO_CONTRACT on a function (GCC), FB_NO_CONTRACT_HERE first in its body (Clang) */
#if defined(__clang__)
#define FB_NO_CONTRACT
#define FB_NO_CONTRACT_HERE _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define FB_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define FB_NO_CONTRACT_HERE
#else
#define FB_NO_CONTRACT
#define FB_NO_CONTRACT_HERE
#endif

/* NumPy's float64 sum (its pairwise summation), bit for bit: in order below 8 values; up to 128,
 * 8 accumulators over the multiples of 8, combined as a tree, then the rest in order; above, the
 * halves (split at n/2 rounded down to a multiple of 8) summed so and added. */
static double fb_pairwise_sum(const double *a, fb_idx n)
{
    if (n < 8) {
        double res = 0.0;
        for (fb_idx i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        fb_idx i = 8;
        for (; i < n - n % 8; i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    fb_idx n2 = n / 2;
    n2 -= n2 % 8;
    return fb_pairwise_sum(a, n2) + fb_pairwise_sum(a + n2, n - n2);
}

/* A monotonic clock in nanoseconds for the epoch's choice of threads (fb_epoch.pxi); 0 where
 * there is none (the epoch then keeps its threads). */
#if defined(__unix__) || defined(__APPLE__)
#include <time.h>
static inline double fb_epoch_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}
#else
static inline double fb_epoch_clock_ns(void) { return 0.0; }
#endif

#define FB_EPOCH_STEPS(T, SFX, SQRT)                                                               \
/* Σ_{k < n} W_k² in double, in 8 interleaved partial sums (see the top of the file). */           \
FB_DISPATCH FB_NO_CONTRACT static double fb_penalty_##SFX(const T *W, fb_idx n)                    \
{                                                                                                  \
    FB_NO_CONTRACT_HERE                                                                            \
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                        \
    fb_idx k = 0;                                                                                  \
    for (; k + 8 <= n; k += 8)                                                                     \
        for (int j = 0; j < 8; j++) s[j] += (double)W[k + j] * (double)W[k + j];                   \
    for (int j = 0; k + j < n; j++) s[j] += (double)W[k + j] * (double)W[k + j];                   \
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                      \
}                                                                                                  \
                                                                                                   \
/* weights [lo, hi): g_k = scale Σ_k (+ 2 l2 W_k where l2_term), rounded to T; then u = μ v − η g, \
 * v ← u, (Nesterov) u = μ v − η g, W ← W + u, each operation in T */                             \
FB_INLINE FB_NO_CONTRACT void fb_sgd_range_##SFX(T *W, const double *g, T *V, fb_idx lo, fb_idx hi,\
                                                 double scale, int l2_term, double two_l2, T eta,  \
                                                 T mu, int nesterov)                               \
{                                                                                                  \
    FB_NO_CONTRACT_HERE                                                                            \
    for (fb_idx k = lo; k < hi; k++) {                                                             \
        double gk = g[k] * scale;                                                                  \
        if (l2_term) gk += two_l2 * (double)W[k];                                                  \
        T gd = (T)gk;                                                                              \
        T lg = eta * gd;                                                                           \
        T v = mu * V[k];                                                                           \
        v = v - lg;                                                                                \
        V[k] = v;                                                                                  \
        if (nesterov)                                                                              \
            W[k] = W[k] + (mu * v - lg);                                                           \
        else                                                                                       \
            W[k] = W[k] + v;                                                                       \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* SGD's step on the n weights, the first n_coef of them coefficients (with the L2 term). */       \
FB_DISPATCH FB_NO_CONTRACT static void fb_sgd_step_##SFX(T *W, const double *g, T *V, fb_idx n,    \
                                                         fb_idx n_coef, double scale,              \
                                                         double two_l2, double lr,                 \
                                                         double momentum, int nesterov)            \
{                                                                                                  \
    FB_NO_CONTRACT_HERE                                                                            \
    const T eta = (T)lr, mu = (T)momentum;                                                         \
    if (nesterov) {                                                                                \
        fb_sgd_range_##SFX(W, g, V, 0, n_coef, scale, 1, two_l2, eta, mu, 1);                      \
        fb_sgd_range_##SFX(W, g, V, n_coef, n, scale, 0, two_l2, eta, mu, 1);                      \
    } else {                                                                                       \
        fb_sgd_range_##SFX(W, g, V, 0, n_coef, scale, 1, two_l2, eta, mu, 0);                      \
        fb_sgd_range_##SFX(W, g, V, n_coef, n, scale, 0, two_l2, eta, mu, 0);                      \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* weights [lo, hi): g as above; m ← β₁ m + (1 − β₁) g, v ← β₂ v + (1 − β₂) g² in T;              \
 * W ← W + (−η_t m) / (√v + ε) with the quotient in double and the sum rounded to T */            \
FB_INLINE FB_NO_CONTRACT void fb_adam_range_##SFX(T *W, const double *g, T *M, T *V, fb_idx lo,    \
                                                  fb_idx hi, double scale, int l2_term,            \
                                                  double two_l2, double neg_rate, T b1, T b2,      \
                                                  T c1, T c2, T eps)                               \
{                                                                                                  \
    FB_NO_CONTRACT_HERE                                                                            \
    for (fb_idx k = lo; k < hi; k++) {                                                             \
        double gk = g[k] * scale;                                                                  \
        if (l2_term) gk += two_l2 * (double)W[k];                                                  \
        T gd = (T)gk;                                                                              \
        T m = b1 * M[k];                                                                           \
        m = m + c1 * gd;                                                                           \
        M[k] = m;                                                                                  \
        T v = b2 * V[k];                                                                           \
        v = v + c2 * (gd * gd);                                                                    \
        V[k] = v;                                                                                  \
        double u = (neg_rate * (double)m) / (double)(SQRT(v) + eps);                               \
        W[k] = (T)((double)W[k] + u);                                                              \
    }                                                                                              \
}                                                                                                  \
                                                                                                   \
/* Adam's step with the bias-corrected rate `rate` on the n weights, the first n_coef of them      \
 * coefficients (with the L2 term). */                                                             \
FB_DISPATCH FB_NO_CONTRACT static void fb_adam_step_##SFX(T *W, const double *g, T *M, T *V,       \
                                                          fb_idx n, fb_idx n_coef, double scale,   \
                                                          double two_l2, double rate,              \
                                                          double beta_1, double beta_2,            \
                                                          double epsilon)                          \
{                                                                                                  \
    FB_NO_CONTRACT_HERE                                                                            \
    const T b1 = (T)beta_1, b2 = (T)beta_2, c1 = (T)(1.0 - beta_1), c2 = (T)(1.0 - beta_2);        \
    const T eps = (T)epsilon;                                                                      \
    fb_adam_range_##SFX(W, g, M, V, 0, n_coef, scale, 1, two_l2, -rate, b1, b2, c1, c2, eps);      \
    fb_adam_range_##SFX(W, g, M, V, n_coef, n, scale, 0, two_l2, -rate, b1, b2, c1, c2, eps);      \
}

FB_EPOCH_STEPS(double, d, sqrt)
FB_EPOCH_STEPS(float, f, sqrtf)

#endif /* FB_EPOCH_H */
