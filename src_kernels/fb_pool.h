/*
 * fb_pool.h: the kernel's threads. fb_pool_run(K, T, fn, ctx) runs fn(ctx, b, slot) for every
 * block b < K on up to T threads (slot < T names the thread: the caller is slot 0) and returns
 * when all have run. Which thread runs a block does not matter to the result: each block has its
 * own gradient buffer, reduced in block order by the caller; slot picks the thread's scratch.
 * With more blocks than threads (K = 4 T), a thread slowed down by a competitor on its core
 * (OpenBLAS's threads spinning after a numpy call, say) just runs fewer of them.
 *
 * Why not an OpenMP parallel region: its join waits for every thread of the team to arrive, so on
 * a busy machine a call of 20 us could wait a scheduler time slice (ms) for a second thread that
 * had not been given a core. Here the caller claims blocks itself and waits only for blocks
 * another thread has claimed (and is therefore running): a worker that does not come in time just
 * finds no block left. After a job a worker spins briefly (back-to-back calls, as an optimizer
 * makes, find it awake), then sleeps on a condition variable; spinning threads call sched_yield
 * every few microseconds, so a thread that shares their core (the caller, on a machine whose
 * other cores are taken) is not starved.
 *
 * Claims are made on one atomic word, generation (32 bits) | T (8) | K (12) | next block (12),
 * so a late worker can never claim a block of a newer job by mistake. One job at a time: a call that finds
 * the pool busy (another Python thread's call) runs its blocks itself.
 *
 * Every block runs under the calling thread's flush-to-zero mode (fb_fpenv.h): a worker adopts
 * the caller's mode bits before it runs a block of the call (the pool's workers run nothing but
 * blocks, so they keep it between calls); OpenMP's threads, which other code may share, adopt it
 * for the region and put their own back after it.
 *
 * POSIX threads; elsewhere an OpenMP loop when compiled with it, else serial. FB_NO_POOL
 * (defined at build time) takes the "elsewhere" path on POSIX too, so it can be tested.
 */
#ifndef FB_POOL_H
#define FB_POOL_H

#include <stdint.h>

#include "fb_fpenv.h"

typedef void (*fb_task_fn)(void *ctx, int block, int slot);

#define FB_POOL_MAX_WORKERS 254
#define FB_POOL_MAX_BLOCKS 4095
#define FB_POOL_SPIN_NS 500000 /* a worker spins this long after its last job, then sleeps */

#if (defined(__unix__) || defined(__APPLE__)) && defined(__GNUC__) && !defined(FB_NO_POOL)
#define FB_HAVE_POOL 1
#include <pthread.h>
#include <sched.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FB_RELAX() _mm_pause()
#else
#define FB_RELAX() ((void)0)
#endif

static pthread_mutex_t fb_pool_job = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t fb_pool_mu = PTHREAD_MUTEX_INITIALIZER;  /* for the sleepers */
static pthread_cond_t fb_pool_cv = PTHREAD_COND_INITIALIZER;
static uint64_t fb_pool_state;      /* gen << 32 | T << 24 | K << 12 | next */
static int fb_pool_done;            /* blocks of the current job finished */
static int fb_pool_sleepers;        /* workers waiting on fb_pool_cv */
static int fb_pool_workers;         /* workers started (in this process) */
static int fb_pool_atfork_set;
static fb_task_fn fb_pool_fn;
static void *fb_pool_ctx;
static fb_fpenv_t fb_pool_fpenv;    /* the caller's control word: its flush mode for the blocks */

