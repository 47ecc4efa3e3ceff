"""The pieces of the sgd/adam path: flat optimizers against scikit-learn's, the shuffle, the epoch
protocol, zero-weight batches, and bad input leaving an estimator exactly as it was."""

import copy
import pickle
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer as SkAdam
from sklearn.neural_network._stochastic_optimizers import SGDOptimizer as SkSGD
from sklearn.utils import shuffle as sk_shuffle
from sklearn.utils._param_validation import InvalidParameterError

import fastbp
from fastbp import MLPClassifier, MLPRegressor
from fastbp.backends import stochastic
from fastbp.estimators import _shuffle_in_place
from fastbp.optimizers import AdamOptimizer, SGDOptimizer, as_flat

SHAPES = [(3, 4), (4, 2), (4,), (2,)]


def _params(dtype, rng):
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


# ------------------------------------------------------------------------------ optimizers
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "make",
    [
        lambda cls, p: cls(p, 0.05, "constant", 0.9, True, 0.5),
        lambda cls, p: cls(p, 0.05, "constant", 0.7, False, 0.5),
        lambda cls, p: cls(p, 0.05, "constant", 0.0, True, 0.5),
    ],
    ids=["nesterov", "momentum", "plain"],
)
def test_sgd_step_is_sklearns_update_bit_for_bit(dtype, make):
    rng = np.random.default_rng(1)
    sk_params = _params(dtype, rng)
    W = _flat(sk_params)
    sk, ours = make(SkSGD, sk_params), make(SGDOptimizer, sk_params)
    for _ in range(5):
        grads = _params(np.float64 if dtype == np.float64 else dtype, rng)
        sk.update_params(sk_params, grads)
        ours.step(W, _flat(grads).astype(np.float64))
        np.testing.assert_array_equal(W, _flat(sk_params))
        np.testing.assert_array_equal(ours.velocity, _flat(sk.velocities))
    assert W.dtype == ours.velocity.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_step_is_sklearns_update_bit_for_bit(dtype):
    rng = np.random.default_rng(2)
    sk_params = _params(dtype, rng)
    W = _flat(sk_params)
    sk, ours = SkAdam(sk_params, 0.01, 0.8, 0.99, 1e-7), AdamOptimizer(sk_params, 0.01, 0.8, 0.99, 1e-7)
    for _ in range(5):
        grads = _params(dtype, rng)
        sk.update_params(sk_params, grads)
        ours.step(W, _flat(grads).astype(np.float64))
        np.testing.assert_array_equal(W, _flat(sk_params))
        np.testing.assert_array_equal(ours.m, _flat(sk.ms))
        np.testing.assert_array_equal(ours.v, _flat(sk.vs))
    assert ours.t == sk.t == 5 and ours.learning_rate == sk.learning_rate


def test_flat_state_reads_and_writes_as_sklearns_lists():
    rng = np.random.default_rng(3)
    opt = AdamOptimizer(_params(np.float64, rng))
    assert [m.shape for m in opt.ms] == SHAPES and opt.n_params == 26
    new = _params(np.float64, rng)
    opt.ms = new  # scikit-learn's own _get_updates assigns lists
    np.testing.assert_array_equal(opt.m, _flat(new))
    opt.ms[0][0, 0] = 7.0  # the lists are views of the flat state
    assert opt.m[0] == 7.0
    sgd = SGDOptimizer(_params(np.float32, rng))
    assert sgd.dtype == np.float32 and [v.shape for v in sgd.velocities] == SHAPES
    with pytest.raises(ValueError, match="4 arrays"):
        sgd.velocities = new[:2]


def test_optimizers_pickle_and_convert_without_sharing_state():
    rng = np.random.default_rng(4)
    params = _params(np.float64, rng)
    ours = AdamOptimizer(params, 0.01)
    ours.step(_flat(params), rng.standard_normal(26))
    back = pickle.loads(pickle.dumps(ours))
    np.testing.assert_array_equal(back.m, ours.m)
    assert back.t == 1 and [m.shape for m in back.ms] == SHAPES
    copied = as_flat(ours, params)
    copied.step(_flat(params), rng.standard_normal(26))
    assert ours.t == 1 and copied.t == 2  # the original untouched
    sk = SkSGD(params, 0.1, "adaptive", 0.5, False, 0.5)
    sk.velocities = _params(np.float64, rng)
    sk.learning_rate = 0.02
    flat = as_flat(sk, _params(np.float32, rng))
    assert isinstance(flat, SGDOptimizer) and flat.dtype == np.float32
    assert (flat.learning_rate, flat.lr_schedule, flat.momentum, flat.nesterov) == (0.02, "adaptive", 0.5, False)
    np.testing.assert_allclose(flat.velocity, _flat(sk.velocities), rtol=1e-7)
    with pytest.raises(TypeError, match="optimizer"):
        as_flat(object(), params)


