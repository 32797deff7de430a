"""Labelers and the construction of best-of-K label datasets from samples of ρ.

- :class:`SimulatedLabeler` is the paper's mock human (§3.1.1): it knows a reward r_s (e.g. a sentiment
  classifier's log-odds) and picks the sample with the highest r_s; ties are broken at random (seeded). With
  ``noise = τ > 0`` it instead picks sample i with probability softmax(r_s / τ)_i, the Boltzmann-rational
  labeler that the K-way loss models.
- :func:`sample_candidates` samples K responses per query from ρ and cuts them by the run's
  :class:`~hf_prefs.core.rollout.RolloutSpec` (the same rule PPO, the evaluation and the online loop apply); a query
  with an invalid sample (paper: no truncate token at index >= ``truncate_after``) is dropped (the paper does not
  show those samples to labelers). :func:`sample_label_dataset` then lets a labeler pick the best of each K.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from ..core.rollout import RolloutSpec
from ..models.generation import sample_texts, seeded_generator
from .schema import validate_labels

__all__ = [
    "SimulatedLabeler",
    "LabelSamplingStats",
    "rollout_spec_of",
    "draw_candidates",
    "check_some_kept",
    "sample_candidates",
    "sample_label_dataset",
]

logger = logging.getLogger(__name__)

#: A known reward: ``reward_fn(texts) -> rewards`` (a list or a 1D tensor, one per text), e.g.
#: :func:`hf_prefs.tasks.known_rewards.vader_log_odds`.
KnownReward = Callable[[list[str]], Sequence[float] | torch.Tensor]


class SimulatedLabeler:
    """The paper's mock human: picks the sample with the highest known reward.

    Args:
        reward_fn: ``reward_fn(texts) -> rewards``, one float per text.
        seed: seed of the tie-breaking (and, with ``noise``, choice) randomness.
        noise: Boltzmann temperature τ. 0 (default): always a sample with the highest reward, ties uniformly at
            random. τ > 0: sample i with probability ``exp(r_i/τ) / Σ_j exp(r_j/τ)``.
        score_with_query: score ``query + sample`` instead of the sample alone (default: the sample alone, so
            the pick depends on what the policy wrote, not on the prompt).
    """

    def __init__(
        self, reward_fn: KnownReward, seed: int | None = None, noise: float = 0.0, score_with_query: bool = False
    ):
        if noise < 0 or not math.isfinite(noise):
            raise ValueError(f"noise must be a finite temperature >= 0, got {noise}")
        self.reward_fn = reward_fn
        self.noise = float(noise)
        self.score_with_query = score_with_query
        self._rng = random.Random(seed)

    def score(self, queries: Sequence[str], samples: Sequence[Sequence[str]]) -> list[list[float]]:
        """Known rewards ``[[r(y_0), ..., r(y_{K-1})], ...]`` of each query's samples (one ``reward_fn`` call)."""
        if len(queries) != len(samples):
            raise ValueError(f"got {len(queries)} queries but {len(samples)} sample lists")
        for j, group in enumerate(samples):
            if isinstance(group, str):  # a bare string is a sequence of characters, not of samples
                raise TypeError(f"samples[{j}] is a string; each query needs a list of its samples")
        texts = [(q + s) if self.score_with_query else s for q, group in zip(queries, samples) for s in group]
        flat = self.reward_fn(texts)
        flat = flat.tolist() if isinstance(flat, torch.Tensor) else [float(r) for r in flat]
        if len(flat) != len(texts):
            raise ValueError(f"reward_fn returned {len(flat)} rewards for {len(texts)} texts")
        out, i = [], 0
        for j, group in enumerate(samples):
            rewards = flat[i : i + len(group)]
            bad = [k for k, r in enumerate(rewards) if not math.isfinite(r)]
            if bad:
                raise ValueError(f"reward_fn returned {rewards[bad[0]]} for sample {bad[0]} of query {j}")
            out.append(rewards)
            i += len(group)
        return out

    def choose(self, rewards: Sequence[float]) -> int:
        """The index picked among samples with known ``rewards``."""
        if len(rewards) < 2:
            raise ValueError(f"a comparison needs at least 2 samples, got {len(rewards)}")
        if self.noise > 0:
            top = max(rewards)
            weights = [math.exp((r - top) / self.noise) for r in rewards]
            return self._rng.choices(range(len(rewards)), weights=weights)[0]
        top = max(rewards)
        return self._rng.choice([i for i, r in enumerate(rewards) if r == top])

    def label(self, query: str, samples: Sequence[str]) -> int:
        """Index of the best of ``samples`` for ``query``."""
        return self.label_batch([query], [samples])[0]

    def label_batch(self, queries: Sequence[str], samples: Sequence[Sequence[str]]) -> list[int]:
        """Best index per query (the known reward is computed in one call for all samples)."""
        return [self.choose(r) for r in self.score(queries, samples)]

    def state_dict(self) -> dict[str, Any]:
        """The tie-breaking / choice RNG's state (JSON-serialisable), for resuming a run."""
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

    def __repr__(self) -> str:
        return f"SimulatedLabeler(reward_fn={self.reward_fn!r}, noise={self.noise})"


