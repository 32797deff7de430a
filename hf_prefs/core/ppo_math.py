"""The PPO equations of the paper (Ziegler et al. 2019, Section 2.2 and its code), one small function each.

Shapes: B = episodes, T = response length (every sampled token is a step; nothing is masked after EOS, as in
the paper, whose samples have a fixed length).

- :func:`kl_penalty` per-token KL estimate  ``kl_t = log pi(y_t) - log rho(y_t)``            (k1, the paper)
- :func:`per_token_rewards`                   ``r_t = -beta * kl_t  (+ score at t = T-1)``
- :func:`whiten`                              ``(x - mean) / sqrt(var + 1e-8)  [+ mean]``  (population variance)
- :func:`compute_gae`                         ``A_t = sum_l (gamma*lam)^l delta_{t+l}``, ``R_t = A_t + V_t``
- :func:`ppo_policy_loss`                     ``mean(max(-A*ratio, -A*clip(ratio, 1-eps, 1+eps)))``
- :func:`ppo_value_loss`                      ``0.5 * mean(max((V-R)^2, (clip(V, V_old-eps, V_old+eps)-R)^2))``
- :func:`explained_variance`                  ``1 - Var[R - V] / Var[R]``
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "kl_penalty",
    "per_token_rewards",
    "whiten",
    "compute_gae",
    "ppo_policy_loss",
    "ppo_value_loss",
    "explained_variance",
]


def kl_penalty(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: Literal["k1", "k3"] = "k1"
) -> torch.Tensor:
    """Per-token KL estimate between pi and rho on the sampled tokens, ``(B, T)``.

    ``k1`` (the paper): ``log pi(y_t) - log rho(y_t)``; its sum over t is ``log pi(y|x) / rho(y|x)``.
    ``k3`` (kept from TRL's last PPOTrainer): ``(exp(d) - 1) - d`` with ``d = log rho - log pi``; non-negative,
    lower variance, same expectation.
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        d = ref_logprobs - logprobs
        return torch.expm1(d) - d
    raise ValueError(f"kl_estimator must be 'k1' or 'k3', got {estimator!r}")


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's reward per token: ``-beta * kl_t`` at every response token, plus the score at the last one.

    Summed over the episode this is ``R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x))``. The score lands on
    position ``T - 1`` (the last *sampled* token), whatever the truncation: only the reward model saw the
    truncated text.

    Args:
        scores: ``(B,)`` reward-model scores (after the truncation penalty).
        kl: ``(B, T)`` per-token KL (see :func:`kl_penalty`).
        kl_coef: beta.
    Returns:
        ``(rewards, non_score_rewards)``, both ``(B, T)``; ``non_score_rewards = -beta * kl``.
    """
    if scores.dim() != 1 or scores.shape[0] != kl.shape[0]:
        raise ValueError(f"scores must have shape (B,) = ({kl.shape[0]},), got {tuple(scores.shape)}")
    non_score = -kl_coef * kl
    rewards = non_score.clone()
    rewards[:, -1] += scores.to(rewards.dtype)
    return rewards, non_score


def whiten(values: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over all elements, with the *population* variance (the paper's code).

    ``shift_mean=False`` adds the mean back, ``(x - mean) / std + mean``: the paper whitens rewards this way
    (scale normalised, mean kept); advantages are whitened with the mean removed.
    """
    mean = values.mean()
    var = values.var(unbiased=False) if values.numel() > 1 else torch.zeros((), dtype=values.dtype, device=values.device)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened


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
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss ``mean(max(-A * rho_t, -A * clip(rho_t, 1 - eps, 1 + eps)))``, ``rho_t = pi/pi_old``.

    Returns:
        ``(loss, clipfrac, approxkl)``: the scalar loss; the fraction of tokens where the clipped term is the
        larger one; ``0.5 * mean((log pi - log pi_old)^2)`` (the paper's approxkl).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    losses = -advantages * ratio
    losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = torch.max(losses, losses_clipped).mean()
    with torch.no_grad():
        clipfrac = (losses_clipped > losses).float().mean()
        approxkl = 0.5 * (log_ratio**2).mean()
    return loss, clipfrac, approxkl


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss ``0.5 * mean(max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2))``.

    Returns:
        ``(loss, clipfrac)``: the scalar loss and the fraction of tokens where the clipped term is the larger one.
    """
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    losses = (values - returns) ** 2
    losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * torch.max(losses, losses_clipped).mean()
    with torch.no_grad():
        clipfrac = (losses_clipped > losses).float().mean()
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """``1 - Var[R - V] / Var[R]`` (population variances): 1 = perfect value function, 0 = as good as a constant.

    Returns NaN when the returns are constant (the ratio is undefined).
    """
    var_returns = returns.float().var(unbiased=False)
    if var_returns.item() == 0.0:
        return float("nan")
    return float(1.0 - (returns.float() - values.float()).var(unbiased=False) / var_returns)