@pytest.mark.parametrize("n", [1, 2, 37, 300])
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_shuffle_is_sklearns(seed, n):
    """Shuffling the sample order in place gives scikit-learn's shuffle of it, epoch after epoch,
    and consumes the same draws."""
    ours = np.random.default_rng(seed).permutation(n)
    theirs = ours.copy()
    a, b = np.random.RandomState(seed), np.random.RandomState(seed)
    for _ in range(3):
        _shuffle_in_place(ours, a)
        theirs = sk_shuffle(theirs, random_state=b)
        np.testing.assert_array_equal(ours, theirs)
    assert a.randint(1 << 30) == b.randint(1 << 30)  # the same draws were consumed


# ------------------------------------------------------------------------------ epoch protocol
def test_run_epoch_uses_a_kernels_own_epoch():
    calls = []

    class Kernel:
        def __call__(self, *args):  # pragma: no cover - must not be used
            raise AssertionError("the per-batch path ran")

        def run_epoch(self, *args):
            calls.append(args)
            return 3

    args = (np.zeros(3), np.zeros((2, 1)), np.zeros((2, 1)), None, None, 2, 0.1, object())
    assert stochastic.run_epoch(Kernel(), *args) == 3.0 and calls == [args]


def test_reference_epoch_batches_and_penalty():
    """Batch b of the reference epoch is order[b bs : (b+1) bs], weighed as scikit-learn's
    _backprop weighs it (mean data term, alpha / (2 Σ batch weights) penalty); zero-weight batches
    are skipped; the return value is Σ batch size × batch loss."""
    seen = []

    def kernel(W, X, T, sw, scale, l2):
        seen.append((X[:, 0].tolist(), None if sw is None else sw.tolist(), scale, l2))
        return 1.5, np.zeros_like(W)

    class Step:
        n = 0

        def step(self, W, g):
            Step.n += 1

    X = np.arange(5.0)[:, None]
    order = np.array([4, 0, 3, 1, 2])
    total = stochastic.reference_epoch(kernel, np.zeros(2), X, X, None, order, 2, 0.6, Step())
    assert [s[0] for s in seen] == [[4.0, 0.0], [3.0, 1.0], [2.0]]
    assert [(s[2], s[3]) for s in seen] == [(0.5, 0.15), (0.5, 0.15), (1.0, 0.3)]
    assert total == 1.5 * 5 and Step.n == 3
    seen.clear()
    sw = np.array([0.0, 0.0, 2.0, 0.0, 0.0])
    total = stochastic.reference_epoch(kernel, np.zeros(2), X, X, sw, None, 2, 0.6, Step())
    assert [s[0] for s in seen] == [[2.0, 3.0]]  # batches [0, 1] and [4] weigh nothing
    assert seen[0][1:] == ([2.0, 0.0], 0.5, 0.15) and total == 1.5 * 2 and Step.n == 4


