"""Online label collection during RL (paper §2, summarization): the reward model is retrained as the policy moves.

The paper trains the reward model before the first PPO episode on labels of samples from the policy (= ρ then),
and retrains it 19 more times at evenly spaced points of RL, each time **from the pretrained LM with a fresh head,
for one epoch over all labels so far**; the new labels of each round come from samples of the **current** policy.
Offline collection is the special case of one round before RL.

- :class:`OnlineLabelSchedule`: how many labels each round adds and at which episode counts the rounds happen.
- :class:`OnlinePreferenceLoop`: runs the rounds. It is a ``TrainerCallback`` on ONE :class:`~hf_prefs.PPOTrainer`
  whose single ``train()`` call runs every PPO update; at the start of an update at which a round is due
  (``on_step_begin``) it samples K responses per new query from the current policy, gets the labels (a
  :class:`~hf_prefs.labelers.SimulatedLabeler`, the human :class:`~hf_prefs.label_app.store.LabelQueue`, or rows
  of a label file), appends them to the label dataset, retrains the reward model (with the paper's normalization,
  done by the training function) and swaps it into ``trainer.reward_model``.

What carries across rounds: since ``train()`` is never restarted, everything of PPO does — the policy and value
head, the KL controller ``trainer.kl_ctl`` (β is not reset to ``kl_coef``), the Adam state, the learning-rate
schedule (linear decay over ALL updates of the run), ``state.global_step`` and the log history, the sampling and
minibatch-shuffle generators and the query stream. Only ``trainer.reward_model`` changes. Not supported: several
processes (each would label and train its own reward model) and resuming an online run from a PPO checkpoint
(the labels are written to ``output_dir`` after each round, but the loop does not reload them).

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
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from datasets import Dataset, Features, Value
from torch import nn
from transformers import TrainerCallback

from .labelers import SimulatedLabeler, sample_candidates

__all__ = [
    "OnlineLabelSchedule",
    "OnlinePreferenceLoop",
    "LabelSource",
    "SimulatedLabelSource",
    "QueueLabelSource",
    "FileLabelSource",
    "as_label_source",
    "RewardTrainFn",
    "schedule_from_pipeline",
    "pipeline_online_loop",
    "ONLINE_LABEL_FEATURES",
]

logger = logging.getLogger(__name__)

#: Columns of :meth:`OnlinePreferenceLoop.labels_dataset`: the label schema plus the round that requested the
#: label and the PPO episode count at that time.
ONLINE_LABEL_FEATURES = Features(
    {
        "query": Value("string"),
        "samples": [Value("string")],
        "best": Value("int64"),
        "round": Value("int64"),
        "episode": Value("int64"),
    }
)

#: ``fn(labels, init_model, round) -> reward_model`` or ``(reward_model, metrics)``. ``init_model`` is ``None`` for a
#: reward model trained from the base trunk with a fresh head (paper), else the current reward model (``continue``).
RewardTrainFn = Callable[[Dataset, "nn.Module | None", int], Any]


# ----------------------------------------------------------------------------------------------------------------
# schedule
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineLabelSchedule:
    """How many labels each round collects and at which episode counts the rounds happen.

    With ``first_round_before_rl`` (paper) round r of R happens at episode ``floor(r·T/R)``: round 0 before the
    first PPO episode, the others evenly spaced over the ``T = total_episodes`` (paper: R = 20, i.e. 19
    retrainings during RL). Without it, the R rounds split (0, T) evenly: episode ``floor((r+1)·T/(R+1))`` (the
    reward model used before round 0 must then come from elsewhere). ``rounds=1`` with the first round before RL is
    offline collection.

    Args:
        rounds: R >= 1.
        labels_per_round: comparisons per round: one int for every round, or one per round.
        first_round_before_rl: round 0 at episode 0.
    """

    rounds: int
    labels_per_round: int | Sequence[int]
    first_round_before_rl: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an int >= 1, got {self.rounds!r}")
        per = self.labels_per_round
        per = [per] * self.rounds if isinstance(per, int) and not isinstance(per, bool) else list(per)
        if len(per) != self.rounds:
            raise ValueError(f"labels_per_round has {len(per)} entries for {self.rounds} rounds")
        for r, n in enumerate(per):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"labels_per_round[{r}] must be an int >= 1, got {n!r}")
        object.__setattr__(self, "labels_per_round", tuple(per))

    @classmethod
    def even(cls, total_labels: int, rounds: int, first_round_before_rl: bool = True) -> OnlineLabelSchedule:
        """``total_labels`` split over ``rounds`` as evenly as possible (the first rounds get the remainder)."""
        if total_labels < rounds:
            raise ValueError(f"total_labels ({total_labels}) must be >= rounds ({rounds}): every round needs a label")
        q, rem = divmod(total_labels, rounds)
        return cls(rounds, [q + (r < rem) for r in range(rounds)], first_round_before_rl)

    @classmethod
    def offline(cls, labels: int) -> OnlineLabelSchedule:
        """All labels in one round before RL."""
        return cls(1, labels, True)

    def labels_in_round(self, r: int) -> int:
        return self.labels_per_round[r]  # type: ignore[index]

    @property
    def total_labels(self) -> int:
        return sum(self.labels_per_round)  # type: ignore[arg-type]

    def cumulative_labels(self) -> list[int]:
        """Labels collected after each round: ``[n_0, n_0 + n_1, ...]``."""
        out, total = [], 0
        for n in self.labels_per_round:  # type: ignore[union-attr]
            total += n
            out.append(total)
        return out

    def episode_boundaries(self, total_episodes: int) -> list[int]:
        """Episode count at which each round happens (strictly increasing, all < ``total_episodes``)."""
        t, r_total = int(total_episodes), self.rounds
        if t < 1:
            raise ValueError(f"total_episodes must be >= 1, got {total_episodes}")
        if self.first_round_before_rl:
            out = [r * t // r_total for r in range(r_total)]
        else:
            out = [(r + 1) * t // (r_total + 1) for r in range(r_total)]
        if any(b <= a for a, b in zip(out, out[1:])) or (not self.first_round_before_rl and out[0] == 0):
            raise ValueError(f"rounds: {r_total} rounds do not fit in {t} episodes (boundaries {out})")
        return out

    def update_boundaries(self, total_episodes: int, batch_size: int) -> list[int]:
        """PPO update (0-based) before which each round runs: the first update starting at or after the round's
        episode, ``ceil(episode / batch_size)``. Raises when two rounds fall before the same update or a round
        after the last one (``ceil(total_episodes / batch_size)`` updates)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        episodes = self.episode_boundaries(total_episodes)
        updates = [-(-e // batch_size) for e in episodes]
        n_updates = -(-int(total_episodes) // batch_size)
        if any(b <= a for a, b in zip(updates, updates[1:])) or updates[-1] >= n_updates:
            raise ValueError(
                f"rounds: {self.rounds} rounds at episodes {episodes} do not fall before distinct PPO updates of "
                f"{batch_size} episodes ({n_updates} updates in all; got updates {updates}); use fewer rounds or "
                "more episodes"
            )
        return updates


# ----------------------------------------------------------------------------------------------------------------
# label sources
# ----------------------------------------------------------------------------------------------------------------
class LabelSource(Protocol):
    """Where a round's labels come from.

    ``samples_from_policy``: whether the loop samples comparisons from the current policy for ``request``.
    ``request(round, n, queries, samples)`` asks for the round's labels (``queries``/``samples`` are ``None`` when
    ``samples_from_policy`` is False); ``collect(round, block, timeout)`` returns the label rows (``query``,
    ``samples``, ``best``, ``round``) that became available since the last call, of this or earlier rounds; with
    ``block`` it first waits for the round's labels (up to ``timeout`` seconds, then returns what is there).
    """

    samples_from_policy: bool

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]: ...

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]: ...


class SimulatedLabelSource:
    """A :class:`~hf_prefs.labelers.SimulatedLabeler` labels each round at once (the paper's mock human)."""

    samples_from_policy = True

    def __init__(self, labeler: SimulatedLabeler):
        self.labeler = labeler
        self._ready: list[dict[str, Any]] = []

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        known = self.labeler.score(queries, samples)
        best = [self.labeler.choose(r) for r in known]
        self._ready += [{"query": q, "samples": list(s), "best": b, "round": round} for q, s, b in zip(queries, samples, best)]
        flat = [x for r in known for x in r]
        return {
            "known_reward_of_samples": sum(flat) / len(flat),  # mean known reward of the current policy's samples
            "known_reward_of_best": sum(r[b] for r, b in zip(known, best)) / len(best),
        }

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        out, self._ready = self._ready, []
        return out


class QueueLabelSource:
    """Human labels through a :class:`~hf_prefs.label_app.store.LabelQueue`.

    ``request`` enqueues the round's comparisons under the queue round ``round_format.format(round=r)``; ``collect``
    returns every live label of this loop's rounds not returned before (labels that arrive late, or are added from
    a file with ``LabelQueue.add_labels`` / ``hf-prefs label import``, are picked up at the next round). A round of
    n comparisons yields n · ``labels_per_item`` labels once complete.
    """

    samples_from_policy = True

    def __init__(self, queue: Any, round_format: str = "online-{round}", poll_s: float = 0.5):
        self.queue, self.round_format, self.poll_s = queue, round_format, poll_s
        self._rounds: dict[str, int] = {}
        self._seen: set[str] = set()

    def _key(self, round: int) -> str:
        return self.round_format.format(round=round)

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        key = self._key(round)
        self._rounds[key] = round
        self.queue.put_round(key, list(zip(queries, samples)))
        print(f"[hf_prefs] round {round}: {n} comparisons queued as {key!r} in {self.queue.path}")
        return {"queue_round": key}

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        if block:
            try:
                self.queue.wait_round(self._key(round), timeout=timeout, poll_s=self.poll_s)
            except TimeoutError as err:
                logger.warning("%s; continuing with the labels given so far", err)
        out = []
        for row in self.queue.labels():
            if row["round"] in self._rounds and row["label_id"] not in self._seen:
                self._seen.add(row["label_id"])
                out.append({"query": row["query"], "samples": list(row["samples"]), "best": int(row["best"]),
                            "round": self._rounds[row["round"]]})
        return out


class FileLabelSource:
    """Rows of a label dataset (e.g. a released ``online_45k.json``) fill the rounds in order: round r takes the
    next ``labels_per_round[r]`` rows. Its samples were not drawn from this run's policy."""

    samples_from_policy = False

    def __init__(self, labels: Dataset):
        self.labels = labels
        self._next = 0
        self._ready: list[dict[str, Any]] = []

    def request(self, round: int, n: int, queries: list[str] | None, samples: list[list[str]] | None) -> dict[str, Any]:
        if self._next + n > len(self.labels):
            raise ValueError(
                f"labels_per_round: round {round} needs rows {self._next}..{self._next + n - 1} but the label file "
                f"has {len(self.labels)} rows"
            )
        rows = self.labels.select(range(self._next, self._next + n))
        self._ready += [{"query": r["query"], "samples": list(r["samples"]), "best": int(r["best"]), "round": round} for r in rows]
        info = {"file_rows": [self._next, self._next + n]}
        self._next += n
        return info

    def collect(self, round: int, block: bool, timeout: float | None = None) -> list[dict[str, Any]]:
        out, self._ready = self._ready, []
        return out


def as_label_source(source: Any) -> LabelSource:
    """A :class:`LabelSource` from a ``SimulatedLabeler``, a ``LabelQueue``, a label ``Dataset`` or a source."""
    if isinstance(source, SimulatedLabeler):
        return SimulatedLabelSource(source)
    if isinstance(source, Dataset):
        from .labels import validate_labels

        return FileLabelSource(validate_labels(source))
    from .label_app.store import LabelQueue

    if isinstance(source, LabelQueue):
        return QueueLabelSource(source)
    if hasattr(source, "request") and hasattr(source, "collect"):
        return source
    raise TypeError(
        "label_source must be a SimulatedLabeler, a LabelQueue, a label Dataset or an object with request/collect, "
        f"got {type(source).__name__}"
    )


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _Sampling:
    k: int = 4
    response_length: int = 24
    temperature: float = 0.7
    truncate_token: str | int | None = "."
    truncate_after: int = 16
    batch_size: int = 32
    drop_untruncated: bool = True


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
        label_source: a :class:`~hf_prefs.labelers.SimulatedLabeler`, a :class:`~hf_prefs.label_app.store.LabelQueue`
            (human labels), a label ``Dataset`` whose rows fill the rounds in order, or a :class:`LabelSource`.
        train_reward_model: ``fn(labels, init_model, round) -> reward_model | (reward_model, metrics)``; it should
            normalize the reward model (paper: before and after training, on ρ samples), as
            :func:`hf_prefs.pipeline.train_reward_model` does.
        queries: the pool of label queries (texts or a dataset with ``query``), used in order, new ones each round
            (wrapping around, with a warning, when exhausted).
        tokenizer: the policy's tokenizer.
        args: a :class:`~hf_prefs.PPOConfig` giving the sampling settings (``response_length``, ``temperature``,
            truncate token and ``truncate_after``) and ``seed``; keyword arguments below override it.
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
        response_length: int | None = None,
        temperature: float | None = None,
        truncate_token: str | int | None = None,
        truncate_after: int | None = None,
        seed: int | None = None,
        output_dir: str | None = None,
    ):
        if not isinstance(schedule, OnlineLabelSchedule):
            raise TypeError(f"schedule must be an OnlineLabelSchedule, got {type(schedule).__name__}")
        if rm_init not in ("fresh", "continue"):
            raise ValueError(f"rm_init must be 'fresh' or 'continue', got {rm_init!r}")
        if num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
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
        if args is not None:
            tid = getattr(args, "truncate_token_id", None)
            base = _Sampling(
                k=num_candidates, response_length=args.response_length, temperature=args.temperature,
                truncate_token=tid if tid is not None else args.truncate_token, truncate_after=args.truncate_after,
            )
            seed = args.seed if seed is None else seed
        else:
            base = _Sampling(k=num_candidates)
        for name, value in (("response_length", response_length), ("temperature", temperature),
                            ("truncate_token", truncate_token), ("truncate_after", truncate_after)):
            if value is not None:
                setattr(base, name, value)
        base.batch_size, base.drop_untruncated = sampling_batch_size, drop_untruncated
        self.sampling = base
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
        self._query_pos = 0
        self._wrapped = False
        self._update_boundaries: list[int] | None = None
        self._pending_logs: list[dict[str, float]] = []
        self._round_episode: dict[int, int] = {}
        if output_dir:  # a new run starts new files (they are appended to after every round)
            os.makedirs(output_dir, exist_ok=True)
            for name in ("online_labels.jsonl", "online_rounds.jsonl"):
                open(os.path.join(output_dir, name), "w").close()

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

    def train(self, trainer: Any, **train_kwargs: Any) -> Any:
        """Run PPO with ``trainer`` (one ``train()`` call) and the schedule's rounds at their updates."""
        if train_kwargs.get("resume_from_checkpoint"):
            raise NotImplementedError("resuming an online run from a PPO checkpoint is not supported")
        if trainer.accelerator.num_processes > 1:
            raise NotImplementedError(
                "the online loop runs in one process (several would each label and train their own reward model)"
            )
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
        queries = samples = None
        if self.source.samples_from_policy:
            if policy is None:
                raise ValueError("run_round: this label source needs the current policy to sample comparisons")
            queries, samples, stats = self._sample_comparisons(policy, n, r)
            record["sampling"] = stats
        record.update(self.source.request(r, n, queries, samples) or {})
        block = self.wait_for_labels or self.reward_model is None
        new = self.source.collect(r, block=block, timeout=self.label_timeout)
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
        try:
            from .normalization import get_reward_normalization

            record["reward_gain"], record["reward_bias"] = get_reward_normalization(self.reward_model)
        except Exception:  # a reward callable has no gain/bias
            pass
        record["labels_s"], record["reward_model_s"] = t1 - t0, time.time() - t1
        self.rounds.append(record)
        self._write_record(record)
        self._log_round(record)
        print(
            f"[hf_prefs] online round {r} at episode {episode}: {len(new)} new labels, {len(self.rows)} in all; "
            f"reward model {'retrained' if new else 'kept'} ({time.time() - t0:.0f} s)"
        )
        return record

    def _sample_comparisons(self, policy: nn.Module, n: int, r: int) -> tuple[list[str], list[list[str]], dict[str, int]]:
        """Exactly ``n`` comparisons (K samples each) from ``policy`` on new queries, drawing more queries when some
        are dropped (no truncate token)."""
        s = self.sampling
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
                    policy, self.tokenizer, batch, k=s.k, response_length=s.response_length, temperature=s.temperature,
                    truncate_token=s.truncate_token, truncate_after=s.truncate_after, batch_size=s.batch_size,
                    seed=self.seed + 1_000 * (r + 1) + attempt, drop_untruncated=s.drop_untruncated,
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
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(model)
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

    def _append_labels(self, rows: list[dict[str, Any]]) -> None:
        if self.output_dir and rows:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "online_labels.jsonl"), "a", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _write_record(self, record: dict[str, Any]) -> None:
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "online_rounds.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

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
        if state.global_step != 0:
            raise NotImplementedError("resuming an online run from a PPO checkpoint is not supported")
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


