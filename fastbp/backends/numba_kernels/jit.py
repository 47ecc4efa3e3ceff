"""How every kernel of the package is compiled: the ``njit`` options the modules share.

Importing this module registers the package's disk-cache locator (:mod:`.cache`) before any
``@njit(cache=True)`` of the package is decorated, so every cached function is keyed on the
contents of the whole package.
"""

from .cache import register_locator

register_locator()


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
# the pool's functions that take a block kernel (:mod:`.pool`) are inlined into the entry point
# that calls them at Numba IR level: one compiled entry point per dtype for the caller and the
# workers alike. Every extra compiled layer around the kernels would cost LLVM another
# optimization of all of them (~1-2 s each, cold cache); every inlined copy of a function costs
# the entry point's typing and lowering again, so nothing else is inlined this way.
_INLINE = dict(_JIT, inline="always")
