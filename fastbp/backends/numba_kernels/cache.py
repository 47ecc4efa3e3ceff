"""The package's disk cache: compiled code keyed on the contents of every module of the package.

Numba stamps a function's cached code with a hash of *its own* source file. An entry point here
inlines (``inline="always"``) or links in functions of other modules, so with that stamp an edit
to, say, :mod:`.output_layer` would leave :func:`.driver.run` running its old cached copy.
:class:`PackageCacheLocator` gives every function defined in this package one stamp instead,
:data:`PACKAGE_STAMP`, a hash of the contents of all the package's modules (computed once, at
import): an edit to any of them recompiles every entry point, an unchanged tree loads from the
cache as before.

Where the cache lives stays Numba's choice: ``NUMBA_CACHE_DIR`` when set, else the package's
``__pycache__``, else (a read-only install) the user-wide cache directory. The locator asks Numba's
own locators, in Numba's order, and changes only the stamp. (A list of locators forced through
``NUMBA_CACHE_LOCATOR_CLASSES`` replaces Numba's list, this locator included.)

:func:`is_cached` says whether the cache already holds the compiled entry point for a dtype.
"""

import hashlib
import os

import numpy as np
from numba.core import caching

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
# Numba >= 0.61 calls it CacheImpl; before, _CacheImpl
_CACHE_IMPL = getattr(caching, "CacheImpl", None) or caching._CacheImpl


def package_stamp(directory=_PACKAGE_DIR):
    """A hash of the name and contents of every ``.py`` module in ``directory`` (hex str), or None
    when it is not a readable directory (a zipped install: Numba's own stamps apply)."""
    h = hashlib.sha256()
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".py"))
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read()
            h.update(f"{name}\0{len(data)}\0".encode())
            h.update(data)
    except OSError:
        return None
    return h.hexdigest()


#: The source stamp of every cached function of this package.
PACKAGE_STAMP = package_stamp()


def _in_package(py_file):
    return os.path.dirname(os.path.realpath(py_file)) == _PACKAGE_DIR


class PackageCacheLocator(caching._CacheLocator):
    """Numba's cache locator for the package's functions, with the package's stamp.

    Wraps the locator Numba would have chosen (``inner``): same directory, same file names; only
    :meth:`get_source_stamp` differs.
    """

    def __init__(self, inner):
        self._inner = inner
        self._py_file = getattr(inner, "_py_file", None)  # Numba names it in its warnings

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return PACKAGE_STAMP

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if PACKAGE_STAMP is None or not _in_package(py_file):
            return None
        for locator_class in _CACHE_IMPL._locator_classes:
            if locator_class.__qualname__ == cls.__qualname__:
                continue
            inner = locator_class.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


def register_locator():
    """Put :class:`PackageCacheLocator` first in Numba's list of locators (once; a reloaded module
    replaces its earlier copy). Must run before the package's functions are decorated: Numba picks
    a function's locator when ``@njit(cache=True)`` runs."""
    classes = _CACHE_IMPL._locator_classes
    classes[:] = [c for c in classes if c.__qualname__ != PackageCacheLocator.__qualname__]
    classes.insert(0, PackageCacheLocator)


def is_cached(dtype=np.float64, blas=False, epoch=False, second_order=False):
    """Whether the disk cache holds the entry point compiled for networks of ``dtype``.

    True when the first call of such a network will load compiled code (a fraction of a second)
    rather than compile it (about 10 s), for the package as it is now: an edited module makes it
    False. ``blas`` selects networks with a wide layer (the sample-major kernel). False when it
    cannot tell (caching disabled, a Numba whose cache internals differ).

    Parameters
    ----------
    dtype : numpy dtype, default float64
        The compute dtype, float64 or float32.
    blas : bool, default False
        The sample-major (BLAS) specialization instead of the unit-major one.
    epoch : bool, default False
        The entry point of minibatch epochs (:func:`.epoch.run_epoch`, what the estimators' sgd
        and adam fits compile) instead of the loss and gradient's (:func:`.driver.run`).
    second_order : bool, default False
        The entry point of Hessian-vector and Gauss-Newton products
        (:func:`.second_order.run_curvature`, compiled on the first ``hessp``, ``hess`` or
        ``gauss_newton_product`` call) instead.
    """
    # the entry point's module imports this one (through .jit): import it only when asked
    from numba.core.typing.typeof import Purpose, typeof

    from .driver import run
    from .epoch import run_epoch
    from .pool import CTL_LEN
    from .pool_threads import epoch_placeholders, placeholders

    ctl = np.zeros(CTL_LEN, dtype=np.int64)
    rows = np.empty(0, dtype=np.int8) if blas else None
    if second_order:
        from .second_order import curvature_placeholders, run_curvature

        W, V, X, T, sw, meta, rmeta, zd, ws, gbuf, Wc, job = curvature_placeholders(dtype)
        entry = run_curvature
        args = (W, V, X, T, sw, meta, rmeta, zd, ws, gbuf, Wc, 0.0, 0.0, 0, 1, 0, 1, ctl, job, 0, rows)
    elif epoch:
        entry, args = run_epoch, (*epoch_placeholders(dtype, ctl)[:-1], rows)
    else:
        W, X, T, sw, meta, zd, ws, gbuf, Wc, job = placeholders(dtype)
        entry, args = run, (W, X, T, sw, meta, zd, ws, gbuf, Wc, 0.0, 0.0, 1, 1, ctl, job, 0, rows)
    sig = tuple(typeof(a, Purpose.argument) for a in args)
    try:
        cache = entry._cache
        key = cache._index_key(sig, entry.targetctx.codegen())
        name = cache._cache_file._load_index().get(key)
        return name is not None and os.path.exists(os.path.join(cache.cache_path, name))
    except Exception:  # a NullCache (caching off), or another Numba's internals
        return False
