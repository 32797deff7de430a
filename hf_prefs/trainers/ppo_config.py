"""Configuration of :class:`hf_prefs.PPOTrainer`: every field of TRL 1.12's ``PPOConfig`` with TRL's meaning and
default, plus the paper's additions (off by default).

A config written for ``trl.experimental.ppo`` (TRL <= 1.12) behaves as it did there, except where README.md's
migration table says otherwise and why. The paper's settings (Ziegler et al. 2019) are one switch away:
``PPOConfig.paper("books" | "tldr" | "cnndm", **overrides)`` or the recipes' YAML files.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .._compat import TrlBaseConfig, cpu_bf16_supported, default_world_size
from ..core.rollout import check_truncate_after
from ..field_types import unset_null_strings

__all__ = ["PPOConfig", "PAPER_SETTINGS", "minibatch_split"]

#: The paper's settings per task family (its Section 3 and code): what ``PPOConfig.paper(task)`` sets.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "books": dict(  # sentiment, descriptiveness: 24 tokens at T=0.7, cut after "." at index >= 16, adaptive beta
        response_length=24, temperature=0.7, truncate_token=".", truncate_after=16, penalty_reward_value=-1.0,
        kl_coef=0.15, adaptive_kl=True, kl_target=6.0, kl_horizon=10_000, learning_rate=1e-5, adam_epsilon=1e-5,
        per_device_train_batch_size=16, gradient_accumulation_steps=32, num_mini_batches=1, num_ppo_epochs=4,
        whiten_rewards=True, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
        lr_scheduler_type="linear", max_grad_norm=0.0, value_model="shared",
    ),
    "tldr": dict(  # 75 tokens at T=0.7, cut after "\n" at index >= 55, fixed beta 0.03, no reward whitening
        response_length=75, temperature=0.7, truncate_token="\n", truncate_after=55, penalty_reward_value=-1.0,
        kl_coef=0.03, adaptive_kl=False, learning_rate=2e-6, adam_epsilon=1e-5, per_device_train_batch_size=16,
        gradient_accumulation_steps=2, num_mini_batches=1, num_ppo_epochs=4, whiten_rewards=False, cliprange=0.2,
        cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95, lr_scheduler_type="linear", max_grad_norm=0.0,
        value_model="shared",
    ),
}
PAPER_SETTINGS["cnndm"] = {**PAPER_SETTINGS["tldr"], "temperature": 0.5, "kl_coef": 0.01}


@dataclass
class PPOConfig(TrlBaseConfig):
    r"""
    Configuration for [`hf_prefs.PPOTrainer`]. Subclasses TRL's config base ([`~transformers.TrainingArguments`]), so
    every Trainer option (output_dir, report_to, save_steps, push_to_hub, seed, ...) works and `TrlParser` /
    `HfArgumentParser` read it from the command line or a YAML file.

    Every field of TRL 1.12's `PPOConfig` is here with TRL's meaning and default. Batch sizes (TRL's definitions): one
    PPO update ("step") collects `batch_size = per_device_train_batch_size * gradient_accumulation_steps * world_size`
    episodes, split into `num_mini_batches` minibatches; each minibatch is one optimizer step, accumulated over
    micro-batches of `per_device_train_batch_size` (a minibatch smaller than that is one micro-batch, as in TRL:
    :func:`minibatch_split`), and the batch is visited `num_ppo_epochs` times.

    Parameters (TRL 1.12 names and defaults):
        total_episodes (`int`, *optional*): episodes to train on; `None` = `num_train_epochs * len(train_dataset)`.
        num_mini_batches (`int`, defaults to 1), num_ppo_epochs (`int`, defaults to 4).
        local_rollout_forward_batch_size (`int`, defaults to 64): per-process chunk for generation and the no-grad
            forward passes of the rollout.
        local_rollout_generation_batch_size (`int`, *optional*): hf_prefs: a separate per-process chunk for
            generation only; `None` (default) = `local_rollout_forward_batch_size`, TRL's one size for both. Sampling
            is bound by reading the weights once per token for the whole chunk (wants wide chunks), the log-prob passes
            by their activations (memory grows with the chunk).
        num_sample_generations (`int`, defaults to 10): how many times during training completions are shown: on
            `eval_dataset` (`generate_completions`, as TRL) or, without one, a table of the rollout's samples.
        response_length (`int`, defaults to 53): tokens sampled per episode (TRL's `max_new_tokens`).
        stop_token (`"eos"`, optional), stop_token_id (`int`, optional): responses end after the first stop token;
            what follows is masked out of the KL, the values and the losses, and the score is placed after it (TRL).
        temperature (`float`, defaults to 0.7): sampling temperature T; both pi and rho score tokens at T.
        missing_eos_penalty (`float`, optional): *subtracted* from the score of responses without EOS (TRL). Set
            without a stop or truncate token it cuts nothing: responses run their full length past any EOS, as
            TRL 1.12's did then (its generation stopped at the stop token only).
        sft_model_path, reward_model_path (`str`, defaults to `"EleutherAI/pythia-160m"`): where TRL's scripts load
            the policy/reference and the reward/value models from; `PPOTrainer(model=None)` / `reward_model=None`
            load them.
        model_adapter_name, ref_adapter_name (`str`, optional): PEFT adapter names: with `ref_adapter_name` the
            reference is that adapter (else the policy with adapters disabled); `model_adapter_name` the one trained.
        whiten_rewards (`bool`, defaults to False), kl_coef (`float`, defaults to 0.05), kl_estimator (`"k1"`,
            `"k2"` or `"k3"`, defaults to `"k1"`), cliprange (0.2), vf_coef (0.1), cliprange_value (0.2),
            gamma (1.0), lam (0.95).
        ds3_gather_for_generation (`bool`, defaults to True): under DeepSpeed ZeRO-3, gather the policy's weights
            once per rollout for generation (fast, needs memory); False generates with sharded weights.
        world_size, num_total_batches, micro_batch_size, local_batch_size, batch_size, local_mini_batch_size,
            mini_batch_size: set by the trainer, as TRL did.

    Parameters (the paper's additions; off by default):
        adaptive_kl (`bool`, defaults to False), kl_target (`float`, defaults to 6.0), kl_horizon (`int`, defaults to
            10000): beta <- beta * (1 + clip(KL/target - 1, +-0.2) * batch_size/horizon) after each update.
        truncate_token (`str`, optional), truncate_token_id (`int`, optional), truncate_after (`int`, defaults to 0):
            the paper's cut: only the reward sees the response cut after the first truncate token at index >=
            `truncate_after`; KL, values and PPO use all sampled tokens. `stop_token`/`stop_token_id` win over them.
        penalty_reward_value (`float`, defaults to -1.0): the paper's score of responses without the truncate token
            at index >= `truncate_after` (a replacement, unlike TRL's subtracted `missing_eos_penalty`).
        value_model (`"shared"`, `"separate"` or `"policy"`, defaults to `"shared"`): with no `value_model=` given, a
            zero-init value head on the policy trunk (paper), a copy of the reward model (`"separate"`, TRL's
            architecture), or a copy of the policy's trunk with a zero-init head, trained in full (`"policy"`).
        normalize_reward (`bool`, defaults to False), normalize_samples (`int`, defaults to 256): before training,
            set the reward model's gain/bias so rewards of rho's samples have mean 0 and std 1.
        tf1_adam (`bool`, defaults to False): TF1's Adam, as the paper's code (epsilon before the bias correction).
        value_learning_rate (`float` or `None`, defaults to None): the value function's own parameters' learning rate
            (None: ``learning_rate``).
        critic_warmup_updates (`int`, defaults to 0): value-function-only updates at the start (not under DeepSpeed).
        reward_weights (`list[float]` or `None`, defaults to None): GRPOConfig's: with a list of reward functions, the
            score is their weighted sum (None: 1 each).

    `max_grad_norm` defaults to 0 (no clipping; TRL 1.12 never clipped, whatever its value) and `logging_steps` to 1
    (TRL 1.12 logged every update). `bf16` defaults to True only on a CUDA device that supports it (False on CPU).
    """

    # ---- TrainingArguments defaults changed for PPO ----
    learning_rate: float = field(default=3e-6, metadata={"help": "Initial learning rate (TRL: 3e-6; paper: 1e-5)."})
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Gradient clipping norm; 0 = none (TRL 1.12 never clipped; paper: none)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every X PPO updates (TRL 1.12 logged every one)."})
    gradient_checkpointing: bool | None = field(  # nargs/const: a bare `--gradient_checkpointing` means true, as in TRL
        default=None, metadata={"help": "Alias of `activation_checkpointing` (off by default for PPO).", "nargs": "?",
                                "const": True}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision; default: True on a CUDA device with bf16 support, else False (CPU)."},
    )

    # ---- TRL 1.12's PPOConfig, in its order, with its defaults ----
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing the dataset."})
    num_mini_batches: int = field(default=1, metadata={"help": "Minibatches (optimizer steps) per PPO epoch."})
    total_episodes: int | None = field(
        default=None, metadata={"help": "Episodes to train on; None = num_train_epochs * len(train_dataset)."}
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Per-process chunk size for generation and no-grad rollout forwards."}
    )
    num_sample_generations: int = field(
        default=10, metadata={"help": "How many times completions are shown during training (0: never)."}
    )
    response_length: int = field(default=53, metadata={"help": "Tokens sampled per response (TRL: 53; paper: 24)."})
    stop_token: Literal["eos"] | None = field(
        default=None, metadata={"help": "'eos': responses end after the first EOS (TRL)."}
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Responses end after the first such token (TRL)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (also applied to pi and rho log-probs)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses without EOS (TRL); it cuts nothing: "
                                          "without a stop or truncate token responses run past EOS, as TRL 1.12's."}
    )
    sft_model_path: str = field(
        default="EleutherAI/pythia-160m", metadata={"help": "Policy / reference model path (TRL's scripts)."}
    )
    world_size: int | None = field(default=None, metadata={"help": "Set by the trainer: number of processes."})
    num_total_batches: int | None = field(default=None, metadata={"help": "Set by the trainer: number of PPO updates."})
    micro_batch_size: int | None = field(
        default=None, metadata={"help": "Set by the trainer: per_device_train_batch_size * world_size."}
    )
    local_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: episodes per update per process."})
    batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: episodes per update."})
    local_mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: minibatch per process."})
    mini_batch_size: int | None = field(default=None, metadata={"help": "Set by the trainer: minibatch across processes."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the model to the Hub after training."})
    reward_model_path: str = field(
        default="EleutherAI/pythia-160m", metadata={"help": "Reward (and TRL's value) model path (TRL's scripts)."}
    )
    model_adapter_name: str | None = field(default=None, metadata={"help": "PEFT: the adapter trained (TRL)."})
    ref_adapter_name: str | None = field(default=None, metadata={"help": "PEFT: the adapter used as the reference (TRL)."})
    num_ppo_epochs: int = field(default=4, metadata={"help": "PPO epochs over each batch."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Divide rewards by their std (mean kept) before GAE (paper: True)."}
    )
    kl_coef: float = field(default=0.05, metadata={"help": "KL coefficient beta (initial value if adaptive_kl; paper: 0.15)."})
    kl_estimator: Literal["k1", "k2", "k3"] = field(
        default="k1", metadata={"help": "Per-token KL estimator: k1 (paper), k2 (0.5 log-ratio^2) or k3 (TRL)."}
    )
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    ds3_gather_for_generation: bool = field(
        default=True, metadata={"help": "ZeRO-3: gather the policy's weights for generation (fast) or generate sharded."}
    )

    # ---- hf_prefs's additions ----
    local_rollout_generation_batch_size: int | None = field(
        default=None,
        metadata={"help": "Per-process chunk for generation only (None: local_rollout_forward_batch_size, as TRL)."},
    )

    # ---- the paper's additions (off by default) ----
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt beta toward kl_target (paper: True)."})
    kl_target: float = field(default=6.0, metadata={"help": "Target KL in nats per episode for adaptive beta."})
    kl_horizon: int = field(default=10_000, metadata={"help": "Adaptive-beta horizon in episodes."})
    truncate_token: str | None = field(
        default=None, metadata={"help": "Paper's cut: the reward sees the response up to this token (paper: '.')."}
    )
    truncate_token_id: int | None = field(default=None, metadata={"help": "Token id to cut after (wins over truncate_token)."})
    truncate_after: int = field(default=0, metadata={"help": "Only cut tokens at index >= this count (paper: 16)."})
    penalty_reward_value: float = field(
        default=-1.0, metadata={"help": "Score given to responses with no truncate token at index >= truncate_after."}
    )
    value_model: Literal["shared", "separate", "policy"] = field(
        default="shared", metadata={"help": "'shared': value head on the policy trunk (paper); 'separate': copy of the "
                                    "reward model; 'policy': copy of the policy's trunk with a zero head, trained in full."}
    )
    normalize_reward: bool = field(
        default=False, metadata={"help": "Normalize the reward model on rho samples (mean 0, std 1) before training."}
    )
    normalize_samples: int = field(default=256, metadata={"help": "rho samples used by normalize_reward."})

    # ---- options of fidelity to the paper's code and of its reproductions (off by default) ----
    tf1_adam: bool = field(
        default=False,
        metadata={"help": "TF1's Adam (the paper's): epsilon added to sqrt(v) before the bias correction "
                  "(hf_prefs.core.optim.TF1Adam) instead of PyTorch's after it."},
    )
    value_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the value function's own parameters (the head on the shared trunk, or "
                  "the separate value model); None: learning_rate. The scheduler scales it as it scales the rest."},
    )
    critic_warmup_updates: int = field(
        default=0,
        metadata={"help": "The first N updates train only the value function (policy loss off, policy weights "
                  "unchanged), as OpenRLHF's critic freezing steps / verl's critic_warmup. Not under DeepSpeed."},
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "With a list of reward functions as reward_model (GRPOConfig's field): the weight of each in "
                  "their sum; None: 1 each."},
    )

    def to_dict(self) -> dict[str, Any]:
        """``TrainingArguments.to_dict`` with ``stop_token`` and ``truncate_token`` shown: it masks every ``*_token``
        field as a secret (``hub_token``), and these are settings the ``report_to`` integrations log."""
        d = super().to_dict()
        for name in ("stop_token", "truncate_token"):
            d[name] = getattr(self, name)
        return d

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = bool(
                not self.fp16 and not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            )
        super().__post_init__()
        # `--truncate_token null` on the command line: None, as `null` in a YAML file (checked as the text "null"
        # before: a cut at that word, and truncate_after >= response_length refused though nothing is cut)
        unset_null_strings(self, vars(PPOConfig).get("__annotations__", {}))
        self._validate_ppo_fields()

    def warn_if_cpu_lacks_bf16(self) -> None:
        """Warn when this run trains in bf16 on a CPU without bf16 matmul units (:attr:`cpu_lacks_bf16`). Called by
        the trainer, not at construction: the recipes build the config with the YAML's bf16 and then switch a CPU
        without bf16 units to float32 themselves (``cpu_bf16_fallback``), so a warning here would name a run that
        never happens."""
        if self.bf16 and self.cpu_lacks_bf16:
            warnings.warn(
                "bf16=True on a CPU without bf16 matmul units (no AVX512-BF16/AMX): bf16 matmuls run ~100x slower than "
                "float32 there. Pass bf16=False and load the model in float32 (hf_prefs' recipes do so themselves: "
                "cpu_bf16_fallback).", stacklevel=3)

    @classmethod
    def paper(cls, task: str = "books", **overrides: Any) -> PPOConfig:
        """The paper's settings for ``task`` (``"books"``: sentiment/descriptiveness; ``"tldr"``; ``"cnndm"``;
        :data:`PAPER_SETTINGS`), with ``overrides`` (e.g. ``output_dir``) on top."""
        if task not in PAPER_SETTINGS:
            raise ValueError(f"task: the paper's settings exist for {sorted(PAPER_SETTINGS)}, got {task!r}")
        return cls(**{**PAPER_SETTINGS[task], **overrides})

    @property
    def cpu_lacks_bf16(self) -> bool:
        """Whether this run is on a CPU (``use_cpu`` or no CUDA) without native bf16 matmuls
        (:func:`hf_prefs._compat.cpu_bf16_supported`), where bf16 runs ~100x slower than float32."""
        return (self.use_cpu or not torch.cuda.is_available()) and not cpu_bf16_supported()

    @property
    def generation_chunk_size(self) -> int:
        """Rows per generation chunk: ``local_rollout_generation_batch_size``, else ``local_rollout_forward_batch_size``."""
        return self.local_rollout_generation_batch_size or self.local_rollout_forward_batch_size

    def _validate_ppo_fields(self) -> None:
        _check_numbers(self)
        for name in ("temperature", "response_length", "num_ppo_epochs", "num_mini_batches", "kl_target", "kl_horizon",
                     "local_rollout_forward_batch_size", "normalize_samples", "per_device_train_batch_size",
                     "gradient_accumulation_steps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.local_rollout_generation_batch_size is not None and self.local_rollout_generation_batch_size < 1:
            raise ValueError(
                f"PPOConfig.local_rollout_generation_batch_size must be >= 1 or None, got {self.local_rollout_generation_batch_size}"
            )
        for name in ("kl_coef", "cliprange", "cliprange_value", "vf_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"PPOConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.value_learning_rate is not None and not self.value_learning_rate > 0:
            raise ValueError(f"PPOConfig.value_learning_rate must be > 0 or None, got {self.value_learning_rate!r}")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"PPOConfig.gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        for name, allowed in (("kl_estimator", ("k1", "k2", "k3")), ("value_model", ("shared", "separate", "policy")),
                              ("stop_token", ("eos", None))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"PPOConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.stop_token is not None and self.stop_token_id is not None:
            raise ValueError("PPOConfig: set either stop_token or stop_token_id, not both")
        truncating = any(  # missing_eos_penalty alone cuts nothing, but a row needs its EOS at index >= truncate_after
            v is not None for v in (self.truncate_token, self.truncate_token_id, self.stop_token, self.stop_token_id,
                                    self.missing_eos_penalty)
        )
        check_truncate_after(self.truncate_after, self.response_length, truncating)
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"PPOConfig.missing_eos_penalty must be >= 0 (it is subtracted), got {self.missing_eos_penalty}")
        minibatch_split(self.per_device_train_batch_size, self.gradient_accumulation_steps, self.num_mini_batches)
        if self.critic_warmup_updates < 0:
            raise ValueError(f"PPOConfig.critic_warmup_updates must be >= 0, got {self.critic_warmup_updates}")
        if self.total_episodes is not None and self.total_episodes < 1:
            raise ValueError(f"PPOConfig.total_episodes must be >= 1, got {self.total_episodes}")


_INT_FIELDS = ("response_length", "num_ppo_epochs", "num_mini_batches", "kl_horizon", "local_rollout_forward_batch_size",
               "normalize_samples", "truncate_after", "critic_warmup_updates")
_FLOAT_FIELDS = ("temperature", "kl_coef", "kl_target", "cliprange", "cliprange_value", "vf_coef", "gamma", "lam",
                 "penalty_reward_value")
_OPTIONAL_INT_FIELDS = ("total_episodes", "local_rollout_generation_batch_size", "stop_token_id", "truncate_token_id")
_OPTIONAL_FLOAT_FIELDS = ("missing_eos_penalty", "value_learning_rate")


def _check_numbers(config: PPOConfig) -> None:
    """Each PPO count is a whole number and each PPO rate a finite real number (``None`` only where the field is
    optional), so that a YAML ``null``, a quoted number, a fractional count or a NaN is refused here, naming the
    field, not deep in a rollout. A whole float count (``total_episodes=1e4``, which TRL 1.12 took) is stored as an ``int``; ``bool`` is
    not a number here."""
    for names, optional in ((_INT_FIELDS, False), (_OPTIONAL_INT_FIELDS, True)):
        for name in names:
            value = getattr(config, name)
            if optional and value is None:
                continue
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
                setattr(config, name, int(value))
                continue
            raise TypeError(f"PPOConfig.{name} must be a whole number{' or None' if optional else ''}, "
                            f"got {value!r} ({type(value).__name__})")
    for names, optional in ((_FLOAT_FIELDS, False), (_OPTIONAL_FLOAT_FIELDS, True)):
        for name in names:
            value = getattr(config, name)
            if (optional and value is None) or (isinstance(value, numbers.Real) and not isinstance(value, bool)
                                                and math.isfinite(value)):  # NaN passed `< 0`, inf passed `> 0`
                continue
            raise TypeError(f"PPOConfig.{name} must be a finite number{' or None' if optional else ''}, "
                            f"got {value!r} ({type(value).__name__})")


def minibatch_split(per_device_train_batch_size: int, gradient_accumulation_steps: int, num_mini_batches: int
                    ) -> tuple[int, int]:
    """A process's minibatch and micro-batch rows: ``local_batch_size = per_device_train_batch_size *
    gradient_accumulation_steps`` episodes are split into ``num_mini_batches`` minibatches of ``local_batch_size /
    num_mini_batches`` (TRL's exact division), each run in micro-batches of ``min(per_device_train_batch_size,
    minibatch)`` rows (a minibatch smaller than a micro-batch is one, as TRL 1.12 sliced it); the minibatch must be
    a whole number of them (its gradient is their mean). Errors name the fields; the three sizes are >= 1 (PPOConfig
    checks them first)."""
    local = per_device_train_batch_size * gradient_accumulation_steps
    if local % num_mini_batches:
        raise ValueError(
            f"PPOConfig: per_device_train_batch_size * gradient_accumulation_steps ({per_device_train_batch_size} * "
            f"{gradient_accumulation_steps} = {local} episodes per process and update) must be a multiple of "
            f"num_mini_batches ({num_mini_batches})")
    mini = local // num_mini_batches
    micro = min(per_device_train_batch_size, mini)
    if mini % micro:
        raise ValueError(
            f"PPOConfig: a minibatch of {mini} episodes ({local} / num_mini_batches {num_mini_batches}) is not a whole "
            f"number of micro-batches of per_device_train_batch_size ({per_device_train_batch_size}): make "
            f"gradient_accumulation_steps a multiple of num_mini_batches")
    return mini, micro


def _get_world_size(self: PPOConfig) -> int:
    """TRL's field when the trainer (or the user) set it, else the number of processes (TrainingArguments')."""
    value = self.__dict__.get("_world_size")
    return int(value) if value is not None else default_world_size(self)


def _set_world_size(self: PPOConfig, value: int | None) -> None:
    self.__dict__["_world_size"] = value


# TRL 1.12 declared `world_size` as a field, which shadows TrainingArguments' property (whose users then read None):
# here it stays a parsed field (--world_size, YAML) and reads as the process count until the trainer sets it.
PPOConfig.world_size = property(_get_world_size, _set_world_size)  # type: ignore[assignment]
