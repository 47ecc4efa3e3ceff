"""The backend registry: name -> implementation, loaded lazily, with the reason when unavailable.

A backend is a module that defines ``BACKEND``, an object with

``prepare(layout, n_threads) -> kernel``
    Called once per network (per backend) with its :class:`fastbp.layout.Layout` and the resolved
    thread count (a positive int). Precompute whatever the kernel needs here, never per call.

``kernel(W, X, T, sample_weight, scale, l2) -> (loss, grad)``
    ``W``: float64, C-contiguous, shape ``(n_params,)``, finite. ``X``: C-contiguous, shape
    ``(n, n_inputs)``, in ``layout.dtype``. ``T``: the targets encoded as a C-contiguous
    ``(n, n_outputs)`` array in ``layout.dtype`` (one-hot rows for softmax). ``sample_weight``:
    None or float64, C-contiguous, shape ``(n,)``. Returns ``loss`` (Python float) and ``grad``
    (a new float64 array, shape ``(n_params,)``) where, with ℓ_n the data term of sample n::

        loss = scale * Σ_n s_n ℓ_n       + l2 * Σ_{coef} W²
        grad = scale * Σ_n s_n ∂ℓ_n/∂W   + 2 * l2 * W   (the last term on coefficients only)

    and ``s_n`` the sample weight (1 when None). ``Network`` passes ``scale = 1 / Σ s_n``; the
    distributed objective passes ``scale=1, l2=0`` to get per-partition sums. Inputs are never
    written to. Results are bit-identical for the same inputs and thread count.

Second order: the kernel methods below, with the same arguments, conventions (``scale``, ``l2``,
``sample_weight``, dtype: compute in ``layout.dtype``, sum over samples in float64), determinism
(bit-identical for the same inputs and thread count), memory independent of n, and the rule that
inputs are never written to. ``V`` is float64, C-contiguous and finite, like ``W``. With
``H = ∂²loss/∂W²`` and ``G = scale · Σ_n s_n J_nᵀ Λ_n J_n + 2 l2 · I_coef`` (``J_n = ∂a^L_n/∂W``
the Jacobian of sample n's output pre-activations, ``Λ_n`` the Hessian of its data term ℓ_n in
them: logistic ``diag p(1−p)``, softmax ``s (diag p − p pᵀ)`` with ``s = Σ_k t_k``, identity
``I``, exponential ``diag exp(a)``)::

    H V = scale * Σ_n s_n ∂²ℓ_n/∂W² V  + 2 * l2 * V   (the last term on coefficients only)

``kernel.hessp(W, V, X, T, sample_weight, scale, l2) -> ndarray``
    ``V`` of shape ``(n_params,)``; returns ``H V``, a new float64 array of shape ``(n_params,)``.
``kernel.hessp_block(W, V, X, T, sample_weight, scale, l2, upper=False) -> ndarray``
    ``V`` of shape ``(k, n_params)``, k ≥ 1: k directions, each row in the flat layout of ``W``.
    Returns a new float64 ``(k, n_params)`` array whose row d is ``H V[d]``, computed in one
    pass over the samples that carries all k directions (a kernel may repack ``V`` into its own
    order once per call). ``Network.hess`` calls it on blocks of rows of the identity, so its
    results are the rows of the dense Hessian, with ``upper=True``: only the entries of the
    layers from V[d]'s first nonzero one up are needed (a kernel may stop the backward pass
    there and leave the rest of the row 0, or return the whole row); ``Network.hess`` takes the
    others from the symmetry of H (``layout.param_layer`` says each entry's layer).
``kernel.gauss_newton_product(W, V, ...)``, ``kernel.gauss_newton_block(W, V, ...)``
    The same with ``G`` in place of ``H``.
``kernel.output_jacobian(W, X, row_scale, out) -> None``
    ``row_scale``: float64, C-contiguous, shape ``(n,)``. ``out``: float64, C-contiguous,
    shape ``(n · n_outputs, n_params)``, whose every entry the kernel overwrites: row
    ``n · n_outputs + j`` is ``row_scale[n] · ∂a^L_{n,j}/∂W`` (per sample, not summed).
``kernel.max_directions`` (optional int)
    The most directions ``Network.hess`` passes to one ``hessp_block`` call (default 256).

The NumPy reference (:mod:`fastbp.backends.numpy_rop`) implements all of them by Pearlmutter's
R-operator; its module docstring has the formulas. The compiled kernels implement them too, and
are tested against it.

``kernel.run_epoch(W, X, T, sample_weight, order, batch_size, alpha, optimizer) -> float`` (optional)
    One epoch of minibatch training (``solver="sgd"``/``"adam"`` of the estimators), in one call.
    Kernels without it get :func:`fastbp.backends.stochastic.reference_epoch`, the same epoch in
    Python on ``kernel(...)``: what a compiled ``run_epoch`` must reproduce (to round-off; and
    bit-identically for a given ``n_threads``, like the kernel).

    ``W``: the flat weights, C-contiguous, shape ``(n_params,)``, in ``layout.dtype`` (float32
    for float32 fits), **updated in place**. ``X``, ``T``, ``sample_weight``: as for the kernel
    call, for all n samples (``sample_weight`` may have batches summing to 0). ``order``: None
    (samples in order) or int64 ``(n,)``, the epoch's permutation; ``batch_size``: positive int.
    Batch b holds the rows ``order[b·bs : min((b+1)·bs, n)]`` (the last batch is shorter), in
    that order. ``alpha``: scikit-learn's L2 strength. ``optimizer``: a
    :class:`fastbp.optimizers.SGDOptimizer` or :class:`~fastbp.optimizers.AdamOptimizer` whose
    state arrays have ``W``'s length and dtype and are **updated in place**.

    For each batch in turn, with ``S_b`` its sample count (unweighted) or ``Σ_{n∈b} s_n``:

    1. if ``S_b`` is 0 (every weight zero) the batch is skipped: no loss, no step;
    2. ``loss_b, g = kernel(W, X_b, T_b, s_b, 1 / S_b, alpha / (2 S_b))`` at the current ``W``
       (a float64 gradient, as the kernel returns it);
    3. the optimizer's step, in the state's dtype (``g`` rounded to it first):

       * SGD (``optimizer.kind == "sgd"``; ``η = optimizer.learning_rate``, constant within the
         epoch; ``μ = optimizer.momentum``; ``v = optimizer.velocity``):
         ``u = μ v − η g``; ``v ← u``; if ``optimizer.nesterov``: ``u = μ v − η g``;
         ``W ← W + u``.
       * Adam (``optimizer.kind == "adam"``; ``m``, ``v``, ``t``, ``learning_rate_init``,
         ``beta_1``, ``beta_2``, ``epsilon``): ``t ← t + 1``; ``m ← β₁ m + (1 − β₁) g``;
         ``v ← β₂ v + (1 − β₂) g²``; ``η_t = η₀ √(1 − β₂ᵗ) / (1 − β₁ᵗ)``;
         ``W ← W + (−η_t m) / (√v + ε)``. Afterwards ``optimizer.t`` is the steps taken and
         ``optimizer.learning_rate`` the last ``η_t``.

    Returns ``Σ_b |b| · loss_b`` over the batches not skipped (|b| the batch's sample count,
    weighted or not), a Python float; the caller divides by n for the epoch's ``loss_``. The
    schedules between epochs (invscaling, adaptive), the shuffles and the stopping rules stay in
    the caller (:mod:`fastbp.estimators`). Bad arrays (dtype, shape, an index of ``order``
    outside ``[0, n)``) raise a ValueError before anything is changed.

    The numba and cython kernels have one (:mod:`fastbp.backends.numba_kernels.epoch`,
    ``src_kernels/fb_epoch.pxi``): each batch's blocks are those of a kernel call on that batch
    and the step rounds as NumPy's does, so their weights and optimizer state equal the
    reference's to the bit (on x86-64, float64 and float32; to round-off where a compiler fuses
    multiply-adds), and the returned loss to round-off (its L2 sum is vectorized).
``kernel.epoch_runner(W, X, T, sample_weight, order, batch_size, alpha, optimizer) -> run`` (optional)
    ``run_epoch`` on these arguments with the arrays checked once: each ``run()`` runs one
    epoch as ``run_epoch`` would at that moment (``order``'s contents, ``W``, the optimizer's
    state and rates as they are then); the arrays stay the same objects for the runner's life.
    The estimators make one per fit (:func:`fastbp.backends.stochastic.epoch_runner`; kernels
    without it get their ``run_epoch`` on fixed arguments). The numba kernel has one: its checks
    in Python were a seventh of a lab network's epoch.

Adding a backend is one module and one :func:`register` line below; nothing else branches on
backend names.

A backend module whose compiled part failed to build when fastbp was installed raises
:class:`NotBuiltError` on import: besides being unavailable, it is then named, with the reason,
in a warning the first time ``"auto"`` passes over it (pip does not show a build's messages
unless run with ``-v``, so this is where a user without a compiler learns why and what to do).
"""

