"""The whole pipeline as one call, for use from Python (``hf_prefs.run_pipeline``); the recipes in ``recipes/`` show the
same stages top to bottom, to edit.

queries -> K samples per query from rho -> best-of-K labels -> reward model (K-way loss, normalized) -> PPO with KL
control -> evaluation of rho and pi on held-out queries -> results folder + saved models with cards (-> Hub).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from trl import ModelConfig, TrlParser

from ..core.rollout import RolloutSpec
from ..tasks.known_rewards import make_known_reward
from ..trainers.ppo_config import PPOConfig
from .arguments import PipelineArguments, resolve_cpu_precision, validate_pipeline_config
from .evaluate import evaluate_policy
from .labels import collect_labels
from .policy import (
    learned_reward, make_ppo_trainer, online_label_loop, resume_checkpoint, resume_requested, train_policy, trained_policy,
)
from .results import StageTimer, push_results, write_results
from .reward import train_reward_model
from .saved_stages import (
    online_label_info, save_labels, saved_labels, saved_reward_model, warn_replacing_earlier_run,
)
from .setup import check_stages_fit, load_base, split_queries

__all__ = ["configure_logging", "run_pipeline", "parse_args", "main"]


def run_pipeline(pa: PipelineArguments, cfg: PPOConfig, model_args: Any = None) -> dict[str, Any]:
    """Run every stage and write the results folder ``cfg.output_dir``; returns the summary dict."""
    validate_pipeline_config(pa, cfg, model_args)
    resolve_cpu_precision(pa, cfg, model_args)  # float32 on a CPU without bf16 units (cpu_bf16_fallback)
    out, timer = cfg.output_dir, StageTimer()
    resume, reuse = resume_checkpoint(cfg, pa, model_args), resume_requested(cfg)
    warn_replacing_earlier_run(out, reuse)  # an earlier run's results there are replaced
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(cfg.seed)
    base = load_base(model_args)
    spec = RolloutSpec.from_config(cfg, base.tokenizer)
    queries = split_queries(pa, cfg, base.tokenizer)
    check_stages_fit(pa, cfg, base, queries)  # what a later stage would refuse, refused before the labels

    online = None
    with timer("labels"):
        if pa.label_mode == "online":  # round 0 on rho now; the other rounds run inside PPO
            online = online_label_loop(pa, cfg, base, queries.label, out, held_out=queries.eval)
            online.restore(resume) if resume else online.first_round(base.rho)
            labels, label_info = online.labels_dataset(), online_label_info(pa.label_source, resume)
            save_labels(labels, out, label_info)
        elif reuse and (saved := saved_labels(out)):  # a resumed run: the labels it saved before PPO (saved_stages)
            labels, label_info = saved
        else:
            labels, label_info = collect_labels(pa, cfg, base.rho, base.tokenizer, queries.label, spec, queries.eval)
            save_labels(labels, out, label_info)
    print(f"[hf_prefs] {len(labels)} labels ({label_info['source']}) in {timer.seconds['labels_s']:.0f} s")
    with timer("reward_model"):
        if online is None:
            reward_model, rm_metrics = (saved_reward_model(out) if reuse else None) or train_reward_model(
                pa, cfg, labels, base.rho, base.tokenizer, base.name, out, spec=spec)
        else:
            reward_model, rm_metrics = online.reward_model, online.rm_metrics

    known = make_known_reward(pa.known_reward, pa.known_reward_positive_label)
    trainer = make_ppo_trainer(cfg, model_args, base, reward_model, queries.ppo, known_reward=known)
    with timer("ppo"):
        train_policy(trainer, online, resume)
    if online is not None:  # the last round's labels and reward model
        labels, rm_metrics, label_info["rounds"] = online.labels_dataset(), online.rm_metrics, len(online.rounds)
        save_labels(labels, out, label_info)

    judge = {"known_reward": known, "batch_size": pa.evaluation_batch_size(), "seed": cfg.seed + 2,
             "reward_fn": learned_reward(trainer)}
    with timer("evaluation"):
        before = evaluate_policy(base.rho, base.tokenizer, queries.eval, spec, ref_model=base.rho, **judge)
        after = evaluate_policy(trained_policy(trainer), base.tokenizer, queries.eval, spec,
                                ref_model=None if trainer.is_peft_model else base.rho, **judge)
    summary = write_results(out, pa, cfg, base.name, trainer, labels, label_info, rm_metrics, before, after,
                            queries.eval_references, timer.total(), online.summary() if online else None)
    if cfg.push_to_hub:
        summary["hub"] = push_results(out, cfg, pa)
    return summary


def parse_args(task: str | None = None, argv: Sequence[str] | None = None) -> tuple[PipelineArguments, PPOConfig, Any]:
    """``TrlParser((PipelineArguments, PPOConfig, ModelConfig))``: ``--config x.yaml`` plus command-line overrides;
    ``task`` is the recipe's task (a different ``--task`` is an error)."""
    parser = TrlParser((PipelineArguments, PPOConfig, ModelConfig))
    pa, cfg, model_args = parser.parse_args_and_config(args=argv)
    if task is not None:
        if pa.task not in (None, task):
            raise ValueError(f"task: this recipe runs {task!r}, got task={pa.task!r}")
        pa.task = task
    return pa, cfg, model_args


def configure_logging(level: int = logging.INFO) -> None:
    """The recipes' logging: ``level`` on each machine's main process; on the other processes of a launch (their
    ``LOCAL_RANK`` > 0) warnings only and no datasets progress bars, as transformers' ``log_level_replica`` does for its
    own logs — a 2-process run says each thing once."""
    replica = int(os.environ.get("LOCAL_RANK", "0") or 0) > 0
    logging.basicConfig(level=logging.WARNING if replica else level, format="%(asctime)s %(name)s: %(message)s")
    if replica:
        datasets.disable_progress_bars()


def main(task: str | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the command line (:func:`parse_args`) and :func:`run_pipeline`."""
    pa, cfg, model_args = parse_args(task, argv)
    configure_logging()
    return run_pipeline(pa, cfg, model_args)
