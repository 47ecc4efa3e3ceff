"""Bad input is refused before anything is computed; inputs are never modified; every layout and
dtype of X gives the result of its C-contiguous float64 copy.

Each bad input on the contract's list must raise ValueError (TypeError for a wrong type) whose
message names the argument. "Before anything is computed" is checked with a spy backend that
counts kernel calls; "never modified" by comparing every array's bytes and flags before and after.
"""

import re
import sys
import types
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp import backends

# ------------------------------------------------------------------------------------ helpers


class SpyBackend:
    """A backend that counts kernel calls and delegates to the NumPy kernel."""

    name = "spy"

    def __init__(self):
        self.calls = 0

    def prepare(self, layout, n_threads):
        inner = backends.get_backend("numpy").prepare(layout, n_threads)

        def kernel(*args):
            self.calls += 1
            return inner(*args)

        return kernel


@pytest.fixture
def spy(monkeypatch):
    """Register a 'spy' backend for the duration of one test (registry restored afterwards)."""
    module = types.ModuleType("fastbp_test_spy_backend")
    module.BACKEND = SpyBackend()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(backends, "_MODULES", {**backends._MODULES, "spy": module.__name__})
    monkeypatch.setattr(backends, "_LOADED", dict(backends._LOADED))
    monkeypatch.setattr(backends, "_REASONS", dict(backends._REASONS))
    return module.BACKEND


def snapshot(*arrays):
    """Bytes, dtype, shape, strides and flags of every ndarray among ``arrays``."""
    return [
        (a.tobytes(), a.dtype, a.shape, a.strides, a.flags.writeable, a.flags.c_contiguous, a.flags.f_contiguous)
        if isinstance(a, np.ndarray)
        else repr(a)
        for a in arrays
    ]


def good(output="softmax", n=6, seed=0):
    """A valid (sizes, W, X, y, sw) for a [3, 5, m] network."""
    rng = np.random.default_rng(seed)
    m = {"softmax": 3, "logistic": 1, "identity": 2}[output]
    sizes = (3, 5, m)
    X = rng.standard_normal((n, 3))
    if output == "softmax":
        y = rng.integers(0, 3, n)
    elif output == "logistic":
        y = rng.integers(0, 2, n)
    else:
        y = rng.standard_normal((n, 2))
    sw = rng.uniform(0.5, 2, n)
    W = rng.uniform(-1, 1, 5 * 3 + 5 + 5 * m + m)
    return sizes, W, X, y, sw


def _with(arr, index, value):
    arr = np.array(arr, dtype=np.float64)
    arr[index] = value
    return arr


