"""The numba backend's disk cache (fastbp/backends/numba_kernels/cache.py).

Numba stamps a cached function with the hash of its own source file only; the entry points inline
or link in helpers from the package's other modules. The property that matters: an edit to any
module of the package recompiles every entry point (no stale code from the cache), and an
unchanged package loads from the cache. Shown on a copy of the package, in fresh processes, each
with a cache directory of its own.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from availability import unavailable_reason
from scipy.special import expit

import fastbp

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from numba.core import caching, config  # noqa: E402
from numba.core.registry import CPUDispatcher  # noqa: E402

from fastbp.backends import numba_kernels  # noqa: E402
from fastbp.backends.numba_kernels import cache, driver  # noqa: E402

# A fresh process: σ by the `activate` entry point (activations.py; σ itself is transcendental.py's
# vlogistic) and, when asked, a network's loss by the real entry point `run` (driver.py); what the
# cache held before and after, and the dispatchers' cache hits and misses.
_SCRIPT = r"""
import json, sys, warnings
import numpy as np
import fastbp
from fastbp.backends import numba_kernels
from fastbp.backends.numba_kernels import activations, driver

assert fastbp.__file__.startswith(sys.argv[1]), fastbp.__file__
out = {"cached_before": numba_kernels.is_cached(), "compiled_when_warned": []}
show = warnings.showwarning

def shown(message, category, *args, **kwargs):  # (printed to stderr as usual)
    out["compiled_when_warned"].append(len(driver.run.overloads))
    show(message, category, *args, **kwargs)

warnings.showwarning = shown
z = np.linspace(-6.0, 6.0, 48)  # a multiple of 16: every element through the 8-lane σ
activations.activate(1, z)
out["sigma"] = z.tolist()
if sys.argv[2] == "run":
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 3)), rng.integers(0, 2, 64)
    kw = dict(activation="logistic", output="logistic", l2=0.01, n_threads=1)
    net = fastbp.Network([3, 5, 1], backend="numba", **kw)
    W = net.init_weights(0)
    out["loss"] = net.loss_and_grad(W, X, y)[0]
    out["loss"] = net.loss_and_grad(W, X, y)[0]  # (a second call says nothing)
    out["numpy_loss"] = fastbp.Network([3, 5, 1], backend="numpy", **kw).loss_and_grad(W, X, y)[0]
out["cached_after"] = numba_kernels.is_cached()
for name, f in (("run", driver.run), ("activate", activations.activate)):
    out[name] = [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]
