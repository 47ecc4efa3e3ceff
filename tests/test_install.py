"""fastbp installed without its compiled extension (no C compiler at install time).

``setup.py`` leaves the extension out when it cannot be built and records why beside
``fastbp/backends/cython_backend.py``; the backend is then unavailable, asking for it quotes the
record, and ``backend="auto"`` falls back to numba with a one-time warning. The real no-compiler
install (``CC=/bin/false pip install .`` in a fresh virtual environment) is a step of
``.ci/run``; here the missing extension is simulated.
"""

import importlib
import os
import sys
import warnings

import pytest

import fastbp
from fastbp import backends

EXT = "fastbp.backends._cython_kernels"


@pytest.fixture
def unbuilt(monkeypatch):
    """The cython extension made unimportable, the registry's caches emptied (monkeypatch puts
    sys.modules and the registry back after the test)."""
    for mod in (EXT, "fastbp.backends.cython_backend"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setitem(sys.modules, EXT, None)  # makes `import` of it raise ImportError
    monkeypatch.delattr(backends, "_cython_kernels", raising=False)  # `from . import` looks here first
    monkeypatch.setattr(backends, "_LOADED", {k: v for k, v in backends._LOADED.items() if k != "cython"})
    monkeypatch.setattr(backends, "_REASONS", {})
    monkeypatch.setattr(backends, "_NOT_BUILT", set())
    monkeypatch.setattr(backends, "_WARNED", set())
    yield
    sys.modules.pop("fastbp.backends.cython_backend", None)


@pytest.fixture
def build_record():
    """The record a failed build leaves beside cython_backend.py, written for the test."""
    path = os.path.join(os.path.dirname(backends.__file__), "_cython_build_error.txt")
    if os.path.exists(path):
        pytest.skip("this installation has a real build record")
    with open(path, "w") as f:
        f.write("CompileError: command '/bin/false' failed with exit code 1\n")
    yield path
    os.remove(path)


def test_without_a_record_the_backend_says_it_was_not_built(unbuilt):
    with pytest.raises(ImportError, match="was not built or does not load") as info:
        importlib.import_module("fastbp.backends.cython_backend")
    assert not isinstance(info.value, backends.NotBuiltError)  # a checkout never built: no warning
    sys.modules.pop("fastbp.backends.cython_backend", None)
    assert "cython" not in fastbp.available_backends()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.choose(fastbp.Network([2, 3, 1], backend="numpy").layout, 100) != "cython"


def test_a_failed_build_is_quoted_and_auto_warns_once(unbuilt, build_record):
    assert "cython" not in fastbp.available_backends()
    with pytest.raises(ValueError, match=r"'cython' is not available.*compiling it failed.*/bin/false.*pip install"):
        fastbp.Network([2, 3, 1], backend="cython")
    net = fastbp.Network([2, 3, 1])  # auto
    with pytest.warns(backends.BackendNotBuiltWarning, match="/bin/false"):
        assert backends.choose(net.layout, 100) == ("numba" if "numba" in fastbp.available_backends() else "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends.choose(net.layout, 100)  # once per process
