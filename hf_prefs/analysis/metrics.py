"""Evaluation metrics: ROUGE for the summarization tasks, win rate between two policies.

ROUGE (the paper's summarization tables report ROUGE-1/2/L F1): computed with ``evaluate.load("rouge")`` (its
metric script lives on the Hugging Face Hub); where the Hub is unreachable the same scorer is called directly
from the ``rouge_score`` package that the script wraps, so both paths give identical numbers:

    ROUGE-n F1(pred, ref) = 2·P·R / (P + R),  P = overlap / |n-grams(pred)|,  R = overlap / |n-grams(ref)|
    (ROUGE-L: longest common subsequence instead of n-gram overlap), averaged over examples.

Win rate of policy A over policy B on the same queries under a judge j (a reward model, a known reward):

    w = (1/n) Σ_i [ 1(j(x_i, a_i) > j(x_i, b_i)) + ½·1(j(x_i, a_i) = j(x_i, b_i)) ],   SE = std_i(outcome_i) / √n

Before/after on the same queries (paired; the evaluations share the sampling seed):

    Δ = (1/n) Σ_i (a_i − b_i),   SE(Δ) = std_i(a_i − b_i) / √n

A noiseless simulated labeler choosing between a_i and b_i picks the one with the higher known reward, so its
win rate is this w with j = the known reward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["ROUGE_TYPES", "rouge", "win_rate", "paired_difference", "compare_policies"]

logger = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge_from_evaluate(predictions: list[str], references: list[str], types: list[str], use_stemmer: bool) -> dict[str, list[float]]:
    import evaluate

    metric = evaluate.load("rouge")
    out = metric.compute(predictions=predictions, references=references, rouge_types=types, use_stemmer=use_stemmer,
                         use_aggregator=False)
    return {t: [float(v) for v in out[t]] for t in types}


def _rouge_from_package(predictions: list[str], references: list[str], types: list[str], use_stemmer: bool) -> dict[str, list[float]]:
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError("ROUGE needs the rouge-score package: pip install 'hf-prefs[eval]'") from err
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return {t: [s[t].fmeasure for s in scores] for t in types}


def rouge(
    predictions: Sequence[str],
    references: Sequence[str],
    rouge_types: Sequence[str] = ROUGE_TYPES,
    use_stemmer: bool = True,
    per_example: bool = False,
) -> dict[str, Any]:
    """Mean ROUGE F1 per type (``{"rouge1": 0.41, ...}``) of ``predictions`` against ``references``.

    ``per_example=True`` returns the per-example F1 lists instead. Uses ``evaluate.load("rouge")``; offline
    (``HF_HUB_OFFLINE=1`` or the Hub unreachable) the ``rouge_score`` scorer it wraps, with the same arguments.
    """
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"references: {len(references)} references for {len(predictions)} predictions")
    if not predictions:
        raise ValueError("predictions: nothing to score")
    types = list(rouge_types)
    unknown = [t for t in types if t not in ROUGE_TYPES and not (t.startswith("rouge") and t[5:].isdigit())]
    if unknown:
        raise ValueError(f"rouge_types: unknown {unknown}; use {ROUGE_TYPES} or rougeN")
    try:  # evaluate honours HF_HUB_OFFLINE itself and raises at once when the script cannot be fetched
        scores = _rouge_from_evaluate(predictions, references, types, use_stemmer)
    except Exception as err:  # the metric script could not be fetched: same scorer, from the package
        logger.info("evaluate.load('rouge') failed (%s); scoring with rouge_score directly", type(err).__name__)
        scores = _rouge_from_package(predictions, references, types, use_stemmer)
    if per_example:
        return scores
    return {t: float(sum(v) / len(v)) for t, v in scores.items()}


def _paired(a: Sequence[float], b: Sequence[float], field: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two equally long, non-empty 1-D float64 tensors, else a ValueError naming ``field``."""
    ta = torch.as_tensor(list(a), dtype=torch.float64)
    tb = torch.as_tensor(list(b), dtype=torch.float64)
    if ta.shape != tb.shape or ta.ndim != 1 or ta.numel() == 0:
        raise ValueError(f"{field}: need two equally long non-empty lists, got {tuple(ta.shape)} and {tuple(tb.shape)}")
    return ta, tb


def _mean_and_se(x: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error std(x) / √n (NaN for a single value)."""
    n = x.numel()
    se = float(x.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return float(x.mean()), se


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> tuple[float, float]:
    """Paired win rate of A over B, ties counted half, and its standard error (see the module docstring)."""
    a, b = _paired(scores_a, scores_b, "scores_b")
    return _mean_and_se((a > b).double() + 0.5 * (a == b).double())


def paired_difference(after: Sequence[float], before: Sequence[float]) -> tuple[float, float]:
    """Mean per-query difference ``after − before`` and its standard error (see the module docstring)."""
    a, b = _paired(after, before, "before")
    return _mean_and_se(a - b)


def compare_policies(
    policy_a: torch.nn.Module,
    policy_b: torch.nn.Module,
    tokenizer: Any,
    queries: Sequence[str],
    judge: Callable[[list[str], list[str]], Sequence[float]],
    **sampling: Any,
) -> dict[str, float]:
    """Sample one response per query from each policy (:func:`evaluate_policy`, same seed for both) and return the
    win rate of A over B under ``judge(queries, responses)`` with its SE and both policies' mean judge scores.

    ``sampling``: ``response_length``, ``temperature``, ``truncate_token_id``, ``truncate_after``, ``batch_size``,
    ``seed`` as in :func:`hf_prefs.analysis.evaluate.evaluate_policy` (the judge sees the truncated texts).
    """
    from hf_prefs.analysis.evaluate import evaluate_policy

    sampling.setdefault("penalty_reward_value", -1.0)
    runs = [evaluate_policy(p, tokenizer, queries, reward_fn=judge, **sampling) for p in (policy_a, policy_b)]
    rate, se = win_rate(runs[0].rm_scores, runs[1].rm_scores)
    n = len(runs[0].rm_scores)
    return {"win_rate": rate, "win_rate_se": se, "judge_a": sum(runs[0].rm_scores) / n,
            "judge_b": sum(runs[1].rm_scores) / n, "n": n}
