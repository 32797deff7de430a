"""ROUGE, the summarization tasks' metric.

ROUGE (the paper's summarization tables report ROUGE-1/2/L F1): computed with ``evaluate.load("rouge")`` (its
metric script lives on the Hugging Face Hub); where the Hub is unreachable the same scorer is called directly
from the ``rouge_score`` package that the script wraps, so both paths give identical numbers:

    ROUGE-n F1(pred, ref) = 2·P·R / (P + R),  P = overlap / |n-grams(pred)|,  R = overlap / |n-grams(ref)|
    (ROUGE-L: longest common subsequence instead of n-gram overlap), averaged over examples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import evaluate

try:  # the `eval` extra; evaluate's "rouge" script wraps this scorer
    from rouge_score import rouge_scorer
except ImportError:  # pragma: no cover - reported when ROUGE is asked for
    rouge_scorer = None

__all__ = ["ROUGE_TYPES", "rouge"]

logger = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _rouge_from_evaluate(predictions: list[str], references: list[str], types: list[str], use_stemmer: bool) -> dict[str, list[float]]:
    metric = evaluate.load("rouge")
    out = metric.compute(predictions=predictions, references=references, rouge_types=types, use_stemmer=use_stemmer,
                         use_aggregator=False)
    return {t: [float(v) for v in out[t]] for t in types}


def _rouge_from_package(predictions: list[str], references: list[str], types: list[str], use_stemmer: bool) -> dict[str, list[float]]:
    if rouge_scorer is None:
        raise ImportError("ROUGE needs the rouge-score package: pip install 'hf-prefs[eval]'")
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
    for name, given in (("predictions", predictions), ("references", references)):
        if isinstance(given, str):  # scored character by character otherwise
            raise TypeError(f"{name} is one string; pass a list of texts")
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
