"""A deliberately plain backpropagation, one sample at a time, to read next to the lab (ex. 5a).

Every fast backend is tested against this. It uses Python loops and ``math`` on purpose: no
matrix products, no clever identities beyond the ones the lab states.

For each sample x_n with target t_n:
1. forward: a^{l+1}_j = Σ_i w_{l,ij} z^l_i + b_{l,j}, z^{l+1}_j = σ(a^{l+1}_j), keeping every a, z;
2. at the output δ_k = y_k(x_n) − t_{n,k} (times the sample weight);
3. below it δ_j = σ'(a_j) Σ_k w_kj δ_k;
4. ∂loss/∂w_ij += δ_j z_i and ∂loss/∂b_j += δ_j;
then divide by the total weight and add the gradient of λ Σ W², 2 λ W, on the weights.

Second order, independently of the same algorithm in fastbp (no second-derivative formula of the
activations appears here):

* ``naive_hessp``: H V is the derivative of the gradient along V, d/dε ∇loss(W + εV) at ε = 0.
  The gradient above is evaluated once on dual numbers w + εv (``Dual``: arithmetic that
  carries a first-order ε part exactly), and the ε parts of the result are H V.
* ``naive_output_jacobian``: the Jacobian of one sample's output pre-activations a^L in W, one
  column per parameter, each the ε part of a forward pass on W + ε e_p.
* ``naive_gauss_newton_product``, ``naive_residuals``, ``naive_residuals_jacobian``: the
  definitions written out, G V = Σ_n s_n J_nᵀ Λ_n J_n V / Σ s_n + 2 λ V (coefficients) with
  Λ_n written from the loss (logistic diag p(1−p), softmax s(diag p − p pᵀ), identity I), and
  r = sqrt(s_n / Σ s) (p − t) followed by sqrt(2λ) W_coef.
"""

import math

import numpy as np


class Dual:
    """A number x + ε x' with ε² = 0: arithmetic on it carries the derivative x' along exactly."""

    __slots__ = ("val", "eps")

    def __init__(self, val, eps=0.0):
        self.val, self.eps = float(val), float(eps)

    def __add__(self, o):
        return Dual(self.val + o.val, self.eps + o.eps) if isinstance(o, Dual) else Dual(self.val + o, self.eps)

    __radd__ = __add__

    def __neg__(self):
        return Dual(-self.val, -self.eps)

    def __sub__(self, o):
        return self + (-o)

    def __rsub__(self, o):
        return (-self) + o

    def __mul__(self, o):
        if isinstance(o, Dual):
            return Dual(self.val * o.val, self.eps * o.val + self.val * o.eps)
        return Dual(self.val * o, self.eps * o)

    __rmul__ = __mul__

    def __truediv__(self, o):
        if isinstance(o, Dual):
            return Dual(self.val / o.val, (self.eps * o.val - self.val * o.eps) / (o.val * o.val))
        return Dual(self.val / o, self.eps / o)

    def __rtruediv__(self, o):
        return Dual(o / self.val, -o * self.eps / (self.val * self.val))

    def __pow__(self, k):  # integer powers only (squares)
        return Dual(self.val**k, k * self.val ** (k - 1) * self.eps)

    def __lt__(self, o):
        return self.val < (o.val if isinstance(o, Dual) else o)

    def __gt__(self, o):
        return self.val > (o.val if isinstance(o, Dual) else o)


def exp(x):
    if isinstance(x, Dual):
        e = math.exp(x.val)
        return Dual(e, e * x.eps)
    return math.exp(x)


def log(x):
    return Dual(math.log(x.val), x.eps / x.val) if isinstance(x, Dual) else math.log(x)


def tanh(x):
    if isinstance(x, Dual):
        t = math.tanh(x.val)
        return Dual(t, (1 - t * t) * x.eps)
    return math.tanh(x)


def sigma(name, a):
    if name == "logistic":
        return 1.0 / (1.0 + exp(-a))
    if name == "tanh":
        return tanh(a)
    if name == "relu":
        return a if a > 0 else 0.0
    return a  # identity


def sigma_prime(name, a):
    if name == "logistic":
        s = 1.0 / (1.0 + exp(-a))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - tanh(a) ** 2
    if name == "relu":
        return 1.0 if a > 0 else 0.0
    return 1.0


