"""Plots as the lab draws them: decision regions of a 2-D classifier, and a loss curve.

Both functions draw on the Axes given with ``ax=``, or, without one, on a new figure of their
own (never over a figure drawn before: ``decision_boundary(...)`` then ``loss_curve(...)`` gives
two figures). They return the Axes and never call ``plt.show()``, so they work in notebooks,
scripts and headless (Agg) runs alike; to combine plots, pass the Axes of your own subplots.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decision_boundary", "loss_curve", "class_colors", "LAB_COLORS"]

#: The lab's ``cm_bright``: first class red, second class blue.
LAB_COLORS = ("#FF0000", "#0000FF")
# further classes, bright and distinct from red, blue and each other
_MORE_COLORS = ("#00A000", "#FF9900", "#9900CC", "#00CCCC", "#CC0077", "#7F7F00", "#000000", "#7F3F00")


def class_colors(n_classes):
    """The colours of ``n_classes`` classes: the lab's red and blue first, then more.

    Parameters
    ----------
    n_classes : int

    Returns
    -------
    list of str
        Hex colours, one per class, in the order of the sorted labels. Beyond 10 classes the
        colours repeat.
    """
    palette = LAB_COLORS + _MORE_COLORS
    return [palette[i % len(palette)] for i in range(n_classes)]


def _get_ax(ax):
    """``ax``, or the Axes of a new figure when it is None."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.figure().add_subplot()
    return ax


def decision_boundary(
    model_or_predict, X, y, ax=None, resolution=200, alpha=0.2, margin=0.0, scatter_kws=None
):
    """Draw a classifier's decision regions over ``X`` and the labelled points on top.

    As the lab does: a ``resolution × resolution`` meshgrid spanning the data, the predicted
    class filled with ``contourf`` in the lab's red/blue colormap at low ``alpha``, then
    ``scatter`` of the points coloured by their label. The first class (in sorted order) is red,
    the second blue; more classes get more colours (:func:`class_colors`).

    Parameters
    ----------
    model_or_predict : estimator or callable
        An object with ``predict`` (e.g. a fitted ``fastbp.MLPClassifier`` or ``Perceptron``), or
        a function mapping an ``(n, 2)`` array to ``n`` labels.
    X : array-like of shape (n_samples, 2)
        The points; they also fix the extent of the grid.
    y : array-like of shape (n_samples,)
        Their labels (any sortable labels, e.g. 0/1, ±1 or strings).
    ax : matplotlib.axes.Axes, optional
        Where to draw; None (default) draws on a new figure.
    resolution : int, default=200
        Grid points per axis (the lab uses 50 to 500).
    alpha : float, default=0.2
        Opacity of the filled regions (the lab's 0.2).
    margin : float, default=0.0
        Extra room around the data, as a fraction of its range per axis (the lab uses none).
    scatter_kws : dict, optional
        Extra keyword arguments for ``ax.scatter``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.colors import ListedColormap

    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"X must have shape (n_samples, 2) to be drawn in the plane, got {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X is empty: nothing to draw")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got shape {y.shape}")
    if isinstance(resolution, (bool, np.bool_)) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if hasattr(model_or_predict, "predict"):
        predict = model_or_predict.predict
    elif callable(model_or_predict):
        predict = model_or_predict
    else:
        raise TypeError(
            f"model_or_predict must have a predict method or be callable, got {type(model_or_predict).__name__}"
        )

    lo, hi = X.min(axis=0), X.max(axis=0)
    flat = hi <= lo  # all points on one line: give that axis a unit width
    lo, hi = np.where(flat, lo - 0.5, lo), np.where(flat, hi + 0.5, hi)
    lo, hi = lo - margin * (hi - lo), hi + margin * (hi - lo)
    xx1, xx2 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack((xx1.ravel(), xx2.ravel()))
    pred = np.asarray(predict(grid))
    if pred.ndim != 1 or pred.shape[0] != grid.shape[0]:
        raise ValueError(
            f"the prediction on the grid must be one label per point, shape ({grid.shape[0]},); got {pred.shape}"
        )

    # one colour per label seen in y or predicted, in sorted order
    classes = np.unique(np.concatenate((y, pred)))
    K = len(classes)
    cmap = ListedColormap(class_colors(K))
    z = np.searchsorted(classes, pred).reshape(xx1.shape)
    levels = np.arange(K + 1) - 0.5  # each class index sits inside its own band
    ax = _get_ax(ax)
    ax.contourf(xx1, xx2, z, levels=levels, cmap=cmap, alpha=alpha, vmin=-0.5, vmax=K - 0.5)
    kws = {"cmap": cmap, "vmin": -0.5, "vmax": K - 0.5}
    kws.update(scatter_kws or {})
    ax.scatter(X[:, 0], X[:, 1], c=np.searchsorted(classes, y), **kws)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    return ax


def loss_curve(model_or_losses, ax=None, log=False, **plot_kws):
    """Plot the loss against the iteration.

    Parameters
    ----------
    model_or_losses : estimator or array-like of float
        A fitted model with ``loss_curve_`` (``fastbp.MLPClassifier``/``MLPRegressor`` record it
        under L-BFGS; scikit-learn's under SGD/Adam), or the losses themselves.
    ax : matplotlib.axes.Axes, optional
        Where to draw; None (default) draws on a new figure.
    log : bool, default=False
        Logarithmic loss axis.
    **plot_kws
        Passed to ``ax.plot`` (e.g. ``label=``, ``color=``).

    Returns
    -------
    matplotlib.axes.Axes
    """
    losses = getattr(model_or_losses, "loss_curve_", model_or_losses)
    if losses is model_or_losses and hasattr(model_or_losses, "fit"):
        raise ValueError(
            f"{type(model_or_losses).__name__} has no loss_curve_: fit it first "
            "(scikit-learn records none under lbfgs; fastbp's estimators do)"
        )
    losses = np.asarray(losses, dtype=float)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"the losses must be a non-empty 1-D sequence, got shape {losses.shape}")
    ax = _get_ax(ax)
    ax.plot(np.arange(1, losses.size + 1), losses, **plot_kws)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if log:
        ax.set_yscale("log")
    return ax
