"""Build script: the compiled extension built from src_kernels/ is declared here.

Metadata and dependencies live in pyproject.toml. The Cython kernel is compiled with OpenMP when
the compiler accepts ``-fopenmp`` (checked by compiling a tiny test program) and serially
otherwise, so a compiler without OpenMP gives a working, single-threaded backend instead of a
failed install. Nothing here assumes the build machine's CPU: no ``-march=native``; the vector
loops carry their own run-time dispatch (see ``src_kernels/fb_simd.h``).

The extension is optional: when it cannot be built (no working C compiler, Cython or NumPy
missing at build time, a compiler that rejects the sources, e.g. MSVC, which lacks GCC's vector
extensions), the install still succeeds without it, prints why and how to get it, and records the
reason in ``fastbp/backends/_cython_build_error.txt``; ``fastbp.available_backends()`` then lacks
``"cython"``, asking for it quotes that reason, and ``backend="auto"`` uses numba. Wheel builds
set ``FASTBP_REQUIRE_EXTENSION=1`` (see ``[tool.cibuildwheel]`` in pyproject.toml), which makes a
failed extension build fail the build instead, so no wheel is published without its kernel.
"""

import os
import re
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_TEST = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel for reduction(+:n)
    for (int i = 0; i < 4; i++) n += 1;
    return n == 4 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


def openmp_flags(compiler):
    """(compile_args, link_args) for OpenMP, or ([], []) if the compiler cannot build with it."""
    if os.environ.get("FASTBP_DISABLE_OPENMP"):
        return [], []
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"]), (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w") as f:
            f.write(OPENMP_TEST)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=lflags)
            except Exception:  # CompileError, LinkError: try the next spelling, then go serial
                continue
            return cflags, lflags
    return [], []


#: written next to the extension when it could not be built (read by cython_backend.py)
BUILD_ERROR_FILE = "_cython_build_error.txt"

HOW_TO_GET_IT = (
    "To get the compiled backend, install a C compiler (Debian/Ubuntu: apt-get install gcc "
    "python3-dev; Fedora: dnf install gcc python3-devel; macOS: xcode-select --install; it needs "
    "GCC or Clang, MSVC lacks the vector extensions it is written in) and reinstall: "
    "pip install --force-reinstall --no-deps ."
)


def warn_not_built(reason):
    """Tell the installing user that the extension was not built, why, and what to do."""
    banner = "\n".join(
        textwrap.wrap(
            f"fastbp: WARNING: the compiled Cython backend was not built ({reason}). fastbp is "
            f"installed without it and uses its numba and numpy backends. {HOW_TO_GET_IT}",
            width=88,
        )
    )
    print(f"\n{'*' * 88}\n{banner}\n{'*' * 88}\n", file=sys.stderr, flush=True)


def check_compiler(compiler):
    """Raise the compiler's own error unless it compiles an empty C file: a missing or broken
    compiler is found in a second, before Cython translates the kernel (tens of seconds)."""
    from setuptools.errors import CompileError

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "empty.c")
        with open(src, "w") as f:
            f.write("int fastbp_compiler_works(void) { return 0; }\n")
        try:
            compiler.compile([src], output_dir=tmp)
        except Exception as exc:
            name = (getattr(compiler, "compiler_so", None) or [compiler.compiler_type])[0]
            why = str(exc).strip()
            status = re.search(r"exit (?:status|code) (-?\d+)", why)  # (the rest is a long command line)
            why = f"exit status {status.group(1)}" if status else why
            raise CompileError(f"the C compiler {name} cannot compile an empty file ({why})") from exc


def check_vector_extensions(compiler, ext):
    """Raise a CompileError that says so unless the kernel's C header compiles: it needs GCC's
    vector extensions (GCC, Clang, clang-cl), which MSVC lacks."""
    from setuptools.errors import CompileError

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "simd_probe.c")
        with open(src, "w") as f:
            f.write('#include "fb_simd.h"\nint fastbp_lanes(void) { return FB_LANES; }\n')
        try:
            quiet = [] if compiler.compiler_type == "msvc" else ["-w"]  # everything is unused here
            compiler.compile([src], output_dir=tmp, include_dirs=ext.include_dirs, macros=ext.define_macros,
                             extra_postargs=list(ext.extra_compile_args) + quiet)
        except Exception as exc:
            raise CompileError(
                "src_kernels/fb_simd.h does not compile with this C compiler: the kernel needs GCC's "
                "vector extensions (GCC, Clang and clang-cl have them, MSVC does not)"
            ) from exc


