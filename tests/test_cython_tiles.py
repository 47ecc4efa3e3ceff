"""The cython kernel's register blocks at their edges: 8-output x 16-lane product blocks with
4-output and single-output leftovers, 4 x 32 / 4 x 16 / 8-column gradient blocks, lane tails of
8, and the bias sums taken by the transpose (double fast path and the generic one), against the
numpy backend; AVX-512 blocks and the narrower ones give the same bits."""

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp

CYTHON_MISSING = unavailable_reason("cython")  # None, or why the extension does not load
pytestmark = pytest.mark.skipif(CYTHON_MISSING is not None, reason=str(CYTHON_MISSING))

RTOL64, RTOL32 = 1e-12, 1e-5


def rel_err(got, want):
    (l1, g1), (l2, g2) = got, want
    return max(abs(l1 - l2) / abs(l2), np.abs(g1 - g2).max() / np.abs(g2).max())


# 45 outputs = 5 blocks of 8, one of 4, one left over (npad 48: 32 + 16 gradient columns);
# 36 = 4 x 8 + 4 (npad 40: 32 + 8); 64 = 8 x 8 (npad 64: 2 x 32); odd input counts
@pytest.mark.parametrize(
    "sizes", [[7, 45, 36, 2], [20, 64, 64, 1], [3, 33, 9, 64, 4]], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["tanh", "logistic"])
def test_register_block_edges_match_numpy(sizes, dtype, activation):
    from fastbp.backends import _cython_kernels as ck
    from fastbp.backends.cython_backend import plan_for

    rng = np.random.default_rng(3)
    n = 301
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n) if sizes[-1] > 1 else rng.integers(0, 2, n).astype(float)
    output = "softmax" if sizes[-1] > 1 else "logistic"
    sw = rng.uniform(0.1, 3.0, n)
    W = fastbp.Network(sizes).init_weights(rng)
    ref = fastbp.Network(sizes, activation, output, backend="numpy", l2=0.01).loss_and_grad(W, X, y, sw)
    net = fastbp.Network(sizes, activation, output, backend="cython", dtype=dtype, l2=0.01)
    f = net.bind(X, y, sw)
    L = net.layout
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    for tile, n_threads in ((72, 1), (24, 2), (8, 1), (64, 3)):
        by_wide = {}
        for wide in (True, False):
            args = plan_for(L, n_threads)
            args.update(tile=tile, blas_min=10**9)
            k = ck.make_kernel(
                L.layer_sizes, L.activation_code, L.output_code, dtype == np.float32, n_threads, wide=wide, **args
            )
            got = k(W, f.X, f.T, f.sample_weight, f.scale, net.l2)
            assert rel_err(got, ref) <= rtol
            by_wide[wide] = got
        assert by_wide[True][0] == by_wide[False][0]
        assert np.array_equal(by_wide[True][1], by_wide[False][1])
