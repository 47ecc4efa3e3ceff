"""``dtype=np.float32`` computes in float32 but accumulates loss and gradient in float64.

Comparing float32 results with the float64 ones at 1e-5 cannot tell the two apart on a few hundred
samples: a float32 running sum loses about n · 6e-8 relative, which stays below 1e-5 there. So
this test builds an input whose every per-sample quantity is an integer that float32 holds
exactly, so that any float64 accumulation gives the exact answer while any float32 accumulation
of the whole call (or of a thread's block) must round:

* the network is [2, 2] with an identity output, coefficients I and intercepts 0, so a = x and
  δ = a − t = Δ, an integer chosen per sample with 1024 ≤ |Δ| < 2048; inputs are 1 and ±1, sample
  weights 0, 1 or 2;
* every product s x δ is below 2^12 in magnitude, so a tile's sum of up to 4096 of them stays below
  2^24, where float32 is still exact: the compiled backends' BLAS paths, which multiply a tile
  in float32 and add the tile's product into float64, are exact as the contract allows;
* the whole call's sums reach ~10^8 > 2^24, where float32 spacing is 8: a float32 running sum,
  whether over samples, tiles or blocks, rounds on the way, while the float64 sums (and ½ Σ δ²,
  below 2^53) are exact.

The expected loss and gradient are the exact integer sums divided by Σ s; every kernel path,
with one thread and with several blocks, must give them to a couple of units in the last place.
"""

import numpy as np
import pytest

import fastbp

N = 40_037  # not a multiple of any tile or block size
RTOL = 1e-14  # the exact sums, scaled by 1 / Σ s: round-off of the scaling alone


def exact_problem(seed=0):
    """X, y, sample weights and Δ (= δ per sample and output) as described above."""
    rng = np.random.default_rng(seed)
    half = N // 2
    x1 = np.where(np.arange(N) < half, 1.0, -1.0)  # x1 Δ keeps one sign: sums grow to ~1e8
    X = np.c_[np.ones(N), x1]
    magnitude = rng.integers(1024, 2048, (N, 2))
    sign = np.ones((N, 2))
    sign[half:, 0] = -1  # output 0: the positive half, then the negative half (large, cancelling)
    delta = sign * magnitude
    y = X - delta  # t = a − δ with a = x: integers below 2^12, exact in float32
    sw = rng.integers(0, 3, N).astype(float)
    return X, y, sw, delta.astype(np.int64)


def exact_loss_and_grad(X, sw, delta):
    """Loss ½ Σ s δ² / Σ s and the gradient [Xᵀ (s δ), Σ s δ] / Σ s from exact integer sums."""
    s = sw.astype(np.int64)
    sd = delta * s[:, None]
    xi = X.astype(np.int64)
    total = int(s.sum())
    loss = float(np.sum(s * (delta * delta).sum(axis=1))) / 2 / total
    grad = np.concatenate([(xi.T @ sd).ravel(), sd.sum(axis=0)]).astype(float) / total
    return loss, grad


def float32_running_sum(terms, chunk):
    """Σ terms with the sums of consecutive chunks of ``chunk`` added into a float32 total."""
    partial = np.add.reduceat(terms.astype(np.float64), np.arange(0, len(terms), chunk))
    total = np.float32(0)
    for p in partial:
        total = np.float32(total + np.float32(p))
    return float(total)


def test_the_input_defeats_float32_accumulation():
    """The premise: these sums are exact in float64 and their tiles' sums exact in float32, while
    a float32 total over samples, over tiles of 16 to 4096 or over a call's 3 or 12 blocks is off
    by 1e-6 or more (relative) in some component: a million times the test's tolerance."""
    X, _, sw, delta = exact_problem()
    s, x1 = sw.astype(np.int64), X[:, 1].astype(np.int64)
    components = [s * delta[:, 0], s * delta[:, 1], s * x1 * delta[:, 0], s * x1 * delta[:, 1],
                  s * (delta * delta).sum(axis=1)]  # the last: twice the loss
    for chunk in (1, 16, 256, 2048, 4096, -(-N // 12), -(-N // 3)):
        worst = 0.0
        for terms in components:
            exact = int(terms.sum())
            assert float(np.sum(terms.astype(np.float64))) == exact
            if chunk <= 4096 and terms is not components[-1]:
                assert np.abs(np.add.reduceat(terms, np.arange(0, N, chunk))).max() < 2**24
            worst = max(worst, abs(float32_running_sum(terms, chunk) - exact) / abs(exact))
        assert worst > 1e-6, chunk


@pytest.mark.parametrize("n_threads", [1, 3])
def test_float32_accumulates_in_float64(relerr, kernel_path, n_threads):
    X, y, sw, delta = exact_problem()
    net = fastbp.Network([2, 2], output="identity", backend=kernel_path, dtype=np.float32, n_threads=n_threads)
    W = net.pack([np.eye(2)], [np.zeros(2)])
    for weights in (sw, None):
        want_loss, want_grad = exact_loss_and_grad(X, np.ones(N) if weights is None else weights, delta)
        loss, grad = net.loss_and_grad(W, X, y, sample_weight=weights)
        assert relerr(loss, want_loss) < RTOL, (loss, want_loss)
        err = np.abs(grad - want_grad) / np.abs(want_grad)
        assert err.max() < RTOL, np.c_[grad, want_grad, err]
