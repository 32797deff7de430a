"""The PPO equations of the paper (Ziegler et al. 2019, Section 2.2 and its code), one small function each.

Shapes: B = episodes, T = response length. In the paper every sampled token is a step (nothing is masked after EOS;
samples have a fixed length); with TRL's stop token the steps after it are masked (the ``mask`` arguments,
:meth:`hf_prefs.core.rollout.RolloutSpec.masks`).

- :func:`kl_penalty` per-token KL estimate  ``kl_t = log pi(y_t) - log rho(y_t)``            (k1, the paper)
- :func:`per_token_rewards`                   ``r_t = -beta * kl_t  (+ score at t = T-1)``
- :func:`whiten`                              ``(x - mean) / sqrt(var + 1e-8)  [+ mean]``  (population variance, masked)
- :func:`compute_gae`                         ``A_t = sum_l (gamma*lam)^l delta_{t+l}``, ``R_t = A_t + V_t``
- :func:`ppo_policy_loss`                     ``mean(max(-A*ratio, -A*clip(ratio, 1-eps, 1+eps)))``
- :func:`ppo_value_loss`                      ``0.5 * mean(max((V-R)^2, (clip(V, V_old-eps, V_old+eps)-R)^2))``
- :func:`explained_variance`                  ``1 - Var[R - V] / Var[R]``
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

__all__ = [
    "kl_penalty",
    "per_token_rewards",
    "masked_mean",
    "whiten",
    "compute_gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "explained_variance",
]


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Literal["k1", "k2", "k3"] = "k1"
) -> torch.Tensor:
    """Per-token KL estimate between pi and rho on the sampled tokens, ``(B, T)``; with ``d = log pi - log rho``:

    - ``k1`` (the paper): ``d``; its sum over t is ``log pi(y|x) / rho(y|x)``, unbiased for KL(pi, rho);
    - ``k2``: ``d^2 / 2``; non-negative, biased, low variance (its gradient is that of the reverse KL's);
    - ``k3`` (TRL's last PPOTrainer): ``(exp(-d) - 1) + d``; non-negative, unbiased, lower variance.
    """
    d = logprobs - ref_logprobs
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kl_estimator must be 'k1', 'k2' or 'k3', got {estimator!r}")


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, score_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's reward per token: ``-beta * kl_t`` at every response token, plus the score at the last one.

    Summed over the episode this is ``R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x))``. The score lands on
    position ``T - 1`` (the last *sampled* token), whatever the truncation: only the reward model saw the
    truncated text. ``score_index`` ``(B,)`` puts it elsewhere (TRL's stop token: one position after it).

    Args:
        scores: ``(B,)`` reward-model scores (after the truncation penalty).
        kl: ``(B, T)`` per-token KL (see :func:`kl_penalty`; zero where masked).
        kl_coef: beta.
    Returns:
        ``(rewards, non_score_rewards)``, both ``(B, T)``; ``non_score_rewards = -beta * kl``.
    """
    if scores.dim() != 1 or scores.shape[0] != kl.shape[0]:
        raise ValueError(f"scores must have shape (B,) = ({kl.shape[0]},), got {tuple(scores.shape)}")
    non_score = -kl_coef * kl
    rewards = non_score.clone()
    if score_index is None:
        rewards[:, -1] += scores.to(rewards.dtype)
    else:
        rewards.scatter_add_(1, score_index.view(-1, 1), scores.to(rewards.dtype).view(-1, 1))
    return rewards, non_score


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the elements where ``mask`` is true (all elements without a mask)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(
    values: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    mask: torch.Tensor | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over all elements (or those in ``mask``; others become 0), with the
    *population* variance (the paper's code).

    ``shift_mean=False`` adds the mean back, ``(x - mean) / std + mean``: the paper whitens rewards this way
    (scale normalised, mean kept); advantages are whitened with the mean removed. ``reduce`` sums a tensor over
    all processes (e.g. ``accelerator.reduce(t, "sum")``): the mean and variance are then those of every process's
    elements, so N processes whiten exactly like one process holding the whole batch.
    """
    m = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    stats = torch.stack([(values * m).sum(), m.sum().to(values.dtype)])  # (sum, count)
    if reduce is not None:
        stats = reduce(stats)
    count = stats[1]
    mean = stats[0] / count.clamp(min=1)
    square = ((values - mean) ** 2 * m).sum().reshape(1)
    if reduce is not None:
        square = reduce(square)
    var = square[0] / count if count > 1 else torch.zeros((), dtype=values.dtype, device=values.device)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened if mask is None else whitened * m


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the T response tokens (no bootstrap after the last one).

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V_T = 0``), ``A_t = delta_t + gamma * lam * A_{t+1}``,
    ``returns_t = A_t + V_t``.

    Args:
        rewards, values: ``(B, T)``.
    Returns:
        ``(advantages, returns)``, both ``(B, T)``, not whitened.
    """
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} must have the same shape")
    steps = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages_reversed = []
    for t in reversed(range(steps)):
        next_values = values[:, t + 1] if t < steps - 1 else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages_reversed.append(last_gae)
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    return advantages, advantages + values


def ppo_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss ``mean(max(-A * rho_t, -A * clip(rho_t, 1 - eps, 1 + eps)))``, ``rho_t = pi/pi_old``.

    Means run over the tokens in ``mask`` (all without one).

    Returns:
        ``(loss, clipfrac, approxkl)``: the scalar loss; the fraction of tokens where the clipped term is the
        larger one; ``0.5 * mean((log pi - log pi_old)^2)`` (the paper's approxkl).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    losses = -advantages * ratio
    losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((losses_clipped > losses).float(), mask)
        approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, cliprange_value: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2))`` (means over the
    steps in ``mask``, all without one).

    Returns:
        ``(loss, clipfrac)``: the scalar loss and the fraction of tokens where the clipped term is the larger one.
    """
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    losses = (values - returns) ** 2
    losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((losses_clipped > losses).float(), mask)
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` (population variances): 1 = perfect value function, 0 = as good as a constant.

    Returns NaN when the returns are constant (the ratio is undefined).
    """
    var_returns = returns.float().var(unbiased=False)
    if var_returns.item() == 0.0:
        return float("nan")
    return float(1.0 - (returns.float() - values.float()).var(unbiased=False) / var_returns)
