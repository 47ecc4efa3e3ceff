"""Saturated networks: one objective call with the case weights scaled by 10, 100 and 1000.

Scaled weights make confident sigmoids and softmax outputs, as late in training: tiny
probabilities and deltas whose products fall below the smallest normal number, which cost many
cores a microcode assist per operation unless the kernels flush them to zero
(``src_kernels/fb_fpenv.h``). Each case and dtype is one group (``saturation: <case> <dtype>``)
holding every compiled backend unscaled (``impl`` the backend's name) and scaled (``impl``
``"<backend> W×<scale>"``, ``ratio_to`` the unscaled one, ``extra_info["scale"]``), so a scaled
call's slowdown against the unscaled one reads off the group (and off a saved run's ratio): it
should stay under 1.25x. ``large`` runs on 8 000 samples here. ``python benchmarks/saturation.py`` prints the same
ratios measured call by call, interleaved (steadier on a shared machine).
"""

import numpy as np
import pytest
from bench_objective import SETTLE_S, WARMUP_S

import fastbp
from fastbp.cases import CASES, make_case_data

SCALES = (1, 10, 100, 1000)
LARGE_N = 8000
COMPILED = [b for b in fastbp.available_backends() if b != "numpy"]
#: against the NumPy backend in the same dtype; float32 tanh at W x 1000 loses digits in 1 - z²
RTOL = {"float64": 1e-8, "float32": 1e-2}

_data = {}


def saturated_case(case_name, dtype, scale):
    """``(case, X, y, W)``: the case's data (large: LARGE_N samples) and its scaled W0, with the
    NumPy backend's result at that W (computed once)."""
    key = (case_name, dtype.name)
    if key not in _data:
        case = CASES[case_name]
        X, y = make_case_data(case, n_samples=LARGE_N if case_name == "large" else None)
        _data[key] = (case, X, y, case.network(backend="numpy").init_weights(random_state=0), {})
    case, X, y, W0, refs = _data[key]
    W = W0 * scale
    if scale not in refs:
        refs[scale] = case.network(backend="numpy", dtype=dtype).loss_and_grad(W, X, y)
    return case, X, y, W, refs[scale]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("impl", COMPILED)
@pytest.mark.parametrize("case_name", list(CASES))
def test_saturated(benchmark, case_name, impl, dtype, scale):
    import time

    dtype = np.dtype(dtype)
    case, X, y, W, (ref_loss, ref_grad) = saturated_case(case_name, dtype, scale)
    f = case.network(backend=impl, dtype=dtype).bind(X, y)
    benchmark.group = f"saturation: {case_name} {dtype.name}"
    benchmark.extra_info.update(impl=impl if scale == 1 else f"{impl} W×{scale}", backend=impl,
                                ratio_to=[] if scale == 1 else [impl], dtype=dtype.name, case=case_name,
                                n_samples=X.shape[0], layer_sizes=list(case.layer_sizes), scale=scale)
    if benchmark.disabled:  # CI: the one call is the one checked
        loss, grad = benchmark(f, W)
    else:  # as bench_objective.run_checked: warm up, let other pools sleep, settle, time
        loss, grad = f(W)
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        while time.perf_counter() - start < WARMUP_S:
            f(W)
        benchmark(f, W)
    rtol = RTOL[dtype.name]
    assert abs(loss - ref_loss) <= rtol * abs(ref_loss), (loss, ref_loss)
    assert np.linalg.norm(grad - ref_grad) <= rtol * np.linalg.norm(ref_grad)