# ----------------------------------------------------------------------------------------------------------------
# pipeline (label_mode="online")
# ----------------------------------------------------------------------------------------------------------------
def schedule_from_pipeline(pa: Any) -> OnlineLabelSchedule:
    """The schedule of a recipe: ``online_rounds`` rounds of ``online_labels_per_round`` comparisons (default:
    ``num_label_queries`` split evenly), the first before RL. Errors name the field."""
    per = pa.online_labels_per_round
    try:
        if per:
            return OnlineLabelSchedule(pa.online_rounds, list(per) if len(per) > 1 else per[0])
        return OnlineLabelSchedule.even(pa.num_label_queries, pa.online_rounds)
    except ValueError as err:
        name = "online_labels_per_round" if per else "online_rounds"
        raise ValueError(f"{name}: {err}") from None


def pipeline_online_loop(
    pa: Any, cfg: Any, rho: nn.Module, tokenizer: Any, base_model: str, output_dir: str,
    label_queries: Sequence[str], file_labels: Dataset | None = None,
) -> OnlinePreferenceLoop:
    """The loop a recipe runs with ``label_mode=online``: the label source of ``label_source`` (simulated labeler,
    label file rows filling the rounds in order, or the human queue), reward models trained by
    :func:`hf_prefs.pipeline.train_reward_model` (normalized on rho samples; the latest is saved to
    ``output_dir/reward_model``)."""
    import dataclasses

    from .pipeline import make_known_reward, train_reward_model

    schedule = schedule_from_pipeline(pa)
    if pa.label_source == "simulated":
        source: Any = SimulatedLabeler(make_known_reward(pa.known_reward), seed=cfg.seed, noise=pa.labeler_noise)
    elif pa.label_source == "file":
        if file_labels is None or len(file_labels) < schedule.total_labels:
            have = 0 if file_labels is None else len(file_labels)
            raise ValueError(f"online_labels_per_round: the rounds need {schedule.total_labels} labels, the label file has {have}")
        source = file_labels
    else:
        from .label_app.store import LabelQueue

        source = LabelQueue(pa.label_queue_dir)

    def train_rm(labels: Dataset, init_model: nn.Module | None, round: int) -> tuple[nn.Module, dict[str, float]]:
        run_pa = pa
        if pa.rm_eval_fraction > 0 and len(labels) * pa.rm_eval_fraction < 1:  # too few to hold any out
            run_pa = dataclasses.replace(pa, rm_eval_fraction=0.0)
        return train_reward_model(run_pa, cfg, labels.select_columns(["query", "samples", "best"]), rho, tokenizer,
                                  base_model, output_dir, init_model=init_model)

    return OnlinePreferenceLoop(
        schedule, source, train_rm, label_queries, tokenizer, args=cfg, num_candidates=pa.num_candidates,
        rm_init=pa.online_rm_init, wait_for_labels=pa.online_wait_for_labels, label_timeout=pa.label_timeout,
        drop_untruncated=pa.label_drop_untruncated, sampling_batch_size=pa.sampling_batch_size, output_dir=output_dir,
    )
