"""Shared by the numbered examples: the ``--out``/``--fast`` options, headless plotting, and the
lab's own way of loading its ``.mat`` files."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the examples write PNGs, they never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.io as sio  # noqa: E402
from PIL import Image  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastbp.datasets  # noqa: E402

# The lab's problems are tiny (a few hundred points, a few hundred weights): a multi-threaded
# BLAS only adds synchronisation there, and on a busy machine its spinning threads slow scipy's
# L-BFGS-B down by an order of magnitude or more. One BLAS thread for the examples.
threadpool_limits(1, user_api="blas")

EXAMPLES = Path(__file__).resolve().parent
DEFAULT_OUT = EXAMPLES / "out"


def parse_args(doc):
    """``--out DIR`` (default examples/out/) and ``--fast`` (also ``FASTBP_EXAMPLES_FAST=1``):
    a smaller search or fewer iterations, for the test suite."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG figures")
    parser.add_argument(
        "--fast",
        action="store_true",
        default=os.environ.get("FASTBP_EXAMPLES_FAST", "") not in ("", "0"),
        help="quick run with smaller settings (for tests)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def data_dir():
    """The repository's ``data/`` when run from a checkout, else the installed package's copy."""
    repo = EXAMPLES.parent / "data"
    return repo if repo.is_dir() else fastbp.datasets.PACKAGE_DATA


def load_lab(*variables):
    """The lab's loading code: one ``.mat`` file per class, read with ``scipy.io.loadmat``,
    each class under its own variable."""
    return [sio.loadmat(data_dir() / f"{v}.mat")[v] for v in variables]


def lab_targets(data1, data2, second=0):
    """Stack two classes as the lab does: class 1 gets target 1, class 2 ``second`` (0 or -1)."""
    data = np.vstack((data1, data2))
    targets = np.concatenate((np.ones(len(data1)), second * np.ones(len(data2))))
    return data, targets


def save(fig, args, name):
    """Write ``fig`` as ``OUT/name`` (small: 90 dpi, palette PNG) and close it."""
    path = args.out / name
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    # a plot has few colours: a 256-colour palette keeps it sharp at a third of the size
    Image.open(buf).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"figure: {path}")
    return path
