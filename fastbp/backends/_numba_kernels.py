"""Numba kernels of the ``numba`` backend: tiled forward pass, δ backpropagation, gradient sums.

Notation is the lab's (exercise 5a): for layer ``l``, ``a`` is the pre-activation, ``z = σ(a)`` the
unit's output, ``δ = ∂ℓ/∂a``, and ``W`` the coefficients ``coef_l`` of shape ``(n_in, n_out)``.

How the work is laid out
------------------------
* Samples are processed in **tiles** of at most ``tile`` samples. Inside a tile every layer is
  stored *unit-major*: ``Z_l`` has shape ``(n_units, ts)``, one contiguous row per unit, so every
  inner loop runs over the samples of the tile, contiguous in memory, and vectorizes whatever the
  layer widths are. Memory is per tile, never per sample count.
* Layers that are wide (flagged in ``meta``) hand their tile products to BLAS through ``np.dot``.
* The samples are split into ``n_blocks`` fixed blocks; block ``b`` accumulates its loss and
  gradient into its own float64 row ``gbuf[b]``. The rows are reduced in the fixed order
  ``0, 1, ..., n_blocks - 1``, so results are bit-identical for a given split whichever threads
  ran the blocks (the caller alone or with the workers of :mod:`fastbp.backends._numba_pool`).
* ``exp``, ``expm1``, ``log`` and ``log1p`` have vectorizable forms below (the llvmlite wheels have
  no SVML, and a scalar libm call per element stops the loop vectorizer). They are accurate to a
  few units in the last place of float64; the tests compare them with NumPy's.
* float32 computes the layers in float32, evaluates the transcendental functions and the loss in
  float64, and accumulates loss and gradient in float64.

The integer array ``meta`` (built once per network by :func:`make_meta`) carries the layout, so a
new architecture reuses the compiled code: only the dtype selects a specialization.
"""

from __future__ import annotations

import os
import platform
import sys

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

# njit options: cached to disk; no fast-math where the exact IEEE rounding is relied on (the
# round-to-integer shifter in _exp_parts would be optimized away by reassociation).
_JIT = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
# reductions and multiply-add loops: reassociation lets LLVM vectorize the sums, contraction fuses
# into FMA. The order is still fixed by the compiled code, so results stay deterministic.
_FAST = dict(_JIT, fastmath={"reassoc", "contract"})
# scalar transcendental functions: contraction into FMA only (one rounding instead of two; the
# round-to-integer shifter is unaffected), no reassociation. Small and branch-free: LLVM inlines
# them into the calling loops and vectorizes those.
_MATH = dict(_JIT, fastmath={"contract"})

# ------------------------------------------------------------------------------------ meta layout
H_L, H_ACT, H_OUT, H_TILE, H_NPARAMS, H_NCOEF, H_ZSIZE, H_WSIZE, H_ROWS, H_GSIZE = range(10)
HEADER = 16  # header slots; then sizes, zoff, coff, ioff, blas, each L + 1 long
PAD = 16  # tiles are padded to a multiple of this many samples; tile sizes are multiples of it
OUT_BLOCK = 256  # sample-major tiles evaluate the output layer over sub-tiles of this many samples
GRAD_JC = 16  # grad_acc runs every block of input rows over this many output rows (in L1) at a time


def make_meta(sizes, coef_offsets, intercept_offsets, activation_code, output_code, tile, blas, rows=False):
    """Pack a layout into the int64 array the kernels read (see the module docstring).

    ``rows`` selects the sample-major BLAS kernel (every layer a gemm on ``(tile, n_units)``
    blocks, X read in place). Returns ``(meta, zsize, wsize)``: the per-block scratch lengths in
    the compute dtype and in float64.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n1 = len(sizes)
    L = n1 - 1
    stored = sizes.copy()
    if rows:
        stored[0] = 0  # z^0 is X itself
    zoff = np.concatenate(([0], np.cumsum(stored) * tile)).astype(np.int64)[:n1]
    m = int(sizes[-1])
    ob = min(tile, OUT_BLOCK) if rows else tile
    # float64 scratch of the output layer: e^a of the (m, ob) sub-tile and six per-sample vectors
    wsize = m * ob + 6 * ob
    gsize = max([int(a * b) for a, b, f in zip(sizes[:-1], sizes[1:], blas) if f], default=0)
    # compute dtype scratch: z and δ of every stored layer, a BLAS gradient product, and (sample
    # major) the output sub-tile transposed to unit-major, a and δ
    zsize = int(stored.sum()) * tile
    csize = 2 * zsize + gsize + (2 * m * ob if rows else 0)
    meta = np.zeros(HEADER + 5 * n1, dtype=np.int64)
    meta[H_L] = L
    meta[H_ACT] = activation_code
    meta[H_OUT] = output_code
    meta[H_TILE] = tile
    meta[H_NPARAMS] = intercept_offsets[-1]
    meta[H_NCOEF] = coef_offsets[-1]
    meta[H_ZSIZE] = zsize
    meta[H_WSIZE] = wsize
    meta[H_ROWS] = int(rows)
    meta[H_GSIZE] = gsize
    meta[HEADER : HEADER + n1] = sizes
    meta[HEADER + n1 : HEADER + 2 * n1] = zoff
    meta[HEADER + 2 * n1 : HEADER + 3 * n1] = coef_offsets
    meta[HEADER + 3 * n1 : HEADER + 4 * n1] = intercept_offsets
    meta[HEADER + 4 * n1 : HEADER + 4 * n1 + L] = np.asarray(blas, dtype=np.int64)
    return meta, csize, wsize


# ------------------------------------------------------------------ vectorizable transcendentals
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**11
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: (x + _SHIFTER) - _SHIFTER rounds x to an integer
_SHIFTER_BITS = 0x4338000000000000  # its IEEE bits; bits(_SHIFTER + k) = _SHIFTER_BITS + k
_SQRT2 = 1.4142135623730951
_SQRT2M1 = 0.41421356237309503
_MANT_MASK = (1 << 52) - 1
_ONE_BITS = 1023 << 52


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64 as an int64 (a register move; vectorizes)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, b):
    """The float64 whose IEEE bits are the int64 ``b``."""
    if b != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


# ------------------------------------------------------------------ explicit 8-lane vectors
class Vec8(types.Type):
    """Eight lanes of a float dtype as one LLVM vector value: a register the tile products keep
    their sums in (LLVM's vectorizer would keep them in memory, behind run-time alias checks)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec8({dtype})")


@register_model(Vec8)
class _Vec8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), 8))


def _vptr(context, builder, aty, arr, k):
    """Pointer to element k of array ``arr`` (type ``aty``) as a pointer to eight lanes."""
    a = context.make_array(aty)(context, builder, arr)
    ptr = builder.gep(a.data, [k])
    return builder.bitcast(ptr, ir.VectorType(context.get_value_type(aty.dtype), 8).as_pointer())


def _splat(builder, x):
    """The LLVM vector holding scalar ``x`` in all eight lanes."""
    vty = ir.VectorType(x.type, 8)
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))


@intrinsic
def vld(typingctx, a, k):
    """Lanes ``a.flat[k : k + 8]`` of a C-contiguous array (unaligned load)."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_vptr(context, builder, sig.args[0], args[0], k), align=sig.args[0].dtype.bitwidth // 8)

    return Vec8(a.dtype)(a, k), codegen


@intrinsic
def vst(typingctx, a, k, v):
    """``a.flat[k : k + 8] = v``."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(v, Vec8)):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        builder.store(args[2], _vptr(context, builder, sig.args[0], args[0], k), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, k, v), codegen


@intrinsic
def ld(typingctx, a, k):
    """``a.flat[k]`` of a C-contiguous array, no wraparound of negative ``k`` (plain indexing with a
    computed index keeps a sign test and a select per load in the inner loops)."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load(builder.gep(arr.data, [k]))

    return a.dtype(a, k), codegen


@intrinsic
def vsplat(typingctx, x):
    """``x`` in all eight lanes."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return Vec8(x)(x), codegen


@intrinsic
def vfma(typingctx, z, m, acc):
    """``acc + z * m`` lane by lane with one rounding (FMA); ``m`` a scalar, cast to the lanes' dtype."""
    if not (isinstance(z, Vec8) and isinstance(acc, Vec8) and isinstance(m, types.Float)):
        return None

    def codegen(context, builder, sig, args):
        vty = args[0].type
        m = context.cast(builder, args[1], sig.args[1], sig.args[0].dtype)
        v = _splat(builder, m)
        name = "llvm.fma.v8f64" if isinstance(vty.element, ir.DoubleType) else "llvm.fma.v8f32"
        fn = builder.module.declare_intrinsic(name, (), ir.FunctionType(vty, [vty, vty, vty]))
        return builder.call(fn, [args[0], v, args[2]])

    return acc(z, m, acc), codegen


def _lanes(context, builder, ty, val, dtype):
    """``val`` of numba type ``ty`` (a scalar or a Vec8) as eight lanes of ``dtype``."""
    if isinstance(ty, Vec8):
        if ty.dtype == dtype:
            return val
        vty = ir.VectorType(context.get_value_type(dtype), 8)
        if dtype.bitwidth > ty.dtype.bitwidth:
            return builder.fpext(val, vty)
        return builder.fptrunc(val, vty)
    return _splat(builder, context.cast(builder, val, ty, dtype))


