/*
 * fb_fpenv.h: subnormal numbers flushed to zero on the kernel's threads, for one call at a time.
 *
 * Why: a saturated network (confident sigmoids and softmax, as late in training) makes tiny
 * probabilities and deltas, and their products in the tiles and in BLAS fall below the smallest
 * normal number. Many x86 cores (Intel's in particular) take a microcode assist of a hundred
 * cycles or more for each operation with a subnormal input or result, so such calls ran 2-3x
 * slower than the same call with small weights. With flush-to-zero (FTZ: a subnormal result
 * becomes 0) and denormals-are-zero (DAZ: a subnormal input is read as 0) the hardware takes the
 * fast path whatever the weights. What changes in the results: only values below the smallest
 * normal number of the compute dtype (2.2e-308 in float64, 1.2e-38 in float32), which become 0.
 *
 * fb_flush_begin() sets FTZ and DAZ on the calling thread and returns the previous control word;
 * fb_flush_end(saved) puts the two bits back as they were (other bits, and the exception flags
 * the call raised, are left alone), so code outside the kernel never sees a changed environment.
 * fb_fpenv_get() / fb_fpenv_adopt(word) read a thread's control word and give another thread the
 * same mode bits: the pool's workers and OpenMP threads run every block of a call under the
 * caller's mode, so which thread runs a block never changes its bits.
 *
 * Where: x86 and x86-64 with SSE (MXCSR bits FTZ 15 and DAZ 6), aarch64 (FPCR bit FZ 24, which
 * flushes inputs and results alike). Elsewhere the functions do nothing and subnormals are
 * computed as IEEE 754 says. FB_NO_FLUSH (defined at build time) also turns it off, for tests.
 */
#ifndef FB_FPENV_H
#define FB_FPENV_H

#include <stdint.h>

typedef uint64_t fb_fpenv_t;

#if !defined(FB_NO_FLUSH) && (defined(__SSE__) || defined(_M_X64) || \
    (defined(_M_IX86_FP) && _M_IX86_FP >= 1))
#include <xmmintrin.h>
#define FB_HAVE_FLUSH 1
#define FB_FLUSH_BITS 0x8040u /* MXCSR: FTZ (bit 15) | DAZ (bit 6) */
static inline fb_fpenv_t fb_fpenv_get(void) { return (fb_fpenv_t)_mm_getcsr(); }
static inline void fb_fpenv_set(fb_fpenv_t w) { _mm_setcsr((unsigned int)w); }

#elif !defined(FB_NO_FLUSH) && defined(__aarch64__) && defined(__GNUC__)
#define FB_HAVE_FLUSH 1
#define FB_FLUSH_BITS ((fb_fpenv_t)1 << 24) /* FPCR: FZ */
static inline fb_fpenv_t fb_fpenv_get(void)
{
    uint64_t w;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(w));
    return w;
}
static inline void fb_fpenv_set(fb_fpenv_t w) { __asm__ __volatile__("msr fpcr, %0" : : "r"(w)); }

#else
#define FB_HAVE_FLUSH 0
#define FB_FLUSH_BITS 0u
static inline fb_fpenv_t fb_fpenv_get(void) { return 0; }
static inline void fb_fpenv_set(fb_fpenv_t w) { (void)w; }
#endif

/* the flush bits of this thread become those of `word` (written only when they differ: writing
 * the control register costs tens of cycles, reading it a few) */
static inline void fb_fpenv_adopt(fb_fpenv_t word)
{
#if FB_HAVE_FLUSH
    fb_fpenv_t now = fb_fpenv_get();
    if ((now & FB_FLUSH_BITS) != (word & FB_FLUSH_BITS))
        fb_fpenv_set((now & ~(fb_fpenv_t)FB_FLUSH_BITS) | (word & FB_FLUSH_BITS));
#else
    (void)word;
#endif
}

/* 0: calls leave the mode as they find it (a switch for tests and for measuring what flushing
 * saves; not for users: results are only deterministic for a fixed setting) */
static int fb_flush_enabled = 1;

static inline fb_fpenv_t fb_flush_begin(void)
{
    fb_fpenv_t saved = fb_fpenv_get();
    if (fb_flush_enabled) fb_fpenv_adopt(saved | FB_FLUSH_BITS);
    return saved;
}

static inline void fb_flush_end(fb_fpenv_t saved) { fb_fpenv_adopt(saved); }

/* 1 when this thread flushes subnormals now (tests) */
static inline int fb_flushing(void)
{
    return FB_HAVE_FLUSH && (fb_fpenv_get() & FB_FLUSH_BITS) == FB_FLUSH_BITS;
}

#endif /* FB_FPENV_H */
