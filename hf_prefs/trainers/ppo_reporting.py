"""What :class:`hf_prefs.PPOTrainer` reports: the metrics of each update (TRL's names), tables of samples, and
TRL's ``generate_completions`` on the evaluation set (a mixin on its TRL/Trainer base)."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import pandas as pd
import psutil
import torch
from accelerate.utils import gather_object
from torch import nn

from .._compat import print_prompt_completions_sample
from ..core.ppo_math import explained_variance, masked_mean
from ..core.rollout import left_pad
from ..models.generation import sample_responses
from ..models.sharding import generation_model
from .launch import marks_failure
from .ppo_data import Rollout

__all__ = ["PPOReportingMixin", "COMPLETIONS_TEMPERATURE", "RESERVED_METRIC_GROUPS", "RESERVED_METRIC_NAMES"]

#: TRL 1.12's generate_completions samples at T = 0.01 (near-greedy).
COMPLETIONS_TEMPERATURE = 0.01

#: the metric groups and names a PPO row holds besides a reward function's ``log_metric`` values: this trainer's
#: (``log_step``), its subclasses' (``objective/known_reward``), the online loop's (``online/...``) and
#: ``Trainer.log``'s (``epoch``, ``step``, ``num_input_tokens_seen``)
RESERVED_METRIC_GROUPS = ("objective/", "policy/", "loss/", "val/", "time/", "memory/", "online/")
RESERVED_METRIC_NAMES = ("eps", "lr", "episode", "epoch", "step", "num_input_tokens_seen")


class PPOReportingMixin:
    """Metrics, sample tables and completions on ``eval_dataset``."""

    def _mean(self, tensor: torch.Tensor) -> float:
        return self.accelerator.gather(tensor.detach().float().reshape(-1)).mean().item()

    def log_step(
        self, rollout: Rollout, train_stats: dict[str, torch.Tensor], timings: dict[str, float], learning_rate: float
    ) -> dict[str, float]:
        """Metrics of one update (TRL names), averaged over all processes. Computed every update, logged per
        ``logging_steps``. ``lr`` is the learning rate this update used."""
        a = self.args
        gather = self.accelerator.gather
        token_mask = rollout.token_mask if rollout.token_mask is not None else torch.ones_like(rollout.kl, dtype=torch.bool)
        kl_sum = gather(rollout.kl.sum(1))  # (B_all,)
        non_score_sum = gather(rollout.non_score_rewards.sum(1))
        scores = gather(rollout.scores)
        returns = train_stats.pop("returns")
        episodes = self.state.global_step * a.batch_size
        elapsed = max(time.time() - self._train_start_time, 1e-9)
        session_episodes = (self.state.global_step - self._initial_global_step) * a.batch_size
        tokens_per_episode = gather(rollout.query_mask.sum(1).float()).mean().item() + a.response_length
        metrics = {
            "eps": session_episodes / elapsed,
            "objective/tokens_per_second": session_episodes * tokens_per_episode / elapsed,
            "objective/kl": kl_sum.mean().item(),
            "objective/kl_coef": rollout.kl_coef,
            "objective/entropy": self._mean((-rollout.logprobs * token_mask).sum(1)),
            "policy/entropy_avg": gather(masked_mean(rollout.entropy, token_mask).reshape(1)).mean().item(),
            "objective/non_score_reward": non_score_sum.mean().item(),
            "objective/rlhf_reward": (scores + non_score_sum).mean().item(),
            "objective/scores": scores.mean().item(),
            "objective/scores_std": scores.std(unbiased=False).item(),
            "objective/raw_scores": self._mean(rollout.raw_scores),
            "objective/penalized_frac": self._mean((~rollout.valid).float()),
            "val/explained_variance": explained_variance(gather(rollout.values), gather(returns)),
            "val/mean": self._mean(rollout.values),
            "val/num_eos_tokens": float(
                gather((rollout.response_ids == self.processing_class.eos_token_id).sum().reshape(1)).sum().item()
            )
            if self.processing_class.eos_token_id is not None
            else 0.0,
        }
        for key, value in train_stats.items():
            metrics[key] = self._mean(value)
        if "val/ratio" in train_stats:  # TRL's: the variance of the micro-batches' mean ratios, over all processes
            ratios = gather(train_stats["val/ratio"].detach().float().reshape(-1))
            # one micro-batch in all (1 epoch, 1 process): NaN as TRL's, without torch's warning at every update
            metrics["val/ratio_var"] = ratios.var().item() if ratios.numel() > 1 else math.nan
        metrics["lr"] = learning_rate
        metrics["memory/rss_gb"] = psutil.Process().memory_info().rss / 2**30  # this process, now
        if torch.cuda.is_available():  # this process's peak since the start
            metrics["memory/peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
        metrics["episode"] = episodes
        for key, value in timings.items():
            metrics[f"time/{key}"] = value
        for name, value in self._reward_function_metrics().items():
            if name in metrics or name in RESERVED_METRIC_NAMES or name.startswith(RESERVED_METRIC_GROUPS):
                # the trainer's own metric keeps its name: the function's value goes beside it
                warnings.warn(f"log_metric({name!r}, ...) of a reward function names one of PPOTrainer's own "
                              f"metrics or groups: logged as {'reward_fn/' + name!r}", stacklevel=2)
                name = f"reward_fn/{name}"
            metrics[name] = value
        return metrics

    def _reward_function_metrics(self) -> dict[str, float]:
        """What reward functions logged with ``log_metric`` this update: each name's mean over its values on every
        process (TRL's), then cleared. A collective on every update where the reward is a function."""
        pending, self.reward_metrics = self.reward_metrics, {}
        if isinstance(self.reward_model, nn.Module):
            return {}
        sums = {name: (sum(values), len(values)) for name, values in pending.items()}
        merged: dict[str, tuple[float, int]] = {}
        for part in gather_object([sums]) if self.accelerator.num_processes > 1 else [sums]:
            for name, (total, count) in part.items():
                seen_total, seen_count = merged.get(name, (0.0, 0))
                merged[name] = (seen_total + total, seen_count + count)
        return {name: total / count for name, (total, count) in merged.items() if count}

    def log_samples(self, rollout: Rollout, num_samples: int = 8) -> None:
        """Print (and log to wandb / trackio when active) a table of query, truncated response and score: ``num_samples``
        rows of each process spread evenly over its batch (which is in ascending query length, so the table shows
        short and long queries alike)."""
        n = min(num_samples, len(rollout))
        rows = [round(i * (len(rollout) - 1) / max(n - 1, 1)) for i in range(n)]
        table = {
            "query": gather_object([rollout.query_texts[i] for i in rows]),
            "response": gather_object([rollout.response_texts[i] for i in rows]),
            "score": gather_object(rollout.scores[rows].tolist()),
            "penalized": gather_object((~rollout.valid[rows]).tolist()),
        }
        if not isinstance(self.reward_model, nn.Module):  # reward functions' log_extra columns, one value per response
            mine = {c: [v[i] if len(v) == len(rollout) else None for i in rows] for c, v in self.reward_log_extra.items()}
            parts = gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]
            for column in dict.fromkeys(c for part in parts for c in part):  # a process without it: None
                table[column] = [v for part in parts for v in part.get(column, [None] * len(rows))]
        df = pd.DataFrame(table)
        self.last_samples = df
        if not self.accelerator.is_main_process:
            return
        try:
            print_prompt_completions_sample(
                df["query"].tolist(), df["response"].tolist(), {"score": df["score"].tolist()}, None,
                self.state.global_step, extra={"penalized": df["penalized"].tolist()},
            )
        except ImportError:  # rich is not installed
            print(f"PPO samples at step {self.state.global_step}:\n{df.to_string()}")
        self._log_table("samples", df)

    def _log_table(self, name: str, df: pd.DataFrame) -> None:
        """Log a table to the active wandb / trackio run (``report_to``), on the main process."""
        report_to = self.args.report_to or []
        if "wandb" in report_to:
            import wandb  # optional integration

            if wandb.run is not None:
                wandb.log({name: wandb.Table(dataframe=df)})
        if "trackio" in report_to:
            import trackio  # optional integration

            run = getattr(getattr(trackio, "context_vars", None), "current_run", None)  # (trackio 0.43's name)
            if run is None or run.get() is not None:  # no run before train() or after it (trackio.log raises)
                trackio.log({name: trackio.Table(dataframe=df)})

    @marks_failure
    @torch.no_grad()
    def generate_completions(self, sampling: bool = False) -> pd.DataFrame | None:
        """TRL 1.12's completions table on ``eval_dataset``: near-greedy responses (T = 0.01), cut by the run's rule,
        scored by the reward (no penalty); ``sampling=True`` stops after the first batch of
        ``per_device_eval_batch_size`` queries (what training shows every ``num_sample_generations``-th time).
        Prints the first 5 rows, logs the table to wandb / trackio; returns it (None without an eval set, which a
        direct call warns about)."""
        if self.eval_dataset is None:
            if not sampling:
                warnings.warn("generate_completions: the trainer was given no eval_dataset, so there are no queries to "
                              "complete (pass eval_dataset=; hf_prefs.evaluate_policy samples any queries)", stacklevel=2)
            return None
        a, spec, device = self.args, self.rollout_spec, self.accelerator.device
        world, n, size = self.accelerator.num_processes, len(self.eval_dataset), a.per_device_eval_batch_size
        # batches of the eval set dealt in turn, as TRL 1.12's sharded dataloader did (a sampled table shows the first
        # world x batch rows); on several processes every one runs as many batches of as many rows (sharded forwards
        # are collectives, and scoring chunks rows): a short batch repeats its last row and a missing one a batch,
        # dropped below; the rows are put back in the eval set's order after the gather
        batches = [list(range(start, min(start + size, n))) for start in range(0, n, size)]
        mine = batches[self.accelerator.process_index :: world]
        rounds = 1 if sampling else -(-len(batches) // world)
        runs = (mine + [(mine or batches)[-1]] * rounds)[:rounds]
        if world > 1:
            runs = [rows + rows[-1:] * (size - len(rows)) for rows in runs]
        table: dict[str, list[Any]] = {"row": [], "query": [], "model response": [], "score": []}
        # its own generator: showing completions never changes what training samples; nor what reward functions log
        # (log_metric, log_extra) while they score these completions
        training_logs, self.reward_metrics = (self.reward_metrics, self.reward_log_extra), {}
        generator = torch.Generator(device=device).manual_seed(a.seed + 17 + 1_000_003 * self.accelerator.process_index)
        self.model.eval()
        with generation_model(self.model_wrapped, self.accelerator, a.ds3_gather_for_generation) as wrapper:
            for i, rows in enumerate(runs):
                batch = self.eval_dataset[rows]
                query_ids, query_mask = left_pad(batch["input_ids"], self.pad_token_id)
                with self.accelerator.autocast():
                    responses = sample_responses(
                        wrapper.policy, query_ids.to(device), query_mask.to(device), spec.response_length,
                        COMPLETIONS_TEMPERATURE, generator,
                    )
                lengths = spec.cut(responses).lengths
                texts = self.decode_responses(responses, lengths)
                # the rows' columns for a reward in TRL's form; the ids for a reward model reading them as TRL
                with self.scoring_with(batch, responses, lengths, query_ids.to(device), query_mask.to(device)):
                    scores = self.score(list(batch["query"]), texts).tolist()
                if i < len(mine):
                    real = len(mine[i])
                    table["row"] += rows[:real]
                    table["query"] += list(batch["query"])[:real]
                    table["model response"] += texts[:real]
                    table["score"] += scores[:real]
        self.reward_metrics, self.reward_log_extra = training_logs
        gathered = {key: gather_object(values) for key, values in table.items()}
        order = sorted(range(len(gathered["row"])), key=gathered.pop("row").__getitem__)
        df = pd.DataFrame({key: [values[i] for i in order] for key, values in gathered.items()})
        if self.accelerator.is_main_process:
            print(df.iloc[:5].to_string())
            self._log_table("completions", df)
        return df
