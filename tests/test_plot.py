"""fastbp.plot, checked at pixel level: render with Agg and read colours at known places."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fastbp import Perceptron  # noqa: E402
from fastbp.plot import class_colors, decision_boundary, loss_curve  # noqa: E402


def _rgb(hex_color):
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


WHITE = np.array([255.0, 255, 255])
RED, BLUE, GREEN = (_rgb(c) for c in ("#FF0000", "#0000FF", "#00A000"))


def _tint(color, alpha=0.2):
    """What a fill of ``color`` at ``alpha`` looks like over the white axes background."""
    return alpha * color + (1 - alpha) * WHITE


@pytest.fixture
def fig_ax():
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    yield fig, ax
    plt.close(fig)


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    def refuse():
        raise AssertionError("plot functions must never call plt.show()")

    monkeypatch.setattr(plt, "show", refuse)


def _render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)


def _pixel(img, ax, x, y):
    """The RGB of the pixel under data point (x, y)."""
    px, py = ax.transData.transform((x, y))
    return img[int(round(img.shape[0] - py)), int(round(px))]


def _close(pixel, color, tol=6):
    return np.abs(pixel - color).max() <= tol


# four corner points fix the extent [-1, 1]²; two inner points to look at the markers
X = np.array([[-1.0, -1], [-1, 1], [1, -1], [1, 1], [-0.5, -0.6], [0.5, -0.6]])
Y = np.array([0, 0, 1, 1, 0, 1])


def _vertical_split(G):
    return (G[:, 0] > 0).astype(int)  # class 0 left of x = 0, class 1 right


def test_two_classes_red_left_blue_right(fig_ax):
    fig, ax = fig_ax
    out = decision_boundary(_vertical_split, X, Y, ax=ax, resolution=100)
    assert out is ax
    img = _render(fig)
    for yy in (-0.2, 0.3, 0.8):
        assert _close(_pixel(img, ax, -0.5, yy), _tint(RED)), _pixel(img, ax, -0.5, yy)
        assert _close(_pixel(img, ax, 0.5, yy), _tint(BLUE)), _pixel(img, ax, 0.5, yy)
    # the points are drawn on top, opaque, in their class colour
    assert _close(_pixel(img, ax, -0.5, -0.6), RED, tol=10)
    assert _close(_pixel(img, ax, 0.5, -0.6), BLUE, tol=10)
    # the boundary sits at x = 0: a little to each side already has the other colour
    assert _close(_pixel(img, ax, -0.08, 0.3), _tint(RED))
    assert _close(_pixel(img, ax, 0.08, 0.3), _tint(BLUE))
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-1.0, 1.0)


def test_a_model_with_string_labels(fig_ax):
    # a model (with .predict) whose labels are strings: the first in sorted order is red
    fig, ax = fig_ax
    Xp = np.vstack((X, [[-0.9, 0.0], [0.9, 0.0]]))
    names = np.where(Xp[:, 0] > 0, "b-right", "a-left")
    model = Perceptron(random_state=0).fit(Xp, names)
    decision_boundary(model, Xp, names, ax=ax, resolution=200)
    img = _render(fig)
    # wherever the model's own prediction is clear (away from its line and the markers), the
    # fill has that class's colour
    seen = set()
    for gx in np.linspace(-0.9, 0.9, 7):
        for gy in np.linspace(-0.9, 0.9, 7):
            p = np.array([[gx, gy]])
            margin = abs(model.decision_function(p)[0]) / np.linalg.norm(model.coef_)
            if margin < 0.05 or np.min(np.linalg.norm(Xp - p, axis=1)) < 0.15:
                continue
            label = model.predict(p)[0]
            seen.add(label)
            expected = _tint(RED) if label == "a-left" else _tint(BLUE)
            assert _close(_pixel(img, ax, gx, gy), expected), (gx, gy, label)
    assert seen == {"a-left", "b-right"}


def test_three_classes_get_a_third_colour(fig_ax):
    fig, ax = fig_ax
    y3 = np.array(["a", "a", "c", "c", "a", "c"])

    def bands(G):
        return np.where(G[:, 0] < -0.33, "a", np.where(G[:, 0] < 0.33, "b", "c"))

    decision_boundary(bands, X, y3, ax=ax, resolution=120)
    img = _render(fig)
    assert class_colors(3) == ["#FF0000", "#0000FF", "#00A000"]
    assert _close(_pixel(img, ax, -0.7, 0.5), _tint(RED))
    assert _close(_pixel(img, ax, 0.0, 0.5), _tint(BLUE))  # "b", the second label, is blue
    assert _close(_pixel(img, ax, 0.7, 0.5), _tint(GREEN))


def test_a_new_figure_for_each_plot_when_no_axes_given():
    """Without ``ax=`` each function draws on a figure of its own: ``loss_curve`` after
    ``decision_boundary`` must not draw over the boundary (nor over a figure the user had open)."""
    before = plt.figure()
    try:
        ax1 = decision_boundary(_vertical_split, X, Y, resolution=50)
        ax2 = loss_curve([3.0, 2.0, 1.0])
        figures = {before, ax1.figure, ax2.figure}
        assert len(figures) == 3, "each call without ax= must make its own figure"
        assert before.axes == [] and ax1.figure.axes == [ax1] and ax2.figure.axes == [ax2]
        assert len(ax1.lines) == 0 and len(ax2.lines) == 1  # the loss curve is not on the boundary
        img = _render(ax1.figure)
        assert _close(_pixel(img, ax1, -0.5, 0.5), _tint(RED))
    finally:
        plt.close("all")


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((5, 3)), np.zeros(5)), "shape"),
        ((np.zeros((5, 2)), np.zeros(4)), "y must be"),
        ((np.full((5, 2), np.nan), np.zeros(5)), "NaN"),
    ],
)
def test_bad_input(args, match, fig_ax):
    with pytest.raises(ValueError, match=match):
        decision_boundary(_vertical_split, *args, ax=fig_ax[1])


def test_bad_predict(fig_ax):
    with pytest.raises(TypeError, match="predict"):
        decision_boundary(42, X, Y, ax=fig_ax[1])
    with pytest.raises(ValueError, match="one label per point"):
        decision_boundary(lambda G: np.zeros((len(G), 2)), X, Y, ax=fig_ax[1])


def test_loss_curve_pixels(fig_ax):
    fig, ax = fig_ax
    losses = [4.0, 2.0, 1.5, 1.0, 0.8]
    out = loss_curve(losses, ax=ax, color="#00AA00", linewidth=3)
    assert out is ax
    img = _render(fig)
    line = _rgb("#00AA00")
    for i, v in enumerate(losses, start=1):  # iteration i at height losses[i-1]
        assert _close(_pixel(img, ax, i, v), line, tol=30), (i, _pixel(img, ax, i, v))
    # off the curve: background
    assert _close(_pixel(img, ax, 1.5, 1.0), WHITE)
    assert _close(_pixel(img, ax, 4.5, 3.5), WHITE)
    assert ax.get_xlabel() == "iteration" and ax.get_ylabel() == "loss"


def test_loss_curve_from_a_fitted_model(fig_ax):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from fastbp import MLPClassifier

    rng = np.random.default_rng(0)
    Xm = rng.standard_normal((60, 2))
    ym = (Xm[:, 0] * Xm[:, 1] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((6,), activation="tanh", solver="lbfgs", max_iter=20, random_state=0).fit(Xm, ym)
    fig, ax = fig_ax
    loss_curve(clf, ax=ax, log=True)
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_ydata(), clf.loss_curve_)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, clf.n_iter_ + 1))
    assert ax.get_yscale() == "log"
    img = _render(fig)
    c0 = _rgb(matplotlib.colors.to_hex(line.get_color()))
    assert _close(_pixel(img, ax, 1, clf.loss_curve_[0]), c0, tol=60)


def test_loss_curve_errors(fig_ax):
    from fastbp import MLPClassifier

    with pytest.raises(ValueError, match="fit it first"):
        loss_curve(MLPClassifier(), ax=fig_ax[1])
    with pytest.raises(ValueError, match="non-empty"):
        loss_curve([], ax=fig_ax[1])
