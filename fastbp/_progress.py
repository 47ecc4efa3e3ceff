"""A dependency-free text progress bar for L-BFGS fits (``verbose=True`` in the estimators)."""

from __future__ import annotations

import sys
import time

import numpy as np


class LBFGSProgress:
    """Draw ``iteration, loss, gradient norm`` on one line of ``stream``, redrawn with ``\\r``.

    Wrap the objective with :meth:`objective` (to see each gradient) and pass :meth:`callback`
    to ``scipy.optimize.minimize``; call :meth:`close` when the optimizer returns.

    Parameters
    ----------
    max_iter : int
        Iteration budget, the length of the bar.
    stream : file-like, default=sys.stderr
    width : int, default=30
        Characters in the bar.
    min_interval : float, default=0.1
        Seconds between redraws, so printing never slows a fast fit down; the last iteration is
        always drawn by :meth:`close`.
    """

    def __init__(self, max_iter, stream=None, width=30, min_interval=0.1):
        self.max_iter = max(int(max_iter), 1)
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.min_interval = min_interval
        self.n_iter = 0
        self.loss = float("nan")
        self.grad_norm = float("nan")
        self._last_grad = None
        self._last_draw = -float("inf")
        self._start = time.perf_counter()

    def objective(self, fun):
        """``fun`` wrapped to remember the last gradient (that of the accepted point at the end of
        each L-BFGS iteration, as the line search evaluates it last)."""

        def wrapped(W):
            loss, grad = fun(W)
            self._last_grad = grad
            return loss, grad

        return wrapped

    def callback(self, intermediate_result):
        """scipy's per-iteration callback: record and maybe redraw."""
        self.n_iter += 1
        self.loss = float(intermediate_result.fun)
        if self._last_grad is not None:
            # the infinity norm: what L-BFGS-B compares with gtol (= the estimators' tol)
            self.grad_norm = float(np.max(np.abs(self._last_grad)))
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval:
            self._draw()
            self._last_draw = now

    def line(self):
        """The text of the progress line."""
        done = min(self.n_iter / self.max_iter, 1.0)
        filled = int(round(done * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.max_iter))
        return (
            f"L-BFGS [{bar}] iter {self.n_iter:>{digits}}/{self.max_iter}  "
            f"loss {self.loss:.6g}  |grad|_inf {self.grad_norm:.3g}  "
            f"{time.perf_counter() - self._start:.1f}s"
        )

    def _draw(self):
        self.stream.write("\r" + self.line())
        self.stream.flush()

    def close(self, message=None):
        """Draw the final state, end the line, and print ``message`` (e.g. why L-BFGS stopped)."""
        self._draw()
        self.stream.write("\n")
        if message:
            self.stream.write(f"L-BFGS stopped: {message}\n")
        self.stream.flush()
