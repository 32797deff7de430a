"""How close PPO on the known reward comes to the optimal KL-reward frontier, update by update, by its beta.

The study (``docs/study/``) reads direct RL at about half of the frontier's gain over rho at its KL (0.49 ± 0.04 after
14 updates with the adaptive beta of the offline default, which ends near 0.15). The frontier at a KL k is the policy
pi*_b ∝ rho · exp(r / b) whose KL is k; PPO at a fixed beta b maximizes E[r] − b·KL, whose optimum is pi*_b itself, so
a PPO run at fixed b can end on the frontier only at KL(pi*_b), and only once it has converged. The adaptive beta of
the offline default stays far below the frontier's beta at the KL it reaches (0.15 against ~0.45 at KL 3), so its
optimum lies much further out. This benchmark runs direct RL (PPO on the known reward: no labels, no reward model) per
variant — a fixed beta (``--variants 0.45``) or the config's adaptive controller (``adaptive``) — for ``--updates``
updates, and every ``--eval_every`` updates evaluates the policy on the study's held-out queries: known-reward gain
over rho (paired, ± SE), KL, the frontier's gain at that KL (``--frontier``: the study's ``frontier_rho.csv``) and
the share of it, with the frontier's effective sample size there.

The queries are split as the study splits them (``--num_label_queries 5000`` by default: the study's largest N, so
the PPO queries and the 160 held-out queries are the study's), rho's held-out rewards are sampled once per output
folder (``rho_eval.json``; a copy of ``docs/study/rho_eval.json`` is used when its key matches: the same dtype, as
with ``--dtype float32 --bf16 false``). Each variant and seed writes ``<output-dir>/<variant>_s<seed>/trajectory.csv``
and ``metrics.csv`` (its settings in ``run.json``); a variant whose trajectory and metrics are written is read back,
not run again (with other settings in the same folder: an error). A run saves a checkpoint at every evaluation and
after its last update (the last two are kept: ``checkpoint-N``, the policy's adapter or weights with the optimizer,
scheduler, beta and generators; git-ignored), so an interrupted variant resumes from its last one, dropping the
trajectory rows written after it (an evaluation's row is written just before its checkpoint); the PPO trainer resumes
exactly and the evaluation samples from its own generator, so the rows equal an uninterrupted run's. It runs as one
process. Any other flag is the recipe's (``recipes/configs/sentiment_offline.yaml`` is the base config).

    python benchmarks/ppo_frontier_convergence.py --variants 0.45 --updates 60 --eval_every 10
    python benchmarks/ppo_frontier_convergence.py --variants 0.45 adaptive --updates 40 --dtype float32 --bf16 false
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from trl import ModelConfig, TrlParser  # noqa: E402

from hf_prefs import PPOConfig  # noqa: E402
from hf_prefs.analysis.rho_samples import cached_rho_eval, known_reward_name  # noqa: E402
from hf_prefs.analysis.study_table import frontier_read, read_frontier  # noqa: E402
from hf_prefs.core.rollout import RolloutSpec  # noqa: E402
from hf_prefs.core.stats import mean_and_se  # noqa: E402
from hf_prefs.pipeline.arguments import PipelineArguments, resolve_cpu_precision, validate_pipeline_config  # noqa: E402
from hf_prefs.pipeline.evaluate import evaluate_policy  # noqa: E402
from hf_prefs.pipeline.policy import make_ppo_trainer, trained_policy  # noqa: E402
from hf_prefs.pipeline.results import write_metrics  # noqa: E402
from hf_prefs.pipeline.setup import load_base, split_queries  # noqa: E402
from hf_prefs.tasks.known_rewards import make_known_reward  # noqa: E402
from hf_prefs.trainers.ppo_checkpoints import last_complete_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "sentiment_offline.yaml"
FIELDS = ["update", "kl", "gain", "gain_se", "known_reward", "frontier_gain_at_kl", "frontier_ess_at_kl",
          "frontier_qualified", "frac_frontier", "frac_frontier_se", "kl_coef"]


def variant_overrides(variant: str) -> dict[str, Any]:
    """``adaptive``: the config's controller as it is; a number: that beta, fixed."""
    if variant == "adaptive":
        return {}
    try:
        beta = float(variant)
    except ValueError:
        raise ValueError(f"--variants: {variant!r} is neither 'adaptive' nor a beta (a number)") from None
    if not beta > 0:
        raise ValueError(f"--variants: a fixed beta must be > 0, got {variant}")
    return {"kl_coef": beta, "adaptive_kl": False}


