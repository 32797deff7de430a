"""The paper's label-count study (Figures 2 and 3) at machine scale, with seeds, error bars and a frontier read only
where it is trustworthy, for a task with a known reward (mock sentiment).

Runs, each made of the pipeline's stages and evaluated on the same held-out queries with the same sampling seed:

- ``direct``: PPO on the known reward itself;
- ``rm`` for each N in ``label_counts``: PPO on a reward model trained from the first N simulated best-of-K labels;

for every seed in ``seeds`` (a seed changes the labels, the reward model and PPO). Each run's gain over rho (known
reward after minus rho's, paired on the held-out queries) is compared with

    frac_frontier = gain / (R_frontier(KL_run) - R_rho)      the optimal KL-reward frontier at the run's KL
    frac_direct   = gain / gain_direct(same seed)            direct RL with the same seed

The frontier (:mod:`hf_prefs.core.frontier`) is estimated on the first ``frontier_queries`` held-out queries from
``frontier_samples`` samples of rho per query (drawn once; their rewards cached in ``rho_rewards.csv``), and read at
each run's KL with its effective sample size: ``frontier_ess_at_kl`` (mean over queries); ``frontier_qualified`` says
whether it is >= ``min_ess`` and the run's KL lies inside the frontier's grid (past it the read is clamped).
``frac_frontier`` is averaged over qualified runs only; its SE holds the run's gain error and the frontier's
(``frac_frontier_se``; across seeds the frontier's shared error is added in quadrature: :func:`.study_table.summarize`). The ESS at a given KL grows about in proportion to the samples per query, and a
frontier from few samples per query reads too low a reward at a given KL (its KL is bounded by log M), so the default
spends the samples on few queries: 10 x 2,048 (measured on the offline default: ESS >= 30 up to KL ~3, where 64 per
query give ESS ~3). With ``policy_samples`` > 0, each run's frontier pools rho's samples with that many samples of the
run's own policy per query, weighted by multiple importance sampling (balance heuristic; log pi of every rho sample is
computed, so it costs a pass over all of rho's samples per run). With ``policy_samples`` 0 and ``frontier_policy``
(``auto``: the direct-RL run of largest KL whose policy is saved; default ``none``), the frontier is estimated a second time from
``frontier_policy_samples`` samples of rho and as many of that policy per query, pooled by the balance heuristic
(:mod:`.pooled_frontier`, ``frontier_pooled.csv``); every run reads the estimate with the larger ESS at its KL
(``frontier_source``): rho's 2,048 samples near rho, the pooled ones where rho's samples run out.

Resumable: ``study.csv`` gets a row as soon as a run is done, and a run whose (run, seed, labels) row is already
there is skipped, so a long study can be finished across several invocations. Outputs in ``output_dir``:
``study.csv`` (one row per run), ``study_summary.csv`` (mean and standard error across seeds per point),
``frontier_rho.csv`` (the rho-only frontier), ``frontier_pooled.csv`` and ``frontier_pooled_samples.csv`` (the pooled
one and its samples' rewards and log-probabilities), ``kl_vs_reward.png`` (Fig. 3 style), ``reward_vs_labels.png``
(Fig. 2 style), ``runs/<run>/`` per run.

This module runs the study; its parts live beside it: :mod:`.rho_samples` (rho's samples, drawn once and cached),
:mod:`.study_table` (``study.csv``: columns, frontier reads, locking, summary), :mod:`.study_plots` (the figures),
:mod:`.pooled_frontier` (the pooled estimate) and :mod:`.study_files` (committed files name queries by digest).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import ModelConfig, TrlParser

from ..core.frontier import FrontierPoint, optimal_frontier
from ..core.rollout import RolloutSpec
from ..core.stats import mean_and_se
from ..models.loading import load_reward_model
from ..pipeline import (
    Base,
    PipelineArguments,
    collect_labels,
    evaluate_policy,
    load_base,
    make_ppo_trainer,
    resolve_cpu_precision,
    run_precision,
    split_queries,
    train_policy,
    train_reward_model,
    trained_policy,
    validate_pipeline_config,
    write_metrics,
)
from ..tasks.known_rewards import make_known_reward
from ..trainers.ppo_checkpoints import last_complete_checkpoint
from ..trainers.ppo_config import PPOConfig
from .pooled_frontier import (
    POOLED_FRONTIER,
    POOLED_SAMPLES,
    draw_pooled_samples,
    load_saved_policy,
    policy_digest,
    pooled_frontier,
    read_pooled_samples,
    write_pooled_samples,
)
from .rho_samples import (
    FRONTIER_SAMPLING_ROWS,
    RHO_EVAL_CACHE,
    RhoSamples,
    cached_rho_eval,
    draw_rho_samples,
    known_reward_name,
    rho_cache_key,
    run_frontier,
    same_key,
)
from .study_files import read_label_file, write_label_file
from .study_plots import plot_study
from .study_table import (
    STUDY_FIELDS,
    append_row,
    frontier_read,
    gain_fraction,
    read_done,
    reread_rows,
    summarize,
    write_frontier,
)

__all__ = ["DEFAULT_BETAS", "STUDY_FIELDS", "StudyArguments", "frontier_read", "gain_fraction", "run_study", "study_main",
           "summarize"]

logger = logging.getLogger(__name__)

#: beta grid of the frontier; inf gives the KL = 0 point (rho itself). Dense where runs land (KL ~1-6): between grid
#: points the frontier is read by interpolation, and a chord under the concave curve reads its reward too low.
DEFAULT_BETAS: tuple[float, ...] = (
    math.inf, 100.0, 30.0, 10.0, 5.0, 3.0, 2.0, 1.5, 1.25, 1.0, 0.85, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.275, 0.25,
    0.225, 0.2, 0.175, 0.15, 0.125, 0.1, 0.07, 0.05,
)


@dataclass
class StudyArguments:
    """What the study recipe adds to the pipeline's arguments."""

    label_counts: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "N values (labels per RM)."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Seeds per point (labels, RM, PPO)."})
    frontier_queries: int = field(default=10, metadata={"help": "Held-out queries the frontier is estimated on."})
    frontier_samples: int = field(default=2048, metadata={"help": "rho samples per frontier query (drawn once)."})
    policy_samples: int = field(default=0, metadata={"help": "Samples of each run's policy per frontier query pooled with "
                                                              "rho's (0: every run reads rho's frontier)."})
    frontier_policy: str = field(default="none", metadata={"help": "Run whose saved policy (runs/<run>/policy) is pooled "
        "with rho into a second frontier estimate that reaches higher KL (frontier_pooled.csv); each run reads the "
        "estimate with the larger ESS at its KL. 'auto': the direct-RL run of largest KL with a saved policy (or "
        "cached samples); 'none' (default): rho's alone. Unused with policy_samples > 0."})
    frontier_policy_samples: int = field(default=256, metadata={"help": "Samples of rho and of frontier_policy each, "
                                                                        "per frontier query, for the pooled estimate."})
    min_ess: float = field(default=30.0, metadata={"help": "Read the frontier only where its effective sample size is this."})
    label_chunk: int = field(default=512, metadata={"help": "Label queries per chunk; each chunk's labels are written "
                                                             "when done, so an interrupted study resumes after it."})


