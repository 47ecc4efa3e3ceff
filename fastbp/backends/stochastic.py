"""One epoch of minibatch training: the ``run_epoch`` kernel method and its NumPy reference.

An epoch, as scikit-learn's ``_fit_stochastic`` runs it, is a sweep over the samples in minibatches,
each batch's loss and gradient followed by one optimizer step on the flat weights. A kernel may
run a whole epoch in one compiled call by offering ``run_epoch`` (the protocol is in
:mod:`fastbp.backends`); :func:`run_epoch` calls it, or, for kernels without it,
:func:`reference_epoch`: the same epoch in Python, one kernel call and one
:meth:`fastbp.optimizers.SGDOptimizer.step` (or Adam's) per batch. The reference is what compiled
epochs are tested against.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["run_epoch", "epoch_function", "epoch_runner", "reference_epoch", "batch_penalty"]


def batch_penalty(alpha, batch_weight):
    """``(scale, l2)`` of a batch of total sample weight ``batch_weight`` (its sample count when
    unweighted), as scikit-learn's ``_backprop`` weighs it: the data term is a weighted mean
    (``scale = 1 / batch_weight``) and the penalty ``alpha / (2 batch_weight) Σ coef²``."""
    return 1.0 / batch_weight, alpha / (2.0 * batch_weight)


def reference_epoch(kernel, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
    """One epoch, batch by batch, on any kernel's ``loss_and_grad`` (see :func:`run_epoch`)."""
    n = X.shape[0] if order is None else order.shape[0]
    W64 = W if W.dtype == np.float64 else None
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if order is None:
            rows = slice(start, stop)
        else:
            rows = order[start:stop]
        Xb, Tb = X[rows], T[rows]
        if sample_weight is None:
            swb, weight = None, float(stop - start)
        else:
            swb = sample_weight[rows]
            weight = float(swb.sum())
            if not weight > 0.0:  # every sample of the batch has weight zero: not a batch at all
                continue
        scale, l2 = batch_penalty(alpha, weight)
        loss, grad = kernel(W if W64 is not None else W.astype(np.float64), Xb, Tb, swb, scale, l2)
        total += loss * (stop - start)
        optimizer.step(W, grad)
    return total


def epoch_function(kernel):
    """The epoch of ``kernel`` as one callable ``f(W, X, T, sample_weight, order, batch_size,
    alpha, optimizer) -> float`` (see :func:`run_epoch`): its own ``run_epoch`` where it has one,
    else :func:`reference_epoch` on it. Looked up once per fit, not once per epoch."""
    own = getattr(kernel, "run_epoch", None)
    if own is not None:
        return own
    return functools.partial(reference_epoch, kernel)


def epoch_runner(kernel, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
    """The epochs of one fit as ``run() -> float``: each call one epoch, as
    ``run_epoch(kernel, W, X, T, sample_weight, order, batch_size, alpha, optimizer)`` would run
    it then (with ``order``'s contents, ``W`` and the optimizer's state as they are at the call).

    A kernel with ``epoch_runner`` (the numba one) checks the arrays once here instead of once an
    epoch; other kernels get their ``run_epoch`` (or the reference) on these arguments. The arrays
    must stay the same objects for the runner's life; ``order`` may be shuffled in place."""
    own = getattr(kernel, "epoch_runner", None)
    if own is not None:
        return own(W, X, T, sample_weight, order, batch_size, alpha, optimizer)
    return functools.partial(epoch_function(kernel), W, X, T, sample_weight, order, batch_size, alpha, optimizer)


def run_epoch(kernel, W, X, T, sample_weight, order, batch_size, alpha, optimizer):
    """One epoch of minibatch training, in place on ``W`` and ``optimizer``'s state.

    Parameters
    ----------
    kernel
        A backend kernel (:mod:`fastbp.backends`); its ``run_epoch`` is used when it has one.
    W : ndarray, shape (n_params,)
        The flat weights in the layout's compute dtype, C-contiguous; updated in place.
    X, T : ndarray
        The training inputs ``(n, n_inputs)`` and encoded targets ``(n, n_outputs)``, C-contiguous,
        in the compute dtype, as a kernel call takes them.
    sample_weight : ndarray of float64, shape (n,), or None
        Non-negative weights (a batch may sum to zero: it is skipped).
    order : ndarray of int64, shape (n,), or None
        The order of the samples in this epoch (batch b is ``order[b·bs : (b+1)·bs]``); None for
        ``0, 1, ..., n − 1``.
    batch_size : int
        Samples per batch; the last batch holds the rest.
    alpha : float
        scikit-learn's L2 strength (see :func:`batch_penalty`).
    optimizer : fastbp.optimizers.SGDOptimizer or AdamOptimizer
        Its flat state (same length and dtype as ``W``) and step counter are updated in place.

    Returns
    -------
    float
        Σ over batches of (batch size × the batch's loss at the weights before its step), which
        scikit-learn divides by n to report an epoch's ``loss_``.
    """
    own = getattr(kernel, "run_epoch", None)
    if own is not None:
        return float(own(W, X, T, sample_weight, order, batch_size, alpha, optimizer))
    return reference_epoch(kernel, W, X, T, sample_weight, order, batch_size, alpha, optimizer)
