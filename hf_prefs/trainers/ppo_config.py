"""Configuration of :class:`hf_prefs.PPOTrainer`: TRL's last ``PPOConfig`` field names plus the paper's settings.

Migrating from ``trl.experimental.ppo`` (TRL <= 1.12) is a changed import for the fields both have; the defaults
are the paper's books-task settings (Ziegler et al. 2019), which differ from TRL's in places (marked "TRL:" below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .._compat import TrlBaseConfig
from ..core.rollout import check_truncate_after

__all__ = ["PPOConfig"]


@dataclass
class PPOConfig(TrlBaseConfig):
    r"""
    Configuration for [`hf_prefs.PPOTrainer`]. Subclasses TRL's config base ([`~transformers.TrainingArguments`]), so
    every Trainer option (output_dir, report_to, save_steps, push_to_hub, seed, ...) works and `TrlParser` can read it
    from the command line or a YAML file.

    Batch sizes (same definitions as TRL's last PPOTrainer): one PPO update ("step") collects
    `batch_size = per_device_train_batch_size * gradient_accumulation_steps * world_size` episodes, split into
    `num_mini_batches` minibatches; each minibatch is one optimizer step, accumulated over micro-batches of
    `per_device_train_batch_size`, and the whole batch is visited `num_ppo_epochs` times. Defaults: 16 x 32 = 512
    episodes per update on one process, 1 minibatch, 4 epochs (paper). On N processes divide
    `gradient_accumulation_steps` by N to keep 512.

    Parameters (PPO; TRL names):
        total_episodes (`int`, *optional*): episodes to train on; `None` = `num_train_epochs * len(train_dataset)`
            (paper: 1M).
        num_mini_batches (`int`, defaults to 1), num_ppo_epochs (`int`, defaults to 4).
        local_rollout_forward_batch_size (`int`, defaults to 64): per-process chunk for generation and the no-grad
            forward passes of the rollout.
        response_length (`int`, defaults to 24): tokens sampled per episode; sampling is fixed-length (paper): no stop
            at EOS.
        temperature (`float`, defaults to 0.7): sampling temperature T; both π and ρ score tokens at T.
        kl_coef (`float`, defaults to 0.15): β (the initial β when `adaptive_kl`). TRL: 0.05.
        kl_estimator (`"k1"` or `"k3"`, defaults to `"k1"`): per-token KL estimate (paper: k1 = logπ - logρ).
        cliprange (0.2), cliprange_value (0.2), vf_coef (0.1), gamma (1.0), lam (0.95).
        whiten_rewards (`bool`, defaults to True): paper semantics: rewards are divided by their population std with
            the mean kept, per minibatch, before GAE. TRL: False, unbiased variance, whole batch.
        stop_token (`"eos"`, optional), stop_token_id (`int`, optional): TRL names. When set, they replace
            `truncate_token` as the token the response is cut after (generation still runs `response_length` tokens);
            set `truncate_after=0` to cut at the first one like TRL did.
        missing_eos_penalty (`float`, optional): TRL semantics: *subtract* this from the score of responses without
            the truncate/stop token. When `None` (default) the paper's rule applies instead: the score is *replaced*
            by `penalty_reward_value`.
        num_sample_generations (`int`, defaults to 10): how many times during training a table of samples (query,
            response, score) is printed / logged; 0 disables it.

    Parameters (paper):
        adaptive_kl (`bool`, defaults to True), kl_target (`float`, defaults to 6.0), kl_horizon (`int`, defaults to
            10000): β ← β·(1 + clip(KL/target − 1, ±0.2)·batch_size/horizon) after each update ([`AdaptiveKLController`]).
        truncate_token (`str`, defaults to `"."`), truncate_token_id (`int`, optional, wins over `truncate_token`),
            truncate_after (`int`, defaults to 16): the response is cut after the first truncate token at index >=
            `truncate_after`; only the reward sees the cut text. `truncate_token=None` disables truncation.
        penalty_reward_value (`float`, defaults to -1.0): score of responses with no truncate token at index >=
            `truncate_after`.
        value_model (`"shared"` or `"separate"`, defaults to `"shared"`): value head on the policy trunk (paper) or a
            separate value model initialised from the reward model (TRL's last PPOTrainer).
        normalize_reward (`bool`, defaults to False): before training, set the reward model's gain/bias so that
            rewards of `normalize_samples` raw samples of ρ have mean 0 and std 1 (the paper's `normalize_after`;
            use it for a reward model that was not normalized). Only for reward models, not reward callables.
        normalize_samples (`int`, defaults to 256).

    Paper defaults also set here: `learning_rate=1e-5` decayed linearly to 0 over the updates
    (`lr_scheduler_type="linear"`), Adam `adam_epsilon=1e-5`, no gradient clipping (`max_grad_norm=0`), one log per
    update (`logging_steps=1`). `bf16` defaults to True only on a CUDA device that supports it (False on CPU).
    """

    # ---- TrainingArguments defaults changed for PPO / the paper ----
    learning_rate: float = field(default=1e-5, metadata={"help": "Initial learning rate (paper: 1e-5), decayed linearly to 0."})
    adam_epsilon: float = field(default=1e-5, metadata={"help": "Adam epsilon (paper: 1e-5)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Micro-batch size per device."})
    gradient_accumulation_steps: int = field(
        default=32,
        metadata={"help": "Micro-batches per PPO batch per device (TRL's definition); 16 x 32 = 512 episodes (paper)."},
    )
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping norm; 0 disables it (paper)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X PPO updates."})
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of `activation_checkpointing` (off by default for PPO)."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision; default: True on a CUDA device with bf16 support, else False (CPU)."},
    )

    # ---- PPO (TRL's last PPOConfig names) ----
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing the dataset."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer steps) per PPO epoch."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Episodes to train on; None = num_train_epochs * len(train_dataset)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Per-process chunk size for generation and no-grad rollout forwards."}
    )
    num_sample_generations: int = field(
        default=10, metadata={"help": "Number of sample tables (query/response/score) printed during training."}
    )
    response_length: int = field(default=24, metadata={"help": "Tokens sampled per response (fixed length)."})
    stop_token: Literal["eos"] | None = field(
        default=None, metadata={"help": "TRL name: 'eos' makes EOS the truncate token (replaces truncate_token)."}
    )
    stop_token_id: int | None = field(
        default=None, metadata={"help": "TRL name: token id to truncate after (replaces truncate_token)."}
    )
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (also applied to π and ρ log-probs)."})
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "TRL semantics: subtract from the score of responses without the stop token (else the paper's replacement by penalty_reward_value)."},
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "PPO epochs over each batch."})
    whiten_rewards: bool = field(
        default=True, metadata={"help": "Divide rewards by their population std (mean kept) per minibatch before GAE."}
    )
    kl_coef: float = field(default=0.15, metadata={"help": "KL coefficient β (initial value if adaptive_kl)."})
    kl_estimator: Literal["k1", "k3"] = field(default="k1", metadata={"help": "Per-token KL estimator (paper: k1)."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})

    # ---- the paper's additions ----
    adaptive_kl: bool = field(default=True, metadata={"help": "Adapt β toward kl_target (paper)."})
    kl_target: float = field(default=6.0, metadata={"help": "Target KL in nats per episode for adaptive β."})
    kl_horizon: int = field(default=10_000, metadata={"help": "Adaptive-β horizon in episodes."})
    truncate_token: str | None = field(default=".", metadata={"help": "Cut responses after this token (one token)."})
    truncate_token_id: int | None = field(default=None, metadata={"help": "Token id to cut after (wins over truncate_token)."})
    truncate_after: int = field(default=16, metadata={"help": "Only truncate tokens at index >= this count."})
    penalty_reward_value: float = field(
        default=-1.0, metadata={"help": "Score given to responses with no truncate token at index >= truncate_after."}
    )
    value_model: Literal["shared", "separate"] = field(
        default="shared", metadata={"help": "'shared': value head on the policy trunk (paper); 'separate': copy of the reward model."}
    )
    normalize_reward: bool = field(
        default=False, metadata={"help": "Normalize the reward model on ρ samples (mean 0, std 1) before training."}
    )
    normalize_samples: int = field(default=256, metadata={"help": "ρ samples used by normalize_reward."})

    # ---- filled in by the trainer (TRL names), not meant to be set; `world_size` is TrainingArguments' property ----
    local_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: episodes per update per process."})
    batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: episodes per update."})
    local_mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: minibatch per process."})
    mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: minibatch across processes."})
    num_total_batches: int | None = field(default=None, metadata={"help": "Set by the trainer: number of PPO updates."})

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bool(
                not self.fp16 and not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            )
        super().__post_init__()
        self._validate_ppo_fields()

    def _validate_ppo_fields(self) -> None:
        def positive(name: str, value: float) -> None:
            if not value > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {value!r}")

        for name in ("temperature", "response_length", "num_ppo_epochs", "num_mini_batches", "kl_target", "kl_horizon",
                     "local_rollout_forward_batch_size", "normalize_samples"):
            positive(name, getattr(self, name))
        if self.kl_coef < 0:
            raise ValueError(f"PPOConfig.kl_coef must be >= 0, got {self.kl_coef}")
        for name in ("cliprange", "cliprange_value", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"PPOConfig.gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"PPOConfig.kl_estimator must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.value_model not in ("shared", "separate"):
            raise ValueError(f"PPOConfig.value_model must be 'shared' or 'separate', got {self.value_model!r}")
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ValueError("PPOConfig: set either stop_token or stop_token_id, not both")
        if self.stop_token not in (None, "eos"):
            raise ValueError(f"PPOConfig.stop_token must be 'eos' or None, got {self.stop_token!r}")
        truncating = any(
            v is not None for v in (self.truncate_token, self.truncate_token_id, self.stop_token, self.stop_token_id)
        )
        check_truncate_after(self.truncate_after, self.response_length, truncating)
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"PPOConfig.missing_eos_penalty must be >= 0 (it is subtracted), got {self.missing_eos_penalty}")
        if self.gradient_accumulation_steps % self.num_mini_batches != 0:
            raise ValueError(
                f"PPOConfig: gradient_accumulation_steps ({self.gradient_accumulation_steps}) must be a multiple of "
                f"num_mini_batches ({self.num_mini_batches}): each minibatch is a whole number of micro-batches"
            )
        if self.total_episodes is not None and self.total_episodes < 1:
            raise ValueError(f"PPOConfig.total_episodes must be >= 1, got {self.total_episodes}")
