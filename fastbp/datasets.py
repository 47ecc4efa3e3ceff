"""The lab's datasets, generated deterministically and stored as ``.mat`` files.

The week-5 lab loads ``.mat`` files with one class per variable (``perceptron_data_class1``,
``perceptron_data_class2``, ...). fastbp ships equivalents, generated here from fixed seeds, one
file per variable, named after it, so the lab's own loading code works unchanged::

    data1 = scipy.io.loadmat("data/perceptron_data_class1.mat")["perceptron_data_class1"]

==============  =========  ================================================  =======  =========
name            exercise   what                                              classes  points
==============  =========  ================================================  =======  =========
``perceptron``  1          two linearly separable clouds (margin ≥ 0.3)      2        2 × 100
``xor``         2          XOR: four clusters, opposite corners alike        2        2 × 100
``spirals``     3          two interleaved spirals, two turns each           2        2 × 200
``moons``       4, 5       two noisy interleaved half-moons                  2        2 × 100
``pinwheel``    6          three curved arms around the origin               3        3 × 120
==============  =========  ================================================  =======  =========

:func:`load` returns ``(X, y)`` with ``y[i] = k`` for a point of the variable ``..._class{k+1}``.
The files live in the package (``fastbp/data/``) and, for the lab, in the repository's
``data/``; ``fastbp datasets --out DIR`` (or :func:`write`) rebuilds them byte for byte.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DATASETS", "Dataset", "names", "generate", "load", "write", "mat_bytes", "load_file"]

#: Where the installed package keeps its copy of the files.
PACKAGE_DATA = Path(__file__).resolve().parent / "data"

#: Fixed 116-byte MAT-file description: scipy's own holds the time of writing, which would make
#: every rebuild differ.
_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, written by fastbp.datasets (deterministic, no timestamp)".ljust(
    116, b" "
)

#: Coordinates are rounded to this many decimals, so a last-bit difference in a platform's
#: sin/cos cannot change the bytes written.
_DECIMALS = 4


@dataclass(frozen=True)
class Dataset:
    """One of the lab's datasets.

    Attributes
    ----------
    name : str
        The name :func:`load` takes.
    exercise : str
        The lab exercise(s) it serves.
    description : str
    variables : tuple of str
        The ``.mat`` variable (and file stem) of each class, class 0 first.
    """

    name: str
    exercise: str
    description: str
    variables: tuple

    @property
    def n_classes(self):
        return len(self.variables)

    @property
    def files(self):
        """File names, one per class."""
        return tuple(f"{v}.mat" for v in self.variables)


DATASETS = {
    d.name: d
    for d in (
        Dataset(
            "perceptron",
            "1",
            "two linearly separable clouds",
            ("perceptron_data_class1", "perceptron_data_class2"),
        ),
        Dataset("xor", "2", "XOR: four clusters", ("data_Week6_class1_XOR", "data_Week6_class2_XOR")),
        Dataset(
            "spirals",
            "3",
            "two interleaved spirals",
            ("neural_net_ex2_class1", "neural_net_ex2_class2"),
        ),
        Dataset("moons", "4, 5", "two interleaved half-moons", ("pointsClass1Week6", "pointsClass2Week6")),
        Dataset(
            "pinwheel",
            "6",
            "three curved arms",
            ("multiclass_data_class1", "multiclass_data_class2", "multiclass_data_class3"),
        ),
    )
}


def names():
    """The dataset names :func:`load` accepts, in exercise order."""
    return tuple(DATASETS)


def _get(name):
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, one of {', '.join(DATASETS)}; got {name!r}")
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


# ------------------------------------------------------------------------------------ generation
def _perceptron(rng):
    # Two Gaussian clouds; points closer than the margin to the line x2 = 0.5 - 0.6 x1 are redrawn,
    # so the classes are linearly separable and the perceptron rule is guaranteed to stop.
    normal = np.array([0.6, 1.0]) / np.hypot(0.6, 1.0)
    offset = 0.5 / np.hypot(0.6, 1.0)
    classes = []
    for center, sign in (((1.2, 1.6), 1.0), ((-0.8, -0.6), -1.0)):
        points = []
        while len(points) < 100:
            p = rng.normal(center, 0.7)
            if sign * (p @ normal - offset) >= 0.3:
                points.append(p)
        classes.append(np.array(points))
    return classes


def _xor(rng):
    def cluster(cx, cy, n=50):
        return rng.normal((cx, cy), 0.35, size=(n, 2))

    class1 = np.vstack([cluster(1, 1), cluster(-1, -1)])
    class2 = np.vstack([cluster(1, -1), cluster(-1, 1)])
    return [class1, class2]


def _spirals(rng):
    # Arm k: radius grows linearly with the angle over two full turns; the second arm is the
    # first rotated by π, so the boundary between them winds around the origin four times.
    n = 200
    t = np.sqrt(rng.uniform(0.02, 1.0, n)) * 4 * np.pi  # sqrt: points spread evenly along the arm
    classes = []
    for phase in (0.0, np.pi):
        r = t / (4 * np.pi) * 5.0
        xy = np.column_stack([r * np.cos(t + phase), r * np.sin(t + phase)])
        classes.append(xy + rng.normal(0, 0.18, (n, 2)))
    return classes


def _moons(rng):
    n = 100
    a = rng.uniform(0, np.pi, n)
    upper = np.column_stack([np.cos(a), np.sin(a)])
    b = rng.uniform(0, np.pi, n)
    lower = np.column_stack([1 - np.cos(b), 0.5 - np.sin(b)])
    return [upper + rng.normal(0, 0.15, (n, 2)), lower + rng.normal(0, 0.15, (n, 2))]


def _pinwheel(rng):
    # Elongated Gaussian blobs, each bent by a rotation that grows with the distance from the
    # origin, set at 120° from each other: three curved arms.
    n, k = 120, 3
    classes = []
    for c in range(k):
        radial = rng.normal(1.0, 0.35, n)
        tangential = rng.normal(0.0, 0.14, n)
        angle = 2 * np.pi * c / k + 1.8 * (radial - 0.3)
        x = radial * np.cos(angle) - tangential * np.sin(angle)
        y = radial * np.sin(angle) + tangential * np.cos(angle)
        classes.append(np.column_stack([x, y]) * 2.0)
    return classes


_GENERATORS = {
    "perceptron": (_perceptron, 1),
    "xor": (_xor, 2),
    "spirals": (_spirals, 3),
    "moons": (_moons, 4),
    "pinwheel": (_pinwheel, 6),
}


def generate(name):
    """The dataset ``name`` as the ``.mat`` variables: ``{variable: (n_k, 2) float64 array}``.

    Computed afresh from a fixed seed; the same on every call and every machine (coordinates
    are rounded to 4 decimals so last-bit differences in ``sin``/``cos`` do not show).
    """
    ds = _get(name)
    func, seed = _GENERATORS[name]
    classes = func(np.random.default_rng(seed))
    return {v: np.round(np.asarray(c, dtype=np.float64), _DECIMALS) for v, c in zip(ds.variables, classes)}


def mat_bytes(variables):
    """The bytes of a MAT 5 file holding ``variables`` (a dict), without the usual timestamp.

    ``scipy.io.savemat`` writes the time of writing into the 116-byte header description; it is
    replaced by a fixed text so the same variables always give the same bytes.
    """
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables, format="5", do_compression=False, oned_as="column")
    raw = bytearray(buf.getvalue())
    raw[:116] = _MAT_DESCRIPTION
    return bytes(raw)


def write(out_dir, datasets=None):
    """Write the ``.mat`` files of ``datasets`` (default: all) into ``out_dir``.

    Parameters
    ----------
    out_dir : str or path-like
        Created if missing.
    datasets : iterable of str, optional

    Returns
    -------
    list of pathlib.Path
        The files written, in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names() if datasets is None else datasets:
        for var, arr in generate(name).items():
            path = out / f"{var}.mat"
            path.write_bytes(mat_bytes({var: arr}))
            written.append(path)
    return written