print(json.dumps(out))
"""


def _fresh_process(src, cache_dir, what):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(src), what], capture_output=True, text=True,
                          env=env, cwd=src, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


COMPILING = "NumbaCompileWarning: fastbp: compiling the numba kernels for float64 networks once"


def test_an_edit_to_any_module_recompiles_and_an_unchanged_tree_loads(tmp_path):
    src, cache_dir = tmp_path / "src", tmp_path / "cache"
    shutil.copytree(Path(fastbp.__file__).parent, src / "fastbp", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    a = np.linspace(-6.0, 6.0, 48)

    # 1. an empty cache: everything compiles, and is saved; the first call says so (once), before
    # it compiles
    first = _fresh_process(src, cache_dir, "run")
    assert first["cached_before"] is False and first["cached_after"] is True
    assert first["stderr"].count(COMPILING) == 1, first["stderr"]
    assert first["compiled_when_warned"] == [0]
    assert first["run"][1] >= 1 and first["activate"] == [0, 1]
    assert np.max(np.abs(np.array(first["sigma"]) - expit(a))) <= 1e-15
    assert abs(first["loss"] - first["numpy_loss"]) <= 1e-12 * first["numpy_loss"]

    # 2. the unchanged package: both entry points load from the cache, nothing compiles (nor says
    # it does)
    second = _fresh_process(src, cache_dir, "run")
    assert second["cached_before"] is True
    assert "compiling" not in second["stderr"] and second["compiled_when_warned"] == [], second["stderr"]
    assert second["run"][0] >= 1 and second["run"][1] == 0
    assert second["activate"] == [1, 0]
    assert second["sigma"] == first["sigma"] and second["loss"] == first["loss"]

    # 3. edit a helper in neither entry point's module: σ on 8 lanes (transcendental.py) halved
    module = src / "fastbp/backends/numba_kernels/transcendental.py"
    text = module.read_text()
    old = "    return vdiv(vwhere(x, 0.0, q, sp), vadd(q, sp))\n"
    assert text.count(old) == 1, "vlogistic changed: update the edit this test makes"
    module.write_text(text.replace(old, "    return vmul(vdiv(vwhere(x, 0.0, q, sp), vadd(q, sp)), 0.5)\n"))
    third = _fresh_process(src, cache_dir, "activate only")
    assert np.max(np.abs(np.array(third["sigma"]) - 0.5 * expit(a))) <= 1e-15
    assert third["activate"] == [0, 1]
    assert third["cached_before"] is False  # run too would recompile, not load the old code

    # 4. the edited package, unchanged since: loads its own new code
    fourth = _fresh_process(src, cache_dir, "activate only")
    assert fourth["activate"] == [1, 0] and fourth["sigma"] == third["sigma"]


def test_every_cached_function_of_the_package_has_the_package_stamp():
    """No module of the package escapes the stamp (e.g. one decorated before the locator was
    registered): every cached dispatcher uses the package locator."""
    import importlib
    import pkgutil

    seen = 0
    for info in pkgutil.iter_modules(numba_kernels.__path__):
        module = importlib.import_module(f"{numba_kernels.__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                seen += 1
                locator = obj._cache._impl.locator
                assert isinstance(locator, cache.PackageCacheLocator), obj
                assert locator.get_source_stamp() == cache.PACKAGE_STAMP
    assert seen > 20


def test_stamp_follows_every_module(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(Path(numba_kernels.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    stamp = cache.package_stamp(str(pkg))
    assert stamp == cache.PACKAGE_STAMP
    for module in sorted(pkg.glob("*.py")):
        text = module.read_text()
        module.write_text(text + "\n")
        assert cache.package_stamp(str(pkg)) != stamp, module.name
        module.write_text(text)
    assert cache.package_stamp(str(pkg)) == stamp


def test_locator_keeps_numbas_cache_directories(tmp_path, monkeypatch):
    """NUMBA_CACHE_DIR when set; else the package's __pycache__; else, when that cannot be
    written (a read-only install), the user-wide cache directory. Functions elsewhere keep
    Numba's own locators."""
    py_func = driver.run.py_func
    py_file = driver.__file__
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "chosen"))
    locator = cache.PackageCacheLocator.from_function(py_func, py_file)
    assert Path(locator.get_cache_path()).parent == tmp_path / "chosen"
    assert locator.get_source_stamp() == cache.PACKAGE_STAMP

    monkeypatch.setattr(config, "CACHE_DIR", "")
    locator = cache.PackageCacheLocator.from_function(py_func, py_file)
    assert locator.get_cache_path() == os.path.join(os.path.dirname(py_file), "__pycache__")

    def read_only(self):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(caching.InTreeCacheLocator, "ensure_cache_path", read_only)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user"))
    locator = cache.PackageCacheLocator.from_function(py_func, py_file)
    assert isinstance(locator._inner, caching.UserWideCacheLocator)
    assert Path(locator.get_cache_path()).is_relative_to(tmp_path / "user")
    assert locator.get_source_stamp() == cache.PACKAGE_STAMP

    assert cache.PackageCacheLocator.from_function(test_stamp_follows_every_module, __file__) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_is_cached_after_a_call_of_each_kind(dtype, monkeypatch):
    """is_cached builds the signature of the entry point as the backend calls it: after a call of
    each kind (unit-major, sample-major BLAS) it finds that call's compiled code on disk."""
    from fastbp.backends import numba_backend

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    for blas in (False, True):
        with monkeypatch.context() as m:
            if blas:
                m.setattr(numba_backend, "BLAS_MIN_COEFS", 1)
            net = fastbp.Network([3, 4, 1], backend="numba", dtype=dtype)
            f = net.bind(X, y)
            assert f._kernel.uses_blas == blas
            f(net.init_weights(0))
        assert numba_kernels.is_cached(dtype, blas=blas)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_is_cached_after_an_epoch_of_each_kind(dtype, monkeypatch):
    """is_cached(epoch=True) builds the signature of the epoch's entry point as the backend calls
    it (weighted or not, shuffled or not: one signature), after an epoch of each kind."""
    from fastbp.backends import numba_backend
    from fastbp.backends.numba_kernels.epoch import run_epoch
    from fastbp.optimizers import SGDOptimizer

    rng = np.random.default_rng(0)
    X, T = rng.standard_normal((40, 3)).astype(dtype), rng.integers(0, 2, (40, 1)).astype(dtype)
    for blas in (False, True):
        with monkeypatch.context() as m:
            if blas:
                m.setattr(numba_backend, "BLAS_MIN_COEFS", 1)
            net = fastbp.Network([3, 4, 1], backend="numba", dtype=dtype, n_threads=2)
            kernel = net._kernel_for(40)
            assert kernel.uses_blas == blas
            W = net.init_weights(0).astype(dtype)
            opt = SGDOptimizer([W], 0.01)
            kernel.run_epoch(W, X, T, None, None, 16, 1e-4, opt)
            compiled = len(run_epoch.signatures)
            kernel.run_epoch(W, X, T, rng.uniform(size=40), rng.permutation(40), 16, 1e-4, opt)
            assert len(run_epoch.signatures) == compiled  # the same specialization
        assert numba_kernels.is_cached(dtype, blas=blas, epoch=True)


