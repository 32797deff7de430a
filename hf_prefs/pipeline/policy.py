"""The policy stage: PPO on the reward model (or a known reward), with the known reward tracked alongside; with
``label_mode=online`` the label rounds run inside PPO (:class:`hf_prefs.OnlinePreferenceLoop`)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import DistributedType
from datasets import Dataset
from torch import nn
from transformers import AutoModelForCausalLM
from trl import get_peft_config

from ..core.rollout import RolloutSpec
from ..models.reward_model import score_texts
from ..models.weight_sharing import share_frozen_weights
from ..trainers.online import OnlinePreferenceLoop
from ..trainers.ppo_checkpoints import check_checkpoint_process_count, complete_checkpoints
from ..trainers.ppo_config import PPOConfig
from ..trainers.ppo_data import Rollout
from ..trainers.ppo_trainer import PPOTrainer
from .arguments import PipelineArguments, base_model_name, model_dtype, online_schedule
from .labels import label_source
from .results import MetricsFileCallback
from .reward import train_reward_model
from .saved_stages import (
    RunIdCallback, checkpoint_run_id, has_saved_stages, labels_saved, saved_run_id, stale_stage_fields,
)
from .setup import Base

__all__ = [
    "KnownRewardTrackingPPOTrainer",
    "learned_reward",
    "make_ppo_trainer",
    "online_label_loop",
    "resume_checkpoint",
    "resume_requested",
    "share_rho_weights",
    "train_policy",
    "trained_policy",
]


class KnownRewardTrackingPPOTrainer(PPOTrainer):
    """Logs ``objective/known_reward``: the known reward (e.g. VADER) of the same cut responses the learned reward
    scores, so a run shows whether optimizing the reward model moved the true objective."""

    known_reward: Callable[[list[str]], Sequence[float]] | None = None
    _last_known: float | None = None

    def score(self, query_texts: list[str], response_texts: list[str]) -> torch.Tensor:
        scores = super().score(query_texts, response_texts)
        if self.known_reward is not None:
            known = torch.tensor([float(r) for r in self.known_reward(list(response_texts))], device=scores.device)
            self._last_known = self.accelerator.gather(known).mean().item()
        return scores

    def log_step(self, rollout: Rollout, train_stats: dict, timings: dict, learning_rate: float) -> dict[str, float]:
        metrics = super().log_step(rollout, train_stats, timings, learning_rate)
        if self._last_known is not None:
            metrics["objective/known_reward"] = self._last_known
        return metrics


def make_ppo_trainer(
    cfg: PPOConfig,
    model_args: Any,
    base: Base,
    reward_model: nn.Module | Callable[[list[str], list[str]], Any],
    ppo_queries: Dataset,
    known_reward: Callable[[list[str]], Sequence[float]] | None = None,
    output_dir: str | None = None,
) -> KnownRewardTrackingPPOTrainer:
    """A PPO trainer on a fresh policy from the base model (``ModelConfig.dtype``; LoRA when ``use_peft``: the
    reference is then the policy with its adapters disabled, else rho), tracking ``known_reward``; the frozen
    weights of the policy and the reward model are rho's own tensors (:func:`share_rho_weights`).

    ``output_dir`` (default: ``cfg.output_dir``) gets the trainer's checkpoints and ``metrics.jsonl``, written as
    the updates are logged (:class:`~hf_prefs.pipeline.results.MetricsFileCallback`); the trainer's copy of ``cfg``
    has ``push_to_hub`` off (the run pushes at its end); ``cfg`` itself is not changed.
    """
    # the run pushes its policy/ and reward_model/ folders once, at its end (push_results): the trainer must not make
    # the repo (or push checkpoints of the whole output folder) itself
    if output_dir is not None or cfg.push_to_hub:
        cfg = copy.deepcopy(cfg)
        cfg.output_dir, cfg.push_to_hub = output_dir or cfg.output_dir, False
    peft_config = get_peft_config(model_args) if getattr(model_args, "use_peft", False) else None
    # ModelConfig.dtype, as TRL's scripts: with LoRA the frozen base may be bf16 (PEFT keeps the adapters in fp32)
    policy = AutoModelForCausalLM.from_pretrained(base.name, dtype=model_dtype(model_args))
    trainer = KnownRewardTrackingPPOTrainer(
        model=policy, reward_model=reward_model, args=cfg, train_dataset=ppo_queries, processing_class=base.tokenizer,
        ref_model=None if peft_config else base.rho, peft_config=peft_config,
        # each checkpoint names the run whose labels it trained on; metrics.jsonl grows as the updates are logged
        callbacks=[RunIdCallback(cfg.output_dir), MetricsFileCallback(cfg.output_dir)],
    )
    trainer.known_reward = known_reward
    share_rho_weights(trainer, base.rho)
    return trainer


def share_rho_weights(trainer: PPOTrainer, rho: nn.Module) -> int:
    """Hold the checkpoint's frozen weights once (:func:`hf_prefs.models.weight_sharing.share_frozen_weights`): the
    LoRA policy's frozen base and the reward model's frozen matmul weights become rho's tensors where equal (the
    reward model is scored under the trainer's autocast, so its fp32 frozen layers may share rho's bf16 weights:
    the same products). Skipped under DeepSpeed and FSDP (flat, sharded parameters). Returns the bytes freed."""
    if trainer.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return 0
    freed = 0
    if trainer.is_peft_model:
        freed += share_frozen_weights(trained_policy(trainer), rho)
    if isinstance(trainer.reward_model, nn.Module):
        device = trainer.accelerator.device.type
        with trainer.accelerator.autocast():  # the context PPO and learned_reward score in: its dtype, or None
            autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        freed += share_frozen_weights(trainer.reward_model, rho, autocast_dtype=autocast)
    return freed


def online_label_loop(
    pa: PipelineArguments,
    cfg: PPOConfig,
    base: Base,
    label_queries: Sequence[str],
    output_dir: str,
    file_labels: Dataset | None = None,
    held_out: Sequence[str] = (),
) -> OnlinePreferenceLoop:
    """The loop of ``label_mode=online``: the label source of ``label_source`` (simulated labeler, label file rows
    filling the rounds in order — a warning counts the ``held_out`` queries among them —, or the human queue),
    comparisons sampled and cut by the run's
    :class:`~hf_prefs.core.rollout.RolloutSpec`, reward models trained by :func:`train_reward_model` (normalized on
    rho samples; the latest is saved to ``output_dir/reward_model``)."""
    schedule = online_schedule(pa)
    source = label_source(pa, cfg.seed, file_labels, base.tokenizer, held_out)
    if isinstance(source, Dataset) and len(source) < schedule.total_labels:
        raise ValueError(f"online_labels_per_round: the rounds need {schedule.total_labels} labels, the label file has {len(source)}")
    spec = RolloutSpec.from_config(cfg, base.tokenizer)

    def train_rm(labels: Dataset, init_model: nn.Module | None, round: int) -> tuple[nn.Module, dict[str, float]]:
        # an early round with too few labels to hold any out trains on all of them (split_held_out)
        return train_reward_model(pa, cfg, labels.select_columns(["query", "samples", "best"]), base.rho,
                                  base.tokenizer, base.name, output_dir, init_model=init_model, spec=spec)

    return OnlinePreferenceLoop(
        schedule, source, train_rm, label_queries, base.tokenizer, args=cfg, spec=spec, num_candidates=pa.num_candidates,
        rm_init=pa.online_rm_init, wait_for_labels=pa.online_wait_for_labels, label_timeout=pa.label_timeout,
        drop_untruncated=pa.label_drop_untruncated, sampling_batch_size=pa.sampling_batch_size, output_dir=output_dir,
    )


def resume_requested(cfg: PPOConfig) -> bool:
    """Whether ``--resume_from_checkpoint`` was given: the run then takes the labels and the reward model it saved
    before PPO from ``output_dir`` (:mod:`hf_prefs.pipeline.saved_stages`) instead of making them again."""
    return cfg.resume_from_checkpoint not in (None, "", False, "false", "False")


def resume_checkpoint(cfg: PPOConfig, pa: PipelineArguments | None = None, model_args: Any = None) -> str | None:
    """The PPO checkpoint ``--resume_from_checkpoint`` names: a folder, or ``true``/``last`` for the newest one in
    ``output_dir``; None without the flag.

    With the pipeline's arguments ``pa`` (and ``model_args``), the labels and reward model saved in ``output_dir``,
    which a resumed offline run reuses, must have been made as this run asks (:func:`stale_stage_fields`: else an
    error names the fields), and ``true`` with no checkpoint but such stages saved (a run stopped before its first
    PPO checkpoint) gives None: the stages are reused and PPO starts at update 1. An online run resumes from a
    checkpoint only (its labels and reward model come from the checkpoint); no checkpoint and nothing saved is an
    error. ``true`` takes only checkpoints of the run whose labels are saved in ``output_dir`` (their
    :data:`~hf_prefs.pipeline.saved_stages.RUN_FILE` holds the run id of ``labels_info.json``, which an online run
    writes after its first round and keeps over resumes): an earlier run's left in the same folder are passed over.
    An offline run refuses a named checkpoint folder of another run (it would train that run's policy on this run's
    reward model); an online run's checkpoint holds its own labels and reward model."""
    spec = cfg.resume_from_checkpoint
    if not resume_requested(cfg):
        return None
    reuses = pa is not None and pa.label_mode != "online"
    if reuses and (stale := stale_stage_fields(cfg.output_dir, pa, base_model_name(model_args), cfg)):
        raise ValueError(f"resume_from_checkpoint: the labels and reward model saved in {cfg.output_dir} were made "
                         f"otherwise than this run asks ({'; '.join(stale)}): run in a new output_dir, or without "
                         "--resume_from_checkpoint")
    run_id = saved_run_id(cfg.output_dir) if pa is not None else None  # the run whose labels were saved last there
    remade = reuses and not labels_saved(cfg.output_dir)  # labels made again: no checkpoint trained on these
    if spec in (True, "true", "True", "last"):
        complete = complete_checkpoints(cfg.output_dir)
        mine = [c for c in complete if not remade and (run_id is None or checkpoint_run_id(c) == run_id)]
        if len(mine) < len(complete) and PartialState().is_main_process:
            print(f"[hf_prefs] resume: {len(complete) - len(mine)} checkpoint(s) in {cfg.output_dir} were written by "
                  "another run than the labels saved there (an earlier run in the same folder): not resumed from")
        found = mine[-1] if mine else None
        if found is None:
            if reuses and has_saved_stages(cfg.output_dir):
                if PartialState().is_main_process:
                    print(f"[hf_prefs] resume: no PPO checkpoint in {cfg.output_dir}; the stages saved there are "
                          "reused and PPO starts at its first update")
                return None
            what = "checkpoint, labels or reward model" if reuses else "checkpoint"
            hint = " (an online run resumes from a PPO checkpoint only)" if pa is not None and not reuses else ""
            raise ValueError(f"resume_from_checkpoint: no {what} in {cfg.output_dir}{hint}")
        check_checkpoint_process_count(found, PartialState().num_processes)  # before the stages and trainer load
        return found
    if remade:
        raise ValueError(f"resume_from_checkpoint: {cfg.output_dir} holds no labels saved whole (labels_info.json): "
                         f"they are made again, and {spec} did not train on them; run without a checkpoint folder")
    if reuses and run_id is not None and (written_by := checkpoint_run_id(str(spec))) != run_id:
        raise ValueError(f"resume_from_checkpoint: {spec} was written by another run ({written_by or 'no run id'}) than "
                         f"the labels and reward model saved in {cfg.output_dir} (run {run_id}): resuming it would "
                         "train that run's policy on this run's reward model; resume with true (this run's newest "
                         "checkpoint), or run in a new output_dir")
    check_checkpoint_process_count(str(spec), PartialState().num_processes)
    return str(spec)


