# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True, nonecheck=False, embedsignature=True
"""fastbp's compiled backpropagation kernel (the ``cython`` backend's engine).

One source for float32 and float64 (the fused type ``floating``). Per call:

1. the samples are cut into tiles of ``ld`` samples; each tile is held unit-major (the value of
   unit j for sample s at ``P[j * ld + s]``), so the inner loops run over contiguous samples;
2. the tiles are dealt out as contiguous blocks, one block per thread, run by the pool of
   ``fb_pool.h`` (the calling thread runs any block no worker has claimed, so a busy machine
   never makes a call wait for a thread to start); each block owns its scratch and its gradient
   buffer, and the buffers are summed in block order, so the result is bit-identical for a
   given thread count, whichever thread ran which block;
3. per tile, as in the lab (exercise 5a): forward ``a^{l+1} = W_l^T z^l + b_l``,
   ``z^{l+1} = σ(a^{l+1})``; at the output ``δ^L = ∂ℓ/∂a^L`` (``y − t``, times the sample
   weight); then down the layers ``∂loss/∂w_ij += δ_j z_i`` and ``δ^l = σ'(a^l) ⊙ (W_l δ^{l+1})``.

Wide layers (``n_in * n_out >= blas_min``) go through BLAS (``scipy.linalg.cython_blas``) on
the tile; the others through the register-blocked loops of ``fb_simd.h`` (AVX-512 blocks where
the CPU has them; the weight gradient of wide-output layers accumulated sample-major). The
scratch is allocated once per kernel and kept; nothing scales with the number of samples
except the loops.

Second order (Hessian-vector and Gauss-Newton products, for one direction or a block of them,
and the output Jacobian: the ``hessp``... methods of :class:`CythonKernel`) is Pearlmutter's
R-operator on the same plan, tiles and threads: ``_rop.pxi`` (included at the end) drives it,
``fb_rop.h`` holds its tile loops.
"""

cimport cython
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm
cimport numpy as cnp

import numpy as np

cnp.import_array()

ctypedef Py_ssize_t idx

cdef extern from "fb_simd.h" nogil:
    enum: FB_LANES
    enum: FB_IDENTITY
    void fb_matmul_tile_d(const double *M, idx so, idx si, const double *bias, const double *Zin,
                          idx n_in, double *Aout, idx n_out, idx nsp, idx ld,
                          int act, const double *Zd)
    void fb_matmul_tile_f(const float *M, idx so, idx si, const float *bias, const float *Zin,
                          idx n_in, float *Aout, idx n_out, idx nsp, idx ld,
                          int act, const float *Zd)
    void fb_grad_tile_d(const double *Z, idx n_in, const double *D, idx n_out, double *dW,
                        double *db, idx nsp, idx ld)
    void fb_grad_tile_f(const float *Z, idx n_in, const float *D, idx n_out, double *dW,
                        double *db, idx nsp, idx ld)
    void fb_grad_d(int wide, const double *Z, idx n_in, const double *D, idx n_out, double *dW,
                   double *db, idx nsp, idx ld)
    void fb_grad_f(int wide, const float *Z, idx n_in, const float *D, idx n_out, double *dW,
                   double *db, idx nsp, idx ld)
    void fb_bias_grad_tile_d(const double *D, idx n_out, double *db, idx nsp, idx ld)
    void fb_bias_grad_tile_f(const float *D, idx n_out, double *db, idx nsp, idx ld)
    void fb_activate_d(int act, double *A, idx n, idx nsp, idx ld)
    void fb_activate_f(int act, float *A, idx n, idx nsp, idx ld)
    void fb_dactivate_d(int act, const double *Z, double *D, idx n, idx nsp, idx ld)
    void fb_dactivate_f(int act, const float *Z, float *D, idx n, idx nsp, idx ld)
    double fb_output_tile_d(int out, const double *A, idx m, const double *Tt, const double *sw,
                            double *D, idx ns, idx nsp, idx ld, double *work)
    double fb_output_tile_f(int out, const float *A, idx m, const float *Tt, const double *sw,
                            float *D, idx ns, idx nsp, idx ld, double *work)
    void fb_load_tile_d(const double *X, idx n_in, double *Z, idx ns, idx nsp, idx ld)
    void fb_load_tile_f(const float *X, idx n_in, float *Z, idx ns, idx nsp, idx ld)
    void fb_add_bias_d(double *A, const double *b, idx n, idx nsp, idx ld)
    void fb_add_bias_f(float *A, const float *b, idx n, idx nsp, idx ld)
    void fb_transpose_tile_d(const double *D, idx n, double *DT, idx npad, idx nsp, idx ld,
                             double *db)
    void fb_transpose_tile_f(const float *D, idx n, float *DT, idx npad, idx nsp, idx ld,
                             double *db)
    void fb_gacc_d(int wide, const double *Z, idx n_in, const double *DT, idx npad, double *G,
                   idx nsp, idx ld)
    void fb_gacc_f(int wide, const float *Z, idx n_in, const float *DT, idx npad, double *G,
                   idx nsp, idx ld)
    void fb_matmul_d(int wide, const double *M, idx so, idx si, const double *bias,
                     const double *Zin, idx n_in, double *Aout, idx n_out, idx nsp, idx ld,
                     int act, const double *Zd)
    void fb_matmul_f(int wide, const float *M, idx so, idx si, const float *bias,
                     const float *Zin, idx n_in, float *Aout, idx n_out, idx nsp, idx ld,
                     int act, const float *Zd)
    void fb_gacc_flush(double *G, idx n_in, idx n, idx npad, double *dW)
    int fb_wide_ok()
    double fb_exp(double x)
    double fb_tanh(double x)
    double fb_logistic(double x)
    double fb_log1p_unit(double x)
    double fb_log_ge1(double x)