# --------------------------------------------------------------------- bad data, on each call
# id -> (output, function (W, X, y, sw) -> bad (W, X, y, sw), exception type, argument named)
BAD_DATA = {
    "W-too-short": ("softmax", lambda W, X, y, sw: (W[:-1], X, y, sw), ValueError, "W"),
    "W-too-long": ("softmax", lambda W, X, y, sw: (np.append(W, 0.0), X, y, sw), ValueError, "W"),
    "W-2d": ("softmax", lambda W, X, y, sw: (W[None, :], X, y, sw), ValueError, "W"),
    "W-scalar": ("softmax", lambda W, X, y, sw: (1.0, X, y, sw), ValueError, "W"),
    "W-nan": ("softmax", lambda W, X, y, sw: (_with(W, 3, np.nan), X, y, sw), ValueError, "W"),
    "W-inf": ("softmax", lambda W, X, y, sw: (_with(W, -1, np.inf), X, y, sw), ValueError, "W"),
    "W-minus-inf": ("softmax", lambda W, X, y, sw: (_with(W, 0, -np.inf), X, y, sw), ValueError, "W"),
    "W-strings": ("softmax", lambda W, X, y, sw: (np.array(["a"] * W.size), X, y, sw), (TypeError, ValueError), "W"),
    "W-sparse": ("softmax", lambda W, X, y, sw: (sp.csr_matrix(W), X, y, sw), TypeError, "W"),
    "X-nan": ("softmax", lambda W, X, y, sw: (W, _with(X, (2, 1), np.nan), y, sw), ValueError, "X"),
    "X-inf": ("softmax", lambda W, X, y, sw: (W, _with(X, (0, 0), np.inf), y, sw), ValueError, "X"),
    "X-1d": ("softmax", lambda W, X, y, sw: (W, X[:, 0], y, sw), ValueError, "X"),
    "X-3d": ("softmax", lambda W, X, y, sw: (W, X[:, :, None], y, sw), ValueError, "X"),
    "X-empty": ("softmax", lambda W, X, y, sw: (W, X[:0], y[:0], None), ValueError, "X"),
    "X-no-columns": ("softmax", lambda W, X, y, sw: (W, X[:, :0], y, sw), ValueError, "X"),
    "X-too-few-columns": ("softmax", lambda W, X, y, sw: (W, X[:, :2], y, sw), ValueError, "X"),
    "X-too-many-columns": ("softmax", lambda W, X, y, sw: (W, np.c_[X, X], y, sw), ValueError, "X"),
    "X-strings": ("softmax", lambda W, X, y, sw: (W, X.astype(str).astype(object) + "x", y, sw),
                  (ValueError, TypeError), "X"),
    "X-complex": ("softmax", lambda W, X, y, sw: (W, X + 1j, y, sw), (ValueError, TypeError), "X"),
    "X-sparse": ("softmax", lambda W, X, y, sw: (W, sp.csr_matrix(X), y, sw), TypeError, "X"),
    "y-nan": ("identity", lambda W, X, y, sw: (W, X, _with(y, (1, 1), np.nan), sw), ValueError, "y"),
    "y-inf": ("identity", lambda W, X, y, sw: (W, X, _with(y, (0, 0), np.inf), sw), ValueError, "y"),
    "y-nan-labels": ("softmax", lambda W, X, y, sw: (W, X, _with(y, 0, np.nan), sw), ValueError, "y"),
    "y-too-short": ("softmax", lambda W, X, y, sw: (W, X, y[:-1], sw), ValueError, "y"),
    "y-too-long": ("softmax", lambda W, X, y, sw: (W, X, np.append(y, 0), sw), ValueError, "y"),
    "y-3d": ("identity", lambda W, X, y, sw: (W, X, y[:, :, None], sw), ValueError, "y"),
    "y-wrong-columns": ("identity", lambda W, X, y, sw: (W, X, y[:, :1], sw), ValueError, "y"),
    "y-plus-minus-one": ("logistic", lambda W, X, y, sw: (W, X, 2 * y - 1, sw), ValueError, "y"),
    "y-logistic-two": ("logistic", lambda W, X, y, sw: (W, X, _with(y, 0, 2.0), sw), ValueError, "y"),
    "y-logistic-proba-above-1": ("logistic", lambda W, X, y, sw: (W, X, _with(y, 0, 1.0001), sw), ValueError, "y"),
    "y-class-minus-one": ("softmax", lambda W, X, y, sw: (W, X, np.where(np.arange(len(y)) == 1, -1, y), sw),
                          ValueError, "y"),
    "y-class-K": ("softmax", lambda W, X, y, sw: (W, X, np.where(np.arange(len(y)) == 1, 3, y), sw), ValueError, "y"),
    "y-class-fraction": ("softmax", lambda W, X, y, sw: (W, X, _with(y, 2, 1.5), sw), ValueError, "y"),
    "y-rows-not-summing-to-1": ("softmax", lambda W, X, y, sw: (W, X, np.full((len(y), 3), 0.5), sw), ValueError, "y"),
    "y-strings": ("softmax", lambda W, X, y, sw: (W, X, y.astype(str), sw), (TypeError, ValueError), "y"),
    "y-complex": ("identity", lambda W, X, y, sw: (W, X, y + 1j, sw), (TypeError, ValueError), "y"),
    "sw-nan": ("softmax", lambda W, X, y, sw: (W, X, y, _with(sw, 0, np.nan)), ValueError, "sample_weight"),
    "sw-inf": ("softmax", lambda W, X, y, sw: (W, X, y, _with(sw, 0, np.inf)), ValueError, "sample_weight"),
    "sw-too-short": ("softmax", lambda W, X, y, sw: (W, X, y, sw[:-1]), ValueError, "sample_weight"),
    "sw-too-long": ("softmax", lambda W, X, y, sw: (W, X, y, np.append(sw, 1.0)), ValueError, "sample_weight"),
    "sw-negative": ("softmax", lambda W, X, y, sw: (W, X, y, _with(sw, 2, -0.1)), ValueError, "sample_weight"),
    "sw-all-zero": ("softmax", lambda W, X, y, sw: (W, X, y, np.zeros_like(sw)), ValueError, "sample_weight"),
    "sw-2d": ("softmax", lambda W, X, y, sw: (W, X, y, sw[:, None]), ValueError, "sample_weight"),
    "sw-strings": ("softmax", lambda W, X, y, sw: (W, X, y, sw.astype(str)), (TypeError, ValueError),
                   "sample_weight"),
}


