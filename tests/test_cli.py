"""The ``fastbp`` command line: fit, bench, datasets, and errors as one line with exit status 2."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

import fastbp
from fastbp import backends, datasets
from fastbp.cases import CASES
from fastbp.cli import main

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def accuracy_of(out):
    return float(re.search(r"accuracy\s+([\d.]+) %", out).group(1))


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastbp: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# -------------------------------------------------------------------------------------------- fit
def test_fit_bundled_dataset_plot_and_save(capsys, tmp_path):
    png, npz = tmp_path / "b.png", tmp_path / "w.npz"
    rc, out, err = run(capsys, "fit", "moons", "--hidden", "8", "--max-iter", "300", "--plot", png, "--save", npz)
    assert rc == 0, err
    assert "200 samples, 2 features, 2 classes" in out
    assert "[2, 8, 1]" in out
    assert "fit: iteration" in err  # progress
    assert re.search(r"time\s+[\d.]+ s", out)
    assert accuracy_of(out) >= 95.0  # the half-moons are easy for 8 sigmoid units
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

    # the saved weights reproduce the printed accuracy through a fresh Network
    with np.load(npz) as z:
        assert z["layer_sizes"].tolist() == [2, 8, 1]
        assert str(z["activation"]) == "logistic" and str(z["output"]) == "logistic"
        net = fastbp.Network(z["layer_sizes"].tolist(), activation=str(z["activation"]))
        X, y = datasets.load("moons")
        pred = net.predict(z["W"], (X - z["mean"]) / z["scale"])
        np.testing.assert_array_equal(z["classes"], [0, 1])
        acc = 100 * (pred == y).mean()
    assert abs(acc - accuracy_of(out)) < 0.01


def test_fit_lab_mat_files_multiclass_and_options(capsys):
    files = [REPO_DATA / f for f in datasets.DATASETS["pinwheel"].files]
    rc, out, err = run(
        capsys, *["fit", *files], "--hidden", "12", "--activation", "tanh", "--l2", "1e-4", "--standardize",
        "--backend", "numpy", "--random-state", "3", "--max-iter", "300", "-q",
    )
    assert rc == 0, err
    assert err == ""  # --quiet: no progress
    assert "360 samples, 2 features, 3 classes" in out
    assert "[2, 12, 3], tanh hidden, softmax output, l2=0.0001" in out
    assert "backend numpy" in out
    assert accuracy_of(out) > 90.0


def test_fit_npz_and_csv_with_other_labels(capsys, tmp_path):
    X, y = datasets.load("xor")
    np.savez(tmp_path / "d.npz", X=X, y=np.where(y == 0, -1, 1))  # ±1 labels are encoded, not rejected
    rc, out, err = run(capsys, "fit", tmp_path / "d.npz", "--hidden", "4", "--activation", "tanh", "-q")
    assert rc == 0, err
    assert accuracy_of(out) > 95.0  # XOR needs the hidden layer, and 4 tanh units have it
    rows = "\n".join(f"{a},{b},{'7' if c else '3'}" for (a, b), c in zip(X.tolist(), y.tolist()))
    (tmp_path / "d.csv").write_text("u,v,label\n" + rows + "\n")
    rc, out, err = run(capsys, "fit", tmp_path / "d.csv", "--hidden", "none", "-q")
    assert rc == 0, err
    assert "[2, 1], no hidden layer, logistic output" in out  # not "logistic hidden": there is none
    assert accuracy_of(out) < 80.0  # no hidden layer: a line cannot separate XOR


@pytest.mark.parametrize("labels, extra", [(("cold", "hot"), ["--standardize"]), ((3, 7), []),
                                            ((-1, 1), ["--output", "identity", "--method", "lm"])])
def test_saved_model_loads_and_predicts_labels_on_raw_X(capsys, tmp_path, labels, extra):
    """`--save` then `fastbp.load`: the model applies the saved standardization and gives the
    training file's own labels, reproducing the printed accuracy; network and weights exposed."""
    X, y = datasets.load("moons")
    if "--standardize" in extra:
        X = X * [100.0, 0.01] + [5e3, -2.0]  # feature scales the model must undo as the fit did
    np.savez(tmp_path / "d.npz", X=X, y=np.where(y == 1, labels[1], labels[0]))
    model_path = tmp_path / "model.npz"
    rc, out, err = run(capsys, "fit", tmp_path / "d.npz", "--hidden", "6", "--max-iter", "300", "-q",
                       "--save", model_path, *extra)
    assert rc == 0, err
    assert "load it with fastbp.load" in out
    model = fastbp.load(model_path)
    assert isinstance(model, fastbp.TrainedClassifier)
    assert model.classes_.tolist() == list(labels)
    pred = model.predict(X)  # raw X: the model standardizes it as the fit did
    assert set(pred.tolist()) <= set(labels)
    expected = np.where(y == 1, labels[1], labels[0])
    assert abs(100 * (pred == expected).mean() - accuracy_of(out)) < 0.01
    assert accuracy_of(out) > 90.0
    assert model.score(X, expected) == (pred == expected).mean()
    assert model.network.layer_sizes == (2, 6, 1) and model.W.shape == (model.network.n_params,)
    assert [c.shape for c in model.coefs_] == [(2, 6), (6, 1)]
    if "--standardize" in extra:
        np.testing.assert_allclose(model.mean, X.mean(axis=0))
        np.testing.assert_allclose(model.scale, X.std(axis=0))
        P = model.predict_proba(X)
        assert P.shape == (len(X), 2)
        np.testing.assert_allclose(P.sum(axis=1), 1.0)
        assert (model.classes_[P.argmax(axis=1)] == pred).all()
    if "identity" in extra:
        with pytest.raises(ValueError, match="predict_proba needs a logistic or softmax output"):
            model.predict_proba(X)


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "data.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(ValueError, match="not a model written by 'fastbp fit --save'.*lacks W"):
        fastbp.load(tmp_path / "data.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="cannot read"):
        fastbp.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("method", ["Newton-CG", "trust-ncg", "trust-krylov", "trust-exact", "trust-constr"])
def test_fit_second_order_methods(capsys, method):
    rc, out, err = run(capsys, "fit", "moons", "--hidden", "6", "--method", method, "--max-iter", "200", "-q")
    assert rc == 0, err
    assert f"method    {method}" in out
    assert accuracy_of(out) >= 95.0
    curvature = "hess" if method == "trust-exact" else "hessp"
    calls = re.search(rf"ms per evaluation: (\d+) f \+ (\d+) {curvature};", out)
    assert calls and int(calls.group(2)) > 0  # the curvature was used


def test_fit_levenberg_marquardt_with_identity_output(capsys, tmp_path):
    npz = tmp_path / "w.npz"
    rc, out, err = run(capsys, "fit", "moons", "--hidden", "6", "--output", "identity", "--method", "lm", "--save", npz)
    assert rc == 0, err
    assert "identity output" in out and "method    lm" in out
    assert re.search(r"ms per evaluation: \d+ residuals \+ \d+ jac;", out)
    assert accuracy_of(out) >= 95.0
    with np.load(npz) as z:
        assert str(z["output"]) == "identity"
    # three classes: one-hot targets on three identity outputs
    rc, out, err = run(capsys, "fit", "pinwheel", "--hidden", "8", "--output", "identity", "--max-iter", "300", "-q")
    assert rc == 0, err
    assert "[2, 8, 3]" in out and "identity output" in out
    assert accuracy_of(out) > 90.0


@pytest.mark.parametrize("solver, extra", [("adam", ["--batch-size", "32", "--learning-rate-init", "0.01"]),
                                           ("sgd", ["--learning-rate-init", "0.2"])])
def test_fit_with_a_stochastic_solver(capsys, tmp_path, solver, extra):
    """--solver sgd/adam trains fastbp.MLPClassifier on minibatches: the saved weights are that
    estimator's, reproduce the printed accuracy, and the fit is scikit-learn's for the same seed."""
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    npz = tmp_path / "w.npz"
    rc, out, err = run(capsys, "fit", "moons", "--hidden", "8", "--solver", solver, "--max-iter", "150",
                       "--random-state", "4", "--save", npz, "-q", *extra)
    assert rc == 0, err
    assert re.search(rf"loss\s+[\d.]+ after \d+ epochs of {solver}, \d+ minibatch steps", out), out
    assert accuracy_of(out) > 85.0
    X, y = datasets.load("moons")
    batch = int(extra[1]) if extra[0] == "--batch-size" else "auto"
    lr = float(extra[extra.index("--learning-rate-init") + 1])
    sk = SkMLPClassifier((8,), activation="logistic", solver=solver, alpha=2 * 200 * (1e-4 / 400), batch_size=batch,
                         learning_rate_init=lr, max_iter=150, random_state=4)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
    assert f"after {sk.n_iter_} epochs" in out
    with np.load(npz) as z:
        net = fastbp.Network(z["layer_sizes"].tolist(), activation=str(z["activation"]))
        np.testing.assert_allclose(z["W"], net.pack(sk.coefs_, sk.intercepts_), rtol=1e-6, atol=1e-9)
        acc = 100 * (net.predict(z["W"], X) == y).mean()
    assert abs(acc - accuracy_of(out)) < 0.01


@pytest.mark.parametrize(
    "args, message",
    [
        (["--solver", "sgd", "--method", "trust-krylov"], "--method trust-krylov is for --solver lbfgs"),
        (["--solver", "adam", "--output", "identity"], "--output identity is for --solver lbfgs"),
    ],
)
def test_fit_full_batch_options_refused_with_a_stochastic_solver(capsys, args, message):
    rc, out, err = run(capsys, "fit", "moons", "--hidden", "4", *args)
    assert rc == 2 and message in err and out == ""


def test_fit_three_features_cannot_plot(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(30, 3)), y=rng.integers(0, 2, 30))
    rc, out, err = run(capsys, "fit", tmp_path / "d.npz", "--plot", tmp_path / "p.png")
    assert_one_line_error(rc, err, "--plot needs 2-D data", "3 features")
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["fit", "no_such_dataset"], ["no such file or bundled dataset", "moons"]),
        (["fit", "missing.mat"], ["no such file: missing.mat"]),
        (["fit", "moons", "--hidden", "10,x"], ["--hidden", "comma-separated"]),
        (["fit", "moons", "--hidden", "10,-1"], ["--hidden", "positive"]),
        (["fit", "moons", "--hidden", "0"], ["--hidden", "positive", "write 'none' for no hidden layer"]),
        (["fit", "moons", "--max-iter", "0"], ["--max-iter", "positive integer"]),
        (["fit", "moons", "--l2", "-1"], ["--l2", ">= 0"]),
        (["fit", "moons", "--l2", "1", "--alpha", "1"], ["not allowed with"]),
        (["fit", "moons", "--activation", "softsign"], ["--activation", "invalid choice"]),
        (["fit", "moons", "--backend", "gpu"], ["--backend", "invalid choice"]),
        (["fit", "moons", "--solver", "newton"], ["--solver", "invalid choice"]),
        (["fit", "moons", "--batch-size", "10"], ["--batch-size", "sgd or adam"]),
        (["fit", "moons", "--solver", "adam", "--batch-size", "0"], ["--batch-size", "positive integer"]),
        (["fit", "moons", "--solver", "adam", "--batch-size", "201"], ["--batch-size 201", "200 samples"]),
        (["fit", "moons", "--solver", "sgd", "--learning-rate-init", "0"], ["--learning-rate-init", "> 0"]),
        (["fit", "moons", "--plot", "/no/such/folder/b.png"], ["--plot", "does not exist"]),
        (["fit", "moons", "--plot", "boundary.xyz"], ["--plot", "unknown image format 'xyz'", "png"]),
        (["fit"], ["required"]),
        (["frobnicate"], ["invalid choice"]),
        ([], ["required"]),
        (["fit", "moons", "--method", "lm"], ["--method lm", "needs --output identity", "logistic"]),
        (["fit", "pinwheel", "--method", "lm", "--output", "softmax"], ["needs --output identity", "softmax"]),
        (["fit", "moons", "--method", "BFGS"], ["--method", "invalid choice", "trust-krylov"]),
        (["fit", "pinwheel", "--output", "logistic"], ["--output logistic takes two classes", "3"]),
        (["fit", "moons", "--output", "poisson"], ["--output", "invalid choice"]),
        (["bench", "--cases", "tiny"], ["unknown case 'tiny'", "seed4layer"]),
        (["bench", "--repeat", "x"], ["--repeat"]),
    ],
)
def test_errors_are_one_line(capsys, argv, fragments):
    rc, out, err = run(capsys, *argv)
    assert_one_line_error(rc, err, *fragments)