cdef extern from "fb_fpenv.h" nogil:
    ctypedef unsigned long long fb_fpenv_t
    fb_fpenv_t fb_flush_begin()
    void fb_flush_end(fb_fpenv_t saved)
    int fb_flushing()
    int FB_HAVE_FLUSH
    int fb_flush_enabled

cdef extern from "fb_pool.h" nogil:
    ctypedef void (*fb_task_fn)(void *ctx, int block, int slot) noexcept nogil
    void fb_pool_run(int K, int T, fb_task_fn fn, void *ctx)
    int FB_HAVE_POOL

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FB_HAVE_OPENMP 1
    #else
    #define FB_HAVE_OPENMP 0
    #endif
    """
    int FB_HAVE_OPENMP

cdef extern from *:
    """
    /* a kernel's cached scratch is taken by one call at a time; a concurrent call allocates */
    #if defined(_MSC_VER)
    #include <intrin.h>
    static int fb_try_acquire(long *f) { return _InterlockedExchange(f, 1) == 0; }
    static void fb_release(long *f) { _InterlockedExchange(f, 0); }
    #else
    static int fb_try_acquire(long *f) { return __atomic_exchange_n(f, 1, __ATOMIC_ACQUIRE) == 0; }
    static void fb_release(long *f) { __atomic_store_n(f, 0, __ATOMIC_RELEASE); }
    #endif
    """
    int fb_try_acquire(long *flag) nogil
    void fb_release(long *flag) nogil

ctypedef fused floating:
    float
    double

#: True when the extension was compiled with OpenMP.
HAVE_OPENMP = bool(FB_HAVE_OPENMP)
#: True when calls can run on several threads (POSIX threads, or OpenMP); False: serial build.
HAVE_THREADS = bool(FB_HAVE_POOL or FB_HAVE_OPENMP)
#: True when this CPU runs the AVX-512 register-blocked loops (x86-64-v4, checked at run time).
WIDE = bool(fb_wide_ok())
#: True when a call flushes subnormal numbers to zero on its threads (x86 SSE, aarch64; fb_fpenv.h).
FLUSHES_SUBNORMALS = bool(FB_HAVE_FLUSH)

cdef enum:
    MAX_LAYERS = 64  # deepest network the fixed-size plan holds
    BLOCKS_PER_THREAD = 4  # a threaded call's samples are cut into up to this many blocks a thread


cdef struct Plan:
    # the network
    int n_layers               # weight layers L (len(layer_sizes) - 1)
    int act, out               # activation and output codes (fastbp.layout)
    idx sizes[MAX_LAYERS + 1]
    idx coef_off[MAX_LAYERS]   # start of coef_l in W (row-major (n_in, n_out))
    idx int_off[MAX_LAYERS]    # start of intercept_l in W
    bint blas[MAX_LAYERS]      # layer l's tile products go through BLAS
    idx n_params, n_coef
    # the tiling
    idx ld                     # lanes per tile (a multiple of FB_LANES)
    idx buf_off[MAX_LAYERS + 1]  # offset of layer l's unit-major tile (z^l; a^L) in zbuf
    idx dbuf_off[MAX_LAYERS + 1]  # offset of layer l's deltas (l >= 1) in dbuf
    idx zbuf_len, dbuf_len     # elements (floating) of a thread's activations and deltas
    idx gtmp_len               # floats of a thread's sgemm gradient scratch (float32 + BLAS)
    # sample-major gradient accumulation (loop layers with n_out >= GACC_MIN_OUT)
    bint gacc[MAX_LAYERS]      # layer l's weight gradient goes through fb_gacc
    idx npad[MAX_LAYERS]       # n_out rounded up to 8
    idx gacc_off[MAX_LAYERS]   # offset (doubles) of layer l's accumulator G in a block's scratch
    idx gacc_len               # doubles of all the accumulators
    idx dt_len                 # elements (floating) of the transposed-delta tile DT
    int wide                   # AVX-512 register blocks (run-time check)


# ------------------------------------------------------------------------------ BLAS on tiles
# A tile matrix P (units x ld, unit-major) is, to column-major BLAS, a (ld x units) matrix with
# leading dimension ld; coef_l, row-major (n_in, n_out), is a column-major (n_out x n_in) matrix
# with leading dimension n_out, i.e. W^T.

cdef inline void _gemm(char ta, char tb, int m, int n, int k, const floating *a, int lda,
                       const floating *b, int ldb, floating beta, floating *c,
                       int ldc) noexcept nogil:
    """c = op(a) op(b) + beta c, column-major, through dgemm or sgemm."""
    cdef floating one = 1
    if floating is double:
        dgemm(&ta, &tb, &m, &n, &k, &one, <double *>a, &lda, <double *>b, &ldb, &beta, c, &ldc)
    else:
        sgemm(&ta, &tb, &m, &n, &k, &one, <float *>a, &lda, <float *>b, &ldb, &beta, c, &ldc)


# ------------------------------------------------------------------------ one block of samples
cdef double _block(const Plan *p, const floating *W, const floating *X, const floating *T,
                   const double *sw, idx s_begin, idx s_end, idx ts, double *g,
                   floating *buf, floating *dbuf, float *gtmp, double *work, floating *DT,
                   double *G) noexcept nogil:
    """Loss (weighted sum) of samples [s_begin, s_end), in tiles of ts <= ld samples; their
    gradient is added into g.

    buf holds every layer's unit-major tile (z^0 ... z^{L-1}, then a^L; no z^0 when layer 0
    reads X in place); dbuf the deltas of layers 1 ... L.
    """
    cdef int L = p.n_layers, l
    cdef idx ld = p.ld, s0, ns, nsp, n_in, n_out, i, j
    cdef idx n_outputs = p.sizes[L]
    cdef double loss = 0.0
    cdef floating *Z
    cdef floating *A
    cdef floating *D
    cdef floating *Dp
    cdef const floating *Wl
    cdef const floating *Xt
    cdef double *gW
    cdef double *gb
    cdef bint x_direct = p.blas[0]  # layer 0 reads X in place through BLAS (no transposed copy)
    cdef floating zero = 0
    cdef char cN = b'N', cT = b'T'

    s0 = s_begin
    while s0 < s_end:
        ns = min(ts, s_end - s0)
        nsp = (ns + FB_LANES - 1) // FB_LANES * FB_LANES
        Xt = X + s0 * p.sizes[0]

        # ---- forward: a^{l+1} = W_l^T z^l + b_l, z^{l+1} = σ(a^{l+1}) (a^L stays a)
        if not x_direct:
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
                if l == 0:  # X rows are, to BLAS, a column-major (n_in x ns) matrix: X^T
                    _gemm(cT, cT, <int>ns, <int>n_out, <int>n_in, <floating *>Xt,
                          <int>n_in, <floating *>Wl, <int>n_out, zero, A, <int>ld)
                    if nsp > ns:  # padding lanes: BLAS wrote ns rows; the rest must be defined
                        for j in range(n_out):
                            memset(A + j * ld + ns, 0, (nsp - ns) * sizeof(floating))
                else:
                    _gemm(cN, cT, <int>nsp, <int>n_out, <int>n_in, Z, <int>ld,
                          <floating *>Wl, <int>n_out, zero, A, <int>ld)
                if floating is double:
                    fb_add_bias_d(A, W + p.int_off[l], n_out, nsp, ld)
                else:
                    fb_add_bias_f(A, W + p.int_off[l], n_out, nsp, ld)
                if l < L - 1:
                    if floating is double:
                        fb_activate_d(p.act, A, n_out, nsp, ld)
                    else:
                        fb_activate_f(p.act, A, n_out, nsp, ld)
            else:  # σ applied in registers as each block of a^{l+1} is stored (same bits)
                if floating is double:
                    fb_matmul_d(p.wide, Wl, 1, n_out, W + p.int_off[l], Z, n_in, A, n_out, nsp, ld,
                                p.act if l < L - 1 else FB_IDENTITY, NULL)
                else:
                    fb_matmul_f(p.wide, Wl, 1, n_out, W + p.int_off[l], Z, n_in, A, n_out, nsp, ld,
                                p.act if l < L - 1 else FB_IDENTITY, NULL)

        # ---- output: δ^L = ∂ℓ/∂a^L (= y − t), times the sample weight; padding lanes get 0
        A = buf + p.buf_off[L]
        D = dbuf + p.dbuf_off[L]
        if floating is double:
            loss += fb_output_tile_d(p.out, A, n_outputs, T + s0 * n_outputs,
                                     sw + s0 if sw != NULL else NULL, D, ns, nsp, ld, work)
        else:
            loss += fb_output_tile_f(p.out, A, n_outputs, T + s0 * n_outputs,
                                     sw + s0 if sw != NULL else NULL, D, ns, nsp, ld, work)

        # ---- backward: ∂loss/∂w_ij += δ_j z_i; δ^l = σ'(a^l) ⊙ (W_l δ^{l+1})
        for l in range(L - 1, -1, -1):
            n_in = p.sizes[l]
            n_out = p.sizes[l + 1]
            Wl = W + p.coef_off[l]
            Z = buf + p.buf_off[l]
            D = dbuf + p.dbuf_off[l + 1]
            gW = g + p.coef_off[l]
            gb = g + p.int_off[l]
            if p.blas[l]:
                # gW^T (n_out x n_in, col-major) += D^T Z
                if floating is double:
                    if l == 0 and x_direct:  # X_tile is, to BLAS, X^T
                        _gemm(cT, cT, <int>n_out, <int>n_in, <int>ns, D, <int>ld, Xt,
                              <int>n_in, 1.0, gW, <int>n_out)
                    else:
                        _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, D, <int>ld, Z,
                              <int>ld, 1.0, gW, <int>n_out)
                    fb_bias_grad_tile_d(D, n_out, gb, nsp, ld)
                else:
                    # float32: the tile's product in float32, accumulated into g in float64
                    if l == 0 and x_direct:
                        _gemm(cT, cT, <int>n_out, <int>n_in, <int>ns, D, <int>ld,
                              <float *>Xt, <int>n_in, zero, gtmp, <int>n_out)
                    else:
                        _gemm(cT, cN, <int>n_out, <int>n_in, <int>nsp, D, <int>ld, Z,
                              <int>ld, zero, gtmp, <int>n_out)
                    for i in range(n_in * n_out):
                        gW[i] += gtmp[i]
                    fb_bias_grad_tile_f(D, n_out, gb, nsp, ld)
            elif p.gacc[l]:  # rank-1 updates over the tile's samples into G (no lane sums)
                # the bias gradient summed by the transpose, from its own loads (no pass over D)
                if floating is double:
                    fb_transpose_tile_d(D, n_out, DT, p.npad[l], nsp, ld, gb)
                    fb_gacc_d(p.wide, Z, n_in, DT, p.npad[l], G + p.gacc_off[l], nsp, ld)
                else:
                    fb_transpose_tile_f(D, n_out, DT, p.npad[l], nsp, ld, gb)
                    fb_gacc_f(p.wide, Z, n_in, DT, p.npad[l], G + p.gacc_off[l], nsp, ld)
            else:
                if floating is double:
                    fb_grad_d(p.wide, Z, n_in, D, n_out, gW, gb, nsp, ld)
                else:
                    fb_grad_f(p.wide, Z, n_in, D, n_out, gW, gb, nsp, ld)
            if l > 0:
                Dp = dbuf + p.dbuf_off[l]
                if p.blas[l]:  # Dp (ld x n_in) = D (ld x n_out) W^T^T
                    _gemm(cN, cN, <int>nsp, <int>n_in, <int>n_out, D, <int>ld,
                          <floating *>Wl, <int>n_out, zero, Dp, <int>ld)
                    if floating is double:
                        fb_dactivate_d(p.act, Z, Dp, n_in, nsp, ld)
                    else:
                        fb_dactivate_f(p.act, Z, Dp, n_in, nsp, ld)
                else:  # times σ'(a^l), from z^l, in registers as each block is stored
                    if floating is double:
                        fb_matmul_d(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld,
                                    p.act, Z)
                    else:
                        fb_matmul_f(p.wide, Wl, n_out, 1, NULL, D, n_out, Dp, n_in, nsp, ld,
                                    p.act, Z)
        s0 += ns
    for l in range(L):
        if p.gacc[l]:
            fb_gacc_flush(G + p.gacc_off[l], p.sizes[l], p.sizes[l + 1], p.npad[l],
                          g + p.coef_off[l])
    return loss


cdef inline idx _round64(idx nbytes) noexcept nogil:
    return (nbytes + 63) // 64 * 64


cdef inline char *_align64(char *p) noexcept nogil:
    return p + (-<size_t>p) % 64


cdef idx _thread_bytes(const Plan *p, int isz) noexcept nogil:
    """Bytes of one thread's scratch: tiles and deltas, output work, sgemm scratch, DT, G."""
    return (_round64((p.zbuf_len + p.dbuf_len) * isz) + _round64(4 * p.ld * sizeof(double))
            + _round64(p.gtmp_len * sizeof(float)) + _round64(p.dt_len * isz)
            + _round64(p.gacc_len * sizeof(double)))


