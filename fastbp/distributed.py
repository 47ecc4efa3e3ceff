"""The loss and gradient of a :class:`fastbp.Network` over a Dask cluster.

The full-batch loss is a sum over samples, so it splits over the rows of ``X``: every worker runs
the network's kernel (``scale=1, l2=0``, see :mod:`fastbp.backends`) on the partitions it holds
and returns their sums; the client adds them in partition order, divides by the total sample
weight and adds the L2 term once. :class:`DaskObjective` is called exactly like the objective
:meth:`fastbp.Network.bind` returns, so ``scipy.optimize.minimize`` drives a cluster as it drives
one machine.

Design
------
* **Validated and placed once.** At construction every contract check of :class:`fastbp.Network`
  runs (NumPy input: on the client, by the same code as ``bind``; Dask input: the shape checks on
  the client, the value checks on the workers, per partition) and the validated partitions are
  held on the workers as Dask futures. Nothing is computed from the data before they pass.
* **No data moves per call.** A call sends ``W`` with each partition's task and gets back one
  loss and one gradient per partition: ``O(n_partitions × n_params)`` traffic, which is
  ``O(workers × n_params)`` with the default of one partition per worker.
* **Warm kernels.** Each worker process prepares the kernel once per network configuration and
  keeps it (:func:`_kernel`); preparing the partition also runs it once, so a JIT backend has
  compiled before the first call.
* **Deterministic.** The per-partition sums are reduced on the client in partition order, so the
  result does not depend on which worker computed which partition.
* **Faults.** Every partition keeps its lineage: a partition of a Dask array can be recomputed
  from the array's graph, and a partition of a NumPy array is created by a task that carries the
  validated rows, which the scheduler keeps. When a worker dies, the scheduler recomputes the
  lost partitions on the surviving (or restarted) workers and the call completes with the same
  result. When it cannot (no worker left within ``timeout``, or a task that keeps killing
  workers), the call raises :class:`DistributedObjectiveError`; a partial sum is never returned.
  Losing every worker at once loses the partitions for good (Dask marks them lost): build a new
  objective then.
"""

from __future__ import annotations

import math
import threading
import time
from typing import NamedTuple

import numpy as np

from . import backends
from ._validation import _as_numeric, check_n_threads, check_weights, check_X
from .layout import Layout

__all__ = ["DaskObjective", "DistributedObjectiveError"]

#: A call checks every _POLL_S seconds whether a worker it waits on has died (a call that
#: finishes sooner never waits for it).
_POLL_S = 0.5
#: Bound on the wake-ups of one call (with no timeout: about 3 days of waiting).
_MAX_ROUNDS = 500_000


class DistributedObjectiveError(RuntimeError):
    """A call of :class:`DaskObjective` that could not be completed on the cluster."""


# ---------------------------------------------------------------------------- worker side
class _Spec(NamedTuple):
    """What a worker needs to prepare the kernel: hashable, small, picklable."""

    layer_sizes: tuple
    activation: str
    output: str
    dtype: str
    backend: str
    n_threads: int | None  # None: the thread count of the worker that runs the kernel


class _Partition(NamedTuple):
    """One validated block of rows, as the kernel takes it."""

    X: np.ndarray
    T: np.ndarray
    sample_weight: np.ndarray | None


# per worker process: _Spec (with the thread count resolved) -> (kernel, lock)
_KERNELS: dict = {}
_KERNELS_LOCK = threading.Lock()


def _worker_threads():
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):  # not running on a worker
        return check_n_threads(None)


def _kernel(spec):
    """The prepared kernel for ``spec`` in this process, and the lock that serializes its calls.

    A kernel may keep scratch buffers and already uses ``n_threads`` threads, so two Dask threads
    of one worker never run it at the same time.
    """
    if spec.n_threads is None:
        spec = spec._replace(n_threads=_worker_threads())
    with _KERNELS_LOCK:
        entry = _KERNELS.get(spec)
        if entry is None:
            layout = Layout(spec.layer_sizes, spec.activation, spec.output, np.dtype(spec.dtype))
            kernel = backends.get_backend(spec.backend).prepare(layout, spec.n_threads)
            entry = _KERNELS[spec] = (kernel, threading.Lock())
    return entry


