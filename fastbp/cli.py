"""The ``fastbp`` command line: ``fastbp fit``, ``fastbp bench`` and ``fastbp datasets``.

Run ``fastbp --help`` or ``fastbp COMMAND --help``. Results go to stdout, progress to stderr.
Any error (a missing file, an unreadable format, a bad option) is one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

__all__ = ["main"]

EXIT_ERROR = 2
DEFAULT_BENCH_CASES = ("seed4layer", "multiclass", "medium")
#: ``fit --method``: scipy.optimize.minimize methods -> the curvature each is given, and "lm",
#: scipy.optimize.least_squares(method="lm") on the residuals and their Jacobian
METHODS = {
    "L-BFGS-B": None,
    "Newton-CG": "hessp",
    "trust-ncg": "hessp",
    "trust-krylov": "hessp",
    "trust-exact": "hess",
    "trust-constr": "hessp",
    "lm": "jac",
}


class CLIError(Exception):
    """A user error: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage block before its error; one line is all the user needs.
    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


def _hidden_sizes(text):
    """``"10,10"`` -> ``[10, 10]``; ``"none"`` -> ``[]`` (no hidden layer). ``"0"`` is refused:
    a layer of no units is not "no layer", and the two should not be confused silently."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated unit counts such as 10,10,10,10, got {text!r}"
        ) from None
    if any(s <= 0 for s in sizes):
        hint = "; write 'none' for no hidden layer" if sizes == [0] else ""
        raise argparse.ArgumentTypeError(f"unit counts must be positive, got {text!r}{hint}")
    return sizes


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _build_parser():
    from . import __version__
    from .backends import backend_names
    from .cases import CASES
    from .datasets import names

    parser = _Parser(
        prog="fastbp",
        description="Train and benchmark neural networks whose loss and gradient fastbp computes.",
    )
    parser.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    fit = sub.add_parser(
        "fit",
        help="train a network (L-BFGS, second-order methods, SGD or Adam) on a data file or a bundled dataset",
        description=(
            "Train a classifier on fastbp's loss, gradient and curvature: full batch with scipy "
            "(--solver lbfgs, the default: L-BFGS-B or another --method; the lab's initial weights "
            "and λ), or SGD / Adam on minibatches (--solver sgd|adam, through fastbp.MLPClassifier: "
            "scikit-learn's initial weights, alpha per batch, stopping when the loss stalls). DATA is "
            f"a bundled dataset ({', '.join(names())}) or one or more files: .mat (X and y, or one "
            "class per variable, as the lab's files), .npz (X and y) or .csv (label last)."
        ),
    )
    fit.add_argument(
        "data", nargs="+", metavar="DATA", help="a bundled dataset's name, or the data file(s) (.mat, .npz, .csv)"
    )
    fit.add_argument(
        "--hidden",
        type=_hidden_sizes,
        default=[10, 10, 10, 10],
        metavar="SIZES",
        help="hidden layer sizes, comma-separated; 'none' for no hidden layer (default: 10,10,10,10)",
    )
    fit.add_argument(
        "--activation",
        default="logistic",
        choices=["logistic", "sigmoid", "tanh", "relu", "identity"],
        help="hidden activation (default: logistic)",
    )
    reg = fit.add_mutually_exclusive_group()
    reg.add_argument("--l2", type=_non_negative, help="λ of the lab: loss += λ Σ W² (default: from --alpha)")
    reg.add_argument(
        "--alpha",
        type=_non_negative,
        default=1e-4,
        help="scikit-learn's alpha, λ = alpha / (2 n_samples) (default: 1e-4)",
    )
    fit.add_argument(
        "--output",
        choices=["logistic", "softmax", "identity"],
        help="output layer and loss (default: logistic for two classes, softmax for more); identity "
        "is half squared error on 0/1 targets (one-hot for more than two classes), which --method lm needs",
    )
    fit.add_argument(
        "--method",
        default="L-BFGS-B",
        choices=list(METHODS),
        help="scipy.optimize.minimize method, given exact Hessian-vector products (Newton-CG, trust-ncg, "
        "trust-krylov, trust-constr) or the dense Hessian (trust-exact); or lm: least_squares' "
        "Levenberg-Marquardt with the exact Jacobian, for --output identity (default: L-BFGS-B)",
    )
    fit.add_argument(
        "--backend",
        default="auto",
        choices=list(backend_names()),
        help="the kernel that computes loss and gradient (default: auto, the fastest available)",
    )
    fit.add_argument(
        "--solver",
        default="lbfgs",
        choices=["lbfgs", "sgd", "adam"],
        help="lbfgs: full batch with scipy (--method); sgd, adam: minibatch steps (default: lbfgs)",
    )
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        help="minibatch size of sgd and adam (default: min(200, n_samples))",
    )
    fit.add_argument(
        "--learning-rate-init",
        type=_positive_float,
        default=1e-3,
        metavar="ETA",
        help="step size of sgd and adam (default: 0.001, scikit-learn's; lbfgs ignores it)",
    )
    fit.add_argument(
        "--max-iter",
        type=_positive_int,
        default=2000,
        help="iterations (function evaluations for --method lm; epochs for sgd/adam) (default: 2000)",
    )
    fit.add_argument("--random-state", type=int, default=0, help="seed of the initial weights (default: 0)")
    fit.add_argument(
        "--standardize",
        action="store_true",
        help="centre and scale each feature to unit variance before training",
    )
    fit.add_argument("--plot", metavar="PATH", help="write the decision boundary (2-D data only) to PATH")
    fit.add_argument(
        "--save",
        metavar="PATH",
        help="write the trained model to PATH (.npz); fastbp.load(PATH).predict(X) gives labels from raw X",
    )
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress line")

    bench = sub.add_parser(
        "bench",
        help="compare the backends' loss-and-gradient time with scikit-learn's",
        description=(
            "Median time of one bound loss-and-gradient call per available backend and of "
            "scikit-learn's MLPClassifier._loss_grad_lbfgs, on the named cases of fastbp.cases "
            f"({', '.join(CASES)}; 'large' is slow and not run by default)."
        ),
    )
    bench.add_argument(
        "--cases",
        default=",".join(DEFAULT_BENCH_CASES),
        help=f"comma-separated case names, or 'all' (default: {','.join(DEFAULT_BENCH_CASES)})",
    )
    bench.add_argument("--repeat", type=_positive_int, default=7, help="timings per median (default: 7)")
    bench.add_argument("--no-sklearn", action="store_true", help="leave scikit-learn out")

    data = sub.add_parser(
        "datasets",
        help="write the lab's datasets as .mat files",
        description="Write the bundled datasets, byte for byte as shipped, one .mat file per class.",
    )
    data.add_argument("--out", default="data", metavar="DIR", help="folder to write to (default: ./data)")
    data.add_argument("--list", action="store_true", help="only list the datasets")
    return parser


# --------------------------------------------------------------------------------------------- fit
def _read_data(sources):
    from .datasets import DATASETS, load, load_file

    if len(sources) == 1 and sources[0] in DATASETS and not os.path.exists(sources[0]):
        return sources[0], load(sources[0])
    for s in sources:
        if not os.path.exists(s) and not os.path.splitext(s)[1]:
            raise CLIError(f"no such file or bundled dataset: {s!r} (datasets: {', '.join(DATASETS)})")
    return ", ".join(sources), load_file(sources)


def _encode_labels(y):
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise CLIError("the labels contain NaN or infinity")
        if not (y == np.round(y)).all():
            raise CLIError("fit trains a classifier: the labels must be whole numbers (class labels)")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise CLIError(f"the data hold a single class ({classes[0]!r}); a classifier needs at least two")
    return classes, codes.astype(np.int64)


def _check_writable(path, option):
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise CLIError(f"{option} {path}: folder {parent} does not exist")


def _check_image_format(path):
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in supported:
        raise CLIError(f"--plot {path}: unknown image format {suffix!r}; use one of {', '.join(sorted(supported))}")


class _Progress:
    """One line on stderr, redrawn at most ten times a second: iteration and loss."""

    def __init__(self, max_iter, enabled):
        self.max_iter, self.enabled = max_iter, enabled
        self.n_iter, self.loss, self._last = 0, float("nan"), time.perf_counter()
        # on a terminal the line is redrawn in place; in a log, a new line every second
        self._tty = sys.stderr.isatty()
        self._interval = 0.1 if self._tty else 1.0

    def __call__(self, intermediate_result):
        self.n_iter += 1
        self.loss = float(intermediate_result.fun)
        now = time.perf_counter()
        if self.enabled and now - self._last > self._interval:
            self._last = now
            self._draw()

    def _draw(self, end=""):
        text = f"fit: iteration {self.n_iter:>6d}/{self.max_iter}  loss {self.loss:.6g}"
        if self._tty:
            print(f"\r{text}", end=end, file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.enabled and self.n_iter:
            self._draw(end="\n")


def _blas_threads_for_kernel_only(functions):
    """``(wrapped, context)``: run the optimizer inside ``context`` (one BLAS thread) and it
    calls the ``wrapped`` dict's functions, which are ``functions``' under the BLAS thread count
    in force now.

    L-BFGS-B's own algebra is a few BLAS calls on vectors of n_params entries per iteration:
    threads cannot speed that up, and on a busy machine OpenBLAS's spinning threads slowed a
    lab-sized fit down a hundredfold. The kernels keep whatever BLAS threads they had.
    """
    import contextlib

    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    n_blas = max((i["num_threads"] for i in controller.select(user_api="blas").info()), default=None)
    if n_blas is None or n_blas == 1:
        return dict(functions), contextlib.nullcontext()

    def with_kernel_threads(fn):
        def call(*args):
            with controller.limit(limits=n_blas, user_api="blas"):
                return fn(*args)

        return call

    wrapped = {name: with_kernel_threads(fn) for name, fn in functions.items()}
    return wrapped, controller.limit(limits=1, user_api="blas")


class _Counted:
    """``fn`` that counts its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


