"""Saturated networks: the time of one objective call with the weights scaled by 10, 100 and 1000
against the same call with the weights as initialised, interleaved in one process.

Scaled weights make confident sigmoids and softmax outputs (as late in training): tiny
probabilities and deltas whose products fall below the smallest normal number. Cores that take a
microcode assist on subnormal operands ran such calls several times slower; the kernels flush
subnormals to zero during a call to avoid that (``src_kernels/fb_fpenv.h``,
``fastbp/backends/numba_kernels/fpenv.py``). This script prints,
per case, dtype and backend, the unscaled time and the scaled / unscaled ratios (the target is at
most 1.25), with ``--flush-off`` also each compiled kernel with flushing switched off (what it was
before), and with ``--trained`` the float32 ``large`` case at briefly trained weights against
scikit-learn's float64 objective (the target is at most 0.6x its time).

Usage (from the repository root)::

    python benchmarks/saturation.py                             # every case, cython and numba
    python benchmarks/saturation.py --cases multiclass,medium --flush-off --rounds 9
    python benchmarks/saturation.py --cases large --trained
    python benchmarks/saturation.py --subnormals              # the mechanism: subnormal fractions

Each round runs every configuration in turn for about ``--batch-s`` seconds, calling it with the
four scalings alternately, so load on a shared machine hits them alike; the table shows the median
call. The trained comparison times batches of calls, objectives in turn.
``large`` runs on 8 000 samples here (``--large-n``). The pytest-benchmark form of the same
calls is ``benchmarks/bench_saturation.py``.
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

SCALES = (1, 10, 100, 1000)
SETTLE_S = 0.3


def _timed_batch(f, W, seconds):
    """Mean time of one call of f(W) over about ``seconds`` of calls."""
    n, start = 0, time.perf_counter()
    while True:
        f(W)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n


def _timed_alternating(f, Ws, seconds, out, cpu=False):
    """Calls f(W) for each W of Ws in turn, for about ``seconds``; each call's time is appended to
    out[i] (i the index of its W): neighbouring calls share the machine's load. ``cpu``: the
    calling thread's CPU time instead of the wall clock (for one-thread calls on a busy machine:
    time spent waiting for a core does not count, time spent on subnormals does)."""
    clock_of = time.thread_time if cpu else time.perf_counter
    time.sleep(SETTLE_S)  # the previous configuration's spinning threads (OpenBLAS's) go to sleep
    for W in Ws:  # and this one's are awake
        f(W)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i, W in enumerate(Ws):
            t0 = clock_of()
            f(W)
            out[i].append(clock_of() - t0)


def _flush_switches():
    """{backend: its set_flush_subnormals} for the compiled backends that have one."""
    switches = {}
    try:
        from fastbp.backends import _cython_kernels

        switches["cython"] = _cython_kernels.set_flush_subnormals
    except (ImportError, AttributeError):
        pass
    try:
        from fastbp.backends.numba_kernels.pool_threads import set_flush_subnormals

        switches["numba"] = set_flush_subnormals
    except ImportError:
        pass
    return switches


def saturation_rows(case_name, backends, dtypes, rounds, batch_s, large_n, flush_off, n_threads, cpu=False):
    case = CASES[case_name]
    X, y = make_case_data(case, n_samples=large_n if case_name == "large" else None)
    switches = _flush_switches()
    configs = []  # (label, f, switch, flush)
    for dtype in dtypes:
        for backend in backends:
            f = case.network(backend=backend, dtype=dtype, n_threads=n_threads).bind(X, y)
            switch = switches.get(backend)
            configs.append(((np.dtype(dtype).name, backend, "on" if switch else "-"), f, switch, True))
            if flush_off and switch is not None:
                configs.append(((np.dtype(dtype).name, backend, "off"), f, switch, False))
    W0 = case.network(backend="numpy").init_weights(random_state=0)
    Ws = [W0 * s for s in SCALES]
    times = {label: [[] for _ in SCALES] for label, _, _, _ in configs}
    for _, f, _, _ in configs:  # warm up: compile, start the threads
        for W in Ws:
            f(W)
    for _ in range(rounds):
        for label, f, switch, flush in configs:
            if switch is not None:
                switch(flush)
            _timed_alternating(f, Ws, batch_s, times[label], cpu)
    for switch in switches.values():
        switch(True)
    rows = []
    for label, _, _, _ in configs:
        med = [float(np.median(t)) for t in times[label]]
        rows.append((case_name, *label, med[0], *(m / med[0] for m in med[1:])))
    return rows


def trained_rows(rounds, batch_s, large_n, iters):
    """float32 ``large`` at weights after ``iters`` L-BFGS iterations, against scikit-learn."""
    from scipy.optimize import minimize

    sys.path.insert(0, HERE)
    from conftest import sklearn_objective

    case = CASES["large"]
    X, y = make_case_data(case, n_samples=large_n)
    net = case.network(backend="auto")
    W = minimize(net.bind(X, y), net.init_weights(random_state=0), jac=True, method="L-BFGS-B",
                 options={"maxiter": iters}).x
    fs = {"scikit-learn float64": sklearn_objective(case, X, y)}
    for backend in fastbp.available_backends():
        if backend != "numpy":
            fs[f"{backend} float32"] = case.network(backend=backend, dtype=np.float32).bind(X, y)
    for f in fs.values():
        f(W)
    times = {k: [] for k in fs}
    for _ in range(rounds):
        for k, f in fs.items():
            time.sleep(SETTLE_S)
            f(W)
            times[k].append(_timed_batch(f, W, batch_s))
    base = float(np.median(times["scikit-learn float64"]))
    return [(k, float(np.median(v)), float(np.median(v)) / base) for k, v in times.items()]


def subnormal_rows(case_name, dtypes, large_n, sample=200):
    """The mechanism, counted with the NumPy backend's arithmetic: the fraction of subnormal values
    among the hidden z, the deltas, and the terms z_i δ_j (weight gradient) and w_kj δ_k (the
    back-propagated sums) that the kernels multiply, on ``sample`` samples, per dtype and scale."""
    from fastbp.backends.numpy_backend import _BACKWARD, _FORWARD, output_loss_and_delta

    case = CASES[case_name]
    X, y = make_case_data(case, n_samples=min(sample, large_n))
    W0 = case.network(backend="numpy").init_weights(random_state=0)
    n_out = case.layer_sizes[-1]
    T = np.eye(n_out)[y] if case.output == "softmax" else y.reshape(-1, 1).astype(float)

    def frac(a):
        a = np.abs(a)
        return np.count_nonzero((a > 0) & (a < np.finfo(a.dtype).tiny)) / a.size

    rows = []
    for dtype in dtypes:
        net = case.network(backend="numpy", dtype=dtype)
        for scale in SCALES:
            coefs, intercepts = net.layout.unpack((W0 * scale).astype(dtype))
            zs = [X.astype(dtype)]
            for i, (c, b) in enumerate(zip(coefs, intercepts)):
                a = zs[-1] @ c + b
                zs.append(a if i == len(coefs) - 1 else _FORWARD[case.activation](a))
            _, delta = output_loss_and_delta(case.output, zs[-1], T.astype(dtype))
            z_f = max(frac(z) for z in zs[1:-1])
            d_f = frac(delta)
            zd_f = wd_f = 0.0
            for i in range(len(coefs) - 1, -1, -1):
                zd_f = max(zd_f, frac(zs[i][:, :, None] * delta[:, None, :]))
                if i > 0:
                    wd_f = max(wd_f, frac(delta[:, None, :] * coefs[i][None, :, :]))
                    delta = delta @ coefs[i].T
                    _BACKWARD[case.activation](zs[i], delta)
                    d_f = max(d_f, frac(delta))
            rows.append((case_name, np.dtype(dtype).name, scale, z_f, d_f, zd_f, wd_f))
    return rows


def _fmt(seconds):
    return f"{seconds * 1e6:.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--backends", default=None, help="default: the compiled ones available")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-s", type=float, default=0.05)
    parser.add_argument("--large-n", type=int, default=8000)
    parser.add_argument("--n-threads", type=int, default=None, help="the networks' n_threads (default: every core)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the calling thread's CPU time (with --n-threads 1; BLAS is held to one thread)")
    parser.add_argument("--flush-off", action="store_true", help="also time the compiled kernels with flushing off")
    parser.add_argument("--trained", action="store_true", help="float32 large at trained weights vs scikit-learn")
    parser.add_argument("--trained-iters", type=int, default=30)
    parser.add_argument("--subnormals", action="store_true",
                        help="only count subnormal intermediates (NumPy arithmetic; largest fraction over layers)")
    args = parser.parse_args(argv)
    backends = (args.backends.split(",") if args.backends
                else [b for b in fastbp.available_backends() if b != "numpy"])
    dtypes = [np.dtype(d) for d in args.dtypes.split(",")]
    if args.cpu_time and args.n_threads != 1:
        parser.error("--cpu-time measures the calling thread only: use it with --n-threads 1")
    if args.cpu_time:  # (the kernels hold BLAS to one thread themselves; anything else too)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, "blas")
    if args.subnormals:
        print("| case | dtype | W × | z | δ | z_i δ_j terms | w_kj δ_k terms |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for case_name in args.cases.split(","):
            for name, dt, scale, *fracs in subnormal_rows(case_name, dtypes, args.large_n):
                print(f"| {name} | {dt} | {scale} | " + " | ".join(f"{f:.2%}" for f in fracs) + " |")
        return
    clock = "thread CPU time" if args.cpu_time else "wall time"
    print(f"# fastbp saturation: {os.cpu_count()} CPUs, n_threads={args.n_threads}, median {clock} of a "
          f"call over {args.rounds} rounds (scales alternating call by call, configurations round by round)\n")
    print("| case | dtype | backend | flush | W×1 | ×10 | ×100 | ×1000 |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for case_name in args.cases.split(","):
        batch = args.batch_s * (4 if case_name == "large" else 1)
        for row in saturation_rows(case_name, backends, dtypes, args.rounds, batch, args.large_n,
                                   args.flush_off, args.n_threads, args.cpu_time):
            name, dt, be, fl, t1, *ratios = row
            print(f"| {name} | {dt} | {be} | {fl} | {_fmt(t1)} | " + " | ".join(f"{r:.2f}" for r in ratios) + " |",
                  flush=True)
    if args.trained:
        print(f"\n## large (n = {args.large_n}) at weights after {args.trained_iters} L-BFGS iterations\n")
        print("| objective | time | / scikit-learn float64 |")
        print("|---|---:|---:|")
        for k, t, r in trained_rows(args.rounds, args.batch_s * 4, args.large_n, args.trained_iters):
            print(f"| {k} | {_fmt(t)} | {r:.2f} |", flush=True)


if __name__ == "__main__":
    main()
