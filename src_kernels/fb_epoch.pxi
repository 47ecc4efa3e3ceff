# An epoch of minibatch training in one call: CythonKernel.run_epoch (included by _cython_kernels.pyx).
#
# The protocol is ``run_epoch`` of fastbp.backends; the Python reference it follows is
# fastbp.backends.stochastic.reference_epoch. Per batch b (rows order[b·bs : min((b+1)·bs, n)], or
# the next bs rows without an order), all without the GIL:
#
# 1. the batch's rows of X, T and the weights are gathered, in batch order, into batch buffers
#    (without an order the batch is read in place);
# 2. its weight S_b: the sample count, or Σ of its weights summed as NumPy's sum adds them
#    (pairwise, fb_pairwise_sum), so 1 / S_b has the reference's bits; S_b = 0: skipped;
# 3. its loss and gradient sums by _run, with the blocks a kernel call on that batch would use
#    (bit-identical to it), under the kernel's flush-to-zero mode (fb_fpenv.h), on the kernel's
#    threads or on the calling thread alone (the same blocks, so the same bits): see "Threads";
# 4. out of that mode again, as NumPy's step runs: the gradient scaled, the L2 term added (as the
#    kernel call does), rounded to the compute dtype and stepped in place on W and the
#    optimizer's state (fb_epoch.h: scikit-learn's updates, operation for operation, as
#    fastbp.optimizers writes them in NumPy, vectorized and dispatched like the kernel's loops).
#
# Memory: the kernel's own scratch (its arena), one float64 gradient and one batch of gathered rows.
#
# Threads: a full batch whose kernel call would use several threads runs on them while they pay.
# On a machine that gives the second core to something else from time to time (a shared or
# virtual machine), a worker that loses its core while it holds a block makes the caller wait, or
# shares the caller's core: such batches were seen to take 1.2x the time of the same blocks run
# by the caller alone, where the threads otherwise take 0.65x (medium, batch 200; measured with a
# real-time process taking the second core 3 ms in 6). So the kernel keeps a full batch's mean
# time (rows, kernel call and step: workers spinning on a shared core slow the step too) both
# ways (ThreadChoice, across epochs: each epoch's mean replaces the last), runs an epoch's full
# batches the faster way (alone only when the threads are clearly slower), and every PROBE_EVERY
# epochs runs a few of them the other way, to notice when that changes. An epoch's first batch
# is not timed (it meets caches the step and Python left cold). The choice changes no result:
# the blocks, and so the bits, are the same either way (two epochs running at once on one kernel
# may race on its ThreadChoice, which only steers the choice).

cdef enum:
    PROBE_EVERY = 8     # epochs between two timings of the way not taken
    PROBE_FIRST = 2     # the batches of a probing epoch that run the other way: PROBE_FIRST ...
    PROBE_BATCHES = 3   # ... PROBE_FIRST + PROBE_BATCHES - 1

# (ThreadChoice, a field of CythonKernel, is declared in _cython_kernels.pyx)

from libc.math cimport pow as c_pow, sqrt as c_sqrt
from libc.stdint cimport int64_t

cdef enum:
    FB_SGD = 0
    FB_ADAM = 1


cdef struct EpochOpt:
    int kind                # FB_SGD or FB_ADAM
    double lr               # SGD: η; Adam: η₀
    double momentum         # SGD
    bint nesterov           # SGD
    double beta_1, beta_2, epsilon  # Adam
    long long t             # Adam: steps taken (updated)
    double rate             # Adam: η_t of the last step (updated)
    void *S1                # SGD: velocity; Adam: m
    void *S2                # Adam: v


cdef extern from "fb_epoch.h" nogil:
    double fb_pairwise_sum(const double *a, idx n)
    double fb_epoch_clock_ns()
    double fb_penalty_d(const double *W, idx n)
    double fb_penalty_f(const float *W, idx n)
    void fb_sgd_step_d(double *W, const double *g, double *V, idx n, idx n_coef, double scale,
                       double two_l2, double lr, double momentum, int nesterov)
    void fb_sgd_step_f(float *W, const double *g, float *V, idx n, idx n_coef, double scale,
                       double two_l2, double lr, double momentum, int nesterov)
    void fb_adam_step_d(double *W, const double *g, double *M, double *V, idx n, idx n_coef,
                        double scale, double two_l2, double rate, double beta_1, double beta_2,
                        double epsilon)
    void fb_adam_step_f(float *W, const double *g, float *M, float *V, idx n, idx n_coef,
                        double scale, double two_l2, double rate, double beta_1, double beta_2,
                        double epsilon)