def train_policy(
    trainer: PPOTrainer, online_loop: OnlinePreferenceLoop | None = None, resume_from_checkpoint: str | None = None
) -> None:
    """``trainer.train()``, or with an online loop its rounds in between (one ``train()``: beta, optimizer and
    learning-rate schedule carry over the rounds; only the reward model is swapped); from a checkpoint when given."""
    if online_loop is None:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    else:
        online_loop.train(trainer, resume_from_checkpoint=resume_from_checkpoint)


def learned_reward(trainer: PPOTrainer) -> Callable[[list[str], list[str]], torch.Tensor]:
    """``f(queries, responses)``: the trainer's reward model scored as PPO scores it — under the trainer's autocast,
    which a reward model sharing rho's bf16 weights needs (:func:`share_rho_weights`) — for evaluation. On the
    responses' text: under TRL's stop token, where PPO gives a reward model the stop token or a chat model its end of
    turn too (:meth:`~hf_prefs.trainers.ppo_trainer.PPOTrainer.reward_model_texts`), it is read here without them."""

    def reward(queries: list[str], responses: list[str]) -> torch.Tensor:
        with trainer.accelerator.autocast():
            return score_texts(trainer.reward_model, trainer.reward_processing_class, queries, responses)

    return reward


def trained_policy(trainer: PPOTrainer) -> nn.Module:
    """The trained causal LM (PEFT or full) inside the trainer's policy-with-value-head wrapper."""
    return trainer.policy_model
