"""scikit-learn's own MLP test suite, run on fastbp's estimators.

The installed ``sklearn/neural_network/tests/test_mlp.py`` is read, its one import of
``MLPClassifier, MLPRegressor`` is rewritten to import fastbp's, and the result is executed as a
module whose tests are exposed here, so pytest runs every one of them (with their own
parametrizations) against fastbp. Nothing of scikit-learn's file is copied into this
repository: a newer scikit-learn brings its newer tests.

A test that checks something fastbp deliberately does differently is listed in
:data:`DELIBERATE` with the reason, and marked ``xfail(strict=True)``: should it start passing
(or a new test start failing), the run says so. README.md lists the same tests.
"""

from pathlib import Path

import pytest
import sklearn

import fastbp

SOURCE = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
FASTBP_IMPORT = "from fastbp import MLPClassifier, MLPRegressor"

#: test name -> why fastbp deliberately fails it (README.md, "scikit-learn estimators")
DELIBERATE = {}


def _load_suite():
    text = SOURCE.read_text()
    if text.count(SKLEARN_IMPORT) != 1:
        raise RuntimeError(
            f"{SOURCE} no longer imports the estimators as {SKLEARN_IMPORT!r}: update this runner"
        )
    text = text.replace(SKLEARN_IMPORT, FASTBP_IMPORT)
    namespace = {"__name__": "sklearn_test_mlp_on_fastbp", "__file__": str(SOURCE)}
    exec(compile(text, str(SOURCE), "exec"), namespace)  # noqa: S102 - scikit-learn's installed tests
    return namespace


_SUITE = _load_suite()
assert _SUITE["MLPClassifier"] is fastbp.MLPClassifier and _SUITE["MLPRegressor"] is fastbp.MLPRegressor

for _name, _test in _SUITE.items():
    if _name.startswith("test_") and callable(_test):
        if _name in DELIBERATE:
            _test = pytest.mark.xfail(strict=True, reason=DELIBERATE[_name])(_test)
        globals()[_name] = _test


@pytest.fixture
def global_random_seed():
    """scikit-learn's conftest seeds these tests with 42 unless told otherwise."""
    return 42


def test_every_listed_difference_is_a_test_of_the_suite():
    assert set(DELIBERATE) <= {n for n in _SUITE if n.startswith("test_")}
