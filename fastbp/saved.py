"""A trained classifier as ``fastbp fit --save`` writes it, and :func:`load` to read it back.

``fastbp fit`` trains a :class:`fastbp.Network` on standardized inputs (when ``--standardize``
is given) and on class labels encoded as 0, 1, ...; what it saves is everything needed to predict
on new raw data: the network's description, the flat weights ``W``, the per-feature ``mean`` and
``scale`` of the standardization (0 and 1 without it) and the original class labels::

    fastbp fit moons --hidden 8 --save model.npz     # in a shell
    model = fastbp.load("model.npz")                 # in Python
    model.predict(X)                                 # labels as in the training data, from raw X

The file is a NumPy ``.npz`` archive of plain arrays (no pickled objects, so loading it runs no
code): ``W``, ``layer_sizes``, ``activation``, ``output``, ``l2``, ``classes``, ``mean``, ``scale``
and ``format`` (``"fastbp-classifier 1"``). ``numpy.load`` reads it as well.
"""

from __future__ import annotations

import os

import numpy as np

from .network import Network

__all__ = ["TrainedClassifier", "load", "FORMAT"]

#: The ``format`` entry of a saved file: its kind and version.
FORMAT = "fastbp-classifier 1"
_KEYS = ("W", "layer_sizes", "activation", "output", "l2", "classes", "mean", "scale")


