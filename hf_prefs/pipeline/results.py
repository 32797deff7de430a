"""The last stages: the results folder (metrics, plot, samples, evaluations, summary), the trained models with their
model cards, and the push to the Hub."""

from __future__ import annotations

import csv
import json
import logging
import os
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from accelerate import PartialState
from accelerate.utils import is_peft_model
from datasets import Dataset
from matplotlib.figure import Figure
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..core.stats import paired_difference, win_rate
from ..hub import push_run_to_hub
from ..model_cards import render_policy_card, render_reward_model_card, write_model_card
from ..memory import release_free_memory
from ..models.generation import embedding_rows
from ..models.reward_model import get_reward_normalization
from ..tasks.rouge import rouge
from ..trainers.ppo_trainer import PPOTrainer
from .arguments import PipelineArguments
from .evaluate import PolicyEvaluation

logger = logging.getLogger(__name__)

__all__ = [
    "clear_stage_folder",
    "StageTimer",
    "peak_rss_gb",
    "write_metrics",
    "MetricsFileCallback",
    "plot_kl_vs_reward",
    "samples_markdown",
    "rouge_before_after",
    "write_results",
    "push_results",
    "run_precision",
    "SUMMARY_FILE",
]

#: the run folder's summary (what :func:`write_results` writes last)
SUMMARY_FILE = "summary.json"


def run_precision(trainer: Any, cfg: Any) -> dict[str, Any]:
    """What a PPO run computed in, read after :func:`~hf_prefs.pipeline.arguments.resolve_cpu_precision` (what ran,
    not what was asked): ``bf16`` autocast on or off and the policy's parameter dtype."""
    return {"bf16": bool(cfg.bf16), "policy_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch.")}


