"""Exercise 2: XOR with ``MLPClassifier``: how many units and layers, and why.

One hidden layer with identity (linear) units, one and two of them; then relu and logistic units,
one, two and more; each fitted with ``fastbp.MLPClassifier(solver="lbfgs")`` (L-BFGS on fastbp's
kernels) from several ``random_state`` starts, the best kept. As the lab does, SGD (the lab's
default solver; here ``fastbp.MLPClassifier(solver="sgd")``, scikit-learn's minibatch SGD on
fastbp's kernels, step for step the same as scikit-learn's) is compared with the L-BFGS solution
through ``loss_``, and SGD's learning rate is varied.
The boundaries are drawn in one grid, and the lab's question is answered in a printed paragraph.

Run: ``python examples/02_xor.py [--out DIR] [--fast]``.
"""

import time
import warnings

import numpy as np
from _common import lab_targets, load_lab, parse_args, plt, save
from sklearn.exceptions import ConvergenceWarning

import fastbp
from fastbp.plot import decision_boundary

ANSWER = """\
How many units and layers, and why? XOR puts opposite corners in the same class, so no straight
line separates the classes. With identity hidden units the network is a composition of linear
maps followed by the output sigmoid: it is logistic regression whatever the number of units or
layers, its boundary is one line, and it does no better than about half the points (L-BFGS finds
that the best such model barely beats putting every point in one class, as the lab notes). One
non-linear unit does not help either: the output is a monotone function of a single projection
w·x, so the boundary is still a line. Two non-linear units in one hidden layer are enough: each
unit is a line, and the output can keep the band between them, which is where one class lies
(the points with x1·x2 > 0 sit along the diagonal x1 = x2). Whether L-BFGS finds that solution
depends on the starting weights (see the number of starts that solved it above); with more units,
or a second layer, many more weight settings solve XOR and nearly every start does."""


SOLVED = 0.9  # training accuracy that means the four clusters were learnt (a line gets at most 75 %)


def fit_best(make, X, y, starts):
    """Fit ``make(random_state)`` for each start; the lowest final loss wins. Also returns how
    many starts learnt XOR (training accuracy above ``SOLVED``)."""
    best, solved = None, 0
    for rs in range(starts):
        model = make(rs).fit(X, y)
        solved += model.score(X, y) > SOLVED
        if best is None or model.loss_ < best.loss_:
            best = model
    return best, solved


def main():
    args = parse_args(__doc__)
    starts = 2 if args.fast else 8
    data1, data2 = load_lab("data_Week6_class1_XOR", "data_Week6_class2_XOR")
    X, t = lab_targets(data1, data2, second=0)
    print(f"data: {len(data1)} + {len(data2)} points; {starts} random starts per network")

    # the lab's first comparison: SGD (its default solver) against L-BFGS, one linear unit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # SGD stops at max_iter, as in the lab
        sgd = fastbp.MLPClassifier((1,), activation="identity", solver="sgd", random_state=0).fit(X, t)
        lbfgs = fastbp.MLPClassifier((1,), activation="identity", solver="lbfgs", random_state=0).fit(X, t)
        print(f"one linear unit: SGD loss_ = {sgd.loss_:.4f} after {sgd.n_iter_} epochs, "
              f"L-BFGS loss_ = {lbfgs.loss_:.4f} (log 2 = {np.log(2):.4f}: one class for all)")
        # "then try different values of the learning rate" (SGD, 4 relu units)
        rates = (0.001, 0.1) if args.fast else (0.0001, 0.001, 0.01, 0.1, 0.5)
        for lr in rates:
            m = fastbp.MLPClassifier((4,), activation="relu", solver="sgd", learning_rate_init=lr, max_iter=300,
                                     random_state=0).fit(X, t)
            print(f"    SGD, 4 relu units, learning rate {lr:<6g}: loss_ {m.loss_:.4f} after {m.n_iter_} epochs, "
                  f"accuracy {m.score(X, t):.1%}")

    grid = [
        ("identity", [(1,), (2,), (10, 10)]),
        ("relu", [(1,), (2,), (4,), (10, 10)]),
        ("logistic", [(1,), (2,), (4,), (10, 10)]),
    ]
    ncols = max(len(sizes) for _, sizes in grid)
    fig, axes = plt.subplots(len(grid), ncols, figsize=(3.3 * ncols, 3.2 * len(grid)), sharex=True, sharey=True)
    print(f"{'activation':<10} {'hidden':<9} {'loss_':>8} {'accuracy':>9}  starts that learnt XOR")
    solved_by = {}
    start = time.perf_counter()
    # a start whose line search fails (L-BFGS "ABNORMAL") is kept as it is: that is the lesson
    warnings.simplefilter("ignore", ConvergenceWarning)
    for row, (activation, sizes_list) in zip(axes, grid):
        for ax, sizes in zip(row, sizes_list):
            model, solved = fit_best(
                lambda rs, s=sizes, a=activation: fastbp.MLPClassifier(
                    s, activation=a, solver="lbfgs", max_iter=1000, random_state=rs
                ),
                X, t, starts,
            )
            acc = model.score(X, t)
            print(f"{activation:<10} {str(sizes):<9} {model.loss_:>8.4f} {acc:>9.1%}  {solved}/{starts}")
            solved_by[activation, sizes] = solved
            decision_boundary(model, X, t, ax=ax, resolution=150, scatter_kws={"s": 6})
            ax.set_title(f"{activation} {sizes}: {acc:.0%}", fontsize=10)
        for ax in row[len(sizes_list):]:
            ax.axis("off")
    print(f"({time.perf_counter() - start:.1f} s for all L-BFGS fits)")
    fig.suptitle("XOR with fastbp.MLPClassifier (L-BFGS): activation × hidden units, training accuracy")
    fig.tight_layout()
    save(fig, args, "02_xor.png")
    print()
    print(ANSWER)
    fewest = {a: next((s for s in sizes if solved_by[a, s]), None) for a, sizes in grid}
    print("Here: the smallest network that learnt XOR: " + "; ".join(
        f"{a}: {'none' if s is None else f'{s} ({solved_by[a, s]} of {starts} starts)'}" for a, s in fewest.items()))


if __name__ == "__main__":
    main()
