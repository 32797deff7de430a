"""The paper's label-count study (Figures 2 and 3) at machine scale, for a task with a known reward (mock sentiment).

Runs, all evaluated by :func:`hf_prefs.pipeline.evaluate_policy` on the same held-out queries, each made of the
pipeline's stages (the recipes' labels, reward model and PPO):

- ``direct``: PPO on the known reward itself (r = r_s of the truncated response);
- ``rm`` for each N in ``label_counts``: PPO on a reward model trained from the first N simulated best-of-K labels;
- the optimal frontier of the known reward from M samples of rho per held-out query
  (:func:`hf_prefs.analysis.frontier.optimal_frontier` over a beta grid that includes beta = inf, i.e. KL = 0).

With R_rho the mean known reward of the rho samples (the frontier at KL 0), each run's fractions are of the gain
over rho:

    frac_of_frontier  = (R_run - R_rho) / (R_frontier(KL_run) - R_rho)
    frac_of_direct_rl = (R_run - R_rho) / (R_direct - R_rho)

(NaN when the denominator is 0, e.g. a run whose one-sample KL estimate is <= 0 sits at the frontier's KL-0
point). ``beyond_frontier_kl`` marks runs whose KL exceeds the largest KL the frontier reaches (at most log M with M
samples per query); their frontier reward is read at the frontier's end, so their fraction is an upper bound.
Outputs in ``output_dir``: ``study.csv``, ``frontier.csv``, ``study.json``, ``kl_vs_reward.png`` (Fig. 3 style), ``reward_vs_labels.png`` (Fig. 2 style) and ``runs/<name>/`` per run.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from trl import ModelConfig, TrlParser

from ..core.frontier import FrontierPoint, frontier_reward_at_kl, optimal_frontier
from ..core.rollout import RolloutSpec
from ..models.reward_model import score_texts
from ..pipeline import (
    Base,
    PipelineArguments,
    collect_labels,
    evaluate_policy,
    load_base,
    make_ppo_trainer,
    split_queries,
    train_policy,
    train_reward_model,
    trained_policy,
    validate_pipeline_config,
    write_metrics,
)
from ..tasks.known_rewards import make_known_reward
from ..trainers.ppo_config import PPOConfig

__all__ = ["DEFAULT_BETAS", "StudyArguments", "gain_fraction", "run_study", "study_main"]

#: beta grid of the frontier; inf gives the KL = 0 point (rho itself).
DEFAULT_BETAS: tuple[float, ...] = (math.inf, 100.0, 30.0, 10.0, 5.0, 3.0, 2.0, 1.5, 1.0, 0.7, 0.5, 0.3, 0.2, 0.1)

STUDY_FIELDS = ["kind", "N", "known_reward", "kl", "frontier_reward_at_kl", "frac_of_frontier", "frac_of_direct_rl",
                "beyond_frontier_kl"]


@dataclass
class StudyArguments:
    """What the study recipe adds to the pipeline's arguments."""

    label_counts: list[int] = field(default_factory=lambda: [64, 128, 256], metadata={"help": "N values (labels per RM)."})
    frontier_samples: int = field(default=16, metadata={"help": "rho samples per held-out query for the frontier."})


def gain_fraction(reward: float, reference: float, baseline: float) -> float:
    """(reward - baseline) / (reference - baseline); NaN when reference == baseline."""
    denom = reference - baseline
    return float((reward - baseline) / denom) if denom != 0 else float("nan")


def _ppo_run(
    name: str, reward: Any, cfg: Any, model_args: Any, base: Base, ppo_q: Any, eval_q: list[str], known: Any,
    eval_kw: dict[str, Any], output_dir: str,
) -> dict[str, Any]:
    """PPO (the pipeline's known-reward-tracking trainer) on ``reward``, then the held-out evaluation."""
    run_dir = os.path.join(output_dir, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)
    trainer = make_ppo_trainer(cfg, model_args, base, reward, ppo_q, known_reward=known, output_dir=run_dir)
    train_policy(trainer)
    write_metrics(trainer.state.log_history, run_dir)
    ref = None if trainer.is_peft_model else base.rho
    ev = evaluate_policy(trained_policy(trainer), base.tokenizer, eval_q, ref_model=ref, known_reward=known, **eval_kw)
    summary = {**ev.summary(), "ppo_updates": trainer.state.global_step}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(ev.to_dict(), f, indent=1)
    return summary


