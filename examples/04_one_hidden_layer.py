"""Exercise 4 (a-e, bonus): a one-hidden-layer network written by hand, then with fastbp.

The lab's steps, on the simple two-class set ``pointsClass1Week6`` / ``pointsClass2Week6``:

4a  load the data with the lab's code (``scipy.io.loadmat``, one class per variable);
4b  the sigmoid σ(a) = 1 / (1 + e^{-a}) and its derivative σ'(a) = σ(a)(1 − σ(a)), checked
    against central differences;
4c  the regularized binary cross-entropy
    −(1/N) Σ [t log p + (1 − t) log(1 − p)] + λ Σ_{weights, not biases} W²;
4d  its gradient by backpropagation, checked against central differences;
4e  both in one ``fun(W) -> (loss, grad)`` passed to ``minimize(jac=True)`` from the lab's
    uniform initialisation W_l ~ U[−ε_l, ε_l], ε_l = sqrt(2 / (n_{l−1} + n_l)); then the same
    with ``fastbp.Network`` and its bound objective, the two agreeing to round-off;
bonus  the same with relu hidden units: relu'(a) = 1 where a > 0, else 0 (the subgradient 0
    is taken at a = 0, which is also what fastbp does).

The flat W uses fastbp's (and scikit-learn's) layout: W1 (2×H), W2 (H×1), then b1 (H), b2 (1).

Run: ``python examples/04_one_hidden_layer.py [--out DIR] [--fast]``.
"""

import time

import numpy as np
from _common import lab_targets, load_lab, parse_args, plt, save
from scipy.optimize import minimize

import fastbp
from fastbp.plot import decision_boundary

H = 6  # "only a few hidden units, to make sure the model is working"
LAM = 1e-5  # λ of the regularized loss