# ---------------------------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class StudyContext:
    """What every run of the study shares."""

    pa: PipelineArguments
    cfg: PPOConfig
    model_args: Any
    sa: StudyArguments
    base: Base
    spec: RolloutSpec
    eval_q: list[str]
    ppo_q: Any
    known: Any
    rho_eval: list[float]
    rho_samples: RhoSamples
    rho_frontier: list[FrontierPoint]
    betas: Sequence[float]
    output_dir: str


def _ppo_run(ctx: StudyContext, name: str, reward: Any, seed: int) -> dict[str, Any]:
    """PPO (the pipeline's known-reward-tracking trainer) with ``seed`` on ``reward``, its held-out evaluation (paired
    with rho's) and its frontier; the trained policy is saved in ``runs/<name>/policy``. A checkpoint is kept after every update (only the last), and a run interrupted
    mid-way continues from it exactly (the trainer's resume: weights, optimizer, beta, generators)."""
    run_dir = os.path.join(ctx.output_dir, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    cfg = replace(ctx.cfg, seed=seed, output_dir=run_dir, save_strategy="steps", save_steps=1, save_total_limit=1)
    torch.manual_seed(seed)
    trainer = make_ppo_trainer(cfg, ctx.model_args, ctx.base, reward, ctx.ppo_q, known_reward=ctx.known, output_dir=run_dir)
    train_policy(trainer, resume_from_checkpoint=last_complete_checkpoint(run_dir))
    write_metrics(trainer.state.log_history, run_dir)
    ref = None if trainer.is_peft_model else ctx.base.rho
    policy = trained_policy(trainer)
    # kept after the run's checkpoints are dropped (a LoRA policy's adapter: megabytes), so that its frontier can be
    # estimated later with samples of the policy itself (policy_samples); an extra, never worth the run's row
    try:
        policy.save_pretrained(os.path.join(run_dir, "policy"))
    except Exception as err:  # noqa: BLE001
        logger.warning("%s: the trained policy could not be saved (%s); the run's row is written all the same", name, err)
    ev = evaluate_policy(policy, ctx.base.tokenizer, ctx.eval_q, ctx.spec, ref_model=ref, known_reward=ctx.known,
                         batch_size=ctx.pa.evaluation_batch_size(), seed=ctx.cfg.seed + 2)
    gain, gain_se = mean_and_se(torch.tensor(ev.known_rewards, dtype=torch.float64) - torch.tensor(ctx.rho_eval, dtype=torch.float64))
    kl = float(np.mean(ev.kl))
    if ctx.sa.policy_samples > 0:
        frontier, source = run_frontier(policy, ctx.base, ctx.spec, ctx.rho_samples, ctx.sa.policy_samples, ctx.known,
                                        seed + 7, ctx.betas, ref), f"rho+{name}"
    else:  # rho's frontier: the same for every run (read again at the study's end with the pooled one, if any)
        frontier, source = ctx.rho_frontier, "rho"
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({**ev.to_dict(), "frontier": [asdict(p) for p in frontier]}, f, indent=1)
    return {"known_reward": float(np.mean(ev.known_rewards)), "kl": kl, "gain": gain, "gain_se": gain_se,
            **frontier_read({source: frontier}, kl, gain, gain_se, ctx.sa.min_ess), "ppo_updates": trainer.state.global_step,
            "precision": _precision_label(run_precision(trainer, cfg))}


def _precision_label(precision: dict[str, Any]) -> str:
    """``study.csv``'s precision of a run: the policy's dtype, ``+bf16 autocast`` when on (a long study may be
    finished on machines whose CPUs differ: the bf16 fallback runs float32 where bf16 matmuls are slow)."""
    return precision["policy_dtype"] + ("+bf16 autocast" if precision["bf16"] else "")


def _seed_runs(ctx: StudyContext, seed: int, done: dict[tuple[str, int, int], dict[str, Any]], label_q: list[str]) -> None:
    """The direct-RL run and the reward-model runs of one seed that ``study.csv`` does not have yet."""
    rho_mean = float(np.mean(ctx.rho_eval))
    if ("direct", seed, 0) not in done:
        result = _ppo_run(ctx, f"direct_s{seed}", lambda q, r: ctx.known(list(r)), seed)
        append_row(ctx.output_dir, {"run": "direct", "seed": seed, "labels": 0, **result, "frac_direct": 1.0, "rho_known_reward": rho_mean}, done)
        _drop_checkpoints(ctx, f"direct_s{seed}")
    direct_gain = float(done[("direct", seed, 0)]["gain"])
    todo = [n for n in ctx.sa.label_counts if ("rm", seed, n) not in done]
    if not todo:
        return
    cfg = replace(ctx.cfg, seed=seed)
    for n in todo:  # ascending: each run's labels are collected just before it (the first n of the seed's pool)
        labels = _seed_labels(ctx, cfg, label_q, need=n)
        if n > len(labels):
            raise ValueError(f"label_counts: N={n} exceeds the {len(labels)} labels kept")
        rm_dir = os.path.join(ctx.output_dir, "runs", f"rm{n}_s{seed}")
        rm, rm_metrics = _reward_model(ctx, cfg, labels.select(range(n)), rm_dir)
        result = _ppo_run(ctx, f"rm{n}_s{seed}", rm, seed)
        append_row(ctx.output_dir, {"run": "rm", "seed": seed, "labels": n, **result, "frac_direct": gain_fraction(result["gain"], direct_gain),
                      "rho_known_reward": rho_mean, "rm_eval_accuracy": rm_metrics.get("eval_accuracy")}, done)
        _drop_checkpoints(ctx, f"rm{n}_s{seed}")


def _drop_checkpoints(ctx: StudyContext, name: str) -> None:
    """A finished run's PPO checkpoints (its row is in ``study.csv``; they only served a resume)."""
    run_dir = os.path.join(ctx.output_dir, "runs", name)
    for entry in os.listdir(run_dir):
        if entry.startswith(PREFIX_CHECKPOINT_DIR + "-"):
            shutil.rmtree(os.path.join(run_dir, entry))


def _seed_labels(ctx: StudyContext, cfg: PPOConfig, label_q: list[str], need: int | None = None) -> Dataset:
    """The seed's simulated labels, collected in chunks of ``label_chunk`` queries, each written to
    ``labels_s<seed>.part<c>.jsonl.gz`` when done (collecting thousands takes tens of minutes on a CPU, so an
    interrupted study loses at most one chunk; the files are small enough to commit, so a study carried on on another
    machine reads them back; they name each query by ``query_index`` and digest, not text: :mod:`.study_files`);
    chunk ``c`` samples and labels with seed ``seed + 100_003 * c``, so a resumed collection gives the labels an
    uninterrupted one does. ``query_index`` counts over all label queries.

    With ``need``, chunks are collected only until there are ``need`` labels: a run on the first N labels can start
    before the pool for the largest N is complete (its first N labels are the same either way). Once every chunk is
    in, the parts are merged into ``labels_s<seed>.jsonl.gz`` and removed."""
    path = os.path.join(ctx.output_dir, f"labels_s{cfg.seed}.jsonl.gz")
    if os.path.exists(path):
        labels = read_label_file(path, label_q)
        if len(labels) >= max(ctx.sa.label_counts):
            return labels
    size = max(1, ctx.sa.label_chunk)

    def part_path(c: int) -> str:
        return os.path.join(ctx.output_dir, f"labels_s{cfg.seed}.part{c:03d}.jsonl.gz")

    parts: list[Dataset] = []
    starts = range(0, len(label_q), size)
    for c, start in enumerate(starts):
        if need is not None and sum(len(p) for p in parts) >= need:
            return concatenate_datasets(parts)
        part = part_path(c)
        if os.path.exists(part):
            parts.append(_read_part(part, label_q, start, size))
            continue
        chunk, _ = collect_labels(ctx.pa, replace(cfg, seed=cfg.seed + 100_003 * c), ctx.base.rho, ctx.base.tokenizer,
                                  label_q[start : start + size], ctx.spec)
        chunk = chunk.map(lambda row: {"query_index": row["query_index"] + start})
        write_label_file(chunk, part)
        parts.append(chunk)
    labels = concatenate_datasets(parts)
    write_label_file(labels, path)
    for c in range(len(parts)):
        os.remove(part_path(c))
    return labels


def _read_part(path: str, label_q: list[str], start: int, size: int) -> Dataset:
    """A label part file, which must hold only queries of its chunk ``[start, start + size)`` (a study resumed with
    another ``label_chunk`` would otherwise take a part of other chunks for this one: labels twice, or none)."""
    part = read_label_file(path, label_q)
    outside = [i for i in part["query_index"] if not start <= i < start + size]
    if outside:
        raise ValueError(f"{path}: query_index {outside[0]} lies outside its chunk [{start}, {start + size}): it was "
                         f"written with another label_chunk; resume with the label_chunk it was written with")
    return part


def _reward_model(ctx: StudyContext, cfg: PPOConfig, labels: Dataset, rm_dir: str) -> tuple[Any, dict[str, Any]]:
    """The reward model on ``labels``: trained (continued from its newest training checkpoint when an interrupted
    study left one), or read back from ``rm_dir`` when an interrupted study finished it (``rm_metrics.jsonl`` is
    written after the model, so its presence means both are whole)."""
    log = os.path.join(rm_dir, "rm_metrics.jsonl")
    if os.path.exists(log) and os.path.isdir(os.path.join(rm_dir, "reward_model")):
        model, _ = load_reward_model(os.path.join(rm_dir, "reward_model"))
        model.requires_grad_(False)  # scoring only; frozen, its bottom layers share rho's tensors as a trained one's do
        with open(log) as f:
            history = [json.loads(line) for line in f if line.strip()]
        return model, {k: v for entry in history for k, v in entry.items() if isinstance(v, (int, float))}
    return train_reward_model(ctx.pa, cfg, labels, ctx.base.rho, ctx.base.tokenizer, ctx.base.name, rm_dir, spec=ctx.spec,
                              resumable=True)


# ---------------------------------------------------------------------------------------------------------------------
# rho's frontier pooled with a trained policy's samples (one estimate for every run, beside rho's own)
# ---------------------------------------------------------------------------------------------------------------------
def _frontier_policy_run(sa: StudyArguments, output_dir: str) -> str | None:
    """The run whose policy the pooled frontier uses: ``frontier_policy``, or for ``auto`` the direct-RL row of largest
    KL in ``study.csv`` whose policy is saved or whose samples are cached (a checkout has the cache, not the policy);
    None for ``none``, with ``policy_samples`` > 0 (each run's own frontier) or when there is none."""
    if sa.frontier_policy == "none" or sa.policy_samples > 0:
        return None
    if sa.frontier_policy != "auto":
        return sa.frontier_policy
    cache = os.path.join(output_dir, POOLED_SAMPLES)
    cached = read_pooled_samples(cache)[0].get("run") if os.path.exists(cache) else None
    kls = {f"direct_s{r['seed']}": float(r["kl"]) for r in read_done(output_dir).values()
           if r["run"] == "direct" and r.get("kl") not in (None, "")}
    usable = [n for n in kls if n == cached or os.path.isdir(os.path.join(output_dir, "runs", n, "policy"))]
    return max(usable, key=kls.__getitem__, default=None)


def _pooled_frontier(ctx: StudyContext, run: str) -> list[FrontierPoint] | None:
    """rho's frontier pooled with ``run``'s saved policy (:mod:`.pooled_frontier`), written to ``frontier_pooled.csv``.
    The samples are drawn once and cached (``frontier_pooled_samples.csv``) under what they depend on: rho's key, the
    counts, the seed, the run and its policy's weights (a cache without the policy beside it is used as it is). None,
    with a warning, when there is neither the policy nor a cache of it."""
    n, seed = ctx.sa.frontier_policy_samples, ctx.cfg.seed + 400
    policy_dir = os.path.join(ctx.output_dir, "runs", run, "policy")
    path = os.path.join(ctx.output_dir, POOLED_SAMPLES)
    stored = read_pooled_samples(path) if os.path.exists(path) else None
    have_policy = os.path.isdir(policy_dir)
    digest = policy_digest(policy_dir) if have_policy else (stored[0].get("policy_sha256") if stored else None)
    key = rho_cache_key(ctx.base, ctx.spec, ctx.rho_samples.queries, known_reward_name(ctx.pa), m=n, p=n, seed=seed,
                         run=run, policy_sha256=digest)
    if stored is not None and same_key(stored[0], key):
        samples = stored[1]
    elif have_policy:
        policy, ref = load_saved_policy(ctx.base.rho, policy_dir)
        samples = draw_pooled_samples(policy, ref, ctx.base.rho, ctx.base.tokenizer, ctx.rho_samples.queries, ctx.spec,
                                      n, n, ctx.known, seed, FRONTIER_SAMPLING_ROWS)
        write_pooled_samples(path, key, samples)
    else:
        logger.warning("frontier_policy %s: no saved policy (%s) and no cached samples of it: rho's frontier alone",
                       run, policy_dir)
        return None
    frontier = pooled_frontier(samples, ctx.betas, ctx.cfg.seed)
    write_frontier(os.path.join(ctx.output_dir, POOLED_FRONTIER), frontier)
    return frontier


# ---------------------------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------------------------
def _context(pa: PipelineArguments, cfg: PPOConfig, model_args: Any, sa: StudyArguments, output_dir: str,
             betas: Sequence[float]) -> tuple[StudyContext, list[str]]:
    base = load_base(model_args)
    try:
        eval_q, label_q, ppo_q, _ = split_queries(pa, cfg, base.tokenizer)
    except ValueError as err:
        raise ValueError(f"label_counts: max N {max(sa.label_counts)} is too large: {err}") from None
    known = make_known_reward(pa.known_reward, pa.known_reward_positive_label)
    spec = RolloutSpec.from_config(cfg, base.tokenizer)
    known_name = known_reward_name(pa)
    rho_eval = cached_rho_eval(base, spec, eval_q, known, pa.evaluation_batch_size(), cfg.seed + 2,
                               os.path.join(output_dir, RHO_EVAL_CACHE), known_name)
    rho_samples = draw_rho_samples(base, spec, eval_q[: sa.frontier_queries], sa.frontier_samples, known, cfg.seed + 100,
                                   with_logp=sa.policy_samples > 0, cache_dir=output_dir, known_name=known_name)
    rho_frontier = optimal_frontier(rho_samples.reward_matrix(), list(betas), n_bootstrap=100, seed=cfg.seed,
                                    resample_queries=True)
    write_frontier(os.path.join(output_dir, "frontier_rho.csv"), rho_frontier)
    ctx = StudyContext(pa, cfg, model_args, sa, base, spec, eval_q, ppo_q, known, rho_eval, rho_samples,
                       rho_frontier, betas, output_dir)
    return ctx, list(label_q)


def run_study(
    pa: PipelineArguments, cfg: PPOConfig, model_args: Any, sa: StudyArguments, output_dir: str,
    betas: Sequence[float] = DEFAULT_BETAS,
) -> list[dict[str, Any]]:
    """Run what ``study.csv`` lacks of direct RL and RL on an RM per N in ``label_counts``, for every seed; write the
    summary and the plots; return the summary rows (mean and SE per point). ``study.csv`` is read again before each
    seed, so a second process given other ``seeds`` may work in the same ``output_dir`` (rows are appended whole); two
    processes must not work on the same seed (nothing locks a run)."""
    counts = sorted(int(n) for n in sa.label_counts)
    if not counts or counts[0] < 2:
        raise ValueError(f"label_counts: need N >= 2 labels per run, got {list(sa.label_counts)}")
    if not sa.seeds:
        raise ValueError("seeds: give at least one seed")
    if pa.known_reward in (None, "", "none"):
        raise ValueError("known_reward: the study needs a known reward (direct RL, simulated labels, frontier)")
    if min(sa.frontier_queries, sa.frontier_samples) < 1 or sa.policy_samples < 0:
        raise ValueError("frontier_queries and frontier_samples must be >= 1, policy_samples >= 0")
    pa = replace(pa, label_source="simulated", label_mode="offline", num_label_queries=counts[-1])
    sa = replace(sa, label_counts=counts)
    validate_pipeline_config(pa, cfg, model_args)
    resolve_cpu_precision(pa, cfg, model_args)  # float32 on a CPU without bf16 matmul units (cpu_bf16_fallback)
    os.makedirs(output_dir, exist_ok=True)
    done = read_done(output_dir)
    todo = [s for s in sa.seeds if any(k not in done for k in [("direct", s, 0)] + [("rm", s, n) for n in counts])]
    # also for a finished study: rho's frontier is estimated (from its cached samples) with today's frontier settings,
    # e.g. a larger --frontier_samples, and every row is read at it below
    torch.manual_seed(cfg.seed)
    ctx, label_q = _context(pa, cfg, model_args, sa, output_dir, betas)
    for seed in todo:  # rows another study process wrote since (one on other --seeds) are skipped, not re-run
        done.update(read_done(output_dir))
        _seed_runs(ctx, seed, done, label_q)
    frontier_files = None if sa.policy_samples > 0 else {"rho": "frontier_rho.csv"}
    pool_run = _frontier_policy_run(sa, output_dir)
    if pool_run is not None and _pooled_frontier(ctx, pool_run) is not None:
        frontier_files[f"rho+{pool_run}"] = POOLED_FRONTIER  # type: ignore[index]
    reread_rows(output_dir, sa.min_ess, frontier_files)
    # every seed in study.csv, not only this process's (a second process may have run other seeds)
    rows = [r for k, r in read_done(output_dir).items() if k[0] == "direct" or k[2] in counts]
    summary = summarize(rows)
    with open(os.path.join(output_dir, "study_summary.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    plot_study(summary, rows, output_dir, pooled=next((name for name in frontier_files or {} if name != "rho"), None),
               min_ess=sa.min_ess, rho_rewards=ctx.rho_samples.reward_matrix())  # what frontier_rho.csv is made of
    return summary


def study_main(argv: Sequence[str] | None = None, task: str = "sentiment") -> list[dict[str, Any]]:
    """Entry point of ``recipes/study_sentiment.py``: TrlParser over pipeline, study, PPO and model arguments."""
    parser = TrlParser((PipelineArguments, StudyArguments, PPOConfig, ModelConfig))
    pa, sa, cfg, model_args = parser.parse_args_and_config(args=argv)
    pa.task = pa.task or task
    return run_study(pa, cfg, model_args, sa, cfg.output_dir)