cdef idx _arena_bytes(const Plan *p, int isz, int n_threads, int n_blocks) noexcept nogil:
    """Bytes of a call's whole scratch: per-block losses, W in float32, the threads' scratch,
    then the gradient buffers of blocks 1 ... n_blocks - 1 (block 0 writes the result)."""
    return (_round64(n_blocks * sizeof(double)) + _round64(p.n_params * sizeof(float))
            + n_threads * _thread_bytes(p, isz)
            + (n_blocks - 1) * _round64(p.n_params * sizeof(double)))


cdef double _block_task(const Plan *p, const floating *W, const floating *X, const floating *T,
                        const double *sw, idx s_begin, idx s_end, idx ts, double *g,
                        char *scratch) noexcept nogil:
    """One block of samples on its thread's scratch (every lane it reads is written first)."""
    cdef floating *buf = <floating *>scratch
    cdef double *work = <double *>(scratch + _round64((p.zbuf_len + p.dbuf_len)
                                                      * sizeof(floating)))
    cdef float *gtmp = <float *>(<char *>work + _round64(4 * p.ld * sizeof(double)))
    cdef floating *DT = <floating *>(<char *>gtmp + _round64(p.gtmp_len * sizeof(float)))
    cdef double *G = <double *>(<char *>DT + _round64(p.dt_len * sizeof(floating)))
    memset(G, 0, p.gacc_len * sizeof(double))
    return _block(p, W, X, T, sw, s_begin, s_end, ts, g, buf, buf + p.zbuf_len, gtmp, work, DT,
                  G)


