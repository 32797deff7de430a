"""Configuration of :class:`hf_prefs.PreferenceRewardTrainer`: ``trl.RewardConfig`` plus the paper's K-way options."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from trl import RewardConfig

__all__ = ["PreferenceRewardConfig"]


def _default_bf16() -> bool:
    """bf16 mixed precision only where the hardware has it (TRL's configs default to bf16=True, which raises on CPU)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return hasattr(torch, "xpu") and torch.xpu.is_available()


@dataclass
class PreferenceRewardConfig(RewardConfig):
    r"""Configuration of :class:`PreferenceRewardTrainer`: ``trl.RewardConfig`` plus the paper's K-way options.

    Parameters:
        num_candidates (`int`, *optional*):
            K, the number of samples per label (paper: 4). Inferred from the training set when unset; when set,
            every dataset must have exactly K samples per row.
        normalize_before (`bool`, defaults to `True`):
            Before training, reset gain/bias to 1/0 and set them so rewards on ρ's samples have mean
            ``target_mean`` and std ``target_std`` (paper: on). Needs ``normalization_samples`` on the trainer.
        normalize_after (`bool`, defaults to `True`):
            The same after training (paper: on, targets 0/1, so the KL coefficient keeps its meaning).
        normalize_samples (`int`, defaults to `256`):
            Number of ρ samples scored for each normalization (paper: 256).
        target_mean (`float`, defaults to `0.0`), target_std (`float`, defaults to `1.0`):
            Targets of ``normalize_before`` (paper for best-of-N labels: 0 and 1); ``normalize_after`` always
            targets 0 and 1.
        share_query_prefix (`bool`, defaults to `False`):
            Encode each query once and its K responses on top of it (one packed row per label with a block
            attention mask) instead of K full rows. Same rewards (to float precision), fewer tokens; needs the
            ``eager`` or ``sdpa`` attention implementation. Models that cannot read packed rows exactly (no score
            head at every position, no ``position_ids``, or an attention window that ``max_length`` outgrows:
            Mistral's, Gemma 2/3's sliding layers) encode each sample with its query instead, with a warning.
        cache_frozen_features (`bool`, defaults to `False`):
            When the embeddings and the bottom blocks are frozen (e.g. to train only the top layers on a CPU),
            compute the frozen blocks' output once per label and train the top on the stored output
            (:class:`hf_prefs.models.frozen_features.FrozenFeatureCache`, an anonymous file in ``output_dir``):
            the same result to float rounding, and epochs after the first skip the frozen blocks. Ignored, with a
            warning saying why, where it could change the result (dropout in the frozen part, nothing frozen,
            activation checkpointing — TRL's default: set ``activation_checkpointing=False``).

    Differences from ``trl.RewardConfig`` defaults: ``bf16`` defaults to ``True`` only on hardware with bf16
    (CUDA/XPU), else ``False``; TRL's ``gradient_checkpointing`` (default ``True``) is passed on as
    ``activation_checkpointing`` when that is unset, without transformers' (>= 5.25) deprecation warning. The paper's
    books-task training (one epoch, batch 32, lr 5e-5 decayed linearly to 0) is set by the recipes, not here.
    """

    num_candidates: int | None = field(
        default=None,
        metadata={"help": "K, samples per label (paper: 4). Inferred from the training set when unset."},
    )
    normalize_before: bool = field(
        default=True,
        metadata={"help": "Normalize rewards on ρ samples before training (paper: True)."},
    )
    normalize_after: bool = field(
        default=True,
        metadata={"help": "Normalize rewards on ρ samples after training (paper: True)."},
    )
    normalize_samples: int = field(
        default=256,
        metadata={"help": "Number of ρ samples used for each normalization (paper: 256)."},
    )
    target_mean: float = field(default=0.0, metadata={"help": "Target reward mean on ρ samples before training (paper: 0; after: always 0)."})
    target_std: float = field(default=1.0, metadata={"help": "Target reward std on ρ samples before training (paper: 1; after: always 1)."})
    share_query_prefix: bool = field(
        default=False,
        metadata={"help": "Encode each query once with its K responses in one packed row (fewer tokens)."},
    )

    cache_frozen_features: bool = field(
        default=False,
        metadata={"help": "Compute the frozen bottom layers' output once per label and train the top on it."},
    )

    @classmethod
    def from_reward_config(cls, args: RewardConfig, **overrides: Any) -> PreferenceRewardConfig:
        """``trl.RewardConfig`` ``args`` as a ``PreferenceRewardConfig``: every field of ``args`` as it is, the K-way
        options at their defaults, then ``overrides``."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(args) if f.init}, **overrides)

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            self.bf16 = False if self.use_cpu else _default_bf16()
        if self.activation_checkpointing is None and self.gradient_checkpointing is not None:
            # TRL's field (default True) resolved into transformers' name here: transformers >= 5.25 would warn that
            # `gradient_checkpointing` is deprecated on every config made, TRL's default included
            self.activation_checkpointing = self.gradient_checkpointing
        super().__post_init__()
        if self.num_candidates is not None and self.num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {self.num_candidates}")
        if self.normalize_samples < 2:
            raise ValueError(f"normalize_samples must be >= 2, got {self.normalize_samples}")
        if not self.target_std > 0:
            raise ValueError(f"target_std must be > 0, got {self.target_std}")
