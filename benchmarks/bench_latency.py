"""First-call latency per backend, in a fresh process: import, first and second call (seed4layer).

``cold``: a new, empty NUMBA_CACHE_DIR, so a Numba backend compiles from scratch; ``warm``: the
cache a previous process filled. Cython and NumPy have nothing to compile, so their cold and warm
should agree. Recorded in ``benchmark.extra_info`` (import_s, first_call_s, second_call_s,
total_s); ``benchmarks/report.py`` shows them. The time pytest-benchmark records is that of the
whole subprocess, interpreter start included.
"""

import json
import os
import subprocess
import sys

import pytest

import fastbp

SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import fastbp
from fastbp.cases import CASES, make_case_data
t1 = time.perf_counter()
case = CASES["seed4layer"]
X, y = make_case_data(case)
net = case.network(backend=sys.argv[1])
W = net.init_weights(random_state=0)
t2 = time.perf_counter()
f = net.bind(X, y)
f(W)
t3 = time.perf_counter()
f(W)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2, "second_call_s": t4 - t3,
                  "total_s": (t1 - t0) + (t3 - t2)}))
"""


def _run(backend, cache_dir):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache_dirs(tmp_path_factory):
    """One NUMBA_CACHE_DIR per backend, shared by its cold and warm runs (cold runs first)."""
    return {}


@pytest.mark.parametrize("mode", ["cold", "warm"])
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_first_call_latency(benchmark, tmp_path_factory, cache_dirs, backend, mode):
    if backend not in cache_dirs:
        cache_dirs[backend] = tmp_path_factory.mktemp(f"numba-cache-{backend}")
        if mode == "warm":
            _run(backend, cache_dirs[backend])  # the cold run was deselected: fill the cache first
    cache = cache_dirs[backend]
    benchmark.group = "latency: fresh process, seed4layer"
    result = benchmark.pedantic(_run, args=(backend, cache), rounds=1, iterations=1)
    benchmark.extra_info.update(impl=backend, mode=mode, **{k: round(v, 4) for k, v in result.items()})
    assert result["first_call_s"] > 0