def _vec_dtype(*tys):
    """The lanes' dtype of an operation on ``tys`` (scalars and Vec8 of one dtype), or None."""
    dts = {t.dtype for t in tys if isinstance(t, Vec8)}
    if len(dts) != 1 or not all(isinstance(t, (Vec8, types.Number)) for t in tys):
        return None
    return dts.pop()


def _vbinary(op):
    @intrinsic
    def vop(typingctx, a, b):
        dt = _vec_dtype(a, b)
        if dt is None:
            return None

        def codegen(context, builder, sig, args):
            x = _lanes(context, builder, sig.args[0], args[0], dt)
            y = _lanes(context, builder, sig.args[1], args[1], dt)
            return getattr(builder, op)(x, y)

        return Vec8(dt)(a, b), codegen

    return vop


vadd = _vbinary("fadd")
vsub = _vbinary("fsub")
vmul = _vbinary("fmul")
vdiv = _vbinary("fdiv")


@intrinsic
def vmuladd(typingctx, a, b, c):
    """``a * b + c`` lane by lane with one rounding (FMA); any of them may be a scalar."""
    dt = _vec_dtype(a, b, c)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        x, y, z = (_lanes(context, builder, t, v, dt) for t, v in zip(sig.args, args))
        name = "llvm.fma.v8f64" if dt == types.float64 else "llvm.fma.v8f32"
        fn = builder.module.declare_intrinsic(name, (), ir.FunctionType(x.type, [x.type] * 3))
        return builder.call(fn, [x, y, z])

    return Vec8(dt)(a, b, c), codegen


@intrinsic
def vwhere(typingctx, x, y, a, b):
    """``a if x >= y else b`` lane by lane (an ordered comparison: NaN takes ``b``)."""
    dt = _vec_dtype(x, y, a, b)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        xv, yv, av, bv = (_lanes(context, builder, t, v, dt) for t, v in zip(sig.args, args))
        return builder.select(builder.fcmp_ordered(">=", xv, yv), av, bv)

    return Vec8(dt)(x, y, a, b), codegen


@intrinsic
def vwhere_gt(typingctx, x, y, a, b):
    """``a if x > y else b`` lane by lane (NaN takes ``b``)."""
    dt = _vec_dtype(x, y, a, b)
    if dt is None:
        return None

    def codegen(context, builder, sig, args):
        xv, yv, av, bv = (_lanes(context, builder, t, v, dt) for t, v in zip(sig.args, args))
        return builder.select(builder.fcmp_ordered(">", xv, yv), av, bv)

    return Vec8(dt)(x, y, a, b), codegen


@intrinsic
def vabs(typingctx, x):
    """|x| lane by lane."""
    if not isinstance(x, Vec8):
        return None

    def codegen(context, builder, sig, args):
        name = "llvm.fabs.v8f64" if sig.args[0].dtype == types.float64 else "llvm.fabs.v8f32"
        fn = builder.module.declare_intrinsic(name, (), ir.FunctionType(args[0].type, [args[0].type]))
        return builder.call(fn, [args[0]])

    return x(x), codegen


@intrinsic
def vpow2k(typingctx, kb):
    """2^k from ``kb = k + _SHIFTER`` (k integral, −1022 ≤ k ≤ 1023): bits (kb − shifter + 1023) << 52."""
    if not (isinstance(kb, Vec8) and kb.dtype == types.float64):
        return None

    def codegen(context, builder, sig, args):
        ity = ir.VectorType(ir.IntType(64), 8)
        b = builder.bitcast(args[0], ity)
        b = builder.add(b, ir.Constant(ity, [1023 - _SHIFTER_BITS] * 8))
        b = builder.shl(b, ir.Constant(ity, [52] * 8))
        return builder.bitcast(b, args[0].type)

    return kb(kb), codegen


@intrinsic
def vsplit_exponent(typingctx, x):
    """``(e, m)`` with x = 2^e · m, m in [1, 2), e a float, for positive normal float64 lanes."""
    if not (isinstance(x, Vec8) and x.dtype == types.float64):
        return None

    def codegen(context, builder, sig, args):
        ity = ir.VectorType(ir.IntType(64), 8)
        b = builder.bitcast(args[0], ity)
        e = builder.sub(builder.ashr(b, ir.Constant(ity, [52] * 8)), ir.Constant(ity, [1023] * 8))
        e = builder.sitofp(e, args[0].type)
        m = builder.or_(builder.and_(b, ir.Constant(ity, [_MANT_MASK] * 8)), ir.Constant(ity, [_ONE_BITS] * 8))
        m = builder.bitcast(m, args[0].type)
        return context.make_tuple(builder, sig.return_type, [e, m])

    return types.UniTuple(x, 2)(x), codegen


@intrinsic
def vhsum(typingctx, v):
    """((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)) as a float64 scalar (fixed order)."""
    if not isinstance(v, Vec8):
        return None

    def codegen(context, builder, sig, args):
        x = _lanes(context, builder, sig.args[0], args[0], types.float64)
        e = [builder.extract_element(x, ir.Constant(ir.IntType(32), i)) for i in range(8)]
        a = builder.fadd(builder.fadd(e[0], e[1]), builder.fadd(e[2], e[3]))
        b = builder.fadd(builder.fadd(e[4], e[5]), builder.fadd(e[6], e[7]))
        return builder.fadd(a, b)

    return types.float64(v), codegen


@intrinsic
def vldd(typingctx, a, k):
    """Lanes ``a.flat[k : k + 8]`` widened to float64."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        v = builder.load(_vptr(context, builder, sig.args[0], args[0], k), align=sig.args[0].dtype.bitwidth // 8)
        return _lanes(context, builder, Vec8(sig.args[0].dtype), v, types.float64)

    return Vec8(types.float64)(a, k), codegen


@intrinsic
def vstc(typingctx, a, k, v):
    """``a.flat[k : k + 8] = v``, the lanes cast to the array's dtype."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(v, Vec8)):
        return None

    def codegen(context, builder, sig, args):
        k = context.cast(builder, args[1], sig.args[1], types.intp)
        x = _lanes(context, builder, sig.args[2], args[2], sig.args[0].dtype)
        builder.store(x, _vptr(context, builder, sig.args[0], args[0], k), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, k, v), codegen


