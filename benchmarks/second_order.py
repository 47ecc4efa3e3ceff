"""Second order, interleaved: a backend's ``hessp`` and ``gauss_newton_product`` against its own
``loss_and_grad``, against JAX's ``jit(jvp(grad(loss)))``, and ``hess`` against ``jax.hessian``,
medians over rounds in one process.

The targets of README's second-order section: ``hessp`` at most 2.5x one ``loss_and_grad`` of the
same backend; at least 5x faster than JAX's HVP on seed4layer and multiclass and 2x on medium;
``hess`` at least 10x faster than ``jax.hessian`` on seed4layer and multiclass. (Memory of a hessp
call against n: ``bench_second_order.py::test_hessp_memory``.)

Usage (from the repository root)::

    python benchmarks/second_order.py                                  # every case, numba and cython
    python benchmarks/second_order.py --cases seed4layer --backends numba --rounds 15

Each round times, per case and backend, a batch of about ``--batch-s`` seconds that alternates
loss_and_grad, hessp and gauss_newton_product call by call (so load on a shared machine hits them
alike: their ratios are the steady numbers), then JAX's HVP in a batch of its own, then ``hess``
and ``jax.hessian`` a few calls each; before each library's batch the script sleeps
``SETTLE_S`` so that the other library's threads have gone to sleep. Every result is checked
against the NumPy backend's first. The table shows median calls; without JAX (not installed) its
columns are left out. A backend without compiled second-order kernels shows the NumPy fallback's
speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fastbp  # noqa: E402
from fastbp.cases import CASES, make_case_data  # noqa: E402

SETTLE_S = 0.3
HESSP_CASES = ("seed4layer", "multiclass", "medium")
HESS_CASES = ("seed4layer", "multiclass")
RTOL = 1e-8


def _jax(case, X, y):
    """JAX's HVP and jitted Hessian of the case's loss, or None when jax does not import."""
    try:
        sys.path.insert(0, HERE)
        from conftest import jax_loss  # the loss the pytest benchmarks use

        jax, loss_fn = jax_loss(case, X, y)
    except BaseException:  # pytest's skip (no jax) is a BaseException
        return None
    hvp = jax.jit(lambda W, V: jax.jvp(jax.grad(loss_fn), (W,), (V,))[1])
    hessian = jax.jit(jax.hessian(loss_fn))
    asarray = jax.numpy.asarray
    return (lambda W, V: np.asarray(hvp(asarray(W), asarray(V)).block_until_ready()),
            lambda W: np.asarray(hessian(asarray(W)).block_until_ready()))


def _alternating(fns, seconds, out):
    """Call each of ``fns`` in turn for about ``seconds``; each call's time goes to out[i]."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            out[i].append(time.perf_counter() - t)


def _calls(fn, n, out):
    """Call ``fn`` ``n`` times; each call's time goes to ``out``."""
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)


def _check(result, reference, what):
    err = np.linalg.norm(np.asarray(result) - reference) / np.linalg.norm(reference)
    if not err <= RTOL:
        raise AssertionError(f"{what}: relative error {err:.2e} against the NumPy backend")


def measure(name, backends, rounds, batch_s, hess_calls):
    """Print the table of one case (see the module docstring)."""
    case = CASES[name]
    X, y = make_case_data(case)
    ref_f = case.network(backend="numpy").bind(X, y)
    W = ref_f.network.init_weights(random_state=0)
    V = np.random.default_rng(1).standard_normal(W.size)
    want_hv = ref_f.hessp(W, V)
    want_H = ref_f.hess(W) if name in HESS_CASES else None
    objs = {b: case.network(backend=b).bind(X, y) for b in backends}
    for b, f in objs.items():
        _check(f.hessp(W, V), want_hv, f"{b} hessp")
        if want_H is not None:
            _check(f.hess(W), want_H, f"{b} hess")
    jax = _jax(case, X, y)
    if jax is not None:
        hvp, hessian = jax
        _check(hvp(W, V), want_hv, "jax hvp")
        if want_H is not None:
            _check(hessian(W), want_H, "jax.hessian")
    times = {(b, op): [] for b in backends for op in ("grad", "hessp", "gn", "hess")}
    times.update({("jax", "hvp"): [], ("jax", "hess"): []})
    for _ in range(rounds):
        for b, f in objs.items():
            time.sleep(SETTLE_S)
            _alternating([lambda f=f: f(W), lambda f=f: f.hessp(W, V), lambda f=f: f.gauss_newton_product(W, V)],
                         batch_s, [times[b, "grad"], times[b, "hessp"], times[b, "gn"]])
            if want_H is not None:
                _calls(lambda f=f: f.hess(W), hess_calls, times[b, "hess"])
        if jax is not None:
            time.sleep(SETTLE_S)
            _alternating([lambda: hvp(W, V)], batch_s, [times["jax", "hvp"]])
            if want_H is not None:
                _calls(lambda: hessian(W), hess_calls, times["jax", "hess"])
    med = {k: float(np.median(v)) if v else float("nan") for k, v in times.items()}
    print(f"\n{name} (n = {X.shape[0]}, {list(case.layer_sizes)}), medians of {rounds} rounds")
    head = f"{'backend':8s} {'grad':>10s} {'hessp':>10s} {'/grad':>6s} {'G-N':>10s} {'/grad':>6s}"
    if jax is not None:
        head += f" {'JAX hvp':>10s} {'JAX/hessp':>9s}"
    if want_H is not None:
        head += f" {'hess':>9s}" + (f" {'jax.hess':>9s} {'ratio':>6s}" if jax is not None else "")
    print(head)
    for b in backends:
        g, h, gn = med[b, "grad"], med[b, "hessp"], med[b, "gn"]
        line = f"{b:8s} {g * 1e6:8.1f}us {h * 1e6:8.1f}us {h / g:6.2f} {gn * 1e6:8.1f}us {gn / g:6.2f}"
        if jax is not None:
            line += f" {med['jax', 'hvp'] * 1e6:8.1f}us {med['jax', 'hvp'] / h:9.1f}"
        if want_H is not None:
            line += f" {med[b, 'hess'] * 1e3:7.2f}ms"
            if jax is not None:
                line += f" {med['jax', 'hess'] * 1e3:7.1f}ms {med['jax', 'hess'] / med[b, 'hess']:6.1f}"
        print(line, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(HESSP_CASES))
    parser.add_argument("--backends", default="numba,cython")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch-s", type=float, default=0.3)
    parser.add_argument("--hess-calls", type=int, default=3, help="hess and jax.hessian calls per round")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b in fastbp.available_backends()]
    for name in args.cases.split(","):
        measure(name, backends, args.rounds, args.batch_s, args.hess_calls)


if __name__ == "__main__":
    main()