def test_zero_weight_samples_are_not_there():
    """With batch_size=1 and no shuffle, a zero-weight sample is a skipped batch: the weights end
    exactly where a fit without those samples ends."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 3))
    y = X[:, 0] - X[:, 1] ** 2
    sw = np.ones(40)
    sw[::3] = 0.0
    params = dict(hidden_layer_sizes=(4,), solver="adam", batch_size=1, shuffle=False, max_iter=3, random_state=0,
                  learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = MLPRegressor(**params).fit(X, y, sample_weight=sw)
        kept = MLPRegressor(**params).fit(X[sw > 0], y[sw > 0])
    for a, b in zip(weighted.coefs_ + weighted.intercepts_, kept.coefs_ + kept.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert weighted._optimizer.t == kept._optimizer.t == 3 * int((sw > 0).sum())


def test_warm_start_from_lbfgs_to_adam():
    X = np.random.default_rng(8).standard_normal((60, 2))
    y = (X[:, 0] > X[:, 1]).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((4,), solver="lbfgs", max_iter=5, random_state=0, warm_start=True).fit(X, y)
        start = [c.copy() for c in clf.coefs_]
        clf.set_params(solver="adam", max_iter=3, early_stopping=True, validation_fraction=0.2).fit(X, y)
    assert len(clf.loss_curve_) == 8 and len(clf.validation_scores_) == 3
    assert not np.array_equal(clf.coefs_[0], start[0])


# ------------------------------------------------------------------------ failed calls change nothing
def _state(est):
    state = {k: v for k, v in vars(est).items() if k != "_fastbp_network"}
    return pickle.dumps(state)


def _fitted(cls, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(hidden_layer_sizes=(4,), max_iter=3, random_state=0, **params).fit(X, y)


def _assert_unchanged(est, call, error, match):
    params, before = copy.deepcopy(est.get_params()), _state(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            call(est)
    assert est.get_params() == params
    assert _state(est) == before


rng0 = np.random.default_rng(9)
XC = rng0.standard_normal((30, 2))
YC = (XC[:, 0] > 0).astype(int)
YR = XC[:, 0] ** 2


@pytest.mark.parametrize(
    "case",
    [
        "partial-fit-unseen-class",
        "partial-fit-other-classes",
        "partial-fit-early-stopping",
        "negative-weights",
        "warm-start-other-classes",
        "non-finite-weights",
        "bad-dtype",
        "invalid-parameter",
    ],
)
def test_failed_classifier_call_changes_nothing(case):
    est = _fitted(MLPClassifier, XC, YC, solver="sgd", warm_start=case == "warm-start-other-classes")
    calls = {
        "partial-fit-unseen-class": (lambda e: e.partial_fit(XC, YC + 5), ValueError, "classes"),
        "partial-fit-other-classes": (lambda e: e.partial_fit(XC, YC, classes=[0, 1, 2]), ValueError, "classes"),
        "partial-fit-early-stopping": (
            lambda e: e.set_params(early_stopping=True).partial_fit(XC, YC), ValueError, "early_stopping"),
        "negative-weights": (lambda e: e.fit(XC, YC, sample_weight=-np.ones(30)), ValueError, "sample_weight"),
        "warm-start-other-classes": (lambda e: e.fit(XC, YC + 2), ValueError, "warm_start"),
        "non-finite-weights": (lambda e: e.fit(XC * 1e300, YC), ValueError, "non-finite"),
        "bad-dtype": (lambda e: e.set_params(dtype=np.int8).fit(XC, YC), ValueError, "dtype"),
        "invalid-parameter": (lambda e: e.set_params(momentum=2.0).fit(XC, YC), InvalidParameterError, "momentum"),
    }
    call, error, match = calls[case]
    # set_params inside the call changes the parameters on purpose: compare from after it
    if "set_params" in call.__code__.co_names:
        setter = {"partial-fit-early-stopping": dict(early_stopping=True),
                  "bad-dtype": dict(dtype=np.int8), "invalid-parameter": dict(momentum=2.0)}[case]
        est.set_params(**setter)
    _assert_unchanged(est, call, error, match)


def test_validation_set_too_small_changes_nothing():
    est = _fitted(MLPRegressor, XC, YR, solver="adam", warm_start=True)
    est.set_params(early_stopping=True, validation_fraction=0.05)  # 2 of 30 samples: one too few
    _assert_unchanged(est, lambda e: e.fit(XC[:20], YR[:20]), ValueError, "validation set is too small")


def test_failed_poisson_fit_changes_nothing():
    y = YR.copy()
    y[3] = -1.0
    est = _fitted(MLPRegressor, XC, YR, loss="poisson", solver="adam")
    _assert_unchanged(est, lambda e: e.fit(XC, y), ValueError, "negative")
    _assert_unchanged(est, lambda e: e.partial_fit(XC, y), ValueError, "negative")
    fresh = MLPRegressor(loss="poisson")
    with pytest.raises(ValueError, match="Poisson"):
        fresh.fit(XC, y)
    assert not hasattr(fresh, "coefs_") and not hasattr(fresh, "n_features_in_")


def test_failed_first_partial_fit_leaves_an_unfitted_estimator():
    est = MLPClassifier(solver="adam")
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(XC, YC)
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(XC, YC + 7, classes=[0, 1])
    assert vars(est) == vars(MLPClassifier(solver="adam"))
    est.partial_fit(XC, YC, classes=[0, 1])  # and it still works
    assert est.n_iter_ == 1


def test_kernel_cache_is_not_pickled_and_rebuilds():
    est = _fitted(MLPRegressor, XC, YR, solver="adam")
    assert "_fastbp_network" in vars(est)
    back = pickle.loads(pickle.dumps(est))
    assert "_fastbp_network" not in vars(back)
    np.testing.assert_array_equal(back.predict(XC), est.predict(XC))
    est.partial_fit(XC, YR)
    back.partial_fit(XC, YR)
    np.testing.assert_array_equal(back.coefs_[0], est.coefs_[0])
    assert isinstance(copy.deepcopy(est), fastbp.MLPRegressor)
