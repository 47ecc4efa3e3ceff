"""Extra memory of one bound call beyond X, y and W, per backend, on [20, 64, 64, 1] (``medium``).

Measured in a fresh subprocess through the peak resident set size (Linux): after a warm-up call of
a tiny network of the same kind (JIT compilation and thread pools are not what we measure, and a
warm-up of this network would leave its work buffers cached by malloc), write "5" to
/proc/self/clear_refs to reset VmHWM to the current RSS, make one call on all n samples, and
report VmHWM − VmRSS-before. The NumPy backend keeps every layer's activations (memory grows with
n); a streaming kernel should not. The result goes into ``benchmark.extra_info["extra_mib"]``
(``benchmarks/report.py`` shows it); the time recorded is that of the whole subprocess.
"""

import json
import os
import subprocess
import sys

import pytest

import fastbp

SIZES = (25_000, 100_000, 400_000)

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
                out[key] = int(value.split()[0]) * 1024  # kB -> bytes
    return out

backend, n = sys.argv[1], int(sys.argv[2])
case = CASES["medium"]
X, y = make_case_data(case, n_samples=n)
net = case.network(backend=backend)
W = net.init_weights(random_state=0)
# warm-up on a tiny network of the same kind: compiles (Numba specialises on types, not sizes) and
# starts thread pools, without leaving this network's work buffers cached in the allocator
tiny = fastbp.Network([20, 3, 1], activation=case.activation, output=case.output, backend=backend)
tiny.bind(X[:64], y[:64])(tiny.init_weights(random_state=0))
f = net.bind(X, y)
gc.collect()
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")                        # VmHWM := VmRSS
before = status()["VmRSS"]
loss, grad = f(W)
peak = status()["VmHWM"]
print(json.dumps({"extra_bytes": peak - before, "data_bytes": X.nbytes + y.nbytes + W.nbytes,
                  "loss": loss}))
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
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("backend", fastbp.available_backends())
def test_memory_of_one_call(benchmark, backend, n):
    def run():
        proc = subprocess.run([sys.executable, "-c", SCRIPT, backend, str(n)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    benchmark.group = "memory: one call on [20, 64, 64, 1]"
    result = benchmark.pedantic(run, rounds=1, iterations=1)
    extra_mib = result["extra_bytes"] / 2**20
    benchmark.extra_info.update(impl=backend, n_samples=n, extra_mib=round(extra_mib, 2),
                                data_mib=round(result["data_bytes"] / 2**20, 2))
    assert extra_mib >= 0
