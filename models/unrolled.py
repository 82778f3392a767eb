"""Unrolled optimisation networks for sparse coding (Li, Yang, Chen & Lin, ACML 2018, Sec. 4).

Objective: F(x) = 1/2 ||A x - y||^2 + lam ||x||_1. With a step t (default 1/L, L = ||A||_2^2),
W = I - t A^T A, B = t A^T and phi = soft-threshold at theta = lam t, one layer of each network
is one iteration of its algorithm (x_0 = x_{-1} = 0, layers k = 0..K-1):

    GD   (ISTA)      x_{k+1} = phi(W x_k + B y)
    HB   (iPiano)    x_{k+1} = phi(W x_k + B y + beta_k (x_k - x_{k-1}))
    AGD  (FISTA)     z_k = x_k + beta_k (x_k - x_{k-1});  x_{k+1} = phi(W z_k + B y)
    AGD2 (Nesterov's second method, dense form; see :class:`AGD2Net`)
    ADMM             x = M (z_k - u_k) + N y;  z_{k+1} = phi(x + u_k);  u_{k+1} = u_k + g_k (x - z_{k+1})

With the analytic weights (``train_coefficients`` irrelevant, no training) a K-layer network *is*
K iterations of the algorithm in ``models.proximal``. Training (LISTA-style) then adapts the
matrices, thresholds and, when ``train_coefficients``, the momentum/connection coefficients.

Vectors are rows: a batch ``y`` has shape ``(batch, m)`` and the output ``(batch, n)``, so every
matrix is stored transposed (``x @ W^T``).

Example:
    >>> net = build_unrolled("agd", A, lam=0.1, num_layers=8)
    >>> x_hat = net(y)          # == models.proximal.fista(A, y, 0.1, 8, betas)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

import models.proximal as proximal
from layerwise.errors import ConfigError

FAMILIES = ("gd", "hb", "agd", "agd2", "admm")


def soft_threshold(v, theta):
    return tf.sign(v) * tf.nn.relu(tf.abs(v) - theta)


class UnrolledNet(keras.Model):
    """Base class: K layers of a proximal algorithm with analytically initialised weights.

    Args:
        A: the ``(m, n)`` measurement matrix used for the analytic initialisation.
        lam: the l1 weight lambda.
        num_layers: K, the number of unrolled iterations.
        step: t; default 1/||A||_2^2.
        share_weights: one set of matrices for all layers (the paper's "one shared linear map",
            and the default: the parameter count does not grow with depth), or one per layer.
        train_coefficients: whether the scalar coefficients (momentum beta_k, AGD2 connection
            weights and step scales, ADMM dual steps) are trained or stay at their analytic
            schedule.
        learn_threshold: whether the per-layer thresholds are trained.
        dtype: ``"float32"`` or ``"float64"`` (the tests use float64).
    """

    family = "base"

    def __init__(self, A, lam: float, num_layers: int, step: float | None = None,
                 share_weights: bool = True, train_coefficients: bool = True,
                 learn_threshold: bool = True, dtype: str = "float32", name: str | None = None):
        super().__init__(name=name or f"{self.family}_net_{num_layers}", dtype=dtype)
        A = np.asarray(A, dtype=np.float64)
        if A.ndim != 2:
            raise ConfigError(f"A must be a matrix, got shape {A.shape}")
        if num_layers <= 0:
            raise ConfigError(f"num_layers must be positive, got {num_layers}")
        if lam < 0:
            raise ConfigError(f"lam must be >= 0, got {lam}")
        self.m, self.n = A.shape
        self.lam = float(lam)
        self.num_layers = int(num_layers)
        self.step = float(1.0 / proximal.lipschitz(A) if step is None else step)
        self.share_weights = share_weights
        self.train_coefficients = train_coefficients
        self.learn_threshold = learn_threshold

    # -- helpers -----------------------------------------------------------------------------
    def _const(self, name, value, trainable=True):
        value = np.asarray(value, dtype=np.float64)
        return self.add_weight(name=name, shape=value.shape, trainable=trainable,
                               initializer=keras.initializers.Constant(value))

    def _matrices(self, name, value):
        """One weight (shared) or K weights (per layer) initialised at ``value``."""
        if self.share_weights:
            w = self._const(name, value)
            return [w] * self.num_layers
        return [self._const(f"{name}_{k:02d}", value) for k in range(self.num_layers)]

    def _coefficients(self, name, values):
        return self._const(name, values, trainable=self.train_coefficients)

    def _thresholds(self, values):
        return self._const("theta", values, trainable=self.learn_threshold)


class GDNet(UnrolledNet):
    """LISTA-style unrolled ISTA: x_{k+1} = phi(W x_k + B y)."""

    family = "gd"

    def __init__(self, A, lam, num_layers, **kwargs):
        super().__init__(A, lam, num_layers, **kwargs)
        A = np.asarray(A, dtype=np.float64)
        t = self.step
        self.W = self._matrices("W", np.eye(self.n) - t * A.T @ A)  # symmetric: W^T = W
        self.B = self._matrices("B", t * A)  # (t A^T)^T
        self.theta = self._thresholds(np.full(num_layers, self.lam * t))

    def _momentum(self, k, x, x_prev):
        return None

    def call(self, y):
        by = [y @ b for b in _unique(self.B)]
        x = x_prev = tf.zeros([tf.shape(y)[0], self.n], dtype=self.compute_dtype)
        for k in range(self.num_layers):
            pre = self._pre_activation(k, x, x_prev, by[0 if self.share_weights else k])
            x_prev, x = x, soft_threshold(pre, self.theta[k])
        return x

    def _pre_activation(self, k, x, x_prev, by):
        return x @ self.W[k] + by


class HBNet(GDNet):
    """Heavy-ball net: x_{k+1} = phi(W x_k + B y + beta_k (x_k - x_{k-1})).

    Default beta_k = 0.4 for all k: iPiano (Ochs et al. 2014) converges for step t < 2(1-beta)/L,
    i.e. beta < 1/2 at t = 1/L; 0.4 keeps a margin.
    """

    family = "hb"

    def __init__(self, A, lam, num_layers, beta: float = 0.4, schedule: str = "constant", **kwargs):
        super().__init__(A, lam, num_layers, **kwargs)
        self.beta = self._coefficients("beta", proximal.momentum_schedule(num_layers, schedule, beta))

    def _pre_activation(self, k, x, x_prev, by):
        return x @ self.W[k] + by + self.beta[k] * (x - x_prev)


class AGDNet(GDNet):
    """Nesterov/FISTA net: z_k = x_k + beta_k (x_k - x_{k-1});  x_{k+1} = phi(W z_k + B y).

    Default schedule beta_k = (k-1)/(k+2) (Nesterov's simplified choice; ``schedule="fista"``
    gives Beck & Teboulle's t-sequence, within a few percent of it).
    """

    family = "agd"

    def __init__(self, A, lam, num_layers, schedule: str = "nesterov", beta: float = 0.4, **kwargs):
        super().__init__(A, lam, num_layers, **kwargs)
        self.beta = self._coefficients("beta", proximal.momentum_schedule(num_layers, schedule, beta))

    def _pre_activation(self, k, x, x_prev, by):
        z = x + self.beta[k] * (x - x_prev)
        return z @ self.W[k] + by


def agd2_connections(thetas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense connection weights of Nesterov's second method.

    Returns ``(c, a)`` with ``z_k = sum_{j=1..k} c[k, j-1] v_j`` and
    ``x_K = sum_{j=1..K} a[j-1] v_j`` (see :class:`AGD2Net` for the derivation).
    """
    K = len(thetas)
    # coef[k] holds a_{k, j} for x_k = sum_j a_{k,j} v_j, j = 1..k.
    coef = np.zeros((K + 1, K))
    for k in range(K):
        coef[k + 1] = (1.0 - thetas[k]) * coef[k]
        coef[k + 1, k] += thetas[k]
    c = np.zeros((K, K))
    for k in range(K):
        c[k] = (1.0 - thetas[k]) * coef[k]
        if k > 0:
            c[k, k - 1] += thetas[k]
    return c, coef[K]


class AGD2Net(UnrolledNet):
    """Nesterov's second method unrolled: a densely connected network.

    The algorithm (``models.proximal.nesterov_second``; x_0 = v_0 = 0, theta_k = 2/(k+2))::

        z_k     = (1 - theta_k) x_k + theta_k v_k
        v_{k+1} = phi_k(v_k + s_k (D z_k + B y)),  D = -t A^T A,  s_k = 1/theta_k,
                  phi_k = soft-threshold at lam t / theta_k
        x_{k+1} = (1 - theta_k) x_k + theta_k v_{k+1}

    Why it is dense: x is an exponential average of the v's. Unrolling x_{k+1} from x_0 = 0,

        x_k = sum_{j=1..k} a_{k,j} v_j,   a_{k,j} = theta_{j-1} prod_{i=j..k-1} (1 - theta_i),

    so  z_k = (1 - theta_k) x_k + theta_k v_k = sum_{j=1..k} c_{k,j} v_j  with
    c_{k,j} = (1 - theta_k) a_{k,j} + theta_k [j = k]: the input of layer k is a weighted sum of
    the outputs v_1..v_k of *all* earlier layers (DenseNet with summation), and so is the
    network's output x_K = sum_j a_{K,j} v_j. This class implements exactly that dense form:
    the weights ``c`` (lower triangle of a K x K matrix) and ``a`` are initialised from
    ``agd2_connections`` and trained when ``train_coefficients`` (so the learned net can use any
    dense connectivity, not just the algorithm's), and so are the step scales s_k.
    """

    family = "agd2"

    def __init__(self, A, lam, num_layers, **kwargs):
        super().__init__(A, lam, num_layers, **kwargs)
        A = np.asarray(A, dtype=np.float64)
        t, thetas = self.step, proximal.agd2_thetas(num_layers)
        c, a = agd2_connections(thetas)
        self.D = self._matrices("D", -t * A.T @ A)
        self.B = self._matrices("B", t * A)
        self.scale = self._coefficients("scale", 1.0 / thetas)
        self.connections = self._coefficients("connections", c)
        self.output_weights = self._coefficients("output_weights", a)
        self.theta = self._thresholds(self.lam * t / thetas)

    def call(self, y):
        by = [y @ b for b in _unique(self.B)]
        v = tf.zeros([tf.shape(y)[0], self.n], dtype=self.compute_dtype)
        vs = []
        for k in range(self.num_layers):
            grad_step = by[0 if self.share_weights else k]
            if vs:  # z_0 = 0
                z = tf.add_n([self.connections[k, j] * vs[j] for j in range(k)])
                grad_step = z @ self.D[k] + grad_step
            v = soft_threshold(v + self.scale[k] * grad_step, self.theta[k])
            vs.append(v)
        return tf.add_n([self.output_weights[j] * vs[j] for j in range(self.num_layers)])


class ADMMNet(UnrolledNet):
    """ADMM-Net for the lasso (splitting x = z, scaled dual u):

        x_{k+1} = M (z_k - u_k) + N y,  M = rho (A^T A + rho I)^{-1},  N = (A^T A + rho I)^{-1} A^T
        z_{k+1} = phi(x_{k+1} + u_k),  phi = soft-threshold at lam / rho
        u_{k+1} = u_k + g_k (x_{k+1} - z_{k+1}),  g_k = 1 (learned when train_coefficients)

    The output is z_K. Default rho = 1 (columns of A have unit norm, so A^T A has unit diagonal).
    """

    family = "admm"

    def __init__(self, A, lam, num_layers, rho: float = 1.0, **kwargs):
        super().__init__(A, lam, num_layers, **kwargs)
        if rho <= 0:
            raise ConfigError(f"rho must be positive, got {rho}")
        A = np.asarray(A, dtype=np.float64)
        self.rho = float(rho)
        inv = np.linalg.inv(A.T @ A + rho * np.eye(self.n))
        self.M = self._matrices("M", rho * inv)  # symmetric
        self.N = self._matrices("N", A @ inv)  # ((A^T A + rho I)^{-1} A^T)^T
        self.dual_step = self._coefficients("dual_step", np.ones(num_layers))
        self.theta = self._thresholds(np.full(num_layers, self.lam / rho))

    def call(self, y):
        ny = [y @ n_ for n_ in _unique(self.N)]
        z = u = tf.zeros([tf.shape(y)[0], self.n], dtype=self.compute_dtype)
        for k in range(self.num_layers):
            x = (z - u) @ self.M[k] + ny[0 if self.share_weights else k]
            z = soft_threshold(x + u, self.theta[k])
            u = u + self.dual_step[k] * (x - z)
        return z


def _unique(weights):
    """The distinct weights of a shared (K copies of one) or per-layer list."""
    return weights[:1] if all(w is weights[0] for w in weights) else weights


NETS = {"gd": GDNet, "hb": HBNet, "agd": AGDNet, "agd2": AGD2Net, "admm": ADMMNet}


def build_unrolled(family: str, A, lam: float, num_layers: int, **options) -> UnrolledNet:
    """Builds the unrolled network of ``family`` (one of :data:`FAMILIES`).

    Options are those of :class:`UnrolledNet` plus the family's own (``beta``/``schedule`` for
    hb and agd, ``rho`` for admm).

    Raises:
        ConfigError: unknown family or invalid option value.
    """
    if family not in NETS:
        raise ConfigError(f"unknown unrolled family {family!r}; choose one of {', '.join(FAMILIES)}")
    try:
        return NETS[family](A, lam, num_layers, **options)
    except TypeError as e:  # an option the family does not take
        raise ConfigError(f"{family}: {e}") from None
