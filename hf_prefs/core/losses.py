"""The paper's reward-model loss: K-way softmax cross-entropy over a labeler's best-of-K choice.

A labeler sees a query x and K samples y_0..y_{K-1} and picks the best, b. With the reward model's
scores r_i = r(x, y_i) the loss of one label is

    loss = -log( exp(r_b) / sum_i exp(r_i) ) = logsumexp_i(r_i) - r_b

For K = 2 this is the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected) that ``trl.RewardTrainer``
uses, so a pairwise dataset is the special case K = 2. The loss only sees differences of rewards; TRL's
``center_rewards_coefficient`` adds a term pulling each label's rewards towards a zero sum
(:func:`reward_centering_penalty`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["kway_preference_loss", "kway_accuracy", "kway_margin", "reward_centering_penalty"]


def kway_preference_loss(rewards: torch.Tensor, best: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Softmax cross-entropy of the best-of-K choice.

    Args:
        rewards: ``(B, K)`` scalar rewards r(x, y_i) of the K samples of each of B labels.
        best: ``(B,)`` integer index b of the sample the labeler picked.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``logsumexp_i r_i - r_b`` reduced over the batch (a scalar) or per label (``(B,)``).
    """
    rewards, best = checked_pair(rewards, best)
    return F.cross_entropy(rewards, best, reduction=reduction)


def checked_pair(rewards: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rewards, best)`` as tensors after checking them: ``rewards`` ``(B, K)`` with K >= 2, as a float tensor of at
    least float32 (float64 kept: a hand computation in float64 is compared exactly); ``best`` ``(B,)`` integer indices
    in ``[0, K - 1]``, as long on ``rewards``' device (a float index was cut to an integer: 1.9 read as 1). Lists and
    numpy arrays are taken as tensors."""
    rewards, best = torch.as_tensor(rewards), torch.as_tensor(best)
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must have shape (B, K) with K >= 2, got {tuple(rewards.shape)}")
    if best.shape != rewards.shape[:1]:
        raise ValueError(f"best must have shape ({rewards.shape[0]},), got {tuple(best.shape)}")
    if best.is_floating_point() or best.is_complex() or best.dtype == torch.bool:
        raise ValueError(f"best must hold integer indices, got dtype {best.dtype}")
    best = best.to(device=rewards.device, dtype=torch.long)
    if best.numel() and (best.min() < 0 or best.max() >= rewards.shape[1]):
        raise ValueError(f"best must lie in [0, {rewards.shape[1] - 1}], got values {best.tolist()}")
    return rewards.to(torch.promote_types(rewards.dtype, torch.float32)), best


def reward_centering_penalty(rewards: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``mean_b (sum_i r_bi)^2`` over the B labels of a ``(B, K)`` reward batch: TRL's ``center_rewards_coefficient``
    term, ``mean((r_chosen + r_rejected)^2)`` (Eisenstein et al., 2023), for K = 2, and its K-way form (the sum of
    the label's K rewards), which leaves the preference loss unchanged and fixes the free offset of the rewards.
    ``reduction="none"``: each label's ``(sum_i r_bi)^2``, ``(B,)``."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (B, K), got {tuple(rewards.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    per_label = rewards.float().sum(dim=1).pow(2)
    return per_label if reduction == "none" else per_label.mean()


def kway_accuracy(rewards: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Fraction of labels whose highest-reward sample is the labeler's pick.

    Ties count fractionally: if the maximum reward is shared by m samples and b is among them, the
    label scores 1/m (the expected accuracy of breaking the tie at random), so a constant reward model
    has accuracy exactly 1/K.
    """
    rewards, best = checked_pair(rewards, best)
    is_max = rewards == rewards.max(dim=1, keepdim=True).values  # (B, K)
    hit = is_max.gather(1, best[:, None]).squeeze(1).float()  # (B,)
    return (hit / is_max.sum(dim=1).float()).mean()


def kway_margin(rewards: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """Mean over labels of ``r_b - mean_{i != b} r_i``: how far the picked sample's reward stands above the others'.
    For K = 2 it is TRL's ``margin`` metric, ``mean(r_chosen - r_rejected)``."""
    rewards, best = checked_pair(rewards, best)
    k = rewards.shape[1]
    picked = rewards.gather(1, best[:, None]).squeeze(1)
    return (picked - (rewards.sum(dim=1) - picked) / (k - 1)).mean()
