"""The lab's datasets: byte-identical rebuild, the lab's loading code, the shapes the exercises
need, and reading user files as ``fastbp fit`` does."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
from scipy.optimize import linprog
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from fastbp import datasets

REPO_DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("rebuilt")
    datasets.write(out)
    return out


@pytest.mark.parametrize("folder", [REPO_DATA, datasets.PACKAGE_DATA], ids=["data", "fastbp/data"])
def test_rebuild_is_byte_identical(rebuilt, folder):
    built = sorted(p.name for p in rebuilt.glob("*.mat"))
    stored = sorted(p.name for p in folder.glob("*.mat"))
    assert built == stored, "the stored files are not the generator's set; run `fastbp datasets --out data`"
    for name in built:
        assert (rebuilt / name).read_bytes() == (folder / name).read_bytes(), name


def test_header_has_no_timestamp(rebuilt):
    raw = (rebuilt / "pointsClass1Week6.mat").read_bytes()
    assert raw.startswith(b"MATLAB 5.0 MAT-file")
    assert b"Created on" not in raw[:116]


def test_every_variable_has_its_file():
    files = {p.stem for p in REPO_DATA.glob("*.mat")}
    variables = {v for d in datasets.DATASETS.values() for v in d.variables}
    assert files == variables
    # the lab's names, as its loading code spells them
    for v in ["perceptron_data_class1", "data_Week6_class2_XOR", "neural_net_ex2_class1", "pointsClass2Week6"]:
        assert v in variables


@pytest.mark.parametrize("name", datasets.names())
def test_lab_loading_code_works(name):
    ds = datasets.DATASETS[name]
    data1 = sio.loadmat(REPO_DATA / f"{ds.variables[0]}.mat")
    data2 = sio.loadmat(REPO_DATA / f"{ds.variables[1]}.mat")
    data1 = data1[ds.variables[0]]
    data2 = data2[ds.variables[1]]
    data = np.vstack((data1, data2))
    assert data.shape[1] == 2 and data.dtype == np.float64
    assert 100 <= data1.shape[0] <= 400 and 100 <= data2.shape[0] <= 400


@pytest.mark.parametrize("name", datasets.names())
def test_load(name):
    X, y = datasets.load(name)
    ds = datasets.DATASETS[name]
    assert X.dtype == np.float64 and X.shape[1] == 2 and np.isfinite(X).all()
    assert y.dtype == np.int64 and y.shape == (X.shape[0],)
    assert set(y.tolist()) == set(range(ds.n_classes))
    # class k is the variable ..._class{k+1}, read from the file
    first = sio.loadmat(REPO_DATA / f"{ds.variables[0]}.mat")[ds.variables[0]]
    np.testing.assert_array_equal(X[y == 0], first)
    # labels in variable order: class 0 first
    assert (np.diff(y) >= 0).all()


def test_load_from_a_folder_and_fallback(tmp_path, monkeypatch):
    X, y = datasets.load("xor", data_dir=REPO_DATA)
    monkeypatch.setattr(datasets, "PACKAGE_DATA", tmp_path / "missing")
    X2, y2 = datasets.load("xor")  # generated on the fly where the package lost its files
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(FileNotFoundError, match="no such file"):
        datasets.load("xor", data_dir=tmp_path)


def test_load_bad_name():
    with pytest.raises(ValueError, match="unknown dataset 'spiral'.*spirals"):
        datasets.load("spiral")
    with pytest.raises(TypeError, match="dataset name must be a string"):
        datasets.load(3)


# ---------------------------------------------------------- each set is what its exercise needs
def _linear_accuracy(X, y):
    return LogisticRegression().fit(X, y).score(X, y)


def _knn_cv(X, y):
    return cross_val_score(KNeighborsClassifier(5), X, y, cv=5).mean()


def test_perceptron_set_is_linearly_separable():
    # feasibility of t_i (w·x_i + b) >= 1: an independent certificate of separability
    X, y = datasets.load("perceptron")
    t = np.where(y == 0, 1.0, -1.0)
    A = -t[:, None] * np.hstack([X, np.ones((len(X), 1))])
    res = linprog(np.zeros(3), A_ub=A, b_ub=-np.ones(len(X)), bounds=[(None, None)] * 3)
    assert res.status == 0


def test_xor_is_xor():
    X, y = datasets.load("xor")
    same_sign = X[:, 0] * X[:, 1] > 0
    assert (same_sign == (y == 0)).mean() > 0.95  # class 1: the (+,+) and (−,−) clusters
    assert _linear_accuracy(X, y) < 0.7


@pytest.mark.parametrize("name", ["spirals", "moons", "pinwheel"])
def test_non_linear_but_learnable(name):
    X, y = datasets.load(name)
    assert _knn_cv(X, y) > 0.93
    assert _linear_accuracy(X, y) < {"spirals": 0.7, "moons": 0.92, "pinwheel": 0.97}[name]


def test_spirals_are_harder_than_moons():
    # the boundary must bend several times: a shallow tree that fits the moons fails the spirals
    from sklearn.tree import DecisionTreeClassifier

    scores = {n: DecisionTreeClassifier(max_depth=3).fit(*datasets.load(n)).score(*datasets.load(n)) for n in
              ("spirals", "moons")}
    assert scores["moons"] > 0.9 > 0.75 > scores["spirals"]


def test_pinwheel_has_three_classes():
    assert datasets.DATASETS["pinwheel"].n_classes >= 3


# ---------------------------------------------------------------------------- user data files
def test_load_file_formats(tmp_path):
    X, y = datasets.load("moons")
    files = [REPO_DATA / f for f in datasets.DATASETS["moons"].files]
    Xm, ym = datasets.load_file(files)
    np.testing.assert_array_equal(Xm, X)
    np.testing.assert_array_equal(ym, y)

    sio.savemat(tmp_path / "xy.mat", {"X": X, "y": y})
    Xa, ya = datasets.load_file(tmp_path / "xy.mat")
    np.testing.assert_array_equal(Xa, X)
    np.testing.assert_array_equal(ya, y)

    # both classes as two variables of one file
    sio.savemat(tmp_path / "two.mat", {"a": X[y == 0], "b": X[y == 1]})
    Xt, yt = datasets.load_file(str(tmp_path / "two.mat"))
    np.testing.assert_array_equal(Xt, X)
    np.testing.assert_array_equal(yt, y)

    np.savez(tmp_path / "d.npz", X=X, y=y)
    Xn, yn = datasets.load_file(tmp_path / "d.npz")
    np.testing.assert_array_equal(Xn, X)
    np.testing.assert_array_equal(yn, y)

    lines = ["x1,x2,label"] + [f"{a!r},{b!r},{c}" for (a, b), c in zip(X.tolist(), y.tolist())]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    Xc, yc = datasets.load_file(tmp_path / "d.csv")
    np.testing.assert_array_equal(Xc, X)
    np.testing.assert_array_equal(yc, y)


def test_load_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        datasets.load_file(tmp_path / "nope.mat")
    (tmp_path / "d.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="unsupported data format '.txt'"):
        datasets.load_file(tmp_path / "d.txt")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="cannot read .*bad.mat"):
        datasets.load_file(tmp_path / "bad.mat")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read .*bad.npz"):
        datasets.load_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", A=np.ones((3, 2)))
    with pytest.raises(ValueError, match="'X' and 'y'"):
        datasets.load_file(tmp_path / "keys.npz")
    (tmp_path / "words.csv").write_text("a,b\n1,x\n")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        datasets.load_file(tmp_path / "words.csv")
    (tmp_path / "ragged.csv").write_text("1,2,0\n1,2\n")
    with pytest.raises(ValueError, match="ragged.csv"):
        datasets.load_file(tmp_path / "ragged.csv")
    with pytest.raises(ValueError, match="single class"):
        datasets.load_file(REPO_DATA / "pointsClass1Week6.mat")
    sio.savemat(tmp_path / "n.mat", {"X": np.ones((3, 2)), "y": np.ones(4)})
    with pytest.raises(ValueError, match="y has 4 entries but X has 3 rows"):
        datasets.load_file(tmp_path / "n.mat")
    with pytest.raises(ValueError, match="only be given as .mat"):
        datasets.load_file([tmp_path / "keys.npz", tmp_path / "n.mat"])
