"""PreferenceRewardTrainer: TRL's RewardTrainer trained on best-of-K labels with the paper's K-way loss.

A thin subclass of ``trl.RewardTrainer``. It overrides only:

- ``_prepare_dataset``: validate the label rows (:func:`hf_prefs.labels.validate_labels`; errors name the row),
  tokenize ``query`` and each of the K ``samples`` separately (``query_ids``, ``samples_ids``);
- ``_set_signature_columns_if_needed``: keep those columns;
- the collator (:class:`DataCollatorForKWayPreference`): the K candidates of every label in one batch of B·K rows,
  or, with ``share_query_prefix=True``, B packed rows that encode each query once;
- ``compute_loss``: ONE forward pass for all K candidates of the batch, the reward read at the last real token
  (:mod:`hf_prefs.models.reward_model`), ``r = gain · out + bias``, loss = :func:`hf_prefs.core.losses.kway_preference_loss`;
  it returns ``{"logits": rewards}`` (B, K) so evaluation works; with ``cache_frozen_features`` the training
  forward runs only the trainable top blocks on stored outputs of the frozen ones
  (:mod:`hf_prefs.models.frozen_features`);
- ``train``: the paper's reward normalization before and after training (:mod:`hf_prefs.core.normalization`);
- ``_save``: also writes the gain/bias next to a PEFT adapter (a full model carries them in ``config.json``);
- ``_save_rng_state``: a checkpoint also holds the state of a stateful ρ sampler (one with
  ``state_dict``/``load_state_dict``, as :class:`hf_prefs.models.generation.ResponseSampler`), restored by ``train``
  on resume, so a resumed training's ``normalize_after`` scores the samples an uninterrupted one would.

Everything else is TRL's: model loading from a string, PEFT (``peft_config=``; use ``task_type="SEQ_CLS"``),
``push_to_hub``, checkpoints, model cards (tagged ``hf-prefs``, citing the paper), ``accelerate launch``.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset, IterableDataset
from transformers import AutoConfig, AutoModelForSequenceClassification, TrainerCallback
from transformers.data.data_collator import DataCollatorMixin
from transformers.trainer_utils import get_last_checkpoint
from trl import RewardConfig, RewardTrainer
from trl.data_utils import is_conversational

from .._compat import (count_reward_trainer_tokens, get_dataset_column_names, reward_trainer_metrics,
                       unprepare_after_evaluation)
from ..citation import ZIEGLER_2019
from ..core.losses import kway_accuracy, kway_margin, kway_preference_loss, reward_centering_penalty
from ..core.packing import pack_shared_prefix, pad_right
from ..labels.schema import LabelValidationError, check_label_row, from_pairwise, is_pairwise, validate_labels
from ..chat_templates import assistant_turn_end
from ..models.attention import attention_window
from ..models.dropout import disable_dropout
from ..models.frozen_features import CHECKPOINTING, FrozenFeatureCache, frozen_prefix_length
from ..models.generation import check_vocabulary, embeddable_pad_id, embedding_rows, input_pad_id, learned_positions
from ..models.sharding import generation_model
from ..models.wrappers import text_config
from ..models.loading import load_reward_normalization, save_reward_normalization
from ..models.reward_model import (
    BIAS_KEY,
    GAIN_KEY,
    get_response_suffix,
    get_reward_normalization,
    get_turn_end,
    last_token_rewards,
    normalize_reward_model,
    packed_rewards,
    query_ids_and_suffix,
    reads_every_position,
    set_response_suffix,
    set_reward_normalization,
    set_turn_end,
    unwrap_model,
    without_trailing_pad,
)
from ..tokenizer_maps import map_with_tokenizer
from .deepspeed_plugins import DeepSpeedPluginMixin
from .launch import check_launch, marks_failure
from .reward_config import PreferenceRewardConfig
from .trainer_cards import reward_trainer_card, write_trainer_card

__all__ = ["PreferenceRewardConfig", "PreferenceRewardTrainer", "DataCollatorForKWayPreference"]

#: a checkpoint's file with the ρ sampler's state of process ``{}`` (its generator: where its draws continue)
SAMPLER_STATE = "normalization_sampler_{}.pt"

#: ρ samples for reward normalization: a dataset with ``query`` and ``response`` columns, or a sampler
#: ``sampler(queries) -> responses`` (one response from ρ per query).
NormalizationSamples = Dataset | Callable[[list[str]], Sequence[str]]


@dataclass
class DataCollatorForKWayPreference(DataCollatorMixin):
    """Batch tokenized K-way labels (``query_ids``, ``samples_ids``, ``best``) for one forward pass.

    Plain (default): ``input_ids``/``attention_mask`` ``(B·K, L)``, right-padded, row ``b·K + k`` = query b +
    sample k. With ``share_query_prefix``: ``(B, L)`` packed rows plus ``position_ids``, ``segment_ids`` and
    ``last_index`` ``(B, K)`` (see :func:`hf_prefs.core.packing.pack_shared_prefix`). Always ``best`` ``(B,)``.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    share_query_prefix: bool = False
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        k = len(examples[0]["samples_ids"])
        for i, ex in enumerate(examples):
            if len(ex["samples_ids"]) != k:
                raise ValueError(f"batch row {i} has {len(ex['samples_ids'])} samples, row 0 has {k}: K must not vary")
        best = torch.tensor([int(ex["best"]) for ex in examples], dtype=torch.long)
        if self.share_query_prefix:
            out = pack_shared_prefix(
                [ex["query_ids"] for ex in examples],
                [ex["samples_ids"] for ex in examples],
                self.pad_token_id,
                self.pad_to_multiple_of,
            )
        else:
            seqs = [list(ex["query_ids"]) + list(s) for ex in examples for s in ex["samples_ids"]]
            ids, mask = pad_right(seqs, self.pad_token_id, self.pad_to_multiple_of)
            out = {"input_ids": ids, "attention_mask": mask}
        out["best"] = best
        return out