@dataclass
class LabelSamplingStats:
    """What :func:`sample_label_dataset` kept and dropped."""

    queries: int
    labels: int
    dropped_no_truncation: int
    dropped_empty: int

    @property
    def dropped(self) -> int:
        return self.dropped_no_truncation + self.dropped_empty


def _queries_list(queries: Sequence[str] | Dataset) -> list[str]:
    if isinstance(queries, Dataset):
        if "query" not in queries.column_names:
            raise ValueError(f"the query dataset needs a 'query' column; got {queries.column_names}")
        queries = queries["query"]
    queries = list(queries)
    if not queries:
        raise ValueError("no queries given")
    return queries


def rollout_spec_of(
    tokenizer: Any,
    spec: RolloutSpec | None,
    response_length: int = 24,
    temperature: float = 0.7,
    truncate_token: str | int | None = ".",
    truncate_after: int = 16,
) -> RolloutSpec:
    """``spec`` itself, or (the keyword form of the labeling functions) the paper's rule built from the arguments:
    cut after the first ``truncate_token`` at index >= ``truncate_after``, rows without one invalid."""
    if spec is not None:
        return spec
    return RolloutSpec.build(
        tokenizer, response_length=response_length, temperature=temperature, truncate_token=truncate_token,
        truncate_after=truncate_after,
    )


