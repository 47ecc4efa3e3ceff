"""Second order: one Hessian-vector product, one dense Hessian, and the memory of a hessp call.

* ``test_hessp``: ``f.hessp(W0, V)`` per available backend next to one ``f(W0)`` (loss and
  gradient) of the same backend, and JAX's ``jit(jvp(grad(loss)))`` in float64 when jax imports,
  on seed4layer, multiclass and medium: one group per case (``"<case>: hessp"``), so the ratio
  hessp / loss_and_grad of each backend and fastbp / JAX read off directly.
* ``test_hess``: ``f.hess(W0)`` against ``jit(jax.hessian(loss))`` on seed4layer and multiclass
  (``"<case>: hess"``).
* ``test_hessp_memory``: the extra memory of one hessp call on [20, 64, 64, 1] at n = 10 000
  and 40 000 in a fresh process (as ``bench_memory.py`` measures the gradient's), with the
  check that it does not grow with n (a full-batch pass would need 4x).

Every result is checked against the NumPy backend's before it is timed, so a peer computing
something else fails instead of looking fast. ``extra_info`` holds ``impl``, ``op`` and ``case``.
"""

import functools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp

HESSP_CASES = ("seed4layer", "multiclass", "medium")
HESS_CASES = ("seed4layer", "multiclass")
SETTLE_S = 0.3  # as bench_objective: let the previous benchmark's thread pools fall asleep
WARMUP_S = 0.2  # then untimed calls, so the steady state is what is timed
RTOL = 1e-8


def timed(benchmark, fn, *args):
    """Time ``fn(*args)`` after a warm-up; returns the first (untimed, checked) result. Under
    ``--benchmark-disable`` (CI) the one call the fixture makes is the one checked."""
    if benchmark.disabled:
        return benchmark(fn, *args)
    result = fn(*args)
    time.sleep(SETTLE_S)
    start = time.perf_counter()
    while time.perf_counter() - start < WARMUP_S:
        fn(*args)
    benchmark(fn, *args)
    return result


@functools.cache
def direction(n_params):
    V = np.random.default_rng(1).standard_normal(n_params)
    V.setflags(write=False)
    return V


@functools.cache
def reference(case_data, case_name, op):
    """The NumPy backend's hessp(W0, V) or hess(W0); ``case_data`` is the ``bench`` fixture's."""
    case, X, y, W0 = case_data(case_name)
    f = case.network(backend="numpy").bind(X, y)
    return f.hessp(W0, direction(W0.size)) if op == "hessp" else f.hess(W0)


def check(bench, result, case_name, op):
    ref = reference(bench.case_data, case_name, op)
    result = np.asarray(result)
    assert np.linalg.norm(result - ref) <= RTOL * np.linalg.norm(ref), (case_name, op)


@pytest.mark.parametrize(
    "impl,op",
    [(b, op) for b in fastbp.available_backends() for op in ("hessp", "loss_and_grad")] + [("jax", "hessp")],
)
@pytest.mark.parametrize("case_name", HESSP_CASES)
def test_hessp(benchmark, bench, case_name, impl, op):
    case, X, y, W0 = bench.case_data(case_name)
    V = direction(W0.size)
    benchmark.group = f"{case_name}: hessp"
    benchmark.extra_info.update(impl=impl, op=op, case=case_name, n_samples=X.shape[0],
                                layer_sizes=list(case.layer_sizes))
    if impl == "jax":  # (its loss and gradient are timed in bench_objective.py)
        jax, loss_fn = bench.jax_loss(case, X, y)
        hvp = jax.jit(lambda W, V: jax.jvp(jax.grad(loss_fn), (W,), (V,))[1])
        Wj, Vj = jax.numpy.asarray(W0), jax.numpy.asarray(V)
        result = timed(benchmark, lambda: hvp(Wj, Vj).block_until_ready())
        check(bench, result, case_name, "hessp")
        return
    f = case.network(backend=impl).bind(X, y)
    if op == "hessp":
        check(bench, timed(benchmark, f.hessp, W0, V), case_name, "hessp")
    else:
        loss, grad = timed(benchmark, f, W0)
        bench.check_same(case_name, loss, grad)


@pytest.mark.parametrize("impl", [*fastbp.available_backends(), "jax"])
@pytest.mark.parametrize("case_name", HESS_CASES)
def test_hess(benchmark, bench, case_name, impl):
    case, X, y, W0 = bench.case_data(case_name)
    benchmark.group = f"{case_name}: hess"
    benchmark.extra_info.update(impl=impl, op="hess", case=case_name, n_samples=X.shape[0],
                                layer_sizes=list(case.layer_sizes))
    if impl == "jax":
        jax, loss_fn = bench.jax_loss(case, X, y)
        hessian = jax.jit(jax.hessian(loss_fn))
        Wj = jax.numpy.asarray(W0)
        result = timed(benchmark, lambda: hessian(Wj).block_until_ready())
    else:
        f = case.network(backend=impl).bind(X, y)
        result = timed(benchmark, f.hess, W0)
    check(bench, result, case_name, "hess")


# ------------------------------------------------------------------------------------ memory
MEMORY_SIZES = (10_000, 40_000)

SCRIPT = r"""
import gc, json, sys
import numpy as np
import fastbp
from fastbp.cases import CASES, make_case_data

def status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out

backend, n = sys.argv[1], int(sys.argv[2])
case = CASES["medium"]
X, y = make_case_data(case, n_samples=n)
net = case.network(backend=backend)
W = net.init_weights(random_state=0)
V = np.random.default_rng(1).standard_normal(net.n_params)
# warm-up on a tiny network of the same kind (compilation, thread pools), not this one's buffers
tiny = fastbp.Network([20, 3, 1], activation=case.activation, output=case.output, backend=backend)
tiny.bind(X[:64], y[:64]).hessp(tiny.init_weights(random_state=0), np.ones(tiny.n_params))
f = net.bind(X, y)
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")                        # VmHWM := VmRSS
before = status()["VmRSS"]
hv = f.hessp(W, V)
peak = status()["VmHWM"]
print(json.dumps({"extra_bytes": peak - before, "norm": float(np.linalg.norm(hv))}))
"""


def _clear_refs_works():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _clear_refs_works(),
                    reason="needs Linux's /proc/self/clear_refs to reset the peak RSS")
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_hessp_memory(benchmark, backend):
    def run(n):
        # one BLAS thread: the NumPy passes of a busy machine's oversubscribed OpenBLAS took seconds
        env = {**os.environ, "PYTHONWARNINGS": "ignore", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, backend, str(n)], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.group = "memory: one hessp call on [20, 64, 64, 1]"
    results = benchmark.pedantic(lambda: {n: run(n) for n in MEMORY_SIZES}, rounds=1, iterations=1)
    extra_mib = {n: r["extra_bytes"] / 2**20 for n, r in results.items()}
    benchmark.extra_info.update(impl=backend, op="hessp", extra_mib={str(n): round(m, 2) for n, m in extra_mib.items()})
    assert all(np.isfinite(r["norm"]) and r["norm"] > 0 for r in results.values())
    # 4x the samples, at most 25 % (+ 8 MiB of allocator slack) more memory
    smallest, largest = extra_mib[MEMORY_SIZES[0]], extra_mib[MEMORY_SIZES[-1]]
    assert largest <= 1.25 * smallest + 8, extra_mib
