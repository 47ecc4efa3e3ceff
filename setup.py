"""Build script: the compiled extension built from src_kernels/ is declared here.

Metadata and dependencies live in pyproject.toml. The Cython kernel is compiled with OpenMP when
the compiler accepts ``-fopenmp`` (checked by compiling a tiny test program) and serially
otherwise, so a compiler without OpenMP gives a working, single-threaded backend instead of a
failed install. Nothing here assumes the build machine's CPU: no ``-march=native``; the vector
loops carry their own run-time dispatch (see ``src_kernels/fb_simd.h``).
"""

import os
import sys
import tempfile

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


class BuildExt(build_ext):
    """build_ext that adds OpenMP flags when (and only when) the compiler supports them."""

    def build_extensions(self):
        cflags, lflags = openmp_flags(self.compiler)
        if not cflags:
            print("fastbp: OpenMP not available; building the cython kernel single-threaded", file=sys.stderr)
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + cflags
            ext.extra_link_args = list(ext.extra_link_args) + lflags
        super().build_extensions()


def extensions():
    import numpy as np
    from Cython.Build import cythonize

    # -Wno-psabi: the 64-byte vectors of fb_simd.h only cross inlined helpers, never an ABI boundary
    opt = [] if sys.platform == "win32" else ["-O3", "-Wno-psabi", "-pthread"]
    ext = Extension(
        "fastbp.backends._cython_kernels",
        sources=["src_kernels/_cython_kernels.pyx"],
        include_dirs=["src_kernels", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=opt,
        extra_link_args=[] if sys.platform == "win32" else ["-pthread"],  # fb_pool.h's workers
        depends=["src_kernels/fb_simd.h", "src_kernels/fb_pool.h"],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
