"""The analytic optimum of the KL-penalised objective (paper Section 4.1.1, Figure 3).

For the objective E_pi[r] - beta * KL(pi, rho) the optimal policy is pi*(y|x) ∝ rho(y|x) exp(r(x, y) / beta).
With samples y_1..y_N ~ rho and self-normalised importance weights p_i = softmax_i(r_i / beta):

    E_pi*[r]      = sum_i p_i r_i
    KL(pi*, rho)  = E_pi*[r] / beta - log( (1/N) sum_i exp(r_i / beta) )

computed with log-sum-exp so large r/beta never overflows. Per-query estimates are averaged over queries.
The estimate's own sampling error is reported as the Kish effective sample size 1 / sum_i p_i^2 (small
ESS: the frontier at that beta rests on a few samples) and as bootstrap standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["optimal_policy_stats", "optimal_frontier", "FrontierPoint", "frontier_reward_at_kl"]


def optimal_policy_stats(rewards: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E_pi*[r], KL(pi*, rho) and effective sample size for each row of samples.

    Args:
        rewards: ``(Q, N)`` rewards of N samples from rho for each of Q queries (or ``(N,)`` pooled).
        beta: KL coefficient > 0.
    Returns:
        ``(reward, kl, ess)``, each of shape ``(Q,)``.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    r = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    if not np.all(np.isfinite(r)):
        bad = np.argwhere(~np.isfinite(r))[0]
        raise ValueError(f"rewards must be finite; query {bad[0]}, sample {bad[-1]} is {r[tuple(bad)]}")
    z = r / beta  # (Q, N)
    zmax = z.max(axis=1, keepdims=True)
    w = np.exp(z - zmax)  # (Q, N), max weight 1
    p = w / w.sum(axis=1, keepdims=True)
    expected = (p * r).sum(axis=1)
    log_mean_w = zmax[:, 0] + np.log(w.mean(axis=1))  # log (1/N) sum exp(r/beta)
    kl = expected / beta - log_mean_w
    ess = 1.0 / (p**2).sum(axis=1)
    return expected, np.maximum(kl, 0.0), ess


@dataclass(frozen=True)
class FrontierPoint:
    """One beta of the frontier, averaged over queries, with bootstrap standard errors."""

    beta: float
    reward: float
    kl: float
    reward_se: float
    kl_se: float
    min_ess: float
    mean_ess: float


def optimal_frontier(
    rewards: np.ndarray, betas: np.ndarray | list[float], n_bootstrap: int = 200, seed: int = 0
) -> list[FrontierPoint]:
    """The optimal KL-reward frontier over a grid of beta.

    Args:
        rewards: ``(Q, N)`` or ``(N,)`` rewards of samples from rho.
        betas: grid of KL coefficients.
        n_bootstrap: resamples (samples within each query, with replacement) for the standard errors; 0 = none.
    Returns:
        A :class:`FrontierPoint` per beta, sorted by increasing KL (decreasing beta).
    """
    r = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    rng = np.random.default_rng(seed)
    q, n = r.shape
    boot_idx = [rng.integers(0, n, size=(q, n)) for _ in range(n_bootstrap)]
    points = []
    for beta in betas:
        reward, kl, ess = optimal_policy_stats(r, float(beta))
        r_se = kl_se = 0.0
        if n_bootstrap:
            boots = np.array(
                [[m.mean() for m in optimal_policy_stats(np.take_along_axis(r, idx, 1), float(beta))[:2]] for idx in boot_idx]
            )  # (n_bootstrap, 2)
            r_se, kl_se = boots.std(axis=0, ddof=1)
        points.append(
            FrontierPoint(float(beta), float(reward.mean()), float(kl.mean()), float(r_se), float(kl_se), float(ess.min()), float(ess.mean()))
        )
    return sorted(points, key=lambda p: p.kl)


def frontier_reward_at_kl(frontier: list[FrontierPoint], kl: float) -> float:
    """The frontier's reward at a given KL, by linear interpolation (clamped to the grid's ends)."""
    kls = np.array([p.kl for p in frontier])
    rewards = np.array([p.reward for p in frontier])
    order = np.argsort(kls)
    return float(np.interp(kl, kls[order], rewards[order]))