# ------------------------------------------------------------------------------- 4b activations
def sigmoid(a):
    """Entrywise σ(a) for any array; written as exp(−log(1 + e^{−a})) so it never overflows."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(a, dtype=float)))


def sigmoid_prime(a):
    s = sigmoid(a)
    return s * (1.0 - s)


def relu(a):
    return np.maximum(a, 0.0)


def relu_prime(a):
    return (np.asarray(a) > 0).astype(float)


def central_difference(f, a, h=1e-6):
    return (f(a + h) - f(a - h)) / (2 * h)


# ------------------------------------------------------------------------ 4c-4e loss and gradient
def unpack(W, n_in=2, n_hidden=H):
    """Views of the flat W: coefficients first, then intercepts (scikit-learn's order)."""
    i = 0
    W1 = W[i : i + n_in * n_hidden].reshape(n_in, n_hidden)
    i += n_in * n_hidden
    W2 = W[i : i + n_hidden].reshape(n_hidden, 1)
    i += n_hidden
    b1 = W[i : i + n_hidden]
    b2 = W[i + n_hidden : i + n_hidden + 1]
    return W1, W2, b1, b2


def forward(W, X, act):
    W1, W2, b1, b2 = unpack(W)
    a1 = X @ W1 + b1  # hidden pre-activations a^1
    z1 = act(a1)  # hidden units z^1 = σ(a^1)
    a2 = (z1 @ W2 + b2)[:, 0]  # output pre-activation; p = σ(a2)
    return a1, z1, a2


def loss(W, X, t, lam=LAM, act=sigmoid):
    """4c: regularized binary cross-entropy. log p = −log(1 + e^{−a}) and log(1 − p) =
    −log(1 + e^{a}), so a confident wrong answer gives a large finite loss, never log(0)."""
    W1, W2, _, _ = unpack(W)
    _, _, a2 = forward(W, X, act)
    data_term = np.mean(t * np.logaddexp(0, -a2) + (1 - t) * np.logaddexp(0, a2))
    return data_term + lam * (np.sum(W1**2) + np.sum(W2**2))


def fun(W, X, t, lam=LAM, act=sigmoid, act_prime=sigmoid_prime):
    """4d-4e: loss and gradient by backpropagation, in one forward pass.

    At the output δ = p − t (the cross-entropy's derivative through the sigmoid); one layer down
    δ_j = σ'(a_j) Σ_k w_kj δ_k; each weight's derivative is δ_j z_i (mean over samples), and the
    penalty adds 2λW to the coefficients only.
    """
    W1, W2, _, _ = unpack(W)
    a1, z1, a2 = forward(W, X, act)
    n = X.shape[0]
    value = np.mean(t * np.logaddexp(0, -a2) + (1 - t) * np.logaddexp(0, a2))
    value += lam * (np.sum(W1**2) + np.sum(W2**2))
    delta2 = (sigmoid(a2) - t)[:, None] / n  # (n, 1)
    delta1 = act_prime(a1) * (delta2 @ W2.T)  # (n, H)
    gW2 = z1.T @ delta2 + 2 * lam * W2
    gW1 = X.T @ delta1 + 2 * lam * W1
    grad = np.concatenate([gW1.ravel(), gW2.ravel(), delta1.sum(axis=0), delta2.sum(axis=0)])
    return value, grad


def numerical_gradient(f, W, h=1e-6):
    g = np.empty_like(W)
    for i in range(W.size):
        e = np.zeros_like(W)
        e[i] = h
        g[i] = (f(W + e) - f(W - e)) / (2 * h)
    return g


def lab_init(layer_sizes, rng):
    """4e: each layer's weights and biases uniform in [−ε, ε], ε = sqrt(2 / (n_in + n_out))."""
    coefs, intercepts = [], []
    for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        eps = np.sqrt(2.0 / (n_in + n_out))
        coefs.append(rng.uniform(-eps, eps, (n_in, n_out)).ravel())
        intercepts.append(rng.uniform(-eps, eps, n_out))
    return np.concatenate(coefs + intercepts)


def main():
    args = parse_args(__doc__)
    max_iter = 200 if args.fast else 2000

    # 4a: the lab's loading code
    data1, data2 = load_lab("pointsClass1Week6", "pointsClass2Week6")
    X, t = lab_targets(data1, data2, second=0)
    print(f"4a  data: {data1.shape[0]} + {data2.shape[0]} points in 2-D")

    # 4b: the sigmoid's derivative against central differences
    a = np.linspace(-8, 8, 161)
    err = np.max(np.abs(sigmoid_prime(a) - central_difference(sigmoid, a)))
    print(f"4b  max |σ'(a) − central difference| on [−8, 8]: {err:.1e}")
    assert err < 1e-9

    W0 = lab_init([2, H, 1], np.random.default_rng(0))
    fits = {}
    for name, act, act_prime in [("logistic", sigmoid, sigmoid_prime), ("relu", relu, relu_prime)]:
        tag = "4c-e" if name == "logistic" else "bonus"
        # 4c-4d: the hand-written gradient against central differences of the hand-written loss
        value, grad = fun(W0, X, t, act=act, act_prime=act_prime)
        numeric = numerical_gradient(lambda W, act=act: loss(W, X, t, act=act), W0)
        print(f"{tag:5} {name}: loss(W0) = {value:.6f}, max |grad − numerical| = {np.max(np.abs(grad - numeric)):.1e}")

        # 4e: minimize the hand-written function, then fastbp's bound objective, from the same W0
        options = {"maxiter": max_iter}
        start = time.perf_counter()
        hand = minimize(fun, W0, args=(X, t, LAM, act, act_prime), jac=True, method="L-BFGS-B", options=options)
        t_hand = time.perf_counter() - start

        net = fastbp.Network([2, H, 1], activation=name, l2=LAM)
        f = net.bind(X, t)
        f(W0)  # warm-up: a compiled backend may compile itself on its first call
        start = time.perf_counter()
        res = minimize(f, W0, jac=True, method="L-BFGS-B", options=options)
        t_fast = time.perf_counter() - start

        # the same function: loss and gradient agree to round-off at W0 and at the hand solution
        for label, W in [("W0", W0), ("hand-written optimum", hand.x)]:
            lf, gf = f(W)
            lh, gh = fun(W, X, t, act=act, act_prime=act_prime)
            print(f"      at {label}: |Δloss| = {abs(lf - lh):.1e}, max |Δgrad| = {np.max(np.abs(gf - gh)):.1e}")
            assert abs(lf - lh) < 1e-12 and np.max(np.abs(gf - gh)) < 1e-12
        acc_hand = np.mean((sigmoid(forward(hand.x, X, act)[2]) > 0.5) == t)
        acc_fast = np.mean(net.predict(res.x, X) == t)
        for who, r, acc, sec in [("hand-written", hand, acc_hand, t_hand), ("fastbp", res, acc_fast, t_fast)]:
            print(f"      {who + ':':13} loss {r.fun:.6f}, {r.nit} iterations, accuracy {acc:.1%}, {sec:.2f} s")
        fits[name] = (net, hand.x, res.x, act, acc_fast)

    # figures: σ and σ' with the finite-difference check; the two fitted boundaries
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    ax.plot(a, sigmoid(a), label="σ(a)")
    ax.plot(a, sigmoid_prime(a), label="σ'(a) = σ(a)(1 − σ(a))")
    ax.plot(a[::8], central_difference(sigmoid, a[::8]), "o", ms=4, mfc="none", label="central difference")
    ax.set_xlabel("a")
    ax.set_title("4b: the sigmoid and its derivative")
    ax.legend(loc="upper left", fontsize=9)
    for ax, name in zip(axes[1:], ["logistic", "relu"]):
        net, W_hand, W_fast, act, acc = fits[name]
        decision_boundary(lambda P, net=net, W=W_fast: net.predict(W, P), X, t, ax=ax, scatter_kws={"s": 12})
        # the hand-written network's boundary p = 1/2 drawn on top: the same curve
        xx, yy = np.meshgrid(np.linspace(*ax.get_xlim(), 200), np.linspace(*ax.get_ylim(), 200))
        zz = forward(W_hand, np.column_stack([xx.ravel(), yy.ravel()]), act)[2].reshape(xx.shape)
        ax.contour(xx, yy, zz, levels=[0.0], colors="k", linestyles="--", linewidths=1)
        title = "4e: sigmoid" if name == "logistic" else "bonus: relu"
        ax.set_title(f"{title}, {H} hidden units: accuracy {acc:.0%}\n(fill: fastbp.Network, dashed: by hand)")
    save(fig, args, "04_one_hidden_layer.png")


if __name__ == "__main__":
    main()