from __future__ import annotations

import importlib
import warnings

__all__ = [
    "available_backends",
    "get_backend",
    "register",
    "choose",
    "backend_names",
    "NotBuiltError",
    "BackendNotBuiltWarning",
    "NumbaCompileWarning",
]

_MODULES: dict[str, str] = {}
_LOADED: dict[str, object] = {}
_REASONS: dict[str, str] = {}
_NOT_BUILT: set[str] = set()  # unavailable because the install could not compile them
_WARNED: set[str] = set()


class NotBuiltError(ImportError):
    """Raised by a backend module whose compiled extension could not be built at install time."""


class BackendNotBuiltWarning(UserWarning):
    """``backend="auto"`` passed over a backend that could not be compiled when fastbp was
    installed (once per process and backend)."""


class NumbaCompileWarning(UserWarning):
    """The ``numba`` backend is compiling its kernels: the first call of a dtype and kind of
    network waits several seconds, once (Numba's disk cache keeps them for later processes).

    Said before the wait, once per process, dtype and kind (unit-major or BLAS networks), and only
    when the cache does not already hold them. Silence it like any warning::

        warnings.filterwarnings("ignore", category=fastbp.backends.NumbaCompileWarning)
    """


def register(name, module):
    """Register backend ``name`` as implemented by ``module`` (a dotted path defining BACKEND)."""
    _MODULES[name] = module
    _LOADED.pop(name, None)
    _REASONS.pop(name, None)
    _NOT_BUILT.discard(name)