def _optimize(method, f, W0, max_iter, progress):
    """Fit with ``method`` from ``W0``; returns ``(x, loss, iterations, calls, success, message)``
    with ``calls`` a dict of how often each of f's functions ran."""
    from scipy.optimize import least_squares, minimize

    kind = METHODS[method]
    names = {None: ("f",), "hessp": ("f", "hessp"), "hess": ("f", "hess"), "jac": ("residuals", "jac")}[kind]
    sources = {"f": f, "hessp": f.hessp, "hess": f.hess, "residuals": f.residuals, "jac": f.residuals_jacobian}
    counted = {name: _Counted(sources[name]) for name in names}
    fns, optimizer_blas = _blas_threads_for_kernel_only(counted)
    with optimizer_blas:
        if kind == "jac":
            last = {}

            def residuals(W):
                r = fns["residuals"](W)
                last["cost"] = 0.5 * float(r @ r)
                return r

            def jacobian(W):  # one Jacobian per Levenberg-Marquardt iteration: the progress tick
                progress(SimpleNamespace(fun=last.get("cost", float("nan"))))
                return fns["jac"](W)

            res = least_squares(residuals, W0, jac=jacobian, method="lm", max_nfev=max_iter)
            x, loss, nit = res.x, float(res.cost), counted["jac"].calls
        else:
            curvature = {} if kind is None else {kind: fns[kind]}
            res = minimize(
                fns["f"], W0, jac=True, method=method, callback=progress, options={"maxiter": max_iter}, **curvature
            )
            x, loss, nit = res.x, float(res.fun), res.nit
    calls = {name: c.calls for name, c in counted.items()}
    return x, loss, nit, calls, bool(res.success), str(res.message)