def _layout(spec):
    return Layout(spec.layer_sizes, spec.activation, spec.output, np.dtype(spec.dtype))


def _warm(spec, part):
    """Prepare this worker's kernel and run it once on one row (compiles a JIT backend)."""
    kernel, lock = _kernel(spec)
    n_params = _layout(spec).n_params
    sw = None if part.sample_weight is None else part.sample_weight[:1]
    with lock:
        kernel(np.zeros(n_params), part.X[:1], part.T[:1], sw, 1.0, 0.0)


def _place_partition(spec, X, T, sample_weight):
    """Task that creates a partition from rows validated on the client (it carries them, so the
    scheduler can recreate the partition if its worker dies)."""
    part = _Partition(X, T, sample_weight)
    _warm(spec, part)
    return part


def _check_partition_weight(sample_weight, n_samples):
    """Per-partition sample weights: the checks of ``check_sample_weight`` except "not all zero",
    which only the total must satisfy (a partition of zero weights is fine)."""
    if sample_weight is None:
        return None
    sw = _as_numeric(sample_weight, "sample_weight")
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight has shape {sw.shape} but X has {n_samples} samples")
    sw = np.ascontiguousarray(sw, dtype=np.float64)
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (sw < 0).any():
        raise ValueError("sample_weight must be non-negative")
    return sw


def _validate_partition(spec, X, y, sample_weight):
    """Task that validates one block of a Dask array with Network's checks and encodes y."""
    from ._validation import check_targets

    layout = _layout(spec)
    X = check_X(X, layout)
    T = check_targets(y, layout, X.shape[0])
    sw = _check_partition_weight(sample_weight, X.shape[0])
    part = _Partition(X, T, sw)
    _warm(spec, part)
    return part


def _summary(part):
    """``(n_samples, weight_sum)`` of a partition."""
    n = part.X.shape[0]
    return n, float(n if part.sample_weight is None else part.sample_weight.sum())


def _partition_sums(part, spec, W):
    """Task run per call: the partition's weighted data-loss sum and gradient sum at ``W``."""
    kernel, lock = _kernel(spec)
    with lock:
        return kernel(W, part.X, part.T, part.sample_weight, 1.0, 0.0)


# ---------------------------------------------------------------------------- client side
def _is_dask_array(a):
    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is required by this module anyway
        return False
    return isinstance(a, da.Array)