class HeldOutTrajectory(TrainerCallback):
    """Every ``every`` updates (and after the last), the policy on the held-out queries, read against the frontier;
    one row per evaluation appended to ``path`` (written as it goes)."""

    def __init__(self, run: dict[str, Any], every: int, path: str, rows: Sequence[dict[str, str]] = ()) -> None:
        """``rows``: the trajectory so far (a resumed run's), written back before the new ones."""
        self.run, self.every, self.path, self.trainer = run, every, path, None
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        if step % self.every == 0 or step == args.num_total_batches:
            self.evaluate(step)
        return control

    def evaluate(self, step: int) -> dict[str, Any]:
        r, trainer = self.run, self.trainer
        with torch.random.fork_rng():  # the evaluation samples with its own generator; the run's stream stays as it was
            ev = evaluate_policy(trained_policy(trainer), r["tokenizer"], r["eval_q"], r["spec"],
                                 ref_model=None if trainer.is_peft_model else r["rho"], known_reward=r["known"],
                                 batch_size=r["batch_size"], seed=r["eval_seed"])
        diff = torch.tensor(ev.known_rewards, dtype=torch.float64) - torch.tensor(r["rho_eval"], dtype=torch.float64)
        gain, gain_se = mean_and_se(diff)
        kl = float(np.mean(ev.kl))
        read = frontier_read({"rho": r["frontier"]}, kl, gain, gain_se, r["min_ess"])
        row = {"update": step, "kl": kl, "gain": gain, "gain_se": gain_se, "known_reward": float(np.mean(ev.known_rewards)),
               "frontier_gain_at_kl": read["frontier_gain_at_kl"], "frontier_ess_at_kl": read["frontier_ess_at_kl"],
               "frontier_qualified": read["frontier_qualified"], "frac_frontier": read["frac_frontier"],
               "frac_frontier_se": read["frac_frontier_se"], "kl_coef": float(trainer.kl_ctl.value)}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow(row)
        print(format_row(r["name"], row), flush=True)
        return row


def format_row(name: str, row: dict[str, Any]) -> str:
    mark = "" if str(row["frontier_qualified"]) == "True" else "  (frontier ESS < min: not qualified)"
    return (f"{name:<18} update {int(row['update']):>3}  KL {float(row['kl']):6.2f}  gain {float(row['gain']):+.3f} ± "
            f"{float(row['gain_se']):.3f}  frontier's gain there {float(row['frontier_gain_at_kl']):.3f} (ESS "
            f"{float(row['frontier_ess_at_kl']):.0f})  share {float(row['frac_frontier']):.2f} ± "
            f"{float(row['frac_frontier_se']):.2f}  beta {float(row['kl_coef']):.3f}{mark}")


