"""The flat weight layout shared by every backend, and the names of activations and outputs.

Conventions (stated once, used everywhere in fastbp)
----------------------------------------------------
* Layer ``l`` has ``layer_sizes[l]`` units. Between layer ``l`` and ``l + 1`` sit a coefficient
  matrix ``coef_l`` of shape ``(layer_sizes[l], layer_sizes[l + 1])`` and an intercept vector
  ``intercept_l`` of shape ``(layer_sizes[l + 1],)``, so that ``a^{l+1} = z^l @ coef_l + intercept_l``
  and ``z^{l+1} = σ(a^{l+1})`` (the lab's notation: ``a`` before, ``z`` after the activation).
* The flat vector ``W`` is scikit-learn's packing: every ``coef_l`` flattened in C order, layer by
  layer, then every ``intercept_l``, layer by layer. The L2 penalty applies to ``W[:n_coef]`` only.
* Activation and output codes are small integers so compiled kernels can branch on them cheaply.
"""

from __future__ import annotations

import numbers

import numpy as np

#: Hidden activations, in kernel-code order (``ACTIVATIONS.index(name)`` is the code).
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
#: Accepted spellings of hidden activations.
ACTIVATION_ALIASES = {"sigmoid": "logistic"}
#: Output layers, in kernel-code order.
OUTPUTS = ("identity", "logistic", "softmax", "exponential")
#: Compute dtypes.
DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def _check_choice(value, choices, aliases, what):
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, one of {choices}; got {value!r}")
    name = aliases.get(value, value)
    if name not in choices:
        listed = ", ".join(repr(c) for c in (*choices, *aliases))
        raise ValueError(f"unknown {what} {value!r}; choose one of {listed}")
    return name


def check_layer_sizes(layer_sizes):
    """Return ``layer_sizes`` as a tuple of positive ints, or raise a clear error."""
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(
            f"layer_sizes must be a sequence of positive integers, got {layer_sizes!r}"
        )
    sizes = []
    for s in layer_sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(f"layer_sizes must hold positive integers, got {s!r} in {layer_sizes!r}")
        if s < 1:
            raise ValueError(f"layer_sizes must hold positive integers, got {s!r} in {layer_sizes!r}")
        sizes.append(int(s))
    if len(sizes) < 2:
        raise ValueError(
            f"layer_sizes needs at least two entries (inputs and outputs), got {layer_sizes!r}"
        )
    return tuple(sizes)


class Layout:
    """The shapes, offsets and kernel codes of one network, computed once.

    Parameters
    ----------
    layer_sizes : sequence of int
        Units per layer: inputs, hidden layers..., outputs.
    activation : {"logistic", "sigmoid", "tanh", "relu", "identity"}
        Hidden activation.
    output : {"logistic", "softmax", "identity", "exponential"} or None
        Output layer; None infers logistic for one output unit and softmax for more.
    dtype : np.float64 or np.float32
        Compute dtype.

    Attributes
    ----------
    coef_shapes, intercept_shapes : tuple of tuple
    coef_offsets, intercept_offsets : ndarray of int64
        Start of each block in the flat vector; ``coef_offsets[-1] == n_coef`` and
        ``intercept_offsets[-1] == n_params`` close the last block.
    sizes : ndarray of int64
        ``layer_sizes`` as an array, for kernels.
    param_layer : ndarray of int64, shape (n_params,)
        The weight layer (0 for the inputs' coefficients and the first hidden layer's
        intercepts) each entry of the flat vector belongs to.
    activation_code, output_code : int
        Index into :data:`ACTIVATIONS` and :data:`OUTPUTS`.
    """

    def __init__(self, layer_sizes, activation="logistic", output=None, dtype=np.float64):
        self.layer_sizes = check_layer_sizes(layer_sizes)
        self.activation = _check_choice(activation, ACTIVATIONS, ACTIVATION_ALIASES, "activation")
        if output is None:
            output = "logistic" if self.layer_sizes[-1] == 1 else "softmax"
        self.output = _check_choice(output, OUTPUTS, {}, "output")
        if self.output == "softmax" and self.layer_sizes[-1] < 2:
            raise ValueError("output='softmax' needs at least 2 output units (layer_sizes[-1] >= 2)")
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be np.float64 or np.float32, got {dtype!r}") from exc
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be np.float64 or np.float32, got {dtype!r}")

        sizes = self.layer_sizes
        self.n_layers = len(sizes)
        self.n_inputs = sizes[0]
        self.n_outputs = sizes[-1]
        self.coef_shapes = tuple((sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))
        self.intercept_shapes = tuple((sizes[i + 1],) for i in range(len(sizes) - 1))
        coef_sizes = [a * b for a, b in self.coef_shapes]
        self.n_coef = int(sum(coef_sizes))
        self.coef_offsets = np.concatenate(([0], np.cumsum(coef_sizes))).astype(np.int64)
        self.intercept_offsets = (self.n_coef + np.concatenate(([0], np.cumsum(sizes[1:])))).astype(
            np.int64
        )
        self.n_params = int(self.intercept_offsets[-1])
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.activation_code = ACTIVATIONS.index(self.activation)
        self.output_code = OUTPUTS.index(self.output)
        self.param_layer = np.empty(self.n_params, dtype=np.int64)
        for layer in range(len(coef_sizes)):
            self.param_layer[self.coef_offsets[layer] : self.coef_offsets[layer + 1]] = layer
            self.param_layer[self.intercept_offsets[layer] : self.intercept_offsets[layer + 1]] = layer
        for arr in (self.coef_offsets, self.intercept_offsets, self.sizes, self.param_layer):
            arr.setflags(write=False)

    def __repr__(self):
        return (
            f"Layout({list(self.layer_sizes)}, activation={self.activation!r}, "
            f"output={self.output!r}, dtype={self.dtype.name})"
        )

    def unpack(self, W):
        """Views of ``W`` as ``(coefs, intercepts)``: lists of ``(n_in, n_out)`` and ``(n_out,)``."""
        coefs = [
            W[self.coef_offsets[i] : self.coef_offsets[i + 1]].reshape(shape)
            for i, shape in enumerate(self.coef_shapes)
        ]
        intercepts = [
            W[self.intercept_offsets[i] : self.intercept_offsets[i + 1]]
            for i in range(len(self.intercept_shapes))
        ]
        return coefs, intercepts

    def pack(self, coefs, intercepts):
        """Flatten ``coefs`` and ``intercepts`` into a new float64 vector (scikit-learn's order)."""
        n = len(self.coef_shapes)
        if len(coefs) != n or len(intercepts) != n:
            raise ValueError(
                f"pack expects {n} coefficient matrices and {n} intercept vectors, "
                f"got {len(coefs)} and {len(intercepts)}"
            )
        W = np.empty(self.n_params, dtype=np.float64)
        for i, (c, shape) in enumerate(zip(coefs, self.coef_shapes)):
            c = np.asarray(c, dtype=np.float64)
            if c.shape != shape:
                raise ValueError(f"coefs[{i}] must have shape {shape}, got {c.shape}")
            W[self.coef_offsets[i] : self.coef_offsets[i + 1]] = c.ravel()
        for i, (b, shape) in enumerate(zip(intercepts, self.intercept_shapes)):
            b = np.asarray(b, dtype=np.float64)
            if b.shape != shape:
                raise ValueError(f"intercepts[{i}] must have shape {shape}, got {b.shape}")
            W[self.intercept_offsets[i] : self.intercept_offsets[i + 1]] = b
        return W