def test_unreadable_files(capsys, tmp_path):
    (tmp_path / "d.txt").write_text("1,2,0\n")
    rc, _, err = run(capsys, "fit", tmp_path / "d.txt")
    assert_one_line_error(rc, err, "unsupported data format '.txt'")
    (tmp_path / "bad.mat").write_bytes(b"\x00\x01garbage" * 40)
    rc, _, err = run(capsys, "fit", tmp_path / "bad.mat")
    assert_one_line_error(rc, err, "cannot read", "bad.mat")
    (tmp_path / "frac.csv").write_text("1,2,0.5\n3,4,1\n")
    rc, _, err = run(capsys, "fit", tmp_path / "frac.csv")
    assert_one_line_error(rc, err, "whole numbers")
    sio.savemat(tmp_path / "one.mat", {"X": np.ones((4, 2)), "y": np.zeros(4)})
    rc, _, err = run(capsys, "fit", tmp_path / "one.mat")
    assert_one_line_error(rc, err, "single class")


def test_unavailable_backend_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setitem(backends._MODULES, "broken", "fastbp._no_such_backend_module")
    monkeypatch.setitem(backends._REASONS, "broken", "ModuleNotFoundError: not built")
    rc, _, err = run(capsys, "fit", "moons", "--backend", "broken")
    assert_one_line_error(rc, err, "'broken' is not available", "not built")