def _names(arg):
    # the argument's name as a word: "W" must not be found inside "Weights", "y" not in "array"
    return re.compile(rf"(?<![A-Za-z_]){re.escape(arg)}(?![A-Za-z_])")


@pytest.mark.parametrize("how", ["loss_and_grad", "bind"])
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_is_refused_before_computing_and_not_modified(spy, case, how):
    output, spoil, exc, arg = BAD_DATA[case]
    sizes, W, X, y, sw = good(output)
    net = fastbp.Network(sizes, output=output, backend="spy")
    W, X, y, sw = spoil(W, X, y, sw)
    before = snapshot(W, X, y, sw)
    if how == "bind" and arg == "W":
        call = lambda: net.bind(X, y, sample_weight=sw)(W)  # noqa: E731
    elif how == "bind":
        call = lambda: net.bind(X, y, sample_weight=sw)  # noqa: E731
    else:
        call = lambda: net.loss_and_grad(W, X, y, sample_weight=sw)  # noqa: E731
    with pytest.raises(exc) as info:
        call()
    assert _names(arg).search(str(info.value)), f"message does not name {arg!r}: {info.value}"
    assert spy.calls == 0
    assert snapshot(W, X, y, sw) == before


@pytest.mark.parametrize("what", ["predict", "predict_proba"])
@pytest.mark.parametrize("case", ["W-too-short", "W-nan", "X-nan", "X-1d", "X-too-few-columns", "X-empty"])
def test_prediction_refuses_bad_input(case, what):
    output, spoil, exc, arg = BAD_DATA[case]
    sizes, W, X, y, sw = good(output)
    net = fastbp.Network(sizes, output=output)
    W, X, _, _ = spoil(W, X, y, sw)
    with pytest.raises(exc, match=_names(arg)):
        getattr(net, what)(W, X)


# -------------------------------------------------------------- bad construction arguments

ACTIVATION_CHOICES = ("logistic", "sigmoid", "tanh", "relu", "identity")
OUTPUT_CHOICES = ("logistic", "softmax", "identity", "exponential")