def naive_loss_and_grad(layer_sizes, activation, output, l2, W, X, T, sample_weight=None):
    """Loss and gradient of the network, per the contract, in float64.

    ``T`` is (n, n_outputs): 0/1 or probabilities (logistic), one-hot rows (softmax), values
    (identity), non-negative values (exponential: y = e^a, half Poisson deviance).
    ``activation`` is a canonical name ("logistic", "tanh", "relu", "identity").
    """
    L = len(layer_sizes) - 1  # number of weight layers
    # unpack scikit-learn's layout: coefficient matrices first, then intercepts
    w, b, pos = [], [], 0
    for l in range(L):
        n_in, n_out = layer_sizes[l], layer_sizes[l + 1]
        w.append([[W[pos + i * n_out + j] for j in range(n_out)] for i in range(n_in)])
        pos += n_in * n_out
    for l in range(L):
        b.append([W[pos + j] for j in range(layer_sizes[l + 1])])
        pos += layer_sizes[l + 1]

    gw = [[[0.0] * layer_sizes[l + 1] for _ in range(layer_sizes[l])] for l in range(L)]
    gb = [[0.0] * layer_sizes[l + 1] for l in range(L)]
    total_loss, total_weight = 0.0, 0.0

    for n in range(len(X)):
        s_n = 1.0 if sample_weight is None else float(sample_weight[n])
        t = [float(v) for v in T[n]]
        # 1. forward, keeping a and z of every layer (z^0 = x)
        z = [[float(v) for v in X[n]]]
        a = [None]
        for l in range(L):
            a_next = []
            for j in range(layer_sizes[l + 1]):
                a_next.append(sum(w[l][i][j] * z[l][i] for i in range(layer_sizes[l])) + b[l][j])
            a.append(a_next)
            if l < L - 1:
                z.append([sigma(activation, v) for v in a_next])
        a_out = a[L]
        # the output y(x_n) and the loss of this sample
        if output == "logistic":
            y = [1.0 / (1.0 + exp(-v)) for v in a_out]
            loss = -sum(tk * log(yk) + (1 - tk) * log(1 - yk) for tk, yk in zip(t, y))
        elif output == "softmax":
            m = max(a_out)
            e = [exp(v - m) for v in a_out]
            y = [v / sum(e) for v in e]
            loss = -sum(tk * log(yk) for tk, yk in zip(t, y))
        elif output == "exponential":
            # half the Poisson deviance, t log(t / y) − t + y with t log t = 0 at t = 0
            y = [exp(v) for v in a_out]
            loss = sum((tk * log(tk / yk) if tk > 0 else 0.0) - tk + yk for tk, yk in zip(t, y))
        else:
            y = list(a_out)
            loss = 0.5 * sum((yk - tk) ** 2 for tk, yk in zip(t, y))
        total_loss += s_n * loss
        total_weight += s_n
        # 2. δ = y − t at the output
        delta = [s_n * (yk - tk) for yk, tk in zip(y, t)]
        for l in range(L - 1, -1, -1):
            # 4. ∂loss/∂w_ij = δ_j z_i
            for i in range(layer_sizes[l]):
                for j in range(layer_sizes[l + 1]):
                    gw[l][i][j] += delta[j] * z[l][i]
            for j in range(layer_sizes[l + 1]):
                gb[l][j] += delta[j]
            if l > 0:
                # 3. δ_j = σ'(a_j) Σ_k w_kj δ_k
                delta = [
                    sigma_prime(activation, a[l][i])
                    * sum(w[l][i][k] * delta[k] for k in range(layer_sizes[l + 1]))
                    for i in range(layer_sizes[l])
                ]

    grad = []
    for l in range(L):
        for i in range(layer_sizes[l]):
            for j in range(layer_sizes[l + 1]):
                grad.append(gw[l][i][j] / total_weight + 2 * l2 * w[l][i][j])
    penalty = sum(w[l][i][j] ** 2 for l in range(L) for i in range(layer_sizes[l]) for j in range(layer_sizes[l + 1]))
    for l in range(L):
        grad.extend(g / total_weight for g in gb[l])
    return total_loss / total_weight + l2 * penalty, np.array(grad)


# ------------------------------------------------------------------------------ second order
def _eps_part(x):
    return x.eps if isinstance(x, Dual) else 0.0


def naive_hessp(layer_sizes, activation, output, l2, W, V, X, T, sample_weight=None):
    """H V = d/dε ∇loss(W + εV) at ε = 0: the naive gradient evaluated on dual numbers."""
    W_dual = [Dual(w, v) for w, v in zip(W, V)]
    _, grad = naive_loss_and_grad(layer_sizes, activation, output, l2, W_dual, X, T, sample_weight)
    return np.array([_eps_part(g) for g in grad])


