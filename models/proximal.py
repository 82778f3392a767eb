"""Textbook proximal algorithms for the lasso, in NumPy (the un-learned baselines).

Objective (sparse coding / compressed sensing):

    F(x) = 1/2 ||A x - y||^2 + lam ||x||_1,    grad f(x) = A^T (A x - y),    L = ||A||_2^2.

Every function runs ``num_iters`` iterations from ``x_0 = 0`` on a batch of measurements
``y`` (shape ``(batch, m)``) and returns the iterate after the last one (shape ``(batch, n)``).
They are written the way the algorithms are usually stated, *not* the way the unrolled networks
in ``models.unrolled`` compute them, so the tests comparing the two check the unrolling.

Coefficient schedules shared with the networks live here too (``momentum_schedule``,
``agd2_thetas``) so that the baseline and the analytic initialisation cannot drift apart.
"""

from __future__ import annotations

import math

import numpy as np

from layerwise.errors import ConfigError

SCHEDULES = ("constant", "nesterov", "fista")


def soft_threshold(v: np.ndarray, theta) -> np.ndarray:
    """prox of ``theta ||.||_1``: ``sign(v) max(|v| - theta, 0)``."""
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)


def lipschitz(A: np.ndarray) -> float:
    """L = ||A||_2^2, the Lipschitz constant of grad f."""
    return float(np.linalg.norm(A, 2) ** 2)


def momentum_schedule(num_iters: int, schedule: str = "nesterov", beta: float = 0.4) -> np.ndarray:
    """Momentum coefficients beta_0..beta_{K-1}; beta_k multiplies ``x_k - x_{k-1}``.

    ``x_0 = x_{-1} = 0``, so beta_0 never matters in exact arithmetic (it is set to 0).

    Args:
        num_iters: K.
        schedule: ``"constant"`` (beta_k = beta), ``"nesterov"`` (beta_k = (k-1)/(k+2), the
            usual simplified Nesterov/FISTA choice), or ``"fista"`` (Beck & Teboulle's
            t-sequence: t_1 = 1, t_{k+1} = (1 + sqrt(1 + 4 t_k^2))/2, beta_k = (t_k - 1)/t_{k+1}).
        beta: the value of the constant schedule.

    Raises:
        ConfigError: unknown schedule.
    """
    if schedule == "constant":
        out = np.full(num_iters, float(beta))
    elif schedule == "nesterov":
        out = np.array([max(k - 1, 0) / (k + 2) for k in range(num_iters)], dtype=float)
    elif schedule == "fista":
        out, t = np.zeros(num_iters), 1.0
        for k in range(1, num_iters):
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            out[k] = (t - 1.0) / t_next
            t = t_next
    else:
        raise ConfigError(f"unknown momentum schedule {schedule!r}; choose one of {SCHEDULES}")
    out[:1] = 0.0
    return out


def agd2_thetas(num_iters: int) -> np.ndarray:
    """theta_k = 2/(k+2) for Nesterov's second method (theta_0 = 1).

    Satisfies Tseng's condition (1 - theta_{k+1}) / theta_{k+1}^2 <= 1 / theta_k^2, which gives
    the O(1/k^2) rate.
    """
    return np.array([2.0 / (k + 2.0) for k in range(num_iters)])


def _grad(A, x, y):
    return (x @ A.T - y) @ A


def ista(A, y, lam, num_iters, step=None):
    """ISTA / proximal gradient: x_{k+1} = prox_{t lam}(x_k - t grad f(x_k))."""
    t = 1.0 / lipschitz(A) if step is None else step
    x = np.zeros((y.shape[0], A.shape[1]))
    for _ in range(num_iters):
        x = soft_threshold(x - t * _grad(A, x, y), lam * t)
    return x