def test_the_first_call_says_it_compiles_once_per_dtype_and_kind(monkeypatch):
    """The warning comes when the cache lacks the kernels (as is_cached says), on the first call
    of each dtype and kind of network in the process, and not again."""
    import warnings

    from fastbp.backends import NumbaCompileWarning, numba_backend

    monkeypatch.setattr(numba_backend, "_ANNOUNCED", set())
    cached = set()
    monkeypatch.setattr(numba_kernels, "is_cached",
                        lambda dtype=np.float64, blas=False: (np.dtype(dtype), blas) in cached)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)

    def first_call(dtype=np.float64, blas=False):
        with monkeypatch.context() as m:
            m.setattr(numba_backend, "BLAS_MIN_COEFS", 1 if blas else 128 * 128)
            net = fastbp.Network([3, 4, 1], backend="numba", dtype=dtype)
            f = net.bind(X, y)
            assert f._kernel.uses_blas == blas
            f(net.init_weights(0))

    with pytest.warns(NumbaCompileWarning, match=r"compiling the numba kernels for float64 networks once \(~\d+ s\)"):
        first_call()
    with pytest.warns(NumbaCompileWarning, match="for float32 networks"):
        first_call(np.float32)
    with pytest.warns(NumbaCompileWarning, match="for float64 BLAS networks"):
        first_call(blas=True)
    cached.add((np.dtype(np.float32), True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first_call()  # said already in this process
        first_call(np.float32)
        first_call(np.float32, blas=True)  # in the cache


def test_is_cached_after_a_second_order_call():
    """is_cached(second_order=True) builds the signature of second order's entry point as the
    backend calls it: True once a hessp call has compiled (and cached) it."""
    rng = np.random.default_rng(0)
    net = fastbp.Network([3, 4, 1], backend="numba")
    f = net.bind(rng.standard_normal((40, 3)), rng.integers(0, 2, 40))
    W = net.init_weights(0)
    f.hessp(W, W)
    f.gauss_newton_product(W, W)  # the same specialization
    assert numba_kernels.is_cached(np.float64, second_order=True)


def test_the_first_epoch_and_second_order_calls_say_they_compile(monkeypatch):
    """Each entry point announces its own compile, once, when the cache lacks it."""
    from fastbp.backends import NumbaCompileWarning, numba_backend
    from fastbp.optimizers import SGDOptimizer

    monkeypatch.setattr(numba_backend, "_ANNOUNCED", set())
    asked = []

    def is_cached(dtype=np.float64, blas=False, epoch=False, second_order=False):
        asked.append((epoch, second_order))
        return False

    monkeypatch.setattr(numba_kernels, "is_cached", is_cached)
    rng = np.random.default_rng(0)
    X, T = rng.standard_normal((40, 3)), rng.integers(0, 2, (40, 1)).astype(float)
    net = fastbp.Network([3, 4, 1], backend="numba")
    f = net.bind(X, T[:, 0])
    W = net.init_weights(0)
    with pytest.warns(NumbaCompileWarning, match=r"numba second-order kernels for float64 networks once \(~25 s\)"):
        f.hessp(W, W)
    kernel = net._kernel_for(40)
    with pytest.warns(NumbaCompileWarning, match=r"numba epoch kernels for float64 networks once \(~15 s\)"):
        kernel.run_epoch(W.copy(), X, T, None, None, 16, 1e-4, SGDOptimizer([W.copy()], 0.01))
    assert asked == [(False, True), (True, False)]