register("numpy", "fastbp.backends.numpy_backend")
register("numba", "fastbp.backends.numba_backend")
register("cython", "fastbp.backends.cython_backend")


def _load(name):
    if name in _LOADED:
        return _LOADED[name]
    if name in _REASONS:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
        backend = module.BACKEND
    except Exception as exc:  # ImportError, a failed JIT set-up, a missing extension...
        _REASONS[name] = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, NotBuiltError):
            _NOT_BUILT.add(name)
        return None
    _LOADED[name] = backend
    return backend


def backend_names():
    """Every registered backend name plus ``"auto"``, available or not."""
    return ("auto", *_MODULES)


def available_backends():
    """Names of the backends that can be used here, e.g. ``("numpy", "numba", "cython")``."""
    return tuple(name for name in _MODULES if _load(name) is not None)


def get_backend(name):
    """The backend object called ``name``; a ValueError that says why when it is unknown or
    unavailable."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a string, one of {backend_names()}; got {name!r}")
    if name not in _MODULES:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(map(repr, backend_names()))}"
        )
    backend = _load(name)
    if backend is None:
        raise ValueError(f"backend {name!r} is not available here: {_REASONS[name]}")
    return backend


def choose(layout, n_samples):
    """The backend name ``"auto"`` picks for a call on ``n_samples`` samples with ``layout``.

    The compiled kernels win over numpy wherever they exist. ``cython`` is faster than ``numba`` on
    the lab-sized calls and on ``large`` at small n; ``numba`` is faster on some narrow networks
    from thousands of samples on (up to 1.4×). But a fresh environment's first ``numba`` call
    compiles for 8-12 s, and at those sizes it saves 0.1-1 ms a call: a fit of a few hundred
    calls never earns that back, while ``cython`` starts at once. So the rule is an order of
    preference: ``cython``, then ``numba``, then ``numpy``, whichever is available first. Medians
    of the bound objective, each backend alone in its own process (warm Numba cache), on the
    case networks (2 shared cores, AVX-512, float64, every core; as of 410666f and the numba
    pool after it; the multiclass rows ran during a burst of load):

    ==========  =======  ========  =========
    case        n        cython    numba
    ==========  =======  ========  =========
    seed4layer  50       5.1 us    6.8 us
    seed4layer  200      8.4 us    9.9 us
    seed4layer  100 000  3.14 ms   2.22 ms
    multiclass  400      17.9 us   20.6 us
    multiclass  20 000   0.63 ms   0.76 ms
    medium      50       25.1 us   27.9 us
    medium      10 000   1.75 ms   1.66 ms
    medium      50 000   8.72 ms   8.14 ms
    large       200      2.42 ms   2.61 ms
    large       2000     23.7 ms   23.4 ms
    large       20 000   227 ms    230 ms
    ==========  =======  ========  =========

    ``n_samples`` and ``layout`` stay in the signature for a size rule (``numba`` for narrow
    networks on many samples) should that compile cost go away.
    """
    available = available_backends()
    for name in ("cython", "numba", "numpy"):
        if name in available:
            return name
        if name in _NOT_BUILT and name not in _WARNED:
            _WARNED.add(name)
            warnings.warn(
                f"fastbp: backend 'auto' does not use {name!r}, which is not available: "
                f"{_REASONS[name]}",
                BackendNotBuiltWarning,
                stacklevel=4,  # towards the user call that needed a kernel
            )
    raise RuntimeError("no backend is available")  # numpy always is; kept for clarity