class BuildExt(build_ext):
    """build_ext that checks the compiler, translates the Cython source, adds OpenMP flags when
    (and only when) the compiler supports them, and leaves the extension out, with a warning and
    a record of why, when any of that fails."""

    _in_place = False  # --inplace or an editable install: the record also goes to the source

    def run(self):
        self._in_place = bool(self.inplace)
        try:
            super().run()  # set up the compiler (may fail: none installed), then build_extensions
        except Exception as exc:
            self.inplace = self._in_place  # setuptools clears it while building
            self._not_built(exc)

    @staticmethod
    def _required():
        return os.environ.get("FASTBP_REQUIRE_EXTENSION", "") not in ("", "0")

    def build_extensions(self):
        check_compiler(self.compiler)
        for ext in self.extensions:
            check_vector_extensions(self.compiler, ext)
        import numpy as np  # only without build isolation can these be missing (pyproject.toml)
        from Cython.Build import cythonize

        for ext in self.extensions:  # .pyx -> .c (the objects stay: setuptools has annotated them)
            ext.sources = cythonize([ext], compiler_directives={"language_level": "3"})[0].sources
        cflags, lflags = openmp_flags(self.compiler)
        if not cflags:
            print("fastbp: OpenMP not available; building the cython kernel single-threaded", file=sys.stderr)
        for ext in self.extensions:
            ext.include_dirs = list(ext.include_dirs) + [np.get_include()]
            ext.extra_compile_args = list(ext.extra_compile_args) + cflags
            ext.extra_link_args = list(ext.extra_link_args) + lflags
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, a missing compiler (DistutilsExecError)...
            self._not_built(exc)  # (raises again under FASTBP_REQUIRE_EXTENSION)
        else:
            for path in self._error_files(ext):
                if os.path.exists(path):  # an earlier failed build's record, now untrue
                    os.remove(path)

    def _error_files(self, ext):
        """Where the record of a failed build goes: beside the module in the build tree (what a
        wheel holds) and, for in-place and editable builds, in the source package."""
        in_place, self.inplace = self.inplace, False
        try:
            paths = [os.path.join(os.path.dirname(self.get_ext_fullpath(ext.name)), BUILD_ERROR_FILE)]
        finally:
            self.inplace = in_place
        if self._in_place:
            package_dir = self.get_finalized_command("build_py").get_package_dir(ext.name.rpartition(".")[0])
            paths.append(os.path.join(package_dir, BUILD_ERROR_FILE))
        return paths

    def _not_built(self, exc):
        if self._required():
            raise exc
        reason = f"{type(exc).__name__}: {str(exc).strip() or 'no message'}"
        warn_not_built(reason)
        for path in self._error_files(self.extensions[0]):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(path, "w") as f:
                f.write(f"{reason}\n")


# -Wno-psabi: the 64-byte vectors of fb_simd.h only cross inlined helpers, never an ABI boundary
EXTENSION = Extension(
    "fastbp.backends._cython_kernels",
    sources=["src_kernels/_cython_kernels.pyx"],  # translated to C by BuildExt
    include_dirs=["src_kernels"],  # + NumPy's, added by BuildExt
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    # -fno-math-errno: sqrt (the epoch's Adam step) is one instruction that vectorizes, not a call
    # kept for errno's sake; nothing in the kernel reads errno
    extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-Wno-psabi", "-pthread", "-fno-math-errno"],
    extra_link_args=[] if sys.platform == "win32" else ["-pthread"],  # fb_pool.h's workers
    depends=["src_kernels/fb_simd.h", "src_kernels/fb_pool.h", "src_kernels/fb_fpenv.h"],
    optional=True,  # an in-place build copies no extension that was not built (BuildExt says why)
)

setup(ext_modules=[EXTENSION], cmdclass={"build_ext": BuildExt})