def test_help_and_version(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "fit" in out and "bench" in out and "datasets" in out
    rc, out, _ = run(capsys, "fit", "--help")
    assert rc == 0 and "--hidden" in out and "--plot" in out
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and fastbp.__version__ in out


# ------------------------------------------------------------------------------------------ bench
def test_bench_table(capsys):
    rc, out, err = run(capsys, "bench", "--cases", "seed4layer", "--repeat", "1")
    assert rc == 0, err
    lines = out.strip().splitlines()
    header = lines[1].split()
    for name in [*fastbp.available_backends(), "sklearn"]:
        assert name in header
    row = next(ln for ln in lines if ln.startswith("seed4layer"))
    fields = row.split()
    assert fields[1] == "200" and fields[2] == str(CASES["seed4layer"].network().n_params)
    times = [float(v) for v in fields[3 : 3 + len(fastbp.available_backends()) + 1]]
    assert all(t > 0 for t in times)
    assert fields[-1].endswith("x")


def test_bench_without_sklearn(capsys):
    rc, out, _ = run(capsys, "bench", "--cases", "multiclass", "--repeat", "1", "--no-sklearn")
    assert rc == 0 and "sklearn" not in out and "multiclass" in out


# --------------------------------------------------------------------------------------- datasets
def test_datasets_command_rebuilds_data(capsys, tmp_path):
    rc, out, err = run(capsys, "datasets", "--out", tmp_path / "d")
    assert rc == 0, err
    written = sorted(Path(p).name for p in out.split())
    assert written == sorted(p.name for p in REPO_DATA.glob("*.mat"))
    for name in written:
        assert (tmp_path / "d" / name).read_bytes() == (REPO_DATA / name).read_bytes()


def test_datasets_list_and_bad_out(capsys, tmp_path):
    rc, out, _ = run(capsys, "datasets", "--list")
    assert rc == 0
    for name in datasets.names():
        assert name in out
    (tmp_path / "f").write_text("")
    rc, _, err = run(capsys, "datasets", "--out", tmp_path / "f")
    assert_one_line_error(rc, err, "not a folder")


# ------------------------------------------------------------------------------ as a real process
def test_python_m_fastbp():
    ok = subprocess.run([sys.executable, "-m", "fastbp", "datasets", "--list"], capture_output=True, text=True)
    assert ok.returncode == 0 and "moons" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "fastbp", "fit", "nowhere.npz"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "fastbp: error: no such file: nowhere.npz"
    assert bad.stdout == ""