cdef struct EpochShape:
    idx n, bs                  # samples, batch size
    int threads_full, blocks_full  # a full batch's threads and blocks (as a kernel call on it)
    int threads_last, blocks_last  # the last, shorter batch's


cdef inline bint _alone(const ThreadChoice *tc, idx batch) noexcept nogil:
    """Whether full batch number ``batch`` runs on the calling thread alone (see "Threads")."""
    cdef bint prefer_alone = tc.ns_alone > 0.0 and tc.ns_threads > 1.1 * tc.ns_alone
    if tc.epochs % PROBE_EVERY == 0 and PROBE_FIRST <= batch < PROBE_FIRST + PROBE_BATCHES:
        return not prefer_alone
    return prefer_alone


cdef double _fb_epoch(const Plan *p, floating *W, const floating *X, const floating *T,
                      const double *sw, const int64_t *order, const EpochShape *e, double alpha,
                      EpochOpt *o, floating *Xb, floating *Tb, double *swb, double *g,
                      char *arena, ThreadChoice *tc) noexcept nogil:
    """The epoch (see the top of this file); returns Σ_b |b| loss_b."""
    cdef idx n_in = p.sizes[0], m = p.sizes[p.n_layers], start, stop, nb, i, k, r, batch = -1
    cdef int threads, blocks
    cdef bint choose, timed, alone = False
    cdef double total = 0.0, weight, scale, l2, loss, penalty, t0 = 0.0
    cdef double ns_way[2]  # timed full batches' time: threads, alone
    cdef idx n_way[2]
    ns_way[0] = ns_way[1] = 0.0
    n_way[0] = n_way[1] = 0
    cdef const floating *Xp
    cdef const floating *Tp
    cdef const double *swp
    cdef fb_fpenv_t env
    start = 0
    while start < e.n:
        stop = min(start + e.bs, e.n)
        nb = stop - start
        batch += 1
        if nb == e.bs:
            threads, blocks = e.threads_full, e.blocks_full
        else:
            threads, blocks = e.threads_last, e.blocks_last
        # a full batch with several threads and blocks: threads or alone, timed from here to its
        # step's end (the workers spin meanwhile: on a shared core that slows the step too)
        choose = nb == e.bs and threads > 1 and blocks > 1
        alone = choose and _alone(tc, batch)
        timed = choose and batch > 0  # (an epoch's first batch meets cold caches)
        if timed:
            t0 = fb_epoch_clock_ns()
        # the batch's rows, in batch order, and its weight
        if order != NULL:
            for i in range(nb):
                r = order[start + i]
                for k in range(n_in):
                    Xb[i * n_in + k] = X[r * n_in + k]
                for k in range(m):
                    Tb[i * m + k] = T[r * m + k]
                if sw != NULL:
                    swb[i] = sw[r]
            Xp, Tp, swp = Xb, Tb, (swb if sw != NULL else NULL)
        else:
            Xp, Tp, swp = X + start * n_in, T + start * m, (sw + start if sw != NULL else NULL)
        start = stop
        if swp != NULL:
            weight = fb_pairwise_sum(swp, nb)
            if not weight > 0.0:  # every sample of the batch has weight zero: not a batch at all
                continue
        else:
            weight = <double>nb
        scale = 1.0 / weight
        l2 = alpha / (2.0 * weight)
        # the batch's loss and gradient sums, as the kernel call on it computes them
        loss = 0.0
        env = fb_flush_begin()
        _run(p, <const floating *>W, Xp, Tp, swp, nb, 1 if alone else threads, blocks, g, &loss, arena)
        fb_flush_end(env)
        penalty = 0.0
        if l2 != 0.0:
            if floating is double:
                penalty = fb_penalty_d(W, p.n_coef)
            else:
                penalty = fb_penalty_f(W, p.n_coef)
        total += (scale * loss + l2 * penalty) * nb
        # the step
        if o.kind == FB_ADAM:
            o.t += 1
            o.rate = o.lr * c_sqrt(1.0 - c_pow(o.beta_2, <double>o.t)) / (1.0 - c_pow(o.beta_1, <double>o.t))
            if floating is double:
                fb_adam_step_d(W, g, <double *>o.S1, <double *>o.S2, p.n_params, p.n_coef, scale,
                               2.0 * l2, o.rate, o.beta_1, o.beta_2, o.epsilon)
            else:
                fb_adam_step_f(W, g, <float *>o.S1, <float *>o.S2, p.n_params, p.n_coef, scale,
                               2.0 * l2, o.rate, o.beta_1, o.beta_2, o.epsilon)
        else:
            if floating is double:
                fb_sgd_step_d(W, g, <double *>o.S1, p.n_params, p.n_coef, scale, 2.0 * l2, o.lr,
                              o.momentum, o.nesterov)
            else:
                fb_sgd_step_f(W, g, <float *>o.S1, p.n_params, p.n_coef, scale, 2.0 * l2, o.lr,
                              o.momentum, o.nesterov)
        if timed:
            ns_way[alone] += fb_epoch_clock_ns() - t0
            n_way[alone] += 1
    if n_way[0] + n_way[1] > 0:  # this epoch's means replace the last ones (see "Threads")
        if n_way[0] > 0 and ns_way[0] > 0.0:
            tc.ns_threads = ns_way[0] / n_way[0]
        if n_way[1] > 0 and ns_way[1] > 0.0:
            tc.ns_alone = ns_way[1] / n_way[1]
        tc.epochs += 1
    return total


