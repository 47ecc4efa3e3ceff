"""Fit a network with scipy.optimize.minimize on a Dask array spread over a local cluster.

The data is a Dask array of 4 row chunks built lazily (each chunk generated on a worker, so the
client never holds it). ``fastbp.distributed.DaskObjective`` validates the chunks on the
workers, keeps them there, and each call of ``minimize`` sends only the weights out and gets
one loss and gradient per chunk back. The fit is checked against the local objective on the
same data, and a summary is written to ``DIR/distributed.json``.

Run: ``python examples/distributed.py [--out DIR] [--fast]`` (loopback only, headless).
"""

import argparse
import json
import os
import sys
import time

# this file is named like the ``distributed`` package: keep its folder off the import path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import fastbp  # noqa: E402
from fastbp.distributed import DaskObjective  # noqa: E402


def make_chunk(seed, n, n_inputs):
    """One chunk of a two-class problem: the class is the sign of a fixed nonlinear score."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_inputs))
    score = np.sin(X[:, 0]) + X[:, 1] * X[:, 2] - 0.5 * X[:, 3]
    return X, (score + 0.2 * rng.standard_normal(n) > 0).astype(np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("examples", "out"), help="output folder")
    parser.add_argument("--fast", action="store_true", help="smaller data and fewer iterations")
    args = parser.parse_args()
    n_chunks, chunk, n_inputs = 4, (2_500 if args.fast else 10_000), 8
    maxiter = 30 if args.fast else 100

    net = fastbp.Network([n_inputs, 16, 16, 1], activation="tanh", l2=1e-5)
    # dashboard_address=":0": any free port (the default, 8787, may be another cluster's)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        # a lazily generated Dask array: each chunk is made on the worker that will keep it
        blocks = [dask.delayed(make_chunk)(seed, chunk, n_inputs) for seed in range(n_chunks)]
        X = da.concatenate([da.from_delayed(b[0], (chunk, n_inputs), np.float64) for b in blocks])
        y = da.concatenate([da.from_delayed(b[1], (chunk,), np.int64) for b in blocks])

        with DaskObjective(client, net, X, y) as obj:
            print(f"{obj.n_samples} samples in {obj.n_partitions} partitions on "
                  f"{len(client.nthreads())} workers, backend {obj.backend!r}")
            W0 = net.init_weights(random_state=0)
            start = time.perf_counter()
            res = minimize(obj, W0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
            seconds = time.perf_counter() - start
        Xl, yl = (a.compute() for a in (X, y))  # small enough to check here

    local_loss = net.bind(Xl, yl)(res.x)[0]
    accuracy = float((net.predict(res.x, Xl) == yl).mean())
    print(f"L-BFGS-B: {res.nit} iterations, {res.nfev} calls in {seconds:.2f} s; "
          f"loss {res.fun:.6f} (local objective at the same W: {local_loss:.6f}); "
          f"training accuracy {accuracy:.3f}")
    assert abs(res.fun - local_loss) <= 1e-12 * abs(local_loss)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "distributed.json")
    with open(path, "w") as f:
        json.dump({"n_samples": int(len(yl)), "n_partitions": n_chunks, "iterations": int(res.nit),
                   "calls": int(res.nfev), "seconds": seconds, "loss": float(res.fun),
                   "local_loss": float(local_loss), "accuracy": accuracy}, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
