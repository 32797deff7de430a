"""The analytic optimum of the KL-penalised objective (paper Section 4.1.1, Figure 3).

For the objective E_pi[r] - beta * KL(pi, rho) the optimal policy is pi*(y|x) ∝ rho(y|x) exp(r(x, y) / beta).
With samples y_1..y_N ~ rho and self-normalised importance weights p_i = softmax_i(r_i / beta):

    E_pi*[r]      = sum_i p_i r_i
    KL(pi*, rho)  = E_pi*[r] / beta - log( (1/N) sum_i exp(r_i / beta) )

computed with log-sum-exp so large r/beta never overflows. Per-query estimates are averaged over queries.
The estimate's own sampling error is reported as the Kish effective sample size 1 / sum_i p_i^2 (small
ESS: the frontier at that beta rests on a few samples) and as bootstrap standard errors. ``reward_se`` and ``kl_se``
are a point's at fixed beta (what a closed form at that beta is checked against). A resample's point also slides along
the curve (its KL moves), so the curve's error at a given KL — what reading the frontier at a run's KL needs — is
``gain_se``: the SE of the gain over rho, R - E_rho[r], at the point's KL, each resample's curve read there to first
order (its slope is dR/dKL = beta: R_b - beta (KL_b - KL) - E_rho,b[r]), paired with rho's mean on the same resample
(a query's offset moves both terms alike).

Samples from another policy q (e.g. a policy PPO trained, which sits near pi* at high KL, where samples of rho are
too few to reach) enter by importance sampling: with ``log_ratio_i = log rho(y_i) - log q(y_i)`` the weights are
w_i = exp(log_ratio_i + r_i / beta) and the same formulas hold (Z = E_rho[exp(r/beta)] = E_q[(rho/q) exp(r/beta)]).
With samples of several proposals, ``log_ratio_i = log rho(y_i) - log q_mix(y_i)`` for the mixture
q_mix = sum_j (n_j/n) q_j (multiple importance sampling, balance heuristic).

Best-of-n (the reference policy the frontier is usually compared with: draw n samples of rho, keep the highest
reward) from the same samples: with a query's N rewards sorted, x_(1) <= ... <= x_(N), the best of n draws (with
replacement) is x_(k) with probability (k/N)^n - ((k-1)/N)^n, so E[max] = sum_k x_(k) ((k/N)^n - ((k-1)/N)^n)
exactly on those samples. Its KL from rho is at most log n - (n-1)/n (Beirami et al. 2024: the value for a continuous
reward distribution; outcomes of non-vanishing probability, or ties in the reward, make it smaller). On the samples
themselves — the distribution the frontier above is the exact tilt of — samples of one reward value form a group g of
probability rho_g = c_g/N (best-of-n with its ties broken at random keeps rho's odds within a group), best-of-n puts
P_g = F_g^n - F_(g-1)^n on it (F: the groups' cumulative probability), and KL = sum_g P_g log(P_g / rho_g) exactly.
"""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np

__all__ = [
    "best_of_n_kl",
    "best_of_n_kl_bound",
    "best_of_n_reward",
    "optimal_policy_stats",
    "optimal_frontier",
    "FrontierPoint",
    "frontier_reward_at_kl",
    "frontier_at_kl",
    "frontier_ess_at_kl",
    "frontier_gain_se_at_kl",
    "frontier_rho_reward",
    "mixture_log_ratio",
    "best_frontier",
]


