"""The named benchmark cases: lab-sized to MNIST-sized networks, with deterministic data.

Shared by ``benchmarks/``, ``fastbp bench`` and the tests, so every measurement of fastbp talks
about the same four problems.

==============  ========  ===========================  ==========  ========
case            n         layer sizes                  hidden      output
==============  ========  ===========================  ==========  ========
``seed4layer``  200       [2, 10, 10, 10, 10, 1]       logistic    logistic
``multiclass``  400       [2, 20, 20, 4]               relu        softmax
``medium``      10 000    [20, 64, 64, 1]              tanh        logistic
``large``       20 000    [784, 256, 256, 10]          relu        softmax
==============  ========  ===========================  ==========  ========
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Case", "CASES", "make_case_data"]


@dataclass(frozen=True)
class Case:
    """One benchmark problem.

    Attributes
    ----------
    name : str
    n_samples : int
    layer_sizes : tuple of int
    activation : str
        Hidden activation, as scikit-learn and :class:`fastbp.Network` spell it.
    output : str
        "logistic" or "softmax" (what scikit-learn's MLPClassifier infers for the labels).
    alpha : float
        scikit-learn's L2 ``alpha``; fastbp's ``l2 = alpha / (2 n_samples)``.
    """

    name: str
    n_samples: int
    layer_sizes: tuple
    activation: str
    output: str
    alpha: float = 1e-4

    @property
    def l2(self):
        """λ equivalent to ``alpha`` for unweighted samples."""
        return self.alpha / (2 * self.n_samples)

    @property
    def n_classes(self):
        return 2 if self.output == "logistic" else self.layer_sizes[-1]

    def network(self, **kwargs):
        """A :class:`fastbp.Network` for this case (keyword arguments pass through)."""
        from .network import Network

        return Network(self.layer_sizes, activation=self.activation, output=self.output, l2=self.l2, **kwargs)


CASES = {
    c.name: c
    for c in (
        Case("seed4layer", 200, (2, 10, 10, 10, 10, 1), "logistic", "logistic"),
        Case("multiclass", 400, (2, 20, 20, 4), "relu", "softmax"),
        Case("medium", 10_000, (20, 64, 64, 1), "tanh", "logistic"),
        Case("large", 20_000, (784, 256, 256, 10), "relu", "softmax"),
    )
}


def make_case_data(case, n_samples=None, random_state=0):
    """Deterministic ``(X, y)`` for ``case`` (a :class:`Case` or its name).

    X is standard normal, float64, shape ``(n, layer_sizes[0])``; y holds integer class labels
    in ``[0, n_classes)`` drawn from a random teacher network, so the problem is learnable.
    """
    if isinstance(case, str):
        case = CASES[case]
    n = case.n_samples if n_samples is None else int(n_samples)
    rng = np.random.default_rng(random_state)
    X = rng.standard_normal((n, case.layer_sizes[0]))
    # a random two-layer tanh teacher, with a little label noise
    hidden = rng.standard_normal((case.layer_sizes[0], 16)) / np.sqrt(case.layer_sizes[0])
    head = rng.standard_normal((16, case.n_classes))
    scores = np.tanh(X @ hidden) @ head + 0.3 * rng.standard_normal((n, case.n_classes))
    y = scores.argmax(axis=1).astype(np.int64)
    return X, y
