"""Input checks for Network: every bad input raises before anything is computed.

Each function returns a new or verified array in the form the kernels expect, never modifying
what the user passed. X goes through scikit-learn's ``check_array``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from sklearn.utils.validation import check_array

#: Probability rows of softmax targets must sum to 1 within this tolerance.
ROW_SUM_TOL = 1e-6


def check_X(X, layout):
    """X as a C-contiguous 2-D array in the layout's dtype, finite, with n_inputs columns."""
    if sp.issparse(X):
        raise TypeError(
            "X must be a dense array; Network does not take sparse matrices "
            "(call X.toarray(), or use fastbp.MLPClassifier, which densifies per fit)"
        )
    try:
        X = check_array(
            X, dtype=[np.float64, np.float32], order="C", ensure_all_finite=True, input_name="X"
        )
    except ValueError as exc:
        raise ValueError(f"X: {exc}") from None
    if X.shape[1] != layout.n_inputs:
        raise ValueError(
            f"X has {X.shape[1]} columns but the network has {layout.n_inputs} inputs "
            f"(layer_sizes[0])"
        )
    return _cast_finite(X, layout.dtype, "X")


def _cast_finite(arr, dtype, name):
    """``arr`` as C-contiguous ``dtype``; an error when a finite float64 overflows float32."""
    out = np.ascontiguousarray(arr, dtype=dtype)
    if out.dtype != arr.dtype and not np.isfinite(out).all():
        raise ValueError(f"{name} holds values beyond the range of {np.dtype(dtype).name}")
    return out


def _as_numeric(y, name):
    if sp.issparse(y):
        raise TypeError(f"{name} must be a dense array, not a sparse matrix")
    try:
        arr = np.asarray(y)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} must be an array of numbers: {exc}") from None
    if arr.dtype == bool:
        arr = arr.astype(np.float64)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def check_targets(y, layout, n_samples):
    """The targets encoded as a C-contiguous (n, n_outputs) array in the layout's dtype."""
    y = _as_numeric(y, "y")
    m = layout.n_outputs
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
    if y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} samples but X has {n_samples}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity")

    if layout.output == "softmax" and y.ndim == 1:
        if y.dtype.kind == "f" and not (y == np.round(y)).all():
            raise ValueError(f"y: softmax class labels must be integers in [0, {m}), got non-integer values")
        if y.size and (y.min() < 0 or y.max() >= m):
            raise ValueError(
                f"y: class labels must be integers in [0, {m}) for {m} softmax outputs; "
                f"got values from {y.min()} to {y.max()}"
            )
        T = np.zeros((n_samples, m), dtype=layout.dtype)
        T[np.arange(n_samples), y.astype(np.intp)] = 1
        return T

    if y.ndim == 1:
        if m != 1:
            raise ValueError(f"y must have shape (n_samples, {m}) for {m} {layout.output} outputs, got {y.shape}")
        y = y[:, None]
    elif y.shape[1] != m:
        raise ValueError(f"y must have {m} columns (one per output unit), got shape {y.shape}")

    if layout.output in ("logistic", "softmax"):
        lo, hi = (y.min(), y.max()) if y.size else (0, 0)
        if lo < 0 or hi > 1:
            hint = " (±1 labels? logistic outputs take 0/1)" if lo == -1 else ""
            raise ValueError(
                f"y: {layout.output} targets must lie in [0, 1], got values from {lo} to {hi}{hint}"
            )
        if layout.output == "softmax":
            rows = y.sum(axis=1, dtype=np.float64)
            if y.size and np.abs(rows - 1).max() > ROW_SUM_TOL:
                raise ValueError(
                    "y: softmax targets given as rows must be one-hot or probability rows summing to 1"
                )
    elif layout.output == "exponential" and y.size and y.min() < 0:
        raise ValueError(
            "y: exponential (Poisson) targets must be non-negative (counts or rates), "
            f"got a minimum of {y.min()}"
        )
    return _cast_finite(y, layout.dtype, "y")


def check_sample_weight(sample_weight, n_samples):
    """None, or float64 (n,) non-negative finite weights that are not all zero."""
    if sample_weight is None:
        return None
    sw = _as_numeric(sample_weight, "sample_weight")
    if sw.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D, got shape {sw.shape}")
    if sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight has {sw.shape[0]} entries but X has {n_samples} samples")
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (sw < 0).any():
        raise ValueError("sample_weight must be non-negative")
    if not sw.any():
        raise ValueError("sample_weight must not be all zero")
    return sw


def rescale_sample_weight(sw):
    """``sw`` times a power of two that puts its largest entry in [0.5, 1) (a new array).

    The loss is a weighted mean, unchanged by scaling every weight; this scaling is exact, and
    afterwards Σ weights can neither overflow (weights near the float64 maximum) nor lose
    precision in subnormals (weights near zero).
    """
    _, exponent = np.frexp(sw.max())
    return np.ldexp(sw, -exponent)


_DOT_CHECK_MAX = 8192


def check_weights(W, n_params, name="W"):
    """W as a float64 C-contiguous (n_params,) array of finite numbers (no copy when it is one).

    ``name`` is the argument named in errors: ``"V"`` for the direction of a Hessian-vector or
    Gauss-Newton product, which is checked exactly as W is.
    """
    if type(W) is not np.ndarray or W.dtype != np.float64 or not W.flags.c_contiguous:
        if sp.issparse(W):
            raise TypeError(f"{name} must be a dense 1-D array")
        try:
            W = np.asarray(W)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 1-D array of real numbers: {exc}") from None
        if W.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a 1-D array of real numbers, got dtype {W.dtype}")
        W = np.ascontiguousarray(W, dtype=np.float64)
    if W.ndim != 1 or W.shape[0] != n_params:
        raise ValueError(f"{name} must be 1-D with n_params = {n_params} entries, got shape {W.shape}")
    # a finite sum proves every entry finite; only an inf/NaN (or an overflow) takes the slow check.
    # Small W: the dot product W·W (one BLAS call, a third of the cost of a numpy reduction on
    # the lab's networks; single-threaded in OpenBLAS up to 10 000 entries), else the sum.
    total = W.dot(W) if W.shape[0] <= _DOT_CHECK_MAX else W.sum()
    if not math.isfinite(total) and not np.isfinite(W).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return W


def check_n_threads(n_threads):
    """A positive int; None means every core this process may use."""
    if n_threads is None:
        import os

        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(n_threads, (bool, np.bool_)) or not isinstance(n_threads, (int, np.integer)):
        raise TypeError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    return int(n_threads)


def check_l2(l2):
    """A finite non-negative float."""
    if isinstance(l2, (bool, np.bool_)) or not isinstance(l2, (int, float, np.integer, np.floating)):
        raise TypeError(f"l2 must be a non-negative number, got {l2!r}")
    l2 = float(l2)
    if not math.isfinite(l2) or l2 < 0:
        raise ValueError(f"l2 must be a finite non-negative number, got {l2!r}")
    return l2