# --------------------------------------------------------------------------------------- loading
def _stack(classes):
    X = np.vstack(classes).astype(np.float64)
    y = np.concatenate([np.full(len(c), k, dtype=np.int64) for k, c in enumerate(classes)])
    return X, y


def load(name, data_dir=None):
    """The dataset ``name`` as ``(X, y)``.

    Parameters
    ----------
    name : str
        One of :func:`names`: ``"perceptron"``, ``"xor"``, ``"spirals"``, ``"moons"``,
        ``"pinwheel"``.
    data_dir : str or path-like, optional
        Folder holding the ``.mat`` files. Default: the copy shipped in the package; where it is
        missing (a broken install) the data are generated, identical to the files.

    Returns
    -------
    X : ndarray of float64, shape (n_samples, 2)
        The classes stacked in order: class 0 (variable ``..._class1``) first.
    y : ndarray of int64, shape (n_samples,)
        Class labels ``0 .. n_classes-1``. The lab codes the binary sets as 1 for class 1 and
        0 (or -1) for class 2; here class 1 is label 0, so that labels follow variable order
        for any number of classes.

    Examples
    --------
    >>> from fastbp.datasets import load
    >>> X, y = load("xor")
    >>> X.shape, sorted(set(y.tolist()))
    ((200, 2), [0, 1])
    """
    ds = _get(name)
    folder = PACKAGE_DATA if data_dir is None else Path(data_dir)
    paths = [folder / f for f in ds.files]
    if data_dir is None and not all(p.is_file() for p in paths):
        return _stack(list(generate(name).values()))
    return _stack([_read_mat_variable(p, v) for p, v in zip(paths, ds.variables)])