def _boundaries(n, k):
    """Row boundaries of ``k`` near-equal contiguous blocks of ``n`` rows."""
    return [(i * n) // k for i in range(k + 1)]


class DaskObjective:
    """``f(W) -> (loss, grad)`` of a network on data held by the workers of a Dask cluster.

    The distributed counterpart of ``net.bind(X, y, sample_weight)``: the same loss and gradient
    (equal to round-off; the sums are only grouped by partition), callable by
    ``scipy.optimize.minimize(obj, W0, jac=True)``.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster that holds the data and runs the kernels.
    net : fastbp.Network
        The network; its backend, dtype and ``l2`` are used. ``backend="auto"`` is resolved once
        here, on the client, for the total number of samples, so every worker runs the same
        backend (it must be available on the workers).
    X : array-like or dask.array.Array, shape (n_samples, n_inputs)
        Inputs. A NumPy (or array-like) ``X`` is validated here and split into ``n_partitions``
        contiguous row blocks. A Dask array is split along its row chunks (columns are merged
        into one chunk) and is never computed on the client.
    y : array-like or dask.array.Array
        Targets, as :meth:`fastbp.Network.bind` takes them. With a Dask ``X`` it may be a NumPy
        or a Dask array; it is re-chunked to ``X``'s rows.
    sample_weight : array-like or dask.array.Array, optional
        Non-negative weights, not all zero. Same rules as ``y``.
    n_partitions : int, optional
        NumPy input: number of row blocks, default one per worker connected now (at most
        ``n_samples``). Dask input: default keeps ``X``'s row chunks; an int re-chunks the rows
        into that many near-equal blocks. Each partition returns one gradient per call, so keep
        it near the number of workers (a few per worker at most).
    n_threads : int, optional
        Threads per kernel call on a worker. None (default) uses the worker's own thread count
        (``threads_per_worker``). Calls on one worker are serialized.
    timeout : float, optional
        Seconds a call (and the construction) may wait for the cluster before it raises
        :class:`DistributedObjectiveError`; None (default) waits as long as it takes, e.g.
        while lost partitions are recomputed.

    Attributes
    ----------
    network : Network
    n_samples : int
    n_partitions : int
    partition_sizes : tuple of int
        Rows per partition, in reduction order.
    weight_sum : float
        Σ sample weights (``n_samples`` when unweighted); the loss is divided by it.
    backend : str
        The backend the workers run.

    Raises
    ------
    ValueError, TypeError
        At construction, for every bad input of :class:`fastbp.Network`'s contract, before any
        call. With Dask input, the value checks (NaN, labels, weights) run on the workers and
        their error is raised here as it was raised there.

    Notes
    -----
    Per call, the client sends ``W`` with each partition's task and receives each partition's
    ``(Σ s_n ℓ_n, Σ s_n ∂ℓ_n/∂W)`` from the kernel with ``scale=1, l2=0``. It adds them in
    partition order, then returns ``loss = Σ / Σ s_n + λ Σ_{coef} W²`` and
    ``grad = Σ / Σ s_n + 2 λ W`` (on coefficients), as :class:`fastbp.BoundObjective` does.
    Results are bit-identical from call to call, whichever worker computes a partition, as long
    as the kernels run with the same thread count.

    If a worker dies, its partitions are recomputed elsewhere from their lineage and the call
    returns the same result. For a NumPy ``X`` that lineage is the task that placed the rows,
    kept by the scheduler: the scheduler's process then holds a copy of the data (with
    ``LocalCluster`` that is the client's process). Data larger than one machine should come in
    as a Dask array read from storage, whose graph is the lineage.

    Examples
    --------
    >>> from distributed import Client, LocalCluster            # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, host="127.0.0.1"))  # doctest: +SKIP
    >>> obj = DaskObjective(client, net, X, y)                    # doctest: +SKIP
    >>> res = minimize(obj, net.init_weights(0), jac=True, method="L-BFGS-B")  # doctest: +SKIP
    """

    def __init__(
        self, client, net, X, y, sample_weight=None, *, n_partitions=None, n_threads=None, timeout=None
    ):
        from .network import Network

        if not isinstance(net, Network):
            raise TypeError(f"net must be a fastbp.Network, got {type(net).__name__}")
        if not all(hasattr(client, a) for a in ("submit", "gather", "scheduler_info")):
            raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
        if n_partitions is not None:
            if isinstance(n_partitions, (bool, np.bool_)) or not isinstance(n_partitions, (int, np.integer)):
                raise TypeError(f"n_partitions must be None or a positive integer, got {n_partitions!r}")
            if n_partitions < 1:
                raise ValueError(f"n_partitions must be None or a positive integer, got {n_partitions!r}")
            n_partitions = int(n_partitions)
        if n_threads is not None:
            n_threads = check_n_threads(n_threads)
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
                raise ValueError(f"timeout must be None or a positive number of seconds, got {timeout!r}")
            timeout = float(timeout)

        self.client = client
        self.network = net
        self.timeout = timeout
        self._n_params = net.n_params
        self._n_coef = net.layout.n_coef
        self._l2 = net.l2
        self._n_threads = n_threads
        self._parts = []

        if any(_is_dask_array(a) for a in (X, y, sample_weight)):
            self._from_dask(X, y, sample_weight, n_partitions)
        else:
            self._from_numpy(X, y, sample_weight, n_partitions)

    # ------------------------------------------------------------------------- construction
    def _spec(self, n_samples):
        net = self.network
        name = net.backend if net.backend != "auto" else backends.choose(net.layout, n_samples)
        self.backend = name
        return _Spec(net.layer_sizes, net.activation, net.output, net.dtype.str, name, self._n_threads)

    def _n_workers(self):
        return len(self.client.nthreads())

    def _from_numpy(self, X, y, sample_weight, n_partitions):
        # the same checks, in the same order, as Network.bind
        X, T, sw, _ = self.network._validate(X, y, sample_weight)
        n = X.shape[0]
        spec = self._spec(n)
        k = min(n, n_partitions or max(1, self._n_workers()))
        bounds = _boundaries(n, k)
        # no worker restrictions: the scheduler spreads these root tasks over the workers, and a
        # task restricted to a worker that died would never run again, even loosely restricted
        parts = [
            self.client.submit(
                _place_partition, spec, X[a:b], T[a:b], None if sw is None else sw[a:b],
                pure=False, key=f"fastbp-partition-{i}-{_token()}",
            )
            for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
        ]
        self._finish(spec, parts)

    def _from_dask(self, X, y, sample_weight, n_partitions):
        import dask
        import dask.array as da

        layout = self.network.layout
        X = X if _is_dask_array(X) else da.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_inputs), got shape {X.shape}")
        if any(math.isnan(c) for c in X.chunks[0]):
            raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
        n = int(X.shape[0])
        if n == 0:
            raise ValueError(f"X is empty: shape {X.shape}, at least one sample is required")
        if X.shape[1] != layout.n_inputs:
            raise ValueError(
                f"X has {X.shape[1]} columns but the network has {layout.n_inputs} inputs (layer_sizes[0])"
            )
        if n_partitions is not None:
            bounds = _boundaries(n, min(n, n_partitions))
            rows = tuple(b - a for a, b in zip(bounds, bounds[1:]))
        else:
            rows = X.chunks[0]
        X = X.rechunk((rows, -1))

        y = y if _is_dask_array(y) else da.asarray(_as_numeric(y, "y"))
        if y.ndim == 0 or y.ndim > 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} samples but X has {n}")
        y = y.rechunk((rows,) if y.ndim == 1 else (rows, -1))
        if sample_weight is not None:
            sw = sample_weight if _is_dask_array(sample_weight) else da.asarray(
                _as_numeric(sample_weight, "sample_weight")
            )
            if sw.ndim != 1:
                raise ValueError(f"sample_weight must be 1-D, got shape {sw.shape}")
            if sw.shape[0] != n:
                raise ValueError(f"sample_weight has {sw.shape[0]} entries but X has {n} samples")
            sw_blocks = sw.rechunk((rows,)).to_delayed().ravel()
        else:
            sw_blocks = [None] * len(rows)

        spec = self._spec(n)
        X_blocks = X.to_delayed().ravel()
        y_blocks = y.to_delayed().ravel()
        validate = dask.delayed(_validate_partition, pure=False)
        tasks = [
            validate(spec, xb, yb, wb, dask_key_name=f"fastbp-partition-{i}-{_token()}")
            for i, (xb, yb, wb, r) in enumerate(zip(X_blocks, y_blocks, sw_blocks, rows))
            if r > 0  # an empty chunk contributes nothing
        ]
        self._finish(spec, self.client.compute(tasks))

    def _finish(self, spec, parts):
        """Wait for the partitions, raising the first validation error; record their sizes."""
        self._spec_ = spec
        self._parts = list(parts)
        try:
            self._wait(self._parts, self._deadline())
            errors = [f for f in self._parts if f.status == "error"]
            if errors:
                exc = errors[0].exception()
                if isinstance(exc, (ValueError, TypeError)):  # a contract error found on a worker
                    raise exc
            summaries = self._map(_summary)
        except BaseException:
            self.close()
            raise
        self.partition_sizes = tuple(s[0] for s in summaries)
        self.n_samples = int(sum(self.partition_sizes))
        weight_sum = 0.0
        for _, w in summaries:  # fixed order
            weight_sum += w
        if not weight_sum > 0:
            self.close()
            raise ValueError("sample_weight must not be all zero")
        self.weight_sum = weight_sum
        self.n_partitions = len(self._parts)

    def _deadline(self):
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _wait(self, futures, deadline, poll=None):
        """Wait for ``futures`` until ``deadline`` (or ``poll`` seconds); False if some are pending."""
        from distributed import wait

        step = poll
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.client.cancel(futures)
                raise DistributedObjectiveError(
                    f"the cluster did not answer within timeout={self.timeout} s "
                    f"({len(self.client.nthreads())} workers, {self._n_lost()} of "
                    f"{len(self._parts)} partitions lost); no result was returned"
                )
            step = left if step is None else min(step, left)
        try:
            wait(futures, timeout=step)
        except TimeoutError:
            if poll is None:
                return self._wait(futures, deadline, poll)  # raises the clear error above
            return False
        return True

    def _n_lost(self):
        return sum(p.status != "finished" for p in self._parts)

    def _map(self, func, *args):
        """``[func(part, *args) for part in partitions]`` on the workers, in partition order.

        Each task is pinned to the workers that hold its partition, so the scheduler never copies
        a partition to balance load (no data moves per call). If a pinned worker dies, the task
        is resubmitted unpinned: the scheduler recomputes the lost partition from its lineage
        and the task runs where it lands. Any other failure raises DistributedObjectiveError;
        nothing partial is ever returned.
        """
        client, parts = self.client, self._parts
        deadline = self._deadline()
        running = {}  # partition index -> (future, addresses it is pinned to)

        def submit(indices):
            holders = client.who_has([parts[i] for i in indices])
            for i in indices:
                where = set(holders.get(parts[i].key, ()))
                pin = {"workers": sorted(where), "allow_other_workers": False} if where else {}
                running[i] = (client.submit(func, parts[i], *args, pure=False, **pin), where)

        def fail(what, exc):
            client.cancel([f for f, _ in running.values()])
            raise DistributedObjectiveError(
                f"{what} ({type(exc).__name__}: {exc}); no partial result was returned"
            ) from exc

        submit(range(len(parts)))
        for _round in range(_MAX_ROUNDS):
            futures = [running[i][0] for i in range(len(parts))]
            if self._wait(futures, deadline, poll=_POLL_S):
                for i, f in enumerate(futures):
                    if f.status in ("error", "cancelled"):
                        try:
                            f.result()
                        except BaseException as exc:  # noqa: B036 - re-raised as a clear error
                            if not isinstance(exc, Exception):
                                raise
                            fail(f"partition {i} could not be computed on the cluster", exc)
                try:
                    # a result whose worker dies now is recomputed: wait for it a bounded time
                    return client.sync(_gather_async, client, futures, callback_timeout=_POLL_S)
                except TimeoutError:
                    pass
                except Exception as exc:
                    fail("the partition results could not be gathered", exc)
            alive = set(client.nthreads())
            # pinned to a dead worker, or a finished result lost with its worker: both wait forever
            stranded = [
                i
                for i, (f, where) in running.items()
                if f.status == "lost" or (f.status == "pending" and where and not where & alive)
            ]
            if stranded:
                client.cancel([running[i][0] for i in stranded])
                submit(stranded)
        fail("the workers kept failing", RuntimeError(f"{_MAX_ROUNDS} rounds"))

    # ------------------------------------------------------------------------------- calls
    def __call__(self, W):
        """``(loss, grad)`` at ``W``: a Python float and a new float64 array, shape (n_params,)."""
        if not self._parts:
            raise DistributedObjectiveError("this DaskObjective was closed")
        W = check_weights(W, self._n_params)
        results = self._map(_partition_sums, self._spec_, W)
        if len(results) != len(self._parts):  # defensive: never a partial sum
            raise DistributedObjectiveError(f"got {len(results)} of {len(self._parts)} partition sums")
        loss, grad = 0.0, np.zeros(self._n_params)
        for part_loss, part_grad in results:  # partition order: the same sum wherever they ran
            loss += part_loss
            grad += part_grad
        scale = 1.0 / self.weight_sum
        loss *= scale
        grad *= scale
        if self._l2:
            coef = W[: self._n_coef]
            loss += self._l2 * float(coef @ coef)
            grad[: self._n_coef] += (2.0 * self._l2) * coef
        return float(loss), grad

    def loss_and_grad(self, W):
        """Same as calling the objective: ``(loss, grad)`` at ``W``."""
        return self(W)

    # --------------------------------------------------------------------------- lifecycle
    def close(self):
        """Release the partitions held on the workers; the objective cannot be called after."""
        parts, self._parts = self._parts, []
        if parts:
            try:
                self.client.cancel(parts)
            except Exception:  # the client may already be closed: nothing is held then
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = f"{self.n_samples} samples in {self.n_partitions} partitions" if self._parts else "closed"
        return f"<DaskObjective of {self.network!r} on {state}>"


async def _gather_async(client, futures):
    return await client.gather(futures, asynchronous=True)


def _token():
    import uuid

    return uuid.uuid4().hex[:12]