def draw_candidates(
    policy: torch.nn.Module,
    tokenizer: Any,
    queries: list[str],
    k: int,
    spec: RolloutSpec,
    batch_size: int,
    seed: int | None,
    drop_untruncated: bool = True,
    require_kept: bool = True,
) -> tuple[list[int], list[list[str]], LabelSamplingStats]:
    """``(kept_indices, samples, stats)``: the positions in ``queries`` of the kept queries, their K cut samples, and
    the counts (see :func:`sample_candidates`). ``require_kept``: log the counts and raise when no query is kept
    (one process of several passes False and logs and checks the total of all processes with
    :func:`check_some_kept`)."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if not queries and not require_kept:  # a process with no share of the queries
        return [], [], LabelSamplingStats(queries=0, labels=0, dropped_no_truncation=0, dropped_empty=0)
    ids = sample_texts(policy, tokenizer, queries, spec, k, batch_size, seeded_generator(policy, seed))  # (N·K, Lr)
    lengths, valid = spec.cut(ids)  # (N·K,) x 2
    texts = spec.texts(tokenizer, ids, lengths)

    kept_idx, kept_samples = [], []
    no_trunc = empty = 0
    for i in range(len(queries)):
        group = texts[i * k : (i + 1) * k]
        if drop_untruncated and not bool(valid[i * k : (i + 1) * k].all()):
            no_trunc += 1
        elif any(not s.strip() for s in group):
            empty += 1
        else:
            kept_idx.append(i)
            kept_samples.append(group)
    stats = LabelSamplingStats(
        queries=len(queries), labels=len(kept_idx), dropped_no_truncation=no_trunc, dropped_empty=empty
    )
    if require_kept:  # else one process's share of several: the caller logs and checks their total
        check_some_kept(stats, spec)
    return kept_idx, kept_samples, stats


def check_some_kept(stats: LabelSamplingStats, spec: RolloutSpec) -> None:
    """Log the counts kept and dropped, and raise when every query was dropped (``stats``: the counts of one process,
    or the sum over all of them)."""
    logger.info(
        "%d of %d queries kept; dropped %d with an invalid sample (no truncate token at index >= %d) and %d with a "
        "blank sample", stats.labels, stats.queries, stats.dropped_no_truncation, spec.truncate_after,
        stats.dropped_empty,
    )
    if not stats.labels:
        raise ValueError(
            f"all {stats.queries} queries were dropped ({stats.dropped_no_truncation} had a sample without the truncate "
            f"token {spec.truncate_token_id} at index >= {spec.truncate_after}); sample longer responses or lower "
            "truncate_after"
        )


def sample_candidates(
    policy: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str] | Dataset,
    k: int = 4,
    response_length: int = 24,
    temperature: float = 0.7,
    truncate_token: str | int | None = ".",
    truncate_after: int = 16,
    batch_size: int = 32,
    seed: int | None = None,
    drop_untruncated: bool = True,
    *,
    spec: RolloutSpec | None = None,
) -> tuple[list[str], list[list[str]], LabelSamplingStats]:
    """Sample K responses per query from ρ and cut them: the comparisons to show a labeler.

    The rule is ``spec`` (:class:`~hf_prefs.core.rollout.RolloutSpec`; what PPO and the evaluation use), or, without
    one, the paper's books setting built from the keyword arguments (K=4, 24 tokens at T=0.7, cut after the first
    '.' at index >= 16). Every sample is exactly ``response_length`` tokens (no stop at EOS), cut by
    :func:`hf_prefs.core.rollout.cut_responses`. A query is dropped when any of its K samples is invalid (paper: no
    truncate token at index >= ``truncate_after``; the paper does not show those to labelers) or decodes to blank
    text; the counts are logged and returned.

    Args:
        policy: ρ, a causal LM. tokenizer: its tokenizer.
        queries: query texts, or a dataset with a ``query`` column.
        batch_size: sampling batch size in rows (``batch_size // k`` queries, each encoded once for its K samples).
        seed: seed of the sampling generator.
        drop_untruncated: ``True`` (paper) drops a query with an invalid sample; ``False`` keeps such samples whole
            (uncut) — a CPU-budget deviation for small models that rarely end a sentence inside the window; PPO
            still gives them the penalty.

    Returns:
        ``(kept_queries, samples, stats)``: the queries kept, their K cut samples each, and a
        :class:`LabelSamplingStats`.
    """
    queries = _queries_list(queries)
    spec = rollout_spec_of(tokenizer, spec, response_length, temperature, truncate_token, truncate_after)
    kept_idx, samples, stats = draw_candidates(policy, tokenizer, queries, k, spec, batch_size, seed, drop_untruncated)
    return [queries[i] for i in kept_idx], samples, stats


def sample_label_dataset(
    policy: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str] | Dataset,
    labeler: SimulatedLabeler,
    k: int = 4,
    response_length: int = 24,
    temperature: float = 0.7,
    truncate_token: str | int | None = ".",
    truncate_after: int = 16,
    batch_size: int = 32,
    seed: int | None = None,
    return_stats: bool = False,
    drop_untruncated: bool = True,
    *,
    spec: RolloutSpec | None = None,
) -> Dataset | tuple[Dataset, LabelSamplingStats]:
    """:func:`sample_candidates`, then ``labeler`` picks the best of each K: a best-of-K label dataset.

    Args: as :func:`sample_candidates`, plus ``labeler`` (``score`` + ``choose``, e.g. :class:`SimulatedLabeler`)
    and ``return_stats`` (also return the :class:`LabelSamplingStats`).

    Returns:
        A dataset in the label schema (``query``, ``samples`` [K], ``best``) plus ``known_rewards`` [K] (the
        labeler's rewards, for analysis) and ``query_index`` (position in ``queries``).
    """
    queries = _queries_list(queries)
    spec = rollout_spec_of(tokenizer, spec, response_length, temperature, truncate_token, truncate_after)
    kept_idx, samples, stats = draw_candidates(policy, tokenizer, queries, k, spec, batch_size, seed, drop_untruncated)
    kept_q = [queries[i] for i in kept_idx]
    known = labeler.score(kept_q, samples)
    best = [labeler.choose(r) for r in known]
    dataset = validate_labels(
        Dataset.from_dict(
            {"query": kept_q, "samples": samples, "best": best, "known_rewards": known, "query_index": kept_idx}
        ),
        k=k,
    )
    return (dataset, stats) if return_stats else dataset