def _plot(rows: list[dict[str, Any]], frontier: list[FrontierPoint], rho_mean: float, out: str) -> None:
    direct = next(r for r in rows if r["kind"] == "direct")
    rm_rows = [r for r in rows if r["kind"] == "rm"]
    fig = Figure(figsize=(6, 4.2))  # no pyplot: the caller's matplotlib backend is left alone
    ax = fig.subplots()
    ax.plot([p.kl for p in frontier], [p.reward for p in frontier], "-", color="black", label="optimal frontier (rho samples)")
    ax.scatter([direct["kl"]], [direct["known_reward"]], s=70, marker="*", color="tab:red", zorder=5, label="direct RL")
    for r in rm_rows:
        ax.scatter([r["kl"]], [r["known_reward"]], s=40, zorder=5, label=f"RM, N={r['N']}")
    ax.set_xlabel("KL(pi, rho) [nats]")
    ax.set_ylabel("known reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("KL vs known reward")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "kl_vs_reward.png"), dpi=110)

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.plot([r["N"] for r in rm_rows], [r["known_reward"] for r in rm_rows], "-o", color="tab:blue", label="RL on reward model")
    ax.axhline(direct["known_reward"], color="tab:red", ls="--", label="direct RL on the known reward")
    ax.axhline(rho_mean, color="tab:gray", ls=":", label="rho")
    ax.set_xscale("log")
    ax.set_xticks([r["N"] for r in rm_rows], [str(r["N"]) for r in rm_rows])
    ax.minorticks_off()
    ax.set_xlabel("labels N")
    ax.set_ylabel("known reward (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Known reward vs number of labels")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "reward_vs_labels.png"), dpi=110)