class StageTimer:
    """Wall seconds and memory per stage: ``with timer("labels"): ...`` records ``timer.seconds["labels_s"]`` and
    the process's peak resident memory so far, ``timer.seconds["labels_peak_rss_gb"]`` (a running maximum: the
    first stage whose value jumps is the one that set it); then frees what the stage left
    (:func:`hf_prefs.memory.release_free_memory`)."""

    def __init__(self) -> None:
        self.start = time.time()
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def __call__(self, name: str) -> StageTimer:
        self._name = name
        return self

    def __enter__(self) -> StageTimer:
        self._t0 = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds[f"{self._name}_s"] = time.time() - self._t0
        self.seconds[f"{self._name}_peak_rss_gb"] = peak_rss_gb()
        release_free_memory()  # the next stage starts from what is live

    def total(self) -> dict[str, float]:
        return {**self.seconds, "total_s": time.time() - self.start, "peak_rss_gb": peak_rss_gb()}


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GiB (``getrusage``; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


#: one row per logged PPO update, in the run folder (``metrics.csv`` beside it at the end)
METRICS_FILE = "metrics.jsonl"


def update_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The log history's PPO update rows (those with ``objective/kl``; not the trainer's own end-of-train row)."""
    return [log for log in log_history if "objective/kl" in log]


def _write_rows(path: str, rows: list[dict[str, Any]], mode: str = "w") -> None:
    """``rows`` as JSON lines into ``path`` (``mode`` "a" appends)."""
    with open(path, mode) as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def write_metrics(log_history: list[dict[str, Any]], output_dir: str) -> list[dict[str, Any]]:
    """The PPO update rows of the log history as ``metrics.jsonl`` and ``metrics.csv``; returns them."""
    rows = update_rows(log_history)
    _write_rows(os.path.join(output_dir, METRICS_FILE), rows)
    keys = sorted({k for row in rows for k in row})
    with open(os.path.join(output_dir, "metrics.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return rows


class MetricsFileCallback(TrainerCallback):
    """``output_dir/metrics.jsonl`` while PPO runs (main process): rewritten from the trainer's log history when
    training begins (empty for a new run; a resumed run's rows up to its checkpoint, so rows of updates it will redo
    are dropped), then each update's row appended as it is logged — a run that stops or is killed keeps the metrics of
    the updates it made. :func:`write_results` writes the file whole again at the end, with ``metrics.csv``."""

    def __init__(self, output_dir: str) -> None:
        self.path = os.path.join(output_dir, METRICS_FILE)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if state.is_world_process_zero:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            _write_rows(self.path, update_rows(state.log_history))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # the row as the trainer keeps it (with its step), appended to the history just before this call
        if state.is_world_process_zero and (rows := update_rows(state.log_history[-1:])):
            _write_rows(self.path, rows, mode="a")


def plot_kl_vs_reward(rows: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any], path: str) -> None:
    """KL(pi, rho) against the known reward and the learned score over PPO updates, with the held-out evaluations."""
    fig = Figure(figsize=(11, 4.2))  # no pyplot: the caller's matplotlib backend is left alone
    axes = fig.subplots(1, 2)
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


def samples_markdown(before: PolicyEvaluation, after: PolicyEvaluation, n: int = 8) -> str:
    """Markdown of the first ``n`` held-out queries with rho's and pi's continuations."""
    lines = ["# Sample continuations (held-out queries)", ""]
    for i in range(min(n, len(before.queries))):
        quoted = "\n".join(f"> {line}".rstrip() for line in before.queries[i].splitlines() or [""])
        lines += [f"## Query {i}", "", quoted, ""]
        for name, ev in (("rho (before)", before), ("pi (after)", after)):
            kr = f" — known reward {ev.known_rewards[i]:.2f}" if ev.known_rewards else ""
            lines.append(f"- **{name}**{kr}: {ev.responses[i]}")
        lines.append("")
    return "\n".join(lines)


def rouge_before_after(before: Sequence[str], after: Sequence[str], references: Sequence[str]) -> dict[str, Any] | None:
    """``{"before": {"rouge1": ..}, "after": {..}, "n": rows scored}``: :func:`hf_prefs.tasks.rouge.rouge` of rho's
    and pi's responses against the same references, over the rows that have one (a blank reference would score 0
    whatever the summary; left out with a warning). None when no row has one."""
    keep = [i for i, ref in enumerate(references) if ref and ref.strip()]
    if len(keep) < len(references):
        logger.warning("ROUGE: %d of %d held-out queries have no reference summary and are left out",
                       len(references) - len(keep), len(references))
    if not keep:
        return None
    refs = [references[i] for i in keep]
    return {"before": rouge([before[i] for i in keep], refs), "after": rouge([after[i] for i in keep], refs), "n": len(keep)}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _fmt_gain(summary: dict[str, Any]) -> str:
    g = summary.get("known_reward_gain")
    if not g:
        return ""
    return f" (paired gain {g['mean']:+.3f} ± {g['se']:.3f} SE, win rate of pi over rho {g['win_rate']:.2f}, n={g['n']})"


def _write_cards(output_dir: str, pa: PipelineArguments, cfg: Any, base_name: str, trainer: PPOTrainer,
                 num_labels: int, label_info: dict[str, Any], rm_metrics: dict[str, Any], b: dict, a: dict) -> None:
    gain, bias = get_reward_normalization(trainer.reward_model)
    common = dict(
        base_model=base_name, task=pa.task, num_labels=num_labels, reward_gain=gain, reward_bias=bias,
        labeler=label_info["source"], samples_per_label=pa.num_candidates,
        known_reward=pa.known_reward if label_info["source"] == "simulated" else None,
        labels_file=pa.label_file if label_info["source"] == "file" else None,
    )
    write_model_card(
        os.path.join(output_dir, "policy"),
        render_policy_card(
            **common, kl_final=float(a["kl"] or 0.0), beta_final=float(trainer.kl_ctl.value), beta_initial=cfg.kl_coef,
            kl_target=cfg.kl_target if cfg.adaptive_kl else None, temperature=cfg.temperature,
            response_length=cfg.response_length, hub_model_id=cfg.hub_model_id, is_peft=trainer.is_peft_model,
            embedding_rows=embedding_rows(trainer.policy_model),
            metrics={f"heldout/{k}_{when}": v for when, s in (("before", b), ("after", a)) for k, v in s.items()
                     if isinstance(v, (int, float))},
        ),
    )
    write_model_card(
        os.path.join(output_dir, "reward_model"),
        render_reward_model_card(**common, metrics={k: v for k, v in rm_metrics.items() if k.startswith("eval_")},
                                 is_peft=is_peft_model(trainer.reward_model)),
    )


def clear_stage_folder(path: str) -> None:
    """Remove ``path`` (a model folder an earlier run in the same ``output_dir`` wrote) before this run saves its own
    there, on the main process: ``save_pretrained`` overwrites only the files it writes, so an earlier run's others
    would stay beside them (a LoRA run's ``adapter_config.json`` beside a full model's weights loads as that adapter).
    Every process calls it."""
    state = PartialState()
    if state.is_main_process and os.path.isdir(path):
        shutil.rmtree(path)
    state.wait_for_everyone()  # before any process writes its part (sharded saves)


def write_results(
    output_dir: str,
    pa: PipelineArguments,
    cfg: Any,
    base_name: str,
    trainer: PPOTrainer,
    labels: Dataset,
    label_info: dict[str, Any],
    rm_metrics: dict[str, Any],
    before: PolicyEvaluation,
    after: PolicyEvaluation,
    eval_references: Sequence[str] | None = None,
    timings: dict[str, float] | None = None,
    online: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the run's folder and return its summary (also ``summary.json``): ``metrics.jsonl``/``.csv``,
    ``kl_vs_reward.png``, ``samples.md``, ``eval.json``, ``policy/`` (the trainer's model + tokenizer) and the model
    cards of ``policy/`` and ``reward_model/``. The summary holds the held-out means before/after, the paired
    known-reward gain with its SE and win rate, ROUGE (when ``eval_references``), beta, episodes and ``timings``.
    Every process computes the summary; the main process writes the files and prints."""
    clear_stage_folder(os.path.join(output_dir, "policy"))  # an earlier run's (its adapter files would stay beside ours)
    trainer.save_model(os.path.join(output_dir, "policy"))  # every process calls it (sharded setups gather)
    summary = _summary(pa, cfg, base_name, trainer, labels, label_info, rm_metrics, before, after, eval_references,
                       timings, online)
    if not trainer.is_world_process_zero():
        return summary
    rows = write_metrics(trainer.state.log_history, output_dir)
    plot_kl_vs_reward(rows, summary["before"], summary["after"], os.path.join(output_dir, "kl_vs_reward.png"))
    with open(os.path.join(output_dir, "samples.md"), "w") as f:
        f.write(samples_markdown(before, after))
    with open(os.path.join(output_dir, "eval.json"), "w") as f:
        json.dump({"before": before.to_dict(), "after": after.to_dict()}, f, indent=1)
    trainer.processing_class.save_pretrained(os.path.join(output_dir, "policy"))
    _write_cards(output_dir, pa, cfg, base_name, trainer, len(labels), label_info, rm_metrics, summary["before"],
                 summary["after"])
    with open(os.path.join(output_dir, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=1)
    print(samples_markdown(before, after, n=3))
    b, a = summary["before"], summary["after"]
    print(
        f"[hf_prefs] known reward {_fmt(b['known_reward'])} -> {_fmt(a['known_reward'])}{_fmt_gain(summary)}, "
        f"RM score {b['rm_score']:.3f} -> {a['rm_score']:.3f}, KL {a['kl']:.2f} nats, beta {summary['final_beta']:.4f}, "
        f"{summary['timings_s'].get('total_s', 0.0):.0f} s; results in {output_dir}"
    )
    return summary


def _summary(
    pa: PipelineArguments, cfg: Any, base_name: str, trainer: PPOTrainer, labels: Dataset, label_info: dict[str, Any],
    rm_metrics: dict[str, Any], before: PolicyEvaluation, after: PolicyEvaluation,
    eval_references: Sequence[str] | None, timings: dict[str, float] | None, online: dict[str, Any] | None,
) -> dict[str, Any]:
    b, a = before.summary(), after.summary()
    gain, bias = get_reward_normalization(trainer.reward_model)
    summary: dict[str, Any] = {
        "task": pa.task,
        "base_model": base_name,
        "labels": {**{k: v for k, v in label_info.items() if k != "run_id"}, "labels": len(labels)},  # id: labels_info
        "reward_model": {"gain": gain, "bias": bias, **{k: v for k, v in rm_metrics.items() if k.startswith("eval_")}},
        "before": b,
        "after": a,
        "final_beta": float(trainer.kl_ctl.value),
        "ppo_updates": trainer.state.global_step,
        "episodes": trainer.state.global_step * trainer.args.batch_size,
        "precision": run_precision(trainer, cfg),
        "timings_s": timings or {},
    }
    if before.known_rewards and after.known_rewards:  # paired: same held-out queries, same sampling seed
        gain_mean, gain_se = paired_difference(after.known_rewards, before.known_rewards)
        rate, rate_se = win_rate(after.known_rewards, before.known_rewards)
        summary["known_reward_gain"] = {"mean": gain_mean, "se": gain_se, "n": len(after.known_rewards),
                                        "win_rate": rate, "win_rate_se": rate_se}
    scores = None if eval_references is None else rouge_before_after(before.responses, after.responses, eval_references)
    if scores is not None:  # summarization: ROUGE F1 of rho's and pi's held-out summaries
        summary["rouge"] = scores
    if online is not None:
        summary["online"] = online
    return summary


def push_results(output_dir: str, cfg: Any, pa: PipelineArguments) -> dict[str, str]:
    """Push ``policy/`` to ``cfg.hub_model_id`` and ``reward_model/`` to ``pa.push_reward_model_id`` (default: the
    policy's id + ``-reward-model``), each with its card (from the main process). A push that fails (the network, the
    Hub, a token) raises a RuntimeError that says the run's results are saved and how to push them again."""
    if not cfg.hub_model_id:
        raise ValueError("hub_model_id: --push_to_hub needs --hub_model_id")
    if not PartialState().is_main_process:
        return {}
    try:
        return push_run_to_hub(output_dir, cfg.hub_model_id, reward_model_id=pa.push_reward_model_id,
                               token=cfg.hub_token, private=cfg.hub_private_repo)
    except (FileNotFoundError, ValueError):  # the folders or the ids: pushing again would fail the same way
        raise
    except Exception as err:  # the network, the Hub, a token (the HTTP client's errors differ across versions)
        folder = os.path.abspath(output_dir)
        options = (f", reward_model_id={pa.push_reward_model_id!r}" if pa.push_reward_model_id else "") + (
            ", private=True" if cfg.hub_private_repo else "")
        again = f"from hf_prefs import push_run_to_hub; push_run_to_hub({folder!r}, {cfg.hub_model_id!r}{options})"
        token = " (add token=... or set HF_TOKEN: the run's --hub_token is not repeated here)" if cfg.hub_token else ""
        raise RuntimeError(f"push_to_hub: pushing {output_dir} to {cfg.hub_model_id} failed ({type(err).__name__}: "
                           f"{err}). The run finished and its results are saved in {folder}; push them again with: "
                           f"python -c {shlex.quote(again)}{token}") from err
