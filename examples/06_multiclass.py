"""Exercise 6: more than two classes: softmax outputs and the categorical cross-entropy.

How the binary cross-entropy extends. With one output unit, p = σ(a) is the probability of class
1 and 1 − p that of class 0, and the loss of a sample is −[t log p + (1 − t) log(1 − p)]. For K
classes the network gets K output units a_1 … a_K, turned into probabilities by the softmax

    p_k = exp(a_k) / Σ_j exp(a_j),      (positive, summing to 1)

and the target becomes a one-hot vector t (t_k = 1 for the true class). The loss of a sample is
the categorical cross-entropy

    −Σ_k t_k log p_k  =  −log p_(true class),

averaged over the samples, plus λ Σ W² as before. With K = 2 it *is* the binary cross-entropy:
the softmax of (0, a) is (1 − σ(a), σ(a)), which this example checks numerically. The output
deltas of backpropagation keep the same form, δ_k = p_k − t_k, so everything below the output
is unchanged. The predicted class is the k with the largest p_k.

Here on the three-armed ``multiclass_data_class1..3`` set: the K = 2 check, the loss written by
hand against ``fastbp.Network``, a fit with ``fastbp.MLPClassifier`` (which picks softmax for
three classes as scikit-learn does), its accuracy per class on held-out points, the decision
regions and each class's probability p_k.

Run: ``python examples/06_multiclass.py [--out DIR] [--fast]``.
"""

import time

import numpy as np
from _common import load_lab, parse_args, plt, save
from matplotlib.colors import LinearSegmentedColormap
from sklearn.model_selection import train_test_split

import fastbp
from fastbp.plot import class_colors, decision_boundary

VARIABLES = ("multiclass_data_class1", "multiclass_data_class2", "multiclass_data_class3")


def softmax_cross_entropy(A, y):
    """Mean −log p_(y) from the output pre-activations A (n, K), by log-sum-exp."""
    A = A - A.max(axis=1, keepdims=True)  # the softmax is unchanged by a shift; no overflow
    log_p = A - np.log(np.exp(A).sum(axis=1, keepdims=True))
    return -np.mean(log_p[np.arange(len(y)), y])


def output_preactivations(coefs, intercepts, X, hidden=np.tanh):
    z = X
    for l, (c, b) in enumerate(zip(coefs, intercepts)):
        z = z @ c + b
        if l < len(coefs) - 1:
            z = hidden(z)
    return z


def main():
    args = parse_args(__doc__)
    classes = load_lab(*VARIABLES)
    X = np.vstack(classes)
    y = np.concatenate([np.full(len(c), k) for k, c in enumerate(classes)])
    K = len(classes)
    print(f"data: {K} classes, {' + '.join(str(len(c)) for c in classes)} points")

    # K = 2 is the binary cross-entropy: a logistic output a, and a softmax over (0, a)
    binary = y < 2
    logistic = fastbp.Network([2, 8, 1], activation="tanh")
    W = logistic.init_weights(random_state=0)
    coefs, intercepts = logistic.unpack(W)
    two = fastbp.Network([2, 8, 2], activation="tanh", output="softmax")
    W2 = two.pack(
        [coefs[0], np.hstack([np.zeros_like(coefs[1]), coefs[1]])], [intercepts[0], np.r_[0.0, intercepts[1]]]
    )
    bce, sce = logistic.loss_and_grad(W, X[binary], y[binary])[0], two.loss_and_grad(W2, X[binary], y[binary])[0]
    print(f"K = 2: binary cross-entropy {bce:.15f}, categorical cross-entropy {sce:.15f}")
    assert abs(bce - sce) < 1e-12

    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    hidden = (16,) if args.fast else (30, 30)
    clf = fastbp.MLPClassifier(hidden, activation="tanh", solver="lbfgs", alpha=1e-2, max_iter=1000, random_state=0)
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    print(f"fastbp.MLPClassifier{hidden}, tanh: output {clf.out_activation_!r}, {clf.n_iter_} L-BFGS iterations, "
          f"{seconds:.2f} s, loss_ {clf.loss_:.5f}")

    # the loss by hand, from the fitted weights, equals fastbp's
    A = output_preactivations(clf.coefs_, clf.intercepts_, X_train)
    by_hand = softmax_cross_entropy(A, y_train) + clf.alpha / (2 * len(X_train)) * sum(
        np.sum(c**2) for c in clf.coefs_
    )
    print(f"categorical cross-entropy + penalty by hand: {by_hand:.12f} (fastbp: {clf.loss_:.12f})")
    assert abs(by_hand - clf.loss_) < 1e-10

    pred = clf.predict(X_test)
    accuracy = np.mean(pred == y_test)
    print(f"test accuracy {accuracy:.1%} (training {clf.score(X_train, y_train):.1%})")
    for k in range(K):
        print(f"    class {k + 1} ({VARIABLES[k]}): {np.mean(pred[y_test == k] == k):.1%} of {np.sum(y_test == k)}")

    fig, axes = plt.subplots(1, K + 1, figsize=(4 * (K + 1), 4.2))
    decision_boundary(clf, X, y, ax=axes[0], resolution=250, scatter_kws={"s": 8})
    axes[0].set_title(f"softmax, {K} classes: test accuracy {accuracy:.1%}")
    lo, hi = X.min(axis=0), X.max(axis=0)
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    P = clf.predict_proba(np.column_stack([xx.ravel(), yy.ravel()]))
    colors = class_colors(K)
    for k, ax in enumerate(axes[1:]):
        cmap = LinearSegmentedColormap.from_list(f"class{k}", ["white", colors[k]])
        ax.contourf(xx, yy, P[:, k].reshape(xx.shape), levels=np.linspace(0, 1, 11), cmap=cmap, alpha=0.6)
        ax.contour(xx, yy, P[:, k].reshape(xx.shape), levels=[0.5], colors="k", linewidths=0.8)
        ax.scatter(*X[y == k].T, s=8, color=colors[k], edgecolors="k", linewidths=0.3)
        ax.set_title(f"p_{k + 1}(x), the probability of class {k + 1}\n(line: p_{k + 1} = 0.5)", fontsize=10)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    save(fig, args, "06_multiclass.png")


if __name__ == "__main__":
    main()
