"""The thread pool's compiled half: the control words, the job table, claiming and serving blocks.

What the calling thread and the workers run (the algorithm is described in :mod:`.pool_threads`,
the Python half): atomics on the int64 control array (llvmlite intrinsics), the claim loop
:func:`_claim`, a worker's spin between jobs :func:`_serve`, and what they need of the system:
x86's ``pause`` and time-stamp counter, POSIX ``sched_yield``, Linux's ``sched_getcpu`` and
affinity. The block kernel a job runs is an argument (``block_kernel``), so a new kind of job is a
new entry point passing its own kernel. What takes the block kernel is inlined into the entry
point at Numba IR level (``inline="always"``): compiled on its own, each would link and optimize
the whole kernel once more. The rest (:func:`block_start`, :func:`_publish_job`, :func:`_fill_job`,
:func:`_leave_cpu`, :mod:`.fpenv`) is compiled once and inlined by LLVM: each inlined copy of a
function costs the entry point's compile again (~0.7 s of a cold compile when they were all
inlined).

Floating-point mode: the caller publishes its control word with the job (:func:`_publish_job`)
and a worker takes its flush bits for every block it claims, putting its own back once the job
has no block left for it (:mod:`.fpenv`): every block of a call runs in the caller's mode.

Kinds of job: a worker runs the block kernel compiled into its code, so it claims only blocks of
a job whose kernel is that one (the job's ``C_KIND``, :func:`_kernel_id`); blocks of any other
kind of job stay to the caller, which runs them itself.
"""

import os
import platform
import sys
import zlib

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .fpenv import fpenv_adopt, fpenv_get
from .jit import _INLINE, _JIT
from .meta import PAD

# ctl: one pool's int64 control array; the words written by different threads sit on their own
# 64-byte lines. state = gen << 32 | T << 24 | K << 12 | next; worker blocks counts the blocks
# that threads other than the caller ran (the tests read it).
C_STATE, C_DONE, C_JOB, C_WORKER_BLOCKS = 0, 8, 16, 24
# written by the caller before the state, on the job's line: its CPU, its floating-point control
# word (the workers run the job's blocks in its flush mode), the job's block kernel
C_MAINCPU, C_FPENV, C_KIND = 17, 18, 19
# 1: the calls of this control array leave subnormals as the caller's mode has them (a switch for
# tests and for measuring what flushing saves: :func:`.pool_threads.set_flush_subnormals`)
C_NOFLUSH = 32
CTL_LEN = 40
MAX_SLOTS = 255
MAX_BLOCKS = 4095
#: A worker spins about this many TSC cycles after its last job before sleeping (~0.5 ms; where
#: there is no TSC, this many spins: ~1-2 ms).
SPIN_CYCLES = 1 << 21
#: Spinning threads call sched_yield every YIELD_MASK + 1 pauses.
YIELD_MASK = 1023
#: A gap longer than this between two looks at the clock of a spinning worker (normally tens of
#: microseconds apart) was spent off the CPU and does not count toward its spin.
OFF_CPU_CYCLES = 1 << 18

# job table: addresses and shapes of one call's arrays
(J_WC, J_NW, J_X, J_N, J_NIN, J_T, J_M, J_SW, J_NSW, J_META, J_NMETA,
 J_ZD, J_NZD, J_WS, J_NWS, J_G, J_NG, J_K) = range(18)
JOB_LEN = 24

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = os.name == "posix"
_LINUX = sys.platform.startswith("linux")


def _element_ptr(context, builder, aty, arr, k):
    a = context.make_array(aty)(context, builder, arr)
    return builder.gep(a.data, [k])


@intrinsic
def _load_acquire(typingctx, a, k):
    """``a[k]`` of an int64 array, an atomic load with acquire order."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load_atomic(_element_ptr(context, builder, sig.args[0], args[0], k), "acquire", 8)

    return types.int64(a, k), codegen


@intrinsic
def _store_release(typingctx, a, k, v):
    """``a[k] = v`` on an int64 array, an atomic store with release order."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(v, _element_ptr(context, builder, sig.args[0], args[0], k), "release", 8)
        return context.get_dummy_value()

    return types.none(a, k, v), codegen