cdef struct RunCtx:
    const Plan *p
    const void *W
    const void *X
    const void *T
    const double *sw
    idx n, tb, gstride
    int n_blocks
    double *grad
    double *losses
    char *threads     # thread slot t's scratch at threads + t * tb
    char *grads       # block b's gradient (b >= 1) at grads + (b - 1) * gstride


cdef inline void _one_block(const RunCtx *c, int b, int slot, const floating *W,
                            const floating *X, const floating *T) noexcept nogil:
    """Block b of c: samples [b n / B, (b + 1) n / B) (the blocks differ by one sample at most;
    the split depends on n and B only), in as few tiles of at most ld samples as it takes, of
    equal size rounded up to 8 lanes (100 samples with ld = 40: 40, 40, 20), into its own
    gradient buffer (block 0: the result's) and loss slot, on the scratch of thread `slot`."""
    cdef idx P = c.p.n_params, ld = c.p.ld
    cdef idx s_begin = b * c.n // c.n_blocks, s_end = (b + 1) * c.n // c.n_blocks
    cdef idx n_tiles = (s_end - s_begin + ld - 1) // ld
    cdef idx ts = (s_end - s_begin + n_tiles - 1) // max(n_tiles, 1)
    cdef double *gb = c.grad if b == 0 else <double *>(c.grads + (b - 1) * c.gstride)
    ts = min(ld, (ts + FB_LANES - 1) // FB_LANES * FB_LANES)
    if b > 0:
        memset(gb, 0, P * sizeof(double))
    c.losses[b] = _block_task(c.p, W, X, T, c.sw, s_begin, s_end, max(ts, FB_LANES), gb,
                              c.threads + slot * c.tb)


cdef void _task_d(void *ctx, int b, int slot) noexcept nogil:
    cdef const RunCtx *c = <const RunCtx *>ctx
    _one_block(c, b, slot, <const double *>c.W, <const double *>c.X, <const double *>c.T)


cdef void _task_f(void *ctx, int b, int slot) noexcept nogil:
    cdef const RunCtx *c = <const RunCtx *>ctx
    _one_block(c, b, slot, <const float *>c.W, <const float *>c.X, <const float *>c.T)


cdef void _run(const Plan *p, const floating *W, const floating *X, const floating *T,
               const double *sw, idx n, int n_threads, int n_blocks, double *grad,
               double *loss, char *arena) noexcept nogil:
    """Loss and unscaled gradient (into grad) over all n samples in n_blocks blocks, run by
    n_threads threads of the pool (fb_pool.h) and reduced in block order: bit-identical for a
    given number of blocks, whichever thread ran which block."""
    cdef RunCtx c
    cdef int b
    cdef idx k, P = p.n_params
    cdef double *gb
    c.p = p
    c.W = W
    c.X = X
    c.T = T
    c.sw = sw
    c.n = n
    c.n_blocks = n_blocks
    c.tb = _thread_bytes(p, sizeof(floating))
    c.gstride = _round64(P * sizeof(double))
    c.grad = grad
    c.losses = <double *>arena
    c.threads = arena + _round64(n_blocks * sizeof(double)) + _round64(P * sizeof(float))
    c.grads = c.threads + n_threads * c.tb
    memset(grad, 0, P * sizeof(double))
    if floating is double:
        fb_pool_run(n_blocks, n_threads, _task_d, &c)
    else:
        fb_pool_run(n_blocks, n_threads, _task_f, &c)
    loss[0] = c.losses[0]
    for b in range(1, n_blocks):
        loss[0] += c.losses[b]
        gb = <double *>(c.grads + (b - 1) * c.gstride)
        for k in range(P):
            grad[k] += gb[k]


# ---------------------------------------------------------------------------- the Python face
cdef inline bint _is_c_array(object a, int typenum, int ndim) noexcept:
    return (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum
            and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


cdef struct ThreadChoice:  # the epochs' choice of threads (see "Threads" in fb_epoch.pxi)
    double ns_alone    # a full batch's kernel time on the calling thread alone (moving average; 0: not yet timed)
    double ns_threads  # ... on the kernel's threads
    long long epochs   # epochs that had full threaded batches


cdef class CythonKernel:
    """The bound kernel of one layout: ``kernel(W, X, T, sample_weight, scale, l2)``.

    See :mod:`fastbp.backends` for the protocol. Built by :func:`make_kernel`; everything that
    does not depend on the data is computed there, once. The scratch (every thread's tiles and
    gradient buffer) is allocated on the first call and kept: a call allocates nothing but the
    gradient it returns (a call made while another is running on the same kernel, from another
    Python thread, allocates its own scratch).
    """

    cdef Plan plan
    cdef readonly int n_threads
    cdef readonly bint float32
    cdef readonly idx tile
    cdef readonly idx min_samples_per_thread
    cdef readonly idx min_block
    cdef readonly idx many_blocks_min
    cdef readonly object blas_layers
    cdef readonly object gacc_layers
    cdef char *arena       # 64-byte aligned, inside arena_raw
    cdef char *arena_raw
    cdef long arena_busy
    cdef char *rop_raw     # the second order's scratch (_rop.pxi), kept like arena
    cdef idx rop_bytes
    cdef long rop_busy
    cdef ThreadChoice choice  # the epochs' choice of threads (fb_epoch.pxi)

    def __dealloc__(self):
        free(self.arena_raw)
        free(self.rop_raw)

    def __call__(self, W, X, T, sample_weight, double scale, double l2):
        cdef idx n, k, P = self.plan.n_params, n_coef = self.plan.n_coef
        cdef int n_threads, n_blocks, typenum = cnp.NPY_FLOAT if self.float32 else cnp.NPY_DOUBLE
        cdef cnp.npy_intp dim = P
        cdef const double *w
        cdef const double *swp = NULL
        cdef const void *xp
        cdef const void *tp
        cdef double *g
        cdef double loss = 0.0, penalty = 0.0
        cdef char *arena
        cdef char *raw = NULL
        cdef bint own
        cdef float *Wf
        cdef fb_fpenv_t env
        # the protocol's arrays, checked cheaply (a wrong one would be a wild memory read)
        if not (_is_c_array(W, cnp.NPY_DOUBLE, 1) and cnp.PyArray_DIM(<cnp.ndarray>W, 0) == P):
            raise ValueError(f"W must be a C-contiguous float64 vector of length {P}")
        if not (_is_c_array(X, typenum, 2)
                and cnp.PyArray_DIM(<cnp.ndarray>X, 1) == self.plan.sizes[0]):
            raise ValueError("X must be a C-contiguous 2-D array of the kernel's dtype and width")
        n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
        if not (_is_c_array(T, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>T, 0) == n
                and cnp.PyArray_DIM(<cnp.ndarray>T, 1) == self.plan.sizes[self.plan.n_layers]):
            raise ValueError("T must be a C-contiguous (n, n_outputs) array of the kernel's dtype")
        if sample_weight is not None:
            if not (_is_c_array(sample_weight, cnp.NPY_DOUBLE, 1)
                    and cnp.PyArray_DIM(<cnp.ndarray>sample_weight, 0) == n):
                raise ValueError("sample_weight must be None or a C-contiguous float64 (n,) array")
            swp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>sample_weight)
        w = <const double *>cnp.PyArray_DATA(<cnp.ndarray>W)
        xp = cnp.PyArray_DATA(<cnp.ndarray>X)
        tp = cnp.PyArray_DATA(<cnp.ndarray>T)
        n_threads = self._n_blocks(n)
        n_blocks = self._call_blocks(n, n_threads)
        grad = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_DOUBLE, 0)
        g = <double *>cnp.PyArray_DATA(<cnp.ndarray>grad)

        own = fb_try_acquire(&self.arena_busy)
        # the scratch is laid out in 64-byte units: aligned, no 8-lane vector of a tile crosses a
        # cache line (malloc's 16-byte alignment made every other one split, ~7% of medium)
        if own and self.arena == NULL:
            self.arena_raw = <char *>malloc(_arena_bytes(&self.plan, 4 if self.float32 else 8,
                                                         self.n_threads,
                                                         BLOCKS_PER_THREAD * self.n_threads) + 64)
            if self.arena_raw != NULL:
                self.arena = _align64(self.arena_raw)
        if own:
            arena = self.arena
        else:
            raw = <char *>malloc(
                _arena_bytes(&self.plan, 4 if self.float32 else 8, n_threads, n_blocks) + 64)
            arena = _align64(raw) if raw != NULL else NULL
        if arena == NULL:
            if own:
                fb_release(&self.arena_busy)
            raise MemoryError("the cython kernel could not allocate its scratch")
        with nogil:
            # subnormals flushed to zero on every thread of the call, put back before returning
            env = fb_flush_begin()
            if self.float32:
                Wf = <float *>(arena + _round64(n_blocks * sizeof(double)))
                for k in range(P):
                    Wf[k] = <float>w[k]  # W rounded to the compute dtype
                _run(&self.plan, <const float *>Wf, <const float *>xp, <const float *>tp, swp, n,
                     n_threads, n_blocks, g, &loss, arena)
            else:
                _run(&self.plan, w, <const double *>xp, <const double *>tp, swp, n, n_threads,
                     n_blocks, g, &loss, arena)
            fb_flush_end(env)
            # grad = scale Σ s_n ∂ℓ_n/∂W + 2 λ W (coefficients only); loss likewise
            for k in range(P):
                g[k] *= scale
            if l2 != 0.0:
                for k in range(n_coef):
                    g[k] += (2.0 * l2) * w[k]
                    penalty += w[k] * w[k]
        if own:
            fb_release(&self.arena_busy)
        else:
            free(raw)
        return scale * loss + l2 * penalty, grad

    @property
    def wide(self):
        """Whether the AVX-512 register blocks are used."""
        return bool(self.plan.wide)

    # second order (_rop.pxi): see fastbp.backends for the protocol
    def hessp(self, W, V, X, T, sample_weight, double scale, double l2):
        """``H V``: float64 (n_params,) for V of shape (n_params,)."""
        return _rop_call(self, W, V, X, T, sample_weight, scale, l2, False, False)

    def hessp_block(self, W, V, X, T, sample_weight, double scale, double l2, bint upper=False):
        """``H V[d]`` for each row of V (k, n_params), in one pass over the samples (upper: only
        the entries of V[d]'s first nonzero layer and above, the rest 0)."""
        return _rop_call(self, W, V, X, T, sample_weight, scale, l2, False, True, upper)

    def gauss_newton_product(self, W, V, X, T, sample_weight, double scale, double l2):
        """``G V``: float64 (n_params,)."""
        return _rop_call(self, W, V, X, T, sample_weight, scale, l2, True, False)

    def gauss_newton_block(self, W, V, X, T, sample_weight, double scale, double l2):
        """``G V[d]`` for each row of V (k, n_params), in one pass over the samples."""
        return _rop_call(self, W, V, X, T, sample_weight, scale, l2, True, True)

    def output_jacobian(self, W, X, row_scale, out):
        """Row ``n * n_outputs + j`` of out = ``row_scale[n] * ∂a^L_{n,j}/∂W``."""
        _jacobian_call(self, W, X, row_scale, out)

    @property
    def max_directions(self):
        """Most directions ``Network.hess`` passes to one ``hessp_block`` call."""
        return max(1, min(MAX_DIRECTIONS, MAX_DIRECTION_VALUES // self.plan.n_params))

    cpdef int _n_blocks(self, idx n):
        """Threads used on n samples: enough samples per thread to pay for starting it."""
        cdef idx by_size = n // self.min_samples_per_thread
        cdef idx by_blocks = (n + self.min_block - 1) // self.min_block
        return <int>max(1, min(self.n_threads, by_size, by_blocks))

    cdef int _call_blocks(self, idx n, int n_threads) noexcept:
        """Blocks a call on n samples with n_threads threads is cut into: one per thread below
        many_blocks_min samples; from there more blocks than threads, claimed as threads come
        free (a thread slowed down by a competitor on its core runs fewer of them), but no more
        blocks than tiles of ld samples, unless that is fewer than the threads (blocks of
        min_block samples, for networks whose BLAS tiles are large). The split depends on n and
        n_threads only."""
        if n_threads == 1 or n < self.many_blocks_min:
            return n_threads
        return <int>max(n_threads, min(
            BLOCKS_PER_THREAD * n_threads, (n + self.plan.ld - 1) // self.plan.ld))

    @property
    def epoch_timing(self):
        """The epochs' choice of threads (``src_kernels/fb_epoch.pxi``, "Threads"): a full
        batch's kernel time alone and on the threads (moving averages, ns; 0 until timed) and the
        epochs that chose, as a tuple; assigning such a tuple sets them (tests)."""
        return (self.choice.ns_alone, self.choice.ns_threads, self.choice.epochs)

    @epoch_timing.setter
    def epoch_timing(self, value):
        self.choice.ns_alone, self.choice.ns_threads, self.choice.epochs = value

    def run_epoch(self, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
        """One epoch of minibatch training in one call, without the GIL: per batch the kernel's
        loss and gradient and the optimizer's step, in place on ``W`` and the optimizer's state.
        The protocol is in :mod:`fastbp.backends`; the code in ``src_kernels/fb_epoch.pxi``."""
        return _kernel_run_epoch(self, W, X, T, sample_weight, order, batch_size, alpha, optimizer)


include "fb_epoch.pxi"


def make_kernel(layer_sizes, int activation_code, int output_code, bint float32, int n_threads,
                idx tile, idx blas_min, idx min_samples_per_thread, bint serial_blas,
                idx gacc_min_out=8, wide=None, idx min_block=0, idx many_blocks_min=0):
    """Precompute the plan of one network and return its :class:`CythonKernel`.

    Parameters
    ----------
    layer_sizes : sequence of int
    activation_code, output_code : int
        Codes of :data:`fastbp.layout.ACTIVATIONS` and :data:`fastbp.layout.OUTPUTS`.
    float32 : bool
        Compute in float32 (accumulating in float64) instead of float64.
    n_threads : int
        Most threads a call may use (fewer on small calls, see ``min_samples_per_thread``).
    tile : int
        Samples per tile, rounded up to a multiple of 8.
    blas_min : int
        Layers with ``n_in * n_out >= blas_min`` multiply their tiles through BLAS.
    min_samples_per_thread : int
        A call on n samples uses at most ``n // min_samples_per_thread`` threads.
    serial_blas : bool
        Run the tiles on one thread and leave the parallelism to BLAS (very wide layers).
    gacc_min_out : int
        Loop (non-BLAS) layers with at least this many outputs accumulate their weight gradient
        sample-major (rank-1 updates into a register-blocked accumulator, ``fb_gacc``); narrower
        ones sum lane-wise per tile (``fb_grad_tile``).
    wide : bool or None
        Use the AVX-512 register blocks (4 x 16 lanes); None: when the CPU has them (``WIDE``).
        Both give the same bits: only the blocking differs, not the order of any sum.
    min_block : int
        Fewest samples a threaded call gives a block (a call's tiles shrink below ``tile`` to
        make blocks that small); 0: ``tile``.
    many_blocks_min : int
        Fewest samples of a threaded call cut into more blocks than threads (up to
        ``BLOCKS_PER_THREAD`` each); a smaller call gets one block per thread.
    """
    cdef CythonKernel k = CythonKernel.__new__(CythonKernel)
    cdef int L = len(layer_sizes) - 1, l
    cdef idx off, width_sum, n_coef
    if L < 1 or L > MAX_LAYERS:
        raise ValueError(f"the cython kernel takes 1 to {MAX_LAYERS} weight layers, got {L}")
    if tile < 1 or n_threads < 1 or min_samples_per_thread < 1:
        raise ValueError("tile, n_threads and min_samples_per_thread must be positive")
    k.plan.n_layers = L
    k.plan.act = activation_code
    k.plan.out = output_code
    k.plan.ld = (tile + FB_LANES - 1) // FB_LANES * FB_LANES
    for l in range(L + 1):
        k.plan.sizes[l] = layer_sizes[l]
    n_coef = 0
    for l in range(L):
        k.plan.coef_off[l] = n_coef
        n_coef += k.plan.sizes[l] * k.plan.sizes[l + 1]
    off = n_coef
    for l in range(L):
        k.plan.int_off[l] = off
        off += k.plan.sizes[l + 1]
    k.plan.n_coef = n_coef
    k.plan.n_params = off
    k.plan.gtmp_len = 0
    blas = []
    for l in range(L):
        k.plan.blas[l] = k.plan.sizes[l] * k.plan.sizes[l + 1] >= blas_min
        if k.plan.blas[l]:
            blas.append(l)
            if float32:
                k.plan.gtmp_len = max(k.plan.gtmp_len, k.plan.sizes[l] * k.plan.sizes[l + 1])
    k.plan.gacc_len = 0
    k.plan.dt_len = 0
    k.plan.wide = WIDE if wide is None else (bool(wide) and WIDE)
    for l in range(L):
        k.plan.gacc[l] = (not k.plan.blas[l]) and k.plan.sizes[l + 1] >= gacc_min_out
        k.plan.npad[l] = (k.plan.sizes[l + 1] + 7) // 8 * 8
        k.plan.gacc_off[l] = k.plan.gacc_len
        if k.plan.gacc[l]:
            k.plan.gacc_len += k.plan.sizes[l] * k.plan.npad[l]
            k.plan.dt_len = max(k.plan.dt_len, k.plan.ld * k.plan.npad[l])
    # z^0 is only stored when layer 0 does not read X in place (BLAS); layer 0 has no deltas
    width_sum = 0
    for l in range(L + 1):
        k.plan.buf_off[l] = width_sum * k.plan.ld
        if l > 0 or not k.plan.blas[0]:
            width_sum += k.plan.sizes[l]
    k.plan.zbuf_len = width_sum * k.plan.ld
    width_sum = 0
    for l in range(L + 1):
        k.plan.dbuf_off[l] = width_sum * k.plan.ld
        if l > 0:
            width_sum += k.plan.sizes[l]
    k.plan.dbuf_len = width_sum * k.plan.ld
    k.n_threads = 1 if (serial_blas or not HAVE_THREADS) else n_threads
    k.float32 = float32
    k.tile = k.plan.ld
    k.min_samples_per_thread = min_samples_per_thread
    k.min_block = k.plan.ld if min_block < 1 else min(max(FB_LANES, min_block), k.plan.ld)
    k.many_blocks_min = many_blocks_min
    k.blas_layers = tuple(blas)
    k.gacc_layers = tuple(l for l in range(L) if k.plan.gacc[l])
    k.arena = NULL
    k.arena_raw = NULL
    k.arena_busy = 0
    k.rop_raw = NULL
    k.rop_bytes = 0
    k.rop_busy = 0
    return k


def vector_math(str name, x):
    """``name`` in {"exp", "tanh", "logistic", "log1p_unit", "log_ge1"} applied elementwise with the
    kernel's own vectorizable functions (float64 in, float64 out): for tests."""
    cdef double[::1] v = np.ascontiguousarray(x, dtype=np.float64).copy()
    cdef idx i
    cdef int code = {"exp": 0, "tanh": 1, "logistic": 2, "log1p_unit": 3, "log_ge1": 4}[name]
    for i in range(v.shape[0]):
        if code == 0:
            v[i] = fb_exp(v[i])
        elif code == 1:
            v[i] = fb_tanh(v[i])
        elif code == 2:
            v[i] = fb_logistic(v[i])
        elif code == 3:
            v[i] = fb_log1p_unit(v[i])
        else:
            v[i] = fb_log_ge1(v[i])
    return np.asarray(v)


# ------------------------------------------------------------------ the threads' mode, for tests
cdef extern from *:
    """
    #include <time.h>
    #if defined(__unix__) || defined(__APPLE__)
    #include <sched.h>
    #define FB_YIELD() sched_yield()
    #else
    #define FB_YIELD() ((void)0)
    #endif
    /* a thread arrives at a rendezvous of n: it waits (up to ~3 s) until all n have arrived */
    static void fb_rendezvous(long *count, int n)
    {
    #if defined(_MSC_VER)
        _InterlockedIncrement(count);
        time_t t0 = time(NULL);
        while (_InterlockedCompareExchange(count, 0, 0) < n && time(NULL) - t0 < 3) FB_YIELD();
    #else
        __atomic_add_fetch(count, 1, __ATOMIC_SEQ_CST);
        time_t t0 = time(NULL);
        while (__atomic_load_n(count, __ATOMIC_SEQ_CST) < n && time(NULL) - t0 < 3) FB_YIELD();
    #endif
    }
    """
    void fb_rendezvous(long *count, int n) nogil

cdef enum:
    MAX_PROBE = 64

cdef struct Probe:
    int n
    long arrived
    int slot[MAX_PROBE]
    int flushing[MAX_PROBE]


cdef void _probe_task(void *ctx, int b, int slot) noexcept nogil:
    cdef Probe *pr = <Probe *>ctx
    pr.slot[b] = slot
    pr.flushing[b] = fb_flushing()
    fb_rendezvous(&pr.arrived, pr.n)  # each thread holds its block until every block has begun


def thread_flush_modes(int n_threads):
    """For tests: run a call's thread set-up with ``n_threads`` blocks that wait for one another
    (so each thread takes one) and return ``[(slot, flushing), ...]`` per block: the thread that
    ran it (0 is the caller) and whether it flushed subnormals to zero while it ran."""
    cdef Probe pr
    cdef fb_fpenv_t env
    cdef int b
    if not 1 <= n_threads <= MAX_PROBE:
        raise ValueError(f"n_threads must be in [1, {MAX_PROBE}], got {n_threads}")
    pr.n = n_threads
    pr.arrived = 0
    with nogil:
        env = fb_flush_begin()
        fb_pool_run(n_threads, n_threads, _probe_task, &pr)
        fb_flush_end(env)
    return [(pr.slot[b], bool(pr.flushing[b])) for b in range(n_threads)]


def set_flush_subnormals(bint enabled):
    """For tests and measurements: whether calls flush subnormals to zero (the default, True);
    returns the previous setting. Process-wide; results are deterministic for a fixed setting."""
    global fb_flush_enabled
    cdef bint previous = fb_flush_enabled
    fb_flush_enabled = enabled
    return previous


def flushing_now():
    """For tests: whether the calling thread flushes subnormals to zero now (outside any call)."""
    return bool(fb_flushing())


# ------------------------------------------------------------------------------- second order
include "_rop.pxi"
