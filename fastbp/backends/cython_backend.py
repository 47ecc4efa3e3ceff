"""The Cython backend: the lab's backpropagation compiled ahead of time, tiled and threaded.

The kernel itself is the extension module ``fastbp.backends._cython_kernels``, built by
``setup.py`` from ``src_kernels/``: one Cython source for float32 and float64, nogil, with the
samples cut into tiles of unit-major activations and the tiles dealt out to OpenMP threads as
contiguous blocks whose gradient buffers are summed in block order (bit-identical results for a
given ``n_threads``). Wide layers multiply their tiles through BLAS (``scipy.linalg.cython_blas``);
narrow ones through register-blocked loops that gcc vectorizes, with run-time instruction-set
dispatch. See ``src_kernels/_cython_kernels.pyx`` for the algorithm.

If the extension was not compiled (a source checkout used without ``pip install``), importing
this module raises ImportError, so ``"cython"`` is missing from
:func:`fastbp.available_backends` and asking for it says why.
"""

from __future__ import annotations

try:
    from . import _cython_kernels
except ImportError as exc:  # not built, or built for another Python
    raise ImportError(
        "the compiled extension fastbp.backends._cython_kernels was not built or does not load "
        f"({exc}); reinstall fastbp from source with `pip install .` (or `pip install -e .`), "
        "which needs a C compiler"
    ) from exc

__all__ = ["BACKEND", "CythonBackend", "plan_for"]

#: A BLAS call on a tile pays for itself from this many weights in the layer (n_in * n_out).
BLAS_MIN_WEIGHTS = 2048
#: OpenBLAS multithreads a product once m * n * k exceeds 65536 * 4; tiles are kept under it so
#: the per-thread BLAS calls stay single-threaded (no oversubscription) ...
OPENBLAS_SERIAL_MNK = 262_144
#: ... unless a layer is so wide that a tile of even this many samples exceeds it: then the tiles
#: run on one thread and the parallelism is BLAS's own (``serial_blas``), on tiles of this size.
MIN_TILE = 32
BIG_TILE = 2048
#: Tile for networks without BLAS layers: every layer's activations and deltas stay in cache.
LOOP_TILE = 128
#: Floating-point multiply-adds a thread must have to do before a second one is started.
MIN_WORK_PER_THREAD = 1_000_000


def plan_for(layout, n_threads):
    """The tiling and threading parameters the kernel of ``layout`` uses.

    Returns
    -------
    dict
        ``tile`` (samples per tile), ``blas_min``, ``min_samples_per_thread`` and
        ``serial_blas``, as :func:`fastbp.backends._cython_kernels.make_kernel` takes them.
    """
    widest = max(a * b for a, b in layout.coef_shapes)
    serial_blas = False
    if widest < BLAS_MIN_WEIGHTS:
        tile = LOOP_TILE
    elif widest * MIN_TILE <= OPENBLAS_SERIAL_MNK:
        tile = max(MIN_TILE, min(LOOP_TILE, OPENBLAS_SERIAL_MNK // widest) // 8 * 8)
    else:
        tile, serial_blas = BIG_TILE, True
    # one sample's forward and backward pass costs about 3 multiply-adds per weight
    per_sample = 3 * layout.n_coef + 10 * sum(layout.layer_sizes[1:])
    return {
        "tile": tile,
        "blas_min": BLAS_MIN_WEIGHTS,
        "min_samples_per_thread": max(1, MIN_WORK_PER_THREAD // per_sample),
        "serial_blas": serial_blas,
    }


class CythonBackend:
    """``prepare(layout, n_threads)`` returns the compiled kernel of ``layout``.

    See :mod:`fastbp.backends` for the kernel protocol.
    """

    name = "cython"
    #: whether the extension was compiled with OpenMP (False: a single-threaded build)
    have_openmp = _cython_kernels.HAVE_OPENMP

    def prepare(self, layout, n_threads):
        return _cython_kernels.make_kernel(
            layout.layer_sizes,
            layout.activation_code,
            layout.output_code,
            layout.dtype.itemsize == 4,
            int(n_threads),
            **plan_for(layout, n_threads),
        )


BACKEND = CythonBackend()
