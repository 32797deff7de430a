"""Paired comparisons on the same queries, with standard errors.

Win rate of policy A over policy B on the same queries under a judge j (a reward model, a known reward):

    w = (1/n) Σ_i [ 1(j(x_i, a_i) > j(x_i, b_i)) + ½·1(j(x_i, a_i) = j(x_i, b_i)) ],   SE = std_i(outcome_i) / √n

Before/after on the same queries (paired; the evaluations share the sampling seed):

    Δ = (1/n) Σ_i (a_i − b_i),   SE(Δ) = std_i(a_i − b_i) / √n

A noiseless simulated labeler choosing between a_i and b_i picks the one with the higher known reward, so its
win rate is this w with j = the known reward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["win_rate", "paired_difference", "mean_and_se"]


def _paired(a: Sequence[float], b: Sequence[float], fields: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two equally long, non-empty 1-D float64 tensors, else a ValueError naming the arguments ``fields``."""
    ta = torch.as_tensor(list(a), dtype=torch.float64)
    tb = torch.as_tensor(list(b), dtype=torch.float64)
    if ta.shape != tb.shape or ta.ndim != 1 or ta.numel() == 0:
        raise ValueError(f"{fields}: need two equally long non-empty lists, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    return ta, tb


def mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error std(x) / √n (NaN for a single value)."""
    n = x.numel()
    se = float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return float(x.mean()), se


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> tuple[float, float]:
    """Paired win rate of A over B, ties counted half, and its standard error (see the module docstring); NaN for
    both where a score is NaN (a comparison with NaN is false: it counted as a loss), as the paired difference is."""
    a, b = _paired(scores_a, scores_b, "scores_a, scores_b")
    if torch.isnan(a).any() or torch.isnan(b).any():
        return float("nan"), float("nan")
    return mean_and_se((a > b).double() + 0.5 * (a == b).double())


def paired_difference(after: Sequence[float], before: Sequence[float]) -> tuple[float, float]:
    """Mean per-query difference ``after − before`` and its standard error (see the module docstring)."""
    a, b = _paired(after, before, "after, before")
    return mean_and_se(a - b)