def _targets_and_output(args, classes, codes):
    """The output layer, its number of units and the targets y for ``Network.bind``."""
    k = len(classes)
    output = args.output or ("logistic" if k == 2 else "softmax")
    if args.method == "lm" and output != "identity":
        raise CLIError(
            f"--method lm is least squares (Levenberg-Marquardt) and needs --output identity "
            f"(half squared error); the output here is {output} (cross-entropy)"
        )
    if output == "logistic" and k > 2:
        raise CLIError(f"--output logistic takes two classes, the data hold {k}; use softmax or identity")
    if output == "softmax":
        return output, k, codes
    if k == 2:
        return output, 1, codes.astype(np.float64)
    return output, k, np.eye(k)[codes]  # identity on one-hot rows


def _cmd_fit(args):
    from .backends import choose
    from .network import Network
    from .saved import TrainedClassifier, class_codes

    if args.plot:
        _check_writable(args.plot, "--plot")
        _check_image_format(args.plot)
    if args.save:
        _check_writable(args.save, "--save")
    label, (X, y) = _read_data(args.data)
    classes, codes = _encode_labels(y)
    if args.plot and X.shape[1] != 2:
        raise CLIError(f"--plot needs 2-D data, but {label} has {X.shape[1]} features")
    if args.batch_size is not None and args.solver == "lbfgs":
        raise CLIError("--batch-size is for --solver sgd or adam (lbfgs uses every sample at each step)")
    if args.batch_size is not None and args.batch_size > X.shape[0]:
        raise CLIError(f"--batch-size {args.batch_size} is larger than the {X.shape[0]} samples of {label}")

    if args.solver != "lbfgs" and args.method != "L-BFGS-B":
        raise CLIError(
            f"--method {args.method} is for --solver lbfgs (full batch); {args.solver} takes minibatch steps"
        )
    if args.solver != "lbfgs" and args.output not in (None, "logistic" if len(classes) == 2 else "softmax"):
        raise CLIError(f"--output {args.output} is for --solver lbfgs; {args.solver} fits fastbp.MLPClassifier, "
                       "whose output is logistic for two classes and softmax for more")

    mean, scale = np.zeros(X.shape[1]), np.ones(X.shape[1])
    if args.standardize:
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale == 0] = 1.0
    Xs = (X - mean) / scale

    output, n_out, targets = _targets_and_output(args, classes, codes)
    l2 = args.l2 if args.l2 is not None else args.alpha / (2 * X.shape[0])
    net = Network(
        [X.shape[1], *args.hidden, n_out], activation=args.activation, output=output, l2=l2, backend=args.backend
    )
    f = net.bind(Xs, targets)
    W0 = net.init_weights(random_state=args.random_state)
    backend = args.backend if args.backend != "auto" else choose(net.layout, X.shape[0])

    print(f"data      {label}: {X.shape[0]} samples, {X.shape[1]} features, {len(classes)} classes")
    hidden = f"{net.activation} hidden" if args.hidden else "no hidden layer"
    print(
        f"network   {list(net.layer_sizes)}, {hidden}, {net.output} output, "
        f"l2={l2:.3g}, {net.n_params} parameters, backend {backend}"
    )
    start = time.perf_counter()
    f(W0)  # the first call may compile a kernel (numba): timed apart from the fit
    first_call = time.perf_counter() - start
    if args.solver == "lbfgs":
        progress = _Progress(args.max_iter, enabled=not args.quiet)
        start = time.perf_counter()
        x, loss, nit, calls, success, message = _optimize(args.method, f, W0, args.max_iter, progress)
        elapsed = time.perf_counter() - start
        progress.close()
        status = "converged" if success else f"stopped: {message}"
        n_calls = sum(calls.values())
        print(f"method    {args.method}")
        print(f"loss      {loss:.6g} after {nit} iterations, {n_calls} evaluations ({status})")
        per_call = "loss-and-gradient" if args.method == "L-BFGS-B" else "evaluation: " + " + ".join(
            f"{n} {name}" for name, n in calls.items()
        )
    else:
        x, summary, elapsed, n_calls = _fit_stochastic(args, net, Xs, codes, l2)
        print(f"method    {args.solver}")
        print(summary)
        per_call = "minibatch step"
    accuracy = float((class_codes(net.predict_proba(x, Xs)) == codes).mean())
    print(f"accuracy  {100 * accuracy:.2f} % on the training data")
    print(
        f"time      {elapsed:.3f} s ({1e3 * elapsed / max(n_calls, 1):.3f} ms per {per_call}; "
        f"first call {first_call:.3f} s)"
    )

    if args.save:  # read back with fastbp.load(path): labels from raw X
        TrainedClassifier(net, x, classes, mean=mean, scale=scale).save(args.save)
        print(f"saved     {args.save} (load it with fastbp.load)")
    if args.plot:
        _plot_fit(args.plot, net, x, X, codes, classes, mean, scale, label, accuracy)
        print(f"plot      {args.plot}")
    return 0


