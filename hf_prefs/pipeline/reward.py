"""The reward-model stage: the paper's K-way reward model trained on best-of-K labels, normalized on rho."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..core.rollout import RolloutSpec
from ..hub_loading import named_hub_errors
from ..models.frozen_features import freeze_bottom_layers
from ..models.generation import ResponseSampler, embeddable_pad_id
from ..models.loading import load_reward_model
from ..models.reward_model import init_score_head
from ..trainers.reward_config import PreferenceRewardConfig
from ..trainers.reward_trainer import PreferenceRewardTrainer
from .arguments import PipelineArguments
from .results import clear_stage_folder

__all__ = ["split_held_out", "train_reward_model"]

logger = logging.getLogger(__name__)


def split_held_out(labels: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """``(train, held_out)``: ``fraction`` of the label set's comparisons (query and samples) held out by ``datasets``'
    seeded ``train_test_split`` over the distinct comparisons, each with all its rows — the same item labeled by two
    labelers, or a row repeated in a file, is never on both sides, so the held-out accuracy measures comparisons the
    reward model did not train on. Where every row is its own comparison (the offline default) this is
    ``train_test_split`` of the rows. None held out at ``fraction`` 0, or (with a warning) where ``fraction`` of the
    comparisons is under one."""
    if fraction <= 0:
        return labels, None
    rows_of: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, (q, s) in enumerate(zip(labels["query"], labels["samples"])):
        rows_of.setdefault((q, tuple(s)), []).append(i)
    groups = list(rows_of.values())  # in first-seen order: group g is row g where all rows differ
    if len(groups) * fraction < 1:
        logger.warning(f"rm_eval_fraction {fraction}: {len(groups)} distinct comparisons hold none out; the reward "
                       "model is trained on all labels, with no held-out accuracy")
        return labels, None
    split = Dataset.from_dict({"group": list(range(len(groups)))}).train_test_split(test_size=fraction, seed=seed)
    pick = lambda part: labels.select([i for g in split[part]["group"] for i in groups[g]])
    return pick("train"), pick("test")


def train_reward_model(
    pa: PipelineArguments,
    cfg: Any,
    labels: Dataset,
    rho: torch.nn.Module,
    tokenizer: Any,
    base_model: str,
    output_dir: str,
    init_model: torch.nn.Module | None = None,
    spec: RolloutSpec | None = None,
    resumable: bool = False,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train the reward model on ``labels`` (held-out split for accuracy), normalized before and after on raw samples
    of rho drawn under ``spec`` (default: the run's ``RolloutSpec.from_config(cfg, tokenizer)``); it is saved with
    its tokenizer to ``output_dir/reward_model`` and its log to ``output_dir/rm_metrics.jsonl``.

    ``init_model``: train this reward model further instead of a fresh one from the trunk (online ``continue``).

    ``resumable``: save a checkpoint at every tenth of the training steps into ``output_dir/reward_model_training``
    (the newest one kept) and continue from the newest one found there, so a killed training resumes where it
    stopped (the trainer restores the checkpoint's gain/bias instead of normalizing again); the checkpoints are
    removed once the reward model and its log are saved."""
    if init_model is None:
        init_model = _fresh_reward_model(pa, cfg, pa.reward_model_name_or_path or base_model, tokenizer)
    train, held_out = split_held_out(labels, pa.rm_eval_fraction, cfg.seed)
    training_dir = os.path.join(output_dir, "reward_model_training")
    rm_args = _reward_config(pa, cfg, training_dir, len(train), resumable)
    spec = spec if spec is not None else RolloutSpec.from_config(cfg, tokenizer)
    sampler = ResponseSampler(rho, tokenizer, batch_size=pa.sampling_batch_size, seed=cfg.seed + 1, spec=spec)
    log_path = os.path.join(output_dir, "rm_metrics.jsonl")  # written last: a whole reward model is saved before it
    if PartialState().is_main_process and os.path.exists(log_path):
        os.remove(log_path)
    trainer = PreferenceRewardTrainer(
        model=init_model, args=rm_args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
        normalization_samples=sampler,
    )
    if trainer.is_deepspeed_enabled:
        _check_zero3_saves_whole_weights(trainer.accelerator.state.deepspeed_plugin)
    last = get_last_checkpoint(training_dir) if resumable and os.path.isdir(training_dir) else None
    trainer.train(resume_from_checkpoint=last)
    metrics = {k: v for log in trainer.state.log_history for k, v in log.items() if isinstance(v, (int, float))}
    if held_out is not None:
        metrics.update(trainer.evaluate())
    clear_stage_folder(os.path.join(output_dir, "reward_model"))  # an earlier run's files would stay beside ours
    trainer.save_model(os.path.join(output_dir, "reward_model"))  # every process calls it; the main one writes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(os.path.join(output_dir, "reward_model"))
        with open(log_path, "w") as f:
            for log in trainer.state.log_history:
                f.write(json.dumps(log) + "\n")
        if resumable:  # they only served a resume; the saved model and its log are whole now
            for name in os.listdir(training_dir):
                if name.startswith(PREFIX_CHECKPOINT_DIR):
                    shutil.rmtree(os.path.join(training_dir, name))
        if os.path.isdir(training_dir) and set(os.listdir(training_dir)) <= {"README.md"}:  # the trainer's output
            shutil.rmtree(training_dir)  # folder, left empty (or with TRL's card of the training alone)
    if trainer.is_deepspeed_enabled:
        return _as_saved(trainer, os.path.join(output_dir, "reward_model")), metrics
    return trainer.model, metrics


