"""Explicit 8-lane vectors: the type :class:`Vec8` and the llvmlite intrinsics on it.

A ``Vec8`` is eight lanes of a float dtype held in one LLVM vector value: the tile products keep
their sums in registers with it (LLVM's loop vectorizer would keep them in memory, behind
run-time alias checks), and the transcendental functions evaluate eight samples at once.

* memory: :func:`vld`/:func:`vst` (lanes of the array's dtype), :func:`vldd`/:func:`vstc` (widened
  to float64, cast back at the store), :func:`ld` (one element, no wraparound);
* arithmetic, any operand a scalar or a Vec8: ``vadd``, ``vsub``, ``vmul``, ``vdiv``,
  :func:`vmuladd` and :func:`vfma` (one rounding), :func:`vwhere`/:func:`vwhere_gt` (selects),
  :func:`vabs`;
* sums across lanes in a fixed order (results never depend on the compiler):
  :func:`vhsum`, :func:`vhsum8`, :func:`vadd_to`, :func:`vlane`.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model


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
