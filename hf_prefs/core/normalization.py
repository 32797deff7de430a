"""Reward normalization: the paper's gain and bias, computed from rewards on samples of ρ.

The reward model's output is ``r(x, y) = gain · out(x, y) + bias``. Before training (``normalize_before``) and
after it (``normalize_after``) the paper resets ``gain = 1, bias = 0``, scores ``normalize_samples`` (256)
responses sampled from ρ at the task temperature, takes their mean ``m`` and *population* standard deviation
``s`` and sets

    gain = target_std / s,        bias = target_mean - gain · m

so that rewards on ρ's samples have mean ``target_mean`` and std ``target_std`` (0 and 1 for best-of-N labels;
after training always 0 and 1, "so the KL coefficient always has the same meaning").

Where the gain and bias are stored and the procedure that samples and scores: :mod:`hf_prefs.models.reward_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["reward_normalization", "RELATIVE_STD_FLOOR"]

#: The least std of the rewards, relative to their largest magnitude, that is taken for a spread: float32 scores of
#: one text vary by ~1e-7 of their size with the batch they are computed in (a gain of ~1e8 would then scale rounding).
RELATIVE_STD_FLOOR = 1e-6


def reward_normalization(
    raw_rewards: torch.Tensor | Sequence[float], target_mean: float = 0.0, target_std: float = 1.0
) -> tuple[float, float]:
    """Gain and bias that map ``raw_rewards`` to mean ``target_mean`` and population std ``target_std``.

    ``m = mean(r)``, ``s = sqrt(mean((r - m)²))`` (population std, as the paper), ``gain = target_std / s``,
    ``bias = target_mean - gain · m``.

    Raises:
        ValueError: fewer than 2 rewards, a non-finite reward, a zero std (a constant reward cannot be rescaled)
            or one under :data:`RELATIVE_STD_FLOOR` of the rewards' size (equal rewards but for float rounding),
            or ``target_std <= 0``.
    """
    r = torch.as_tensor(raw_rewards, dtype=torch.float64).flatten()
    if r.numel() < 2:
        raise ValueError(f"reward normalization needs at least 2 rewards, got {r.numel()}")
    if not torch.isfinite(r).all():
        bad = torch.nonzero(~torch.isfinite(r)).flatten()[:5].tolist()
        raise ValueError(f"reward normalization got non-finite rewards at indices {bad}")
    if not target_std > 0:
        raise ValueError(f"target_std must be > 0, got {target_std}")
    m = r.mean()
    s = r.std(unbiased=False)
    if not s > 0:
        raise ValueError(f"the {r.numel()} rewards are all equal ({m.item():.6g}); their std is 0, cannot normalize")
    if not s > RELATIVE_STD_FLOOR * r.abs().max():  # the spread of a float32 model's rounding, not of its rewards
        raise ValueError(
            f"the {r.numel()} rewards are equal up to rounding (mean {m.item():.9g}, std {s.item():.3g}: under "
            f"{RELATIVE_STD_FLOOR:g} of their size); a gain of {target_std / s.item():.3g} would scale that rounding, "
            "cannot normalize")
    gain = target_std / s.item()
    bias = target_mean - gain * m.item()
    return float(gain), float(bias)
