"""The label stage: best-of-K labels on samples of rho from the simulated labeler, a label file or human labelers;
and the label source of the online loop. The labeler is set up here once for both."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset

from ..core.rollout import RolloutSpec
from ..labels.labelers import LabelSamplingStats, SimulatedLabeler, check_some_kept, draw_candidates
from ..labels.queue import LabelQueue
from ..labels.schema import label_file_digest, load_label_file, validate_labels
from ..tasks.known_rewards import make_known_reward
from ..tasks.specs import get_task
from ..tasks.summarization import format_summarization_query
from ..trainers.main_process import result_from_main_process
from .arguments import PipelineArguments
from .saved_stages import sampling_settings

__all__ = ["make_labeler", "label_source", "collect_labels"]

logger = logging.getLogger(__name__)


def make_labeler(pa: PipelineArguments, seed: int) -> SimulatedLabeler:
    """The paper's mock human on ``known_reward`` (argmax, or Boltzmann with ``labeler_noise``), seeded."""
    return SimulatedLabeler(make_known_reward(pa.known_reward, pa.known_reward_positive_label), seed=seed, noise=pa.labeler_noise)


def label_source(
    pa: PipelineArguments, seed: int, file_labels: Dataset | None = None, tokenizer: Any = None,
    held_out: Sequence[str] = (),
) -> SimulatedLabeler | LabelQueue | Dataset:
    """What ``label_source`` names: the simulated labeler, the label file's rows (``tokenizer`` renders conversational
    pairwise rows; :func:`load_file_labels`, ``held_out`` the evaluation's queries), or the human queue."""
    if pa.label_source == "simulated":
        return make_labeler(pa, seed)
    if pa.label_source == "file":
        return file_labels if file_labels is not None else load_file_labels(pa, tokenizer, held_out)
    return LabelQueue(pa.label_queue_dir)


def load_file_labels(pa: PipelineArguments, tokenizer: Any, held_out: Sequence[str] = ()) -> Dataset:
    """The label file's rows in the task's query form (:func:`_load_label_file`); those whose query is one of the
    ``held_out`` queries (the evaluation's) are counted in a warning: the reward model trains on them."""
    labels = _load_label_file(pa, tokenizer)
    if held_out and (seen := set(held_out) & set(labels["query"])):
        logger.warning("label_file: %d of the %d held-out queries are queries of the label file: the reward model "
                       "trains on them, so its scores there are not held out (the known reward is)", len(seen),
                       len(held_out))
    return labels


def _load_label_file(pa: PipelineArguments, tokenizer: Any) -> Dataset:
    """The label file's rows, each query in the form the policy's queries have, so the reward model trains on what PPO
    scores: the summarization tasks wrap it in their prefix and suffix (:meth:`TaskSpec.policy_query`: not twice) and
    cut it to ``query_length`` tokens as their PPO queries are cut
    (:func:`~hf_prefs.tasks.summarization.format_summarization_query`; without a tokenizer, wrapped only)."""
    labels = load_label_file(pa.label_file, pa.num_candidates, pa.label_limit, tokenizer)
    spec = get_task(pa.task)
    if not (spec.query_prefix or spec.query_suffix):
        return labels
    if tokenizer is None:
        form = spec.policy_query
    else:
        def form(query: str) -> str:
            return format_summarization_query(spec.raw_query(query), tokenizer, spec.query_length, spec.query_prefix,
                                              spec.query_suffix)
    wrapped = labels.map(lambda row: {"query": form(row["query"])})
    changed = sum(a != b for a, b in zip(labels["query"], wrapped["query"]))
    cut = sum(not q.startswith(spec.query_prefix + spec.raw_query(raw)) for raw, q in zip(labels["query"], wrapped["query"]))
    if changed:
        logger.info("label_file: %d of %d queries put in the %s task's form (%d cut to its %d tokens)", changed,
                    len(labels), pa.task, cut, spec.query_length)
    return wrapped