def _batch_rewards(model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rewards of a collated batch: ``(B·K,)``, packed rows (``segment_ids``) or one row per candidate."""
    if "segment_ids" in inputs:  # packed: (B, L) rows, K rewards per row
        return packed_rewards(model, inputs)
    return last_token_rewards(model, inputs["input_ids"], inputs["attention_mask"])  # (B·K, L) rows


class _OnTrainBegin(TrainerCallback):
    """Where ``Trainer.train`` begins: the config's pad made embeddable again (``train`` aligned it with the
    tokenizer's, :func:`_embeddable_config_pad`), and the gain/bias of ``normalize_before`` (computed before
    ``Trainer.train`` creates its state) logged at step 0."""

    def __init__(self, trainer: PreferenceRewardTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        _embeddable_config_pad(self.trainer.model, self.trainer.processing_class)
        if self.trainer._pending_logs:
            logs, self.trainer._pending_logs = self.trainer._pending_logs, None
            self.trainer.log(logs)


def _averages(metrics: dict[str, list[float]]) -> dict[str, float]:
    """The mean of each non-empty metric list (what TRL's ``RewardTrainer.log`` logs for a mode)."""
    return {name: sum(values) / len(values) for name, values in metrics.items() if values}


class PreferenceRewardTrainer(DeepSpeedPluginMixin, RewardTrainer):
    """``trl.RewardTrainer`` on best-of-K labels (query, samples[K], best) with the K-way softmax loss.

    Args (beyond ``trl.RewardTrainer``'s):
        normalization_samples: ρ samples for ``normalize_before``/``normalize_after``: a ``datasets.Dataset`` with
            ``query`` and ``response`` columns (raw samples of ρ at the task temperature), or a sampler
            ``sampler(queries: list[str]) -> list[str]`` (e.g. :class:`hf_prefs.models.generation.ResponseSampler`), fed
            ``args.normalize_samples`` queries drawn from the training labels.

    ``args`` may be TRL's own ``RewardConfig`` (a TRL reward script with the trainer's import changed): its fields are
    kept (:meth:`PreferenceRewardConfig.from_reward_config`) and ρ-normalization runs only when
    ``normalization_samples`` are given, as with ``args=None``; a ``PreferenceRewardConfig`` normalizes by default
    (the paper's rule) and then needs them.

    Logged (train and ``eval_``): ``loss``, ``accuracy`` (argmax reward = labeler's pick, ties count 1/m; averaged
    over the labels since the last log, ``eval_``: the eval set's), ``mean_reward``, ``std_reward``, ``min_reward``,
    ``max_reward`` (of all those labels' rewards), ``num_tokens``; after each normalization
    ``reward_gain_before``/``reward_bias_before`` (or ``_after``).
    """

    _tag_names = ["trl", "reward-trainer", "hf-prefs"]
    _name = "hf_prefs PreferenceRewardTrainer (K-way preference loss)"
    _paper = ZIEGLER_2019

    def __init__(
        self,
        model: Any,
        args: PreferenceRewardConfig | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Callable | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Callable | None = None,
        quantization_config: Any = None,
        peft_config: Any = None,
        normalization_samples: NormalizationSamples | None = None,
    ):
        normalize = {"normalize_before": normalization_samples is not None, "normalize_after": normalization_samples is not None}
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
            args = PreferenceRewardConfig(f"{name.rstrip('/').split('/')[-1]}-Reward", **normalize)
        elif not isinstance(args, PreferenceRewardConfig):
            if not isinstance(args, RewardConfig):
                raise TypeError(f"args must be a PreferenceRewardConfig or trl.RewardConfig, got {type(args).__name__}")
            args = PreferenceRewardConfig.from_reward_config(args, **normalize)
        self._check_normalization_samples(normalization_samples, args)
        self.normalization_samples = normalization_samples
        self.num_candidates: int | None = args.num_candidates  # read by _prepare_dataset (called in super().__init__)
        built = _built_model(model, args.model_init_kwargs)
        self._max_positions = learned_positions(built) if built is not None else None  # idem: longer rows are dropped too
        self._embedding_rows = embedding_rows(built) if built is not None else None  # idem: the pad a sample is read past
        self._response_suffix: str | None = None  # idem: the EOS appended to TRL's pairwise text training rows
        self._trains_on_text = False  # idem: a train dataset of text labels was prepared (its suffix is known)
        self._turn_end = ""  # idem: the chat template's end of an assistant turn, when it trains on chats
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            quantization_config=quantization_config,
            peft_config=peft_config,
        )
        check_launch(self.accelerator)
        _warn_uneven_batches(self.train_dataset, self.args.per_device_train_batch_size, self.accelerator.num_processes,
                             self.args.dataloader_drop_last)
        if self.args.disable_dropout:  # TRL zeroed the nn.Dropout layers; also the rates applied functionally
            disable_dropout(self.model)
        check_vocabulary(self.model, self.processing_class, "model (the reward model)")
        _embeddable_config_pad(self.model, self.processing_class)
        _check_adapter_trains_the_head(self.model)
        # read where it is trained: by score_texts, the normalization and PPO, once saved too (a loaded model's suffix
        # is replaced by the text labels' own, kept for token-id labels); the key marks the model as trained here
        set_response_suffix(self.model, self._response_suffix if self._trains_on_text else get_response_suffix(self.model))
        set_turn_end(self.model, self._turn_end if self._trains_on_text else get_turn_end(self.model))
        self._pending_logs: dict[str, float] | None = None
        self._logged_rewards: dict[str, list[torch.Tensor]] = {"train": [], "eval": []}  # since the last log
        self._eval_label_losses: list[torch.Tensor] = []  # each evaluated label's loss, since the last log
        self._frozen_cache: FrozenFeatureCache | None = None
        self.add_callback(_OnTrainBegin(self))
        if data_collator is None:  # TRL built its chosen/rejected collator; replace it with the K-way one
            self.data_collator = DataCollatorForKWayPreference(
                pad_token_id=input_pad_id(self.model, self.processing_class),
                pad_to_multiple_of=self.args.pad_to_multiple_of,
                share_query_prefix=self.args.share_query_prefix and _can_pack(self.model, self._row_limit()),
            )

    # ------------------------------------------------------------------ data
    def _row_limit(self) -> int | None:
        """The most tokens a query + sample may hold here (``max_length``, the model's positions; rows over it are
        dropped), None without a limit."""
        limits = [n for n in (self.args.max_length, self._max_positions) if n is not None]
        return min(limits) if limits else None

    @staticmethod
    def _check_normalization_samples(samples: Any, args: PreferenceRewardConfig) -> None:
        if samples is None:
            if args.normalize_before or args.normalize_after:
                raise ValueError(
                    "normalize_before/normalize_after need samples of ρ: pass normalization_samples= (a Dataset with "
                    "'query' and 'response' columns, or a sampler(queries) -> responses), or set "
                    "normalize_before=False and normalize_after=False"
                )
            return
        if isinstance(samples, Dataset):
            missing = {"query", "response"} - set(samples.column_names)
            if missing:
                raise ValueError(
                    f"normalization_samples needs columns 'query' and 'response'; missing {sorted(missing)} "
                    f"(columns: {samples.column_names})"
                )
            if len(samples) < 2:
                raise ValueError(f"normalization_samples needs at least 2 rows, got {len(samples)}")
            for column in ("query", "response"):  # a None or a number failed at train(), in the tokenizer, unnamed
                bad = next((i for i, v in enumerate(samples[column]) if not isinstance(v, str)), None)
                if bad is not None:
                    raise ValueError(f"normalization_samples: row {bad}, field {column!r}: a text is needed, got "
                                     f"{samples[bad][column]!r}")
            empty = next((i for i, (q, r) in enumerate(zip(samples["query"], samples["response"])) if not q and not r), None)
            if empty is not None:  # nothing to read a reward at
                raise ValueError(f"normalization_samples: row {empty}: query and response are both empty")
        elif not callable(samples):
            raise TypeError(
                "normalization_samples must be a datasets.Dataset with 'query'/'response' columns or a callable "
                f"sampler(queries) -> responses, got {type(samples).__name__}"
            )

    def _prepare_dataset(
        self,
        dataset: Dataset | IterableDataset,
        processing_class: Any,
        args: PreferenceRewardConfig,
        dataset_name: str,
    ) -> Dataset | IterableDataset:
        """Validate label rows and tokenize them to ``query_ids`` and ``samples_ids`` (K lists); idempotent. A dataset in
        TRL's pairwise format (``chosen``/``rejected``, text or conversational, explicit or implicit prompt; a
        ``Dataset`` or a stream) becomes K = 2 labels through :func:`~hf_prefs.labels.schema.from_pairwise`, prepared
        as ``trl.RewardTrainer`` prepares it (EOS appended to text completions, chat template for conversations); the
        K = 2 loss is TRL's pairwise loss ``-log sigmoid(r_chosen - r_rejected)``. Rows longer than ``max_length``
        are dropped, as TRL drops them, and so are rows longer than a learned position table (GPT-2's, OPT's: their
        forward fails on them with an IndexError; :func:`_max_positions`)."""
        expected_k = args.num_candidates  # None: inferred per dataset (an eval set may use another K)
        tokenized = {"query_ids", "samples_ids", "best"} <= set(get_dataset_column_names(dataset))
        unread_eos = 0  # TRL's EOS on pairwise text rows where it pads with EOS: counted by its max_length, not kept here
        try:
            if is_pairwise(get_dataset_column_names(dataset)):
                eos = _readable_eos(processing_class)
                chats = _first_row_conversational(dataset)
                unread_eos = int(not chats and eos is None and getattr(processing_class, "eos_token", None) is not None)
                if dataset_name == "train" and eos and not chats:
                    self._response_suffix = eos  # appended to the text completions below (not to rendered chats)
                if dataset_name == "train" and chats:  # each rendered completion ends with the template's end of turn
                    self._turn_end = assistant_turn_end(processing_class)
                dataset = from_pairwise(dataset, processing_class, eos_token=eos)
            if dataset_name == "train" and not tokenized:
                self._trains_on_text = True
            if tokenized:
                _check_tokenized(dataset, expected_k)
            else:
                dataset = _checked_labels(dataset, expected_k, dataset_name)
        except LabelValidationError as err:
            raise _in_dataset(err, dataset_name) from None
        if not tokenized:
            dataset = _tokenize_labels(dataset, processing_class, args, dataset_name,
                                       embeddable_pad_id(processing_class, self._embedding_rows))
        if isinstance(dataset, Dataset) and len(dataset) > 0 and dataset_name == "train":
            self.num_candidates = len(dataset[0]["samples_ids"])
        eos_note = " (with the EOS trl.RewardTrainer appends)" if unread_eos else ""
        limits = {f"max_length={args.max_length} tokens{eos_note}": args.max_length and args.max_length - unread_eos,
                  f"the model's {self._max_positions} positions": self._max_positions}
        limits = {why: n for why, n in limits.items() if n is not None}
        if not limits:
            return dataset
        why = min(limits, key=limits.get)
        return _drop_long(dataset, limits[why], why, args.dataset_num_proc, dataset_name)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["query_ids", "samples_ids", "best"]

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """K-way softmax loss on rewards of all K candidates of the batch, computed in ONE forward pass."""
        mode = "train" if self.model.training else "eval"
        best = inputs["best"]  # (B,)
        cache = self._frozen_cache if mode == "train" else None
        if cache is not None:  # the frozen bottom served from stored outputs
            rewards = cache.forward(model, _batch_rewards, inputs)
        else:
            rewards = _batch_rewards(model, inputs)
        rewards = rewards.view(best.shape[0], -1)  # (B, K)
        loss = kway_preference_loss(rewards, best)
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * reward_centering_penalty(rewards)

        metrics = reward_trainer_metrics(self, mode)
        n_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item() if mode == "train" else 0
        metrics["num_tokens"] = [count_reward_trainer_tokens(self, n_tokens)]
        with torch.no_grad():
            all_rewards = self.accelerator.gather_for_metrics(rewards.detach())
            all_best = self.accelerator.gather_for_metrics(best)
            n = all_best.shape[0]  # each label counts once in the logged average, whatever its batch's size
            metrics["accuracy"] += [kway_accuracy(all_rewards, all_best).item()] * n
            metrics["margin"] += [kway_margin(all_rewards, all_best).item()] * n
            self._logged_rewards[mode].append(all_rewards.float().flatten().cpu())
            if mode == "eval":  # each label's loss once (transformers' loop repeats the batch's mean, duplicates too)
                self._eval_label_losses.append(self._label_losses(all_rewards, all_best).cpu())
        return (loss, {"logits": rewards}) if return_outputs else loss

    def _label_losses(self, rewards: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
        """``(B,)`` each label's loss: :meth:`compute_loss`'s batch mean is their mean."""
        losses = kway_preference_loss(rewards, best, reduction="none")
        if self.args.center_rewards_coefficient is not None:
            losses = losses + self.args.center_rewards_coefficient * reward_centering_penalty(rewards, reduction="none")
        return losses

    def _eval_loss(self) -> float | None:
        """The mean loss of the labels evaluated since the last call (None: none), each label once: on several
        processes accelerate repeats labels to fill the last batch, and transformers' loop averaged their loss in."""
        if not self._eval_label_losses:
            return None
        loss = float(torch.cat(self._eval_label_losses).mean())
        self._eval_label_losses.clear()
        return loss

    @marks_failure
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        """``trl.RewardTrainer.evaluate`` (a caught failure in it is marked for the exit hook: :func:`marks_failure`)."""
        return super().evaluate(*args, **kwargs)

    @marks_failure
    def predict(self, test_dataset: Dataset, ignore_keys: list[str] | None = None,
                metric_key_prefix: str = "test") -> Any:
        """``Trainer.predict`` on label rows prepared as :meth:`evaluate` prepares them (given untokenized, it failed
        with ``KeyError: 'samples_ids'``): ``predictions`` are the ``(N, K)`` rewards, and ``metrics`` hold the
        labels' ``<prefix>_accuracy`` and ``<prefix>_margin`` with the loss. The metric lists it fills are emptied
        after it (they were averaged into the next :meth:`evaluate`'s ``eval_accuracy``; so in stock TRL)."""
        test_dataset = self._prepare_dataset(test_dataset, self.processing_class, self.args, metric_key_prefix)
        metrics = reward_trainer_metrics(self, "eval")
        metrics.clear()
        try:
            out = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            averages = _averages(metrics)
            out.metrics.update({f"{metric_key_prefix}_{name}": averages[name] for name in ("accuracy", "margin")
                                if name in averages})
            if (loss := self._eval_loss()) is not None and f"{metric_key_prefix}_loss" in out.metrics:
                out.metrics[f"{metric_key_prefix}_loss"] = loss
            return out
        finally:
            metrics.clear()
            self._logged_rewards["eval"].clear()
            self._eval_label_losses.clear()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log (the averages of the metric lists) with the rewards' mean, population std, min and max over all
        the rewards since the last log — the whole eval set for ``eval_`` — not averages of per-batch values (a
        smaller last eval batch weighed as much as a full one; a std does not average); with several eval sets, each
        set's metrics under its own ``eval_<name>_`` prefix."""
        mode = "train" if self.model.training else "eval"
        metrics = reward_trainer_metrics(self, mode)
        if self._logged_rewards[mode]:
            r = torch.cat(self._logged_rewards[mode])
            self._logged_rewards[mode].clear()
            for name, value in (("mean_reward", r.mean()), ("std_reward", r.std(unbiased=False)),
                                ("min_reward", r.min()), ("max_reward", r.max())):
                metrics[name] = [value.item()]
        # one of several eval sets (``eval_dataset`` a dict): its loss is ``eval_<name>_loss``, and its metrics take
        # that prefix too (TRL's log writes them all as ``eval_*``: each set overwrote the one before)
        prefix = next((k[: -len("_loss")] for k in logs if k.startswith("eval_") and k.endswith("_loss")), "eval")
        if mode == "eval" and (loss := self._eval_loss()) is not None and f"{prefix}_loss" in logs:
            logs[f"{prefix}_loss"] = loss
        if mode == "eval" and prefix != "eval":
            logs.update({f"{prefix}_{name}": value for name, value in _averages(metrics).items()})
            metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ normalization
    def _normalization_texts(self) -> tuple[list[str], list[str] | Callable]:
        """``normalize_samples`` queries and their ρ responses (or the sampler to draw them)."""
        n = self.args.normalize_samples
        source = self.normalization_samples
        gen = torch.Generator().manual_seed(self.args.seed)
        if isinstance(source, Dataset):
            if len(source) < n:
                warnings.warn(
                    f"normalization_samples has {len(source)} rows < normalize_samples={n}; using all", stacklevel=3
                )
            idx = torch.randperm(len(source), generator=gen)[: min(n, len(source))].tolist()
            rows = source.select(idx)
            return list(rows["query"]), list(rows["response"])
        dataset = self.train_dataset
        if not isinstance(dataset, Dataset):
            raise ValueError("a normalization sampler needs queries from a (non-streaming) training Dataset")
        if len(dataset) >= n:
            idx = torch.randperm(len(dataset), generator=gen)[:n].tolist()
        else:
            idx = torch.randint(len(dataset), (n,), generator=gen).tolist()
        if "query" in dataset.column_names:
            queries = list(dataset.select(idx)["query"])
        else:
            queries = self.processing_class.batch_decode(dataset.select(idx)["query_ids"])
        return queries, source

    @marks_failure
    def normalize_reward_model(self, stage: str = "before") -> tuple[float, float]:
        """Set the model's gain/bias from rewards on ρ's samples (the paper's normalize_before/after): to mean
        ``target_mean`` and std ``target_std`` before training, to mean 0 and std 1 after it (the paper's code: the
        KL coefficient then always has the same meaning).

        Every process scores the samples; the main process's gain/bias are broadcast so all ranks agree.
        """
        queries, responses = self._normalization_texts()
        # under ZeRO-3 the weights are gathered for the scoring (before train() no engine holds the shards)
        with generation_model(self.model_wrapped, self.accelerator) as model:
            gain, bias = normalize_reward_model(
                model,
                self.processing_class,
                queries,
                responses,
                target_mean=self.args.target_mean if stage == "before" else 0.0,
                target_std=self.args.target_std if stage == "before" else 1.0,
                batch_size=self.args.per_device_eval_batch_size,
                warn_peft=False,  # save_model writes them next to an adapter
            )
        gain, bias = broadcast_object_list([gain, bias], from_process=0)
        set_reward_normalization(model, gain, bias)
        logs = {f"reward_gain_{stage}": gain, f"reward_bias_{stage}": bias}
        if stage == "before":  # Trainer.train() starts a fresh TrainerState: log once it exists
            self._pending_logs = logs
        else:
            self.log(logs)
        return gain, bias

    @marks_failure
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """TRL's training loop between the paper's normalizations.

        On resume, the gain/bias saved in the checkpoint are restored instead of normalizing again.
        """
        if resume_from_checkpoint:
            path = resume_from_checkpoint
            if path is True:
                path = get_last_checkpoint(self.args.output_dir)
                if path is None:
                    raise ValueError(f"no checkpoint found in output_dir {self.args.output_dir}")
            self._restore_normalization(path)
            self._restore_sampler(path)
        elif self.args.normalize_before:
            self.normalize_reward_model("before")
        self._frozen_cache = self._open_frozen_cache() if self.args.cache_frozen_features else None
        unprepare_after_evaluation(self)  # an evaluate() before train() left the model without DDP
        try:
            output = super().train(
                resume_from_checkpoint=resume_from_checkpoint,
                trial=trial,
                ignore_keys_for_eval=ignore_keys_for_eval,
                **kwargs,
            )
            if self._frozen_cache is not None:
                cache = self._frozen_cache
                self.log({"frozen_features_layers": cache.n, "frozen_features_rows_computed": cache.rows_computed,
                          "frozen_features_rows_read": cache.rows_read, "frozen_features_gb": cache.bytes_stored / 1e9})
        finally:
            if self._frozen_cache is not None:
                self._frozen_cache.close()
                self._frozen_cache = None
        if self.args.normalize_after:
            self.normalize_reward_model("after")
        return output

    def _open_frozen_cache(self) -> FrozenFeatureCache | None:
        """The store of the frozen bottom blocks' outputs (``cache_frozen_features``), or None with a warning when
        :func:`frozen_prefix_length` finds nothing it can serve."""
        n, why = frozen_prefix_length(self.model)
        if n and self.args.activation_checkpointing:  # Trainer.train() turns it on in the model after this
            n, why = 0, CHECKPOINTING
        if n and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            n, why = 0, ("ZeRO/FSDP shard the frozen blocks: their forward gathers weights on every process together, "
                         "and processes would compute different rows at different steps")
        if n and self.args.n_gpu > 1:
            n, why = 0, "torch.nn.DataParallel (several GPUs in one process) splits a batch the stored outputs are not"
        if n == 0:
            warnings.warn(f"cache_frozen_features is not used: {why}", stacklevel=3)
            return None
        os.makedirs(self.args.output_dir, exist_ok=True)
        return FrozenFeatureCache(self.model, n, directory=self.args.output_dir)

    def _restore_normalization(self, checkpoint: str) -> None:
        """Gain/bias saved with a checkpoint (adapter json or config.json); left as they are if none were saved."""
        stored = load_reward_normalization(checkpoint)
        if stored is None:
            config_path = os.path.join(checkpoint, "config.json")
            if os.path.isfile(config_path):
                with open(config_path, encoding="utf-8") as f:
                    cfg = json.load(f)
                if GAIN_KEY in cfg:
                    stored = (cfg[GAIN_KEY], cfg.get(BIAS_KEY, 0.0))
        if stored is not None:
            set_reward_normalization(self.model, *stored)

    # ------------------------------------------------------------------ the ρ sampler's state in checkpoints
    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        state_dict = getattr(self.normalization_samples, "state_dict", None)
        if callable(state_dict):
            os.makedirs(output_dir, exist_ok=True)
            torch.save(state_dict(), os.path.join(output_dir, SAMPLER_STATE.format(self.args.process_index)))

    def _restore_sampler(self, checkpoint: str) -> None:
        """The ρ sampler's state saved with ``checkpoint`` (also when the checkpoint is the run's last step and no
        training step is left: ``normalize_after`` still draws what the uninterrupted training drew)."""
        load_state_dict = getattr(self.normalization_samples, "load_state_dict", None)
        if not callable(load_state_dict):
            return
        path = os.path.join(checkpoint, SAMPLER_STATE.format(self.args.process_index))
        if os.path.isfile(path):
            load_state_dict(torch.load(path, weights_only=True))
        elif self.args.normalize_after:
            warnings.warn(f"{checkpoint} holds no ρ sampler state ({os.path.basename(path)}): normalize_after draws "
                          "other ρ samples than the uninterrupted training would have", stacklevel=3)

    # ------------------------------------------------------------------ saving
    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """TRL/transformers saving; a PEFT adapter folder also gets ``reward_normalization.json``, and the folder
        hf_prefs' model card (:mod:`.trainer_cards`; peft's blank template, or none, before)."""
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.args.should_save and is_peft_model(self.accelerator.unwrap_model(self.model)):
            save_reward_normalization(self.model, output_dir)
        if self.args.should_save:
            write_trainer_card(self, output_dir, reward_trainer_card, model_name=os.path.basename(os.path.normpath(output_dir)))

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """hf_prefs' reward model card in ``output_dir/README.md`` (:func:`.trainer_cards.reward_trainer_card`: loads
        the normalized reward with ``load_reward_model`` + ``score_texts``), where TRL writes its generic one (at each
        checkpoint, before ``push_to_hub``)."""
        write_trainer_card(self, self.args.output_dir, reward_trainer_card, model_name=model_name,
                           dataset_name=dataset_name, tags=tags)

    @property
    def reward_normalization(self) -> tuple[float, float]:
        """The model's current ``(gain, bias)``."""
        return get_reward_normalization(self.model)


def _in_dataset(err: LabelValidationError, name: str) -> LabelValidationError:
    """``err`` with the dataset it is about in front (``train``, ``eval`` or an eval dict's key), row and field kept."""
    named = LabelValidationError(f"{name} dataset, {err}")
    named.row, named.field = err.row, err.field
    return named


def _checked_labels(dataset: Dataset | IterableDataset, k: int | None, name: str) -> Dataset | IterableDataset:
    """Label rows checked (errors name the dataset, row and field): a ``Dataset`` at once, a stream row by row as it
    is read (its K fixed by ``k``, else by the first row read: a row of another K is named, not a collated batch)."""
    if isinstance(dataset, Dataset):
        return validate_labels(dataset, k=k)
    stream_k = [k]

    def check(row: dict[str, Any], i: int) -> dict[str, Any]:
        try:
            row = check_label_row(i, row, stream_k[0])
        except LabelValidationError as err:
            raise _in_dataset(err, name) from None
        stream_k[0] = len(row["samples"])
        return row

    return dataset.map(check, with_indices=True)


def _tokenize_labels(
    dataset: Dataset | IterableDataset, processing_class: Any, args: PreferenceRewardConfig, name: str, pad_id: int
) -> Dataset | IterableDataset:
    """``query_ids`` (the tokenizer's special tokens before the text) and ``samples_ids`` (K lists, with the special
    tokens that close a text, :func:`~hf_prefs.models.reward_model.query_ids_and_suffix`) of each row;
    a sample's trailing pad tokens (an EOS its text ends with, where the tokenizer pads with it) left out, so it is
    read where the model's own forward and TRL read it (:func:`~hf_prefs.models.reward_model.without_trailing_pad`;
    TRL set the pad before the datasets are prepared; ``pad_id`` is it, or where the model cannot embed it — a
    ``[PAD]`` added to the tokenizer only — the id the model's config then pads with, :func:`_embeddable_config_pad`)."""

    def tokenize(row: dict[str, Any]) -> dict[str, Any]:
        query_ids, suffix = query_ids_and_suffix(processing_class, row["query"])  # BERT's [SEP] after each sample
        return {
            "query_ids": query_ids,
            "samples_ids": [without_trailing_pad(processing_class(s, add_special_tokens=False)["input_ids"] + suffix,
                                                 pad_id) for s in row["samples"]],
        }

    # (a stream is mapped as it is read: map_with_tokenizer leaves out num_proc and desc, which its map does not take)
    return map_with_tokenizer(dataset, tokenize, processing_class, num_proc=args.dataset_num_proc,
                              desc=f"Tokenizing {name} labels")


def _check_tokenized(dataset: Dataset | IterableDataset, k: int | None) -> None:
    """An already tokenized ``Dataset``: every row has the same K >= 2 (``k`` when given) and ``best`` in ``[0, K)``."""
    if not isinstance(dataset, Dataset):
        return
    for i, row in enumerate(dataset.select_columns(["samples_ids", "best"])):
        got = len(row["samples_ids"])
        if got < 2 or (k is not None and got != k):
            raise LabelValidationError(f"has {got} samples, expected K={k or '>=2'}", i, "samples_ids")
        if not 0 <= int(row["best"]) < got:
            raise LabelValidationError(f"best={row['best']} is out of range [0, {got - 1}]", i, "best")
        k = got


def _can_pack(model: Any, row_limit: int | None) -> bool:
    """Whether ``model`` can read packed rows (``share_query_prefix``): a score head at every position (an encoder
    classifier reads one pooled reward per row), a forward that takes ``position_ids``, to restart each sample's
    positions after the query, and no attention window a query + sample of up to ``row_limit`` tokens (None: no
    limit) may outgrow (the packed rows' 4-D mask replaces the model's own, window included: Mistral's, Gemma 2/3's
    sliding layers, GPT-Neo's local ones); a warning where not (BLOOM's and MPT's ALiBi, Falcon's classifier read
    positions from a 2D attention mask; BERT, DeBERTa): each sample is then encoded with its query — the same loss."""
    base = unwrap_model(model)
    window = attention_window(base.config)
    if not reads_every_position(model):
        why = "reads one pooled reward per row (no score head at every position)"
    elif "position_ids" not in inspect.signature(base.forward).parameters:
        why = "takes no position_ids"
    elif window is not None and (row_limit is None or row_limit > window):
        why = (f"attends to a window of {window} tokens in some layers, which a query + sample of up to "
               f"{row_limit or 'any number of'} tokens outgrows (the packed rows' mask would replace it)")
    else:
        return True
    warnings.warn(f"share_query_prefix: {type(base).__name__} {why}, so rows that encode a query once for its K samples "
                  "cannot be read; each sample is encoded with its query instead (the same loss, the query's tokens K "
                  "times)", stacklevel=3)
    return False


def _warn_uneven_batches(dataset: Any, per_device: int, processes: int, drop_last: bool) -> None:
    """Warn when ``processes`` > 1 share labels that do not fill their last batch: accelerate (``even_batches``, as
    transformers' Trainer prepares the loader) fills it with labels repeated from the epoch's start, so that step
    trains on more labels, some twice, than one process's partial batch — the 2-process run departs from the
    1-process one there."""
    if processes <= 1 or drop_last or not isinstance(dataset, Dataset):
        return
    step, left = per_device * processes, len(dataset) % (per_device * processes)
    if left:
        warnings.warn(f"{len(dataset)} train labels on {processes} processes: the last batch of each epoch holds "
                      f"{left} of per_device_train_batch_size x processes = {step}, and accelerate fills it with "
                      f"{step - left} labels repeated from the start, so training departs there from one process's "
                      f"(use a label count that is a multiple of {step}, or dataloader_drop_last)", stacklevel=3)


def _first_row_conversational(dataset: Dataset | IterableDataset) -> bool:
    """Whether a pairwise dataset holds chats (TRL's ``is_conversational`` of its first row; a column has one type)."""
    first = (dataset[0] if len(dataset) else None) if isinstance(dataset, Dataset) else next(iter(dataset), None)
    return first is not None and is_conversational(first)


def _readable_eos(processing_class: Any) -> str | None:
    """The EOS that ``trl.RewardTrainer`` appends to text completions, where the reward model reads it: a sequence
    classifier reads the last token that is not the pad, so with pad = EOS (TRL's padding for a tokenizer without a
    pad token, set before the datasets are prepared) it reads the token before that EOS — the completion's last,
    which is where hf_prefs reads a completion without one (:func:`~hf_prefs.models.reward_model.score_texts`, PPO).
    None there: no EOS appended, the same loss as TRL's and the same score from the saved model's own forward."""
    eos = getattr(processing_class, "eos_token", None)
    return eos if eos is not None and getattr(processing_class, "pad_token", None) != eos else None


def _check_adapter_trains_the_head(model: nn.Module) -> None:
    """A PEFT reward model must train (and so save) its score head: a LoRA config without ``task_type="SEQ_CLS"``
    (or ``modules_to_save`` naming the head) froze the head at its random init and left it out of the adapter, so
    every reload drew another head and scored differently, without a word. An adapter loaded for inference (nothing
    trainable) trained nothing at all."""
    if not is_peft_model(model):
        return
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model: a PEFT reward model with nothing trainable (an adapter loaded for inference, as "
                         "load_reward_model and peft load it): training would change nothing. Load it with "
                         "PeftModel.from_pretrained(base, path, is_trainable=True) to train it on")
    base = unwrap_model(model)  # the head: a causal LM classifier's `score`, an encoder's `classifier` (BERT)
    name = next((n for n in ("score", "classifier") if isinstance(getattr(base, n, None), nn.Module)), None)
    if name is not None and not any(p.requires_grad for p in getattr(base, name).parameters()):
        raise ValueError(f"peft_config: the reward model's score head ({name!r}) is frozen: it would stay at its random "
                         f"init and not be saved with the adapter (a reloaded model would score differently). Use "
                         f"LoraConfig(task_type=\"SEQ_CLS\", ...) or modules_to_save=[{name!r}]")


def _embeddable_config_pad(model: nn.Module, tokenizer: Any) -> None:
    """TRL sets the classifier's ``config.pad_token_id`` to the tokenizer's; a ``[PAD]`` added to the tokenizer only
    (as TRL's scripts add it) lies outside the embedding, and a Llama-like model saved with it does not load again
    (``padding_idx`` must be within the embedding). It becomes the embeddable id inputs are padded with
    (:func:`~hf_prefs.models.generation.input_pad_id`, the EOS), whose trailing copies the labels' samples were read
    past, as the model's own forward reads past its pad."""
    config = text_config(unwrap_model(model).config)
    rows = embedding_rows(model)
    if rows is not None and getattr(config, "pad_token_id", None) is not None and config.pad_token_id >= rows:
        config.pad_token_id = input_pad_id(model, tokenizer)


def _built_model(model: Any, init_kwargs: dict[str, Any] | None = None) -> nn.Module | None:
    """``model``, or for a model given by name one built from its config on the meta device, without weights (to read
    its positions and embedding before TRL prepares the datasets); None where that fails (TRL's own load then says
    why)."""
    if isinstance(model, str):
        kwargs = {k: v for k, v in (init_kwargs or {}).items() if k in ("revision", "trust_remote_code")}
        try:
            config = AutoConfig.from_pretrained(model, **kwargs)
            with torch.device("meta"):
                model = AutoModelForSequenceClassification.from_config(
                    config, trust_remote_code=kwargs.get("trust_remote_code", False))
        except Exception:  # a bad name, a config transformers cannot build: TRL's load raises its own error
            return None
    return model if isinstance(model, nn.Module) else None


def _drop_long(dataset: Dataset | IterableDataset, limit: int, why: str, num_proc: int | None, name: str
               ) -> Dataset | IterableDataset:
    """Labels with a query+sample longer than ``limit`` tokens dropped (TRL drops, does not truncate, long rows);
    a warning counts them, naming the limit (``why``), an error says when none is left."""

    def fits(row: dict[str, Any]) -> bool:
        return all(len(row["query_ids"]) + len(s) <= limit for s in row["samples_ids"])

    if not isinstance(dataset, Dataset):
        return dataset.filter(fits)
    n = len(dataset)
    dataset = dataset.filter(fits, num_proc=num_proc, desc=f"Filtering {name} >{limit} tokens")
    if len(dataset) < n:
        warnings.warn(f"{n - len(dataset)} of {n} {name} labels have a query+sample longer than {why} and were "
                      "dropped", stacklevel=3)
    if len(dataset) == 0:
        raise ValueError(f"no {name} label fits in {why}")
    return dataset