static int64_t fb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* as thread `slot`, claim and run blocks of generation gen until none is left */
static void fb_pool_claim(uint32_t gen, int slot)
{
    uint64_t st = __atomic_load_n(&fb_pool_state, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((uint32_t)(st >> 32) != gen) return;
        uint32_t T = (uint32_t)(st >> 24) & 0xff, K = (uint32_t)(st >> 12) & 0xfff;
        uint32_t next = (uint32_t)st & 0xfff;
        if (next >= K || (uint32_t)slot >= T) return;
        if (__atomic_compare_exchange_n(&fb_pool_state, &st, st + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            /* the job cannot end while this block is unfinished: fn, ctx and the mode are its
             * own (the caller, slot 0, has the mode already: reading it is all that costs) */
            fb_fpenv_adopt(fb_pool_fpenv);
            fb_pool_fn(fb_pool_ctx, (int)next, slot);
            __atomic_add_fetch(&fb_pool_done, 1, __ATOMIC_RELEASE);
            st = __atomic_load_n(&fb_pool_state, __ATOMIC_ACQUIRE);
        }
    }
}

static void *fb_pool_worker(void *arg)
{
    int slot = (int)(intptr_t)arg;
    /* a job published while this thread was starting is still claimable (claims check gen) */
    uint32_t seen = (uint32_t)(__atomic_load_n(&fb_pool_state, __ATOMIC_ACQUIRE) >> 32);
    fb_pool_claim(seen, slot);
    for (;;) {
        int64_t since = fb_now_ns();
        unsigned spins = 0;
        uint32_t gen;
        while ((gen = (uint32_t)(__atomic_load_n(&fb_pool_state, __ATOMIC_SEQ_CST) >> 32)) == seen) {
            FB_RELAX();
            if ((++spins & 63) == 0) sched_yield(); /* a thread sharing this core runs first */
            if ((spins & 255) == 0 && fb_now_ns() - since > FB_POOL_SPIN_NS) {
                pthread_mutex_lock(&fb_pool_mu);
                __atomic_add_fetch(&fb_pool_sleepers, 1, __ATOMIC_SEQ_CST);
                while ((uint32_t)(__atomic_load_n(&fb_pool_state, __ATOMIC_SEQ_CST) >> 32) == seen)
                    pthread_cond_wait(&fb_pool_cv, &fb_pool_mu);
                __atomic_sub_fetch(&fb_pool_sleepers, 1, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&fb_pool_mu);
            }
        }
        seen = gen;
        fb_pool_claim(gen, slot);
    }
    return NULL;
}

static void fb_pool_child_after_fork(void)
{
    /* the child has no workers; a job in flight in the parent is not the child's */
    fb_pool_workers = 0;
    pthread_mutex_init(&fb_pool_job, NULL);
    pthread_mutex_init(&fb_pool_mu, NULL);
    pthread_cond_init(&fb_pool_cv, NULL);
}

static void fb_pool_run(int K, int T, fb_task_fn fn, void *ctx)
{
    if (T > FB_POOL_MAX_WORKERS + 1) T = FB_POOL_MAX_WORKERS + 1;
    if (K <= 1 || T <= 1 || K > FB_POOL_MAX_BLOCKS || pthread_mutex_trylock(&fb_pool_job) != 0) {
        for (int b = 0; b < K; b++) fn(ctx, b, 0);
        return;
    }
    if (!fb_pool_atfork_set) {
        pthread_atfork(NULL, NULL, fb_pool_child_after_fork);
        fb_pool_atfork_set = 1;
    }
    while (fb_pool_workers < T - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, fb_pool_worker, (void *)(intptr_t)(fb_pool_workers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* fewer workers: the caller runs what they do not claim */
        fb_pool_workers++;
    }
    fb_pool_fn = fn;
    fb_pool_ctx = ctx;
    fb_pool_fpenv = fb_fpenv_get();
    __atomic_store_n(&fb_pool_done, 0, __ATOMIC_RELAXED);
    uint32_t gen = (uint32_t)(__atomic_load_n(&fb_pool_state, __ATOMIC_RELAXED) >> 32) + 1;
    __atomic_store_n(&fb_pool_state, ((uint64_t)gen << 32) | ((uint64_t)T << 24) | ((uint64_t)K << 12),
                     __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&fb_pool_sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&fb_pool_mu);
        pthread_cond_broadcast(&fb_pool_cv);
        pthread_mutex_unlock(&fb_pool_mu);
    }
    fb_pool_claim(gen, 0);
    /* every block is claimed; wait for the ones other threads are running (yielding, in case
     * one of them waits for this core) */
    for (unsigned spins = 1; __atomic_load_n(&fb_pool_done, __ATOMIC_ACQUIRE) < K; spins++) {
        FB_RELAX();
        if ((spins & 63) == 0) sched_yield();
    }
    pthread_mutex_unlock(&fb_pool_job);
}

#else /* no POSIX threads: an OpenMP loop if compiled with it, else serial */
#define FB_HAVE_POOL 0
#ifdef _OPENMP
#include <omp.h>
#endif
static void fb_pool_run(int K, int T, fb_task_fn fn, void *ctx)
{
#ifdef _OPENMP
    fb_fpenv_t caller = fb_fpenv_get();
#pragma omp parallel num_threads(T)
    {
        int slot = omp_get_thread_num();
        fb_fpenv_t own = fb_fpenv_get(); /* an OpenMP thread may run other code after: restore */
        fb_fpenv_adopt(caller);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < K; b++) fn(ctx, b, slot);
        fb_fpenv_adopt(own);
    }
#else
    (void)T;
    for (int b = 0; b < K; b++) fn(ctx, b, 0);
#endif
}
#endif

#endif /* FB_POOL_H */
