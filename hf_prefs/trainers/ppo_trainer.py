"""PPO with a KL penalty, as in Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences"), on TRL.

TRL removed its PPOTrainer in 1.13; this is the paper's PPO on TRL's current trainer base, so TRL's model cards,
tags, ``push_to_hub``, callbacks, ``report_to``, checkpointing and ``accelerate launch`` keep working. One PPO update
("step") is a sequence of named methods that a subclass can override::

    train()
      for each update:
        sample_queries         (B, Lq) left-padded query ids of this process
        make_rollout           everything computed without gradients:
          generate               (B, Lr) fixed-length samples at temperature T (KV cache, batched)
          truncate               cut after the truncate token, mark rows without one
          decode + score         reward model / reward callable on query text + TRUNCATED response text
          apply_penalty          rows without a truncate token get the penalty score
          policy_logprobs_and_values   log pi(y_t) at T, V_t and the entropy (shared trunk: one forward)
          ref_logprobs           log rho(y_t) at T (frozen copy, or the PEFT policy with adapters disabled)
          compute_rewards        -beta * kl_t at every token, the score added at the last token
        ppo_epochs             num_ppo_epochs x num_mini_batches optimizer steps:
          compute_advantages     whiten rewards (paper) -> GAE -> whiten advantages, per minibatch
          micro_batch_step       forward + backward of one micro-batch (PPO's training_step):
            compute_ppo_loss       clipped policy loss + vf_coef * clipped value loss
        update_kl_controller   beta <- controller(mean KL over all processes, batch size)
        log_step / log_samples metrics (TRL names), samples table
        checkpoint             policy + value head + optimizer + scheduler + RNG + beta (resume continues)

Every equation lives in :mod:`hf_prefs.core.ppo_math` and :mod:`hf_prefs.core.kl`, every rollout rule in
:mod:`hf_prefs.core.rollout` (one :class:`~hf_prefs.core.rollout.RolloutSpec`); this module only wires them. What
the trainer reports (metrics, samples, TRL's ``generate_completions``) is in :mod:`~hf_prefs.trainers.ppo_reporting`,
saving and resuming in :mod:`~hf_prefs.trainers.ppo_checkpoints`. Shapes: B = episodes of this process,
Lq = (left-padded) query length, Lr = response length, V = vocabulary.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from datasets import Dataset
from peft import PeftConfig, get_peft_model
from torch import nn
from transformers import (
    AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, TrainerCallback,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import TrainOutput, get_last_checkpoint
from transformers.utils import logging

from .._compat import (
    TrlBaseTrainer,
    restore_trainer_checkpoint,
    set_sync_gradients,
    trainer_learning_rate,
)
from ..citation import ZIEGLER_2019
from ..memory import release_free_memory
from ..core.kl import AdaptiveKLController, FixedKLController, check_kl_horizon
from ..core.optim import TF1Adam, set_group_learning_rate
from ..core.ppo_math import compute_gae, kl_penalty, masked_mean, per_token_rewards, ppo_policy_loss, ppo_value_loss, whiten
from ..core.rollout import RolloutSpec, left_pad, pad_token_id_of
from ..models.adapter_inputs import adapter_inputs_in_autocast_dtype
from ..models.attention import training_attention
from ..models.dropout import disable_dropout
from ..models.generation import (check_vocabulary, ensure_pad_token_id, input_pad_id, learned_positions, same_token_ids,
                                 sample_responses)
from ..models.loading import check_local_path, load_reward_model
from ..models.logprobs import forward_last, token_logprobs
from ..models.reward_model import (check_scalar_head, get_turn_end, normalize_reward_model, normalize_to,
                                    reads_as_trained_here, reads_every_position, score_texts, score_token_ids)
from ..models.sharding import copy_module, generation_model, match_partitioned_dtype, prepare_frozen
from ..models.value_head import (
    PolicyValueOutput,
    PolicyWithValueHead,
    load_policy,
    load_value_model,
    value_model_from_policy,
    value_model_from_reward_model,
)
from ..models.wrappers import reject_virtual_input_tokens
from .compilation import HALF_PRECISION_COMPILE_WARNING, RegionalCompileMixin, compiled_as_policy, compiles
from .deepspeed_plugins import DeepSpeedPluginMixin
from .launch import check_critic_warmup, check_launch, check_ppo_sharding, marks_failure
from .ppo_checkpoints import PPO_STATE_FILE, OnlineTrainerState, PPOCheckpointMixin
from .ppo_config import PPOConfig, minibatch_split
from .ppo_data import NonFiniteError, QueryStream, Rollout, check_query_positions, deal_by_length, prepare_query_dataset
from .ppo_reporting import PPOReportingMixin
from .reward_functions import RewardFunction, combined_scores, reward_caller, reward_keywords

logger = logging.get_logger(__name__)

__all__ = ["PPOTrainer", "Rollout", "NonFiniteError", "RewardFunction", "PPO_STATE_FILE"]

#: TRL 1.12's ``PPOTrainer`` parameters in its positional order (``args`` first; this class takes ``model`` first).
TRL_POSITIONAL_ORDER = ("args", "processing_class", "model", "ref_model", "reward_model", "train_dataset", "value_model",
                        "data_collator", "eval_dataset", "optimizers", "callbacks", "peft_config")


def _trl_positional_order(init: Callable[..., None]) -> Callable[..., None]:
    """``__init__`` also takes TRL 1.12's positional order: a call whose first positional argument is a
    :class:`PPOConfig` has its positional arguments named by :data:`TRL_POSITIONAL_ORDER`, and its keywords (TRL's
    names are this class's) keep theirs, so ``PPOTrainer(cfg, tok, policy, ref, rm, ds, value_model=vm)`` binds as
    in TRL. A name given both ways, or too many positional arguments, raise ``TypeError`` as Python would."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        if not (args and isinstance(args[0], PPOConfig)):
            return init(self, *args, **kwargs)
        if len(args) > len(TRL_POSITIONAL_ORDER):
            raise TypeError(f"PPOTrainer takes at most {len(TRL_POSITIONAL_ORDER)} positional arguments in TRL's order "
                            f"({', '.join(TRL_POSITIONAL_ORDER)}), got {len(args)}")
        named = dict(zip(TRL_POSITIONAL_ORDER, args))
        both = sorted(set(named) & set(kwargs))
        if both:
            raise TypeError(f"PPOTrainer got multiple values for {', '.join(both)} (TRL's positional order names "
                            f"the first {len(args)}: {', '.join(TRL_POSITIONAL_ORDER[:len(args)])})")
        if named.get("optimizers") is None:
            named.pop("optimizers", None)
        return init(self, **named, **kwargs)

    return wrapper


#: The query part of a log-prob pass is cut to its longest query rounded up to this multiple: CPU matmul kernels
#: (oneDNN) are built and cached per input shape, and a new width every micro-batch means new kernels and a cache that
#: grows through the run (measured: ~60 MB of resident memory per PPO update, 1 width per token of query length).
WIDTH_MULTIPLE = 8


def query_width(longest: int, padded: int) -> int:
    """The query width a log-prob pass keeps of a batch left-padded to ``padded`` whose longest query has ``longest``
    tokens: ``longest`` rounded up to :data:`WIDTH_MULTIPLE`, at most ``padded`` (the left padding no row needs is cut)."""
    return min(padded, -(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE)


def stop_generation_at(policy: nn.Module, stop_token_id: int | None) -> None:
    """With TRL's stop token (``stop_token="eos"`` or ``stop_token_id``), the policy's ``generation_config`` ends
    generation there (its ``eos_token_id``), as TRL 1.12 set it: ``generate()`` on the trained policy, and the
    policy saved with it, stop where its episodes ended. Without one the model's own is kept (TRL set None: a
    saved policy then never stopped at its EOS)."""
    config = getattr(policy, "generation_config", None)
    if stop_token_id is not None and config is not None:
        config.eos_token_id = stop_token_id


class PPOTrainer(PPOReportingMixin, PPOCheckpointMixin, RegionalCompileMixin, DeepSpeedPluginMixin, TrlBaseTrainer):
    """The paper's PPO: fixed-length sampling at T, per-token KL penalty, adaptive beta, value head on the trunk.

    Args:
        model: the policy: a model id/path or an ``AutoModelForCausalLM`` model (a ``PeftModel`` works too), or a
            :class:`~hf_prefs.models.value_head.PolicyWithValueHead`. A saved PEFT adapter folder is loaded on its base,
            trainable; its value head is not (a fresh one: pass ``PolicyWithValueHead.from_pretrained(path)`` to keep
            it).
        reward_model: a reward model (a ``*ForSequenceClassification`` model: one trained by hf_prefs scored with
            :func:`hf_prefs.models.reward_model.score_texts` at the last token, after the response suffix it was
            trained with; one from elsewhere sharing the policy's tokenizer on the sampled ids as TRL did,
            :func:`~hf_prefs.models.reward_model.score_token_ids`; normalization gain/bias applied), a path to
            one (loaded with :func:`hf_prefs.models.loading.load_reward_model`), or any callable
            ``f(queries: list[str], responses: list[str]) -> (B,)`` (known rewards, direct RL) or in TRL's
            reward-function form ``f(prompts=..., completions=..., **kwargs)``, or a list of such functions summed
            with ``args.reward_weights`` (:mod:`hf_prefs.trainers.reward_functions`; checked here).
        args: a :class:`~hf_prefs.PPOConfig`.
        train_dataset: a ``datasets.Dataset`` with a ``query`` column (text), or TRL-style ``input_ids``.
        processing_class: the policy's tokenizer (loaded from ``model`` when omitted).
        ref_model: the reference rho (a causal LM, or a path to one); default: a frozen copy of the policy, or, for a
            PEFT policy, the policy with its adapters disabled (no second copy).
        value_model: a separate value model (``*ForSequenceClassification``, or a path to one); default:
            ``args.value_model`` decides
            between a zero-initialised head on the policy trunk ("shared", paper), a copy of the reward model
            ("separate", TRL's last PPOTrainer) and a copy of the policy's trunk with a zero-initialised head
            ("policy").
        reward_processing_class: the reward model's tokenizer (default: a reward model folder's own, else
            ``processing_class``).
        eval_dataset: queries that :meth:`generate_completions` samples and scores (and the periodic sample tables);
            no evaluation loop runs on it (as in TRL).
        data_collator: accepted for TRL API compatibility; not used.
        callbacks, optimizers: as for ``transformers.Trainer``.
        peft_config: a ``peft.PeftConfig``: the policy is wrapped with it (LoRA); the reference is then the policy
            with adapters disabled.
        kl_controller: an object with ``value``, ``update(kl, n_steps)``, ``state_dict()``, ``load_state_dict()``;
            default: :class:`~hf_prefs.core.kl.AdaptiveKLController` (``args.adaptive_kl``) or
            :class:`~hf_prefs.core.kl.FixedKLController`.
    """

    _tag_names = ["trl", "hf-prefs", "ppo"]
    _name = "PPO"
    _paper = ZIEGLER_2019

    @_trl_positional_order
    def __init__(
        self,
        model: str | nn.Module | None = None,
        reward_model: nn.Module | str | RewardFunction | list[RewardFunction] | None = None,
        args: PPOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Any = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        ref_model: nn.Module | str | None = None,
        value_model: nn.Module | str | None = None,
        reward_processing_class: PreTrainedTokenizerBase | None = None,
        data_collator: Any = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        peft_config: Any = None,
        kl_controller: Any = None,
    ) -> None:
        args = self._check_args(model, args, train_dataset)
        policy, wrapper, processing_class = self._build_policy(
            model if model is not None else args.sft_model_path, processing_class, peft_config
        )
        self._build_reward(reward_model if reward_model is not None else args.reward_model_path,
                           reward_processing_class, processing_class, args)
        wrapper = self._build_value_function(policy, wrapper, value_model, args, processing_class)
        self._build_reference(policy, ref_model)
        for module in (wrapper, self.ref_model, self.reward_model if isinstance(self.reward_model, nn.Module) else None):
            if module is not None:
                disable_dropout(module)  # dropout off everywhere (paper), functional rates included
        self.rollout_spec = RolloutSpec.from_config(args, processing_class)
        stop_generation_at(policy, self.stop_token_id)
        # the id that pads queries fed to the policy (masked out): the tokenizer's, unless it lies outside the
        # policy's embedding (TRL's scripts add a "[PAD]" token without resizing the embedding)
        self.pad_token_id = input_pad_id(policy, processing_class)
        train_dataset = prepare_query_dataset(train_dataset, processing_class, policy, args)
        if eval_dataset is not None:
            eval_dataset = prepare_query_dataset(eval_dataset, processing_class, policy, args, name="eval_dataset")
        self._check_id_readers_positions(wrapper, args.response_length, train_dataset, eval_dataset)
        if not isinstance(self.reward_model, nn.Module):  # their form checked now against the columns, not at update 1
            for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
                for fn in self.reward_functions() if dataset is not None else ():
                    try:
                        reward_caller(fn, reward_keywords(dataset.column_names))
                    except TypeError as err:
                        raise TypeError(f"{name} (columns {dataset.column_names}): {err}") from err
        super().__init__(
            model=wrapper,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.args: PPOConfig
        self.state = self._new_state()  # TRL's state, with `episode`, from the start as TRL's was
        if (strategy := getattr(args.eval_strategy, "value", args.eval_strategy)) != "no":
            logger.warning(f"eval_strategy={strategy!r}: PPOTrainer "
                           "runs no evaluation loop (as TRL's did); eval_dataset feeds generate_completions() every "
                           "num_sample_generations-th of the run. hf_prefs.evaluate_policy scores held-out queries.")
        if args.max_steps > 0:  # TrainingArguments' field, which TRL's PPOTrainer ignored too, silently
            logger.warning(f"max_steps={args.max_steps}: PPOTrainer runs total_episodes (or num_train_epochs × the "
                           f"dataset's queries when it is None), as TRL's did; max_steps is not used. For "
                           f"{args.max_steps} updates set total_episodes to {args.max_steps} × the episodes per update.")
        self._set_batch_sizes()
        self._init_state(kl_controller)

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """Not available: PPO has no evaluation loss. :meth:`generate_completions` samples ``eval_dataset`` and scores
        it; :func:`hf_prefs.evaluate_policy` gives a policy's known reward, reward-model score and KL on held-out
        queries."""
        raise NotImplementedError("PPOTrainer.evaluate: PPO has no evaluation loss; use generate_completions() (samples "
                                  "and scores of eval_dataset) or hf_prefs.evaluate_policy (held-out reward and KL)")

    # =========================================================================================================
    # construction, in named parts
    # =========================================================================================================
    @staticmethod
    def _check_args(model: str | nn.Module, args: PPOConfig | None, train_dataset: Dataset | None) -> PPOConfig:
        """``args`` (default: ``PPOConfig(output_dir="<model name>-PPO")``), checked; a train dataset is required."""
        if args is None:
            name = (model if isinstance(model, str) else "policy").rstrip("/").split("/")[-1]
            args = PPOConfig(output_dir=f"{name}-PPO")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"args must be an hf_prefs PPOConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("PPOTrainer needs a train_dataset with a `query` column (or TRL's `input_ids`)")
        return args

    @staticmethod
    def _build_policy(
        model: str | nn.Module, processing_class: PreTrainedTokenizerBase | None, peft_config: Any
    ) -> tuple[nn.Module, PolicyWithValueHead | None, PreTrainedTokenizerBase]:
        """``(policy, wrapper or None, tokenizer)``: the policy loaded from a path/id or given (a
        :class:`PolicyWithValueHead` is unpacked), wrapped with ``peft_config`` when given, and its tokenizer."""
        wrapper: PolicyWithValueHead | None = None
        if isinstance(model, PolicyWithValueHead):
            wrapper, policy = model, model.policy
        elif isinstance(model, str):
            model = check_local_path(model, "model (the policy)")
            policy = load_policy(model)  # a PEFT adapter folder: on its base, trainable
        else:
            policy = model
        if processing_class is None:
            source = model if isinstance(model, str) else getattr(policy.config, "_name_or_path", None)
            if not source:
                raise ValueError("pass processing_class (the policy's tokenizer): it cannot be found from the model")
            processing_class = AutoTokenizer.from_pretrained(source)
        if peft_config is not None:
            if not isinstance(peft_config, PeftConfig):  # a dict of its fields failed deep inside peft
                raise TypeError(f"peft_config must be a peft.PeftConfig instance (e.g. peft.LoraConfig), got "
                                f"{type(peft_config).__name__}")
            if wrapper is not None or hasattr(policy, "peft_config"):
                raise ValueError("peft_config was given but the policy is already wrapped (PEFT or PolicyWithValueHead)")
            policy = get_peft_model(policy, peft_config)
        reject_virtual_input_tokens(policy)  # before anything runs (the log-prob passes refuse it too)
        return policy, wrapper, processing_class

    def _build_reward(self, reward_model: nn.Module | str | RewardFunction, reward_tokenizer: Any, policy_tokenizer: Any,
                      args: PPOConfig) -> None:
        """``self.reward_model`` (a model, loaded from a path, a callable or a list of them) and its tokenizer:
        ``reward_processing_class`` when given, else a reward model folder's own, else the policy's (as TRL 1.12's
        PPO used for every model: a folder saved without its tokenizer)."""
        tokenizer = reward_tokenizer if reward_tokenizer is not None else policy_tokenizer
        if isinstance(reward_model, (str, os.PathLike)):
            reward_model, tokenizer = load_reward_model(check_local_path(reward_model, "reward_model"),
                                                        tokenizer=reward_tokenizer, fallback_tokenizer=policy_tokenizer)
        if isinstance(reward_model, (list, tuple)):  # GRPO's reward_funcs
            bad = [i for i, f in enumerate(reward_model) if isinstance(f, (nn.Module, str, os.PathLike)) or not callable(f)]
            if not reward_model or bad:
                raise TypeError("reward_model: a list takes reward functions (callables), " + (
                    f"item {bad[0]} is {type(reward_model[bad[0]]).__name__}; a reward model is given alone"
                    if bad else "and this one is empty"))
            reward_model = list(reward_model)
        elif not isinstance(reward_model, nn.Module) and not callable(reward_model):
            raise TypeError("reward_model must be a reward model (nn.Module), a path to one, a callable f(queries, "
                            "responses) or one in TRL's reward-function form f(prompts=..., completions=..., **kwargs), "
                            f"or a list of such functions; got {type(reward_model).__name__}")
        functions = reward_model if isinstance(reward_model, list) else [reward_model]
        if args.reward_weights is not None and (isinstance(reward_model, nn.Module) or len(args.reward_weights) != len(functions)):
            raise ValueError(f"PPOConfig.reward_weights has {len(args.reward_weights)} weights for " + (
                "a reward model (they weight a list of reward functions)" if isinstance(reward_model, nn.Module)
                else f"{len(functions)} reward functions"))
        if args.normalize_reward and not isinstance(reward_model, nn.Module):
            raise ValueError("PPOConfig.normalize_reward needs a reward model (nn.Module); a reward callable has no gain/bias")
        if isinstance(reward_model, nn.Module):
            check_scalar_head(reward_model, "reward_model")
            check_vocabulary(reward_model, tokenizer, "reward_model")
            ensure_pad_token_id(reward_model, tokenizer)  # TRL's scripts load it without one in its config
        self.reward_model = reward_model
        self.reward_processing_class = tokenizer
        self._reward_shares_token_ids = same_token_ids(tokenizer, policy_tokenizer)  # (reward_reads_token_ids)

    def _build_value_function(
        self, policy: nn.Module, wrapper: PolicyWithValueHead | None, value_model: nn.Module | str | None,
        args: PPOConfig, tokenizer: Any,
    ) -> PolicyWithValueHead:
        """The policy with its value function: a head on the trunk (paper), ``value_model`` (a model, or a path to a
        ``*ForSequenceClassification`` one), a copy of the reward model (``value_model="separate"``, TRL's way) or of
        the policy's trunk (``value_model="policy"``); those kinds are ``PPOConfig.value_model``'s."""
        check_vocabulary(policy, tokenizer, "model (the policy)")
        kinds = ("shared", "separate", "policy")
        if isinstance(value_model, str) and value_model in kinds and not os.path.isdir(value_model):
            if value_model != args.value_model:
                raise ValueError(f"value_model={value_model!r} was given to the trainer, PPOConfig.value_model is "
                                 f"{args.value_model!r}: the kind of value function is the config's (set "
                                 f"PPOConfig(value_model={value_model!r})); the trainer's value_model= takes a model "
                                 "or a path to one")
            value_model = None
        elif isinstance(value_model, (str, os.PathLike)):  # a folder or Hub id, as model= and reward_model= take
            value_model = load_value_model(check_local_path(value_model, "value_model"))
        if wrapper is not None:
            if value_model is not None:
                raise ValueError("value_model was given together with a PolicyWithValueHead; put it in the wrapper instead")
            return wrapper
        if value_model is None and args.value_model == "separate":
            if not isinstance(self.reward_model, nn.Module):
                raise ValueError("PPOConfig.value_model='separate' needs a reward model to copy (or pass value_model=, "
                                 "or value_model='policy' for a copy of the policy's trunk)")
            value_model = value_model_from_reward_model(self.reward_model)
        elif value_model is None and args.value_model == "policy":
            value_model = value_model_from_policy(policy)
        if value_model is not None:
            check_vocabulary(value_model, tokenizer, "value_model")
            ensure_pad_token_id(value_model, tokenizer)
        return PolicyWithValueHead(policy, value_model=value_model)

    def _check_id_readers_positions(self, wrapper: PolicyWithValueHead, response_length: int,
                                    *datasets: Dataset | None) -> None:
        """The models that read the policy's query + response ids (a separate value model; a reward model read as
        TRL read it, :meth:`reward_reads_token_ids`) fit them in a learned position table, as the policy is checked
        to (else the first update fails with a bare IndexError, or a device-side assert on a GPU)."""
        readers = [("value_model", wrapper.value_model)]
        if isinstance(self.reward_model, nn.Module) and self.reward_reads_token_ids():
            readers.append(("reward_model", self.reward_model))
        limits = [(role, positions) for role, model in readers
                  if model is not None and (positions := learned_positions(model)) is not None]
        for name, dataset in zip(("train_dataset", "eval_dataset"), datasets):
            if dataset is None or not limits:  # the column is read only where a table could be outgrown
                continue
            lengths = [len(ids) for ids in dataset["input_ids"]]
            for role, positions in limits:
                check_query_positions(lengths, response_length, positions, name, role)

    def _build_reference(self, policy: nn.Module, ref_model: nn.Module | str | None) -> None:
        """``self.ref_model``: the given frozen model (or the one loaded from a path, as ``model`` is), a frozen copy
        of the policy, or None for a PEFT policy (rho is then the policy with its adapters disabled)."""
        if isinstance(ref_model, (str, os.PathLike)):
            ref_model = AutoModelForCausalLM.from_pretrained(check_local_path(ref_model, "ref_model"))
        if ref_model is policy:
            raise ValueError("ref_model must not be the policy object itself (pass None to get a frozen copy)")
        self.is_peft_model = hasattr(policy, "disable_adapter") and hasattr(policy, "peft_config")
        if ref_model is None and not self.is_peft_model:
            ref_model = copy_module(policy)  # also when ZeRO-3 partitioned the policy at load
        if ref_model is not None:
            ref_model.eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
        self.ref_model = ref_model

    # --- TRL 1.12's attribute names (its scripts and callbacks read them) ------------------------------------------
    @property
    def policy_model(self) -> nn.Module:
        """TRL 1.12's ``trainer.policy_model``: the policy's causal LM (PEFT-wrapped under LoRA)."""
        return self.accelerator.unwrap_model(self.model).policy

    @property
    def value_model(self) -> nn.Module | None:
        """TRL 1.12's ``trainer.value_model``: the separate value model; None with the paper's value head on the
        policy's trunk (``trainer.model.v_head``)."""
        return self.accelerator.unwrap_model(self.model).value_model

    @property
    def stop_token_id(self) -> int | None:
        """TRL 1.12's ``trainer.stop_token_id``: the id a response stops at under TRL's ``stop_token="eos"`` (EOS) or
        ``stop_token_id``; None otherwise (the paper's ``truncate_token`` is ``rollout_spec.truncate_token_id``)."""
        return self.rollout_spec.truncate_token_id if self.rollout_spec.mask_after_cut else None

    @property
    def train_dataset_len(self) -> int:
        """TRL 1.12's ``trainer.train_dataset_len``: the number of training queries."""
        return len(self.train_dataset)

    def _set_batch_sizes(self) -> None:
        """TRL's derived sizes: episodes per update (``batch_size``), per process, per minibatch; number of updates."""
        a = self.args
        a.world_size = world_size = self.accelerator.num_processes
        a.micro_batch_size = a.per_device_train_batch_size * world_size
        a.local_batch_size = a.per_device_train_batch_size * a.gradient_accumulation_steps
        a.batch_size = a.local_batch_size * world_size
        a.local_mini_batch_size, self.micro_rows = minibatch_split(
            a.per_device_train_batch_size, a.gradient_accumulation_steps, a.num_mini_batches)
        a.mini_batch_size = a.local_mini_batch_size * world_size
        if a.total_episodes is None:
            a.total_episodes = int(a.num_train_epochs * len(self.train_dataset))
        a.num_total_batches = math.ceil(a.total_episodes / a.batch_size)
        if a.total_episodes < a.batch_size:  # TRL's rule: whole batches only, so one batch runs in full
            logger.warning(f"total_episodes {a.total_episodes} is fewer than one batch of {a.batch_size} episodes "
                           f"(per_device_train_batch_size × gradient_accumulation_steps × processes): "
                           f"1 update trains {a.batch_size} episodes")
        self.sample_generations_freq = (
            max(1, a.num_total_batches // a.num_sample_generations) if a.num_sample_generations > 0 else 0
        )

    def _init_state(self, kl_controller: Any) -> None:
        """KL controller, the query stream, the sampling / shuffling generators (per process) and model placement."""
        check_launch(self.accelerator)
        check_ppo_sharding(self.accelerator)
        check_critic_warmup(self.accelerator, self.args.critic_warmup_updates)
        self.args.warn_if_cpu_lacks_bf16()
        a = self.args
        if kl_controller is None:
            if a.adaptive_kl:  # refused here, not after the first update's rollout
                check_kl_horizon(a.kl_horizon, a.batch_size)
            kl_controller = (
                AdaptiveKLController(a.kl_coef, a.kl_target, a.kl_horizon) if a.adaptive_kl else FixedKLController(a.kl_coef)
            )
        self.kl_ctl = kl_controller
        device = self.accelerator.device
        local_seed = a.seed + 100_003 * self.accelerator.process_index
        self.sampling_generator = torch.Generator(device=device).manual_seed(local_seed)  # token sampling
        self.shuffle_generator = torch.Generator().manual_seed(local_seed + 1)  # PPO minibatch shuffles
        self.query_stream = QueryStream(len(self.train_dataset), a.data_seed if a.data_seed is not None else a.seed)
        self._prepared = False
        self.last_samples: Any = None  # the last samples table (a pandas DataFrame)
        self.timings: dict[str, float] = {}  # seconds of the parts of the last rollout
        self.reward_metrics: dict[str, list[float]] = {}  # reward functions' log_metric values of this update
        self.reward_log_extra: dict[str, list[Any]] = {}  # their log_extra columns of the last score() call
        self._scoring_extra: dict[str, Any] = {}  # what score() passes them besides the texts (scoring_with)
        self._picked_rows: tuple[list[int], list[str]] | None = None  # the rows queries_for last picked, their queries
        self._frozen_engines: list[Any] = []  # DeepSpeed engines of the frozen models (their modules are used)
        self._reference_scorer: nn.Module | None = None  # with torch_compile: the reference compiled as the policy
        if self.ref_model is not None:
            self.ref_model = self._place_frozen(self.ref_model)
        if isinstance(self.reward_model, nn.Module):
            self.reward_model.eval()
            self.reward_model = self._place_frozen(self.reward_model)
        self.model.add_model_tags(self._tag_names)

    # =========================================================================================================
    # setup helpers
    # =========================================================================================================
    def _place_frozen(self, module: nn.Module) -> nn.Module:
        """A frozen model on the device; under DeepSpeed prepared as TRL does (ZeRO-3: sharded like the policy)."""
        module, engine = prepare_frozen(module, self.accelerator)
        if engine is not None:
            self._frozen_engines.append(engine)
        return module

    def _new_state(self) -> OnlineTrainerState:
        """A fresh trainer state (``episode`` 0) holding the callbacks whose state a checkpoint saves."""
        return OnlineTrainerState(
            is_local_process_zero=self.is_local_process_zero(), is_world_process_zero=self.is_world_process_zero(),
            stateful_callbacks=[cb for cb in self.callback_handler.callbacks + [self.control] if isinstance(cb, ExportableState)],
        )

    @contextmanager
    def null_ref_context(self):
        """TRL 1.12's name: inside, a PEFT policy scores as rho (its adapters off, or ``ref_adapter_name`` active);
        nothing changes with a separate ``ref_model``. :meth:`reference_context` also yields the module to use."""
        with self.reference_context():
            yield

    @contextmanager
    def reference_context(self):
        """Inside: the module to use as rho: the frozen reference; or, for a PEFT policy, the adapter named
        ``ref_adapter_name`` (then back to ``model_adapter_name``, TRL's rule, or without one to the adapter that was
        active: TRL's "default" made a reference adapter of that name the trained one, or failed without one) or the
        policy with adapters disabled."""
        if self.ref_model is not None:
            yield self._reference_scorer if self._reference_scorer is not None else self.ref_model
            return
        policy = self._scoring_model().policy
        if self.args.ref_adapter_name:
            active = self.args.model_adapter_name or policy.active_adapter
            policy.set_adapter(self.args.ref_adapter_name)
            try:
                yield policy
            finally:
                policy.set_adapter(active)
        else:
            with policy.disable_adapter():
                yield policy

    def _check_finite(self, tensor: torch.Tensor, what: str) -> None:
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = (~finite).reshape(tensor.shape[0], -1).any(-1).nonzero().flatten()[:10].tolist() if tensor.dim() else []
            detail = f" (rows {bad} of this process)" if bad else ""
            raise NonFiniteError(self.state.global_step + 1, what, detail)

    # =========================================================================================================
    # the PPO update, step by step
    # =========================================================================================================
    def sample_queries(self, update: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Queries of PPO update ``update`` (0-based) for this process: :meth:`queries_for` this process of the run's
        processes.

        Returns:
            ``(query_ids (B, Lq), query_mask (B, Lq), query_texts)``, left-padded, on the training device.
        """
        return self.queries_for(update, self.accelerator.num_processes, self.accelerator.process_index)

    def queries_for(self, update: int, world: int, rank: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Process ``rank`` of ``world``'s queries of update ``update``: a pure function of (seed, update, world,
        rank), see :class:`~hf_prefs.trainers.ppo_data.QueryStream`, so resuming needs no data-loader state. The
        update's ``world * local_batch_size`` queries are dealt by length
        (:func:`~hf_prefs.trainers.ppo_data.deal_by_length`): the same number on every process, their query tokens
        within the batch's length spread of each other, each process's in ascending length.

        Returns:
            ``(query_ids (B, Lq), query_mask (B, Lq), query_texts)``, left-padded, on the training device.
        """
        rows, ids, texts = self._dealt(update, world, rank)
        self._picked_rows = (rows, texts)  # a reward function's dataset columns (reward_columns)
        query_ids, query_mask = left_pad(ids, self.pad_token_id)
        device = self.accelerator.device
        return query_ids.to(device), query_mask.to(device), texts

    def query_rows(self, update: int, world: int, rank: int) -> list[int]:
        """The ``train_dataset`` rows of :meth:`queries_for` ``(update, world, rank)``, in its order."""
        return self._dealt(update, world, rank)[0]

    def _dealt(self, update: int, world: int, rank: int) -> tuple[list[int], list[list[int]], list[str]]:
        """``(rows, input_ids, queries)`` of process ``rank``'s share of the update's queries, read once."""
        count = self.args.local_batch_size * world
        rows = self.query_stream.rows(update * count, count)
        batch = self.train_dataset.select_columns(["input_ids", "query"])[rows]
        mine = deal_by_length(list(range(count)), [len(ids) for ids in batch["input_ids"]], world, rank)
        return [rows[i] for i in mine], [batch["input_ids"][i] for i in mine], [batch["query"][i] for i in mine]

    def reward_columns(self, query_texts: list[str]) -> dict[str, list[Any]]:
        """The ``train_dataset`` columns of these queries' rows, which a reward function in TRL's form gets as keywords
        (:mod:`~hf_prefs.trainers.reward_functions`): the rows :meth:`queries_for` last picked, where those are these
        queries (else, as for a reward model, ``{}``)."""
        picked = self._picked_rows
        if isinstance(self.reward_model, nn.Module) or picked is None or list(picked[1]) != list(query_texts):
            return {}
        return self.train_dataset[picked[0]]

    @torch.no_grad()
    def generate(self, query_ids: torch.Tensor, query_mask: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """``(B, Lr)`` responses: exactly ``response_length`` tokens at temperature T, no stop at EOS (paper).

        In chunks of ``local_rollout_generation_batch_size`` rows (default: ``local_rollout_forward_batch_size``), with
        a KV cache (:func:`hf_prefs.models.generation.sample_responses`).
        ``reference=True`` samples from rho instead of pi.
        """
        a = self.args
        # ZeRO-3: the policy's weights are gathered once for all chunks (ds3_gather_for_generation), or every forward
        # gathers its layers; a separate reference model samples sharded
        gather = a.ds3_gather_for_generation and (not reference or self.ref_model is None)
        chunks = []
        with (
            generation_model(self.model_wrapped, self.accelerator, gather) as wrapper,
            self.reference_context() if reference else nullcontext(wrapper.policy) as lm,
            self.accelerator.autocast(),
            adapter_inputs_in_autocast_dtype(lm, self.accelerator.device.type),
        ):
            step = a.generation_chunk_size
            for i in range(0, query_ids.shape[0], step):
                sl = slice(i, i + step)
                try:
                    chunks.append(
                        sample_responses(
                            lm, query_ids[sl], query_mask[sl], a.response_length, a.temperature, self.sampling_generator
                        )
                    )
                except RuntimeError as err:  # torch.multinomial on NaN/inf probabilities
                    if "probability tensor contains" in str(err):
                        who = "reference" if reference else "policy"
                        raise NonFiniteError(self.state.global_step + 1, f"{who} logits while sampling") from err
                    raise
        return torch.cat(chunks, 0)

    def truncate(self, response_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lengths (B,), valid (B,))``: where each response is cut and whether it escapes the penalty, by the run's
        :class:`~hf_prefs.core.rollout.RolloutSpec` (the rule the labelers and the evaluation apply too)."""
        return self.rollout_spec.cut(response_ids)

    def decode_responses(self, response_ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Text of each cut response (:meth:`RolloutSpec.texts`), as the labeler and reward functions see it; a reward
        model from elsewhere reads TRL's stop token too (:meth:`score`)."""
        return self.rollout_spec.texts(self.processing_class, response_ids, lengths)

    @torch.no_grad()
    def score(self, query_texts: list[str], response_texts: list[str]) -> torch.Tensor:
        """``(B,)`` float32 scores r(x, y) of the (truncated) responses, before the truncation penalty. A reward
        function in TRL's form also gets the keywords of :meth:`scoring_with` (dataset columns, ``completion_ids``)
        and ``trainer_state``, ``log_metric``, ``log_extra``; a list of functions is summed with ``reward_weights``
        (:func:`~hf_prefs.trainers.reward_functions.combined_scores`). A reward model reads, within :meth:`scoring_with`,
        the sampled ids where :meth:`reward_reads_token_ids` (as TRL), else :meth:`reward_model_texts` (TRL's stop
        token where TRL gave it one)."""
        if isinstance(self.reward_model, nn.Module):
            extra = self._scoring_extra
            with self.accelerator.autocast():
                if "query_ids" in extra and self.reward_reads_token_ids():  # TRL's reading of the sampled ids
                    scores = self._reward_of_ids(extra["query_ids"], extra["query_mask"], extra["response_ids"],
                                                 extra["lengths"])
                else:  # within scoring_with, the texts as the model reads them (reward_model_texts)
                    if "response_ids" in extra:
                        response_texts = self.reward_model_texts(list(response_texts), extra["response_ids"],
                                                                 extra["lengths"])
                    scores = score_texts(self.reward_model, self.reward_processing_class, query_texts, response_texts,
                                         batch_size=self.args.local_rollout_forward_batch_size)
        else:  # each function's form read each time: reward_model may be swapped (the online loop does)
            extra = {**self._scoring_extra, "trainer_state": self.state,
                     "log_metric": self._log_reward_metric, "log_extra": self._log_reward_extra}
            self.reward_log_extra = {}
            scores = combined_scores(self.reward_functions(), self.args.reward_weights, list(query_texts),
                                     list(response_texts), extra)
        return scores.to(device=self.accelerator.device, dtype=torch.float32)

    def reward_reads_token_ids(self) -> bool:
        """Whether the reward model reads the sampled token ids themselves, as TRL 1.12 fed them
        (:meth:`_reward_of_ids`): a model from elsewhere (not trained by hf_prefs's reward trainers) with a ``score``
        head at every position (TRL read it at an index; an encoder reads its text) whose tokenizer gives every token
        the policy's id — TRL's setting, one tokenizer for all models (compared once, when the reward model is
        built). Asked each time: the online loop swaps models."""
        return (self._reward_shares_token_ids and not reads_as_trained_here(self.reward_model)
                and reads_every_position(self.reward_model))

    def _reward_of_ids(self, query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor,
                       lengths: torch.Tensor, normalized: bool = True) -> torch.Tensor:
        """``(B,)`` the reward model on the queries' and cut responses' ids, read as TRL did
        (:func:`~hf_prefs.models.reward_model.score_token_ids`, the policy tokenizer's pad)."""
        return score_token_ids(self.reward_model, query_ids, query_mask, response_ids, lengths,
                               pad_token_id_of(self.processing_class),
                               batch_size=self.args.local_rollout_forward_batch_size, normalized=normalized)

    def reward_model_texts(self, texts: list[str], response_ids: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """What the reward model reads of the cut responses ``texts``, asked each time (the online loop swaps models):
        one from elsewhere TRL's stop token after the rows cut at it, as TRL gave it
        (:meth:`RolloutSpec.model_texts`); one trained here on chats the template's end of turn after them, as its
        samples ended (:meth:`RolloutSpec.turn_texts`); one trained here on text, ``texts`` (as its labels' texts)."""
        spec, model = self.rollout_spec, self.reward_model
        if not reads_as_trained_here(model):
            return spec.model_texts(self.processing_class, texts, response_ids, lengths, self.reward_processing_class)
        return spec.turn_texts(self.processing_class, texts, response_ids, lengths, get_turn_end(model))

    def _log_reward_metric(self, name: str, value: float) -> None:
        """TRL's ``log_metric`` for reward functions: ``value`` joins ``name``'s mean in this update's metrics (as
        ``reward_fn/<name>`` where ``name`` is one of the trainer's own metrics, with a warning)."""
        self.reward_metrics.setdefault(name, []).append(float(value))

    def _log_reward_extra(self, column: str, values: list[Any]) -> None:
        """TRL's ``log_extra`` for reward functions: a column (one value per response) of the sample table."""
        self.reward_log_extra[column] = list(values)

    def reward_functions(self) -> list[RewardFunction]:
        """The reward functions :meth:`score` sums (``reward_model`` itself where it is one); ``[]`` for a model."""
        if isinstance(self.reward_model, nn.Module):
            return []
        return list(self.reward_model) if isinstance(self.reward_model, list) else [self.reward_model]

    @contextmanager
    def scoring_with(self, columns: dict[str, list[Any]], response_ids: torch.Tensor, lengths: torch.Tensor,
                     query_ids: torch.Tensor | None = None, query_mask: torch.Tensor | None = None):
        """Within it, :meth:`score` passes a reward function in TRL's form ``columns`` (the queries' dataset
        columns) and ``completion_ids`` (each response's token ids up to its cut), and gives a reward model the
        queries' ids (``query_ids``/``query_mask``, left-padded) and the responses' to read as TRL did where it shares
        the policy's tokenizer (:meth:`reward_reads_token_ids`), else the stop token where TRL gave it one
        (:meth:`RolloutSpec.model_texts`) — a context, so that ``score(q, r)`` keeps its signature for subclasses."""
        if isinstance(self.reward_model, nn.Module):  # a model reads the stop token too (RolloutSpec.model_texts)
            self._scoring_extra = {"response_ids": response_ids, "lengths": lengths}
            if query_ids is not None and query_mask is not None:
                self._scoring_extra.update(query_ids=query_ids, query_mask=query_mask)
        else:
            self._scoring_extra = {**columns, "completion_ids": self.rollout_spec.kept_ids(response_ids, lengths)}
        try:
            yield
        finally:
            self._scoring_extra = {}

    def apply_penalty(self, scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Paper: replace the score of invalid rows by ``penalty_reward_value``; with ``missing_eos_penalty`` (TRL)
        subtract it instead (:meth:`RolloutSpec.penalize`)."""
        return self.rollout_spec.penalize(scores, valid)

    def _forward(
        self, model: nn.Module, query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor,
        with_entropy: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(logprobs, values, entropy)``, each ``(B, Lr)`` float32: log pi(y_t) at temperature T, the values (None
        for a plain LM) and, ``with_entropy``, the entropy of pi(.|s_t) at T.

        Position ``Lq - 1 + t`` predicts response token t and holds the value of the state before it. The model's
        logits stay in its dtype; their log-softmax is taken in chunks (:func:`hf_prefs.models.logprobs.token_logprobs`).
        """
        lr = response_ids.shape[1]
        width = query_width(int(query_mask.sum(1).max()), query_ids.shape[1])
        query_ids, query_mask = query_ids[:, -width:], query_mask[:, -width:]
        input_ids = torch.cat([query_ids, response_ids], dim=1)  # (B, Lq + Lr)
        mask = torch.cat([query_mask, torch.ones_like(response_ids)], dim=1)
        out = forward_last(model, input_ids, mask, lr, skip_last=1)
        logits = out.logits  # (B, Lr, V) in the model's dtype: positions Lq - 1 .. Lq + Lr - 2
        logprobs, entropy = token_logprobs(logits, response_ids, self.args.temperature, with_entropy)
        values = out.values[:, -lr - 1 : -1].float() if isinstance(out, PolicyValueOutput) else None  # (B, Lr)
        return logprobs, values, entropy

    @torch.no_grad()
    def policy_logprobs_and_values(
        self, query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log pi_old(y_t), V_old(s_t), H(pi_old(.|s_t)))``, each ``(B, Lr)``, at temperature T, in chunks of
        ``local_rollout_forward_batch_size``."""
        model, step = self._scoring_model(), self.args.local_rollout_forward_batch_size
        logprobs, values, entropies = [], [], []
        with self.accelerator.autocast(), adapter_inputs_in_autocast_dtype(model, self.accelerator.device.type):
            for i in range(0, query_ids.shape[0], step):
                sl = slice(i, i + step)
                logprob, v, entropy = self._forward(model, query_ids[sl], query_mask[sl], response_ids[sl], True)
                logprobs.append(logprob)
                values.append(v)
                entropies.append(entropy)
                release_free_memory(collect_garbage=False)  # the next chunk starts from what is live (module docs)
        return torch.cat(logprobs), torch.cat(values), torch.cat(entropies)

    @torch.no_grad()
    def ref_logprobs(self, query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor) -> torch.Tensor:
        """``(B, Lr)`` log rho(y_t) at temperature T."""
        step = self.args.local_rollout_forward_batch_size
        out = []
        with self.reference_context() as ref, self.accelerator.autocast():
            for i in range(0, query_ids.shape[0], step):
                sl = slice(i, i + step)
                out.append(self._forward(ref, query_ids[sl], query_mask[sl], response_ids[sl])[0])
                release_free_memory(collect_garbage=False)
        return torch.cat(out)

    def compute_rewards(
        self, scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kl_coef: float,
        token_mask: torch.Tensor | None = None, score_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(kl, non_score_rewards, rewards)``, each ``(B, Lr)``: ``-beta * kl_t`` per token (0 outside
        ``token_mask``), the score on the last token or at ``score_index`` (TRL's stop token)."""
        kl = kl_penalty(logprobs, ref_logprobs, self.args.kl_estimator)
        if token_mask is not None:
            kl = kl * token_mask
        rewards, non_score = per_token_rewards(scores, kl, kl_coef, score_index)
        return kl, non_score, rewards

    @torch.no_grad()
    def make_rollout(self, query_ids: torch.Tensor, query_mask: torch.Tensor, query_texts: list[str]) -> Rollout:
        """Generate, truncate, score, penalise, compute log-probs, values and per-token rewards (no gradients).
        The seconds of each part are in ``self.timings`` (logged as ``time/<part>``)."""
        self.model.eval()
        with self._timed("generate"):
            response_ids = self.generate(query_ids, query_mask)  # (B, Lr)
        lengths, valid = self.truncate(response_ids)  # (B,), (B,)
        response_texts = self.decode_responses(response_ids, lengths)
        with self._timed("score"):
            with self.scoring_with(self.reward_columns(query_texts), response_ids, lengths, query_ids, query_mask):
                raw_scores = self.score(query_texts, response_texts)  # (B,)
        self._check_finite(raw_scores, "reward scores")
        scores = self.apply_penalty(raw_scores, valid)  # (B,)
        with self._timed("policy_forward"):
            logprobs, values, entropy = self.policy_logprobs_and_values(query_ids, query_mask, response_ids)  # (B, Lr) x 3
        self._check_finite(logprobs, "policy log-probabilities (logits)")
        self._check_finite(values, "values")
        with self._timed("ref_forward"):
            ref_logprobs = self.ref_logprobs(query_ids, query_mask, response_ids)  # (B, Lr)
        self._check_finite(ref_logprobs, "reference log-probabilities (logits)")
        kl_coef = float(self.kl_ctl.value)
        token_mask, value_mask, score_index = self.rollout_spec.masks(lengths, response_ids.shape[1])  # all-true: paper
        kl, non_score, rewards = self.compute_rewards(  # (B, Lr) x 3
            scores, logprobs, ref_logprobs, kl_coef, token_mask, score_index
        )
        values = values * value_mask  # (B, Lr); TRL's stop token: no value past the step after it
        self._check_finite(rewards, "per-token rewards")
        return Rollout(
            query_ids=query_ids,
            query_mask=query_mask,
            response_ids=response_ids,
            response_lengths=lengths,
            valid=valid,
            query_texts=query_texts,
            response_texts=response_texts,
            raw_scores=raw_scores,
            scores=scores,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            entropy=entropy,
            kl=kl,
            non_score_rewards=non_score,
            rewards=rewards,
            kl_coef=kl_coef,
            token_mask=token_mask,
            value_mask=value_mask,
        )

    def compute_advantages(
        self, rewards: torch.Tensor, values: torch.Tensor, token_mask: torch.Tensor | None = None,
        value_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(advantages, returns)`` ``(b, Lr)`` of one minibatch: whiten rewards (paper: std only, mean kept), GAE,
        then whiten advantages (mean removed). The value targets are the returns before advantage whitening.
        With TRL's stop token the masks keep the steps after it out of every mean (their advantages are 0). On N
        processes the whitening statistics are those of the whole minibatch (all processes' episodes)."""
        a = self.args
        reduce = self._sum_over_processes if self.accelerator.num_processes > 1 else None  # the global minibatch's stats
        if a.whiten_rewards:
            rewards = whiten(rewards, shift_mean=False, mask=value_mask, reduce=reduce)
        advantages, returns = compute_gae(rewards, values, a.gamma, a.lam)
        return whiten(advantages, shift_mean=True, mask=token_mask, reduce=reduce), returns

    @contextmanager
    def _timed(self, part: str):
        start = time.perf_counter()
        yield
        self.timings[part] = time.perf_counter() - start

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum")

    def compute_ppo_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``pg_loss + vf_coef * vf_loss`` on one micro-batch, and its statistics (detached scalars)."""
        a = self.args
        logprobs, values, _ = self._forward(model, batch["query_ids"], batch["query_mask"], batch["response_ids"])
        token_mask, value_mask = batch["token_mask"], batch["value_mask"]
        pg_loss, pg_clipfrac, approxkl = ppo_policy_loss(
            logprobs, batch["logprobs"], batch["advantages"], a.cliprange, token_mask
        )
        vf_loss, vf_clipfrac = ppo_value_loss(values, batch["values"], batch["returns"], a.cliprange_value, value_mask)
        loss = a.vf_coef * vf_loss if self.in_critic_warmup() else pg_loss + a.vf_coef * vf_loss
        if not bool(torch.isfinite(loss.detach()).all()):  # name what went non-finite first
            parts = {"the forward's log-probabilities": logprobs, "the forward's values": values,
                     "the rollout's log-probabilities": batch["logprobs"], "the rollout's values": batch["values"],
                     "advantages": batch["advantages"], "returns": batch["returns"], "policy loss": pg_loss,
                     "value loss": vf_loss}
            bad = [name for name, t in parts.items() if not bool(torch.isfinite(t.detach()).all())]
            raise NonFiniteError(self.state.global_step + 1, "the PPO loss", f" (non-finite: {', '.join(bad)})")
        with torch.no_grad():
            stats = {
                "loss/policy_avg": pg_loss.detach(),
                "loss/value_avg": vf_loss.detach(),
                "policy/approxkl_avg": approxkl,
                "policy/clipfrac_avg": pg_clipfrac,
                "val/clipfrac_avg": vf_clipfrac,
                "val/error": masked_mean((values - batch["returns"]) ** 2, value_mask),
                "val/ratio": masked_mean(torch.exp(logprobs - batch["logprobs"]), token_mask),
            }
        return loss, stats

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer (``optim``, AdamW by default), or TF1's Adam with ``tf1_adam`` (the paper's code); the
        value function's own parameters at ``value_learning_rate`` when it is set."""
        if self.args.tf1_adam and self.optimizer is None:
            a = self.args
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = TF1Adam(params, lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon)
        optimizer = super().create_optimizer(model)
        if self.args.value_learning_rate is not None:
            set_group_learning_rate(optimizer, self._unwrapped().value_parameters(), self.args.value_learning_rate)
        return optimizer

    def in_critic_warmup(self) -> bool:
        """Whether this update trains only the value function (the first ``critic_warmup_updates``)."""
        return self.state.global_step < self.args.critic_warmup_updates

    def optimizer_step(self, model: nn.Module) -> None:
        """Clip (if ``max_grad_norm > 0``), step the optimizer, zero the gradients. During the critic warm-up only
        the value function's parameters move (the policy's gradients are dropped)."""
        if self.in_critic_warmup():
            keep = {id(p) for p in self._unwrapped().value_parameters()}
            for p in model.parameters():
                if id(p) not in keep:
                    p.grad = None
        self._check_gradients(model)
        if self.args.max_grad_norm and self.args.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        self.control = self.callback_handler.on_pre_optimizer_step(self.args, self.state, self.control)
        self.optimizer.step()
        self.control = self.callback_handler.on_optimizer_step(self.args, self.state, self.control)
        self.optimizer.zero_grad(set_to_none=True)

    def _check_gradients(self, model: nn.Module) -> None:
        """Stop before clipping and the optimizer step when a gradient is NaN/inf: the step would write NaN into the
        trained weights (clipping by a NaN norm spreads it to every gradient first), and the next forward would fail
        far from the cause. One flag per gradient, one sync. Not with a loss scaler (fp16), whose skipped steps expect
        inf gradients. Under DeepSpeed the engine has already stepped inside the last micro-batch's backward
        (accelerate's wrapper) and holds the gradients itself: :meth:`_check_deepspeed_step` reads what it did.
        The error names the parameters whose gradients are non-finite."""
        if self.is_deepspeed_enabled:
            self._check_deepspeed_step(model)
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if self.accelerator.scaler is not None or not grads:
            return
        finite = bool(torch.stack([torch.isfinite(g).all().to(grads[0].device) for g in grads]).all())
        if finite:
            return
        bad = [name for name, p in self._unwrapped().named_parameters()
               if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        raise NonFiniteError(self.state.global_step + 1, "the gradients",
                             f" ({len(bad)} parameters, first: {', '.join(bad[:3]) or 'none on this process'}); "
                             "stopped before the optimizer step")

    def _check_deepspeed_step(self, engine: Any) -> None:
        """Stop after a DeepSpeed optimizer step that met NaN/inf gradients: the engine either skipped the step (the
        overflow check of ZeRO-1/2/3 and of its bf16 optimizer) or applied it with a non-finite global gradient norm
        (ZeRO-1/2 bf16 with ``check_grad_overflow: false``). Not where DeepSpeed scales an fp16 loss (``fp16`` in its
        config, from accelerate's ``mixed_precision: fp16`` too, or fp16 ``torch_autocast``): skipped steps are its
        loss scaler's routine there. Where DeepSpeed reports neither (stage 0 in fp32, ``compute_grad_norm: false``),
        nothing is seen here; the next forward's loss check remains."""
        fp16 = bool(getattr(engine, "fp16_enabled", lambda: False)()) or self.args.fp16 or (
            bool(getattr(engine, "torch_autocast_enabled", lambda: False)())
            and getattr(engine, "torch_autocast_dtype", lambda: None)() == torch.float16
        )
        if fp16 or not hasattr(engine, "was_step_applied"):
            return
        norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
        norm = None if norm is None else float(norm)
        skipped = not engine.was_step_applied()
        if not skipped and (norm is None or (math.isfinite(norm) and norm >= 0)):
            return
        what = "skipped its optimizer step" if skipped else "applied its optimizer step"
        raise NonFiniteError(self.state.global_step + 1, "the gradients",
                             f" (DeepSpeed {what}; global gradient norm {norm}: inf/NaN gradients)")

    def ppo_epochs(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """``num_ppo_epochs`` passes over the batch in shuffled minibatches; one optimizer step per minibatch.

        A minibatch's micro-batches take its episodes in order of query length, so each is padded only to its own
        longest query (the minibatch's gradient is their sum, whatever the split). Returns the per-micro-batch
        statistics stacked, and ``returns`` (B, Lr) of the first epoch (for the explained variance).
        """
        a = self.args
        model = self.model_wrapped
        model.train()
        n_micro, rows = a.local_mini_batch_size // self.micro_rows, self.micro_rows
        stats: dict[str, list[torch.Tensor]] = {}
        first_returns = torch.zeros_like(rollout.values)
        ones = torch.ones_like(rollout.values, dtype=torch.bool)
        token_mask = rollout.token_mask if rollout.token_mask is not None else ones  # (B, Lr)
        value_mask = rollout.value_mask if rollout.value_mask is not None else ones  # (B, Lr)
        # the LoRA input rule, decided once under the autocast every micro-batch's forward runs in, holds over the phase
        # (its backward passes, and the forwards activation checkpointing recomputes under that autocast, included)
        with ExitStack() as uncast:
            with self.accelerator.autocast():
                uncast.enter_context(adapter_inputs_in_autocast_dtype(model, self.accelerator.device.type))
            for epoch in range(a.num_ppo_epochs):
                order = torch.randperm(len(rollout), generator=self.shuffle_generator).to(rollout.values.device)
                for start in range(0, len(rollout), a.local_mini_batch_size):
                    mb = order[start : start + a.local_mini_batch_size]  # (b,)
                    advantages, returns = self.compute_advantages(  # (b, Lr) x 2
                        rollout.rewards[mb], rollout.values[mb], token_mask[mb], value_mask[mb]
                    )
                    if epoch == 0:
                        first_returns[mb] = returns
                    by_length = torch.argsort(rollout.query_mask[mb].sum(1), stable=True)  # (b,)
                    mb, advantages, returns = mb[by_length], advantages[by_length], returns[by_length]
                    for k in range(n_micro):
                        sl = slice(k * rows, (k + 1) * rows)
                        idx = mb[sl]
                        batch = {
                            "query_ids": rollout.query_ids[idx],
                            "query_mask": rollout.query_mask[idx],
                            "response_ids": rollout.response_ids[idx],
                            "logprobs": rollout.logprobs[idx],
                            "values": rollout.values[idx],
                            "advantages": advantages[sl],
                            "returns": returns[sl],
                            "token_mask": token_mask[idx],
                            "value_mask": value_mask[idx],
                        }
                        last = k == n_micro - 1
                        if self.is_deepspeed_enabled:  # its engine reads the accumulation boundary from accelerate
                            set_sync_gradients(self.accelerator, last, engine=model)
                        with nullcontext() if last else self.accelerator.no_sync(model):  # DDP: all-reduce on the last
                            micro_stats = self.micro_batch_step(model, batch, n_micro)
                        for key, value in micro_stats.items():
                            stats.setdefault(key, []).append(value)
                    self.optimizer_step(model)
                release_free_memory(collect_garbage=False)  # each epoch starts from what is live
        out = {key: torch.stack(values) for key, values in stats.items()}
        out["returns"] = first_returns
        return out

    def micro_batch_step(self, model: nn.Module, batch: dict[str, torch.Tensor], n_micro: int) -> dict[str, torch.Tensor]:
        """Forward (under autocast) and backward of ``compute_ppo_loss / n_micro`` on one micro-batch; returns its
        statistics. PPO's counterpart of ``Trainer.training_step`` (which PPO never calls): :meth:`ppo_epochs` runs it
        inside DDP's ``no_sync`` but on a minibatch's last micro-batch, and under DeepSpeed the engine's backward steps
        there.

        The attention kernel (:func:`training_attention`) stays in force over the backward, where activation
        checkpointing recomputes the forward: another kernel would save other tensors (``CheckpointError``). The LoRA
        layers' uncast inputs (:func:`adapter_inputs_in_autocast_dtype`) are set once for the whole phase by
        :meth:`ppo_epochs` (finding the layers walks the model: ~5 ms, too much per micro-batch)."""
        # DeepSpeed's engine divides every loss by ITS gradient_accumulation_steps; here the loss is already divided
        # by the micro-batches of one minibatch (n_micro = local_mini_batch_size / micro_rows: ppo_config.minibatch_split)
        backward_kwargs = {"scale_wrt_gas": False} if self.is_deepspeed_enabled else {}
        length = batch["query_ids"].shape[1] + batch["response_ids"].shape[1]
        with training_attention(self.accelerator.device, length):
            with self.accelerator.autocast():
                loss, stats = self.compute_ppo_loss(model, batch)
            self.accelerator.backward(loss / n_micro, **backward_kwargs)
        return stats

    def update_kl_controller(self, rollout: Rollout) -> tuple[float, float]:
        """beta <- controller(KL, n) with KL = mean over all processes' episodes of sum_t kl_t, n = batch_size.

        Returns ``(mean_kl, new_beta)``.
        """
        mean_kl = self.accelerator.gather(rollout.kl.sum(dim=1)).mean().item()
        return mean_kl, float(self.kl_ctl.update(mean_kl, self.args.batch_size))

    # =========================================================================================================
    # training loop
    # =========================================================================================================
    def _setup_training(self, resume_from_checkpoint: str | None) -> None:
        """Prepare model/optimizer with the Trainer's Accelerator, create the scheduler (one step per update), build or
        restore the TrainerState, and restore optimizer, scheduler, beta and generators when resuming."""
        a = self.args
        if resume_from_checkpoint is not None and not self.is_deepspeed_enabled:
            self._load_from_checkpoint(resume_from_checkpoint)  # weights before prepare(); DeepSpeed: its checkpoint after
        if a.activation_checkpointing:  # as transformers' Trainer: two keys choose layers, the rest go to checkpoint()
            kwargs = dict(a.activation_checkpointing_kwargs or {})
            layers = {key: kwargs.pop(key) for key in ("every_n_layers", "offload") if key in kwargs}
            self._unwrapped().activation_checkpointing_enable(kwargs or None, **layers)
        if not self._prepared:
            match_partitioned_dtype(self.model)  # ZeRO-3 + zero.Init in bf16/fp16: the value head / LoRA too
            self.create_optimizer()
            self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
            plugin = self.accelerator.state.dynamo_plugin  # the one prepare() just compiled with
            if self.ref_model is not None:
                self._reference_scorer = compiled_as_policy(self.ref_model, plugin)
            if compiles(plugin) and (a.bf16 or a.fp16):
                logger.warning(HALF_PRECISION_COMPILE_WARNING)
            if self.is_deepspeed_enabled:  # Trainer.save_model / _save_checkpoint read the engine here
                self.deepspeed = self.model_wrapped
            self.create_scheduler(num_training_steps=a.num_total_batches)  # lr: linear to 0 over the updates
            self._prepared = True

        self.state = self._new_state()
        self.state.train_batch_size = a.per_device_train_batch_size
        self.state.compute_steps(a, a.num_total_batches)
        if resume_from_checkpoint is not None:
            self.state = OnlineTrainerState.load_from_json(os.path.join(resume_from_checkpoint, "trainer_state.json"))
            self.state.episode = self.state.global_step * a.batch_size  # a checkpoint written before it was saved: 0
            restore_trainer_checkpoint(self, resume_from_checkpoint)  # optimizer, scheduler, global RNGs, callbacks
            self._load_ppo_state(resume_from_checkpoint)  # beta and the sampling / shuffling generators
        self.state.init_training_references(self, a.num_total_batches, a.total_episodes / len(self.train_dataset), None)
        for attr in ("model", "optimizer", "lr_scheduler"):
            setattr(self.callback_handler, attr, getattr(self, attr))

    @marks_failure
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None, **kwargs: Any) -> TrainOutput:
        """Run ``num_total_batches`` PPO updates (or the remaining ones when resuming from a checkpoint)."""
        a = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(a.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no checkpoint found in {a.output_dir}")
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is None and self._prepared and trainer_learning_rate(self) == 0 < a.learning_rate:
            raise RuntimeError(
                f"train() already ran this trainer's {a.num_total_batches} updates and its learning-rate schedule "
                f"({getattr(a.lr_scheduler_type, 'value', a.lr_scheduler_type)}) has reached 0: another call would sample and score {a.num_total_batches} "
                "batches without changing the policy. To train on, build a new PPOTrainer from the saved policy (or "
                "with a larger total_episodes and resume_from_checkpoint)"
            )
        self.is_in_train = True
        self._setup_training(resume_from_checkpoint)
        if a.normalize_reward and resume_from_checkpoint is None:
            self.normalize_reward_model()

        self._train_start_time = time.time()
        self._initial_global_step = self.state.global_step
        losses = []
        self.control = self.callback_handler.on_train_begin(a, self.state, self.control)
        for update in range(self.state.global_step, a.num_total_batches):
            self.state.episode += a.batch_size  # TRL's: counted when the update begins
            self.control = self.callback_handler.on_step_begin(a, self.state, self.control)
            t0 = time.time()
            query_ids, query_mask, query_texts = self.sample_queries(update)
            rollout = self.make_rollout(query_ids, query_mask, query_texts)
            release_free_memory(collect_garbage=False)  # sampling and scoring leave a fragmented heap
            t1 = time.time()
            train_stats = self.ppo_epochs(rollout)
            t2 = time.time()
            learning_rate = trainer_learning_rate(self)
            self.lr_scheduler.step()
            self.update_kl_controller(rollout)

            self.state.global_step += 1
            passes = self.state.epoch or 0.0
            self.state.epoch = self.state.global_step * a.batch_size / len(self.train_dataset)
            if int(self.state.epoch) > int(passes):  # a pass over the queries ended: save_strategy="epoch" saves here
                self.control = self.callback_handler.on_epoch_end(a, self.state, self.control)
            losses.append(float(train_stats["loss/policy_avg"].mean() + a.vf_coef * train_stats["loss/value_avg"].mean()))
            self.timings.update(rollout=t1 - t0, ppo=t2 - t1)
            timings = dict(self.timings)
            metrics = self.log_step(rollout, train_stats, timings, learning_rate)
            self.control = self.callback_handler.on_step_end(a, self.state, self.control)
            if self.control.should_log:
                self.log(metrics)
            if self.sample_generations_freq and update % self.sample_generations_freq == 0:
                self.show_samples(rollout)
            if self.control.should_save:
                self._save_checkpoint(self.model, trial)
                self.control = self.callback_handler.on_save(a, self.state, self.control)
            del rollout, train_stats  # the next rollout starts from what is live, not from this update's heap
            # the trim alone: an update leaves no reference cycles holding tensors (gc.DEBUG_SAVEALL after each update
            # of full and LoRA runs: none), and a full gc.collect() costs 0.1-0.3 s each update in a large process
            release_free_memory(collect_garbage=False)
            if self.control.should_training_stop:
                break

        self.control = self.callback_handler.on_train_end(a, self.state, self.control)
        self.is_in_train = False
        train_loss = sum(losses) / max(len(losses), 1)
        return TrainOutput(self.state.global_step, train_loss, {"train_loss": train_loss})

    def show_samples(self, rollout: Rollout) -> None:
        """Every ``num_sample_generations``-th time: completions on ``eval_dataset`` (TRL's
        ``generate_completions(sampling=True)``) or, without one, a table of this rollout's samples."""
        if self.eval_dataset is not None:
            self.generate_completions(sampling=True)
        else:
            self.log_samples(rollout)

    @marks_failure
    @torch.no_grad()
    def normalize_reward_model(self) -> tuple[float, float]:
        """Set the reward model's gain/bias so rewards of raw rho samples have mean 0 and std 1 (paper), with
        :func:`hf_prefs.models.reward_model.normalize_reward_model`.

        ``normalize_samples`` queries, split over processes, are answered by rho at temperature T, uncut (the
        paper's truncate token is for the reward of PPO's samples); the raw scores of all processes give the same
        ``(gain, bias)`` everywhere. Under TRL's stop token an episode ends at it, so rho's responses are cut there
        and the reward model reads them as PPO's scoring does (its ids where :meth:`reward_reads_token_ids`, else
        :meth:`reward_model_texts`).
        """
        a, n = self.args, len(self.train_dataset)
        per_process = math.ceil(a.normalize_samples / self.accelerator.num_processes)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed + 7))
        start = self.accelerator.process_index * per_process
        batch = self.train_dataset[[int(order[i % n]) for i in range(start, start + per_process)]]
        query_ids, query_mask = left_pad(batch["input_ids"], self.pad_token_id)
        device = self.accelerator.device
        responses = self.generate(query_ids.to(device), query_mask.to(device), reference=True)  # (b, Lr)
        spec = self.rollout_spec
        lengths = self.truncate(responses)[0] if spec.mask_after_cut else torch.full((len(responses),), responses.shape[1])
        gather = lambda raw: self.accelerator.gather(raw.to(device))[: a.normalize_samples]  # noqa: E731
        if self.reward_reads_token_ids():  # read as PPO's scoring reads it: the ids, as TRL
            raw = self._reward_of_ids(query_ids, query_mask, responses.cpu(), lengths.cpu(), normalized=False)
            return normalize_to(self.reward_model, gather(raw))
        texts = self.decode_responses(responses, lengths)
        if spec.mask_after_cut:
            texts = self.reward_model_texts(texts, responses, lengths)
        return normalize_reward_model(self.reward_model, self.reward_processing_class, list(batch["query"]), texts,
                                      gather=gather, warn_peft=False)  # the run's reward, not a model to save