def _finite_rows(rewards: np.ndarray) -> np.ndarray:
    """``rewards`` as a float64 ``(Q, N)`` array; a non-finite reward is an error naming its query and sample."""
    r = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    if r.ndim != 2 or r.shape[1] == 0:
        raise ValueError(f"rewards must be (queries, samples) or (samples,) with at least one sample, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        bad = np.argwhere(~np.isfinite(r))[0]
        raise ValueError(f"rewards must be finite; query {bad[0]}, sample {bad[-1]} is {r[tuple(bad)]}")
    return r


def optimal_policy_stats(
    rewards: np.ndarray, beta: float, log_ratio: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E_pi*[r], KL(pi*, rho) and effective sample size for each row of samples.

    Args:
        rewards: ``(Q, N)`` rewards of N samples for each of Q queries (or ``(N,)`` pooled).
        beta: KL coefficient > 0 (``inf``: rho's own reward and KL 0).
        log_ratio: ``(Q, N)`` ``log rho(y) - log q(y)`` when the samples come from q instead of rho (None: rho).
    Returns:
        ``(reward, kl, ess)``, each of shape ``(Q,)``.
    """
    if not beta > 0:  # NaN too (inf is rho itself)
        raise ValueError(f"beta must be > 0 (inf: rho itself), got {beta}")
    r = _finite_rows(rewards)
    z = r / beta  # (Q, N)
    if log_ratio is not None:
        lr = np.atleast_2d(np.asarray(log_ratio, dtype=np.float64))
        if lr.shape != r.shape or not np.all(np.isfinite(lr)):
            raise ValueError(f"log_ratio must be finite with the rewards' shape {r.shape}, got {lr.shape}")
        z = z + lr
    zmax = z.max(axis=1, keepdims=True)
    w = np.exp(z - zmax)  # (Q, N), max weight 1
    p = w / w.sum(axis=1, keepdims=True)
    expected = (p * r).sum(axis=1)
    log_mean_w = zmax[:, 0] + np.log(w.mean(axis=1))  # log (1/N) sum exp(r/beta)
    kl = expected / beta - log_mean_w
    ess = 1.0 / (p**2).sum(axis=1)
    return expected, np.maximum(kl, 0.0), ess


def _draw_count(n: int, where: str) -> int:
    """``n`` as a whole number of draws >= 1 (``2.5`` or ``0`` is an error naming ``where``)."""
    if isinstance(n, bool) or not float(n).is_integer() or n < 1:
        raise ValueError(f"{where}: n must be a whole number >= 1, got {n!r}")
    return int(n)


def best_of_n_reward(rewards: np.ndarray, n: int) -> np.ndarray:
    """Expected reward of best-of-``n`` for each row of ``rewards`` (``(Q, N)`` samples of rho, or ``(N,)``): the mean
    of the largest of ``n`` draws with replacement from the row's samples, exactly,
    ``sum_k x_(k) ((k/N)^n - ((k-1)/N)^n)`` over the sorted row. Shape ``(Q,)``."""
    n = _draw_count(n, "best_of_n_reward")
    r = np.sort(_finite_rows(rewards), axis=1)
    cdf = np.arange(r.shape[1] + 1, dtype=np.float64) / r.shape[1]  # k/N for k = 0..N
    p_max = np.diff(cdf**n)  # P(max of n draws is the k-th smallest sample)
    return r @ p_max


def best_of_n_kl(rewards: np.ndarray, n: int) -> np.ndarray:
    """``KL(best-of-n, rho)`` for each row of ``rewards`` (``(Q, N)`` or ``(N,)``), exactly on the row's samples as
    the distribution: ``sum_g P_g log(P_g / rho_g)`` over the groups of equal reward (module docstring). Under
    :func:`best_of_n_kl_bound` (equal to it only in the continuous limit), far under where many samples tie. Shape
    ``(Q,)``."""
    n = _draw_count(n, "best_of_n_kl")
    out = []
    for row in _finite_rows(rewards):
        counts = np.unique(row, return_counts=True)[1]
        rho_g = counts / len(row)
        cdf = np.concatenate([[0.0], np.cumsum(counts) / len(row)])
        p_g = np.diff(np.minimum(cdf, 1.0) ** n)
        keep = p_g > 0
        out.append(float(np.sum(p_g[keep] * np.log(p_g[keep] / rho_g[keep]))))
    return np.maximum(np.array(out), 0.0)


def best_of_n_kl_bound(n: int) -> float:
    """``KL(best-of-n, rho) <= log n - (n - 1) / n``: the value when every outcome has vanishing probability and no two
    share a reward (a continuous reward distribution), an upper bound otherwise."""
    n = _draw_count(n, "best_of_n_kl_bound")
    return math.log(n) - (n - 1) / n


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
    #: bootstrap SE of the gain over rho, reward - E_rho[r], at this point's KL (0 at beta = inf; NaN: a file written
    #: before it was kept)
    gain_se: float = math.nan


def optimal_frontier(
    rewards: np.ndarray, betas: np.ndarray | list[float], n_bootstrap: int = 200, seed: int = 0,
    log_ratio: np.ndarray | None = None, resample_queries: bool = False,
    strata: list[int] | tuple[int, ...] | None = None,
) -> list[FrontierPoint]:
    """The optimal KL-reward frontier over a grid of beta.

    Args:
        rewards: ``(Q, N)`` or ``(N,)`` rewards of samples from rho (or from q, with ``log_ratio``).
        betas: grid of KL coefficients.
        n_bootstrap: resamples (samples within each query, with replacement) for the standard errors; 0 = none.
        log_ratio: ``log rho(y) - log q(y)`` per sample when they come from q (see the module docstring).
        resample_queries: the bootstrap also draws the Q queries with replacement (two-stage), so the standard errors
            hold the error of estimating the frontier of the query distribution from Q of its queries, not only that
            of the samples within them.
        strata: the columns are the samples of several proposals in consecutive blocks of these sizes (pooled by
            :func:`mixture_log_ratio`, whose weights hold for these counts): the bootstrap resamples within each block,
            so every resample keeps them (None: one block).
    Returns:
        A :class:`FrontierPoint` per beta, sorted by increasing KL (decreasing beta).
    """
    r = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    lr = np.zeros_like(r) if log_ratio is None else np.atleast_2d(np.asarray(log_ratio, dtype=np.float64))
    optimal_policy_stats(r, math.inf, lr)  # the inputs' checks, naming a bad query and sample, before any resample
    if n_bootstrap < 0 or n_bootstrap == 1:
        raise ValueError(f"n_bootstrap must be 0 (no standard errors) or >= 2 (a spread), got {n_bootstrap}")
    rng = np.random.default_rng(seed)
    q, n = r.shape
    if strata is not None and (min(strata, default=0) < 1 or sum(strata) != n):
        raise ValueError(f"strata {list(strata)} must be >= 1 each and sum to the {n} samples per query")
    bounds = np.cumsum([0, *(strata or [n])])
    boot_idx = [np.concatenate([rng.integers(a, b, size=(q, b - a)) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
                for _ in range(n_bootstrap)]
    boot_q = [rng.integers(0, q, size=q) if resample_queries else np.arange(q) for _ in range(n_bootstrap)]
    betas = [float(b) for b in betas]
    # per resample: E_rho[r] (beta = inf) and (reward, KL) at every beta -> (n_bootstrap,), (n_bootstrap, len(betas), 2)
    rho_boot, boots = np.zeros(n_bootstrap), np.zeros((n_bootstrap, len(betas), 2))
    for b, (qi, i) in enumerate(zip(boot_q, boot_idx)):
        rb, lb = np.take_along_axis(r[qi], i, 1), np.take_along_axis(lr[qi], i, 1)
        rho_boot[b] = optimal_policy_stats(rb, math.inf, lb)[0].mean()
        for j, beta in enumerate(betas):
            boots[b, j] = [m.mean() for m in optimal_policy_stats(rb, beta, lb)[:2]]
    points = []
    for j, beta in enumerate(betas):
        reward, kl, ess = optimal_policy_stats(r, beta, lr)
        r_se = kl_se = g_se = 0.0
        if n_bootstrap:
            r_se, kl_se = boots[:, j].std(axis=0, ddof=1)
            if math.isfinite(beta):  # the resample's curve at this point's KL: its point slid back along slope beta
                g_se = (boots[:, j, 0] - beta * (boots[:, j, 1] - kl.mean()) - rho_boot).std(ddof=1)
        points.append(FrontierPoint(beta, float(reward.mean()), float(kl.mean()), float(r_se), float(kl_se),
                                    float(ess.min()), float(ess.mean()), float(g_se)))
    return sorted(points, key=lambda p: p.kl)


def frontier_reward_at_kl(frontier: list[FrontierPoint], kl: float) -> float:
    """The frontier's reward at a given KL, by linear interpolation (clamped to the grid's ends)."""
    return frontier_at_kl(frontier, kl)[0]


def frontier_at_kl(frontier: list[FrontierPoint], kl: float) -> tuple[float, float, float]:
    """``(reward, reward_se, mean_ess)`` of the frontier at ``kl``: reward and SE linearly interpolated, the ESS as
    :func:`frontier_ess_at_kl` (all clamped to the grid's ends; past its largest KL the ESS read is that of the end
    point, so a caller can see the end is unreliable)."""
    reward, reward_se = (_along_kl(frontier, kl, [getattr(p, key) for p in frontier]) for key in ("reward", "reward_se"))
    return reward, reward_se, frontier_ess_at_kl(frontier, kl)[0]


def _along_kl(frontier: list[FrontierPoint], kl: float, values: list[float]) -> float:
    """``values`` (one per point of ``frontier``) read at ``kl`` by linear interpolation over the points' KLs, clamped
    to the grid's ends: how every quantity of the frontier is read between its points."""
    order = np.argsort([p.kl for p in frontier])
    return float(np.interp(kl, [frontier[i].kl for i in order], [values[i] for i in order]))


def frontier_rho_reward(frontier: list[FrontierPoint]) -> float:
    """rho's own reward on this estimate, what the frontier's gain is measured from (and ``gain_se`` against): the
    beta = inf point's; without one in the grid, the lowest-KL point's."""
    at_inf = [p.reward for p in frontier if math.isinf(p.beta)]
    return at_inf[0] if at_inf else min(frontier, key=lambda p: p.kl).reward


def frontier_gain_se_at_kl(frontier: list[FrontierPoint], kl: float) -> float:
    """The bootstrap SE of the frontier's gain over rho at ``kl`` (linearly interpolated, clamped to the grid's
    ends; NaN for a frontier read from a file without it)."""
    return _along_kl(frontier, kl, [p.gain_se for p in frontier])


def frontier_ess_at_kl(frontier: list[FrontierPoint], kl: float) -> tuple[float, float]:
    """``(mean_ess, min_ess)`` over the queries at ``kl``, interpolated linearly in log ESS between grid points: the
    ESS falls about geometrically with the KL, so a straight line between two points would overstate it (clamped to
    the grid's ends)."""
    return tuple(float(np.exp(_along_kl(frontier, kl, [math.log(getattr(p, key)) for p in frontier])))
                 for key in ("mean_ess", "min_ess"))  # type: ignore[return-value]


def best_frontier(frontiers: list[list[FrontierPoint]], kl: float) -> int:
    """Index of the frontier estimate whose mean ESS at ``kl`` is largest: estimates of the same frontier from other
    samples (rho's alone; rho's pooled with a trained policy's, which reach further) are each read where they rest
    on the most samples (ties: the first)."""
    if not frontiers:
        raise ValueError("best_frontier: no frontier given")
    ess = [frontier_ess_at_kl(f, kl)[0] for f in frontiers]
    return int(np.argmax(ess))


def mixture_log_ratio(log_rho: np.ndarray, log_q: list[np.ndarray], counts: list[int]) -> np.ndarray:
    """``log rho(y) - log q_mix(y)`` for q_mix = sum_j (n_j / n) q_j (the balance heuristic of multiple importance
    sampling): ``log_rho`` ``(Q, N)`` and each ``log_q[j]`` ``(Q, N)`` are the log-probabilities of the same N
    pooled samples under rho and under proposal j, which drew ``counts[j]`` of them (rho itself may be a proposal)."""
    log_rho = np.asarray(log_rho, dtype=np.float64)
    if len(counts) != len(log_q) or not log_q:
        raise ValueError(f"mixture_log_ratio: {len(log_q)} proposals' log-probabilities but {len(counts)} counts")
    for j, (c, lq) in enumerate(zip(counts, log_q)):
        if not c > 0 or np.shape(lq) != log_rho.shape:
            raise ValueError(
                f"mixture_log_ratio: proposal {j} needs a count > 0 and log-probabilities of shape {log_rho.shape}, "
                f"got count {c} and shape {np.shape(lq)}"
            )
    n = float(sum(counts))
    stacked = np.stack([np.log(c / n) + np.asarray(lq, dtype=np.float64) for c, lq in zip(counts, log_q)])  # (J, Q, N)
    top = stacked.max(axis=0)
    log_mix = top + np.log(np.exp(stacked - top).sum(axis=0))
    return log_rho - log_mix