BAD_NETWORK = {
    "activation-unknown": (dict(activation="softplus"), ValueError, "activation", ACTIVATION_CHOICES),
    "activation-case": (dict(activation="ReLU"), ValueError, "activation", ACTIVATION_CHOICES),
    "activation-none": (dict(activation=None), TypeError, "activation", ()),
    "output-unknown": (dict(output="linear"), ValueError, "output", OUTPUT_CHOICES),
    "output-softmax-one-unit": (dict(layer_sizes=[3, 4, 1], output="softmax"), ValueError, "output", ()),
    "output-number": (dict(output=1), TypeError, "output", ()),
    "backend-unknown": (dict(backend="torch"), ValueError, "backend", ("auto", "numpy", "numba", "cython")),
    "backend-number": (dict(backend=1), TypeError, "backend", ()),
    "l2-negative": (dict(l2=-1e-3), ValueError, "l2", ()),
    "l2-nan": (dict(l2=float("nan")), ValueError, "l2", ()),
    "l2-inf": (dict(l2=float("inf")), ValueError, "l2", ()),
    "l2-string": (dict(l2="0.1"), TypeError, "l2", ()),
    "layer-sizes-one": (dict(layer_sizes=[3]), ValueError, "layer_sizes", ()),
    "layer-sizes-empty": (dict(layer_sizes=[]), ValueError, "layer_sizes", ()),
    "layer-sizes-zero": (dict(layer_sizes=[3, 0, 2]), ValueError, "layer_sizes", ()),
    "layer-sizes-negative": (dict(layer_sizes=[3, -4, 2]), ValueError, "layer_sizes", ()),
    "layer-sizes-float": (dict(layer_sizes=[3, 2.5, 2]), TypeError, "layer_sizes", ()),
    "layer-sizes-whole-float": (dict(layer_sizes=[3, 4.0, 2]), TypeError, "layer_sizes", ()),
    "layer-sizes-bool": (dict(layer_sizes=[3, True, 2]), TypeError, "layer_sizes", ()),
    "layer-sizes-string": (dict(layer_sizes="32"), TypeError, "layer_sizes", ()),
    "layer-sizes-int": (dict(layer_sizes=3), TypeError, "layer_sizes", ()),
    "layer-sizes-none": (dict(layer_sizes=None), TypeError, "layer_sizes", ()),
    "dtype-float16": (dict(dtype=np.float16), ValueError, "dtype", ()),
    "dtype-int": (dict(dtype=int), ValueError, "dtype", ()),
    "n-threads-zero": (dict(n_threads=0), ValueError, "n_threads", ()),
    "n-threads-float": (dict(n_threads=1.5), TypeError, "n_threads", ()),
}


@pytest.mark.parametrize("case", list(BAD_NETWORK))
def test_bad_network_arguments(case):
    kwargs, exc, arg, choices = BAD_NETWORK[case]
    kwargs = {"layer_sizes": [3, 4, 2], **kwargs}
    with pytest.raises(exc) as info:
        fastbp.Network(**kwargs)
    message = str(info.value)
    assert _names(arg).search(message), message
    for choice in choices:  # the message lists the choices
        assert repr(choice) in message or choice in message, (choice, message)


def test_every_backend_choice_is_listed_when_unknown():
    with pytest.raises(ValueError) as info:
        fastbp.Network([2, 1], backend="fortran")
    for name in backends.backend_names():
        assert name in str(info.value)


def test_unavailable_backend_says_why(monkeypatch):
    """A registered backend that cannot load raises a ValueError naming it and saying why."""
    monkeypatch.setattr(backends, "_MODULES", {**backends._MODULES, "broken": "fastbp.backends._no_such_module"})
    monkeypatch.setattr(backends, "_LOADED", dict(backends._LOADED))
    monkeypatch.setattr(backends, "_REASONS", dict(backends._REASONS))
    assert "broken" not in fastbp.available_backends()
    with pytest.raises(ValueError) as info:
        fastbp.Network([2, 3, 1], backend="broken")
    message = str(info.value)
    assert "broken" in message and "not available" in message
    assert "_no_such_module" in message  # the reason: the import that failed


_UNAVAILABLE = [b for b in ("numba", "cython") if b not in fastbp.available_backends()] or [
    pytest.param(None, marks=pytest.mark.skip(reason="numba and cython both load here; the message is checked "
                                                     "by test_unavailable_backend_says_why"))
]


@pytest.mark.parametrize("name", _UNAVAILABLE)
def test_real_unavailable_backends_say_why(name):
    with pytest.raises(ValueError, match=rf"{name}.*not available.*\S"):
        fastbp.Network([2, 3, 1], backend=name)


# ------------------------------------------------------ inputs untouched; layouts equivalent


