"""Exercise 1: the perceptron learning rule, until every point is classified.

With targets t_i = ±1 and x̃_i = (1, x_i), start from a random β and repeat

    β ← β + η Σ_{i misclassified} t_i x̃_i          (misclassified: sign(β·x̃_i) ≠ t_i)

until no point is misclassified, which happens after finitely many steps when the classes are
linearly separable (the perceptron convergence theorem). ``fastbp.Perceptron`` implements the
lab's rule as a scikit-learn classifier; ``max_iter=k`` stops it after k updates, which is how
the first steps are drawn here.

Run: ``python examples/01_perceptron.py [--out DIR] [--fast]``.
"""

import time
import warnings

import numpy as np
from _common import lab_targets, load_lab, parse_args, plt, save
from sklearn.exceptions import ConvergenceWarning

import fastbp
from fastbp.plot import decision_boundary


def boundary_line(ax, clf, X, **kws):
    """Draw β0 + β1 x1 + β2 x2 = 0 across the plot."""
    (b1, b2), b0 = clf.coef_[0], clf.intercept_[0]
    x1 = np.linspace(X[:, 0].min(), X[:, 0].max(), 2)
    ax.plot(x1, -(b0 + b1 * x1) / b2, **kws)


def main():
    args = parse_args(__doc__)
    data1, data2 = load_lab("perceptron_data_class1", "perceptron_data_class2")
    X, t = lab_targets(data1, data2, second=-1)  # the lab's targets: +1 and −1
    print(f"data: {len(data1)} + {len(data2)} points, targets +1 / −1")

    start = time.perf_counter()
    clf = fastbp.Perceptron(eta=0.1, random_state=0).fit(X, t)
    seconds = time.perf_counter() - start
    accuracy = clf.score(X, t)
    beta = np.concatenate([clf.intercept_, clf.coef_[0]])
    print(f"perceptron rule: {clf.n_iter_} updates, {seconds * 1e3:.1f} ms; β = {np.array2string(beta, precision=3)}")
    print(f"training accuracy: {accuracy:.1%} (misclassified: {int(np.sum(clf.predict(X) != t))})")
    assert accuracy == 1.0, "the rule stops only when every point is classified"

    # the first few steps of the same run: the rule stopped after k updates
    steps = [k for k in (0, 1, 2, 3, 5) if k < clf.n_iter_]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6))
    decision_boundary(clf, X, t, ax=ax1, scatter_kws={"s": 12})
    ax1.set_title(f"perceptron after {clf.n_iter_} updates: all {len(t)} points classified")
    ax2.scatter(X[:, 0], X[:, 1], c=np.where(t > 0, "#0000FF", "#FF0000"), s=10)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps) + 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopping early is the point here
        for k, color in zip(steps, colors):
            partial = fastbp.Perceptron(eta=0.1, max_iter=k, random_state=0).fit(X, t)
            wrong = int(np.sum(partial.predict(X) != t))
            boundary_line(ax2, partial, X, color=color, label=f"after {k} updates: {wrong} wrong")
    boundary_line(ax2, clf, X, color=colors[-1], lw=2.5, label=f"after {clf.n_iter_} updates: 0 wrong")
    ax2.set_ylim(X[:, 1].min() - 0.5, X[:, 1].max() + 0.5)
    ax2.legend(fontsize=8, loc="upper left")
    ax2.set_title("the first steps of the rule, β ← β + η Σ t_i x̃_i")
    save(fig, args, "01_perceptron.png")


if __name__ == "__main__":
    main()