cdef inline bint _is_vector(object a, int typenum, idx length) noexcept:
    return _is_c_array(a, typenum, 1) and cnp.PyArray_DIM(<cnp.ndarray>a, 0) == length


cdef object _kernel_run_epoch(CythonKernel self, W, X, T, sample_weight, order, batch_size, alpha,
                              optimizer):
    """CythonKernel.run_epoch: check the arrays (a wrong one would be a wild memory access), run
    the epoch without the GIL, write the optimizer's counters back."""
    cdef const Plan *p = &self.plan
    cdef idx P = p.n_params, n, bs, i, nb
    cdef int typenum = cnp.NPY_FLOAT if self.float32 else cnp.NPY_DOUBLE
    cdef int isz = 4 if self.float32 else 8
    cdef idx m = p.sizes[p.n_layers], n_in = p.sizes[0]
    cdef EpochOpt o
    cdef EpochShape e
    cdef const int64_t *orderp = NULL
    cdef const double *swp = NULL
    cdef void *wp
    cdef const void *xp
    cdef const void *tp
    cdef char *epoch_buf = NULL
    cdef char *g
    cdef char *xb
    cdef char *tb
    cdef char *swb
    cdef char *arena = NULL
    cdef char *raw = NULL
    cdef bint own, bad = False
    cdef double total = 0.0, alpha_ = alpha
    cdef long long t0
    if not (_is_vector(W, typenum, P) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>W)):
        raise ValueError(f"W must be a writable C-contiguous vector of the kernel's dtype, length {P}")
    if not (_is_c_array(X, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>X, 1) == n_in):
        raise ValueError("X must be a C-contiguous 2-D array of the kernel's dtype and width")
    n = cnp.PyArray_DIM(<cnp.ndarray>X, 0)
    if not (_is_c_array(T, typenum, 2) and cnp.PyArray_DIM(<cnp.ndarray>T, 0) == n
            and cnp.PyArray_DIM(<cnp.ndarray>T, 1) == m):
        raise ValueError("T must be a C-contiguous (n, n_outputs) array of the kernel's dtype")
    if sample_weight is not None:
        if not _is_vector(sample_weight, cnp.NPY_DOUBLE, n):
            raise ValueError("sample_weight must be None or a C-contiguous float64 (n,) array")
        swp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>sample_weight)
    if order is not None:
        if not _is_vector(order, cnp.NPY_INT64, n):
            raise ValueError(f"order must be None or a C-contiguous int64 array of shape ({n},)")
        orderp = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>order)
    bs = batch_size
    if bs < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if optimizer.kind == "adam":
        o.kind = FB_ADAM
        o.lr = optimizer.learning_rate_init
        o.momentum = 0.0
        o.nesterov = False
        o.beta_1 = optimizer.beta_1
        o.beta_2 = optimizer.beta_2
        o.epsilon = optimizer.epsilon
        o.t = optimizer.t
        S1, S2 = optimizer.m, optimizer.v
    else:
        o.kind = FB_SGD
        o.lr = optimizer.learning_rate
        o.momentum = optimizer.momentum
        o.nesterov = optimizer.nesterov
        o.beta_1 = o.beta_2 = o.epsilon = 0.0
        o.t = 0
        S1 = S2 = optimizer.velocity
    for S in (S1, S2):
        if not (_is_vector(S, typenum, P) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>S)):
            raise ValueError("the optimizer's state must be writable vectors of W's dtype and length")
    o.S1 = cnp.PyArray_DATA(<cnp.ndarray>S1)
    o.S2 = cnp.PyArray_DATA(<cnp.ndarray>S2)
    o.rate = o.lr
    t0 = o.t
    if orderp != NULL:
        with nogil:
            for i in range(n):
                if orderp[i] < 0 or orderp[i] >= n:
                    bad = True
        if bad:
            raise ValueError("order holds an index outside [0, n)")
    # the threads and blocks of a kernel call on a full batch and on the last one
    e.n = n
    e.bs = bs
    nb = min(bs, n)
    e.threads_full = self._n_blocks(nb)
    e.blocks_full = self._call_blocks(nb, e.threads_full)
    nb = n % bs if n % bs else nb
    e.threads_last = self._n_blocks(nb)
    e.blocks_last = self._call_blocks(nb, e.threads_last)
    # the epoch's own buffers: the gradient, then one batch of gathered rows
    nb = min(bs, n)
    epoch_buf = <char *>malloc(_round64(P * sizeof(double)) + _round64(nb * n_in * isz)
                               + _round64(nb * m * isz) + _round64(nb * sizeof(double)) + 64)
    if epoch_buf == NULL:
        raise MemoryError("the cython kernel could not allocate an epoch's buffers")
    own = fb_try_acquire(&self.arena_busy)
    if own and self.arena == NULL:
        self.arena_raw = <char *>malloc(_arena_bytes(p, isz, self.n_threads,
                                                     BLOCKS_PER_THREAD * self.n_threads) + 64)
        if self.arena_raw != NULL:
            self.arena = _align64(self.arena_raw)
    if own:
        arena = self.arena
    else:
        raw = <char *>malloc(_arena_bytes(p, isz, self.n_threads,
                                          BLOCKS_PER_THREAD * self.n_threads) + 64)
        arena = _align64(raw) if raw != NULL else NULL
    if arena == NULL:
        if own:
            fb_release(&self.arena_busy)
        free(epoch_buf)
        raise MemoryError("the cython kernel could not allocate its scratch")
    wp = cnp.PyArray_DATA(<cnp.ndarray>W)
    xp = cnp.PyArray_DATA(<cnp.ndarray>X)
    tp = cnp.PyArray_DATA(<cnp.ndarray>T)
    g = _align64(epoch_buf)
    xb = g + _round64(P * sizeof(double))
    tb = xb + _round64(nb * n_in * isz)
    swb = tb + _round64(nb * m * isz)
    with nogil:
        if self.float32:
            total = _fb_epoch(p, <float *>wp, <const float *>xp, <const float *>tp, swp, orderp, &e,
                              alpha_, &o, <float *>xb, <float *>tb, <double *>swb, <double *>g,
                              arena, &self.choice)
        else:
            total = _fb_epoch(p, <double *>wp, <const double *>xp, <const double *>tp, swp, orderp,
                              &e, alpha_, &o, <double *>xb, <double *>tb, <double *>swb,
                              <double *>g, arena, &self.choice)
    if own:
        fb_release(&self.arena_busy)
    else:
        free(raw)
    free(epoch_buf)
    if o.kind == FB_ADAM and o.t != t0:  # (no step taken: the last rate stays)
        optimizer.t = o.t
        optimizer.learning_rate = o.rate
    return total
