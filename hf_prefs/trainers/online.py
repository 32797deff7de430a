"""Online label collection during RL (paper §2, summarization): the reward model is retrained as the policy moves.

The paper trains the reward model before the first PPO episode on labels of samples from the policy (= ρ then),
and retrains it 19 more times at evenly spaced points of RL, each time **from the pretrained LM with a fresh head,
for one epoch over all labels so far**; the new labels of each round come from samples of the **current** policy.
Offline collection is the special case of one round before RL.

- :class:`OnlineLabelSchedule`: how many labels each round adds and at which episode counts the rounds happen.
- :class:`OnlinePreferenceLoop`: runs the rounds. It is a ``TrainerCallback`` on ONE :class:`~hf_prefs.PPOTrainer`
  whose single ``train()`` call runs every PPO update; at the start of an update at which a round is due
  (``on_step_begin``) it samples K responses per new query from the current policy, gets the labels (a
  :class:`~hf_prefs.labels.labelers.SimulatedLabeler`, the human :class:`~hf_prefs.labels.queue.LabelQueue`, or rows
  of a label file), appends them to the label dataset, retrains the reward model (with the paper's normalization,
  done by the training function) and swaps it into ``trainer.reward_model``.

What carries across rounds: since ``train()`` is never restarted, everything of PPO does — the policy and value
head, the KL controller ``trainer.kl_ctl`` (β is not reset to ``kl_coef``), the Adam state, the learning-rate
schedule (linear decay over ALL updates of the run), ``state.global_step`` and the log history, the sampling and
minibatch-shuffle generators and the query stream. Only ``trainer.reward_model`` changes.

On N processes the main process samples each round's comparisons (from its copy of the policy, the same on every
process), gets the labels and writes them; the round's rows are broadcast, and every process trains the reward model
on them together (the reward trainer runs data-parallel), so all hold the same reward model. At every PPO checkpoint
the loop saves its state (labels so far, rounds, the query position, the label source's state) and the current
reward model into the checkpoint; ``loop.train(trainer, resume_from_checkpoint=...)`` continues from there.

Logged (``trainer.log``): one row per round with ``online/round``, ``online/labels_total``, ``online/new_labels``,
the reward model's gain/bias/accuracy and (simulated labels) ``online/known_reward_of_samples``; and every PPO
update row gets ``online/round`` (the last round run) and ``online/labels_total`` (labels the current reward model
was trained on, or collected so far in ``continue`` mode).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from accelerate import PartialState
from datasets import Dataset, Features, Value
from torch import nn
from transformers import TrainerCallback

from ..core.online_schedule import OnlineLabelSchedule
from ..core.rollout import RolloutSpec
from ..labels.labelers import sample_candidates
from ..labels.schema import LABEL_COLUMNS
from ..labels.sources import as_label_source
from ..models.dropout import disable_dropout
from ..models.loading import load_reward_model
from ..models.reward_model import get_reward_normalization
from ..models.sharding import zero_stage
from .deepspeed_plugins import select_plugin
from .main_process import result_from_main_process

__all__ = ["OnlineLabelSchedule", "OnlinePreferenceLoop", "check_online_zero_stage", "RewardTrainFn", "ONLINE_LABEL_FEATURES", "ONLINE_STATE_FILE"]

#: The loop's state in a PPO checkpoint; the reward model of the last round sits next to it in ONLINE_REWARD_MODEL_DIR.
ONLINE_STATE_FILE = "online_state.json"
ONLINE_REWARD_MODEL_DIR = "online_reward_model"

logger = logging.getLogger(__name__)

#: Columns of :meth:`OnlinePreferenceLoop.labels_dataset`: the label schema plus the round that requested the
#: label and the PPO episode count at that time.
ONLINE_LABEL_FEATURES = Features(
    {
        **LABEL_COLUMNS,
        "round": Value("int64"),
        "episode": Value("int64"),
    }
)

#: ``fn(labels, init_model, round) -> reward_model`` or ``(reward_model, metrics)``. ``init_model`` is ``None`` for a
#: reward model trained from the base trunk with a fresh head (paper), else the current reward model (``continue``).
RewardTrainFn = Callable[[Dataset, "nn.Module | None", int], Any]


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
def check_online_zero_stage(stage: int | None) -> None:
    """Stop an online label loop under DeepSpeed ZeRO-3 (``stage``: the run's ZeRO stage, None without DeepSpeed),
    before anything runs: the rounds after the first sample the current policy on the main process alone while the
    others wait, and a ZeRO-3 forward gathers the sharded weights from every process (it would wait forever); and
    every round's reward model would be sharded by its trainer, hooked by PPO's engine and saved into PPO's
    checkpoints by the main process as empty shards (with ``online_rm_init=continue``, trained on by a second
    engine). The recipes call it on their config, :class:`OnlinePreferenceLoop` on its ``args`` (before round 0) and
    :meth:`OnlinePreferenceLoop.train` on its trainer (before a resume touches the label files)."""
    if stage == 3:
        raise NotImplementedError(
            "label_mode: online labels are not supported under DeepSpeed ZeRO-3 (later rounds sample the policy on "
            "the main process alone, and the rounds' reward models would be sharded); use ZeRO-2 or DDP, or offline "
            "labels"
        )


class OnlinePreferenceLoop(TrainerCallback):
    """The online label loop (see the module docstring).

    Usage::

        loop = OnlinePreferenceLoop(schedule, SimulatedLabeler(vader_log_odds), train_rm, label_queries, tokenizer,
                                    args=ppo_config)
        reward_model = loop.first_round(rho)            # round 0 on the policy before RL (= rho)
        trainer = PPOTrainer(policy, reward_model, ppo_config, train_dataset=..., processing_class=tokenizer)
        loop.train(trainer)                             # PPO with the other rounds in between

    (``loop.train`` runs round 0 itself on the trainer's policy when ``first_round`` was not called; the trainer then
    needs some reward model or callable at construction, which round 0 replaces.)

    Args:
        schedule: an :class:`OnlineLabelSchedule`.
        label_source: a :class:`~hf_prefs.labels.labelers.SimulatedLabeler`, a :class:`~hf_prefs.labels.queue.LabelQueue`
            (human labels), a label ``Dataset`` whose rows fill the rounds in order, or a :class:`LabelSource`.
        train_reward_model: ``fn(labels, init_model, round) -> reward_model | (reward_model, metrics)``; it should
            normalize the reward model (paper: before and after training, on ρ samples), as
            :func:`hf_prefs.pipeline.reward.train_reward_model` does.
        queries: the pool of label queries (texts or a dataset with ``query``), used in order, new ones each round
            (wrapping around, with a warning, when exhausted).
        tokenizer: the policy's tokenizer.
        args: a :class:`~hf_prefs.PPOConfig`: its rollout settings (:meth:`RolloutSpec.from_config`: length,
            temperature, the cut and the penalty rule, exactly as PPO applies them) and ``seed``.
        spec: the :class:`~hf_prefs.core.rollout.RolloutSpec` to sample and cut comparisons with (default: the one of
            ``args``; without ``args``, the paper's books rule).
        num_candidates: K samples per comparison.
        rm_init: ``"fresh"`` (paper): each round trains a reward model from the base trunk with a fresh head on ALL
            labels so far (``init_model=None``); ``"continue"``: the current reward model is trained further on the
            round's new labels only.
        wait_for_labels: PPO waits for each round's labels (up to ``label_timeout`` s). ``False``: PPO goes on with
            the current reward model and the labels that arrived are used at the next round (round 0 always waits:
            there is no reward model before it).
        drop_untruncated: drop queries with a sample lacking the truncate token (paper); the loop draws more queries
            so that each round still has exactly its scheduled number of comparisons.
        output_dir: when set, ``online_labels.jsonl`` (appended every round, so no label is lost on a crash) and
            ``online_rounds.jsonl`` are written there.
    """

    def __init__(
        self,
        schedule: OnlineLabelSchedule,
        label_source: Any,
        train_reward_model: RewardTrainFn,
        queries: Sequence[str] | Dataset,
        tokenizer: Any,
        *,
        args: Any = None,
        num_candidates: int = 4,
        rm_init: Literal["fresh", "continue"] = "fresh",
        wait_for_labels: bool = True,
        label_timeout: float | None = None,
        drop_untruncated: bool = True,
        sampling_batch_size: int = 32,
        spec: RolloutSpec | None = None,
        seed: int | None = None,
        output_dir: str | None = None,
    ):
        if not isinstance(schedule, OnlineLabelSchedule):
            raise TypeError(f"schedule must be an OnlineLabelSchedule, got {type(schedule).__name__}")
        if rm_init not in ("fresh", "continue"):
            raise ValueError(f"rm_init must be 'fresh' or 'continue', got {rm_init!r}")
        if num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
        plugin = getattr(args, "deepspeed_plugin", None)  # before round 0 (first_round) samples or trains anything
        check_online_zero_stage(None if plugin is None else int(plugin.zero_stage))
        self.schedule = schedule
        self.source = as_label_source(label_source)
        self.train_reward_model = train_reward_model
        if isinstance(queries, Dataset):
            if "query" not in queries.column_names:
                raise ValueError(f"queries: the dataset needs a 'query' column; got {queries.column_names}")
            queries = queries["query"]
        self.queries = list(queries)
        if self.source.samples_from_policy and not self.queries:
            raise ValueError("queries: the online loop needs label queries to sample comparisons for")
        self.tokenizer = tokenizer
        if spec is None:
            spec = RolloutSpec.from_config(args, tokenizer) if args is not None else RolloutSpec.build(
                tokenizer, truncate_token=".", truncate_after=16
            )
        self.spec, self.num_candidates = spec, num_candidates
        self.sampling_batch_size, self.drop_untruncated = sampling_batch_size, drop_untruncated
        seed = getattr(args, "seed", None) if seed is None else seed
        self.seed = 0 if seed is None else int(seed)
        self.rm_init = rm_init
        self.wait_for_labels = wait_for_labels
        self.label_timeout = label_timeout
        self.output_dir = output_dir

        self.rows: list[dict[str, Any]] = []  # every label so far (ONLINE_LABEL_FEATURES)
        self.rounds: list[dict[str, Any]] = []  # one record per round run
        self.reward_model: nn.Module | Any = None
        self.rm_metrics: dict[str, float] = {}
        self.labels_in_reward_model = 0
        self.trainer: Any = None
        self.restored_from: str | None = None
        self._query_pos = 0
        self._wrapped = False
        self._update_boundaries: list[int] | None = None
        self._pending_logs: list[dict[str, float]] = []
        self._round_episode: dict[int, int] = {}
        self._main = PartialState().is_main_process
        # a new run starts new files at its first write (not here: a run that fails to restore keeps the old ones)
        self._files_current = False

    # ------------------------------------------------------------------ public
    @property
    def next_round(self) -> int:
        return len(self.rounds)

    def labels_dataset(self) -> Dataset:
        """All labels so far: ``query``, ``samples``, ``best``, ``round``, ``episode``."""
        if not self.rows:
            return Dataset.from_dict({k: [] for k in ONLINE_LABEL_FEATURES}, features=ONLINE_LABEL_FEATURES)
        return Dataset.from_list(self.rows, features=ONLINE_LABEL_FEATURES)

    def first_round(self, policy: nn.Module) -> Any:
        """Round 0 before RL on ``policy`` (the policy before its first update, i.e. ρ's weights); returns the reward
        model. Only for schedules with ``first_round_before_rl``."""
        if not self.schedule.first_round_before_rl:
            raise ValueError("first_round: this schedule has no round before RL (first_round_before_rl=False)")
        if self.rounds:
            raise RuntimeError("first_round: round 0 has already run")
        self.run_round(policy, step=0, episode=0)
        return self.reward_model

    def train(self, trainer: Any, resume_from_checkpoint: str | None = None, **train_kwargs: Any) -> Any:
        """Run PPO with ``trainer`` (one ``train()`` call) and the schedule's rounds at their updates; with
        ``resume_from_checkpoint`` (a checkpoint folder of this run) the loop's state and reward model are restored
        from it first and PPO continues from it."""
        check_online_zero_stage(zero_stage(trainer.accelerator))  # before a restore rewrites the label files
        if resume_from_checkpoint:
            if self.restored_from != resume_from_checkpoint:
                self.restore(resume_from_checkpoint)
            train_kwargs["resume_from_checkpoint"] = resume_from_checkpoint
        a = trainer.args
        self._update_boundaries = self.schedule.update_boundaries(a.total_episodes, a.batch_size)
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            # first, so a round runs before any other callback sees the update, and online/* reach the reporters
            trainer.callback_handler.callbacks.insert(0, self)
        if self.rounds and self.reward_model is not None:
            self._install(trainer, self.reward_model)
        elif self._update_boundaries[0] == 0:
            self._run_due_rounds(0)  # round 0 on the trainer's policy (= rho before any update)
        elif self.reward_model is None:
            self.reward_model = trainer.reward_model  # the reward used until round 0 (first_round_before_rl=False)
        return trainer.train(**train_kwargs)

    # ------------------------------------------------------------------ one round
    def run_round(self, policy: nn.Module | None, step: int, episode: int) -> dict[str, Any]:
        """Round ``next_round``: sample comparisons from ``policy``, get labels, retrain the reward model."""
        r = self.next_round
        if r >= self.schedule.rounds:
            raise RuntimeError(f"all {self.schedule.rounds} rounds have run")
        t0 = time.time()
        n = self.schedule.labels_in_round(r)
        record: dict[str, Any] = {"round": r, "step": step, "episode": episode, "requested": n}
        # the main process samples and labels (people may take hours); the round's rows reach every process
        new, info = result_from_main_process(lambda: self._label_round(policy, r, n))
        record.update(info)
        self._round_episode[r] = episode
        for row in new:  # the episode at which the row's round sampled it (late labels keep their round's)
            row["episode"] = self._round_episode.get(row["round"], episode)
        self.rows += new
        self._append_labels(new)
        record["new_labels"], record["labels_total"] = len(new), len(self.rows)

        t1 = time.time()
        if new:
            if self.rm_init == "fresh":
                train_on, init = self.labels_dataset(), None
            else:
                # the current reward model (None before the first round: that one starts from the trunk)
                train_on, init = Dataset.from_list(new, features=ONLINE_LABEL_FEATURES), self.reward_model
            out = self.train_reward_model(train_on, init, r)
            if self.trainer is not None:  # PPO goes on: its DeepSpeed plugin is the selected one again
                select_plugin(getattr(self.trainer.args, "deepspeed_plugin", None))
            model, metrics = out if isinstance(out, tuple) else (out, {})
            self.reward_model, self.rm_metrics = model, dict(metrics)
            self.labels_in_reward_model = len(self.rows)
            record["rm_trained_on"] = len(train_on)
            if self.trainer is not None:
                self._install(self.trainer, model)
        elif self.reward_model is None:
            raise RuntimeError(f"round {r}: no labels arrived, and there is no reward model to continue with")
        else:
            logger.warning("round %d: no new labels; PPO continues with the current reward model", r)
            record["rm_trained_on"] = 0
        record["rm_metrics"] = {k: v for k, v in self.rm_metrics.items() if isinstance(v, (int, float))}
        if isinstance(self.reward_model, nn.Module):  # a reward callable has no gain/bias
            record["reward_gain"], record["reward_bias"] = get_reward_normalization(self.reward_model)
        record["labels_s"], record["reward_model_s"] = t1 - t0, time.time() - t1
        self.rounds.append(record)
        self._write_record(record)
        self._log_round(record)
        if self._main:
            print(
                f"[hf_prefs] online round {r} at episode {episode}: {len(new)} new labels, {len(self.rows)} in all; "
                f"reward model {'retrained' if new else 'kept'} ({time.time() - t0:.0f} s)"
            )
        return record

    def _label_round(self, policy: nn.Module | None, r: int, n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Round ``r``'s comparisons sampled from ``policy`` (when the source needs them), asked for, and the label rows
        that came back (main process only)."""
        info: dict[str, Any] = {}
        queries = samples = None
        if self.source.samples_from_policy:
            if policy is None:
                raise ValueError("run_round: this label source needs the current policy to sample comparisons")
            queries, samples, info["sampling"] = self._sample_comparisons(policy, n, r)
        info.update(self.source.request(r, n, queries, samples) or {})
        block = self.wait_for_labels or self.reward_model is None
        return self.source.collect(r, block=block, timeout=self.label_timeout), info

    def _sample_comparisons(self, policy: nn.Module, n: int, r: int) -> tuple[list[str], list[list[str]], dict[str, int]]:
        """Exactly ``n`` comparisons (K samples each) from ``policy`` on new queries, drawing more queries when some
        are dropped (no truncate token)."""
        kept_q: list[str] = []
        kept_s: list[list[str]] = []
        drawn = dropped = 0
        rate = 1.0
        for attempt in range(20):
            need = n - len(kept_q)
            if need <= 0:
                break
            draw = need if attempt == 0 else min(8 * need, math.ceil(need / max(rate, 0.125)))
            batch = self._next_queries(draw)
            try:
                q, smp, stats = sample_candidates(
                    policy, self.tokenizer, batch, k=self.num_candidates, batch_size=self.sampling_batch_size,
                    seed=self.seed + 1_000 * (r + 1) + attempt, drop_untruncated=self.drop_untruncated, spec=self.spec,
                )
            except ValueError as err:
                if "were dropped" not in str(err):
                    raise
                q, smp = [], []
            drawn += len(batch)
            dropped += len(batch) - len(q)
            rate = max(len(kept_q) + len(q), 1) / drawn
            kept_q += q
            kept_s += smp
        if len(kept_q) < n:
            raise RuntimeError(
                f"round {r}: only {len(kept_q)} of {n} comparisons after drawing {drawn} queries ({dropped} dropped "
                "for a sample without the truncate token); lower truncate_after or set drop_untruncated=False"
            )
        return kept_q[:n], kept_s[:n], {"queries_drawn": drawn, "queries_dropped": dropped}

    def _next_queries(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            if self._query_pos >= len(self.queries):
                if not self._wrapped:
                    logger.warning("the %d label queries are used up; reusing them (with new samples)", len(self.queries))
                self._wrapped, self._query_pos = True, 0
            out.append(self.queries[self._query_pos])
            self._query_pos += 1
        return out

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _install(trainer: Any, model: Any) -> None:
        """Make ``model`` the reward of ``trainer``'s next rollouts (eval mode, dropout off, on its device)."""
        if isinstance(model, nn.Module):
            disable_dropout(model)
            model.eval()
            model.to(trainer.accelerator.device)
        trainer.reward_model = model

    def _current_policy(self) -> nn.Module:
        wrapper = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return getattr(wrapper, "policy", wrapper)

    def _run_due_rounds(self, step: int) -> None:
        bounds = self._update_boundaries or []
        while self.next_round < len(bounds) and bounds[self.next_round] <= step:
            self.run_round(self._current_policy(), step=step, episode=step * self.trainer.args.batch_size)

    def _log_round(self, record: dict[str, Any]) -> None:
        logs = {
            "online/round": float(record["round"]),
            "online/labels_total": float(record["labels_total"]),
            "online/new_labels": float(record["new_labels"]),
            "episode": float(record["episode"]),
        }
        for key in ("reward_gain", "reward_bias", "known_reward_of_samples", "known_reward_of_best"):
            if key in record:
                logs[f"online/{key}"] = float(record[key])
        for key in ("eval_accuracy", "eval_loss"):
            if key in record["rm_metrics"]:
                logs[f"online/rm_{key}"] = float(record["rm_metrics"][key])
        if self.trainer is not None and getattr(self.trainer, "is_in_train", False):
            self.trainer.log(logs)
        else:  # before train(): its TrainerState does not exist yet; log at on_train_begin
            self._pending_logs.append(logs)

    def _append(self, name: str, rows: list[dict[str, Any]], mode: str = "a") -> None:
        """Append JSON lines to ``output_dir/name`` (main process only: files are written once)."""
        if self.output_dir and self._main:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, name), mode, encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _append_new(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append ``rows``, already added to ``self.rows``/``self.rounds``; the run's first write rewrites both files
        whole instead (:meth:`_rewrite_files`, which writes them)."""
        if self._files_current:
            self._append(name, rows)
        else:
            self._rewrite_files()

    def _append_labels(self, rows: list[dict[str, Any]]) -> None:
        self._append_new("online_labels.jsonl", rows)

    def _write_record(self, record: dict[str, Any]) -> None:
        self._append_new("online_rounds.jsonl", [record])

    def _rewrite_files(self) -> None:
        """``online_labels.jsonl`` / ``online_rounds.jsonl`` holding exactly the labels and rounds so far (of this
        run, or of the checkpoint it resumed), each written to a temporary file and moved over the old one (a kill
        mid-way leaves the old file whole)."""
        for name, rows in (("online_labels.jsonl", self.rows), ("online_rounds.jsonl", self.rounds)):
            self._append(name + ".tmp", rows, mode="w")
            if self.output_dir and self._main:
                os.replace(os.path.join(self.output_dir, name + ".tmp"), os.path.join(self.output_dir, name))
        self._files_current = True

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides PPO's own checkpoint and the reward model's weights."""
        source = self.source.state_dict() if hasattr(self.source, "state_dict") else None
        return {"rows": self.rows, "rounds": self.rounds, "rm_metrics": self.rm_metrics,
                "labels_in_reward_model": self.labels_in_reward_model, "query_pos": self._query_pos,
                "wrapped": self._wrapped, "round_episode": self._round_episode, "source": source}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.rounds, self.rm_metrics = state["rows"], state["rounds"], state["rm_metrics"]
        self.labels_in_reward_model, self._query_pos = state["labels_in_reward_model"], state["query_pos"]
        self._wrapped = state["wrapped"]
        self._round_episode = {int(k): v for k, v in state["round_episode"].items()}
        if state.get("source") is not None and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])

    def save(self, checkpoint: str) -> None:
        """Write the loop's state and its current reward model into ``checkpoint`` (main process)."""
        if not self._main:
            return
        os.makedirs(checkpoint, exist_ok=True)
        with open(os.path.join(checkpoint, ONLINE_STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(self.state_dict(), f)
        if isinstance(self.reward_model, nn.Module):
            self.reward_model.save_pretrained(os.path.join(checkpoint, ONLINE_REWARD_MODEL_DIR))
            self.tokenizer.save_pretrained(os.path.join(checkpoint, ONLINE_REWARD_MODEL_DIR))

    def restore(self, checkpoint: str) -> Any:
        """Load the state and reward model :meth:`save` wrote into ``checkpoint``; returns the reward model (None when
        the run used a reward callable, which the caller must pass again)."""
        path = os.path.join(checkpoint, ONLINE_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: this checkpoint was not written by an online hf_prefs run")
        with open(path, encoding="utf-8") as f:
            self.load_state_dict(json.load(f))
        folder = os.path.join(checkpoint, ONLINE_REWARD_MODEL_DIR)
        if os.path.isdir(folder):
            self.reward_model, _ = load_reward_model(folder)
        self.restored_from = checkpoint
        self._rewrite_files()
        return self.reward_model

    def save_into_checkpoint(self, checkpoint: str) -> None:
        """Into every PPO checkpoint (the trainer calls it before Trainer writes the checkpoint's own files and deletes
        the older ones): the loop's state and the reward model in use."""
        self.save(checkpoint)

    def summary(self) -> dict[str, Any]:
        """Rounds run, labels in all, and the per-round records."""
        return {
            "rounds_run": len(self.rounds),
            "rounds_scheduled": self.schedule.rounds,
            "labels_total": len(self.rows),
            "rm_init": self.rm_init,
            "rounds": self.rounds,
        }

    # ------------------------------------------------------------------ TrainerCallback
    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None or self._update_boundaries is None:
            raise RuntimeError("run the online loop with loop.train(trainer), not as a plain callback")
        if state.global_step != 0 and self.restored_from is None:
            raise ValueError("resuming an online run: pass resume_from_checkpoint to loop.train (it restores the labels)")
        logs, self._pending_logs = self._pending_logs, []
        for entry in logs:
            self.trainer.log(entry)

    def on_step_begin(self, args, state, control, **kwargs):
        self._run_due_rounds(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Tag PPO update rows with ``online/round`` and ``online/labels_total`` (``Trainer.log`` stored a copy in the
        history before calling the callbacks, so that copy is tagged too)."""
        if not logs or "objective/kl" not in logs or not self.rounds:
            return
        extra = {"online/round": float(len(self.rounds) - 1), "online/labels_total": float(self.labels_in_reward_model)}
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step and "objective/kl" in state.log_history[-1]:
            state.log_history[-1].update(extra)
