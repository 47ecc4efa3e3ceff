"""Every example runs (fast mode, headless), writes its figure (or summary) and prints what the lab asks
for; every example's own argument parser offers ``--out`` and ``--fast``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image

import fastbp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name, tmp_path, fast_flag=True):
    env = dict(os.environ)
    cmd = [sys.executable, str(EXAMPLES / name), "--out", str(tmp_path)]
    if fast_flag:
        cmd.append("--fast")
    else:
        env["FASTBP_EXAMPLES_FAST"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc.stdout


def check_png(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200
    assert image[..., :3].std() > 0.05  # not a blank canvas


def percent(pattern, text):
    return float(re.search(pattern, text).group(1))


def test_01_perceptron(tmp_path):
    out = run_example("01_perceptron.py", tmp_path, fast_flag=False)  # fast mode from the env var
    assert "training accuracy: 100.0% (misclassified: 0)" in out
    check_png(tmp_path / "01_perceptron.png")


def test_02_xor(tmp_path):
    out = run_example("02_xor.py", tmp_path)
    rows = dict(re.findall(r"^(\w+ +\([\d, ]+\)) +[\d.]+ +([\d.]+)%", out, flags=re.M))
    rows = {" ".join(k.split()): float(v) for k, v in rows.items()}
    # a linear hidden layer is logistic regression: no line gets more than 3 of XOR's 4 clusters
    for key in ("identity (1,)", "identity (2,)", "identity (10, 10)"):
        assert rows[key] < 80.0, (key, rows)
    # one non-linear unit is still a line; two layers of ten learn XOR
    assert rows["relu (1,)"] < 80.0 and rows["logistic (1,)"] < 80.0
    assert rows["relu (10, 10)"] > 95.0 and rows["logistic (10, 10)"] > 95.0
    assert re.search(r"SGD loss_ = [\d.]+ after \d+ epochs, L-BFGS loss_ = [\d.]+", out)
    # fastbp's own SGD: at learning rate 0.1, 4 relu units learn XOR
    assert percent(r"learning rate 0.1 +: loss_ [\d.]+ after \d+ epochs, accuracy ([\d.]+)%", out) > 95.0
    assert "How many units and layers, and why?" in out
    check_png(tmp_path / "02_xor.png")


def test_03_best_network(tmp_path):
    out = run_example("03_best_network.py", tmp_path)
    assert "GridSearchCV" in out
    assert percent(r"best validation error: ([\d.]+)%", out) < 15.0
    assert percent(r"test error: ([\d.]+)%", out) < 15.0
    for features in ("x, y", "+ sin x, sin y", "+ monomials ≤ 3", "+ sin, monomials"):
        assert re.search(rf"^    {re.escape(features)} +[\d.]+% +[\d.]+%$", out, flags=re.M), features
    check_png(tmp_path / "03_best_network.png")


def test_04_one_hidden_layer(tmp_path):
    out = run_example("04_one_hidden_layer.py", tmp_path)
    # the example asserts the agreement itself; here: every step was reported
    for step in ("4a", "4b", "4c-e", "bonus"):
        assert re.search(rf"^{step}\b", out, flags=re.M), step
    deltas = [float(v) for v in re.findall(r"\|Δloss\| = ([\d.e+-]+)", out)]
    assert len(deltas) == 4 and max(deltas) < 1e-12
    check_png(tmp_path / "04_one_hidden_layer.png")


def test_05_deep_network(tmp_path):
    out = run_example("05_deep_network.py", tmp_path)
    for backend in fastbp.available_backends():
        assert re.search(rf"^    {backend} +[\d.]+ +[\d.e+-]+  yes$", out, flags=re.M), backend
        assert re.search(rf"^    {backend} +fit time +[\d.]+ s", out, flags=re.M), backend
    check_png(tmp_path / "05_deep_network.png")


def test_06_multiclass(tmp_path):
    out = run_example("06_multiclass.py", tmp_path)
    assert "output 'softmax'" in out
    assert percent(r"test accuracy ([\d.]+)%", out) > 85.0
    assert len(re.findall(r"^    class \d", out, flags=re.M)) == 3
    check_png(tmp_path / "06_multiclass.png")


def test_07_second_order(tmp_path):
    out = run_example("07_second_order.py", tmp_path)
    initial = {m[0]: float(m[1]) for m in re.findall(r"^(\w+) \(.*initial loss ([\d.e+-]+)\)$", out, flags=re.M)}
    assert set(initial) == {"moons", "spirals", "fitnet"}
    rows = re.findall(r"^ +(L-BFGS-B|trust-krylov|Newton-CG|trust-exact|lm) +([\d.e+-]+) +(\d+) ", out, flags=re.M)
    methods = [m for m, _, _ in rows]
    assert methods == ["L-BFGS-B", "trust-krylov", "Newton-CG", "trust-exact"] * 2 + ["L-BFGS-B", "trust-krylov", "lm"]
    finals = [float(loss) for _, loss, _ in rows]
    starts = [initial["moons"]] * 4 + [initial["spirals"]] * 4 + [initial["fitnet"]] * 3
    for method, final, start in zip(methods, finals, starts):
        assert final < start, (method, final, start)  # every method made progress, even in --fast
    check_png(tmp_path / "07_second_order.png")


HELP_SCRIPT = r"""
import contextlib, io, json, runpy, sys
results = {}
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out, code = io.StringIO(), None
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as exc:
            code = exc.code
    results[path] = [code, out.getvalue()]
print(json.dumps(results))
"""


def test_every_example_takes_out_and_fast():
    """Every example's own argument parser, run (``--help``, in one process): it exits cleanly and
    offers ``--out`` and ``--fast``. The numbered ones import ``_common`` from their folder;
    distributed.py, named like the ``distributed`` package, takes its folder off the path: last."""
    paths = sorted(str(p) for p in EXAMPLES.glob("[0-9]*.py")) + [str(EXAMPLES / "distributed.py")]
    assert len(paths) == 8
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *paths], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in paths:
        code, usage = results[path]
        assert code == 0 and usage.startswith("usage:"), (path, code, usage)
        assert "--out" in usage and "--fast" in usage, (path, usage)


def test_distributed_example(tmp_path):
    """examples/distributed.py, fast mode: a Dask fit on a loopback cluster that checks itself
    against the local objective and writes its summary."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / "distributed.py"), "--fast", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "distributed.json").read_text())
    assert summary["n_samples"] == 10_000 and summary["n_partitions"] == 4
    assert abs(summary["loss"] - summary["local_loss"]) <= 1e-12 * summary["local_loss"]
    assert summary["loss"] < 0.3 and summary["accuracy"] > 0.85, summary
