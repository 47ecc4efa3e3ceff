"""The Numba backend's tile kernels on widths that reach every register block: the 8-output blocks
of the products (and their 2- and 1-output leftovers), the 4 x 4 gradient blocks over groups of
``GRAD_JC`` outputs, and the leftover input rows and output columns of the gradient."""

import numpy as np
import pytest
from availability import unavailable_reason

import fastbp
from fastbp.layout import ACTIVATIONS

pytest.importorskip("numba")
if "numba" not in fastbp.available_backends():  # pragma: no cover - numba installed but broken
    pytest.skip(unavailable_reason("numba"), allow_module_level=True)

from fastbp.backends.numba_kernels.tile_products import grad_acc, mm_flat  # noqa: E402

RTOL64 = 1e-12
RTOL32 = 1e-5


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


# widths 1 to 37: every n mod 8 and n mod 4 leftover, more than GRAD_JC outputs, inputs below 8
SHAPES = [(1, 1), (3, 1), (8, 1), (13, 1), (5, 2), (4, 4), (2, 8), (7, 9), (9, 20), (12, 23), (37, 19), (20, 36)]


@pytest.mark.parametrize("n_in, n_out", SHAPES)
@pytest.mark.parametrize("ts", [16, 48])
def test_grad_acc_matches_numpy(n_in, n_out, ts):
    rng = np.random.default_rng(n_in * 100 + n_out)
    Z = rng.standard_normal((n_in, ts))
    D = rng.standard_normal((n_out, ts))
    G0 = rng.standard_normal((n_in, n_out))
    gb0 = rng.standard_normal(n_out)
    G, gb = G0.copy(), gb0.copy()
    grad_acc(Z, D, G, gb)
    assert _rel(G, G0 + Z @ D.T) <= RTOL64
    assert _rel(gb, gb0 + D.sum(axis=1)) <= RTOL64
    G32, gb32 = G0.copy(), gb0.copy()
    grad_acc(Z.astype(np.float32), D.astype(np.float32), G32, gb32)
    Z32, D32 = Z.astype(np.float32).astype(float), D.astype(np.float32).astype(float)
    assert _rel(G32, G0 + Z32 @ D32.T) <= RTOL64  # float32 inputs, float64 sums
    assert _rel(gb32, gb0 + D32.sum(axis=1)) <= RTOL64


@pytest.mark.parametrize("n_in, n_out", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mm_flat_matches_numpy(n_in, n_out, dtype):
    rng = np.random.default_rng(n_in * 7 + n_out)
    ts = 48  # 32-sample blocks and a 16-sample rest
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    Zin = rng.standard_normal((n_in, ts)).astype(dtype)
    buf = np.zeros(3 + n_in * ts + n_out * ts + 8, dtype=dtype)  # offsets inside one flat array
    zi, ao = 3, 3 + n_in * ts
    buf[zi : zi + n_in * ts] = Zin.ravel()
    wo, bo = 5, 7 + n_in * n_out  # W and b inside one flat array, as in the kernels' Wc
    Wf = np.zeros(bo + n_out + 1, dtype=dtype)
    Wf[wo : wo + n_in * n_out] = W.ravel()
    Wf[bo : bo + n_out] = b
    one, none = np.int64(1), np.int64(-1)
    # forward: A = W.T Z + b, relu at the store (mode 3) and as is (mode 0)
    ref = W.T.astype(float) @ Zin.astype(float) + b.astype(float)[:, None]
    for mode, want in ((0, ref), (3, np.maximum(ref, 0))):
        mm_flat(Wf, wo, one, n_out, n_out, n_in, bo, buf, zi, buf, ao, ts, mode, buf, 0)
        assert _rel(buf[ao : ao + n_out * ts].reshape(n_out, ts), want) <= rtol
    # backward: δ_in = σ'(a) (W δ_out), σ' written from z in the finishing modes 11–13
    Dout = rng.standard_normal((n_out, ts)).astype(dtype)
    z = rng.random((n_in, ts)).astype(dtype)  # as if z = σ(a): in (0, 1); relu: some zeros
    z[z < 0.2] = 0
    Dbuf = np.zeros_like(buf)
    Dbuf[ao : ao + n_out * ts] = Dout.ravel()
    Zd = np.zeros(7 + n_in * ts, dtype=dtype)
    Zd[7:] = z.ravel()
    prod = W.astype(float) @ Dout.astype(float)
    zf = z.astype(float)
    for mode, want in (
        (0, prod),
        (11, prod * zf * (1 - zf)),
        (12, prod * (1 - zf * zf)),
        (13, np.where(zf > 0, prod, 0.0)),
    ):
        mm_flat(Wf, wo, n_out, one, n_in, n_out, none, Dbuf, ao, Dbuf, zi, ts, mode, Zd, 7)
        assert _rel(Dbuf[zi : zi + n_in * ts].reshape(n_in, ts), want) <= rtol


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_wide_odd_network_matches_numpy(activation, dtype):
    """A network whose layers reach every block and leftover of the tile kernels, with a tile
    shorter than the samples (several tiles, a padded last one)."""
    rng = np.random.default_rng(ACTIVATIONS.index(activation))
    sizes = (13, 37, 20, 9, 3)
    n = 700
    kw = dict(activation=activation, output="softmax", l2=0.01, dtype=dtype)
    net = fastbp.Network(sizes, backend="numba", **kw)
    ref = fastbp.Network(sizes, backend="numpy", **kw)
    W = net.init_weights(rng)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    sw = rng.random(n)
    loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    ref_loss, ref_grad = ref.loss_and_grad(W, X, y, sample_weight=sw)
    rtol = RTOL64 if dtype == np.float64 else RTOL32
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss)
    assert _rel(grad, ref_grad) <= rtol