@intrinsic
def _cas(typingctx, a, k, old, new):
    """Compare-and-swap ``a[k]`` from ``old`` to ``new`` (acq_rel); 1 when it swapped."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_ptr(context, builder, sig.args[0], args[0], k)
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        new = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(ptr, old, new, "acq_rel", "acquire")
        return builder.zext(builder.extract_value(res, 1), ir.IntType(64))

    return types.int64(a, k, old, new), codegen


@intrinsic
def _fetch_add(typingctx, a, k, v):
    """``a[k] += v`` atomically (acq_rel); returns the old value."""
    if not (isinstance(a, types.Array) and a.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        v = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _element_ptr(context, builder, sig.args[0], args[0], k), v, "acq_rel")

    return types.int64(a, k, v), codegen


@intrinsic
def _relax(typingctx):
    """x86 ``pause`` in a spin loop (nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", (), ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _getcpu(typingctx):
    """Linux's ``sched_getcpu()``: the CPU this thread runs on (-1 elsewhere)."""

    def codegen(context, builder, sig, args):
        if _LINUX:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_getcpu")
            return builder.sext(builder.call(fn, []), ir.IntType(64))
        return ir.Constant(ir.IntType(64), -1)

    return types.int64(), codegen


@intrinsic
def _affinity(typingctx, set_it, mask):
    """Linux's ``sched_getaffinity`` (``set_it`` 0) or ``sched_setaffinity`` (1) of this thread,
    with ``mask`` an int64 array of 16 words (1024 CPUs); returns the call's status (-1
    elsewhere)."""
    if not (isinstance(mask, types.Array) and mask.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        if not _LINUX:
            return ir.Constant(ir.IntType(64), -1)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(i32, [i32, i64, ir.IntType(8).as_pointer()])
        get = cgutils.get_or_insert_function(builder.module, fnty, "sched_getaffinity")
        put = cgutils.get_or_insert_function(builder.module, fnty, "sched_setaffinity")
        arr = context.make_array(sig.args[1])(context, builder, args[1])
        ptr = builder.bitcast(arr.data, ir.IntType(8).as_pointer())
        argv = [ir.Constant(i32, 0), ir.Constant(i64, 128), ptr]
        res = builder.alloca(i32)
        with builder.if_else(builder.icmp_signed("!=", args[0], ir.Constant(args[0].type, 0))) as (then, other):
            with then:
                builder.store(builder.call(put, argv), res)
            with other:
                builder.store(builder.call(get, argv), res)
        return builder.sext(builder.load(res), i64)

    return types.int64(set_it, mask), codegen


@intrinsic
def _sched_yield(typingctx):
    """POSIX ``sched_yield()``: let a thread waiting for this core run (nothing elsewhere)."""

    def codegen(context, builder, sig, args):
        if _POSIX:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _clock(typingctx, spins):
    """What times a spin: x86's time-stamp counter (cycles); elsewhere ``spins`` itself, since
    other architectures' cycle counters may trap in user mode."""
    if not isinstance(spins, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(ir.IntType(64), []))
            return builder.call(fn, [])
        return context.cast(builder, args[0], sig.args[0], types.int64)

    return types.int64(spins), codegen


@intrinsic
def _address(typingctx, a):
    """The data address of an array, as an int64."""
    if not isinstance(a, types.Array):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(arr.data, ir.IntType(64))

    return types.int64(a), codegen


@intrinsic
def _pointer(typingctx, i):
    """The int64 address ``i`` as a pointer (for ``numba.carray``)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(i), codegen



@njit(**_JIT)
def block_start(b, n, n_blocks):
    """First sample of block ``b`` of ``n_blocks``: ``b n / K`` rounded up to a multiple of the
    tile padding (no block pads more than one partial tile, and the short block is the last,
    which a worker arriving late takes), and ``n`` from ``b = K`` on."""
    s = (b * n // n_blocks + PAD - 1) // PAD * PAD
    return min(s, n)


@njit(**_INLINE)
def _run_block(job, b, slot, marker, block_kernel):
    """Block ``b`` of the job described by ``job`` with thread ``slot``'s scratch.

    The arrays are rebuilt from their addresses (views without an owner: nothing is counted or
    freed); ``marker`` is an empty array of the compute dtype; ``block_kernel`` is
    a block kernel of :mod:`.backprop` (``_chunk_units`` or ``_chunk_rows``).
    """
    dt = marker.dtype
    Wc = carray(_pointer(job[J_WC]), (job[J_NW],), dt)
    X = carray(_pointer(job[J_X]), (job[J_N], job[J_NIN]), dt)
    T = carray(_pointer(job[J_T]), (job[J_N], job[J_M]), dt)
    sw = carray(_pointer(job[J_SW]), (job[J_NSW],), np.float64)
    meta = carray(_pointer(job[J_META]), (job[J_NMETA],), np.int64)
    zd = carray(_pointer(job[J_ZD] + slot * job[J_NZD] * marker.itemsize), (job[J_NZD],), dt)
    ws = carray(_pointer(job[J_WS] + slot * job[J_NWS] * 8), (job[J_NWS],), np.float64)
    g = carray(_pointer(job[J_G] + b * job[J_NG] * 8), (job[J_NG],), np.float64)
    n, n_blocks = job[J_N], job[J_K]
    g[:] = 0.0
    block_kernel(Wc, X, T, sw, meta, block_start(b, n, n_blocks), block_start(b + 1, n, n_blocks), zd, ws, g)


def _kernel_id(block_kernel):
    """A nonzero int64 naming ``block_kernel`` (a compiled function), the same in every process."""


@overload(_kernel_id)
def _kernel_id_of(block_kernel):
    if isinstance(block_kernel, types.Dispatcher):
        f = block_kernel.dispatcher.py_func
        kid = zlib.crc32(f"{f.__module__}.{f.__qualname__}".encode()) | 1
        return lambda block_kernel: np.int64(kid)  # (not a literal: see tile_products.mm_flat)
    return None


@njit(**_INLINE)
def _claim(ctl, gen, slot, marker, block_kernel):
    """As thread ``slot``, claim and run blocks of job ``gen`` with ``block_kernel`` until none is
    left. A worker (``slot`` > 0) claims only from a job of that kernel, and runs its blocks in
    the caller's floating-point mode, its own put back after."""
    own = fpenv_get()
    kid = _kernel_id(block_kernel)
    st = _load_acquire(ctl, C_STATE)
    while (st >> 32) == gen:
        n_slots = (st >> 24) & 0xFF
        n_blocks = (st >> 12) & 0xFFF
        nxt = st & 0xFFF
        if nxt >= n_blocks or slot >= n_slots:
            break
        # (the words the caller wrote before the state are visible once it is loaded)
        if slot > 0 and ctl[C_KIND] != kid:
            break  # a job this thread's code cannot run: the caller runs its blocks
        if _cas(ctl, C_STATE, st, st + 1):
            # the job cannot end while this block is unfinished: its table is still valid
            job = carray(_pointer(_load_acquire(ctl, C_JOB)), (JOB_LEN,), np.int64)
            fpenv_adopt(ctl[C_FPENV])
            _run_block(job, nxt, slot, marker, block_kernel)
            if slot > 0:
                _fetch_add(ctl, C_WORKER_BLOCKS, 1)  # a statistic: blocks the workers ran
            _fetch_add(ctl, C_DONE, 1)
        st = _load_acquire(ctl, C_STATE)
    fpenv_adopt(own)


@njit(**_JIT)
def _publish_job(ctl, job, n_slots, n_blocks, kid):
    """Offer the job of table ``job`` (``n_blocks`` blocks of the block kernel ``kid``, see
    :func:`_kernel_id`, on up to ``n_slots`` threads) to the pool ``ctl``, in this thread's
    floating-point mode; returns its generation."""
    ctl[C_DONE] = 0
    ctl[C_JOB] = _address(job)
    ctl[C_MAINCPU] = _getcpu()
    ctl[C_FPENV] = fpenv_get()
    ctl[C_KIND] = kid
    gen = ((_load_acquire(ctl, C_STATE) >> 32) + 1) & 0x7FFFFFFF
    _store_release(ctl, C_STATE, (gen << 32) | (n_slots << 24) | (n_blocks << 12))
    return gen


@njit(**_INLINE)
def _run_job(ctl, job, n_slots, n_blocks, marker, block_kernel):
    """Run every block of the job ``job`` on this thread and the pool ``ctl``'s workers: publish
    it, claim blocks until none is left, wait for the blocks other threads claimed (and are
    therefore running)."""
    gen = _publish_job(ctl, job, n_slots, n_blocks, _kernel_id(block_kernel))
    _claim(ctl, gen, 0, marker, block_kernel)
    spins = 0
    while _load_acquire(ctl, C_DONE) < n_blocks:
        _relax()
        spins += 1
        if spins & 63 == 0:
            _sched_yield()


@njit(**_JIT)
def _leave_cpu(cpu):
    """Move this thread off ``cpu`` now (the kernel migrates a thread whose new affinity excludes
    its CPU at once), then give it back its own affinity: a worker woken by the caller is first
    run on the caller's core (Linux's wake-affine placement) and was seen to stay there, taking
    its blocks only in turns with the caller, for tens of milliseconds."""
    own = np.zeros(16, dtype=np.int64)
    if cpu < 0 or cpu >= 1024 or _affinity(0, own) != 0:
        return
    other = own.copy()
    other[cpu // 64] &= ~(np.int64(1) << (cpu % 64))
    for w in range(16):
        if other[w] != 0:
            _affinity(1, other)
            _affinity(1, own)
            return


@njit(**_INLINE)
def _serve(ctl, slot, marker, spin_cycles, block_kernel):
    """A worker's life between two sleeps: run the jobs it finds, spinning between them; return
    the last generation seen once none came for ``spin_cycles`` of its own running time.

    Linux first runs a thread woken by the caller on the caller's core (wake-affine placement),
    where it gets the core only in turns with the caller. Two things keep that from lasting:
    only time on a CPU counts toward the spin (a gap of more than ``OFF_CPU_CYCLES`` between two
    looks at the clock was spent descheduled), so the worker does not go back to sleep after half
    a millisecond of such turns only to be woken onto the same core again; and a worker that
    finds itself on the caller's CPU when a job comes moves off it (:func:`_leave_cpu`). Seen
    before: no block taken for 50 ms after another library's threads had run, calls at
    one-thread speed.

    One call of :func:`_claim` (and so one copy of the block kernel's call) serves every job: the
    entry point's compile time grows with each inlined copy."""
    gen = _load_acquire(ctl, C_STATE) >> 32
    while True:
        _claim(ctl, gen, slot, marker, block_kernel)  # first: a job published while this thread woke
        seen = gen
        spins = 0
        last = _clock(spins)
        spun = 0
        while gen == seen:
            _relax()
            spins += 1
            if spins & YIELD_MASK == 0:
                _sched_yield()  # a thread that shares this core runs first
                now = _clock(spins)
                if now - last < OFF_CPU_CYCLES:
                    spun += now - last
                last = now
                if spun > spin_cycles:
                    return seen
            gen = _load_acquire(ctl, C_STATE) >> 32
        if _LINUX and _getcpu() == ctl[C_MAINCPU]:
            _leave_cpu(ctl[C_MAINCPU])


@njit(**_JIT)
def _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks):
    job[J_WC] = _address(Wc)
    job[J_NW] = Wc.shape[0]
    job[J_X] = _address(X)
    job[J_N] = X.shape[0]
    job[J_NIN] = X.shape[1]
    job[J_T] = _address(T)
    job[J_M] = T.shape[1]
    job[J_SW] = _address(sw)
    job[J_NSW] = sw.shape[0]
    job[J_META] = _address(meta)
    job[J_NMETA] = meta.shape[0]
    job[J_ZD] = _address(zd)
    job[J_NZD] = zd.shape[1]
    job[J_WS] = _address(ws)
    job[J_NWS] = ws.shape[1]
    job[J_G] = _address(gbuf)
    job[J_NG] = gbuf.shape[1]
    job[J_K] = n_blocks
