"""The layout of a network as the kernels read it: one int64 array ``meta``.

Built once per network by :func:`make_meta`: a header (slots ``H_*``: depth ``L``, activation
and output codes, tile, sizes of the parameters and of the scratch, sample-major or not), then
five arrays of ``L + 1`` entries: layer sizes, offsets of ``z^l`` in the tile scratch, offsets of
the coefficients ``W_l`` and the intercepts ``b_l`` in the flat ``W``, and the BLAS flag of each
layer. A new architecture reuses the compiled code: only the dtype selects a specialization.
"""

import numpy as np
from numba import njit

from .jit import _INLINE

H_L, H_ACT, H_OUT, H_TILE, H_NPARAMS, H_NCOEF, H_ZSIZE, H_WSIZE, H_ROWS, H_GSIZE = range(10)
HEADER = 16  # header slots; then sizes, zoff, coff, ioff, blas, each L + 1 long
PAD = 16  # tiles are padded to a multiple of this many samples; tile sizes are multiples of it
OUT_BLOCK = 256  # sample-major tiles evaluate the output layer over sub-tiles of this many samples


@njit(**_INLINE)
def layer_arrays(L):
    """Where the per-layer arrays of a depth-``L`` network start in meta: ``(sizes, z offsets,
    coefficient offsets, intercept offsets)``, each ``L + 1`` entries long (as :func:`make_meta`
    lays them out)."""
    n1 = L + 1
    return HEADER, HEADER + n1, HEADER + 2 * n1, HEADER + 3 * n1


def make_meta(sizes, coef_offsets, intercept_offsets, activation_code, output_code, tile, blas, rows=False):
    """Pack a layout into the int64 array the kernels read (see the module docstring).

    ``rows`` selects the sample-major BLAS kernel (every layer a gemm on ``(tile, n_units)``
    blocks, X read in place). Returns ``(meta, zsize, wsize)``: the per-block scratch lengths in
    the compute dtype and in float64.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n1 = len(sizes)
    L = n1 - 1
    stored = sizes.copy()
    if rows:
        stored[0] = 0  # z^0 is X itself
    zoff = np.concatenate(([0], np.cumsum(stored) * tile)).astype(np.int64)[:n1]
    m = int(sizes[-1])
    ob = min(tile, OUT_BLOCK) if rows else tile
    # float64 scratch of the output layer: e^a of the (m, ob) sub-tile and six per-sample vectors
    wsize = m * ob + 6 * ob
    gsize = max([int(a * b) for a, b, f in zip(sizes[:-1], sizes[1:], blas) if f], default=0)
    # compute dtype scratch: z and δ of every stored layer, a BLAS gradient product, and (sample
    # major) the output sub-tile transposed to unit-major, a and δ
    zsize = int(stored.sum()) * tile
    csize = 2 * zsize + gsize + (2 * m * ob if rows else 0)
    meta = np.zeros(HEADER + 5 * n1, dtype=np.int64)
    meta[H_L] = L
    meta[H_ACT] = activation_code
    meta[H_OUT] = output_code
    meta[H_TILE] = tile
    meta[H_NPARAMS] = intercept_offsets[-1]
    meta[H_NCOEF] = coef_offsets[-1]
    meta[H_ZSIZE] = zsize
    meta[H_WSIZE] = wsize
    meta[H_ROWS] = int(rows)
    meta[H_GSIZE] = gsize
    meta[HEADER : HEADER + n1] = sizes
    meta[HEADER + n1 : HEADER + 2 * n1] = zoff
    meta[HEADER + 2 * n1 : HEADER + 3 * n1] = coef_offsets
    meta[HEADER + 3 * n1 : HEADER + 4 * n1] = intercept_offsets
    meta[HEADER + 4 * n1 : HEADER + 4 * n1 + L] = np.asarray(blas, dtype=np.int64)
    return meta, csize, wsize