def naive_output(layer_sizes, activation, W, x):
    """The output pre-activations a^L of one sample x (W may hold dual numbers)."""
    L = len(layer_sizes) - 1
    coef_start, pos = [], 0
    for l in range(L):
        coef_start.append(pos)
        pos += layer_sizes[l] * layer_sizes[l + 1]
    z = [float(v) for v in x]
    for l in range(L):
        n_in, n_out = layer_sizes[l], layer_sizes[l + 1]
        a = []
        for j in range(n_out):
            a.append(sum(W[coef_start[l] + i * n_out + j] * z[i] for i in range(n_in)) + W[pos + j])
        pos += n_out
        if l == L - 1:
            return a
        z = [sigma(activation, v) for v in a]


def naive_output_jacobian(layer_sizes, activation, W, x):
    """J[k][p] = ∂a^L_k / ∂W_p of one sample, column p from a forward pass on W + ε e_p."""
    columns = []
    for p in range(len(W)):
        W_dual = [Dual(w, 1.0 if q == p else 0.0) for q, w in enumerate(W)]
        columns.append([_eps_part(a) for a in naive_output(layer_sizes, activation, W_dual, x)])
    return np.array(columns).T


def naive_loss_hessian(output, a, t):
    """Λ = ∂²ℓ/∂a² of one sample, written from the loss: a list of rows."""
    m = len(a)
    if output == "logistic":  # ℓ = Σ_k softplus(a_k) − t_k a_k
        p = [1.0 / (1.0 + math.exp(-v)) for v in a]
        return [[p[k] * (1 - p[k]) if k == j else 0.0 for j in range(m)] for k in range(m)]
    if output == "softmax":  # ℓ = s log Σ_j e^{a_j} − Σ_k t_k a_k, s = Σ_k t_k
        mx = max(a)
        e = [math.exp(v - mx) for v in a]
        p = [v / sum(e) for v in e]
        s = sum(t)
        return [[s * ((p[k] if k == j else 0.0) - p[k] * p[j]) for j in range(m)] for k in range(m)]
    if output == "exponential":  # ℓ = e^a − t a + const
        return [[math.exp(a[k]) if k == j else 0.0 for j in range(m)] for k in range(m)]
    return [[1.0 if k == j else 0.0 for j in range(m)] for k in range(m)]  # identity: ½ Σ (a − t)²


def _coef_count(layer_sizes):
    return sum(a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:]))


def naive_gauss_newton_product(layer_sizes, activation, output, l2, W, V, X, T, sample_weight=None):
    """G V = Σ_n s_n J_nᵀ Λ_n J_n V / Σ_n s_n + 2 λ V on the coefficients, sample by sample."""
    P = len(W)
    out = [0.0] * P
    total_weight = 0.0
    for n in range(len(X)):
        s_n = 1.0 if sample_weight is None else float(sample_weight[n])
        total_weight += s_n
        J = naive_output_jacobian(layer_sizes, activation, W, X[n])
        a = naive_output(layer_sizes, activation, W, X[n])
        Lam = naive_loss_hessian(output, a, [float(v) for v in T[n]])
        m = len(a)
        JV = [sum(J[k][p] * V[p] for p in range(P)) for k in range(m)]
        u = [sum(Lam[k][j] * JV[j] for j in range(m)) for k in range(m)]
        for p in range(P):
            out[p] += s_n * sum(J[k][p] * u[k] for k in range(m))
    n_coef = _coef_count(layer_sizes)
    return np.array([out[p] / total_weight + (2 * l2 * V[p] if p < n_coef else 0.0) for p in range(P)])


def naive_residuals(layer_sizes, activation, l2, W, X, T, sample_weight=None):
    """r = sqrt(s_n / Σ s)·(a^L_nk − t_nk) per sample and output, then sqrt(2λ)·W_coef."""
    sw = [1.0] * len(X) if sample_weight is None else [float(s) for s in sample_weight]
    total = sum(sw)
    r = []
    for n in range(len(X)):
        a = naive_output(layer_sizes, activation, W, X[n])
        r.extend(math.sqrt(sw[n] / total) * (a[k] - float(T[n][k])) for k in range(len(a)))
    r.extend(math.sqrt(2 * l2) * W[p] for p in range(_coef_count(layer_sizes)))
    return np.array(r)


def naive_residuals_jacobian(layer_sizes, activation, l2, W, X, sample_weight=None):
    """∂r/∂W: the rows sqrt(s_n / Σ s)·J_n of every sample, then sqrt(2λ) on the coefficients."""
    sw = [1.0] * len(X) if sample_weight is None else [float(s) for s in sample_weight]
    total = sum(sw)
    rows = []
    for n in range(len(X)):
        J = naive_output_jacobian(layer_sizes, activation, W, X[n])
        rows.extend([math.sqrt(sw[n] / total) * v for v in row] for row in J)
    for p in range(_coef_count(layer_sizes)):
        rows.append([math.sqrt(2 * l2) if q == p else 0.0 for q in range(len(W))])
    return np.array(rows)
