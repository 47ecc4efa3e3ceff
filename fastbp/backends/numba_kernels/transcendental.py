"""Vectorizable e^x, log, σ and tanh in float64, scalar and on :class:`~.vec8.Vec8` lanes.

The llvmlite wheels have no SVML, and a scalar libm call per element stops the loop vectorizer:
``exp``, ``expm1``, ``log`` and ``log1p`` are written here as straight-line code (range
reduction, a polynomial, 2^k assembled from IEEE bits), which LLVM inlines into the calling
loops. The scalar forms (:func:`exp1`, :func:`expm1_1`, :func:`log1`, :func:`log1p_unit`) serve
loops LLVM vectorizes; the 8-lane forms (:func:`vexp_parts`, :func:`vexp_neg_pade`,
:func:`vlogistic`, :func:`vtanh`, :func:`vlog`, :func:`vlog1p_unit`) serve the tile loops. All are
accurate to a few units in the last place of float64; the tests compare them with NumPy's.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .jit import _JIT, _MATH
from .vec8 import Vec8, vabs, vadd, vdiv, vmul, vmuladd, vsub, vwhere, vwhere_gt

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
