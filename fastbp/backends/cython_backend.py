"""The Cython backend: the lab's backpropagation compiled ahead of time, tiled and threaded.

The kernel itself is the extension module ``fastbp.backends._cython_kernels``, built by
``setup.py`` from ``src_kernels/``: one Cython source for float32 and float64, nogil, with the
samples cut into tiles of unit-major activations and the tiles dealt out to threads (its own
pool, ``src_kernels/fb_pool.h``) as contiguous blocks whose gradient buffers are summed in block
order (bit-identical results for a
given ``n_threads``). The widest layers multiply their tiles through BLAS
(``scipy.linalg.cython_blas``, single-threaded inside each kernel thread); the others through
register-blocked loops that gcc vectorizes, with run-time instruction-set dispatch (AVX-512
blocks where the CPU has them). See ``src_kernels/_cython_kernels.pyx`` for the algorithm.

The kernel also has the second-order methods of the protocol (``hessp``, ``hessp_block``,
``gauss_newton_product``, ``gauss_newton_block``, ``output_jacobian``, ``max_directions``):
Pearlmutter's R-operator on the same tiles, threads and BLAS layers (``src_kernels/_rop.pxi``,
``src_kernels/fb_rop.h``), each block of directions carried through one pass over the samples.

If the extension was not compiled (installed where no C compiler worked, or a source checkout
used without ``pip install``), importing this module raises ImportError, so ``"cython"`` is
missing from :func:`fastbp.available_backends` and asking for it says why: the install records
the compiler's error in ``_cython_build_error.txt`` beside this module (see ``setup.py``).
"""

from __future__ import annotations

import os

from . import blas_threads

BUILD_ERROR_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cython_build_error.txt")


def _not_built_error(import_error):
    """The ImportError to raise when the extension does not import, saying why and what to do:
    a :class:`fastbp.backends.NotBuiltError` when the install recorded a failed build."""
    how = ("install a C compiler and reinstall fastbp from source with "
           "`pip install --force-reinstall --no-deps .` (`pip install -e .` for a checkout)")
    try:
        with open(BUILD_ERROR_FILE, encoding="utf-8") as f:
            reason = f.read().strip()
    except OSError:  # no record: a source checkout never built, or built for another Python
        return ImportError(
            f"the compiled extension fastbp.backends._cython_kernels was not built or does not load "
            f"({import_error}); {how}"
        )
    from . import NotBuiltError

    return NotBuiltError(f"it was not built: compiling it failed when fastbp was installed ({reason}); {how}")


try:
    from . import _cython_kernels
except ImportError as exc:  # not built, or built for another Python
    raise _not_built_error(exc) from exc

__all__ = ["BACKEND", "CythonBackend", "plan_for"]

#: Whether this CPU runs the kernel's AVX-512 register-blocked loops (see ``src_kernels/fb_simd.h``).
WIDE = _cython_kernels.WIDE
#: A layer goes through BLAS from this many weights (n_in * n_out). The kernel's own AVX-512 loops
#: ran the 64 x 64 layers of ``medium`` 1.7x faster than OpenBLAS on tiles (3.8 vs 6.3 ms, one
#: thread) and matched it on 256 x 256 ones, so with them BLAS is kept for the widest layers only.
BLAS_MIN_WEIGHTS = 65_536 if WIDE else 2048
#: Tile (samples) of networks with BLAS layers: one plain gemm per layer and tile, large enough
#: for BLAS to run at full speed. Each thread runs its own block of tiles with single-threaded
#: BLAS (the BLAS libraries are held to one thread during such a call: see ``SerialBlasKernel``).
BLAS_TILE = 2048
#: Fewest samples of a block of such a network: a call of fewer than BLAS_TILE samples per thread
#: is still split over the kernel's threads, in smaller tiles, rather than left to BLAS's own
#: threads (which do not run in the kernel's flush-to-zero mode, and oversubscribe a busy
#: machine: large on 200-2000 samples ran 2-4x faster this way on 2 loaded cores).
BLAS_MIN_BLOCK = 128
#: Tile of networks without BLAS layers: the widest layer input of a tile (n_in x tile values,
#: read once per 4 outputs) stays in L1: LOOP_TILE_VALUES // max n_in samples, within
#: [MIN_LOOP_TILE, MAX_LOOP_TILE] (medium: 64; seed4layer, multiclass: 128, cut per call into
#: equal tiles, e.g. 4 x 104 for n = 400 on 2 threads).
LOOP_TILE_VALUES = 4096
MIN_LOOP_TILE, MAX_LOOP_TILE = 32, 128
#: Loop layers with this many outputs or more accumulate their weight gradient sample-major
#: (rank-1 updates, no lane sums; their output count is padded to 8, so narrower layers lose).
GACC_MIN_OUT = 32
#: Work (``per_sample`` of :func:`plan_for`, times samples) from which a threaded call is cut into
#: up to BLOCKS_PER_THREAD blocks per thread, claimed as threads come free (a thread slowed by a
#: competitor runs fewer); a smaller call gets one block per thread, its samples halved exactly.
#: On 2 cores, medium: n = 200 106 us against 137 us in 4 blocks, n = 1000 403 against 483 us
#: (the extra blocks' gradients to zero and sum, and 3 + 2 tiles on 2 threads); n = 10 000 alike.
MANY_BLOCKS_WORK = 20_000_000
#: Multiply-adds a thread must have to do before a second one is used (~2 us of work). The
#: kernel's own thread pool (``src_kernels/fb_pool.h``) costs well under a microsecond per call
#: when its workers are awake, and never waits for a worker that has not started: the calling
#: thread runs whatever blocks no worker claimed. Measured on 2 busy cores: multiclass 23.5 ->
#: 13.5 us, seed4layer 14.1 -> 10.0 us (medians; one spinning competitor: 13.7 and 9.9 us).
MIN_WORK_PER_THREAD = 100_000