def class_codes(outputs):
    """Class indices 0, 1, ... from a network's outputs (``Network.predict_proba``), shape
    (n, n_outputs): one output is class 1 above 0.5 (logistic, or an identity output fitted to
    0/1 targets); several outputs, the largest (softmax, or identity on one-hot targets)."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.int64)
    return outputs.argmax(axis=1)


class TrainedClassifier:
    """A network with its weights, input standardization and class labels: what
    ``fastbp fit --save`` writes and :func:`load` returns.

    Parameters
    ----------
    network : Network
        The network that was trained.
    W : array-like of shape (network.n_params,)
        Its flat weights (scikit-learn's layout, see :meth:`Network.unpack`).
    classes : array-like of shape (n_classes,)
        The class labels, sorted; class index k of the network is ``classes[k]``.
    mean, scale : array-like of shape (n_features,), optional
        The standardization applied to the inputs before the network: it sees
        ``(X - mean) / scale``. Default: none (0 and 1).

    Attributes
    ----------
    network : Network
    W : ndarray of float64, shape (n_params,)
        Read-only.
    classes_ : ndarray of shape (n_classes,)
    mean, scale : ndarray of float64, shape (n_features,)
    coefs_, intercepts_ : list of ndarray
        Views of ``W`` per layer, scikit-learn's shapes.

    Examples
    --------
    >>> import numpy as np, fastbp
    >>> net = fastbp.Network([1, 1])                     # no hidden layer: logistic regression
    >>> model = fastbp.TrainedClassifier(net, [10.0, 0.0], classes=["low", "high"], mean=[5.0])
    >>> model.predict([[4.0], [6.0]]).tolist()          # class "high" where 10 (x - 5) > 0
    ['low', 'high']
    """

    def __init__(self, network, W, classes, mean=None, scale=None):
        if not isinstance(network, Network):
            raise TypeError(f"network must be a fastbp.Network, got {type(network).__name__}")
        W = np.array(W, dtype=np.float64)
        if W.shape != (network.n_params,) or not np.isfinite(W).all():
            raise ValueError(f"W must be {network.n_params} finite numbers (network.n_params), got shape {W.shape}")
        classes = np.asarray(classes)
        if classes.ndim != 1 or classes.shape[0] < 2:
            raise ValueError(f"classes must list at least two labels, got {classes!r}")
        n_out = network.layer_sizes[-1]
        if classes.shape[0] != (2 if n_out == 1 else n_out):
            raise ValueError(f"classes has {classes.shape[0]} labels but the network has {n_out} output unit(s)")
        n_features = network.layer_sizes[0]
        mean = np.zeros(n_features) if mean is None else np.array(mean, dtype=np.float64)
        scale = np.ones(n_features) if scale is None else np.array(scale, dtype=np.float64)
        for name, v in (("mean", mean), ("scale", scale)):
            if v.shape != (n_features,) or not np.isfinite(v).all():
                raise ValueError(f"{name} must be {n_features} finite numbers (one per input), got shape {v.shape}")
        if np.any(scale == 0):
            raise ValueError("scale must not contain zeros")
        for arr in (W, mean, scale):
            arr.setflags(write=False)
        self.network, self.W, self.classes_, self.mean, self.scale = network, W, classes, mean, scale

    @property
    def coefs_(self):
        """Coefficient matrices per layer, ``(n_in, n_out)``: views of ``W``."""
        return self.network.unpack(self.W)[0]

    @property
    def intercepts_(self):
        """Intercept vectors per layer: views of ``W``."""
        return self.network.unpack(self.W)[1]

    def _outputs(self, X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"X must have shape (n_samples, {self.mean.shape[0]}), got {X.shape}")
        return self.network.predict_proba(self.W, (X - self.mean) / self.scale)

    def predict(self, X):
        """The class label of each row of raw ``X`` (standardized here as in training).

        Returns
        -------
        ndarray of shape (n_samples,)
            Entries of ``classes_``.
        """
        return self.classes_[class_codes(self._outputs(X))]

    def predict_proba(self, X):
        """The probability of each class, columns in the order of ``classes_`` (logistic and
        softmax outputs; an identity output's values are not probabilities and raise a
        ValueError).

        Returns
        -------
        ndarray of float64, shape (n_samples, n_classes)
        """
        if self.network.output not in ("logistic", "softmax"):
            raise ValueError(f"predict_proba needs a logistic or softmax output, this network's is "
                             f"{self.network.output!r}: use predict")
        P = self._outputs(X)
        return np.column_stack((1.0 - P[:, 0], P[:, 0])) if P.shape[1] == 1 else P

    def score(self, X, y):
        """The fraction of rows of ``X`` whose predicted label equals ``y``."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def save(self, path):
        """Write the model to ``path`` (a ``.npz`` archive of plain arrays; see the module)."""
        net = self.network
        classes = self.classes_
        if classes.dtype == object:  # plain arrays only: no pickled objects in the file
            classes = classes.astype(str)
        with open(os.fspath(path), "wb") as fh:
            np.savez(fh, format=FORMAT, W=self.W, layer_sizes=np.array(net.layer_sizes),
                     activation=net.activation, output=net.output, l2=net.l2, classes=classes,
                     mean=self.mean, scale=self.scale)

    def __repr__(self):
        return f"TrainedClassifier({self.network!r}, classes={self.classes_.tolist()!r})"


def load(path, backend="auto"):
    """Read a model written by ``fastbp fit --save`` (or :meth:`TrainedClassifier.save`).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.
    backend : str, default="auto"
        Backend of the rebuilt :class:`Network` (``fastbp.available_backends()``).

    Returns
    -------
    TrainedClassifier
        ``.predict(X)`` gives labels from raw ``X``; ``.network`` and ``.W`` are the network
        and its weights, e.g. for ``model.network.bind(X_new, y_new)(model.W)``.

    Raises
    ------
    ValueError
        If the file is not such a model (it names what is missing).
    """
    try:
        z = np.load(os.fspath(path), allow_pickle=False)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"cannot read {path} as a NumPy .npz file: {exc}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single array, not a model written by 'fastbp fit --save'")
    with z:
        missing = [k for k in _KEYS if k not in z.files]
        if missing:
            raise ValueError(f"{path} is not a model written by 'fastbp fit --save': it lacks {', '.join(missing)}")
        fmt = str(z["format"]) if "format" in z.files else FORMAT  # files from before the format entry
        if fmt != FORMAT:
            raise ValueError(f"{path} holds format {fmt!r}; this fastbp reads {FORMAT!r}")
        a = {k: z[k] for k in _KEYS}
    net = Network(a["layer_sizes"].tolist(), activation=str(a["activation"]), output=str(a["output"]),
                  l2=float(a["l2"]), backend=backend)
    return TrainedClassifier(net, a["W"], a["classes"], mean=a["mean"], scale=a["scale"])
