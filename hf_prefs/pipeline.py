"""The paper's whole pipeline, as the recipes run it.

queries (tasks/) -> K samples per query from rho -> best-of-K labels (simulated labeler, a label file, or humans)
-> reward model (K-way loss, normalized) -> PPO with KL control -> evaluation of rho and pi on held-out queries
-> results folder (metrics, plot, samples) + saved policy and reward model with model cards (-> Hub).

Each stage is a function taking plain datasets / models, so a recipe is a few lines and a user can stop after any
stage. :func:`validate_pipeline_config` runs first and names the bad field before any model is loaded.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from hf_prefs.labels import LabelValidationError, from_openai_json, validate_labels
from hf_prefs.ppo_config import PPOConfig
from hf_prefs.tasks.specs import get_task

__all__ = [
    "PipelineArguments",
    "validate_pipeline_config",
    "make_known_reward",
    "load_task_queries",
    "load_label_file",
    "collect_labels",
    "train_reward_model",
    "load_base",
    "model_dtype",
    "split_queries",
    "rouge_before_after",
    "run_pipeline",
    "main",
]

logger = logging.getLogger(__name__)

LABEL_SOURCES = ("simulated", "file", "human")
LABEL_MODES = ("offline", "online")


@dataclass
class PipelineArguments:
    """What the recipes add to ``PPOConfig`` (the policy's settings) and TRL's ``ModelConfig`` (the base model).

    The base model is ``ModelConfig.model_name_or_path``; left unset, the offline SmolLM2-135M asset is used.
    """

    task: str | None = field(default=None, metadata={"help": "sentiment | descriptiveness | tldr | cnndm (set by the recipe)"})
    query_dataset: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id of the task's texts; unset = offline Austen passages (books tasks) "
                  "or the task's Hub source (tldr, cnndm)."},
    )
    query_min_tokens: int = field(default=32, metadata={"help": "Shortest book query in tokens (paper: 64 exactly)."})
    num_label_queries: int = field(default=4992, metadata={"help": "Queries sent to the labeler (paper: 4,992)."})
    num_ppo_queries: int | None = field(default=None, metadata={"help": "Queries PPO cycles over (None: all left)."})
    num_eval_queries: int = field(default=64, metadata={"help": "Held-out queries for the before/after evaluation."})
    label_source: str = field(default="simulated", metadata={"help": "simulated | file | human"})
    label_file: str | None = field(
        default=None,
        metadata={"help": "Labels for label_source=file: .jsonl/.json/.parquet/.csv in the label schema, the "
                  "paper's token-id JSON (offline_5k.json), a saved dataset folder, or a Hub dataset id."},
    )
    label_limit: int | None = field(default=None, metadata={"help": "Use the first N labels of the file."})
    num_candidates: int = field(default=4, metadata={"help": "K, samples per label (paper: 4)."})
    known_reward: str = field(
        default="vader",
        metadata={"help": "Known reward of the simulated labeler (also tracked during PPO): 'vader' (offline "
                  "log-odds), a Hub/local text-classification model id whose positive-class log-odds is the reward, "
                  "or 'none' (tasks without one)."},
    )
    label_drop_untruncated: bool = field(
        default=True,
        metadata={"help": "Drop queries with a sample lacking the truncate token past truncate_after (paper); False "
                  "shows such samples uncut (CPU budget: small models rarely end a sentence in the window)."},
    )
    labeler_noise: float = field(default=0.0, metadata={"help": "Boltzmann temperature of the simulated labeler (0: argmax)."})
    label_queue_dir: str | None = field(default=None, metadata={"help": "Queue folder for label_source=human."})
    label_timeout: float | None = field(default=None, metadata={"help": "Seconds to wait for human labels (None: forever)."})
    reward_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Trunk of the reward model (default: the policy's base model, as the paper)."}
    )
    rm_learning_rate: float = field(default=5e-5, metadata={"help": "Reward-model lr, linear decay to 0 (paper: 5e-5)."})
    rm_batch_size: int = field(default=32, metadata={"help": "Reward-model batch in labels (paper: 32)."})
    rm_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the labels (paper: 1)."})
    rm_eval_fraction: float = field(default=0.1, metadata={"help": "Labels held out for the RM's accuracy."})
    rm_share_query_prefix: bool = field(default=True, metadata={"help": "Encode each query once for its K samples."})
    rm_freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and this many bottom trunk layers of the RM (CPU budget)."}
    )
    rm_normalize_samples: int = field(default=256, metadata={"help": "rho samples per reward-model normalization (paper: 256)."})
    sampling_batch_size: int = field(default=32, metadata={"help": "Rows per batch when sampling from rho."})
    push_reward_model_id: str | None = field(
        default=None, metadata={"help": "Hub id of the reward model (default: <hub_model_id>-reward-model)."}
    )
    # online label collection (hf_prefs.online): rounds of labels on the CURRENT policy's samples during PPO
    label_mode: str = field(
        default="offline",
        metadata={"help": "offline: all labels on rho samples, then PPO | online: online_rounds rounds, the first "
                  "before RL, the others evenly spaced over PPO (paper, summarization: 20)."},
    )
    online_rounds: int = field(default=20, metadata={"help": "label_mode=online: label rounds (paper: 20)."})
    online_labels_per_round: list[int] | None = field(
        default=None,
        metadata={"help": "label_mode=online: comparisons per round, one value or one per round (default: "
                  "num_label_queries split evenly over the rounds)."},
    )
    online_rm_init: str = field(
        default="fresh",
        metadata={"help": "label_mode=online: fresh = each round trains the RM from the base trunk with a fresh head "
                  "on all labels so far (paper) | continue = train the current RM on the round's new labels."},
    )
    online_wait_for_labels: bool = field(
        default=True,
        metadata={"help": "label_mode=online, label_source=human: PPO waits for each round's labels (up to "
                  "label_timeout); false: PPO goes on and late labels are used at the next round."},
    )


# ----------------------------------------------------------------------------------------------------------------
# validation (before anything is loaded)
# ----------------------------------------------------------------------------------------------------------------
def _looks_like_path(spec: str) -> bool:
    return os.path.sep in spec or spec.startswith(".") or Path(spec).suffix in {".json", ".jsonl", ".parquet", ".csv"}


def validate_pipeline_config(pa: PipelineArguments, cfg: PPOConfig, model_args: Any = None) -> None:
    """Fail fast, naming the field: unknown task or label source, response_length <= truncate_after, a missing
    label file, a label file whose K differs from ``num_candidates``, a human run without a queue folder, a
    ``dtype`` that is not a floating torch dtype."""
    model_dtype(model_args)
    if pa.task is None:
        raise ValueError("task: set the task (sentiment, descriptiveness, tldr or cnndm)")
    get_task(pa.task)
    if pa.label_source not in LABEL_SOURCES:
        raise ValueError(f"label_source: {pa.label_source!r} is not one of {LABEL_SOURCES}")
    truncating = cfg.truncate_token is not None or cfg.truncate_token_id is not None or cfg.stop_token_id is not None
    if truncating and cfg.response_length <= cfg.truncate_after:
        raise ValueError(
            f"response_length: {cfg.response_length} must be greater than truncate_after ({cfg.truncate_after}); "
            "no response could ever be cut, so every score would be the penalty"
        )
    if pa.num_candidates < 2:
        raise ValueError(f"num_candidates: must be >= 2, got {pa.num_candidates}")
    if not 0 <= pa.rm_eval_fraction < 1:
        raise ValueError(f"rm_eval_fraction: must lie in [0, 1), got {pa.rm_eval_fraction}")
    if pa.label_source == "file":
        if not pa.label_file:
            raise ValueError("label_file: label_source=file needs a label file or a Hub dataset id")
        if _looks_like_path(pa.label_file) and not Path(pa.label_file).exists():
            raise FileNotFoundError(f"label_file: {pa.label_file} does not exist")
    if pa.label_source == "human" and not pa.label_queue_dir:
        raise ValueError("label_queue_dir: label_source=human needs the labeling queue's folder")
    if pa.label_source == "simulated" and pa.known_reward in (None, "", "none"):
        raise ValueError("known_reward: the simulated labeler needs a known reward ('vader' or a model id)")
    if pa.label_mode not in LABEL_MODES:
        raise ValueError(f"label_mode: {pa.label_mode!r} is not one of {LABEL_MODES}")
    if pa.label_mode == "online":
        from hf_prefs.online import schedule_from_pipeline

        if pa.online_rm_init not in ("fresh", "continue"):
            raise ValueError(f"online_rm_init: {pa.online_rm_init!r} is not 'fresh' or 'continue'")
        schedule = schedule_from_pipeline(pa)
        if cfg.total_episodes is not None:
            batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * cfg.world_size
            try:
                schedule.update_boundaries(cfg.total_episodes, batch)
            except ValueError as err:
                raise ValueError(f"online_rounds: {err}") from None


# ----------------------------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------------------------
def make_known_reward(spec: str) -> Callable[[list[str]], list[float]]:
    """``'vader'``: VADER's compound c as log-odds 2·atanh(c) (offline); else a text-classification model (Hub id or
    folder) whose positive-class log-odds is the reward (the paper's mock sentiment classifier)."""
    if spec == "vader":
        from hf_prefs.scorers import vader_log_odds

        return vader_log_odds
    from hf_prefs.scorers import HubSentimentScorer

    scorer = HubSentimentScorer(spec)
    return lambda texts: scorer(texts).tolist()


def load_task_queries(pa: PipelineArguments, tokenizer: Any, n: int | None = None, seed: int = 0) -> Dataset:
    """The task's queries (``query`` column) cut like the paper's: books passages start after a '.' and end at a
    '.' (offline: Austen); TL;DR / CNN-DM articles are cut to fit ``query_length`` with the task's prefix/suffix."""
    task = get_task(pa.task)
    if pa.task in ("sentiment", "descriptiveness"):
        from hf_prefs.tasks.books import load_book_queries

        name = None if pa.query_dataset in (None, "austen") else pa.query_dataset
        return load_book_queries(name, tokenizer, n=n, min_tokens=pa.query_min_tokens, max_tokens=task.query_length, seed=seed)
    from hf_prefs.tasks.summarization import load_summarization_queries, summarization_queries

    if pa.query_dataset == "austen":  # offline stand-in: Austen passages as "articles"
        from hf_prefs.tasks.books import austen_queries

        texts = austen_queries(tokenizer, n=n, min_tokens=pa.query_min_tokens, max_tokens=task.query_length, seed=seed)["query"]
        return summarization_queries(texts, tokenizer, task.query_length, task.query_prefix, task.query_suffix)
    return load_summarization_queries(pa.task, tokenizer, n=n, max_tokens=task.query_length, prefix=task.query_prefix, suffix=task.query_suffix)


def load_label_file(spec: str, k: int, limit: int | None = None) -> Dataset:
    """Labels from a file, folder or Hub id, validated (errors name the row); K must equal ``k``."""
    path = Path(spec)
    if path.is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
    elif path.suffix == ".json" and path.exists():
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
        first = records[0] if isinstance(records, list) and records else {}
        if isinstance(first.get("query"), list):  # the paper's token-id files
            from hf_prefs.assets import load_gpt2_tokenizer

            return _check_k(from_openai_json(records, load_gpt2_tokenizer(), limit=limit), k, spec)
        ds = Dataset.from_list(records)
    elif path.suffix in {".jsonl", ".parquet", ".csv"} and path.exists():
        from datasets import load_dataset

        kind = {".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}[path.suffix]
        ds = load_dataset(kind, data_files=str(path), split="train")
    else:
        from datasets import load_dataset

        ds = load_dataset(spec, split="train")
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return _check_k(validate_labels(ds), k, spec)


def _check_k(ds: Dataset, k: int, spec: str) -> Dataset:
    got = len(ds[0]["samples"])
    if got != k:
        raise LabelValidationError(f"the labels in {spec} have K={got} samples per row but num_candidates={k}", field="num_candidates")
    return ds


def collect_labels(
    pa: PipelineArguments, cfg: PPOConfig, rho: torch.nn.Module, tokenizer: Any, queries: Sequence[str]
) -> tuple[Dataset, dict[str, Any]]:
    """Best-of-K labels on samples of rho: from the simulated labeler, a label file or the human queue."""
    from hf_prefs.labelers import SimulatedLabeler, sample_candidates, sample_label_dataset

    sampling = dict(
        k=pa.num_candidates,
        response_length=cfg.response_length,
        temperature=cfg.temperature,
        truncate_token=cfg.truncate_token_id if cfg.truncate_token_id is not None else cfg.truncate_token,
        truncate_after=cfg.truncate_after,
        batch_size=pa.sampling_batch_size,
        seed=cfg.seed,
        drop_untruncated=pa.label_drop_untruncated,
    )
    if pa.label_source == "file":
        labels = load_label_file(pa.label_file, pa.num_candidates, pa.label_limit)
        return labels, {"source": "file", "label_file": pa.label_file, "labels": len(labels)}
    if pa.label_source == "simulated":
        labeler = SimulatedLabeler(make_known_reward(pa.known_reward), seed=cfg.seed, noise=pa.labeler_noise)
        labels, stats = sample_label_dataset(rho, tokenizer, list(queries), labeler, return_stats=True, **sampling)
        return labels, {"source": "simulated", "known_reward": pa.known_reward, **asdict(stats)}
    from hf_prefs.label_app.store import LabelQueue

    kept_queries, samples, stats = sample_candidates(rho, tokenizer, list(queries), **sampling)
    queue = LabelQueue(pa.label_queue_dir)
    queue.put_round(0, list(zip(kept_queries, samples)))
    print(f"Waiting for human labels: serve the page with `hf-prefs label serve --queue {pa.label_queue_dir}`")
    labels = queue.wait_round(0, timeout=pa.label_timeout)
    return validate_labels(labels, k=pa.num_candidates), {"source": "human", "queue": pa.label_queue_dir, **asdict(stats)}


def model_dtype(model_args: Any) -> torch.dtype | str:
    """``ModelConfig.dtype`` as ``from_pretrained`` takes it (TRL's rule): ``'auto'`` stays a string, a name such as
    ``'bfloat16'`` becomes ``torch.bfloat16``; no ModelConfig means float32."""
    name = getattr(model_args, "dtype", None) or "float32"
    if name == "auto" or isinstance(name, torch.dtype):
        return name
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: {name!r} is not a floating torch dtype (float32, bfloat16, float16) or 'auto'")
    return dtype


def load_base(model_args: Any) -> tuple[str, Any, torch.nn.Module]:
    """``(base_model, tokenizer, rho)``: ``ModelConfig.model_name_or_path`` or, unset, the offline SmolLM2 asset; the
    tokenizer pads on the left (padding is always masked explicitly, never pooled on); rho in eval mode, in
    ``ModelConfig.dtype`` (rho is never trained: bfloat16 makes sampling ~2.5x faster on CPUs with bf16 units)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_model = getattr(model_args, "model_name_or_path", None)
    if base_model is None:
        from hf_prefs.assets import smollm2_path

        base_model = str(smollm2_path())
    tokenizer = AutoTokenizer.from_pretrained(base_model, padding_side="left")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rho = AutoModelForCausalLM.from_pretrained(base_model, dtype=model_dtype(model_args)).eval()
    return base_model, tokenizer, rho


def split_queries(
    pa: PipelineArguments, cfg: PPOConfig, tokenizer: Any
) -> tuple[list[str], list[str], Dataset, list[str] | None]:
    """Disjoint ``(eval, label, ppo, eval_references)`` query sets: the first ``num_eval_queries`` held out, the next
    ``num_label_queries`` for labels, the rest (or ``num_ppo_queries``) for PPO; ``eval_references`` are the held-out
    queries' reference summaries when the task's data has them (TL;DR, CNN/DM from the Hub), else None."""
    n_total = pa.num_label_queries + pa.num_eval_queries + (pa.num_ppo_queries or 0)
    queries = load_task_queries(pa, tokenizer, n=n_total if pa.num_ppo_queries else None, seed=cfg.seed)
    if len(queries) < pa.num_label_queries + pa.num_eval_queries + 1:
        raise ValueError(
            f"num_label_queries: {pa.num_label_queries} + num_eval_queries {pa.num_eval_queries} exceed the "
            f"{len(queries)} queries available"
        )
    held_out = queries.select(range(pa.num_eval_queries))
    label_q = queries.select(range(pa.num_eval_queries, pa.num_eval_queries + pa.num_label_queries))["query"]
    ppo_q = queries.select(range(pa.num_eval_queries + pa.num_label_queries, len(queries)))
    eval_refs = held_out["reference"] if "reference" in held_out.column_names else None
    return held_out["query"], label_q, ppo_q, eval_refs


def _freeze_bottom_layers(model: torch.nn.Module, n: int) -> None:
    """Freeze the input embeddings and the first ``n`` transformer blocks (GPT-2 ``h``, Llama ``layers``)."""
    if n <= 0:
        return
    base = getattr(model, model.base_model_prefix)
    blocks = getattr(base, "h", None) or getattr(base, "layers", None)
    if blocks is None:
        raise ValueError("rm_freeze_layers: cannot find the transformer blocks of this architecture")
    if n > len(blocks):
        raise ValueError(f"rm_freeze_layers: {n} exceeds the model's {len(blocks)} layers")
    for module in [base.get_input_embeddings(), *list(blocks)[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)


def train_reward_model(
    pa: PipelineArguments,
    cfg: PPOConfig,
    labels: Dataset,
    rho: torch.nn.Module,
    tokenizer: Any,
    base_model: str,
    output_dir: str,
    init_model: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train the reward model on ``labels`` (held-out split for accuracy), normalized before and after on rho.

    ``init_model``: train this reward model further instead of a fresh one from the trunk (online ``continue``)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from hf_prefs.labelers import ResponseSampler
    from hf_prefs.reward_trainer import PreferenceRewardConfig, PreferenceRewardTrainer

    trunk = pa.reward_model_name_or_path or base_model
    config = AutoConfig.from_pretrained(trunk)
    config.num_labels = 1
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if init_model is None:
        model = AutoModelForSequenceClassification.from_pretrained(trunk, config=config, dtype=torch.float32)
        _freeze_bottom_layers(model, pa.rm_freeze_layers)
    else:
        model = init_model

    split = labels.train_test_split(test_size=pa.rm_eval_fraction, seed=cfg.seed) if pa.rm_eval_fraction > 0 else None
    train, held_out = (split["train"], split["test"]) if split else (labels, None)
    rm_args = PreferenceRewardConfig(
        output_dir=os.path.join(output_dir, "reward_model_training"),
        learning_rate=pa.rm_learning_rate,
        lr_scheduler_type="linear",
        per_device_train_batch_size=pa.rm_batch_size,
        per_device_eval_batch_size=pa.rm_batch_size,
        num_train_epochs=pa.rm_num_train_epochs,
        num_candidates=pa.num_candidates,
        normalize_samples=pa.rm_normalize_samples,
        share_query_prefix=pa.rm_share_query_prefix,
        # the policy's switch (PPOConfig: off by default), not RewardConfig's default (on): recomputation costs time
        activation_checkpointing=bool(getattr(cfg, "activation_checkpointing", False)),
        bf16=cfg.bf16,
        use_cpu=cfg.use_cpu,
        seed=cfg.seed,
        logging_steps=max(1, math.ceil(len(train) / pa.rm_batch_size / 20)),
        save_strategy="no",
        eval_strategy="no",
        report_to=cfg.report_to,
        max_length=None,
        disable_tqdm=cfg.disable_tqdm,
    )
    sampler = ResponseSampler(rho, tokenizer, cfg.response_length, cfg.temperature, pa.sampling_batch_size, seed=cfg.seed + 1)
    trainer = PreferenceRewardTrainer(
        model=model, args=rm_args, train_dataset=train, eval_dataset=held_out, processing_class=tokenizer,
        normalization_samples=sampler,
    )
    trainer.train()
    metrics = {k: v for log in trainer.state.log_history for k, v in log.items() if isinstance(v, (int, float))}
    if held_out is not None:
        metrics.update(trainer.evaluate())
    trainer.save_model(os.path.join(output_dir, "reward_model"))
    tokenizer.save_pretrained(os.path.join(output_dir, "reward_model"))
    with open(os.path.join(output_dir, "rm_metrics.jsonl"), "w") as f:
        for log in trainer.state.log_history:
            f.write(json.dumps(log) + "\n")
    return trainer.model, metrics


# ----------------------------------------------------------------------------------------------------------------
# PPO with the known reward tracked alongside the learned one
# ----------------------------------------------------------------------------------------------------------------
def _tracking_trainer_class():
    from hf_prefs.ppo_trainer import PPOTrainer

    class KnownRewardTrackingPPOTrainer(PPOTrainer):
        """Logs ``objective/known_reward``: the known reward (e.g. VADER) of the same truncated responses the
        learned reward scores, so a run shows whether optimizing the reward model moved the true objective."""

        known_reward: Callable[[list[str]], Sequence[float]] | None = None
        _last_known: float | None = None

        def score(self, query_texts: list[str], response_texts: list[str]) -> torch.Tensor:
            scores = super().score(query_texts, response_texts)
            if self.known_reward is not None:
                known = torch.tensor([float(r) for r in self.known_reward(list(response_texts))], device=scores.device)
                self._last_known = self.accelerator.gather(known).mean().item()
            return scores

        def log_step(self, rollout, train_stats, timings, learning_rate):
            metrics = super().log_step(rollout, train_stats, timings, learning_rate)
            if self._last_known is not None:
                metrics["objective/known_reward"] = self._last_known
            return metrics

    return KnownRewardTrackingPPOTrainer


# ----------------------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------------------
def _write_metrics(log_history: list[dict[str, Any]], output_dir: str) -> list[dict[str, Any]]:
    rows = [log for log in log_history if "objective/kl" in log]
    with open(os.path.join(output_dir, "metrics.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    keys = sorted({k for row in rows for k in row})
    with open(os.path.join(output_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot_kl_vs_reward(rows: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any], path: str) -> None:
    """KL(pi, rho) against the known reward and the learned score over PPO updates, with the held-out evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    kl = [r["objective/kl"] for r in rows]
    for ax, key, label, ev_key in (
        (axes[0], "objective/known_reward", "known reward (e.g. VADER log-odds)", "known_reward"),
        (axes[1], "objective/scores", "reward-model score r(x, y)", "rm_score"),
    ):
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            ax.plot(kl, ys, "-o", ms=3, color="tab:blue", label="PPO rollouts (per update)")
        for ev, name, color in ((before, "rho (held-out)", "tab:gray"), (after, "pi (held-out)", "tab:red")):
            if ev.get(ev_key) is not None:
                ax.scatter([ev["kl"] or 0.0], [ev[ev_key]], s=70, color=color, zorder=5, label=name)
        ax.set_xlabel("KL(pi, rho) [nats per episode]")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("KL vs reward during PPO")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _samples_markdown(before, after, n: int = 8) -> str:
    lines = ["# Sample continuations (held-out queries)", ""]
    for i in range(min(n, len(before.queries))):
        lines += [f"## Query {i}", "", f"> {before.queries[i]}", ""]
        for name, ev in (("rho (before)", before), ("pi (after)", after)):
            kr = f" — known reward {ev.known_rewards[i]:.2f}" if ev.known_rewards else ""
            lines.append(f"- **{name}**{kr}: {ev.responses[i]}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# the whole run
# ----------------------------------------------------------------------------------------------------------------
def run_pipeline(pa: PipelineArguments, cfg: PPOConfig, model_args: Any = None) -> dict[str, Any]:
    """Run every stage and write the results folder ``cfg.output_dir``; returns the summary dict."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.analysis.evaluate import evaluate_policy
    from hf_prefs.model_cards import render_policy_card, render_reward_model_card, write_model_card
    from hf_prefs.normalization import get_reward_normalization
    from hf_prefs.reward_model import score_texts

    validate_pipeline_config(pa, cfg, model_args)
    t_start = time.time()
    # A label file is read and checked (rows, K) before any model is loaded.
    file_labels = load_label_file(pa.label_file, pa.num_candidates, limit=pa.label_limit) if pa.label_source == "file" else None
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(cfg.seed)

    base_model, tokenizer, rho = load_base(model_args)
    eval_q, label_q, ppo_q, eval_refs = split_queries(pa, cfg, tokenizer)
    timings: dict[str, float] = {}

    # ---- labels ----
    t = time.time()
    label_source_q = label_q
    online = None
    if pa.label_mode == "online":  # round 0 on the policy before RL (= rho); the other rounds run inside PPO
        from hf_prefs.online import pipeline_online_loop

        online = pipeline_online_loop(pa, cfg, rho, tokenizer, base_model, out, label_q, file_labels)
        reward_model = online.first_round(rho)
        labels, label_info = online.labels_dataset(), {"source": pa.label_source, "mode": "online", "labels": len(online.rows)}
    elif file_labels is not None:
        labels, label_info = file_labels, {"source": "file", "label_file": pa.label_file, "labels": len(file_labels)}
    else:
        labels, label_info = collect_labels(pa, cfg, rho, tokenizer, label_source_q)
    labels.to_json(os.path.join(out, "labels.jsonl"))
    timings["labels_s"] = time.time() - t
    print(f"[hf_prefs] {len(labels)} labels ({label_info['source']}) in {timings['labels_s']:.0f} s")

    # ---- reward model ----
    t = time.time()
    if online is None:
        reward_model, rm_metrics = train_reward_model(pa, cfg, labels, rho, tokenizer, base_model, out)
    else:
        rm_metrics = online.rm_metrics
    timings["reward_model_s"] = time.time() - t
    gain, bias = get_reward_normalization(reward_model)
    print(f"[hf_prefs] reward model: held-out accuracy {rm_metrics.get('eval_accuracy')}, gain {gain:.3f}, bias {bias:.3f}")

    known = None if pa.known_reward in (None, "", "none") else make_known_reward(pa.known_reward)
    truncate_id = _truncate_id(cfg, tokenizer)
    eval_kw = dict(
        response_length=cfg.response_length, temperature=cfg.temperature, truncate_token_id=truncate_id,
        truncate_after=cfg.truncate_after, penalty_reward_value=cfg.penalty_reward_value, known_reward=known,
        reward_fn=lambda q, r: score_texts(reward_model, tokenizer, q, r), batch_size=pa.sampling_batch_size,
        seed=cfg.seed + 2,
    )
    before = evaluate_policy(rho, tokenizer, eval_q, ref_model=rho, **eval_kw)

    # ---- PPO ----
    t = time.time()
    peft_config = None
    if model_args is not None and getattr(model_args, "use_peft", False):
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)
    trainer_cls = _tracking_trainer_class()
    # ModelConfig.dtype, as TRL's scripts: with LoRA the frozen base may be bf16 (PEFT keeps the adapters in fp32)
    policy = AutoModelForCausalLM.from_pretrained(base_model, dtype=model_dtype(model_args))
    trainer = trainer_cls(
        model=policy, reward_model=reward_model, args=cfg, train_dataset=ppo_q.select_columns(["query"]),
        processing_class=tokenizer, ref_model=None if peft_config else rho, peft_config=peft_config,
    )
    trainer.known_reward = known
    if online is None:
        trainer.train()
    else:  # the same trainer throughout: beta, optimizer and lr schedule carry over rounds; only the RM is swapped
        online.train(trainer)
        reward_model, rm_metrics = trainer.reward_model, online.rm_metrics  # the last round's (saved in out/reward_model)
        gain, bias = get_reward_normalization(reward_model)
        labels = online.labels_dataset()
        labels.to_json(os.path.join(out, "labels.jsonl"))
        label_info = {**label_info, "labels": len(labels), "rounds": len(online.rounds)}
        before = evaluate_policy(rho, tokenizer, eval_q, ref_model=rho, **eval_kw)  # rho scored by the final RM too
    timings["ppo_s"] = time.time() - t
    pi = trainer.model.policy if hasattr(trainer.model, "policy") else trainer.model
    after = evaluate_policy(pi, tokenizer, eval_q, ref_model=None if peft_config else rho, **eval_kw)

    # ---- results ----
    rows = _write_metrics(trainer.state.log_history, out)
    b, a = before.summary(), after.summary()
    plot_kl_vs_reward(rows, b, a, os.path.join(out, "kl_vs_reward.png"))
    with open(os.path.join(out, "samples.md"), "w") as f:
        f.write(_samples_markdown(before, after))
    with open(os.path.join(out, "eval.json"), "w") as f:
        json.dump({"before": before.to_dict(), "after": after.to_dict()}, f, indent=1)

    policy_dir, rm_dir = os.path.join(out, "policy"), os.path.join(out, "reward_model")
    trainer.save_model(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    final = rows[-1] if rows else {}
    card_common = dict(
        base_model=base_model, task=pa.task, num_labels=len(labels), reward_gain=gain, reward_bias=bias,
        labeler=label_info["source"], samples_per_label=pa.num_candidates,
        known_reward=pa.known_reward if label_info["source"] == "simulated" else None,
        labels_file=pa.label_file if label_info["source"] == "file" else None,
    )
    write_model_card(
        policy_dir,
        render_policy_card(
            **card_common, kl_final=float(a["kl"] or final.get("objective/kl", 0.0)),
            beta_final=float(trainer.kl_ctl.value), beta_initial=cfg.kl_coef,
            kl_target=cfg.kl_target if cfg.adaptive_kl else None, temperature=cfg.temperature,
            response_length=cfg.response_length, hub_model_id=cfg.hub_model_id,
            metrics={f"heldout/{k}_{when}": v for when, s in (("before", b), ("after", a)) for k, v in s.items()
                     if isinstance(v, (int, float))},
        ),
    )
    write_model_card(
        rm_dir,
        render_reward_model_card(**card_common, metrics={k: v for k, v in rm_metrics.items() if k.startswith("eval_")}),
    )
    summary = {
        "task": pa.task,
        "base_model": base_model,
        "labels": label_info,
        "reward_model": {"gain": gain, "bias": bias, **{k: v for k, v in rm_metrics.items() if k.startswith("eval_")}},
        "before": b,
        "after": a,
        "final_beta": float(trainer.kl_ctl.value),
        "ppo_updates": trainer.state.global_step,
        "episodes": trainer.state.global_step * cfg.batch_size,
        "timings_s": {**timings, "total_s": time.time() - t_start},
    }
    if before.known_rewards and after.known_rewards:  # paired: same held-out queries, same sampling seed
        from hf_prefs.analysis.metrics import paired_difference, win_rate

        gain_mean, gain_se = paired_difference(after.known_rewards, before.known_rewards)
        rate, rate_se = win_rate(after.known_rewards, before.known_rewards)
        summary["known_reward_gain"] = {"mean": gain_mean, "se": gain_se, "n": len(after.known_rewards),
                                        "win_rate": rate, "win_rate_se": rate_se}
    if eval_refs is not None:  # summarization: ROUGE F1 of rho's and pi's held-out summaries against the references
        summary["rouge"] = rouge_before_after(before.responses, after.responses, eval_refs)
    if online is not None:
        summary["online"] = online.summary()
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(_samples_markdown(before, after, n=3))
    print(
        f"[hf_prefs] known reward {_fmt(b['known_reward'])} -> {_fmt(a['known_reward'])}{_fmt_gain(summary)}, "
        f"RM score {b['rm_score']:.3f} -> "
        f"{a['rm_score']:.3f}, KL {a['kl']:.2f} nats, beta {summary['final_beta']:.4f}, "
        f"{summary['timings_s']['total_s']:.0f} s; results in {out}"
    )
    if cfg.push_to_hub:
        from hf_prefs.hub import push_run_to_hub

        if not cfg.hub_model_id:
            raise ValueError("hub_model_id: --push_to_hub needs --hub_model_id")
        summary["hub"] = push_run_to_hub(out, cfg.hub_model_id, reward_model_id=pa.push_reward_model_id, token=cfg.hub_token,
                                         private=cfg.hub_private_repo)
    return summary


def rouge_before_after(before: Sequence[str], after: Sequence[str], references: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{"before": {"rouge1": ..}, "after": {..}}``: :func:`hf_prefs.analysis.metrics.rouge` of rho's and pi's
    responses against the same references."""
    from hf_prefs.analysis.metrics import rouge

    return {"before": rouge(before, references), "after": rouge(after, references)}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fmt_gain(summary: dict[str, Any]) -> str:
    g = summary.get("known_reward_gain")
    if not g:
        return ""
    return f" (paired gain {g['mean']:+.3f} ± {g['se']:.3f} SE, win rate of pi over rho {g['win_rate']:.2f}, n={g['n']})"


def _truncate_id(cfg: PPOConfig, tokenizer: Any) -> int | None:
    from hf_prefs.labelers import truncate_token_id

    if cfg.truncate_token_id is not None:
        return cfg.truncate_token_id
    return truncate_token_id(tokenizer, cfg.truncate_token)


def main(task: str | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``recipes/<task>.py``: ``TrlParser((PipelineArguments, PPOConfig, ModelConfig))`` with
    ``--config x.yaml`` and command-line overrides."""
    from trl import ModelConfig, TrlParser

    parser = TrlParser((PipelineArguments, PPOConfig, ModelConfig))
    pa, cfg, model_args = parser.parse_args_and_config(args=argv)
    if task is not None:
        if pa.task not in (None, task):
            raise ValueError(f"task: this recipe runs {task!r}, got task={pa.task!r}")
        pa.task = task
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run_pipeline(pa, cfg, model_args)