def heavy_ball(A, y, lam, num_iters, betas, step=None):
    """Proximal heavy ball (iPiano, Ochs et al. 2014) with momentum inside the prox:

    x_{k+1} = prox_{t lam}(x_k - t grad f(x_k) + beta_k (x_k - x_{k-1})).
    """
    t = 1.0 / lipschitz(A) if step is None else step
    x_prev = x = np.zeros((y.shape[0], A.shape[1]))
    for k in range(num_iters):
        x_new = soft_threshold(x - t * _grad(A, x, y) + betas[k] * (x - x_prev), lam * t)
        x_prev, x = x, x_new
    return x


def fista(A, y, lam, num_iters, betas, step=None):
    """Nesterov's (first) accelerated proximal gradient, FISTA form:

    z_k = x_k + beta_k (x_k - x_{k-1});  x_{k+1} = prox_{t lam}(z_k - t grad f(z_k)).
    """
    t = 1.0 / lipschitz(A) if step is None else step
    x_prev = x = np.zeros((y.shape[0], A.shape[1]))
    for k in range(num_iters):
        z = x + betas[k] * (x - x_prev)
        x_prev, x = x, soft_threshold(z - t * _grad(A, z, y), lam * t)
    return x


def nesterov_second(A, y, lam, num_iters, thetas=None, step=None):
    """Nesterov's second accelerated method (Tseng 2008's APG2 / Auslender-Teboulle):

    z_k     = (1 - theta_k) x_k + theta_k v_k
    v_{k+1} = prox_{(t/theta_k) lam}(v_k - (t/theta_k) grad f(z_k))
    x_{k+1} = (1 - theta_k) x_k + theta_k v_{k+1}

    from x_0 = v_0 = 0; returns x_K.
    """
    t = 1.0 / lipschitz(A) if step is None else step
    thetas = agd2_thetas(num_iters) if thetas is None else thetas
    x = v = np.zeros((y.shape[0], A.shape[1]))
    for k in range(num_iters):
        th = thetas[k]
        z = (1.0 - th) * x + th * v
        v = soft_threshold(v - (t / th) * _grad(A, z, y), lam * t / th)
        x = (1.0 - th) * x + th * v
    return x


def admm(A, y, lam, num_iters, rho=1.0):
    """Scaled-form ADMM for min 1/2||Ax - y||^2 + lam||z||_1 s.t. x = z (Boyd et al. 2011):

    x_{k+1} = (A^T A + rho I)^{-1} (A^T y + rho (z_k - u_k))
    z_{k+1} = prox_{lam/rho}(x_{k+1} + u_k)
    u_{k+1} = u_k + x_{k+1} - z_{k+1}

    from z_0 = u_0 = 0; returns z_K (the sparse iterate).
    """
    n = A.shape[1]
    inv = np.linalg.inv(A.T @ A + rho * np.eye(n))
    z = u = np.zeros((y.shape[0], n))
    aty = y @ A
    for _ in range(num_iters):
        x = (aty + rho * (z - u)) @ inv.T
        z_new = soft_threshold(x + u, lam / rho)
        u = u + x - z_new
        z = z_new
    return z


def run_algorithm(family: str, A, y, lam, num_iters, *, step=None, hb_beta=0.4,
                  agd_schedule="nesterov", rho=1.0) -> np.ndarray:
    """Runs the textbook algorithm behind unrolled network ``family`` for ``num_iters``."""
    if family == "gd":
        return ista(A, y, lam, num_iters, step)
    if family == "hb":
        return heavy_ball(A, y, lam, num_iters, momentum_schedule(num_iters, "constant", hb_beta), step)
    if family == "agd":
        return fista(A, y, lam, num_iters, momentum_schedule(num_iters, agd_schedule), step)
    if family == "agd2":
        return nesterov_second(A, y, lam, num_iters, step=step)
    if family == "admm":
        return admm(A, y, lam, num_iters, rho)
    raise ConfigError(f"unknown family {family!r}; choose one of gd, hb, agd, agd2, admm")