@intrinsic
def vhsum8(typingctx, x0, x1, x2, x3, x4, x5, x6, x7):
    """The lane sums of x0, ..., x7 as the eight lanes of one float64 vector (lane k: Σ lanes of xk).

    A tree of shuffles and adds, 14 shuffles and 7 adds for the eight sums (one :func:`vhsum` each
    would take 8 times 3 of both). Lane k sums in the fixed order ((0 + 4) + (2 + 6)) + ((1 + 5) +
    (3 + 7)) of xk's lanes."""
    tys = (x0, x1, x2, x3, x4, x5, x6, x7)
    if not all(isinstance(t, Vec8) for t in tys):
        return None

    def codegen(context, builder, sig, args):
        v = [_lanes(context, builder, t, a, types.float64) for t, a in zip(sig.args, args)]
        mty = ir.VectorType(ir.IntType(32), 8)

        def level(a, b, lo, hi):
            return builder.fadd(
                builder.shuffle_vector(a, b, ir.Constant(mty, lo)), builder.shuffle_vector(a, b, ir.Constant(mty, hi))
            )

        # halves, then quarters, then pairs of lanes; the inputs are taken in the order that
        # leaves the sum of xk in lane k
        h = [level(v[a], v[b], [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]) for a, b in _HSUM8_PAIRS]
        q0 = level(h[0], h[1], [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
        q1 = level(h[2], h[3], [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
        return level(q0, q1, [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])

    return Vec8(types.float64)(*tys), codegen


_HSUM8_PAIRS = ((0, 4), (2, 6), (1, 5), (3, 7))


@intrinsic
def vadd_to(typingctx, G, k0, k1, v):
    """``G.flat[k0 : k0 + 4] += v[0:4]`` and ``G.flat[k1 : k1 + 4] += v[4:8]`` (float64 G; k1 = k0 + 4
    is one run of eight)."""
    if not (isinstance(G, types.Array) and G.dtype == types.float64 and G.layout == "C" and isinstance(v, Vec8)):
        return None

    def codegen(context, builder, sig, args):
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        x = _lanes(context, builder, sig.args[3], args[3], types.float64)
        v4 = ir.VectorType(ir.DoubleType(), 4)
        for kk, kt, half in ((args[1], sig.args[1], [0, 1, 2, 3]), (args[2], sig.args[2], [4, 5, 6, 7])):
            k = context.cast(builder, kk, kt, types.intp)
            ptr = builder.bitcast(builder.gep(arr.data, [k]), v4.as_pointer())
            h = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(ir.IntType(32), 4), half))
            builder.store(builder.fadd(builder.load(ptr, align=8), h), ptr, align=8)
        return context.get_dummy_value()

    return types.none(G, k0, k1, v), codegen


@intrinsic
def vlane(typingctx, v, r):
    """Lane ``r`` of ``v`` as a float64 scalar."""
    if not (isinstance(v, Vec8) and isinstance(r, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        x = _lanes(context, builder, sig.args[0], args[0], types.float64)
        return builder.extract_element(x, context.cast(builder, args[1], sig.args[1], types.int32))

    return types.float64(v, r), codegen


@njit(**_MATH)
def exp_parts(x):
    """``(p, s)`` with e^x = (1 + p) · s, p = e^r − 1 for |r| ≤ ln2 / 2 and s = 2^k, x clamped to
    [−708, 709]. Straight-line code without a libm call, so loops that call it vectorize; 2^k is
    assembled from integer bits."""
    v = min(max(x, -708.0), 709.0)
    kb = v * _LOG2E + _SHIFTER
    kd = kb - _SHIFTER  # round(v / ln 2), exactly, as a float
    r = (v - kd * _LN2_HI) - kd * _LN2_LO  # Cody–Waite reduction
    # e^r − 1 by its Taylor series to r^13 (|r| ≤ 0.347: truncation below 1e-17 relative), Horner
    q = 1.0 / 6227020800
    q = 1.0 / 479001600 + r * q
    q = 1.0 / 39916800 + r * q
    q = 1.0 / 3628800 + r * q
    q = 1.0 / 362880 + r * q
    q = 1.0 / 40320 + r * q
    q = 1.0 / 5040 + r * q
    q = 1.0 / 720 + r * q
    q = 1.0 / 120 + r * q
    q = 1.0 / 24 + r * q
    q = 1.0 / 6 + r * q
    q = 0.5 + r * q
    q = 1.0 + r * q
    # bits(kb) − bits(shifter) = k; (k + 1023) << 52 are the bits of 2^k
    return r * q, _from_bits((_bits(kb) - _SHIFTER_BITS + 1023) << 52)


@njit(**_MATH)
def exp1(x):
    """e^x for float64 x (see :func:`exp_parts`)."""
    p, s = exp_parts(x)
    return (1.0 + p) * s


@njit(**_MATH)
def expm1_1(x):
    """e^x − 1 for float64 x, accurate near 0."""
    p, s = exp_parts(x)
    return p if s == 1.0 else (1.0 + p) * s - 1.0


@njit(**_MATH)
def _log_series(f):
    """2 atanh(f) = log((1 + f) / (1 − f)) for |f| ≤ 0.1716, to double round-off."""
    f2 = f * f
    q = 1.0 / 23
    q = 1.0 / 21 + f2 * q
    q = 1.0 / 19 + f2 * q
    q = 1.0 / 17 + f2 * q
    q = 1.0 / 15 + f2 * q
    q = 1.0 / 13 + f2 * q
    q = 1.0 / 11 + f2 * q
    q = 1.0 / 9 + f2 * q
    q = 1.0 / 7 + f2 * q
    q = 1.0 / 5 + f2 * q
    q = 1.0 / 3 + f2 * q
    q = 1.0 + f2 * q
    return 2.0 * f * q


@njit(**_MATH)
def log1p_unit(v):
    """log(1 + v) for v in [0, 1]."""
    big = v > _SQRT2M1
    # log(1 + v) = [ln 2] + 2 atanh(f), with 1 + v (or (1 + v) / 2) = (1 + f) / (1 − f)
    f = (v - 1.0) / (v + 3.0) if big else v / (v + 2.0)
    return (_LN2 if big else 0.0) + _log_series(f)


@njit(**_MATH)
def log1(x):
    """log(x) for positive normal float64 x."""
    b = _bits(x)
    k = np.float64((b >> 52) - 1023)  # the binary exponent
    mant = _from_bits((b & _MANT_MASK) | _ONE_BITS)  # the mantissa in [1, 2)
    big = mant > _SQRT2
    mant = mant * 0.5 if big else mant
    k = k + 1.0 if big else k
    return k * _LN2_HI + (k * _LN2_LO + _log_series((mant - 1.0) / (mant + 1.0)))


# ------------------------------------------------------------------ the same functions on Vec8
# Explicit 8-lane forms of the functions above (float64 lanes), for the tile loops: straight-line
# vector code whatever LLVM's loop vectorizer decides in the calling context, and several
# independent evaluations in flight per loop step. The polynomials are evaluated by Estrin's
# scheme (the same terms, a shorter dependency chain than Horner's); results agree with the
# scalar forms to a few units in the last place.
@njit(**_JIT)
def vexp_parts(x):
    """:func:`exp_parts` on eight lanes: ``(p, s)`` with e^x = (1 + p) · s."""
    v = vwhere_gt(-708.0, x, -708.0, x)  # NaN passes through both clamps
    v = vwhere_gt(v, 709.0, 709.0, v)
    kb = vmuladd(v, _LOG2E, _SHIFTER)
    kd = vsub(kb, _SHIFTER)
    r = vmuladd(kd, -_LN2_LO, vmuladd(kd, -_LN2_HI, v))
    r2 = vmul(r, r)
    r4 = vmul(r2, r2)
    r8 = vmul(r4, r4)
    # q = Σ_{k=0}^{12} r^k / (k + 1)!, p = r q
    a0 = vmuladd(r, 1.0 / 2, 1.0)
    a1 = vmuladd(r, 1.0 / 24, 1.0 / 6)
    a2 = vmuladd(r, 1.0 / 720, 1.0 / 120)
    a3 = vmuladd(r, 1.0 / 40320, 1.0 / 5040)
    a4 = vmuladd(r, 1.0 / 3628800, 1.0 / 362880)
    a5 = vmuladd(r, 1.0 / 479001600, 1.0 / 39916800)
    b0 = vmuladd(r2, a1, a0)
    b1 = vmuladd(r2, a3, a2)
    b2 = vmuladd(r2, a5, a4)
    c0 = vmuladd(r4, b1, b0)
    c1 = vmuladd(r4, 1.0 / 6227020800, b2)
    q = vmuladd(r8, c1, c0)
    return vmul(r, q), vpow2k(kb)


@njit(**_JIT)
def vexp_neg_pade(x):
    """``(E, rO, s)`` with e^x = s · P / Q for x ≤ 0 (eight lanes; x clamped at −708): the [6/6]
    Padé approximant P / Q of e^r, |r| ≤ ln2 / 2 (relative error below 2e-19), P = E + r O and
    Q = E − r O from the even and odd parts; s = 2^k. Fewer multiply-adds than the Taylor form, and the
    division it needs is the one σ and tanh make anyway."""
    v = vwhere_gt(-708.0, x, -708.0, x)  # NaN passes through
    kb = vmuladd(v, _LOG2E, _SHIFTER)
    kd = vsub(kb, _SHIFTER)
    r = vmuladd(kd, -_LN2_LO, vmuladd(kd, -_LN2_HI, v))
    r2 = vmul(r, r)
    e = vmuladd(vmuladd(vmuladd(r2, 1.0 / 665280, 1.0 / 792), r2, 5.0 / 44), r2, 1.0)
    o = vmul(vmuladd(vmuladd(r2, 1.0 / 15840, 1.0 / 66), r2, 0.5), r)
    return e, o, vpow2k(kb)


@njit(**_JIT)
def vlogistic(x):
    """σ(x) on eight float64 lanes: with e^−|x| = s P / Q, σ = Q / (Q + s P) for x ≥ 0 and
    s P / (Q + s P) below."""
    e, o, s = vexp_neg_pade(vsub(0.0, vabs(x)))
    q = vsub(e, o)
    sp = vmul(s, vadd(e, o))
    return vdiv(vwhere(x, 0.0, q, sp), vadd(q, sp))


@njit(**_JIT)
def vtanh(x):
    """tanh on eight float64 lanes: with e^−2|x| = s P / Q, tanh|x| = (Q − s P) / (Q + s P), the
    numerator formed as E (1 − s) − r O (1 + s) (exact 1 − s: no cancellation for small |x|)."""
    e, ro, s = vexp_neg_pade(vmul(vabs(x), -2.0))
    num = vmuladd(e, vsub(1.0, s), vmul(ro, vsub(-1.0, s)))
    t = vdiv(num, vmuladd(s, vadd(e, ro), vsub(e, ro)))
    return vwhere(x, 0.0, t, vsub(0.0, t))


@njit(**_JIT)
def vlog_series(f):
    """:func:`_log_series` on eight lanes (Estrin's scheme)."""
    f2 = vmul(f, f)
    f4 = vmul(f2, f2)
    f8 = vmul(f4, f4)
    a0 = vmuladd(f2, 1.0 / 3, 1.0)
    a1 = vmuladd(f2, 1.0 / 7, 1.0 / 5)
    a2 = vmuladd(f2, 1.0 / 11, 1.0 / 9)
    a3 = vmuladd(f2, 1.0 / 15, 1.0 / 13)
    a4 = vmuladd(f2, 1.0 / 19, 1.0 / 17)
    a5 = vmuladd(f2, 1.0 / 23, 1.0 / 21)
    b0 = vmuladd(f4, a1, a0)
    b1 = vmuladd(f4, a3, a2)
    b2 = vmuladd(f4, a5, a4)
    q = vmuladd(f8, vmuladd(f8, b2, b1), b0)
    return vmul(vmul(f, 2.0), q)


@njit(**_JIT)
def vlog1p_unit(v):
    """:func:`log1p_unit` on eight lanes (v in [0, 1])."""
    # one division: f = (v − 1) / (v + 3) above √2 − 1, v / (v + 2) below
    num = vwhere_gt(v, _SQRT2M1, vsub(v, 1.0), v)
    den = vwhere_gt(v, _SQRT2M1, vadd(v, 3.0), vadd(v, 2.0))
    return vadd(vwhere_gt(v, _SQRT2M1, _LN2, 0.0), vlog_series(vdiv(num, den)))


@njit(**_JIT)
def vlog(x):
    """:func:`log1` on eight lanes (positive normal x)."""
    k, mant = vsplit_exponent(x)
    big = vwhere_gt(mant, _SQRT2, 1.0, 0.0)
    mant = vwhere_gt(mant, _SQRT2, vmul(mant, 0.5), mant)
    k = vadd(k, big)
    f = vdiv(vsub(mant, 1.0), vadd(mant, 1.0))
    return vmuladd(k, _LN2_HI, vmuladd(k, _LN2_LO, vlog_series(f)))


# ------------------------------------------------------------------------- hidden activations
@njit(**_JIT)
def _activate_scalar(code, a, q0):
    """:func:`activate` on ``a[q0:]`` one element at a time (the tail after the vectors)."""
    m = a.shape[0]
    if code == 1:
        # σ(a) = 1 / (1 + e^−a) for a ≥ 0 and e^a / (1 + e^a) below: e = e^−|a| never overflows
        for q in range(q0, m):
            x = np.float64(a[q])
            e = exp1(-abs(x))
            a[q] = (1.0 if x >= 0 else e) / (1.0 + e)
    elif code == 2:
        # tanh|a| = −u / (2 + u) with u = expm1(−2|a|): no cancellation for small |a|
        for q in range(q0, m):
            x = np.float64(a[q])
            u = expm1_1(-2.0 * abs(x))
            t = -u / (2.0 + u)
            a[q] = t if x >= 0 else -t
    elif code == 3:
        for q in range(q0, m):
            a[q] = a[q] if a[q] > 0 else 0


@njit(**_JIT)
def activate_rows(code, a, k0, m):
    """z = σ(a) in place on ``a.flat[k0 : k0 + m]``, m a multiple of 16, in 8-lane vectors
    (two independent evaluations a step); evaluated in float64."""
    if code == 1:
        for k in range(k0, k0 + m, 16):
            x = vlogistic(vldd(a, k))
            y = vlogistic(vldd(a, k + 8))
            vstc(a, k, x)
            vstc(a, k + 8, y)
    elif code == 2:
        for k in range(k0, k0 + m, 16):
            x = vtanh(vldd(a, k))
            y = vtanh(vldd(a, k + 8))
            vstc(a, k, x)
            vstc(a, k + 8, y)
    elif code == 3:
        for k in range(k0, k0 + m, 8):
            x = vld(a, k)
            vst(a, k, vwhere_gt(x, 0.0, x, 0.0))


@njit(**_JIT)
def activate(code, a):
    """z = σ(a) in place on the flat tile ``a`` (compute dtype; evaluated in float64).

    Codes follow :data:`fastbp.layout.ACTIVATIONS`: 0 identity, 1 logistic, 2 tanh, 3 relu.
    Whole 16-element groups go through the vector forms, the rest element by element.
    """
    m16 = a.shape[0] // 16 * 16
    if code != 0:
        activate_rows(code, a, 0, m16)
        _activate_scalar(code, a, m16)


@njit(**_JIT)
def activation_derivative(code, z, d):
    """δ *= σ'(a) in place, σ' written from z = σ(a) (flat tiles of equal length)."""
    m = z.shape[0]
    if code == 1:
        for q in range(m):
            d[q] *= z[q] * (1 - z[q])
    elif code == 2:
        for q in range(m):
            d[q] *= 1 - z[q] * z[q]
    elif code == 3:
        for q in range(m):
            d[q] = d[q] if z[q] > 0 else 0


# --------------------------------------------------------------------------- small tile products
@njit(**_JIT)
def _fin(mode, v, Zd, k):
    """A register of tile products finished before its store: ``mode`` 3 relu (forward), 11–13
    δ σ'(a) with σ' written from z = Zd.flat[k : k + 8] (logistic, tanh, relu), else as is."""
    if mode == 3:
        return vwhere_gt(v, 0.0, v, 0.0)
    if mode == 11:
        z = vld(Zd, k)
        return vmul(v, vmul(z, vsub(1.0, z)))
    if mode == 12:
        z = vld(Zd, k)
        return vmul(v, vsub(1.0, vmul(z, z)))
    if mode == 13:
        return vwhere_gt(vld(Zd, k), 0.0, v, 0.0)
    return v


@njit(**_JIT)
def mm_flat(Mt, B, bo, Z, zi, A, ao, ts, mode, Zd, zdo):
    """A[j, :] = b_j + Σ_i Mt[j, i] Z[i, :] on flat unit-major tiles of ``ts`` columns (a multiple
    of 16): b_j = B.flat[bo + j] (``bo`` < 0: no bias), rows of Z from ``Z.flat[zi]``, of A from
    ``A.flat[ao]``. Forward ``Mt = W.T``; backward (W δ) ``Mt = W``: the layout of the 2-D view
    ``Mt`` (F or C) is a type, so each direction gets its own addressing. Each register block is
    finished by :func:`_fin` (``mode``, z rows of ``Zd`` from ``zdo``) before its one store.

    Register blocks of 8 outputs x 16 samples (16 accumulators: two FMA pipes of 4 cycles' latency
    stay busy, and each input row is loaded once per 8 outputs); leftover outputs go 2 x 32 (as
    many loads per multiply-add as 4 x 16, less code) and a last one 1 x 32, so even a lone output
    keeps 4 sums in flight. Every sum runs from the bias through inputs 0, 1, ... in FMA steps.
    """
    n_out, n_in = Mt.shape
    zero = Mt[0, 0] - Mt[0, 0]
    j = 0
    while j + 8 <= n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        b1 = ld(B, bo + j + 1) if bo >= 0 else zero
        b2 = ld(B, bo + j + 2) if bo >= 0 else zero
        b3 = ld(B, bo + j + 3) if bo >= 0 else zero
        b4 = ld(B, bo + j + 4) if bo >= 0 else zero
        b5 = ld(B, bo + j + 5) if bo >= 0 else zero
        b6 = ld(B, bo + j + 6) if bo >= 0 else zero
        b7 = ld(B, bo + j + 7) if bo >= 0 else zero
        for s in range(0, ts, 16):
            a0 = vsplat(b0)
            a1 = vsplat(b1)
            a2 = vsplat(b2)
            a3 = vsplat(b3)
            a4 = vsplat(b4)
            a5 = vsplat(b5)
            a6 = vsplat(b6)
            a7 = vsplat(b7)
            c0, c1, c2, c3, c4, c5, c6, c7 = a0, a1, a2, a3, a4, a5, a6, a7
            for i in range(n_in):
                k = zi + i * ts + s
                z = vld(Z, k)
                y = vld(Z, k + 8)
                m = Mt[j, i]
                a0 = vfma(z, m, a0)
                c0 = vfma(y, m, c0)
                m = Mt[j + 1, i]
                a1 = vfma(z, m, a1)
                c1 = vfma(y, m, c1)
                m = Mt[j + 2, i]
                a2 = vfma(z, m, a2)
                c2 = vfma(y, m, c2)
                m = Mt[j + 3, i]
                a3 = vfma(z, m, a3)
                c3 = vfma(y, m, c3)
                m = Mt[j + 4, i]
                a4 = vfma(z, m, a4)
                c4 = vfma(y, m, c4)
                m = Mt[j + 5, i]
                a5 = vfma(z, m, a5)
                c5 = vfma(y, m, c5)
                m = Mt[j + 6, i]
                a6 = vfma(z, m, a6)
                c6 = vfma(y, m, c6)
                m = Mt[j + 7, i]
                a7 = vfma(z, m, a7)
                c7 = vfma(y, m, c7)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a1, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c1, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a2, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c2, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a3, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c3, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a4, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c4, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a5, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c5, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a6, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c6, Zd, zdo + o + 8))
            o += ts
            vst(A, ao + o, _fin(mode, a7, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c7, Zd, zdo + o + 8))
        j += 8
    while j + 2 <= n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        b1 = ld(B, bo + j + 1) if bo >= 0 else zero
        for s in range(0, ts, 32):
            w = 32 if s + 32 <= ts else 16
            a0 = vsplat(b0)
            a1 = vsplat(b1)
            c0 = a0
            c1 = a1
            e0 = a0
            e1 = a1
            f0 = a0
            f1 = a1
            if w == 32:
                for i in range(n_in):
                    k = zi + i * ts + s
                    z = vld(Z, k)
                    y = vld(Z, k + 8)
                    x = vld(Z, k + 16)
                    u = vld(Z, k + 24)
                    m0 = Mt[j, i]
                    m1 = Mt[j + 1, i]
                    a0 = vfma(z, m0, a0)
                    c0 = vfma(y, m0, c0)
                    e0 = vfma(x, m0, e0)
                    f0 = vfma(u, m0, f0)
                    a1 = vfma(z, m1, a1)
                    c1 = vfma(y, m1, c1)
                    e1 = vfma(x, m1, e1)
                    f1 = vfma(u, m1, f1)
            else:
                for i in range(n_in):
                    k = zi + i * ts + s
                    z = vld(Z, k)
                    y = vld(Z, k + 8)
                    m0 = Mt[j, i]
                    m1 = Mt[j + 1, i]
                    a0 = vfma(z, m0, a0)
                    c0 = vfma(y, m0, c0)
                    a1 = vfma(z, m1, a1)
                    c1 = vfma(y, m1, c1)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            vst(A, ao + o + ts, _fin(mode, a1, Zd, zdo + o + ts))
            vst(A, ao + o + ts + 8, _fin(mode, c1, Zd, zdo + o + ts + 8))
            if w == 32:
                vst(A, ao + o + 16, _fin(mode, e0, Zd, zdo + o + 16))
                vst(A, ao + o + 24, _fin(mode, f0, Zd, zdo + o + 24))
                vst(A, ao + o + ts + 16, _fin(mode, e1, Zd, zdo + o + ts + 16))
                vst(A, ao + o + ts + 24, _fin(mode, f1, Zd, zdo + o + ts + 24))
        j += 2
    if j < n_out:
        b0 = ld(B, bo + j) if bo >= 0 else zero
        for s in range(0, ts, 32):
            w = 32 if s + 32 <= ts else 16
            a0 = vsplat(b0)
            c0 = a0
            e0 = a0
            f0 = a0
            if w == 32:
                for i in range(n_in):
                    k = zi + i * ts + s
                    m0 = Mt[j, i]
                    a0 = vfma(vld(Z, k), m0, a0)
                    c0 = vfma(vld(Z, k + 8), m0, c0)
                    e0 = vfma(vld(Z, k + 16), m0, e0)
                    f0 = vfma(vld(Z, k + 24), m0, f0)
            else:
                for i in range(n_in):
                    k = zi + i * ts + s
                    m0 = Mt[j, i]
                    a0 = vfma(vld(Z, k), m0, a0)
                    c0 = vfma(vld(Z, k + 8), m0, c0)
            o = j * ts + s
            vst(A, ao + o, _fin(mode, a0, Zd, zdo + o))
            vst(A, ao + o + 8, _fin(mode, c0, Zd, zdo + o + 8))
            if w == 32:
                vst(A, ao + o + 16, _fin(mode, e0, Zd, zdo + o + 16))
                vst(A, ao + o + 24, _fin(mode, f0, Zd, zdo + o + 24))


@njit(**_JIT)
def grad_acc(Zin, Dout, G, gb):
    """G[i, j] += Σ_s z_i δ_j and gb[j] += Σ_s δ_j over the tile, summed in float64.

    Explicit 8-lane sums over the samples: blocks of four input rows by four output rows share
    their loads (sixteen accumulators, eight loads per sixteen multiply-adds), the sixteen lane
    sums reduced together by :func:`vhsum8` at the end. The output rows are taken in groups of
    ``GRAD_JC``, every input block running over one group before the next: the group's δ rows
    stay in L1 while the z rows stream. The first input block also sums the bias rows from its
    loads (a pass over δ less). Leftover outputs go 8 input rows at a time, leftover inputs 8
    outputs at a time. Each sum's order is fixed by the code alone.
    """
    n_in, ts = Zin.shape
    n_out = Dout.shape[0]
    n_in4 = n_in // 4 * 4
    n_out4 = n_out // 4 * 4
    # 4 x 4 blocks; the first block of inputs also sums the bias rows, from the same loads
    for jc in range(0, n_out4, GRAD_JC):
        je = min(n_out4, jc + GRAD_JC)
        for i in range(0, n_in4, 4):
            zi = i * ts
            for j in range(jc, je, 4):
                dj = j * ts
                a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = vsplat(0.0)
                c0 = c1 = c2 = c3 = f0 = f1 = f2 = f3 = h0 = h1 = h2 = h3 = a0
                for s in range(0, ts, 8):
                    x = vldd(Zin, zi + s)
                    y = vldd(Zin, zi + ts + s)
                    u = vldd(Zin, zi + 2 * ts + s)
                    v = vldd(Zin, zi + 3 * ts + s)
                    e0 = vldd(Dout, dj + s)
                    e1 = vldd(Dout, dj + ts + s)
                    e2 = vldd(Dout, dj + 2 * ts + s)
                    e3 = vldd(Dout, dj + 3 * ts + s)
                    if i == 0:
                        h0 = vadd(h0, e0)
                        h1 = vadd(h1, e1)
                        h2 = vadd(h2, e2)
                        h3 = vadd(h3, e3)
                    a0 = vmuladd(x, e0, a0)
                    a1 = vmuladd(x, e1, a1)
                    a2 = vmuladd(x, e2, a2)
                    a3 = vmuladd(x, e3, a3)
                    b0 = vmuladd(y, e0, b0)
                    b1 = vmuladd(y, e1, b1)
                    b2 = vmuladd(y, e2, b2)
                    b3 = vmuladd(y, e3, b3)
                    c0 = vmuladd(u, e0, c0)
                    c1 = vmuladd(u, e1, c1)
                    c2 = vmuladd(u, e2, c2)
                    c3 = vmuladd(u, e3, c3)
                    f0 = vmuladd(v, e0, f0)
                    f1 = vmuladd(v, e1, f1)
                    f2 = vmuladd(v, e2, f2)
                    f3 = vmuladd(v, e3, f3)
                r = i * n_out + j
                vadd_to(G, r, r + n_out, vhsum8(a0, a1, a2, a3, b0, b1, b2, b3))
                vadd_to(G, r + 2 * n_out, r + 3 * n_out, vhsum8(c0, c1, c2, c3, f0, f1, f2, f3))
                if i == 0:
                    gb[j] += vhsum(h0)
                    gb[j + 1] += vhsum(h1)
                    gb[j + 2] += vhsum(h2)
                    gb[j + 3] += vhsum(h3)
    # bias of the outputs no block summed
    for j in range(n_out4 if n_in4 > 0 else 0, n_out):
        a0 = vsplat(0.0)
        for s in range(0, ts, 8):
            a0 = vadd(a0, vldd(Dout, j * ts + s))
        gb[j] += vhsum(a0)
    # leftover input rows (n_in % 4 of them) by the outputs of the blocks, eight at a time
    for i in range(n_in4, n_in):
        zi = i * ts
        j = 0
        while j + 8 <= n_out4:
            dj = j * ts
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vsplat(0.0)
            for s in range(0, ts, 8):
                x = vldd(Zin, zi + s)
                a0 = vmuladd(x, vldd(Dout, dj + s), a0)
                a1 = vmuladd(x, vldd(Dout, dj + ts + s), a1)
                a2 = vmuladd(x, vldd(Dout, dj + 2 * ts + s), a2)
                a3 = vmuladd(x, vldd(Dout, dj + 3 * ts + s), a3)
                a4 = vmuladd(x, vldd(Dout, dj + 4 * ts + s), a4)
                a5 = vmuladd(x, vldd(Dout, dj + 5 * ts + s), a5)
                a6 = vmuladd(x, vldd(Dout, dj + 6 * ts + s), a6)
                a7 = vmuladd(x, vldd(Dout, dj + 7 * ts + s), a7)
            r = i * n_out + j
            vadd_to(G, r, r + 4, vhsum8(a0, a1, a2, a3, a4, a5, a6, a7))
            j += 8
        while j < n_out4:
            a0 = vsplat(0.0)
            for s in range(0, ts, 8):
                a0 = vmuladd(vldd(Zin, zi + s), vldd(Dout, j * ts + s), a0)
            G[i, j] += vhsum(a0)
            j += 1
    # leftover output rows (n_out % 4 of them) by all inputs, eight at a time
    for j in range(n_out4, n_out):
        dj = j * ts
        i = 0
        while i + 8 <= n_in:
            zi = i * ts
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vsplat(0.0)
            for s in range(0, ts, 8):
                e = vldd(Dout, dj + s)
                a0 = vmuladd(vldd(Zin, zi + s), e, a0)
                a1 = vmuladd(vldd(Zin, zi + ts + s), e, a1)
                a2 = vmuladd(vldd(Zin, zi + 2 * ts + s), e, a2)
                a3 = vmuladd(vldd(Zin, zi + 3 * ts + s), e, a3)
                a4 = vmuladd(vldd(Zin, zi + 4 * ts + s), e, a4)
                a5 = vmuladd(vldd(Zin, zi + 5 * ts + s), e, a5)
                a6 = vmuladd(vldd(Zin, zi + 6 * ts + s), e, a6)
                a7 = vmuladd(vldd(Zin, zi + 7 * ts + s), e, a7)
            h = vhsum8(a0, a1, a2, a3, a4, a5, a6, a7)
            for r in range(8):
                G[i + r, j] += vlane(h, r)
            i += 8
        while i < n_in:
            a0 = vsplat(0.0)
            for s in range(0, ts, 8):
                a0 = vmuladd(vldd(Zin, i * ts + s), vldd(Dout, dj + s), a0)
            G[i, j] += vhsum(a0)
            i += 1


@njit(**_FAST)
def _add_f64(G, tmp):
    """G += tmp elementwise (2-D, same shape; tmp in the compute dtype)."""
    n, m = G.shape
    for i in range(n):
        for j in range(m):
            G[i, j] += np.float64(tmp[i, j])


# ----------------------------------------------------------------------------------- output layer
_EXP_SPLIT = 708.0  # exp_parts clamps at 709: above this, e^a = (e^(a/2))², which overflows to inf
_TINY = 2.2250738585072014e-308  # the least positive normal float64 (log1 and vlog need normals)


@njit(**_MATH)
def exp_overflowing(a):
    """e^a for float64 a, +inf past float64's range (a > 709.78), unlike :func:`exp1`."""
    if a <= _EXP_SPLIT:
        return exp1(a)
    h = exp1(0.5 * a)
    return h * h


@njit(**_FAST)
def _sum(v):
    """Σ v in float64 (a fixed-order vectorized reduction: the compiled order does not vary)."""
    acc = 0.0
    for q in range(v.shape[0]):
        acc += v[q]
    return acc


@njit(**_MATH)
def output_loss_delta(code, Ap, T, t0, ts, sw, Dp, ws):
    """Loss Σ_s s_n ℓ_n of the tile (float64) and δ = s_n ∂ℓ/∂a into ``Dp``.

    ``Ap``, ``Dp``: (m, tsp) unit-major output pre-activations and deltas, of which the first
    ``ts`` columns are samples and the rest padding (its δ is set to 0); ``T``: the whole (n, m)
    target array, the tile's rows starting at ``t0``; ``sw``: sample weights or an empty array.
    Codes follow :data:`fastbp.layout.OUTPUTS`: 0 identity, 1 logistic, 2 softmax, 3 exponential.

    Every loop runs over the tile's samples without a loop-carried sum (the per-sample losses go
    to scratch, summed at the end), so each vectorizes with the scalar exp and log inlined.
    """
    m, tsp = Ap.shape
    for k in range(m):
        for s in range(ts, tsp):
            Dp[k, s] = 0
    mts = m * ts
    has_sw = sw.shape[0] > 0
    e = ws[:mts]
    base = mts
    w = ws[base : base + ts]  # per-sample weights of the tile
    lv = ws[base + ts : base + 2 * ts]  # per-sample weighted losses
    if has_sw:
        for s in range(ts):
            w[s] = sw[t0 + s]
    else:
        for s in range(ts):
            w[s] = 1.0
    # rows as 1-D contiguous arrays: unit-stride loops, which vectorize
    if code == 1:
        # ℓ = softplus(a) − t a, softplus(a) = max(a, 0) + log1p(e^−|a|); δ = σ(a) − t
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                a = np.float64(A[s])
                t = np.float64(T[t0 + s, k])
                ea = exp1(-abs(a))
                p = (1.0 if a >= 0 else ea) / (1.0 + ea)
                D[s] = w[s] * (p - t)
                lv[s] += w[s] * ((max(a, 0.0) + log1p_unit(ea)) - t * a)
    elif code == 2:
        # ℓ = Σ_k t_k · lse(a) − Σ_k t_k a_k, lse(a) = max a + log Σ_k e^(a_k − max a);
        # δ_k = Σ_j t_j · softmax(a)_k − t_k
        amax = ws[base + 2 * ts : base + 3 * ts]
        sum_e = ws[base + 3 * ts : base + 4 * ts]
        tsum = ws[base + 4 * ts : base + 5 * ts]
        ta = ws[base + 5 * ts : base + 6 * ts]
        A = Ap[0]
        for s in range(ts):
            amax[s] = A[s]
        for k in range(1, m):
            A = Ap[k]
            for s in range(ts):
                amax[s] = max(amax[s], np.float64(A[s]))
        for s in range(ts):
            sum_e[s] = 0.0
            tsum[s] = 0.0
            ta[s] = 0.0
        for k in range(m):
            A = Ap[k]
            ek = e[k * ts : (k + 1) * ts]
            for s in range(ts):
                x = exp1(np.float64(A[s]) - amax[s])
                ek[s] = x
                sum_e[s] += x
            for s in range(ts):
                t = np.float64(T[t0 + s, k])
                tsum[s] += t
                ta[s] += t * np.float64(A[s])
        for s in range(ts):
            lv[s] = log1(sum_e[s])
        for s in range(ts):
            lv[s] = w[s] * (tsum[s] * (amax[s] + lv[s]) - ta[s])
        for s in range(ts):
            amax[s] = w[s] * tsum[s] / sum_e[s]  # amax is no longer needed: the δ scale
        for k in range(m):
            D = Dp[k]
            ek = e[k * ts : (k + 1) * ts]
            for s in range(ts):
                D[s] = amax[s] * ek[s] - w[s] * np.float64(T[t0 + s, k])
    elif code == 3:
        # p = e^a rounded to the compute dtype (inf past its range, stored in D first);
        # ℓ = t log t − t a + (p − t), half the Poisson deviance; δ = p − t. A sample of weight
        # 0 gets exactly 0 (not 0 · inf).
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                a = np.float64(A[s])
                t = np.float64(T[t0 + s, k])
                D[s] = exp_overflowing(a)
                d = np.float64(D[s]) - t
                tlogt = t * log1(max(t, _TINY)) if t > 0.0 else 0.0
                counts = w[s] > 0.0
                D[s] = w[s] * d if counts else 0.0
                lv[s] += w[s] * ((tlogt - t * a) + d) if counts else 0.0
    else:
        # ℓ = ½ Σ_k (a_k − t_k)², δ = a − t
        for s in range(ts):
            lv[s] = 0.0
        for k in range(m):
            A = Ap[k]
            D = Dp[k]
            for s in range(ts):
                r = np.float64(A[s]) - np.float64(T[t0 + s, k])
                D[s] = w[s] * r
                lv[s] += w[s] * (0.5 * r * r)
    return _sum(lv)


@njit(**_JIT)
def output_tile(code, Z, ao, D, do, tsp, m, T, t0, ts, sw, ws):
    """:func:`output_loss_delta` on flat unit-major tiles, in 8-lane vectors: ``Z.flat[ao + k tsp + s]``
    is a^L_k of sample s, δ goes to ``D.flat[do + k tsp + s]``; ``tsp`` (a multiple of 8) columns
    of which the first ``ts`` are samples. Returns the tile's Σ_s s_n ℓ_n (float64).

    The targets and weights are first copied unit-major into ``ws`` (padding: weight 0, so its
    δ is 0), then one pass over the samples computes loss and δ of every output in registers.
    """
    tt = 0  # targets, (m, tsp)
    wo = m * tsp  # per-sample weights
    for s in range(ts):
        for k in range(m):
            ws[tt + k * tsp + s] = T[t0 + s, k]
    for k in range(m):
        for s in range(ts, tsp):
            ws[tt + k * tsp + s] = 0.0
    if sw.shape[0] > 0:
        for s in range(ts):
            ws[wo + s] = sw[t0 + s]
    else:
        for s in range(ts):
            ws[wo + s] = 1.0
    for s in range(ts, tsp):
        ws[wo + s] = 0.0
    acc = vsplat(0.0)
    if code == 1:
        # ℓ = softplus(a) − t a, softplus(a) = max(a, 0) + log1p(e^−|a|); δ = σ(a) − t
        for k in range(m):
            for s in range(0, tsp, 8):
                a = vldd(Z, ao + k * tsp + s)
                t = vldd(ws, tt + k * tsp + s)
                w = vldd(ws, wo + s)
                e, o, sc = vexp_neg_pade(vsub(0.0, vabs(a)))
                q = vsub(e, o)
                sp = vmul(sc, vadd(e, o))
                den = vadd(q, sp)
                p = vdiv(vwhere(a, 0.0, q, sp), den)
                ea = vdiv(sp, q)  # e^−|a|
                vstc(D, do + k * tsp + s, vmul(w, vsub(p, t)))
                sp_ = vadd(vwhere_gt(a, 0.0, a, 0.0), vlog1p_unit(ea))
                acc = vmuladd(w, vsub(sp_, vmul(t, a)), acc)
    elif code == 2:
        # ℓ = Σ_k t_k · lse(a) − Σ_k t_k a_k, lse(a) = max a + log Σ_k e^(a_k − max a);
        # δ_k = Σ_j t_j · softmax(a)_k − t_k
        for s in range(0, tsp, 8):
            amax = vldd(Z, ao + s)
            for k in range(1, m):
                x = vldd(Z, ao + k * tsp + s)
                amax = vwhere_gt(x, amax, x, amax)
            sum_e = vsplat(0.0)
            tsum = vsplat(0.0)
            ta = vsplat(0.0)
            for k in range(m):
                a = vldd(Z, ao + k * tsp + s)
                p, sc = vexp_parts(vsub(a, amax))
                x = vmuladd(p, sc, sc)
                vstc(D, do + k * tsp + s, x)  # e_k, until δ_k replaces it
                sum_e = vadd(sum_e, x)
                t = vldd(ws, tt + k * tsp + s)
                tsum = vadd(tsum, t)
                ta = vmuladd(t, a, ta)
            w = vldd(ws, wo + s)
            acc = vmuladd(w, vsub(vmul(tsum, vadd(amax, vlog(sum_e))), ta), acc)
            scale = vdiv(vmul(w, tsum), sum_e)
            for k in range(m):
                t = vldd(ws, tt + k * tsp + s)
                vstc(D, do + k * tsp + s, vsub(vmul(scale, vldd(D, do + k * tsp + s)), vmul(w, t)))
    elif code == 3:
        # p = e^a rounded to the compute dtype (inf past its range; stored in D first);
        # ℓ = t log t − t a + (p − t), half the Poisson deviance; δ = p − t. A sample of weight
        # 0 (and the padding) gets exactly 0 (not 0 · inf).
        for k in range(m):
            for s in range(0, tsp, 8):
                o = do + k * tsp + s
                a = vldd(Z, ao + k * tsp + s)
                t = vldd(ws, tt + k * tsp + s)
                w = vldd(ws, wo + s)
                p, sc = vexp_parts(a)
                ph, sh = vexp_parts(vmul(a, 0.5))
                eh = vmuladd(ph, sh, sh)
                vstc(D, o, vwhere_gt(a, _EXP_SPLIT, vmul(eh, eh), vmuladd(p, sc, sc)))
                d = vsub(vldd(D, o), t)
                tlogt = vwhere_gt(t, 0.0, vmul(t, vlog(vwhere_gt(t, _TINY, t, _TINY))), 0.0)
                vstc(D, o, vwhere_gt(w, 0.0, vmul(w, d), 0.0))
                acc = vadd(acc, vwhere_gt(w, 0.0, vmul(w, vadd(vsub(tlogt, vmul(t, a)), d)), 0.0))
    else:
        # ℓ = ½ Σ_k (a_k − t_k)², δ = a − t
        for k in range(m):
            for s in range(0, tsp, 8):
                r = vsub(vldd(Z, ao + k * tsp + s), vldd(ws, tt + k * tsp + s))
                w = vldd(ws, wo + s)
                vstc(D, do + k * tsp + s, vmul(w, r))
                acc = vmuladd(w, vmul(vmul(r, r), 0.5), acc)
    return vhsum(acc)


# ------------------------------------------------------------------------------------ one block
# A block kernel, _chunk_units (unit-major tiles, narrow networks) or _chunk_rows (sample-major
# BLAS tiles, networks with a wide layer), called as
#     f(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g)
# adds the loss and gradient sums of samples [s_begin, s_end) into g (float64): g[:n_params]
# receives Σ s_n ∂ℓ_n/∂W and g[n_params] Σ s_n ℓ_n. Wc is W in the compute dtype; zd and ws are
# the block's scratch (compute dtype and float64). Which one a network uses is fixed by its
# layout (meta[H_ROWS]); :func:`run` compiles only the one it is asked for.


@njit(**_FAST)
def _bias_rows(A, b):
    """A[s, :] += b for every row of a sample-major tile."""
    ts, n = A.shape
    for s in range(ts):
        for j in range(n):
            A[s, j] += b[j]


@njit(**_FAST)
def _grad_rows(Zin, Dout, Gt, Gl, gb):
    """Gl += Zin.T @ Dout (one gemm in the compute dtype, added in float64), gb += Σ_s Dout."""
    np.dot(Zin.T, Dout, Gt)
    _add_f64(Gl, Gt)
    ts, n_out = Dout.shape
    for s in range(ts):
        for j in range(n_out):
            gb[j] += np.float64(Dout[s, j])


@njit(**_JIT)
def _chunk_rows(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The block kernel on sample-major tiles: every product is a gemm on C-contiguous blocks.

    ``Z_l`` is ``(ts, n_units)``; z^0 is the tile's rows of X, read in place. Per tile and layer:
    ``A = Z @ W`` forward, ``G += Z.T @ δ`` and ``δ_prev = δ @ W.T`` backward, each one BLAS call
    (which runs its own threads). The output layer is evaluated on sub-tiles transposed to the
    unit-major form of :func:`output_loss_delta`.
    """
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    n_params = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    gsize = meta[H_GSIZE]
    n1 = L + 1
    SZ = HEADER
    ZO = HEADER + n1
    CO = HEADER + 2 * n1
    IO = HEADER + 3 * n1
    m = meta[SZ + L]
    ob = min(tile, OUT_BLOCK)
    Z = zd[:zsize]
    D = zd[zsize : 2 * zsize]
    GT = zd[2 * zsize : 2 * zsize + gsize]
    o = 2 * zsize + gsize
    AUf = zd[o : o + m * ob]
    DUf = zd[o + m * ob : o + 2 * m * ob]
    loss = 0.0
    for t0 in range(s_begin, s_end, tile):
        ts = min(tile, s_end - t0)
        X0 = X[t0 : t0 + ts]
        # forward: A^{l+1} = Z^l @ W_l + b_l, Z^{l+1} = σ(A^{l+1})
        for layer in range(L):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_out = meta[ZO + layer + 1]
            Aout = Z[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
            Wl = Wc[meta[CO + layer] : meta[CO + layer + 1]].reshape((n_in, n_out))
            b = Wc[meta[IO + layer] : meta[IO + layer + 1]]
            if layer == 0:
                np.dot(X0, Wl, Aout)
            else:
                zo_in = meta[ZO + layer]
                np.dot(Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in)), Wl, Aout)
            _bias_rows(Aout, b)
            if layer < L - 1:
                activate(act, Aout.reshape(ts * n_out))
        # output: loss and δ^L, on unit-major sub-tiles
        zo = meta[ZO + L]
        AL = Z[zo : zo + ts * m].reshape((ts, m))
        DL = D[zo : zo + ts * m].reshape((ts, m))
        for u0 in range(0, ts, ob):
            us = min(ob, ts - u0)
            AU = AUf[: m * us].reshape((m, us))
            DU = DUf[: m * us].reshape((m, us))
            for s in range(us):
                for k in range(m):
                    AU[k, s] = AL[u0 + s, k]
            loss += output_loss_delta(out, AU, T, t0 + u0, us, sw, DU, ws)
            for s in range(us):
                for k in range(m):
                    DL[u0 + s, k] = DU[k, s]
        # backward: G_l += Z^l.T @ δ^{l+1}, δ^l = σ'(a^l) (δ^{l+1} @ W_l.T)
        for layer in range(L - 1, -1, -1):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_out = meta[ZO + layer + 1]
            Dout = D[zo_out : zo_out + ts * n_out].reshape((ts, n_out))
            co = meta[CO + layer]
            Gl = g[co : co + n_in * n_out].reshape((n_in, n_out))
            gb = g[meta[IO + layer] : meta[IO + layer + 1]]
            Gt = GT[: n_in * n_out].reshape((n_in, n_out))
            if layer == 0:
                _grad_rows(X0, Dout, Gt, Gl, gb)
            else:
                zo_in = meta[ZO + layer]
                Zin = Z[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                _grad_rows(Zin, Dout, Gt, Gl, gb)
                Din = D[zo_in : zo_in + ts * n_in].reshape((ts, n_in))
                Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
                np.dot(Dout, Wl.T, Din)
                activation_derivative(act, Zin.reshape(ts * n_in), Din.reshape(ts * n_in))
    g[n_params] += loss


@njit(**_JIT)
def _chunk_units(Wc, X, T, sw, meta, s_begin, s_end, zd, ws, g):
    """The block kernel on unit-major tiles (narrow networks: the inner loops run over samples)."""
    L = meta[H_L]
    act = meta[H_ACT]
    out = meta[H_OUT]
    tile = meta[H_TILE]
    n_params = meta[H_NPARAMS]
    zsize = meta[H_ZSIZE]
    n1 = L + 1
    SZ = HEADER
    ZO = HEADER + n1
    CO = HEADER + 2 * n1
    IO = HEADER + 3 * n1
    BL = HEADER + 4 * n1
    Z = zd[:zsize]  # z of every layer (z^0 = x, the last holds a^L)
    D = zd[zsize : 2 * zsize]  # δ of every layer
    GT = zd[2 * zsize :]  # BLAS gradient products
    loss = 0.0
    n0 = meta[SZ]
    for t0 in range(s_begin, s_end, tile):
        tsx = min(tile, s_end - t0)
        # the tile is padded with zero samples to a multiple of PAD: the vector loops over samples
        # then run no scalar remainder. Padding gets δ = 0, so it adds exact zeros to the sums.
        ts = min(tile, (tsx + PAD - 1) // PAD * PAD)
        # z^0: the tile of X, transposed to unit-major
        for s in range(tsx):
            for i in range(n0):
                Z[i * ts + s] = X[t0 + s, i]
        for i in range(n0):
            for s in range(tsx, ts):
                Z[i * ts + s] = 0
        # forward: a^{l+1}_j = Σ_i w_ij z^l_i + b_j, z^{l+1} = σ(a^{l+1}) (relu at the store)
        for layer in range(L):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_in = meta[ZO + layer]
            zo_out = meta[ZO + layer + 1]
            hidden = layer < L - 1
            if meta[BL + layer]:
                Zin = Z[zo_in : zo_in + n_in * ts].reshape((n_in, ts))
                Aout = Z[zo_out : zo_out + n_out * ts].reshape((n_out, ts))
                Wl = Wc[meta[CO + layer] : meta[CO + layer + 1]].reshape((n_in, n_out))
                b = Wc[meta[IO + layer] : meta[IO + layer + 1]]
                np.dot(Wl.T, Zin, Aout)
                for j in range(n_out):
                    bj = b[j]
                    for s in range(ts):
                        Aout[j, s] += bj
                if hidden:
                    activate_rows(act, Z, zo_out, n_out * ts)
            else:
                fin = 3 if hidden and act == 3 else 0
                co = meta[CO + layer]
                Wt = Wc[co : co + n_in * n_out].reshape((n_in, n_out)).T
                mm_flat(Wt, Wc, meta[IO + layer], Z, zo_in, Z, zo_out, ts, fin, Z, 0)
                if hidden and fin == 0:
                    activate_rows(act, Z, zo_out, n_out * ts)
        # output: loss and δ^L = s_n (y − t)
        m = meta[SZ + L]
        zo = meta[ZO + L]
        loss += output_tile(out, Z, zo, D, zo, ts, m, T, t0, tsx, sw, ws)
        # backward: ∂/∂w_ij += z_i δ_j, ∂/∂b_j += δ_j, then δ_i = σ'(a_i) Σ_j w_ij δ_j
        for layer in range(L - 1, -1, -1):
            n_in = meta[SZ + layer]
            n_out = meta[SZ + layer + 1]
            zo_in = meta[ZO + layer]
            zo_out = meta[ZO + layer + 1]
            Zin = Z[zo_in : zo_in + n_in * ts].reshape((n_in, ts))
            Dout = D[zo_out : zo_out + n_out * ts].reshape((n_out, ts))
            co = meta[CO + layer]
            Gl = g[co : co + n_in * n_out].reshape((n_in, n_out))
            gb = g[meta[IO + layer] : meta[IO + layer + 1]]
            Wl = Wc[co : co + n_in * n_out].reshape((n_in, n_out))
            if meta[BL + layer]:
                Gt = GT[: n_in * n_out].reshape((n_in, n_out))
                np.dot(Zin, Dout.T, Gt)
                _add_f64(Gl, Gt)
                for j in range(n_out):
                    acc = 0.0
                    for s in range(ts):
                        acc += np.float64(Dout[j, s])
                    gb[j] += acc
            else:
                grad_acc(Zin, Dout, Gl, gb)
            if layer > 0:
                if meta[BL + layer]:
                    Din = D[zo_in : zo_in + n_in * ts].reshape((n_in, ts))
                    np.dot(Wl, Dout, Din)
                    activation_derivative(act, Zin.reshape(n_in * ts), Din.reshape(n_in * ts))
                else:
                    fin = 10 + act if act != 0 else 0
                    mm_flat(Wl, Wc, -1, D, zo_out, D, zo_in, ts, fin, Z, zo_in)
    g[n_params] += loss


# ------------------------------------------------------------------------------------- drivers
# The one compiled entry point, :func:`run`, for the caller and the threads of
# :mod:`fastbp.backends._numba_pool` (the algorithm is described there). It lives in this module
# because Numba's disk cache checks only the source file of the function it caches: an entry
# point in another file would keep running cached copies of these kernels after they change.
@njit(**_JIT)
def _epilogue(W, gbuf, n_blocks, meta, scale, l2):
    """Reduce the blocks' rows in fixed order, scale, and add the L2 term on coefficients."""
    n_params = meta[H_NPARAMS]
    n_coef = meta[H_NCOEF]
    grad = np.empty(n_params, dtype=np.float64)
    for p in range(n_params + 1):
        acc = gbuf[0, p]
        for c in range(1, n_blocks):
            acc += gbuf[c, p]
        if p < n_params:
            grad[p] = scale * acc
    data = gbuf[0, n_params]
    for c in range(1, n_blocks):
        data += gbuf[c, n_params]
    penalty = 0.0
    for p in range(n_coef):
        penalty += W[p] * W[p]
        grad[p] += 2.0 * l2 * W[p]
    return scale * data + l2 * penalty, grad


# ------------------------------------------------------------------------------- control words
# ctl: one pool's int64 control array; the words written by different threads sit on their own
# 64-byte lines. state = gen << 32 | T << 24 | K << 12 | next; worker blocks counts the blocks
# that threads other than the caller ran (the tests read it).
C_STATE, C_DONE, C_JOB, C_WORKER_BLOCKS = 0, 8, 16, 24
C_MAINCPU = 17  # the caller's CPU at publication (written before the state, on the job's line)
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


# ----------------------------------------------------------------------------------- intrinsics
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


# ---------------------------------------------------------------------------------- the blocks
# Everything below `run` is inlined into it at Numba IR level (``inline="always"``): one compiled
# entry point per dtype for the caller and the workers alike. Every extra compiled layer around
# the kernels would cost LLVM another optimization of all of them (~2 s each, cold cache).
_INLINE = dict(_JIT, inline="always")


@njit(**_INLINE)
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
    ``_chunk_units`` or ``_chunk_rows``.
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


@njit(**_INLINE)
def _claim(ctl, gen, slot, marker):
    """As thread ``slot``, claim and run blocks of job ``gen`` until none is left."""
    st = _load_acquire(ctl, C_STATE)
    while (st >> 32) == gen:
        n_slots = (st >> 24) & 0xFF
        n_blocks = (st >> 12) & 0xFFF
        nxt = st & 0xFFF
        if nxt >= n_blocks or slot >= n_slots:
            break
        if _cas(ctl, C_STATE, st, st + 1):
            # the job cannot end while this block is unfinished: its table is still valid
            job = carray(_pointer(_load_acquire(ctl, C_JOB)), (JOB_LEN,), np.int64)
            _run_block(job, nxt, slot, marker, _chunk_units)  # jobs on threads are unit-major
            if slot > 0:
                _fetch_add(ctl, C_WORKER_BLOCKS, 1)  # a statistic: blocks the workers ran
            _fetch_add(ctl, C_DONE, 1)
        st = _load_acquire(ctl, C_STATE)


@njit(**_INLINE)
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
def _serve(ctl, slot, marker, spin_cycles):
    """A worker's life between two sleeps: run the jobs it finds, spinning between them; return
    the last generation seen once none came for ``spin_cycles`` of its own running time.

    Linux first runs a thread woken by the caller on the caller's core (wake-affine placement),
    where it gets the core only in turns with the caller. Two things keep that from lasting:
    only time on a CPU counts toward the spin (a gap of more than ``OFF_CPU_CYCLES`` between two
    looks at the clock was spent descheduled), so the worker does not go back to sleep after half
    a millisecond of such turns only to be woken onto the same core again; and a worker that
    finds itself on the caller's CPU when a job comes moves off it (:func:`_leave_cpu`). Seen
    before: no block taken for 50 ms after another library's threads had run, calls at
    one-thread speed."""
    seen = _load_acquire(ctl, C_STATE) >> 32
    _claim(ctl, seen, slot, marker)  # a job published while this thread was waking is claimable
    while True:
        spins = 0
        last = _clock(spins)
        spun = 0
        gen = seen
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
        seen = gen
        if _LINUX and _getcpu() == ctl[C_MAINCPU]:
            _leave_cpu(ctl[C_MAINCPU])
        _claim(ctl, gen, slot, marker)


@njit(**_INLINE)
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


# --------------------------------------------------------------------------------- the driver
@njit(**_JIT)
def run(W, X, T, sw, meta, zd, ws, gbuf, Wc, scale, l2, n_blocks, n_slots, ctl, job, slot, rows):
    """Loss and gradient of every sample (``slot = 0``), or the life of worker ``slot`` (> 0).

    ``rows``: None for unit-major networks, an (empty) array for sample-major BLAS networks
    (which run one block and let BLAS use the cores). Numba prunes the branches of ``rows is
    None`` before typing when ``rows`` is None, so a lab-sized network's first call does not
    wait for the BLAS path's compilation. (It does not prune them for an array: a BLAS
    network's specialization compiles both kernels.)

    ``slot = 0``: the blocks run on up to ``n_slots`` threads of the pool whose control array is
    ``ctl`` (``n_slots = 1``: all on the calling thread, ``ctl`` untouched). ``job`` is this
    call's table (scratch of the caller); ``zd``/``ws`` hold one row per slot, ``gbuf`` one per
    block (each block zeroes its own row). Returns ``(loss, grad)``.

    ``slot > 0`` (``rows`` None): serve jobs of the pool ``ctl`` as :func:`_serve` does, spinning
    ``n_blocks`` cycles at most between two jobs; returns ``(the last generation seen, an empty
    array)``. The other arguments are placeholders of the caller's types, so the
    workers run the very specialization the caller compiled.
    """
    marker = Wc[:0]
    if rows is None:
        if slot > 0:
            return float(_serve(ctl, slot, marker, n_blocks)), np.empty(0, dtype=np.float64)
    for p in range(W.shape[0]):
        Wc[p] = W[p]
    _fill_job(job, X, T, sw, meta, zd, ws, gbuf, Wc, n_blocks)
    if rows is None:
        if n_slots > 1 and n_blocks > 1:
            ctl[C_DONE] = 0
            ctl[C_JOB] = _address(job)
            gen = ((_load_acquire(ctl, C_STATE) >> 32) + 1) & 0x7FFFFFFF
            ctl[C_MAINCPU] = _getcpu()
            _store_release(ctl, C_STATE, (gen << 32) | (n_slots << 24) | (n_blocks << 12))
            _claim(ctl, gen, 0, marker)
            # every block is claimed; wait for those other threads are running
            spins = 0
            while _load_acquire(ctl, C_DONE) < n_blocks:
                _relax()
                spins += 1
                if spins & 63 == 0:
                    _sched_yield()
        else:
            for b in range(n_blocks):
                _run_block(job, b, 0, marker, _chunk_units)
    else:
        for b in range(n_blocks):
            _run_block(job, b, 0, marker, _chunk_rows)
    return _epilogue(W, gbuf, n_blocks, meta, scale, l2)