def _frontier(
    rho: torch.nn.Module, tokenizer: Any, eval_q: list[str], known: Any, eval_kw: dict[str, Any], samples: int,
    betas: Sequence[float], seed: int, output_dir: str,
) -> tuple[list[FrontierPoint], float]:
    """The optimal frontier from ``samples`` rho samples per held-out query (``frontier.csv``) and rho's mean."""
    sample_rewards = np.array([
        evaluate_policy(rho, tokenizer, eval_q, known_reward=known, **{**eval_kw, "seed": seed + 100 + m}).known_rewards
        for m in range(samples)
    ]).T  # (Q, M)
    frontier = optimal_frontier(sample_rewards, list(betas), seed=seed)
    with open(os.path.join(output_dir, "frontier.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(frontier[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in frontier)
    return frontier, float(sample_rewards.mean())


def _study_rows(results: list[dict[str, Any]], frontier: list[FrontierPoint], rho_mean: float) -> list[dict[str, Any]]:
    """One row per run: its fraction of the frontier's gain at its KL and of direct RL's gain."""
    direct_reward = results[0]["known_reward"]
    # With M samples per query the frontier's KL cannot exceed log M; past its largest KL the frontier is read at that
    # end (an underestimate), flagged so that frac_of_frontier is not over-read.
    frontier_kl_max = max(p.kl for p in frontier)
    rows = []
    for r in results:
        f_at = frontier_reward_at_kl(frontier, max(r["kl"], 0.0))
        rows.append({
            "kind": r["kind"], "N": r["N"], "known_reward": r["known_reward"], "kl": r["kl"],
            "frontier_reward_at_kl": f_at,
            "frac_of_frontier": gain_fraction(r["known_reward"], f_at, rho_mean),
            "frac_of_direct_rl": gain_fraction(r["known_reward"], direct_reward, rho_mean),
            "beyond_frontier_kl": bool(r["kl"] > frontier_kl_max),
        })
    return rows


def run_study(
    pa: Any,
    cfg: Any,
    model_args: Any,
    label_counts: Sequence[int],
    output_dir: str,
    frontier_samples: int = 16,
    betas: Sequence[float] = DEFAULT_BETAS,
) -> list[dict[str, Any]]:
    """Run direct RL, RL on an RM per N in ``label_counts`` and the frontier; write the study folder; return the rows."""
    counts = sorted(int(n) for n in label_counts)
    if not counts or counts[0] < 2:
        raise ValueError(f"label_counts: need N >= 2 labels per run, got {list(label_counts)}")
    if pa.known_reward in (None, "", "none"):
        raise ValueError("known_reward: the study needs a known reward (direct RL, simulated labels, frontier)")
    if frontier_samples < 1:
        raise ValueError(f"frontier_samples: must be >= 1, got {frontier_samples}")
    pa = copy.deepcopy(pa)
    pa.label_source, pa.label_mode, pa.num_label_queries = "simulated", "offline", counts[-1]
    validate_pipeline_config(pa, cfg, model_args)
    os.makedirs(output_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)

    base = load_base(model_args)
    rho, tokenizer = base.rho, base.tokenizer
    try:
        eval_q, label_q, ppo_q, _ = split_queries(pa, cfg, tokenizer)
    except ValueError as err:
        raise ValueError(f"label_counts: max N {counts[-1]} is too large: {err}") from None

    known = make_known_reward(pa.known_reward)
    spec = RolloutSpec.from_config(cfg, tokenizer)
    eval_kw: dict[str, Any] = {"spec": spec, "batch_size": pa.sampling_batch_size, "seed": cfg.seed + 2}

    # ---- (c) frontier: M rho samples per held-out query, known reward of each cut sample ----
    frontier, rho_mean = _frontier(rho, tokenizer, eval_q, known, eval_kw, frontier_samples, betas, cfg.seed, output_dir)

    # ---- (a) direct RL on the known reward ----
    common = {"cfg": cfg, "model_args": model_args, "base": base, "ppo_q": ppo_q, "eval_q": eval_q, "known": known,
              "output_dir": output_dir}
    results = [{"kind": "direct", "N": 0, **_ppo_run("direct", lambda q, r: known(list(r)), eval_kw=eval_kw, **common)}]

    # ---- (b) RL on reward models from N labels (the first N of one labelled set) ----
    labels, _ = collect_labels(pa, cfg, rho, tokenizer, label_q, spec)
    labels.to_json(os.path.join(output_dir, "labels.jsonl"))
    for n in counts:
        if n > len(labels):
            raise ValueError(f"label_counts: N={n} exceeds the {len(labels)} labels kept (untruncated samples dropped)")
        rm_dir = os.path.join(output_dir, "runs", f"rm_{n}")
        os.makedirs(rm_dir, exist_ok=True)
        rm, rm_metrics = train_reward_model(pa, cfg, labels.select(range(n)), rho, tokenizer, base.name, rm_dir, spec=spec)
        rm_kw = {**eval_kw, "reward_fn": lambda q, r, rm=rm: score_texts(rm, tokenizer, q, r)}
        res = _ppo_run(f"rm_{n}", rm, eval_kw=rm_kw, **common)
        results.append({"kind": "rm", "N": n, "rm_eval_accuracy": rm_metrics.get("eval_accuracy"), **res})

    rows = _study_rows(results, frontier, rho_mean)
    with open(os.path.join(output_dir, "study.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(output_dir, "study.json"), "w") as f:
        json.dump({"rho_known_reward": rho_mean, "frontier_samples": frontier_samples, "runs": results,
                   "rows": rows, "task": pa.task, "base_model": base.name}, f, indent=1)
    _plot(rows, frontier, rho_mean, output_dir)
    return rows


def study_main(argv: Sequence[str] | None = None, task: str = "sentiment") -> list[dict[str, Any]]:
    """Entry point of ``recipes/study_sentiment.py``: TrlParser over pipeline, study, PPO and model arguments."""
    parser = TrlParser((PipelineArguments, StudyArguments, PPOConfig, ModelConfig))
    pa, sa, cfg, model_args = parser.parse_args_and_config(args=argv)
    pa.task = pa.task or task
    return run_study(pa, cfg, model_args, sa.label_counts, cfg.output_dir, frontier_samples=sa.frontier_samples)
