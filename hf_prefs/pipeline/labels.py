"""The label stage: best-of-K labels on samples of rho from the simulated labeler, a label file or human labelers;
and the label source of the online loop. The labeler is set up here once for both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from datasets import Dataset

from ..core.rollout import RolloutSpec
from ..labels.labelers import SimulatedLabeler, sample_candidates, sample_label_dataset
from ..labels.queue import LabelQueue
from ..labels.schema import load_label_file, validate_labels
from ..tasks.known_rewards import make_known_reward
from .arguments import PipelineArguments

__all__ = ["make_labeler", "label_source", "collect_labels"]


def make_labeler(pa: PipelineArguments, seed: int) -> SimulatedLabeler:
    """The paper's mock human on ``known_reward`` (argmax, or Boltzmann with ``labeler_noise``), seeded."""
    return SimulatedLabeler(make_known_reward(pa.known_reward), seed=seed, noise=pa.labeler_noise)


def label_source(pa: PipelineArguments, seed: int, file_labels: Dataset | None = None) -> SimulatedLabeler | LabelQueue | Dataset:
    """What ``label_source`` names: the simulated labeler, the label file's rows, or the human queue."""
    if pa.label_source == "simulated":
        return make_labeler(pa, seed)
    if pa.label_source == "file":
        return file_labels if file_labels is not None else load_label_file(pa.label_file, pa.num_candidates, pa.label_limit)
    return LabelQueue(pa.label_queue_dir)


def collect_labels(
    pa: PipelineArguments,
    cfg: Any,
    rho: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    spec: RolloutSpec | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Best-of-K labels and a summary of how they were made.

    ``simulated``/``human``: K samples per query from rho, cut by ``spec`` (default: the run's
    ``RolloutSpec.from_config(cfg, tokenizer)``, the rule PPO applies), then picked by the labeler or by people
    through the queue (this waits for the round, up to ``label_timeout``). ``file``: the label file's rows.
    """
    if pa.label_source == "file":
        labels = load_label_file(pa.label_file, pa.num_candidates, pa.label_limit)
        return labels, {"source": "file", "label_file": pa.label_file, "labels": len(labels)}
    spec = spec if spec is not None else RolloutSpec.from_config(cfg, tokenizer)
    sampling = dict(k=pa.num_candidates, batch_size=pa.sampling_batch_size, seed=cfg.seed,
                    drop_untruncated=pa.label_drop_untruncated, spec=spec)
    if pa.label_source == "simulated":
        labels, stats = sample_label_dataset(rho, tokenizer, list(queries), make_labeler(pa, cfg.seed), return_stats=True,
                                             **sampling)
        return labels, {"source": "simulated", "known_reward": pa.known_reward, **asdict(stats)}
    kept_queries, samples, stats = sample_candidates(rho, tokenizer, list(queries), **sampling)
    queue = LabelQueue(pa.label_queue_dir)
    queue.put_round(0, list(zip(kept_queries, samples)))
    print(f"Waiting for human labels: serve the page with `hf-prefs label serve --queue {pa.label_queue_dir}`")
    labels = queue.wait_round(0, timeout=pa.label_timeout)
    return validate_labels(labels, k=pa.num_candidates), {"source": "human", "queue": pa.label_queue_dir, **asdict(stats)}