def collect_labels(
    pa: PipelineArguments,
    cfg: Any,
    rho: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    spec: RolloutSpec | None = None,
    held_out: Sequence[str] = (),
) -> tuple[Dataset, dict[str, Any]]:
    """Best-of-K labels and a summary of how they were made.

    ``simulated``/``human``: K samples per query from rho, cut by ``spec`` (default: the run's
    ``RolloutSpec.from_config(cfg, tokenizer)``, the rule PPO applies), then picked by the labeler or by people
    through the queue (this waits for the round, up to ``label_timeout``). ``file``: the label file's rows (:func:`load_file_labels`:
    those whose query is one of the ``held_out`` queries, the evaluation's, are counted in a warning).
    On N processes each samples its share of the queries; the main process labels them and every process gets the
    same label set.
    """
    base = {"base_model": getattr(rho, "name_or_path", None), "task": pa.task}  # what a resumed run checks them against
    if pa.label_source == "file":
        labels = load_file_labels(pa, tokenizer, held_out)
        digest = label_file_digest(pa.label_file)  # what a resumed run checks the file against
        return labels, {"source": "file", "label_file": pa.label_file, "label_file_sha256": digest, "labels": len(labels),
                        **base}
    spec = spec if spec is not None else RolloutSpec.from_config(cfg, tokenizer)
    kept, samples, stats = _sample_shards(pa, cfg, rho, tokenizer, list(queries), spec)
    # people may take longer than the process group's timeout: the others wait in short collectives
    rows, info = result_from_main_process(lambda: _label(pa, cfg, queries, kept, samples, stats))
    # what they were sampled with: a resumed run that asks for other samples must not reuse them (stale_stage_fields)
    return validate_labels(Dataset.from_list(rows), k=pa.num_candidates), {**info, **base, **sampling_settings(pa, cfg)}


def _sample_shards(
    pa: PipelineArguments, cfg: Any, rho: torch.nn.Module, tokenizer: Any, queries: list[str], spec: RolloutSpec
) -> tuple[list[int], list[list[str]], LabelSamplingStats]:
    """This process's share of the queries (every N-th) sampled and cut; then every process's, in query order:
    ``(kept query indices, their K samples, counts)``."""
    state = PartialState()
    mine = list(range(len(queries)))[state.process_index :: state.num_processes]
    kept, samples, stats = draw_candidates(
        rho, tokenizer, [queries[i] for i in mine], pa.num_candidates, spec, pa.sampling_batch_size,
        cfg.seed + 1_000_003 * state.process_index, pa.label_drop_untruncated, require_kept=state.num_processes == 1,
    )
    kept = [mine[j] for j in kept]
    if state.num_processes == 1:
        return kept, samples, stats
    # a process whose share is empty or all dropped must not raise alone (the others would wait here for it)
    shards = gather_object([(kept, samples, asdict(stats))])
    order = sorted((i, s) for idx, smp, _ in shards for i, s in zip(idx, smp))
    totals = LabelSamplingStats(**{key: sum(shard[2][key] for shard in shards) for key in asdict(stats)})
    check_some_kept(totals, spec)
    return [i for i, _ in order], [s for _, s in order], totals


def _label(
    pa: PipelineArguments, cfg: Any, queries: Sequence[str], kept: list[int], samples: list[list[str]],
    stats: LabelSamplingStats,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The label rows of the sampled comparisons: the simulated labeler's picks, or the human queue's (waits)."""
    kept_q = [queries[i] for i in kept]
    if pa.label_source == "simulated":
        labeler = make_labeler(pa, cfg.seed)
        known = labeler.score(kept_q, samples)
        rows = [{"query": q, "samples": s, "best": labeler.choose(r), "known_rewards": r, "query_index": i}
                for q, s, r, i in zip(kept_q, samples, known, kept)]
        return rows, {"source": "simulated", "known_reward": pa.known_reward, **asdict(stats)}
    queue = LabelQueue(pa.label_queue_dir)
    mine = queue.put_round(0, list(zip(kept_q, samples)))  # this run's items: others may be in round 0 too
    print(f"Waiting for human labels: serve the page with `hf-prefs label serve --queue {pa.label_queue_dir}`")
    try:
        labels = queue.wait_round(0, timeout=pa.label_timeout, item_ids=mine)
    except TimeoutError as err:  # said with what to do; the queued items and their labels stay in the queue
        raise TimeoutError(
            f"label_timeout: {err}. The items and the labels given stay in {pa.label_queue_dir}: label the rest "
            f"(`hf-prefs label serve --queue {pa.label_queue_dir}`) and run the same command again (the same seed, "
            "processes and hardware sample the same comparisons, which find their labels), or raise label_timeout"
        ) from err
    return labels.to_list(), {"source": "human", "queue": pa.label_queue_dir, **asdict(stats)}
