"""A deliberately plain backpropagation, one sample at a time, to read next to the lab (ex. 5a).

Every fast backend is tested against this. It uses Python loops and ``math`` on purpose: no
matrix products, no clever identities beyond the ones the lab states.

For each sample x_n with target t_n:
1. forward: a^{l+1}_j = Σ_i w_{l,ij} z^l_i + b_{l,j}, z^{l+1}_j = σ(a^{l+1}_j), keeping every a, z;
2. at the output δ_k = y_k(x_n) − t_{n,k} (times the sample weight);
3. below it δ_j = σ'(a_j) Σ_k w_kj δ_k;
4. ∂loss/∂w_ij += δ_j z_i and ∂loss/∂b_j += δ_j;
then divide by the total weight and add the gradient of λ Σ W², 2 λ W, on the weights.
"""

import math

import numpy as np


def sigma(name, a):
    if name == "logistic":
        return 1.0 / (1.0 + math.exp(-a))
    if name == "tanh":
        return math.tanh(a)
    if name == "relu":
        return a if a > 0 else 0.0
    return a  # identity


def sigma_prime(name, a):
    if name == "logistic":
        s = 1.0 / (1.0 + math.exp(-a))
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - math.tanh(a) ** 2
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
            y = [1.0 / (1.0 + math.exp(-v)) for v in a_out]
            loss = -sum(tk * math.log(yk) + (1 - tk) * math.log(1 - yk) for tk, yk in zip(t, y))
        elif output == "softmax":
            m = max(a_out)
            e = [math.exp(v - m) for v in a_out]
            y = [v / sum(e) for v in e]
            loss = -sum(tk * math.log(yk) for tk, yk in zip(t, y))
        elif output == "exponential":
            # half the Poisson deviance, t log(t / y) − t + y with t log t = 0 at t = 0
            y = [math.exp(v) for v in a_out]
            loss = sum((tk * math.log(tk / yk) if tk > 0 else 0.0) - tk + yk for tk, yk in zip(t, y))
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