def plan_for(layout, n_threads):
    """The tiling and threading parameters the kernel of ``layout`` uses.

    Returns
    -------
    dict
        ``tile`` (samples per tile), ``blas_min``, ``min_samples_per_thread``, ``serial_blas``,
        ``gacc_min_out``, ``min_block`` and ``many_blocks_min``, as :func:`fastbp.backends._cython_kernels.make_kernel`
        takes them.
    """
    widest = max(a * b for a, b in layout.coef_shapes)
    uses_blas = widest >= BLAS_MIN_WEIGHTS
    widest_in = max(a for a, b in layout.coef_shapes)
    loop_tile = min(MAX_LOOP_TILE, max(MIN_LOOP_TILE, LOOP_TILE_VALUES // widest_in)) // 8 * 8
    # one sample's forward and backward pass costs about 3 multiply-adds per weight
    per_sample = 3 * layout.n_coef + 10 * sum(layout.layer_sizes[1:])
    return {
        "tile": BLAS_TILE if uses_blas else loop_tile,
        "blas_min": BLAS_MIN_WEIGHTS,
        "min_samples_per_thread": max(1, MIN_WORK_PER_THREAD // per_sample),
        # without threads the only parallelism left is BLAS's own, on one block of big tiles
        "serial_blas": uses_blas and not _cython_kernels.HAVE_THREADS,
        "gacc_min_out": GACC_MIN_OUT,
        "min_block": BLAS_MIN_BLOCK if uses_blas else 0,  # 0: a tile
        "many_blocks_min": -(-MANY_BLOCKS_WORK // per_sample),
    }


class SerialBlasKernel:
    """A kernel whose threads each call BLAS: BLAS is held to one thread during every call.

    OpenBLAS threads a product of more than 65536 * 4 multiply-adds by itself. Called from
    several of the kernel's threads at once, its thread pool is oversubscribed and mostly waits
    (on a busy 2-core machine ``large`` took 1.1-1.9 s that way against 0.22-0.39 s with one BLAS
    thread per kernel thread). And BLAS's own threads do not run in the kernel's flush-to-zero
    mode (scipy's OpenBLAS does not pass its caller's MXCSR on to them), so saturated calls would
    be slow there. So every BLAS call of the kernel runs on a kernel thread, one call at a time:
    the limit is set before and restored after each call by :mod:`fastbp.backends.blas_threads`
    (a few microseconds, against calls of milliseconds; counted process-wide, so calls from
    several Python threads restore the setting only when the last one ends), as the numba
    kernel's BLAS networks do. (Only BLAS libraries threadpoolctl controls are held: OpenBLAS,
    MKL, BLIS.) The second-order methods and the epochs are held alike.
    """

    def __init__(self, kernel):
        self.kernel = kernel

    def __getattr__(self, name):  # n_threads, tile, blas_layers, _n_blocks... of the kernel
        return getattr(self.kernel, name)

    def _serial(self, method, *args):
        """``method(*args)`` with the BLAS libraries held to one thread."""
        blas_threads.hold()
        try:
            return method(*args)
        finally:
            blas_threads.release()

    def __call__(self, W, X, T, sample_weight, scale, l2):
        return self._serial(self.kernel, W, X, T, sample_weight, scale, l2)

    # second order (see fastbp.backends): the same, around the kernel's own methods
    def hessp(self, W, V, X, T, sample_weight, scale, l2):
        return self._serial(self.kernel.hessp, W, V, X, T, sample_weight, scale, l2)

    def hessp_block(self, W, V, X, T, sample_weight, scale, l2, upper=False):
        return self._serial(self.kernel.hessp_block, W, V, X, T, sample_weight, scale, l2, upper)

    def gauss_newton_product(self, W, V, X, T, sample_weight, scale, l2):
        return self._serial(self.kernel.gauss_newton_product, W, V, X, T, sample_weight, scale, l2)

    def gauss_newton_block(self, W, V, X, T, sample_weight, scale, l2):
        return self._serial(self.kernel.gauss_newton_block, W, V, X, T, sample_weight, scale, l2)

    def output_jacobian(self, W, X, row_scale, out):
        return self._serial(self.kernel.output_jacobian, W, X, row_scale, out)

    def run_epoch(self, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
        """The kernel's epoch (one call, every batch's BLAS products on the kernel's threads),
        with BLAS held to one thread meanwhile, as for a call."""
        return self._serial(self.kernel.run_epoch, W, X, T, sample_weight, order, batch_size, alpha, optimizer)


class CythonBackend:
    """``prepare(layout, n_threads)`` returns the compiled kernel of ``layout``.

    See :mod:`fastbp.backends` for the kernel protocol.
    """

    name = "cython"
    #: whether the extension was compiled with OpenMP
    have_openmp = _cython_kernels.HAVE_OPENMP
    #: whether calls can use several threads (False: a single-threaded build)
    have_threads = _cython_kernels.HAVE_THREADS

    def prepare(self, layout, n_threads):
        kernel = _cython_kernels.make_kernel(
            layout.layer_sizes,
            layout.activation_code,
            layout.output_code,
            layout.dtype.itemsize == 4,
            int(n_threads),
            **plan_for(layout, n_threads),
        )
        if kernel.blas_layers and _cython_kernels.HAVE_THREADS:  # (else BLAS's threads are all)
            return SerialBlasKernel(kernel)
        return kernel


BACKEND = CythonBackend()
