"""Exercise 5: a depth-4 network, 10 sigmoid units per hidden layer, trained by backpropagation.

The network [2, 10, 10, 10, 10, 1] on ``pointsClass1Week6`` / ``pointsClass2Week6``:

5a  backpropagation exactly as the lab describes it, one sample at a time: forward-propagate
    the sample keeping every a and z = σ(a); at the output δ = y(x_n) − t_n; below it
    δ_j = σ'(a_j) Σ_k w_kj δ_k; each derivative is δ_j z_i; then average over the samples and
    add the penalty's gradient 2λW. This slow loop is the specification fastbp's kernels
    are checked against here;
5   the same gradient from every available fastbp backend, printed as equal; then
    ``minimize(net.bind(X, t), W0, jac=True, method="L-BFGS-B")`` with each backend from the
    same W0, its fit time, and the decision boundary and loss curve of the fit.

Run: ``python examples/05_deep_network.py [--out DIR] [--fast]``.
"""

import time

import numpy as np
from _common import lab_targets, load_lab, parse_args, plt, save
from scipy.optimize import minimize

import fastbp
from fastbp.plot import decision_boundary, loss_curve

LAYERS = [2, 10, 10, 10, 10, 1]
LAM = 1e-5


def sigmoid(a):
    return np.exp(-np.logaddexp(0.0, -a))


def lab_backprop(net, W, X, t, lam):
    """5a: loss and gradient, one sample at a time, as the lab's steps say."""
    coefs, intercepts = net.unpack(W)
    grad_coefs = [np.zeros_like(c) for c in coefs]
    grad_intercepts = [np.zeros_like(b) for b in intercepts]
    n, loss = X.shape[0], 0.0
    for x, target in zip(X, t):
        # forward: keep z of every layer (z of the input layer is x itself)
        zs = [x]
        for c, b in zip(coefs, intercepts):
            zs.append(sigmoid(zs[-1] @ c + b))
        p = zs[-1][0]
        loss -= target * np.log(p) + (1 - target) * np.log(1 - p)
        # backward: δ at the output, then δ_j = σ'(a_j) Σ_k w_kj δ_k, with σ'(a) = z(1 − z)
        delta = zs[-1] - target
        for l in range(len(coefs) - 1, -1, -1):
            grad_coefs[l] += np.outer(zs[l], delta)  # ∂loss/∂w_ij = δ_j z_i
            grad_intercepts[l] += delta
            if l:
                delta = zs[l] * (1 - zs[l]) * (coefs[l] @ delta)
    loss = loss / n + lam * sum(np.sum(c**2) for c in coefs)
    grad = net.pack([g / n + 2 * lam * c for g, c in zip(grad_coefs, coefs)], [g / n for g in grad_intercepts])
    return loss, grad


def recorder(losses):
    """An L-BFGS callback that appends each iteration's loss to ``losses``."""

    def record(intermediate_result):  # scipy passes its OptimizeResult when the name is this
        losses.append(intermediate_result.fun)

    return record


def main():
    args = parse_args(__doc__)
    max_iter = 60 if args.fast else 3000

    data1, data2 = load_lab("pointsClass1Week6", "pointsClass2Week6")
    X, t = lab_targets(data1, data2, second=0)
    backends = fastbp.available_backends()
    print(f"network {LAYERS}, sigmoid, λ = {LAM:g}, {X.shape[0]} samples; backends: {', '.join(backends)}")

    nets = {b: fastbp.Network(LAYERS, activation="logistic", l2=LAM, backend=b) for b in backends}
    W0 = nets[backends[0]].init_weights(random_state=0)  # the lab's uniform ε initialisation

    # the gradient: the lab's per-sample loop against every backend, at W0
    ref_loss, ref_grad = lab_backprop(nets[backends[0]], W0, X, t, LAM)
    print(f"5a  per-sample backprop: loss(W0) = {ref_loss:.12f}, |grad| = {np.linalg.norm(ref_grad):.12f}")
    objectives = {b: net.bind(X, t) for b, net in nets.items()}
    print(f"    {'backend':<8} {'loss(W0)':>16} {'max |grad − per-sample|':>25}  equal")
    for b, f in objectives.items():
        loss, grad = f(W0)
        diff = np.max(np.abs(grad - ref_grad))
        equal = abs(loss - ref_loss) <= 1e-12 * abs(ref_loss) and diff <= 1e-12 * np.max(np.abs(ref_grad))
        print(f"    {b:<8} {loss:>16.12f} {diff:>25.1e}  {'yes' if equal else 'NO'}")
        assert equal, f"backend {b} disagrees with the per-sample backpropagation"

    # the fit, with each backend, from the same W0
    print(f"5   minimize(net.bind(X, t), W0, jac=True, method='L-BFGS-B'), maxiter={max_iter}")
    fits = {}
    for b, f in objectives.items():
        losses = []
        f(W0)  # warm-up: a compiled backend may compile itself on its first call
        start = time.perf_counter()
        res = minimize(f, W0, jac=True, method="L-BFGS-B", callback=recorder(losses), options={"maxiter": max_iter})
        seconds = time.perf_counter() - start
        accuracy = np.mean(nets[b].predict(res.x, X) == t)
        fits[b] = (res, losses, accuracy)
        print(
            f"    {b:<8} fit time {seconds:7.3f} s  ({1e3 * seconds / res.nfev:.3f} ms per call), "
            f"{res.nit} iterations, loss {res.fun:.6f}, accuracy {accuracy:.1%}"
        )

    b = backends[-1]
    res, losses, accuracy = fits[b]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    decision_boundary(lambda P: nets[b].predict(res.x, P), X, t, ax=ax1, scatter_kws={"s": 12})
    ax1.set_title(f"depth 4 × 10 sigmoid units ({b}): accuracy {accuracy:.1%}")
    for name, (_, curve, _) in fits.items():
        loss_curve(curve, ax=ax2, log=True, label=name)
    ax2.legend(title="backend")
    ax2.set_title("L-BFGS loss per iteration")
    save(fig, args, "05_deep_network.png")


if __name__ == "__main__":
    main()
