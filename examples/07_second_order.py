"""Second order: do Newton-type and Levenberg-Marquardt fits pay against L-BFGS-B?

Every method starts from the same W0 (the lab's ε initialisation) with scipy's default
tolerances, as a user would call it:

moons    the lab's depth-4 network of 10 sigmoid units per layer (exercises 4-5), λ = 1e-5;
spirals  two interleaved spirals (exercise 3), [2, 12, 12, 1] tanh, λ = 1e-4, inputs / 3;
         on both, ``minimize`` with L-BFGS-B (loss and gradient only) against trust-krylov and
         Newton-CG (with ``hessp=f.hessp``, exact Hessian-vector products) and trust-exact
         (with ``hess=f.hess``, the dense Hessian);
fitnet   a regression network, [1, 10, 1] tanh with an identity output (MATLAB's
         ``fitnet(10)``) on a noisy damped sine, λ = 1e-6: ``least_squares(f.residuals, W0,
         jac=f.residuals_jacobian, method="lm")`` (Levenberg-Marquardt with the exact
         Jacobian: MATLAB's ``trainlm``) against L-BFGS-B and trust-krylov.

The figure shows the lowest loss so far against wall time and against evaluations (calls of
f, hessp, hess, residuals or the Jacobian: each one pass over the data); the table gives the
final loss, iterations, calls per kind, time, the time to come within 5 % of the best final
loss of any method, and the training accuracy (RMSE for the regression).

Run: ``python examples/07_second_order.py [--out DIR] [--fast]``.
"""

import time
import warnings
from collections import Counter

import numpy as np
from _common import parse_args, plt, save
from scipy.optimize import least_squares, minimize

import fastbp

#: method -> the curvature it is given
CURVATURE = {"L-BFGS-B": None, "trust-krylov": "hessp", "Newton-CG": "hessp", "trust-exact": "hess", "lm": "jac"}
CLASSIFIERS = ("L-BFGS-B", "trust-krylov", "Newton-CG", "trust-exact")
REGRESSION = ("L-BFGS-B", "trust-krylov", "lm")
WITHIN = 0.05  # "reached": within 5 % of the best final loss


class Recorder:
    """The bound objective's calls, counted per kind, with the loss and time of each loss evaluation."""

    def __init__(self, f):
        self.f = f
        self.calls = Counter()
        self.trace = []  # (seconds since start, evaluations so far, loss)
        self.start = time.perf_counter()

    def _log(self, loss):
        self.trace.append((time.perf_counter() - self.start, sum(self.calls.values()), loss))

    def fun(self, W):
        self.calls["f"] += 1
        loss, grad = self.f(W)
        self._log(loss)
        return loss, grad

    def hessp(self, W, V):
        self.calls["hessp"] += 1
        return self.f.hessp(W, V)

    def hess(self, W):
        self.calls["hess"] += 1
        return self.f.hess(W)

    def residuals(self, W):
        self.calls["residuals"] += 1
        r = self.f.residuals(W)
        self._log(0.5 * float(r @ r))
        return r

    def jac(self, W):
        self.calls["jac"] += 1
        return self.f.residuals_jacobian(W)