def test_good_calls_modify_nothing(backend):
    sizes, W, X, y, sw = good("softmax", n=9)
    Xf = np.asfortranarray(X)
    Xro = X.copy()
    Xro.setflags(write=False)
    net = fastbp.Network(sizes, l2=0.1, backend=backend)
    for XX in (X, Xf, Xro, X[::2], X.astype(np.float32)):
        yy, ss = y[: len(XX)], sw[: len(XX)]
        before = snapshot(W, XX, yy, ss)
        net.loss_and_grad(W, XX, yy, sample_weight=ss)
        f = net.bind(XX, yy, sample_weight=ss)
        f(W)
        f.loss_and_grad(W)
        net.predict_proba(W, XX)
        net.predict(W, XX)
        assert snapshot(W, XX, yy, ss) == before
    # a read-only W is accepted as it is
    Wro = W.copy()
    Wro.setflags(write=False)
    assert net.loss_and_grad(Wro, X, y)[0] == net.loss_and_grad(W, X, y)[0]


@pytest.mark.parametrize("kind", ["fortran", "sliced", "reversed", "int64", "int32", "float32", "list", "readonly"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_X_layout_and_dtype_give_the_C_float64_result(backend, kind, dtype):
    rng = np.random.default_rng(4)
    if kind.startswith("int"):
        X = rng.integers(-3, 4, (11, 3)).astype(kind)
    elif kind == "float32":
        X = rng.standard_normal((11, 3)).astype(np.float32)
    else:
        X = rng.standard_normal((11, 3))
    y = rng.integers(0, 3, 11)
    sw = rng.uniform(0.5, 2, 11)
    if kind == "fortran":
        Xv = np.asfortranarray(X)
        assert not Xv.flags.c_contiguous
    elif kind == "sliced":
        big = np.zeros((22, 6))
        big[::2, ::2] = X
        Xv = big[::2, ::2]
        assert not Xv.flags.c_contiguous and not Xv.flags.f_contiguous
    elif kind == "reversed":
        Xv = X[::-1].copy()[::-1]
        assert Xv.strides[0] < 0
    elif kind == "list":
        Xv = X.tolist()
    elif kind == "readonly":
        Xv = X.copy()
        Xv.setflags(write=False)
    else:
        Xv = X
    Xc = np.ascontiguousarray(X, dtype=np.float64)
    net = fastbp.Network([3, 5, 3], activation="tanh", l2=0.01, backend=backend, dtype=dtype)
    W = net.init_weights(random_state=1)
    ref = net.loss_and_grad(W, Xc, y, sample_weight=sw)
    for got in (net.loss_and_grad(W, Xv, y, sample_weight=sw), net.bind(Xv, y, sample_weight=sw)(W)):
        assert got[0] == ref[0]
        np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(net.predict_proba(W, Xv), net.predict_proba(W, Xc))


@pytest.mark.parametrize(
    "output,forms",
    [
        ("softmax", lambda y: [y.astype(np.int32), y.astype(np.uint8), y.astype(np.float64), y.tolist(),
                               np.eye(3)[y], np.eye(3, dtype=bool)[y], np.repeat(y, 2)[::2]]),
        ("logistic", lambda y: [y.astype(bool), y.astype(np.float32), y[:, None], y.tolist(), np.repeat(y, 2)[::2]]),
    ],
)
def test_target_forms_agree(backend, output, forms):
    """Integer labels of any dtype, float labels, one-hot rows, bool, lists and strided y agree."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((10, 3))
    m = 3 if output == "softmax" else 1
    y = rng.integers(0, m if m > 1 else 2, 10)
    net = fastbp.Network([3, 4, m], output=output, backend=backend)
    W = net.init_weights(random_state=2)
    ref = net.loss_and_grad(W, X, y)
    for yy in forms(y):
        got = net.loss_and_grad(W, X, yy)
        assert got[0] == ref[0]
        np.testing.assert_array_equal(got[1], ref[1])


def test_sample_weight_forms_agree(backend):
    rng = np.random.default_rng(6)
    X, y = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    sw = rng.integers(1, 5, 8)
    net = fastbp.Network([3, 4, 3], backend=backend)
    W = net.init_weights(random_state=0)
    ref = net.loss_and_grad(W, X, y, sample_weight=sw.astype(np.float64))
    for s in (sw, sw.astype(np.int32), sw.tolist(), np.repeat(sw, 2)[::2], sw.astype(np.float32)):
        got = net.loss_and_grad(W, X, y, sample_weight=s)
        assert got[0] == ref[0]
        np.testing.assert_array_equal(got[1], ref[1])
    # all-ones weights are no weights
    ones = net.loss_and_grad(W, X, y, sample_weight=np.ones(8))
    none = net.loss_and_grad(W, X, y)
    np.testing.assert_allclose(ones[0], none[0], rtol=1e-14)
    np.testing.assert_allclose(ones[1], none[1], rtol=1e-13, atol=1e-16)


# ------------------------------------------- complex input, float32 overflow, extreme weights


def test_complex_W_is_refused():
    sizes, W, X, y, _ = good()
    net = fastbp.Network(sizes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=_names("W")):
            net.loss_and_grad(W + 1j, X, y)


@pytest.mark.parametrize("scale", [5e307, 1e-310])
def test_sample_weights_are_scale_invariant_at_the_extremes(backend, scale):
    """A weighted mean does not change when every weight is multiplied by the same number: the
    scaled weights are finite, non-negative and not all zero, so they must be taken and agree."""
    sizes, W, X, y, sw = good()
    sw = sw / sw.max()
    net = fastbp.Network(sizes, l2=0.01, backend=backend)
    ref_loss, ref_grad = net.loss_and_grad(W, X, y, sample_weight=sw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, grad = net.loss_and_grad(W, X, y, sample_weight=sw * scale)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-15)


def test_float32_network_refuses_X_beyond_float32_range():
    sizes, W, X, y, _ = good()
    net = fastbp.Network(sizes, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=_names("X")):
            net.loss_and_grad(W, X * 1e300, y)


# ------------------------------------------------------------------------ random junk input

junk_arrays = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint8, bool, np.complex128, "U3", object]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=7),
    elements=None,
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.one_of(st.floats(), st.integers(), st.none()), max_size=8),
    st.lists(st.lists(st.floats(), min_size=3, max_size=3), max_size=8),
    junk_arrays,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), output=st.sampled_from(["softmax", "logistic", "identity"]))
def test_random_junk_raises_only_value_or_type_errors(data, output):
    sizes, W, X, y, sw = good(output)
    args = [W, X, y, sw]
    spoiled = data.draw(st.sets(st.integers(0, 3), min_size=1), label="spoiled")
    for i in spoiled:
        args[i] = data.draw(junk, label=["W", "X", "y", "sample_weight"][i])
    net = fastbp.Network(sizes, output=output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a numpy cast warning on junk is fine; an exception is judged below
        try:
            loss, grad = net.loss_and_grad(*args)
        except (ValueError, TypeError):
            return
    # accepted: then the answer is well-formed (finite-but-huge junk may overflow: not asserted)
    assert type(loss) is float
    assert grad.dtype == np.float64 and grad.shape == (net.n_params,)


@settings(max_examples=150, deadline=None)
@given(
    layer_sizes=st.one_of(junk, st.lists(st.one_of(st.integers(-2, 4), st.floats(), st.booleans()), max_size=4)),
    activation=st.one_of(st.sampled_from(ACTIVATION_CHOICES), junk),
    output=st.one_of(st.sampled_from((None, *OUTPUT_CHOICES)), junk),
    l2=st.one_of(st.floats(), junk),
)
def test_random_network_arguments_raise_only_value_or_type_errors(layer_sizes, activation, output, l2):
    try:
        fastbp.Network(layer_sizes, activation=activation, output=output, l2=l2)
    except (ValueError, TypeError):
        pass
