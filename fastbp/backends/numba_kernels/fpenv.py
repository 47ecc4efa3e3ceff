"""The floating-point environment of a call: subnormal numbers flushed to zero on every thread of it.

Why: a saturated network (confident sigmoids and softmax, as late in training) makes tiny
probabilities and deltas, and their products in the tiles and in BLAS fall below the smallest
normal number. Many x86 cores (Intel's in particular) take a microcode assist for each operation
with a subnormal operand or result, so such calls ran several times slower than the same call
with small weights. With flush-to-zero (a subnormal result becomes 0) and denormals-are-zero (a
subnormal operand is read as 0) the hardware takes the fast path whatever the weights. What
changes in the results: only values below the smallest normal number of the compute dtype
(2.2e-308 in float64, 1.2e-38 in float32), which become 0. This is the Cython kernel's
``src_kernels/fb_fpenv.h`` in Numba's terms.

Where: x86-64 (MXCSR: FTZ bit 15, DAZ bit 6, read and written by ``stmxcsr``/``ldmxcsr``) and
aarch64 (FPCR: FZ bit 24, which flushes operands and results alike). Elsewhere :data:`FLUSH_BITS`
is 0 and every function here does nothing: subnormals are computed as IEEE 754 says.

How an entry point uses it (:func:`.driver.run` does): ``saved = flush_begin(on)`` first, before
any arithmetic; ``return flush_end(saved, x)`` at every return, which puts the two bits back as
the caller had them (other bits, and the exception flags the call raised, are left alone) once
``x``, the call's scalar result, is computed. A job run on the pool publishes the caller's mode
(:func:`.pool._publish_job`) and every worker takes it for the blocks it claims and puts its own
back after (:func:`.pool._claim`), so which thread runs a block never changes its bits.

LLVM assumes the default environment: it may move arithmetic on values held in registers across
the writes of the control register (:func:`_computed_before` says what was seen), and folds
constant expressions as IEEE 754 says. So the set and the restore stay in the entry point,
around the calls that compute; every array result is stored before the restore (memory accesses
keep their order around it) and the scalar one is pinned by :func:`flush_end`. Results without
subnormals keep every bit (checked by the parity tests and by comparing with the kernels that did
not flush).
"""

import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import _JIT

_MACHINE = platform.machine().lower()
_X86 = _MACHINE in ("x86_64", "amd64")  # SSE is part of x86-64
_AARCH64 = _MACHINE in ("aarch64", "arm64")

#: The bits of the control word that flush subnormals (MXCSR FTZ | DAZ, FPCR FZ), 0 where there
#: are none.
FLUSH_BITS = 0x8040 if _X86 else (1 << 24) if _AARCH64 else 0
#: Whether the kernels flush subnormals on this machine.
FLUSHES = FLUSH_BITS != 0

_I8P = ir.IntType(8).as_pointer()


@intrinsic
def fpenv_get(typingctx):
    """This thread's floating-point control word (MXCSR, FPCR), as an int64; 0 where there is
    none to read."""

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        if _X86:
            slot = cgutils.alloca_once(builder, i32)
            fnty = ir.FunctionType(ir.VoidType(), [_I8P])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
            builder.call(fn, [builder.bitcast(slot, _I8P)])
            return builder.zext(builder.load(slot), i64)
        if _AARCH64:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, []), "llvm.aarch64.get.fpcr")
            return builder.call(fn, [])
        return ir.Constant(i64, 0)

    return types.int64(), codegen


@intrinsic
def fpenv_set(typingctx, word):
    """Make ``word`` (from :func:`fpenv_get`) this thread's control word; nothing where there is
    none."""
    if not isinstance(word, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        w = context.cast(builder, args[0], sig.args[0], types.int64)
        if _X86:
            slot = cgutils.alloca_once(builder, i32)
            builder.store(builder.trunc(w, i32), slot)
            fnty = ir.FunctionType(ir.VoidType(), [_I8P])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
            builder.call(fn, [builder.bitcast(slot, _I8P)])
        elif _AARCH64:
            fnty = ir.FunctionType(ir.VoidType(), [i64])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.aarch64.set.fpcr")
            builder.call(fn, [w])
        return context.get_dummy_value()

    return types.none(word), codegen


@njit(**_JIT)
def fpenv_adopt(word):
    """Give this thread the flush bits of ``word`` (its other bits stay). The control register is
    written only when they differ: a write costs tens of cycles, a read a few."""
    if FLUSH_BITS != 0:
        now = fpenv_get()
        if (now ^ word) & FLUSH_BITS:
            fpenv_set((now & ~FLUSH_BITS) | (word & FLUSH_BITS))


@njit(**_JIT)
def flush_begin(on):
    """Flush subnormals on this thread from now on when ``on`` (else leave its mode as it is);
    returns the control word to give :func:`flush_end`."""
    saved = fpenv_get()
    if on:
        fpenv_adopt(saved | FLUSH_BITS)
    return saved


@intrinsic
def _computed_before(typingctx, value):
    """``value``, computed before this point of the program (a float or an integer).

    LLVM assumes the default floating-point environment, so it may move an arithmetic operation
    whose operands are in registers past the write of the control register (seen: ``x * 0.5``
    moved after the restore of the caller's mode, and not flushed). An empty ``asm`` with side
    effects that takes the value and gives it back pins it: the value is computed before the
    ``asm``, which stays before the (side-effecting) write of the control register.
    """
    if not isinstance(value, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if not (_X86 or _AARCH64):
            return v
        reg = ("x" if _X86 else "w") if isinstance(sig.args[0], types.Float) else "r"
        return builder.asm(ir.FunctionType(v.type, [v.type]), "", f"={reg},0", [v], side_effect=True)

    return value(value), codegen


@njit(**_JIT)
def flush_end(saved, result):
    """Put back the flush bits :func:`flush_begin` found, after ``result`` (a scalar: the call's
    value that lives in a register) has been computed; returns it. Results in arrays need
    nothing: their stores stay before the write of the control register."""
    result = _computed_before(result)
    fpenv_adopt(saved)
    return result


@njit(**_JIT)
def flushing():
    """1 when this thread flushes subnormals now (both bits set), else 0 (tests)."""
    return 1 if FLUSH_BITS != 0 and fpenv_get() & FLUSH_BITS == FLUSH_BITS else 0