def fit(f, W0, method, max_iter):
    """Run ``method`` from ``W0``; return the weights, iterations, seconds and the Recorder."""
    rec = Recorder(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "maximum number of iterations" in --fast mode
        if method == "lm":
            res = least_squares(rec.residuals, W0, jac=rec.jac, method="lm", max_nfev=max_iter)
            nit = res.njev
        else:
            kw = {}
            if CURVATURE[method] == "hessp":
                kw["hessp"] = rec.hessp
            elif CURVATURE[method] == "hess":
                kw["hess"] = rec.hess
            res = minimize(rec.fun, W0, jac=True, method=method, options={"maxiter": max_iter}, **kw)
            nit = res.nit
    seconds = time.perf_counter() - rec.start
    return res.x, nit, seconds, rec


def moons():
    X, y = fastbp.datasets.load("moons")
    return X, y, fastbp.Network([2, 10, 10, 10, 10, 1], activation="logistic", l2=1e-5)


def spirals():
    X, y = fastbp.datasets.load("spirals")
    return X / 3, y, fastbp.Network([2, 12, 12, 1], activation="tanh", l2=1e-4)


def fitnet():
    rng = np.random.default_rng(0)
    X = np.sort(rng.uniform(-3, 3, (200, 1)), axis=0)
    y = np.sin(2 * X[:, 0]) * np.exp(-X[:, 0] ** 2 / 8) + 0.05 * rng.standard_normal(200)
    return X, y, fastbp.Network([1, 10, 1], activation="tanh", output="identity", l2=1e-6)


def main():
    args = parse_args(__doc__)
    # iterations: L-BFGS-B's are cheap, the others' cost a Krylov solve or a dense Hessian
    max_iter = {"L-BFGS-B": 3000, "trust-krylov": 500, "Newton-CG": 500, "trust-exact": 200, "lm": None}
    if args.fast:
        max_iter = {"L-BFGS-B": 100, "trust-krylov": 15, "Newton-CG": 15, "trust-exact": 8, "lm": 40}
    problems = [("moons", moons, CLASSIFIERS), ("spirals", spirals, CLASSIFIERS), ("fitnet", fitnet, REGRESSION)]

    results = {}
    for name, make, methods in problems:
        X, y, net = make()
        f = net.bind(X, y)
        W0 = net.init_weights(random_state=0)
        f(W0)  # a compiled backend may compile itself on its first call: not timed
        for method in methods:
            x, nit, seconds, rec = fit(f, W0, method, max_iter[method])
            loss = f(x)[0]
            if net.output == "identity":
                quality = f"RMSE {np.sqrt(np.mean((net.predict(x, X) - y) ** 2)):.4f}"
            else:
                quality = f"accuracy {np.mean(net.predict(x, X) == y):.1%}"
            results[name, method] = dict(loss=loss, nit=nit, seconds=seconds, rec=rec, quality=quality,
                                         start=f(W0)[0], n_params=net.n_params, n=X.shape[0],
                                         backend=fastbp.backends.choose(net.layout, X.shape[0]))

    print(f"scipy's default tolerances; max iterations {max_iter}")
    header = (f"{'problem':<8} {'method':<13} {'final loss':>11} {'iter':>5} {'f':>5} {'hessp':>6} {'hess':>5} "
              f"{'r/J':>9} {'seconds':>8} {'to best+5%':>10}  quality")
    print(header)
    print("-" * len(header))
    for name, _, methods in problems:
        best = min(results[name, m]["loss"] for m in methods)
        r0 = results[name, methods[0]]
        print(f"{name} ({r0['n']} samples, {r0['n_params']} weights, backend {r0['backend']}; "
              f"initial loss {r0['start']:.4g})")
        for method in methods:
            r = results[name, method]
            calls = r["rec"].calls
            reached = next((t for t, _, loss in r["rec"].trace if loss <= best * (1 + WITHIN)), None)
            rj = f"{calls['residuals']}/{calls['jac']}" if method == "lm" else "-"
            print(f"{'':<8} {method:<13} {r['loss']:>11.4e} {r['nit']:>5} {calls['f']:>5} {calls['hessp']:>6} "
                  f"{calls['hess']:>5} {rj:>9} {r['seconds']:>8.3f} "
                  f"{'never' if reached is None else f'{reached:.3f}':>10}  {r['quality']}")

    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 3.3 * len(problems)), squeeze=False)
    for row, (name, _, methods) in enumerate(problems):
        for method in methods:
            trace = np.array(results[name, method]["rec"].trace)
            lowest = np.minimum.accumulate(trace[:, 2])
            for col, x in enumerate((trace[:, 0], trace[:, 1])):
                axes[row, col].step(x, lowest, where="post", label=method)
        for col, xlabel in enumerate(("wall time (s)", "evaluations (f, hessp, hess, r, J)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("lowest loss so far")
            ax.set_title(name)
            ax.grid(True, which="major", alpha=0.3)
        axes[row, 0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, args, "07_second_order.png")


if __name__ == "__main__":
    main()