def _fit_stochastic(args, net, Xs, codes, l2):
    """SGD or Adam through fastbp.MLPClassifier (scikit-learn's loop and initialisation, with
    alpha = 2 n λ so that the full-batch penalty is the lab's λ): ``(W, summary line, seconds,
    minibatch steps)``."""
    from sklearn.exceptions import ConvergenceWarning

    from .estimators import MLPClassifier

    n = Xs.shape[0]
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(args.hidden),
        activation=net.activation,
        solver=args.solver,
        alpha=2 * n * l2,
        batch_size="auto" if args.batch_size is None else args.batch_size,
        learning_rate_init=args.learning_rate_init,
        max_iter=args.max_iter,
        random_state=args.random_state,
        backend=args.backend,
    )
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xs, codes)
    elapsed = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    status = "stopped: the loss stopped improving" if converged else "stopped: max-iter reached"
    batch = min(200, n) if args.batch_size is None else args.batch_size
    steps = clf.n_iter_ * -(-n // batch)
    W = net.pack(clf.coefs_, clf.intercepts_)
    summary = (
        f"loss      {clf.loss_:.6g} after {clf.n_iter_} epochs of {args.solver}, {steps} minibatch steps ({status})"
    )
    return W, summary, elapsed, steps


def _plot_fit(path, net, W, X, codes, classes, mean, scale, label, accuracy):
    import matplotlib

    from .saved import class_codes

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def predict(P):
        return class_codes(net.predict_proba(W, (np.asarray(P, dtype=np.float64) - mean) / scale))

    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        from .plot import decision_boundary
    except ImportError:  # plotting helpers not installed: draw it here
        decision_boundary = None
    if decision_boundary is not None:
        decision_boundary(predict, X, codes, ax=ax)
    else:
        pad = 0.05 * (X.max(axis=0) - X.min(axis=0))
        lo, hi = X.min(axis=0) - pad, X.max(axis=0) + pad
        xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
        zz = predict(np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
        levels = np.arange(len(classes) + 1) - 0.5
        ax.contourf(xx, yy, zz, levels=levels, cmap="coolwarm" if len(classes) == 2 else "tab10", alpha=0.25)
        ax.scatter(X[:, 0], X[:, 1], c=codes, cmap="coolwarm" if len(classes) == 2 else "tab10", s=12,
                   edgecolors="k", linewidths=0.3)
    ax.set_title(f"{label}: {list(net.layer_sizes)} {net.activation}, accuracy {100 * accuracy:.1f} %")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except ValueError as exc:  # an unknown image format
        raise CLIError(f"--plot {path}: {exc}") from None
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------- bench
def _time_call(fn, repeat):
    """Median seconds per call of ``fn()`` over ``repeat`` measurements, each long enough (about
    20 ms or one call) for the clock to resolve it."""
    fn()  # warm-up: JIT compilation, caches
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    number = max(1, min(1000, int(0.02 / max(one, 1e-7))))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def _sklearn_objective(case, X, y, W):
    """scikit-learn's own ``_loss_grad_lbfgs`` at ``W``, set up as its L-BFGS fit sets it up."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=case.layer_sizes[1:-1],
        activation=case.activation,
        solver="lbfgs",
        alpha=case.alpha,
        max_iter=1,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(X, y)  # one iteration: sets the layer bookkeeping _loss_grad_lbfgs reads
    Y = mlp._label_binarizer.transform(y).astype(bool)
    units = list(case.layer_sizes)
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(units) - 1)
    coef_grads = [np.empty((a, b)) for a, b in zip(units[:-1], units[1:])]
    intercept_grads = [np.empty(b) for b in units[1:]]

    def call():
        return mlp._loss_grad_lbfgs(W, X, Y, None, activations, deltas, coef_grads, intercept_grads)

    return call


def _cmd_bench(args):
    from .backends import available_backends
    from .cases import CASES, make_case_data

    names = list(CASES) if args.cases.strip() == "all" else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown or not names:
        raise CLIError(f"unknown case {', '.join(map(repr, unknown)) or '(none)'}; choose from {', '.join(CASES)}")
    backends = available_backends()
    columns = list(backends) + ([] if args.no_sklearn else ["sklearn"])

    print(f"median time per loss-and-gradient call (ms), {args.repeat} repeats; cores: {os.cpu_count()}")
    header = f"{'case':<12} {'n':>6} {'params':>7} " + " ".join(f"{c:>9}" for c in columns)
    if not args.no_sklearn:
        header += f"  {'best vs sklearn':>15}"
    print(header)
    print("-" * len(header))
    for name in names:
        case = CASES[name]
        X, y = make_case_data(case)
        times = {}
        for b in backends:
            net = case.network(backend=b)
            f = net.bind(X, y)
            W = net.init_weights(random_state=0)
            times[b] = _time_call(lambda f=f, W=W: f(W), args.repeat)
        if not args.no_sklearn:
            try:
                times["sklearn"] = _time_call(_sklearn_objective(case, X, y, W), args.repeat)
            except Exception as exc:  # a private scikit-learn API that moved: report, don't fail
                print(f"({name}: scikit-learn's _loss_grad_lbfgs unavailable: {type(exc).__name__}: {exc})")
        row = f"{name:<12} {case.n_samples:>6} {net.n_params:>7} " + " ".join(
            f"{1e3 * times[c]:>9.3f}" if c in times else f"{'n/a':>9}" for c in columns
        )
        if "sklearn" in times:
            best = min(times[b] for b in backends)
            row += f"  {times['sklearn'] / best:>14.1f}x"
        print(row, flush=True)
    return 0


# ---------------------------------------------------------------------------------------- datasets
def _cmd_datasets(args):
    from .datasets import DATASETS, write

    if args.list:
        for d in DATASETS.values():
            print(f"{d.name:<11} exercise {d.exercise:<5} {d.n_classes} classes  {d.description}")
        return 0
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out}: exists and is not a folder")
    for path in write(out):
        print(path)
    return 0


# -------------------------------------------------------------------------------------------- main
def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        args = _build_parser().parse_args(argv)
        return {"fit": _cmd_fit, "bench": _cmd_bench, "datasets": _cmd_datasets}[args.command](args)
    except SystemExit as exc:  # --help and --version exit 0 through argparse
        return exc.code if isinstance(exc.code, int) else 0
    except BrokenPipeError:  # `fastbp ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.filename and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"
        print(f"fastbp: error: {message}", file=sys.stderr)
        return EXIT_ERROR