def read_trajectory(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_variant(variant: str, seed: int, updates: int, every: int, shared: dict[str, Any], out: Path) -> list[dict]:
    name = f"{variant}_s{seed}"
    folder = out / name
    path = folder / "trajectory.csv"
    settings = {"variant": variant, "seed": seed, "updates": updates, "eval_every": every, "flags": shared["flags"]}
    if (folder / "run.json").is_file():
        stored = json.loads((folder / "run.json").read_text())
        if stored != settings:
            raise ValueError(f"{folder} holds a run with other settings ({stored}); this one is {settings}: use "
                             f"another --output-dir")
        rows = read_trajectory(str(path)) if path.is_file() else []
        if rows and int(rows[-1]["update"]) == updates and (folder / "metrics.csv").is_file():  # metrics: written last
            for row in rows:
                print(format_row(name, row))
            return rows
        resume = last_complete_checkpoint(str(folder))  # the last update's own: nothing left to train, metrics written
    else:
        resume = None
    if resume is None:  # nothing to resume from: start over (the rows depend on the whole run before them)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps(settings))
        rows = []
    else:
        done = int(Path(resume).name.removeprefix("checkpoint-"))
        rows = [row for row in rows if int(row["update"]) <= done]  # rows written after the checkpoint are made again
        print(f"{name}: resuming from update {done} ({resume})", flush=True)
    base_cfg = shared["cfg"]
    episodes = updates * base_cfg.per_device_train_batch_size * base_cfg.gradient_accumulation_steps  # one process
    cfg = replace(base_cfg, seed=seed, output_dir=str(folder), save_strategy="steps", save_steps=every,
                  save_total_limit=2, total_episodes=episodes, **variant_overrides(variant))
    torch.manual_seed(seed)
    trainer = make_ppo_trainer(cfg, shared["model_args"], shared["base"], lambda q, r: shared["known"](list(r)),
                               shared["ppo_q"], known_reward=shared["known"], output_dir=str(folder))
    probe = HeldOutTrajectory({**shared["run"], "name": name}, every, str(path), rows)
    probe.trainer = trainer
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=resume)
    write_metrics(trainer.state.log_history, str(folder))
    return read_trajectory(str(path))


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["0.45"], help="'adaptive' or a fixed beta, per variant")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--eval_every", type=int, default=10)
    p.add_argument("--frontier", default=str(ROOT / "docs" / "study" / "frontier_rho.csv"))
    p.add_argument("--rho_eval", default=str(ROOT / "docs" / "study" / "rho_eval.json"),
                   help="rho's held-out rewards to start from (used when its key matches this run's)")
    p.add_argument("--min_ess", type=float, default=30.0)
    p.add_argument("--output-dir", default="runs/ppo_frontier")
    a, rest = p.parse_known_args(argv)
    if PartialState().num_processes > 1:
        raise SystemExit("ppo_frontier_convergence.py runs as one process (python benchmarks/...), not under a launcher")
    for v in a.variants:
        variant_overrides(v)  # bad names fail before anything loads
    if a.updates < 1 or a.eval_every < 1:
        raise ValueError("--updates and --eval_every must be >= 1")
    parser = TrlParser((PipelineArguments, PPOConfig, ModelConfig))
    pa, cfg, model_args = parser.parse_args_and_config(
        args=["--config", str(CONFIG), "--num_label_queries", "5000", "--disable_tqdm", "true", *rest])
    pa.task = pa.task or "sentiment"
    validate_pipeline_config(pa, cfg, model_args)
    resolve_cpu_precision(pa, cfg, model_args)
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load_base(model_args)
    eval_q, _, ppo_q, _ = split_queries(pa, cfg, base.tokenizer)
    known = make_known_reward(pa.known_reward, pa.known_reward_positive_label)
    spec = RolloutSpec.from_config(cfg, base.tokenizer)
    cache = out / "rho_eval.json"
    if not cache.exists() and os.path.isfile(a.rho_eval):
        shutil.copyfile(a.rho_eval, cache)  # read only if its key is this run's; otherwise sampled again and replaced
    rho_eval = cached_rho_eval(base, spec, eval_q, known, pa.sampling_batch_size, cfg.seed + 2, str(cache),
                               known_reward_name(pa))
    frontier = read_frontier(a.frontier)
    print(f"rho on {len(eval_q)} held-out queries: known reward {np.mean(rho_eval):.3f}; frontier {a.frontier} "
          f"(rho {frontier[0].reward:.3f} on its queries); precision: dtype {model_args.dtype}, bf16 {cfg.bf16}",
          flush=True)
    run = {"tokenizer": base.tokenizer, "eval_q": eval_q, "spec": spec, "rho": base.rho, "known": known,
           "batch_size": pa.sampling_batch_size, "eval_seed": cfg.seed + 2, "rho_eval": rho_eval, "frontier": frontier,
           "min_ess": a.min_ess}
    shared = {"cfg": cfg, "model_args": model_args, "base": base, "known": known, "ppo_q": ppo_q, "run": run,
              "flags": rest}
    return {f"{v}_s{s}": run_variant(v, s, a.updates, a.eval_every, shared, out) for v in a.variants for s in a.seeds}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