def _read_mat_variable(path, var):
    from scipy.io import loadmat

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    arr = loadmat(path)
    if var not in arr:
        raise ValueError(f"{path} holds no variable {var!r}")
    return np.asarray(arr[var], dtype=np.float64)


def _mat_classes(path):
    """The arrays of a ``.mat`` file: ``("Xy", X, y)`` if it holds ``X`` and ``y``, otherwise
    ``("classes", [array, ...])`` with one class per 2-D variable in file order."""
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except Exception as exc:  # scipy raises several types for a corrupt or non-MAT file
        raise ValueError(f"cannot read {path} as a MATLAB .mat file: {exc}") from None
    content = {k: v for k, v in content.items() if not k.startswith("__")}
    if "X" in content and "y" in content:
        return "Xy", (content["X"], np.ravel(content["y"]))
    arrays = [np.asarray(v) for v in content.values() if isinstance(v, np.ndarray) and v.ndim == 2]
    if not arrays:
        raise ValueError(f"{path} holds neither X and y nor any 2-D class array")
    return "classes", arrays


def load_file(paths):
    """``(X, y)`` read from one or more files, as ``fastbp fit`` reads them.

    Parameters
    ----------
    paths : str, path-like, or a sequence of them
        - ``.mat``: variables ``X`` and ``y``; or one class per 2-D variable (the lab's layout),
          the variables of all files given taken as classes 0, 1, ... in order, so
          ``load_file(["a_class1.mat", "a_class2.mat"])`` reads a lab dataset;
        - ``.npz``: arrays ``X`` and ``y``;
        - ``.csv``: numbers separated by commas, the last column the label; a header line that
          is not numeric is skipped.
        Files other than ``.mat`` must come alone.

    Returns
    -------
    X : ndarray of float64, shape (n_samples, n_features)
    y : ndarray, shape (n_samples,)
        Labels as stored (integer class indices for class-per-variable ``.mat`` files).

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    ValueError
        An unknown extension or a file that cannot be read as its extension says.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no data file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"no such file: {p}")
    suffixes = {p.suffix.lower() for p in paths}
    unknown = suffixes - {".mat", ".npz", ".csv"}
    if unknown:
        raise ValueError(f"unsupported data format {sorted(unknown)[0]!r}: expected .mat, .npz or .csv")
    if suffixes != {".mat"} and len(paths) > 1:
        raise ValueError("several data files can only be given as .mat files with one class per variable")

    p = paths[0]
    if p.suffix.lower() == ".npz":
        try:
            z = np.load(p, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not a zip archive of arrays")
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"cannot read {p} as a NumPy .npz file: {exc}") from None
        with z:
            if "X" not in z or "y" not in z:
                raise ValueError(f"{p} must hold arrays named 'X' and 'y', found {sorted(z.files)}")
            X, y = z["X"], z["y"]
        return _check_Xy(X, np.ravel(y), p)
    if p.suffix.lower() == ".csv":
        return _read_csv(p)

    classes = []
    for p in paths:
        kind, content = _mat_classes(p)
        if kind == "Xy":
            if len(paths) > 1:
                raise ValueError(f"{p} holds X and y: give it alone")
            return _check_Xy(*content, p)
        classes.extend(content)
    widths = {c.shape[1] for c in classes}
    if len(widths) > 1:
        raise ValueError(f"the class arrays have different numbers of columns: {sorted(widths)}")
    if len(classes) < 2:
        raise ValueError(
            f"{paths[0]} holds a single class; give every class's file, e.g. "
            "fastbp fit data/pointsClass1Week6.mat data/pointsClass2Week6.mat"
        )
    return _check_Xy(*_stack(classes), paths[0])


def _check_Xy(X, y, path):
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: X must hold numbers") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"{path}: X must be a non-empty 2-D array, got shape {X.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{path}: y has {y.shape[0]} entries but X has {X.shape[0]} rows")
    return X, y


def _read_csv(path):
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {path} as a CSV text file") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines:
        try:
            [float(v) for v in lines[0].split(",")]
        except ValueError:
            lines = lines[1:]  # a header line
    if not lines:
        raise ValueError(f"{path} holds no data rows")
    try:
        rows = [[float(v) for v in ln.split(",")] for ln in lines]
        data = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"cannot read {path} as comma-separated numbers: {exc}") from None
    if data.ndim != 2 or data.shape[1] < 2:
        raise ValueError(f"{path} must have at least two columns (features..., label) of equal length")
    return data[:, :-1], data[:, -1]
