"""fastbp: fast, trustworthy loss and gradient of neural networks for scipy.optimize.

The core is :class:`Network`; the compiled kernels are chosen through :mod:`fastbp.backends`.
:func:`load` reads a model saved by ``fastbp fit --save``. scikit-learn-style estimators, the
lab's perceptron, datasets and plots are imported lazily.
"""

from .backends import available_backends
from .network import BoundObjective, Network
from .saved import TrainedClassifier, load

__version__ = "0.1.0"

__all__ = [
    "Network",
    "BoundObjective",
    "available_backends",
    "load",
    "TrainedClassifier",
    "MLPClassifier",
    "MLPRegressor",
    "Perceptron",
    "__version__",
]

# name -> submodule, imported on first use so `import fastbp` stays light
_LAZY = {
    "MLPClassifier": "estimators",
    "MLPRegressor": "estimators",
    "Perceptron": "perceptron",
}
# submodules reachable as attributes (fastbp.plot.decision_boundary) without an explicit import
_SUBMODULES = ("plot", "datasets", "distributed", "estimators", "perceptron", "cases", "backends")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
