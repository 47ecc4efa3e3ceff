"""Exercise 3: the best network for a hard set (two interleaved spirals), and extra features.

3a  Split the data into a training and a test set; search architectures, activations (relu,
    tanh, sigmoid), the L2 penalty ``alpha`` and the initialisation ``random_state`` with
    ``GridSearchCV`` over a ``Pipeline(StandardScaler, fastbp.MLPClassifier)``, scored by
    cross-validation on the training set only; print the best validation error, then the error
    of the refitted best model on the held-out test set.
3b  Add features before the network, with scikit-learn transformers in the same Pipeline:
    sin(x), sin(y) (``FunctionTransformer``) and the monomials up to degree 3
    (``PolynomialFeatures``); compare with the plain inputs, for the best architecture and for a
    small network of 5 tanh units, where extra features matter most: they let it draw bends its
    few units cannot build from x and y alone.

The spirals' boundary winds around the origin several times; with the plain inputs the network
has to build every bend from its units, which is why the search, and the random start, matter.

Run: ``python examples/03_best_network.py [--out DIR] [--fast]``.
"""

import time
import warnings

import numpy as np
from _common import lab_targets, load_lab, parse_args, plt, save
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures, StandardScaler

import fastbp
from fastbp.plot import decision_boundary

FEATURES = ["x, y", "+ sin x, sin y", "+ monomials ≤ 3", "+ sin, monomials"]


def features(which):
    """The transformer adding ``which`` features to the raw (x, y), or None for the plain inputs.

    sin is taken of the raw coordinates (before scaling), where its period 2π is of the order
    of the spirals' spacing; the monomials are x, y, x², xy, y², x³, x²y, xy², y³."""
    sin = ("sin", FunctionTransformer(np.sin, feature_names_out="one-to-one"))
    identity = ("x, y", FunctionTransformer(feature_names_out="one-to-one"))
    monomials = ("monomials", PolynomialFeatures(degree=3, include_bias=False))
    return {
        "x, y": None,
        "+ sin x, sin y": FeatureUnion([identity, sin]),
        "+ monomials ≤ 3": FeatureUnion([monomials]),
        "+ sin, monomials": FeatureUnion([monomials, sin]),
    }[which]


def pipeline(which, mlp):
    steps = [("scale", StandardScaler()), ("mlp", mlp)]
    if features(which) is not None:
        steps.insert(0, ("features", features(which)))
    return Pipeline(steps)


def main():
    args = parse_args(__doc__)
    data1, data2 = load_lab("neural_net_ex2_class1", "neural_net_ex2_class2")
    X, t = lab_targets(data1, data2, second=0)
    X_train, X_test, t_train, t_test = train_test_split(X, t, test_size=0.25, random_state=0, stratify=t)
    print(f"data: {len(X)} points; {len(X_train)} to train (3-fold cross-validation), {len(X_test)} held out")

    if args.fast:
        grid = {
            "mlp__hidden_layer_sizes": [(20, 20)],
            "mlp__activation": ["tanh", "relu"],
            "mlp__alpha": [1e-2],
            "mlp__random_state": [0],
        }
    else:
        grid = {
            "mlp__hidden_layer_sizes": [(20, 20), (40, 40), (20, 20, 20)],
            "mlp__activation": ["relu", "tanh", "logistic"],
            "mlp__alpha": [1e-4, 1e-2],
            "mlp__random_state": [0, 1],
        }
    max_iter = 300 if args.fast else 1000
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", fastbp.MLPClassifier(solver="lbfgs", max_iter=max_iter))])
    search = GridSearchCV(pipe, grid, cv=3)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a candidate may stop at max_iter
        search.fit(X_train, t_train)
    n_fits = 3 * len(search.cv_results_["params"]) + 1
    print(f"3a  GridSearchCV: {len(search.cv_results_['params'])} candidates, {n_fits} fits, "
          f"{time.perf_counter() - start:.1f} s")

    # the best few candidates, as cross-validation ranks them
    order = np.argsort(search.cv_results_["rank_test_score"])[:5]
    for i in order:
        p = search.cv_results_["params"][i]
        print(f"    validation error {1 - search.cv_results_['mean_test_score'][i]:6.1%}  "
              f"{str(p['mlp__hidden_layer_sizes']):<13}{p['mlp__activation']:<8} alpha={p['mlp__alpha']:g} "
              f"random_state={p['mlp__random_state']}")
    best = search.best_estimator_
    best_val_error = 1 - search.best_score_
    test_error = 1 - best.score(X_test, t_test)
    print(f"    best validation error: {best_val_error:.1%}; the refitted best model's test error: {test_error:.1%}")

    # 3b: the best network, and a small one, on added features (the small one's error is the
    # mean over three random starts: with 5 units the start matters)
    best_mlp = best.named_steps["mlp"]
    small = fastbp.MLPClassifier((5,), activation="tanh", solver="lbfgs", alpha=1e-2, max_iter=max_iter)
    small_states = [0] if args.fast else [0, 1, 2]
    models = {}
    print(f"3b  test error        {'best network':>13} {'(5,) tanh':>10}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for which in FEATURES:
            model = pipeline(which, clone(best_mlp)).fit(X_train, t_train)
            errors = []
            for rs in small_states:
                small_model = pipeline(which, clone(small).set_params(random_state=rs)).fit(X_train, t_train)
                errors.append(1 - small_model.score(X_test, t_test))
                models[which, rs] = small_model
            print(f"    {which:<17} {1 - model.score(X_test, t_test):>13.1%} {np.mean(errors):>10.1%}")

    fig, axes = plt.subplots(1, 3, figsize=(15.5, 4.8))
    panels = [
        (best, f"3a best: {best_mlp.hidden_layer_sizes} {best_mlp.activation}, alpha={best_mlp.alpha:g}"),
        (models["x, y", 0], "3b (5,) tanh on x, y"),
        (models["+ sin, monomials", 0], "3b (5,) tanh on x, y + sin, monomials"),
    ]
    for ax, (model, title) in zip(axes, panels):
        decision_boundary(model, X, t, ax=ax, resolution=250, scatter_kws={"s": 7})
        ax.scatter(*X_test.T, s=30, facecolors="none", edgecolors="k", linewidths=0.6)
        ax.set_title(f"{title}\ntest error {1 - model.score(X_test, t_test):.1%} (circled: test points)", fontsize=10)
    save(fig, args, "03_best_network.png")


if __name__ == "__main__":
    main()
