"""The paper's label-count study (Figures 2 and 3) at machine scale, for a task with a known reward (mock sentiment).

Runs, all evaluated by :func:`hf_prefs.analysis.evaluate.evaluate_policy` on the same held-out queries:

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

from hf_prefs.analysis.frontier import (
    FrontierPoint,
    frontier_reward_at_kl,
    optimal_frontier,
)

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
    name: str, reward: Any, pa: Any, cfg: Any, model_args: Any, base_model: str, rho: torch.nn.Module,
    tokenizer: Any, ppo_q: Any, eval_q: list[str], known: Any, eval_kw: dict[str, Any], output_dir: str,
) -> dict[str, Any]:
    """PPO (the pipeline's known-reward-tracking trainer) on ``reward``, then the held-out evaluation."""
    from transformers import AutoModelForCausalLM

    from hf_prefs.analysis.evaluate import evaluate_policy
    from hf_prefs.pipeline import _tracking_trainer_class, _write_metrics, model_dtype

    run_dir = os.path.join(output_dir, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    run_cfg = copy.deepcopy(cfg)
    run_cfg.output_dir = run_dir
    peft_config = None
    if model_args is not None and getattr(model_args, "use_peft", False):
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)
    torch.manual_seed(cfg.seed)
    policy = AutoModelForCausalLM.from_pretrained(base_model, dtype=model_dtype(model_args))
    trainer = _tracking_trainer_class()(
        model=policy, reward_model=reward, args=run_cfg, train_dataset=ppo_q.select_columns(["query"]),
        processing_class=tokenizer, ref_model=None if peft_config else rho, peft_config=peft_config,
    )
    trainer.known_reward = known
    trainer.train()
    _write_metrics(trainer.state.log_history, run_dir)
    pi = trainer.model.policy if hasattr(trainer.model, "policy") else trainer.model
    ev = evaluate_policy(pi, tokenizer, eval_q, ref_model=None if peft_config else rho, known_reward=known, **eval_kw)
    summary = {**ev.summary(), "ppo_updates": trainer.state.global_step}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(ev.to_dict(), f, indent=1)
    return summary


def _plot(rows: list[dict[str, Any]], frontier: list[FrontierPoint], rho_mean: float, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direct = next(r for r in rows if r["kind"] == "direct")
    rm_rows = [r for r in rows if r["kind"] == "rm"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
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
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
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
    plt.close(fig)


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

    from hf_prefs.analysis.evaluate import evaluate_policy
    from hf_prefs.pipeline import (
        _truncate_id,
        collect_labels,
        load_base,
        make_known_reward,
        split_queries,
        train_reward_model,
        validate_pipeline_config,
    )
    from hf_prefs.reward_model import score_texts

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

    base_model, tokenizer, rho = load_base(model_args)
    try:
        eval_q, label_q, ppo_q, _ = split_queries(pa, cfg, tokenizer)
    except ValueError as err:
        raise ValueError(f"label_counts: max N {counts[-1]} is too large: {err}") from None

    known = make_known_reward(pa.known_reward)
    eval_kw: dict[str, Any] = {
        "response_length": cfg.response_length, "temperature": cfg.temperature,
        "truncate_token_id": _truncate_id(cfg, tokenizer), "truncate_after": cfg.truncate_after,
        "penalty_reward_value": cfg.penalty_reward_value, "batch_size": pa.sampling_batch_size, "seed": cfg.seed + 2,
    }

    # ---- (c) frontier: M rho samples per held-out query, known reward of each truncated sample ----
    sample_rewards = np.array([
        evaluate_policy(rho, tokenizer, eval_q, known_reward=known, **{**eval_kw, "seed": cfg.seed + 100 + m}).known_rewards
        for m in range(frontier_samples)
    ]).T  # (Q, M)
    frontier = optimal_frontier(sample_rewards, list(betas), seed=cfg.seed)
    rho_mean = float(sample_rewards.mean())
    with open(os.path.join(output_dir, "frontier.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(frontier[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in frontier)

    # ---- (a) direct RL on the known reward ----
    common = {"pa": pa, "cfg": cfg, "model_args": model_args, "base_model": base_model, "rho": rho,
              "tokenizer": tokenizer, "ppo_q": ppo_q, "eval_q": eval_q, "known": known, "output_dir": output_dir}
    results = [{"kind": "direct", "N": 0, **_ppo_run("direct", lambda q, r: known(list(r)), eval_kw=eval_kw, **common)}]

    # ---- (b) RL on reward models from N labels (the first N of one labelled set) ----
    labels, _ = collect_labels(pa, cfg, rho, tokenizer, label_q)
    labels.to_json(os.path.join(output_dir, "labels.jsonl"))
    for n in counts:
        if n > len(labels):
            raise ValueError(f"label_counts: N={n} exceeds the {len(labels)} labels kept (untruncated samples dropped)")
        rm_dir = os.path.join(output_dir, "runs", f"rm_{n}")
        os.makedirs(rm_dir, exist_ok=True)
        rm, rm_metrics = train_reward_model(pa, cfg, labels.select(range(n)), rho, tokenizer, base_model, rm_dir)
        rm_kw = {**eval_kw, "reward_fn": lambda q, r, rm=rm: score_texts(rm, tokenizer, q, r)}
        res = _ppo_run(f"rm_{n}", rm, eval_kw=rm_kw, **common)
        results.append({"kind": "rm", "N": n, "rm_eval_accuracy": rm_metrics.get("eval_accuracy"), **res})

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
    with open(os.path.join(output_dir, "study.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(output_dir, "study.json"), "w") as f:
        json.dump({"rho_known_reward": rho_mean, "frontier_samples": frontier_samples, "runs": results,
                   "rows": rows, "task": pa.task, "base_model": base_model}, f, indent=1)
    _plot(rows, frontier, rho_mean, output_dir)
    return rows


def study_main(argv: Sequence[str] | None = None, task: str = "sentiment") -> list[dict[str, Any]]:
    """Entry point of ``recipes/study_sentiment.py``: TrlParser over pipeline, study, PPO and model arguments."""
    from trl import ModelConfig, TrlParser

    from hf_prefs.pipeline import PipelineArguments
    from hf_prefs.ppo_config import PPOConfig

    parser = TrlParser((PipelineArguments, StudyArguments, PPOConfig, ModelConfig))
    pa, sa, cfg, model_args = parser.parse_args_and_config(args=argv)
    pa.task = pa.task or task
    return run_study(pa, cfg, model_args, sa.label_counts, cfg.output_dir, frontier_samples=sa.frontier_samples)