def _as_saved(trainer: PreferenceRewardTrainer, model_dir: str) -> torch.nn.Module:
    """The trained reward model loaded back from ``model_dir`` (once every process is past saving), with the trained
    module's frozen layers frozen (online ``continue`` trains it on). Under DeepSpeed the trained module keeps the
    engine's hooks (ZeRO-3: and its shards), which PPO's own engine cannot take over."""
    trainer.accelerator.wait_for_everyone()
    model, _ = load_reward_model(model_dir)
    trained = dict(trainer.model.named_parameters())
    for name, param in model.named_parameters():
        param.requires_grad_(trained[name].requires_grad if name in trained else param.requires_grad)
    return model


def _check_zero3_saves_whole_weights(plugin: Any) -> None:
    """Under ZeRO-3 the next stages load the reward model as saved, which needs its weights gathered on saving."""
    zero = plugin.deepspeed_config.get("zero_optimization", {})
    names = ("stage3_gather_16bit_weights_on_model_save", "gather_16bit_weights_on_model_save",
             "stage3_gather_fp16_weights_on_model_save")  # DeepSpeed's names for it, old ones included
    if zero.get("stage") == 3 and not any(zero.get(name, False) for name in names):
        raise ValueError(
            "zero3_save_16bit_model: under ZeRO-3 the reward model is saved and loaded back for PPO, which needs "
            "`zero3_save_16bit_model: true` in the accelerate DeepSpeed config (recipes/accelerate_configs/"
            "deepspeed_zero3.yaml sets it); without it only a DeepSpeed checkpoint would be written"
        )


def _fresh_reward_model(pa: PipelineArguments, cfg: Any, trunk: str, tokenizer: Any) -> torch.nn.Module:
    """The trunk with a new scalar head (its init drawn after ``torch.manual_seed(cfg.seed)``: it follows the run's
    seed, not what ran before in the process), its bottom ``rm_freeze_layers`` blocks frozen."""
    with named_hub_errors("reward_model_name_or_path" if pa.reward_model_name_or_path else "model_name_or_path", trunk):
        config = AutoConfig.from_pretrained(trunk)
    config.num_labels = 1
    if config.pad_token_id is None:  # set before the model is built (its padding_idx): one it can embed
        config.pad_token_id = embeddable_pad_id(tokenizer, getattr(config.get_text_config(), "vocab_size", None))
    torch.manual_seed(cfg.seed)
    model = AutoModelForSequenceClassification.from_pretrained(trunk, config=config, dtype=torch.float32)
    freeze_bottom_layers(model, pa.rm_freeze_layers)
    if pa.rm_head_init == "paper":
        init_score_head(model)
    return model


def _reward_config(pa: PipelineArguments, cfg: Any, training_dir: str, n_train: int, resumable: bool) -> PreferenceRewardConfig:
    """The reward trainer's arguments from the pipeline's ``rm_*`` fields and the run's (seed, precision, logging);
    ``resumable``: a checkpoint every tenth of the optimizer steps (counted as ``Trainer`` does, so a resumed run's
    ``save_steps`` equals the one in its checkpoint's state)."""
    args = PreferenceRewardConfig(
        output_dir=training_dir,
        learning_rate=pa.rm_learning_rate,
        lr_scheduler_type="linear",
        per_device_train_batch_size=pa.rm_batch_size,
        per_device_eval_batch_size=pa.rm_batch_size,
        num_train_epochs=pa.rm_num_train_epochs,
        num_candidates=pa.num_candidates,
        normalize_samples=pa.rm_normalize_samples,
        share_query_prefix=pa.rm_share_query_prefix,
        cache_frozen_features=pa.rm_cache_frozen_features and pa.rm_freeze_layers > 0,
        # the policy's switch (PPOConfig: off by default), not RewardConfig's default (on): recomputation costs time
        activation_checkpointing=bool(getattr(cfg, "activation_checkpointing", False)),
        bf16=cfg.bf16,
        use_cpu=cfg.use_cpu,
        seed=cfg.seed,
        logging_steps=max(1, math.ceil(n_train / pa.rm_batch_size / 20)),
        save_strategy="steps" if resumable else "no",
        save_total_limit=1,
        eval_strategy="no",
        report_to=cfg.report_to,
        max_length=None,
        disable_tqdm=cfg.disable_tqdm,
    )
    batches = math.ceil(n_train / (args.per_device_train_batch_size * args.world_size))
    steps = math.ceil(args.num_train_epochs * math.ceil(batches / args.gradient_accumulation_steps))
    args.save_steps = max(1, math.ceil(steps / 10))
    return args
