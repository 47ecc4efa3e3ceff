"""The compiled code of the ``numba`` backend: tiled forward pass, δ backpropagation, gradient sums.

Notation is the lab's (exercise 5a): for layer ``l``, ``a`` is the pre-activation, ``z = σ(a)`` the
unit's output, ``δ = ∂ℓ/∂a``, and ``W`` the coefficients ``coef_l`` of shape ``(n_in, n_out)``.

One module per concept, from the bottom up:

=====================  =========================================================================
:mod:`.cache`          the disk cache, keyed on the contents of every module of this package
:mod:`.jit`            the ``njit`` options every module compiles with
:mod:`.meta`           a network's layout as one int64 array, :func:`~.meta.make_meta`
:mod:`.vec8`           explicit 8-lane vectors (llvmlite intrinsics)
:mod:`.transcendental` vectorizable e^x, log, σ, tanh, scalar and on 8 lanes
:mod:`.activations`    z = σ(a) and δ ← σ'(a) δ of the hidden layers
:mod:`.tile_products`  W^T z + b and W δ on tiles, the gradient sums Σ z δ
:mod:`.output_layer`   the loss and δ^L of each output kind
:mod:`.backprop`       block kernels: forward and backward over the tiles of a block
:mod:`.fpenv`          subnormals flushed to zero on every thread of a call
:mod:`.pool`           the thread pool's compiled half: claiming and serving blocks
:mod:`.driver`         the entry point :func:`~.driver.run`, for the caller and the workers
:mod:`.optimizers`     SGD's and Adam's steps on the flat weights (the estimators' solvers)
:mod:`.epoch`          the entry point :func:`~.epoch.run_epoch`: a whole minibatch epoch
:mod:`.pool_threads`   the thread pools' Python half: worker threads, sleep and wake, fork
:mod:`.curvature`      second order: δ^L and the loss's curvature Λ R{a^L} of each output kind
:mod:`.rproducts`      second order: two-term tile products, the σ'' term, sparse directions
:mod:`.roperator`      second order: block kernels of the R-operator (H V, G V for k directions)
:mod:`.second_order`   second order: entry points :func:`~.second_order.run_curvature` (with its
                       own pool) and :func:`~.second_order.output_jacobian`
=====================  =========================================================================

How the work is laid out
------------------------
* Samples are processed in **tiles** of at most ``tile`` samples. Inside a tile every layer is
  stored *unit-major*: ``Z_l`` has shape ``(n_units, ts)``, one contiguous row per unit, so every
  inner loop runs over the samples of the tile, contiguous in memory, and vectorizes whatever the
  layer widths are. Memory is per tile, never per sample count.
* Layers that are wide (flagged in ``meta``) hand their tile products to BLAS through ``np.dot``.
* The samples are split into ``n_blocks`` fixed blocks; block ``b`` accumulates its loss and
  gradient into its own float64 row ``gbuf[b]``. The rows are reduced in the fixed order
  ``0, 1, ..., n_blocks - 1``, so results are bit-identical for a given split whichever threads
  ran the blocks (the caller alone or with the workers of :mod:`.pool_threads`).
* float32 computes the layers in float32, evaluates the transcendental functions and the loss in
  float64, and accumulates loss and gradient in float64.

The integer array ``meta`` carries the layout, so a new architecture reuses the compiled code:
only the dtype selects a specialization.

Adding to it
------------
A new computation over the samples is a new block kernel (the signature is in :mod:`.backprop`)
and, when it needs one, a new entry point beside :func:`~.driver.run` that passes its block kernel
to the pool's ``_claim``/``_serve``/``_run_job``. An entry point whose workers must serve its
own kind of job gets its own pool (:func:`.pool_threads.get_pool` with a subclass of
:class:`.pool_threads.Pool` whose ``_serve_once`` runs it: :class:`.pool_threads.EpochPool` for
:func:`.epoch.run_epoch`, :class:`.second_order.CurvaturePool` for second order): its workers live
in its compiled code, so a process that runs only one kind of call compiles that entry point
alone. The passes of the R-operator (Hessian-vector products: R{a}, R{z} forward, R{δ} backward)
are in :mod:`.roperator`. Every module of the package is part of the cache stamp, so nothing else
is needed to keep the cache fresh.
"""

from .cache import PACKAGE_STAMP, is_cached

__all__ = ["PACKAGE_STAMP", "is_cached"]
