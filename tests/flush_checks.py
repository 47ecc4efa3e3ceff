"""The check both compiled backends' flush-to-zero tests share (``test_flush.py``, ``test_numba_flush.py``)."""

import numpy as np

from fastbp.cases import CASES, make_case_data


def check_flush_changes_only_below_tiny(backend, set_flush_subnormals, case_name, dtype):
    """A bound objective of ``backend`` (two threads) with subnormals flushed (the setting on entry,
    restored on return) against the same call with ``set_flush_subnormals(False)``: the same bits
    at fresh weights, and at saturated ones (W × 10, × 1000) differences only of the size of the
    dropped subnormal terms; each call deterministic."""
    case = CASES[case_name]
    X, y = make_case_data(case, n_samples=600)
    net = case.network(backend=backend, dtype=dtype, n_threads=2)
    f = net.bind(X, y)
    W0 = net.init_weights(random_state=0)
    tiny = np.finfo(dtype).tiny
    for scale in (1, 10, 1000):  # unsaturated, then saturated (subnormal deltas and products)
        W = W0 * scale
        on = f(W)
        set_flush_subnormals(False)
        off = f(W)
        set_flush_subnormals(True)
        if scale == 1:  # nothing comes near the smallest normal: the very same bits
            assert on[0] == off[0] and np.array_equal(on[1], off[1])
        # every difference is a sum of dropped terms below `tiny`, times weights and 1/n
        assert abs(on[0] - off[0]) <= 1e-12 * abs(off[0]) + 1e6 * tiny
        assert np.max(np.abs(on[1] - off[1])) <= 1e6 * tiny
        again = f(W)
        assert again[0] == on[0] and np.array_equal(again[1], on[1])  # deterministic
